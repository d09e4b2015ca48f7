"""The finding "causal-tracing-mlp-early-attention-late": its verdict against the rule written out again from the
returned curves, its figures against an independent average of single traces, and (real, slow) Gemma-3-270m."""

from __future__ import annotations

import pytest
import torch

import circuitlab
from circuitlab import reproduce
from circuitlab.reproduce import causal_tracing as F
from circuitlab.testing import need_real_model
from circuitlab.tracing import trace


def rule(mlp: list[float], attn: list[float]) -> str:
    """(a) the MLP curve's argmax at relative depth <= 0.6, positive, >= 2x its mean over the last third of layers;
    (b) the attention curve's argmax at relative depth >= 0.5, positive."""
    n = len(mlp)
    m = max(range(n), key=lambda i: mlp[i])
    a = max(range(n), key=lambda i: attn[i])
    third = max(1, n // 3)
    tail = sum(mlp[-third:]) / third
    early = m / (n - 1) <= 0.6 and mlp[m] > 0 and mlp[m] >= 2 * tail
    late = a / (n - 1) >= 0.5 and attn[a] > 0
    return ("not reproduced", "partly", "reproduced")[int(early) + int(late)]


def test_registered_with_a_fixed_rule():
    f = reproduce.get_finding("causal-tracing-mlp-early-attention-late")
    assert f is F.FINDING and f.models == ("gemma-3-270m", "smollm2-135m", "zoo/toy-lm")
    assert "0.6" in f.rule and "0.5" in f.rule and "GPT-2 XL" in f.published_model


@pytest.fixture(scope="module")
def toy():
    return circuitlab.load_model("zoo/toy-lm")


@pytest.mark.slow
def test_toy_lm_verdict_is_the_rule_and_the_curves_are_averages_of_traces(toy):
    m = F.measure(toy, seed=0, n_facts=6, samples=2)
    assert m.verdict == rule(m.values["mlp_last_subject"], m.values["attn_last"])
    # the curves by hand: one trace per fact, the last subject token's MLP row and the last token's attention row
    facts, _, _ = F.facts_for(toy, 0, 6)
    assert [f.prompt for f in facts] == m.values["facts"]
    mlp, attn = torch.zeros(toy.cfg.n_layers, dtype=torch.float64), torch.zeros(toy.cfg.n_layers, dtype=torch.float64)
    for f in facts:
        res = trace(toy, f.prompt, f.subject, f.answer, kinds=("mlp", "attn"), samples=2, seed=0, progress=False)
        mlp += res.values[0, res.meta["subject"][1] - 1] - res.corrupted_prob
        attn += res.values[1, -1] - res.corrupted_prob
    torch.testing.assert_close(torch.tensor(m.values["mlp_last_subject"], dtype=torch.float64), mlp / 6)
    torch.testing.assert_close(torch.tensor(m.values["attn_last"], dtype=torch.float64), attn / 6)
    # the verdict is the rule on these hand-averaged curves too, not only on the ones the measurement returned
    assert m.verdict == rule((mlp / 6).tolist(), (attn / 6).tolist())
    assert 0 <= m.values["bootstrap_early"] <= 1 and 0 <= m.values["bootstrap_late"] <= 1


def test_not_applicable_without_mlps():
    r = reproduce.run("causal-tracing-mlp-early-attention-late", "zoo/attn-only-2l")
    assert r.verdict == "not applicable" and "MLP" in r.measurement.why


@pytest.mark.real
@pytest.mark.slow
def test_gemma_runs_on_known_facts():
    need_real_model("gemma-3-270m")
    model = circuitlab.load_model("gemma-3-270m")
    m = F.measure(model, seed=0, n_facts=3, samples=1)
    assert m.verdict == rule(m.values["mlp_last_subject"], m.values["attn_last"])
    assert m.values["n_known"] >= 60 and m.values["window"] == 6 and m.values["n_layers"] == 18
    assert m.values["clean_prob"] > m.values["corrupted_prob"]
