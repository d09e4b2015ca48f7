"""Classifier probes: logistic regression against an exact Newton solve, the MLP on a planted signal, control
tasks (one label per type, the task's label distribution), splits by sentence, and the layer sweep's result."""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

import circuitlab
from circuitlab.errors import InputError
from circuitlab.probing import classifier, data
from circuitlab.probing.activations import WordActivations
from circuitlab.probing.data import Sentence


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def newton_logistic(x, y, n_classes, lam, steps=30):
    """Multinomial logistic regression by Newton's method in float64: mean cross-entropy + lam/2 ||W||^2."""
    x, d = x.double(), x.shape[1]

    def objective(theta):
        W, b = theta[:n_classes * d].reshape(n_classes, d), theta[n_classes * d:]
        return torch.nn.functional.cross_entropy(x @ W.T + b, y) + 0.5 * lam * W.pow(2).sum()

    theta = torch.zeros(n_classes * d + n_classes, dtype=torch.float64)
    for _ in range(steps):
        g = torch.autograd.functional.jacobian(objective, theta)
        H = torch.autograd.functional.hessian(objective, theta)
        theta = theta - torch.linalg.pinv(H) @ g  # pinv: the bias is defined up to a constant shift
    return theta[:n_classes * d].reshape(n_classes, d), theta[n_classes * d:], objective


def test_linear_probe_reaches_the_newton_optimum():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(80, 4, generator=gen) * torch.tensor([1.0, 3.0, 0.5, 2.0]) + 1.5
    y = ((x[:, 0] + 0.3 * x[:, 1] + torch.randn(80, generator=gen)) > 1.5).long() + (x[:, 3] > 3).long()
    lam = 0.05
    xs = (x.double() - x.double().mean(0)) / x.double().std(0)  # the documented standardisation (unbiased std)
    W, b, objective = newton_logistic(xs, y, 3, lam)
    want = torch.softmax(xs @ W.T + b, -1)
    for dtype, tol in ((torch.float64, 1e-7), (torch.float32, 1e-3)):
        probe = classifier.train_probe(x, y, 3, "linear", weight_decay=lam, max_iter=500, dtype=dtype)
        got = torch.softmax(probe(x).double(), -1)
        torch.testing.assert_close(got, want, atol=tol, rtol=0)
        theta = torch.cat([probe.net.weight.detach().double().flatten(), probe.net.bias.detach().double()])
        grad = torch.autograd.functional.jacobian(objective, theta)
        assert grad.abs().max() < tol  # the gradient vanishes at the probe's weights


def test_probes_find_a_planted_signal_and_nothing_in_noise():
    gen = torch.Generator().manual_seed(1)
    y = torch.randint(0, 4, (600,), generator=gen)
    signal = torch.nn.functional.one_hot(y, 4).float() @ torch.randn(4, 12, generator=gen)
    x_signal = signal + 0.3 * torch.randn(600, 12, generator=gen)
    x_noise = torch.randn(600, 12, generator=gen)
    for kind in ("linear", "mlp"):
        for x, low, high in ((x_signal, 0.97, 1.0), (x_noise, 0.0, 0.4)):
            probe = classifier.train_probe(x[:400], y[:400], 4, kind, x_dev=x[400:500], y_dev=y[400:500],
                                           hidden=32, epochs=30, lr=1e-2)
            assert low <= probe.accuracy(x[500:], y[500:]) <= high, (kind, low)


def test_mlp_memorises_what_a_linear_probe_cannot():
    # XOR of two signs: no linear separation, an MLP-1 learns it
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(800, 2, generator=gen)
    y = ((x[:, 0] > 0) ^ (x[:, 1] > 0)).long()
    lin = classifier.train_probe(x[:600], y[:600], 2, "linear")
    mlp = classifier.train_probe(x[:600], y[:600], 2, "mlp", x_dev=x[600:700], y_dev=y[600:700], hidden=32,
                                 lr=1e-2, epochs=60, patience=10)
    assert lin.accuracy(x[700:], y[700:]) < 0.65 < 0.9 < mlp.accuracy(x[700:], y[700:])


