"""``circuitlab ffn``: an MLP layer as key-value memories, from the shell.

    circuitlab ffn -m zoo/toy-lm --layer 1                                  # neurons with the largest value vectors
    circuitlab ffn -m zoo/toy-lm --layer 1 --neuron 42 --data corpus.txt    # + its top-activating contexts
    circuitlab ffn -m zoo/toy-lm --layer 1 --prompt "The cat sat on the" --token " mat" -o ffn.html   # sub-updates
"""

from __future__ import annotations

import argparse
from typing import Iterator

from circuitlab.cli import (add_model_option, add_out_option, add_quiet_option, answer_arg, command, emit, positive_int,
                            prompt_arg, requires, write_report)
from circuitlab.errors import InputError


def arguments(p: argparse.ArgumentParser) -> None:
    add_model_option(p)
    p.add_argument("--layer", type=int, required=True, help="the MLP layer")
    p.add_argument("--neuron", type=int, help="one neuron: its value tokens (and key examples with --data)")
    p.add_argument("--prompt", help="split the layer's output on this prompt into sub-updates")
    p.add_argument("--token", help="with --prompt: rank sub-updates by their effect on this token")
    p.add_argument("--data", metavar="FILE",
                   help="with --neuron: text file, one example per line (blank lines skipped), scanned for key "
                        "examples")
    p.add_argument("-k", type=positive_int, default=10, help="how many tokens / sub-updates / examples (default 10)")
    add_out_option(p)
    add_quiet_option(p)
    requires(p, "--token", "--prompt", "it ranks the sub-updates of --prompt by their effect on that token")
    requires(p, "--data", "--neuron", "it is scanned for the contexts that activate that neuron most")


def data_lines(path: str, check_only: bool = False) -> Iterator[tuple[int, str]]:
    """The non-blank lines of the ``--data`` file, streamed, each with its 1-based line number in the file.

    With ``check_only``, read the whole file (line by line) and yield nothing: what ``run`` calls before the model
    loads, so that a missing, unreadable, empty or non-UTF-8 file is an error naming ``--data`` at once. A
    byte-order mark at the start is dropped (:func:`circuitlab.core.read_text_file`'s rule); a byte that is not
    UTF-8 is an error naming its line and column.
    """
    from circuitlab.core import read_text_file

    what = "give a UTF-8 text file with one example per line"
    found = False
    try:
        with open(path, encoding="utf-8-sig") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    found = True
                    if not check_only:
                        yield n, line.rstrip("\r\n")
    except FileNotFoundError:
        raise InputError(f"--data {path}: no such file; {what}") from None
    except IsADirectoryError:
        raise InputError(f"--data {path} is a directory; {what}") from None
    except UnicodeDecodeError:
        read_text_file(path, "--data file")  # the error that names the line and column of the first bad byte
        raise
    except OSError as exc:
        raise InputError(f"--data {path}: cannot read it ({exc.strerror}); {what}") from None
    if not found:
        raise InputError(f"--data {path} has no non-blank lines; {what}")


def run(args: argparse.Namespace) -> int:
    from circuitlab import load_model
    from circuitlab.core import check_mlp_layer
    from circuitlab.ffn import key_examples, sub_updates, value_tokens

    if args.data:
        list(data_lines(args.data, check_only=True))  # a bad file is reported before the model loads
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
        emit(sub_updates=sub)
    if args.neuron is not None:
        vt = value_tokens(model, layer, args.neuron, k=args.k)
        print(f"L{layer} N{args.neuron} value vector promotes  {vt.promoted.tokens[0]}")
        print(f"{'':>{len(str(layer)) + len(str(args.neuron)) + 3}} and suppresses {vt.suppressed.tokens[0]}")
        items.append(vt)
        emit(value_tokens=vt)
        if args.data:
            line_of: list[int] = []  # key_examples numbers the prompts it was given: 0, 1, ... (blank lines skipped)

            def prompts():
                for n, text in data_lines(args.data):
                    line_of.append(n)
                    yield prompt_arg(model, text, f"--data {args.data} line {n}")

            ke = key_examples(model, prompts(), layer, args.neuron, k=args.k, progress=not args.quiet)
            print(f"top-activating contexts ({ke.n_prompts} lines, {ke.n_tokens} tokens):")
            for e in ke.examples:
                print(f"  {e.activation:8.3f}  line {line_of[e.prompt]} pos {e.pos}: {e.text!r}")
            items.append(ke)
            emit(key_examples=ke, example_lines=[line_of[e.prompt] for e in ke.examples])
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
        emit(value_tokens=vt, neurons=top, value_norms=[float(norms[n]) for n in top])
    write_report(items, args.out, title=f"FFN key-value memories: {model.cfg.model_name or args.model}, "
                                        f"MLP layer {layer}")
    return 0


run.arguments = arguments
command("ffn", "MLP key-value memories: value tokens, sub-updates, top-activating contexts",
        json="value_tokens (ValueTokens: promoted and suppressed tokens per neuron), with no --neuron or --prompt "
             "also neurons and value_norms (the largest value vectors); sub_updates (SubUpdates, with --prompt); "
             "key_examples (KeyExamples, with --data) and example_lines (each example's line in the file)")(run)
