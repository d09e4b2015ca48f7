"""``circuitlab edit``: write a new fact into a model with ROME or MEMIT, from the shell.

    circuitlab edit -m zoo/toy-lm --prompt "Wexmira has a house in" --subject Wexmira --new " Pellmoor"
    circuitlab edit -m gemma-3-270m --prompt "The Eiffel Tower is located in the city of" \\
        --subject "The Eiffel Tower" --new " Rome" --layer auto --method rome --save edited/ -o edit.html

Prints P(new) and P(old answer) before and after on the prompt, the layer(s) edited, the size of the change, and
whether the edit changed the prediction (an edit that changed nothing is said to, never called a success);
``--save DIR`` writes the edited model (``circuitlab.save_model``); ``-o`` writes a report.
"""

from __future__ import annotations

import argparse

from circuitlab.cli import (add_model_option, add_out_option, add_quiet_option, command, emit, note, positive_int,
                            quote, seed_int, write_report)


def arguments(p: argparse.ArgumentParser) -> None:
    add_model_option(p)
    p.add_argument("--prompt", required=True, help="the prompt up to the object, e.g. 'The Eiffel Tower is in'")
    p.add_argument("--subject", required=True, help="the subject as written in the prompt")
    p.add_argument("--new", required=True, help="the new object with its leading space, e.g. ' Rome'")
    p.add_argument("--layer", default="auto", help="'auto' (the causal-tracing peak at the last subject token) or "
                                                   "a layer; for MEMIT, comma-separated layers")
    p.add_argument("--method", choices=("rome", "memit"), default="rome", help="the editing method (default rome)")
    p.add_argument("--tokens", type=positive_int, default=20_000,
                   help="corpus tokens for the key covariance (default 20000; cached on disk)")
    p.add_argument("--prefixes", type=int, default=5, help="generated context prefixes (default 5)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the prefixes (default 0)")
    p.add_argument("--save", default=None, help="a folder to save the edited model in")
    add_out_option(p)
    add_quiet_option(p)


def _layers(text: str, method: str):
    from circuitlab.errors import InputError

    if text.strip() == "auto":
        return "auto"
    try:
        layers = [int(x) for x in text.split(",")]
    except ValueError:
        raise InputError(f"--layer must be 'auto' or layer numbers (e.g. 4 or 3,4,5); got {quote(text)}.") from None
    if method == "rome" and len(layers) != 1:
        raise InputError(f"--layer: ROME edits one layer; got {quote(text)}. Use --method memit for several.")
    return layers[0] if method == "rome" else layers


def run(args: argparse.Namespace) -> int:
    import torch

    from circuitlab import load_model
    from circuitlab.editing import memit, rome
    from circuitlab.editing.evaluate import sequence_logprobs
    from circuitlab.errors import InputError

    if args.prefixes < 0:
        raise InputError(f"--prefixes must be 0 or more; got {args.prefixes}.")
    model = load_model(args.model)
    layer = _layers(args.layer, args.method)
    with torch.no_grad():
        top = int(model(args.prompt, return_type="logits")[0, -1].argmax()) if isinstance(args.prompt, str) else None
    if args.method == "rome":
        edit = rome(model, args.prompt, args.subject, args.new, layer=layer, n_tokens=args.tokens,
                    n_prefixes=args.prefixes, seed=args.seed, progress=not args.quiet)
    else:
        edit = memit(model, [(args.prompt, args.subject, args.new)], layers=layer, n_tokens=args.tokens,
                     n_prefixes=args.prefixes, seed=args.seed, progress=not args.quiet)
    old = model.to_string([top])
    before = sequence_logprobs(model, [args.prompt] * 2, [args.new, old]).exp()
    with edit.applied(model):
        after = sequence_logprobs(model, [args.prompt] * 2, [args.new, old]).exp()
        top_after = int(model(args.prompt, return_type="logits")[0, -1].argmax())
    name = model.cfg.model_name or args.model
    print(f"{args.method.upper()} on {name}, layer(s) {edit.layers}, |delta W_out| {edit.norm():.4g}")
    print(f"  P({args.new!r}): {float(before[0]):.4f} -> {float(after[0]):.4f}")
    print(f"  P({old!r}) (the prediction before): {float(before[1]):.4f} -> {float(after[1]):.4f}")
    if edit.norm() == 0.0 or float((after - before).abs().max()) == 0.0:
        print("  the edit changed nothing")
    elif float(after[0]) > float(after[1]):
        print(f"  succeeded: the new object now beats {old!r}; top prediction {model.to_string([top_after])!r}")
    else:
        print(f"  failed: {old!r} still beats the new object")
    emit(method=args.method, layers=edit.layers, delta_norm=edit.norm(), new=args.new, old=old,
         p_new=[float(before[0]), float(after[0])], p_old=[float(before[1]), float(after[1])],
         top_after=model.to_string([top_after]), succeeded=bool(float(after[0]) > float(after[1])))
    if args.save:
        from circuitlab import save_model

        save_model(edit.new_model(model), args.save)
        note(f"  edited model saved to {args.save}")
    if args.out:
        from circuitlab.results import Result

        res = Result(torch.stack([before, after]), ("when", "object"),
                     {"when": ["before", "after"], "object": [args.new, old]}, title=f"{args.method.upper()} edit",
                     metric="probability", model=name, task=args.prompt)
        write_report([res], args.out, title=f"Edit: {name}",
                     intro=f"Prompt {args.prompt!r}, subject {args.subject!r}, new object {args.new!r}.")
    return 0


run.arguments = arguments
command("edit", "write a new fact into a model (ROME or MEMIT) and show the probabilities before and after",
        json="method, layers, delta_norm (|delta W_out|), new and old (the objects), p_new and p_old ([before, "
             "after]), top_after (the top prediction after the edit), succeeded (P(new) > P(old) after)")(run)
