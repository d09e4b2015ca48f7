"""The interactive attribution-graph page: one self-contained HTML file (inline SVG and script, no CDN, no network).

Layout: one column per prompt position (the token under it), one row per layer, token embeddings at the bottom,
the logit nodes on the top row (at the last position); the nodes of one cell side by side. Nodes: features as circles
(area by influence), error nodes as grey squares, embeddings and logits as labelled boxes. Edges: lines from
source to target, **width** by ``|weight|`` (relative to the largest drawn), **colour** by sign (blue positive, red
negative, :mod:`circuitlab.render.scale`'s colours), the strongest drawn last.

Interaction: **hover** a node for its card (kind, layer, position, token, activation, influence, and for a feature
its decoder's top and bottom logit effects, plus the HTML a ``feature_card`` callback returns: the hook for the
feature dashboards of :mod:`circuitlab.features`); **click** pins a node (its edges highlighted, the others dimmed);
**group** turns the pinned nodes into a named supernode (listed, kept in the export); **export** downloads the
graph JSON in circuit-tracer / Neuronpedia's schema (:func:`circuitlab.graphs.export.graph_json`) with the pins and
supernodes in ``qParams``. The graph JSON is also in the page (``<script id="cl-graph-data">``).
"""

from __future__ import annotations

import html
import json
import math
from typing import Any, Callable, Optional

from circuitlab.render.scale import colour

CELL_W, ROW_H, NODE_GAP, MARGIN = 110, 90, 11, 40


def _js_json(obj: Any) -> str:
    return json.dumps(obj).replace("</", "<\\/")


