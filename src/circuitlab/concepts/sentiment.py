"""An offline sentiment task for concept explanations: template reviews, concept texts, and a label-word
classifier on a causal language model.

No sentiment data set ships in the package registries, so the data are built here from templates and word lists
written for circuitlab (no third-party lexicon or corpus is copied; the words are everyday English adjectives).

- :func:`reviews`: short reviews, ``"The {noun} was {adjective}."`` and similar frames, labelled 1 (positive
  adjective) or 0 (negative adjective); nouns, frames and adjectives split between a train and a test part so
  that the held-out reviews share no adjective with the training ones.
- :func:`concept_texts`: texts for TCAV concepts: ``"positive adjectives"`` and ``"negative adjectives"`` (lists of
  adjectives, outside any review frame: ``"Lovely, charming and superb."``), ``"neutral adjectives"`` (colours,
  shapes, materials: descriptive words without sentiment), and ``"animals"`` (a concept unrelated to the label).
- :func:`random_texts`: lists of random everyday words in the same frames, the pool of TCAV's random sets.
- :class:`LabelWordClassifier`: a prompt that ends in a cue (``"... Overall, the experience was"``) and the
  logit difference of two label words (``" positive"`` - ``" negative"``) with a threshold fitted on training
  reviews: a sentiment classifier made from a pretrained model without training it (its score is a circuitlab
  metric, so TCAV and integrated gradients can explain it).
"""

from __future__ import annotations

import random as _random
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from circuitlab.core import ModelLike, as_model
from circuitlab.errors import InputError
from circuitlab.metrics import LogitDiff

#: adjectives of clearly positive sentiment (written for circuitlab)
POSITIVE = ["wonderful", "excellent", "delightful", "lovely", "fantastic", "superb", "pleasant", "charming",
            "brilliant", "marvelous", "enjoyable", "great", "perfect", "amazing", "beautiful", "splendid",
            "terrific", "fabulous", "gorgeous", "outstanding"]
#: adjectives of clearly negative sentiment
NEGATIVE = ["terrible", "awful", "dreadful", "horrible", "disappointing", "miserable", "unpleasant", "boring",
            "poor", "dismal", "annoying", "lousy", "mediocre", "disgusting", "nasty", "painful", "tedious",
            "shoddy", "appalling", "useless"]
#: descriptive adjectives without sentiment: colours, shapes, sizes, materials, times
NEUTRAL = ["wooden", "square", "round", "blue", "green", "grey", "metal", "plastic", "northern", "western",
           "weekly", "daily", "rectangular", "narrow", "tall", "paper", "yellow", "brown", "cotton", "glass"]
#: an unrelated concept
ANIMALS = ["cat", "horse", "goat", "rabbit", "sheep", "donkey", "pigeon", "tortoise", "hamster", "beaver",
           "otter", "badger", "camel", "duck", "lizard", "mole", "ferret", "llama", "heron", "squirrel"]

NOUNS = ["film", "meal", "hotel", "book", "concert", "service", "trip", "show", "room", "restaurant", "game",
         "course", "album", "flight", "tour", "dinner"]
FRAMES = ["The {noun} was {adj}.", "I thought the {noun} was {adj}.", "Honestly, the {noun} felt {adj}.",
          "Our {noun} turned out {adj}.", "We found the {noun} {adj}.", "That {noun} was really {adj}."]
#: what follows a review in the classifier's prompt, and the label words compared after it
CUE = " Overall, the experience was"
LABEL_WORDS = (" positive", " negative")

#: everyday words of several parts of speech, without sentiment, adjectives or animals: random texts' words
RANDOM_WORDS = ["table", "window", "river", "walked", "seven", "under", "carry", "paper", "station", "often",
                "kitchen", "opened", "twelve", "between", "letter", "bridge", "listen", "Tuesday", "pencil", "after",
                "market", "wrote", "eleven", "across", "bottle", "garden", "follow", "morning", "ladder", "during",
                "village", "counted", "ticket", "behind", "button", "travel", "minute", "chair", "returned",
                "around", "street", "basket", "thirty", "answer", "engine", "island", "moved", "corner", "spoon",
                "before"]
