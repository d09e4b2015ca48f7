"""ROME: Rank-One Model Editing (Meng et al. 2022, "Locating and Editing Factual Associations in GPT", section 3).

One fact ``(subject, relation) -> new object`` is written into one MLP layer ``L`` by changing its output weights
``W_out`` by a rank-one matrix. Read as a linear associative memory, ``W_out`` maps keys (the MLP's hidden
activations ``k``, ``blocks.L.mlp.hook_post``) to values (its output ``k @ W_out + b_out``):

1. **the key** ``k*``: the key at the subject's last token, averaged over the prompt alone and after ``n_prefixes``
   short texts the model writes itself (:func:`circuitlab.editing.edit.context_prefixes`);
2. **the value** ``v* = v0 + delta``: ``v0 = k* @ W_out + b_out`` (what the layer outputs for ``k*`` now) plus the
   ``delta`` that, added to the layer's output at the last subject token, makes the model say the new object
   across the prefixes while keeping the essence prompt's distribution (the paper's loss: NLL + KL + weight decay;
   :func:`circuitlab.editing.edit.optimise_delta`);
3. **the update**: the ``Delta`` that minimises the change of outputs over the corpus's keys, ``|Delta^T K|`` with
   ``C = K K^T / n`` (:func:`circuitlab.editing.covariance.key_covariance`), subject to the new association
   ``k* @ (W_out + Delta) + b_out = v*``. Its closed form (the paper's eq. 2) is rank one:
   ``Delta = u (v* - v0)^T / (u . k*)`` with ``u = C^{-1} k*`` (:func:`rome_update`, in float64).

The layer defaults to the **causal-tracing peak**: the layer whose MLP output, restored at the last subject token,
brings back most of the model's answer (:func:`default_layer`, :func:`circuitlab.tracing.trace` with
``kinds="mlp"``). Works on any ``HookedTransformer`` with MLPs (gated or not, with or without a post-MLP norm: the
value is the MLP's own output, before such a norm), on CPU.

    from circuitlab.editing import rome

    edit = rome(model, "Wexmira has a house in", "Wexmira", " Tarnwick")
    with edit.applied(model):
        ...                                   # the model now says " Tarnwick"; afterwards, its old weights exactly
    edited = edit.new_model(model)            # or an edited copy
"""

from __future__ import annotations

import time
from typing import Any, Optional, Sequence, Union

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from circuitlab.core import (ModelLike, as_model, check_count, check_mlp_layer, check_seed, model_name, shorten,
                             to_tokens)
from circuitlab.editing.covariance import DEFAULT_TOKENS, key_covariance
from circuitlab.editing.edit import (Edit, check_covariance, check_editable, check_hyper, check_request,
                                     context_prefixes, essence_rows, optimise_delta, prefixed, rewrite_rows,
                                     subject_keys)
from circuitlab.errors import InputError

__all__ = ["rome", "rome_update", "default_layer"]


@torch.no_grad()
def default_layer(model: ModelLike, prompt: str, subject: str, *, samples: int = 5, seed: int = 0) -> int:
    """The causal-tracing peak: the layer whose MLP output (restored over the tracing window) at the last subject
    token has the largest indirect effect on the model's own top prediction after ``prompt``."""
    from circuitlab.tracing import subject_span, trace

    model = as_model(model)
    check_mlp_layer(model, 0)
    tokens = to_tokens(model, prompt)
    answer = int(model(tokens, return_type="logits")[0, -1].argmax())
    span = subject_span(model, prompt, subject, tokens)
    res = trace(model, prompt, subject, answer, kinds="mlp", samples=samples, seed=seed, progress=False)
    effect = res.indirect_effect().values[0, span[1] - 1]
    return int(effect.argmax())


def check_layer_choice(model: HookedTransformer, layer: Any, prompt: str, subject: str, seed: int) -> int:
    """``layer``: ``None`` or ``"auto"`` (the tracing peak, :func:`default_layer`) or a layer with an MLP."""
    if layer is None or (isinstance(layer, str) and layer == "auto"):
        check_mlp_layer(model, 0)
        return default_layer(model, prompt, subject, seed=seed)
    if isinstance(layer, str):
        raise InputError(f"layer={shorten(layer)}: give 'auto' (the causal-tracing peak) or a layer number.")
    return check_mlp_layer(model, layer)


def rome_update(W_out: Float[Tensor, "d_mlp d_model"], b_out: Float[Tensor, " d_model"], key: Float[Tensor, " d_mlp"],
                value: Float[Tensor, " d_model"], covariance: Float[Tensor, "d_mlp d_mlp"]
                ) -> Float[Tensor, "d_mlp d_model"]:
    """ROME's closed form (Meng et al. 2022, eq. 2), in float64: ``Delta = u (value - key @ W_out - b_out)^T /
    (u . key)`` with ``u = C^{-1} key``. Then ``key @ (W_out + Delta) + b_out == value``, and among all updates that
    satisfy it, ``Delta`` changes the outputs of the corpus's keys least (``tr(Delta^T C Delta)`` is minimal)."""
    W, b, k, v, C = (t.detach().to("cpu", torch.float64) for t in (W_out, b_out, key, value, covariance))
    try:
        u = torch.linalg.solve(C, k)
    except RuntimeError:
        raise InputError("the key covariance is singular: read more corpus tokens (key_covariance n_tokens=) so "
                         "that every key direction is seen.") from None
    denom = float(u @ k)
    if not denom > 0:
        raise InputError("the key covariance is not positive definite along the subject's key (u . k* <= 0): "
                         "recompute it from more tokens.")
    return torch.outer(u, v - (k @ W + b)) / denom


