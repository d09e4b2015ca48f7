"""Attention rollout and attention flow (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers"):
how much each input token contributes to an output position, read from the attention weights of every layer.

Raw attention of one layer says where a position reads from the layer below, not from the input: after the first
layer every position already mixes several tokens. Abnar & Zuidema follow the weights down through the layers:

- **the mixed attention of a layer** (:func:`mixed_attention`): the residual connection is modelled as attention
  to the position itself, ``A' = residual * I + (1 - residual) * mean_heads(A)``, with ``residual=0.5`` as in the
  paper, and each row renormalised to sum to 1 (the rows of ``A`` already do, so this only removes rounding; a
  padded or masked row would otherwise leak mass). The heads are averaged with equal weights, as in the paper;
- **rollout** (:func:`rollout`): the running product from the first layer to the last, ``R = A'_{L-1} ... A'_1
  A'_0``; row ``q`` of ``R`` is the share of output position ``q`` that each input token accounts for (rows sum
  to 1);
- **flow** (:func:`attention_flow`): the layered attention graph has a node per (layer, position), ``layer = 0``
  being the input tokens and ``layer = l + 1`` the output of block ``l``, and an edge from ``(l + 1, q)`` to
  ``(l, k)`` of capacity ``A'_l[q, k]`` (on a causal model only ``k <= q``). The flow of input token ``j`` is the
  maximum flow from the output node ``(L, pos)`` to ``(0, j)``. It is computed exactly, one maximum flow per input
  token, with networkx on float64 capacities (no scaling to integers; the paper's code used networkx too), or
  with SciPy's compiled solver on capacities rounded to multiples of ``2**-30`` (``solver="scipy"``). The flows
  of different tokens do not add up to anything (each is a separate maximum flow);
- **raw attention** (:func:`raw_attention`): the last layer's head-averaged attention from ``pos``: the baseline
  the paper compares against;
- **input ablation** (:func:`ablation_importance`): the drop of the log-probability of the model's prediction at
  ``pos`` when one input token is replaced by a baseline token: the importance the paper correlates the three
  attention scores with (Spearman, :func:`correlations`).

    from circuitlab.attention.flow import rollout, attention_flow, raw_attention, correlations

    rollout(model, prompts).values           # [prompt, key]: relevance of each input token for the last position
    attention_flow(model, prompts).values    # [prompt, key]: maximum flow to each input token
    correlations(model, prompts).values      # [method, prompt]: Spearman with input-ablation importance

networkx (a dependency of torch) and SciPy are imported only by the flow functions.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuitlab.core import (DEFAULT_MAX_MEMORY, ModelLike, as_model, check_finite, check_max_memory, check_number,
                             check_pos, model_name, position_labels, progress_bar, row_bytes, row_chunks, shorten,
                             spearman, to_tokens)
from circuitlab.engine.collect import run_hooks
from circuitlab.errors import InputError
from circuitlab.results import Result

#: the paper's weight of the identity (the residual connection) in the mixed attention
DEFAULT_RESIDUAL = 0.5
#: the methods :func:`correlations` compares with input ablation
METHODS = ("raw", "rollout", "flow")
#: the maximum-flow solvers of :func:`attention_flow`, and the precision of SciPy's integer capacities (2**-30)
SOLVERS = ("networkx", "scipy")
SCIPY_BITS = 30

Prompts = Union[str, Sequence[str], Int[Tensor, "batch pos"], Sequence[Sequence[int]]]


def _tokens(model: Any, prompts: Any) -> Int[Tensor, "batch pos"]:
    if prompts is None or (isinstance(prompts, (list, tuple)) and not prompts):
        raise InputError("prompts is empty: give one prompt or more (text, a list of texts, or token ids).")
    return to_tokens(model, prompts)


def check_residual(residual: Any) -> float:
    """``residual`` checked: the weight of the identity in the mixed attention, a number in ``[0, 1]``."""
    return check_number(residual, "residual", low=0, high=1,
                        what="a number in [0, 1] (the weight of the identity; the paper uses 0.5)")


# ---------------------------------------------------------------------------------------------------------
# Attention maps and the mixed attention
# ---------------------------------------------------------------------------------------------------------

def attention_maps(model: ModelLike, prompts: Prompts, *, max_memory: float = DEFAULT_MAX_MEMORY) -> Result:
    """The head-averaged attention of every layer, ``values[layer, prompt, query, key]``.

    Read from ``blocks.{l}.attn.hook_pattern`` (softmax weights, after masking) in one forward pass per batch of
    prompts; batches are cut to fit ``max_memory``; the pass stops after the last block (no unembedding). Each
    row sums to 1; on a causal model entries with ``key > query`` are 0.
    """
    model = as_model(model)
    max_memory = check_max_memory(max_memory)
    tokens = _tokens(model, prompts)
    return _maps_result(model, tokens, _maps(model, tokens, max_memory))


def _maps(model: Any, tokens: Int[Tensor, "batch pos"], max_memory: int) -> Float[Tensor, "layer batch query key"]:
    n_layers, (batch, seq) = model.cfg.n_layers, tokens.shape
    out = torch.empty(n_layers, batch, seq, seq)
    for sl in row_chunks(batch, row_bytes(model, seq), max_memory):
        def keep(pattern: Tensor, hook: Any, sl: slice = sl) -> None:
            layer = int(hook.name.split(".")[1])
            out[layer, sl] = pattern.detach().float().mean(1).cpu()  # [batch, head, q, k] -> heads averaged

        with torch.no_grad():
            run_hooks(model, tokens[sl], [(lambda name: name.endswith("attn.hook_pattern"), keep)], stop=n_layers)
    check_finite(model, tokens, "the attention patterns", out)
    return out


def _maps_result(model: Any, tokens: Int[Tensor, "batch pos"], maps: Float[Tensor, "layer batch query key"]
                 ) -> Result:
    labels = position_labels(model, tokens)
    return Result(values=maps, axes=("layer", "prompt", "query", "key"), labels={"query": labels, "key": labels},
                  title="Attention (heads averaged)", metric="attention weight", model=model_name(model),
                  task=shorten(tokens.tolist()), meta={"hook": "blocks.{layer}.attn.hook_pattern"})


def mixed_attention(maps: Float[Tensor, "*layer query key"], residual: float = DEFAULT_RESIDUAL
                    ) -> Float[Tensor, "*layer query key"]:
    """``residual * I + (1 - residual) * maps``, each row renormalised to sum to 1 (float64).

    ``maps`` are head-averaged attention maps (any leading axes). A row that is all zero (and ``residual=0``)
    stays zero rather than dividing by zero.
    """
    residual = check_residual(residual)
    maps = torch.as_tensor(maps).double()
    if maps.ndim < 2 or maps.shape[-1] != maps.shape[-2]:
        raise InputError(f"maps must end in two equal axes [query, key]; got shape {tuple(maps.shape)}.")
    eye = torch.eye(maps.shape[-1], dtype=torch.float64)
    mixed = residual * eye + (1 - residual) * maps
    total = mixed.sum(-1, keepdim=True)
    return mixed / torch.where(total > 0, total, torch.ones_like(total))


# ---------------------------------------------------------------------------------------------------------
# Rollout, raw attention
# ---------------------------------------------------------------------------------------------------------

def rollout_matrix(maps: Float[Tensor, "layer batch query key"], residual: float = DEFAULT_RESIDUAL
                   ) -> Float[Tensor, "batch query key"]:
    """The rollout ``A'_{L-1} @ ... @ A'_0`` of head-averaged maps (float64): row ``q`` is the relevance of each
    input token for output position ``q``."""
    mixed = mixed_attention(maps, residual)
    out = mixed[0]
    for layer in range(1, mixed.shape[0]):
        out = mixed[layer] @ out
    return out


def rollout(model: ModelLike, prompts: Prompts, *, pos: Optional[int] = -1, residual: float = DEFAULT_RESIDUAL,
            max_memory: float = DEFAULT_MAX_MEMORY) -> Result:
    """Attention rollout (Abnar & Zuidema 2020): the relevance of each input token for the output at ``pos``.

    ``values[prompt, key]`` is row ``pos`` of the rollout matrix (it sums to 1); with ``pos=None`` the whole matrix,
    ``values[prompt, query, key]``. Choices, as in the paper: heads averaged with equal weights, the residual
    connection as ``residual * I`` (0.5), rows renormalised, product from the first layer to the last.
    """
    model = as_model(model)
    residual = check_residual(residual)
    max_memory = check_max_memory(max_memory)
    tokens = _tokens(model, prompts)
    if pos is not None:
        pos = check_pos(pos, tokens.shape[1])
    matrix = rollout_matrix(_maps(model, tokens, max_memory), residual).float()
    labels = position_labels(model, tokens)
    common = dict(title="Attention rollout", metric="share of the output position from each input token",
                  model=model_name(model), task=shorten(tokens.tolist()),
                  meta={"residual": residual, "heads": "averaged", "pos": pos})
    if pos is None:
        return Result(values=matrix, axes=("prompt", "query", "key"), labels={"query": labels, "key": labels},
                      **common)
    return Result(values=matrix[:, pos], axes=("prompt", "key"), labels={"key": labels}, **common)


def raw_attention(model: ModelLike, prompts: Prompts, pos: int = -1, *,
                  max_memory: float = DEFAULT_MAX_MEMORY) -> Result:
    """The baseline: the last layer's head-averaged attention from ``pos``, ``values[prompt, key]``."""
    model = as_model(model)
    max_memory = check_max_memory(max_memory)
    tokens = _tokens(model, prompts)
    pos = check_pos(pos, tokens.shape[1])
    maps = _maps(model, tokens, max_memory)
    return Result(values=maps[-1, :, pos], axes=("prompt", "key"), labels={"key": position_labels(model, tokens)},
                  title="Raw attention (last layer)", metric="attention weight, heads averaged",
                  model=model_name(model), task=shorten(tokens.tolist()), meta={"pos": pos})


