"""Figures of toy models of superposition (:mod:`circuitlab.features.toy`) as self-contained inline SVG.

- :func:`phase_svg`: the two-feature phase diagram, one cell per (relative importance, sparsity), coloured by the
  phase of the extra feature (not represented / dedicated dimension / superposition), feature density ``1 - S``
  along x and relative importance along y, as in Elhage et al. 2022;
- :func:`arrows_svg`: the columns of ``W`` of a model with two hidden dimensions as arrows from the origin (the
  pentagon of 5 features at high sparsity), each labelled with its feature and norm;
- :func:`sweep_svg`: per sparsity, a bar per feature of length ``||W_i||``, coloured by its superposition
  ``sum_{j != i} (W^_i . W_j)^2`` (dark: a direction of its own; orange: shared), as the paper's figure of
  ``n = 20``, ``m = 5`` as sparsity rises.

Each function returns one ``<svg>`` string (hover titles give the exact numbers; no JavaScript, no external file);
wrap it in :class:`circuitlab.render.HTML` to put it into a report.
"""

from __future__ import annotations

import html
import math
from typing import Any

from circuitlab.render.style import svg_open

#: the colour of each phase, by code (not represented, dedicated dimension, superposition)
PHASE_COLOURS = ("#d1d5db", "#2563eb", "#ea580c")


def phase_svg(diagram: Any, cell: int = 34) -> str:
    """The phase diagram of :func:`circuitlab.features.toy.phase_diagram` (a ``PhaseDiagram`` or its ``phase``
    result): rows are relative importances (largest at the top), columns feature densities ``1 - S`` (densest at
    the right), each cell the colour of its phase, with a legend."""
    phase = getattr(diagram, "phase", diagram)
    values = phase.values
    names = phase.meta.get("phases", ["not represented", "dedicated dimension", "superposition"])
    rel = [float(v) for v in phase.labels["importance"]]
    sps = [float(v) for v in phase.labels["sparsity"]]
    cols = sorted(range(len(sps)), key=lambda j: 1 - sps[j])  # density rising to the right
    rows = sorted(range(len(rel)), key=lambda i: -rel[i])  # importance falling downwards
    pad_l, pad_t, pad_b, legend_w = 58, 26, 46, 150
    width = pad_l + cell * len(cols) + 16 + legend_w
    height = pad_t + cell * len(rows) + pad_b
    out = svg_open(width, height, "cl-phase", "Two-feature phase diagram", role="img")
    out.append(f"<text x='{pad_l}' y='14' font-weight='600'>phase of the extra feature "
               f"(n = 2 features, m = 1 dimension)</text>")
    for r, i in enumerate(rows):
        y = pad_t + r * cell
        out.append(f"<text x='{pad_l - 4}' y='{y + cell / 2 + 3:.1f}' text-anchor='end'>{rel[i]:.2g}</text>")
        for c, j in enumerate(cols):
            code = int(values[i, j])
            x = pad_l + c * cell
            out.append(f"<rect class='cl-phase-cell' data-phase='{code}' x='{x}' y='{y}' width='{cell - 1}' "
                       f"height='{cell - 1}' fill='{PHASE_COLOURS[code]}'><title>relative importance {rel[i]:g}, "
                       f"sparsity {sps[j]:g} (density {1 - sps[j]:.3g}): {html.escape(names[code])}</title></rect>")
    base = pad_t + cell * len(rows)
    for c, j in enumerate(cols):
        x = pad_l + c * cell + cell / 2
        out.append(f"<text x='{x:.1f}' y='{base + 13}' text-anchor='middle'>{1 - sps[j]:.2g}</text>")
    out.append(f"<text x='{pad_l + cell * len(cols) / 2:.1f}' y='{base + 32}' text-anchor='middle'>"
               "feature density 1 - S</text>")
    out.append(f"<text transform='translate(12 {pad_t + cell * len(rows) / 2:.1f}) rotate(-90)' "
               "text-anchor='middle'>relative importance</text>")
    lx = pad_l + cell * len(cols) + 16
    for k, name in enumerate(names):
        y = pad_t + 4 + 18 * k
        out.append(f"<rect x='{lx}' y='{y}' width='12' height='12' fill='{PHASE_COLOURS[k]}'/>"
                   f"<text x='{lx + 17}' y='{y + 10}'>{html.escape(name)}</text>")
    out.append("</svg>")
    return "".join(out)


