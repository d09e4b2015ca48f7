"""A CounterFact-style evaluation set for model editing (after Meng et al. 2022, section 4.2), written for circuitlab.

Each :class:`EditCase` asks to rewrite one fact the model knows and says how to check the rewrite:

- ``fact``: the :class:`~circuitlab.tasks.factual.Fact` (prompt, subject, true answer, relation);
- ``new``: a **counterfactual object** from the same relation (the answer of another fact of that relation, drawn
  with a seed), a single token for the model where possible;
- ``paraphrases``: two or more other prompts of the same relation about the same subject (templates written here
  per relation; for the toy world, the world's other sentence templates), for *generalisation*;
- ``neighbours``: facts of the same relation about *other* subjects, those with the same true answer first (as
  CounterFact picks them), then others of the relation, for *specificity*: after the edit each should still prefer
  its own answer to the new object;
- ``generation``: prompts that start with the subject, for fluency and consistency of generated text.

:func:`counterfact_cases` builds the cases for the facts a model knows (:func:`circuitlab.tasks.factual.known_facts`)
from :data:`circuitlab.tasks.factual.FACTS` or any facts; :func:`toy_cases` does it for ``zoo/toy-lm``'s world.
No text is taken from the CounterFact data set.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Optional, Sequence

from circuitlab.core import ModelLike, as_model, check_count, check_seed, shorten
from circuitlab.errors import InputError
from circuitlab.tasks.factual import FACTS, Fact, known_facts, single_token
from circuitlab.tasks.toy_world import World, fact_sentence

#: paraphrase templates per relation of :data:`FACTS` ("{}": the subject)
PARAPHRASES: dict[str, tuple[str, ...]] = {
    "country_capital": ("The capital of {} is", "{} is governed from its capital city,"),
    "country_language": ("The language most people speak in {} is", "In {}, the official language is"),
    "country_continent": ("{} is located on the continent of", "{} is part of the continent of"),
    "country_currency": ("The official currency of {} is the", "In {}, people pay with the"),
    "city_country": ("{} is a city in the country of", "The city of {} is located in"),
    "landmark_city": ("{} stands in the city of", "You can visit {} in the city of"),
    "landmark_country": ("{} is located in the country of", "{} can be found in"),
    "company_country": ("{} is a company from", "The company {} is headquartered in"),
    "athlete_sport": ("{} is a professional player of", "{} is best known for playing"),
    "musician_instrument": ("{} is famous for playing the", "{} is a musician who plays the"),
    "scientist_field": ("{} is known for contributions to", "{} worked in the field of"),
}
#: prompts for generated text ("{}": the subject)
GENERATION = ("{} is", "People say that {}")


@dataclass(frozen=True)
class EditCase:
    """One counterfactual rewrite and its checks (see the module docstring)."""

    fact: Fact
    new: str
    paraphrases: tuple[str, ...]
    neighbours: tuple[Fact, ...]
    generation: tuple[str, ...]

    @property
    def request(self) -> tuple[str, str, str]:
        """``(prompt, subject, new)``, what an editing method takes."""
        return (self.fact.prompt, self.fact.subject, self.new)


def _cases(model, known: list[Fact], paraphrases_of, seed: int, n: Optional[int], n_neighbours: int
           ) -> list[EditCase]:
    rng = random.Random(seed)
    answers: dict[str, list[str]] = {}
    for f in known:
        answers.setdefault(f.relation, [])
        if f.answer not in answers[f.relation]:
            answers[f.relation].append(f.answer)
    out = []
    for f in known:
        options = [a for a in answers[f.relation] if a != f.answer and single_token(model, a) is not None]
        if not options:
            continue
        paraphrases = tuple(p for p in paraphrases_of(f) if p != f.prompt)
        if len(paraphrases) < 2:
            continue
        new = rng.choice(options)
        same = [g for g in known if g.relation == f.relation and g.subject != f.subject and g.answer == f.answer]
        other = [g for g in known if g.relation == f.relation and g.subject != f.subject and g.answer != f.answer
                 and g.answer != new]
        rng.shuffle(other)
        neighbours = tuple((same + other)[:n_neighbours])
        if not neighbours:
            continue
        out.append(EditCase(f, new, paraphrases, neighbours, tuple(t.format(f.subject) for t in GENERATION)))
    rng.shuffle(out)
    return out if n is None else out[:n]


def counterfact_cases(model: ModelLike, facts: Sequence[Fact] = FACTS, *, n: Optional[int] = None, seed: int = 0,
                      n_neighbours: int = 5) -> list[EditCase]:
    """Cases for the ``facts`` ``model`` knows (top-1 answer, single token), in a seeded random order, at most
    ``n``; facts of relations without paraphrase templates, or without another answer or another subject, are left
    out."""
    model = as_model(model)
    seed = check_seed(seed)
    n = None if n is None else check_count(n, "n")
    n_neighbours = check_count(n_neighbours, "n_neighbours")
    for f in facts:
        if not isinstance(f, Fact):
            raise InputError(f"facts must hold Fact objects (circuitlab.tasks.factual); got {shorten(f)}.")
    known = [f for f in known_facts(model, list(facts)) if f.relation in PARAPHRASES]
    return _cases(model, known, lambda f: [t.format(f.subject) for t in PARAPHRASES[f.relation]], seed, n,
                  n_neighbours)


def toy_cases(model: ModelLike, world: World, *, n: Optional[int] = None, seed: int = 0,
              n_neighbours: int = 5) -> list[EditCase]:
    """Cases for ``zoo/toy-lm``'s world: each known fact asked with its held-out template, paraphrased with the
    world's other templates of the relation."""
    from circuitlab.tasks.factual import toy_facts

    model = as_model(model)
    seed = check_seed(seed)
    n = None if n is None else check_count(n, "n")
    known = known_facts(model, toy_facts(world))

    def paraphrases(f: Fact) -> list[str]:
        n_t = len(world.relations[f.relation]["templates"])
        return [fact_sentence(world, f.subject, f.relation, t)[0] for t in range(n_t)]

    return _cases(model, known, paraphrases, seed, n, n_neighbours)
