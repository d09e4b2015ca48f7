"""Edge probing: the scalar mix, its center of gravity and span pooling against brute force; the tasks' spans by
hand; learning on synthetic activations whose answer is known (which layer holds the label, and that arc labels
need both spans); one small run on zoo/toy-lm; bad input."""

from __future__ import annotations

import math

import pytest
import torch

import circuitlab
from circuitlab.errors import InputError
from circuitlab.probing import Sentence, WordActivations, split_sentences, template_sentences
from circuitlab.probing.edge import (EdgeScores, ScalarMix, center_of_gravity, edge_examples, edge_probe,
                                     entity_spans, pool_spans)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The probes here are tiny: one thread is faster, and steady on a busy machine (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_scalar_mix_is_the_weighted_sum():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, 4, generator=gen)
    mix = ScalarMix(5)
    with torch.no_grad():
        mix.a.copy_(torch.randn(5, generator=gen))
        mix.gamma.fill_(1.7)
    a = mix.a.tolist()
    out = mix(x).detach()
    z = sum(math.exp(v) for v in a)
    for i in range(3):
        for j in range(4):
            want = 1.7 * sum(math.exp(a[l]) / z * float(x[l, i, j]) for l in range(5))
            assert abs(float(out[i, j]) - want) < 1e-5
    w = [math.exp(v) / z for v in a]
    assert abs(center_of_gravity(mix.weights()) - sum(l * w[l] for l in range(5))) < 1e-6  # float32 weights
    assert center_of_gravity(torch.tensor([0.0, 0.0, 1.0])) == 2.0


def test_span_pooling_is_the_mean_or_the_softmax_weighted_sum():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, 2, generator=gen)
    lengths = [1, 3, 4]
    mask = torch.tensor([[k < n for k in range(4)] for n in lengths])
    scores = torch.randn(3, 4, generator=gen)
    mean, att = pool_spans(x, mask), pool_spans(x, mask, scores)
    for i, n in enumerate(lengths):
        for d in range(2):
            assert abs(float(mean[i, d]) - sum(float(x[i, k, d]) for k in range(n)) / n) < 1e-6
            e = [math.exp(float(scores[i, k])) for k in range(n)]
            assert abs(float(att[i, d]) - sum(e[k] / sum(e) * float(x[i, k, d]) for k in range(n))) < 1e-6


def test_examples_by_hand():
    s = Sentence(("Ann", "Lee", "saw", "New", "York", "today"), upos=("PROPN", "PROPN", "VERB", "PROPN", "PROPN",
                                                                       "NOUN"),
                 head=(3, 1, 0, 5, 3, 3), deprel=("nsubj", "flat", "root", "compound", "obj", "obl"),
                 ent=("PERSON", "PERSON", "O", "GPE", "GPE", "DATE"))
    assert entity_spans(s.ent) == [(0, 2, "PERSON"), (3, 5, "GPE"), (5, 6, "DATE")]
    assert [(e.spans, e.label) for e in edge_examples([s], "ent")] == [
        (((0, 2),), "PERSON"), (((3, 5),), "GPE"), (((5, 6),), "DATE")]
    arcs = [(e.spans, e.label) for e in edge_examples([s], "deprel")]
    assert arcs == [(((0, 1), (2, 3)), "nsubj"), (((1, 2), (0, 1)), "flat"), (((3, 4), (4, 5)), "compound"),
                    (((4, 5), (2, 3)), "obj"), (((5, 6), (2, 3)), "obl")]  # the root has no head word: left out
    assert [e.label for e in edge_examples([s], "pos")] == list(s.upos)