def arrows_svg(toy: Any, instance: int = 0, size: int = 240) -> str:
    """The columns ``W_i`` of one instance of a toy model with ``n_hidden = 2`` as arrows from the origin, each
    labelled ``f{i}`` (hover: its norm and angle); the unit circle dashed."""
    W = toy.W[instance].detach().double()
    if W.shape[0] != 2:
        raise ValueError(f"arrows_svg draws models with 2 hidden dimensions; this one has {W.shape[0]}")
    norms = W.norm(dim=0)
    reach = max(1.0, float(norms.max())) * 1.25
    half = size / 2
    scale = (half - 18) / reach

    def px(v: float, axis: int) -> float:
        return half + v * scale if axis == 0 else half - v * scale

    s = float(toy.sparsity[instance])
    out = svg_open(size, size + 18, "cl-arrows", f"Feature directions (sparsity {s:g})", role="img")
    out.append("<defs><marker id='cl-head' viewBox='0 0 10 10' refX='9' refY='5' markerWidth='6' markerHeight='6' "
               "orient='auto-start-reverse'><path d='M0,0 L10,5 L0,10 z' fill='#1f2937'/></marker></defs>")
    out.append(f"<circle cx='{half}' cy='{half}' r='{scale:.1f}' fill='none' stroke='#cbd5e1' "
               "stroke-dasharray='3 3'/>")
    out.append(f"<line x1='8' x2='{size - 8}' y1='{half}' y2='{half}' stroke='#e5e7eb'/>"
               f"<line y1='8' y2='{size - 8}' x1='{half}' x2='{half}' stroke='#e5e7eb'/>")
    for i in range(W.shape[1]):
        x, y = float(W[0, i]), float(W[1, i])
        angle = math.degrees(math.atan2(y, x)) % 360
        title = f"f{i}: ||W_i|| = {float(norms[i]):.3f}, angle {angle:.1f} degrees"
        out.append(f"<line class='cl-arrow' x1='{half}' y1='{half}' x2='{px(x, 0):.1f}' y2='{px(y, 1):.1f}' "
                   f"stroke='#1f2937' stroke-width='2' marker-end='url(#cl-head)'><title>{title}</title></line>")
        lx, ly = px(x * 1.12 + (0.08 if x >= 0 else -0.08), 0), px(y * 1.12, 1)
        out.append(f"<text x='{lx:.1f}' y='{ly + 3:.1f}' text-anchor='middle'>f{i}</text>")
    out.append(f"<text x='{half}' y='{size + 12}' text-anchor='middle' fill='#555'>columns of W, sparsity "
               f"{s:g}</text>")
    out.append("</svg>")
    return "".join(out)


def _heat(v: float) -> str:
    """Dark slate for 0 superposition to orange for 1 or more."""
    a = max(0.0, min(1.0, v))
    lo, hi = (31, 41, 55), (234, 88, 12)
    return "#" + "".join(f"{round(p + (q - p) * a):02x}" for p, q in zip(lo, hi))


def sweep_svg(sweep: Any, bar_h: int = 7, width: int = 170) -> str:
    """A :class:`~circuitlab.features.toy.SparsitySweep` as small multiples: one panel per sparsity, one bar per
    feature (most important at the top) of length ``||W_i||``, coloured by its superposition."""
    norms, sup = sweep.norms.values.double(), sweep.superposition.values.double()
    count = sweep.represented.values
    dpf = sweep.dimensions_per_feature.values
    n_s, n_f = norms.shape
    reach = max(1.0, float(norms.max()))
    gap, pad_t = 14, 34
    panel_h = n_f * bar_h
    total_w = n_s * (width + gap) + gap
    out = svg_open(total_w, pad_t + panel_h + 34, "cl-sweep", "Feature norms and superposition by sparsity",
                   role="img")
    for k in range(n_s):
        x0 = gap + k * (width + gap)
        out.append(f"<text x='{x0}' y='12' font-weight='600'>S = {sweep.represented.labels['sparsity'][k]}</text>"
                   f"<text x='{x0}' y='25' fill='#555'>{int(count[k])} represented, m/||W||&#178; "
                   f"{float(dpf[k]):.2f}</text>")
        for i in range(n_f):
            w = float(norms[k, i]) / reach * (width - 24)
            y = pad_t + i * bar_h
            out.append(f"<rect class='cl-norm' x='{x0 + 20}' y='{y}' width='{max(w, 0.0):.1f}' height='{bar_h - 1}' "
                       f"fill='{_heat(float(sup[k, i]))}'><title>f{i}: ||W_i|| = {float(norms[k, i]):.3f}, "
                       f"superposition {float(sup[k, i]):.3f}</title></rect>")
        out.append(f"<text x='{x0 + 16}' y='{pad_t + 6}' text-anchor='end' fill='#555'>f0</text>"
                   f"<text x='{x0 + 16}' y='{pad_t + panel_h}' text-anchor='end' fill='#555'>f{n_f - 1}</text>")
    y = pad_t + panel_h + 18
    out.append(f"<text x='{gap}' y='{y}' fill='#555'>bar length ||W_i||; colour: superposition sum_j (W^_i . W_j)"
               "&#178;, </text>")
    out.append(f"<rect x='{gap + 330}' y='{y - 9}' width='10' height='10' fill='{_heat(0)}'/><text x='{gap + 344}' "
               f"y='{y}' fill='#555'>0</text><rect x='{gap + 360}' y='{y - 9}' width='10' height='10' "
               f"fill='{_heat(1)}'/><text x='{gap + 374}' y='{y}' fill='#555'>&#8805; 1</text>")
    out.append("</svg>")
    return "".join(out)


__all__ = ["PHASE_COLOURS", "arrows_svg", "phase_svg", "sweep_svg"]
