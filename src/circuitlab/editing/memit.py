"""MEMIT: Mass-Editing Memory in a Transformer (Meng et al. 2023, "Mass-Editing Memory in a Transformer").

Many facts at once, spread over a range of MLP layers ``R = [l_1 .. l_L]`` (the "critical path" that causal tracing
finds; ROME edits one layer, one fact):

1. **targets**: for each request ``i``, ``z_i = h_i + delta_i``, where ``h_i`` is the residual stream after the
   *last* layer of ``R`` at the subject's last token and ``delta_i`` is found by gradient descent on the same loss as
   ROME's value (NLL of the new object over prefixed prompts + KL on the essence prompt + weight decay;
   :func:`circuitlab.editing.edit.optimise_delta` at the residual stream, not the MLP output);
2. **spreading**: layer by layer, from the first of ``R``, with the updates of earlier layers already applied:
   the keys ``K`` (``[n, d_mlp]``, each averaged over the prefixes), the residual still missing at the last layer,
   ``z_i - h_i(now)``, divided by the number of layers left (``R_l``: that layer's share), and the update that best
   writes ``R_l`` for the keys while preserving the corpus's keys (the paper's eq. 14, in TransformerLens's
   orientation): ``Delta = (lambda C + K^T K)^{-1} K^T R_l``, the solution of the normal equations of
   ``min |K Delta - R_l|^2 + lambda tr(Delta^T C Delta)`` (:func:`memit_update`, float64).

``lambda`` (``mom2_weight``) weighs the preserved keys against the new ones. The paper used 15,000 on GPT-J (whose
MLPs have 16,384 hidden units); since ``k^T C^{-1} k`` grows with ``d_mlp``, the default here is that value scaled
to the model: ``15000 * d_mlp / 16384``. With one request and one layer the update is rank one along
``C^{-1} k``, ROME's direction (Sherman-Morrison; a test checks it).

The default layers end at the causal-tracing peak of the first request (:func:`circuitlab.editing.rome.default_layer`)
and span GPT-J's proportion of its depth (6 of 28 layers), at least one.
"""

from __future__ import annotations

import time
from typing import Any, Optional, Sequence, Union

import torch
from jaxtyping import Float
from torch import Tensor

from circuitlab.core import ModelLike, as_model, check_count, check_mlp_layer, check_number, check_seed, model_name, \
    shorten
from circuitlab.editing.covariance import DEFAULT_TOKENS, key_covariance
from circuitlab.editing.edit import (Edit, check_covariance, check_edit_layers, check_editable, check_hyper,
                                     check_request, check_requests, context_prefixes, essence_rows, optimise_delta,
                                     prefixed, rewrite_rows, subject_keys)
from circuitlab.editing.rome import default_layer
from circuitlab.engine.collect import run_hooks
from circuitlab.errors import InputError

__all__ = ["memit", "memit_update", "default_layers", "default_mom2_weight"]

#: GPT-J's share of layers that MEMIT edits (layers 3-8 of 28)
PAPER_SPAN, PAPER_DEPTH, PAPER_WEIGHT, PAPER_D_MLP = 6, 28, 15000.0, 16384


def default_mom2_weight(d_mlp: int) -> float:
    """MEMIT's ``lambda`` for GPT-J (15,000 at ``d_mlp = 16,384``) scaled to ``d_mlp``."""
    return PAPER_WEIGHT * d_mlp / PAPER_D_MLP


def default_layers(model: ModelLike, prompt: str, subject: str, *, seed: int = 0) -> list[int]:
    """Layers ending at the causal-tracing peak, ``max(1, round(6 * n_layers / 28))`` of them."""
    model = as_model(model)
    peak = default_layer(model, prompt, subject, seed=seed)
    span = max(1, round(PAPER_SPAN * model.cfg.n_layers / PAPER_DEPTH))
    return list(range(max(0, peak - span + 1), peak + 1))


def memit_update(keys: Float[Tensor, "n d_mlp"], residuals: Float[Tensor, "n d_model"],
                 covariance: Float[Tensor, "d_mlp d_mlp"], mom2_weight: float) -> Float[Tensor, "d_mlp d_model"]:
    """``Delta = (lambda C + K^T K)^{-1} K^T R`` in float64: the minimiser of ``|K Delta - R|^2 + lambda
    tr(Delta^T C Delta)``."""
    K, R, C = (t.detach().to("cpu", torch.float64) for t in (keys, residuals, covariance))
    try:
        return torch.linalg.solve(mom2_weight * C + K.T @ K, K.T @ R)
    except RuntimeError:
        raise InputError("lambda C + K^T K is singular: read more corpus tokens for the covariance.") from None


@torch.no_grad()
def _resid_at(model, layer: int, tokens: list[list[int]], positions: list[int]) -> Tensor:
    """The residual stream after block ``layer`` at one position per prompt (one prompt at a time), float64."""
    out = []
    for toks, p in zip(tokens, positions):
        got = {}

        def keep(act, hook=None):
            got["h"] = act[0, p].double().cpu()

        run_hooks(model, torch.tensor([toks], device=model.cfg.device), [(f"blocks.{layer}.hook_resid_post", keep)],
                  stop=layer + 1)
        out.append(got["h"])
    return torch.stack(out)


