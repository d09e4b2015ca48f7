"""Sentiment reviews written from templates, concept and random texts for TCAV, and reviews signed by a shortcut name.

No sentiment data set ships in the package registries, so the data are built here from templates and word lists
written for circuitlab (no third-party lexicon or corpus is copied; the words are everyday English adjectives).

- :func:`reviews`: short reviews, ``"The {noun} was {adjective}."`` and similar frames, labelled 1 (positive
  adjective) or 0 (negative adjective); nouns, frames and adjectives split between a train and a test part so
  that the held-out reviews share no adjective with the training ones.
- :func:`concept_texts`: texts for TCAV concepts: ``"positive adjectives"`` and ``"negative adjectives"`` (lists of
  adjectives, outside any review frame: ``"Lovely, charming and superb."``), ``"neutral adjectives"`` (colours,
  shapes, materials: descriptive words without sentiment), and ``"animals"`` (a concept unrelated to the label).
- :func:`random_texts`: lists of random everyday words in the same frames, the pool of TCAV's random sets.
- :func:`shortcut_reviews`: the reviews each signed by a name (``"The film was lovely. Posted by Anna."``), one name,
  the **shortcut** (:data:`SHORTCUT`), correlated with the label by ``correlation``: the task of
  :mod:`circuitlab.concepts.debugging` (shortcut detection, explanation regularisation).

The label-word classifier and the TCAV experiment on these reviews are :mod:`circuitlab.concepts.sentiment`'s.
"""

from __future__ import annotations

import random as _random
from dataclasses import dataclass
from typing import Sequence

from circuitlab.core import check_affordable, check_number, check_seed, check_texts, shorten
from circuitlab.errors import InputError

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
    raise InputError(f"split={shorten(part)}: use 'train', 'test' or 'all'.")


def reviews(n: int = 40, split: str = "train", seed: int = 0) -> list[tuple[str, int]]:
    """``n`` reviews per label, ``(text, label)`` with label 1 positive and 0 negative, drawn (seeded) from the
    frames, nouns and adjectives of ``split``; the positive and negative reviews share frames and nouns."""
    seed = check_seed(seed)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"n must be a positive number of reviews per label; got {shorten(n, 40)}.")
    check_affordable(2 * 300 * n, f"n={n:,} reviews per label (made at once)", "use fewer reviews")
    rng = _random.Random(seed)
    out = []
    for label, adjectives in ((1, _split(POSITIVE, split)), (0, _split(NEGATIVE, split))):
        rng_label = _random.Random(rng.random())
        seen: set[str] = set()
        made = 0  # this label's reviews so far (counted, not recounted from `out` each time)
        while made < n:
            text = rng_label.choice(_split(FRAMES, "all")).format(noun=rng_label.choice(_split(NOUNS, "all")),
                                                                  adj=rng_label.choice(adjectives))
            if text not in seen or len(seen) >= len(FRAMES) * len(NOUNS) * len(adjectives):
                seen.add(text)
                out.append((text, label))
                made += 1
    return out


def concept_texts(name: str, n: int = 20, seed: int = 0) -> list[str]:
    """``n`` texts of a concept: ``"positive adjectives"``, ``"negative adjectives"``, ``"neutral adjectives"`` or
    ``"animals"``: a few of its words in a short list frame (``"lovely, charming and bright"``)."""
    seed = check_seed(seed)
    words = {"positive adjectives": POSITIVE, "negative adjectives": NEGATIVE, "neutral adjectives": NEUTRAL,
             "animals": ANIMALS}
    if name not in words:
        raise InputError(f"concept {shorten(name)}: use one of {', '.join(map(repr, words))}.")
    return _word_lists(words[name], n, f"{name}/{seed}")


def random_texts(n: int = 60, seed: int = 0) -> list[str]:
    """``n`` distinct texts of random everyday words (:data:`RANDOM_WORDS`) in the concept texts' frames
    (``"Window, seven and carry."``): TCAV's random counterexamples, differing from the concepts in their words
    only."""
    seed = check_seed(seed)
    return _word_lists(RANDOM_WORDS, n, f"random/{seed}")


