"""Pronouns with known antecedents, written for circuitlab: the data of coreference by representation similarity
(:mod:`circuitlab.probing.coreference`, Sorodoc et al. 2020).

Each :class:`CorefItem` is one sentence (its words), the index of a pronoun, the indices of the candidate
antecedents that precede it (two per sentence), and which candidate is the gold antecedent. Four kinds, each built
so that the gold is the first candidate in half the items and the second in the other half (so neither the
first-candidate nor the nearest-candidate baseline can score above 50% by position alone):

- ``gender``: two people of different gender ("Anna thanked Peter because he had helped her ."): the pronoun's
  gender decides;
- ``number``: a singular and a plural noun phrase ("The teacher praised the students because they worked hard ."):
  the pronoun's number decides;
- ``role``: as ``gender``, with the pronoun as an object instead of a subject ("Anna waited for Peter until the
  driver called him .");
- ``winograd``: Winograd-style pairs written for circuitlab, both candidates of the same gender and number, the
  antecedent decided by one word that differs between the two sentences of a pair ("The trophy did not fit in the
  suitcase because it was too big / small ."): world knowledge, not agreement, decides.

Names and nouns are common English words (one token each for most tokenizers).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from circuitlab.core import check_count, check_seed
from circuitlab.errors import InputError

KINDS = ("gender", "number", "role", "winograd")

MALE = ("Peter", "John", "David", "Mark", "Paul", "James", "Tom", "Daniel", "George", "Robert")
FEMALE = ("Anna", "Mary", "Sarah", "Emma", "Laura", "Alice", "Kate", "Julia", "Helen", "Susan")

#: gender / role frames: {a} and {b} are the two people, {p} the pronoun; the pronoun is a subject (gender) or an
#: object (role)
GENDER_FRAMES = ("{a} thanked {b} because {p} had helped with the move .",
                 "{a} called {b} because {p} needed some advice .",
                 "{a} met {b} at the station and {p} looked tired .",
                 "{a} visited {b} after {p} came back from the trip .")
ROLE_FRAMES = ("{a} waited for {b} until the driver called {p} .",
               "{a} wrote to {b} before the manager hired {p} .",
               "{a} sat next to {b} when the teacher praised {p} .")
SUBJECT = {"male": "he", "female": "she"}
OBJECT = {"male": "him", "female": "her"}

#: number frames: a singular and a plural noun phrase (things); {p} is "it" or "they"
NUMBER_NOUNS = (("dog", "cats"), ("box", "bags"), ("car", "trucks"), ("cup", "plates"), ("book", "papers"))
NUMBER_FRAMES = ("The {a} was next to the {b} because {p} had been moved .",
                 "We saw the {a} near the {b} and {p} looked old .")

#: Winograd-style pairs (sentence words, pronoun, candidate words, gold per sentence), written for circuitlab
WINOGRAD = (
    (("The trophy did not fit in the suitcase because it was too big .",
      "The trophy did not fit in the suitcase because it was too small ."), "it", ("trophy", "suitcase"), (0, 1)),
    (("The ball broke the window because it was made of steel .",
      "The ball broke the window because it was made of glass ."), "it", ("ball", "window"), (0, 1)),
    (("The cup fell on the table and it broke into pieces .",
      "The table held the cup and it broke into pieces ."), "it", ("cup", "table"), (0, 1)),
    (("The fish ate the worm because it was hungry .",
      "The fish ate the worm because it was tasty ."), "it", ("fish", "worm"), (0, 1)),
    (("The man lifted the boy because he was strong .",
      "The man lifted the boy because he was light ."), "he", ("man", "boy"), (0, 1)),
    (("The lawyer asked the witness a question but he was unable to answer it .",
      "The lawyer asked the witness a question but he was unable to repeat it ."), "he", ("lawyer", "witness"),
     (1, 0)),
    (("The cat chased the mouse until it was tired .",
      "The cat chased the mouse until it was caught ."), "it", ("cat", "mouse"), (0, 1)),
    (("The bottle did not fit in the bag because it was too wide .",
      "The bottle did not fit in the bag because it was too narrow ."), "it", ("bottle", "bag"), (0, 1)),
)


@dataclass(frozen=True)
class CorefItem:
    """One sentence with a pronoun and two candidate antecedents before it (word indices), and the gold one
    (an index into ``candidates``)."""

    words: tuple[str, ...]
    pronoun: int
    candidates: tuple[int, ...]
    gold: int
    kind: str

    def __post_init__(self) -> None:
        if not 0 <= self.gold < len(self.candidates) or any(not 0 <= c < self.pronoun for c in self.candidates):
            raise InputError(f"coreference item {' '.join(self.words)!r}: candidates must precede the pronoun and "
                             "gold must index one of them.")

    @property
    def text(self) -> str:
        return " ".join(self.words)


def _item(text: str, pronoun: str, candidates: tuple[str, str], gold: int, kind: str) -> CorefItem:
    words = tuple(text.split())
    cand = tuple(words.index(c) for c in candidates)
    p = max(i for i, w in enumerate(words) if w == pronoun and i > max(cand))
    return CorefItem(words, p, cand, gold, kind)


def coreference_items(n_per: int = 40, seed: int = 0, kinds=None) -> list[CorefItem]:
    """``n_per`` items of each of ``kinds`` (default :data:`KINDS`; the Winograd pairs: all 16 sentences), drawn
    with ``seed``; the gold is the first candidate in half of each kind's items and the second in the other half."""
    n_per, seed = check_count(n_per, "n_per"), check_seed(seed)
    kinds = KINDS if kinds is None else kinds
    if isinstance(kinds, str) or any(k not in KINDS for k in kinds) or not kinds:
        raise InputError(f"kinds={kinds!r}: give kinds from {KINDS}.")
    rng = random.Random(seed)
    out: list[CorefItem] = []
    for kind in kinds:
        items = []
        if kind in ("gender", "role"):
            frames, pron = (GENDER_FRAMES, SUBJECT) if kind == "gender" else (ROLE_FRAMES, OBJECT)
            for i in range(n_per):
                m, f, frame = rng.choice(MALE), rng.choice(FEMALE), rng.choice(frames)
                a, b = ((m, "male"), (f, "female")) if i % 2 else ((f, "female"), (m, "male"))
                gold = (i // 2) % 2  # gold first and second alternate, across both orders
                text = frame.format(a=a[0], b=b[0], p=pron[(a, b)[gold][1]])
                items.append(_item(text, pron[(a, b)[gold][1]], (a[0], b[0]), gold, kind))
        elif kind == "number":
            for i in range(n_per):
                (sing, plur), frame = rng.choice(NUMBER_NOUNS), rng.choice(NUMBER_FRAMES)
                a, b = (sing, plur) if i % 2 else (plur, sing)
                gold = (i // 2) % 2
                p = "it" if (a, b)[gold] == sing else "they"
                text = frame.format(a=a, b=b, p=p).replace("they had been", "they have been")
                items.append(_item(text, p, (a, b), gold, kind))
        else:
            for texts, p, cands, golds in WINOGRAD:
                for text, gold in zip(texts, golds):
                    items.append(_item(text, p, cands, gold, kind))
        out += items
    return out


__all__ = ["CorefItem", "KINDS", "coreference_items"]
