"""ROC curves and their area (AUC) of an edge scorer against a reference circuit, at edge and at node level.

A scorer (:func:`~circuitlab.circuits.eap`, :func:`~circuitlab.circuits.eap_ig`, ACDC...) gives every edge of a
graph a score; a reference circuit (:mod:`circuitlab.circuits.reference`) names the edges that truly carry the
behaviour. Sweeping a threshold over the scores, the edges at or above it are the scorer's circuit; each threshold
gives one point (false-positive rate, true-positive rate) of the **ROC curve**, from ``(0, 0)`` (nothing kept) to
``(1, 1)`` (everything kept). Its area by the trapezoid rule is the **AUC**: the probability that a random
reference edge outranks a random other edge, ties counting one half (1 = perfect ranking, 0.5 = chance).

**How edges are ranked** (``by``): ``"abs"`` (default) by ``|score|``, as the scorers' ``top(k)`` does (an edge
matters whichever way it moves the metric); ``"signed"`` by the score itself, highest first; ``"negative"`` by
``-score`` (most negative first: with EAP and a logit difference, the edges whose corruption lowers the metric).
Edges of the graph that the scored circuit lacks rank below every scored edge (they are never "kept" before the
last point); an unscored circuit (e.g. ACDC's output) is a yes/no scorer: its edges score 1, others 0, which
gives one point between the two ends.

**Node level** follows the ACDC paper's code (Conmy et al. 2023, ``acdc_utils.get_node_stats``): a node is in a
circuit when any edge of the circuit touches it (as sender or receiver), so along the threshold sweep a node
enters with the first of its edges: a node's score is the **largest rank key (e.g. |score|) of its edges, incoming
and outgoing**, and the reference's nodes are those its edges touch. What counts as one node (``nodes``):

- ``"component"`` (default): what :attr:`Circuit.nodes` lists: ``embed``, each head (its q/k/v inputs and its
  output together), each MLP, ``logits``;
- ``"acdc"``: the ACDC code's own split: a head's output and its query, key and value inputs are four nodes
  (``L1H2``, ``L1H2.q``, ``L1H2.k``, ``L1H2.v``); an MLP's input and output are one node, as there.

    from circuitlab.circuits import eap, roc
    scores = eap(model, clean, corrupted, metric)
    curve = roc(scores, reference)              # a Result: axes ("point", "rate"), rate = (fpr, tpr)
    curve.auc, roc(scores, reference, level="node").auc
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from circuitlab.core import shorten
from circuitlab.circuits.circuit import Circuit
from circuitlab.circuits.graph import Edge, Graph
from circuitlab.errors import InputError
from circuitlab.results import Result

LEVELS = ("edge", "node")
RANKINGS = ("abs", "signed", "negative")
NODE_KINDS = ("component", "acdc")


@dataclass(repr=False)
class RocCurve(Result):
    """A ROC curve: ``values`` ``[point, 2]`` with axes ``("point", "rate")`` (rate labels ``fpr``, ``tpr``), from
    ``(0, 0)`` to ``(1, 1)`` as the threshold falls. ``meta`` holds ``auc``, ``thresholds`` (the rank key at each
    point; ``inf`` at the first), ``level``, ``by``, ``nodes`` and the counts ``positives`` / ``negatives``."""

    @property
    def auc(self) -> float:
        return float(self.meta["auc"])

    @property
    def fpr(self) -> list[float]:
        return self.values[:, 0].tolist()

    @property
    def tpr(self) -> list[float]:
        return self.values[:, 1].tolist()

    def __repr__(self) -> str:
        return (f"RocCurve({self.meta['level']} level, by {self.meta['by']}: AUC {self.auc:.4f}; "
                f"{self.meta['positives']} reference vs {self.meta['negatives']} other "
                f"{'edges' if self.meta['level'] == 'edge' else 'nodes'}, {self.values.shape[0]} points)")


def roc(scored: Circuit, reference: Circuit, *, level: str = "edge", by: str = "abs",
        nodes: str = "component") -> RocCurve:
    """The ROC curve of ``scored``'s ranking of the graph's edges (or nodes) against ``reference``.

    Args:
        scored: a circuit of the graph, usually a scorer's (every edge with a score); unscored: a yes/no scorer.
        reference: the true circuit (its scores, if any, are ignored), of a graph of the same shape.
        level: ``"edge"`` or ``"node"`` (see the module docstring).
        by: ``"abs"``, ``"signed"`` or ``"negative"``: how scores rank edges.
        nodes: at node level, ``"component"`` or ``"acdc"`` (what counts as one node).

    Returns:
        a :class:`RocCurve` (``.auc``, ``.fpr``, ``.tpr``). Raises :class:`~circuitlab.errors.InputError` when the
        reference has no edge, or every item is in it (no negatives: the rates are undefined).
    """
    keys, labels, names, unit = _ranked_items(scored, reference, level, by, nodes)
    positives = sum(labels)
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        raise InputError(
            f"a ROC curve needs reference {unit}s and other {unit}s; the reference has {positives} of the graph's "
            f"{len(labels)} {unit}s. Use a reference circuit that is a proper, non-empty part of the graph.")
    fpr, tpr, thresholds = roc_points(keys, labels)
    area = trapezoid_auc(fpr, tpr)
    what = {"abs": "|score|", "signed": "score", "negative": "-score"}[by]
    title = f"ROC ({level} level, ranked by {what}) against {reference.title or 'the reference'}: AUC {area:.3f}"
    return RocCurve(
        values=torch.tensor([fpr, tpr], dtype=torch.float64).T.contiguous(),
        axes=("point", "rate"),
        labels={"rate": ["fpr", "tpr"], "point": [f"{t:.4g}" for t in thresholds]},
        title=title,
        metric="true-positive rate against false-positive rate",
        model=scored.model or reference.model,
        task=scored.task,
        meta={"auc": area, "thresholds": thresholds, "level": level, "by": by,
              "nodes": nodes if level == "node" else None, "positives": positives, "negatives": negatives,
              "scorer": scored.title or scored.meta.get("method", ""), "reference": reference.title,
              "scale": "sequential"},
    )


def roc_auc(scored: Circuit, reference: Circuit, *, level: str = "edge", by: str = "abs",
            nodes: str = "component") -> float:
    """The area under :func:`roc`'s curve."""
    return roc(scored, reference, level=level, by=by, nodes=nodes).auc


