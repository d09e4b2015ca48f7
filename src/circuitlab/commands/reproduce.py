"""``circuitlab reproduce``: published mechanistic findings as checks, the published figure beside the measured one.

    circuitlab reproduce --list                                   # id, paper, claim, models, runtime estimate
    circuitlab reproduce induction-heads-need-two-layers          # on the finding's default model
    circuitlab reproduce ioi-name-movers --model smollm2-135m -o ioi.html
    circuitlab reproduce --all [--markdown]                       # every finding on its default model
    circuitlab reproduce --all --executor ray --workers 4         # the findings shared out among Ray workers

Each run prints the finding, the published figure (with the model it was measured on), the measured figure (with
the model used here, marked where it differs), the verdict under the finding's rule and the seconds it took;
``--out`` writes one report page with each finding's claim, the figures side by side and the supporting plots.
The findings live in :mod:`circuitlab.reproduce`, one file each.
"""

from __future__ import annotations

import argparse
import textwrap

from circuitlab.cli import (add_out_option, add_quiet_option, command, emit, positive_int, report_data, seed_int,
                            write_report)
from circuitlab.errors import InputError


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("finding", nargs="?", help="the id of a finding (see --list)")
    p.add_argument("--list", action="store_true", help="list the findings: id, paper, claim, models, runtime")
    p.add_argument("--all", action="store_true", help="run every finding on its default model")
    p.add_argument("--model", "-m", help="measure on this model instead of the finding's default")
    p.add_argument("--seed", type=seed_int, help="the seed of the finding's random inputs (default: the finding's own)")
    p.add_argument("--markdown", action="store_true", help="print the summary as a Markdown table")
    p.add_argument("--executor", choices=("ray", "local"),
                   help="with --all: run the findings as shards on Ray workers (pip install 'circuitlab[distributed]')"
                        "; 'local' runs the same shards in this process")
    p.add_argument("--workers", type=positive_int, default=2, help="with --executor: how many workers (default 2)")
    p.add_argument("--ray-address", help="with --executor ray: the cluster to join (default: RAY_ADDRESS, else a "
                                         "local Ray instance)")
    add_out_option(p)
    add_quiet_option(p)


def run(args: argparse.Namespace) -> int:
    from circuitlab.reproduce import findings, get_finding
    from circuitlab.reproduce import run as run_finding

    known = findings()
    if args.list:
        for f in known.values():
            print(f"{f.id}  [{f.papers()}]  ~{f.seconds:.1f} s on {f.models[0]}")
            print(textwrap.fill(f.claim, 110, initial_indent="    ", subsequent_indent="    "))
            print(f"    models: {', '.join(f.models)}")
        emit(findings=[{"id": f.id, "papers": f.papers(), "claim": f.claim, "models": list(f.models),
                        "seconds": f.seconds} for f in known.values()])
        return 0
    if args.all == bool(args.finding):
        raise InputError("give one finding id or --all (or --list to see the findings).")
    if args.all and args.model:
        raise InputError("--model applies to one finding; with --all each finding runs on its default model.")
    if args.executor and not args.all:
        raise InputError("--executor shares out the findings of --all; run one finding without it.")
    chosen = list(known.values()) if args.all else [get_finding(args.finding)]

    if args.all:  # the findings are the shards: in this process, or shared out among --executor's workers
        from circuitlab.engine.executor import LocalExecutor
        from circuitlab.reproduce.registry import run_many

        executor = None  # this process
        if args.executor == "ray":
            from circuitlab.distributed import RayExecutor

            executor = RayExecutor(args.workers, address=args.ray_address)
        elif args.executor == "local":
            executor = LocalExecutor(workers=args.workers)
        try:
            runs = run_many(chosen, seed=args.seed, executor=executor, progress=not args.quiet)
        finally:
            if executor is not None:
                executor.close()
    else:
        runs = [run_finding(f, model=args.model, seed=args.seed) for f in chosen]
    for r in runs:
        _print_run(r)
    emit(runs=[{**r.row(), "claim": r.finding.claim, "rule": r.finding.rule, "why": r.measurement.why,
                "values": r.measurement.values, "evidence": report_data(r.measurement.evidence)} for r in runs])
    _print_table(runs, markdown=args.markdown)
    if args.out:
        from circuitlab.render import Section

        sections = [Section(f"{r.finding.id}: {r.verdict}", items=r.measurement.evidence, text=_text(r)) for r in runs]
        write_report(sections, args.out, title="circuitlab reproduce: published findings, measured",
                     intro="Each section quotes a published finding, states the rule fixed in advance, and shows "
                           "what circuitlab measured, on which model, with the plots that support it.")
    return 0