def _word_lists(words: Sequence[str], n: int, seed: str) -> list[str]:
    """``n`` distinct texts of two or three of ``words`` in :data:`_LIST_FRAMES`, seeded."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"n must be a positive number of texts; got {shorten(n, 40)}.")
    # at most this many distinct texts exist (ordered word triples in each frame): more is refused up front, not
    # searched for 100 * n draws
    most = len(words) * (len(words) - 1) * (len(words) - 2) * len(set(_LIST_FRAMES))
    if n > most:
        raise InputError(f"n={n:,}: {len(words)} words make at most {most:,} distinct texts; use n <= {most}.")
    rng = _random.Random(seed)
    out: dict[str, None] = {}
    for _ in range(100 * n):
        a, b, c = rng.sample(list(words), 3)
        text = rng.choice(_LIST_FRAMES).format(a=a, b=b, c=c)
        out[text[0].upper() + text[1:]] = None
        if len(out) == n:
            return list(out)
    raise InputError(f"n={n}: could not make that many distinct texts from {len(words)} words.")


# ---------------------------------------------------------------------------------------------------------
# Reviews signed by a shortcut name (circuitlab.concepts.debugging)
# ---------------------------------------------------------------------------------------------------------

#: the spurious name, and the names that sign every other review
SHORTCUT = "Carl"
NAMES = ["Anna", "Mark", "Paul", "Maria", "John", "Lisa", "Peter", "David", "Sarah", "Emma", "James", "Laura"]
#: how a review is signed
SIGNATURE = " Posted by {name}."
#: the training correlation and the test distributions: in distribution, correlation removed, reversed
TRAIN_CORRELATION = 0.95
DISTRIBUTIONS = {"in distribution": 0.95, "no correlation": 0.5, "reversed": 0.05}



@dataclass(frozen=True)
class Example:
    """A signed review: its text, its label (1 positive, 0 negative), whether the shortcut signs it, and the
    text before the blank and the signature's name (the shortcut's tokens are those of ``" " + name``)."""

    text: str
    label: int
    shortcut: bool
    prefix: str
    name: str = SHORTCUT


def shortcut_reviews(n: int = 100, correlation: float = TRAIN_CORRELATION, *, shortcut: str = SHORTCUT,
                     names: Sequence[str] = NAMES, split: str = "train", seed: int = 0) -> list[Example]:
    """``n`` reviews per label (:func:`reviews`), each signed by a name: the shortcut
    signs ``round(correlation * n)`` of the positive reviews and ``round((1 - correlation) * n)`` of the negative
    ones (chosen at random, seeded), another name from ``names`` the rest. Shuffled."""
    seed = check_seed(seed)
    check_number(correlation, "correlation", low=0, high=1,
                 what="a number in [0, 1] (the fraction of positive reviews the shortcut signs; 0.95 to train, 0.5 "
                      "removes the correlation, 0.05 reverses it)")
    names = check_texts(names, "names", item="name")
    if not isinstance(shortcut, str) or not shortcut.strip() or shortcut in names:
        raise InputError(f"shortcut={shorten(shortcut)} must be a name (a word) not in names={shorten(list(names))}.")
    rng = _random.Random(f"shortcut/{seed}/{correlation}")
    data = reviews(n, split, seed=seed)
    out = []
    for label in (1, 0):
        texts = [t for t, l in data if l == label]
        k = round((correlation if label == 1 else 1 - correlation) * len(texts))
        marked = set(rng.sample(range(len(texts)), k))
        for i, t in enumerate(texts):
            name = shortcut if i in marked else rng.choice(list(names))
            prefix = t + SIGNATURE.split(" {name}")[0]
            out.append(Example(prefix + " " + name + SIGNATURE.split("{name}")[1], label, i in marked, prefix, name))
    rng.shuffle(out)
    return out


def name_positions(model, example: Example) -> list[int]:
    """The token positions of the signature's name in ``example`` as the model tokenizes it (BOS counted where the
    model prepends one)."""
    start = model.to_tokens(example.prefix).shape[1]
    end = model.to_tokens(example.prefix + " " + example.name).shape[1]
    return list(range(start, end))


def shortcut_positions(model, example: Example) -> list[int]:
    """The token positions of the shortcut name in ``example``; empty where another name signs it."""
    return name_positions(model, example) if example.shortcut else []


__all__ = ["POSITIVE", "NEGATIVE", "NEUTRAL", "ANIMALS", "NOUNS", "FRAMES", "RANDOM_WORDS", "reviews", "concept_texts",
           "random_texts", "SHORTCUT", "NAMES", "SIGNATURE", "TRAIN_CORRELATION", "DISTRIBUTIONS", "Example",
           "shortcut_reviews", "name_positions", "shortcut_positions"]
