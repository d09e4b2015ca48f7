"""Head importance by the gradient of a head mask, and pruning curves (Michel et al. 2019, "Are Sixteen Heads Really
Better than One?").

**Importance.** A mask ``xi`` (ones, ``[n_layers, n_heads]``) multiplies each head's output before the output
projection (``blocks.{l}.attn.hook_z``: ``z[..., h, :] * xi[l, h]``). The importance of head ``h`` is the expected
absolute derivative of a loss in its mask entry::

    I_h = E_x | d L(x) / d xi_h |

taken **per sequence**: ``|mean_x g(x)|`` is not ``mean_x |g(x)|``, so each sequence of a batch gets its own copy
of the mask (``[batch, n_layers, n_heads]``), and one backward pass of ``sum_x L(x)`` gives every sequence's own
gradient (row ``x`` of the mask reaches only sequence ``x``). ``L`` is

- by default the language-model loss: the mean next-token cross-entropy over a sequence's positions;
- or a circuitlab metric (:mod:`circuitlab.metrics`, e.g. ``LogitDiff``) or any function of logits
  ``[batch, pos, d_vocab]`` returning one number, evaluated on each sequence alone (a declarative metric with
  one answer per prompt is cut to the prompt by ``metric.rows``; a plain function is called on one row of
  logits at a time, so its answers must be shared by every prompt).

``normalise=True`` (the default) divides each layer's importances by their l2 norm over the layer's heads, as
the paper does ("we normalize the importance scores by layer (using the l2 norm)"); ``normalise=False`` gives the
raw expectations. (Michel et al.'s code takes ``|.|`` of a batch's summed gradient; the per-sequence absolute
value here is the expectation the paper's formula states.) The batches are cut to ``max_memory``, one forward and
one backward pass each; no weight of the model receives a gradient (``torch.autograd.grad`` on the mask only).

**Pruning curves.** :func:`prune_curve` masks heads (``z * 0`` by a hook; the weights are never touched) in an
order (``"importance"``: least important first by :func:`head_importance` on the same data; ``"random"``: a seeded
permutation; ``"greedy"``: Michel et al.'s iterative variant, importance recomputed with the pruned heads masked
before each step; ``"taxonomy"``: by attention-pattern class, Kovaleva et al.'s least useful classes first; or an
explicit list of ``(layer, head)``) and reports the loss at each fraction of heads pruned
(``round(fraction * n_heads_total)`` heads).

    from circuitlab.attention.importance import head_importance, prune_curve

    imp = head_importance(model, tokens)          # Result [layer, head]
    curve = prune_curve(model, tokens, "importance", fractions_pruned=(0, .2, .4, .6))
    curve.values                                  # loss at each fraction; curve.meta["order"]: the heads in order
"""

from __future__ import annotations

import time
from typing import Any, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from circuitlab.core import (DEFAULT_MAX_MEMORY, ModelLike, Prompts, as_model, check_finite, check_heads,
                             check_max_memory, check_seed, metric_name, model_name, parse_head, row_bytes, row_chunks,
                             shorten, to_tokens)
from circuitlab.attention.patterns import pattern_taxonomy, taxonomy_order
from circuitlab.errors import InputError
from circuitlab.metrics import bind_metric, can_split
from circuitlab.results import Result

#: the orders :func:`prune_curve` takes by name
ORDERS = ("importance", "random", "greedy", "taxonomy")
#: the default fractions of heads pruned
DEFAULT_FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)

#: the random-token inputs the ``"taxonomy"`` order classifies heads on: how many, and their length
TAXONOMY_INPUTS, TAXONOMY_LENGTH = 32, 32

Order = Union[str, Sequence[tuple[int, int]]]


# ---------------------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------------------

def check_tokens(model, texts_or_tokens: Any, metric: Any, what: str = "texts_or_tokens") -> Int[Tensor, "batch pos"]:
    """Token ids ``[batch, pos]`` from text(s) or ids (:func:`circuitlab.core.to_tokens`); an empty list and, for
    the LM loss, sequences of one token (nothing to predict) are refused."""
    if texts_or_tokens is None or (isinstance(texts_or_tokens, (list, tuple)) and len(texts_or_tokens) == 0):
        raise InputError(f"{what} is empty; give at least one text (or token ids [batch, pos]).")
    tokens = to_tokens(model, texts_or_tokens)
    if metric is None and tokens.shape[1] < 2:
        raise InputError(f"{what}: the sequences are {tokens.shape[1]} token long; the language-model loss needs at "
                         "least 2 tokens (one to predict). Give longer texts.")
    return tokens


def check_loss_metric(model, metric: Any) -> Any:
    """``None`` (the LM loss) or a metric bound to ``model`` (:func:`circuitlab.metrics.bind_metric`)."""
    return None if metric is None else bind_metric(metric, model)


