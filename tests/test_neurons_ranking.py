"""Neuron rankings against independent references: the elastic-net probe against its optimality (KKT) conditions,
the weight-mass entry and the statistics against brute-force loops, the correlations against numpy's corrcoef and
an exact case (a permuted, rescaled copy of a model's neurons correlates 1 with its original), and a planted
neuron that every ranking must put first."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

import circuitlab as cl
from circuitlab import probing
from circuitlab.errors import CircuitlabError
from circuitlab.neurons import ranking as R
from circuitlab.probing.activations import WordActivations

HOOKS = ["blocks.1.mlp.hook_post", "blocks.3.mlp.hook_post"]


@pytest.fixture(scope="module")
def toy():
    return cl.load_model("zoo/toy-lm")


@pytest.fixture(scope="module")
def acts(toy):
    return probing.collect(toy, probing.template_sentences(40), HOOKS, progress=False, cache=False)


def planted(acts: WordActivations, seed: int = 0) -> WordActivations:
    """Noise everywhere except neuron 5 of the second hook, which is the word's UPOS class id plus a little noise."""
    gen = torch.Generator().manual_seed(seed)
    classes = sorted(set(acts.labels("upos")))
    y = torch.tensor([classes.index(c) for c in acts.labels("upos")], dtype=torch.float32)
    a = torch.randn(len(acts), 16, generator=gen)
    b = torch.randn(len(acts), 16, generator=gen)
    onehot = torch.nn.functional.one_hot(y.long(), len(classes)).float()
    b[:, 5] = (onehot * torch.arange(1, len(classes) + 1) ** 2).sum(1) + 0.05 * b[:, 5]
    return WordActivations({"a": a, "b": b}, acts.sentence, acts.word, acts.sentences, "synthetic")


@pytest.fixture(scope="module")
def probe_ranking(acts):
    return R.rank_neurons(planted(acts), method="probe", max_iter=150, progress=False)


# -- the elastic-net probe ----------------------------------------------------------------------------------------

def test_elastic_net_probe_meets_the_kkt_conditions():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(80, 10, generator=gen, dtype=torch.float64)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long() + (x[:, 2] > 0.8).long()
    l1, l2 = 0.03, 0.02
    probe = R.elastic_net_probe(x, y, 3, l1=l1, l2=l2, max_iter=3000, tol=1e-8, dtype=torch.float64)
    assert probe.meta["converged"]
    # the smooth part's gradient, by autograd on the test's own standardisation
    xs = (x - x.mean(0)) / x.std(0)
    W = probe.net.weight.detach().clone().requires_grad_(True)
    b = probe.net.bias.detach().clone().requires_grad_(True)
    smooth = torch.nn.functional.cross_entropy(xs @ W.T + b, y) + 0.5 * l2 * W.pow(2).sum()
    gW, gb = torch.autograd.grad(smooth, (W, b))
    w = W.detach()
    assert gb.abs().max() < 1e-6
    nz = w != 0
    assert nz.any() and (~nz).any()  # the L1 term is active: some weights exactly zero, some not
    assert (gW[nz] + l1 * w[nz].sign()).abs().max() < 1e-6
    assert gW[~nz].abs().max() <= l1 + 1e-6


def test_mass_entry_is_the_cumulative_share_by_brute_force():
    w = torch.tensor([[0.5, -2.0, 0.0, 2.0, 1.0], [0.0, 0.0, 0.0, 0.0, 0.0], [1.0, -1.0, 3.0, 0.25, 0.0]])
    got = R.mass_entry(w)
    for c in range(w.shape[0]):
        total = sum(abs(v) for v in w[c].tolist())
        for j in range(w.shape[1]):
            if w[c, j] == 0:
                want = 1.0
            else:
                want = sum(abs(v) for v in w[c].tolist() if abs(v) >= abs(float(w[c, j]))) / total
            assert got[c, j].item() == pytest.approx(want)


# -- per-neuron statistics ----------------------------------------------------------------------------------------

def test_anova_f_matches_a_hand_computation():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(30, 4, generator=gen)
    y = torch.randint(0, 3, (30,), generator=gen)
    got = R.anova_f(x, y)
    for j in range(4):
        col = x[:, j].tolist()
        groups = [[v for v, c in zip(col, y.tolist()) if c == k] for k in range(3)]
        grand = sum(col) / len(col)
        ssb = sum(len(g) * (sum(g) / len(g) - grand) ** 2 for g in groups)
        ssw = sum((v - sum(g) / len(g)) ** 2 for g in groups for v in g)
        assert got[j].item() == pytest.approx((ssb / 2) / (ssw / 27), rel=1e-4)


def test_binned_mutual_information_matches_a_hand_computation():
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(50, 3, generator=gen)
    x[:, 2] = 1.5  # constant: no information
    y = torch.randint(0, 3, (50,), generator=gen)
    bins = 4
    got = R.binned_mutual_information(x, y, bins=bins, max_memory=2000)  # several column chunks
    for j in range(3):
        col = x[:, j].tolist()
        lo, hi = min(col), max(col)
        b = [0 if hi == lo else min(bins - 1, int((v - lo) / (hi - lo) * bins)) for v in col]
        joint = Counter(zip(b, y.tolist()))
        pb, py = Counter(b), Counter(y.tolist())
        n = len(col)
        want = sum(c / n * math.log((c / n) / (pb[u] / n * py[v] / n)) for (u, v), c in joint.items())
        assert got[j].item() == pytest.approx(want, abs=1e-6)
    assert got[2].item() == 0.0