def _print_run(r) -> None:
    f, m = r.finding, r.measurement
    print(f"\n{f.id}  [{f.papers()}]  {r.verdict.upper()}  ({r.seconds:.1f} s, seed {r.seed_text})")
    for label, text in (("claim", f.claim),
                        (f"published ({f.published_model})", f.published),
                        (f"measured ({r.model}{'' if r.same_model else ', not the published model'})", m.figures),
                        ("rule", f.rule), ("verdict", f"{r.verdict}: {m.why}")):
        print(textwrap.fill(text, 110, initial_indent=f"  {label}: ", subsequent_indent="      "))


def _print_table(runs, markdown: bool) -> None:
    """The summary. ``markdown``: a short Markdown table (finding, paper, model, verdict, seconds: a few words a
    cell, the README's reproductions table), then one section per run with the claim, the published and the
    measured figures, the rule and the verdict (the documentation's reproductions page; ``make reproduce-table``
    puts the two in place)."""
    if markdown:
        cell = lambda s: str(s).replace("|", "/").replace("\n", " ")  # noqa: E731
        print("\n| finding | paper | model | verdict | seconds |")
        print("|---|---|---|---|---|")
        for r in runs:
            model = r.model.split(",")[0].split(" (")[0]  # "toy ReLU models, 5 features in 2 dimensions" -> a name
            print(f"| `{r.finding.id}` | {cell(r.finding.papers())} | {cell(model)} | **{r.verdict}** "
                  f"| {r.seconds:.1f} |")
        for r in runs:
            f, m = r.finding, r.measurement
            papers = "; ".join(f"[{c.short()}]({c.url})" if c.url else c.short() for c in (f.citation, *f.also))
            differs = "" if r.same_model else " (not the published model)"
            again = f"circuitlab reproduce {f.id}" + ("" if r.model == f.models[0] else f" --model {r.model}")
            print(f"\n### `{f.id}`\n")
            print(f"{papers}: **{r.verdict}** on {r.model}{differs}; {r.seconds:.1f} s, seed {r.seed_text}; "
                  f"`{again}`\n")
            print(f"- **Claim.** {f.claim}")
            print(f"- **Published** ({f.published_model}): {f.published}")
            print(f"- **Measured** ({r.model}): {m.figures}")
            print(f"- **Rule**, fixed in advance: {f.rule}")
            if m.why:
                print(f"- **Verdict**: {r.verdict}: {m.why}")
        return
    width = max(len(r.finding.id) for r in runs)
    mwidth = max(len(r.model) for r in runs)
    print(f"\n{'finding':<{width}}  {'model':<{mwidth}}  {'verdict':<15} {'seconds':>7}  seed")
    for r in runs:
        print(f"{r.finding.id:<{width}}  {r.model:<{mwidth}}  {r.verdict:<15} {r.seconds:7.1f}  {r.seed_text}")


def _text(r) -> str:
    f = r.finding
    also = "".join(f"\nAlso: {c}" for c in f.also)
    return (f"Source: {f.citation}{also}\n\nClaim: {f.claim}\n\nPublished ({f.published_model}): {f.published}\n\n"
            f"Measured on {r.model}{'' if r.same_model else ' (not the published model)'}, seed {r.seed_text}, "
            f"{r.seconds:.1f} s: {r.measurement.figures}\n\nRule, fixed in advance: {f.rule}\n\n"
            f"Verdict: {r.verdict}. {r.measurement.why}")


run.arguments = arguments
command("reproduce", "published findings as checks: published vs measured, with a verdict",
        json="runs (a list, one per finding: the table row - finding, paper, published, published_model, measured, "
             "model, verdict, seconds, seed - with claim, rule, why, values (the numbers behind the measured "
             "figures) and evidence (the results shown in the report)); with --list: findings (id, papers, "
             "claim, models, seconds)")(run)
