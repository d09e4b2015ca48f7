"""Edge probing: the scalar mix, its center of gravity, the differential scores' expected layer and span pooling
against brute force; the tasks' spans by hand; learning on synthetic activations whose answer is known (which layer
holds the label, and that arc labels need both spans), per layer and cumulatively; one small run on zoo/toy-lm
against probes trained by hand; bad input."""

from __future__ import annotations

import math

import pytest
import torch

import circuitlab
from circuitlab.errors import InputError
from circuitlab.probing import Sentence, WordActivations, split_sentences, template_sentences
from circuitlab.probing.classifier import split_rows
from circuitlab.probing.edge import (EdgeScores, ScalarMix, _encode, accuracy, center_of_gravity, edge_examples,
                                     edge_probe, entity_spans, expected_layer, pool_spans, train_edge_probe)


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


def test_expected_layer_of_the_differential_scores_by_hand():
    # Tenney, Das & Pavlick: E[l] = sum_l l * Delta(l) / sum_l Delta(l), the Deltas of layers 1, 2, ...
    assert abs(expected_layer([0.1, 0.3, -0.1]) - (1 * 0.1 + 2 * 0.3 + 3 * -0.1) / 0.3) < 1e-12
    assert abs(expected_layer([0.0, 0.0, 0.2]) - 3.0) < 1e-12
    assert math.isnan(expected_layer([0.1, -0.1])) and math.isnan(expected_layer([-0.2, 0.1]))


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
        # distinct words per sentence: identical sentences would share a split (they are one input to a model)
        sents.append(Sentence(tuple(f"s{k}w{i}" for i in range(n_words)), upos=tuple("AB"[v] for v in b), head=head,
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
                     cumulative=True, progress=False)
    assert isinstance(res, EdgeScores)
    acc = dict(zip(res.scores.labels["probe"], res.scores.values.tolist()))
    assert acc["scalar mix"] > 0.95  # four labels, each from two bits: both spans are used
    assert acc["lexical"] < 0.45  # the embedding hook is noise: about chance (0.25) over four labels
    w = res.mix.values
    assert res.mix.labels["layer"] == ["emb", "L0", "L1", "L2"]
    assert int(w.argmax()) == 2 and float(w[2]) > 0.4 and abs(float(w.sum()) - 1) < 1e-6
    assert abs(res.center_of_gravity - sum(i * float(v) for i, v in enumerate(w))) < 1e-6
    # each layer alone: only L1 (blocks.1.hook_resid_post) holds the bits; the embedding's probe is the lexical one
    per = res.layers.values.tolist()
    assert res.layers.axes == ("layer",) and res.layers.labels["layer"] == ["emb", "L0", "L1", "L2"]
    assert per[2] > 0.95 and max(per[0], per[1], per[3]) < 0.45 and per[0] == acc["lexical"]
    # cumulatively: the mixes up to emb and up to L0 see noise, from L1 on they see the bits; the differential
    # scores put the gain at L1 (index 2)
    cum = res.cumulative.values.tolist()
    assert max(cum[:2]) < 0.45 and min(cum[2:]) > 0.9 and cum[0] == per[0] and cum[-1] == acc["scalar mix"]
    assert res.differential.labels["layer"] == ["L0", "L1", "L2"]
    assert torch.allclose(res.differential.values, torch.tensor(cum[1:]) - torch.tensor(cum[:-1]))
    assert 1.5 < res.expected_layer < 2.5
    assert abs(res.expected_layer - expected_layer(res.differential.values.tolist())) < 1e-6
    assert "best single layer L1" in res.summary() and "expected layer" in res.summary()


def test_one_span_task_and_attention_pooling(synthetic):
    res = edge_probe(synthetic, task="pos", pool="attention", baseline=False, per_layer=False, proj=8, hidden=16,
                     epochs=6, lr=1e-2, batch_size=64, progress=False)
    assert res.scores.labels["probe"] == ["scalar mix"] and float(res.scores.values[0]) > 0.95
    assert "center of gravity" in res.summary() and "best single layer" not in res.summary()
    assert res.layers is None and res.cumulative is None and set(res.results()) == {"scores", "mix"}


def test_on_toy_lm_returns_labelled_results():
    from circuitlab.probing import collect

    model = circuitlab.load_model("zoo/toy-lm")
    acts = collect(model, template_sentences(24), cache=False, progress=False)
    opts = dict(epochs=2, proj=16, hidden=16, batch_size=64, seed=3)
    res = edge_probe(acts, task="deprel", progress=False, **opts)
    assert res.scores.axes == ("probe",) and res.scores.labels["probe"] == ["scalar mix", "lexical"]
    assert res.mix.labels["layer"] == res.layers.labels["layer"] == ["emb", "L0", "L1", "L2", "L3"]
    assert res.scores.model
    assert res.scores.meta["examples_left_out"] == 0  # template words are whole tokens of toy-lm
    examples = edge_examples(template_sentences(24), "deprel")
    for name, ids in split_sentences(24).items():  # the same sentence split, by hand
        assert res.scores.meta["n_examples"][name] == sum(e.sentence in ids.tolist() for e in examples)

    # the same probes trained by hand: the mix over every hook (its weights, gamma and center of gravity), and
    # each hook alone (a wrong hook for a layer label would show)
    classes = sorted({e.label for e in examples})
    data, _ = _encode(acts, examples, {c: i for i, c in enumerate(classes)})
    idx = split_rows(data.sentence, 24, (0.8, 0.1, 0.1), 0)[0]
    hand = dict(pool="mean", seed=3, lr=1e-3, proj=16, hidden=16, epochs=2, batch_size=64, patience=3)
    layers = [acts.acts[h] for h in acts.hooks]
    mix = train_edge_probe(layers, data, len(classes), idx["train"], idx["dev"], **hand)
    logits = mix.mix.a.detach().double()
    w = torch.exp(logits) / torch.exp(logits).sum()  # softmax by hand
    assert torch.allclose(res.mix.values.double(), w, atol=1e-6)
    assert abs(res.gamma - float(mix.mix.gamma.detach())) < 1e-6
    assert abs(res.center_of_gravity - sum(l * float(w[l]) for l in range(5))) < 1e-6
    assert abs(float(res.scores.values[0]) - accuracy(mix, layers, data, idx["test"])) < 1e-6
    for l, hook in enumerate(acts.hooks):
        alone = train_edge_probe([acts.acts[hook]], data, len(classes), idx["train"], idx["dev"], **hand)
        assert abs(float(res.layers.values[l]) - accuracy(alone, [acts.acts[hook]], data, idx["test"])) < 1e-6, hook

    html = res.to_html()  # the task, each probe's accuracy and the center of gravity as the report prints them
    assert "deprel" in html and f"{res.center_of_gravity:.2f}" in html
    for v in res.scores.values.tolist():
        assert f"{v:.3f}" in html
    for label, v in zip(res.layers.labels["layer"], res.layers.values.tolist()):  # the per-layer curve's points
        assert f"each layer alone at {label}: {v:.3f}" in html, label


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
    for flag in ("per_layer", "cumulative"):
        with pytest.raises(InputError, match=f"{flag}="):
            edge_probe(synthetic, task="pos", progress=False, **{flag: "yes"})
    with pytest.raises(InputError, match="cumulative=True"):
        edge_probe(synthetic, task="pos", hooks=["blocks.0.hook_resid_pre"], cumulative=True, progress=False)
