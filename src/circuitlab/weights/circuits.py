"""QK and OV circuits of attention heads read from the weights (Elhage et al. 2021, "A Mathematical Framework for
Transformer Circuits"), their top entries streamed over the vocabulary, and copying scores from their eigenvalues.

For head ``h`` of layer ``l`` the **OV circuit** maps a source token to the logits it raises when attended to,
``W_E W_V W_O W_U`` (``d_vocab x d_vocab``), and the **QK circuit** scores a query token against a key token,
``W_E W_Q W_K^T W_E^T``. Positional parts replace ``W_E`` by ``W_pos`` on the query, key or source side (models
whose positions are added to the residual stream, or shortformer models, where positions enter queries and keys
only: their OV circuit has no positional part). The **K-composed** QK circuit reads its keys through the OV circuits
of earlier heads, ``W_E W_Q W_K^T (W_E sum_via W_V W_O)^T``: an induction head attends to the key whose *previous*
token (moved there by a previous-token head) matches the query token, which shows as positive eigenvalues.

**The norm rule** (the package's, as in :mod:`circuitlab.ffn` and :mod:`circuitlab.attribution`): a norm is linear
once its scale is frozen, and the scale depends on the prompt, so weight circuits keep the norm's weight and, for
LayerNorm, its centering, and drop the scale (one positive number per position) and the bias (which does not
depend on the token). So a token enters head ``(l, h)`` as ``center(W_E[t]) * w_ln1[l]``, leaves through the final
norm as ``center(x) * w_ln_final`` before ``W_U`` (exactly the directions :func:`circuitlab.core.unembed_matrix`
gives), a sandwich-norm model's head output passes the output norm's weight (``W_O * w_ln1_post``, as
:func:`circuitlab.ffn.value_vectors` does for MLPs) and a QK-norm's weight multiplies ``W_Q`` / ``W_K``. This is the
matrix TransformerLens's ``W_E @ model.OV[l, h] @ W_U`` gives after ``fold_ln`` and ``center_writing_weights``
(tested). Biases (``b_Q``, ``b_K``, ``b_V``, ``b_O``, ``b_U``) are left out, as in the paper: the circuits are the
token-by-token bilinear parts. The QK circuit is the raw bilinear form (not divided by ``attn_scale``); for rotary
models it is the form at relative distance 0 (no rotation).

**How it is computed.** Nothing ``d_vocab x d_vocab`` is formed unless :func:`circuit_matrix` is asked for it and it
fits ``max_memory``. Every map is written as a ``d_model x d_model`` (rank ``d_head``) matrix applied to raw
embedding rows, so a block of rows costs ``rows x d_model x d_vocab`` and is reduced to its top-``k`` before the
next block (:func:`ov_circuit`, :func:`qk_circuit`, :func:`bigram_table`). Eigenvalues use the ``d_head x d_head``
form: the non-zero eigenvalues of ``A B`` (``A: d_vocab x r``) are those of ``B A`` (as in TransformerLens's
``FactoredMatrix.eigenvalues``), and ``B A`` needs only the Gram matrices ``W_U W_E`` and ``W_E^T W_E``
(``d_model x d_model``, accumulated once per model in float64 over blocks of the vocabulary). Copying scores are
computed in float64 whatever the model's dtype (TransformerLens's ``eig`` fails in bf16, TransformerLens#934).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
from jaxtyping import Complex, Float
from torch import Tensor
from transformer_lens import HookedTransformer

from circuitlab.core import (DEFAULT_MAX_MEMORY, Head, ModelLike, answer_id, as_model, check_count_within, check_heads,
                             check_index, check_max_memory, final_norm_kind, final_norm_weight, format_bytes,
                             head_label, model_name, output_norm, parse_head, row_chunks, shorten, weight_state)
from circuitlab.errors import CircuitlabError, InputError
from circuitlab.results import Bundle, Result, TopTokens, token_strings

__all__ = ["CopyingScores", "bigram_table", "circuit_matrix", "copying_scores", "ov_circuit", "qk_circuit"]

SIDES = ("token", "pos")
KEY_SIDES = ("token", "pos", "k_composed")
PATHS = ("ov", "qk", "k_composed")


# ---------------------------------------------------------------------------------------------------------
# The maps, as d_model x d_model matrices applied to raw embedding rows (the norm rule of the module docstring)
# ---------------------------------------------------------------------------------------------------------

def _dtype(model: HookedTransformer) -> torch.dtype:
    """float32 for the top-k products (float64 stays float64); half precisions are promoted."""
    return torch.float64 if model.cfg.dtype == torch.float64 else torch.float32


def _norm_map(model: HookedTransformer, norm: Any, kind: str, dtype: torch.dtype) -> Optional[Tensor]:
    """The norm with its scale frozen at 1 and its bias dropped, as a ``d_model x d_model`` matrix acting on row
    vectors (``x @ N = center(x) * w``); None for the identity."""
    d = model.cfg.d_model
    w = getattr(norm, "w", None) if norm is not None else None
    if kind == "none" or (kind == "rms" and not isinstance(w, Tensor)):
        return None
    device = model.cfg.device
    N = torch.eye(d, dtype=dtype, device=device)
    if kind == "ln":
        N = N - 1.0 / d
    if isinstance(w, Tensor):
        N = N * w.detach().to(dtype)[None, :]
    return N


def _norm_kind(norm: Any, model: HookedTransformer) -> str:
    if norm is None or model.cfg.normalization_type is None:
        return "none"
    name = type(norm).__name__
    return "ln" if name.startswith("LayerNorm") else "rms" if name.startswith("RMSNorm") else "none"


def _mm(x: Tensor, N: Optional[Tensor]) -> Tensor:
    return x if N is None else x @ N


def input_map(model: HookedTransformer, layer: int, dtype: torch.dtype) -> Optional[Float[Tensor, "d_model d_model"]]:
    """Layer ``layer``'s attention input norm (``ln1``) by the module's rule, or None (identity)."""
    ln1 = getattr(model.blocks[layer], "ln1", None)
    return _norm_map(model, ln1, _norm_kind(ln1, model), dtype)


def output_map(model: HookedTransformer, dtype: torch.dtype) -> Optional[Float[Tensor, "d_model d_model"]]:
    """The final norm by the module's rule (``x @ N = center(x) * w_ln_final``), or None."""
    kind = final_norm_kind(model)
    w = final_norm_weight(model)
    d = model.cfg.d_model
    if kind == "none":
        return None
    N = torch.eye(d, dtype=dtype, device=model.cfg.device)
    if kind == "ln":
        N = N - 1.0 / d
    return N * w.to(dtype)[None, :] if w is not None else N


