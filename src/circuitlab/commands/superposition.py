"""``circuitlab superposition``: toy models of superposition (Elhage et al. 2022), trained in seconds on CPU.

    circuitlab superposition phase -o phase.html                       # the two-feature phase diagram (9 x 9)
    circuitlab superposition phase --importances 0.3,3 --sparsities 0,0.99
    circuitlab superposition geometry                                  # 5 features in 2 dimensions at S = 0.9
    circuitlab superposition geometry --features 6 --sparsity 0.95 -o geometry.html
    circuitlab superposition train                                     # n = 20, m = 5, importance 0.7^i
    circuitlab superposition train --features 10 --hidden 3 --sparsities 0,0.9,0.99 --kind linear

``phase`` prints the phase of the extra feature in each cell (``.`` not represented, ``D`` dedicated dimension,
``S`` superposition); ``geometry`` each feature's norm, angle and dimensionality, with the columns of ``W`` as
arrows in the report; ``train`` per sparsity how many features are represented and the dimensions per feature,
with bars of ``||W_i||`` coloured by superposition in the report.
"""

from __future__ import annotations

import argparse

from circuitlab.cli import add_out_option, add_quiet_option, command, emit, positive_int, quote, seed_int, write_report

ACTIONS = ("phase", "geometry", "train")


