"""Probing in HTML: dependency trees as inline SVG (gold against a probe's tree), the layer x head accuracy of
attention heads as dependency finders, and edge probing's scores with its scalar-mix weights. Plain HTML and SVG,
no JavaScript.

- :func:`tree_svg`: the words on a line; the gold tree's arcs above it (grey, each pointing from the head to the
  dependent), the predicted tree's edges below it (undirected, as a structural probe's minimum spanning tree is):
  green where the edge is in the gold tree, red where it is not. Every arc is a ``<path>`` with
  ``class='cl-arc-gold'`` or ``class='cl-arc-pred'`` (and ``data-correct``) and a hover title;
- :func:`head_accuracy_html`: for :func:`circuitlab.probing.head_sweep`'s result, one layer x head heatmap per
  relation (the existing heatmap renderer), captioned with the best head and the fixed-offset baseline;
- ``EdgeScores`` (:func:`circuitlab.probing.edge.edge_probe`): the accuracies beside the majority baseline, and the
  mix weights as bars with the center of gravity marked.
"""

from __future__ import annotations

import html
from typing import Any, Iterable, Optional, Sequence

from circuitlab.render.heatmap import heatmap_html
from circuitlab.render.kinds import fragment, heading, renders, table
from circuitlab.render.scale import colour

CORRECT, WRONG, GOLD = "#15803d", "#dc2626", "#6b7280"


