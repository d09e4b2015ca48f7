"""Cloze probing: answer ranks against a by-hand reference, P@k per template and relation, the template spread, the
frequency-only baseline, skipped answers and bad inputs."""

import statistics

import pytest
import torch

import circuitlab
from circuitlab.errors import InputError
from circuitlab.probing.cloze import CLOZE_TEMPLATES, RELATION_METRICS, cloze, fill, frequency_baseline
from circuitlab.tasks.factual import FACTS, Fact


@pytest.fixture(scope="module")
def toy():
    return circuitlab.load_model("zoo/toy-lm")


def fact(subject, answer, relation):
    return Fact(f"{subject} is", subject, answer, relation)


# pets: answers " dog" x3, " cat" x1; places: " house", " garden", " river"; one multi-token answer skipped
FACTS_TOY = [fact("Wexmira", " dog", "pet"), fact("Brindle", " dog", "pet"), fact("Orvald", " cat", "pet"),
             fact("Tamsin", " dog", "pet"), fact("Tamsin", " dog", "pet"),  # a repeat counts once
             fact("Wexmira", " house", "place"), fact("Orvald", " garden", "place"), fact("Brindle", " river", "place"),
             fact("Tamsin", " Zzyzxq", "place")]
TEMPLATES = {"pet": ("{subject} has a pet", "The pet of {subject} is a", "{subject} walks the"),
             "place": ("{subject} lives in the", "The home of {subject} is the")}


def rank_by_hand(model, prompt, answer):
    with torch.no_grad():
        logits = model(model.to_tokens(prompt))[0, -1]
    a = model.to_tokens(answer, prepend_bos=False)[0, 0]
    # a token within float noise of the answer's logit (1024 float32 ulps of it, at least of 1) counts as above it
    tol = 1024 * torch.finfo(torch.float32).eps * max(abs(float(logits[a])), 1.0)
    return int((logits >= logits[a] - tol).sum()) - 1


def test_cloze_matches_by_hand(toy):
    res = cloze(toy, FACTS_TOY, TEMPLATES, max_memory=1)
    assert res.skipped == {"pet": 0, "place": 1}
    assert res.facts["pet"] == [("Wexmira", " dog"), ("Brindle", " dog"), ("Orvald", " cat"), ("Tamsin", " dog")]
    labels = res.by_template.labels["prompt"]
    assert labels == [f"{r}: {t}" for r in TEMPLATES for t in TEMPLATES[r]]
    p1 = {}
    for row, (rel, tmpl) in enumerate((r, t) for r in TEMPLATES for t in TEMPLATES[r]):
        ranks = [rank_by_hand(toy, tmpl.replace("{subject}", s), a) for s, a in res.facts[rel]]
        assert res.ranks[f"{rel}: {tmpl}"].tolist() == ranks
        assert res.by_template.values[row].tolist() == pytest.approx(
            [sum(r == 0 for r in ranks) / len(ranks), sum(r < 10 for r in ranks) / len(ranks)])
        p1.setdefault(rel, []).append(sum(r == 0 for r in ranks) / len(ranks))
    col = {m: i for i, m in enumerate(RELATION_METRICS)}
    for k, rel in enumerate(res.by_relation.labels["relation"]):
        v = res.by_relation.values[k]
        assert v[col["P@1"]].item() == pytest.approx(statistics.mean(p1[rel]), abs=1e-6)
        assert v[col["P@1 sd"]].item() == pytest.approx(statistics.pstdev(p1[rel]), abs=1e-6)
        assert v[col["P@1 min"]].item() == pytest.approx(min(p1[rel]))
        assert v[col["P@1 max"]].item() == pytest.approx(max(p1[rel]))
    # the frequency baseline: pets always " dog" (3 of 4); places are all different (1 of 3), top 10 holds every answer
    assert res.by_relation.values[0, col["baseline P@1"]].item() == pytest.approx(0.75)
    assert res.by_relation.values[1, col["baseline P@1"]].item() == pytest.approx(1 / 3)
    assert res.by_relation.values[:, col["baseline P@10"]].tolist() == [1.0, 1.0]
    assert "mean over relations" in res.summary()
    assert set(res.to_dataframe()["result"]) == {"by_relation", "by_template"}


def test_cloze_toy_world_facts_are_found(toy):
    """toy-lm was trained on its world's facts: with the held-out sentence as template it finds many answers
    at rank 0, far above the frequency baseline (a check the metric can fail: a wrong rank gives ~0)."""
    from pathlib import Path

    from circuitlab.tasks.factual import known_facts, toy_facts
    from circuitlab.tasks.toy_world import load_world

    world = load_world(Path(circuitlab.__file__).parent / "zoo" / "weights" / "toy-lm")
    facts = toy_facts(world)[:40]
    known = set(known_facts(toy, facts))
    templates = {f.relation: (f.prompt.replace(f.subject, "{subject}", 1),) for f in facts}
    single = [f for f in facts if templates[f.relation][0].replace("{subject}", f.subject) == f.prompt]
    res = cloze(toy, single, {r: templates[r] for r in {f.relation for f in single}})
    n_rank0 = sum(int((rk == 0).sum()) for rk in res.ranks.values())
    assert n_rank0 == len([f for f in single if f in known])
    assert len(single) >= 5 and n_rank0 >= 3, (len(single), n_rank0)
    assert (res.by_relation.values[:, 0] > res.by_relation.values[:, 6]).any()


def test_fill_and_baseline():
    assert fill("To see {subject}, go", "The Eiffel Tower") == "To see the Eiffel Tower, go"
    assert fill("{subject} is in", "The Eiffel Tower") == "The Eiffel Tower is in"
    assert frequency_baseline([" a", " b", " a", " c"], 1) == 0.5
    assert frequency_baseline([" a", " b", " a", " c"], 2) == 0.75
    assert set(CLOZE_TEMPLATES) == {f.relation for f in FACTS}
    assert all(len(t) >= 3 and all("{subject}" in x for x in t) for t in CLOZE_TEMPLATES.values())


def test_bad_inputs(toy):
    with pytest.raises(InputError, match="no templates for relations"):
        cloze(toy, FACTS_TOY, {"pet": TEMPLATES["pet"]})
    with pytest.raises(InputError, match="relation 'place' has no fact whose answer is one token"):
        cloze(toy, [fact("Tamsin", " Zzyzxq", "place")] + FACTS_TOY[:1], TEMPLATES, relations=["pet", "place"])
    with pytest.raises(InputError, match="no fact has an answer that is one token"):
        cloze(toy, [fact("Tamsin", " Zzyzxq", "place")], TEMPLATES)
    left = cloze(toy, [fact("Tamsin", " Zzyzxq", "place")] + FACTS_TOY[:1], TEMPLATES)
    assert left.by_relation.labels["relation"] == ["pet"] and left.skipped == {"pet": 0, "place": 1}
    with pytest.raises(InputError, match="no {subject} slot"):
        cloze(toy, FACTS_TOY[:1], {"pet": ("A pet is a",)})
    with pytest.raises(InputError, match=r"facts\[0\]"):
        cloze(toy, [("Wexmira", " dog", "pet")], TEMPLATES)
    with pytest.raises(InputError, match="ends with whitespace"):
        fill("{subject} has a ", "Wexmira")