def graph_page(data: dict, *, title: Optional[str] = None,
               feature_card: Optional[Callable[[int, int], str]] = None) -> str:
    """The page of graph JSON ``data`` (:func:`circuitlab.graphs.export.graph_json`). ``feature_card(layer,
    latent)``: optional HTML shown in a feature's hover card (e.g. a dashboard card)."""
    nodes, links = data["nodes"], data["links"]
    tokens = data["metadata"]["prompt_tokens"]
    n_layers = max([int(n["layer"]) for n in nodes if n["layer"] != "E"] + [1]) - 1
    cells: dict[tuple, list] = {}
    for n in nodes:
        row = -1 if n["layer"] == "E" else min(int(n["layer"]), n_layers)  # logits (n_layers + 1) on the top row
        cells.setdefault((row, n["ctx_idx"]), []).append(n)
    widths = {p: max([len(v) for (r, q), v in cells.items() if q == p] + [1]) for p in range(len(tokens))}
    xs, x = {}, MARGIN
    for p in range(len(tokens)):
        xs[p] = x
        x += max(CELL_W, widths[p] * NODE_GAP + 30)
    width = x + MARGIN
    height = (n_layers + 2) * ROW_H + 2 * MARGIN
    pos = {}
    for (row, p), group in cells.items():
        group.sort(key=lambda n: n.get("influence") or 0.0)  # most influential (lowest cumulative) first
        y = height - MARGIN - ROW_H * (row + 1.5)
        for j, n in enumerate(group):
            pos[n["node_id"]] = (xs[p] + 15 + j * NODE_GAP, y)
    vmax = max([abs(link["weight"]) for link in links] + [1e-12])
    cards = {}
    if feature_card is not None:
        for n in nodes:
            if n["feature_type"] == "cross layer transcoder":
                cards[n["node_id"]] = feature_card(int(n["layer"]), int(n["circuitlab"]["latent"]) if "circuitlab" in n
                                                   else int(n["feature"]) % 10 ** 9)
    svg = [f"<svg xmlns='http://www.w3.org/2000/svg' id='cl-graph' width='{width}' height='{height}' "
           f"viewBox='0 0 {width} {height}' font-family='system-ui, sans-serif' font-size='10'>"]
    for r in range(-1, n_layers + 1):
        y = height - MARGIN - ROW_H * (r + 1.5)
        label = "emb" if r == -1 else ("logits" if r == n_layers else f"L{r}")
        svg.append(f"<text x='4' y='{y + 3:.1f}' fill='#6b7280'>{label}</text>")
        svg.append(f"<line x1='{MARGIN}' x2='{width - 10}' y1='{y:.1f}' y2='{y:.1f}' stroke='#f1f5f9'/>")
    for p, t in enumerate(tokens):
        svg.append(f"<text x='{xs[p] + 10}' y='{height - 8}' fill='#111'>{html.escape(repr(t)[1:-1][:14])}</text>")
    for i, link in sorted(enumerate(links), key=lambda e: abs(e[1]["weight"])):
        (x1, y1), (x2, y2) = pos[link["source"]], pos[link["target"]]
        w = link["weight"]
        svg.append(f"<line class='cl-edge' data-i='{i}' data-s='{html.escape(link['source'])}' "
                   f"data-t='{html.escape(link['target'])}' x1='{x1:.1f}' y1='{y1:.1f}' x2='{x2:.1f}' y2='{y2:.1f}' "
                   f"stroke='{colour(math.copysign(max(abs(w), 0.35 * vmax), w), vmax)}' "
                   f"stroke-width='{0.4 + 5 * abs(w) / vmax:.2f}' "
                   f"stroke-opacity='0.75'/>")
    for n in nodes:
        x0, y0 = pos[n["node_id"]]
        nid = html.escape(n["node_id"])
        kind = n["feature_type"]
        if kind == "cross layer transcoder":
            svg.append(f"<circle class='cl-node' data-id='{nid}' cx='{x0:.1f}' cy='{y0:.1f}' r='4.5' "
                       "fill='#f59e0b' stroke='#92400e'/>")
        elif kind == "mlp reconstruction error":
            svg.append(f"<rect class='cl-node' data-id='{nid}' x='{x0 - 4:.1f}' y='{y0 - 4:.1f}' width='8' "
                       "height='8' fill='#9ca3af' stroke='#374151'/>")
        else:
            fill = "#bfdbfe" if kind == "logit" else "#d1fae5"
            svg.append(f"<rect class='cl-node' data-id='{nid}' x='{x0 - 5:.1f}' y='{y0 - 5:.1f}' width='10' "
                       f"height='10' rx='2' fill='{fill}' stroke='#1f2937'/>")
    svg.append("</svg>")
    scores = data["metadata"].get("circuitlab", {}).get("scores", {})
    pruned = scores.get("pruned", {})
    head = html.escape(title or f"Attribution graph: {''.join(tokens)!r}")
    nan = float("nan")
    summary = (f"{len(nodes)} nodes, {len(links)} edges; replacement score {pruned.get('replacement_score', nan):.3f}, "
               f"completeness score {pruned.get('completeness_score', float('nan')):.3f} (pruned graph)")
    return f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{head}</title>
<style>
body {{ font: 13px system-ui, sans-serif; margin: 12px; color: #111; }}
#cl-wrap {{ overflow: auto; border: 1px solid #e5e7eb; }}
#cl-card {{ position: fixed; display: none; max-width: 360px; background: #fff; border: 1px solid #9ca3af;
           padding: 8px; box-shadow: 0 2px 8px rgba(0,0,0,.2); font-size: 12px; pointer-events: none; z-index: 9; }}
