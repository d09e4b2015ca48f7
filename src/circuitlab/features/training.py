"""Training sparse autoencoders on any hook of any circuitlab model, several hooks from one forward pass.

**Activations.** The data (texts or token rows) is tokenized once, concatenated and cut into windows of
``context_size`` tokens (``context_size - 1`` corpus tokens after a BOS, as SAELens's ``prepend_bos``); the BOS
position is not trained on (its residual stream is an outlier many times the norm of the others). Windows run through
the model with the collector's :func:`~circuitlab.engine.collect.run_hooks` (a decoder stops after the last block a
hook reads), as many per forward pass as fit ``max_memory``, and every hook's activations of the same tokens go
into one **shuffled buffer** (``buffer_tokens`` tokens per hook): the buffer is filled, shuffled, half of it is
served in batches of ``batch_tokens`` and the other half kept to be mixed with the next fill (SAELens's scheme).

**Scale.** Each hook's activations are divided by one number ``s`` (``E||x||^2 = d_in`` after it, SAELens's
``expected_average_only_in``), measured on the first buffer; the trained SAE has ``s`` folded back into its
weights, so it reads and writes raw activations (``W_enc / s``, ``W_dec * s``, ``b_dec * s``).

**Losses** (on the scaled activations): the reconstruction error as a fraction of the activations' variance (the
FVU, 1 - explained variance: one scale for every hook and model), plus

- ``standard``: ``l1_coefficient`` times the mean over tokens of ``sum_i f_i ||W_dec[i]||``, over the activations'
  RMS norm (Anthropic's April 2024 update: the decoder norm in the penalty instead of a norm constraint);
- ``topk``: nothing more (the ``k`` is the sparsity); decoder rows kept at unit norm (Gao et al. 2024);
- ``jumprelu``: ``l0_coefficient`` times the mean L0, through the straight-through estimator of the step function
  (rectangle kernel of width ``bandwidth``; Rajamanoharan et al. 2024), decoder rows at unit norm, threshold kept >= 0.

**Dead latents**: a latent that has not fired for ``dead_tokens`` training tokens is dead. For every architecture
the AuxK loss of Gao et al. 2024 revives them: the main reconstruction's error is reconstructed from the
``aux_k`` largest pre-activations of the dead latents alone, and that error's FVU is added with weight
``aux_coefficient`` (1/32 in the paper). A choice beyond the paper for ``standard`` and ``jumprelu``: one rule
for all three.

**Checkpoints and resume**: with ``checkpoint=folder``, every ``checkpoint_every`` steps (and at the end or at
``stop_after``) the whole state is written (weights, Adam moments, the buffer, the generator's state, the
position in the data, the dead-latent counters, the history); a later call with the same arguments and
``checkpoint`` resumes there and ends with the same weights as an uninterrupted run (tested). **Determinism**: by
``seed`` (initialisation, buffer shuffles), bit for bit on one thread.

Optimiser: Adam (betas 0.9, 0.999), learning rate ``lr`` (default ``2e-4 / sqrt(d_sae / 2**14)``, Gao et al.'s
scaling), constant after a linear warm-up over the first 5% of steps and linear decay over the last 20%.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuitlab.core import (DEFAULT_MAX_MEMORY, as_model, check_count, check_max_memory, check_number, check_seed,
                             model_name, progress_bar, row_bytes, shorten)
from circuitlab.errors import InputError
from circuitlab.features.sae import SAE, SAEConfig, check_architecture, check_l_coefficient, hook_width

CHECKPOINT_FILE = "checkpoint.pt"
CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class TrainedSAEs:
    """What :func:`train_sae` returns.

    ``saes``: per hook, the trained SAE (weights on raw activations). ``history``: per hook, a row per logged step
    ``{"step", "tokens", "fvu", "l0", "dead", "loss"}`` (running means since the previous row). ``stats``: tokens
    trained on, model tokens run, seconds, tokens per second, whether it finished (``done``; ``False`` after
    ``stop_after``), steps."""

    saes: dict
    history: dict
    stats: dict = field(default_factory=dict)

    def __getitem__(self, hook: str) -> SAE:
        return self.saes[hook]


# ---------------------------------------------------------------------------------------------------------
# Data: token windows and the shuffled buffer
# ---------------------------------------------------------------------------------------------------------

def token_stream(model: Any, data: Any) -> Int[Tensor, " tokens"]:
    """``data`` (texts, or token rows as a ``[rows, pos]`` tensor or lists of ids) as one 1-D stream of token ids,
    texts tokenized without BOS and joined in order."""
    if isinstance(data, Tensor):
        if data.ndim not in (1, 2) or data.is_floating_point() or data.numel() == 0:
            raise InputError(f"data: a tensor of token ids [rows, pos] (integers) is expected; got shape "
                             f"{tuple(data.shape)}, dtype {data.dtype}.")
        flat = data.reshape(-1).long()
    else:
        if isinstance(data, str) or not isinstance(data, Sequence) or not data:
            raise InputError("data must be a non-empty list of texts (or a [rows, pos] tensor of token ids); got "
                             f"{shorten(data, 40)}. A single text: wrap it in a list.")
        pieces = []
        for i, item in enumerate(data):
            if isinstance(item, str):
                if not item.strip():
                    raise InputError(f"data: text {i} is empty; remove it.")
                if getattr(model, "tokenizer", None) is None:
                    raise InputError("data: the model has no tokenizer; give token ids instead of texts.")
                pieces.append(model.to_tokens(item, prepend_bos=False, truncate=False)[0].cpu())
            elif isinstance(item, (list, tuple, Tensor)) and len(item) and all(
                    isinstance(t, int) and not isinstance(t, bool) for t in
                    (item.tolist() if isinstance(item, Tensor) else item)):
                pieces.append(torch.as_tensor(item, dtype=torch.long).reshape(-1))
            else:
                raise InputError(f"data: item {i} is {shorten(item, 40)}; each item must be a text or a row of "
                                 "token ids.")
        flat = torch.cat(pieces)
    vocab = model.cfg.d_vocab
    if flat.min() < 0 or flat.max() >= vocab:
        raise InputError(f"data: token ids must be in [0, {vocab}) (the model's vocabulary); got "
                         f"{int(flat.min())}..{int(flat.max())}.")
    return flat


def bos_id(model: Any) -> Optional[int]:
    tok = getattr(model, "tokenizer", None)
    bos = getattr(tok, "bos_token_id", None)
    return None if bos is None else int(bos)


def windows(stream: Int[Tensor, " tokens"], context_size: int, bos: Optional[int]) -> Int[Tensor, "window pos"]:
    """The stream cut into rows of ``context_size`` tokens: BOS then ``context_size - 1`` stream tokens (no BOS:
    ``context_size`` stream tokens). The last partial window is dropped."""
    context = context_size
    body = context - 1 if bos is not None else context
    n = stream.numel() // body
    if n == 0:
        raise InputError(f"data holds {stream.numel()} tokens, fewer than one window of context={context}; give "
                         "more text or a smaller context.")
    rows = stream[: n * body].reshape(n, body)
    if bos is not None:
        rows = torch.cat([torch.full((n, 1), bos, dtype=torch.long), rows], dim=1)
    return rows


class ActivationBuffer:
    """Shuffled activations of several hooks, refilled from the model (see the module notes).

    The whole state (``state_dict``) is plain tensors, so a checkpoint holds it and a resumed run serves the same
    batches in the same order."""

    def __init__(self, model: Any, hooks: list[str], rows: Int[Tensor, "window pos"], *, buffer_tokens: int,
                 batch_tokens: int,
                 rows_per_pass: int, skip_first: bool, generator: torch.Generator):
        self.model, self.hooks, self.rows = model, hooks, rows
        self.buffer_tokens, self.batch_tokens = buffer_tokens, batch_tokens
        self.rows_per_pass, self.skip_first, self.gen = rows_per_pass, skip_first, generator
        self.next_row = 0
        self.kept: dict[str, Tensor] = {}
        self.served: dict[str, Tensor] = {}
        self.served_at = 0
        self.model_tokens = 0

    @property
    def exhausted(self) -> bool:
        return self.next_row >= len(self.rows)

    def _run(self, rows: Tensor) -> dict[str, Tensor]:
        from circuitlab.engine.collect import run_hooks, stop_layer

        got: dict[str, Tensor] = {}

        def grab(act: Tensor, hook=None, name: str = "") -> None:
            a = act[:, 1:] if self.skip_first else act
            got[name] = a.reshape(-1, int(math.prod(a.shape[2:]))).detach().to("cpu", torch.float32)

        fwd = [(h, (lambda act, hook=None, _h=h: grab(act, name=_h))) for h in self.hooks]
        with torch.no_grad():
            run_hooks(self.model, rows.to(self.model.cfg.device), fwd, stop=stop_layer(self.model, self.hooks))
        self.model_tokens += rows.numel()
        for h in self.hooks:
            if not torch.isfinite(got[h]).all():
                raise InputError(f"the activations at hook {h!r} hold NaN or infinite values (rows "
                                 f"{self.next_row - len(rows)}..{self.next_row - 1} of the data); an SAE cannot be "
                                 "trained on them. Check the model's weights (circuitlab.core.check_weights_finite).")
        return got

    def _fill(self) -> None:
        parts: dict[str, list[Tensor]] = {h: [self.kept[h]] if h in self.kept else [] for h in self.hooks}
        have = sum(t.shape[0] for t in parts[self.hooks[0]])
        while have < self.buffer_tokens and not self.exhausted:
            rows = self.rows[self.next_row: self.next_row + self.rows_per_pass]
            self.next_row += len(rows)
            got = self._run(rows)
            for h in self.hooks:
                parts[h].append(got[h])
            have += got[self.hooks[0]].shape[0]
        if have == 0:
            self.served, self.kept, self.served_at = {}, {}, 0
            return
        perm = torch.randperm(have, generator=self.gen)
        half = have if self.exhausted else max(self.batch_tokens, (have // 2) // self.batch_tokens * self.batch_tokens)
        full = {h: torch.cat(parts[h])[perm] for h in self.hooks}
        self.served = {h: t[:half] for h, t in full.items()}
        self.kept = {h: t[half:] for h, t in full.items()}
        self.served_at = 0

    def next_batch(self) -> Optional[dict[str, Float[Tensor, "token d"]]]:
        """The next ``batch_tokens`` activations of each hook (fewer at the very end), or ``None`` when the data is
        used up."""
        n = self.served[self.hooks[0]].shape[0] if self.served else 0
        if self.served_at >= n:
            self._fill()
            n = self.served[self.hooks[0]].shape[0] if self.served else 0
            if n == 0:
                return None
        lo = self.served_at
        self.served_at += self.batch_tokens
        return {h: t[lo: lo + self.batch_tokens] for h, t in self.served.items()}

    def peek(self) -> dict[str, Float[Tensor, "token d"]]:
        """The first buffer's activations (filled now if need be), to measure each hook's scale and mean."""
        if not self.served:
            self._fill()
        return self.served

    def state_dict(self) -> dict:
        return {"next_row": self.next_row, "kept": self.kept, "served": self.served, "served_at": self.served_at,
                "gen": self.gen.get_state(), "model_tokens": self.model_tokens}

    def load_state_dict(self, state: dict) -> None:
        self.next_row, self.kept, self.served = state["next_row"], state["kept"], state["served"]
        self.served_at, self.model_tokens = state["served_at"], state["model_tokens"]
        self.gen.set_state(state["gen"])


# ---------------------------------------------------------------------------------------------------------
# The straight-through estimators of JumpReLU
# ---------------------------------------------------------------------------------------------------------

def _rectangle(x: Tensor) -> Tensor:
    return ((x > -0.5) & (x < 0.5)).to(x.dtype)


class _JumpReLU(torch.autograd.Function):
    """``pre * (pre > threshold)``; the threshold's gradient by the rectangle-kernel estimator (Rajamanoharan et
    al. 2024, eq. 11)."""

    @staticmethod
    def forward(ctx: Any, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple:
        pre, threshold = ctx.saved_tensors
        bw = ctx.bandwidth
        grad_pre = (pre > threshold).to(pre.dtype) * grad
        grad_threshold = -(threshold / bw) * _rectangle((pre - threshold) / bw) * grad
        return grad_pre, grad_threshold.sum(0), None


class _Step(torch.autograd.Function):
    """``pre > threshold`` as 0/1; the threshold's gradient by the same estimator (eq. 12)."""

    @staticmethod
    def forward(ctx: Any, pre: Tensor, threshold: Tensor, bandwidth: float) -> Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple:
        pre, threshold = ctx.saved_tensors
        bw = ctx.bandwidth
        return None, (-(1.0 / bw) * _rectangle((pre - threshold) / bw) * grad).sum(0), None


