"""Edge attribution patching (EAP) and its integrated-gradients variant (EAP-IG): a score for every edge at once.

Patching an edge ``u -> v`` means: run the clean prompt, but let receiver ``v`` read sender ``u``'s output from the
corrupted prompt instead of the clean one (every other reader of ``u`` still sees the clean output). To first order
in the change ``delta_u = a_u(corrupted) - a_u(clean)``, the metric moves by::

    score(u -> v) = sum over batch and positions of  delta_u . d metric / d input_v   (gradient on the clean run)

which is **EAP** (Syed et al. 2023). Every edge needs only ``delta_u`` (one forward pass on each prompt) and the
gradient at every receiver's input (one backward pass): all edges, whatever their number, for about the cost of
three forward passes.

**Sign and direction.** A score estimates ``metric(clean, edge corrupted) - metric(clean)``: the *noising*
direction (see :func:`~circuitlab.patching.attribution`, ``direction="noising"``), with the clean run as the base
and the unpatched value subtracted. With a logit difference as the metric, an edge the behaviour relies on has a
negative score (corrupting it lowers the metric); rank edges by ``|score|``. The estimate is linear: exact when the
metric is linear in ``input_v``, approximate elsewhere (softmax, LayerNorm scale, a large ``delta_u``).

(auto-circuit's reference EAP, ``edge_attribution_patching_prune_scores``, multiplies the gradient by
``a_u(clean) - a_u(corrupted)``: its scores are these with the opposite sign.)

**EAP-IG** (Hanna et al. 2024) replaces the gradient at the clean run by its average along the straight line from
the corrupted input embedding to the clean one (integrated gradients, taken at the input embedding as in their
code): with ``alpha_k = k / steps`` for ``k = 1 ... steps``, the model runs the clean prompt with its embedding
(``blocks.0.hook_resid_pre``) set to ``embed(corrupted) + alpha_k (embed(clean) - embed(corrupted))``, and::

    score_IG(u -> v) = delta_u . mean over k of  d metric / d input_v  (at alpha_k)

``alpha = 1`` is the clean run itself, so ``steps=1`` gives EAP exactly. It costs one forward and one backward
pass per step, plus one forward pass on each prompt.

**How the gradients are read.** A head's query, key and value inputs are three receivers, although all three are
the same residual stream in the forward pass: each reaches the metric only through its own projection
``W_Q[h]`` (``W_K[h]``, ``W_V[h]``) after the layer's ``ln1``. So the gradient at head ``h``'s query input is the
gradient at its query (``attn.hook_q``) pulled back through ``W_Q[h]`` and through the norm's Jacobian at
``resid_pre`` (:func:`_through_norm`, exact for TransformerLens's four norms). TransformerLens can instead run
one copy of ``ln1`` per head and receiver (``cfg.use_split_qkv_input``, ``hook_q_input``...), which gives the same
gradients at several times the cost; the tests check the two against each other. For grouped-query attention
each query head's own key and value are read with the key/value heads ungrouped
(``cfg.ungroup_grouped_query_attention``), an MLP's input at ``hook_mlp_in`` (``cfg.use_hook_mlp_in``), the
logits' at the final residual stream. :func:`receiver_inputs` sets those flags for the duration of a call and
restores them afterwards, even on error. The gradient at each receiver is multiplied by its senders' activation
differences as soon as the backward pass reaches it (one matrix product per hook), so only one layer's gradients
are alive at a time, and no parameter's gradient is computed. Senders' outputs are read at ``hook_z`` and
multiplied by each head's ``W_O`` (``z_h @ W_O[h]``, without ``b_O``: see :mod:`circuitlab.circuits.graph`).
"""

from __future__ import annotations

import contextlib
import time
from typing import Iterator, Optional

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from circuitlab.circuits.circuit import Circuit
from circuitlab.circuits.graph import Graph, Node
from circuitlab.core import (DEFAULT_MAX_MEMORY, ModelLike, Prompts, as_model, check_finite, check_max_memory,
                             final_norm, metric_name, model_name, progress_bar, readout, row_bytes, shorten, softcap,
                             to_tokens)
