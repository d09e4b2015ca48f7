"""Indirect object identification (Wang et al. 2022): IOI prompts with ABC corruptions, for any model with a tokenizer.

On "When Mary and John went to the store, John gave a drink to" a model should prefer " Mary", the indirect object
(IO), over " John", the repeated subject (S). :func:`ioi_prompts` draws seeded prompts from a few templates of the
paper's kind, in both name orders (ABBA and BABA), with names, places and objects that are single tokens for the
model (checked with its tokenizer); for ``zoo/toy-lm`` the prompts come from
:func:`circuitlab.tasks.toy_world.ioi_sentence` with the world shipped beside its weights (held-out name pairs).
Each prompt has its "ABC" corruption (all three names replaced by other names). :func:`ioi_groups` groups prompts
by token length. The task of the reproduction ``ioi-name-movers`` (:mod:`circuitlab.reproduce.ioi`) and of
``circuitlab circuit --task ioi``.
"""

from __future__ import annotations

import random
from collections import defaultdict

import torch
from jaxtyping import Int

from circuitlab.core import check_affordable, check_count, check_seed, model_name, to_tokens
from circuitlab.errors import NotApplicable
from circuitlab.tasks.toy_world import ioi_sentence, load_world

# Templates of the paper's kind (its BABA/ABBA templates), cut before the indirect object. {a} and {b} are the
# two names in order, {s} the repeated subject.
TEMPLATES = (
    "When {a} and {b} went to the {place}, {s} gave a {obj} to",
    "Then, {a} and {b} had a lot of fun at the {place}. {s} gave a {obj} to",
    "While {a} and {b} were working at the {place}, {s} gave a {obj} to",
)
NAMES = ("Mary", "John", "Peter", "Paul", "David", "Simon", "James", "Sarah", "Adam", "Michael", "Thomas", "Daniel",
         "Anna", "Kate", "Laura", "Emma", "Jack", "Alice", "Robert", "George", "Henry", "Rachel", "Lisa", "Mark",
         "Tom", "Susan", "Helen", "Andrew", "Richard", "William")
PLACES = ("store", "garden", "restaurant", "school", "hospital", "office", "station", "market", "house", "park")
OBJECTS = ("ring", "drink", "book", "bone", "computer", "necklace", "snack", "letter", "flower", "coin")
#: the zoo model whose prompts come from its own world (held-out name pairs), not from TEMPLATES
TOY_LM = "zoo/toy-lm"


def _single(model, words) -> list[str]:
    """The words that are one token (with their leading space) for the model's tokenizer."""
    return [w for w in words if len(model.tokenizer.encode(" " + w, add_special_tokens=False)) == 1]


def ioi_prompts(model, seed: int, n: int = 12) -> list[dict]:
    """``n`` IOI prompts (seeded): dicts with ``clean``, ``corrupted`` (ABC: all three names replaced by other
    names), ``io``, ``s`` (answers with a leading space) and ``template`` (an index)."""
    seed, n = check_seed(seed), check_count(n, "n")
    check_affordable(2000 * n, f"n={n:,} IOI prompts (made at once, a few hundred bytes each)",
                     "use fewer prompts")
    rng = random.Random(seed)
    if model.tokenizer is None:
        raise NotApplicable("the IOI prompts are text and this model has no tokenizer")
    if model_name(model) == TOY_LM:
        from circuitlab.models.loading import ZOO_DIR

        world = load_world(ZOO_DIR / "toy-lm")  # the world shipped beside zoo/toy-lm's weights
        templates = [t[: t.rindex(" {io}")] for t in world.ioi_templates]
        names, places, objects = list(world.ioi_names), list(world.ioi_places), list(world.ioi_objects)
        pairs = list(world.ioi_test_pairs)  # name pairs the toy model never saw together in training
    else:
        world = None
        templates = list(TEMPLATES)
        names = _single(model, NAMES)
        places, objects = _single(model, PLACES), _single(model, OBJECTS)
        if len(names) < 5 or not places or not objects:
            raise NotApplicable(f"too few single-token names ({len(names)}), places ({len(places)}) or objects "
                                f"({len(objects)}) for this tokenizer to build IOI prompts")
        pairs = None
    out = []
    for i in range(n):
        t = i % len(templates)
        io_first = (i // len(templates)) % 2 == 0  # ABBA and BABA in turn
        if pairs is not None:
            io, s = rng.choice(pairs)
            if rng.random() < 0.5:
                io, s = s, io
        else:
            io, s = rng.sample(names, 2)
        place, obj = rng.choice(places), rng.choice(objects)
        x, y, z = rng.sample([m for m in names if m not in (io, s)], 3)
        a, b = (io, s) if io_first else (s, io)
        if world is not None:
            clean, answer = ioi_sentence(world, io, s, io_first, t, place, obj)
            assert answer == " " + io
        else:
            clean = templates[t].format(a=a, b=b, s=s, place=place, obj=obj)
        corrupted = templates[t].format(a=x, b=y, s=z, place=place, obj=obj)
        out.append({"clean": clean, "corrupted": corrupted, "io": " " + io, "s": " " + s, "template": t})
    return out


def ioi_groups(model, prompts: list[dict]
               ) -> list[tuple[list[int], Int[torch.Tensor, "batch pos"], Int[torch.Tensor, "batch pos"]]]:
    """Prompt indices grouped by token length (analyses compare positions, so a batch shares one length), with
    their clean and corrupted tokens: ``[(indices, clean [batch, pos], corrupted [batch, pos]), ...]`` by length.
    A corrupted prompt that tokenizes to another length than its clean prompt is :class:`NotApplicable`."""
    by_len: dict[int, list[int]] = defaultdict(list)
    toks = [to_tokens(model, p["clean"]) for p in prompts]
    for i, t in enumerate(toks):
        by_len[t.shape[1]].append(i)
    out = []
    for _, idx in sorted(by_len.items()):
        clean = to_tokens(model, [prompts[i]["clean"] for i in idx])
        corrupted = to_tokens(model, [prompts[i]["corrupted"] for i in idx])
        if corrupted.shape != clean.shape:
            raise NotApplicable("the ABC-corrupted prompts do not tokenize to the clean prompts' length")
        out.append((idx, clean, corrupted))
    return out


__all__ = ["NAMES", "OBJECTS", "PLACES", "TEMPLATES", "TOY_LM", "ioi_groups", "ioi_prompts"]
