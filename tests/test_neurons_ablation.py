"""Ablation curves against independent references: the masked protocol against a probe fed mean-imputed
activations, the retrained protocol's extremes (every neuron; none: the majority label), a planted neuron that
top-k keeps and random-k loses, and the loss curves against TransformerLens's own loss with the neurons zeroed by
hooks, one sentence at a time."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

import circuitlab as cl
from circuitlab import probing
from circuitlab.errors import CircuitlabError
from circuitlab.neurons import ablation as A
from circuitlab.neurons import ranking as R
from circuitlab.probing.activations import WordActivations


@pytest.fixture(scope="module")
def toy():
    return cl.load_model("zoo/toy-lm")


@pytest.fixture(scope="module")
def acts(toy):
    return probing.collect(toy, probing.template_sentences(40), ["blocks.3.mlp.hook_post"], progress=False,
                           cache=False)


@pytest.fixture(scope="module")
def planted(acts):
    """24 noise neurons and neuron 5, which is the word's UPOS class (a one-neuron code)."""
    gen = torch.Generator().manual_seed(0)
    classes = sorted(set(acts.labels("upos")))
    y = torch.tensor([classes.index(c) for c in acts.labels("upos")])
    x = torch.randn(len(acts), 24, generator=gen)
    x[:, 5] = (y + 1).float() ** 2 + 0.01 * x[:, 5]
    return WordActivations({"h": x}, acts.sentence, acts.word, acts.sentences, "synthetic")


@pytest.fixture(scope="module")
def curves(planted):
    ranking = R.rank_neurons(planted, method="anova", progress=False)
    return ranking, A.ablation_curves(planted, ranking, ks=[1, 24], random_seeds=(0,), max_iter=100,
                                      progress=False)


def at(res, protocol, measure, selection, k):
    lab = res.labels
    return float(res.values[lab["protocol"].index(protocol), lab["measure"].index(measure),
                            lab["selection"].index(selection), lab["k"].index(str(k))])


def test_log_grid_and_axes(curves):
    assert A.log_grid(24) == [1, 2, 4, 8, 16, 24] and A.log_grid(1) == [1]
    _, res = curves
    assert res.axes == ("protocol", "measure", "selection", "k")
    assert res.labels["selection"] == ["top keep", "random keep", "bottom keep", "top remove", "random remove",
                                       "bottom remove"]
    sel = res.values[:, 2]
    torch.testing.assert_close(sel, res.values[:, 0] - res.values[:, 1])


def test_the_planted_neuron_carries_the_curves(curves):
    ranking, res = curves
    assert ranking.meta["ranking"][0] == "h N5"
    assert at(res, "retrained", "accuracy", "top keep", 1) > 0.9
    assert at(res, "retrained", "accuracy", "bottom keep", 1) < 0.6
    assert at(res, "masked", "accuracy", "top remove", 1) < at(res, "masked", "accuracy", "bottom remove", 1) - 0.2
    # a one-neuron code of the word's class is no code of a word type's random label
    assert at(res, "retrained", "selectivity", "top keep", 1) > 0.3


def test_extremes_are_all_neurons_and_the_majority_label(planted, curves):
    _, res = curves
    full = res.meta["full"]
    for p, protocol in enumerate(res.labels["protocol"]):
        for m, measure in enumerate(("accuracy", "control")):
            assert at(res, protocol, measure, "top keep", 24) == pytest.approx(float(full[p, m]))
            assert at(res, protocol, measure, "random keep", 24) == pytest.approx(float(full[p, m]))
    # removing every neuron leaves the most frequent training label
    y = planted.labels("upos")
    rows = R.train_rows(planted, (0.8, 0.1, 0.1), 0)
    majority = Counter(y[i] for i in rows["train"].tolist()).most_common(1)[0][0]
    want = sum(y[i] == majority for i in rows["test"].tolist()) / rows["test"].numel()
    assert at(res, "retrained", "accuracy", "top remove", 24) == pytest.approx(want)
    assert res.meta["majority_baseline"] == pytest.approx(want)


def test_masked_protocol_is_the_probe_on_mean_imputed_activations(planted, curves):
    ranking, res = curves
    y, classes = R.encode(planted.labels("upos"))
    rows = R.train_rows(planted, (0.8, 0.1, 0.1), 0)
    x = planted.acts["h"]
    probe = R.elastic_net_probe(x[rows["train"]], y[rows["train"]], len(classes), max_iter=100)
    order = ranking.meta["order"][:, 1]
    for k in (1, 24):
        removed = order[:k]
        xt = x[rows["test"]].clone()
        xt[:, removed] = x[rows["train"]][:, removed].mean(0)  # each removed neuron at its training mean
        want = float((probe.predict(xt) == y[rows["test"]]).float().mean())
        assert at(res, "masked", "accuracy", "top remove", k) == pytest.approx(want)