def rome(model: ModelLike, prompt: str, subject: str, new: str, *, layer: Union[int, str, None] = None,
         covariance: Optional[Float[Tensor, "d_mlp d_mlp"]] = None, corpus: Optional[Sequence[str]] = None,
         n_tokens: int = DEFAULT_TOKENS, n_prefixes: int = 5, prefix_length: int = 10, steps: int = 20, lr: float = 0.5,
         v_weight_decay: float = 0.5, kl_factor: float = 0.0625, clamp: float = 4.0, seed: int = 0, cache: Any = True,
         progress: bool = False) -> Edit:
    """Write ``subject -> new`` into one MLP layer with ROME (see the module docstring).

    Args:
        model: a model with MLPs, or a name.
        prompt, subject, new: the prompt up to the object, the subject as written in it, the new object with its
            leading space (several tokens allowed: the NLL is over all of them, teacher-forced).
        layer: ``None`` or ``"auto"`` (the causal-tracing peak at the last subject token), or a layer.
        covariance: ``C`` as a ``[d_mlp, d_mlp]`` tensor; default :func:`key_covariance` of ``corpus`` (texts; default
            corpus) over ``n_tokens`` tokens, cached on disk (``cache``).
        n_prefixes, prefix_length: generated context prefixes (ROME: 10 of 10 tokens; 5 here by default, for CPU).
        steps, lr, v_weight_decay, kl_factor, clamp: the value's optimisation (ROME's GPT-2 XL settings).
        seed: the prefixes' sampling (and the tracing noise when ``layer="auto"``).

    Returns:
        An :class:`~circuitlab.editing.edit.Edit` with ``meta``: ``key`` (``k*``), ``value`` (``v*``), ``v0``,
        ``delta``, ``optimisation`` (loss and P(new) per step), ``prefixes`` (texts), ``covariance_tokens``,
        ``covariance_cached``, ``seconds`` (``{"covariance", "value", "update", "total"}``).
    """
    t0 = time.perf_counter()
    model = as_model(model)
    check_editable(model)
    request, toks, span, new_ids = check_request(model, prompt, subject, new)
    n_prefixes = check_count(n_prefixes, "n_prefixes", minimum=0)
    prefix_length = check_count(prefix_length, "prefix_length")
    steps, lr, weight_decay, kl_factor, clamp = check_hyper(steps, lr, v_weight_decay, kl_factor, clamp)
    seed = check_seed(seed)
    if covariance is not None:
        C = check_covariance(model, covariance)
    layer = check_layer_choice(model, layer, prompt, subject, seed)
    seconds = {}
    if covariance is None:
        cov = key_covariance(model, layer, corpus, n_tokens=n_tokens, cache=cache, progress=progress)
        C, n_cov, cov_cached = cov.matrix, cov.n_tokens, cov.cached
        seconds["covariance"] = cov.seconds
    else:
        n_cov, cov_cached = None, None
        seconds["covariance"] = 0.0
    t1 = time.perf_counter()
    prefixes = context_prefixes(model, n_prefixes, prefix_length, seed)
    contexts = prefixed(toks, span, prefixes, bool(model.cfg.default_prepend_bos))
    k = subject_keys(model, layer, contexts)
    mlp = model.blocks[layer].mlp
    W, b = mlp.W_out.detach().double().cpu(), mlp.b_out.detach().double().cpu()
    v0 = k @ W + b
    delta, record = optimise_delta(model, "mlp", layer, rewrite_rows(contexts, new_ids), essence_rows(model, subject),
                                   v0, steps=steps, lr=lr, weight_decay=weight_decay, kl_factor=kl_factor,
                                   clamp=clamp)
    t2 = time.perf_counter()
    v = v0 + delta
    update = rome_update(W, b, k, v, C)
    seconds.update(value=t2 - t1, update=time.perf_counter() - t2, total=time.perf_counter() - t0)
    meta = dict(layer=layer, key=k, value=v, v0=v0, delta=delta, optimisation=record["steps"],
                prefixes=[model.to_string(torch.tensor(p)) for p in prefixes], covariance_tokens=n_cov,
                covariance_cached=cov_cached, seconds=seconds, model=model_name(model),
                settings=dict(n_prefixes=n_prefixes, prefix_length=prefix_length, steps=steps, lr=lr,
                              weight_decay=weight_decay, kl_factor=kl_factor, clamp=clamp, seed=seed))
    return Edit("rome", {layer: update}, (request,), meta)
