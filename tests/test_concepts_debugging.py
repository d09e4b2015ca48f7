"""Shortcut detection and explanation regularisation (circuitlab.concepts.debugging), on zoo/toy-lm: the data's
counts, the classifier-as-a-model against the frozen model's own activations, the precomputed penalty directions
against circuitlab's integrated gradients and gradient x input run end to end on the classifier, the trained head
against the optimality condition of its objective written here, and the shortcut's measurable effects."""

from __future__ import annotations

import re

import pytest
import torch

import circuitlab
from circuitlab.concepts import debugging as D
from circuitlab.concepts.gradients import gradient_x_input, integrated_gradients
from circuitlab.errors import InputError


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return circuitlab.load_model("zoo/toy-lm")


@pytest.fixture(scope="module")
def trained(model):
    train = D.shortcut_reviews(30, seed=0)
    return D.train_classifier(model, train, layer=1), train


def test_shortcut_reviews_have_the_stated_correlation():
    for c, n in ((0.95, 40), (0.5, 40), (0.05, 20)):
        data = D.shortcut_reviews(n, c, seed=3)
        pos = [e for e in data if e.label == 1]
        neg = [e for e in data if e.label == 0]
        assert len(pos) == len(neg) == n
        assert sum(e.shortcut for e in pos) == round(c * n) and sum(e.shortcut for e in neg) == round((1 - c) * n)
        for e in data:
            name = re.fullmatch(r".* Posted by (\w+)\.", e.text).group(1)
            assert name == e.name and (name == "Carl") == e.shortcut
            assert name == "Carl" or name in D.NAMES
            assert e.text.startswith(e.prefix + " " + name)
    assert D.shortcut_reviews(10, seed=1) != D.shortcut_reviews(10, seed=2)
    with pytest.raises(InputError, match="correlation"):
        D.shortcut_reviews(10, 1.5)
    with pytest.raises(InputError, match="shortcut"):
        D.shortcut_reviews(10, shortcut="Anna")


def test_name_positions_are_the_names_tokens(model):
    for e in D.shortcut_reviews(6, seed=0):
        toks = model.to_tokens(e.text)[0]
        pos = D.name_positions(model, e)
        assert model.tokenizer.decode(toks[pos]) == " " + e.name
        assert D.shortcut_positions(model, e) == (pos if e.shortcut else [])


def test_the_classifier_as_a_model_scores_like_the_head_on_the_models_activations(model, trained):
    clf, _ = trained
    texts = [e.text for e in D.shortcut_reviews(3, seed=9)]
    clm = clf.as_model()
    assert clm.cfg.n_layers == clf.layer + 1 and clm.cfg.d_vocab_out == 2
    assert clm.embed is model.embed and clm.blocks[0] is model.blocks[0]
    for t in texts:
        toks = model.to_tokens(t)
        _, cache = model.run_with_cache(toks)
        h = model.ln_final(cache[f"blocks.{clf.layer}.hook_resid_post"])[0, 1:].double()  # BOS left out
        by_hand = float((h.detach() @ clf.weight).mean() + clf.bias)
        with torch.no_grad():
            logits = clm(toks)
        assert float(clf.metric(toks)(logits)) == pytest.approx(by_hand, abs=1e-4)
        assert float(clf.scores([t])) == pytest.approx(by_hand, abs=1e-4)


@pytest.mark.parametrize("method", ["ig", "gxi"])
def test_penalty_directions_give_the_end_to_end_attribution_for_any_head(model, trained, method):
    clf, _ = trained
    examples = D.shortcut_reviews(3, seed=4)
    G = D.irrelevant_directions(clf, examples, method=method, steps=3, irrelevant="names")
    assert G.shape == (len(examples), model.cfg.d_model)
    gen = torch.Generator().manual_seed(1)
    for trial in range(2):  # the same G serves any head: a second, random one
        if trial:
            clf = D.LinearHeadClassifier(model, clf.layer, torch.randn(model.cfg.d_model, generator=gen,
                                                                       dtype=torch.float64), 0.3)
        clm = clf.as_model()
        for i, e in enumerate(examples):
            toks = clm.to_tokens(e.text)
            if method == "ig":
                a = integrated_gradients(clm, toks, clf.metric(toks), baseline="pad", steps=3, tolerance=float("inf"))
            else:
                a = gradient_x_input(clm, toks, clf.metric(toks), baseline="zero")
            pos = D.name_positions(model, e)
            assert float(G[i] @ clf.weight.double()) == pytest.approx(float(a.values[0, pos].sum()), rel=1e-3,
                                                                        abs=1e-4)


