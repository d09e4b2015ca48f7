"""Rendering: results to HTML (heatmaps, circuitsvis views) and self-contained reports.

- :func:`result_html` / :func:`heatmap_html`: plain-HTML heatmaps with hover values (what ``Result.to_html()``
  uses);
- views (:func:`attention_heads`, :func:`attention_patterns`, :func:`colored_tokens`, :func:`token_activations`,
  :func:`topk_tokens`): circuitsvis components as :class:`View` objects; :func:`top_tokens_html` ranks tokens;
- :func:`to_html`: the HTML of any result or analysis bundle, by its kind (:mod:`circuitlab.render.kinds`);
- :func:`report`: one self-contained HTML file from any mix of results, views, sections and text.

Colours follow one rule, in :mod:`circuitlab.render.scale`: a sequential scale (white at 0 to blue) for values
that cannot be negative (scores, losses, probabilities), a diverging one centred on 0 for signed values (logit
differences, attributions, patching effects).

All of circuitlab's HTML is written in this package; analysis modules return results and never build HTML.
"""

from circuitlab.render.heatmap import heatmap_html, result_html
from circuitlab.render.kinds import renders, to_html
from circuitlab.render import graph as _graph  # noqa: F401,E402  registers Circuit and RocCurve
from circuitlab.render import concepts as _concepts  # noqa: F401,E402  token attributions, TCAV, ER table
from circuitlab.render import probing as _probing  # noqa: F401,E402  ProbeSweep, StructuralSweep, EdgeScores, HeadSweep
from circuitlab.render import neurons as _neurons  # noqa: F401,E402  registers NeuronPage and ExplanationScores
from circuitlab.render import dynamics as _dynamics  # noqa: F401,E402  registers TrainingCurves
from circuitlab.render import features as _features  # noqa: F401,E402  registers FeatureExplanationScores
from circuitlab.render.report import HTML, Bullets, Section, count_views, external_references, report, report_html
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
    "Bullets",
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
    "renders",
    "result_html",
    "to_html",
    "token_activations",
    "top_tokens_html",
    "topk_tokens",
]
