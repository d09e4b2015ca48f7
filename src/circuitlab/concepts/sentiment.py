"""An offline sentiment task for concept explanations: template reviews, concept texts, and a label-word
classifier on a causal language model.

The data (:func:`reviews`, :func:`concept_texts`, :func:`random_texts`: template reviews labelled by their
adjective, TCAV's concept and random texts) live in :mod:`circuitlab.tasks.reviews`, which says how they are
written, and are re-exported here. The method is:

- :class:`LabelWordClassifier`: a prompt that ends in a cue (``"... Overall, the experience was"``) and the
  logit difference of two label words (``" positive"`` - ``" negative"``) with a threshold fitted on training
  reviews: a sentiment classifier made from a pretrained model without training it (its score is a circuitlab
  metric, so TCAV and integrated gradients can explain it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from jaxtyping import Float

from circuitlab.core import ModelLike, as_model, check_seed
from circuitlab.metrics import LogitDiff
from circuitlab.tasks.reviews import (ANIMALS, NEGATIVE, NEUTRAL, POSITIVE, RANDOM_WORDS, concept_texts, random_texts,
                                      reviews)

#: what follows a review in the classifier's prompt, and the label words compared after it
CUE = " Overall, the experience was"
LABEL_WORDS = (" positive", " negative")


@dataclass
class LabelWordClassifier:
    """Sentiment from a causal LM's label words: score = ``logit(" positive") - logit(" negative")`` after
    ``text + CUE``; positive when the score exceeds ``threshold`` (fitted on training reviews by :meth:`fit`)."""

    model: object
    threshold: float = 0.0
    cue: str = CUE
    words: tuple[str, str] = LABEL_WORDS

    def prompt(self, text: str) -> str:
        return text + self.cue

    def metric(self, label: int = 1) -> LogitDiff:
        """The class score of ``label`` as a circuitlab metric: the label word's logit minus the other's."""
        pos, neg = self.words
        return LogitDiff(pos, neg) if label == 1 else LogitDiff(neg, pos)

    @torch.no_grad()
    def scores(self, texts: Sequence[str]) -> Float[torch.Tensor, " text"]:
        """The positive-minus-negative logit difference of each text (one forward pass per text length)."""
        model = self.model
        ids = [model.to_single_token(w) for w in self.words]
        out = torch.empty(len(texts), dtype=torch.float64)
        by_len: dict[int, list[int]] = {}
        toks = [model.to_tokens(self.prompt(t))[0] for t in texts]
        for i, t in enumerate(toks):
            by_len.setdefault(len(t), []).append(i)
        for idx in by_len.values():
            logits = model(torch.stack([toks[i] for i in idx]))[:, -1]
            out[idx] = (logits[:, ids[0]] - logits[:, ids[1]]).double()
        return out

    def fit(self, examples: Sequence[tuple[str, int]]) -> "LabelWordClassifier":
        """Set ``threshold`` to the midpoint that classifies ``examples`` best (ties: the middle one)."""
        s = self.scores([t for t, _ in examples])
        y = torch.tensor([l for _, l in examples])
        cuts = torch.sort(s).values
        candidates = torch.cat([cuts[:1] - 1, (cuts[1:] + cuts[:-1]) / 2, cuts[-1:] + 1])
        accs = torch.stack([((s > c).long() == y).double().mean() for c in candidates])
        best = (accs == accs.max()).nonzero().flatten()
        self.threshold = float(candidates[best[len(best) // 2]])
        return self

    def accuracy(self, examples: Sequence[tuple[str, int]]) -> float:
        s = self.scores([t for t, _ in examples])
        y = torch.tensor([l for _, l in examples])
        return float(((s > self.threshold).long() == y).double().mean())


def label_word_classifier(model: ModelLike, train: Optional[Sequence[tuple[str, int]]] = None) -> LabelWordClassifier:
    """A :class:`LabelWordClassifier` on ``model``, its threshold fitted on ``train`` (default: :func:`reviews`)."""
    model = as_model(model)
    return LabelWordClassifier(model).fit(train if train is not None else reviews(20, "train"))


__all__ = ["POSITIVE", "NEGATIVE", "NEUTRAL", "ANIMALS", "RANDOM_WORDS", "CUE", "LABEL_WORDS", "reviews",
           "concept_texts", "random_texts", "LabelWordClassifier", "label_word_classifier", "sentiment_tcav"]


def sentiment_tcav(model: ModelLike = "gemma-3-270m", *, concepts: Sequence[str] = ("positive adjectives",
                   "neutral adjectives", "animals"), hooks=(2, 5, 8, 11, 14, 17), n_inputs: int = 16, runs: int = 20,
                   set_size: int = 20, n_random: int = 120, words: tuple[str, str] = LABEL_WORDS, seed: int = 0,
                   progress: bool = False):
    """The seed experiment: TCAV of sentiment concepts for the *negative* class on negative held-out reviews.

    The class score is the label-word logit difference ``logit(" negative") - logit(" positive")`` after
    ``review + CUE`` (:meth:`LabelWordClassifier.metric`); inputs are ``n_inputs`` negative test reviews (adjectives
    unseen in training); each concept has ``set_size * 2`` texts (:func:`concept_texts`), random sets come from
    ``n_random`` random word lists (:func:`random_texts`). The expectation (Kim et al. 2018's sentiment example):
    TCAV of "positive adjectives" low compared with "neutral adjectives"; an unrelated concept ("animals") not
    significant. Returns the :class:`~circuitlab.concepts.tcav.TCAVResult`.
    """
    seed = check_seed(seed)
    from circuitlab.concepts.tcav import tcav

    model = as_model(model)
    clf = LabelWordClassifier(model, words=tuple(words))
    negative = [t for t, label in reviews(n_inputs, "test", seed=seed + 2) if label == 0]
    texts = {c: concept_texts(c, 2 * set_size, seed=seed) for c in concepts}
    return tcav(model, [clf.prompt(t) for t in negative], clf.metric(0), texts, random_texts(n_random, seed=seed),
                hooks=list(hooks), runs=runs, set_size=set_size, seed=seed, progress=progress)
