"""Minimal pairs: log-probabilities against a by-hand reference, accuracy, BLiMP reading, the template grammars."""

import json

import pytest
import torch

import circuitlab
from circuitlab.errors import InputError
from circuitlab.probing.minimal_pairs import (PHENOMENA, MinimalPair, continuation_logprob, read_blimp, score_pairs,
                                              sentence_logprob, template_pairs)


@pytest.fixture(scope="module")
def toy():
    return circuitlab.load_model("zoo/toy-lm")


def by_hand(model, text: str, start_text: str | None = None) -> float:
    """Sum of log P(token | tokens before it) for one text, one forward pass, no batching; from the end of
    ``start_text``'s tokens on if given (else every token after BOS)."""
    tokens = model.to_tokens(text)
    with torch.no_grad():
        logp = model(tokens)[0].double().log_softmax(-1)
    start = 1 if start_text is None else model.to_tokens(start_text).shape[1]
    return sum(float(logp[i - 1, tokens[0, i]]) for i in range(start, tokens.shape[1]))


SENTENCES = ["The dog is happy.", "The old teachers were in the garden near the house.", "A cat sleeps.",
             "The men hurt themselves.", "My brother bought these shoes."]


def test_sentence_logprob_matches_by_hand(toy):
    # a tiny max_memory puts every sentence in a batch of its own; the default batches the equal-length ones
    for mem in (1, 512 * 2**20):
        got = sentence_logprob(toy, SENTENCES, max_memory=mem)
        want = torch.tensor([by_hand(toy, s) for s in SENTENCES], dtype=torch.float64)
        assert torch.allclose(got, want, atol=1e-6), (got, want)
    assert (got < 0).all()


def test_continuation_logprob_matches_by_hand(toy):
    prefixes, words = ["The old dogs", "The queen praised", "The farmer has"], ["are", "herself", "never"]
    got = continuation_logprob(toy, prefixes, words)
    want = [by_hand(toy, f"{p} {w}", start_text=p) for p, w in zip(prefixes, words)]
    assert torch.allclose(got, torch.tensor(want, dtype=torch.float64), atol=1e-6)
    # a trailing space on the prefix gives the same text, so the same number
    assert torch.allclose(continuation_logprob(toy, ["The old dogs "], ["are"]), got[:1], atol=1e-9)


def test_score_pairs_counts_pairs_by_hand(toy):
    pairs = template_pairs(["subject_verb_agreement", "anaphor_agreement"], n_per=6)
    res = score_pairs(toy, pairs)
    for k, name in enumerate(res.labels["phenomenon"]):
        mine = [p for p in pairs if p.phenomenon == name]
        wins = sum(by_hand(toy, p.good) > by_hand(toy, p.bad) for p in mine)
        assert res.values[k].item() == pytest.approx(wins / len(mine))
        assert res.meta["n"][k] == len(mine) == 6
    good = [by_hand(toy, p.good) for p in pairs]
    assert torch.allclose(res.good, torch.tensor(good, dtype=torch.float64), atol=1e-6)
    # swapping good and bad flips every verdict (no ties here)
    swapped = [MinimalPair(p.bad, p.good, p.phenomenon, p.prefix, p.word_bad, p.word_good) for p in pairs]
    flipped = score_pairs(toy, swapped)
    assert torch.allclose(flipped.values, 1 - res.values.double().float())
    # prefix method: the critical word's log-prob by hand
    pre = score_pairs(toy, pairs, method="prefix")
    want = [by_hand(toy, f"{p.prefix} {p.word_bad}", start_text=p.prefix) for p in pairs]
    assert torch.allclose(pre.bad, torch.tensor(want, dtype=torch.float64), atol=1e-6)
    assert pre.meta["skipped"] == 0 and pre.meta["method"] == "prefix"
    assert set(pre.to_dataframe()["phenomenon_label"]) == {"subject_verb_agreement", "anaphor_agreement"}


def test_prefix_method_skips_pairs_without_a_split_and_counts_them(toy):
    pairs = template_pairs("npi_licensing", n_per=3) + [MinimalPair("No dog has ever slept.", "The dog has ever slept.",
                                                                    "npi_no")]
    res = score_pairs(toy, pairs, method="prefix")
    assert res.meta["skipped"] == 1 and res.labels["phenomenon"] == ["npi_licensing"]
    with pytest.raises(InputError, match="one-prefix"):
        score_pairs(toy, pairs[-1:], method="prefix")


