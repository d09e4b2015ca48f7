"""Minimal pairs: does a language model prefer the grammatical sentence of a pair? (parameter-free probing)

A minimal pair is two sentences that differ in one place, one grammatical and one not ("The dogs *are* hungry." /
"The dogs *is* hungry."). A decoder "knows" the phenomenon when it gives the good sentence the higher
probability (Warstadt et al. 2020, BLiMP); no probe is trained, so nothing is learned from the labels. Two ways to
score a pair:

- ``method="sentence"``: the whole sentence's log-probability, the sum of its tokens' log-probabilities (each
  token given those before it; with a BOS token the first word is scored too);
- ``method="prefix"`` (BLiMP's *one-prefix* method): the log-probability of the critical word alone after the
  prefix the two sentences share ("The dogs" -> " are" vs " is"). Pairs without a prefix are skipped and counted.

Accuracy per phenomenon comes back as a :class:`PairScores` (a :class:`~circuitlab.results.Result` over the axis
``"phenomenon"``, with every pair's two log-probabilities). :func:`read_blimp` reads BLiMP's JSONL files, so users
can bring BLiMP; :func:`template_pairs` generates pairs from small grammars written for circuitlab (subject-verb
agreement, agreement across a prepositional phrase and across an object relative clause, reflexive anaphor
agreement, determiner-noun agreement, negative-polarity *ever*), for tests and demos:

    import circuitlab
    from circuitlab.probing import score_pairs, template_pairs

    model = circuitlab.load_model("gemma-3-270m")
    res = score_pairs(model, template_pairs())
    print(res.to_dataframe())

Scoring is batched: token sequences are grouped by length (no padding), cut into chunks under ``max_memory`` and
each sequence's log-probabilities are summed in float64.
"""

from __future__ import annotations

import itertools
import json
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import torch
from jaxtyping import Float
from torch import Tensor

from circuitlab.core import (DEFAULT_MAX_MEMORY, ModelLike, as_model, check_finite, check_max_memory, model_name,
                             progress_bar, row_bytes, row_chunks, to_tokens)
from circuitlab.errors import InputError
from circuitlab.results import Result

METHODS = ("sentence", "prefix")


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
                raise InputError(f"MinimalPair.{name} must be non-empty text; got {value!r}.")
        given = [x is not None for x in (self.prefix, self.word_good, self.word_bad)]
        if any(given) and not all(given):
            raise InputError(f"MinimalPair {self.good!r}: give prefix, word_good and word_bad together (or none of "
                             "them) for the one-prefix method.")

    @property
    def has_prefix(self) -> bool:
        return self.prefix is not None and bool(self.word_good) and bool(self.word_bad)


@dataclass(repr=False)
class PairScores(Result):
    """Accuracy per phenomenon (``values``, axis ``"phenomenon"``) plus every scored pair's log-probabilities.

    ``good[i]`` and ``bad[i]`` are pair ``i``'s log-probabilities (natural log; whole sentence or critical word, as
    ``meta["method"]`` says); ``phenomena[i]`` is its phenomenon. A pair counts as correct when ``good > bad``.
    ``meta`` also holds ``n`` (pairs per phenomenon), ``overall`` (accuracy over all scored pairs) and ``skipped``
    (pairs without a one-prefix split, for ``method="prefix"``).
    """

    good: Optional[Tensor] = None
    bad: Optional[Tensor] = None
    phenomena: list = field(default_factory=list)

    @property
    def correct(self) -> Tensor:
        return self.good > self.bad


# ---------------------------------------------------------------------------------------------------------
# Log-probabilities of token sequences
# ---------------------------------------------------------------------------------------------------------