# ---------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------

def _init_sae(cfg: SAEConfig, mean: Tensor, gen: torch.Generator) -> SAE:
    """Decoder rows random unit vectors, encoder their transpose, ``b_dec`` the data's mean, ``b_enc`` zero; a
    JumpReLU threshold starts at 0.001 (in scaled units)."""
    sae = SAE(cfg)
    with torch.no_grad():
        w = torch.randn(cfg.d_sae, cfg.d_in, generator=gen)
        w /= w.norm(dim=-1, keepdim=True)
        sae.W_dec.copy_(w)
        sae.W_enc.copy_(w.T)
        sae.b_dec.copy_(mean)
        if cfg.architecture == "jumprelu":
            sae.threshold.fill_(0.001)
    return sae


def lr_schedule(step: int, steps: int, lr: float) -> float:
    """The learning rate at ``step`` of ``steps``: linear warm-up over the first 5% of steps, linear decay over the
    last 20% (the SAEs' and the transcoders' schedule)."""
    warm, decay = max(1, steps // 20), max(1, steps // 5)
    if step < warm:
        return lr * (step + 1) / warm
    if step >= steps - decay:
        return lr * max(0.0, (steps - step) / decay)
    return lr


def _loss(sae: SAE, x: Tensor, var: float, since: Tensor, a: dict) -> tuple[Tensor, dict, Tensor]:
    """The training loss on one batch of scaled activations; returns (loss, numbers, which latents fired)."""
    pre = sae.pre_activations(x)
    arch = sae.cfg.architecture
    if arch == "jumprelu":
        f = _JumpReLU.apply(torch.relu(pre), sae.threshold, a["bandwidth"])
    else:
        f = sae.activate(pre)
    recon = f @ sae.W_dec + sae.b_dec
    err = x - recon
    fvu = err.pow(2).sum(-1).mean() / var
    loss = fvu
    if arch == "standard":
        loss = loss + a["l1"] * (f * sae.W_dec.norm(dim=-1)).sum(-1).mean() / math.sqrt(var)
    elif arch == "jumprelu":
        loss = loss + a["l0"] * _Step.apply(pre, sae.threshold, a["bandwidth"]).sum(-1).mean()
    dead = since >= a["dead_tokens"]
    n_dead = int(dead.sum())
    aux = torch.zeros(())
    if n_dead and a["aux_coefficient"] > 0:
        k_aux = min(a["aux_k"], n_dead)
        dead_pre = pre.masked_fill(~dead, float("-inf"))
        vals, idx = dead_pre.topk(k_aux, dim=-1)
        f_aux = torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))
        e_hat = f_aux @ sae.W_dec
        target = err.detach()
        aux = (target - e_hat).pow(2).sum(-1).mean() / target.pow(2).sum(-1).mean().clamp_min(1e-12)
        loss = loss + a["aux_coefficient"] * aux
    fired = (f > 0).any(0)
    nums = {"fvu": float(fvu.detach()), "l0": float((f > 0).float().sum(-1).mean()), "loss": float(loss.detach()),
            "dead": n_dead / sae.cfg.d_sae}
    return loss, nums, fired


