"""The offline sentiment task (circuitlab.concepts.sentiment): its data's properties, and the label-word
classifier's scores and threshold against direct model calls and a brute-force search."""

from __future__ import annotations

import re

import pytest
import torch

import circuitlab
from circuitlab.concepts import sentiment as S
from circuitlab.errors import InputError


def words_of(text):
    return re.findall(r"[a-z]+", text.lower())


def test_reviews_are_balanced_labelled_and_split_by_adjective():
    train, test = S.reviews(30, "train", seed=0), S.reviews(30, "test", seed=0)
    for data in (train, test):
        assert sum(l for _, l in data) == 30 and len(data) == 60
        for text, label in data:
            pos = [w for w in words_of(text) if w in S.POSITIVE]
            neg = [w for w in words_of(text) if w in S.NEGATIVE]
            assert (len(pos), len(neg)) == ((1, 0) if label == 1 else (0, 1)), text
    adjectives = lambda data: {w for t, _ in data for w in words_of(t) if w in S.POSITIVE + S.NEGATIVE}  # noqa: E731
    assert not adjectives(train) & adjectives(test)  # held-out reviews use unseen adjectives
    assert S.reviews(30, "train", seed=0) == train and S.reviews(30, "train", seed=1) != train
    assert not set(S.POSITIVE) & set(S.NEGATIVE) and not set(S.NEUTRAL) & set(S.POSITIVE + S.NEGATIVE)


def test_concept_and_random_texts_share_their_frames_and_differ_in_words():
    frame = lambda t: re.sub(r"[A-Za-z]+", "w", t)  # noqa: E731
    concepts = {c: S.concept_texts(c, 20) for c in ("positive adjectives", "neutral adjectives", "animals")}
    rand = S.random_texts(40)
    assert len(set(rand)) == 40 and all(len(set(v)) == 20 for v in concepts.values())
    assert {frame(t) for t in rand} == {frame(t) for v in concepts.values() for t in v}
    lists = {"positive adjectives": S.POSITIVE, "neutral adjectives": S.NEUTRAL, "animals": S.ANIMALS}
    content = lambda t: [w for w in words_of(t) if w not in ("and", "or")]  # noqa: E731
    for name, texts in concepts.items():
        assert all(w in lists[name] for t in texts for w in content(t)), name
    assert all(w in [x.lower() for x in S.RANDOM_WORDS] for t in rand for w in content(t))
    with pytest.raises(InputError, match="concept"):
        S.concept_texts("verbs")


def test_label_word_classifier_scores_and_threshold():
    model = circuitlab.load_model("zoo/toy-lm")
    train = S.reviews(6, "train")
    clf = S.LabelWordClassifier(model, words=(" good", " bad")).fit(train)  # toy-lm: " positive" is 4 tokens
    pos, neg = model.to_single_token(" good"), model.to_single_token(" bad")
    texts = [t for t, _ in train]
    with torch.no_grad():
        direct = [float(model(model.to_tokens(t + S.CUE))[0, -1, pos] - model(model.to_tokens(t + S.CUE))[0, -1, neg])
                  for t in texts]
    torch.testing.assert_close(clf.scores(texts), torch.tensor(direct, dtype=torch.float64), atol=1e-4, rtol=1e-5)
    # the fitted threshold is as accurate as the best threshold of all
    y = [l for _, l in train]
    best = max(sum((d > c) == bool(l) for d, l in zip(direct, y)) for c in direct + [min(direct) - 1])
    assert clf.accuracy(train) == pytest.approx(best / len(train))
    m = clf.metric(0)
    assert (m.correct, m.wrong) == (" bad", " good")


def test_the_sentiment_tcav_experiment_runs_end_to_end():
    """The plumbing of the seed experiment on zoo/toy-lm (which knows no sentiment: only shapes are checked here;
    the gemma-3-270m figures are in the issue's closing note)."""
    res = S.sentiment_tcav("zoo/toy-lm", hooks=(1, 3), n_inputs=3, runs=3, set_size=5, n_random=12,
                           words=(" good", " bad"))
    assert res.scores.shape == (3, 2) and res.run_scores.shape == (3, 2, 3)
    assert res.concepts == ["positive adjectives", "neutral adjectives", "animals"]
    assert res.scores.meta["n_inputs"] == 3 and res.p_values.values.le(1).all()