# ---------------------------------------------------------------------------------------------------------
# The arithmetic, on plain lists
# ---------------------------------------------------------------------------------------------------------

def roc_points(keys: Sequence[float], labels: Sequence[bool]) -> tuple[list[float], list[float], list[float]]:
    """ROC points of items with rank ``keys`` (higher = kept first) and true ``labels``: one point per distinct
    key (items with equal keys enter together), plus ``(0, 0)`` at threshold ``inf``. Returns fpr, tpr,
    thresholds."""
    positives = sum(bool(x) for x in labels)
    negatives = len(labels) - positives
    order = sorted(range(len(keys)), key=lambda i: -keys[i])
    fpr, tpr, thresholds = [0.0], [0.0], [math.inf]
    tp = fp = 0
    for n, i in enumerate(order):
        if labels[i]:
            tp += 1
        else:
            fp += 1
        if n + 1 == len(order) or keys[order[n + 1]] != keys[i]:  # the last item with this key
            fpr.append(fp / negatives if negatives else 0.0)
            tpr.append(tp / positives if positives else 0.0)
            thresholds.append(float(keys[i]))
    return fpr, tpr, thresholds


def trapezoid_auc(fpr: Sequence[float], tpr: Sequence[float]) -> float:
    """The area under the polyline through ``(fpr, tpr)`` by the trapezoid rule (points in order of fpr)."""
    return float(sum((fpr[i] - fpr[i - 1]) * (tpr[i] + tpr[i - 1]) / 2 for i in range(1, len(fpr))))


# ---------------------------------------------------------------------------------------------------------
# Edges and nodes with their rank keys
# ---------------------------------------------------------------------------------------------------------

def _ranked_items(scored: Circuit, reference: Circuit, level: str, by: str, nodes: str):
    for name, value, allowed in (("level", level, LEVELS), ("by", by, RANKINGS), ("nodes", nodes, NODE_KINDS)):
        if value not in allowed:
            raise InputError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {shorten(value)}.")
    for name, c in (("scored", scored), ("reference", reference)):
        if not isinstance(c, Circuit):
            raise InputError(f"roc() takes two Circuits; {name} is a {type(c).__name__}.")
    graph = scored.graph
    if not graph.same_shape(reference.graph):
        raise InputError(f"the scored circuit and the reference belong to different graphs: {graph.describe()} vs "
                         f"{reference.graph.describe()}. Score the reference's model.")
    edge_keys = _edge_keys(scored, by)
    truth = set(reference.edges)
    if level == "edge":
        return (edge_keys, [e in truth for e in graph.edges], list(graph.edges), "edge")
    node_of = _node_namer(graph, nodes)
    keys: dict[str, float] = {}
    for (s, r), key in zip(graph.edges, edge_keys):
        for n in (node_of(s, sender=True), node_of(r, sender=False)):
            keys[n] = max(keys.get(n, -math.inf), key)
    true_nodes = {node_of(s, sender=True) for s, _ in truth} | {node_of(r, sender=False) for _, r in truth}
    names = list(keys)
    return [keys[n] for n in names], [n in true_nodes for n in names], names, "node"


def _edge_keys(scored: Circuit, by: str) -> list[float]:
    """One rank key per edge of the graph, in graph order: higher = kept earlier."""
    graph = scored.graph
    if scored.scores is None:  # a yes/no circuit
        present = set(scored.edges)
        return [1.0 if e in present else 0.0 for e in graph.edges]
    bad = [e for e, s in zip(scored.edges, scored.scores) if not math.isfinite(s)]
    if bad:
        raise InputError(f"{len(bad)} edge score(s) are not finite (e.g. {bad[0][0]} -> {bad[0][1]}); a ROC curve "
                         "needs a number for every edge.")
    key = {"abs": abs, "signed": lambda s: s, "negative": lambda s: -s}[by]
    given: dict[Edge, float] = {e: key(s) for e, s in zip(scored.edges, scored.scores)}
    return [given.get(e, -math.inf) for e in graph.edges]


def _node_namer(graph: Graph, nodes: str):
    """The node an edge end belongs to: a component, or (``"acdc"``) a head's input stays its own node."""
    def name(end: str, sender: bool) -> str:
        if sender:
            return end
        node = graph.receiver(end)
        if nodes == "acdc" and node.kind in ("q", "k", "v"):
            return node.name
        return node.component
    return name


__all__ = ["RocCurve", "roc", "roc_auc", "roc_points", "trapezoid_auc"]