def number_list(text: str) -> list[float]:
    """An argparse ``type`` for a comma-separated list of numbers (``"0,0.9,0.99"``)."""
    try:
        values = [float(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, e.g. 0,0.9,0.99; got "
                                         f"{quote(text)}") from None
    if not values:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, e.g. 0,0.9,0.99; got {quote(text)}")
    return values


def number(text: str) -> float:
    """An argparse ``type`` for one number (checked by the library)."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {quote(text)}") from None


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=ACTIONS, help="phase: the two-feature phase diagram; geometry: the feature "
                                                   "directions of one model; train: a sweep over sparsities")
    p.add_argument("--features", "-n", type=positive_int, help="features n (geometry: 5, train: 20)")
    p.add_argument("--hidden", type=positive_int, help="hidden dimensions m (geometry: 2, train: 5)")
    p.add_argument("--sparsity", type=number, default=0.9, help="geometry: the sparsity S (default 0.9)")
    p.add_argument("--sparsities", type=number_list,
                   help="phase, train: the sparsities, comma-separated (default: the paper's)")
    p.add_argument("--importances", type=number_list,
                   help="phase: relative importances of the extra feature, comma-separated (default 0.1 ... 10)")
    p.add_argument("--importance", type=number,
                   help="geometry, train: the importance decay r, I_i = r^i (geometry: 1, train: 0.7)")
    p.add_argument("--kind", choices=("relu", "linear"), default="relu", help="the toy model (default relu)")
    p.add_argument("--steps", type=positive_int, default=2000, help="training steps (default 2000)")
    p.add_argument("--restarts", type=positive_int, default=5,
                   help="runs per setting, the best by held-out loss kept (default 5)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the initialisation and data (default 0)")
    add_out_option(p)
    add_quiet_option(p)


def _phase(args: argparse.Namespace) -> list:
    from circuitlab.features import toy
    from circuitlab.render import HTML
    from circuitlab.render.superposition import phase_svg

    from circuitlab.core import check_number

    if args.sparsities:  # errors name the options, not the library's arguments
        toy.check_sparsity(args.sparsities, "--sparsities")
    for r in args.importances or ():
        check_number(r, "--importances", low=0, low_open=True, what="a list of positive numbers, e.g. 0.3,3")
    diagram = toy.phase_diagram(args.importances or toy.PHASE_IMPORTANCES, args.sparsities or toy.PHASE_SPARSITIES,
                                steps=args.steps, restarts=args.restarts, seed=args.seed, progress=not args.quiet)
    phase = diagram.phase
    marks = ".DS"
    print("phase of the extra feature (2 features in 1 dimension): . not represented, D dedicated dimension, "
          "S superposition")
    print(f"{'importance':>10}  sparsity " + " ".join(f"{s:>6}" for s in phase.labels["sparsity"]))
    for i, r in enumerate(phase.labels["importance"]):
        print(f"{r:>10}           " + " ".join(f"{marks[int(c)]:>6}" for c in phase.values[i]))
    print(", ".join(f"{n} {name}" for name, n in diagram.counts().items()) + f"; rule: {phase.meta['rule']}")
    emit(phase=phase, norms=diagram.norms, counts=diagram.counts())
    return [HTML(phase_svg(diagram), title="Two-feature phase diagram"), phase, diagram.norms]


def _geometry(args: argparse.Namespace) -> list:
    from circuitlab.features import toy
    from circuitlab.render import HTML
    from circuitlab.render.superposition import arrows_svg

    n, m = args.features or 5, args.hidden or 2
    toy.check_sparsity(args.sparsity, "--sparsity")
    if args.importance is not None:
        toy.check_importance(args.importance, n, "--importance")
    model = toy.train(n, m, args.sparsity, 1.0 if args.importance is None else args.importance, kind=args.kind,
                      steps=args.steps, restarts=args.restarts, seed=args.seed, progress=not args.quiet)
    norms, dims, sup = toy.feature_norms(model), toy.dimensionality(model), toy.superposition(model)
    angles = toy.feature_angles(model).values[0] if m == 2 else None
    print(f"{model.kind} toy model, {n} features in {m} dimensions, sparsity {args.sparsity:g}: loss "
          f"{float(model.loss[0]):.4g}")
    head = f"{'feature':>8} {'||W_i||':>8} {'D_i':>6} {'superpos.':>9}"
    print(head + (f" {'angle':>7}" if angles is not None else ""))
    for i in range(n):
        line = f"{'f' + str(i):>8} {float(norms.values[0, i]):8.3f} {float(dims.values[0, i]):6.3f} " \
               f"{float(sup.values[0, i]):9.3f}"
        print(line + (f" {float(angles[i]):7.1f}" if angles is not None else ""))
    print(f"sum of D_i {float(dims.values[0].sum()):.3f} (m = {m}); dimensions per feature m/||W||^2 "
          f"{dims.meta['dimensions_per_feature'][0]:.3f}")
    items = [norms, dims, sup]
    emit(norms=norms, dimensionality=dims, superposition=sup, loss=float(model.loss[0]),
         **({"angles": angles} if angles is not None else {}))
    if m == 2:
        items.insert(0, HTML(arrows_svg(model), title="Feature directions"))
    return items


def _train(args: argparse.Namespace) -> list:
    from circuitlab.features import toy
    from circuitlab.render import HTML
    from circuitlab.render.superposition import sweep_svg

    n, m = args.features or 20, args.hidden or 5
    if args.sparsities:
        toy.check_sparsity(args.sparsities, "--sparsities")
    if args.importance is not None:
        toy.check_importance(args.importance, n, "--importance")
    sweep = toy.sparsity_sweep(n, m, args.sparsities or toy.SWEEP_SPARSITIES,
                               0.7 if args.importance is None else args.importance, kind=args.kind, steps=args.steps,
                               restarts=args.restarts, seed=args.seed, progress=not args.quiet)
    print(f"{args.kind} toy models, {n} features in {m} dimensions: per sparsity, the features represented "
          "(||W_i|| >= 0.5) and the dimensions per feature m/||W||^2")
    for k, s in enumerate(sweep.represented.labels["sparsity"]):
        print(f"  S={s:<7} represented {int(sweep.represented.values[k]):>3}   m/||W||^2 "
              f"{float(sweep.dimensions_per_feature.values[k]):.3f}")
    emit(represented=sweep.represented, dimensions_per_feature=sweep.dimensions_per_feature, norms=sweep.norms,
         superposition=sweep.superposition)
    return [HTML(sweep_svg(sweep), title="Feature norms and superposition by sparsity"), sweep.represented,
            sweep.dimensions_per_feature, sweep.norms, sweep.superposition]


def run(args: argparse.Namespace) -> int:
    items = {"phase": _phase, "geometry": _geometry, "train": _train}[args.action](args)
    write_report(items, args.out, title=f"Toy models of superposition: {args.action}",
                 intro="Toy models of superposition (Elhage et al. 2022): x' = ReLU(W^T W x + b) on sparse "
                       "synthetic features, trained here.")
    return 0


run.arguments = arguments
command("superposition", "toy models of superposition: the phase diagram, feature geometry, sparsity sweeps",
        json="phase: phase (Result: 0 not represented, 1 dedicated, 2 superposition per importance x sparsity), "
             "norms, counts; geometry: norms, dimensionality, superposition (Results per feature), loss, angles "
             "(with 2 hidden dimensions); train: represented, dimensions_per_feature, norms, superposition "
             "(Results per sparsity)")(run)