def test_template_pairs_are_minimal_and_split_at_the_critical_word():
    pairs = template_pairs(n_per=None)
    assert {p.phenomenon for p in pairs} == set(PHENOMENA) and len(PHENOMENA) >= 4
    for p in pairs:
        g, b = p.good.split(), p.bad.split()
        assert len(g) == len(b) and sum(x != y for x, y in zip(g, b)) == 1, p
        assert p.good.startswith(f"{p.prefix} {p.word_good}") and p.bad.startswith(f"{p.prefix} {p.word_bad}")
        assert p.good[len(p.prefix) + 1 + len(p.word_good):] == p.bad[len(p.prefix) + 1 + len(p.word_bad):]
    drawn = template_pairs(n_per=12, seed=3)
    assert all(sum(p.phenomenon == n for p in drawn) == 12 for n in PHENOMENA)
    assert drawn == template_pairs(n_per=12, seed=3) and drawn != template_pairs(n_per=12, seed=4)
    assert len({p.good for p in drawn}) == len(drawn)


def test_read_blimp(tmp_path):
    rows = [{"sentence_good": "The cats are asleep.", "sentence_bad": "The cats is asleep.", "UID": "my_agreement",
             "one_prefix_prefix": "The cats", "one_prefix_word_good": "are", "one_prefix_word_bad": "is",
             "pairID": "0"},
            {"sentence_good": "Nobody ever left.", "sentence_bad": "Somebody ever left.", "UID": "my_npi",
             "pairID": "1"}]
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    pairs = read_blimp(path)
    assert [p.phenomenon for p in pairs] == ["my_agreement", "my_npi"]
    assert pairs[0].has_prefix and pairs[0].word_bad == "is" and not pairs[1].has_prefix
    assert read_blimp([json.dumps(rows[1])], phenomenon="x")[0].phenomenon == "x"
    off = read_blimp([json.dumps({**rows[0], "one_prefix_method": False})])[0]
    assert not off.has_prefix and off.good == rows[0]["sentence_good"]
    latin = tmp_path / "latin.jsonl"  # another encoding: an InputError with the line, not a UnicodeDecodeError
    latin.write_bytes((json.dumps(rows[1]) + "\n" + json.dumps({**rows[0], "UID": "caf\u00e9"}, ensure_ascii=False)
                       ).encode("latin-1"))
    with pytest.raises(InputError, match=r"latin\.jsonl' is not UTF-8: line 2"):
        read_blimp(latin)
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert read_blimp(bom) == pairs


@pytest.mark.parametrize("lines, match", [
    (['{"sentence_good": "A b.", "sentence_bad": "B a.", "UID": "u"}', "{not json"], "line 2 is not valid JSON"),
    (['{"sentence_good": "A b.", "UID": "u"}'], "line 1 lacks sentence_bad"),
    (['[1, 2]'], "line 1 is a JSON list"),
    ([""], "no BLiMP records"),
])
def test_read_blimp_malformed(lines, match):
    with pytest.raises(InputError, match=match):
        read_blimp(lines)


def test_bad_inputs(toy, tmp_path):
    pairs = template_pairs("npi_licensing", n_per=2)
    with pytest.raises(InputError, match="method must be one of"):
        score_pairs(toy, pairs, method="mean")
    with pytest.raises(InputError, match="no pairs"):
        score_pairs(toy, [])
    with pytest.raises(InputError, match="unknown phenomena"):
        template_pairs(["agreement"])
    with pytest.raises(InputError, match="no file"):
        read_blimp(tmp_path / "missing.jsonl")
    with pytest.raises(InputError, match="together"):
        MinimalPair("A b.", "B a.", "x", prefix="A")
    with pytest.raises(InputError, match="sentence 1 is ''"):
        sentence_logprob(toy, ["A dog.", ""])


@pytest.mark.real
@pytest.mark.parametrize("name", ["smollm2-135m"])  # gemma-3-270m passes too, in ~15 s: too slow to keep here
def test_real_tokenizers_match_by_hand(name):
    """A real BPE vocabulary (SmolLM2): sentence and one-prefix log-probs against by hand."""
    from circuitlab.testing import need_real_model

    need_real_model(name)
    model = circuitlab.load_model(name)
    pairs = template_pairs(["subject_verb_agreement", "anaphor_agreement"], n_per=1)
    sent, pre = score_pairs(model, pairs), score_pairs(model, pairs, method="prefix")
    for i, p in enumerate(pairs):
        assert sent.good[i].item() == pytest.approx(by_hand(model, p.good), abs=1e-3)
        assert pre.bad[i].item() == pytest.approx(by_hand(model, f"{p.prefix} {p.word_bad}", start_text=p.prefix),
                                                  abs=1e-3)