from circuitlab.errors import InputError
from circuitlab.metrics import Metric, bind_metric, is_declarative
from circuitlab.patching.sites import scalar, split_prompts


#: the configuration flags :func:`receiver_inputs` sets (and restores)
RECEIVER_FLAGS = ("use_split_qkv_input", "use_attn_in", "use_hook_mlp_in", "ungroup_grouped_query_attention")


def eap(
    model: ModelLike,
    clean_tokens: Prompts,
    corrupted_tokens: Prompts,
    metric: Metric,
    *,
    max_memory: int = DEFAULT_MAX_MEMORY,
    progress: bool = False,
) -> Circuit:
    """Edge attribution patching: a first-order estimate of every edge's effect, from one backward pass.

    Args:
        model: a HookedTransformer the circuit graph supports (see :mod:`circuitlab.circuits.graph`), or a name
            for :func:`circuitlab.load_model`.
        clean_tokens, corrupted_tokens: prompt pairs (text, or token ids ``[batch, pos]``) of identical shape.
        metric: a metric from :mod:`circuitlab.metrics` (then only the logits it reads are computed), or any
            differentiable ``metric(logits [batch, pos, d_vocab]) -> scalar``.
        max_memory: rough bound in bytes on the activations held at once (the package's one meaning); a batch
            too large is scored in parts whose scores are averaged by size (exact for the metrics of
            :mod:`circuitlab.metrics`, which are means over prompts).
        progress: show a progress bar over the parts.

    Returns:
        a :class:`~circuitlab.circuits.circuit.Circuit` of every edge of the model's graph with its score (the
        estimated ``metric(clean, edge corrupted) - metric(clean)``, see the module docstring); ``meta`` holds the
        method, the clean and corrupted metric values, the number of parts and the seconds taken.
        ``.top(k)`` gives the ``k`` edges of largest ``|score|``.
    """
    return _score_edges(model, clean_tokens, corrupted_tokens, metric, steps=None, max_memory=max_memory,
                        progress=progress)


def eap_ig(
    model: ModelLike,
    clean_tokens: Prompts,
    corrupted_tokens: Prompts,
    metric: Metric,
    steps: int = 5,
    *,
    max_memory: int = DEFAULT_MAX_MEMORY,
    progress: bool = False,
) -> Circuit:
    """EAP with integrated gradients (EAP-IG): gradients averaged over ``steps`` points between the corrupted and
    the clean input embedding (``alpha = 1/steps, 2/steps, ..., 1``; ``steps=1`` is :func:`eap`).

    Same arguments and result as :func:`eap`; costs ``steps`` forward and backward passes, plus one forward pass
    on each prompt.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InputError(f"steps must be a positive int (points along the integration path, e.g. 5); got "
                         f"{shorten(steps)}.")
    return _score_edges(model, clean_tokens, corrupted_tokens, metric, steps=steps, max_memory=max_memory,
                        progress=progress)


# ---------------------------------------------------------------------------------------------------------
# The receivers' inputs, exposed for the duration of a call
# ---------------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def receiver_inputs(model: HookedTransformer, split_qkv: bool = True) -> Iterator[None]:
    """Expose every receiver's own input as a hook (see the module docstring); restore the flags on exit.

    Inside, ``blocks.{l}.hook_mlp_in`` is ``[batch, pos, d_model]``, key and value heads of grouped-query attention
    are ungrouped (``hook_k`` and ``hook_v`` hold one entry per query head), and with ``split_qkv``
    ``blocks.{l}.hook_q_input`` / ``hook_k_input`` / ``hook_v_input`` are ``[batch, pos, n_heads, d_model]`` (one
    copy of the residual stream per head). The model computes the same outputs as without.
    """
    cfg = model.cfg
    saved = {flag: getattr(cfg, flag) for flag in RECEIVER_FLAGS}
    try:
        cfg.use_split_qkv_input = split_qkv
        cfg.use_attn_in = False  # one shared attention input per head would change what ln1's hooks hold
        cfg.use_hook_mlp_in = not cfg.attn_only
        cfg.ungroup_grouped_query_attention = cfg.n_key_value_heads is not None
        yield
    finally:
        for flag, value in saved.items():
            setattr(cfg, flag, value)


#: the norms TransformerLens applies before attention, and what :func:`_through_norm` needs to know of each
NORMS = {"LayerNorm": ("center", "weight"), "LayerNormPre": ("center",), "RMSNorm": ("weight",),
         "RMSNormPre": (), "Identity": None}


def norm_of(model: HookedTransformer, layer: int) -> Optional[tuple[str, ...]]:
    """What block ``layer``'s ``ln1`` does (see :data:`NORMS`); an error for a norm the method does not know."""
    name = type(model.blocks[layer].ln1).__name__
    if name not in NORMS:
        raise InputError(f"block {layer} normalises attention inputs with {name}; edge attribution knows "
                         f"{', '.join(NORMS)} only.")
    return NORMS[name]


