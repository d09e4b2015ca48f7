"""``circuitlab trace``: causal tracing of one factual prompt (Meng et al. 2022), from the shell.

    circuitlab trace -m gemma-3-270m --prompt "The Eiffel Tower is located in the city of" \\
        --subject "The Eiffel Tower" --answer " Paris" -o trace.html
    circuitlab trace -m zoo/toy-lm --prompt "Wexmira has a house in" --subject Wexmira --answer " Brindlecote"

Prints the answer's probability clean and with the subject corrupted, then for each restored state (residual
stream, MLP output, attention output) the (token, layer) whose restoration brings the most of it back; the
report has one heatmap per state (tokens x layers, subject tokens marked ``*``).
"""

from __future__ import annotations

import argparse

from circuitlab.cli import (add_model_option, add_out_option, add_quiet_option, answer_arg, command, emit, positive_int,
                            prompt_arg, quote, seed_int, write_report)


def positive_float(text: str) -> float:
    """An argparse ``type`` for the noise scale: a finite number > 0 (:func:`circuitlab.core.check_number`)."""
    from circuitlab.core import check_number
    from circuitlab.errors import InputError

    try:
        return check_number(float(text), "--noise", low=0, low_open=True)
    except (ValueError, InputError):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {quote(text)}") from None


def arguments(p: argparse.ArgumentParser) -> None:
    add_model_option(p)
    p.add_argument("--prompt", required=True, help="the factual prompt, up to the answer")
    p.add_argument("--subject", required=True, help="the subject as written in the prompt (its tokens get noise); "
                                                    "with token-id prompts, START:END token positions")
    p.add_argument("--answer", required=True, help="the correct next token, e.g. ' Paris' (mind the space)")
    p.add_argument("--kinds", default=None, help="states to restore, comma-separated: resid,mlp,attn "
                                                 "(default: all the model has)")
    p.add_argument("--window", type=positive_int, help="layers restored together for mlp and attn (default: 10 "
                                                       "scaled to the model's depth)")
    p.add_argument("--noise", type=positive_float, default=3.0,
                   help="noise standard deviation, in standard deviations of the embeddings (default 3)")
    p.add_argument("--samples", type=positive_int, default=10, help="noise samples averaged (default 10)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the noise (default 0)")
    p.add_argument("--top", type=positive_int, default=3, help="states to list per kind (default 3)")
    add_out_option(p)
    add_quiet_option(p)


def _subject(model, text: str, prompt: str):
    """The --subject option: text of the prompt, or START:END token positions (the only form for a model without a
    tokenizer; with one, a START:END that is not itself text of the prompt)."""
    import re

    from circuitlab.errors import InputError

    positions = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", text)
    if model.tokenizer is not None and (positions is None or text in prompt):
        return text
    if positions is None:
        raise InputError(f"--subject must be START:END token positions for a model without a tokenizer (e.g. 2:4); "
                         f"got {quote(text)}.")
    return int(positions[1]), int(positions[2])


def run(args: argparse.Namespace) -> int:
    from circuitlab import load_model
    from circuitlab.core import unresolved
    from circuitlab.tracing import KIND_NAMES, trace

    model = load_model(args.model)
    prompt = prompt_arg(model, args.prompt)
    answer = answer_arg(model, args.answer)
    kinds = [k.strip() for k in args.kinds.split(",")] if args.kinds else None
    res = trace(model, prompt, _subject(model, args.subject, args.prompt), answer, kinds=kinds, window=args.window,
                noise=args.noise, samples=args.samples, seed=args.seed, progress=not args.quiet)
    m = res.meta
    s0, s1 = m["subject"]
    print(f"Causal trace on {model.cfg.model_name or args.model}: P({args.answer!r}) clean {res.clean_prob:.4f}, "
          f"subject corrupted {res.corrupted_prob:.4f}")
    print(f"  subject tokens {s0}..{s1 - 1}; noise {m['noise']:g} x sigma {m['sigma']:.4f}, {m['samples']} samples, "
          f"seed {m['seed']}; window: {', '.join(f'{k} {w}' for k, w in m['window'].items())}")
    gap = res.clean_prob - res.corrupted_prob
    if unresolved(res.clean_prob, res.corrupted_prob, model.cfg.dtype, floor=0.0):
        gap = 0.0  # a share of a gap within float noise is no number
    if gap <= 0:
        print(f"  note: the noise did not lower P({args.answer!r}) (the model may not know this fact: it gives the "
              "answer little probability clean), so the effects below say little")
    effect = res.indirect_effect()
    for k, kind in enumerate(res.labels["kind"]):
        print(f"{KIND_NAMES[kind]}: top {args.top} restorations by indirect effect")
        flat = effect.values[k].flatten()
        for i in flat.argsort(descending=True)[:args.top].tolist():
            pos, layer = divmod(i, effect.shape[2])
            share = f"  ({float(flat[i]) / gap:+.0%} of clean - corrupted)" if gap > 0 else ""
            print(f"  token {res.labels['pos'][pos]:<20} layer {layer:<3} P {float(res.values[k, pos, layer]):.4f}  "
                  f"effect {float(flat[i]):+.4f}{share}")
    intro = (f"Prompt {args.prompt!r}, subject {args.subject!r}, answer {args.answer!r}: P(answer) "
             f"{res.clean_prob:.4f} clean, {res.corrupted_prob:.4f} with noise on the subject.")
    emit(trace=res, indirect_effect=effect)
    write_report([res, effect], args.out, title=f"Causal tracing: {model.cfg.model_name or args.model}", intro=intro)
    return 0


run.arguments = arguments
command("trace", "causal tracing of a fact: which states restore the answer when the subject is corrupted",
        json="trace (CausalTrace: P(answer) per kind x pos x layer restored, with clean_prob, corrupted_prob and the "
             "noise, window and subject in meta), indirect_effect (Result: restored - corrupted)")(run)
