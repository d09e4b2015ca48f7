"""Repeated random token sequences: the task on which induction heads show themselves.

A sequence is ``[BOS] r_1 ... r_n r_1 ... r_n``: a random segment and its exact repeat. On the second copy a
model that can copy in context (induction heads) predicts each token; on the first copy nothing beats chance.

- :func:`repeated_tokens`: the sequences over a vocabulary size (no model);
- :func:`repeated_sequences`: the sequences for a model (its BOS convention, no special tokens), what
  :mod:`circuitlab.induction` measures on;
- :func:`induction_task`: clean repeated sequences, corrupted ones of fresh random tokens, and the
  :class:`InductionLogProb` metric: the task of the induction circuit's reference (:mod:`circuitlab.circuits`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from circuitlab.core import ModelLike, as_model, check_affordable, check_count, check_seed
from circuitlab.errors import InputError


@dataclass
class RepeatedTokens:
    """A batch of repeated random sequences and where their halves lie.

    Attributes:
        tokens: ``[n_seqs, prefix + 2 * seq_len]`` token ids.
        prefix: number of leading tokens before the segment (1 when a BOS token was prepended, else 0).
        seq_len: length of the random segment (each half).
    """

    tokens: Int[Tensor, "batch pos"]
    prefix: int
    seq_len: int

    @property
    def first_half(self) -> slice:
        return slice(self.prefix, self.prefix + self.seq_len)

    @property
    def second_half(self) -> slice:
        return slice(self.prefix + self.seq_len, self.prefix + 2 * self.seq_len)

    def half_losses(self, logits: Float[Tensor, "batch pos d_vocab"]) -> tuple[float, float]:
        """Mean next-token loss (nats) on ``r_2..r_n`` of the first and of the second copy, from ``logits`` of
        :attr:`tokens`. ``r_1`` is left out of both: no left context predicts it in either copy."""
        if logits.shape[:2] != self.tokens.shape:
            raise InputError(f"logits of shape {tuple(logits.shape)} do not belong to tokens of shape "
                             f"{tuple(self.tokens.shape)}; pass the model's logits on these tokens.")
        logp = logits[:, :-1].log_softmax(-1)
        nll = -logp.gather(-1, self.tokens[:, 1:, None].to(logp.device))[..., 0]  # nll[:, t - 1] predicts token t
        first = nll[:, self.first_half.start: self.first_half.stop - 1]
        second = nll[:, self.second_half.start: self.second_half.stop - 1]
        return first.mean().item(), second.mean().item()


def repeated_tokens(
    n_seqs: int,
    seq_len: int,
    d_vocab: int,
    seed: int = 0,
    bos_token_id: int | None = None,
    exclude: tuple[int, ...] = (),
    device: str | torch.device = "cpu",
) -> RepeatedTokens:
    """``n_seqs`` sequences of ``seq_len`` random tokens followed by the same tokens again.

    Tokens are drawn uniformly (seeded, independent of the global RNG) from ``range(d_vocab)`` minus
    ``exclude`` and the BOS id. With ``bos_token_id`` given, each sequence starts with it.
    """
    seed, n_seqs, seq_len = check_seed(seed), check_count(n_seqs, "n_seqs"), check_count(seq_len, "seq_len")
    # the sequences are made at once (the analyses then cut them into max_memory batches): the halves, the whole
    # rows, and the analyses' per-sequence copies (clean, corrupted, targets), int64
    check_affordable(4 * 8 * n_seqs * (2 * seq_len + 1), f"n_seqs={n_seqs:,} sequences of 2 x {seq_len:,} tokens",
                     "use fewer sequences (20 to a few thousand is usual)")
    banned = set(exclude) | ({bos_token_id} if bos_token_id is not None else set())
    allowed = torch.tensor([t for t in range(d_vocab) if t not in banned], dtype=torch.long)
    if len(allowed) < 2:
        raise InputError(f"a vocabulary of {d_vocab} leaves {len(allowed)} usable tokens; need at least 2.")
    gen = torch.Generator().manual_seed(seed)
    seg = allowed[torch.randint(len(allowed), (n_seqs, seq_len), generator=gen)]
    parts = [seg, seg]
    if bos_token_id is not None:
        parts.insert(0, torch.full((n_seqs, 1), bos_token_id, dtype=torch.long))
    tokens = torch.cat(parts, dim=1).to(device)
    return RepeatedTokens(tokens, 1 if bos_token_id is not None else 0, seq_len)


# ---------------------------------------------------------------------------------------------------------
# For a model: its BOS convention, its special tokens
# ---------------------------------------------------------------------------------------------------------

DEFAULT_SEQ_LEN = 50  # each half; shortened to fit small contexts
DEFAULT_N_SEQS = 20


def bos_token_id(model: HookedTransformer) -> int | None:
    """The BOS id to prepend to generated sequences, or ``None``.

    We prepend BOS exactly when the model would: ``model.cfg.default_prepend_bos`` is set *and* its tokenizer
    names a BOS token. A model without a tokenizer gets no BOS: we cannot know which id (if any) it was trained
    to see first, and a wrong guess would be an ordinary token in first position. Pass your own ``tokens`` to
    :func:`circuitlab.induction.head_scores` (or a :class:`RepeatedTokens` to
    :func:`circuitlab.induction.ablation_effect`) to choose. ``model``: a loaded model or a name.
    """
    if not hasattr(model, "cfg"):
        model = as_model(model)
    tok = model.tokenizer
    if not model.cfg.default_prepend_bos or tok is None or tok.bos_token_id is None:
        return None
    return int(tok.bos_token_id)


def special_ids(model: HookedTransformer) -> list[int]:
    """Token ids that are not ordinary text (BOS, EOS, PAD...): never drawn, never scored."""
    tok = model.tokenizer
    if tok is None:
        return []
    return sorted({int(i) for i in tok.all_special_ids if i is not None and 0 <= int(i) < model.cfg.d_vocab})


def repeated_sequences(
    model: ModelLike, seq_len: int | None = None, n_seqs: int = DEFAULT_N_SEQS, seed: int = 0
) -> RepeatedTokens:
    """Seeded ``[BOS] r_1..r_n r_1..r_n`` sequences for ``model`` (its BOS convention, no special tokens).

    ``seq_len`` is the length ``n`` of each half. By default it is 50, or a third of the context where that is
    less (``(n_ctx - BOS) // 3``, 21 for a 64-token context): the sequence then fills two thirds of the context,
    not all of it, because a repeat far longer than any the model saw in training is off its distribution
    (the zoo's attention-only models train on repeats of 6-28 tokens; at 2x31 their in-context loss is 2.6
    nats against 1.9 at 2x20). A ``seq_len`` whose two halves do not fit in ``n_ctx`` is an error.
    """
    seed = check_seed(seed)
    model = as_model(model)
    bos = bos_token_id(model)
    prefix = 0 if bos is None else 1
    room = (model.cfg.n_ctx - prefix) // 2
    if seq_len is None:
        seq_len = max(2, min(DEFAULT_SEQ_LEN, (model.cfg.n_ctx - prefix) // 3))
    seq_len = check_count(seq_len, "seq_len (the length of each repeated half)", minimum=2)
    n_seqs = check_count(n_seqs, "n_seqs")
    if seq_len > room:
        raise InputError(
            f"seq_len={seq_len} needs {prefix + 2 * seq_len} positions ({'BOS + ' if prefix else ''}two halves of "
            f"{seq_len}), but this model's context is n_ctx={model.cfg.n_ctx}. Use seq_len <= {room}."
        )
    return repeated_tokens(n_seqs, seq_len, model.cfg.d_vocab, seed=seed, bos_token_id=bos,
                           exclude=tuple(special_ids(model)), device=model.cfg.device)


# ---------------------------------------------------------------------------------------------------------
# The induction task: clean and corrupted sequences and the metric
# ---------------------------------------------------------------------------------------------------------

class InductionLogProb:
    """Mean log-probability of the correct next token over the second copy of repeated sequences: the metric of
    :func:`circuitlab.circuits.induction_reference` (a plain callable on ``[batch, pos, d_vocab]`` logits of the
    clean tokens).

    ``targets[b, t]`` is the token after position ``t`` of the clean sequence; positions ``start .. stop - 1`` are
    read (the second copy's ``r_1 .. r_{n-1}``, predicting ``r_2 .. r_n``)."""

    name = "induction log-prob (second copy)"

    def __init__(self, clean: Int[Tensor, "batch pos"], start: int, stop: int):
        self.targets = clean[:, start + 1: stop + 1].clone()
        self.start, self.stop = start, stop

    def __call__(self, logits: Float[Tensor, "batch pos d_vocab"]) -> Float[Tensor, ""]:
        logp = logits[:, self.start: self.stop].log_softmax(-1)
        return logp.gather(-1, self.targets.to(logp.device)[..., None])[..., 0].mean()


def induction_task(model: ModelLike, seq_len: int = 12, n_seqs: int = 16, seed: int = 0):
    """Clean repeated random sequences, corrupted sequences of fresh random tokens (same length, same BOS), and
    the :class:`InductionLogProb` metric. Returns ``(clean, corrupted, metric)``."""
    seed = check_seed(seed)
    model = as_model(model)
    rep = repeated_sequences(model, seq_len=seq_len, n_seqs=n_seqs, seed=seed)
    clean = rep.tokens
    banned = set(special_ids(model))
    allowed = torch.tensor([t for t in range(model.cfg.d_vocab) if t not in banned], dtype=torch.long)
    gen = torch.Generator().manual_seed(seed + 1)
    corrupted = clean.clone()
    body = slice(rep.prefix, clean.shape[1])
    corrupted[:, body] = allowed[torch.randint(len(allowed), (n_seqs, 2 * seq_len), generator=gen)].to(clean.device)
    second = rep.second_half
    metric = InductionLogProb(clean, second.start, second.stop - 1)
    return clean, corrupted, metric


__all__ = ["DEFAULT_N_SEQS", "DEFAULT_SEQ_LEN", "InductionLogProb", "RepeatedTokens", "bos_token_id", "induction_task",
           "repeated_sequences", "repeated_tokens", "special_ids"]