def _through_norm(model: HookedTransformer, layer: int, letter: str, grad: Float[Tensor, "batch pos head d_head"],
                  normalized: Optional[Tensor], scale: Optional[Tensor]) -> Float[Tensor, "batch pos head d_model"]:
    """The gradient at each head's own ``letter`` input (q, k or v, before ``ln1``) from the gradient at its
    ``hook_{letter}``: pulled back through ``W_{letter}[h]`` and through the norm's Jacobian at this input.

    For ``y = w * n + b`` with ``n = center(x) / scale`` and ``scale = sqrt(mean(center(x)^2) + eps)`` (LayerNorm;
    RMSNorm without centering; the ``Pre`` variants without ``w``), the gradient at ``x`` of a cotangent ``c`` at
    ``y`` is ``(center(u) - n * mean(u * n)) / scale`` with ``u = w * c``. Here ``c = W[h] @ grad[h]``, so ``center``
    and ``w`` are applied to ``W`` once instead of to every head's ``d_model``-sized gradient. This is what
    ``cfg.use_split_qkv_input`` would give (one copy of the norm per head), without running the norm once per head.
    """
    attn = model.blocks[layer].attn
    W = {"q": attn.W_Q, "k": attn.W_K, "v": attn.W_V}[letter].detach().to(grad.dtype)  # [head, d_model, d_head]
    norm = norm_of(model, layer)
    if norm is None:
        return einops.einsum(grad, W, "b p h e, h d e -> b p h d")
    if "weight" in norm:
        W = W * model.blocks[layer].ln1.w.detach().to(grad.dtype)[None, :, None]
    # mean(u * n) for u = W g: the projection of n onto each head's columns, dotted with g
    n = normalized.to(grad.dtype)
    m = (einops.einsum(n, W, "b p d, h d e -> b p h e") * grad).sum(-1) / n.shape[-1]  # [batch, pos, head]
    if "center" in norm:
        W = W - W.mean(dim=1, keepdim=True)
    s = scale.to(grad.dtype)[:, :, :, None]  # [batch, pos, 1, 1]
    return einops.einsum(grad / s, W, "b p h e, h d e -> b p h d") - (n[:, :, None, :] / s) * m[..., None]


# ---------------------------------------------------------------------------------------------------------
# The method
# ---------------------------------------------------------------------------------------------------------