#: the frames every concept text and random text is written in (so that a CAV reflects words, not form)
_LIST_FRAMES = ["{a}, {b} and {c}.", "{a} and {b}.", "{a}, {b}, {c}.", "{a}, {b} and {c}.", "{a} or {b}."]


def _split(words: Sequence[str], part: str) -> list[str]:
    """The first three quarters of ``words`` for ``"train"``, the rest for ``"test"``, all for ``"all"``."""
    cut = (3 * len(words)) // 4
    if part == "train":
        return list(words[:cut])
    if part == "test":
        return list(words[cut:])
    if part == "all":
        return list(words)
    raise InputError(f"split={part!r}: use 'train', 'test' or 'all'.")


def reviews(n: int = 40, split: str = "train", seed: int = 0) -> list[tuple[str, int]]:
    """``n`` reviews per label, ``(text, label)`` with label 1 positive and 0 negative, drawn (seeded) from the
    frames, nouns and adjectives of ``split``; the positive and negative reviews share frames and nouns."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"n must be a positive number of reviews per label; got {n!r}.")
    rng = _random.Random(seed)
    out = []
    for label, adjectives in ((1, _split(POSITIVE, split)), (0, _split(NEGATIVE, split))):
        rng_label = _random.Random(rng.random())
        seen: set[str] = set()
        while len([x for x in out if x[1] == label]) < n:
            text = rng_label.choice(_split(FRAMES, "all")).format(noun=rng_label.choice(_split(NOUNS, "all")),
                                                                  adj=rng_label.choice(adjectives))
            if text not in seen or len(seen) >= len(FRAMES) * len(NOUNS) * len(adjectives):
                seen.add(text)
                out.append((text, label))
    return out


def concept_texts(name: str, n: int = 20, seed: int = 0) -> list[str]:
    """``n`` texts of a concept: ``"positive adjectives"``, ``"negative adjectives"``, ``"neutral adjectives"`` or
    ``"animals"``: a few of its words in a short list frame (``"lovely, charming and bright"``)."""
    words = {"positive adjectives": POSITIVE, "negative adjectives": NEGATIVE, "neutral adjectives": NEUTRAL,
             "animals": ANIMALS}
    if name not in words:
        raise InputError(f"concept {name!r}: use one of {', '.join(map(repr, words))}.")
    return _word_lists(words[name], n, f"{name}/{seed}")


def random_texts(n: int = 60, seed: int = 0) -> list[str]:
    """``n`` distinct texts of random everyday words (:data:`RANDOM_WORDS`) in the concept texts' frames
    (``"Window, seven and carry."``): TCAV's random counterexamples, differing from the concepts in their words
    only."""
    return _word_lists(RANDOM_WORDS, n, f"random/{seed}")


def _word_lists(words: Sequence[str], n: int, seed: str) -> list[str]:
    """``n`` distinct texts of two or three of ``words`` in :data:`_LIST_FRAMES`, seeded."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"n must be a positive number of texts; got {n!r}.")
    rng = _random.Random(seed)
    out: dict[str, None] = {}
    for _ in range(100 * n):
        a, b, c = rng.sample(list(words), 3)
        text = rng.choice(_LIST_FRAMES).format(a=a, b=b, c=c)
        out[text[0].upper() + text[1:]] = None
        if len(out) == n:
            return list(out)
    raise InputError(f"n={n}: could not make that many distinct texts from {len(words)} words.")


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
    def scores(self, texts: Sequence[str]) -> torch.Tensor:
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
    from circuitlab.concepts.tcav import tcav

    model = as_model(model)
    clf = LabelWordClassifier(model, words=tuple(words))
    negative = [t for t, label in reviews(n_inputs, "test", seed=seed + 2) if label == 0]
    texts = {c: concept_texts(c, 2 * set_size, seed=seed) for c in concepts}
    return tcav(model, [clf.prompt(t) for t in negative], clf.metric(0), texts, random_texts(n_random, seed=seed),
                hooks=list(hooks), runs=runs, set_size=set_size, seed=seed, progress=progress)