def check_fractions(fractions: Any, what: str = "fractions_pruned") -> list[float]:
    """Fractions of heads pruned: a non-empty sequence of numbers in [0, 1], increasing, without repeats."""
    if isinstance(fractions, (str, bytes)) or not isinstance(fractions, (Sequence, Tensor)) or len(fractions) == 0:
        raise InputError(f"{what} must be a non-empty list of numbers in [0, 1], e.g. (0, 0.2, 0.4); got "
                         f"{shorten(fractions, 60)}.")
    values = []
    for f in (fractions.tolist() if isinstance(fractions, Tensor) else list(fractions)):
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f <= 1:
            raise InputError(f"{what} must hold numbers in [0, 1] (a share of the heads); got {shorten(f, 30)} "
                             f"in {shorten(fractions, 60)}.")
        values.append(float(f))
    if any(b <= a for a, b in zip(values, values[1:])):
        raise InputError(f"{what} must increase without repeats (each curve point prunes more heads than the "
                         f"one before); got {shorten(fractions, 60)}. Sort them.")
    return values


def check_order(model, order: Any) -> Union[str, list[tuple[int, int]]]:
    """A named order (:data:`ORDERS`) or a list of distinct ``(layer, head)`` pairs of the model."""
    if isinstance(order, str):
        if order not in ORDERS:
            raise InputError(f"order={shorten(order)} is not an order; use one of {', '.join(map(repr, ORDERS))} "
                             "or a list of (layer, head) pairs.")
        return order
    if not isinstance(order, (Sequence, Tensor)) or len(order) == 0:
        raise InputError(f"order must be one of {', '.join(map(repr, ORDERS))} or a non-empty list of (layer, head) "
                         f"pairs; got {shorten(order, 60)}.")
    # each head as core.parse_head reads one everywhere: (layer, head) with negative indices from the end, or "L1H2"
    heads = [parse_head(model, item, what="order") for item in (order.tolist() if isinstance(order, Tensor)
                                                               else list(order))]
    if len(set(heads)) != len(heads):
        raise InputError("order repeats a head; give each (layer, head) once.")
    return heads


# ---------------------------------------------------------------------------------------------------------
# Per-sequence losses under a head mask
# ---------------------------------------------------------------------------------------------------------

def _mask_hooks(model, mask: Tensor) -> list:
    """Hooks multiplying head outputs by ``mask``: ``[n_layers, n_heads]`` (every row) or ``[batch, n_layers,
    n_heads]`` (one mask per row)."""
    def hook_for(layer: int):
        def hook(z: Tensor, hook) -> Tensor:
            m = mask[layer] if mask.ndim == 2 else mask[:, layer]
            m = m.to(z.dtype)
            return z * (m[None, None, :, None] if m.ndim == 1 else m[:, None, :, None])
        return hook
    return [(f"blocks.{layer}.attn.hook_z", hook_for(layer)) for layer in range(model.cfg.n_layers)]


def _row_metric(metric: Any, row: int, batch: int) -> Any:
    if can_split(metric):
        return metric.rows(slice(row, row + 1), batch)
    return metric


def _sequence_losses(model, tokens: Int[Tensor, "rows pos"], metric: Any, mask: Tensor, offset: int,
                     total: int) -> Float[Tensor, " rows"]:
    """``L(x)`` for each row of ``tokens`` with heads multiplied by ``mask``; ``offset``/``total`` place the rows
    in the whole batch (for a metric's per-prompt answers)."""
    logits = model.run_with_hooks(tokens, fwd_hooks=_mask_hooks(model, mask))
    if metric is None:
        logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
        nll = -logp.gather(-1, tokens[:, 1:, None]).squeeze(-1)
        return nll.mean(-1)
    values = [torch.as_tensor(_row_metric(metric, offset + i, total)(logits[i:i + 1])).reshape(()).float()
              for i in range(tokens.shape[0])]
    return torch.stack(values)


def _batches(model, tokens: Tensor, max_memory: int) -> list[slice]:
    # forward and backward both hold the activations, plus full logits (and their log-softmax) for the loss
    per_row = 3 * row_bytes(model, tokens.shape[1], logits=2 * model.cfg.d_vocab)
    return row_chunks(tokens.shape[0], per_row, max_memory)


