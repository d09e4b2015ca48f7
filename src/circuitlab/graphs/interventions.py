"""Checks of an attribution graph by intervention: change features and compare the logits with the edges' prediction.

Three settings, from exact to approximate:

- **frozen** (the graph's own setting): in the local replacement model with every other feature held at its value
  on the prompt, setting feature ``s`` from ``a_s`` to ``a_s'`` moves each logit node's input (the demeaned logit)
  by exactly ``A[t, s] (a_s' / a_s - 1)``: the direct edge. Linear, so equal to float rounding.
- **replacement** (features recomputed by their transcoders, attention and norms still frozen): the change follows
  the graph's *total* effect ``T = (I - G)^-1`` with ``G[t, s] = A[t, s] / a_s`` (gradient per unit of activation,
  summed over every path), as long as no downstream feature crosses its threshold or leaves its TopK set.
- **model**: the real model, with the feature's decoder direction times ``a_s' - a_s`` added to its layer's MLP
  output at its position (everything recomputed, attention and norms included). :func:`intervention_agreement`
  reports how well the graph's total-effect prediction matches (Pearson correlation, sign agreement, relative
  error) over the most influential features.

(Ameisen et al. 2025, "Circuit Tracing", section 3.4, "Validating the graphs by intervention".)
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from jaxtyping import Float
from torch import Tensor

from circuitlab.core import check_count, check_number, shorten
from circuitlab.errors import InputError
from circuitlab.features.transcoders import mlp_out_hook
from circuitlab.graphs.attribution import AttributionGraph
from circuitlab.graphs.replacement import run_replacement


def check_graph(graph: Any) -> AttributionGraph:
    if not isinstance(graph, AttributionGraph):
        raise InputError(f"graph must be an AttributionGraph (circuitlab.graphs.attribution_graph makes one); got "
                         f"{shorten(graph, 40)}.")
    return graph


def check_feature_node(graph: AttributionGraph, node: Any) -> int:
    """A feature node: its index in the graph, or ``(layer, pos, latent)``."""
    sl = graph.slices()["feature"]
    if isinstance(node, (tuple, list)) and len(node) == 3:
        hit = ((graph.layer == int(node[0])) & (graph.pos == int(node[1])) & (graph.index == int(node[2])))
        hit[sl.stop:] = False
        idx = hit.nonzero()[:, 0]
        if not len(idx):
            raise InputError(f"node={shorten(node)}: no active feature (layer, pos, latent) like that on this prompt.")
        return int(idx[0])
    if isinstance(node, int) and not isinstance(node, bool) and sl.start <= node < sl.stop:
        return node
    raise InputError(f"node={shorten(node)}: give a feature node's index (0..{sl.stop - 1}) or (layer, pos, latent).")


def logit_inputs(graph: AttributionGraph, logits: Float[Tensor, "batch pos vocab"]) -> Float[Tensor, "batch logit"]:
    """The logit nodes' inputs (logit minus the mean logit, last position) from full logits."""
    ids = graph.index[graph.slices()["logit"]]
    last = logits[:, -1].float()
    return last[:, ids] - last.mean(-1, keepdim=True)


def total_effects(graph: AttributionGraph) -> Float[Tensor, "node node"]:
    """``T = (I - G)^-1`` with ``G[t, s] = A[t, s] / activation_s`` for feature sources (per unit of activation;
    other sources per unit of their own scale): ``T[t, s]`` is the change of node ``t``'s input per unit change of
    source ``s``, over every path of the graph."""
    sl = graph.slices()["feature"]
    g = graph.adjacency.double().clone()
    acts = graph.activation[sl].double()
    g[:, sl] = g[:, sl] / torch.where(acts.abs() > 0, acts, torch.ones_like(acts))
    g[:, sl.stop:] = 0  # errors and embeddings are constants here: only features propagate
    eye = torch.eye(g.shape[0], dtype=torch.float64)
    return torch.linalg.solve(eye - g, eye).float()


