"""Probing in HTML: layer curves of probe sweeps with their intervals over seeds, dependency trees as inline SVG
(gold against a probe's tree), the layer x head accuracy of attention heads as dependency finders, and edge
probing's scores with its scalar-mix weights. Plain HTML and SVG, no JavaScript.

- :func:`layer_curve_svg`: values per layer as lines, each point with a whisker of its 95% interval and baselines
  as dashed horizontal lines (points are ``<circle class='cl-point'>``, whiskers ``<path class='cl-ci'>``, lines
  ``<polyline class='cl-curve'>``, baselines ``<line class='cl-baseline'>``, each with a hover title);
- ``ProbeSweep`` (:func:`circuitlab.probing.probe_sweep`, :func:`~circuitlab.probing.sentence_sweep`): one layer
  curve per measure (accuracy with the majority-class baseline, control, selectivity), one line per probe, and
  the table of means +- 95% intervals;
- ``StructuralSweep`` (:func:`circuitlab.probing.structural_sweep`): one layer curve per measure (UUAS, DSpr, root
  accuracy, NSpr) against the linear-chain baseline, the example sentence's gold and predicted trees
  (:func:`tree_svg`), and the table;
- :func:`tree_svg`: the words on a line; the gold tree's arcs above it (grey, each pointing from the head to the
  dependent), the predicted tree's edges below it (undirected, as a structural probe's minimum spanning tree is):
  green where the edge is in the gold tree, red where it is not. Every arc is a ``<path>`` with
  ``class='cl-arc-gold'`` or ``class='cl-arc-pred'`` (and ``data-correct``) and a hover title. Words left out of
  the score (``keep``: punctuation, for UUAS) are grey and their gold arcs dashed;
- :func:`head_accuracy_html`: for :func:`circuitlab.probing.head_sweep`'s result, one layer x head heatmap per
  relation (the existing heatmap renderer), captioned with the best head and the fixed-offset baseline;
- ``EdgeScores`` (:func:`circuitlab.probing.edge.edge_probe`): the accuracies beside the majority baseline, and the
  mix weights as bars with the center of gravity marked.
"""

from __future__ import annotations

import html
import math
from typing import Any, Iterable, Optional, Sequence

import torch

from circuitlab.render.heatmap import heatmap_html
from circuitlab.render.kinds import fragment, heading, renders, table
from circuitlab.render.scale import colour
from circuitlab.render.style import svg_open

CORRECT, WRONG, GOLD = "#15803d", "#dc2626", "#6b7280"
#: line colours of the probes in a layer curve (in order); baselines are grey and dashed
PALETTE = ("#1d4ed8", "#ea580c", "#7c3aed", "#0891b2", "#be123c", "#15803d")
BASELINE = "#6b7280"
#: what each measure of the probe sweeps is, as a panel title
MEASURE_NAMES = {"accuracy": "task accuracy", "control": "control-task accuracy",
                 "selectivity": "selectivity (accuracy - control)", "uuas": "UUAS (distance probe)",
                 "dspr": "distance Spearman, DSpr (distance probe)", "root_acc": "root accuracy (depth probe)",
                 "nspr": "depth Spearman, NSpr (depth probe)"}


