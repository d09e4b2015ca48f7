"""``circuitlab patch``: an exact activation-patching sweep from the command line, printed as a top-k table.

    circuitlab patch -m zoo/attn-only-2l --clean "5 6 7 5 6" --corrupted "5 6 7 9 6" --answer 7 --wrong 8 --ids
    circuitlab patch -m gpt2-small --clean "When Mary and John went, John gave it to" \\
        --corrupted "When Mary and John went, Mary gave it to" --answer " Mary" --wrong " John" --site z --by layer,head

Prompts and answers are text for models with a tokenizer, and whitespace-separated token ids for models without
one (or with ``--ids``).
"""

from __future__ import annotations

import argparse

from circuitlab.cli import (add_model_option, add_out_option, add_quiet_option, answer_arg, command, emit, positive_int,
                            prompt_arg, write_report)


def arguments(p: argparse.ArgumentParser) -> None:
    add_model_option(p)
    p.add_argument("--clean", required=True, help="clean prompt (text, or token ids like '3 17 42')")
    p.add_argument("--corrupted", required=True, help="corrupted prompt, same number of tokens")
    p.add_argument("--answer", required=True, help="the correct next token (e.g. ' Mary', or an id)")
    p.add_argument("--wrong", required=True, help="the competing token (logit difference = answer - wrong)")
    p.add_argument("--site", default="resid_pre", help="activation: resid_pre, attn_out, mlp_out, z, q, k, v, "
                                                        "pattern, ... (default resid_pre)")
    p.add_argument("--by", default="layer,pos", help="axes to sweep, comma-separated (default layer,pos)")
    p.add_argument("--direction", default="denoising", choices=["denoising", "noising"])
    p.add_argument("--top", type=positive_int, default=10, help="rows to print (default 10)")
    p.add_argument("--ids", action="store_true", help="read prompts and answers as token ids")
    add_out_option(p)
    add_quiet_option(p)


def _index(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    import torch

    return tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), shape))


def run(args: argparse.Namespace) -> int:
    from circuitlab.core import unresolved
    from circuitlab.metrics import LogitDiff
    from circuitlab.models import load_model
    from circuitlab.patching import sweep

    model = load_model(args.model)
    clean = prompt_arg(model, args.clean, "--clean", as_ids=args.ids)
    corrupted = prompt_arg(model, args.corrupted, "--corrupted", as_ids=args.ids)
    answer = answer_arg(model, args.answer, "--answer", as_ids=args.ids)
    wrong = answer_arg(model, args.wrong, "--wrong", as_ids=args.ids)

    metric = LogitDiff(answer, wrong, model=model)
    res = sweep(model, clean, corrupted, metric, site=args.site, by=args.by, direction=args.direction,
                progress=not args.quiet)
    clean_v, corrupted_v = res.meta["clean_value"], res.meta["corrupted_value"]
    span = clean_v - corrupted_v
    resolved = not bool(unresolved(clean_v, corrupted_v, model.cfg.dtype))  # else 'recovered' is noise

    print(f"{res.title}  [{model.cfg.model_name}]")
    print(f"logit difference: clean {clean_v:+.4f}, corrupted {corrupted_v:+.4f}")
    print(f"top {min(args.top, res.values.numel())} of {res.values.numel()} patches by |effect| "
          "(recovered: 0 = corrupted, 1 = clean)")
    baseline = corrupted_v if args.direction == "denoising" else clean_v
    effect = res.values - baseline
    ranked = sorted(range(res.values.numel()), key=lambda i: -abs(float(effect.flatten()[i])))[:args.top]
    width = max([len(res.label_of(_index(i, res.shape))) for i in ranked] + [5])
    print(f"  {'#':>3}  {'patch':<{width}}  {'metric':>10}  {'effect':>10}  {'recovered':>9}")
    for rank, i in enumerate(ranked, 1):
        index = _index(i, res.shape)
        value = float(res.values[index])
        recovered = f"{(value - corrupted_v) / span:9.3f}" if resolved else f"{'n/a':>9}"
        print(f"  {rank:>3}  {res.label_of(index):<{width}}  {value:10.4f}  {value - baseline:+10.4f}  {recovered}")
    intro = (f"Clean prompt {args.clean!r}, corrupted prompt {args.corrupted!r}; metric logit({args.answer!r}) - "
             f"logit({args.wrong!r}): {clean_v:+.4f} clean, {corrupted_v:+.4f} corrupted.")
    emit(sweep=res)
    write_report([res], args.out, title=f"Activation patching: {model.cfg.model_name or args.model}", intro=intro)
    return 0


run.arguments = arguments
command("patch", "activation patching sweep (exact, batched): which activations carry the answer",
        json="sweep (Result: the metric with each activation patched, by --by; clean_value and corrupted_value "
             "in meta)")(run)