def _synthetic(n_sentences=100, n_words=6, seed=0):
    """Chains of words (each word's head is the next; the last is the root), each word with a random bit ``c``.
    Arc label: ``f"r{c_dependent}{c_head}"`` (needs both spans); UPOS: ``"A"``/``"B"`` from the word's own bit.
    Activations: only hook ``blocks.1.hook_resid_post`` holds the bits (+-1 in dimension 0, plus noise)."""
    gen = torch.Generator().manual_seed(seed)
    bits = torch.randint(0, 2, (n_sentences, n_words), generator=gen)
    sents = []
    for k in range(n_sentences):
        b = bits[k].tolist()
        head = tuple(range(2, n_words + 1)) + (0,)
        sents.append(Sentence(tuple(f"w{i}" for i in range(n_words)), upos=tuple("AB"[v] for v in b), head=head,
                              deprel=tuple(f"r{b[i]}{b[i + 1]}" for i in range(n_words - 1)) + ("root",),
                              ent=("O",) * n_words))
    n = n_sentences * n_words
    d = 8
    noise = lambda: torch.randn(n, d, generator=gen)  # noqa: E731
    informative = noise() * 0.3
    informative[:, 0] += 2.0 * bits.flatten().float() - 1.0
    acts = {"blocks.0.hook_resid_pre": noise(), "blocks.0.hook_resid_post": noise(),
            "blocks.1.hook_resid_post": informative, "blocks.2.hook_resid_post": noise()}
    sentence = torch.arange(n_sentences).repeat_interleave(n_words)
    word = torch.arange(n_words).repeat(n_sentences)
    return WordActivations(acts, sentence, word, sents, model="synthetic")


@pytest.fixture(scope="module")
def synthetic():
    return _synthetic()


def test_learns_arc_labels_from_both_spans_on_the_layer_that_holds_them(synthetic):
    res = edge_probe(synthetic, task="deprel", proj=16, hidden=32, epochs=10, lr=1e-2, batch_size=64,
                     progress=False)
    assert isinstance(res, EdgeScores)
    acc = dict(zip(res.scores.labels["probe"], res.scores.values.tolist()))
    assert acc["scalar mix"] > 0.95  # four labels, each from two bits: both spans are used
    assert acc["lexical"] < 0.45  # the embedding hook is noise: about chance (0.25) over four labels
    w = res.mix.values
    assert res.mix.labels["layer"] == ["emb", "L0", "L1", "L2"]
    assert int(w.argmax()) == 2 and float(w[2]) > 0.4 and abs(float(w.sum()) - 1) < 1e-6
    assert abs(res.center_of_gravity - sum(i * float(v) for i, v in enumerate(w))) < 1e-6


def test_one_span_task_and_attention_pooling(synthetic):
    res = edge_probe(synthetic, task="pos", pool="attention", baseline=False, proj=8, hidden=16, epochs=6,
                     lr=1e-2, batch_size=64, progress=False)
    assert res.scores.labels["probe"] == ["scalar mix"] and float(res.scores.values[0]) > 0.95
    assert "center of gravity" in res.summary()


def test_on_toy_lm_returns_labelled_results():
    model = circuitlab.load_model("zoo/toy-lm")
    res = edge_probe(model, template_sentences(24), "deprel", epochs=1, proj=16, hidden=16, cache=False,
                     progress=False)
    assert res.scores.axes == ("probe",) and res.scores.labels["probe"] == ["scalar mix", "lexical"]
    assert res.mix.labels["layer"] == ["emb", "L0", "L1", "L2", "L3"]
    assert 0 <= res.center_of_gravity <= 4 and res.scores.model
    assert res.scores.meta["examples_left_out"] == 0  # template words are whole tokens of toy-lm
    examples = edge_examples(template_sentences(24), "deprel")
    for name, ids in split_sentences(24).items():  # the same sentence split, by hand
        assert res.scores.meta["n_examples"][name] == sum(e.sentence in ids.tolist() for e in examples)
    assert "<table" in res.to_html() or "<svg" in res.to_html()


def test_bad_inputs(synthetic):
    with pytest.raises(InputError, match="task='srl'"):
        edge_probe(synthetic, task="srl", progress=False)
    with pytest.raises(InputError, match="pool="):
        edge_probe(synthetic, task="pos", pool="max", progress=False)
    with pytest.raises(InputError, match="baseline=True"):
        edge_probe(synthetic, task="pos", hooks=["blocks.1.hook_resid_post"], progress=False)
    with pytest.raises(InputError, match="lr="):
        edge_probe(synthetic, task="pos", lr=0, progress=False)
    with pytest.raises(InputError, match="hidden"):
        edge_probe(synthetic, task="pos", hidden=0, progress=False)
    with pytest.raises(InputError, match="two labels"):
        edge_probe(synthetic, task="ent", progress=False)  # every word is "O": no entity
