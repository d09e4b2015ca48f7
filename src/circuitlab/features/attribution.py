"""Analyses at the level of SAE features: attribution of a metric to latents, exact latent ablation, steering.

**Attribution patching to latents** (:func:`latent_attribution`; Nanda 2023, "Attribution patching"; Syed et al.
2023; Marks et al. 2024, "Sparse feature circuits", whose setting this is). The SAE is spliced in at its hook
with its error term (the model computes what it did without the SAE), and the error term is a separate node
held at its clean value, so the metric ``M`` is a function of the latents ``f [batch, pos, d_sae]``. The
effect of moving latent ``i`` at position ``p`` from its clean value to a baseline is approximated to first
order::

    attribution[p, i] = sum_batch dM/df[b, p, i] * (f_base[b, p, i] - f[b, p, i])

from one forward and one backward pass. The baseline is zero (latent ablation) or, given ``corrupted``
prompts, the latents of the corrupted run (activation patching). ``total[i]`` sums over positions: the
approximate effect of moving latent ``i`` at every position at once. The BOS position is left out (its
latents keep their clean values; the SAEs here are not trained on it).

**Exact ablation** (:func:`latent_ablation`, the brute force the approximation is checked against): for each
chosen latent, one forward pass with ``f[:, p, i]`` set to the baseline at every position ``p`` but BOS (the
error term held at its clean value), and the metric's change ``M(patched) - M(clean)``. Memory: the chosen
latents are run a few at a time, the batch repeated once per latent, within ``max_memory``.

**Steering** (:func:`steer`; Templeton et al. 2024, "Scaling monosemanticity"; Turner et al. 2023): add
``alpha * W_dec[latent]`` to the hook's activation at every position but BOS (or only at ``positions``), and
compare the next-token distribution at the last position with the clean one: the tokens whose log-probability
rises and falls most, the top tokens before and after, and KL(clean || steered). The decoder rows of the
shipped SAEs have unit norm, so ``alpha`` is in units of the residual stream's own scale (compare a latent's
largest activation on a dashboard).

Nothing here imports the patching room: the SAE is spliced in with TransformerLens hooks directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import torch
from torch import Tensor

from circuitlab.core import (DEFAULT_MAX_MEMORY, Prompts, as_model, check_count_within, check_max_memory,
                             check_number, model_name, row_bytes, row_chunks, shorten, to_tokens)
from circuitlab.errors import InputError
from circuitlab.features.dashboard import check_latents
from circuitlab.features.sae import SAE, check_sae, sae_hook
from circuitlab.metrics import bind_metric
from circuitlab.results import Result, TopTokens, token_strings


@dataclass(frozen=True)
class LatentAttribution:
    """What :func:`latent_attribution` computed: ``per_position`` ``[pos, latent]`` and ``total`` ``[latent]``
    (the attribution summed over positions), ``clean_metric``, ``baseline`` (``"zero"`` or ``"corrupted"``) and,
    where asked, ``exact`` ``[latent]`` (:func:`latent_ablation` of the chosen latents, labelled by latent)."""

    per_position: Result
    total: Result
    clean_metric: float
    baseline: str
    exact: Optional[Result] = None

    def top(self, n: int = 10) -> list:
        """The ``n`` latents with the largest ``|total|``: ``(latent, total)`` pairs."""
        v = self.total.values
        order = torch.argsort(-v.abs())[:n].tolist()
        return [(i, float(v[i])) for i in order]


def _bos_mask(model: Any, toks: Tensor) -> Tensor:
    """``[batch, pos]`` True where a position is read (every position but a leading BOS)."""
    bos = getattr(getattr(model, "tokenizer", None), "bos_token_id", None)
    keep = torch.ones(toks.shape, dtype=torch.bool, device=toks.device)
    if bos is not None and toks.shape[1] > 1:
        keep[:, 0] = toks[:, 0] != bos
    return keep


def _latents_of(model: Any, sae: SAE, name: str, toks: Tensor) -> tuple[Tensor, Tensor]:
    """The latents ``[batch, pos, d_sae]`` and the error term ``x - decode(latents)`` at ``name`` on ``toks``."""
    from circuitlab.engine.collect import run_hooks, stop_layer

    got: dict[str, Tensor] = {}

    def grab(act: Tensor, hook=None) -> None:
        x = act.reshape(*act.shape[:2], -1).to(sae.W_enc.dtype)
        f = sae.encode(x)
        got["f"], got["err"] = f, x - sae.decode(f)

    with torch.no_grad():
        run_hooks(model, toks, [(name, grab)], stop=stop_layer(model, [name]))
    if not torch.isfinite(got["f"]).all():
        raise InputError(f"the latents at hook {name!r} are not finite (NaN or infinite activations or SAE weights); "
                         "check the model (circuitlab.core.check_weights_finite).")
    return got["f"], got["err"]


def _setup(model: Any, sae: Any, prompts: Prompts, metric: Any, corrupted: Optional[Prompts],
           hook_name: Optional[str]):
    model = as_model(model)
    sae = check_sae(sae)
    name = sae_hook(model, sae, hook_name)
    toks = to_tokens(model, prompts)
    metric = bind_metric(metric, model)
    keep = _bos_mask(model, toks)
    f, err = _latents_of(model, sae, name, toks)
    if corrupted is None:
        base = torch.zeros_like(f)
    else:
        ctoks = to_tokens(model, corrupted)
        if ctoks.shape != toks.shape:
            raise InputError(f"corrupted prompts have token shape {tuple(ctoks.shape)}, the clean ones "
                             f"{tuple(toks.shape)}; give as many corrupted prompts as clean ones, of the same length.")
        base, _ = _latents_of(model, sae, name, ctoks)
    base = torch.where(keep[..., None], base, f)  # BOS keeps its clean latents
    return model, sae, name, toks, metric, f, err, base


def _run(model: Any, sae: SAE, name: str, toks: Tensor, f: Tensor, err: Tensor) -> Tensor:
    def hook(act: Tensor, hook=None) -> Tensor:
        return (sae.decode(f) + err).to(act.dtype).reshape(act.shape)

    return model.run_with_hooks(toks, fwd_hooks=[(name, hook)])


def latent_attribution(
    model: Any,
    sae: Any,
    prompts: Prompts,
    metric: Any,
    *,
    corrupted: Optional[Prompts] = None,
    hook_name: Optional[str] = None,
    exact: Union[int, Sequence[int], None] = None,
    max_memory: int = DEFAULT_MAX_MEMORY,
) -> LatentAttribution:
    """Attribution patching of ``metric`` to the latents of ``sae`` (module notes), with the exact ablation of
    the latents in ``exact`` beside it.

    Args:
        model: a model or a registry name. sae: an SAE, a shipped name or an SAELens folder.
        prompts: the clean prompts (same token length). metric: logits ``[batch, pos, d_vocab]`` -> one number
            (e.g. :class:`circuitlab.metrics.LogitDiff`).
        corrupted: prompts whose latents are the baseline (default: zero, i.e. latent ablation).
        hook_name: the hook (default the SAE's own).
        exact: latents to ablate exactly as well (:func:`latent_ablation`), e.g. the top ones of a first call.
        max_memory: bytes per forward pass for the exact ablations.
    """
    model, sae, name, toks, metric, f, err, base = _setup(model, sae, prompts, metric, corrupted, hook_name)
    max_memory = check_max_memory(max_memory)
    leaf = f.detach().clone().requires_grad_(True)
    logits = _run(model, sae, name, toks, leaf, err.detach())
    value = metric(logits)
    value = value if isinstance(value, Tensor) else torch.tensor(float(value))
    if value.numel() != 1 or not value.requires_grad:
        raise InputError(f"metric={shorten(metric)} must return one number that depends on the logits (a 0-d "
                         "tensor, e.g. LogitDiff); got a value without a gradient.")
    (grad,) = torch.autograd.grad(value.reshape(()), leaf)
    attr = (grad * (base - f)).sum(0).detach().float().cpu()  # [pos, d_sae]
    labels = {"latent": [f"F{i}" for i in range(sae.cfg.d_sae)]}
    what = getattr(metric, '__name__', type(metric).__name__)
    common = dict(model=model_name(model), metric=f"attribution of {what}",
                  meta={"hook": name, "sae": repr(sae), "baseline": "corrupted" if corrupted is not None else "zero",
                        "prompts": int(toks.shape[0])})
    per_pos = Result(attr, ("pos", "latent"), labels={**labels, "pos": [str(p) for p in range(attr.shape[0])]},
                     title="Attribution patching to SAE latents, per position", **common)
    total = Result(attr.sum(0), ("latent",), labels=labels, title="Attribution patching to SAE latents", **common)
    ex = None
    if exact is not None:
        ex = _ablate(model, sae, name, toks, metric, f, err, base, check_latents(sae, exact), max_memory,
                     corrupted is not None)
    return LatentAttribution(per_position=per_pos, total=total, clean_metric=float(value.detach()),
                             baseline="corrupted" if corrupted is not None else "zero", exact=ex)


@torch.no_grad()
def _ablate(model, sae, name, toks, metric, f, err, base, latents, max_memory, corrupted) -> Result:
    clean = float(metric(_run(model, sae, name, toks, f, err)))
    B = toks.shape[0]
    effects = []
    for chunk in row_chunks(len(latents), B * row_bytes(model, toks.shape[1], logits=model.cfg.d_vocab_out),
                            max_memory):
        group = latents[chunk]
        ff = f.repeat(len(group), 1, 1)
        for g, i in enumerate(group):
            ff[g * B:(g + 1) * B, :, i] = base[:, :, i]
        logits = _run(model, sae, name, toks.repeat(len(group), 1), ff, err.repeat(len(group), 1, 1))
        for g in range(len(group)):
            effects.append(float(metric(logits[g * B:(g + 1) * B])) - clean)
    return Result(torch.tensor(effects), ("latent",), labels={"latent": [f"F{i}" for i in latents]},
                  title="Exact latent " + ("patching" if corrupted else "ablation") + ": metric change",
                  model=model_name(model), metric="M(patched) - M(clean)",
                  meta={"hook": name, "latents": list(latents), "clean_metric": clean})


def latent_ablation(
    model: Any,
    sae: Any,
    prompts: Prompts,
    metric: Any,
    latents: Union[int, Sequence[int]],
    *,
    corrupted: Optional[Prompts] = None,
    hook_name: Optional[str] = None,
    max_memory: int = DEFAULT_MAX_MEMORY,
) -> Result:
    """The exact change of ``metric`` when each latent in ``latents`` is set to its baseline (zero, or its value
    on ``corrupted``) at every position but BOS, the error term held at its clean value (module notes):
    a Result along ``"latent"``; its meta holds the clean metric."""
    model, sae, name, toks, metric, f, err, base = _setup(model, sae, prompts, metric, corrupted, hook_name)
    if latents is None:
        raise InputError(f"latents: name the latents to ablate (each costs a forward pass), e.g. [3, 17]; this SAE "
                         f"has {sae.cfg.d_sae}.")
    return _ablate(model, sae, name, toks, metric, f, err, base, check_latents(sae, latents),
                   check_max_memory(max_memory), corrupted is not None)


@dataclass(frozen=True)
class Steering:
    """What :func:`steer` computed at the last position of each prompt: ``rises`` / ``falls``
    (:class:`~circuitlab.results.TopTokens` ``[prompt, rank]``: the log-probability change, largest first /
    most negative first), ``clean_top`` / ``steered_top`` (the most probable tokens, their probabilities),
    ``kl`` ``[prompt]`` (KL(clean || steered), nats), ``latent``, ``alpha``, ``hook``."""

    rises: TopTokens
    falls: TopTokens
    clean_top: TopTokens
    steered_top: TopTokens
    kl: Result
    latent: int
    alpha: float
    hook: str


@torch.no_grad()
def steer(
    model: Any,
    sae: Any,
    prompts: Prompts,
    latent: int,
    alpha: float,
    *,
    hook_name: Optional[str] = None,
    positions: Optional[Sequence[int]] = None,
    k: int = 10,
) -> Steering:
    """Add ``alpha * W_dec[latent]`` at the SAE's hook and compare the next-token distribution (module notes).

    Args:
        model: a model or a registry name. sae: an SAE, a shipped name or an SAELens folder.
        prompts: one prompt or several of the same token length.
        latent: the latent whose decoder direction is added. alpha: its multiple (negative subtracts it).
        hook_name: the hook (default the SAE's own).
        positions: the positions to steer (default every position but BOS).
        k: tokens listed per prompt.
    """
    model = as_model(model)
    sae = check_sae(sae)
    name = sae_hook(model, sae, hook_name)
    (latent,) = check_latents(sae, [latent] if not isinstance(latent, (list, tuple)) else latent)
    alpha = check_number(alpha, "alpha", what="a finite number (the multiple of the decoder direction to add)")
    k = check_count_within(k, "k", model.cfg.d_vocab_out, "tokens in the vocabulary")
    toks = to_tokens(model, prompts)
    mask = _bos_mask(model, toks)
    if positions is not None:
        if isinstance(positions, (str, bytes)) or not isinstance(positions, Sequence) or not positions or any(
                isinstance(p, bool) or not isinstance(p, int) or not -toks.shape[1] <= p < toks.shape[1]
                for p in positions):
            raise InputError(f"positions={shorten(positions)}: give a non-empty list of positions in "
                             f"[0, {toks.shape[1]}) (negative counts from the end).")
        mask = torch.zeros_like(mask)
        mask[:, [p % toks.shape[1] for p in positions]] = True
    d = sae.W_dec.detach()[latent]

    def add(act: Tensor, hook=None) -> Tensor:
        flat = act.reshape(*act.shape[:2], -1)
        out = flat + alpha * mask[..., None].to(flat.dtype) * d.to(flat.dtype)
        return out.reshape(act.shape)

    clean = torch.log_softmax(model(toks)[:, -1].float(), dim=-1)
    steered = torch.log_softmax(model.run_with_hooks(toks, fwd_hooks=[(name, add)])[:, -1].float(), dim=-1)
    kl = (clean.exp() * (clean - steered)).sum(-1)
    change = steered - clean
    strings = lambda ids: token_strings(model, ids)  # noqa: E731
    common = dict(k=k, strings=strings, axes=("prompt", "rank"), model=model_name(model),
                  meta={"hook": name, "latent": latent, "alpha": alpha})
    return Steering(
        rises=TopTokens.from_scores(change, title=f"Log-probability rises, F{latent} x {alpha:g}",
                                    metric="log p(steered) - log p(clean)", **common),
        falls=TopTokens.from_scores(change, largest=False, title=f"Log-probability falls, F{latent} x {alpha:g}",
                                    metric="log p(steered) - log p(clean)", **common),
        clean_top=TopTokens.from_scores(clean.exp(), title="Next token, clean", metric="probability", **common),
        steered_top=TopTokens.from_scores(steered.exp(), title=f"Next token, F{latent} x {alpha:g}",
                                          metric="probability", **common),
        kl=Result(kl.cpu(), ("prompt",), title="KL(clean || steered)", metric="nats", model=model_name(model),
                  meta={"hook": name, "latent": latent, "alpha": alpha}),
        latent=latent, alpha=alpha, hook=name)


__all__ = ["LatentAttribution", "latent_attribution", "latent_ablation", "Steering", "steer"]
