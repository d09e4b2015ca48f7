"""``circuitlab ffn``: an MLP layer as key-value memories, from the shell.

    circuitlab ffn -m zoo/toy-lm --layer 1                                  # neurons with the largest value vectors
    circuitlab ffn -m zoo/toy-lm --layer 1 --neuron 42 --data corpus.txt    # + its top-activating contexts
    circuitlab ffn -m zoo/toy-lm --layer 1 --prompt "The cat sat on the" --token " mat" -o ffn.html   # sub-updates
"""

from __future__ import annotations

import argparse

from circuitlab.cli import (add_model_option, add_out_option, add_quiet_option, answer_arg, command, prompt_arg,
                            write_report)


def arguments(p: argparse.ArgumentParser) -> None:
    add_model_option(p)
    p.add_argument("--layer", type=int, required=True, help="the MLP layer")
    p.add_argument("--neuron", type=int, help="one neuron: its value tokens (and key examples with --data)")
    p.add_argument("--prompt", help="split the layer's output on this prompt into sub-updates")
    p.add_argument("--token", help="with --prompt: rank sub-updates by their effect on this token")
    p.add_argument("--data", metavar="FILE", help="text file, one example per line, scanned for key examples")
    p.add_argument("-k", type=int, default=10, help="how many tokens / sub-updates / examples (default 10)")
    add_out_option(p)
    add_quiet_option(p)


def run(args: argparse.Namespace) -> int:
    from circuitlab import load_model
    from circuitlab.core import check_mlp_layer
    from circuitlab.ffn import key_examples, sub_updates, value_tokens

    model = load_model(args.model)
    layer = check_mlp_layer(model, args.layer)
    items = []
    if args.prompt is not None:
        prompt, token = prompt_arg(model, args.prompt), answer_arg(model, args.token, "--token")
        sub = sub_updates(model, prompt, layer, token=token, k=args.k)
        ranked = "effect on the token" if sub.effect is not None else "|m|*||v||"
        print(f"top sub-updates of MLP layer {layer} at the last position (ranked by {ranked}):")
        for j, n in enumerate(sub.top_neurons[0].tolist()):
            print(f"  N{n:<6} m={float(sub.coefficients.values[0, n]):+8.3f}  "
                  f"score={float(sub.score.values[0, n]):+8.3f}  promotes {sub.promotes.tokens[0][j]}")
        items.append(sub)
    if args.neuron is not None:
        vt = value_tokens(model, layer, args.neuron, k=args.k)
        print(f"L{layer} N{args.neuron} value vector promotes  {vt.promoted.tokens[0]}")
        print(f"{'':>{len(str(layer)) + len(str(args.neuron)) + 3}} and suppresses {vt.suppressed.tokens[0]}")
        items.append(vt)
        if args.data:
            with open(args.data, encoding="utf-8") as f:
                lines = (prompt_arg(model, line.rstrip("\n"), "a --data line") for line in f if line.strip())
                ke = key_examples(model, lines, layer, args.neuron, k=args.k, progress=not args.quiet)
            print(f"top-activating contexts ({ke.n_prompts} lines, {ke.n_tokens} tokens):")
            for e in ke.examples:
                print(f"  {e.activation:8.3f}  line {e.prompt} pos {e.pos}: {e.text!r}")
            items.append(ke)
    elif args.prompt is None:
        import torch

        norms = model.blocks[layer].mlp.W_out.detach().norm(dim=-1)
        top = torch.topk(norms, min(args.k, norms.numel())).indices.tolist()
        vt = value_tokens(model, layer, top, k=5)
        print(f"MLP layer {layer}: the {len(top)} neurons with the largest value vectors")
        for r, n in enumerate(top):
            print(f"  N{n:<6} |v|={float(norms[n]):.3f}  promotes {vt.promoted.tokens[r]}  "
                  f"suppresses {vt.suppressed.tokens[r]}")
        items.append(vt)
    write_report(items, args.out, title=f"FFN key-value memories: {model.cfg.model_name or args.model}, "
                                        f"MLP layer {layer}")
    return 0


run.arguments = arguments
command("ffn", "MLP key-value memories: value tokens, sub-updates, top-activating contexts")(run)