def _score_edges(model, clean_tokens, corrupted_tokens, metric, *, steps: Optional[int], max_memory: int,
                 progress: bool) -> Circuit:
    started = time.perf_counter()
    model = as_model(model)
    graph = Graph.from_model(model)
    max_memory = check_max_memory(max_memory)
    clean_t, corrupted_t = to_tokens(model, clean_tokens), to_tokens(model, corrupted_tokens)
    if clean_t.shape != corrupted_t.shape:
        raise InputError(
            f"clean tokens have shape {tuple(clean_t.shape)} but corrupted tokens have shape "
            f"{tuple(corrupted_t.shape)}. Edge attribution compares each sender's output at the same positions in "
            "both runs, so give as many corrupted prompts as clean ones, each with the same number of tokens as "
            "its clean prompt (pad or rephrase the shorter ones)."
        )
    metric = bind_metric(metric, model)
    batch, seq_len = clean_t.shape
    parts = split_prompts(batch, _bytes_per_prompt(model, graph, seq_len, metric), metric, max_memory)

    scores = torch.zeros(len(graph.senders), len(graph.receivers), dtype=torch.float64)
    clean_value = corrupted_value = 0.0
    for rows in progress_bar(parts, progress=progress, desc="edge attribution"):
        part_metric = metric if len(parts) == 1 else metric.rows(rows, batch)
        s, clean_v, corrupted_v = _score_part(model, graph, clean_t[rows], corrupted_t[rows], part_metric, steps)
        weight = (rows.stop - rows.start) / batch  # the metric is a mean over prompts: parts weigh by size
        scores += weight * s.double().cpu()
        clean_value += weight * clean_v
        corrupted_value += weight * corrupted_v
    check_finite(model, clean_t, "the edge scores", scores)

    method = "EAP" if steps is None else f"EAP-IG ({steps} steps)"
    return Circuit.full(
        graph,
        scores=scores.T[graph.mask.T].tolist(),  # receiver by receiver, senders in order: the graph's edge order
        title=f"{method} edge scores",
        metric=metric_name(metric),
        model=model_name(model),
        task=f"{batch} prompt pair(s), {seq_len} tokens",
        meta={"method": "eap" if steps is None else "eap-ig", "steps": steps,
              "score": "estimated metric(clean, edge corrupted) - metric(clean) (first order)",
              "clean_value": clean_value, "corrupted_value": corrupted_value, "prompt_parts": len(parts),
              "max_memory": max_memory, "seconds": time.perf_counter() - started},
    )


def _score_part(model: HookedTransformer, graph: Graph, clean_t: Int[Tensor, "batch pos"],
                corrupted_t: Int[Tensor, "batch pos"], metric, steps: Optional[int]) -> tuple[Tensor, float, float]:
    """Scores ``[n_senders, n_receivers]`` (zero off the graph's edges) for one part of the prompt pairs, and the
    metric on the clean and corrupted runs."""
    with torch.no_grad():
        corrupted, corrupted_value = _sender_outputs(model, graph, corrupted_t, metric)
    if steps is None:  # EAP: the gradient pass on the clean prompts also gives their sender outputs
        return (*_gradient_pass(model, graph, clean_t, metric, corrupted=corrupted), corrupted_value)
    with torch.no_grad():
        clean, clean_value = _sender_outputs(model, graph, clean_t, metric)
    diff = corrupted - clean
    scores = 0
    for k in range(1, steps + 1):
        embed = torch.lerp(corrupted[0], clean[0], k / steps)
        step_scores, _ = _gradient_pass(model, graph, clean_t, metric, diff=diff, embed=embed)
        scores = scores + step_scores / steps
    return scores, clean_value, corrupted_value


