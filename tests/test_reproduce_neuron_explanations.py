"""The finding "neuron-explanations-beat-controls": registered with its rule, the judge equal to the rule written out
again here, and the measurement on zoo/toy-lm with small settings (the plumbing; the figures on zoo/toy-lm and
smollm2-135m with the finding's settings are in the issue's closing note)."""

from __future__ import annotations

import random

import circuitlab
from circuitlab import reproduce
from circuitlab.reproduce import neuron_explanations as F


def rule(scores, shuffled, chance):
    n = len(scores)
    m, ms, mc = sum(scores) / n, sum(shuffled) / n, sum(chance) / n
    a = m >= mc + 0.05
    b = m >= ms + 0.05 and sum(s > t for s, t in zip(scores, shuffled)) > n / 2
    return "reproduced" if a and b else "partly" if a or b else "not reproduced"


def test_registered_with_a_fixed_rule():
    f = reproduce.get_finding("neuron-explanations-beat-controls")
    assert f is F.FINDING and f.models[0] == "smollm2-135m" and "zoo/toy-lm" in f.models
    assert "Bills et al." in f.citation.authors and "1,000" in f.published and "0.8" in f.published
    assert "0.05" in f.rule and "majority" in f.rule and "shuffled" in f.rule


def test_the_judge_is_the_rule():
    rng = random.Random(0)
    for _ in range(300):
        n = rng.randint(2, 9)
        s, t, c = ([rng.uniform(-0.2, 0.6) for _ in range(n)] for _ in range(3))
        a, b, _ = F.judge(s, t, c)
        assert ("reproduced" if a and b else "partly" if a or b else "not reproduced") == rule(s, t, c)


def test_the_measurement_applies_the_rule_to_its_own_figures():
    m = F.measure(circuitlab.load_model("zoo/toy-lm"), 0, n_neurons=6, n_lines=120, excerpts=4)
    scores, shuffled, chance = (r.values[:, 0].tolist() for r in m.evidence)
    assert m.verdict == rule(scores, shuffled, chance)
    assert m.values["layer"] == 2 and len(m.values["neurons"]) == 6 and "vs shuffled control" in m.figures
