"""Induction-style copying: clean/corrupted prompt pairs whose answer can only come from copying in context.

The clean prompt ``[BOS] r_1..r_n r_1..r_k`` (random tokens, then a copy of the first ``k``) should be continued
with ``r_{k+1}``; the corrupted prompt replaces the first copy's ``r_{k+1}`` by another token ``x``, so a model
that copies predicts ``x`` instead. The two prompts differ at one position, which makes them a clean setting for
activation patching: ``logit(r_{k+1}) - logit(x)`` is the metric.

    from circuitlab.tasks import copy_task

    task = copy_task(model, n_prompts=8, seq_len=20, k=14, seed=0)
    sweep(model, task.clean, task.corrupted, LogitDiff(task.answer, task.wrong))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Int
from torch import Tensor

from circuitlab.core import check_affordable, check_count, check_seed
from circuitlab.tasks.repeated import repeated_sequences


@dataclass
class CopyTask:
    """Clean/corrupted prompt pairs for induction-style copying (see the module docstring).

    Attributes:
        clean, corrupted: ``[batch, pos]`` prompts; they differ only at ``changed_pos``.
        answer, wrong: ``[batch]`` the token the clean prompt should continue with (``r_{k+1}``) and the one the
            corrupted prompt should continue with (``x``).
        changed_pos: the position of ``r_{k+1}`` in the first copy.
        description: one line for a report.
    """

    clean: Int[Tensor, "batch pos"]
    corrupted: Int[Tensor, "batch pos"]
    answer: Int[Tensor, " batch"]
    wrong: Int[Tensor, " batch"]
    changed_pos: int
    description: str


def copy_task(model, n_prompts: int = 8, seq_len: int = 20, k: int = 14, seed: int = 0) -> CopyTask:
    """``n_prompts`` copying prompts ``[BOS] r_1..r_n r_1..r_k`` and their corrupted twins (``r_{k+1} -> x``).

    The random tokens follow ``model``'s conventions (its BOS, no special tokens; see
    :func:`circuitlab.tasks.repeated.repeated_sequences`); ``seq_len`` and ``k`` shrink to fit its context.
    """
    seed, n_prompts = check_seed(seed), check_count(n_prompts, "n_prompts")
    seq_len, k = check_count(seq_len, "seq_len", minimum=2), check_count(k, "k")
    # the prompts are made at once: the repeated sequences, the clean, corrupted and answer copies (int64)
    check_affordable(5 * 8 * n_prompts * (2 * seq_len + 1), f"n_prompts={n_prompts:,} copying prompts",
                     "use fewer prompts")
    room = (model.cfg.n_ctx - 1) // 2
    seq_len = min(seq_len, room)
    k = min(k, seq_len - 1)
    rep = repeated_sequences(model, seq_len, n_prompts, seed)
    end = rep.prefix + seq_len + k  # the prompt stops at the second copy of r_k
    clean = rep.tokens[:, :end].clone()
    changed = rep.prefix + k  # first-copy position of r_{k+1}
    answer = clean[:, changed].clone()
    # x: a token that occurs nowhere in its own prompt, drawn from the tokens the other prompts use (so it is
    # an ordinary token of the same kind, never BOS or a special token)
    gen = torch.Generator().manual_seed(seed + 1)
    pool = torch.unique(rep.tokens[:, rep.prefix:])
    wrong = torch.empty_like(answer)
    for b in range(n_prompts):
        allowed = pool[~torch.isin(pool, clean[b])]
        wrong[b] = allowed[torch.randint(len(allowed), (1,), generator=gen)]
    corrupted = clean.clone()
    corrupted[:, changed] = wrong
    bos = "[BOS] " if rep.prefix else ""
    description = (f"{n_prompts} copying prompts {bos}r_1..r_{seq_len} r_1..r_{k} (seed {seed}); answer r_{k + 1}, "
                   f"corrupted by replacing the first copy's r_{k + 1} (pos {changed})")
    return CopyTask(clean, corrupted, answer, wrong, changed, description)


__all__ = ["CopyTask", "copy_task"]
