"""The zoo's recipe registry: every model circuitlab knows how to train, by zoo name.

Each recipe module (one file per recipe, listed in :data:`RECIPE_MODULES`) calls :func:`register` at import
time with a :class:`ZooRecipe`. :func:`recipes` imports those modules and returns what they registered. This
module imports no recipe at import time, so recipes import it freely; and a recipe module that fails to import
fails :func:`recipes` loudly rather than dropping out of ``python -m circuitlab.zoo build --all``.

A recipe module adding a model::

    from circuitlab.zoo.registry import ZooRecipe, register

    register(ZooRecipe(name="zoo/my-model", train=..., measure=..., describe=...))

and its module name goes into :data:`RECIPE_MODULES`.
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

from transformer_lens import HookedTransformer

from circuitlab.errors import CircuitlabError

#: the modules that register recipes, imported by :func:`recipes` (in this order)
RECIPE_MODULES = ("circuitlab.zoo.attn_only", "circuitlab.zoo.toy_lm")

_RECIPES: dict[str, "ZooRecipe"] = {}


@dataclass(frozen=True)
class ZooRecipe:
    """How to make one zoo model.

    - ``train(**options) -> (model, card, files)``: train by the recipe. ``files`` maps file names to the text
      of files that ship beside the weights (``{}`` for most models; ``zoo/toy-lm`` writes its synthetic world
      and its held-out text). ``train()`` with no options trains the shipped model; options override fields of
      the recipe's dataclass (``steps=10``, ``seed=1``) or ask for ``progress=False``.
    - ``measure(model, path) -> dict``: what the card records about ``model``, whose directory ``path`` holds its
      weights and the files ``train`` shipped beside them (measure reads those, never rebuilds them).
    - ``describe(card) -> str``: the card's one-line description, which ``circuitlab models`` prints.
    """

    name: str
    train: Callable[..., tuple[HookedTransformer, dict[str, Any], dict[str, str]]]
    measure: Callable[[HookedTransformer, Path], dict[str, Any]]
    describe: Callable[[dict[str, Any]], str]


def register(recipe: ZooRecipe) -> ZooRecipe:
    """Add ``recipe`` to the registry under ``recipe.name`` (again: replaced, as when its module is reloaded)."""
    if not isinstance(recipe, ZooRecipe):
        raise CircuitlabError(f"register() takes a ZooRecipe, got {type(recipe).__name__}.")
    _RECIPES[recipe.name] = recipe
    return recipe


def recipes() -> dict[str, ZooRecipe]:
    """Every zoo model this package knows how to build, by zoo name (importing the recipe modules)."""
    for module in RECIPE_MODULES:
        importlib.import_module(module)

    def order(recipe: ZooRecipe) -> int:  # by RECIPE_MODULES, whatever order the modules were imported in
        module = getattr(recipe.train, "__module__", None)
        return RECIPE_MODULES.index(module) if module in RECIPE_MODULES else len(RECIPE_MODULES)

    return {r.name: r for r in sorted(_RECIPES.values(), key=order)}


def get(name: str) -> ZooRecipe:
    """The recipe of zoo model ``name`` (e.g. ``"zoo/attn-only-2l"``)."""
    known = recipes()
    if name not in known:
        raise CircuitlabError(f"No zoo recipe named {name!r}; the zoo builds {', '.join(known)}.")
    return known[name]


R = TypeVar("R")


def with_fields(recipe: R, fields: dict[str, Any]) -> R:
    """A copy of the recipe dataclass ``recipe`` with ``fields`` replaced; unknown field names are an error."""
    names = {f.name for f in dataclasses.fields(recipe)}
    unknown = sorted(set(fields) - names)
    if unknown:
        raise CircuitlabError(f"{type(recipe).__name__} has no field {', '.join(map(repr, unknown))}; "
                              f"its fields are {', '.join(sorted(names))}.")
    return dataclasses.replace(recipe, **fields)
