"""Attribution graphs: direct effects between features, error nodes, token embeddings and logits on one prompt.

In the local replacement model (:mod:`~circuitlab.graphs.replacement`) every node's input is an affine function of
the source nodes, so each edge is an exact **direct effect** (Ameisen et al. 2025, "Circuit Tracing", section 2.3;
the open ``circuit-tracer`` library; this module is our own code, following their definitions):

- **nodes**, in circuit-tracer's order: the active transcoder features (every nonzero latent at every position,
  sorted by layer, position, latent), the error nodes (layer-major, one per layer and position), the token
  embeddings (one per position) and the output logits of the last position (the most probable tokens until their
  probabilities reach ``logit_mass``, at most ``max_logits``; or the ``target`` token(s) asked for);
- a node's **input**: for a feature, its pre-activation ``x_L[p] @ W_enc[:, i] + b_enc[i]``; for a logit, the
  logit minus the mean logit over the vocabulary (circuit-tracer's demeaned unembedding); errors and embeddings
  have no input (they are the graph's sources);
- the **edge** ``A[t, s]`` = (d input_t / d value_s) x value_s: the gradient of the target's input with respect to
  the source's activation (a feature), vector (an error or embedding; dotted with it), through the frozen
  residual stream, the frozen attention patterns' OV circuits and the frozen norms, with every other feature held
  fixed. Because the model is affine in the sources, the edges into a node plus its **bias term** (the input with
  every source set to zero: biases of the attention, transcoders and norms) add up to its input exactly
  (completeness; tested).

**Batched backward passes**: the targets are split into batches (features grouped by layer, so a batch's forward
pass stops after that layer; logits last); each batch runs the replacement model forward once and backward once,
vectorised over the ``B`` targets' output gradients (``torch.autograd.grad(..., is_grads_batched=True)``: row ``b``
of the gradients is target ``b``'s encoder direction at its position, or its demeaned unembedding). ``B`` is
chosen so the ``B`` copies of the backward pass's gradients fit ``max_memory``.
:func:`attribution_graph_reference` computes the same edges with one forward and one backward pass per target
node (the reference the tests and ``benchmarks/graphs.py`` compare against).

**Pruning** (:func:`prune_graph`, circuit-tracer's rule): the adjacency's absolute values are normalised so each
node's incoming edges sum to 1 (``N``); the influence of each node on the logits is ``w @ (N + N^2 + ...)`` with
``w`` the logits' probabilities (the series ends: the graph is acyclic); nodes are kept, most influential first,
until their cumulative influence reaches ``node_threshold`` of the total (token and logit nodes always kept); then
edges are scored by ``N[t, s] x (influence_t + w_t)`` in the node-pruned graph and kept until ``edge_threshold`` of
the total; features and errors left without outgoing edges, and features without incoming ones, are dropped until
nothing changes. :func:`graph_scores` gives circuit-tracer's **replacement score** (the tokens' influence on the
logits over that of tokens plus error nodes) and **completeness score** (each node's incoming normalised weight
not from error nodes, averaged with weights ``influence + w``) of a (pruned) graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from circuitlab.core import (DEFAULT_MAX_MEMORY, check_count, check_max_memory, check_number, model_name, shorten,
                             str_tokens)
from circuitlab.errors import InputError
from circuitlab.graphs.replacement import (LocalReplacement, feature_pre_activation, local_replacement,
                                           run_replacement)


@dataclass(frozen=True)
class AttributionGraph:
    """An attribution graph (module notes).

    ``adjacency`` ``[node, node]``: row = target, column = source. ``kinds``: per node ``"feature"``, ``"error"``,
    ``"embedding"`` or ``"logit"``; ``layer``, ``pos``, ``index`` per node (the latent for a feature, the token id for
    an embedding or logit, -1 for an error; logits have layer ``n_layers``, embeddings -1); ``activation`` per
    node (features: the activation; errors: the error's norm; embeddings: the embedding's norm; logits: the logit);
    ``inputs``: each node's input (0 for sources); ``bias``: each node's bias term; ``logit_probabilities``: the
    logit nodes' probabilities; ``tokens``, ``token_strs``: the prompt; ``replacement``: the local replacement
    model; ``meta``: model, settings, timings."""

    adjacency: Float[Tensor, "node node"]
    kinds: list
    layer: Int[Tensor, " node"]
    pos: Int[Tensor, " node"]
    index: Int[Tensor, " node"]
    activation: Float[Tensor, " node"]
    inputs: Float[Tensor, " node"]
    bias: Float[Tensor, " node"]
    logit_probabilities: Float[Tensor, " logit"]
    tokens: Int[Tensor, " pos"]
    token_strs: list
    replacement: LocalReplacement = field(repr=False)
    meta: dict = field(default_factory=dict)

    @property
    def n_nodes(self) -> int:
        return len(self.kinds)

    def slices(self) -> dict:
        """Where each kind of node sits: ``{"feature": slice, "error": ..., "embedding": ..., "logit": ...}``."""
        n_f = int(self.replacement.features.shape[0])
        n_e = self.replacement.n_layers * self.replacement.n_pos
        n_t = self.replacement.n_pos
        return {"feature": slice(0, n_f), "error": slice(n_f, n_f + n_e),
                "embedding": slice(n_f + n_e, n_f + n_e + n_t), "logit": slice(n_f + n_e + n_t, self.n_nodes)}

    def node_id(self, i: int) -> str:
        """Node ``i``'s id in circuit-tracer's / Neuronpedia's scheme (``"L_latent_pos"``, ``"0_L_pos"`` for errors,
        ``"E_token_pos"``, ``"{n_layers+1}_token_pos"`` for logits)."""
        k, L, p, x = self.kinds[i], int(self.layer[i]), int(self.pos[i]), int(self.index[i])
        if k == "feature":
            return f"{L}_{x}_{p}"
        if k == "error":
            return f"0_{L}_{p}"
        if k == "embedding":
            return f"E_{x}_{p}"
        return f"{self.replacement.n_layers + 1}_{x}_{p}"

    def label(self, i: int) -> str:
        """A short human label of node ``i``."""
        k, L, p, x = self.kinds[i], int(self.layer[i]), int(self.pos[i]), int(self.index[i])
        tok = self.token_strs[p] if 0 <= p < len(self.token_strs) else "?"
        if k == "feature":
            return f"L{L} #{x} @{p} {tok!r}"
        if k == "error":
            return f"error L{L} @{p} {tok!r}"
        if k == "embedding":
            return f"emb {tok!r} @{p}"
        from circuitlab.core import token_label

        return f"logit {token_label(self.replacement.model, x)!r}"


def check_logit_mass(value: Any) -> float:
    return check_number(value, "logit_mass", low=0, high=1, low_open=True,
                        what="a probability in (0, 1] (the logits kept cover this much of the next-token mass)")


def _logit_targets(rep: LocalReplacement, target: Any, logit_mass: float, max_logits: int) -> tuple[Tensor, Tensor]:
    from circuitlab.core import answer_id

    probs = torch.softmax(rep.logits[-1].double(), -1)
    if target is not None:
        items = target if isinstance(target, (list, tuple)) else [target]
        if not items:
            raise InputError("target is an empty list; give a token (e.g. ' Paris'), a token id, a list of them, or "
                             "None for the most probable tokens.")
        ids = [answer_id(rep.model, t) for t in items]
        if len(set(ids)) != len(ids):
            raise InputError(f"target={shorten(target)} repeats a token; give each target once.")
        idx = torch.tensor(ids, dtype=torch.long)
    else:
        top_p, top_i = probs.topk(min(max_logits, probs.shape[0]))
        n = int(torch.searchsorted(top_p.cumsum(0), torch.tensor(logit_mass, dtype=top_p.dtype))) + 1
        idx = top_i[: min(n, max_logits)]
    return idx, probs[idx].float()


def _batch_size(rep: LocalReplacement, max_memory: int) -> int:
    """Targets per backward pass: each carries its own gradients of every activation the backward pass keeps
    (about one forward row's worth, :func:`circuitlab.core.row_bytes`) and of the leaves."""
    from circuitlab.core import row_bytes

    n_act = int(rep.features.shape[0])
    d = rep.model.cfg.d_model
    per_target = 2 * row_bytes(rep.model, rep.n_pos) + 4 * 2 * (n_act + (2 * rep.n_layers + 1) * rep.n_pos * d)
    return max(1, min(1024, max_memory // max(1, per_target)))


def _target_values(rep: LocalReplacement, targets: list, logit_ids: Tensor, acts: Tensor, errs: Tensor,
                   embs: Tensor) -> Tensor:
    """Inputs of ``targets`` (``("feature", row)`` or ``("logit", j)``, all features of one layer or all logits),
    one per batch row of the leaves."""
    kind = targets[0][0]
    capture: dict = {}
    if kind == "feature":
        rows = torch.tensor([t[1] for t in targets])
        layer = int(rep.features[rows[0], 0])
        run_replacement(rep, activations=acts, errors=errs, embeddings=embs, stop_at_layer=layer + 1, capture=capture)
        return feature_pre_activation(rep, capture[f"mlp_in.{layer}"], layer, rep.features[rows, 1],
                                      rep.features[rows, 2])
    logits = run_replacement(rep, activations=acts, errors=errs, embeddings=embs)[:, -1].float()
    j = torch.tensor([t[1] for t in targets])
    return logits[torch.arange(len(targets)), logit_ids[j]] - logits.mean(-1)


def _target_batches(rep: LocalReplacement, n_logits: int, batch: int) -> list[list]:
    out = []
    feats = rep.features
    for layer in range(rep.n_layers):
        rows = (feats[:, 0] == layer).nonzero()[:, 0].tolist()
        for i in range(0, len(rows), batch):
            out.append([("feature", r) for r in rows[i: i + batch]])
    js = list(range(n_logits))
    for i in range(0, len(js), batch):
        out.append([("logit", j) for j in js[i: i + batch]])
    return out


def _feature_edges(rep: LocalReplacement, g_f: Tensor) -> Tensor:
    """Edges to every active feature from the gradients ``g_f`` ``[B, layer, pos, d_model]`` of each layer's summed
    feature decodings: ``a_i (g_f[L, p_i] . W_dec[i])``, as one batched matmul per layer over positions (features
    padded per position), never a ``[B, features, d_model]`` tensor."""
    B = g_f.shape[0]
    out = torch.zeros(B, int(rep.features.shape[0]), dtype=g_f.dtype)
    for layer, tc in rep.transcoders.items():
        sel = (rep.features[:, 0] == layer).nonzero()[:, 0]
        if not len(sel):
            continue
        pos, lat = rep.features[sel, 1], rep.features[sel, 2]
        counts = torch.bincount(pos, minlength=rep.n_pos)
        width = int(counts.max())
        slot = torch.zeros_like(pos)
        starts = torch.cumsum(counts, 0) - counts
        order = torch.argsort(pos, stable=True)
        slot[order] = torch.arange(len(pos)) - starts[pos[order]]
        w = torch.zeros(rep.n_pos, width, tc.cfg.d_out, dtype=g_f.dtype)
        w[pos, slot] = tc.W_dec[lat].to(g_f.dtype)
        e = torch.bmm(g_f[:, layer].transpose(0, 1), w.transpose(1, 2))  # [pos, B, width]
        out[:, sel] = e[pos, :, slot].T * rep.activations[sel].to(g_f.dtype)
    return out


def _edges_batched(rep: LocalReplacement, targets: list, logit_ids: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One forward pass and one batched backward pass (``is_grads_batched``: the backward pass vectorised over the
    targets' output gradients) for ``targets`` (all features of one layer, or logits). The leaves are each layer's
    summed feature decodings, the errors and the embeddings; feature edges follow by :func:`_feature_edges`."""
    from circuitlab.graphs.replacement import feature_outputs

    B = len(targets)
    fo = feature_outputs(rep).requires_grad_(True)
    errs = rep.errors.clone().requires_grad_(True)
    embs = rep.embeddings.clone().requires_grad_(True)
    kind = targets[0][0]
    idx = torch.tensor([t[1] for t in targets])
    with torch.enable_grad():
        if kind == "feature":
            layer = int(rep.features[idx[0], 0])
            cap: dict = {}
            run_replacement(rep, feature_outputs=fo, errors=errs, embeddings=embs, stop_at_layer=layer + 1,
                            capture=cap)
            out = cap[f"mlp_in.{layer}"][0]  # [pos, d_model]
            tc = rep.transcoders[layer]
            pos, lat = rep.features[idx, 1], rep.features[idx, 2]
            grads = torch.zeros(B, *out.shape, dtype=out.dtype)
            grads[torch.arange(B), pos] = tc.W_enc[:, lat].T.to(out.dtype)
            values = (out[pos] * tc.W_enc[:, lat].T).sum(-1) + tc.b_enc[lat]
        else:
            out = run_replacement(rep, feature_outputs=fo, errors=errs, embeddings=embs)[0, -1].float()  # [vocab]
            ids = logit_ids[idx]
            grads = torch.full((B, out.shape[0]), -1.0 / out.shape[0], dtype=out.dtype)
            grads[torch.arange(B), ids] += 1.0
            values = out[ids] - out.mean()
        g_f, g_e, g_t = torch.autograd.grad(out, [fo, errs, embs], grad_outputs=grads, is_grads_batched=True,
                                            allow_unused=True)
    g_f = torch.zeros(B, *fo.shape) if g_f is None else g_f
    g_e = torch.zeros(B, *errs.shape) if g_e is None else g_e
    g_t = torch.zeros(B, *embs.shape) if g_t is None else g_t
    return (values.detach(), _feature_edges(rep, g_f.detach()), (g_e * rep.errors).sum(-1).detach(),
            (g_t * rep.embeddings).sum(-1).detach())


def _edges_for(rep: LocalReplacement, targets: list, logit_ids: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One batched backward pass: (values, feature edges ``[B, n_active]``, error edges ``[B, layers, pos]``,
    embedding edges ``[B, pos]``) of ``targets``."""
    B = len(targets)
    acts = rep.activations[None].expand(B, -1).clone().requires_grad_(True)
    errs = rep.errors[None].expand(B, -1, -1, -1).clone().requires_grad_(True)
    embs = rep.embeddings[None].expand(B, -1, -1).clone().requires_grad_(True)
    with torch.enable_grad():
        values = _target_values(rep, targets, logit_ids, acts, errs, embs)
        g_a, g_e, g_t = torch.autograd.grad(values.sum(), [acts, errs, embs], allow_unused=True)
    g_a = torch.zeros_like(acts) if g_a is None else g_a
    g_e = torch.zeros_like(errs) if g_e is None else g_e
    return (values.detach(), (g_a * rep.activations).detach(), (g_e * rep.errors).sum(-1).detach(),
            (g_t * rep.embeddings).sum(-1).detach())


def _assemble(rep: LocalReplacement, logit_ids: Tensor, logit_p: Tensor, rows: dict, meta: dict) -> AttributionGraph:
    n_f, n_l, n_p = int(rep.features.shape[0]), rep.n_layers, rep.n_pos
    n_e, n_t, n_o = n_l * n_p, n_p, int(logit_ids.shape[0])
    n = n_f + n_e + n_t + n_o
    adj = torch.zeros(n, n)
    inputs = torch.zeros(n)
    for (kind, i), (value, fa, ea, ta) in rows.items():
        r = i if kind == "feature" else n_f + n_e + n_t + i
        adj[r, :n_f] = fa
        adj[r, n_f: n_f + n_e] = ea.reshape(-1)
        adj[r, n_f + n_e: n_f + n_e + n_t] = ta
        inputs[r] = value
    bias = inputs - adj.sum(1)
    bias[n_f: n_f + n_e + n_t] = 0.0
    kinds = ["feature"] * n_f + ["error"] * n_e + ["embedding"] * n_t + ["logit"] * n_o
    layer = torch.cat([rep.features[:, 0], torch.arange(n_l).repeat_interleave(n_p), torch.full((n_t,), -1),
                       torch.full((n_o,), n_l)])
    pos = torch.cat([rep.features[:, 1], torch.arange(n_p).repeat(n_l), torch.arange(n_p),
                     torch.full((n_o,), n_p - 1)])
    index = torch.cat([rep.features[:, 2], torch.full((n_e,), -1), rep.tokens.cpu(), logit_ids])
    activation = torch.cat([rep.activations, rep.errors.norm(dim=-1).reshape(-1), rep.embeddings.norm(dim=-1),
                            rep.logits[-1, logit_ids]])
    return AttributionGraph(adjacency=adj, kinds=kinds, layer=layer.long(), pos=pos.long(), index=index.long(),
                            activation=activation.float(), inputs=inputs, bias=bias, logit_probabilities=logit_p,
                            tokens=rep.tokens, token_strs=str_tokens(rep.model, rep.tokens), replacement=rep,
                            meta=meta)


def _prepare(model: Any, transcoders: Any, prompt: Any, target: Any, logit_mass: Any, max_logits: Any):
    rep = local_replacement(model, transcoders, prompt)
    logit_mass = check_logit_mass(logit_mass)
    max_logits = check_count(max_logits, "max_logits")
    logit_ids, logit_p = _logit_targets(rep, target, logit_mass, max_logits)
    return rep, logit_ids, logit_p


def attribution_graph(model: Any, transcoders: Any, prompt: Any, *, target: Any = None, logit_mass: float = 0.95,
                      max_logits: int = 10, max_memory: int = DEFAULT_MAX_MEMORY,
                      progress: bool = False) -> AttributionGraph:
    """The attribution graph of ``prompt`` (module notes), in batched backward passes.

    Args:
        model: a decoder or a registry name (``"zoo/toy-lm"``).
        transcoders: one per MLP layer (``"toy-lm"`` for the shipped set; see
            :func:`~circuitlab.features.transcoders.check_transcoders`).
        prompt: a text (BOS prepended) or token ids.
        target: the logit node(s) to explain: a token (``" Paris"``), a token id, or a list; default the most
            probable next tokens covering ``logit_mass`` of the probability (at most ``max_logits``).
        max_memory: bytes for one batch of target copies (the batch size follows from it).
        progress: a progress bar over the backward passes.
    """
    import time

    from circuitlab.core import progress_bar

    max_memory = check_max_memory(max_memory)
    t0 = time.perf_counter()
    rep, logit_ids, logit_p = _prepare(model, transcoders, prompt, target, logit_mass, max_logits)
    batch = _batch_size(rep, max_memory)
    rows = {}
    batches = _target_batches(rep, len(logit_ids), batch)
    for targets in progress_bar(batches, progress=progress, desc="attribution graph", unit="pass"):
        values, fa, ea, ta = _edges_batched(rep, targets, logit_ids)
        for b, t in enumerate(targets):
            rows[t] = (values[b], fa[b], ea[b], ta[b])
    meta = {"model": model_name(rep.model), "prompt_tokens": rep.n_pos, "batch": batch, "backward_passes": len(batches),
            "logit_mass": float(logit_mass), "max_logits": int(max_logits), "seconds": time.perf_counter() - t0,
            "method": "batched"}
    return _assemble(rep, logit_ids, logit_p, rows, meta)


def attribution_graph_reference(model: Any, transcoders: Any, prompt: Any, *, target: Any = None,
                                logit_mass: float = 0.95, max_logits: int = 10, first_rows: Optional[int] = None,
                                rows: Optional[list] = None) -> AttributionGraph:
    """The same graph with one backward pass per target node (the reference; slow). ``first_rows``: compute only the
    first ``first_rows`` target rows; ``rows``: only these node indices (the rest stay zero; for tests and timing)."""
    import time

    t0 = time.perf_counter()
    rep, logit_ids, logit_p = _prepare(model, transcoders, prompt, target, logit_mass, max_logits)
    targets = [("feature", i) for i in range(int(rep.features.shape[0]))] + \
        [("logit", j) for j in range(len(logit_ids))]
    if rows is not None:
        n_f = int(rep.features.shape[0])
        targets = [t for t in targets if (t[1] if t[0] == "feature" else
                                          n_f + rep.n_layers * rep.n_pos + rep.n_pos + t[1]) in set(rows)]
    if first_rows is not None:
        targets = targets[: check_count(first_rows, "first_rows")]
    rows = {}
    for t in targets:
        values, fa, ea, ta = _edges_for(rep, [t], logit_ids)
        rows[t] = (values[0], fa[0], ea[0], ta[0])
    meta = {"model": model_name(rep.model), "prompt_tokens": rep.n_pos, "batch": 1, "backward_passes": len(targets),
            "seconds": time.perf_counter() - t0, "method": "one backward per node"}
    return _assemble(rep, logit_ids, logit_p, rows, meta)


# ---------------------------------------------------------------------------------------------------------
# Influence, pruning, scores
# ---------------------------------------------------------------------------------------------------------

def normalized_adjacency(adjacency: Float[Tensor, "node node"]) -> Float[Tensor, "node node"]:
    """``|A|`` with each row scaled to sum to 1 (rows of zeros stay zero)."""
    a = adjacency.abs()
    return a / a.sum(1, keepdim=True, dtype=torch.float64).clamp_min(1e-30).to(a.dtype)


def node_influence(adjacency: Float[Tensor, "node node"],
                   logit_weights: Float[Tensor, " node"]) -> Float[Tensor, " node"]:
    """``w @ (N + N^2 + ...)`` for the normalised adjacency ``N``: each node's indirect influence on the weighted
    logits (``= w @ ((I - N)^-1 - I)``). The graph is acyclic and its paths are at most ``n_layers + 2`` edges
    long, so the series ends: summed term by term (vector times matrix, ``O(nodes^2)`` each) until a term is
    zero, as circuit-tracer does."""
    n = normalized_adjacency(adjacency)  # in the adjacency's dtype: float32 (nodes^2 x 4 bytes)
    term = logit_weights.to(n.dtype) @ n
    total = term.double()
    for _ in range(n.shape[0]):
        if not bool(term.any()):
            break
        term = term @ n
        total += term.double()
    return total.to(adjacency.dtype)


def _threshold(scores: Tensor, fraction: float) -> float:
    s = scores.flatten().double().sort(descending=True).values
    total = float(s.sum())
    if total <= 0:
        return float("inf")
    cum = s.cumsum(0) / total
    i = min(int(torch.searchsorted(cum, torch.tensor(fraction, dtype=cum.dtype))), s.numel() - 1)
    return float(s[i])


@dataclass(frozen=True)
class PrunedGraph:
    """What :func:`prune_graph` keeps: ``node_mask`` ``[node]``, ``edge_mask`` ``[node, node]`` (target, source),
    ``influence`` ``[node]`` (indirect influence on the logits in the full graph), ``cumulative`` (each node's
    cumulative influence fraction when nodes are sorted by influence), the thresholds, and the pruned graph's
    ``replacement_score`` and ``completeness_score`` (and the full graph's, for comparison)."""

    graph: AttributionGraph = field(repr=False)
    node_mask: Bool[Tensor, " node"]
    edge_mask: Bool[Tensor, "node node"]
    influence: Float[Tensor, " node"]
    cumulative: Float[Tensor, " node"]
    node_threshold: float
    edge_threshold: float
    scores: dict

    @property
    def adjacency(self) -> Float[Tensor, "node node"]:
        """The pruned adjacency (pruned edges and nodes zeroed)."""
        a = self.graph.adjacency * self.edge_mask
        a[~self.node_mask] = 0
        a[:, ~self.node_mask] = 0
        return a


def logit_weights(graph: AttributionGraph) -> Float[Tensor, " node"]:
    """Per node: the logit nodes' probabilities, 0 elsewhere."""
    w = torch.zeros(graph.n_nodes)
    w[graph.slices()["logit"]] = graph.logit_probabilities
    return w


def graph_scores(graph: AttributionGraph, adjacency: Optional[Float[Tensor, "node node"]] = None) -> dict:
    """circuit-tracer's replacement and completeness scores (module notes) of ``graph`` with ``adjacency`` (default
    the full one; pass a pruned one)."""
    a = graph.adjacency if adjacency is None else adjacency
    sl = graph.slices()
    w = logit_weights(graph)
    n = normalized_adjacency(a)
    infl = node_influence(a, w)
    tok, err = float(infl[sl["embedding"]].sum()), float(infl[sl["error"]].sum())
    replacement = tok / (tok + err) if tok + err > 0 else float("nan")
    non_error = 1 - n[:, sl["error"]].sum(-1)
    out = infl + w
    completeness = float((non_error * out).sum() / out.sum())
    return {"replacement_score": replacement, "completeness_score": completeness}


def prune_graph(graph: AttributionGraph, *, node_threshold: float = 0.8, edge_threshold: float = 0.98) -> PrunedGraph:
    """Prune ``graph`` by indirect influence on the logits (circuit-tracer's rule; module notes).

    Args:
        graph: an :class:`AttributionGraph`.
        node_threshold: keep the most influential nodes until their cumulative influence reaches this fraction.
        edge_threshold: keep the highest-scoring edges until this fraction of the total edge score.
    """
    if not isinstance(graph, AttributionGraph):
        raise InputError(f"graph must be an AttributionGraph (attribution_graph makes one); got {shorten(graph, 40)}.")
    node_threshold = check_number(node_threshold, "node_threshold", low=0, high=1)
    edge_threshold = check_number(edge_threshold, "edge_threshold", low=0, high=1)
    sl = graph.slices()
    n_f = sl["feature"].stop
    src_end = sl["embedding"].start  # features and errors: [0, src_end)
    w = logit_weights(graph)
    infl = node_influence(graph.adjacency, w)
    node_mask = infl >= _threshold(infl, node_threshold)
    node_mask[sl["embedding"].start:] = True
    pruned = graph.adjacency.clone()
    pruned[~node_mask] = 0
    pruned[:, ~node_mask] = 0
    n = normalized_adjacency(pruned)
    edge_scores = n * (node_influence(pruned, w) + w)[:, None]
    edge_mask = (edge_scores >= _threshold(edge_scores, edge_threshold)) & (pruned != 0)
    while True:
        old = node_mask.clone()
        edge_mask[~node_mask] = False
        edge_mask[:, ~node_mask] = False
        node_mask[:src_end] &= edge_mask[:, :src_end].any(0)
        node_mask[:n_f] &= edge_mask[:n_f].any(1)
        if torch.equal(old, node_mask):
            break
    order = infl.argsort(descending=True)
    cum = torch.zeros_like(infl)
    total = float(infl.sum())
    cum[order] = infl[order].cumsum(0) / (total if total > 0 else 1.0)
    kept = graph.adjacency * edge_mask
    scores = {"pruned": graph_scores(graph, kept), "full": graph_scores(graph),
              "nodes_kept": int(node_mask.sum()), "edges_kept": int(edge_mask.sum()),
              "features_kept": int(node_mask[:n_f].sum()), "features_total": n_f}
    return PrunedGraph(graph=graph, node_mask=node_mask, edge_mask=edge_mask, influence=infl, cumulative=cum,
                       node_threshold=float(node_threshold), edge_threshold=float(edge_threshold), scores=scores)


__all__ = ["AttributionGraph", "attribution_graph", "attribution_graph_reference", "PrunedGraph", "prune_graph",
           "graph_scores", "node_influence", "normalized_adjacency", "logit_weights"]
