"""Minimal pairs: two sentences that differ in one place, one grammatical and one not (the data of BLiMP-style probing).

:class:`MinimalPair` is one pair; :func:`read_blimp` reads BLiMP's JSONL files (Warstadt et al. 2020), so users can
bring BLiMP; :func:`template_pairs` generates pairs from small grammars written for circuitlab (subject-verb
agreement, agreement across a prepositional phrase and across an object relative clause, reflexive anaphor
agreement, determiner-noun agreement, negative-polarity *ever*), for tests and demos. Scoring them is
:func:`circuitlab.probing.score_pairs` (:mod:`circuitlab.probing.minimal_pairs`).
"""

from __future__ import annotations

import itertools
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

from circuitlab.core import check_seed, read_text_file, shorten
from circuitlab.errors import InputError

@dataclass(frozen=True)
class MinimalPair:
    """One minimal pair: ``good`` and ``bad`` sentences, the ``phenomenon`` they test, and optionally the shared
    ``prefix`` and the two critical words that follow it (``word_good``, ``word_bad``; no leading space)."""

    good: str
    bad: str
    phenomenon: str
    prefix: Optional[str] = None
    word_good: Optional[str] = None
    word_bad: Optional[str] = None
    uid: str = ""

    def __post_init__(self) -> None:
        for name in ("good", "bad", "phenomenon"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise InputError(f"MinimalPair.{name} must be non-empty text; got {shorten(value)}.")
        given = [x is not None for x in (self.prefix, self.word_good, self.word_bad)]
        if any(given) and not all(given):
            raise InputError(f"MinimalPair {shorten(self.good)}: give prefix, word_good and word_bad together (or "
                             "none of them) for the one-prefix method.")
        # two identical sentences are not a pair: their log-probabilities tie, and which is "higher" is float noise
        if self.good.strip() == self.bad.strip():
            raise InputError(f"MinimalPair{' ' + self.uid if self.uid else ''}: good and bad are the same sentence "
                             f"({shorten(self.good, 60)}), not a minimal pair; give two sentences that differ.")

    @property
    def has_prefix(self) -> bool:
        return self.prefix is not None and bool(self.word_good) and bool(self.word_bad)



# ---------------------------------------------------------------------------------------------------------
# BLiMP's JSONL format
# ---------------------------------------------------------------------------------------------------------

def read_blimp(source: Union[str, Path, Iterable[str]], phenomenon: Optional[str] = None) -> list[MinimalPair]:
    """Minimal pairs from BLiMP's JSONL format: one JSON object per line with ``sentence_good``, ``sentence_bad``
    and ``UID`` (the phenomenon, e.g. ``"anaphor_gender_agreement"``), and for the one-prefix method
    ``one_prefix_prefix``, ``one_prefix_word_good`` and ``one_prefix_word_bad`` (used where all three are present
    and ``one_prefix_method`` is not false).

    ``source`` is a file path or an iterable of lines; ``phenomenon`` overrides ``UID``. Blank lines are skipped;
    a malformed line raises :class:`~circuitlab.errors.InputError` naming its number.
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise InputError(f"read_blimp: no file at {shorten(str(path), 300)}; give the path of a BLiMP .jsonl file.")
        lines: Iterable[str] = read_text_file(path, "BLiMP file").splitlines()
        where = path.name
    else:
        lines, where = source, "the input"
    pairs = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InputError(f"{where} line {n} is not valid JSON ({e.msg}); each line must be one BLiMP record "
                             "(a JSON object).") from None
        if not isinstance(row, dict):
            raise InputError(f"{where} line {n} is a JSON {type(row).__name__}, not an object; each line must be one "
                             "BLiMP record.")
        need = ["sentence_good", "sentence_bad"] + ([] if phenomenon else ["UID"])
        missing = [k for k in need if not isinstance(row.get(k), str) or not row[k].strip()]
        if missing:
            raise InputError(f"{where} line {n} lacks {', '.join(missing)} (or has it empty): a BLiMP record needs "
                             "sentence_good, sentence_bad and UID (or pass phenomenon=...).")
        keys = ("one_prefix_prefix", "one_prefix_word_good", "one_prefix_word_bad")
        split = [row.get(k) for k in keys]
        if row.get("one_prefix_method") is False or not all(isinstance(v, str) for v in split):
            split = [None, None, None]
        try:
            pairs.append(MinimalPair(row["sentence_good"], row["sentence_bad"], phenomenon or row["UID"], *split,
                                     uid=str(row.get("pairID", n))))
        except InputError as e:
            raise InputError(f"{where} line {n}: {e}") from None
    if not pairs:
        raise InputError(f"{where} holds no BLiMP records; give a JSONL file with one record per line.")
    return pairs


# ---------------------------------------------------------------------------------------------------------
# Template pairs, written for circuitlab
# ---------------------------------------------------------------------------------------------------------

_NOUNS = [("dog", "dogs"), ("cat", "cats"), ("teacher", "teachers"), ("girl", "girls"), ("boy", "boys"),
          ("doctor", "doctors"), ("farmer", "farmers"), ("student", "students"), ("child", "children"),
          ("bird", "birds")]
_ADJECTIVES = ["old", "young", "small", "happy", "tired"]
_VERBS = [("is", "are", "very tired"), ("was", "were", "in the garden"), ("has", "have", "a red ball"),
          ("likes", "like", "the new house"), ("sleeps", "sleep", "every night")]
_PLACES = [("tree", "trees"), ("house", "houses"), ("car", "cars"), ("window", "windows")]
_RC_VERBS = ["saw", "liked", "met", "found"]
_PEOPLE = [("man", "himself"), ("woman", "herself"), ("king", "himself"), ("queen", "herself"),
           ("father", "himself"), ("mother", "herself"), ("brother", "himself"), ("sister", "herself")]
_GROUPS = ["men", "women", "kings", "queens", "brothers", "sisters"]
_REFLEXIVE_VERBS = ["hurt", "saw", "praised", "blamed", "washed", "described"]
_SUBJECTS = ["The girl", "My brother", "The teacher", "Our neighbour"]
_SEEING = ["saw", "liked", "found", "bought"]
_THINGS = [("book", "books"), ("car", "cars"), ("chair", "chairs"), ("picture", "pictures"), ("box", "boxes"),
           ("shoe", "shoes")]
_EXPERIENCES = ["seen the sea", "been to the city", "read that book", "met the king", "eaten fish", "lost a game"]


def _agreement() -> list[MinimalPair]:
    out = []
    for (sg, pl), adj, (v_sg, v_pl, tail) in itertools.product(_NOUNS, _ADJECTIVES, _VERBS):
        for noun, good, bad in ((sg, v_sg, v_pl), (pl, v_pl, v_sg)):
            prefix = f"The {adj} {noun}"
            out.append(MinimalPair(f"{prefix} {good} {tail}.", f"{prefix} {bad} {tail}.", "subject_verb_agreement",
                                   prefix, good, bad))
    return out


def _attractor() -> list[MinimalPair]:
    out = []
    for (sg, pl), (p_sg, p_pl), (v_sg, v_pl, tail) in itertools.product(_NOUNS, _PLACES, _VERBS):
        for noun, place, good, bad in ((sg, p_pl, v_sg, v_pl), (pl, p_sg, v_pl, v_sg)):
            prefix = f"The {noun} near the {place}"
            out.append(MinimalPair(f"{prefix} {good} {tail}.", f"{prefix} {bad} {tail}.",
                                   "agreement_across_prepositional_phrase", prefix, good, bad))
    return out


def _relative_clause() -> list[MinimalPair]:
    out = []
    for (sg, pl), (o_sg, o_pl), seen, (v_sg, v_pl, tail) in itertools.product(_NOUNS, _NOUNS, _RC_VERBS, _VERBS[:3]):
        if sg == o_sg:
            continue
        for noun, other, good, bad in ((sg, o_pl, v_sg, v_pl), (pl, o_sg, v_pl, v_sg)):
            prefix = f"The {noun} that the {other} {seen}"
            out.append(MinimalPair(f"{prefix} {good} {tail}.", f"{prefix} {bad} {tail}.",
                                   "agreement_across_relative_clause", prefix, good, bad))
    return out


def _anaphor() -> list[MinimalPair]:
    out = []
    for (person, refl), verb in itertools.product(_PEOPLE, _REFLEXIVE_VERBS):
        wrong = "herself" if refl == "himself" else "himself"
        prefix = f"The {person} {verb}"
        out.append(MinimalPair(f"{prefix} {refl}.", f"{prefix} {wrong}.", "anaphor_agreement", prefix, refl, wrong))
    for group, verb in itertools.product(_GROUPS, _REFLEXIVE_VERBS):
        wrong = "herself" if group in ("women", "queens", "sisters") else "himself"
        prefix = f"The {group} {verb}"
        out.append(MinimalPair(f"{prefix} themselves.", f"{prefix} {wrong}.", "anaphor_agreement", prefix,
                               "themselves", wrong))
    return out


def _determiner() -> list[MinimalPair]:
    out = []
    for subject, verb, (sg, pl) in itertools.product(_SUBJECTS, _SEEING, _THINGS):
        for det, good, bad in (("this", sg, pl), ("that", sg, pl), ("these", pl, sg), ("those", pl, sg)):
            prefix = f"{subject} {verb} {det}"
            out.append(MinimalPair(f"{prefix} {good}.", f"{prefix} {bad}.", "determiner_noun_agreement", prefix,
                                   good, bad))
    return out


def _npi() -> list[MinimalPair]:
    out = []
    for (sg, _), experience in itertools.product(_NOUNS, _EXPERIENCES):
        prefix = f"The {sg} has"
        out.append(MinimalPair(f"{prefix} never {experience}.", f"{prefix} ever {experience}.", "npi_licensing",
                               prefix, "never", "ever"))
    return out


_GRAMMARS = {"subject_verb_agreement": _agreement, "agreement_across_prepositional_phrase": _attractor,
             "agreement_across_relative_clause": _relative_clause, "anaphor_agreement": _anaphor,
             "determiner_noun_agreement": _determiner, "npi_licensing": _npi}
#: the phenomena :func:`template_pairs` can generate
PHENOMENA = tuple(_GRAMMARS)


def template_pairs(phenomena: Optional[Sequence[str]] = None, n_per: Optional[int] = 40,
                   seed: int = 0) -> list[MinimalPair]:
    """Minimal pairs from small grammars written for circuitlab (not BLiMP's text), every pair with a one-prefix
    split. ``phenomena``: names from :data:`PHENOMENA` (default all); ``n_per``: pairs drawn per phenomenon
    (without replacement, by ``seed``; ``None`` for all of them).

    - ``subject_verb_agreement``: "The old dogs are very tired." / "The old dogs is very tired.";
    - ``agreement_across_prepositional_phrase``: "The dog near the trees has a red ball." / "... have ...";
    - ``agreement_across_relative_clause``: "The teacher that the boys saw was in the garden." / "... were ...";
    - ``anaphor_agreement``: "The queen praised herself." / "... himself."; "The men hurt themselves." / "... himself.";
    - ``determiner_noun_agreement``: "The girl bought these shoes." / "... these shoe.";
    - ``npi_licensing``: "The farmer has never seen the sea." / "The farmer has ever seen the sea.".
    """
    seed = check_seed(seed)
    names = list(PHENOMENA) if phenomena is None else [phenomena] if isinstance(phenomena, str) else list(phenomena)
    unknown = [p for p in names if p not in _GRAMMARS]
    if unknown or not names:
        raise InputError(f"unknown phenomena {unknown or names}; choose from {list(PHENOMENA)}.")
    if n_per is not None and (isinstance(n_per, bool) or not isinstance(n_per, int) or n_per < 1):
        raise InputError(f"n_per must be a positive whole number or None; got {shorten(n_per)}.")
    out = []
    for name in names:
        pairs = _GRAMMARS[name]()
        if n_per is not None and n_per < len(pairs):
            pairs = random.Random(f"{seed}:{name}").sample(pairs, n_per)
        out.extend(pairs)
    return out


__all__ = ["PHENOMENA", "MinimalPair", "read_blimp", "template_pairs"]