def _edges(pairs: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    return sorted({(min(i, j), max(i, j)) for i, j in pairs})


def tree_svg(words: Sequence[str], head: Sequence[int], predicted: Optional[Iterable[tuple[int, int]]] = None,
             title: str = "", step: int = 64, keep: Optional[Sequence[bool]] = None) -> str:
    """A dependency tree as SVG: the gold tree (``head``: 1-based heads, 0 for the root, as in CoNLL-U) above the
    words, and the ``predicted`` undirected edges (0-based word pairs, e.g. :func:`circuitlab.probing.mst_edges`)
    below, coloured correct (in the gold tree) or wrong. ``keep``: the words scored (default all); the others
    (punctuation, for UUAS) show grey, and gold arcs touching them dashed (``data-scored='false'``)."""
    n = len(words)
    if len(head) != n:
        raise ValueError(f"{n} words but {len(head)} heads; give one head per word.")
    if keep is not None and len(keep) != n:
        raise ValueError(f"{n} words but {len(keep)} keep flags; give one per word.")
    kept = [True] * n if keep is None else [bool(k) for k in keep]
    gold = [(h - 1, i) for i, h in enumerate(head) if h]
    gold_set = set(_edges(gold))
    pred = _edges(predicted or [])
    span = max([abs(a - b) for a, b in gold + pred] + [1])
    rise = min(18 + 14 * span, 140)
    top = rise + 16 + (16 if title else 0)
    base = top + 18
    height = base + (int(12 + rise * max(abs(a - b) for a, b in pred) / span) + 2 if pred else 10)
    width = step * n + 20

    def x(i: int) -> float:
        return 10 + step * (i + 0.5)

    out = svg_open(width, height, "cl-tree", font_size=12)
    if title:
        out.append(f"<text x='10' y='14' font-weight='600'>{html.escape(title)}</text>")
    for i, w in enumerate(words):
        grey = "" if kept[i] else f" fill='{GOLD}'"
        out.append(f"<text x='{x(i):.1f}' y='{top + 4}' text-anchor='middle'{grey}>{html.escape(w)}</text>")
    for h, d in gold:
        lift = 12 + rise * abs(h - d) / span
        y0 = top - 12
        scored = kept[h] and kept[d]
        extra = "" if scored else " data-scored='false' stroke-dasharray='3 3'"
        out.append(f"<path class='cl-arc-gold' d='M {x(h):.1f} {y0} C {x(h):.1f} {y0 - lift:.1f}, {x(d):.1f} "
                   f"{y0 - lift:.1f}, {x(d):.1f} {y0}' fill='none' stroke='{GOLD}' stroke-width='1.4'{extra}>"
                   f"<title>{html.escape(f'gold: {words[h]} -> {words[d]}' + ('' if scored else ' (not scored)'))}"
                   f"</title></path><circle cx='{x(d):.1f}' cy='{y0}' r='2.5' fill='{GOLD}'/>")
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


def _tree_figure(words: Sequence[str], head: Sequence[int], predicted: Optional[Iterable[tuple[int, int]]],
                 title: str, keep: Optional[Sequence[bool]]) -> tuple[str, str]:
    """:func:`tree_svg` in a scrolling view, and its legend (with the share of scored gold edges recovered)."""
    pred = _edges(predicted or [])
    kept = [True] * len(words) if keep is None else [bool(k) for k in keep]
    gold = {(a, b) for a, b in _edges((h - 1, i) for i, h in enumerate(head) if h) if kept[a] and kept[b]}
    right = sum(e in gold for e in pred)
    legend = (f"Above: the gold tree (head to dependent). Below: predicted edges, <span style='color:{CORRECT}'>"
              f"green</span> in the gold tree, <span style='color:{WRONG}'>red</span> not"
              + (f"; {right} of {len(gold)} gold edges recovered" if pred else "")
              + ("; grey words (punctuation) are left out of the score, their gold arcs dashed." if not all(kept)
                 else "."))
    svg = tree_svg(words, head, pred, title, keep=keep)
    return (f"<div class='cl-view' style='overflow-x:auto'>{svg}</div>", f"<p class='cl-caption'>{legend}</p>")


def tree_html(words: Sequence[str], head: Sequence[int], predicted: Optional[Iterable[tuple[int, int]]] = None,
              title: str = "", keep: Optional[Sequence[bool]] = None) -> str:
    """:func:`tree_svg` with a legend and the share of gold edges (between ``keep`` words) the prediction
    recovers."""
    return fragment(*_tree_figure(words, head, predicted, title, keep))


# -- layer curves --------------------------------------------------------------------------------------------

def _finite(v: Any) -> bool:
    return v is not None and math.isfinite(float(v))


def plus_minus(mean: float, half_width: float, fmt: str = "{:.3f}") -> str:
    """``"0.953 ± 0.004"``; the mean alone where the interval is NaN (one seed), ``"n/a"`` for a NaN mean."""
    if not _finite(mean):
        return "n/a"
    return fmt.format(mean) + (f" \u00b1 {fmt.format(half_width)}" if _finite(half_width) else "")


def layer_curve_svg(layers: Sequence[str], series: Sequence[tuple[str, Sequence[float], Sequence[float], str]], *,
                    title: str, baselines: Sequence[tuple[str, float, str]] = (), width: int = 280,
                    height: int = 200) -> str:
    """Values per layer as lines: ``series`` are ``(label, means, half_widths, colour)`` with one value per layer
    (a NaN mean leaves a gap; a NaN half-width draws no whisker), each point a dot with a whisker of +- its
    half-width; ``baselines`` are ``(label, value, colour)``, dashed horizontal lines. The y axis includes 0
    and is rounded out to tenths, with gridlines at round steps."""
    n = len(layers)
    pad_l, pad_r, pad_t, pad_b = 38, 10, 36, 26
    plot_w, plot_h = width - pad_l - pad_r, height - pad_t - pad_b
    ends = [0.0] + [float(v) for _, v, _ in baselines if _finite(v)]
    for _, means, hws, _ in series:
        for m, c in zip(means, hws):
            if _finite(m):
                c = float(c) if _finite(c) else 0.0
                ends += [float(m) - c, float(m) + c]
    lo = math.floor(round(min(ends) * 10, 6)) / 10
    hi = math.ceil(round(max(ends) * 10, 6)) / 10
    hi = max(hi, lo + 0.1)

    def x(i: int) -> float:
        return pad_l + (i + 0.5) * plot_w / max(1, n)

    def y(v: float) -> float:
        return pad_t + (hi - v) / (hi - lo) * plot_h

    out = svg_open(width, height, "cl-curves", title)
    out.append(f"<text x='4' y='12' font-weight='600' font-size='11'>{html.escape(title)}</text>")
    step = next(t for t in (0.05, 0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0) if (hi - lo) / t <= 5.0 + 1e-9) \
        if hi - lo <= 50 else (hi - lo) / 4
    ticks = [round(k * step, 6) for k in range(math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9) + 1)]
    for v in ticks:
        out.append(f"<line x1='{pad_l}' x2='{width - pad_r}' y1='{y(v):.1f}' y2='{y(v):.1f}' "
                   f"stroke='{'#9ca3af' if v == 0 else '#e5e7eb'}'/>"
                   f"<text x='{pad_l - 4}' y='{y(v) + 3:.1f}' text-anchor='end'>{v:g}</text>")
    every = max(1, math.ceil(n / 12))
    for i, name in enumerate(layers):
        if i % every == 0 or i == n - 1:
            out.append(f"<text x='{x(i):.1f}' y='{height - pad_b + 13}' text-anchor='middle'>"
                       f"{html.escape(str(name))}</text>")
    out.append(f"<text x='{pad_l + plot_w / 2:.1f}' y='{height - 3}' text-anchor='middle' fill='#555'>layer</text>")
    for label, v, col in baselines:
        if _finite(v):
            out.append(f"<line class='cl-baseline' x1='{pad_l}' x2='{width - pad_r}' y1='{y(v):.1f}' "
                       f"y2='{y(v):.1f}' stroke='{col}' stroke-width='1.5' stroke-dasharray='5 3'><title>"
                       f"{html.escape(f'{label}: {float(v):.3f}')}</title></line>")
    for label, means, hws, col in series:
        segments: list[list[str]] = [[]]
        for i, m in enumerate(means):
            if _finite(m):
                segments[-1].append(f"{x(i):.1f},{y(float(m)):.1f}")
            elif segments[-1]:
                segments.append([])
        for seg in segments:
            if len(seg) > 1:
                out.append(f"<polyline class='cl-curve' points='{' '.join(seg)}' fill='none' stroke='{col}' "
                           f"stroke-width='1.8'><title>{html.escape(label)}</title></polyline>")
        for i, (m, c) in enumerate(zip(means, hws)):
            if not _finite(m):
                continue
            m = float(m)
            if _finite(c) and float(c) > 0:
                c = float(c)
                xi = x(i)
                out.append(f"<path class='cl-ci' d='M {xi:.1f} {y(m - c):.1f} V {y(m + c):.1f} M {xi - 3:.1f} "
                           f"{y(m + c):.1f} H {xi + 3:.1f} M {xi - 3:.1f} {y(m - c):.1f} H {xi + 3:.1f}' "
                           f"stroke='{col}' stroke-width='1.2' fill='none'/>")
            tip = f"{label} at {layers[i]}: {plus_minus(m, c)}"
            out.append(f"<circle class='cl-point' cx='{x(i):.1f}' cy='{y(m):.1f}' r='2.8' fill='{col}'>"
                       f"<title>{html.escape(tip)}</title></circle>")
    lx = pad_l
    for label, _, _, col in series:
        out.append(f"<line x1='{lx}' x2='{lx + 14}' y1='24' y2='24' stroke='{col}' stroke-width='2'/>"
                   f"<text x='{lx + 17}' y='27'>{html.escape(label)}</text>")
        lx += 26 + 6 * len(label)
    for label, v, col in baselines:
        if _finite(v):
            out.append(f"<line x1='{lx}' x2='{lx + 14}' y1='24' y2='24' stroke='{col}' stroke-width='1.5' "
                       f"stroke-dasharray='4 2'/><text x='{lx + 17}' y='27'>{html.escape(label)}</text>")
            lx += 26 + 6 * len(label)
    out.append("</svg>")
    return "".join(out)


