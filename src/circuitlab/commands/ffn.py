"""``circuitlab ffn``: an MLP layer as key-value memories, from the shell.

    circuitlab ffn --model zoo/toy-lm --layer 1                        # neurons with the largest value vectors
    circuitlab ffn --model zoo/toy-lm --layer 1 --neuron 42 --data corpus.txt   # + its top-activating contexts
    circuitlab ffn --model zoo/toy-lm --layer 1 --prompt "The cat sat on the" --token " mat"   # sub-updates
"""

from __future__ import annotations

import argparse

from circuitlab.cli import answer_arg, command, prompt_arg


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="zoo name, model directory or pretrained name")
    p.add_argument("--layer", type=int, required=True, help="the MLP layer")
    p.add_argument("--neuron", type=int, help="one neuron: its value tokens (and key examples with --data)")
    p.add_argument("--prompt", help="split the layer's output on this prompt into sub-updates")
    p.add_argument("--token", help="with --prompt: rank sub-updates by their effect on this token")
    p.add_argument("--data", metavar="FILE", help="text file, one example per line, scanned for key examples")
    p.add_argument("-k", type=int, default=10, help="how many tokens / sub-updates / examples (default 10)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--html", metavar="FILE", help="also write the views to this HTML file")


def run(args: argparse.Namespace) -> int:
    from circuitlab import load_model
    from circuitlab.ffn import check_mlp_layer, key_examples, sub_updates, value_tokens

    model = load_model(args.model)
    layer = check_mlp_layer(model, args.layer)
    parts = []
    if args.prompt is not None:
        prompt, token = prompt_arg(model, args.prompt), answer_arg(model, args.token, "--token")
        sub = sub_updates(model, prompt, layer, token=token, k=args.k)
        ranked = "effect on the token" if sub.effect is not None else "|m|*||v||"
        print(f"top sub-updates of MLP layer {layer} at the last position (ranked by {ranked}):")
        for j, n in enumerate(sub.top_neurons[0].tolist()):
            print(f"  N{n:<6} m={float(sub.coefficients.values[0, n]):+8.3f}  score={float(sub.score[0, n]):+8.3f}  "
                  f"promotes {sub.top_tokens[0][j]}")
        parts.append(sub.to_html())
    if args.neuron is not None:
        vt = value_tokens(model, layer, args.neuron, k=args.k)
        print(f"L{layer} N{args.neuron} value vector promotes  {vt.top_strings[0]}")
        print(f"{'':>{len(str(layer)) + len(str(args.neuron)) + 3}} and suppresses {vt.bottom_strings[0]}")
        parts.append(vt.to_html())
        if args.data:
            with open(args.data, encoding="utf-8") as f:
                lines = (prompt_arg(model, line.rstrip("\n"), "a --data line") for line in f if line.strip())
                ke = key_examples(model, lines, layer, args.neuron, k=args.k, quiet=args.quiet)
            print(f"top-activating contexts ({ke.n_prompts} lines, {ke.n_tokens} tokens):")
            for e in ke.examples:
                print(f"  {e.activation:8.3f}  line {e.prompt} pos {e.pos}: {e.text!r}")
            parts.append(ke.to_html())
    elif args.prompt is None:
        import torch

        norms = model.blocks[layer].mlp.W_out.detach().norm(dim=-1)
        top = torch.topk(norms, min(args.k, norms.numel())).indices.tolist()
        vt = value_tokens(model, layer, top, k=5)
        print(f"MLP layer {layer}: the {len(top)} neurons with the largest value vectors")
        for r, n in enumerate(top):
            print(f"  N{n:<6} |v|={float(norms[n]):.3f}  promotes {vt.top_strings[r]}  "
                  f"suppresses {vt.bottom_strings[r]}")
        parts.append(vt.to_html())
    if args.html:
        with open(args.html, "w", encoding="utf-8") as f:
            f.write("<!doctype html><meta charset='utf-8'>\n" + "\n".join(parts))
        print(f"wrote {args.html}")
    return 0


run.arguments = arguments
command("ffn", "MLP key-value memories: value tokens, sub-updates, top-activating contexts")(run)
