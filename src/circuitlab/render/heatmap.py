"""Heatmaps as plain HTML tables: no JavaScript, hover shows the exact value, axis labels from the result."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Sequence

import torch

if TYPE_CHECKING:
    from circuitlab.results import Result


def _colour(v: float, vmax: float) -> str:
    """Diverging white-centred colour: blue for positive, red for negative."""
    if vmax <= 0 or v != v:  # zero scale or NaN
        return "#ffffff"
    t = max(-1.0, min(1.0, v / vmax))
    if t >= 0:
        r, g, b = 255 - int(200 * t), 255 - int(140 * t), 255
    else:
        r, g, b = 255, 255 - int(140 * -t), 255 - int(200 * -t)
    return f"#{r:02x}{g:02x}{b:02x}"


def heatmap_html(
    values: torch.Tensor,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    row_axis: str = "",
    col_axis: str = "",
    title: str = "",
    fmt: str = "{:.3g}",
) -> str:
    """A 2-D heatmap as an HTML table; each cell's ``title`` attribute holds its full label and value."""
    vals = values.detach().float().cpu()
    finite = vals[torch.isfinite(vals)]
    vmax = float(finite.abs().max()) if finite.numel() else 0.0
    out = ['<div class="cl-heatmap">']
    if title:
        out.append(f"<div class='cl-heatmap-title'>{html.escape(title)}</div>")
    out.append("<table style='border-collapse:collapse;font:11px monospace'>")
    corner = html.escape(f"{row_axis} \\ {col_axis}" if row_axis or col_axis else "")
    out.append(f"<tr><th>{corner}</th>" + "".join(
        f"<th style='padding:2px 4px'>{html.escape(c)}</th>" for c in col_labels) + "</tr>")
    for i, rl in enumerate(row_labels):
        cells = []
        for j, cl in enumerate(col_labels):
            v = float(vals[i, j])
            tip = f"{row_axis} {rl}, {col_axis} {cl}: {v:.6g}".strip()
            cells.append(
                f"<td class='cl-cell' title='{html.escape(tip, quote=True)}' data-value='{v:.6g}' "
                f"style='background:{_colour(v, vmax)};padding:2px 4px;text-align:right'>"
                f"{html.escape(fmt.format(v))}</td>"
            )
        out.append(f"<tr><th style='text-align:right;padding:2px 4px'>{html.escape(rl)}</th>{''.join(cells)}</tr>")
    out.append("</table></div>")
    return "\n".join(out)


def result_html(result: "Result") -> str:
    """Default HTML for a :class:`~circuitlab.results.Result`: a heading, what was measured, and a heatmap."""
    vals = result.values.detach().float().cpu()
    axes = list(result.axes)
    head = [f"<h3>{html.escape(result.title or result.metric or 'Result')}</h3>"]
    facts = [f"{k}: {html.escape(str(v))}" for k, v in
             (("metric", result.metric), ("model", result.model), ("task", result.task)) if v]
    if facts:
        head.append("<p class='cl-meta'>" + " · ".join(facts) + "</p>")
    if vals.ndim == 0:
        return "\n".join(head + [f"<p>{float(vals):.6g}</p>"])
    if vals.ndim == 1:
        body = heatmap_html(vals[None, :], [""], result.labels[axes[0]], "", axes[0])
    elif vals.ndim == 2:
        body = heatmap_html(vals, result.labels[axes[0]], result.labels[axes[1]], axes[0], axes[1])
    else:
        # one heatmap per index of the leading axes, over the last two
        parts = []
        lead = vals.shape[:-2]
        for idx in torch.cartesian_prod(*[torch.arange(n) for n in lead]).reshape(-1, len(lead)).tolist():
            sub = vals[tuple(idx)]
            name = ", ".join(f"{a} {result.labels[a][i]}" for a, i in zip(axes[:-2], idx))
            parts.append(heatmap_html(sub, result.labels[axes[-2]], result.labels[axes[-1]],
                                      axes[-2], axes[-1], title=name))
        body = "\n".join(parts)
    return "\n".join(head + [body])
