"""The finding "induction-heads-in-real-lms": its measurement on zoo/toy-lm against independent computations, its
verdict against the rule recomputed from its values, and (marked real and slow) runs on the real models."""

from __future__ import annotations


import pytest
import torch

import circuitlab
from circuitlab import induction, reproduce
from circuitlab.reproduce import NotApplicable
from circuitlab.reproduce import induction_real as F
from circuitlab.testing import need_real_model

SEED = 7


def rule(values: dict) -> str:
    """The rule as the finding states it: best score >= 0.3, and a drop of at least 1 nat; partly if one holds."""
    held = (values["best_induction"] >= 0.3) + (values["first_half_loss"] - values["repeated_half_loss"] >= 1.0)
    return ("not reproduced", "partly", "reproduced")[held]


@pytest.fixture(scope="module")
def toy():
    return circuitlab.load_model("zoo/toy-lm")


@pytest.fixture(scope="module")
def measured(toy):
    return F.FINDING.measure(toy, SEED)


def test_registered_with_a_fixed_rule_and_the_three_models():
    f = reproduce.get_finding("induction-heads-in-real-lms")
    assert f is F.FINDING
    assert f.models == ("gemma-3-270m", "smollm2-135m", "zoo/toy-lm")
    assert "0.3" in f.rule and "1 nat" in f.rule
    assert f.published and f.published_model and f.citation.where


def test_verdict_is_the_rule_applied_to_the_values(toy, measured):
    # the rule on numbers computed here without the measurement: head_scores' best head, the model's own losses
    best = float(induction.head_scores(toy, "induction", n_seqs=F.N_SEQS, seed=SEED).values.max())
    rep = induction.repeated_sequences(toy, n_seqs=F.N_SEQS, seed=SEED)
    with torch.no_grad():
        per_tok = toy(rep.tokens, return_type="loss", loss_per_token=True)
    p, n = rep.prefix, rep.seq_len
    drop = per_tok[:, p : p + n - 1].mean().item() - per_tok[:, p + n : p + 2 * n - 1].mean().item()
    assert measured.verdict == ("not reproduced", "partly", "reproduced")[(best >= 0.3) + (drop >= 1.0)]
    assert measured.verdict == rule(measured.values)
    assert measured.values["seed"] == SEED and measured.values["n_seqs"] == F.N_SEQS


def test_induction_scores_are_head_scores(toy, measured):
    direct = induction.head_scores(toy, "induction", n_seqs=F.N_SEQS, seed=SEED).values
    assert measured.values["best_induction"] == pytest.approx(float(direct.max()), abs=1e-6)
    flat = direct.flatten()
    top = flat.argsort(descending=True)[:3]
    want = [(f"L{int(i) // direct.shape[1]}H{int(i) % direct.shape[1]}", float(flat[i])) for i in top]
    got = measured.values["top_heads"]
    assert [h for h, _ in got] == [h for h, _ in want]
    assert [v for _, v in got] == pytest.approx([v for _, v in want], abs=1e-6)
    assert measured.values["n_heads_above_threshold"] == int((direct >= 0.3).sum())
    scores = measured.evidence[0]
    assert scores.axes == ("layer", "head")
    torch.testing.assert_close(scores.values, direct)


def test_half_losses_by_hand_from_the_model_cross_entropy(toy, measured):
    rep = induction.repeated_sequences(toy, n_seqs=F.N_SEQS, seed=SEED)
    p, n = rep.prefix, rep.seq_len
    assert measured.values["seq_len"] == n
    with torch.no_grad():
        per_tok = toy(rep.tokens, return_type="loss", loss_per_token=True)  # per_tok[:, j] predicts token j + 1
    first = per_tok[:, p : p + n - 1].mean().item()  # r_2..r_n of the first copy
    second = per_tok[:, p + n : p + 2 * n - 1].mean().item()  # r_2..r_n of the repeated copy
    assert measured.values["first_half_loss"] == pytest.approx(first, abs=1e-4)
    assert measured.values["repeated_half_loss"] == pytest.approx(second, abs=1e-4)
    assert measured.values["loss_drop"] == pytest.approx(first - second, abs=1e-4)
    # the same repeated-copy loss as ablation_effect's unablated baseline
    baseline = induction.ablation_effect(toy, [(0, 0)], n_seqs=F.N_SEQS, seed=SEED).baseline
    assert measured.values["repeated_half_loss"] == pytest.approx(baseline, abs=1e-4)
    losses = measured.evidence[1]
    assert losses.axes == ("copy", "token") and losses.shape == (2, n - 1)
    assert losses.values.mean(1).tolist() == pytest.approx([first, second], abs=1e-4)


def test_seed_picks_the_sequences(toy, measured):
    other = F.FINDING.measure(toy, SEED + 1)
    assert other.values["first_half_loss"] != measured.values["first_half_loss"]
    assert other.verdict == rule(other.values)


def test_run_gives_a_row_and_a_one_layer_model_is_not_applicable():
    r = reproduce.run("induction-heads-in-real-lms", "zoo/toy-lm", seed=SEED)
    row = r.row()
    assert row["verdict"] == r.verdict == rule(r.measurement.values) and row["seed"] == str(SEED)
    assert "induction" in row["measured"]
    one = reproduce.run("induction-heads-in-real-lms", "zoo/attn-only-1l")
    assert one.verdict == "not applicable"
    with pytest.raises(NotApplicable):
        F.FINDING.measure(circuitlab.load_model("zoo/attn-only-1l"), 0)


# ---------------------------------------------------------------------------------------------------------
# Real models (their PyPI packages; converted once into the cache)
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.real
@pytest.mark.slow
@pytest.mark.parametrize("name", ["gemma-3-270m", "smollm2-135m"])
def test_on_a_real_model(name):
    need_real_model(name)
    r = reproduce.run("induction-heads-in-real-lms", name)
    print(r.row())
    v = r.measurement.values  # the rule again, from the top head's score and the reported drop
    assert r.verdict == ("not reproduced", "partly",
                         "reproduced")[(v["top_heads"][0][1] >= 0.3) + (v["loss_drop"] >= 1.0)]
    assert r.verdict == rule(r.measurement.values)
