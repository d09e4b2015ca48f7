"""Training curves (:class:`circuitlab.dynamics.TrainingCurves`) as one SVG of three panels sharing a log x axis.

x is the number of training tokens seen (log scale; the step-0 checkpoint sits at the left edge). Panels: the
best prefix-matching score of each layer and the best previous-token score; the ICL score (nats); the training
loss (each step's batch, in grey, and its running mean over about a tenth of a doubling, in black). A phase
change (:func:`circuitlab.dynamics.phase_changes`), when given, is shaded across all panels: induction's window in
blue, the ICL score's in orange.
"""

from __future__ import annotations

import html
import math
from typing import Any, Optional, Sequence

from circuitlab.render.kinds import fragment, heading, renders
from circuitlab.render.style import svg_open

#: one colour per layer's line (then cycled), the previous-token line, and the two phase-change windows
LAYER_COLOURS = ("#9ca3af", "#1d4ed8", "#047857", "#b91c1c")
PREVIOUS_COLOUR = "#d97706"
WINDOW_COLOURS = {"induction": "#bfdbfe", "icl": "#fed7aa"}


def _fmt(v: float) -> str:
    return f"{v:.1f}"


def _ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 5, 10) if m * mag >= raw), default=raw)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


def curves_svg(curves: Any, phase: Any = None, width: int = 640, panel_height: int = 130,
               title: Optional[str] = None) -> str:
    """The three panels of ``curves`` (a ``TrainingCurves``) as an SVG string; ``phase`` a ``PhaseChanges``."""
    pad_l, pad_r, pad_t, gap = 56, 120, 22, 30
    plot_w = width - pad_l - pad_r
    height = pad_t + 3 * panel_height + 2 * gap + 40
    xs = [float(t) for t in curves.tokens_seen]
    x_lo = min(x for x in xs if x > 0)
    x_lo_log, x_hi_log = math.log10(x_lo) - 0.15, math.log10(max(xs))

    def X(v: float) -> float:
        lv = math.log10(v) if v > 0 else x_lo_log
        return pad_l + (lv - x_lo_log) / (x_hi_log - x_lo_log) * plot_w

    out = svg_open(width, height, "cl-dynamics", title or f"Training curves of {curves.icl.model}")
    panels: list[tuple[str, list[tuple[str, str, list[float], list[float]]]]] = []
    pm = curves.prefix_matching.values
    lines = [(f"layer {layer} prefix matching", LAYER_COLOURS[layer % len(LAYER_COLOURS)], xs,
              pm[:, layer].max(-1).values.tolist()) for layer in range(pm.shape[1])]
    lines.append(("previous token (best head)", PREVIOUS_COLOUR, xs,
                  curves.previous_token.values.flatten(1).max(1).values.tolist()))
    panels.append(("head score", lines))
    panels.append(("ICL score (nats)", [("ICL score", "#111827", xs, curves.icl.values.tolist())]))
    if curves.train_loss is not None:
        loss = curves.train_loss.values.tolist()
        per = curves.meta.get("tokens_per_step") or 1
        lx = [(i + 1) * per for i in range(len(loss))]
        smooth = []
        for i in range(len(loss)):
            lo = max(0, int(i / 1.07))
            smooth.append(sum(loss[lo:i + 1]) / (i + 1 - lo))
        keep = range(0, len(loss), max(1, len(loss) // 400))  # at most ~400 points a line
        lx, loss, smooth = [lx[i] for i in keep], [loss[i] for i in keep], [smooth[i] for i in keep]
        panels.append(("training loss (nats)", [("each step", "#d1d5db", lx, loss), ("running mean", "#111827", lx,
                                                                                       smooth)]))
    for p, (label, plotted) in enumerate(panels):
        top = pad_t + p * (panel_height + gap)
        ys = [v for _, _, _, vals in plotted for v in vals if math.isfinite(v)]
        y_lo, y_hi = min(ys), max(ys)
        if y_hi - y_lo < 1e-9:
            y_lo, y_hi = y_lo - 0.5, y_hi + 0.5
        margin = 0.05 * (y_hi - y_lo)
        y_lo, y_hi = y_lo - margin, y_hi + margin

        def Y(v: float, top: float = top, y_lo: float = y_lo, y_hi: float = y_hi) -> float:
            return top + (1 - (v - y_lo) / (y_hi - y_lo)) * panel_height

        out.append(f"<rect x='{pad_l}' y='{top}' width='{plot_w}' height='{panel_height}' fill='#ffffff' "
                   f"stroke='#9ca3af'/>")
        if phase is not None:
            for name in ("induction", "icl"):
                w = getattr(phase, name)
                if w.found:
                    out.append(f"<rect x='{_fmt(X(w.start))}' y='{top}' width='{_fmt(max(1.0, X(w.end) - X(w.start)))}'"
                               f" height='{panel_height}' fill='{WINDOW_COLOURS[name]}' fill-opacity='0.6'>"
                               f"<title>{name} phase change: {w.start:,.0f} to {w.end:,.0f} tokens</title></rect>")
        for v in _ticks(y_lo, y_hi):
            out.append(f"<line x1='{pad_l}' x2='{pad_l + plot_w}' y1='{_fmt(Y(v))}' y2='{_fmt(Y(v))}' "
                       f"stroke='#e5e7eb'/><text x='{pad_l - 4}' y='{_fmt(Y(v) + 3)}' text-anchor='end'>{v:g}</text>")
        out.append(f"<text x='12' y='{_fmt(top + panel_height / 2)}' text-anchor='middle' "
                   f"transform='rotate(-90 12 {_fmt(top + panel_height / 2)})'>{html.escape(label)}</text>")
        for k, (name, col, lx, vals) in enumerate(plotted):
            pts = " ".join(f"{_fmt(X(x))},{_fmt(Y(v))}" for x, v in zip(lx, vals) if math.isfinite(v))
            out.append(f"<polyline points='{pts}' fill='none' stroke='{col}' stroke-width='1.6'/>")
            if len(lx) <= 200:
                out += [f"<circle cx='{_fmt(X(x))}' cy='{_fmt(Y(v))}' r='1.8' fill='{col}'/>"
                        for x, v in zip(lx, vals) if math.isfinite(v)]
            ly = top + 12 + 14 * k
            out.append(f"<line x1='{pad_l + plot_w + 8}' x2='{pad_l + plot_w + 22}' y1='{ly - 3}' y2='{ly - 3}' "
                       f"stroke='{col}' stroke-width='2'/><text x='{pad_l + plot_w + 26}' y='{ly}' "
                       f"font-size='9'>{html.escape(name)}</text>")
    bottom = pad_t + 3 * panel_height + 2 * gap if len(panels) == 3 else pad_t + 2 * panel_height + gap
    for e in range(math.ceil(x_lo_log), math.floor(x_hi_log) + 1):
        x = X(10.0 ** e)
        out.append(f"<line x1='{_fmt(x)}' x2='{_fmt(x)}' y1='{bottom}' y2='{bottom + 4}' stroke='#111'/>"
                   f"<text x='{_fmt(x)}' y='{bottom + 15}' text-anchor='middle'>1e{e}</text>")
    out.append(f"<text x='{pad_l + plot_w / 2}' y='{bottom + 30}' text-anchor='middle'>training tokens seen "
               f"(log scale; step 0 at the left edge)</text></svg>")
    return "".join(out)


def _window_words(w: Any) -> str:
    return (f"{w.start:,.0f} to {w.end:,.0f} tokens (moved {w.jump:.2f} of a range of {w.span:.2f})" if w.found
            else f"none (largest move within the window {w.jump:.2f} of a range of {w.span:.2f})")


@renders("TrainingCurves")
def curves_html(curves: Any, phase: Any = None, **_: Any) -> str:
    """Training curves: heading, the three-panel SVG, and the phase changes in words when ``phase`` is given."""
    facts = f"{len(curves.steps)} checkpoints, steps {curves.steps[0]} to {curves.steps[-1]}"
    if curves.icl.model:
        facts += f" · model: {curves.icl.model}"
    parts: list[str] = [heading("Training curves", facts), curves_svg(curves, phase)]
    if phase is not None:
        parts.append(f"<p class='cl-caption'>Induction phase change: {html.escape(_window_words(phase.induction))}. "
                     f"ICL phase change: {html.escape(_window_words(phase.icl))}. "
                     f"Coincide: {'yes' if phase.coincide else 'no'}.</p>")
    return fragment(*parts)


def write_svg(path: Any, curves: Any, phase: Any = None, title: Optional[str] = None) -> None:
    """Write :func:`curves_svg` to ``path`` (a standalone ``.svg`` file)."""
    from pathlib import Path

    Path(path).write_text(curves_svg(curves, phase, title=title) + "\n")


__all__: Sequence[str] = ["curves_svg", "curves_html", "write_svg"]