def head_weights(model: HookedTransformer, head: Head, dtype: torch.dtype
                 ) -> dict[str, Float[Tensor, "d_in d_out"]]:
    """``W_Q``, ``W_K``, ``W_V`` (``d_model x d_head``) and ``W_O`` (``d_head x d_model``) of one head as the module's
    rule reads them: QK-norm weights folded into ``W_Q`` / ``W_K``, a sandwich-norm model's output norm weight into
    ``W_O``; grouped-query key/value heads expanded to the query head's."""
    l, h = head
    attn = model.blocks[l].attn
    W = {name: getattr(attn, name)[h].detach().to(dtype) for name in ("W_Q", "W_K", "W_V", "W_O")}
    for name, norm_name in (("W_Q", "q_norm"), ("W_K", "k_norm")):
        norm = getattr(attn, norm_name, None)
        w = getattr(norm, "w", None) if norm is not None else None
        if isinstance(w, Tensor):
            w = w.detach().to(dtype)
            if w.numel() != W[name].shape[1]:  # a norm over all heads at once (OLMo): this head's slice
                groups = w.numel() // W[name].shape[1]
                w = w.reshape(groups, -1)[h // max(1, model.cfg.n_heads // groups)]
            W[name] = W[name] * w[None, :]
    post = output_norm(model, l, "attn")
    if post is not None and isinstance(getattr(post, "w", None), Tensor):
        W["W_O"] = W["W_O"] * post.w.detach().to(dtype)[None, :]
    return W


def _source_matrix(model: HookedTransformer, side: str, what: str) -> Tensor:
    """``W_E`` or ``W_pos`` (raw rows)."""
    if side == "token":
        return model.W_E.detach()
    pos_type = model.cfg.positional_embedding_type
    if pos_type not in ("standard", "shortformer"):
        raise InputError(f"{what}='pos': model {shorten(model_name(model))} has {pos_type} positional embeddings, "
                         "not a W_pos table; its circuits have only token parts. Use 'token'.")
    return model.W_pos.detach()


def _check_side(value: Any, what: str, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise InputError(f"{what}={shorten(value)}: choose one of {', '.join(repr(c) for c in choices)}.")
    return value


def ov_maps(model: HookedTransformer, head: Head, dtype: torch.dtype
            ) -> tuple[Float[Tensor, "d_model d_head"], Float[Tensor, "d_head d_model"]]:
    """``(L, R)`` with the OV circuit's rows ``X @ L @ R @ W_U`` for raw source rows ``X``: ``L = N_ln1 W_V``
    (``d_model x d_head``), ``R = W_O N_final`` (``d_head x d_model``)."""
    W = head_weights(model, head, dtype)
    return _mm_left(input_map(model, head[0], dtype), W["W_V"]), _mm(W["W_O"], output_map(model, dtype))


def _mm_left(N: Optional[Tensor], W: Tensor) -> Tensor:
    return W if N is None else N @ W


def _earlier_heads(model: HookedTransformer, layer: int, via: Any) -> list[Head]:
    if via is None:
        if layer == 0:
            raise InputError("key_side='k_composed' needs a head in layer 1 or later: its keys are read through the OV "
                             "circuits of earlier layers' heads, and layer 0 has none before it.")
        return [(l, h) for l in range(layer) for h in range(model.cfg.n_heads)]
    heads = check_heads(model, via, what="via")
    late = [head_label(h) for h in heads if h[0] >= layer]
    if late:
        raise InputError(f"via={shorten(via)} names heads ({', '.join(late)}) that are not in a layer before the "
                         f"head's layer {layer}; K-composition reads only earlier heads' outputs.")
    return heads


def qk_maps(model: HookedTransformer, head: Head, key: str, via: Any, dtype: torch.dtype
            ) -> tuple[Float[Tensor, "d_model d_head"], Float[Tensor, "d_model d_head"], list[Head]]:
    """``(Qmap, Kmap, via)``: query ``X @ Qmap`` and key ``Y @ Kmap`` (``d_model x d_head``) for raw rows ``X``, ``Y``;
    with ``key='k_composed'`` the key rows are token embeddings read through the ``via`` heads' OV circuits first."""
    l = head[0]
    W = head_weights(model, head, dtype)
    N = input_map(model, l, dtype)
    Qmap, Kmap = _mm_left(N, W["W_Q"]), _mm_left(N, W["W_K"])
    heads: list[Head] = []
    if key == "k_composed":
        heads = _earlier_heads(model, l, via)
        P = torch.zeros(model.cfg.d_model, model.cfg.d_model, dtype=dtype, device=Kmap.device)
        for vh in heads:
            Wv = head_weights(model, vh, dtype)
            P = P + _mm_left(input_map(model, vh[0], dtype), Wv["W_V"]) @ Wv["W_O"]
        Kmap = P @ Kmap
    return Qmap, Kmap, heads


def _unembed_rows(model: HookedTransformer, x: Tensor, dtype: torch.dtype) -> Tensor:
    return x @ model.W_U.detach().to(dtype)


# ---------------------------------------------------------------------------------------------------------
# Rows of a circuit, streamed
# ---------------------------------------------------------------------------------------------------------

def check_rows(model: HookedTransformer, n: int, rows: Any, what: str, unit: str) -> list[int]:
    if rows is None:
        return list(range(n))
    if isinstance(rows, Tensor):
        rows = rows.flatten().tolist()
    if isinstance(rows, (int, str)) or (isinstance(rows, Sequence) and rows and isinstance(rows[0], str)):
        rows = [rows] if not isinstance(rows, (list, tuple)) else list(rows)
    if not isinstance(rows, (list, tuple)) or not rows:
        raise InputError(f"{what}={shorten(rows)}: give a token (id or single-token string), a list of them, or None "
                         "for all.")
    out = []
    for r in rows:
        if isinstance(r, str) and unit == "tokens in the vocabulary":
            out.append(answer_id(model, r, what=what.rstrip("s")))
        else:
            out.append(check_index(r, n, what, unit))
    return out


def _labels(model: HookedTransformer, side: str, ids: Sequence[int]) -> list[str]:
    if side == "pos":
        return [f"pos {i}" for i in ids]
    return token_strings(model, torch.tensor(list(ids), dtype=torch.long))


def _stream_top(row_fn, ids: list[int], n_cols: int, k: int, max_memory: int, dtype: torch.dtype
                ) -> tuple[Tensor, Tensor]:
    """Top-``k`` of each row of ``row_fn(ids_block) [block, n_cols]``, blocks cut to ``max_memory``."""
    vals, idx = [], []
    size = torch.finfo(dtype).bits // 8
    for sl in row_chunks(len(ids), 3 * n_cols * size, max_memory):
        scores = row_fn(ids[sl])
        top = scores.topk(k, dim=-1)
        vals.append(top.values)
        idx.append(top.indices)
    return torch.cat(vals), torch.cat(idx)


def _key_labels(model: HookedTransformer, key: str) -> Any:
    if key == "pos":
        return lambda ids: [f"pos {int(i)}" for i in ids.reshape(-1).tolist()]
    return lambda ids: token_strings(model, ids)


def ov_circuit(
    model: ModelLike,
    head: Any,
    tokens: Any = None,
    k: int = 10,
    side: str = "token",
    max_memory: int = DEFAULT_MAX_MEMORY,
) -> TopTokens:
    """The ``k`` tokens each source token (or position) raises most through head ``head``'s OV circuit.

    Row ``t`` of ``W_E W_V W_O W_U`` (``side='pos'``: of ``W_pos W_V W_O W_U``) with the norm rule of the module
    docstring: the logits the head adds, per unit of attention, when it attends to token ``t``. Rows are computed
    in blocks cut to ``max_memory`` and reduced to their top-``k`` at once.

    Args:
        model: any HookedTransformer.
        head: ``(layer, head)``, ``"L1H2"`` or ``"1.2"``.
        tokens: the source rows: token ids (or single-token strings; positions for ``side='pos'``), or None for
            all of them (``d_vocab`` rows: ``d_vocab x d_model x d_vocab`` multiply-adds).
        k: tokens per row.
        side: the source rows: ``'token'`` or ``'pos'`` (models with ``W_pos`` added to the residual stream).
        max_memory: bytes for one block of rows' scores.

    Returns:
        :class:`~circuitlab.results.TopTokens` ``[source, rank]``.
    """
    model = as_model(model)
    hd = parse_head(model, head)
    source = _check_side(side, "side", SIDES)
    max_memory = check_max_memory(max_memory)
    V = model.cfg.d_vocab_out
    k = check_count_within(k, "k", V, "tokens in the vocabulary")
    if source == "pos" and model.cfg.positional_embedding_type == "shortformer":
        raise InputError("side='pos': this is a shortformer model; positions enter queries and keys only, so the "
                         "OV circuit has no positional part. Use side='token'.")
    X = _source_matrix(model, source, "side")
    ids = check_rows(model, X.shape[0], tokens, "tokens", "tokens in the vocabulary" if source == "token" else
                   "positions (n_ctx)")
    dtype = _dtype(model)
    with torch.no_grad():
        L, R = ov_maps(model, hd, dtype)

        def rows(block: list[int]) -> Tensor:
            return _unembed_rows(model, (X[block].to(dtype) @ L) @ R, dtype)

        vals, idx = _stream_top(rows, ids, V, k, max_memory, dtype)
    label = head_label(hd)
    return _top_tokens(vals, idx, ("source", "rank"), {"source": _labels(model, source, ids)},
                       _key_labels(model, "token"),
                       title=f"OV circuit of {label}: tokens raised by attending to each source {source}",
                       metric=f"W_{'E' if source == 'token' else 'pos'} W_V W_O W_U (norm weights, no scale)",
                       model=model_name(model), task="weights",
                       meta={"head": hd, "source": source, "rows": ids})


def _top_tokens(vals: Tensor, idx: Tensor, axes: tuple, labels: dict, strings: Any,
                **fields: Any) -> TopTokens:
    kk = idx.shape[-1]
    flat = strings(idx.reshape(-1).cpu()) if idx.numel() else []
    nested = [flat[i:i + kk] for i in range(0, len(flat), kk)]
    return TopTokens(values=vals.cpu(), axes=axes, labels=labels, token_ids=idx.cpu(), tokens=nested, **fields)


def qk_circuit(
    model: ModelLike,
    head: Any,
    tokens: Any = None,
    k: int = 10,
    query_side: str = "token",
    key_side: str = "token",
    via: Any = None,
    max_memory: int = DEFAULT_MAX_MEMORY,
) -> TopTokens:
    """The ``k`` keys each query token (or position) scores highest in head ``head``'s QK circuit.

    Row ``q`` of ``W_E W_Q W_K^T W_E^T`` (``W_pos`` in place of ``W_E`` on the side given as ``'pos'``), with the
    norm rule of the module docstring; ``key_side='k_composed'`` reads the keys through the OV circuits of the ``via``
    heads (default: every head in an earlier layer), ``W_E W_Q W_K^T (W_E sum_via W_V W_O)^T``: the key token is
    the one those heads moved to the key position (for a previous-token head, the token before it).

    Args:
        model, head: as :func:`ov_circuit`.
        tokens: the query rows (token ids or strings; positions for ``query_side='pos'``), or None for all.
        k: keys per row.
        query_side: ``'token'`` or ``'pos'``; key_side: ``'token'``, ``'pos'`` or ``'k_composed'``.
        via: with ``key_side='k_composed'``: the earlier heads whose OV circuits the keys are read through.
        max_memory: bytes for one block of rows' scores.

    Returns:
        :class:`~circuitlab.results.TopTokens` ``[query, rank]`` (key tokens, or ``"pos 3"`` labels).
    """
    model = as_model(model)
    hd = parse_head(model, head)
    query = _check_side(query_side, "query_side", SIDES)
    key = _check_side(key_side, "key_side", KEY_SIDES)
    if via is not None and key != "k_composed":
        raise InputError(f"via={shorten(via)} is only read with key_side='k_composed'; leave it out or set that key.")
    max_memory = check_max_memory(max_memory)
    Xq = _source_matrix(model, query, "query_side")
    Xk = _source_matrix(model, "pos" if key == "pos" else "token", "key_side")
    n_keys = Xk.shape[0]
    k = check_count_within(k, "k", n_keys, "keys (tokens in the vocabulary)" if key != "pos" else "positions")
    ids = check_rows(model, Xq.shape[0], tokens, "tokens", "tokens in the vocabulary" if query == "token" else
                   "positions (n_ctx)")
    dtype = _dtype(model)
    with torch.no_grad():
        Qmap, Kmap, heads = qk_maps(model, hd, key, via, dtype)
        # all keys through W_K once (d_head x d_model x n_keys) pays off for more than ~d_head query rows
        cheap = len(ids) > 2 * model.cfg.d_head and n_keys * model.cfg.d_head * 4 <= max_memory
        keys_T = (Kmap.T @ Xk.to(dtype).T) if cheap else None

        def rows(block: list[int]) -> Tensor:
            q = Xq[block].to(dtype) @ Qmap  # [n, d_head]
            if keys_T is not None:
                return q @ keys_T
            return (q @ Kmap.T) @ Xk.to(dtype).T

        vals, idx = _stream_top(rows, ids, n_keys, k, max_memory, dtype)
    label = head_label(hd)
    key_word = {"token": "W_E", "pos": "W_pos", "k_composed": "(W_E sum_via W_V W_O)"}[key]
    return _top_tokens(vals, idx, ("query", "rank"), {"query": _labels(model, query, ids)},
                       _key_labels(model, key),
                       title=f"QK circuit of {label}: keys each query {query} scores highest",
                       metric=f"W_{'E' if query == 'token' else 'pos'} W_Q W_K^T {key_word}^T (norm weights, no scale)",
                       model=model_name(model), task="weights",
                       meta={"head": hd, "query": query, "key": key, "via": heads, "rows": ids})


def bigram_table(
    model: ModelLike,
    tokens: Any = None,
    k: int = 10,
    max_memory: int = DEFAULT_MAX_MEMORY,
) -> TopTokens:
    """The direct path ``W_E W_U``: the ``k`` next tokens each token predicts through the residual stream alone,
    through the final norm by the package's rule (``center(x) * w_ln_final`` before ``W_U``, no scale, no ``b_U``;
    module docstring). In a one-layer attention-only model this is the bigram part of Elhage et al.'s
    "bigram plus skip-trigram" description.

    Args:
        model: any HookedTransformer.
        tokens: the rows (token ids or single-token strings), or None for the whole vocabulary.
        k: next tokens per row.
        max_memory: bytes for one block of rows' scores.

    Returns:
        :class:`~circuitlab.results.TopTokens` ``[source, rank]``.
    """
    model = as_model(model)
    max_memory = check_max_memory(max_memory)
    V = model.cfg.d_vocab_out
    k = check_count_within(k, "k", V, "tokens in the vocabulary")
    E = model.W_E.detach()
    ids = check_rows(model, E.shape[0], tokens, "tokens", "tokens in the vocabulary")
    dtype = _dtype(model)
    with torch.no_grad():
        N = output_map(model, dtype)

        def rows(block: list[int]) -> Tensor:
            return _unembed_rows(model, _mm(E[block].to(dtype), N), dtype)

        vals, idx = _stream_top(rows, ids, V, k, max_memory, dtype)
    return _top_tokens(vals, idx, ("source", "rank"), {"source": _labels(model, "token", ids)},
                       _key_labels(model, "token"), title="Direct path (bigram table): next tokens each token predicts",
                       metric="W_E W_U through the final norm's weight (no scale, no b_U)", model=model_name(model),
                       task="weights", meta={"rows": ids})


def circuit_matrix(
    model: ModelLike,
    head: Any = None,
    kind: str = "ov",
    query_side: str = "token",
    key_side: str = "token",
    via: Any = None,
    max_memory: int = DEFAULT_MAX_MEMORY,
) -> Result:
    """The whole circuit as a dense matrix, only when it fits ``max_memory`` (an error naming the size otherwise).

    ``kind='ov'``: ``[source, output]`` (the source rows given by ``query_side``: ``'token'`` or ``'pos'``);
    ``kind='qk'``: ``[query, key]`` (as :func:`qk_circuit`); ``kind='direct'``: the bigram table ``W_E W_U`` (no
    head). Same rule and numbers as the streamed functions; for small vocabularies and tests.
    """
    model = as_model(model)
    kind = _check_side(kind, "kind", ("ov", "qk", "direct"))
    max_memory = check_max_memory(max_memory)
    dtype = _dtype(model)
    if kind != "direct":
        hd = parse_head(model, head)
    elif head is not None:
        raise InputError(f"head={shorten(head)}: kind='direct' is the direct path W_E W_U, which goes through no head;"
                         " leave head out.")
    query = _check_side(query_side, "query_side", SIDES)
    key = _check_side(key_side, "key_side", KEY_SIDES)
    X = _source_matrix(model, query, "query_side")
    n_rows = X.shape[0] if kind != "direct" else model.cfg.d_vocab
    n_cols = model.cfg.d_vocab_out if kind != "qk" else _source_matrix(
        model, "pos" if key == "pos" else "token", "key").shape[0]
    need = n_rows * n_cols * (torch.finfo(dtype).bits // 8)
    if need > max_memory:
        raise InputError(f"the dense {kind} circuit is {n_rows:,} x {n_cols:,} ({format_bytes(need)}), more than "
                         f"max_memory={format_bytes(max_memory)}; raise max_memory, or use the streamed top-k "
                         f"(ov_circuit, qk_circuit, bigram_table).")
    with torch.no_grad():
        if kind == "direct":
            M = _unembed_rows(model, _mm(model.W_E.detach().to(dtype), output_map(model, dtype)), dtype)
            axes, title = ("source", "output"), "Direct path W_E W_U"
            row_l, col_l = _labels(model, "token", range(n_rows)), _labels(model, "token", range(n_cols))
        elif kind == "ov":
            if query == "pos" and model.cfg.positional_embedding_type == "shortformer":
                raise InputError("query_side='pos' with kind='ov': a shortformer model's values do not read positions.")
            L, R = ov_maps(model, hd, dtype)
            M = _unembed_rows(model, (X.to(dtype) @ L) @ R, dtype)
            axes, title = ("source", "output"), f"OV circuit of {head_label(hd)}"
            row_l, col_l = _labels(model, query, range(n_rows)), _labels(model, "token", range(n_cols))
        else:
            Qmap, Kmap, _ = qk_maps(model, hd, key, via, dtype)
            Xk = _source_matrix(model, "pos" if key == "pos" else "token", "key_side").to(dtype)
            M = (X.to(dtype) @ Qmap) @ (Xk @ Kmap).T
            axes, title = ("query", "key"), f"QK circuit of {head_label(hd)} ({key} keys)"
            row_l, col_l = _labels(model, query, range(n_rows)), _labels(model, "pos" if key == "pos" else "token",
                                                                          range(n_cols))
    return Result(M.cpu(), axes, labels={axes[0]: row_l, axes[1]: col_l}, title=title, model=model_name(model),
                  task="weights", metric="circuit entry (norm weights, no scale, no biases)",
                  meta={"kind": kind, "query": query, "key": key})


# ---------------------------------------------------------------------------------------------------------
# Copying scores: eigenvalues in float64 through the d_head x d_head form
# ---------------------------------------------------------------------------------------------------------

_GRAMS: "weakref.WeakKeyDictionary[Any, tuple]" = weakref.WeakKeyDictionary()


def grams(model: HookedTransformer, max_memory: int = DEFAULT_MAX_MEMORY
          ) -> tuple[Float[Tensor, "d_model d_model"], Float[Tensor, "d_model d_model"]]:
    """``(W_U W_E, W_E^T W_E)`` in float64 (``d_model x d_model`` each), accumulated over blocks of the vocabulary
    cut to ``max_memory``; memoised per state of the weights."""
    state = weight_state(model)
    hit = _GRAMS.get(model)
    if hit is not None and hit[0] == state:
        return hit[1]
    E, U = model.W_E.detach(), model.W_U.detach()
    d = model.cfg.d_model
    GUE = torch.zeros(d, d, dtype=torch.float64, device=E.device)
    GEE = torch.zeros(d, d, dtype=torch.float64, device=E.device)
    for sl in row_chunks(E.shape[0], 3 * d * 8, max_memory):
        e = E[sl].to(torch.float64)
        GEE += e.T @ e
        GUE += U[:, sl].to(torch.float64) @ e
    _GRAMS[model] = (state, (GUE, GEE))
    return GUE, GEE


@dataclass(repr=False)
class CopyingScores(Bundle):
    """Copying scores of heads' circuits (Elhage et al. 2021).

    Attributes:
        copying: ``[head]`` ``sum(lambda) / sum(|lambda|)`` over the circuit's eigenvalues (float64): +1 when every
            eigenvalue is positive (the head raises what it attends to, or attends to what matches), -1 when all
            are negative.
        self_top1: ``[head]`` the fraction of tokens (of ``tokens``) whose own row's top entry is themselves (OV: the
            top output of a source token; QK / K-composed: the top key of a query token), or None if not asked.
        eigenvalues: ``[head, d_head]`` the non-zero-rank eigenvalues (complex128), largest modulus first.
        path: ``'ov'``, ``'qk'`` or ``'k_composed'``.
    """

    copying: Result
    self_top1: Optional[Result]
    eigenvalues: Complex[Tensor, "head d_head"]
    path: str
    heads: list
    model: str = ""


def _core(model: HookedTransformer, hd: Head, path: str, via: Any, GUE: Tensor, GEE: Tensor) -> Tensor:
    """The ``d_head x d_head`` matrix ``B A`` whose eigenvalues are the circuit's non-zero ones (float64)."""
    f64 = torch.float64
    if path == "ov":  # M = E L R U  ->  eig(R U E L)
        L, R = ov_maps(model, hd, f64)
        return R @ GUE @ L
    Qmap, Kmap, _ = qk_maps(model, hd, "token" if path == "qk" else "k_composed", via, f64)
    return Kmap.T @ GEE @ Qmap  # M = E Qmap Kmap^T E^T  ->  eig(Kmap^T E^T E Qmap)


def copying_scores(
    model: ModelLike,
    heads: Any = None,
    path: str = "ov",
    via: Any = None,
    self_top1: bool = True,
    tokens: Any = None,
    max_memory: int = DEFAULT_MAX_MEMORY,
) -> CopyingScores:
    """Copying scores ``sum(lambda) / sum(|lambda|)`` of each head's token-by-token circuit, and the fraction of
    tokens whose row's top entry is themselves.

    ``path='ov'``: the OV circuit ``W_E W_V W_O W_U`` (positive: attending to a token raises that token, Elhage et
    al.'s copying heads); ``'qk'``: the QK circuit ``W_E W_Q W_K^T W_E^T`` (positive: a token attends to itself);
    ``'k_composed'``: the QK circuit with keys read through the ``via`` heads' OV circuits (default: all heads of
    earlier layers; positive: an induction head attends to the key whose previous token matches the query).

    The eigenvalues are those of the ``d_head x d_head`` matrix ``B A`` where the circuit is ``A B`` (the non-zero
    eigenvalues of both are the same), computed in float64 from the Gram matrices of the embeddings (module
    docstring): no ``d_vocab x d_vocab`` matrix. The top-1 fractions stream rows over the vocabulary like
    :func:`ov_circuit` (``len(tokens) x d_model x d_vocab`` multiply-adds per head; pass ``tokens`` to sample, or
    ``self_top1=False`` to skip them).

    Args:
        model: a model whose input and output vocabularies are the same.
        heads: heads (list of ``(layer, head)``, ``"L1H2"``...) or None for all (for ``'k_composed'``: those of the
            layers after the last ``via`` head's, or from layer 1 without ``via``).
        path: ``'ov'``, ``'qk'`` or ``'k_composed'``.
        via: with ``path='k_composed'``: the earlier heads the keys are read through.
        self_top1: also compute the top-1 fractions.
        tokens: the tokens the fractions are taken over (ids or strings), or None for the whole vocabulary.
        max_memory: bytes for one block of the vocabulary (Gram matrices) or of rows' scores.
    """
    model = as_model(model)
    path = _check_side(path, "path", PATHS)
    if via is not None and path != "k_composed":
        raise InputError(f"via={shorten(via)} is only read with path='k_composed'; leave it out or set that path.")
    if not isinstance(self_top1, bool):
        raise InputError(f"self_top1={shorten(self_top1)}: give True or False.")
    max_memory = check_max_memory(max_memory)
    if model.cfg.d_vocab != model.cfg.d_vocab_out:
        raise CircuitlabError(f"model {shorten(model_name(model))} has d_vocab={model.cfg.d_vocab} input tokens and "
                              f"d_vocab_out={model.cfg.d_vocab_out} outputs: its circuits are not square, and copying "
                              "scores compare a token with itself.")
    first = 0 if path != "k_composed" else 1 if via is None else 1 + max(l for l, _ in check_heads(model, via, "via"))
    if heads is None:
        hds = [(l, h) for l in range(first, model.cfg.n_layers) for h in range(model.cfg.n_heads)]
        if not hds:
            raise InputError("path='k_composed' needs a model with at least two layers (keys are read through earlier "
                             "heads' OV circuits).")
    else:
        hds = check_heads(model, heads)
    ids = check_rows(model, model.cfg.d_vocab, tokens, "tokens", "tokens in the vocabulary")
    with torch.no_grad():
        GUE, GEE = grams(model, max_memory)
        eigs, scores, fractions = [], [], []
        for hd in hds:
            lam = torch.linalg.eigvals(_core(model, hd, path, via, GUE, GEE).cpu())
            lam = lam[lam.abs().argsort(descending=True)]
            eigs.append(lam)
            total = float(lam.abs().sum())
            scores.append(float(lam.sum().real) / total if total > 0 else float("nan"))
            if self_top1:
                fractions.append(_self_top1(model, hd, path, via, ids, max_memory))
    labels = {"head": [head_label(h) for h in hds]}
    what = {"ov": "OV circuit W_E W_V W_O W_U", "qk": "QK circuit W_E W_Q W_K^T W_E^T",
            "k_composed": "K-composed QK circuit W_E W_Q W_K^T (W_E sum_via W_V W_O)^T"}[path]
    common = dict(axes=("head",), labels=labels, model=model_name(model), task="weights", meta={"path": path})
    return CopyingScores(
        copying=Result(torch.tensor(scores, dtype=torch.float64), title=f"Copying score of the {what}",
                       metric="sum(lambda) / sum(|lambda|)", **common),
        self_top1=Result(torch.tensor(fractions, dtype=torch.float64), title=f"Top-1 is the token itself ({what})",
                         metric=f"fraction of {len(ids)} tokens", **common) if self_top1 else None,
        eigenvalues=torch.stack(eigs), path=path, heads=hds, model=model_name(model))


def _self_top1(model: HookedTransformer, hd: Head, path: str, via: Any, ids: list[int], max_memory: int) -> float:
    dtype = _dtype(model)
    E = model.W_E.detach()
    V = model.cfg.d_vocab
    if path == "ov":
        L, R = ov_maps(model, hd, dtype)

        def rows(block: list[int]) -> Tensor:
            return _unembed_rows(model, (E[block].to(dtype) @ L) @ R, dtype)
    else:
        Qmap, Kmap, _ = qk_maps(model, hd, "token" if path == "qk" else "k_composed", via, dtype)
        keys_T = Kmap.T @ E.to(dtype).T if len(ids) > 2 * model.cfg.d_head else None  # [d_head, d_vocab]

        def rows(block: list[int]) -> Tensor:
            q = E[block].to(dtype) @ Qmap
            return q @ keys_T if keys_T is not None else (q @ Kmap.T) @ E.to(dtype).T

    _, idx = _stream_top(rows, ids, V, 1, max_memory, dtype)
    return float((idx[:, 0].cpu() == torch.tensor(ids)).double().mean())

