"""The editing evaluation and the fine-tuning baseline on zoo/toy-lm: n-gram entropy against a hand count, sequence
log-probabilities against TransformerLens's per-token loss, an edit that changes nothing reported as unchanged,
fine-tuning against an explicit weight change, and the CounterFact-style cases' invariants."""

from __future__ import annotations

import math

import pytest
import torch

import circuitlab
from circuitlab.editing import Edit, Request, evaluate_edit, fine_tune, ngram_entropy
from circuitlab.editing.evaluate import sequence_logprobs
from circuitlab.models.loading import ZOO_DIR
from circuitlab.tasks.counterfact import PARAPHRASES, toy_cases
from circuitlab.tasks.factual import FACTS
from circuitlab.tasks.toy_world import load_world


@pytest.fixture(scope="module")
def model():
    return circuitlab.load_model("zoo/toy-lm")


@pytest.fixture(scope="module")
def cases(model):
    return toy_cases(model, load_world(ZOO_DIR / "toy-lm"), n=4, seed=0)


def test_ngram_entropy_by_hand():
    # "a b a b": bigrams ab, ba, ab -> p = 2/3, 1/3; trigrams aba, bab -> 1/2 each
    h2 = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
    assert ngram_entropy("a b a b") == pytest.approx((2 / 3 * h2 + 4 / 3 * 1.0) / 2)
    assert ngram_entropy("x x x x x x") == 0.0


def test_sequence_logprobs_match_the_models_loss(model):
    prompt, obj = "Wexmira has a house in", " Pellmoor Tarnwick"
    got = sequence_logprobs(model, [prompt], [obj])[0]
    toks = torch.cat([model.to_tokens(prompt), model.to_tokens(obj, prepend_bos=False)], 1)
    n = model.to_tokens(obj, prepend_bos=False).shape[1]
    with torch.no_grad():
        loss = model(toks, return_type="loss", loss_per_token=True)[0, -n:].double()
    assert float(got) == pytest.approx(-float(loss.sum()), rel=1e-5)


def test_cases_are_counterfactual_paraphrased_and_have_other_subjects(model, cases):
    assert len(cases) == 4
    for c in cases:
        assert c.new != c.fact.answer and len(c.paraphrases) >= 2
        assert all(c.fact.subject in p for p in c.paraphrases)
        assert all(g.subject != c.fact.subject and g.relation == c.fact.relation for g in c.neighbours)
        assert all(g.answer != c.new for g in c.neighbours)
    assert set(PARAPHRASES) == {f.relation for f in FACTS}  # two paraphrases for every relation of FACTS


def test_an_edit_that_changes_nothing_is_reported_unchanged(model, cases):
    c = cases[0]
    zero = Edit("rome", {0: torch.zeros_like(model.blocks[0].mlp.W_out, dtype=torch.float64)},
                (Request(*c.request),))
    s = evaluate_edit(model, zero, c, generate_tokens=4)
    assert s.status == "unchanged" and s.efficacy == 0.0
    assert s.p_new_after == s.p_new_before


def test_fine_tuning_changes_only_its_layer_and_writes_the_fact(model, cases):
    c = cases[0]
    e = fine_tune(model, [c.request], layer=0, n_prefixes=0, steps=15, lr=5e-3)
    assert e.layers == [0] and e.method == "ft"
    s = evaluate_edit(model, e, c, generate_tokens=4)
    assert s.status == "succeeded" and s.p_new_after > s.p_new_before
    # the edit is the weight change: applying it by hand gives the same log-probabilities
    with e.applied(model):
        lp = sequence_logprobs(model, [c.fact.prompt], [c.new])
    with torch.no_grad():
        saved = model.blocks[0].mlp.W_out.clone()
        model.blocks[0].mlp.W_out += e.deltas[0].float()
        lp2 = sequence_logprobs(model, [c.fact.prompt], [c.new])
        model.blocks[0].mlp.W_out.copy_(saved)
    assert float(lp) == pytest.approx(float(lp2), abs=1e-4)
    limited = fine_tune(model, [c.request], layer=0, n_prefixes=0, steps=3, norm_constraint=1e-4)
    assert limited.method == "ft-l" and float(limited.deltas[0].abs().max()) <= 1e-4 + 1e-12