def _edges(pairs: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    return sorted({(min(i, j), max(i, j)) for i, j in pairs})


def tree_svg(words: Sequence[str], head: Sequence[int], predicted: Optional[Iterable[tuple[int, int]]] = None,
             title: str = "", step: int = 64) -> str:
    """A dependency tree as SVG: the gold tree (``head``: 1-based heads, 0 for the root, as in CoNLL-U) above the
    words, and the ``predicted`` undirected edges (0-based word pairs, e.g. :func:`circuitlab.probing.mst_edges`)
    below, coloured correct (in the gold tree) or wrong."""
    n = len(words)
    if len(head) != n:
        raise ValueError(f"{n} words but {len(head)} heads; give one head per word.")
    gold = [(h - 1, i) for i, h in enumerate(head) if h]
    gold_set = set(_edges(gold))
    pred = _edges(predicted or [])
    span = max([abs(a - b) for a, b in gold + pred] + [1])
    rise = min(18 + 14 * span, 140)
    top = rise + 16 + (16 if title else 0)
    base = top + 18
    height = base + (rise + 12 if pred else 10)
    width = step * n + 20

    def x(i: int) -> float:
        return 10 + step * (i + 0.5)

    out = [f"<svg xmlns='http://www.w3.org/2000/svg' class='cl-tree' viewBox='0 0 {width} {height}' "
           f"width='{width}' height='{height}' font-family='system-ui, sans-serif' font-size='12'>"]
    if title:
        out.append(f"<text x='10' y='14' font-weight='600'>{html.escape(title)}</text>")
    for i, w in enumerate(words):
        out.append(f"<text x='{x(i):.1f}' y='{top + 4}' text-anchor='middle'>{html.escape(w)}</text>")
    for h, d in gold:
        lift = 12 + rise * abs(h - d) / span
        y0 = top - 12
        out.append(f"<path class='cl-arc-gold' d='M {x(h):.1f} {y0} C {x(h):.1f} {y0 - lift:.1f}, {x(d):.1f} "
                   f"{y0 - lift:.1f}, {x(d):.1f} {y0}' fill='none' stroke='{GOLD}' stroke-width='1.4'>"
                   f"<title>{html.escape(f'gold: {words[h]} -> {words[d]}')}</title></path>"
                   f"<circle cx='{x(d):.1f}' cy='{y0}' r='2.5' fill='{GOLD}'/>")
    for a, b in pred:
        ok = (a, b) in gold_set
        tip = f"predicted: {words[a]} - {words[b]} ({'in' if ok else 'not in'} the gold tree)"
        drop = 12 + rise * abs(a - b) / span
        y0 = base - 6
        out.append(f"<path class='cl-arc-pred' data-correct='{str(ok).lower()}' d='M {x(a):.1f} {y0} C {x(a):.1f} "
                   f"{y0 + drop:.1f}, {x(b):.1f} {y0 + drop:.1f}, {x(b):.1f} {y0}' fill='none' "
                   f"stroke='{CORRECT if ok else WRONG}' stroke-width='1.6'><title>"
                   f"{html.escape(tip)}</title></path>")
    out.append("</svg>")
    return "".join(out)


def tree_html(words: Sequence[str], head: Sequence[int], predicted: Optional[Iterable[tuple[int, int]]] = None,
              title: str = "") -> str:
    """:func:`tree_svg` with a legend and the share of gold edges the prediction recovers."""
    pred = _edges(predicted or [])
    gold = set(_edges((h - 1, i) for i, h in enumerate(head) if h))
    right = sum(e in gold for e in pred)
    legend = (f"Above: the gold tree (head to dependent). Below: predicted edges, <span style='color:{CORRECT}'>"
              f"green</span> in the gold tree, <span style='color:{WRONG}'>red</span> not"
              + (f"; {right} of {len(gold)} gold edges recovered." if pred else "."))
    return fragment(f"<div class='cl-view'>{tree_svg(words, head, pred, title)}</div>",
                    f"<p class='cl-caption'>{legend}</p>")


def head_accuracy_html(result: Any, relations: Optional[Sequence[str]] = None) -> str:
    """One layer x head heatmap per relation of a :func:`~circuitlab.probing.head_sweep` result, each captioned with
    its best head and the best fixed-offset baseline."""
    rels = list(result.labels["relation"]) if relations is None else list(relations)
    meta = result.meta
    n_layers, n_heads = result.values.shape[1:]
    layers = result.labels.get("layer", [f"L{l}" for l in range(n_layers)])
    heads = result.labels.get("head", [f"H{h}" for h in range(n_heads)])
    panels = []
    for r in rels:
        k = result.labels["relation"].index(r)
        b, base = meta["best"][r], meta["baseline"][r]
        title = (f"{r}: best L{b['layer']}H{b['head']} {b['accuracy']:.3f} vs offset {base['offset']:+d} "
                 f"{base['accuracy']:.3f} ({meta['counts'][r]} edges)")
        panels.append(heatmap_html(result.values[k], layers, heads, "layer", "head", title=title, fmt="{:.2f}",
                                   vmax=1.0, scale="sequential"))
    facts = f"{meta.get('n_sentences', '?')} sentences" + (f" · model: {result.model}" if result.model else "")
    return fragment(heading(result.title or "Attention heads as dependency finders", facts), *panels)


def _mix_svg(weights: Sequence[float], labels: Sequence[str], cog: float, width: int = 360,
             height: int = 150) -> str:
    pad_l, pad_b, pad_t = 34, 24, 12
    plot_h = height - pad_b - pad_t
    top = max(max(weights), 1e-9)
    bw = (width - pad_l - 8) / max(1, len(weights))
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' class='cl-mix' viewBox='0 0 {width} {height}' width='{width}' "
           f"height='{height}' font-family='system-ui, sans-serif' font-size='10'>"]
    for i, (w, name) in enumerate(zip(weights, labels)):
        h = plot_h * w / top
        x0 = pad_l + i * bw + 0.15 * bw
        out.append(f"<rect class='cl-bar' x='{x0:.1f}' y='{pad_t + plot_h - h:.1f}' width='{0.7 * bw:.1f}' "
                   f"height='{h:.1f}' fill='{colour(1.0, 1.0)}'><title>{html.escape(name)}: {w:.3f}</title></rect>"
                   f"<text x='{x0 + 0.35 * bw:.1f}' y='{height - 8}' text-anchor='middle'>{html.escape(name)}</text>")
    cx = pad_l + (cog + 0.5) * bw
    out.append(f"<line x1='{cx:.1f}' x2='{cx:.1f}' y1='{pad_t}' y2='{pad_t + plot_h}' stroke='#111' "
               f"stroke-dasharray='4 3'><title>center of gravity {cog:.2f}</title></line>"
               f"<text x='{pad_l - 4}' y='{pad_t + 8}' text-anchor='end'>{top:.2f}</text></svg>")
    return "".join(out)


@renders("EdgeScores")
def edge_scores(res: Any, **_: Any) -> str:
    """Accuracies with the majority baseline, and the scalar-mix weights with the center of gravity."""
    m = res.scores.meta
    rows = [(p, f"{v:.3f}") for p, v in zip(res.scores.labels["probe"], res.scores.values.tolist())]
    rows.append(("majority class", f"{m['majority_baseline']:.3f}"))
    facts = (f"task {res.scores.task} · {m['n_examples']['test']} test examples · pool {m['options']['pool']}"
             + (f" · model: {res.scores.model}" if res.scores.model else ""))
    mix = _mix_svg(res.mix.values.tolist(), res.mix.labels["layer"], res.center_of_gravity)
    caption = (f"Scalar-mix weights per layer (softmax; gamma {res.gamma:.2f}); dashed: the center of gravity "
               f"{res.center_of_gravity:.2f}.")
    return fragment(heading(res.scores.title or "Edge probing", facts), table(["probe", "test accuracy"], rows),
                    f"<div class='cl-view'>{mix}</div>", f"<p class='cl-caption'>{html.escape(caption)}</p>")


@renders("HeadSweep")
def head_sweep(result: Any, **_: Any) -> str:
    """A head sweep's result (a ``Result`` subclass named ``HeadSweep``): :func:`head_accuracy_html`."""
    return head_accuracy_html(result)