# ---------------------------------------------------------------------------------------------------------
# Flow
# ---------------------------------------------------------------------------------------------------------

def flow_graph(mixed: Float[Tensor, "layer query key"], pos: int, causal: bool = True) -> Any:
    """The layered attention graph of one prompt as a ``networkx.DiGraph``: node ``(l, i)`` for layer
    ``l = 0..L`` and position ``i``; an edge ``(l + 1, q) -> (l, k)`` of capacity ``mixed[l, q, k]`` wherever it is
    positive. On a causal model only positions ``<= pos`` can carry flow from ``(L, pos)``, so only they are built.
    """
    import networkx as nx

    mixed = torch.as_tensor(mixed).double()
    n_layers, seq = mixed.shape[0], mixed.shape[-1]
    n = pos + 1 if causal else seq
    graph = nx.DiGraph()
    graph.add_nodes_from((layer, i) for layer in range(n_layers + 1) for i in range(n))
    for layer in range(n_layers):
        caps = mixed[layer, :n, :n].tolist()
        for q in range(n):
            for k in range(n):
                if caps[q][k] > 0:
                    graph.add_edge((layer + 1, q), (layer, k), capacity=caps[q][k])
    return graph


def check_solver(solver: Any) -> str:
    """``solver`` checked: one of :data:`SOLVERS`."""
    if solver not in SOLVERS:
        raise InputError(f"solver must be one of {SOLVERS} (networkx: exact on float64 capacities; scipy: integer "
                         f"capacities in units of 2**-{SCIPY_BITS}, much faster); got {shorten(solver)}.")
    return solver


