"""Reviews with a neutral aside: a sentiment review sentence and a sentence of neutral detail, in either order.

The few-shot task of :mod:`circuitlab.concepts.rationales` (explanations as rationales, AMPLIFY): the label
(1 positive, 0 negative) rests on one adjective of :func:`circuitlab.tasks.reviews.reviews`, and the aside (when,
with whom, what the place looked like) carries none, so a rationale that names the words that matter has something
to point at. Written for circuitlab: the asides are plain sentences made up here; the review sentences and their
train / test split of adjectives are :func:`~circuitlab.tasks.reviews.reviews`' (held-out reviews share no adjective
with the training ones).

    mixed_reviews(2, "test")   # [("We went there on a Tuesday. The meal was dreadful.", 0), ...]
"""

from __future__ import annotations

import random as _random

from circuitlab.core import check_seed
from circuitlab.tasks.reviews import reviews

#: neutral asides, written for circuitlab: no sentiment, no adjective of the review lists
ASIDES = ["We went there on a Tuesday.", "My cousin came along with us.", "It was raining that afternoon.",
          "The door of the building was painted blue.", "We arrived at about seven in the evening.",
          "There were three of us in total.", "We took the train from the station.",
          "The place is near the old bridge.", "I had read about it in a letter.", "It lasted about two hours."]


def mixed_reviews(n: int = 20, split: str = "train", seed: int = 0) -> list[tuple[str, int]]:
    """``n`` reviews per label, ``(text, label)``: each review sentence of :func:`reviews` (``n``, ``split``,
    ``seed``) with an aside of :data:`ASIDES` before or after it (drawn with ``seed``), in :func:`reviews`' order."""
    seed = check_seed(seed)
    rng = _random.Random(f"mixed/{seed}")
    out = []
    for text, label in reviews(n, split, seed=seed):
        aside = rng.choice(ASIDES)
        out.append((f"{aside} {text}" if rng.random() < 0.5 else f"{text} {aside}", label))
    return out


__all__ = ["ASIDES", "mixed_reviews"]