# -- rankings ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", R.METHODS)
def test_every_method_puts_a_planted_neuron_first(acts, probe_ranking, method):
    res = probe_ranking if method == "probe" else R.rank_neurons(planted(acts), method=method, progress=False)
    assert res.axes == ("layer", "neuron") and res.shape == (2, 16)
    assert res.meta["ranking"][0] == "b N5"
    assert res.meta["order"][0].tolist() == [1, 5]
    assert res.values[1, 5] == res.values.max()
    assert res.meta["n_train"] < len(acts)  # the ranking reads the training split only


def test_probe_ranking_per_class_orders_follow_the_weights(probe_ranking):
    res = probe_ranking
    scores = res.meta["class_scores"]  # [class, layer, neuron]
    for c, name in enumerate(res.meta["classes"]):
        names = res.meta["per_class"][str(name)]
        vals = [float(scores[c, 0 if n.startswith("a") else 1, int(n.split("N")[1])]) for n in names]
        assert vals == sorted(vals, reverse=True)
    # the overall score is the best class score of each neuron
    torch.testing.assert_close(res.values, scores.max(0).values)


def test_user_labels_give_the_same_ranking_as_the_task(acts):
    p = planted(acts)
    by_task = R.rank_neurons(p, task="upos", method="anova", progress=False)
    by_labels = R.rank_neurons(p, labels=p.labels("upos"), method="anova", progress=False)
    torch.testing.assert_close(by_task.values, by_labels.values)


def test_a_model_source_collects_mlp_neurons(toy):
    res = R.rank_neurons(toy, probing.template_sentences(12), method="anova", hooks=[3], progress=False, cache=False)
    assert res.meta["hooks"] == ["blocks.3.mlp.hook_post"] and res.labels["layer"] == ["L3"]
    assert res.shape == (1, toy.cfg.d_mlp)


# -- cross-model correlation ------------------------------------------------------------------------------------

def test_max_correlation_matches_numpy_corrcoef():
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(40, 7, generator=gen)
    b = torch.randn(40, 5, generator=gen) + 0.8 * a[:, :5]
    b[:, 4] = 2.0  # constant: correlates 0
    best, arg, signed = R.max_correlation(a, b, max_memory=100)  # one column of a per chunk
    with np.errstate(invalid="ignore", divide="ignore"):  # the constant column's r is NaN in numpy
        full = np.corrcoef(a.numpy().astype(np.float64), b.numpy().astype(np.float64), rowvar=False)[:7, 7:]
    full = np.nan_to_num(full)
    np.testing.assert_allclose(best.numpy(), np.abs(full).max(1), atol=1e-5)
    np.testing.assert_array_equal(arg.numpy(), np.abs(full).argmax(1))
    np.testing.assert_allclose(signed.numpy(), full[np.arange(7), np.abs(full).argmax(1)], atol=1e-5)


def test_a_permuted_rescaled_copy_correlates_one(acts):
    gen = torch.Generator().manual_seed(4)
    x = acts.acts[HOOKS[1]]
    perm = torch.randperm(x.shape[1], generator=gen)
    scale = torch.where(torch.rand(x.shape[1], generator=gen) > 0.5, 3.0, -0.5)
    keep = torch.arange(len(acts)) % 7 != 0  # the other model lost some words to alignment
    copy = WordActivations({"copy": (x[:, perm] * scale + 1.0)[keep]}, acts.sentence[keep], acts.word[keep],
                           acts.sentences, "copy")
    res = R.correlation_ranking(acts, copy, hooks=[HOOKS[1]], progress=False)
    live = x[keep].std(0) > 0
    torch.testing.assert_close(res.values[0][live], torch.ones(int(live.sum())), atol=1e-4, rtol=0)
    assert (res.values[0][~live] == 0).all() and res.meta["dead"] == int((~live).sum())
    match = res.meta["best_match"][0][0, :, 1].long()  # the copy's neuron matched to each original neuron
    inverse = torch.argsort(perm)
    assert (match[live] == inverse[live]).all()
    assert res.meta["n_words"] == int(keep.sum())


# -- bad input -------------------------------------------------------------------------------------------------------

def test_bad_inputs_are_named(acts, toy):
    with pytest.raises(CircuitlabError, match="labels"):
        R.rank_neurons(acts, labels=["NOUN"] * (len(acts) - 1), progress=False)
    with pytest.raises(CircuitlabError, match="hooks"):
        R.rank_neurons(acts, hooks=["blocks.2.mlp.hook_post"], progress=False)
    with pytest.raises(CircuitlabError, match="method"):
        R.rank_neurons(acts, method="weights", progress=False)
    with pytest.raises(CircuitlabError, match="layer"):
        R.rank_neurons(toy, probing.template_sentences(5), hooks=[9], progress=False, cache=False)
    with pytest.raises(CircuitlabError, match="l1"):
        R.rank_neurons(acts, l1=-1.0, progress=False)
    with pytest.raises(CircuitlabError, match="sentences"):
        R.correlation_ranking(acts, probing.collect(toy, probing.template_sentences(5), HOOKS[:1], progress=False,
                                                    cache=False), progress=False)