def _importance(model, tokens: Tensor, metric: Any, max_memory: int, keep: Optional[Tensor] = None
                ) -> tuple[Float[Tensor, "layer head"], Float[Tensor, " batch"]]:
    """Mean over sequences of ``|dL(x)/dxi|`` (``[layer, head]``) with the mask at ``keep`` (ones by default), and
    each sequence's loss."""
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    device = tokens.device
    # the mask in float32 (float64 for a float64 model): a low-precision mask would round the gradient it carries
    dtype = torch.float64 if next(model.parameters()).dtype == torch.float64 else torch.float32
    base = torch.ones(n_layers, n_heads, device=device) if keep is None else keep.to(device)
    base = base.to(dtype)
    total = torch.zeros(n_layers, n_heads, dtype=torch.float64, device=device)
    losses = []
    n = tokens.shape[0]
    for sl in _batches(model, tokens, max_memory):
        rows = sl.stop - sl.start
        xi = base.expand(rows, n_layers, n_heads).clone().requires_grad_(True)
        with torch.enable_grad():
            loss = _sequence_losses(model, tokens[sl], metric, xi, sl.start, n)
            if not loss.requires_grad:
                raise InputError(f"metric={shorten(metric_name(metric))} returned a number with no gradient (a "
                                 "float, or a tensor detached from the logits); head importance needs the metric "
                                 "as a differentiable function of the logits, e.g. LogitDiff from circuitlab.metrics.")
            (grad,) = torch.autograd.grad(loss.sum(), xi, allow_unused=True)
        if grad is None:
            grad = torch.zeros_like(xi)
        total += grad.detach().abs().double().sum(0)
        losses.append(loss.detach())
    losses = torch.cat(losses)
    check_finite(model, tokens, "the loss", losses)
    return (total / n).float().cpu(), losses.cpu()


def _normalise(values: Tensor) -> Tensor:
    norm = values.norm(dim=-1, keepdim=True)
    return torch.where(norm > 0, values / norm.clamp_min(1e-30), values)


# ---------------------------------------------------------------------------------------------------------
# The analyses
# ---------------------------------------------------------------------------------------------------------

def head_importance(model: ModelLike, texts_or_tokens: Prompts, *, metric: Any = None, normalise: bool = True,
                    max_memory: int = DEFAULT_MAX_MEMORY) -> Result:
    """Michel et al.'s head importance ``E_x |dL(x)/dxi_h|`` (see the module's docstring), ``[layer, head]``.

    Args:
        model: a model or a name (:func:`circuitlab.core.as_model`).
        texts_or_tokens: a text, texts of one token length, or token ids ``[batch, pos]``.
        metric: ``None`` for the LM loss (mean next-token cross-entropy per sequence), else a metric of logits.
        normalise: divide each layer's importances by their l2 norm (the paper's choice).
        max_memory: bytes one batch's forward and backward pass may hold.

    ``meta``: ``loss`` (mean of ``L`` over the sequences), ``raw`` (the unnormalised importances), ``normalised``,
    ``sequences``, ``seconds``.
    """
    model = as_model(model)
    if not isinstance(normalise, bool):
        raise InputError(f"normalise must be True or False; got {shorten(normalise, 30)}.")
    max_memory = check_max_memory(max_memory)
    metric = check_loss_metric(model, metric)
    tokens = check_tokens(model, texts_or_tokens, metric)
    start = time.perf_counter()
    raw, losses = _importance(model, tokens, metric, max_memory)
    values = _normalise(raw) if normalise else raw
    return Result(values=values, axes=("layer", "head"), title="Head importance (Michel et al. 2019)",
                  metric=f"E|d {'lm_loss' if metric is None else metric_name(metric)} / d head mask|",
                  model=model_name(model), task=f"{tokens.shape[0]} sequences of {tokens.shape[1]} tokens",
                  meta={"loss": float(losses.mean()), "raw": raw, "normalised": normalise,
                        "sequences": tokens.shape[0], "seconds": time.perf_counter() - start})


def masked_loss(model: ModelLike, texts_or_tokens: Prompts, heads: Sequence[tuple[int, int]] = (), *,
                metric: Any = None, max_memory: int = DEFAULT_MAX_MEMORY) -> float:
    """The mean over sequences of ``L(x)`` with ``heads`` masked (their ``hook_z`` times 0); the weights are not
    touched."""
    model = as_model(model)
    max_memory = check_max_memory(max_memory)
    metric = check_loss_metric(model, metric)
    tokens = check_tokens(model, texts_or_tokens, metric)
    empty = isinstance(heads, (list, tuple)) and len(heads) == 0  # nothing masked: the plain loss
    heads = [] if empty else check_heads(model, heads)
    return _masked_loss(model, tokens, metric, _keep_mask(model, heads), max_memory)


def _keep_mask(model, heads: Sequence[tuple[int, int]]) -> Tensor:
    keep = torch.ones(model.cfg.n_layers, model.cfg.n_heads, device=model.cfg.device)
    for layer, head in heads:
        keep[layer, head] = 0.0
    return keep


def _masked_loss(model, tokens: Tensor, metric: Any, keep: Tensor, max_memory: int) -> float:
    losses = []
    with torch.no_grad():
        for sl in _batches(model, tokens, max_memory):
            losses.append(_sequence_losses(model, tokens[sl], metric, keep, sl.start, tokens.shape[0]))
    losses = torch.cat(losses)
    check_finite(model, tokens, "the loss", losses)
    return float(losses.double().mean())


