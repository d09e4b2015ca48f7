"""Building the zoo: train a model by its recipe, measure it, and write it where ``load_model`` finds it.

    python -m circuitlab.zoo build zoo/attn-only-2l      # retrain (deterministic by seed) and overwrite
    python -m circuitlab.zoo build --all --out /tmp/zoo   # rebuild everything elsewhere
    python -m circuitlab.zoo measure zoo/attn-only-2l    # re-measure the shipped weights, update the card

A model's card (``card.json``) records its recipe, its training time and threads, and what was measured on
it; its one-line ``description`` is what ``circuitlab models`` prints.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from transformer_lens import HookedTransformer

from circuitlab.models.io import read_card, save_model
from circuitlab.models.loading import ZOO_DIR, ZOO_PREFIX


@dataclass(frozen=True)
class ZooRecipe:
    """How to make one zoo model: ``train() -> (model, card, files)`` and ``measure(model) -> dict``.

    ``files`` maps file names to the text of files that ship beside the weights (``{}`` for most models;
    ``zoo/toy-lm`` writes its synthetic world and its held-out text).
    """

    name: str
    train: Callable[[], tuple[HookedTransformer, dict[str, Any], dict[str, str]]]
    measure: Callable[[HookedTransformer], dict[str, Any]]
    describe: Callable[[dict[str, Any]], str]


def _attn_only(n_layers: int) -> ZooRecipe:
    from circuitlab.zoo import attn_only

    name = f"{ZOO_PREFIX}attn-only-{n_layers}l"
    return ZooRecipe(
        name=name,
        train=lambda: (*attn_only.train(attn_only.RECIPES[name], name), {}),
        measure=attn_only.measure,
        describe=attn_only.describe,
    )


def recipes() -> dict[str, ZooRecipe]:
    """Every zoo model this package knows how to build."""
    out = {r.name: r for r in (_attn_only(2), _attn_only(1))}
    try:
        from circuitlab.zoo import toy_lm
    except ImportError:
        return out
    if hasattr(toy_lm, "zoo_recipe"):
        r = toy_lm.zoo_recipe()
        out[r.name] = r
    return out


def build(name: str, out_dir: Path = ZOO_DIR, verbose: bool = True) -> Path:
    recipe = recipes()[name]
    model, card, files = recipe.train()
    card.update(recipe.measure(model))
    card["description"] = recipe.describe(card)
    path = save_model(model, out_dir / name.removeprefix(ZOO_PREFIX), card=card)
    for file_name, text in files.items():
        (path / file_name).write_text(text)
    if verbose:
        print(f"{name}: {card['description']}\n  written to {path}")
    return path


def remeasure(name: str, out_dir: Path = ZOO_DIR) -> dict[str, Any]:
    """Measure the shipped weights again and rewrite the card (the weights are not touched)."""
    from circuitlab.models.io import CARD_FILE, load_model_dir

    recipe = recipes()[name]
    path = out_dir / name.removeprefix(ZOO_PREFIX)
    model = load_model_dir(path, name=name)
    card = read_card(path)
    card.update(recipe.measure(model))
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
    args = parser.parse_args(argv)
    names = list(recipes()) if args.all else args.names
    unknown = [n for n in names if n not in recipes()]
    if unknown or not names:
        parser.error(f"choose from {list(recipes())} (unknown: {unknown})")
    for name in names:
        if args.action == "build":
            build(name, args.out)
        else:
            card = remeasure(name, args.out)
            print(f"{name}: {card['description']}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
