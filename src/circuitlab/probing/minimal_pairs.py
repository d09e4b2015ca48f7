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

The pairs and their readers live in :mod:`circuitlab.tasks.minimal_pairs` (re-exported here). Scoring is batched:
token sequences are grouped by length (no padding), cut into chunks under ``max_memory`` and each sequence's
log-probabilities are summed in float64.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from circuitlab.core import (DEFAULT_MAX_MEMORY, ModelLike, as_model, check_finite, check_max_memory, check_texts,
                             model_name, progress_bar, row_bytes, row_chunks, shorten, to_tokens, unresolved)
from circuitlab.errors import InputError
from circuitlab.results import Result
from circuitlab.tasks.minimal_pairs import PHENOMENA, MinimalPair, read_blimp, template_pairs

METHODS = ("sentence", "prefix")


@dataclass(repr=False)
class PairScores(Result):
    """Accuracy per phenomenon (``values``, axis ``"phenomenon"``) plus every scored pair's log-probabilities.

    ``good[i]`` and ``bad[i]`` are pair ``i``'s log-probabilities (natural log; whole sentence or critical word, as
    ``meta["method"]`` says); ``phenomena[i]`` is its phenomenon. A pair counts as correct when ``good > bad`` by
    more than the resolution of the model's dtype (:func:`circuitlab.core.resolution`); a pair whose two
    log-probabilities are closer than that is **undefined** (``decided[i]`` False: which is higher is float noise)
    and left out of the accuracies, with a warning. ``meta`` also holds ``n`` (pairs per phenomenon), ``overall``
    (accuracy over all decided pairs), ``undefined`` (pairs per phenomenon left out as ties) and ``skipped`` (pairs
    without a one-prefix split, for ``method="prefix"``).
    """

    good: Optional[Float[Tensor, " pair"]] = None
    bad: Optional[Float[Tensor, " pair"]] = None
    phenomena: list = field(default_factory=list)
    decided: Optional[Bool[Tensor, " pair"]] = None

    @property
    def correct(self) -> Bool[Tensor, " pair"]:
        """True where the good one is higher by more than the resolution (a tie within it is not correct)."""
        decided = torch.ones_like(self.good, dtype=torch.bool) if self.decided is None else self.decided
        return (self.good > self.bad) & decided


# ---------------------------------------------------------------------------------------------------------
# Log-probabilities of token sequences
# ---------------------------------------------------------------------------------------------------------

def sequence_logprob(model: ModelLike, rows: Sequence[Int[Tensor, " pos"]], starts: Sequence[int], *,
                     max_memory: int = DEFAULT_MAX_MEMORY, progress: bool = False) -> Float[Tensor, " n"]:
    """For each 1-D token row, the summed log-probability of its tokens from position ``starts[i]`` on (each given
    all tokens before it). ``starts[i]`` must be at least 1: the first token has no context to be scored from.

    Rows are grouped by length (no padding) and run in chunks under ``max_memory``. Returns float64.
    """
    model = as_model(model)
    max_memory = check_max_memory(max_memory)
    rows, starts = _check_rows(model, rows), _check_list(starts, "starts", "start positions (ints)")
    if len(rows) != len(starts):
        raise InputError(f"sequence_logprob got {len(rows)} token rows but {len(starts)} starts; give one per row.")
    out = torch.zeros(len(rows), dtype=torch.float64)
    groups: dict[int, list[int]] = {}
    for i, (row, start) in enumerate(zip(rows, starts)):
        if isinstance(start, bool) or not isinstance(start, int) or not 1 <= start < len(row):
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


def _check_list(value, what: str, items: str) -> list:
    """``value`` as a non-empty list (a list, tuple or other sequence; not a string, tensor or single value)."""
    if isinstance(value, (str, bytes, dict, Tensor)) or not isinstance(value, Sequence):
        raise InputError(f"{what} must be a list of {items}; got {shorten(value)}.")
    if not value:
        raise InputError(f"{what} is empty; give at least one.")
    return list(value)


def _check_rows(model, rows) -> list[Tensor]:
    """Token rows: 1-D integer tensors of ids in the model's vocabulary."""
    rows = _check_list(rows, "rows", "1-D token id tensors")
    for i, r in enumerate(rows):
        if not isinstance(r, Tensor) or r.ndim != 1 or r.is_floating_point() or r.dtype == torch.bool:
            raise InputError(f"rows[{i}] must be a 1-D tensor of token ids; got {shorten(r)}.")
        if r.numel() and not (0 <= int(r.min()) and int(r.max()) < model.cfg.d_vocab):
            raise InputError(f"rows[{i}] holds token ids outside the vocabulary [0, {model.cfg.d_vocab}).")
    return rows