def train_sae(model: Any, hooks: Any, data: Any, *, architecture: str = "topk", d_sae: Optional[int] = None,
              k: Optional[int] = 32, l1_coefficient: float = 1.0, l0_coefficient: float = 0.01,
              lr: Optional[float] = None, training_tokens: int = 200_000, batch_tokens: int = 1024,
              buffer_tokens: int = 32_768,
              context_size: Optional[int] = None, aux_coefficient: float = 1 / 32, aux_k: Optional[int] = None,
              dead_tokens: Optional[int] = None, bandwidth: float = 0.001, seed: int = 0,
              checkpoint: Union[str, Path, None] = None, checkpoint_every: int = 500, stop_after: Optional[int] = None,
              log_every: int = 50, max_memory: int = DEFAULT_MAX_MEMORY, progress: bool = False) -> TrainedSAEs:
    """Train one SAE per hook on ``model``'s activations over ``data`` (module notes: data, losses, dead
    latents, checkpoints).

    Args:
        model: a model or a registry name (``"zoo/toy-lm"``).
        hooks: a hook name, a layer number (its ``hook_resid_post``) or a list of them; all are read from the same
            forward passes.
        data: texts (tokenized without BOS and joined) or token rows (``[rows, pos]``).
        architecture: ``"topk"`` (default), ``"standard"`` (ReLU + L1; alias ``"relu"``) or ``"jumprelu"``.
        d_sae: latents per SAE (default 8 x the hook's width). ``k``: latents kept per token (``topk`` only; give
            ``k=None`` for the others). ``l1_coefficient``: the ``standard`` penalty. ``l0_coefficient``: the
            ``jumprelu`` penalty.
        lr: Adam's learning rate (default ``2e-4 / sqrt(d_sae / 2**14)``). ``training_tokens``: per SAE
            (the run ends sooner if the data has fewer). ``batch_tokens``: tokens per step. ``buffer_tokens``: the
            shuffle buffer per hook (``buffer_tokens x d_in x 4`` bytes each, held besides the model's own
            ``max_memory``-bounded forward passes).
        context_size: tokens per window (default ``min(n_ctx, 128)``).
        aux_coefficient, aux_k, dead_tokens: AuxK (default ``aux_k = d_in // 2``; a latent is dead after
            ``dead_tokens`` tokens without firing, default ``min(training_tokens // 4, 1_000_000)``).
        bandwidth: JumpReLU's straight-through kernel width (scaled units).
        seed: initialisation and shuffles. checkpoint, checkpoint_every, stop_after: see the module notes
            (``stop_after``: end this call after that many steps in all, checkpointed, to resume later).
        log_every: steps per history row. max_memory: bytes per forward pass (:func:`circuitlab.core.check_max_memory`).
        progress: a progress bar with the running FVU, L0 and dead fraction of the first hook.
    """
    from circuitlab.engine.collect import check_hooks

    model = as_model(model)
    if hooks is None:
        raise InputError("hooks: give the hooks to train SAEs on (names or layer numbers, e.g. [1, 2] or "
                         "'blocks.2.hook_resid_post').")
    hooks = check_hooks(model, hooks)
    arch = check_architecture(architecture)
    max_memory = check_max_memory(max_memory)
    seed = check_seed(seed)
    tokens = check_count(training_tokens, "training_tokens")
    batch_tokens = check_count(batch_tokens, "batch_tokens")
    buffer_tokens = check_count(buffer_tokens, "buffer_tokens")
    if buffer_tokens < 2 * batch_tokens:
        raise InputError(f"buffer_tokens={buffer_tokens} must be at least twice batch_tokens={batch_tokens} (half "
                         "the buffer is served between refills); raise buffer_tokens or lower batch_tokens.")
    checkpoint_every = check_count(checkpoint_every, "checkpoint_every")
    log_every = check_count(log_every, "log_every")
    if stop_after is not None:
        stop_after = check_count(stop_after, "stop_after")
    widths = {h: hook_width(model, h) for h in hooks}
    d_in0 = widths[hooks[0]]
    if d_sae is None:
        d_sae = 8 * d_in0
    d_sae = check_count(d_sae, "d_sae")
    if arch == "topk":
        k = check_count(k, "k")
        if k > d_sae:
            raise InputError(f"k={k} is more latents than d_sae={d_sae}; use k <= d_sae.")
    else:
        if k not in (None, 32):
            raise InputError(f"k={shorten(k)} is for architecture='topk'; the {arch} SAE has no k. Leave it out.")
        k = None
    from circuitlab.core import check_affordable

    n_hooks, widest = len(hooks), max(widths.values())
    check_affordable(n_hooks * 4 * (4 * 2 * widest * d_sae + 3 * batch_tokens * d_sae),
                     f"d_sae={d_sae:,} latents x {n_hooks} hook(s) (weights, Adam's moments, gradients and one batch's "
                     "latents)", "use a smaller d_sae or batch_tokens, or fewer hooks per run")
    check_affordable(n_hooks * 4 * 2 * buffer_tokens * widest,
                     f"buffer_tokens={buffer_tokens:,} x {n_hooks} hook(s) of {widest} numbers (the shuffle buffer)",
                     "use a smaller buffer_tokens")
    l1 = check_l_coefficient(l1_coefficient, "l1_coefficient")
    l0 = check_l_coefficient(l0_coefficient, "l0_coefficient")
    if lr is None:
        lr = 2e-4 / math.sqrt(d_sae / 2**14)
    lr = check_number(lr, "lr", low=0, low_open=True)
    aux_coefficient = check_number(aux_coefficient, "aux_coefficient", low=0)
    aux_k = check_count(aux_k, "aux_k") if aux_k is not None else max(1, d_in0 // 2)
    dead_tokens = check_count(dead_tokens, "dead_tokens") if dead_tokens is not None else \
        max(batch_tokens, min(tokens // 4, 1_000_000))
    bandwidth = check_number(bandwidth, "bandwidth", low=0, low_open=True)
    n_ctx = model.cfg.n_ctx
    context = check_count(context_size, "context_size", minimum=2) if context_size is not None else min(n_ctx, 128)
    if context > n_ctx:
        raise InputError(f"context_size={context} is longer than the model's n_ctx={n_ctx}; use context_size <= "
                         f"{n_ctx}.")
    bos = bos_id(model)
    rows = windows(token_stream(model, data), context, bos)
    per_row = row_bytes(model, context)
    rows_per_pass = max(1, max_memory // max(1, per_row))
    settings = {"architecture": arch, "d_sae": d_sae, "k": k, "l1": l1, "l0": l0, "lr": lr, "tokens": tokens,
                "batch_tokens": batch_tokens, "buffer_tokens": buffer_tokens, "context": context,
                "aux_coefficient": aux_coefficient, "aux_k": aux_k, "dead_tokens": dead_tokens,
                "bandwidth": bandwidth, "seed": seed, "hooks": hooks, "rows": len(rows),
                "data_digest": int((rows[: min(len(rows), 64)].double() * torch.arange(1, 1 + min(len(rows), 64),
                                   dtype=torch.double)[:, None]).sum()), "model": model_name(model)}
    gen = torch.Generator().manual_seed(seed)
    buffer = ActivationBuffer(model, hooks, rows, buffer_tokens=buffer_tokens, batch_tokens=batch_tokens,
                              rows_per_pass=rows_per_pass, skip_first=bos is not None, generator=gen)
    steps = max(1, min(tokens, len(rows) * (context - (bos is not None))) // batch_tokens)
    ckpt_path = Path(checkpoint) / CHECKPOINT_FILE if checkpoint is not None else None
    start = time.perf_counter()
    state = _load_checkpoint(ckpt_path, settings) if ckpt_path is not None else None
    if state is not None:
        buffer.load_state_dict(state["buffer"])
        saes, scales = {}, state["scales"]
        for h in hooks:
            cfg = SAEConfig(arch, widths[h], d_sae, k=k, hook_name=h, model_name=model_name(model))
            saes[h] = SAE(cfg)
            saes[h].load_state_dict(state["saes"][h])
        variances, since, history = state["variances"], state["since"], state["history"]
        step, elapsed = state["step"], state["seconds"]
    else:
        first = buffer.peek()
        saes, scales, variances, since, history = {}, {}, {}, {}, {h: [] for h in hooks}
        for h in hooks:
            x = first[h]
            scales[h] = float(x.pow(2).sum(-1).mean().div(widths[h]).sqrt().clamp_min(1e-12))
            xs = x / scales[h]
            variances[h] = float((xs - xs.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-12))
            cfg = SAEConfig(arch, widths[h], d_sae, k=k, hook_name=h, model_name=model_name(model))
            saes[h] = _init_sae(cfg, xs.mean(0), gen)
            since[h] = torch.zeros(d_sae, dtype=torch.long)
        step, elapsed = 0, 0.0
    opts = {h: torch.optim.Adam(saes[h].parameters(), lr=lr, betas=(0.9, 0.999)) for h in hooks}
    if state is not None:
        for h in hooks:
            opts[h].load_state_dict(state["opts"][h])
    a = {"l1": l1, "l0": l0, "bandwidth": bandwidth, "dead_tokens": dead_tokens, "aux_k": aux_k,
         "aux_coefficient": aux_coefficient}
    running = {h: {"fvu": 0.0, "l0": 0.0, "loss": 0.0, "dead": 0.0, "n": 0} for h in hooks}
    bar = progress_bar(total=steps, progress=progress, desc=f"sae {arch} x{len(hooks)}", unit="step")
    bar.update(step)
    done = True

    def save() -> None:
        _save_checkpoint(ckpt_path, {"format": CHECKPOINT_FORMAT, "settings": settings,
                                     "saes": {h: s.state_dict() for h, s in saes.items()},
                                     "opts": {h: o.state_dict() for h, o in opts.items()},
                                     "buffer": buffer.state_dict(), "scales": scales, "variances": variances,
                                     "since": since, "history": history, "step": step,
                                     "seconds": elapsed + time.perf_counter() - start})

    while step < steps:
        if stop_after is not None and step >= stop_after:
            done = False
            break
        batch = buffer.next_batch()
        if batch is None:
            break
        for h in hooks:
            sae, opt = saes[h], opts[h]
            for group in opt.param_groups:
                group["lr"] = lr_schedule(step, steps, lr)
            x = batch[h] / scales[h]
            loss, nums, fired = _loss(sae, x, variances[h], since[h], a)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                if arch in ("topk", "jumprelu"):
                    sae.W_dec.div_(sae.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-8))
                if arch == "jumprelu":
                    sae.threshold.clamp_(min=0.0)
            since[h] = torch.where(fired, torch.zeros_like(since[h]), since[h] + x.shape[0])
            r = running[h]
            for key in ("fvu", "l0", "loss", "dead"):
                r[key] += nums[key]
            r["n"] += 1
        step += 1
        bar.update(1)
        if step % log_every == 0 or step == steps:
            for h in hooks:
                r = running[h]
                history[h].append({"step": step, "tokens": step * batch_tokens,
                                   **{key: r[key] / max(1, r["n"]) for key in ("fvu", "l0", "dead", "loss")}})
                running[h] = {"fvu": 0.0, "l0": 0.0, "loss": 0.0, "dead": 0.0, "n": 0}
            last = history[hooks[0]][-1]
            bar.set_postfix(fvu=f"{last['fvu']:.3f}", l0=f"{last['l0']:.1f}", dead=f"{last['dead']:.2f}")
        if ckpt_path is not None and step % checkpoint_every == 0 and step < steps:
            save()
    bar.close()
    if ckpt_path is not None:
        save()
    seconds = elapsed + time.perf_counter() - start
    out = {h: _fold_scale(saes[h], scales[h]) for h in hooks}
    stats = {"steps": step, "train_tokens": step * batch_tokens, "model_tokens": buffer.model_tokens,
             "seconds": seconds, "tokens_per_second": step * batch_tokens / max(seconds, 1e-9), "done": done,
             "scales": dict(scales), "settings": settings}
    return TrainedSAEs(out, history, stats)


def _fold_scale(sae: SAE, s: float) -> SAE:
    """A copy of ``sae`` (trained on ``x / s``) that reads and writes raw ``x``."""
    out = SAE(sae.cfg)
    with torch.no_grad():
        out.W_enc.copy_(sae.W_enc / s)
        out.b_enc.copy_(sae.b_enc)
        out.W_dec.copy_(sae.W_dec * s)
        out.b_dec.copy_(sae.b_dec * s)
        if sae.cfg.architecture == "jumprelu":
            out.threshold.copy_(sae.threshold)
    out.requires_grad_(False)
    return out


def _save_checkpoint(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path: Path, settings: dict) -> Optional[dict]:
    """The checkpoint at ``path`` if there is one; one made with other settings is an error naming them."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, weights_only=False)
    except Exception as exc:
        raise InputError(f"checkpoint: {path} cannot be read ({type(exc).__name__}); delete it to start over.") \
            from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"checkpoint: {path} is not a checkpoint of this version; delete it to start over.")
    old = state["settings"]
    differ = [key for key in settings if old.get(key) != settings[key]]
    if differ:
        what = ", ".join(f"{key}: {shorten(old.get(key), 30)} -> {shorten(settings[key], 30)}" for key in differ)
        raise InputError(f"checkpoint: {path} was made with other settings ({what}); resume with the same "
                         "arguments, or use another checkpoint folder.")
    return state


def activation_sample(model: Any, hooks: Sequence[str], data: Any, n_tokens: int, *,
                      context_size: Optional[int] = None,
                      max_memory: int = DEFAULT_MAX_MEMORY) -> dict[str, Float[Tensor, "token d"]]:
    """The first ``n_tokens`` activations (BOS positions left out) of each hook over ``data``, in order, as
    training reads them (for tests and benchmarks)."""
    from circuitlab.engine.collect import check_hooks

    model = as_model(model)
    hooks = check_hooks(model, hooks)
    context = context_size or min(model.cfg.n_ctx, 128)
    bos = bos_id(model)
    rows = windows(token_stream(model, data), context, bos)
    buf = ActivationBuffer(model, hooks, rows, buffer_tokens=n_tokens, batch_tokens=n_tokens,
                           rows_per_pass=max(1, max_memory // row_bytes(model, context)), skip_first=bos is not None,
                           generator=torch.Generator())
    out: dict[str, list[Tensor]] = {h: [] for h in hooks}
    have = 0
    while have < n_tokens and not buf.exhausted:
        rows_now = rows[buf.next_row: buf.next_row + buf.rows_per_pass]
        buf.next_row += len(rows_now)
        got = buf._run(rows_now)
        for h in hooks:
            out[h].append(got[h])
        have += got[hooks[0]].shape[0]
    return {h: torch.cat(v)[:n_tokens] for h, v in out.items()}


__all__ = ["TrainedSAEs", "train_sae", "windows", "ActivationBuffer", "lr_schedule"]
