"""Repeated random token sequences: the task on which induction heads show themselves.

A sequence is ``[BOS] r_1 ... r_n r_1 ... r_n``: a random segment and its exact repeat. On the second copy a
model that can copy in context (induction heads) predicts each token; on the first copy nothing beats chance.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

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
    if n_seqs < 1 or seq_len < 1:
        raise InputError(f"n_seqs and seq_len must be positive, got n_seqs={n_seqs}, seq_len={seq_len}.")
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
