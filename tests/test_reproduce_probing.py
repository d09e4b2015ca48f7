"""The probing findings (Hewitt & Liang, Hewitt & Manning, Clark et al.): registered with their rules, the judges
equal to the rules written out again here, and one cheap measurement on zoo/toy-lm whose verdict is the rule applied
to its own figures (the MiniLM-L6 figures are in the README's reproductions table)."""

from __future__ import annotations

import random

import pytest
import torch

import circuitlab
from circuitlab import reproduce
from circuitlab.probing import template_sentences
from circuitlab.reproduce import probing as F


def control_rule(lin, mlp):
    """(a) accuracies within 2 points; (b) linear selectivity at least 5 points above the MLP's."""
    a = abs(lin["accuracy"] - mlp["accuracy"]) <= 0.02
    b = (lin["accuracy"] - lin["control"]) - (mlp["accuracy"] - mlp["control"]) >= 0.05
    return "reproduced" if a and b else "partly" if b else "not reproduced"


def structural_rule(uuas, chain):
    """(a) the best layer beats the embedding (index 0) and the chain by 10 points; (b) it is neither the
    embedding nor the last layer."""
    top = max(uuas)
    best = uuas.index(top)  # the first of equal bests
    a = top >= uuas[0] + 0.10 and top >= chain + 0.10
    b = best not in (0, len(uuas) - 1)
    return ("not reproduced", "partly", "reproduced")[int(a) + int(b)]


def heads_rule(best, base):
    n = sum(best[r] - base[r] >= 0.15 for r in ("dobj", "det", "pobj", "nsubj"))
    return "reproduced" if n >= 3 else "partly" if n else "not reproduced"


def test_registered_with_fixed_rules():
    known = reproduce.findings()
    for f, paper in [(F.CONTROL_FINDING, "Hewitt & Liang"), (F.STRUCTURAL_FINDING, "Hewitt & Manning"),
                     (F.HEADS_FINDING, "Clark et al.")]:
        assert known[f.id] is f and f.models[0] == "minilm-l6" and f.citation.authors == paper
    assert "97.2" in F.CONTROL_FINDING.published and "92.8" in F.CONTROL_FINDING.published
    assert "82.5" in F.STRUCTURAL_FINDING.published and "48.9" in F.STRUCTURAL_FINDING.published
    assert "86.8" in F.HEADS_FINDING.published and "40.0" in F.HEADS_FINDING.published
    assert "2 points" in F.CONTROL_FINDING.rule and "5 points" in F.CONTROL_FINDING.rule
    assert "10 points" in F.STRUCTURAL_FINDING.rule and "15 points" in F.HEADS_FINDING.rule


def test_the_judges_are_the_rules():
    rng = random.Random(0)
    for _ in range(300):
        lin = {"accuracy": rng.uniform(0.8, 1), "control": rng.uniform(0.5, 1)}
        mlp = {"accuracy": lin["accuracy"] + rng.choice([-0.03, -0.01, 0.0, 0.015, 0.05]),
               "control": rng.uniform(0.5, 1)}
        for d in (lin, mlp):
            d["selectivity"] = d["accuracy"] - d["control"]
        a, b, _ = F.control_judge(lin, mlp)
        assert ("reproduced" if a and b else "partly" if b else "not reproduced") == control_rule(lin, mlp)
        uuas = [rng.uniform(0.3, 0.7) for _ in range(rng.randint(2, 7))]
        chain = rng.uniform(0.3, 0.6)
        a, b, _ = F.structural_judge(uuas, chain)
        assert ("not reproduced", "partly", "reproduced")[int(a) + int(b)] == structural_rule(uuas, chain)
        best = {r: rng.uniform(0, 1) for r in F.RELATIONS}
        base = {r: rng.uniform(0, 1) for r in F.RELATIONS}
        assert F.heads_judge(best, base)[0] == heads_rule(best, base)


def test_edges_of_the_rules():
    lin = {"accuracy": 0.95, "control": 0.70, "selectivity": 0.25}
    mlp = {"accuracy": 0.96, "control": 0.85, "selectivity": 0.11}
    assert F.control_judge(lin, mlp)[:2] == (True, True)
    assert F.control_judge(lin, dict(mlp, accuracy=0.99))[:2] == (False, True)
    # the embedding is best: (b) fails; the last layer best: (b) fails
    assert F.structural_judge([0.7, 0.5, 0.4], 0.5)[:2] == (False, False)
    assert F.structural_judge([0.4, 0.5, 0.7], 0.5)[:2] == (True, False)
    assert F.structural_judge([0.4, 0.7, 0.5], 0.5)[:2] == (True, True)
    assert F.heads_judge({r: 0.5 for r in F.RELATIONS}, {r: 0.5 for r in F.RELATIONS})[0] == "not reproduced"


@pytest.fixture
def one_thread():
    """Small probes: one thread is faster, and steady on a busy machine (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_control_verdict_on_toy_lm_is_the_rule(one_thread):
    toy = circuitlab.load_model("zoo/toy-lm")
    m = F.control_measure(toy, 0, sentences=template_sentences(60, seed=1), seeds=(0,),
                          linear=dict(max_iter=20), mlp=dict(epochs=4, hidden=32))
    assert m.values["hook"] == "blocks.1.hook_resid_post"  # half of toy-lm's 4 blocks
    assert m.verdict == control_rule(m.values["linear"], m.values["mlp"])
    assert m.evidence and m.evidence[0].axes == ("probe", "layer", "measure")
    assert f"{100 * m.values['linear']['accuracy']:.1f}" in m.figures


def test_a_model_without_a_tokenizer_is_not_applicable():
    class NoTok:
        tokenizer = None

    with pytest.raises(reproduce.NotApplicable):
        F.heads_measure(NoTok(), 0)
