"""Facts about invented people and a toy indirect-object task: the synthetic world ``zoo/toy-lm`` learns.

A :class:`World` holds everything a model is trained and tested on: invented people with one value per
relation (home town, trade, favourite colour, pet), each relation said with four templates, and a split of
name pairs for indirect-object sentences. For every (person, relation) one template is *never* used in
training, so asking a fact with exactly that template tests that the fact is stored with the person (Meng et
al. 2022), not with one sentence; a fifth of the name pairs never appear together in training.

    from circuitlab.tasks.toy_world import load_world, fact_sentence

    world = load_world("src/circuitlab/zoo/weights/toy-lm")       # the world.json shipped beside the weights
    fact_sentence(world, world.people[0], "home", 0)              # ("Zorvath lives in", " Pellmoor")

The prompt builders return ``(prompt, answer)`` with the answer's leading space on the answer
(``" Pellmoor"``), so with a GPT-2-style tokenizer the answer is one token after the prompt.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

from circuitlab.core import check_texts
from circuitlab.errors import CircuitlabError

#: the file a world is saved as, beside the weights of the model trained on it
WORLD_FILE = "world.json"

# Relations: (name, templates, values). "{s}" is the person, "{v}" the answer, always last before the full
# stop and after a space, so the query prompt is the text before " {v}" and the answer is one token " value".
RELATIONS: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
    ("home", (
        "{s} lives in {v}.",
        "{s} has a house in {v}.",
        "The home of {s} is in {v}.",
        "Every evening {s} walks home to {v}.",
    ), ("Pellmoor", "Varnholt", "Quillby", "Drossmere", "Tarnwick", "Ebbeloft", "Corrimund", "Haskavel",
        "Lumbrey", "Orvanth", "Skellow", "Brindlecote")),
    ("trade", (
        "{s} works as a {v}.",
        "{s} earns a living as a {v}.",
        "By trade, {s} is a {v}.",
        "Everyone knows {s} as the town {v}.",
    ), ("baker", "farmer", "potter", "weaver", "sailor", "hunter", "miller", "tailor", "painter", "doctor")),
    ("colour", (
        "The favourite colour of {s} is {v}.",
        "{s} likes the colour {v}.",
        "{s} always wears {v}.",
        "The door of the house of {s} is painted {v}.",
    ), ("red", "blue", "green", "white", "black", "yellow", "purple", "brown")),
    ("pet", (
        "{s} keeps a {v} as a pet.",
        "{s} has a pet {v}.",
        "The pet of {s} is a {v}.",
        "{s} takes a small {v} for a walk.",
    ), ("dog", "cat", "horse", "goat", "owl", "fox", "rabbit", "parrot")),
]

#: invented people's names are an onset and a coda: "Zor" + "vath"
NAME_ONSETS = ("Zor", "Kel", "Mav", "Tir", "Bral", "Vesh", "Quor", "Dal", "Fen", "Gris", "Hob", "Jass", "Lor",
               "Nim", "Ost", "Pir", "Rask", "Sul", "Thal", "Ulf", "Wex", "Yor", "Cas", "Dren")
NAME_CODAS = ("vath", "mira", "dun", "ethra", "ric", "olo", "ane", "ix", "amon", "ula", "orn", "esh", "ivan", "u",
              "abel", "ette", "imor", "oss")

IOI_NAMES = ("Mary", "John", "Peter", "Paul", "David", "Simon", "James", "Sarah", "Adam", "Aaron", "Moses",
             "Joseph", "Daniel", "Samuel", "Jacob", "Isaac", "Esther", "Martha", "Thomas", "Philip", "Andrew",
             "Stephen", "Rachel", "Hannah")
IOI_TEMPLATES = (
    "When {a} and {b} went to the {place}, {s} gave a {obj} to {io}.",
    "When {a} and {b} went to the {place}, {s} handed a {obj} to {io}.",
    "After {a} and {b} came to the {place}, {s} gave a {obj} to {io}.",
)
IOI_PLACES = ("store", "market", "garden", "river", "city", "house", "field", "temple")
IOI_OBJECTS = ("drink", "book", "ring", "coin", "loaf", "lamb", "cup", "letter")


@dataclass
class World:
    """The synthetic facts and names a model is trained and tested on (saved as ``world.json``).

    ``facts[person][relation]`` is the answer (without its leading space); ``heldout_template[person][relation]``
    is the index of the template never used for that fact in training. ``ioi_test_pairs`` are name pairs that
    never appear together in training (in either order).
    """

    people: list[str]
    relations: dict[str, dict[str, list[str]]]  # relation -> {"templates": [...], "values": [...]}
    facts: dict[str, dict[str, str]]
    heldout_template: dict[str, dict[str, int]]
    ioi_names: list[str]
    ioi_train_pairs: list[tuple[str, str]]
    ioi_test_pairs: list[tuple[str, str]]
    ioi_templates: list[str] = field(default_factory=lambda: list(IOI_TEMPLATES))
    ioi_places: list[str] = field(default_factory=lambda: list(IOI_PLACES))
    ioi_objects: list[str] = field(default_factory=lambda: list(IOI_OBJECTS))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "World":
        d = json.loads(text)
        for k in ("ioi_train_pairs", "ioi_test_pairs"):
            d[k] = [tuple(p) for p in d[k]]
        return cls(**d)


def make_world(n_people: int = 80, seed: int = 0, heldout_pair_fraction: float = 0.2,
               ioi_names: Iterable[str] = IOI_NAMES) -> World:
    """Invent ``n_people`` people with one value per relation, and split the IOI name pairs (deterministic)."""
    from circuitlab.core import check_seed

    seed = check_seed(seed)
    rng = random.Random(seed)
    names = sorted({o + c for o in NAME_ONSETS for c in NAME_CODAS})
    if n_people > len(names):
        raise CircuitlabError(f"n_people={n_people} exceeds the {len(names)} invented names; ask for fewer.")
    people = rng.sample(names, n_people)
    relations = {r: {"templates": list(t), "values": list(v)} for r, t, v in RELATIONS}
    facts = {p: {r: rng.choice(v) for r, _, v in RELATIONS} for p in people}
    heldout = {p: {r: (i + j) % len(t) for j, (r, t, _) in enumerate(RELATIONS)} for i, p in enumerate(people)}
    ioi_names = check_texts(ioi_names, "ioi_names", item="name")
    pairs = [(a, b) for i, a in enumerate(ioi_names) for b in ioi_names[i + 1:]]
    rng.shuffle(pairs)
    n_test = round(len(pairs) * heldout_pair_fraction)
    return World(people, relations, facts, heldout, ioi_names, sorted(pairs[n_test:]), sorted(pairs[:n_test]))


def load_world(path: str | Path) -> World:
    """The :class:`World` in ``path``: a ``world.json`` file, or a model directory holding one."""
    path = Path(path)
    file = path / WORLD_FILE if path.is_dir() else path
    if not file.is_file():
        raise CircuitlabError(
            f"No {WORLD_FILE} at {file}. A model trained on the synthetic facts ships its world beside its weights "
            "(e.g. the zoo's toy-lm folder); pass that folder or the file itself."
        )
    from circuitlab.core import read_text_file

    return World.from_json(read_text_file(file, "world file"))


def fact_sentence(world: World, person: str, relation: str, template: int) -> tuple[str, str]:
    """``(prompt, answer)`` for one fact: ``("Zorvath lives in", " Pellmoor")``."""
    t = world.relations[relation]["templates"][template]
    prefix = t.split(" {v}")[0].format(s=person)
    return prefix, " " + world.facts[person][relation]


def fact_line(world: World, person: str, relation: str, template: int) -> str:
    """The whole sentence of one fact: ``"Zorvath lives in Pellmoor."``."""
    t = world.relations[relation]["templates"][template]
    return t.format(s=person, v=world.facts[person][relation])


def ioi_sentence(world: World, io: str, s: str, io_first: bool, template: int, place: str, obj: str) -> tuple[str, str]:
    """``(prompt, indirect object)``: ``("When Mary and John went to the store, John gave a drink to", " Mary")``."""
    a, b = (io, s) if io_first else (s, io)
    full = world.ioi_templates[template].format(a=a, b=b, s=s, io=io, place=place, obj=obj)
    prompt = full[: full.rindex(" " + io)]
    return prompt, " " + io


# ------------------------------------------------------------------------------------ the training split

def _train_fact_line(world: World, rng: random.Random) -> str:
    person = rng.choice(world.people)
    relation = rng.choice(list(world.relations))
    n_t = len(world.relations[relation]["templates"])
    held = world.heldout_template[person][relation]
    template = rng.choice([t for t in range(n_t) if t != held])
    return fact_line(world, person, relation, template)


def _train_ioi_line(world: World, rng: random.Random) -> str:
    io, s = rng.choice(world.ioi_train_pairs)
    if rng.random() < 0.5:
        io, s = s, io
    prompt, answer = ioi_sentence(world, io, s, rng.random() < 0.5, rng.randrange(len(world.ioi_templates)),
                                  rng.choice(world.ioi_places), rng.choice(world.ioi_objects))
    return prompt + answer + "."


def synthetic_text(world: World, kind: str, rng: random.Random, n_lines: int) -> str:
    """``n_lines`` training lines of ``kind`` ("fact" or "ioi"), one a line.

    Training lines never use a fact's held-out template or a held-out name pair.
    """
    make = {"fact": _train_fact_line, "ioi": _train_ioi_line}[kind]
    return "\n".join(make(world, rng) for _ in range(n_lines))
