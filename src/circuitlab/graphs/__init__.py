"""Attribution graphs over transcoder features (Ameisen et al. 2025, "Circuit Tracing"; Lindsey et al. 2025, "On the
Biology of a Large Language Model"; the open ``circuit-tracer`` library), offline, on circuitlab's models.

- :mod:`~circuitlab.graphs.replacement`: the local replacement model of a prompt (transcoders for MLPs, error
  nodes, attention patterns and norm scales frozen): :func:`local_replacement`, :func:`run_replacement`;
- :mod:`~circuitlab.graphs.attribution`: :func:`attribution_graph` (direct effects in batched backward passes),
  :func:`prune_graph` (indirect influence), :func:`graph_scores` (replacement and completeness scores);
- :mod:`~circuitlab.graphs.interventions`: :func:`steer_feature`, :func:`intervention_agreement`;
- :mod:`~circuitlab.graphs.qk`: :func:`qk_attribution` (which features make a head attend where it does);
- :mod:`~circuitlab.graphs.export`: :func:`graph_json` (circuit-tracer / Neuronpedia's graph schema).

Transcoders: :mod:`circuitlab.features.transcoders` (shipped ``toy-lm/tc-0..3``). Page: ``docs/graphs.md``.
"""

from circuitlab.graphs.replacement import LocalReplacement, local_replacement, run_replacement
from circuitlab.graphs.attribution import (AttributionGraph, PrunedGraph, attribution_graph,
                                           attribution_graph_reference, graph_scores, node_influence, prune_graph)
from circuitlab.graphs.interventions import intervention_agreement, steer_feature, total_effects
from circuitlab.graphs.qk import QKAttribution, qk_attribution
from circuitlab.graphs.export import graph_json

__all__ = ["LocalReplacement", "local_replacement", "run_replacement", "AttributionGraph", "PrunedGraph",
           "attribution_graph", "attribution_graph_reference", "graph_scores", "node_influence", "prune_graph",
           "intervention_agreement", "steer_feature", "total_effects", "QKAttribution", "qk_attribution", "graph_json"]
