"""Building the zoo: train a model by its recipe, measure it, and write it where ``load_model`` finds it.

    python -m circuitlab.zoo build zoo/attn-only-2l      # retrain (deterministic by seed) and overwrite
    python -m circuitlab.zoo build --all --out /tmp/zoo   # rebuild everything elsewhere
    python -m circuitlab.zoo build zoo/toy-lm --steps 200 --seed 1 --out /tmp/zoo   # a variant of the recipe
    python -m circuitlab.zoo measure zoo/attn-only-2l    # re-measure the shipped weights, update the card
    python -m circuitlab.zoo dynamics zoo/attn-only-2l-text --out /tmp/dyn   # train, measure every checkpoint

``zoo/toy-lm`` trains on Debian-packaged text; as root, ``--install-corpora`` installs it where it is missing.
A model's card (``card.json``) records its recipe, its training time and threads, and what was measured on
it; its one-line ``description`` is what ``circuitlab models`` prints. The recipes are in
:mod:`circuitlab.zoo.registry`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from circuitlab.errors import CircuitlabError
from circuitlab.models.io import CARD_FILE, load_model_dir, read_card, save_model
from circuitlab.models.loading import ZOO_DIR, ZOO_PREFIX
from circuitlab.zoo import registry
from circuitlab.zoo.registry import with_fields


def build(name: str, out_dir: Path = ZOO_DIR, verbose: bool = True, **options: Any) -> Path:
    """Train zoo model ``name`` by its recipe, measure it, and write it to ``out_dir/<name>``.

    ``options`` go to the recipe's ``train``: fields of its recipe dataclass (``steps=10``, ``seed=1``) and
    ``progress=False``. The files the recipe ships beside the weights are written first, and the measurement
    reads them there, as ``measure`` does for a shipped model.
    """
    recipe = registry.get(name)
    model, card, files = recipe.train(**options)
    path = Path(out_dir) / name.removeprefix(ZOO_PREFIX)
    path.mkdir(parents=True, exist_ok=True)
    for file_name, text in files.items():
        (path / file_name).write_text(text)
    card.update(recipe.measure(model, path))
    card["description"] = recipe.describe(card)
    save_model(model, path, card=card)
    if verbose:
        print(f"{name}: {card['description']}\n  written to {path}")
    return path


def remeasure(name: str, out_dir: Path = ZOO_DIR) -> dict[str, Any]:
    """Measure the shipped weights again (with the files shipped beside them) and rewrite the card; the weights
    are not touched."""
    recipe = registry.get(name)
    path = Path(out_dir) / name.removeprefix(ZOO_PREFIX)
    model = load_model_dir(path, name=name)
    card = read_card(path)
    card.update(recipe.measure(model, path))
    card["description"] = recipe.describe(card)
    (path / CARD_FILE).write_text(json.dumps(card, indent=1) + "\n")
    return card


def dynamics(name: str, out_dir: Path, checkpoint_dir: Path | None = None, progress: bool = True,
             **fields: Any) -> Path:
    """Train a natural-text attention-only zoo model by its recipe (``fields`` override the recipe), measure every
    checkpoint (:mod:`circuitlab.dynamics`) and write ``<model>-dynamics.json`` and ``<model>-dynamics.svg`` (the
    curves, with the phase changes shaded) to ``out_dir``; with ``checkpoint_dir``, also every checkpoint's
    weights as ``step-NNNNNN.safetensors`` there. The zoo itself is not touched. Returns the JSON's path."""
    from safetensors.torch import save_file

    from circuitlab import dynamics as dyn
    from circuitlab.render.dynamics import write_svg
    from circuitlab.zoo import attn_only, attn_only_text

    if name in attn_only_text.RECIPES:
        trained = attn_only_text.train(with_fields(attn_only_text.RECIPES[name], fields), name, progress=progress)
        data = attn_only_text.measure_run(trained, progress=progress)
        card, checkpoints = trained.card, trained.checkpoints
    elif name in attn_only.RECIPES:
        # the synthetic recipe as shipped, on one thread (deterministic), measured on held-out sequences of its
        # own training distribution (so the curves describe this run, not the shipped weights, trained on two)
        recipe = with_fields(attn_only.RECIPES[name], {"threads": 1, **fields})
        checkpoints, losses = [], []
        model, card = attn_only.train(recipe, name, progress=progress, checkpoints=checkpoints, losses=losses)
        early, late = attn_only_text.icl_bands(recipe.n_ctx)
        models = [(step, attn_only_text.checkpoint_model(card["recipe"], model, state)) for step, state in checkpoints]
        data = dyn.curves_to_json(dyn.training_curves(
            models, attn_only.heldout_text(recipe), tokens_per_step=recipe.batch_size * recipe.n_ctx,
            train_losses=losses, early=early, late=late, stride=recipe.n_ctx - 1, progress=progress))
        card["checkpoint_steps"] = [s for s, _ in checkpoints]
    else:
        raise CircuitlabError(f"{name} has no training-dynamics recipe; choose one of "
                              f"{', '.join([*attn_only_text.RECIPES, *attn_only.RECIPES])}.")
    curves = dyn.curves_from_json(data)
    phase = dyn.phase_changes(curves)
    data["phase_changes"] = phase.to_json()
    data["card"] = card
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = name.removeprefix(ZOO_PREFIX)
    path = out_dir / f"{stem}-dynamics.json"
    path.write_text(json.dumps(data, separators=(",", ":")) + "\n")
    write_svg(out_dir / f"{stem}-dynamics.svg", curves, phase, title=f"{name}: training curves")
    if checkpoint_dir is not None:
        Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
        for step, state in checkpoints:
            save_file({k: v.contiguous() for k, v in state.items()},
                      str(Path(checkpoint_dir) / f"step-{step:06d}.safetensors"))
    words = {k: (f"tokens {w['start']:,.0f}-{w['end']:,.0f}" if w["found"] else "none")
             for k, w in (("induction", data["phase_changes"]["induction"]), ("icl", data["phase_changes"]["icl"]))}
    print(f"{name}: induction phase change {words['induction']}; ICL phase change {words['icl']}; coincide: "
          f"{phase.coincide}\n  written to {path}")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m circuitlab.zoo", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    for action in ("build", "measure"):
        p = sub.add_parser(action)
        p.add_argument("names", nargs="*", help="zoo names, e.g. zoo/attn-only-2l")
        p.add_argument("--all", action="store_true", help="every model in the zoo")
        p.add_argument("--out", type=Path, default=ZOO_DIR, help="where the model folders go")
        if action == "build":
            p.add_argument("--steps", type=int, default=None, help="override the recipe's number of steps")
            p.add_argument("--seed", type=int, default=None, help="override the recipe's seed")
            p.add_argument("--install-corpora", action="store_true",
                           help="apt-get install the Debian text zoo/toy-lm trains on, if missing (needs root)")
            p.add_argument("--quiet", action="store_true", help="no progress bar")
    p = sub.add_parser("dynamics", help="train a natural-text attention-only model and measure every checkpoint")
    p.add_argument("names", nargs="+", help="zoo/attn-only-2l-text and/or zoo/attn-only-1l-text")
    p.add_argument("--out", type=Path, default=Path("."), help="folder for the curves (JSON and SVG)")
    p.add_argument("--checkpoints", type=Path, default=None, help="also write every checkpoint's weights here")
    p.add_argument("--steps", type=int, default=None, help="override the recipe's number of steps")
    p.add_argument("--seed", type=int, default=None, help="override the recipe's seed")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.action == "dynamics":
        fields = {k: v for k, v in (("steps", args.steps), ("seed", args.seed)) if v is not None}
        for name in args.names:
            dynamics(name, args.out, args.checkpoints, progress=not args.quiet, **fields)
        return 0
    known = registry.recipes()
    names = list(known) if args.all else args.names
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        parser.error(f"choose from {list(known)} (unknown: {unknown})")
    if args.action == "build":
        options: dict[str, Any] = {k: v for k, v in (("steps", args.steps), ("seed", args.seed)) if v is not None}
        if args.quiet:
            options["progress"] = False
        if args.install_corpora:
            from circuitlab.zoo import text_data

            text_data.require_corpora(install=True)
    for name in names:
        if args.action == "build":
            build(name, args.out, **options)
        else:
            card = remeasure(name, args.out)
            print(f"{name}: {card['description']}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