def _gradient_pass(model: HookedTransformer, graph: Graph, tokens: Int[Tensor, "batch pos"], metric, *,
                   corrupted: Optional[Tensor] = None, diff: Optional[Tensor] = None,
                   embed: Optional[Tensor] = None) -> tuple[Tensor, float]:
    """One forward pass with gradients on ``tokens`` and one backward pass from the metric.

    Returns ``diff[u] . grad[v]`` summed over batch and positions for every (sender, receiver) pair, and the
    metric's value. ``diff`` is ``[sender, batch, pos, d_model]``; without it, it is ``corrupted`` minus this
    pass's own sender outputs. ``embed`` replaces the embedding (``blocks.0.hook_resid_pre``) when given.
    """
    dtype = compute_dtype(model)
    scores = torch.zeros(len(graph.senders), len(graph.receivers), dtype=dtype, device=model.cfg.device)
    # a zero that every receiver's input is shifted by: the backward pass from the metric to it runs through every
    # receiver (whose gradient hooks do the work) without computing any parameter's gradient
    zero = torch.zeros((), dtype=model.cfg.dtype, device=model.cfg.device, requires_grad=True)
    state: dict[str, Tensor] = {}
    if diff is not None:
        state["diff"] = diff

    def accumulate(columns: Tensor, upstream: int, grad: Tensor) -> None:
        """Add diff . grad for these receivers: grad is [batch, pos, receiver, d_model] or [batch, pos, d_model]."""
        grad = grad.to(dtype) if grad.ndim == 4 else grad.to(dtype)[:, :, None, :]
        # one matrix product: [sender, (batch pos d_model)] @ [(batch pos d_model), receiver]
        senders = state["diff"][:upstream].flatten(1)
        scores[:upstream, columns] += senders @ einops.rearrange(grad, "b p r d -> (b p d) r")

    def receive(node: Node, columns: list[int]):
        """A hook at a receiver (a head's q/k/v projection, an MLP's input, the final residual stream) whose
        gradient, when the backward pass reaches it, is scored against the senders' differences."""
        columns_t = torch.tensor(columns, device=model.cfg.device)
        upstream = graph.upstream[columns[0]]

        def on_grad(grad: Tensor) -> None:
            if node.kind in ("q", "k", "v"):
                norm = norms.get(node.layer, {})
                grad = _through_norm(model, node.layer, node.kind, grad.to(dtype), norm.get("normalized"),
                                     norm.get("scale"))
            accumulate(columns_t, upstream, grad)

        def hook(act: Tensor, hook=None) -> Tensor:
            shifted = act + zero
            shifted.register_hook(on_grad)
            return shifted
        return hook

    # the norm before each attention layer, as the forward pass computed it: for the heads' q/k/v gradients
    norms: dict[int, dict[str, Tensor]] = {}

    def keep_norm(layer: int, what: str):
        def hook(act: Tensor, hook=None) -> None:
            norms.setdefault(layer, {})[what] = act.detach()
        return hook

    hooks = []
    for layer in range(graph.n_layers):
        if norm_of(model, layer) is not None:
            hooks += [(f"blocks.{layer}.ln1.hook_normalized", keep_norm(layer, "normalized")),
                      (f"blocks.{layer}.ln1.hook_scale", keep_norm(layer, "scale"))]
    hooks += [(name, receive(node, columns)) for name, node, columns in _receiver_hooks(graph)]
    outputs: dict[str, Tensor] = {}
    if corrupted is not None:
        hooks = capture_senders(model, graph, outputs) + hooks
    if embed is not None:
        hooks = [("blocks.0.hook_resid_pre", lambda act, hook=None: embed)] + hooks

    with torch.enable_grad(), receiver_inputs(model, split_qkv=False):
        resid = model.run_with_hooks(tokens, fwd_hooks=hooks, stop_at_layer=model.cfg.n_layers)
        value = _metric_on_resid(model, metric, resid)
        scalar(value)
        if not isinstance(value, Tensor) or not value.requires_grad:
            raise InputError(f"the metric {shorten(metric_name(metric))} is not differentiable (its value has no "
                             "gradient); "
                             "edge attribution needs a metric computed from the logits with torch operations.")
        if corrupted is not None:
            state["diff"] = corrupted - stack_senders(model, graph, outputs)
        torch.autograd.grad(value, zero, allow_unused=True)
    return scores, float(value.detach())


def _sender_outputs(model: HookedTransformer, graph: Graph, tokens: Int[Tensor, "batch pos"],
                    metric) -> tuple[Float[Tensor, "sender batch pos d_model"], float]:
    """Every sender's output on ``tokens``, stacked in the graph's order, and the metric's value."""
    outputs: dict[str, Tensor] = {}
    resid = model.run_with_hooks(tokens, fwd_hooks=capture_senders(model, graph, outputs),
                                 stop_at_layer=model.cfg.n_layers)
    return stack_senders(model, graph, outputs), scalar(_metric_on_resid(model, metric, resid))


def capture_senders(model: HookedTransformer, graph: Graph, outputs: dict[str, Float[Tensor, "batch pos ..."]]
                    ) -> list:
    """Hooks that keep each sender's activation (detached) in ``outputs``, by hook name."""
    def keep(name: str):
        def hook(act: Tensor, hook=None) -> None:
            outputs[name] = act.detach()
        return hook

    names = dict.fromkeys(node.hook for node in graph.senders)
    return [(name, keep(name)) for name in names]


