"""Building the zoo: train a model by its recipe, measure it, and write it where ``load_model`` finds it.

    python -m circuitlab.zoo build zoo/attn-only-2l      # retrain (deterministic by seed) and overwrite
    python -m circuitlab.zoo build --all --out /tmp/zoo   # rebuild everything elsewhere
    python -m circuitlab.zoo build zoo/toy-lm --steps 200 --seed 1 --out /tmp/zoo   # a variant of the recipe
    python -m circuitlab.zoo measure zoo/attn-only-2l    # re-measure the shipped weights, update the card

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

from circuitlab.models.io import CARD_FILE, load_model_dir, read_card, save_model
from circuitlab.models.loading import ZOO_DIR, ZOO_PREFIX
from circuitlab.zoo import registry


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
    args = parser.parse_args(argv)
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