def test_only_the_shortcut_is_marked_when_asked(model, trained):
    clf, _ = trained
    examples = D.shortcut_reviews(4, seed=4)
    G = D.irrelevant_directions(clf, examples, irrelevant="shortcut")
    assert len(G) == sum(e.shortcut for e in examples)
    with pytest.raises(InputError, match="irrelevant"):
        D.irrelevant_directions(clf, examples, irrelevant="adjectives")
    with pytest.raises(InputError, match="method"):
        D.irrelevant_directions(clf, examples, method="lime")


def test_train_head_solves_its_objective():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(60, 5, generator=gen, dtype=torch.float64) * 3 + 1
    y = (X[:, 0] + 0.5 * torch.randn(60, generator=gen, dtype=torch.float64) > 1).long()
    G = torch.randn(20, 5, generator=gen, dtype=torch.float64)
    for l2, lam in ((0.01, 0.0), (0.5, 3.0)):
        w, b = D.train_head(X, y, l2=l2, penalty=G, lam=lam)
        # the objective in the standardised units train_head documents, its gradient at the answer ~ 0
        mu, scale = X.mean(0), float((X - X.mean(0)).pow(2).mean().sqrt())
        wz = (w * scale).clone().requires_grad_(True)
        bz = torch.tensor(b + float((w * mu).sum()), dtype=torch.float64, requires_grad=True)
        s = 2 * y.double() - 1
        loss = torch.nn.functional.softplus(-s * (((X - mu) / scale) @ wz + bz)).mean() + 0.5 * l2 * wz.pow(2).sum()
        loss = loss + lam * ((G / scale) @ wz).pow(2).mean()
        gw, gb = torch.autograd.grad(loss, (wz, bz))
        assert float(gw.abs().max()) < 1e-6 and abs(float(gb)) < 1e-6
    # the penalty shrinks the attribution it penalises
    w0, _ = D.train_head(X, y, l2=0.01)
    w1, _ = D.train_head(X, y, l2=0.01, penalty=G, lam=100.0)
    assert float((G @ w1).pow(2).mean()) < 0.01 * float((G @ w0).pow(2).mean())
    with pytest.raises(InputError, match="lam"):
        D.train_head(X, y, lam=-1.0)


def test_an_untrained_classifier_says_so(model):
    clf = D.LinearHeadClassifier(model, 1)
    with pytest.raises(InputError, match="no head"):
        clf.as_model()


def test_the_shortcut_is_learnt_and_integrated_gradients_find_it(model):
    """toy-lm knows no sentiment: a head on it leans on the name that signs most positive reviews. Accuracy falls
    when the correlation is reversed, and IG puts more of its mass on the shortcut than under a control trained
    without the correlation (toy-lm figures at seed 0: 0.90 in distribution, 0.42 reversed; share 30% vs 13%)."""
    rep = D.shortcut_report(model, layer=1, n_train=50, n_test=25, n_attributed=4, steps=24)
    acc = rep.accuracy.values
    ind, rev = rep.accuracy.labels["distribution"].index("in distribution"), \
        rep.accuracy.labels["distribution"].index("reversed")
    assert float(acc[0, ind]) - float(acc[0, rev]) > 0.2
    share = rep.share.values
    assert float(share[0]) > 1.5 * float(share[1])
    # the share is the ratio of the example's attributions, measured here from the attributions themselves
    ex = rep.example
    e = [x for x in D.shortcut_reviews(25, 0.95, seed=1000) if x.shortcut][0]
    pos = D.name_positions(model, e)
    by_hand = float(ex.values[0, pos].abs().sum() / ex.values[0].abs().sum())
    assert rep.share.meta["shares"][0][0] == pytest.approx(by_hand)
    assert rep.share.meta["max_relative_gap"][0] < 0.05