def sentence_logprob(model: ModelLike, sentences: Sequence[str], *, prepend_bos: Optional[bool] = None,
                     max_memory: int = DEFAULT_MAX_MEMORY, progress: bool = False) -> Float[Tensor, " n"]:
    """Each sentence's log-probability: the sum of its tokens' log-probabilities (natural log, float64).

    With a BOS token (the model's default) every token of the sentence is scored; without one the first token
    is not (it has no context).
    """
    model = as_model(model)
    sentences = check_texts(sentences, "sentences", item="sentence")
    for i, s in enumerate(sentences):
        if not isinstance(s, str) or not s.strip():
            raise InputError(f"sentence {i} is {shorten(s)}; every sentence must be non-empty text.")
    rows = [to_tokens(model, s, prepend_bos=prepend_bos)[0] for s in sentences]
    bos = prepend_bos if prepend_bos is not None else model.cfg.default_prepend_bos
    for s, r in zip(sentences, rows):
        if len(r) < 2:
            raise InputError(f"the sentence {shorten(s)} is one token{' with BOS' if bos else ''}: nothing to score. "
                             "Give a longer sentence, or prepend_bos=True.")
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
                         progress: bool = False) -> Float[Tensor, " n"]:
    """The log-probability of ``words[i]`` (all its tokens) right after ``prefixes[i]``; a space is put between
    them (a prefix's trailing whitespace is dropped first). An empty prefix scores the word as the start of a
    text (after BOS)."""
    model = as_model(model)
    prefixes = check_texts(prefixes, "prefixes", item="prefix text", allow_empty=True)
    words = check_texts(words, "words", item="word", allow_empty=True)
    if len(prefixes) != len(words):
        raise InputError(f"continuation_logprob got {len(prefixes)} prefixes but {len(words)} words; give one each.")
    rows, starts = [], []
    for p, w in zip(prefixes, words):
        if not isinstance(w, str) or not w.strip():
            raise InputError(f"the word after prefix {shorten(p)} is {shorten(w)}; give a non-empty word.")
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
    if isinstance(pairs, (str, bytes, MinimalPair)) or not isinstance(pairs, Iterable):
        raise InputError(f"pairs must be a list of MinimalPair objects (e.g. template_pairs() or read_blimp(...)); "
                         f"got {shorten(pairs)}.")
    pairs = list(pairs)
    if method not in METHODS:
        raise InputError(f"method must be one of {METHODS}; got {shorten(method)}.")
    if not pairs:
        raise InputError("score_pairs got no pairs; give MinimalPair objects (e.g. template_pairs() or read_blimp).")
    for i, p in enumerate(pairs):
        if not isinstance(p, MinimalPair):
            raise InputError(f"pair {i} is a {type(p).__name__}; give MinimalPair objects.")
    skipped = 0
    _check_pairs_differ(model, pairs, method, prepend_bos)
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
    # a difference within the resolution of the model's dtype decides nothing: that pair is undefined, not scored
    decided = ~unresolved(good, bad, model.cfg.dtype)
    correct = (good > bad) & decided
    members = {name: torch.tensor([q == name for q in phen]) for name in names}
    acc = torch.tensor([float(correct[members[n] & decided].double().mean()) if bool((members[n] & decided).any())
                        else float("nan") for n in names])
    undefined = [int((members[n] & ~decided).sum()) for n in names]
    if sum(undefined):
        warnings.warn(f"score_pairs: {sum(undefined)} of {len(used)} pairs have log-probabilities within float noise "
                      f"of each other (their difference is below the resolution of {model.cfg.dtype}); they are left "
                      "out of the accuracies as undefined (meta['undefined'] per phenomenon).", stacklevel=2)
    overall = float(correct[decided].double().mean()) if bool(decided.any()) else float("nan")
    counts = Counter(phen)
    return PairScores(values=acc, axes=("phenomenon",), labels={"phenomenon": names},
                      title=f"Minimal-pair accuracy ({method})", metric=f"accuracy: P(good) > P(bad), {method} method",
                      model=model_name(model), task=f"{len(used)} minimal pairs",
                      meta={"method": method, "n": [counts[n] for n in names], "overall": overall,
                            "undefined": undefined, "skipped": skipped},
                      good=good, bad=bad, phenomena=phen, decided=decided)


def _check_pairs_differ(model, pairs: Sequence[MinimalPair], method: str, prepend_bos: Optional[bool]) -> None:
    """Refuse a pair whose two sides are the same token sequence (identical text, or texts the tokenizer reads
    alike): it is not a minimal pair, and which side scores higher would be float noise."""
    for i, p in enumerate(pairs):
        if method == "prefix":
            if not p.has_prefix:
                continue
            sides = [_continuation_row(model, p.prefix, w, prepend_bos)[0] for w in (p.word_good, p.word_bad)]
            what, texts = "critical words", (p.word_good, p.word_bad)
        else:
            sides = [to_tokens(model, t, prepend_bos=prepend_bos)[0] for t in (p.good, p.bad)]
            what, texts = "sentences", (p.good, p.bad)
        if sides[0].shape == sides[1].shape and torch.equal(sides[0], sides[1]):
            how = "are the same text" if texts[0] == texts[1] else "tokenise identically for this model"
            raise InputError(f"pair {i}{f' ({p.uid})' if p.uid else ''} is not a minimal pair: its two {what} "
                             f"{how} ({shorten(texts[0], 60)} / {shorten(texts[1], 60)}), so neither can score higher. "
                             "Remove it, or give sides that differ.")


__all__ = ["METHODS", "PHENOMENA", "MinimalPair", "PairScores", "continuation_logprob", "read_blimp",
           "score_pairs", "sentence_logprob", "sequence_logprob", "template_pairs"]