def test_control_labels_fix_one_label_per_type_from_the_task_distribution():
    gen = torch.Generator().manual_seed(3)
    types = [f"w{i}" for i in range(3000)]
    words = [types[int(i)] for i in torch.randint(0, 3000, (20000,), generator=gen)]
    labels = ["N" if i % 10 < 6 else "V" if i % 10 < 9 else "D" for i in range(20000)]  # 60/30/10
    ctrl = classifier.control_labels(words, labels, seed=0)
    per_type = {}
    for w, c in zip(words, ctrl):
        assert per_type.setdefault(w, c) == c  # every occurrence of a type has the same label
    share = Counter(per_type.values())
    assert abs(share["N"] / len(per_type) - 0.6) < 0.04 and abs(share["D"] / len(per_type) - 0.1) < 0.03
    shuffled = list(zip(words, labels))[::-1]
    again = classifier.control_labels([w for w, _ in shuffled], [lab for _, lab in shuffled], seed=0)
    assert again[::-1] == ctrl  # the data's order does not matter
    assert classifier.control_labels(words, labels, seed=1) != ctrl
    low = classifier.control_labels(["The", "the"], ["D", "D"], seed=0, lowercase=True)
    assert low[0] == low[1]
    with pytest.raises(InputError, match="one label per word"):
        classifier.control_labels(["a"], [])


def test_split_by_sentence_is_a_partition():
    parts = classifier.split_sentences(50, (0.6, 0.2, 0.2), seed=4)
    joined = torch.cat(list(parts.values()))
    assert sorted(joined.tolist()) == list(range(50)) and [len(v) for v in parts.values()] == [30, 10, 10]
    assert not torch.equal(parts["test"], classifier.split_sentences(50, (0.6, 0.2, 0.2), seed=5)["test"])
    with pytest.raises(InputError, match="three positive fractions"):
        classifier.split_sentences(50, (0.8, 0.3, 0.1))
    with pytest.raises(InputError, match="at least 3"):
        classifier.split_sentences(2)