.cl-node {{ cursor: pointer; }} .cl-node.pinned {{ stroke: #000; stroke-width: 2.5; }}
.cl-dim {{ opacity: 0.08; }} button {{ margin-right: 6px; }}
.cl-tok {{ font-family: ui-monospace, monospace; background: #f3f4f6; padding: 0 3px; }}
</style></head><body>
<h2>{head}</h2>
<p id="cl-summary">{html.escape(summary)}</p>
<p><button id="cl-group">group pinned into a supernode</button><button id="cl-clear">clear pins</button>
<button id="cl-export">export graph JSON</button> <span id="cl-pins">no pins</span></p>
<ul id="cl-supernodes"></ul>
<div id="cl-wrap">{''.join(svg)}</div>
<div id="cl-card"></div>
<script type="application/json" id="cl-graph-data">{_js_json(data)}</script>
<script type="application/json" id="cl-feature-cards">{_js_json(cards)}</script>
<script>
(function () {{
  const data = JSON.parse(document.getElementById('cl-graph-data').textContent);
  const cards = JSON.parse(document.getElementById('cl-feature-cards').textContent);
  const byId = {{}}; data.nodes.forEach(n => byId[n.node_id] = n);
  const card = document.getElementById('cl-card');
  const pins = new Set();
  const ents = {{'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;'}};
  const esc = s => String(s).replace(/[&<>"']/g, c => ents[c]);
  function fmt(v) {{ return (v === null || v === undefined) ? '-' : Number(v).toPrecision(4); }}
  function cardHtml(n) {{
    let h = '<b>' + esc(n.clerp || n.node_id) + '</b><br>' + esc(n.feature_type) + ', layer ' + esc(n.layer) +
            ', position ' + n.ctx_idx + ' <span class="cl-tok">' + esc(data.metadata.prompt_tokens[n.ctx_idx]) +
            '</span><br>activation ' + fmt(n.activation) + ', cumulative influence ' + fmt(n.influence);
    if (n.circuitlab && n.circuitlab.logit_effects) {{
      const le = n.circuitlab.logit_effects;
      const chip = t => '<span class="cl-tok">' + esc(t[0]) + '</span>';
      h += '<br>latent #' + n.circuitlab.latent + '<br>raises: ' + le.top.map(chip).join(' ') +
           '<br>lowers: ' + le.bottom.map(chip).join(' ');
    }}
    if (cards[n.node_id]) h += '<div class="cl-feature-card">' + cards[n.node_id] + '</div>';
    return h;
  }}
  function refresh() {{
    document.querySelectorAll('.cl-node').forEach(e => e.classList.toggle('pinned', pins.has(e.dataset.id)));
    document.querySelectorAll('.cl-edge').forEach(e => e.classList.toggle('cl-dim',
      pins.size > 0 && !(pins.has(e.dataset.s) || pins.has(e.dataset.t))));
    document.getElementById('cl-pins').textContent = pins.size ? pins.size + ' pinned' : 'no pins';
    data.qParams.pinnedIds = Array.from(pins);
  }}
  document.querySelectorAll('.cl-node').forEach(e => {{
    e.addEventListener('mouseenter', ev => {{
      card.innerHTML = cardHtml(byId[e.dataset.id]); card.style.display = 'block';
      card.style.left = (ev.clientX + 14) + 'px'; card.style.top = (ev.clientY + 14) + 'px'; }});
    e.addEventListener('mouseleave', () => {{ card.style.display = 'none'; }});
    e.addEventListener('click', () => {{
      pins.has(e.dataset.id) ? pins.delete(e.dataset.id) : pins.add(e.dataset.id); refresh(); }});
  }});
  document.getElementById('cl-clear').addEventListener('click', () => {{ pins.clear(); refresh(); }});
  document.getElementById('cl-group').addEventListener('click', () => {{
    if (pins.size < 2) return;
    const name = 'supernode ' + (data.qParams.supernodes.length + 1);
    data.qParams.supernodes.push([name].concat(Array.from(pins)));
    const li = document.createElement('li'); li.textContent = name + ': ' + Array.from(pins).join(', ');
    document.getElementById('cl-supernodes').appendChild(li);
    pins.clear(); refresh();
  }});
  document.getElementById('cl-export').addEventListener('click', () => {{
    const blob = new Blob([JSON.stringify(data)], {{type: 'application/json'}});
    const a = document.createElement('a'); a.href = URL.createObjectURL(blob);
    a.download = (data.metadata.slug || 'graph') + '.json'; document.body.appendChild(a); a.click(); a.remove();
  }});
  window.CL_GRAPH = data;
}})();
</script></body></html>
"""


__all__ = ["graph_page"]