def stack_senders(model: HookedTransformer, graph: Graph,
                   outputs: dict[str, Float[Tensor, "batch pos ..."]]) -> Float[Tensor, "sender batch pos d_model"]:
    """The senders' outputs ``[sender, batch, pos, d_model]`` from their hooks: heads' ``z`` times their ``W_O``.
    (Senders first: the senders feeding a receiver are a prefix, a contiguous block of memory.)"""
    dtype = compute_dtype(model)
    pieces = [outputs["blocks.0.hook_resid_pre"].to(dtype)[None]]
    for layer in range(graph.n_layers):
        z = outputs[f"blocks.{layer}.attn.hook_z"].to(dtype)
        pieces.append(einops.einsum(z, model.blocks[layer].attn.W_O.detach().to(dtype),
                                    "b p h e, h e d -> h b p d"))
        if not graph.attn_only:
            pieces.append(outputs[f"blocks.{layer}.hook_mlp_out"].to(dtype)[None])
    return torch.cat(pieces, dim=0)


def _receiver_hooks(graph: Graph) -> list[tuple[str, Node, list[int]]]:
    """Where each receiver's gradient is read: a hook, its first node, and the graph's receiver columns it holds.

    A head's q/k/v gradient is read at ``attn.hook_q`` / ``hook_k`` / ``hook_v`` (one column per head; see
    :func:`_through_norm`), an MLP's at ``hook_mlp_in``, the logits' at the last block's ``hook_resid_post``."""
    by_hook: dict[str, tuple[Node, list[int]]] = {}
    for i, node in enumerate(graph.receivers):
        hook = f"blocks.{node.layer}.attn.hook_{node.kind}" if node.kind in ("q", "k", "v") else node.hook
        by_hook.setdefault(hook, (node, []))[1].append(i)
    return [(hook, node, columns) for hook, (node, columns) in by_hook.items()]


def _metric_on_resid(model: HookedTransformer, metric, resid: Float[Tensor, "batch pos d_model"]) -> Tensor:
    """The metric from the final residual stream; a declarative metric reads only its positions and columns."""
    if not is_declarative(metric):
        return metric(readout(model, resid))
    positions, columns = metric.reads(resid.shape[0], resid.shape[1])
    index = einops.repeat(positions.to(resid.device), "b k -> b k d", d=resid.shape[-1])
    x = resid.gather(1, index)  # [batch, k, d_model]
    if columns is None:
        return metric.from_selected(readout(model, x))
    columns = columns.to(resid.device)  # [batch, c]: each prompt's own columns of W_U
    x = final_norm(model, x)
    logits = einops.einsum(x, model.W_U[:, columns], "b k d, d b c -> b k c") + model.b_U[columns][:, None, :]
    return metric.from_selected(softcap(logits, model.cfg.output_logits_soft_cap))


def compute_dtype(model: HookedTransformer) -> torch.dtype:
    """Scores are summed in at least float32 (float64 models stay float64)."""
    return torch.promote_types(model.cfg.dtype, torch.float32)


def _bytes_per_prompt(model: HookedTransformer, graph: Graph, seq_len: int, metric) -> int:
    """Rough bytes one prompt pair needs: the forward pass kept for the backward pass (every block's widest
    activations, twice: the backward pass keeps more than one of them alive per block), one layer's
    heads' gradients at their inputs (``[3 * n_heads, d_model]`` per token, a few copies), and the senders'
    outputs on both runs and their difference."""
    cfg = model.cfg
    size = torch.tensor([], dtype=compute_dtype(model)).element_size()
    heads = 3 * size * seq_len * 3 * cfg.n_heads * cfg.d_model
    senders = 3 * size * seq_len * len(graph.senders) * cfg.d_model
    logits = 0 if is_declarative(metric) else 2 * size * seq_len * cfg.d_vocab_out
    return 2 * cfg.n_layers * row_bytes(model, seq_len) + heads + senders + logits


__all__ = ["eap", "eap_ig", "receiver_inputs", "RECEIVER_FLAGS"]
