"""Skip-trigrams and the path expansion of a one-layer attention-only model (Elhage et al. 2021, "A Mathematical
Framework for Transformer Circuits", section "One-layer attention-only transformers").

A one-layer attention-only transformer is, with its attention patterns fixed, a sum of paths:

    logits = direct path (W_E W_U) + sum_heads sum_src A[dst, src] * OV[token(src), :] + biases

where ``OV`` is the head's OV circuit (:func:`circuitlab.weights.ov_circuit`) and ``A`` its attention pattern,
which the QK circuit decides. Elhage et al. read this as "bigrams plus skip-trigrams": the direct path predicts the
next token from the current one, and a head that attends from destination token ``B`` to an earlier source token
``A`` raises output ``C``: the skip-trigram ``A ... B -> C``.

**Skip-trigrams** (:func:`skip_trigrams`) rank ``(source A, destination B, output C)`` by
``relu(QK~[B, A]) * relu(OV~[A, C])``, where ``QK~`` is the QK circuit centred over the keys of each query row and
``OV~`` the OV circuit centred over the outputs of each source row. Centring removes what softmax ignores (a shift
of every key's score, or of every logit), so the sign says "attends to ``A`` more than to an average token" and
"raises ``C`` above the average logit"; triples where either is negative are not skip-trigrams in the paper's sense
(attending less to ``A``, or lowering ``C``) and score 0.

**The path expansion** (:func:`path_expansion`) freezes the patterns and the norms' scales at the values they take
on a prompt. Then every step is linear, and the logits split *exactly* into the direct path, one term per head
(its OV circuit rows, weighted by attention and by ``1 / scale`` of the attention norm at the source and of the
final norm at the destination; with a positional part for models that add ``W_pos`` to the residual stream), and
a constant (the biases). The share of the logits the top skip-trigrams explain keeps, for each head, only the
OV entries ``(token(src), C)`` whose triple ``(token(src), token(dst), C)`` is among the head's top ``k``; shares
are ``1 - |L - A|^2 / |L|^2`` over logits centred over the vocabulary at each position (softmax ignores the
centre), with the bias term in every approximation.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from circuitlab.core import (DEFAULT_MAX_MEMORY, ModelLike, Prompts, as_model, check_count, check_finite,
                             check_max_memory, format_bytes, head_label, model_name, parse_head, position_labels,
                             shorten, to_tokens, weight_state)
from circuitlab.errors import CircuitlabError, InputError
from circuitlab.results import Bundle, Result, token_strings
from circuitlab.weights.circuits import check_rows, ov_maps, output_map, qk_maps

__all__ = ["PathExpansion", "SkipTrigrams", "path_expansion", "skip_trigrams"]


# ---------------------------------------------------------------------------------------------------------
# Skip-trigrams
# ---------------------------------------------------------------------------------------------------------

@dataclass(repr=False)
class SkipTrigrams(Bundle):
    """A head's top skip-trigrams ``source ... destination -> output``, best first.

    Attributes:
        scores: ``[rank]`` ``relu(QK~[B, A]) * relu(OV~[A, C])`` (module docstring), labelled ``"A … B -> C"``.
        source, destination, output: ``[rank]`` the token ids ``A``, ``B``, ``C``.
        triples: the same as strings, ``(A, B, C)``.
        head: the head.
    """

    scores: Result
    source: Int[Tensor, " rank"]
    destination: Int[Tensor, " rank"]
    output: Int[Tensor, " rank"]
    triples: list = field(default_factory=list)
    head: tuple = ()
    model: str = ""


def _centred_circuits(model: HookedTransformer, hd: tuple, ids: list[int]) -> tuple[Tensor, Tensor]:
    """``(QK~ [dst, src], OV~ [src, out])`` over the tokens ``ids`` (all three roles), float32."""
    dtype = torch.float64 if model.cfg.dtype == torch.float64 else torch.float32
    E = model.W_E.detach()[ids].to(dtype)
    Qmap, Kmap, _ = qk_maps(model, hd, "token", None, dtype)
    qk = (E @ Qmap) @ (E @ Kmap).T
    L, R = ov_maps(model, hd, dtype)
    ov = ((E @ L) @ R) @ model.W_U.detach().to(dtype)[:, ids]
    return qk - qk.mean(-1, keepdim=True), ov - ov.mean(-1, keepdim=True)


def skip_trigrams(
    model: ModelLike,
    head: Any,
    k: int = 20,
    tokens: Any = None,
    max_memory: int = DEFAULT_MAX_MEMORY,
) -> SkipTrigrams:
    """The ``k`` strongest skip-trigrams ``A ... B -> C`` of one head, ranked by QK x OV (module docstring).

    Exact top-``k`` over all ``n^3`` triples of the ``n`` tokens considered, streamed over source tokens in blocks
    of ``max_memory`` (``n x n`` scores per source). What a head of a one-layer attention-only model does, read as
    Elhage et al.'s skip-trigram table; for a deeper model it is what the head does through the direct path alone.

    Args:
        model: any HookedTransformer whose input and output vocabularies are the same.
        head: ``(layer, head)``, ``"L0H1"`` or ``"0.1"``.
        k: how many triples.
        tokens: the tokens considered in all three roles (ids or single-token strings), or None for the whole
            vocabulary (``d_vocab^3`` triples: fine for word-level toy models; give a subset for a large vocabulary).
        max_memory: bytes for one block of ``n x n`` scores.
    """
    model = as_model(model)
    hd = parse_head(model, head)
    max_memory = check_max_memory(max_memory)
    if model.cfg.d_vocab != model.cfg.d_vocab_out:
        raise CircuitlabError(f"model {shorten(model_name(model))} has different input and output vocabularies; "
                              "skip-trigrams need one vocabulary.")
    ids = check_rows(model, model.cfg.d_vocab, tokens, "tokens", "tokens in the vocabulary")
    if len(set(ids)) != len(ids):
        raise InputError(f"tokens={shorten(tokens)} repeats a token; give each token once.")
    n = len(ids)
    k = check_count(k, "k")
    if k > n ** 3:
        raise InputError(f"k={k} is more than the {n ** 3:,} triples of the {n} tokens; use k <= {n ** 3}.")
    if 8 * n * n > max_memory:
        raise InputError(f"tokens: {n:,} tokens need {format_bytes(8 * n * n)} for the two {n} x {n} circuits, more "
                         f"than max_memory={format_bytes(max_memory)} allows; give a smaller set of tokens.")
    best_v, A, B, C = top_triples(model, hd, k, ids, max_memory)
    sa, sb, sc = (token_strings(model, x) for x in (A, B, C))
    triples = list(zip(sa, sb, sc))
    labels = [f"{x!r} … {y!r} -> {z!r}" for x, y, z in triples]
    return SkipTrigrams(
        scores=Result(best_v, ("rank",), labels={"rank": labels}, title=f"Skip-trigrams of {head_label(hd)}",
                      metric="relu(QK centred over keys) x relu(OV centred over outputs)", model=model_name(model),
                      task=f"weights, {n} tokens", meta={"head": hd}),
        source=A, destination=B, output=C, triples=triples, head=hd, model=model_name(model))


def top_triples(model: HookedTransformer, hd: tuple, k: int, ids: list[int], max_memory: int
                ) -> tuple[Float[Tensor, " k"], Int[Tensor, " k"], Int[Tensor, " k"], Int[Tensor, " k"]]:
    """The ``k`` best ``(score, source, destination, output)`` over the tokens ``ids``, as tensors (no labels):
    the computation of :func:`skip_trigrams` for arguments it has checked."""
    n = len(ids)
    with torch.no_grad():
        qk, ov = _centred_circuits(model, hd, ids)
        qk, ov = qk.clamp(min=0).cpu(), ov.clamp(min=0).cpu()
        if k >= n ** 3:  # every triple: no ranking to stream
            block = qk.T[:, :, None] * ov[:, None, :]
            best_v, best_i = block.reshape(-1).sort(descending=True)
        else:
            best_v = torch.empty(0, dtype=qk.dtype)
            best_i = torch.empty(0, dtype=torch.long)
            step = max(1, max_memory // max(1, n * n * 4))
            for lo in range(0, n, step):
                hi = min(n, lo + step)
                # block[a, b, c] = qk[b, a] * ov[a, c] for sources a in [lo, hi)
                block = qk[:, lo:hi].T[:, :, None] * ov[lo:hi, None, :]
                top = block.reshape(-1).topk(min(k, block.numel()))
                best_v = torch.cat([best_v, top.values])
                best_i = torch.cat([best_i, top.indices + lo * n * n])
                keep = best_v.topk(min(k, len(best_v)))
                best_v, best_i = keep.values, best_i[keep.indices]
    ids_t = torch.tensor(ids, dtype=torch.long)
    return best_v, ids_t[best_i // (n * n)], ids_t[(best_i // n) % n], ids_t[best_i % n]


# ---------------------------------------------------------------------------------------------------------
# Path expansion of a one-layer attention-only model
# ---------------------------------------------------------------------------------------------------------

@dataclass(repr=False)
class PathExpansion(Bundle):
    """The logits of a one-layer attention-only model on one prompt, split into paths (patterns frozen).

    Attributes:
        terms: ``[term, pos, vocab]`` ``"direct"``, one term per head ``"L0H0"``..., and ``"bias"``: their sum is
            the model's logits.
        logits: ``[pos, vocab]`` the model's own logits on the prompt.
        max_error: ``max |sum(terms) - logits|``.
        explained: ``[approximation]`` the share of the centred logits explained (module docstring) by the
            biases alone, the direct path (bigrams), the direct path + the top-``k`` skip-trigrams of every head,
            and all paths (1 up to float error).
        k: skip-trigrams kept per head.
    """

    terms: Result
    logits: Result
    max_error: float
    explained: Result
    k: int
    model: str = ""


def _scale(norm: Any, x: Tensor, kind: str) -> Tensor:
    """The scale ``norm`` divides ``x`` by (LayerNorm: after centring), as TransformerLens computes it."""
    eps = float(getattr(norm, "eps", 1e-5))
    if kind == "ln":
        x = x - x.mean(-1, keepdim=True)
    return (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()


def _norm_kind(model: HookedTransformer, norm: Any) -> str:
    if norm is None or model.cfg.normalization_type is None:
        return "none"
    name = type(norm).__name__
    return "ln" if name.startswith("LayerNorm") else "rms" if name.startswith("RMSNorm") else "other"


def _check_one_layer(model: HookedTransformer) -> None:
    cfg = model.cfg
    why = None
    if not cfg.attn_only or cfg.n_layers != 1:
        why = f"it has {cfg.n_layers} layer(s){'' if cfg.attn_only else ' with MLPs'}"
    elif getattr(cfg, "use_normalization_before_and_after", False):
        why = "it normalises the attention output (sandwich norms)"
    elif getattr(cfg, "output_logits_soft_cap", -1.0) and cfg.output_logits_soft_cap > 0:
        why = "its logits pass through a soft cap"
    elif _norm_kind(model, getattr(model.blocks[0], "ln1", None)) == "other" or \
            _norm_kind(model, getattr(model, "ln_final", None)) == "other":
        why = "its norms are neither LayerNorm nor RMSNorm"
    if why:
        raise CircuitlabError(f"the path expansion is exact for one-layer attention-only models, but model "
                              f"{shorten(model_name(model))} is not one: {why}. Use zoo/attn-only-1l or a model like "
                              "it (for deeper models see circuitlab.attribution).")


_KEPT: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()


def _kept_triples(model: HookedTransformer, h: int, k: int, max_memory: int) -> Tensor:
    """``[src, dst, out]`` booleans: the top-``k`` skip-trigrams of head ``(0, h)`` over the whole vocabulary,
    memoised per state of the weights (a path expansion of many prompts ranks them once)."""
    cfg = model.cfg
    if cfg.d_vocab ** 2 * cfg.d_vocab_out > 2 ** 28:
        raise InputError("the top-k skip-trigram share needs d_vocab^3 <= 2^28 (a word-level toy model); this model "
                         f"has d_vocab={cfg.d_vocab}.")
    state = weight_state(model)
    memo = _KEPT.get(model)
    if memo is None or memo.get("state") != state:
        memo = {"state": state}
        _KEPT[model] = memo
    key = (h, min(k, cfg.d_vocab ** 3))
    if key not in memo:
        _, src, dst, out = top_triples(model, (0, h), key[1], list(range(cfg.d_vocab)), max_memory)
        keep = torch.zeros(cfg.d_vocab, cfg.d_vocab, cfg.d_vocab_out, dtype=torch.bool)
        keep[src, dst, out] = True
        memo[key] = keep
    return memo[key]


def path_expansion(
    model: ModelLike,
    prompt: Prompts,
    k: int = 1000,
    max_memory: int = DEFAULT_MAX_MEMORY,
) -> PathExpansion:
    """Split a one-layer attention-only model's logits on ``prompt`` into the direct path, one term per head and
    the biases, with the attention patterns and norm scales frozen at their values on the prompt (module
    docstring); and the share of the logits the top-``k`` skip-trigrams of each head explain.

    Args:
        model: a one-layer attention-only HookedTransformer (e.g. ``zoo/attn-only-1l``).
        prompt: one prompt (text or token ids).
        k: skip-trigrams kept per head (:func:`skip_trigrams` over the whole vocabulary).
        max_memory: bytes for one block of skip-trigram scores.
    """
    model = as_model(model)
    _check_one_layer(model)
    k = check_count(k, "k")
    max_memory = check_max_memory(max_memory)
    toks = to_tokens(model, prompt)
    if toks.shape[0] != 1:
        raise InputError(f"prompt: give one prompt; got {toks.shape[0]}. The expansion is of one prompt's logits.")
    cfg = model.cfg
    dtype = torch.float64 if cfg.dtype == torch.float64 else torch.float32
    block = model.blocks[0]
    with torch.no_grad():
        logits, cache = model.run_with_cache(toks, names_filter=lambda n: n in {
            "hook_embed", "hook_pos_embed", "blocks.0.hook_resid_pre", "blocks.0.attn.hook_pattern",
            "blocks.0.hook_resid_post"})
        check_finite(model, toks, "the logits", logits)
        t = toks[0]
        pattern = cache["blocks.0.attn.hook_pattern"][0].to(dtype)  # [head, dst, src]
        resid_pre = cache["blocks.0.hook_resid_pre"][0].to(dtype)  # what the values read (no W_pos if shortformer)
        resid_post = cache["blocks.0.hook_resid_post"][0].to(dtype)
        s1 = _scale(block.ln1, resid_pre, _norm_kind(model, block.ln1)) if _norm_kind(model, block.ln1) != "none" \
            else torch.ones(len(t), 1, dtype=dtype)
        fkind = _norm_kind(model, getattr(model, "ln_final", None))
        sf = _scale(model.ln_final, resid_post, fkind) if fkind != "none" else torch.ones(len(t), 1, dtype=dtype)
        W_U = model.W_U.detach().to(dtype)
        Nf = output_map(model, dtype)

        def readout(x: Tensor) -> Tensor:  # residual vectors [pos, d_model] -> their logits, final scale frozen
            return ((x if Nf is None else x @ Nf) / sf) @ W_U

        standard = cfg.positional_embedding_type == "standard"
        E_rows = model.W_E.detach()[t].to(dtype)
        P_rows = model.W_pos.detach()[:len(t)].to(dtype) if standard else None
        direct = readout(E_rows + P_rows if standard else E_rows)
        head_terms, token_parts = [], []
        const_resid = block.attn.b_O.detach().to(dtype).clone()
        b1 = getattr(block.ln1, "b", None) if block.ln1 is not None else None
        for h in range(cfg.n_heads):
            L, R = ov_maps(model, (0, h), dtype)  # OV rows before W_U: x @ L @ R (then the final norm's map)
            R_raw = model.blocks[0].attn.W_O[h].detach().to(dtype)  # the head's output before the final norm map
            A = pattern[h] / s1[:, 0][None, :]  # [dst, src] attention over the source's ln1 scale
            tok = A @ ((E_rows @ L) @ R_raw)
            part = A @ ((P_rows @ L) @ R_raw) if standard else torch.zeros_like(tok)
            token_parts.append(readout(tok))
            head_terms.append(readout(tok + part))
            W_V = block.attn.W_V[h].detach().to(dtype)
            bias_v = block.attn.b_V[h].detach().to(dtype)
            if isinstance(b1, Tensor):
                bias_v = bias_v + b1.detach().to(dtype) @ W_V
            const_resid = const_resid + bias_v @ R_raw  # sum_src A = 1: the value bias passes whole
        bias = readout(const_resid.expand(len(t), -1))
        bf = getattr(model.ln_final, "b", None) if fkind != "none" else None
        if isinstance(bf, Tensor):
            bias = bias + bf.detach().to(dtype) @ W_U
        bias = bias + model.b_U.detach().to(dtype)
        terms = torch.stack([direct, *head_terms, bias])
        total = terms.sum(0)
        L_model = logits[0].to(dtype)
        max_error = float((total - L_model).abs().max())

        # the top-k skip-trigrams' share: keep OV entries (token(src), C) whose (token(src), token(dst), C) is top-k
        kept = torch.zeros_like(direct)
        for h in range(cfg.n_heads):
            keep = _kept_triples(model, h, k, max_memory)
            L_, _ = ov_maps(model, (0, h), dtype)
            R_raw = model.blocks[0].attn.W_O[h].detach().to(dtype)
            ov_rows = (E_rows @ L_) @ R_raw  # [src, d_model]
            ov_logits = (ov_rows if Nf is None else ov_rows @ Nf) @ W_U  # [src, vocab], no final scale yet
            mask = keep[t][:, t, :].permute(1, 0, 2)  # [dst, src, out]: (token(src), token(dst), out) kept
            A = pattern[h] / s1[:, 0][None, :]
            kept = kept + torch.einsum("ds,dso->do", A, ov_logits[None] * mask) / sf
    centred = L_model - L_model.mean(-1, keepdim=True)
    denom = float(centred.pow(2).sum())

    def share(approx: Tensor) -> float:
        a = approx - approx.mean(-1, keepdim=True)
        return 1.0 - float((centred - a).pow(2).sum()) / denom if denom > 0 else float("nan")

    names = ["bias", "direct", f"direct + top-{k} skip-trigrams", "all paths"]
    shares = [share(bias), share(bias + direct), share(bias + direct + kept), share(total)]
    term_names = ["direct", *[head_label((0, h)) for h in range(cfg.n_heads)], "bias"]
    vocab = token_strings(model, torch.arange(cfg.d_vocab_out))
    pos = position_labels(model, toks)
    common = dict(model=model_name(model), task=f"prompt of {len(t)} tokens")
    return PathExpansion(
        terms=Result(terms.cpu(), ("term", "pos", "vocab"), labels={"term": term_names, "pos": pos, "vocab": vocab},
                     title="Path expansion (patterns frozen)", metric="logit contribution", **common),
        logits=Result(L_model.cpu(), ("pos", "vocab"), labels={"pos": pos, "vocab": vocab}, title="Model logits",
                      metric="logit", **common),
        max_error=max_error,
        explained=Result(torch.tensor(shares, dtype=torch.float64), ("approximation",),
                         labels={"approximation": names}, title="Share of the centred logits explained",
                         metric="1 - |L - A|^2 / |L|^2 (centred over the vocabulary)", meta={"k": k}, **common),
        k=k, model=model_name(model))