def _ci(res: Any) -> torch.Tensor:
    ci = res.meta.get("ci95")
    if isinstance(ci, torch.Tensor) and ci.shape == res.values.shape:
        return ci.detach().double()
    return torch.full(res.values.shape, float("nan"), dtype=torch.float64)


def _panels(charts: Sequence[str]) -> str:
    return ("<div class='cl-view' style='display:flex;flex-wrap:wrap;gap:0.8em'>"
            + "".join(f"<div>{c}</div>" for c in charts) + "</div>")


def _seeds_caption(seeds: Sequence[Any]) -> str:
    if len(seeds) > 1:
        return (f"the mean over {len(seeds)} seeds; whiskers: 95% t-intervals of the mean over seeds (hover a "
                "point for mean \u00b1 half-width)")
    return "one seed, so no intervals (pass two or more seeds for them)"


@renders("ProbeSweep")
def probe_sweep_html(res: Any, **_: Any) -> str:
    """Layer curves per measure (one line per probe, whiskers from ``meta["ci95"]``, the majority-class baseline
    on accuracy), and the table of means +- 95% intervals."""
    m, ci = res.meta, _ci(res)
    probes, layers, measures = res.labels["probe"], res.labels["layer"], res.labels["measure"]
    vals = res.values.detach().double()
    charts = []
    for k, name in enumerate(measures):
        series = [(p, vals[i, :, k].tolist(), ci[i, :, k].tolist(), PALETTE[i % len(PALETTE)])
                  for i, p in enumerate(probes) if bool(vals[i, :, k].isfinite().any())]
        if not series:
            continue
        base = [("majority class", m["majority_baseline"], BASELINE)] \
            if name == "accuracy" and _finite(m.get("majority_baseline")) else []
        charts.append(layer_curve_svg(layers, series, title=MEASURE_NAMES.get(name, name), baselines=base))
    seeds = list(m.get("seeds", []))
    n_test = m.get("n_words", m.get("n_sentences", {})).get("test")
    unit = "words" if "n_words" in m else "sentences"
    facts = " · ".join(f for f in (f"task {res.task}" if res.task else "",
                                    f"{n_test} test {unit}" if n_test is not None else "",
                                    f"{len(seeds)} seed{'s' * (len(seeds) != 1)}",
                                    f"model: {res.model}" if res.model else "") if f)
    caption = f"Test-split accuracy per layer, {_seeds_caption(seeds)}."
    if "accuracy" in measures and _finite(m.get("majority_baseline")):
        caption += " Dashed grey: the majority-class baseline."
    if "linear" in probes and "control" in measures and len(seeds) > 1:
        caption += (" The linear probe's task accuracy does not depend on the seed (a convex problem started at "
                    "zero), so its interval is zero; selectivity's spread is the control task's.")
    rows = [(p, layer) + tuple(plus_minus(float(vals[i, j, k]), float(ci[i, j, k])) for k in range(len(measures)))
            for i, p in enumerate(probes) for j, layer in enumerate(layers)]
    return fragment(heading(res.title or "Probe sweep", facts), _panels(charts),
                    f"<p class='cl-caption'>{html.escape(caption)}</p>",
                    table(["probe", "layer"] + [f"{k} (95% CI)" if len(seeds) > 1 else k for k in measures], rows))


