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
from typing import Any, Mapping, Optional, Sequence

import torch
from jaxtyping import Float

from circuitlab.core import ModelLike, answer_id, as_model, check_count, check_seed, check_texts, shorten, to_tokens
from circuitlab.errors import InputError
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

    def __post_init__(self) -> None:
        # each label word one token of this model, the two different: checked here, not at the first forward pass
        words = self.words
        if isinstance(words, str) or not isinstance(words, Sequence) or len(words) != 2:
            raise InputError(f"words must be the two label words, positive first, e.g. (' good', ' bad'); got "
                             f"{shorten(words)}.")
        ids = [answer_id(self.model, w, what="label word") for w in words]
        if ids[0] == ids[1]:
            raise InputError(f"words {shorten(tuple(words))}: the two label words are the same token; give two "
                             "different words.")
        self.words = tuple(words)

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
        texts = check_texts(texts, "texts", allow_empty=True)
        ids = [model.to_single_token(w) for w in self.words]
        out = torch.empty(len(texts), dtype=torch.float64)
        by_len: dict[int, list[int]] = {}
        toks = [to_tokens(model, self.prompt(t))[0] for t in texts]
        for i, t in enumerate(toks):
            by_len.setdefault(len(t), []).append(i)
        for idx in by_len.values():
            logits = model(torch.stack([toks[i] for i in idx]))[:, -1]
            out[idx] = (logits[:, ids[0]] - logits[:, ids[1]]).double()
        return out

    def fit(self, examples: Sequence[tuple[str, int]]) -> "LabelWordClassifier":
        """Set ``threshold`` to the midpoint that classifies ``examples`` best (ties: the middle one)."""
        examples = _labelled(examples, both_labels=True)
        s = self.scores([t for t, _ in examples])
        y = torch.tensor([l for _, l in examples])
        cuts = torch.sort(s).values
        candidates = torch.cat([cuts[:1] - 1, (cuts[1:] + cuts[:-1]) / 2, cuts[-1:] + 1])
        accs = torch.stack([((s > c).long() == y).double().mean() for c in candidates])
        best = (accs == accs.max()).nonzero().flatten()
        self.threshold = float(candidates[best[len(best) // 2]])
        return self

    def accuracy(self, examples: Sequence[tuple[str, int]]) -> float:
        examples = _labelled(examples)
        s = self.scores([t for t, _ in examples])
        y = torch.tensor([l for _, l in examples])
        return float(((s > self.threshold).long() == y).double().mean())


def _labelled(examples: Any, what: str = "examples", *, both_labels: bool = False) -> list[tuple[str, int]]:
    """``examples`` as a non-empty list of ``(text, label)`` pairs, each a non-empty text and the label 0 (negative)
    or 1 (positive); with ``both_labels`` (fitting a threshold) both labels must occur. An InputError naming
    ``what`` otherwise."""
    if isinstance(examples, (str, bytes, Mapping)) or not isinstance(examples, Sequence) or not examples:
        raise InputError(f"{what} must be a non-empty list of (text, label) pairs, label 1 positive and 0 negative, "
                         f"e.g. reviews(20, 'train'); got {shorten(examples, 60)}.")
    for i, e in enumerate(examples):
        if not (isinstance(e, Sequence) and not isinstance(e, str) and len(e) == 2 and isinstance(e[0], str)
                and e[0].strip() and not isinstance(e[1], (bool, float)) and e[1] in (0, 1)):
            raise InputError(f"{what}[{i}] must be a (text, label) pair with a non-empty text and the label 0 "
                             f"(negative) or 1 (positive); got {shorten(e, 60)}.")
    if both_labels and len({int(e[1]) for e in examples}) < 2:
        raise InputError(f"{what} needs reviews of both labels (0 and 1) to fit the threshold; got "
                         f"{len(examples)} review(s) with labels {sorted({int(e[1]) for e in examples})}.")
    return [(t, int(label)) for t, label in examples]


def label_word_classifier(model: ModelLike, train: Optional[Sequence[tuple[str, int]]] = None, *,
                          words: tuple[str, str] = LABEL_WORDS) -> LabelWordClassifier:
    """A :class:`LabelWordClassifier` on ``model`` comparing the label ``words`` (positive first; each one token of
    the model), its threshold fitted on ``train`` (default: :func:`reviews`)."""
    model = as_model(model)
    if train is not None:
        _labelled(train, "train", both_labels=True)
    return LabelWordClassifier(model, words=words).fit(train if train is not None else reviews(20, "train"))


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
    concepts = check_texts(concepts, "concepts", item="concept name")
    for value, what in ((n_inputs, "n_inputs"), (set_size, "set_size"), (n_random, "n_random"), (runs, "runs")):
        check_count(value, what)
    clf = LabelWordClassifier(model, words=words)
    negative = [t for t, label in reviews(n_inputs, "test", seed=seed + 2) if label == 0]
    texts = {c: concept_texts(c, 2 * set_size, seed=seed) for c in concepts}
    return tcav(model, [clf.prompt(t) for t in negative], clf.metric(0), texts, random_texts(n_random, seed=seed),
                hooks=list(hooks), runs=runs, set_size=set_size, seed=seed, progress=progress)
