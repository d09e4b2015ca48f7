"""Rendering: results to HTML (heatmaps, circuitsvis views) and self-contained reports."""

from circuitlab.render.heatmap import heatmap_html, result_html

__all__ = ["heatmap_html", "result_html"]
