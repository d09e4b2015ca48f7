"""Coreference by representation similarity: accuracies against cosines computed by hand from the collector's word
rows, the baselines against the items' positions, and the template items against their own construction (the
pronoun agrees with the gold antecedent only)."""

import pytest
import torch

import circuitlab
from circuitlab.errors import InputError
from circuitlab.probing import collect
from circuitlab.probing.coreference import coreference_similarity
from circuitlab.tasks.coreference import FEMALE, MALE, CorefItem, coreference_items


@pytest.fixture(scope="module")
def toy():
    return circuitlab.load_model("zoo/toy-lm")


def test_items_agree_with_their_gold():
    items = coreference_items(20, seed=1)
    for it in items:
        pron, gold = it.words[it.pronoun], it.words[it.candidates[it.gold]]
        other = it.words[it.candidates[1 - it.gold]]
        if it.kind in ("gender", "role"):
            male = pron in ("he", "him")
            assert (gold in MALE) == male and (other in FEMALE) == male
        elif it.kind == "number":
            assert gold.endswith("s") == (pron == "they") and other.endswith("s") != (pron == "they")
    for kind in ("gender", "number", "role"):
        golds = [it.gold for it in items if it.kind == kind]
        assert sum(golds) * 2 == len(golds)  # the gold is second in half the items
    assert len([it for it in items if it.kind == "winograd"]) == 16


def test_accuracy_matches_cosines_by_hand(toy):
    items = coreference_items(6, seed=2)
    res = coreference_similarity(toy, items, hooks=["blocks.0.hook_resid_pre", "blocks.2.hook_resid_post"],
                                 cache=False)
    acts = collect(toy, [circuitlab.probing.Sentence(it.words) for it in items],
                   ["blocks.0.hook_resid_pre", "blocks.2.hook_resid_post"], cache=False)
    kinds = res.accuracy.labels["kind"]
    for h, hook in enumerate(acts.hooks):
        x = acts[hook] - acts[hook].mean(0)
        right = {k: [] for k in kinds}
        for i, it in enumerate(items):
            def vec(w):
                return x[((acts.sentence == i) & (acts.word == w)).nonzero()[0, 0]]
            cos = [torch.nn.functional.cosine_similarity(vec(it.pronoun), vec(c), dim=0) for c in it.candidates]
            ok = int(torch.stack(cos).argmax()) == it.gold
            right[it.kind].append(ok)
            right["all"].append(ok)
        for k, kind in enumerate(kinds):
            assert res.accuracy.values[k, h].item() == pytest.approx(sum(right[kind]) / len(right[kind]))
    assert torch.allclose(res.probabilities.sum(-1), torch.ones(2, len(items)))
    for k, kind in enumerate(kinds):
        group = [it for it in items if kind in ("all", it.kind)]
        first = sum(it.candidates[it.gold] == min(it.candidates) for it in group) / len(group)
        nearest = sum(it.candidates[it.gold] == max(it.candidates) for it in group) / len(group)
        assert res.baselines.values[k].tolist() == pytest.approx([first, nearest])


def test_bad_items(toy):
    with pytest.raises(InputError, match="items"):
        coreference_similarity(toy, ["Anna met Peter because she was late ."], cache=False)
    with pytest.raises(InputError, match="precede"):
        CorefItem(("she", "met", "Anna"), 0, (2, 1), 0, "gender")
    with pytest.raises(InputError, match="temperature"):
        coreference_similarity(toy, coreference_items(2), temperature=0, cache=False)


def test_probe_coref_command(capsys):
    from circuitlab.cli import main

    assert main(["probe", "coref", "-m", "zoo/toy-lm", "--n-per", "4", "-q"]) == 0
    out = capsys.readouterr().out
    assert "winograd" in out and "nearest cand" in out
