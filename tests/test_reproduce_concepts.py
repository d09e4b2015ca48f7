"""The findings "tcav-sentiment-concepts" and "explanation-regularisation-ood": registered with their rules, the
verdicts equal to the rules written out again here from the returned figures (on zoo/toy-lm, small settings: the
plumbing; the smollm2-135m / gemma-3-270m figures are in the issue's closing note)."""

from __future__ import annotations

import pytest
import torch

import circuitlab
from circuitlab import reproduce
from circuitlab.reproduce import concepts as F


def tcav_rule(scores, significant):
    """(a) positive below neutral at a majority of hooks; (b) animals insignificant at a majority of hooks."""
    H = len(scores[0])
    a = sum(scores[0][j] < scores[1][j] for j in range(H)) > H / 2
    b = sum(not significant[2][j] for j in range(H)) > H / 2
    return ("not reproduced", "partly", "reproduced")[int(a) + int(b)]


def er_rule(acc, distributions):
    """acc[training][distribution][seed]: (a) mean ID accuracy drops by at most 0.02; (b) the mean over seeds of the
    average of the two OOD accuracies rises by >= 0.05, and rises in every seed."""
    i = distributions.index("in distribution")
    o = [distributions.index("no correlation"), distributions.index("reversed")]
    n = len(acc[0][0])
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    id_change = mean(acc[1][i]) - mean(acc[0][i])
    ood = [[mean([acc[t][k][s] for k in o]) for s in range(n)] for t in (0, 1)]
    a = id_change >= -0.02
    b = mean(ood[1]) - mean(ood[0]) >= 0.05 and all(ood[1][s] > ood[0][s] for s in range(n))
    return "reproduced" if a and b else "partly" if b else "not reproduced"


def test_registered_with_fixed_rules():
    t = reproduce.get_finding("tcav-sentiment-concepts")
    e = reproduce.get_finding("explanation-regularisation-ood")
    assert t is F.TCAV_FINDING and e is F.ER_FINDING
    assert t.models[0] == "smollm2-135m" and e.models[0] == "zoo/toy-lm"
    assert "majority" in t.rule and "0.05/3" in t.rule
    assert "0.02" in e.rule and "0.05" in e.rule and "every seed" in e.rule
    assert "Kim et al." in t.citation.authors and "ER-TEST" in e.citation.title


def test_the_judges_are_the_rules():
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        scores = torch.rand(3, 3, generator=gen).tolist()
        sig = (torch.rand(3, 3, generator=gen) > 0.5).tolist()
        a, b, _ = F.tcav_judge(scores, sig)
        assert ("not reproduced", "partly", "reproduced")[int(a) + int(b)] == tcav_rule(scores, sig)
        acc = (0.5 + 0.5 * torch.rand(2, 3, 3, generator=gen, dtype=torch.float64))
        labels = {"distribution": ["in distribution", "no correlation", "reversed"]}
        a, b, _ = F.er_judge(acc, labels)
        verdict = "reproduced" if a and b else "partly" if b else "not reproduced"
        assert verdict == er_rule(acc.tolist(), labels["distribution"])


@pytest.fixture(scope="module")
def toy():
    return circuitlab.load_model("zoo/toy-lm")


def test_er_verdict_on_toy_lm_is_the_rule(toy):
    m = F.er_measure(toy, 0, seeds=(0, 1), n_train=25, n_test=15, n_attributed=2, ig_steps=24)
    # the rule on constructed accuracies [training][distribution][seed] whose verdict is known: OOD up 0.2 in every
    # seed with ID kept; the same with ID down 0.1 (partly); ID kept but OOD unchanged (not: (a) alone is not partly)
    plain = [[0.9, 0.9], [0.5, 0.5], [0.5, 0.5]]
    for regularised, want in (([[0.9, 0.9], [0.7, 0.7], [0.7, 0.7]], "reproduced"),
                              ([[0.8, 0.8], [0.7, 0.7], [0.7, 0.7]], "partly"), (plain, "not reproduced")):
        acc = [plain, regularised]
        assert er_rule(acc, m.values["distributions"]) == want
        a, b, _ = F.er_judge(torch.tensor(acc), {"distribution": m.values["distributions"]})
        assert reproduce.verdict(a and b, b) == want
    assert m.verdict == er_rule(m.values["accuracy"], m.values["distributions"])
    assert m.values["seeds"] == [0, 1] and len(m.values["share"][0]) == 2


def test_tcav_verdict_on_toy_lm_is_the_rule(toy):
    m = F.tcav_measure(toy, 0, hooks=[1, 3], n_inputs=3, runs=3, set_size=5, n_random=12)
    assert m.values["label_words"] == [" good", " bad"]  # toy-lm spells " positive" in several tokens
    assert m.verdict == tcav_rule(m.values["scores"], m.values["significant"])
    assert len(m.values["hooks"]) == 2 and m.evidence