def flow_values(mixed: Float[Tensor, "layer query key"], pos: int, causal: bool = True, solver: str = "networkx"
                ) -> Float[Tensor, " key"]:
    """The maximum flow from ``(L, pos)`` to each input node ``(0, j)`` of :func:`flow_graph` (float64; 0 for
    tokens no flow reaches, e.g. those after ``pos`` on a causal model). One maximum flow per input token.

    ``solver="networkx"``: networkx's shortest-augmenting-path algorithm on the float64 capacities (the same
    maximum flow as the Edmonds-Karp of the paper's code, several times faster; the residual network is built once
    and reused for every token). ``solver="scipy"``: ``scipy.sparse.csgraph.maximum_flow`` (Dinic, compiled), which
    needs integer capacities: each capacity is rounded to the nearest multiple of ``2**-30``, so a flow differs from
    the exact one by at most ``2**-31`` per edge of the minimum cut (about 1e-7 on a 64-token prompt); some hundred
    times faster. SciPy is not a dependency of circuitlab (install it to use this solver).
    """
    solver = check_solver(solver)
    mixed = torch.as_tensor(mixed).double()
    n_layers, seq = mixed.shape[0], mixed.shape[-1]
    pos = check_pos(pos, seq)
    n = pos + 1 if causal else seq
    out = torch.zeros(seq, dtype=torch.float64)
    if solver == "scipy":
        try:
            import numpy as np
            from scipy.sparse import csr_matrix
            from scipy.sparse.csgraph import maximum_flow
        except ImportError as e:  # pragma: no cover - scipy is installed with the test extra
            raise InputError("solver='scipy' needs SciPy (pip install scipy); or use solver='networkx'.") from e
        caps = mixed[:, :n, :n].numpy()
        rows, cols, data = [], [], []
        for layer in range(n_layers):
            q, k = np.nonzero(caps[layer] > 0)
            rows.append((layer + 1) * n + q)
            cols.append(layer * n + k)
            data.append(np.rint(caps[layer][q, k] * 2**SCIPY_BITS))
        size = (n_layers + 1) * n
        graph = csr_matrix((np.concatenate(data).astype(np.int32), (np.concatenate(rows), np.concatenate(cols))),
                           shape=(size, size))
        for j in range(n):
            out[j] = maximum_flow(graph, n_layers * n + pos, j, method="dinic").flow_value / 2**SCIPY_BITS
        return out
    from networkx.algorithms.flow import build_residual_network, shortest_augmenting_path

    graph = flow_graph(mixed, pos, causal)
    residual = build_residual_network(graph, "capacity")
    for j in range(n):
        out[j] = shortest_augmenting_path(graph, (n_layers, pos), (0, j), residual=residual,
                                          value_only=True).graph["flow_value"]
    return out


