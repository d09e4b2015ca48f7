"""Heatmaps as plain HTML tables, and the default rendering of a :class:`~circuitlab.results.Result`.

A heatmap is a ``<table>``: no JavaScript, so it shows in a report, in Jupyter, and in a notebook viewer alike.
Every cell carries its exact value in a ``title`` (shown on hover) and ``data-value`` attribute; rows and
columns are labelled from the result (token strings for positions). Colours follow the result's scale
(:mod:`circuitlab.render.scale`): diverging and centred on zero (blue positive, red negative) for signed values,
sequential (white at zero to blue) for values that cannot be negative; grey for NaN; a legend gives the scale.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from circuitlab.render.scale import LIGHT_TEXT, Scale, colour, scale_of
from circuitlab.render.style import stylesheet

if TYPE_CHECKING:
    from circuitlab.results import Result

#: at most this many cells and each cell prints its value; more and cells show colour only (value on hover)
MAX_NUMBERED_CELLS = 400
#: more columns than this and cells show colour only, however few the rows (a page is only so wide)
COMPACT_COLUMNS = 48
#: column labels longer than this many characters are written vertically
LONG_LABEL = 4
#: at most this many panels for a result of three or more axes
MAX_PANELS = 24
#: axis-name pairs that mark the last two axes of a result as an attention pattern
ATTENTION_AXES = {("dest", "src"), ("query", "key"), ("query_pos", "key_pos"), ("dest_pos", "src_pos")}

_colour = colour  # the name earlier code used


def heatmap_html(
    values: Float[Tensor, "row col"],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    row_axis: str = "",
    col_axis: str = "",
    title: str = "",
    fmt: str = "{:.3g}",
    vmax: float | None = None,
    scale: str | Scale | None = None,
) -> str:
    """A 2-D heatmap as an HTML table.

    Args:
        values: the grid, ``[row, col]``.
        row_labels, col_labels: one label per row and column (spaces in token strings are kept).
        row_axis, col_axis: what rows and columns are (``"layer"``, ``"head"``, ``"pos"``...), shown in the corner
            and in every cell's hover text.
        title: a caption above the grid.
        fmt: how to print values in cells and the legend.
        vmax: the value that gets full colour (default: the largest absolute finite value), so several
            heatmaps can share one scale.
        scale: ``"diverging"``, ``"sequential"``, a :class:`~circuitlab.render.scale.Scale`, or None to pick one
            by the rule of :mod:`circuitlab.render.scale` (from the values and the title).

    Each cell's ``title`` reads e.g. ``"layer L1, head H3: 0.8123"``. Grids of at most
    :data:`MAX_NUMBERED_CELLS` cells print each value in its cell, in black or white for contrast.
    """
    vals = values.detach().float().cpu()
    if vals.ndim == 1:
        vals = vals[None, :]
    n_rows, n_cols = vals.shape
    if len(row_labels) != n_rows or len(col_labels) != n_cols:
        raise ValueError(f"heatmap of shape {tuple(vals.shape)} got {len(row_labels)} row labels and "
                         f"{len(col_labels)} column labels; give one label per row and per column.")
    sc = scale if isinstance(scale, Scale) else Scale.for_values(vals, scale, title, vmax=vmax)
    compact = n_rows * n_cols > MAX_NUMBERED_CELLS or n_cols > COMPACT_COLUMNS
    long_cols = compact or max((len(str(c)) for c in col_labels), default=0) > LONG_LABEL
    col_class = "cl-col cl-colv" if long_cols else "cl-col"

    out = [stylesheet(), f"<div class='cl-heatmap' data-rows='{n_rows}' data-cols='{n_cols}' "
                         f"data-scale='{sc.kind}'>"]
    if title:
        out.append(f"<div class='cl-heatmap-title'>{html.escape(title)}</div>")
    out.append(f"<table class='cl-hm{' cl-compact' if compact else ''}'>")
    corner = " \\ ".join(a for a in (row_axis, col_axis) if a)
    out.append(f"<thead><tr><th class='cl-corner'>{html.escape(corner)}</th>" + "".join(
        f"<th class='{col_class}'>{html.escape(str(c))}</th>" for c in col_labels) + "</tr></thead><tbody>")
    rows = vals.tolist()
    for rl, row in zip(row_labels, rows):
        cells = []
        for cl, v in zip(col_labels, row):
            where = ", ".join(f"{a} {lab}".strip() for a, lab in ((row_axis, rl), (col_axis, cl)) if (a or lab))
            tip = f"{where}: {v:.6g}" if where else f"{v:.6g}"
            ink = sc.text(v)
            dark = " cl-dark" if ink == LIGHT_TEXT else ""
            cells.append(
                f"<td class='cl-cell{dark}' title='{html.escape(tip, quote=True)}' data-value='{v:.6g}' "
                f"style='background:{sc.colour(v)};color:{ink}'>"
                f"{'' if compact else html.escape(fmt.format(v))}</td>"
            )
        out.append(f"<tr><th class='cl-row'>{html.escape(str(rl))}</th>{''.join(cells)}</tr>")
    out.append("</tbody></table>")
    out.append(sc.legend(fmt))
    out.append("</div>")
    return "\n".join(s for s in out if s)


def _summary(result: "Result", k: int = 3) -> str:
    """The few largest entries by magnitude, named by their labels: the line people read first."""
    if result.values.numel() < 2:
        return ""
    vals = result.values.detach().float()
    if not torch.isfinite(vals).any():
        return ""
    clean = torch.where(torch.isfinite(vals), vals, torch.zeros_like(vals))
    flat = clean.flatten()
    idx = torch.topk(flat.abs(), min(k, flat.numel())).indices.tolist()
    parts = []
    for i in idx:
        index = [int(j) for j in torch.unravel_index(torch.tensor(i), vals.shape)]
        parts.append(f"{html.escape(result.label_of(index))} = {float(flat[i]):.3g}")
    return "<p class='cl-summary'>Largest in magnitude: " + "; ".join(parts) + "</p>"


def _header(result: "Result") -> list[str]:
    head = [f"<h3>{html.escape(result.title or result.metric or 'Result')}</h3>"]
    facts = [f"{k}: {html.escape(str(v))}" for k, v in
             (("metric", result.metric), ("model", result.model), ("task", result.task)) if v]
    if facts:
        head.append("<p class='cl-meta'>" + " · ".join(facts) + "</p>")
    description = result.meta.get("description") if isinstance(result.meta, dict) else None
    if isinstance(description, str) and description:
        head.append(f"<p class='cl-caption'>{html.escape(description)}</p>")
    return head


def _attention_view(result: "Result") -> str:
    """A ``[..., dest, src]`` result with token labels, as circuitsvis attention heads."""
    from circuitlab.render.views import attention_heads

    vals = result.values.detach().float().cpu()
    axes = list(result.axes)
    lead = axes[:-2]
    vals = vals.reshape(-1, *vals.shape[-2:])
    if lead:
        combos = torch.cartesian_prod(*[torch.arange(result.values.shape[i]) for i in range(len(lead))])
        combos = combos.reshape(-1, len(lead)).tolist()
        names = [" ".join(result.labels[a][i] for a, i in zip(lead, combo)) for combo in combos]
    else:
        names = ["pattern"]
    caption = "Attention from each destination position (row) to each source position (column)."
    return attention_heads(vals, result.labels[axes[-1]], names, caption=caption).to_html()


def result_html(result: "Result") -> str:
    """Default HTML for a :class:`~circuitlab.results.Result`: a heading, what was measured, the largest
    entries, and the values (a heatmap; small multiples for three or more axes; circuitsvis attention heads
    when the last two axes are destination and source positions)."""
    vals = result.values.detach().float().cpu()
    axes = list(result.axes)
    scale = Scale.for_values(vals, scale_of(result))  # one scale, shared by every panel
    out = [stylesheet(), "<div class='cl-block cl-result'>"] + _header(result)
    if vals.ndim == 0:
        out.append(f"<p class='cl-big'>{float(vals):.6g}</p>")
    else:
        out.append(_summary(result))
        if vals.ndim >= 2 and tuple(axes[-2:]) in ATTENTION_AXES:
            out.append(_attention_view(result))
        elif vals.ndim == 1:
            out.append(heatmap_html(vals[None, :], [""], result.labels[axes[0]], "", axes[0], scale=scale))
        elif vals.ndim == 2:
            out.append(heatmap_html(vals, result.labels[axes[0]], result.labels[axes[1]], axes[0], axes[1],
                                    scale=scale))
        else:
            # small multiples over the leading axes, one shared colour scale
            lead = vals.shape[:-2]
            combos = torch.cartesian_prod(*[torch.arange(n) for n in lead]).reshape(-1, len(lead)).tolist()
            out.append("<div class='cl-heatmaps'>")
            for idx in combos[:MAX_PANELS]:
                name = ", ".join(f"{a} {result.labels[a][i]}" for a, i in zip(axes[:-2], idx))
                out.append(heatmap_html(vals[tuple(idx)], result.labels[axes[-2]], result.labels[axes[-1]],
                                        axes[-2], axes[-1], title=name, scale=scale))
            out.append("</div>")
            if len(combos) > MAX_PANELS:
                out.append(f"<p class='cl-caption'>Showing {MAX_PANELS} of {len(combos)} panels; "
                           "see result.to_dataframe() for all values.</p>")
    out.append("</div>")
    return "\n".join(s for s in out if s)