def prune_curve(model: ModelLike, texts_or_tokens: Prompts, order: Order = "importance", *,
                fractions_pruned: Sequence[float] = DEFAULT_FRACTIONS, metric: Any = None, seed: int = 0,
                max_memory: int = DEFAULT_MAX_MEMORY) -> Result:
    """The loss (mean ``L(x)`` over the sequences) with a growing share of heads masked: ``[fraction]``.

    At fraction ``f`` the first ``round(f * n_layers * n_heads)`` heads of ``order`` are masked (``z * 0`` by a
    hook on ``blocks.{l}.attn.hook_z``; the model's weights are not changed). ``order``:

    - ``"importance"``: ascending :func:`head_importance` (normalised per layer, as the paper prunes) on the same
      data, computed once;
    - ``"greedy"``: Michel et al.'s iterative pruning: before each curve point the importance is recomputed with
      the heads pruned so far masked, and the least important of the remaining heads are pruned next;
    - ``"random"``: a permutation drawn with ``seed``;
    - ``"taxonomy"``: by attention-pattern class (:func:`circuitlab.attention.patterns.taxonomy_order`: the
      classes Kovaleva et al. tie to pre-training first, vertical, vertical+diagonal, diagonal, then block and
      heterogeneous), the classes read on 32 random-token inputs of 32 tokens drawn with ``seed``;
    - a list of distinct ``(layer, head)``: that order (it must hold as many heads as the largest fraction needs).

    ``meta``: ``order`` (the heads in pruning order, as far as the curve went), ``counts`` (heads masked at each
    point), ``base_loss`` (nothing masked), ``seconds``.
    """
    model = as_model(model)
    max_memory = check_max_memory(max_memory)
    metric = check_loss_metric(model, metric)
    tokens = check_tokens(model, texts_or_tokens, metric)
    fractions = check_fractions(fractions_pruned, "fractions_pruned")
    order = check_order(model, order)
    seed = check_seed(seed)
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    n_total = n_layers * n_heads
    counts = [int(round(f * n_total)) for f in fractions]
    all_heads = [(layer, head) for layer in range(n_layers) for head in range(n_heads)]
    start = time.perf_counter()
    if isinstance(order, list):
        if counts[-1] > len(order):
            raise InputError(f"order lists {len(order)} heads but fraction {fractions[-1]:g} prunes {counts[-1]} of "
                             f"the {n_total}; list more heads or use smaller fractions_pruned.")
        ranked = order
    elif order == "random":
        g = torch.Generator().manual_seed(seed)
        ranked = [all_heads[i] for i in torch.randperm(n_total, generator=g).tolist()]
    elif order == "taxonomy":
        taxonomy = pattern_taxonomy(model, "random", n=TAXONOMY_INPUTS,
                                    length=min(TAXONOMY_LENGTH, model.cfg.n_ctx), seed=seed, max_memory=max_memory)
        ranked = taxonomy_order(taxonomy)
    elif order == "importance":
        raw, _ = _importance(model, tokens, metric, max_memory)
        scores = _normalise(raw).flatten()
        ranked = [all_heads[i] for i in torch.sort(scores, stable=True).indices.tolist()]
    else:  # greedy
        ranked = []
    losses = []
    for count in counts:
        if order == "greedy":
            while len(ranked) < count:
                keep = _keep_mask(model, ranked)
                raw, _ = _importance(model, tokens, metric, max_memory, keep)
                scores = _normalise(raw).flatten()
                pruned = set(ranked)
                remaining = [i for i in torch.sort(scores, stable=True).indices.tolist() if all_heads[i] not in pruned]
                ranked.extend(all_heads[i] for i in remaining[:count - len(ranked)])
        losses.append(_masked_loss(model, tokens, metric, _keep_mask(model, ranked[:count]), max_memory))
    label = order if isinstance(order, str) else "given"
    return Result(values=torch.tensor(losses), axes=("fraction",), labels={"fraction": [f"{f:g}" for f in fractions]},
                  title=f"Pruning curve ({label} order)",
                  metric="lm_loss" if metric is None else metric_name(metric), model=model_name(model),
                  task=f"{tokens.shape[0]} sequences of {tokens.shape[1]} tokens",
                  meta={"order": list(ranked[:counts[-1]]), "order_kind": label, "counts": counts,
                        "fractions": fractions, "base_loss": _masked_loss(model, tokens, metric,
                                                                          _keep_mask(model, []), max_memory),
                        "seed": seed, "seconds": time.perf_counter() - start})


__all__ = ["head_importance", "prune_curve", "masked_loss", "ORDERS", "DEFAULT_FRACTIONS"]