def sequence_logprob(model: ModelLike, rows: Sequence[Tensor], starts: Sequence[int], *,
                     max_memory: int = DEFAULT_MAX_MEMORY, progress: bool = False) -> Float[Tensor, "n"]:
    """For each 1-D token row, the summed log-probability of its tokens from position ``starts[i]`` on (each given
    all tokens before it). ``starts[i]`` must be at least 1: the first token has no context to be scored from.

    Rows are grouped by length (no padding) and run in chunks under ``max_memory``. Returns float64.
    """
    model = as_model(model)
    max_memory = check_max_memory(max_memory)
    if len(rows) != len(starts):
        raise InputError(f"sequence_logprob got {len(rows)} token rows but {len(starts)} starts; give one per row.")
    out = torch.zeros(len(rows), dtype=torch.float64)
    groups: dict[int, list[int]] = {}
    for i, (row, start) in enumerate(zip(rows, starts)):
        if not 1 <= int(start) < len(row):
            raise InputError(f"row {i} has {len(row)} tokens and start={start}: the scored part must start at 1 or "
                             "later (the first token has no context) and hold at least one token.")
        groups.setdefault(len(row), []).append(i)
    n_vocab = model.cfg.d_vocab_out  # full logits, then their float64 log-softmax: counted three times over
    jobs = [(length, idx[s]) for length, idx in sorted(groups.items())
            for s in row_chunks(len(idx), row_bytes(model, length, logits=3 * n_vocab), max_memory)]
    with torch.inference_mode():
        for length, idx in progress_bar(jobs, progress=progress, desc="log-probabilities", unit="batch"):
            tokens = torch.stack([rows[i] for i in idx]).to(model.cfg.device)
            logits = model(tokens)
            check_finite(model, tokens, "the logits", logits)
            logp = logits.double().log_softmax(-1)[:, :-1]
            tok_lp = logp.gather(-1, tokens[:, 1:, None])[..., 0]                      # [b, length - 1]
            first = torch.tensor([int(starts[i]) - 1 for i in idx], device=tok_lp.device)
            keep = torch.arange(length - 1, device=tok_lp.device)[None, :] >= first[:, None]
            out[torch.tensor(idx)] = (tok_lp * keep).sum(-1).cpu()
    return out


def sentence_logprob(model: ModelLike, sentences: Sequence[str], *, prepend_bos: Optional[bool] = None,
                     max_memory: int = DEFAULT_MAX_MEMORY, progress: bool = False) -> Float[Tensor, "n"]:
    """Each sentence's log-probability: the sum of its tokens' log-probabilities (natural log, float64).

    With a BOS token (the model's default) every token of the sentence is scored; without one the first token
    is not (it has no context).
    """
    model = as_model(model)
    if isinstance(sentences, str):
        sentences = [sentences]
    for i, s in enumerate(sentences):
        if not isinstance(s, str) or not s.strip():
            raise InputError(f"sentence {i} is {s!r}; every sentence must be non-empty text.")
    rows = [to_tokens(model, s, prepend_bos=prepend_bos)[0] for s in sentences]
    bos = prepend_bos if prepend_bos is not None else model.cfg.default_prepend_bos
    for s, r in zip(sentences, rows):
        if len(r) < 2:
            raise InputError(f"the sentence {s!r} is one token{' with BOS' if bos else ''}: nothing to score. Give "
                             "a longer sentence, or prepend_bos=True.")
    return sequence_logprob(model, rows, [1] * len(rows), max_memory=max_memory, progress=progress)


def _continuation_row(model, prefix: str, word: str, prepend_bos: Optional[bool]) -> tuple[Tensor, int]:
    """Tokens of ``prefix + " " + word`` and the position where ``word``'s tokens start."""
    if not prefix.strip():
        return to_tokens(model, word.lstrip(), prepend_bos=prepend_bos)[0], 1
    prefix = prefix.rstrip()  # a trailing space would become a token of its own in BPE vocabularies
    sep = "" if word[:1].isspace() else " "
    head = to_tokens(model, prefix, prepend_bos=prepend_bos)[0]
    full = to_tokens(model, prefix + sep + word, prepend_bos=prepend_bos)[0]
    if len(full) > len(head) and torch.equal(full[:len(head)], head):
        return full, len(head)
    # the tokenizer merged across the boundary: score the word's own tokens after the prefix's
    tail = to_tokens(model, sep + word, prepend_bos=False)[0]
    return torch.cat([head, tail]), len(head)


def continuation_logprob(model: ModelLike, prefixes: Sequence[str], words: Sequence[str], *,
                         prepend_bos: Optional[bool] = None, max_memory: int = DEFAULT_MAX_MEMORY,
                         progress: bool = False) -> Float[Tensor, "n"]:
    """The log-probability of ``words[i]`` (all its tokens) right after ``prefixes[i]``; a space is put between
    them (a prefix's trailing whitespace is dropped first). An empty prefix scores the word as the start of a
    text (after BOS)."""
    model = as_model(model)
    if len(prefixes) != len(words):
        raise InputError(f"continuation_logprob got {len(prefixes)} prefixes but {len(words)} words; give one each.")
    rows, starts = [], []
    for p, w in zip(prefixes, words):
        if not isinstance(w, str) or not w.strip():
            raise InputError(f"the word after prefix {p!r} is {w!r}; give a non-empty word.")
        row, start = _continuation_row(model, p, w, prepend_bos)
        rows.append(row)
        starts.append(start)
    return sequence_logprob(model, rows, starts, max_memory=max_memory, progress=progress)


