"""An attribution graph as JSON in circuit-tracer's / Neuronpedia's graph schema, so their frontends can open it.

The schema (``circuit_tracer.frontend.graph_models``): ``{"metadata": {slug, scan, transcoder_list,
prompt_tokens, prompt, node_threshold}, "qParams": {pinnedIds, supernodes, linkType, clickedId, sg_pos}, "nodes":
[...], "links": [{source, target, weight}]}``; a node has ``node_id`` (``"L_latent_pos"`` for a feature,
``"0_L_pos"`` for an error, ``"E_token_pos"`` for an embedding, ``"{n_layers+1}_token_pos"`` for a logit),
``feature``, ``layer`` (a string; ``"E"`` for embeddings), ``ctx_idx``, ``feature_type`` (``"cross layer
transcoder"``, ``"mlp reconstruction error"``, ``"embedding"``, ``"logit"``), ``jsNodeId``, ``clerp`` (a label),
``influence`` (cumulative influence fraction), ``activation``, ``token_prob``, ``is_target_logit``. Written by our
own code from the schema's field list; we add ``"circuitlab"`` extras (the top logit effects of each feature's
decoder) under keys the frontends ignore.
"""

from __future__ import annotations

import math
from typing import Any, Optional

from circuitlab.core import token_label
from circuitlab.graphs.attribution import AttributionGraph, PrunedGraph


def decoder_logit_effects(graph: AttributionGraph, node: int, k: int = 5) -> dict:
    """The tokens feature ``node``'s decoder direction raises and lowers most through the unembedding (after the
    final norm's weight, as :func:`circuitlab.core.unembed_matrix` reads directions): ``{"top": [[token, value],
    ...], "bottom": [...]}``."""
    from circuitlab.core import unembed_matrix

    rep = graph.replacement
    w_u = unembed_matrix(rep.model)
    L, lat = int(graph.layer[node]), int(graph.index[node])
    eff = rep.transcoders[L].W_dec[lat].to(w_u.dtype) @ w_u
    top, bottom = eff.topk(k), (-eff).topk(k)
    lab = lambda i: token_label(rep.model, int(i))  # noqa: E731
    return {"top": [[lab(i), round(float(v), 4)] for v, i in zip(top.values, top.indices)],
            "bottom": [[lab(i), round(float(-v), 4)] for v, i in zip(bottom.values, bottom.indices)]}


def graph_json(pruned: Any, *, slug: Optional[str] = None, scan: Optional[str] = None,
               logit_effects: bool = True) -> dict:
    """``pruned`` (a :class:`~circuitlab.graphs.attribution.PrunedGraph`, or an
    :class:`~circuitlab.graphs.attribution.AttributionGraph`, exported whole) in the schema above: the kept nodes
    and edges (links from source to target with the edge's weight)."""
    from circuitlab.errors import InputError
    from circuitlab.graphs.attribution import prune_graph

    if isinstance(pruned, AttributionGraph):
        pruned = prune_graph(pruned, node_threshold=1.0, edge_threshold=1.0)
    if not isinstance(pruned, PrunedGraph):
        raise InputError("pruned must be a PrunedGraph (prune_graph) or an AttributionGraph.")
    g = pruned.graph
    rep = g.replacement
    n_layers = rep.n_layers
    d_sae = max(tc.cfg.d_sae for tc in rep.transcoders.values())
    offset = 10 ** math.ceil(math.log10(max(d_sae, 2)))
    lo = g.slices()["logit"]
    nodes = []
    keep = pruned.node_mask.nonzero()[:, 0].tolist()
    for i in keep:
        k, L, p, x = g.kinds[i], int(g.layer[i]), int(g.pos[i]), int(g.index[i])
        node = {"node_id": g.node_id(i), "ctx_idx": p, "reverse_ctx_idx": 0, "run_idx": 0,
                "influence": float(pruned.cumulative[i]), "activation": float(g.activation[i]), "token_prob": 0.0,
                "is_target_logit": False, "clerp": g.label(i)}
        if k == "feature":
            node.update(feature=x + offset * L, layer=str(L), feature_type="cross layer transcoder",
                        jsNodeId=f"{L}_{x}-0")
            if logit_effects:
                node["circuitlab"] = {"latent": x, "logit_effects": decoder_logit_effects(g, i)}
        elif k == "error":
            node.update(feature=-1, layer=str(L), feature_type="mlp reconstruction error", jsNodeId=f"{L}_{p}-0")
        elif k == "embedding":
            node.update(feature=p, layer="E", feature_type="embedding", jsNodeId=f"E_{x}-{p}")
        else:
            prob = float(g.logit_probabilities[i - lo.start])
            node.update(feature=x, layer=str(n_layers + 1), feature_type="logit", jsNodeId=f"L_{x}-{p}",
                        token_prob=prob, is_target_logit=i == lo.start,
                        clerp=f"Output {token_label(rep.model, x)!r} (p={prob:.3f})")
        nodes.append(node)
    edges = pruned.edge_mask.nonzero().tolist()
    links = [{"source": g.node_id(s), "target": g.node_id(t), "weight": float(g.adjacency[t, s])} for t, s in edges]
    meta = {"slug": slug or "circuitlab-graph", "scan": scan or str(g.meta.get("model", "")),
            "transcoder_list": [repr(rep.transcoders[layer]) for layer in sorted(rep.transcoders)],
            "prompt_tokens": list(g.token_strs), "prompt": "".join(g.token_strs),
            "node_threshold": pruned.node_threshold,
            "circuitlab": {"edge_threshold": pruned.edge_threshold,
                           "scores": {k: v for k, v in pruned.scores.items()}, "build": g.meta}}
    return {"metadata": meta, "qParams": {"pinnedIds": [], "supernodes": [], "linkType": "both", "clickedId": "",
                                          "sg_pos": ""}, "nodes": nodes, "links": links}


__all__ = ["graph_json", "decoder_logit_effects"]
