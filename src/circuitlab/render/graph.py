"""Circuits as graphs: one self-contained inline SVG per circuit (no JavaScript, no external file), and ROC curves.

Layout, top to bottom as the forward pass runs: the embedding at the top, then one row per layer (its heads side
by side, left to right, and its MLP at the right end), the logits at the bottom. Each head is a box with three
small **ports** on its top edge, its query, key and value inputs (``q``, ``k``, ``v`` from left to right), and
its output at the middle of its bottom edge; an MLP and the logits read at the middle of their top edge. An edge
is a curve from its sender's output to its receiver's port:

- **width** grows linearly with ``|score|`` (from 0.6 px to 7 px at the largest ``|score|`` drawn; an unscored
  circuit draws every edge 1.6 px wide);
- **colour** is the sign, on :mod:`circuitlab.render.scale`'s diverging colours: blue for a positive score, red
  for a negative one, deeper for a larger ``|score|`` (never paler than a third of the way, so a weak edge still
  shows its sign); grey for an unscored edge, and thinnest and grey for a NaN score (an edge a search did not
  visit);
- **hovering** an edge shows its sender, receiver and exact score (an SVG ``<title>``); hovering a node, its name.

Components that no drawn edge touches are drawn pale. A circuit of more than ``max_edges`` edges (default 300)
draws the ``max_edges`` of largest ``|score|`` and says so in the caption; the strongest edges are drawn last, on
top. A legend in the SVG gives the width of three scores and the two colours.
"""

from __future__ import annotations

import html
import math
from typing import Any, Optional

from circuitlab.render.kinds import fragment, heading, renders
from circuitlab.render.scale import colour
from circuitlab.render.style import svg_open

#: drawing constants (px)
COL_W, BOX_W, BOX_H, ROW_H, MARGIN, LEGEND_H = 70, 50, 22, 96, 24, 58
MIN_WIDTH, MAX_WIDTH, UNSCORED_WIDTH = 0.6, 7.0, 1.6
MIN_SHADE = 0.35  # the palest an edge's colour gets, as a fraction of the way from white to full colour
UNSCORED_COLOUR = "#6b7280"
DEFAULT_MAX_EDGES = 300


def edge_width(score: Optional[float], vmax: float) -> float:
    """An edge's stroke width: linear in ``|score|`` from :data:`MIN_WIDTH` (0) to :data:`MAX_WIDTH` (``vmax``)."""
    if score is None:
        return UNSCORED_WIDTH
    if score != score or not vmax > 0 or not math.isfinite(vmax):
        return MIN_WIDTH
    return MIN_WIDTH + (MAX_WIDTH - MIN_WIDTH) * min(1.0, abs(score) / vmax)


def edge_colour(score: Optional[float], vmax: float) -> str:
    """An edge's colour: the diverging scale's blue (positive) or red (negative), at least :data:`MIN_SHADE` deep."""
    if score is None:
        return UNSCORED_COLOUR
    if score != score:
        return colour(score, 1.0)  # NaN: the scale's grey
    t = abs(score) / vmax if vmax > 0 and math.isfinite(vmax) else 0.0
    t = MIN_SHADE + (1 - MIN_SHADE) * min(1.0, t)
    return colour(math.copysign(t, score if score != 0 else 1.0), 1.0)


def _layout(graph) -> tuple[dict[str, tuple[float, float]], dict[str, tuple[float, float]], dict, float, float]:
    """Positions: each component's box centre, each sender's output point, each receiver's port; and the size."""
    cols = graph.n_heads + (0 if graph.attn_only else 1)
    width = max(2 * MARGIN + cols * COL_W, 400)  # room for the legend
    rows = graph.n_layers + 2
    height = 2 * MARGIN + (rows - 1) * ROW_H + BOX_H
    centre: dict[str, tuple[float, float]] = {}

    def row_y(row: int) -> float:
        return MARGIN + row * ROW_H + BOX_H / 2

    mid = MARGIN + cols * COL_W / 2
    centre["embed"] = (mid, row_y(0))
    for layer in range(graph.n_layers):
        for head in range(graph.n_heads):
            centre[f"L{layer}H{head}"] = (MARGIN + (head + 0.5) * COL_W, row_y(layer + 1))
        if not graph.attn_only:
            centre[f"MLP{layer}"] = (MARGIN + (graph.n_heads + 0.5) * COL_W, row_y(layer + 1))
    centre["logits"] = (mid, row_y(graph.n_layers + 1))
    out = {n.name: (centre[n.name][0], centre[n.name][1] + BOX_H / 2) for n in graph.senders}
    ports = {}
    for r in graph.receivers:
        x, y = centre[r.component]
        dx = {"q": -BOX_W / 3, "k": 0.0, "v": BOX_W / 3}.get(r.kind, 0.0)
        ports[r.name] = (x + dx, y - BOX_H / 2)
    return centre, out, ports, width, height


