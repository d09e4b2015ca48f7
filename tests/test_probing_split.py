"""Probing results expose their data split (``meta["data_split"]``): the sentences of each split, by index and id,
and the sentences left out with why, so a user can compute a baseline on the same items.

Checked against a baseline computed by hand on the listed test sentences: the structural sweep's linear-structure
row (UUAS of the chain ``i - i+1`` over non-punctuation words) must equal the UUAS of that chain against the gold
trees of exactly the sentences ``data_split`` names.
"""

from __future__ import annotations

import pytest

from circuitlab.probing import probe_sweep, structural_sweep
from circuitlab.probing.activations import collect
from circuitlab.tasks.sentences import PUNCT_UPOS, Sentence, template_sentences

TOY = "zoo/toy-lm"


def _long_sentence(n: int = 300) -> Sentence:
    """A chain sentence longer than zoo/toy-lm's context (128 tokens): its last words align to no token."""
    return Sentence(words=tuple(["river"] * n), upos=tuple(["NOUN"] * n), head=tuple(range(n)),
                    deprel=tuple(["root"] + ["dep"] * (n - 1)), id="too-long")


@pytest.fixture(scope="module")
def setup():
    sentences = template_sentences(29, seed=3)  # 30 with the long one: the split (0.8, 0.1, 0.1) draws them all
    sentences.insert(5, _long_sentence())
    with pytest.warns(UserWarning, match="beyond_context"):
        acts = collect(TOY, sentences, [1], cache=False)
    return sentences, acts


def _chain_uuas(sentences: list[Sentence]) -> float:
    correct = total = 0
    for s in sentences:
        keep = [u not in PUNCT_UPOS for u in s.upos]
        gold = {(min(i, h - 1), max(i, h - 1)) for i, h in enumerate(s.head) if h and keep[i] and keep[h - 1]}
        kept = [i for i in range(len(s)) if keep[i]]
        chain = set(zip(kept, kept[1:]))
        correct += len(chain & gold)
        total += len(gold)
    return correct / total


def _check_partition(split: dict, n: int) -> None:
    used = [i for part in split["sentences"].values() for i in part]
    left = [d["index"] for d in split["left_out"]]
    assert sorted(used + left) == list(range(n))  # every sentence once: in one split, or left out
    assert set(split["sentences"]) == {"train", "dev", "test"}


def test_structural_sweep_lists_its_test_sentences_and_what_it_left_out(setup):
    sentences, acts = setup
    res = structural_sweep(acts, rank=4, options={"epochs": 1})
    split = res.meta["data_split"]
    _check_partition(split, len(sentences))
    assert [(d["index"], d["id"]) for d in split["left_out"]] == [(5, "too-long")]
    assert "aligned to no token" in split["left_out"][0]["why"]
    assert res.meta["sentences_left_out"] == 1
    test = [sentences[i] for i in split["sentences"]["test"]]
    assert split["ids"]["test"] == [s.id or f"#{i}" for s, i in zip(test, split["sentences"]["test"])]
    assert len(test) == res.meta["n_sentences"]["test"]
    baseline_row = res.labels["layer"].index("linear baseline")
    assert float(res.values[baseline_row, 0]) == pytest.approx(_chain_uuas(test), abs=1e-6)  # float32


def test_word_probes_list_their_split(setup):
    sentences, acts = setup
    res = probe_sweep(acts, "upos", probes=("linear",), seeds=(0,), control=False)
    split = res.meta["data_split"]
    _check_partition(split, len(sentences))
    assert split["left_out"] == []  # the long sentence's first words align, so it gives rows
    n_words = sum(int((acts.sentence == i).sum()) for i in split["sentences"]["test"])
    assert n_words == res.meta["n_words"]["test"]


def test_a_sentence_the_split_fractions_leave_over_is_listed():
    """25 sentences at (0.8, 0.1, 0.1) are cut 20 + 2 + 2: the one left over is listed, with why."""
    from circuitlab.probing.classifier import split_record, split_sentences

    sentences = template_sentences(25, seed=1)
    parts = split_sentences(25, (0.8, 0.1, 0.1), 0)
    split = split_record(sentences, {k: v.tolist() for k, v in parts.items()})
    _check_partition(split, 25)
    assert [len(v) for v in split["sentences"].values()] == [20, 2, 2]
    (left,) = split["left_out"]
    assert "no split" in left["why"] and left["id"] == (sentences[left["index"]].id or f"#{left['index']}")
