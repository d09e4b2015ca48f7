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

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from circuitlab.core import (DEFAULT_MAX_MEMORY, ModelLike, as_model, check_finite, check_max_memory, model_name,
                             progress_bar, row_bytes, row_chunks, shorten, to_tokens)
from circuitlab.errors import InputError
from circuitlab.results import Result
from circuitlab.tasks.minimal_pairs import PHENOMENA, MinimalPair, read_blimp, template_pairs

METHODS = ("sentence", "prefix")


@dataclass(repr=False)
class PairScores(Result):
    """Accuracy per phenomenon (``values``, axis ``"phenomenon"``) plus every scored pair's log-probabilities.

    ``good[i]`` and ``bad[i]`` are pair ``i``'s log-probabilities (natural log; whole sentence or critical word, as
    ``meta["method"]`` says); ``phenomena[i]`` is its phenomenon. A pair counts as correct when ``good > bad``.
    ``meta`` also holds ``n`` (pairs per phenomenon), ``overall`` (accuracy over all scored pairs) and ``skipped``
    (pairs without a one-prefix split, for ``method="prefix"``).
    """

    good: Optional[Float[Tensor, " pair"]] = None
    bad: Optional[Float[Tensor, " pair"]] = None
    phenomena: list = field(default_factory=list)

    @property
    def correct(self) -> Bool[Tensor, " pair"]:
        return self.good > self.bad


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
                     max_memory: int = DEFAULT_MAX_MEMORY, progress: bool = False) -> Float[Tensor, " n"]:
    """Each sentence's log-probability: the sum of its tokens' log-probabilities (natural log, float64).

    With a BOS token (the model's default) every token of the sentence is scored; without one the first token
    is not (it has no context).
    """
    model = as_model(model)
    if isinstance(sentences, str):
        sentences = [sentences]
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
    pairs = list(pairs)
    if method not in METHODS:
        raise InputError(f"method must be one of {METHODS}; got {shorten(method)}.")
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


__all__ = ["METHODS", "PHENOMENA", "MinimalPair", "PairScores", "continuation_logprob", "read_blimp",
           "score_pairs", "sentence_logprob", "sequence_logprob", "template_pairs"]