def _fmt(v: float) -> str:
    return f"{v:.1f}".rstrip("0").rstrip(".")


def circuit_svg(circuit: Any, max_edges: int = DEFAULT_MAX_EDGES) -> tuple[str, str]:
    """The circuit as an SVG string, and a caption (what is drawn, how it is encoded)."""
    graph = circuit.graph
    edges = list(circuit.edges)
    scores: list[Optional[float]] = list(circuit.scores) if circuit.scores is not None else [None] * len(edges)
    order = list(range(len(edges)))
    if circuit.scores is not None:
        order.sort(key=lambda i: abs(scores[i]) if scores[i] == scores[i] else -1.0)  # weakest first, strongest on top
    dropped = max(0, len(order) - max_edges)
    order = order[dropped:] if circuit.scores is not None else order[:max_edges]
    finite = [abs(scores[i]) for i in order if scores[i] is not None and math.isfinite(scores[i])]
    vmax = max(finite, default=0.0)

    centre, out, ports, width, height = _layout(graph)
    height_all = height + LEGEND_H
    touched = {edges[i][0] for i in order} | {graph.receiver(edges[i][1]).component for i in order}
    parts = svg_open(_fmt(width), _fmt(height_all), "cl-circuit",
                     f"{circuit.title or 'Circuit'}: {len(order)} of {len(edges)} edges drawn", role="img")

    # edges first (nodes on top of their ends)
    parts.append("<g class='cl-edges' fill='none' stroke-linecap='round'>")
    for i in order:
        (s, r), score = edges[i], scores[i]
        x1, y1 = out[s]
        x2, y2 = ports[r]
        bend = max(24.0, (y2 - y1) * 0.45)
        d = f"M{_fmt(x1)},{_fmt(y1)} C{_fmt(x1)},{_fmt(y1 + bend)} {_fmt(x2)},{_fmt(y2 - bend)} {_fmt(x2)},{_fmt(y2)}"
        tip = f"{s} \u2192 {r}" + ("" if score is None else f": {score:.6g} (exact {score!r})")
        score_attr = "" if score is None else f" data-score='{score!r}'"
        parts.append(f"<path class='cl-edge' d='{d}' stroke='{edge_colour(score, vmax)}' "
                     f"stroke-width='{edge_width(score, vmax):.3f}' stroke-opacity='0.85' "
                     f"data-edge='{html.escape(s)} -&gt; {html.escape(r)}'{score_attr}>"
                     f"<title>{html.escape(tip)}</title></path>")
    parts.append("</g>")

    # nodes
    parts.append("<g class='cl-nodes'>")
    for name, (x, y) in centre.items():
        on = name in touched
        fill, stroke, text = ("#f8fafc", "#334155", "#111111") if on else ("#ffffff", "#d1d5db", "#9ca3af")
        w = BOX_W if name not in ("embed", "logits") else BOX_W * 1.4
        parts.append(f"<g class='cl-node' data-node='{html.escape(name)}'><title>{html.escape(name)}</title>"
                     f"<rect x='{_fmt(x - w / 2)}' y='{_fmt(y - BOX_H / 2)}' width='{_fmt(w)}' height='{BOX_H}' rx='4' "
                     f"fill='{fill}' stroke='{stroke}'/>"
                     f"<text x='{_fmt(x)}' y='{_fmt(y + 3.5)}' text-anchor='middle' fill='{text}'>"
                     f"{html.escape(name)}</text></g>")
    for r in graph.receivers:
        if r.kind in ("q", "k", "v"):
            x, y = ports[r.name]
            on = r.component in touched
            role = {"q": "query", "k": "key", "v": "value"}[r.kind]
            parts.append(f"<circle class='cl-port' cx='{_fmt(x)}' cy='{_fmt(y)}' r='3' fill='#ffffff' "
                         f"stroke='{'#334155' if on else '#d1d5db'}'><title>{html.escape(r.name)} "
                         f"({role} input)</title></circle>"
                         f"<text x='{_fmt(x)}' y='{_fmt(y - 5)}' text-anchor='middle' font-size='7' "
                         f"fill='{'#475569' if on else '#cbd5e1'}'>{r.kind}</text>")
    parts.append("</g>")
    parts.append(_legend(circuit.scores is not None, vmax, height, width))
    parts.append("</svg>")

    what = "edge" if len(edges) == 1 else "edges"
    caption = (f"All {len(edges)} {what} of the circuit drawn." if not dropped else
               f"The {len(order)} edges of largest |score| drawn, of {len(edges)} in the circuit "
               f"({dropped} weaker edges not drawn).")
    if circuit.scores is not None:
        caption += (" Width grows with |score| (widest: "
                    f"{vmax:.3g}); blue edges have positive scores, red negative. Hover over an edge for its exact "
                    "score.")
    caption += (" Layers run top to bottom: the embedding first, the logits last; a head's q, k and v inputs are "
                "the small ports on its top edge.")
    return "".join(parts), caption