def attention_flow(model: ModelLike, prompts: Prompts, pos: int = -1, *, residual: float = DEFAULT_RESIDUAL,
                   solver: str = "networkx", max_memory: float = DEFAULT_MAX_MEMORY, progress: bool = False
                   ) -> Result:
    """Attention flow (Abnar & Zuidema 2020): the maximum flow from the output node ``(last layer, pos)`` to each
    input token in the layered attention graph whose capacities are the mixed attention
    (:func:`mixed_attention`: heads averaged, ``residual * I``, rows renormalised). ``values[prompt, key]``.

    One maximum flow per input token and prompt (what the paper's code computes), exact on float64 capacities with
    networkx (``solver="networkx"``, the default), or with SciPy's compiled Dinic on capacities rounded to
    multiples of ``2**-30`` (``solver="scipy"``; see :func:`flow_values`). On a causal model only edges
    ``key <= query`` exist and tokens after ``pos`` get 0.
    """
    model = as_model(model)
    residual = check_residual(residual)
    solver = check_solver(solver)
    max_memory = check_max_memory(max_memory)
    tokens = _tokens(model, prompts)
    pos = check_pos(pos, tokens.shape[1])
    mixed = mixed_attention(_maps(model, tokens, max_memory), residual)
    causal = getattr(model.cfg, "attention_dir", "causal") == "causal"
    flows = torch.stack([flow_values(mixed[:, b], pos, causal, solver)
                         for b in progress_bar(range(tokens.shape[0]), progress=progress, desc="attention flow")])
    return Result(values=flows.float(), axes=("prompt", "key"), labels={"key": position_labels(model, tokens)},
                  title="Attention flow", metric="maximum flow from the output position to each input token",
                  model=model_name(model), task=shorten(tokens.tolist()),
                  meta={"residual": residual, "heads": "averaged", "pos": pos, "solver": solver})


# ---------------------------------------------------------------------------------------------------------
# Input ablation and the paper's evaluation
# ---------------------------------------------------------------------------------------------------------