def steer_feature(graph: AttributionGraph, node: Any, value: float, *,
                  setting: str = "frozen") -> Float[Tensor, " logit"]:
    """The logit nodes' inputs after setting feature ``node`` to ``value``, in ``setting`` ``"frozen"``,
    ``"replacement"`` or ``"model"`` (module notes)."""
    graph = check_graph(graph)
    i = check_feature_node(graph, node)
    value = check_number(value, "value")
    rep = graph.replacement
    L, p, lat = int(graph.layer[i]), int(graph.pos[i]), int(graph.index[i])
    old = float(graph.activation[i])
    if setting == "frozen":
        acts = rep.activations.clone()
        acts[i] = value
        with torch.no_grad():
            return logit_inputs(graph, run_replacement(rep, activations=acts))[0]
    if setting == "replacement":
        def edit(layer, f):
            if layer == L:
                f = f.clone()
                f[:, p, lat] = value
            return f

        with torch.no_grad():
            return logit_inputs(graph, run_replacement(rep, recompute=True, feature_edit=edit))[0]
    if setting == "model":
        direction = rep.transcoders[L].W_dec[lat] * (value - old)

        def add(act, hook=None):
            act = act.clone()
            act[:, p] += direction.to(act.dtype)
            return act

        with torch.no_grad():
            logits = rep.model.run_with_hooks(rep.tokens[None].to(rep.model.cfg.device),
                                              fwd_hooks=[(mlp_out_hook(L), add)])
        return logit_inputs(graph, logits)[0]
    raise InputError(f"setting={shorten(setting)}: use 'frozen', 'replacement' or 'model'.")


def intervention_agreement(graph: AttributionGraph, *, n_features: Optional[int] = 20, factor: float = 0.0,
                           influence: Optional[Float[Tensor, " node"]] = None) -> dict:
    """Steer the ``n_features`` most influential feature nodes one at a time to ``factor`` times their activation
    (``0``: ablation) and compare the logit nodes' changes with the graph's predictions.

    Returns per setting (``"frozen"`` against the direct edges; ``"replacement"`` and ``"model"`` against the
    total effects :func:`total_effects`; ``"model_vs_direct"``: the real model against the direct edges):
    ``max_abs_error``, ``relative_error`` (``||actual - predicted|| / ||actual||`` over every feature and logit),
    ``pearson``, ``sign_agreement`` (of nonzero predictions), and
    the raw ``predicted`` / ``actual`` lists. ``influence``: the ranking (default the graph's indirect influence).
    """
    from circuitlab.graphs.attribution import logit_weights, node_influence

    graph = check_graph(graph)
    n = check_count(n_features, "n_features") if n_features is not None else graph.slices()["feature"].stop
    factor = check_number(factor, "factor")
    sl, lo = graph.slices()["feature"], graph.slices()["logit"]
    infl = node_influence(graph.adjacency, logit_weights(graph)) if influence is None else influence
    order = infl[sl].argsort(descending=True)[: min(n, sl.stop)].tolist()
    base = {s: steer_feature(graph, order[0], float(graph.activation[order[0]]), setting=s) if order else None
            for s in ("frozen", "replacement", "model")}
    total = total_effects(graph)
    out: dict = {"features": [graph.node_id(i) for i in order], "factor": factor}
    actual = {}
    for setting in ("frozen", "replacement", "model"):
        actual[setting] = [(steer_feature(graph, i, float(graph.activation[i]) * factor, setting=setting)
                            - base[setting]).tolist() for i in order]
    deltas = [float(graph.activation[i]) * (factor - 1) for i in order]
    direct = [(graph.adjacency[lo, i] / float(graph.activation[i]) * d).tolist() for i, d in zip(order, deltas)]
    paths = [(total[lo, i] * d).tolist() for i, d in zip(order, deltas)]
    for name, setting, pred in (("frozen", "frozen", direct), ("replacement", "replacement", paths),
                                ("model", "model", paths), ("model_vs_direct", "model", direct)):
        p, q = torch.tensor(pred).flatten().double(), torch.tensor(actual[setting]).flatten().double()
        nz = p.abs() > 1e-9 * max(1.0, float(p.abs().max()) if p.numel() else 1.0)
        pearson = float(torch.corrcoef(torch.stack([p, q]))[0, 1]) if p.numel() > 1 and p.std() > 0 and q.std() > 0 \
            else float("nan")
        out[name] = {"max_abs_error": float((p - q).abs().max()) if p.numel() else 0.0,
                     "relative_error": float((p - q).norm() / q.norm().clamp_min(1e-30)),
                     "pearson": pearson,
                     "sign_agreement": float((torch.sign(p[nz]) == torch.sign(q[nz])).double().mean())
                     if nz.any() else float("nan"),
                     "predicted": pred, "actual": actual[setting]}
    return out


__all__ = ["steer_feature", "intervention_agreement", "total_effects", "logit_inputs", "check_feature_node"]
