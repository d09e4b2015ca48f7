"""``circuitlab dynamics -m zoo/attn-only-2l [-o report.html]``: a model's training curves and their phase changes.

Reads the curves measured on the model's checkpoints (:func:`circuitlab.dynamics.load_curves`: the
``dynamics.json`` shipped beside a zoo model, or a JSON file from ``python -m circuitlab.zoo dynamics``), prints
one line per checkpoint and the phase changes (:func:`circuitlab.dynamics.phase_changes`).
"""

from __future__ import annotations

import argparse

from circuitlab.cli import add_out_option, add_quiet_option, command, emit, write_report


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "-m", required=True,
                   help="a zoo model with training curves (zoo/attn-only-2l, zoo/attn-only-1l) or a curves JSON file")
    add_out_option(p)
    add_quiet_option(p)


def run(args: argparse.Namespace) -> int:
    from circuitlab.dynamics import load_curves, phase_changes
    from circuitlab.render.dynamics import curves_html
    from circuitlab.render.report import HTML

    curves = load_curves(args.model)
    phase = phase_changes(curves)
    best = curves.prefix_matching.values.flatten(1).max(1).values
    prev = curves.previous_token.values.flatten(1).max(1).values
    if not args.quiet:
        print(f"{'step':>6} {'tokens':>11} {'prefix match':>12} {'prev token':>10} {'ICL (nats)':>10} {'loss':>6}")
        for k, (step, seen) in enumerate(zip(curves.steps, curves.tokens_seen)):
            print(f"{step:>6} {seen:>11,} {float(best[k]):>12.3f} {float(prev[k]):>10.3f} "
                  f"{float(curves.icl.values[k]):>10.3f} {float(curves.heldout_loss.values[k]):>6.3f}")
    for name, w in (("induction", phase.induction), ("ICL", phase.icl)):
        where = f"tokens {w.start:,.0f}-{w.end:,.0f} (moved {w.jump:.2f} of {w.span:.2f})" if w.found else "none"
        print(f"{name} phase change: {where}")
    print(f"coincide: {'yes' if phase.coincide else 'no'}")
    emit(curves=curves, phase_changes=phase)
    write_report([HTML(curves_html(curves, phase), title="Training curves")], args.out,
                 title=f"Training curves: {curves.icl.model or args.model}")
    return 0


run.arguments = arguments
command("dynamics", "a model's training curves over its checkpoints and the phase changes in them",
        json="curves (TrainingCurves: per checkpoint step, tokens seen, prefix-matching and previous-token "
             "scores per head, ICL score, held-out loss), phase_changes (the induction and ICL windows, "
             "coincide)")(run)