def planted_activations(n_sentences=120, seed=0, noise=0.2):
    """WordActivations over template sentences: one hook holding each word's UPOS (plus noise), one pure noise."""
    sents = data.template_sentences(n_sentences, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    upos = sorted({u for s in sents for u in s.upos})
    rows = [(i, j) for i, s in enumerate(sents) for j in range(len(s))]
    y = torch.tensor([upos.index(sents[i].upos[j]) for i, j in rows])
    planted = (torch.nn.functional.one_hot(y, len(upos)).float()
               + noise * torch.randn(len(rows), len(upos), generator=gen))
    noise = torch.randn(len(rows), 8, generator=gen)
    return WordActivations({"blocks.0.hook_resid_post": planted, "blocks.1.hook_resid_post": noise},
                           torch.tensor([r[0] for r in rows]), torch.tensor([r[1] for r in rows]), sents, "planted")


def test_sweep_result_holds_accuracy_control_selectivity_and_intervals():
    acts = planted_activations()
    res = classifier.sweep(acts, task="upos", probes=("linear", "mlp"), seeds=(0, 1), mlp={"hidden": 16})
    assert res.axes == ("probe", "layer", "measure") and res.shape == (2, 2, 3)
    assert isinstance(res, classifier.ProbeSweep)  # the kind that renders as layer curves with intervals
    assert res.labels["layer"] == ["L0", "L1"] and res.labels["measure"] == ["accuracy", "control", "selectivity"]
    per_seed = res.meta["per_seed"]
    torch.testing.assert_close(per_seed[:, :, 2], per_seed[:, :, 0] - per_seed[:, :, 1])
    torch.testing.assert_close(res.values, per_seed.mean(-1))
    half = 12.706 * per_seed.std(-1) / math.sqrt(2)  # t quantile for 1 degree of freedom
    torch.testing.assert_close(res.meta["ci95"], half, equal_nan=True)
    assert (res.values[:, 0, 0] > 0.95).all()  # the planted layer: every probe reads the tag
    assert (res.values[:, 1, 0] < res.meta["majority_baseline"] + 0.1).all()  # noise: no better than the majority
    assert (res.values[:, 0, 2] > 0.2).all()  # features hold the tag, not the word: the control task is unlearnable
    n = res.meta["n_sentences"]
    assert n["train"] + n["dev"] + n["test"] == 120 and sum(res.meta["n_words"].values()) == len(acts)


def test_sweep_reports_test_labels_never_seen_in_training():
    acts = planted_activations(60)
    test = classifier.split_sentences(60, (0.8, 0.1, 0.1), seed=0)["test"].tolist()
    odd = acts.sentences[test[0]]
    acts.sentences[test[0]] = Sentence(odd.words, ("INTJ",) * len(odd), odd.head, odd.deprel, odd.ent, odd.space_after)
    res = classifier.sweep(acts, probes="linear", seeds=(0,), control=False, hooks=["blocks.0.hook_resid_post"])
    assert res.meta["unseen_test_labels"] == ["INTJ"] and "INTJ" in res.meta["classes"]
    assert res.values[0, 0, 0] <= 1 - len(odd) / res.meta["n_words"]["test"]  # those words are always missed


def test_sentence_probes_read_a_planted_sentence_property():
    acts = planted_activations(300, seed=3, noise=0.02)
    x, aligned = classifier.sentence_features(acts, "blocks.0.hook_resid_post")
    rows = acts.sentence == 5
    torch.testing.assert_close(x[5], acts["blocks.0.hook_resid_post"][rows].mean(0))
    assert aligned.all()
    has_name = [("PROPN" in s.upos) for s in acts.sentences]  # the planted features hold each word's tag
    res = classifier.sentence_sweep(acts, lambda s: "PROPN" in s.upos, probes=("linear", "mlp"), seeds=(0, 1))
    assert res.shape == (2, 2, 1) and res.labels["measure"] == ["accuracy"] and isinstance(res, classifier.ProbeSweep)
    assert (res.values[:, 0, 0] > 0.9).all()  # the planted layer
    assert (res.values[:, 1, 0] < res.meta["majority_baseline"] + 0.15).all()  # noise
    same = classifier.sentence_sweep(acts, has_name, probes="linear", seeds=(0,))
    assert same.values[0, :, 0].tolist() == res.values[0, :, 0].tolist()  # a list of labels or a function alike
    with pytest.raises(InputError, match="one label per sentence"):
        classifier.sentence_sweep(acts, has_name[:-1])
    with pytest.raises(InputError, match="two labels or more"):
        classifier.sentence_sweep(acts, lambda s: "same")


def test_sweep_on_toy_lm_end_to_end(tmp_path):
    toy = circuitlab.load_model("zoo/toy-lm")
    sents = data.template_sentences(150, seed=9)
    res = classifier.sweep(toy, sents, task="upos", hooks=[0, 3], probes="linear", seeds=(0,), cache=tmp_path)
    assert res.shape == (1, 2, 3) and res.model == "zoo/toy-lm" and res.task == "upos"
    assert torch.isnan(res.meta["ci95"]).all()  # one seed: no interval
    # template words each have one tag: the embedding layer's linear probe reads them almost perfectly
    assert res.values[0, 0, 0] > 0.9
    ent = classifier.sweep(toy, sents, task="ent", hooks=[1], probes="linear", seeds=(0, 1), control=False,
                           cache=tmp_path)
    assert torch.isnan(ent.values[0, 0, 1:]).all() and ent.meta["classes"] == ["GPE", "O", "PERSON"]


def test_sweep_rejects_bad_input():
    acts = planted_activations(20)
    with pytest.raises(InputError, match="task='lemma'"):
        classifier.sweep(acts, task="lemma")
    with pytest.raises(InputError, match="probes="):
        classifier.sweep(acts, probes=("svm",))
    with pytest.raises(InputError, match="seeds="):
        classifier.sweep(acts, seeds=(1, 1))
    with pytest.raises(InputError, match="not in the given activations"):
        classifier.sweep(acts, hooks=["blocks.5.hook_resid_post"])
    with pytest.raises(InputError, match="sentences are needed"):
        classifier.sweep("zoo/toy-lm")
    no_tags = [Sentence(s.words, head=s.head) for s in acts.sentences]
    bare = WordActivations(acts.acts, acts.sentence, acts.word, no_tags)
    with pytest.raises(InputError, match="no 'upos' labels"):
        classifier.sweep(bare)
    with pytest.raises(InputError, match="labels must lie in"):
        classifier.train_probe(torch.randn(5, 2), torch.tensor([0, 1, 2, 0, 1]), 2)
    with pytest.raises(InputError, match="one label per row"):
        classifier.train_probe(torch.randn(5, 2), torch.tensor([0, 1]), 2)
