"""A circuit: a set of edges of a model's graph, optionally with a score per edge.

Scorers (:func:`~circuitlab.circuits.eap`, :func:`~circuitlab.circuits.eap_ig`) return a :class:`Circuit` holding
every edge of the graph with its score; ``circuit.top(100)`` keeps the 100 edges of largest ``|score|``.
Reference circuits are written by hand, from edges or from components::

    graph = Graph.from_model(model)
    induction = Circuit.from_edges(graph, ["L0H2 -> L1H1.k", ("L1H1", "logits")])
    heads = Circuit.from_nodes(graph, ["embed", "L0H2", "L1H1", "logits"])  # every edge among these

    scores = eap(model, clean, corrupted, metric)
    scores.top(20).compare(induction)       # shared / only in one / Jaccard
    scores.to_dataframe()                   # sender, receiver, score
    Circuit.from_json(scores.top(20).to_json())
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping, Optional, Sequence

from circuitlab.circuits.graph import Edge, Graph
from circuitlab.core import check_number, check_texts, shorten
from circuitlab.errors import InputError
from circuitlab.results import Rendered

JSON_FORMAT = "circuitlab.circuit/1"


@dataclass(frozen=True)
class Comparison:
    """Two circuits' edges compared: ``shared``, ``only_self``, ``only_other`` (in graph order) and ``jaccard``
    (shared / union; 1.0 for two empty circuits)."""

    shared: list[Edge]
    only_self: list[Edge]
    only_other: list[Edge]

    @property
    def jaccard(self) -> float:
        union = len(self.shared) + len(self.only_self) + len(self.only_other)
        return len(self.shared) / union if union else 1.0

    def __repr__(self) -> str:
        return (f"Comparison({len(self.shared)} shared, {len(self.only_self)} only in self, "
                f"{len(self.only_other)} only in other, jaccard={self.jaccard:.3f})")


def _edge_list(edges: Any) -> list:
    """``edges`` as a list; a bare string (one edge, which iterating would read letter by letter) or a non-iterable
    is an :class:`~circuitlab.errors.InputError` with the fix."""
    if isinstance(edges, (str, bytes)):
        raise InputError(f"edges must be a list of edges; got the single string {shorten(edges, 60)}, which would be "
                         f"read letter by letter. Wrap it in a list: [{shorten(edges, 60)}].")
    if isinstance(edges, Mapping) or not isinstance(edges, Iterable):
        raise InputError(f"edges must be a list of edges (('L0H1', 'L1H2.k') pairs or 'L0H1 -> L1H2.k' strings); "
                         f"got {type(edges).__name__}.")
    return list(edges)


@dataclass(repr=False)
class Circuit(Rendered):  # to_html() and Jupyter display: circuitlab.render.graph
    """Edges of a :class:`~circuitlab.circuits.graph.Graph`, in the graph's order, with optional scores.

    Attributes:
        graph: the graph the edges belong to.
        edges: ``(sender, receiver)`` name pairs.
        scores: one float per edge (``None``: an unscored circuit, e.g. a reference).
        title, metric, model, task, meta: what was measured, as in :class:`~circuitlab.results.Result`.
    """

    graph: Graph
    edges: list[Edge]  # read-only: make a new circuit rather than editing it
    scores: Optional[list[float]] = None
    title: str = ""
    metric: str = ""
    model: str = ""
    task: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    _position: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.edges = _edge_list(self.edges)
        checked = [self.graph.check_edge(e) for e in self.edges]
        if len(set(checked)) != len(checked):
            raise InputError("a circuit names an edge twice; give each edge once.")
        if self.scores is not None:
            self.scores = [float(s) for s in self.scores]
            if len(self.scores) != len(checked):
                raise InputError(f"a circuit has {len(checked)} edges but {len(self.scores)} scores; give one score "
                                 "per edge, or none.")
        order = sorted(range(len(checked)), key=lambda i: self.graph.edge_index[checked[i]])
        self.edges = [checked[i] for i in order]
        if self.scores is not None:
            self.scores = [self.scores[i] for i in order]
        self._position = {e: i for i, e in enumerate(self.edges)}
        if not self.model:
            self.model = self.graph.model

    # -- construction ----------------------------------------------------------------------------------------
    @classmethod
    def from_edges(cls, graph: Graph, edges: Iterable[Any], scores: Optional[Sequence[float]] = None,
                   **fields: Any) -> "Circuit":
        """A circuit of the given edges: ``("L0H1", "L1H2.k")`` pairs or ``"L0H1 -> L1H2.k"`` strings."""
        return cls(graph, [graph.check_edge(e) for e in _edge_list(edges)], scores, **fields)

    @classmethod
    def from_nodes(cls, graph: Graph, nodes: Iterable[str], **fields: Any) -> "Circuit":
        """Every edge among the named components: ``"embed"``, heads (``"L1H2"``), MLPs (``"MLP0"``), ``"logits"``.

        An edge is kept when its sender is named and its receiver's component is (a head's q, k and v inputs all
        belong to the head). Raises :class:`~circuitlab.errors.InputError` for a name the model's graph lacks.
        """
        if isinstance(nodes, str):  # one name would be read letter by letter: refused with the fix
            check_texts(nodes, "nodes", item="component name")
        names = list(nodes)
        known = set(graph.components)
        for name in names:
            if not isinstance(name, str) or name not in known:
                hint = (" (name a head's component, e.g. 'L1H2', not its input 'L1H2.q'; use from_edges for "
                        "single inputs)" if isinstance(name, str) and name.split(".")[0] in known else "")
                raise InputError(
                    f"node {shorten(name)} is not in this model's graph ({graph.describe()}){hint}. Components are "
                    f"'embed', heads L0H0...L{graph.n_layers - 1}H{graph.n_heads - 1}"
                    f"{f', MLP0...MLP{graph.n_layers - 1}' if not graph.attn_only else ''} and 'logits'."
                )
        chosen = set(names)
        edges = [(s, r) for s, r in graph.edges if s in chosen and graph.receiver(r).component in chosen]
        return cls(graph, edges, **fields)

    @classmethod
    def full(cls, graph: Graph, **fields: Any) -> "Circuit":
        """Every edge of ``graph``."""
        return cls(graph, list(graph.edges), **fields)

    # -- container -------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.edges)

    def __iter__(self) -> Iterator[Edge]:
        return iter(self.edges)

    def __contains__(self, edge: object) -> bool:
        try:
            return self.graph.check_edge(edge) in self._position
        except InputError:
            return False

    def score(self, edge: Any) -> float:
        """The score of one edge (``"L0H1 -> L1H2.k"`` or a pair)."""
        if self.scores is None:
            raise InputError("this circuit has no scores (a hand-made or loaded unscored circuit).")
        e = self.graph.check_edge(edge)
        if e not in self._position:
            raise InputError(f"edge {e[0]} -> {e[1]} is in the graph but not in this circuit.")
        return self.scores[self._position[e]]

    @property
    def nodes(self) -> list[str]:
        """The components the edges touch, in forward order (``"L1H2"`` for an edge into ``"L1H2.k"``)."""
        touched = {s for s, _ in self.edges} | {self.graph.receiver(r).component for _, r in self.edges}
        return [c for c in self.graph.components if c in touched]

    # -- selection -------------------------------------------------------------------------------------------
    def top(self, k: int) -> "Circuit":
        """The ``k`` edges of largest ``|score|`` (ties: graph order) as a new circuit with their scores."""
        if self.scores is None:
            raise InputError("top(k) needs scores; this circuit has none. Score the graph first, e.g. with eap().")
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise InputError(f"k must be a non-negative int (a number of edges); got {shorten(k)}.")
        order = sorted(range(len(self.edges)), key=lambda i: -abs(self.scores[i]))[:k]
        return self._subset(sorted(order), f"top {min(k, len(self.edges))} edges")

    def threshold(self, value: float) -> "Circuit":
        """The edges with ``|score| >= value`` as a new circuit."""
        if self.scores is None:
            raise InputError("threshold() needs scores; this circuit has none.")
        check_number(value, "threshold", low=0,
                     message=f"a score threshold must be a finite number >= 0; got {value!r}.")
        return self._subset([i for i, s in enumerate(self.scores) if abs(s) >= value], f"|score| >= {value:g}")

    def _subset(self, keep: list[int], how: str) -> "Circuit":
        return Circuit(self.graph, [self.edges[i] for i in keep],
                       None if self.scores is None else [self.scores[i] for i in keep],
                       title=f"{self.title}: {how}" if self.title else how, metric=self.metric, model=self.model,
                       task=self.task, meta=dict(self.meta))

    def compare(self, other: "Circuit") -> Comparison:
        """Edges shared with ``other``, only in this circuit, only in ``other``; and their Jaccard index."""
        if not isinstance(other, Circuit):
            raise InputError(f"compare() takes another Circuit; got {type(other).__name__}.")
        if not self.graph.same_shape(other.graph):
            raise InputError(f"cannot compare circuits of different graphs: {self.graph.describe()} vs "
                             f"{other.graph.describe()}.")
        mine, theirs = set(self.edges), set(other.edges)
        return Comparison(shared=[e for e in self.edges if e in theirs],
                          only_self=[e for e in self.edges if e not in theirs],
                          only_other=[e for e in other.edges if e not in mine])

    # -- conversions -----------------------------------------------------------------------------------------
    def to_dataframe(self):
        """One row per edge: ``sender``, ``receiver``, ``score`` (NaN for an unscored circuit)."""
        import pandas as pd

        scores = self.scores if self.scores is not None else [math.nan] * len(self.edges)
        return pd.DataFrame({"sender": [s for s, _ in self.edges], "receiver": [r for _, r in self.edges],
                             "score": scores})

    def to_json(self, indent: Optional[int] = None) -> str:
        """The circuit as JSON: model name, the graph's shape and size, edges with scores, and what was measured."""
        def plain(value: Any) -> Any:  # meta may hold tensors or tuples; JSON keeps numbers, text and lists
            if hasattr(value, "tolist"):
                return value.tolist()
            if isinstance(value, dict):
                return {str(k): plain(v) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return [plain(v) for v in value]
            return value if isinstance(value, (str, int, float, bool)) or value is None else str(value)

        edges = [{"sender": s, "receiver": r} for s, r in self.edges]
        if self.scores is not None:
            for e, score in zip(edges, self.scores):
                e["score"] = score
        return json.dumps({"format": JSON_FORMAT, "model": self.model, "graph": self.graph.spec(),
                           "scored": self.scores is not None,
                           "title": self.title, "metric": self.metric, "task": self.task, "meta": plain(self.meta),
                           "edges": edges}, indent=indent)

    @classmethod
    def from_json(cls, text: str) -> "Circuit":
        """A circuit written by :meth:`to_json` (the graph is rebuilt from its saved shape)."""
        try:
            data = json.loads(text)
        except (TypeError, ValueError) as err:
            raise InputError(f"not a circuit's JSON: {err}. Pass the text written by Circuit.to_json().") from None
        if not isinstance(data, dict) or data.get("format") != JSON_FORMAT:
            raise InputError(f"not a circuit's JSON (expected format {shorten(JSON_FORMAT)}); pass the text written by "
                             "Circuit.to_json().")
        def bad(field: str, what: str) -> InputError:
            return InputError(f"not a circuit's JSON: field {shorten(field)} {what}; pass the text written by "
                              "Circuit.to_json() (a hand-edited file must keep its structure).")

        if not isinstance(data.get("graph"), dict):
            raise bad("graph", "must be an object holding the graph's shape")
        spec = dict(data["graph"])
        n_edges = spec.pop("n_edges", None)
        try:
            graph = Graph(**spec, model=data.get("model", ""))
        except TypeError as err:  # a key missing or unknown
            raise bad("graph", f"does not describe a graph ({err})") from None
        if n_edges is not None and n_edges != graph.n_edges:
            raise InputError(f"the saved graph had {n_edges} edges but its shape gives {graph.n_edges}; the JSON was "
                             "written by a different version or edited.")
        items = data.get("edges")
        if not isinstance(items, list):
            raise bad("edges", "must be a list of {\"sender\": ..., \"receiver\": ...} objects")
        for i, e in enumerate(items):
            if not (isinstance(e, dict) and isinstance(e.get("sender"), str) and isinstance(e.get("receiver"), str)):
                raise bad(f"edges[{i}]", f"must be an object with string 'sender' and 'receiver'; got {str(e)[:80]}")
        edges = [(e["sender"], e["receiver"]) for e in items]
        scored = bool(data.get("scored", all("score" in e for e in items)))
        if scored:
            for i, e in enumerate(items):
                score = e.get("score")
                if isinstance(score, bool) or not isinstance(score, (int, float)):
                    raise bad(f"edges[{i}].score", f"must be a number (the file says the circuit is scored); "
                                                   f"got {shorten(score)}")
        return cls(graph, edges, [e["score"] for e in items] if scored else None, title=data.get("title", ""),
                   metric=data.get("metric", ""), model=data.get("model", ""), task=data.get("task", ""),
                   meta=data.get("meta", {}))

    def __repr__(self) -> str:
        head = f"Circuit({len(self.edges)} of {self.graph.n_edges} edges, {len(self.nodes)} components"
        head += f", model {self.model!r}" if self.model else ""
        head += f", metric {self.metric!r})" if self.metric else ")"
        if self.scores is None or not self.edges:
            return head
        best = sorted(range(len(self.edges)), key=lambda i: -abs(self.scores[i]))[:5]
        lines = [f"  {self.edges[i][0]} -> {self.edges[i][1]}: {self.scores[i]:+.4g}" for i in best]
        more = [f"  ... {len(self.edges) - 5} more"] if len(self.edges) > 5 else []
        return "\n".join([head, *lines, *more])


__all__ = ["Circuit", "Comparison"]
