"""Attention-head probing: word-level attention against hand sums of run_with_cache patterns, scoring against
planted attention (a head that attends to each word's gold head, one that attends to the previous word) and the
fixed-offset baseline counted by hand."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

import circuitlab
from circuitlab.errors import InputError
from circuitlab.probing import align, data, heads


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def test_word_attention_sums_attended_tokens_and_averages_attending_ones():
    pattern = torch.tensor([[1.0, 0, 0, 0],
                            [0.5, 0.5, 0, 0],
                            [0.2, 0.3, 0.5, 0],
                            [0.1, 0.2, 0.3, 0.4]])[None, None]
    out = heads.to_word_attention(pattern, [(1,), (2, 3)])  # token 0 (BOS) belongs to no word
    want = torch.tensor([[0.5, 0.0],  # word 0 (token 1) -> token 1; -> tokens 2, 3
                         [(0.3 + 0.2) / 2, (0.5 + 0 + 0.3 + 0.4) / 2]])
    torch.testing.assert_close(out[0, 0], want)


def test_word_attention_on_toy_lm_matches_run_with_cache():
    toy = circuitlab.load_model("zoo/toy-lm")
    sents = data.template_sentences(6, seed=3)
    att, left_out = heads.word_attention(toy, sents, layers=[0, 2], progress=False)
    assert left_out == 0
    al = align.align(toy, sents)
    for s, a, pieces in zip(sents, att, al.pieces):
        _, cache = toy.run_with_cache(toy.to_tokens(s.text))
        for li, layer in enumerate([0, 2]):
            pat = cache[f"blocks.{layer}.attn.hook_pattern"][0]
            for i, pi in enumerate(pieces):
                for j, pj in enumerate(pieces):
                    want = sum(pat[:, q, k] for q in pi for k in pj)
                    torch.testing.assert_close(a[li, :, i, j], want / len(pi), atol=1e-5, rtol=1e-4)


def planted_attention(sents):
    """[2 layers, 2 heads] word attention: L0H0 attends to each word's gold head, L0H1 to the previous word,
    layer 1 uniform."""
    out = []
    for s in sents:
        n = len(s)
        a = torch.full((2, 2, n, n), 1.0 / n)
        a[0, 0] = 0
        a[0, 1] = 0
        for i, h in enumerate(s.head):
            a[0, 0, i, (h - 1) if h else (i + 1) % n] = 1.0
            a[0, 1, i, i - 1 if i else 1] = 1.0
        out.append(a)
    return out


def test_score_heads_finds_the_planted_parser_head_and_the_offset_baseline():
    sents = data.template_sentences(150, seed=4)
    res = heads.score_heads(planted_attention(sents), sents, min_count=10)
    assert res.axes == ("relation", "layer", "head") and res.shape[1:] == (2, 2)
    assert "det" in res.labels["relation"] and "nsubj" in res.labels["relation"]
    torch.testing.assert_close(res.values[:, 0, 0], torch.ones(res.shape[0]))  # the planted parser
    for r, rel in enumerate(res.labels["relation"]):
        edges = [(i, h - 1) for s in sents for i, (d, h) in enumerate(zip(s.deprel, s.head)) if d == rel and h]
        prev = sum(1 for i, h in edges if h == i - 1 or (i == 0 and h == 1)) / len(edges)
        assert float(res.values[r, 0, 1]) == pytest.approx(prev)  # attends to the previous word
        offsets = Counter(h - i for i, h in edges)
        k, c = max(((k, c) for k, c in offsets.items() if 0 < abs(k) <= 5), key=lambda kc: (kc[1], -abs(kc[0])))
        assert res.meta["baseline"][rel] == {"offset": k, "accuracy": pytest.approx(c / len(edges))}
        assert res.meta["counts"][rel] == len(edges)
        assert res.meta["best"][rel] == {"layer": 0, "head": 0, "accuracy": 1.0}
    det = res.labels["relation"].index("det")
    assert res.meta["baseline"]["det"]["offset"] in (1, 2)  # a determiner's noun follows it
    back = heads.score_heads(planted_attention(sents), sents, "det", direction="head")
    assert back.labels["relation"] == ["det"] and float(back.values[0, 0, 0]) < 1  # nouns attend to their heads
    assert float(res.values[det, 1, 0]) < 0.5  # uniform attention: ties go to the first other word


def test_a_word_that_attends_to_no_other_word_predicts_nothing():
    # a decoder's uniform causal head: word 0 attends only to itself, so it has no guess (argmax over its zero
    # row would have "found" word 1, the head of every sentence-initial determiner); word i > 0 ties over the
    # words before it, and the tie goes to word 0
    sents = data.template_sentences(150, seed=4)
    causal = []
    for s in sents:
        n = len(s)
        causal.append((torch.tril(torch.ones(n, n)) / torch.arange(1, n + 1)[:, None])[None, None])
    res = heads.score_heads(causal, sents, min_count=10)
    for r, rel in enumerate(res.labels["relation"]):
        edges = [(i, h - 1) for s in sents for i, (d, h) in enumerate(zip(s.deprel, s.head)) if d == rel and h]
        want = sum(1 for i, h in edges if i > 0 and h == 0) / len(edges)
        assert float(res.values[r, 0, 0]) == pytest.approx(want), rel
    det = res.labels["relation"].index("det")
    assert any(s.deprel[0] == "det" and s.head[0] == 2 for s in sents)  # the case the old argmax counted
    assert float(res.values[det, 0, 0]) == 0.0


def test_the_head_direction_finds_a_planted_head_to_dependent_pattern():
    # each head word attends to its last dependent: the "head" direction scores 1 for every dependent that is
    # its head's last one, and exactly that share
    sents = data.template_sentences(150, seed=6)
    maps, last = [], []
    for s in sents:
        n = len(s)
        a = torch.zeros(1, 1, n, n)
        deps = {}
        for i, h in enumerate(s.head):
            if h:
                deps[h - 1] = i  # the last dependent wins
        for h, i in deps.items():
            a[0, 0, h, i] = 1.0
        maps.append(a)
        last.append(deps)
    res = heads.score_heads(maps, sents, "det", direction="head")
    edges = [(k, i, h - 1) for k, s in enumerate(sents) for i, (d, h) in enumerate(zip(s.deprel, s.head))
             if d == "det" and h]
    want = sum(1 for k, i, h in edges if last[k][h] == i) / len(edges)
    assert 0 < want < 1 and float(res.values[0, 0, 0]) == pytest.approx(want)


def test_head_sweep_on_toy_lm_and_bad_input():
    toy = circuitlab.load_model("zoo/toy-lm")
    sents = data.template_sentences(40, seed=5)
    res = heads.head_sweep(toy, sents, ["det", "nsubj"], layers=[1, 3], progress=False)
    assert res.shape == (2, 2, toy.cfg.n_heads) and res.labels["layer"] == ["L1", "L3"]
    assert res.model == "zoo/toy-lm" and res.meta["best"]["det"]["layer"] in (1, 3)
    with pytest.raises(InputError, match="direction="):
        heads.score_heads([None], sents[:1], direction="both")
    with pytest.raises(InputError, match="do not occur"):
        heads.head_sweep(toy, sents, ["nmod:poss"], progress=False)