def test_loss_curves_match_transformer_lens_loss(toy, acts):
    ranking = R.rank_neurons(acts, method="anova", progress=False)
    texts = ["The cat sat on the mat.", "A dog ran home", "The old king gave the girl a ring today"]
    res = A.loss_curves(toy, ranking, texts, ks=[3, 512], random_seeds=(0,), max_memory=2**14, progress=False)
    assert res.axes == ("selection", "k") and res.labels["selection"] == ["top", "random", "bottom"]

    def reference(neurons) -> float:
        def zero(act, hook):
            act[..., neurons] = 0.0
            return act
        total, n = 0.0, 0
        for t in texts:
            tokens = toy.to_tokens(t)
            loss = toy.run_with_hooks(tokens, return_type="loss", fwd_hooks=[("blocks.3.mlp.hook_post", zero)])
            total += float(loss.detach()) * (tokens.shape[1] - 1)
            n += tokens.shape[1] - 1
        return total / n

    order = ranking.meta["order"][:, 1]
    assert res.values[0, 0].item() == pytest.approx(reference(order[:3]), rel=1e-4)
    assert res.values[2, 0].item() == pytest.approx(reference(order[-3:]), rel=1e-4)
    assert res.values[0, 1].item() == pytest.approx(reference(order), rel=1e-4)
    assert res.meta["clean_loss"] == pytest.approx(reference(order[:0]), rel=1e-4)


def test_mean_ablation_of_every_neuron_is_a_constant_mlp(toy, acts):
    """With every neuron at its mean, the MLP output is the same at every position: W_out . mean + b_out."""
    ranking = R.rank_neurons(acts, method="anova", progress=False)
    texts = ["The cat sat on the mat.", "A dog ran home"]
    res = A.loss_curves(toy, ranking, texts, ks=[512], method="mean", random_seeds=(0,), progress=False)
    _, cache = toy.run_with_cache(toy.to_tokens(texts[0]), names_filter="blocks.3.mlp.hook_post")
    _, cache2 = toy.run_with_cache(toy.to_tokens(texts[1]), names_filter="blocks.3.mlp.hook_post")
    mean = torch.cat([cache["blocks.3.mlp.hook_post"][0], cache2["blocks.3.mlp.hook_post"][0]]).mean(0)

    def fix(act, hook):
        act[...] = mean
        return act
    total, n = 0.0, 0
    for t in texts:
        tokens = toy.to_tokens(t)
        loss = toy.run_with_hooks(tokens, return_type="loss", fwd_hooks=[("blocks.3.mlp.hook_post", fix)])
        total += float(loss.detach()) * (tokens.shape[1] - 1)
        n += tokens.shape[1] - 1
    assert res.values[0, 0].item() == pytest.approx(total / n, rel=1e-4)


def test_bad_inputs_are_named(toy, acts, planted, curves):
    ranking, _ = curves
    with pytest.raises(CircuitlabError, match="k=25"):
        A.ablation_curves(planted, ranking, ks=[25], progress=False)
    with pytest.raises(CircuitlabError, match="labels"):
        A.ablation_curves(planted, ranking, labels=["NOUN"] * 3, progress=False)
    with pytest.raises(CircuitlabError, match="hooks"):
        A.ablation_curves(acts, ranking, progress=False)  # the ranking's hook "h" was not collected here
    with pytest.raises(CircuitlabError, match="modes"):
        A.ablation_curves(planted, ranking, modes=("drop",), progress=False)
    with pytest.raises(CircuitlabError, match="ranking"):
        A.ablation_curves(planted, "top neurons", progress=False)
    with pytest.raises(CircuitlabError, match="hooks"):
        A.loss_curves(toy, ranking, ["The cat sat."], progress=False)  # not this model's MLP neurons
    bad = R.rank_neurons(acts, method="anova", progress=False)
    bad.meta["order"] = bad.meta["order"].clone()
    bad.meta["order"][0, 1] = 9999
    with pytest.raises(CircuitlabError, match="neuron"):
        A.loss_curves(toy, bad, ["The cat sat."], progress=False)
    with pytest.raises(CircuitlabError, match="method"):
        A.loss_curves(toy, R.rank_neurons(acts, method="anova", progress=False), ["The cat sat."], method="noise",
                      progress=False)