def _legend(scored: bool, vmax: float, top: float, width: float) -> str:
    y = top + 8
    out = [f"<g class='cl-graph-legend' transform='translate({MARGIN},{_fmt(y)})' font-size='9' fill='#374151'>"]
    if scored and vmax > 0:
        x = 0.0
        for frac in (1.0, 0.5, 0.1):
            v = frac * vmax
            out.append(f"<line x1='{_fmt(x)}' y1='8' x2='{_fmt(x + 26)}' y2='8' stroke='#6b7280' "
                       f"stroke-width='{edge_width(v, vmax):.3f}'/><text x='{_fmt(x + 31)}' y='11'>"
                       f"|score| {v:.3g}</text>")
            x += 118
        out.append(f"<line x1='0' y1='30' x2='26' y2='30' stroke='{edge_colour(vmax, vmax)}' stroke-width='3'/>"
                   f"<text x='31' y='33'>positive score</text>"
                   f"<line x1='112' y1='30' x2='138' y2='30' stroke='{edge_colour(-vmax, vmax)}' stroke-width='3'/>"
                   f"<text x='143' y='33'>negative score</text>")
    else:
        out.append(f"<line x1='0' y1='8' x2='26' y2='8' stroke='{UNSCORED_COLOUR}' stroke-width='{UNSCORED_WIDTH}'/>"
                   "<text x='31' y='11'>edge (the circuit has no scores)</text>")
    out.append("</g>")
    return "".join(out)


@renders("Circuit")
def circuit_html(circuit: Any, max_edges: int = DEFAULT_MAX_EDGES, **_: Any) -> str:
    """A circuit's heading, its facts, the SVG graph and its caption."""
    svg, caption = circuit_svg(circuit, max_edges=max_edges)
    facts = [f"{len(circuit.edges)} of {circuit.graph.n_edges} edges", f"{len(circuit.nodes)} components"]
    facts += [f"{k}: {v}" for k, v in (("metric", circuit.metric), ("model", circuit.model), ("task", circuit.task))
              if v]
    return fragment(heading(circuit.title or "Circuit", " · ".join(facts)),
                    f"<div class='cl-view' style='overflow-x:auto'>{svg}</div>",
                    f"<p class='cl-caption'>{html.escape(caption)}</p>")


# -- ROC curves ------------------------------------------------------------------------------------------------

def roc_svg(curve: Any, size: int = 240) -> str:
    """A ROC curve as a small SVG line plot: the diagonal (chance), the curve, the AUC."""
    pad = 34
    side = size - 2 * pad
    pts = " ".join(f"{_fmt(pad + f * side)},{_fmt(pad + (1 - t) * side)}" for f, t in zip(curve.fpr, curve.tpr))
    return ("".join(svg_open(size, size, "cl-roc", curve.title)) +
            f"<rect x='{pad}' y='{pad}' width='{side}' height='{side}' fill='#ffffff' stroke='#9ca3af'/>"
            f"<line x1='{pad}' y1='{pad + side}' x2='{pad + side}' y2='{pad}' stroke='#d1d5db' stroke-dasharray='4 3'/>"
            f"<polyline points='{pts}' fill='none' stroke='{colour(1.0, 1.0)}' stroke-width='2'/>"
            f"<text x='{size / 2}' y='{size - 8}' text-anchor='middle'>false-positive rate</text>"
            f"<text x='10' y='{size / 2}' text-anchor='middle' transform='rotate(-90 10 {size / 2})'>"
            f"true-positive rate</text>"
            f"<text x='{pad + side - 4}' y='{pad + side - 6}' text-anchor='end' font-weight='600'>"
            f"AUC {curve.auc:.3f}</text></svg>")


@renders("RocCurve")
def roc_html(curve: Any, **_: Any) -> str:
    """A ROC curve's heading (with the AUC) and its plot."""
    m = curve.meta
    unit = "edges" if m["level"] == "edge" else "nodes"
    facts = f"{m['positives']} reference {unit}, {m['negatives']} others · AUC {curve.auc:.4f}"
    if curve.model:
        facts += f" · model: {curve.model}"
    return fragment(heading(curve.title or "ROC curve", facts), roc_svg(curve))


__all__ = ["circuit_svg", "circuit_html", "edge_colour", "edge_width", "roc_svg", "roc_html"]
