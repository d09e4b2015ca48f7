"""Faithfulness: how much of the model's behaviour a circuit alone carries.

A circuit is evaluated by exact edge patching (:mod:`circuitlab.circuits.patch`): every edge outside it is
removed (its receiver reads the sender's ablated output), and the metric is compared with the full model and the
empty circuit in the same batched passes. :func:`faithfulness_curve` does this for the top-``k`` edges of a scored
circuit for several ``k`` at once.
"""

from __future__ import annotations

import math
import time
from typing import Optional, Sequence

import torch

from circuitlab.circuits.circuit import Circuit
from circuitlab.circuits.patch import setup_patcher
from circuitlab.core import DEFAULT_MAX_MEMORY, ModelLike, Prompts, check_finite, metric_name, model_name, shorten
from circuitlab.errors import InputError
from circuitlab.metrics import Metric
from circuitlab.results import Result



def faithfulness(
    model: ModelLike,
    clean_tokens: Prompts,
    corrupted_tokens: Prompts,
    circuit: Circuit,
    metric: Optional[Metric] = None,
    *,
    ablation: str = "corrupted",
    max_memory: int = DEFAULT_MAX_MEMORY,
) -> Result:
    """How much of the model's behaviour a circuit alone carries: run with only its edges (all others removed).

    Returns a :class:`~circuitlab.results.Result` with axis ``"measure"``: ``metric recovered``
    (``(m(circuit) - m(nothing)) / (m(full) - m(nothing))``: 0 = every edge removed, 1 = the full model) and
    ``KL to clean`` (the circuit's last-position KL divergence from the clean run, in nats). ``meta`` holds the
    raw metric values of the circuit, the full model and the empty circuit. ``metric`` defaults to that KL.
    """
    if not isinstance(circuit, Circuit):
        raise InputError(f"faithfulness needs a Circuit; got {type(circuit).__name__}.")
    curve = _faithfulness(model, clean_tokens, corrupted_tokens, [circuit], metric, ablation=ablation,
                          max_memory=max_memory, progress=False)
    values = curve.values[0]
    return Result(values=values, axes=("measure",), labels={"measure": curve.labels["measure"]},
                  title=f"Faithfulness of a circuit of {len(circuit)} edges", metric=curve.metric, model=curve.model,
                  task=curve.task, meta={**curve.meta, "circuit_value": curve.meta["values"][0]})


def faithfulness_curve(
    model: ModelLike,
    clean_tokens: Prompts,
    corrupted_tokens: Prompts,
    scores: Circuit,
    ks: Optional[Sequence[int]] = None,
    metric: Optional[Metric] = None,
    *,
    ablation: str = "corrupted",
    max_memory: int = DEFAULT_MAX_MEMORY,
    progress: bool = False,
) -> Result:
    """Faithfulness of the top-``k`` edges by ``|score|`` of a scored circuit, for each ``k`` in ``ks``.

    Every ``k`` is one mask (all edges but the top ``k`` removed), all evaluated in batched passes together with
    the full model and the empty circuit (the normalisation's two ends).

    Args:
        scores: a scored :class:`~circuitlab.circuits.circuit.Circuit` (EAP, EAP-IG, ACDC).
        ks: numbers of edges (default: 0, 1, 2, 4, ... up to every scored edge).
        metric, ablation, max_memory: as for :func:`patch_edges` (metric default: KL to the clean run).

    Returns:
        a :class:`~circuitlab.results.Result` ``[k, measure]``: axis ``"edges"`` (labelled by ``k``) and axis
        ``"measure"`` (``metric recovered``, ``KL to clean``; see :func:`faithfulness`).
    """
    if not isinstance(scores, Circuit):
        raise InputError(f"faithfulness needs a Circuit; got {type(scores).__name__}.")
    if scores.scores is None:
        raise InputError("a faithfulness curve ranks edges by |score|; this circuit has no scores. Use a scorer's "
                         "result (eap, eap_ig, acdc), or faithfulness() for one unscored circuit.")
    if ks is None:
        ks = sorted({0, len(scores), *[2 ** i for i in range(int(math.log2(max(1, len(scores)))) + 1)]})
    ks = list(ks)
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 0 for k in ks):
        raise InputError(f"ks must be a non-empty list of edge counts (ints >= 0); got {shorten(ks)}.")
    return _faithfulness(model, clean_tokens, corrupted_tokens, [scores.top(k) for k in ks], metric,
                         ablation=ablation, max_memory=max_memory, progress=progress)


def _faithfulness(model, clean_tokens, corrupted_tokens, circuits: list[Circuit], metric, *, ablation: str,
                  max_memory: int, progress: bool) -> Result:
    """Each circuit alone (every other edge removed), with the full model and the empty circuit, in one batch."""
    started = time.perf_counter()
    model, clean_t, patcher = setup_patcher(model, clean_tokens, corrupted_tokens, metric, ablation=ablation,
                                     max_memory=max_memory, what="faithfulness", with_kl=True)
    graph = patcher.graph
    if not graph.same_shape(circuits[0].graph):
        raise InputError(f"the circuit belongs to a different graph ({circuits[0].graph.describe()}) than the model's "
                         f"({graph.describe()}).")
    full = graph.mask
    masks = [full & ~patcher.mask_matrix(c.edges) for c in circuits] + [torch.zeros_like(full), full]
    values = patcher.run(torch.stack(masks), progress=progress)  # [k + 2, metric (, kl)]
    check_finite(model, clean_t, "the faithfulness values", values)
    m, whole, nothing = values[:-2, 0], values[-2, 0], values[-1, 0]
    kl = values[:-2, -1]
    recovered = ((m - nothing) / (whole - nothing) if abs(float(whole - nothing)) > 1e-12
                 else torch.full_like(m, math.nan))
    labels = [str(len(c)) for c in circuits]
    name = metric_name(patcher.metrics[0])
    return Result(
        values=torch.stack([recovered, kl], dim=1),
        axes=("edges", "measure"),
        labels={"edges": labels, "measure": [f"{name} recovered", "KL to clean"]},
        title=f"Faithfulness of the top-k edges ({ablation} ablation)",
        metric=name, model=model_name(model), task=f"{clean_t.shape[0]} prompt pair(s), {clean_t.shape[1]} tokens",
        meta={"ablation": ablation, "values": m.tolist(), "full_value": float(whole), "empty_value": float(nothing),
              "ks": [len(c) for c in circuits], "passes": patcher.passes, "seconds": time.perf_counter() - started},
    )


__all__ = ["faithfulness", "faithfulness_curve"]