def _baseline_token(model: Any, baseline: Any) -> int:
    if baseline is None:
        tok = model.tokenizer
        for name in ("unk_token_id", "pad_token_id", "bos_token_id"):
            value = getattr(tok, name, None) if tok is not None else None
            if value is not None:
                return int(value)
        return 0
    if isinstance(baseline, bool) or not isinstance(baseline, int) or not 0 <= baseline < model.cfg.d_vocab:
        raise InputError(f"baseline must be a token id in [0, {model.cfg.d_vocab}) or None (the tokenizer's unknown, "
                         f"padding or start token); got {shorten(baseline)}.")
    return baseline


def ablation_importance(model: ModelLike, prompts: Prompts, pos: int = -1, *, baseline: Optional[int] = None,
                        max_memory: float = DEFAULT_MAX_MEMORY) -> Result:
    """Input-ablation importance, ``values[prompt, key]``: ``log p(y) - log p_j(y)`` where ``y`` is the model's top
    prediction at ``pos`` on the clean prompt and ``p_j`` the prediction with input token ``j`` replaced by
    ``baseline`` (default: the tokenizer's unknown token, else its padding token, else its start token, else id
    0). Tokens after ``pos`` on a causal model cannot matter and are 0 (not run). One batched forward pass for all
    replacements of a prompt, cut to ``max_memory``; only the logits at ``pos`` are kept.
    """
    model = as_model(model)
    max_memory = check_max_memory(max_memory)
    tokens = _tokens(model, prompts)
    batch, seq = tokens.shape
    pos = check_pos(pos, seq)
    base = _baseline_token(model, baseline)
    causal = getattr(model.cfg, "attention_dir", "causal") == "causal"
    n = pos + 1 if causal else seq
    out = torch.zeros(batch, seq)
    chunks = row_chunks(n + 1, row_bytes(model, seq, logits=model.cfg.d_vocab_out), max_memory)
    targets = []
    for b in range(batch):
        rows = tokens[b].repeat(n + 1, 1)
        rows[torch.arange(1, n + 1), torch.arange(n)] = base  # row 0 clean, row j + 1 without token j
        with torch.no_grad():
            logp = torch.cat([model(rows[sl])[:, pos].float().log_softmax(-1).cpu() for sl in chunks])
        check_finite(model, rows, "the log-probabilities", logp)
        y = int(logp[0].argmax())
        targets.append(y)
        out[b, :n] = logp[0, y] - logp[1:, y]
    return Result(values=out, axes=("prompt", "key"), labels={"key": position_labels(model, tokens)},
                  title="Input ablation importance", metric="drop of the log-probability of the top prediction",
                  model=model_name(model), task=shorten(tokens.tolist()),
                  meta={"pos": pos, "baseline": base, "targets": targets})


def gradient_importance(model: ModelLike, prompts: Prompts, pos: int = -1, *, steps: int = 64,
                        max_memory: float = DEFAULT_MAX_MEMORY) -> Result:
    """Token importance by integrated gradients, ``values[prompt, key]``: each input token's share of
    ``log p(y) - log p_baseline(y)``, ``y`` the model's top prediction at ``pos`` on the clean prompt, the path
    running over the token embeddings from the padding token's embedding (:func:`circuitlab.concepts.gradients.
    integrated_gradients` with ``baseline="pad"``, a leading start token kept, ``steps`` Gauss-Legendre points).
    Signed, like :func:`ablation_importance`, whose replacement it follows along a straight path. A prompt's values
    add up to its own ``log p(y) - log p_baseline(y)`` up to the quadrature's error (``meta["gap"]``, of the mean
    over prompts)."""
    from circuitlab.concepts.gradients import integrated_gradients
    from circuitlab.metrics import Probability

    model = as_model(model)
    max_memory = check_max_memory(max_memory)
    tokens = _tokens(model, prompts)
    pos = check_pos(pos, tokens.shape[1])
    chunks = row_chunks(tokens.shape[0], row_bytes(model, tokens.shape[1], logits=model.cfg.d_vocab_out), max_memory)
    with torch.no_grad():  # the clean top predictions, batched like the other passes
        targets = [int(t) for sl in chunks for t in model(tokens[sl])[:, pos].argmax(-1).tolist()]
    ig = integrated_gradients(model, tokens, Probability(targets, pos=pos, log=True, model=model), baseline="pad",
                              steps=steps, max_memory=max_memory)
    values = ig.values * tokens.shape[0]  # the metric is the mean over prompts: each prompt's own attribution
    if getattr(model.cfg, "attention_dir", "causal") == "causal":
        values[:, pos + 1:] = 0.0  # later tokens cannot matter (their gradient is 0 already)
    return Result(values=values, axes=("prompt", "key"), labels={"key": position_labels(model, tokens)},
                  title="Integrated-gradients importance", metric="IG of the log-probability of the top prediction",
                  model=model_name(model), task=shorten(tokens.tolist()),
                  meta={"pos": pos, "targets": targets, "steps": steps, "gap": ig.meta.get("gap")})