@renders("StructuralSweep")
def structural_sweep_html(res: Any, **_: Any) -> str:
    """Layer curves per measure against the linear-chain baseline (whiskers from ``meta["ci95"]``), the example
    sentence's gold tree and the distance probe's tree at the best layer, and the table."""
    m, ci = res.meta, _ci(res)
    layers, measures = res.labels["layer"][:-1], res.labels["measure"]
    vals = res.values.detach().double()
    charts = []
    for k, name in enumerate(measures):
        probe = "depth probe" if name in ("root_acc", "nspr") else "distance probe"
        charts.append(layer_curve_svg(layers, [(probe, vals[:-1, k].tolist(), ci[:-1, k].tolist(), PALETTE[0])],
                                      title=MEASURE_NAMES.get(name, name),
                                      baselines=[("linear chain", float(vals[-1, k]), BASELINE)]))
    seeds = list(m.get("seeds", []))
    n_test = m.get("n_sentences", {}).get("test")
    facts = " · ".join(f for f in (f"{n_test} test sentences" if n_test is not None else "",
                                    f"rank {m['rank']}" if "rank" in m else "",
                                    f"{len(seeds)} seed{'s' * (len(seeds) != 1)}",
                                    f"model: {res.model}" if res.model else "") if f)
    caption = (f"Test-split measures per layer, {_seeds_caption(seeds)}. Dashed grey: the linear-chain baseline "
               "(each word attached to the next). UUAS and root accuracy leave punctuation out.")
    parts: list[Any] = [heading(res.title or "Structural probes", facts), _panels(charts),
                        f"<p class='cl-caption'>{html.escape(caption)}</p>"]
    ex = m.get("example")
    if ex:
        name = f" {ex['id']}" if ex.get("id") else ""
        title = (f"Test sentence{name}: gold tree (above) and the tree the distance probe predicts at "
                 f"{ex['layer']} (seed {ex['seed']}, the layer of best mean UUAS; below)")
        parts.append(f"<div class='cl-heatmap-title'>{html.escape(title)}</div>")
        parts += list(_tree_figure(ex["words"], ex["head"], [tuple(e) for e in ex["predicted"]], "", ex.get("keep")))
    rows = [(layer,) + tuple(plus_minus(float(vals[j, k]), float(ci[j, k]) if j < len(layers) else math.nan)
                             for k in range(len(measures)))
            for j, layer in enumerate(res.labels["layer"])]  # the baseline does not depend on the seed
    parts.append(table(["layer"] + [f"{k} (95% CI)" if len(seeds) > 1 else k for k in measures], rows))
    return fragment(*parts)


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
    out = svg_open(width, height, "cl-mix")
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
    parts = [heading(res.scores.title or "Edge probing", facts), table(["probe", "test accuracy"], rows),
             f"<div class='cl-view'>{mix}</div>", f"<p class='cl-caption'>{html.escape(caption)}</p>"]
    # the same probe on each layer alone, and on the mix of layers 0..l (Tenney et al.'s cumulative scoring)
    series, labels = [], None
    for name, line_colour in (("layers", PALETTE[0]), ("cumulative", PALETTE[1 % len(PALETTE)])):
        r = getattr(res, name, None)
        if r is not None:
            labels = labels or r.labels["layer"]
            series.append(("each layer alone" if name == "layers" else "mix of layers 0..l", r.values.tolist(),
                           [float("nan")] * len(r.values), line_colour))
    if series:
        base = [("majority class", float(m["majority_baseline"]), "#888")]
        curve = layer_curve_svg(labels, series, title="test accuracy by layer", baselines=base, width=360)
        expected = getattr(res, "expected_layer", None)
        note = ("Each layer alone" + (" (blue) and the mix of layers 0..l (orange)" if len(series) > 1 else "")
                + "; dashed: the majority class."
                + (f" Expected layer of the differential scores: {expected:.2f}." if expected is not None
                   and math.isfinite(expected) else ""))
        parts += [f"<div class='cl-view'>{curve}</div>", f"<p class='cl-caption'>{html.escape(note)}</p>"]
    return fragment(*parts)


@renders("HeadSweep")
def head_sweep(result: Any, **_: Any) -> str:
    """A head sweep's result (a ``Result`` subclass named ``HeadSweep``): :func:`head_accuracy_html`."""
    return head_accuracy_html(result)
