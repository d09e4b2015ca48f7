"""The one stylesheet every circuitlab fragment and report shares (system fonts, no external resources)."""

from __future__ import annotations

import html
from typing import Optional, Union

from circuitlab.render.bundle import in_fragment_mode

CSS = """
.cl-block { margin: 0.6em 0 1.4em 0; }
.cl-block h3 { margin: 0.2em 0 0.25em 0; font: 600 1.05em system-ui, -apple-system, "Segoe UI", sans-serif; }
.cl-meta { margin: 0 0 0.4em 0; color: #555; font: 0.85em system-ui, sans-serif; }
.cl-caption { margin: 0 0 0.5em 0; color: #333; font: 0.9em system-ui, sans-serif; max-width: 60em; }
.cl-summary { margin: 0 0 0.5em 0; font: 0.85em system-ui, sans-serif; }
.cl-heatmaps { display: flex; flex-wrap: wrap; gap: 1.2em; align-items: flex-start; }
.cl-heatmap { display: inline-block; max-width: 100%; overflow-x: auto; vertical-align: top; }
.cl-heatmap-title { font: 600 0.85em system-ui, sans-serif; margin: 0.2em 0; }
table.cl-hm { border-collapse: collapse; font: 11px ui-monospace, SFMono-Regular, Menlo, monospace; }
table.cl-hm th { font-weight: normal; color: #333; padding: 1px 4px; white-space: pre; }
table.cl-hm th.cl-row { text-align: right; }
table.cl-hm th.cl-colv { writing-mode: vertical-rl; transform: rotate(180deg); text-align: left; padding: 4px 1px; }
table.cl-hm th.cl-corner { color: #777; font-style: italic; text-align: right; }
/* cells big enough to read: numbered cells fit a 4-digit value; colour-only (compact) cells stay >= 18 px */
table.cl-hm td.cl-cell { padding: 3px 5px; text-align: center; min-width: 3.2em; height: 1.9em;
                         color: #000; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.cl-hm.cl-compact td.cl-cell { padding: 0; min-width: 18px; width: 18px; height: 18px; font-size: 0; }
table.cl-hm th.cl-col { font-size: 11px; }
table.cl-hm td.cl-cell:hover { outline: 2px solid #111; outline-offset: -1px; }
table.cl-hm td.cl-dark { color: #fff; }
.cl-legend { display: flex; align-items: center; gap: 0.4em; font: 10px ui-monospace, monospace; color: #444;
             margin: 0.3em 0 0 0; }
.cl-legend-bar { width: 140px; height: 9px; border: 1px solid #ccc; }
table.cl-table { border-collapse: collapse; font: 12px system-ui, sans-serif; }
table.cl-table th { text-align: right; padding: 2px 8px 2px 0; font-weight: 600; white-space: nowrap; }
table.cl-table td { padding: 2px 0; }
table.cl-grid { border-collapse: collapse; font: 11px ui-monospace, SFMono-Regular, Menlo, monospace; }
table.cl-grid th, table.cl-grid td { padding: 2px 6px; text-align: left; vertical-align: top; }
table.cl-grid tr:nth-child(even) td { background: #f6f6f6; }
.cl-chip { display: inline-block; margin: 1px 2px; padding: 0 4px; border-radius: 3px; white-space: pre;
           font: 11px ui-monospace, monospace; }
.cl-view { position: relative; }
/* circuitsvis sizes its zoomed attention pattern "width: initial" inside a flex row, which collapses it to a
   few pixels outside Jupyter; give it a real width */
.cl-view div[style*="width: initial"][style*="aspect-ratio"],
[id^="circuits-vis-"] div[style*="width: initial"][style*="aspect-ratio"] { width: min(100%, 40em) !important; }
.cl-big { font: 600 1.6em system-ui, sans-serif; margin: 0.2em 0; }
"""


def stylesheet() -> str:
    """The stylesheet as a ``<style>`` element (empty inside a report, whose ``<head>`` carries it once)."""
    return "" if in_fragment_mode() else f"<style>{CSS}</style>"


def svg_open(width: Union[int, float, str], height: Union[int, float, str], cls: str, title: Optional[str] = None, *,
             font_size: int = 10, role: Optional[str] = None) -> list[str]:
    """The opening of every inline SVG a renderer draws: the ``<svg>`` tag (namespace, ``class=cls``, a viewBox of
    ``width`` x ``height`` at that size, an optional ``role``, the system font at ``font_size``) and, with
    ``title``, its ``<title>`` (escaped; screen readers and hover text). A list, for the renderer to append its
    shapes and ``"</svg>"`` to; ``width`` and ``height`` are written as given (pre-format floats)."""
    role_attr = f" role='{role}'" if role else ""
    out = [f"<svg xmlns='http://www.w3.org/2000/svg' class='{cls}' viewBox='0 0 {width} {height}' width='{width}' "
           f"height='{height}'{role_attr} font-family='system-ui, sans-serif' font-size='{font_size}'>"]
    if title is not None:
        out.append(f"<title>{html.escape(title)}</title>")
    return out