# ---------------------------------------------------------------------------------------------------------
# Accuracy per phenomenon
# ---------------------------------------------------------------------------------------------------------

def score_pairs(model: ModelLike, pairs: Iterable[MinimalPair], method: str = "sentence", *,
                prepend_bos: Optional[bool] = None, max_memory: int = DEFAULT_MAX_MEMORY,
                progress: bool = False) -> PairScores:
    """Accuracy on minimal pairs per phenomenon: the share of pairs whose good sentence (``method="sentence"``) or
    good critical word (``method="prefix"``) gets the higher log-probability. See the module docstring."""
    model = as_model(model)
    pairs = list(pairs)
    if method not in METHODS:
        raise InputError(f"method must be one of {METHODS}; got {method!r}.")
    if not pairs:
        raise InputError("score_pairs got no pairs; give MinimalPair objects (e.g. template_pairs() or read_blimp).")
    for i, p in enumerate(pairs):
        if not isinstance(p, MinimalPair):
            raise InputError(f"pair {i} is a {type(p).__name__}; give MinimalPair objects.")
    skipped = 0
    if method == "prefix":
        used = [p for p in pairs if p.has_prefix]
        skipped = len(pairs) - len(used)
        if not used:
            raise InputError(f"none of the {len(pairs)} pairs has a one-prefix split (prefix, word_good, word_bad); "
                             "use method='sentence'.")
        lp = continuation_logprob(model, [p.prefix for p in used] * 2,
                                  [p.word_good for p in used] + [p.word_bad for p in used], prepend_bos=prepend_bos,
                                  max_memory=max_memory, progress=progress)
    else:
        used = pairs
        lp = sentence_logprob(model, [p.good for p in used] + [p.bad for p in used], prepend_bos=prepend_bos,
                              max_memory=max_memory, progress=progress)
    good, bad = lp[:len(used)], lp[len(used):]
    names = list(dict.fromkeys(p.phenomenon for p in used))
    phen = [p.phenomenon for p in used]
    correct = good > bad
    acc = torch.tensor([float(correct[[i for i, q in enumerate(phen) if q == name]].double().mean())
                        for name in names])
    counts = Counter(phen)
    return PairScores(values=acc, axes=("phenomenon",), labels={"phenomenon": names},
                      title=f"Minimal-pair accuracy ({method})", metric=f"accuracy: P(good) > P(bad), {method} method",
                      model=model_name(model), task=f"{len(used)} minimal pairs",
                      meta={"method": method, "n": [counts[n] for n in names],
                            "overall": float(correct.double().mean()), "skipped": skipped},
                      good=good, bad=bad, phenomena=phen)


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
            raise InputError(f"read_blimp: no file at {str(path)!r}; give the path of a BLiMP .jsonl file.")
        lines: Iterable[str] = path.read_text(encoding="utf-8").splitlines()
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
        pairs.append(MinimalPair(row["sentence_good"], row["sentence_bad"], phenomenon or row["UID"], *split,
                                 uid=str(row.get("pairID", n))))
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
    names = list(PHENOMENA) if phenomena is None else [phenomena] if isinstance(phenomena, str) else list(phenomena)
    unknown = [p for p in names if p not in _GRAMMARS]
    if unknown or not names:
        raise InputError(f"unknown phenomena {unknown or names}; choose from {list(PHENOMENA)}.")
    if n_per is not None and (isinstance(n_per, bool) or not isinstance(n_per, int) or n_per < 1):
        raise InputError(f"n_per must be a positive whole number or None; got {n_per!r}.")
    out = []
    for name in names:
        pairs = _GRAMMARS[name]()
        if n_per is not None and n_per < len(pairs):
            pairs = random.Random(f"{seed}:{name}").sample(pairs, n_per)
        out.extend(pairs)
    return out
