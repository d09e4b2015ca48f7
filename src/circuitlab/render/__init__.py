"""Rendering: results to HTML (heatmaps, circuitsvis views) and self-contained reports.

- :func:`result_html` / :func:`heatmap_html`: plain-HTML heatmaps with hover values (what ``Result.to_html()``
  uses);
- views (:func:`attention_heads`, :func:`attention_patterns`, :func:`colored_tokens`, :func:`token_activations`,
  :func:`topk_tokens`): circuitsvis components as :class:`View` objects; :func:`top_tokens_html` ranks tokens;
- :func:`report`: one self-contained HTML file from any mix of results, views, sections and text.
"""

from circuitlab.render.heatmap import heatmap_html, result_html
from circuitlab.render.report import HTML, Section, count_views, external_references, report, report_html
from circuitlab.render.views import (
    View,
    attention_heads,
    attention_patterns,
    colored_tokens,
    token_activations,
    top_tokens_html,
    topk_tokens,
)

__all__ = [
    "HTML",
    "Section",
    "View",
    "attention_heads",
    "attention_patterns",
    "colored_tokens",
    "count_views",
    "external_references",
    "heatmap_html",
    "report",
    "report_html",
    "result_html",
    "token_activations",
    "top_tokens_html",
    "topk_tokens",
]