def memit(model: ModelLike, requests: Sequence[Any], *, layers: Union[str, int, Sequence[int], None] = None,
          covariances: Optional[dict] = None, corpus: Optional[Sequence[str]] = None, n_tokens: int = DEFAULT_TOKENS,
          mom2_weight: Optional[float] = None, n_prefixes: int = 5, prefix_length: int = 10, steps: int = 20,
          lr: float = 0.5, v_weight_decay: float = 0.5, kl_factor: float = 0.0625, clamp: float = 4.0, seed: int = 0,
          cache: Any = True, progress: bool = False) -> Edit:
    """Write a batch of facts into the MLPs of ``layers`` with MEMIT (see the module docstring).

    Args:
        requests: :class:`~circuitlab.editing.edit.Request` objects or ``(prompt, subject, new)`` triples.
        layers: ``None`` or ``"auto"`` (:func:`default_layers`), a layer, or a list of layers.
        covariances: ``{layer: [d_mlp, d_mlp] tensor}``; layers missing are computed by :func:`key_covariance`
            (``corpus``, ``n_tokens``, ``cache``).
        mom2_weight: ``lambda``; default :func:`default_mom2_weight`.
        The rest as for :func:`circuitlab.editing.rome.rome`.

    Returns:
        An :class:`~circuitlab.editing.edit.Edit` with one change per layer; ``meta``: ``targets`` (``z``),
        ``deltas`` (per request), ``optimisation`` (per request), ``residual_norms`` (per layer, before its
        update), ``mom2_weight``, ``seconds``.
    """
    t0 = time.perf_counter()
    model = as_model(model)
    check_editable(model)
    triples = check_requests(requests)
    checked = [check_request(model, *r, what=f"requests[{i}]") for i, r in enumerate(triples)]
    n_prefixes = check_count(n_prefixes, "n_prefixes", minimum=0)
    prefix_length = check_count(prefix_length, "prefix_length")
    steps, lr, weight_decay, kl_factor, clamp = check_hyper(steps, lr, v_weight_decay, kl_factor, clamp)
    seed = check_seed(seed)
    lam = default_mom2_weight(model.cfg.d_mlp) if mom2_weight is None else \
        check_number(mom2_weight, "mom2_weight", low=0, low_open=True)
    if layers is None or isinstance(layers, str):
        if layers not in (None, "auto"):
            raise InputError(f"layers={shorten(layers)}: give 'auto' (ending at the causal-tracing peak), a layer or "
                             "a list of layers.")
        layers = default_layers(model, triples[0][0], triples[0][1], seed=seed)
    layers = check_edit_layers(model, layers)
    given = {}
    if covariances is not None:
        if not isinstance(covariances, dict):
            raise InputError(f"covariances must be a dict {{layer: [d_mlp, d_mlp] tensor}}; got "
                             f"{type(covariances).__name__}.")
        given = {check_mlp_layer(model, l): check_covariance(model, c, f"covariances[{l}]")
                 for l, c in covariances.items()}
    seconds = {"covariance": 0.0}
    C = {}
    for l in layers:
        if l in given:
            C[l] = given[l]
        else:
            cov = key_covariance(model, l, corpus, n_tokens=n_tokens, cache=cache, progress=progress)
            C[l], seconds["covariance"] = cov.matrix, seconds["covariance"] + cov.seconds
    t1 = time.perf_counter()
    last = layers[-1]
    prefixes = context_prefixes(model, n_prefixes, prefix_length, seed)
    bos = bool(model.cfg.default_prepend_bos)
    contexts = [prefixed(toks, span, prefixes, bos) for _, toks, span, _ in checked]
    plain_tokens = [c[0][0] for c in contexts]
    plain_pos = [c[0][1] for c in contexts]
    h0 = _resid_at(model, last, plain_tokens, plain_pos)
    deltas, records = [], []
    for i, (req, toks, span, new_ids) in enumerate(checked):
        d, rec = optimise_delta(model, "resid", last, rewrite_rows(contexts[i], new_ids),
                                essence_rows(model, req.subject), h0[i], steps=steps, lr=lr,
                                weight_decay=weight_decay, kl_factor=kl_factor, clamp=clamp)
        deltas.append(d)
        records.append(rec["steps"])
    z = h0 + torch.stack(deltas)
    t2 = time.perf_counter()
    saved = {l: model.blocks[l].mlp.W_out.detach().clone() for l in layers}
    updates, norms = {}, []
    try:
        for j, l in enumerate(layers):
            K = torch.stack([subject_keys(model, l, c) for c in contexts])
            R = (z - _resid_at(model, last, plain_tokens, plain_pos)) / (len(layers) - j)
            norms.append(float(R.norm(dim=1).mean()))
            updates[l] = memit_update(K, R, C[l], lam)
            with torch.no_grad():
                W = model.blocks[l].mlp.W_out
                W.copy_((W.double() + updates[l].to(W.device)).to(W.dtype))
    finally:
        with torch.no_grad():
            for l, W0 in saved.items():
                model.blocks[l].mlp.W_out.copy_(W0)
    seconds.update(targets=t2 - t1, updates=time.perf_counter() - t2, total=time.perf_counter() - t0)
    meta = dict(layers=layers, targets=z, deltas=torch.stack(deltas), optimisation=records, residual_norms=norms,
                mom2_weight=lam, seconds=seconds, model=model_name(model),
                prefixes=[model.to_string(torch.tensor(p)) for p in prefixes],
                settings=dict(n_prefixes=n_prefixes, prefix_length=prefix_length, steps=steps, lr=lr,
                              weight_decay=weight_decay, kl_factor=kl_factor, clamp=clamp, seed=seed))
    return Edit("memit", updates, tuple(c[0] for c in checked), meta)
