"""QK attributions: which nodes at the query and key positions make a head attend where it does.

The attribution graph freezes attention patterns, so it says nothing about *why* a head attends from one position
to another (circuit-tracer's users ask for exactly that). In the local replacement model (norm scales frozen) a
head's query vector at position ``q`` and key vector at position ``k`` (after rotary, where the model has it) are
each an affine function of the graph's source nodes - the features, error nodes and embeddings at every position
up to them, through the residual stream and earlier heads' frozen OV circuits - so the pre-softmax attention score

    score(q, k) = q_vec . k_vec / sqrt(d_head) = sum_{i, j} (c_i . d_j) / sqrt(d_head)

splits exactly into a matrix over pairs (query-side node ``i``, key-side node ``j``), plus the rows and columns of
the two bias vectors (``q_vec`` and ``k_vec`` with every source at zero). ``c_i`` is node ``i``'s contribution to
the query vector: the Jacobian of ``q_vec`` with respect to the node's value, times the value (``d_head`` rows,
one batched backward pass). The matrix and its two bias lines sum to the model's own attention score (tested
against ``hook_attn_scores``). This is the bilinear QK decomposition of Kamath et al. 2025 ("Tracing attention
computation through attention QK attributions", Transformer Circuits), written for our replacement model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from circuitlab.core import check_layer, check_pos, parse_head, shorten
from circuitlab.errors import InputError
from circuitlab.graphs.attribution import AttributionGraph
from circuitlab.graphs.replacement import run_replacement


@dataclass(frozen=True)
class QKAttribution:
    """The decomposition of one attention score (module notes). ``matrix`` ``[n_source + 1, n_source + 1]``: row
    ``i`` = query-side node ``i``, column ``j`` = key-side node ``j`` (the graph's source nodes: features, errors,
    embeddings, in the graph's order), the last row and column the query and key bias; ``score``: the model's
    attention score; ``query_contributions`` / ``key_contributions``: each node's part of ``q_vec`` / ``k_vec``
    (``[n_source + 1, d_head]``)."""

    graph: AttributionGraph = field(repr=False)
    layer: int
    head: int
    query_pos: int
    key_pos: int
    matrix: Float[Tensor, "query key"]
    score: float
    query_contributions: Float[Tensor, "query d_head"] = field(repr=False)
    key_contributions: Float[Tensor, "key d_head"] = field(repr=False)

    def top_pairs(self, k: int = 10) -> list[tuple[str, str, float]]:
        """The ``k`` (query node, key node, share of the score) pairs of largest ``|value|``, as labels."""
        n = self.matrix.shape[0] - 1
        flat = self.matrix.flatten()
        out = []
        for idx in flat.abs().argsort(descending=True)[:k].tolist():
            i, j = divmod(idx, n + 1)
            lab = lambda x, side: f"{side} bias" if x == n else self.graph.label(x)  # noqa: E731
            out.append((lab(i, "query"), lab(j, "key"), float(flat[idx])))
        return out


def _contributions(graph: AttributionGraph, hook: str, head: int, pos: int) -> Tensor:
    rep = graph.replacement
    sl = graph.slices()
    n_src = sl["embedding"].stop
    layer = int(hook.split(".")[1])
    d_head = rep.model.cfg.d_head
    B = d_head
    acts = rep.activations[None].expand(B, -1).clone().requires_grad_(True)
    errs = rep.errors[None].expand(B, -1, -1, -1).clone().requires_grad_(True)
    embs = rep.embeddings[None].expand(B, -1, -1).clone().requires_grad_(True)
    cap: dict = {}
    with torch.enable_grad():
        run_replacement(rep, activations=acts, errors=errs, embeddings=embs, stop_at_layer=layer + 1, capture=cap,
                        read=[hook])
        vec = cap[hook][:, pos, head]  # [B, d_head]
        out = vec[torch.arange(B), torch.arange(B)].sum()
        g_a, g_e, g_t = torch.autograd.grad(out, [acts, errs, embs], allow_unused=True)
    g_a = torch.zeros_like(acts) if g_a is None else g_a
    g_e = torch.zeros_like(errs) if g_e is None else g_e
    g_t = torch.zeros_like(embs) if g_t is None else g_t
    contrib = torch.zeros(n_src + 1, d_head)
    contrib[sl["feature"]] = (g_a * rep.activations).T.detach()
    contrib[sl["error"]] = (g_e * rep.errors).sum(-1).reshape(B, -1).T.detach()
    contrib[sl["embedding"]] = (g_t * rep.embeddings).sum(-1).T.detach()
    with torch.no_grad():
        zero: dict = {}
        run_replacement(rep, activations=torch.zeros_like(rep.activations), errors=torch.zeros_like(rep.errors),
                        embeddings=torch.zeros_like(rep.embeddings), stop_at_layer=layer + 1, capture=zero,
                        read=[hook])
        contrib[n_src] = zero[hook][0, pos, head].float()
    return contrib


def qk_attribution(graph: AttributionGraph, head: Any, query_pos: Any, key_pos: Any) -> QKAttribution:
    """The QK attribution of ``head`` (``(layer, head)`` or ``"L1H2"``) attending from ``query_pos`` to ``key_pos``
    on ``graph``'s prompt (module notes). Positions may be negative (from the end); ``key_pos <= query_pos``."""
    if not isinstance(graph, AttributionGraph):
        raise InputError(f"graph must be an AttributionGraph (attribution_graph makes one); got {shorten(graph, 40)}.")
    rep = graph.replacement
    model = rep.model
    layer, h = parse_head(model, head)
    layer = check_layer(model, layer)
    n = rep.n_pos
    q, k = check_pos(query_pos, n, "query_pos"), check_pos(key_pos, n, "key_pos")
    if k > q:
        raise InputError(f"key_pos={key_pos} is after query_pos={query_pos}: a causal head cannot attend forward.")
    rot = f"blocks.{layer}.attn.hook_rot_q" in model.hook_dict
    q_hook = f"blocks.{layer}.attn.hook_rot_q" if rot else f"blocks.{layer}.attn.hook_q"
    k_hook = f"blocks.{layer}.attn.hook_rot_k" if rot else f"blocks.{layer}.attn.hook_k"
    cq = _contributions(graph, q_hook, h, q)
    ck = _contributions(graph, k_hook, h, k)
    scale = model.cfg.attn_scale if getattr(model.cfg, "attn_scale", None) else model.cfg.d_head ** 0.5
    matrix = cq @ ck.T / scale
    score_cache: dict = {}

    def grab(act, hook=None):
        score_cache["s"] = act.detach()

    with torch.no_grad():
        model.run_with_hooks(rep.tokens[None].to(model.cfg.device),
                             fwd_hooks=[(f"blocks.{layer}.attn.hook_attn_scores", grab)])
    score = float(score_cache["s"][0, h, q, k])
    return QKAttribution(graph=graph, layer=layer, head=h, query_pos=q, key_pos=k, matrix=matrix, score=score,
                         query_contributions=cq, key_contributions=ck)


__all__ = ["QKAttribution", "qk_attribution"]
