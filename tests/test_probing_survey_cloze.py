"""Cloze controls (Zhong et al. 2021): the invented-subject control's ranks against ranks computed by hand on the
filled prompts, the shuffled model against the weights it came from (each block tensor a permutation of its own,
the embeddings untouched) and against ranks by hand on it, the gain's arithmetic, and toy-lm's facts (known to the
model, so the controls fall far below raw precision: a check the controls can fail)."""

from pathlib import Path

import pytest
import torch

import circuitlab
from circuitlab.errors import InputError
from circuitlab.probing.cloze import CONTROL_METRICS, cloze_control, control_names, shuffled_model
from circuitlab.tasks.factual import Fact


@pytest.fixture(scope="module")
def toy():
    return circuitlab.load_model("zoo/toy-lm")


def fact(subject, answer, relation):
    return Fact(f"{subject} is", subject, answer, relation)


FACTS = [fact("Wexmira", " dog", "pet"), fact("Brindle", " dog", "pet"), fact("Orvald", " cat", "pet"),
         fact("Wexmira", " house", "place"), fact("Orvald", " garden", "place")]
TEMPLATES = {"pet": ("{subject} has a pet", "The pet of {subject} is a"), "place": ("{subject} lives in the",)}


def rank_by_hand(model, prompt, answer):
    with torch.no_grad():
        logits = model(model.to_tokens(prompt))[0, -1]
    a = model.to_tokens(answer, prepend_bos=False)[0, 0]
    tol = 1024 * torch.finfo(torch.float32).eps * max(abs(float(logits[a])), 1.0)
    return int((logits >= logits[a] - tol).sum()) - 1


@pytest.fixture(scope="module")
def result(toy):
    return cloze_control(toy, FACTS, TEMPLATES, n_names=2, seed=3)


def test_names_control_matches_ranks_by_hand(toy, result):
    col = {m: i for i, m in enumerate(CONTROL_METRICS)}
    for i, rel in enumerate(result.by_relation.labels["relation"]):
        per_template1, per_template10 = [], []
        for t in TEMPLATES[rel]:
            ranks = [rank_by_hand(toy, t.replace("{subject}", name), a)
                     for (_, a), names in zip(result.scores.facts[rel], result.names[rel]) for name in names]
            per_template1.append(sum(r == 0 for r in ranks) / len(ranks))
            per_template10.append(sum(r < 10 for r in ranks) / len(ranks))
        v = result.by_relation.values[i]
        assert v[col["names P@1"]].item() == pytest.approx(sum(per_template1) / len(per_template1), abs=1e-6)
        assert v[col["names P@10"]].item() == pytest.approx(sum(per_template10) / len(per_template10), abs=1e-6)
    drawn = [n for rel in result.names.values() for names in rel for n in names]
    assert len(drawn) == len(set(drawn)) == 2 * 5 and not {"Wexmira", "Brindle", "Orvald"} & set(drawn)


@pytest.fixture(scope="module")
def shuffled(toy):
    return shuffled_model(toy, seed=3)  # the control model of `result` (the same seed)


def test_shuffled_model_permutes_each_block_tensor(toy, shuffled):
    moved = 0
    for (name, p), (_, q) in zip(toy.named_parameters(), shuffled.named_parameters()):
        if name.startswith("blocks."):
            assert torch.equal(p.detach().flatten().sort().values, q.detach().flatten().sort().values), name
            moved += int(not torch.equal(p, q))
        else:
            assert torch.equal(p, q), name
    assert moved >= 10


def test_shuffled_control_and_gain(toy, shuffled, result):
    col = {m: i for i, m in enumerate(CONTROL_METRICS)}
    for i, rel in enumerate(result.by_relation.labels["relation"]):
        p1 = [sum(rank_by_hand(shuffled, t.replace("{subject}", s), a) == 0 for s, a in result.scores.facts[rel])
              / len(result.scores.facts[rel]) for t in TEMPLATES[rel]]
        v = result.by_relation.values[i]
        assert v[col["shuffled P@1"]].item() == pytest.approx(sum(p1) / len(p1), abs=1e-6)
        for k in ("1", "10"):
            control = max(v[col[f"names P@{k}"]].item(), v[col[f"shuffled P@{k}"]].item())
            assert v[col[f"gain P@{k}"]].item() == pytest.approx(v[col[f"P@{k}"]].item() - control, abs=1e-6)
    assert "mean over relations" in result.summary()


def test_known_toy_facts_beat_their_controls(toy):
    from circuitlab.tasks.factual import toy_facts
    from circuitlab.tasks.toy_world import load_world

    world = load_world(Path(circuitlab.__file__).parent / "zoo" / "weights" / "toy-lm")
    facts = toy_facts(world)[:40]
    templates = {f.relation: (f.prompt.replace(f.subject, "{subject}", 1),) for f in facts}
    single = [f for f in facts if templates[f.relation][0].replace("{subject}", f.subject) == f.prompt]
    res = cloze_control(toy, single, templates, controls=("names",), n_names=2)
    col = {m: i for i, m in enumerate(CONTROL_METRICS)}
    v = res.by_relation.values
    assert v[:, col["P@1"]].mean() >= 0.5 and v[:, col["names P@1"]].mean() <= 0.2, v
    assert v[:, col["shuffled P@1"]].isnan().all()  # not run
    assert torch.allclose(v[:, col["gain P@1"]], v[:, col["P@1"]] - v[:, col["names P@1"]])


def test_control_names_and_bad_controls(toy):
    names = control_names(50, seed=0, avoid=["Braabury"])
    assert len(set(names)) == 50 and "Braabury" not in names and names == control_names(50, seed=0,
                                                                                         avoid=["Braabury"])
    with pytest.raises(InputError, match="invented names"):
        control_names(10**6)
    for bad in ("names", ["nope"], [], ["names", "names"]):
        with pytest.raises(InputError, match="controls"):
            cloze_control(toy, FACTS, TEMPLATES, controls=bad)


def test_probe_cloze_control_command(capsys):
    from circuitlab.cli import main

    assert main(["probe", "cloze", "-m", "zoo/toy-lm", "--control", "--relations", "country_currency", "-q"]) == 0
    out = capsys.readouterr().out
    assert "names P@1" in out and "gain P@1" in out and "country_currency" in out


def test_finding_rule():
    from circuitlab.reproduce.cloze_control import judge

    assert judge(0.5, 0.2)[:2] == (True, True)  # 40% of raw, gain 0.3
    assert judge(0.5, 0.05)[:2] == (False, True)  # 10% of raw
    assert judge(0.3, 0.28)[:2] == (True, False)  # gain 0.02
    assert judge(0.0, 0.0)[:2] == (False, False)


def test_finding_runs_on_toy_lm():
    from circuitlab import reproduce
    from circuitlab.reproduce.cloze_control import judge

    rep = reproduce.run("cloze-precision-needs-a-control", "zoo/toy-lm")
    v = rep.measurement.values
    a, b, _ = judge(v["raw"], v["control"])
    assert rep.verdict == ("reproduced" if a and b else "partly" if a else "not reproduced")
    assert set(v["by_relation"]) == {"country_currency", "landmark_country"}  # toy-lm's one-token answers
    assert reproduce.run("cloze-precision-needs-a-control", "zoo/toy-lm").verdict == rep.verdict  # seeded