#: the token importances :func:`correlations` compares the attention scores with
REFERENCES = ("ablation", "gradients")


def correlations(model: ModelLike, prompts: Prompts, pos: int = -1, *, residual: float = DEFAULT_RESIDUAL,
                 baseline: Optional[int] = None, skip_bos: bool = True, solver: str = "networkx",
                 reference: str = "ablation", max_memory: float = DEFAULT_MAX_MEMORY) -> Result:
    """The paper's evaluation: Spearman's rank correlation of raw attention, rollout and flow with token importance
    over the input tokens ``0..pos`` of each prompt, ``values[method, prompt]`` (methods :data:`METHODS`).
    ``reference="ablation"`` (the default) is input-ablation importance (:func:`ablation_importance`, the paper's
    "blank-out"), ``"gradients"`` integrated gradients (:func:`gradient_importance`; the paper uses input
    gradients). ``meta["mean"]`` holds the mean over prompts per method, ``meta["scores"]`` each method's token
    scores and the reference's, ``[prompt, key]``. NaN where a score is constant. The attention maps are read once
    for the three methods.

    With ``skip_bos`` (the default), position 0 is left out where every prompt starts with the tokenizer's start
    token: it is an attention sink that holds most of the rollout and flow, and replacing it (often by itself, the
    default baseline) measures nothing about the text.
    """
    model = as_model(model)
    tokens = _tokens(model, prompts)
    pos = check_pos(pos, tokens.shape[1])
    if not isinstance(reference, str) or reference not in REFERENCES:
        raise InputError(f"reference={shorten(reference)}: use 'ablation' (input ablation) or 'gradients' "
                         "(integrated gradients).")
    if not isinstance(skip_bos, bool):
        raise InputError(f"skip_bos must be True or False; got {shorten(skip_bos)}.")
    bos = getattr(model.tokenizer, "bos_token_id", None) if model.tokenizer is not None else None
    first = 1 if skip_bos and bos is not None and bool((tokens[:, 0] == bos).all()) and pos > 0 else 0
    solver = check_solver(solver)
    residual = check_residual(residual)
    max_memory = check_max_memory(max_memory)
    maps = _maps(model, tokens, max_memory)  # one pass for the three scores
    mixed = mixed_attention(maps, residual)
    causal = getattr(model.cfg, "attention_dir", "causal") == "causal"
    scores = {
        "raw": maps[-1, :, pos],
        "rollout": rollout_matrix(maps, residual).float()[:, pos],
        "flow": torch.stack([flow_values(mixed[:, b], pos, causal, solver)
                             for b in range(tokens.shape[0])]).float(),
    }
    if reference == "ablation":
        ablation = ablation_importance(model, tokens, pos, baseline=baseline, max_memory=max_memory).values
    else:
        ablation = gradient_importance(model, tokens, pos, max_memory=max_memory).values
    span = slice(first, pos + 1)
    values = torch.tensor([[spearman(scores[m][b, span], ablation[b, span]) for b in range(tokens.shape[0])]
                           for m in METHODS])
    return Result(values=values, axes=("method", "prompt"), labels={"method": list(METHODS)},
                  title="Attention scores vs "
                        f"{'input ablation' if reference == 'ablation' else 'integrated gradients'}",
                  metric="Spearman correlation",
                  model=model_name(model), task=shorten(tokens.tolist()),
                  meta={"pos": pos, "residual": residual, "first": first, "reference": reference,
                        "scores": {**scores, reference: ablation},
                        "mean": {m: float(values[i].nanmean()) for i, m in enumerate(METHODS)}})
