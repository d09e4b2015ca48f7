"""The zoo's one training loop: next-token loss, AdamW, a learning-rate schedule, an optional probe.

Every recipe trains through :func:`train_loop`; a recipe brings its model (a ``HookedTransformer`` or its fast
twin :class:`~circuitlab.zoo.fastgpt.FastGPT`), its batches, and its schedule. Determinism: the loop draws no
random numbers itself (batches come from the recipe's own seeded generator), so the same recipe and seed give
bit-identical weights on one thread (:func:`torch_threads`). On two or more threads they need not: torch's CPU
backward of the embedding lookup sums gradients in an order that depends on thread timing once a batch is split
across threads (weights then differ by up to about 3e-4 after a full run). ``torch.use_deterministic_algorithms``
removes that, at about twice the training time, so the recipes do not turn it on.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Int
from torch import Tensor, nn
from tqdm.auto import tqdm


@dataclass
class TrainingRun:
    """What :func:`train_loop` reports: the loss at every step, the probe's rows ``[step, *values]`` (every
    ``probe_every`` steps, before the step, and once after the last), and the loop's wall and CPU seconds."""

    losses: list[float]
    curve: list[list[float]]
    seconds: float
    cpu_seconds: float


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)``, then restore the previous count."""
    prev = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def warmup_cosine(steps: int, warmup: int, min_fraction: float = 0.0) -> Callable[[int], float]:
    """Learning-rate factor: linear warmup over ``warmup`` steps, then cosine decay to ``min_fraction`` at ``steps``."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, steps - warmup))
        return min_fraction + (1 - min_fraction) * 0.5 * (1 + math.cos(math.pi * progress))
    return f


def warmup_times_cosine(steps: int, warmup: int) -> Callable[[int], float]:
    """Learning-rate factor: a linear warmup over ``warmup`` steps *times* a cosine from 1 to 0 over all ``steps``
    (the attention-only recipes' schedule; the cosine has already begun during the warmup)."""
    return lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))


def log_spaced_steps(steps: int, n: int) -> list[int]:
    """About ``n`` checkpoint steps from ``0`` to ``steps``, log-spaced: ``0`` and the distinct integers nearest to
    ``steps ** (i / (n - 2))`` for ``i = 0 .. n - 2`` (so ``1`` and ``steps`` are always in; early on, where the
    powers are closer than 1 step, fewer than ``n`` remain)."""
    if steps < 1 or n < 2:
        raise ValueError(f"log_spaced_steps needs steps >= 1 and n >= 2, got steps={steps}, n={n}.")
    if n == 2:
        return [0, steps]
    return sorted({0, steps} | {round(steps ** (i / (n - 2))) for i in range(n - 1)})


def train_loop(
    model: nn.Module,
    batch: Callable[[int], Int[Tensor, "batch pos"]],
    *,
    steps: int,
    lr: float,
    lr_factor: Callable[[int], float],
    weight_decay: float,
    decay_vectors: bool = True,
    betas: tuple[float, float] = (0.9, 0.98),
    max_grad_norm: float | None = None,
    probe: Callable[[], list[float]] | None = None,
    probe_every: int = 0,
    probe_label: str = "probe",
    log_every: int = 0,
    progress: bool = False,
    desc: str = "train",
    checkpoints: Sequence[int] = (),
    on_checkpoint: Callable[[int], None] | None = None,
) -> TrainingRun:
    """Train ``model`` in place for ``steps`` AdamW steps on the next-token loss of ``batch(step)``.

    Args:
        model: maps tokens ``[batch, pos]`` to logits ``[batch, pos, d_vocab]`` when called.
        batch: the training tokens of each step (from the recipe's own seeded generator).
        lr, lr_factor: the base learning rate and its factor per step (:func:`warmup_cosine`,
            :func:`warmup_times_cosine`), applied with ``LambdaLR``.
        weight_decay: AdamW's decoupled weight decay; with ``decay_vectors=False`` it applies to matrices only
            (parameters with ``ndim >= 2``), not to biases and LayerNorm weights.
        max_grad_norm: clip the gradient's global norm to this before each step (``None``: no clipping).
        probe: a measurement of the model, run in eval mode without gradients every ``probe_every`` steps
            (``0``: only after the last) and once after the last step; its rows are ``[step, *probe()]``.
        log_every: write the mean loss of the last ``log_every`` steps every ``log_every`` steps (``0``: never).
        progress: show a progress bar.
        checkpoints, on_checkpoint: ``on_checkpoint(step)`` is called when the model has taken ``step`` optimiser
            steps, for every ``step`` in ``checkpoints`` (``0``: before training; ``steps``: after the last), in
            eval mode without gradients; it typically saves ``model.state_dict()`` (:func:`log_spaced_steps`).
    """
    params = list(model.parameters())
    if decay_vectors:
        groups = [{"params": params, "weight_decay": weight_decay}]
    else:
        groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
                  {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=lr, betas=betas)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)

    def probe_row(step: int) -> list[float]:
        model.eval()
        with torch.no_grad():
            return [step, *probe()]

    wanted = set(checkpoints) if on_checkpoint is not None else set()

    def checkpoint(step: int) -> None:
        if step in wanted:
            model.eval()
            with torch.no_grad():
                on_checkpoint(step)

    t0, cpu0 = time.perf_counter(), time.process_time()
    losses: list[float] = []
    curve: list[list[float]] = []
    bar = tqdm(range(steps), disable=not progress, desc=desc, mininterval=5)
    for step in bar:
        checkpoint(step)
        if probe is not None and probe_every and step % probe_every == 0:
            curve.append(probe_row(step))
        model.train()
        tokens = batch(step)
        logits = model(tokens)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if log_every and (step % log_every == 0 or step == steps - 1):
            recent = sum(losses[-log_every:]) / len(losses[-log_every:])
            note = f"  {probe_label} " + " -> ".join(f"{v:.2f}" for v in curve[-1][1:]) if curve else ""
            bar.write(f"step {step:5d}  loss {recent:.3f}{note}  {time.perf_counter() - t0:.0f}s")
    checkpoint(steps)
    if probe is not None:
        curve.append(probe_row(steps))
    model.eval()
    return TrainingRun(losses, curve, time.perf_counter() - t0, time.process_time() - cpu0)
