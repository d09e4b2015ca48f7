"""Induction heads: find them by their attention, link them by their weights, prove them by ablation.

An *induction head* completes patterns ``[A][B] ... [A] -> [B]``: at the second ``A`` it attends to the token
that followed the earlier ``A`` and copies it. It needs a helper, a *previous-token head* in an earlier layer,
which writes "the token before me was A" into each position; the induction head's keys read that
(K-composition). Olsson et al. (2022), "In-context learning and induction heads"; Elhage et al. (2021),
"A mathematical framework for transformer circuits".

This module finds that circuit on any ``HookedTransformer``, in three kinds of evidence:

- **attention** (:func:`head_scores`): on repeated random sequences ``[BOS] r_1..r_n r_1..r_n``, how much each
  head attends where an induction / previous-token / duplicate-token head would;
- **weights** (:func:`composition_scores`): how strongly one head's output is read by a later head's queries,
  keys or values;
- **causation** (:func:`ablation_effect`): how much the loss on the repeated half rises when heads are removed.

:func:`find_induction_circuit` runs all three and returns an :class:`InductionCircuit` that prints as a table
and renders to HTML.

    import circuitlab as cl
    circuit = cl.induction.find_induction_circuit("zoo/attn-only-2l")
    print(circuit)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence, Union

import einops
import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.utilities import get_act_name

from circuitlab.core import (DEFAULT_MAX_MEMORY, Head, ModelLike, as_model, check_count, check_finite, check_heads,
                             check_max_memory, check_seed, final_residual, head_label, model_name, progress_bar,
                             readout, row_bytes, row_chunks, shorten, str_tokens, to_tokens)
from circuitlab.errors import InputError
from circuitlab.results import Bundle, Result
from circuitlab.tasks.repeated import DEFAULT_N_SEQS, RepeatedTokens, bos_token_id, repeated_sequences, special_ids

__all__ = [
    "KINDS",
    "head_scores",
    "composition_scores",
    "ablation_effect",
    "find_induction_circuit",
    "AblationResult",
    "InductionCircuit",
    "repeated_sequences",
    "bos_token_id",
    "heads_above",
]

#: the head types :func:`head_scores` measures
KINDS = ("induction", "previous_token", "duplicate_token")

# ----------------------------------------------------------------------------------------------------------
# Inputs: the repeated sequences come from circuitlab.tasks.repeated; user tokens and their special positions
# ----------------------------------------------------------------------------------------------------------


def _user_tokens(model: HookedTransformer, tokens: Any) -> tuple[Tensor, Tensor]:
    """User tokens (ids or text) as ``[batch, pos]`` plus a mask of their special positions."""
    toks = to_tokens(model, tokens)
    special = torch.zeros_like(toks, dtype=torch.bool)
    for i in special_ids(model):
        special |= toks == i
    return toks, special


# ----------------------------------------------------------------------------------------------------------
# Head-type scores from attention
# ----------------------------------------------------------------------------------------------------------


def target_mask(
    tokens: Int[Tensor, "batch pos"], kind: str, special: Bool[Tensor, "batch pos"] | None = None
) -> Bool[Tensor, "batch query key"]:
    """Where a head of type ``kind`` should attend: ``mask[b, i, k]`` is True when key ``k`` is a target of query ``i``.

    Defined from token equality, so it applies to any sequence (for ``r_1..r_n r_1..r_n`` with distinct
    ``r``'s it picks exactly the textbook diagonals):

    - ``"previous_token"``: the target of ``i`` is ``i - 1``;
    - ``"duplicate_token"``: every earlier ``j < i`` with ``tokens[j] == tokens[i]``;
    - ``"induction"``: ``j + 1`` for every earlier ``j < i`` with ``tokens[j] == tokens[i]``, the token that
      followed an earlier occurrence of the current one.

    Special positions (``special``, e.g. BOS) are neither queries nor targets (nor the ``j`` of a match).
    """
    _check_kind(kind)
    n = tokens.shape[1]
    if special is None:
        special = torch.zeros_like(tokens, dtype=torch.bool)
    ordinary = ~special
    pair_ok = ordinary[:, :, None] & ordinary[:, None, :]  # [b, q, k]
    earlier = torch.ones(n, n, dtype=torch.bool, device=tokens.device).tril(-1)  # k < q
    if kind == "previous_token":
        prev = torch.zeros(n, n, dtype=torch.bool, device=tokens.device)
        prev[1:, :-1] = torch.eye(n - 1, dtype=torch.bool, device=tokens.device)
        return prev[None] & pair_ok
    same = (tokens[:, :, None] == tokens[:, None, :]) & earlier & pair_ok  # same[b, i, j]: j < i, equal tokens
    if kind == "duplicate_token":
        return same
    # induction: shift the matching key j one step right to j + 1 (still <= i, so causal)
    induction = torch.zeros_like(same)
    induction[:, :, 1:] = same[:, :, :-1]
    return induction & ordinary[:, None, :]


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise InputError(f"unknown head kind {shorten(kind)}; choose one of {', '.join(repr(k) for k in KINDS)}.")


def _attention_on_targets(
    model: HookedTransformer, tokens: Tensor, special: Tensor, kinds: Sequence[str], max_memory: int
) -> tuple[dict[str, Float[Tensor, "n_layers n_heads"]], dict[str, int]]:
    """Every head's attention on its targets (:func:`target_mask`), averaged over the queries that have one.

    Returns the scores and, per kind, how many queries were scored. The sequences run in batches that fit
    ``max_memory`` (activations and target masks); patterns are reduced inside the hooks and never stored, and
    each pass stops before the unembedding.
    """
    cfg = model.cfg
    sums = {k: torch.zeros(cfg.n_layers, cfg.n_heads, dtype=torch.float64) for k in kinds}
    n_queries = dict.fromkeys(kinds, 0)
    seq_len = tokens.shape[1]
    per_row = row_bytes(model, seq_len) + len(kinds) * 5 * seq_len * seq_len  # + a bool and a float mask per kind
    for rows in row_chunks(tokens.shape[0], per_row, max_memory):
        toks = tokens[rows]
        weights = {k: target_mask(toks, k, special[rows]).to(torch.float32) for k in kinds}

        def reduce(pattern: Float[Tensor, "batch head query key"], hook) -> None:
            layer = hook.layer()
            p = pattern.detach().to(torch.float32)
            for k, w in weights.items():
                sums[k][layer] += einops.einsum(p, w, "b h q k, b q k -> h").double().cpu()

        hooks = [(get_act_name("pattern", layer), reduce) for layer in range(cfg.n_layers)]
        with torch.inference_mode():
            model.run_with_hooks(toks, fwd_hooks=hooks, stop_at_layer=cfg.n_layers)
        for k, w in weights.items():
            n_queries[k] += int(w.any(-1).sum())
    return {k: (sums[k] / max(n_queries[k], 1)).float() for k in kinds}, n_queries


_METRICS = {
    "induction": "mean attention from each query to the token(s) after earlier occurrences of its token",
    "previous_token": "mean attention from each query to the position just before it",
    "duplicate_token": "mean attention from each query to earlier occurrences of its token",
}
_TITLES = {"induction": "Induction score", "previous_token": "Previous-token score",
           "duplicate_token": "Duplicate-token score"}


def _scores_result(model: HookedTransformer, kind: str, values: Tensor, task: str, meta: dict) -> Result:
    return Result(values=values, axes=("layer", "head"), title=_TITLES[kind], metric=_METRICS[kind],
                  model=model_name(model), task=task, meta={"kind": kind, **meta})


def _all_head_scores(
    model: HookedTransformer, kinds: Sequence[str], seq_len: int | None, n_seqs: int, seed: int, tokens: Any,
    max_memory: int = DEFAULT_MAX_MEMORY,
) -> tuple[dict[str, Result], Tensor]:
    """Scores of several kinds from the same forward passes; also returns the tokens used."""
    max_memory = check_max_memory(max_memory)
    for k in kinds:
        _check_kind(k)
    if seq_len is not None:  # checked even where given tokens make it unused: a bad value is a mistake anyway
        check_count(seq_len, "seq_len (the length of each repeated half)", minimum=2)
    check_count(n_seqs, "n_seqs")
    if tokens is None:
        rep = repeated_sequences(model, seq_len, n_seqs, seed)
        toks = rep.tokens
        special = torch.zeros_like(toks, dtype=torch.bool)
        special[:, : rep.prefix] = True
        task = f"{n_seqs} repeated random sequences of 2x{rep.seq_len} tokens (seed {seed})"
        meta: dict[str, Any] = {"seq_len": rep.seq_len, "n_seqs": n_seqs, "seed": seed,
                                "bos_token_id": bos_token_id(model)}
    else:
        toks, special = _user_tokens(model, tokens)
        task = f"{toks.shape[0]} given sequence(s) of {toks.shape[1]} tokens"
        meta = {"given_tokens": True}
    values, n_queries = _attention_on_targets(model, toks, special, kinds, max_memory)
    check_finite(model, toks, "the head scores", *values.values())
    out = {}
    for k in kinds:
        n_q = n_queries[k]
        if n_q == 0:
            raise InputError(
                f"no position of the given tokens has a {k.replace('_', '-')} target (e.g. no token occurs "
                "twice), so the score is undefined. Pass sequences with repeats, or omit tokens to use "
                "generated repeated sequences."
            )
        out[k] = _scores_result(model, k, values[k], task, {**meta, "n_queries": n_q})
    return out, toks


def head_scores(
    model: ModelLike,
    kind: str = "induction",
    seq_len: int | None = None,
    n_seqs: int = DEFAULT_N_SEQS,
    seed: int = 0,
    tokens: Union[Int[Tensor, "batch pos"], Sequence, str, None] = None,
    max_memory: int = DEFAULT_MAX_MEMORY,
) -> Result:
    """How much each head behaves like an induction / previous-token / duplicate-token head.

    By default the model reads ``n_seqs`` seeded sequences ``[BOS] r_1..r_n r_1..r_n`` (``n = seq_len``; random
    ordinary tokens, BOS by the model's convention, see :func:`bos_token_id`). For each head the score is its
    **attention on the target positions, summed over a query's targets and averaged over all queries that have
    one** (see :func:`target_mask`): induction targets the token after an earlier occurrence of the query's
    token, previous-token targets ``i - 1``, duplicate-token targets earlier occurrences. So a score lies in
    [0, 1]: 1 is a head that attends only to its targets, and a head spreading attention evenly over ``t``
    earlier positions scores about ``1/t`` (~0.03 on 2x21 tokens).

    Args:
        model: a ``HookedTransformer`` or a name for :func:`circuitlab.load_model`.
        kind: ``"induction"``, ``"previous_token"`` or ``"duplicate_token"``.
        seq_len: length of each repeated half (default 50, or a third of ``n_ctx``; see :func:`repeated_sequences`).
        n_seqs: number of sequences.
        seed: seed of the random tokens.
        tokens: your own token ids ``[batch, pos]`` (or text) instead of generated sequences; targets then come
            from token equality, and positions holding the tokenizer's special ids are skipped.
        max_memory: rough bound in bytes on one forward pass's activations; the sequences run in batches that
            fit it, so memory does not grow with ``n_seqs``.

    Returns:
        a :class:`~circuitlab.results.Result` of shape ``[n_layers, n_heads]`` (axes ``("layer", "head")``).
    """
    seed = check_seed(seed)
    model = as_model(model)
    scores, _ = _all_head_scores(model, [kind], seq_len, n_seqs, seed, tokens, max_memory)
    return scores[kind]


# ----------------------------------------------------------------------------------------------------------
# Composition scores from weights
# ----------------------------------------------------------------------------------------------------------


def _r_factor(x: Float[Tensor, "... m d"]) -> Float[Tensor, "... r d"]:
    """``R`` of the thin QR decomposition ``x = Q R``: same Gram matrix as ``x``, so ``|x y|_F = |R y|_F``."""
    return torch.linalg.qr(x, mode="r").R


def composition_scores(model: ModelLike, kind: str = "K") -> Result:
    """Q-, K- or V-composition between every pair of heads (Elhage et al. 2021), from the weights alone.

    A head in layer ``l1`` writes ``x @ W_OV`` (with ``W_OV = W_V W_O``, ``d_model x d_model``) into the
    residual stream; a later head reads it through its queries (``W_QK = W_Q W_K^T``), keys (``W_QK^T``) or
    values (``W_OV``). The composition score of writer ``(l1, h1)`` and reader ``(l2, h2)`` is

        |W_OV^(l1,h1) @ W_read^(l2,h2)|_F / (|W_OV^(l1,h1)|_F |W_read^(l2,h2)|_F),

    with ``W_read = W_QK`` (Q), ``W_QK^T`` (K) or ``W_OV`` (V): how much of the reader's input subspace the
    writer's output fills, 0 for orthogonal, at most 1. Pairs with ``l1 >= l2`` cannot compose and are 0.
    Weights are used as they are (fold LayerNorm first if you want it folded); this equals TransformerLens's
    ``model.all_composition_scores(kind)``.

    Computed without forming ``d_model x d_model`` products: each product is ``A1 B1 A2 B2`` with thin factors
    (``d_model x d_head`` and ``d_head x d_model``); ``|A1 (B1 A2) B2|_F = |R1 (B1 A2) R2^T|_F`` where
    ``R1``, ``R2`` are the QR ``R`` factors of ``A1`` and ``B2^T``, so everything is ``d_head``-sized (float64).

    Returns:
        a :class:`~circuitlab.results.Result` of shape ``[n_layers, n_heads, n_layers, n_heads]``, axes
        ``("layer", "head", "reader_layer", "reader_head")`` (writer first).
    """
    model = as_model(model)
    if kind not in ("Q", "K", "V"):
        raise InputError(f"unknown composition kind {shorten(kind)}; choose 'Q', 'K' or 'V'.")
    cfg = model.cfg
    with torch.no_grad():
        W_Q, W_K, W_V, W_O = (w.detach().to(torch.float64).cpu() for w in (model.W_Q, model.W_K, model.W_V, model.W_O))
    if W_K.shape[1] != cfg.n_heads:  # a bridge keeps grouped-query key/value heads grouped; ungroup them
        W_K, W_V = (w.repeat_interleave(cfg.n_heads // w.shape[1], dim=1) for w in (W_K, W_V))
    # writer: W_OV = A1 B1 with A1 = W_V [d_model, d_head], B1 = W_O [d_head, d_model]
    # reader: A2 B2 with A2 [d_model, d_head], B2 [d_head, d_model]; we keep A2 and B2^T (both [d_model, d_head])
    A2, B2t = {"Q": (W_Q, W_K), "K": (W_K, W_Q), "V": (W_V, W_O.transpose(-1, -2))}[kind]
    R1 = _r_factor(W_V)  # [L, H, r, d_head]
    R2 = _r_factor(B2t)  # [L, H, r, d_head]
    writer_norm = torch.linalg.matrix_norm(R1 @ W_O)  # |W_V W_O|_F, [L, H]
    reader_norm = torch.linalg.matrix_norm(A2 @ R2.transpose(-1, -2))  # |A2 B2|_F, [L, H]

    L, H = cfg.n_layers, cfg.n_heads
    scores = torch.zeros(L, H, L, H, dtype=torch.float64)
    for l2 in range(1, L):  # readers; writers are the earlier layers 0..l2-1
        middle = einops.einsum(W_O[:l2], A2[l2], "l1 h1 d1 m, h2 m d2 -> l1 h1 h2 d1 d2")
        core = R1[:l2, :, None] @ middle @ R2[l2][None, None].transpose(-1, -2)
        norms = torch.linalg.matrix_norm(core)  # [l1, h1, h2]
        scores[:l2, :, l2, :] = norms / writer_norm[:l2, :, None] / reader_norm[l2][None, None, :]
    labels = {"layer": [f"L{i}" for i in range(L)], "head": [f"H{i}" for i in range(H)],
              "reader_layer": [f"L{i}" for i in range(L)], "reader_head": [f"H{i}" for i in range(H)]}
    return Result(values=scores.to(cfg.dtype), axes=("layer", "head", "reader_layer", "reader_head"), labels=labels,
                  title=f"{kind}-composition score", model=model_name(model), task="weights",
                  metric=f"|W_OV(writer) W_{'OV' if kind == 'V' else 'QK'}(reader)|_F / product of norms",
                  meta={"kind": kind})


# ----------------------------------------------------------------------------------------------------------
# Ablation: the in-context loss with heads removed
# ----------------------------------------------------------------------------------------------------------


class AblationResult(Result):
    """In-context loss with heads ablated: ``values[0]`` is the unablated model, then each head, then the set.

    Axis ``"ablated"`` labels each entry (``"none"``, ``"L1H2"``, ..., ``"L1H2+L1H3"``).
    """

    @property
    def baseline(self) -> float:
        """The unablated in-context loss."""
        return float(self.values[0])

    @property
    def increase(self) -> Float[Tensor, " ablated"]:
        """Loss with each ablation minus the unablated loss (0 for ``"none"``)."""
        return self.values - self.values[0]

    def loss_of(self, label: str) -> float:
        return float(self.values[self.labels["ablated"].index(label)])


def ablation_effect(
    model: ModelLike,
    heads: Iterable,
    method: str = "zero",
    seq_len: int | None = None,
    n_seqs: int = DEFAULT_N_SEQS,
    seed: int = 0,
    tokens: RepeatedTokens | None = None,
    progress: bool = False,
    max_memory: int = DEFAULT_MAX_MEMORY,
) -> AblationResult:
    """The in-context loss with ``heads`` ablated, one at a time and all together, versus unablated.

    *In-context loss*: the mean next-token cross-entropy, on ``[BOS] r_1..r_n r_1..r_n`` sequences, of the
    predictions of ``r_2..r_n`` in the second copy (predicting ``r_1`` again needs no context and cannot be
    inferred from it). A model that copies in context drives it far below chance ``ln(d_vocab)``; removing its
    induction heads sends it back up.

    Ablation replaces a head's output ``z`` (``blocks.{l}.attn.hook_z``, the attention-weighted values before
    ``W_O``) at every position of every sequence:

    - ``"zero"``: by zeros, so the head adds nothing (its layer's ``b_O`` is shared and kept);
    - ``"mean"``: by its mean over all sequences and all positions (BOS included) of the same batch on the
      unablated model, one ``d_head`` vector per head; it keeps the head's average contribution and removes
      only what depends on the input.

    All variants run batched (one batch row per sequence and ablation), and only the scored positions are
    unembedded.

    Args:
        heads: ``(layer, head)`` pairs (or ``"L1H2"`` strings).
        method: ``"zero"`` or ``"mean"``.
        seq_len, n_seqs, seed: the generated sequences (see :func:`head_scores`).
        tokens: your own :class:`~circuitlab.tasks.RepeatedTokens` instead.
        progress: show a progress bar over batches.
        max_memory: rough bound in bytes on one forward pass's activations and logits: (variant, sequence) rows
            run in batches that fit it.

    Returns:
        an :class:`AblationResult`: loss for ``"none"``, each head, and (with several heads) all of them.
    """
    seed = check_seed(seed)
    model = as_model(model)
    cfg = model.cfg
    heads = check_heads(model, heads)
    max_memory = check_max_memory(max_memory)
    if method not in ("zero", "mean"):
        raise InputError(f"unknown ablation method {shorten(method)}; choose 'zero' or 'mean'.")
    rep = tokens if tokens is not None else repeated_sequences(model, seq_len, n_seqs, seed)
    if not isinstance(rep, RepeatedTokens):
        raise InputError("tokens must be a circuitlab.tasks.RepeatedTokens (e.g. from repeated_sequences()).")
    toks = rep.tokens.to(cfg.device)
    batch = toks.shape[0]

    variants: list[list[Head]] = [[]] + [[h] for h in heads] + ([list(heads)] if len(heads) > 1 else [])
    labels = ["none"] + ["+".join(head_label(h) for h in v) for v in variants[1:]]
    layers = sorted({layer for layer, _ in heads})
    # keep[layer][v, h]: does variant v ablate head h of this layer
    ablate = {layer: torch.zeros(len(variants), cfg.n_heads, dtype=torch.bool) for layer in layers}
    for v, hs in enumerate(variants):
        for layer, h in hs:
            ablate[layer][v, h] = True

    replacement: dict[int, Tensor] = {}
    if method == "mean":  # summed over batches of sequences that fit max_memory, then divided
        names = [get_act_name("z", layer) for layer in layers]
        sums = {layer: torch.zeros(cfg.n_heads, cfg.d_head, dtype=torch.float64, device=cfg.device)
                for layer in layers}
        for rows in row_chunks(batch, row_bytes(model, toks.shape[1]), max_memory):
            with torch.inference_mode():
                _, cache = model.run_with_cache(toks[rows], names_filter=lambda n: n in names,
                                                stop_at_layer=max(layers) + 1)
            for layer in layers:
                sums[layer] += einops.reduce(cache[get_act_name("z", layer)].double(), "b p h d -> h d", "sum")
        for layer in layers:  # [n_heads, d_head]
            replacement[layer] = (sums[layer] / (batch * toks.shape[1])).to(cfg.dtype)

    # predictions of r_2..r_n in copy 2 are made at positions p+n .. p+2n-2 and read tokens p+n+1 .. p+2n-1
    start = rep.prefix + rep.seq_len
    pred_pos = slice(start, start + rep.seq_len - 1)
    targets = toks[:, start + 1 : start + rep.seq_len]

    # rows of (variant, sequence), in batches whose activations and scored logits fit max_memory
    per_row = row_bytes(model, toks.shape[1]) + 3 * 4 * (rep.seq_len - 1) * cfg.d_vocab_out  # logits, log-softmax
    rows_per_chunk = max(1, min(len(variants) * batch, max_memory // per_row))
    all_rows = [(v, b) for v in range(len(variants)) for b in range(batch)]
    losses = torch.zeros(len(variants), dtype=torch.float64)
    chunks = range(0, len(all_rows), rows_per_chunk)
    for lo in progress_bar(chunks, progress=progress, desc="ablations"):
        rows = all_rows[lo : lo + rows_per_chunk]
        v_idx = torch.tensor([v for v, _ in rows])
        b_idx = torch.tensor([b for _, b in rows])

        def ablate_hook(z: Float[Tensor, "batch pos head d_head"], hook) -> Tensor:
            mask = ablate[hook.layer()][v_idx].to(z.device)[:, None, :, None]  # [rows, 1, head, 1]
            fill = replacement[hook.layer()][None, None] if method == "mean" else torch.zeros((), dtype=z.dtype)
            return torch.where(mask, fill.to(z.device, z.dtype), z)

        hooks = [(get_act_name("z", layer), ablate_hook) for layer in layers]
        with torch.inference_mode():
            resid, _ = final_residual(model, toks[b_idx.to(toks.device)], fwd_hooks=hooks)
            logp = readout(model, resid[:, pred_pos]).log_softmax(-1)
            nll = -logp.gather(-1, targets[b_idx.to(toks.device)][..., None])[..., 0]  # [rows, n-1]
        losses.index_add_(0, v_idx, nll.double().mean(-1).cpu())
    losses /= batch
    check_finite(model, toks, "the in-context losses", losses)
    return AblationResult(
        values=losses.float(), axes=("ablated",), labels={"ablated": labels},
        title=f"In-context loss with {', '.join(head_label(h) for h in heads)} {method}-ablated",
        metric="mean cross-entropy predicting r_2..r_n of the repeated half (nats)", model=model_name(model),
        task=f"{batch} repeated random sequences of 2x{rep.seq_len} tokens",
        meta={"method": method, "heads": heads, "seq_len": rep.seq_len, "n_seqs": batch, "seed": seed,
              "chance_loss": math.log(cfg.d_vocab_out)},
    )


# ----------------------------------------------------------------------------------------------------------
# The whole circuit
# ----------------------------------------------------------------------------------------------------------


def heads_above(scores: Result, threshold: float, relative: float) -> list[Head]:
    """Heads scoring at least ``max(threshold, relative * best score)``, best first: how :func:`find_induction_circuit`
    picks induction and previous-token heads from a ``[layer, head]`` score :class:`~circuitlab.results.Result`."""
    v = scores.values.float()
    cut = max(threshold, relative * float(v.max()))
    found = [(int(i), int(j)) for i, j in (v >= cut).nonzero().tolist()]
    return sorted(found, key=lambda h: -float(v[h]))


@dataclass(repr=False)
class InductionCircuit(Bundle):
    """Previous-token heads, induction heads, the K-composition between them, and the ablation evidence.

    Attributes:
        model: the model's name.
        induction_scores, previous_token_scores, duplicate_token_scores: ``[n_layers, n_heads]`` results.
        induction_heads: heads whose induction score clears the threshold, best first.
        previous_token_heads: heads whose previous-token score clears the threshold (in a layer below some
            induction head, where they can compose), best first.
        k_composition: K-composition ``[writer, induction head]`` (weights only); the writers are the
            previous-token heads, or every head below the induction heads where none was found.
        k_composition_all: full ``[n_layers, n_heads, n_layers, n_heads]`` K-composition scores.
        ablation: in-context loss with the induction heads ablated (each and together).
        previous_token_ablation: the same for the previous-token heads (``None`` if there are none).
        control_ablation: the same for the lowest-scoring head of the induction heads' layers, a control.
        thresholds: the cut-offs used.
        pattern_heads, patterns: the top heads, and their attention on one repeated sequence
            (``[head, dest_pos, src_pos]``, labelled by head and token).
    """

    model: str
    induction_scores: Result
    previous_token_scores: Result
    duplicate_token_scores: Result
    induction_heads: list[Head]
    previous_token_heads: list[Head]
    k_composition: Result | None
    k_composition_all: Result
    ablation: AblationResult | None
    previous_token_ablation: AblationResult | None
    control_ablation: AblationResult | None
    thresholds: dict[str, float]
    pattern_heads: list[Head] = field(default_factory=list)
    patterns: Result | None = None

    # -- reading ---------------------------------------------------------------------------------------
    def strongest_k_writer(self, head: Head, layers: Iterable[int] | None = None) -> tuple[Head, float]:
        """The earlier head whose output ``head``'s keys read most (highest K-composition), and its score."""
        kc = self.k_composition_all.values[..., head[0], head[1]]  # [n_layers, n_heads]
        if layers is not None:
            keep = torch.zeros(kc.shape[0], dtype=torch.bool)
            keep[list(layers)] = True
            kc = torch.where(keep[:, None], kc, torch.zeros_like(kc))
        i = int(kc.argmax())
        return (i // kc.shape[1], i % kc.shape[1]), float(kc.flatten()[i])

    def rows(self) -> list[dict[str, Any]]:
        """One row per head of the circuit: role, scores, strongest K-writer, ablation effect."""
        out = []
        ind, prev = self.induction_scores.values, self.previous_token_scores.values
        for role, heads, abl in (("previous-token", self.previous_token_heads, self.previous_token_ablation),
                                 ("induction", self.induction_heads, self.ablation)):
            for h in heads:
                row: dict[str, Any] = {"head": head_label(h), "role": role, "induction": float(ind[h]),
                                       "previous_token": float(prev[h])}
                if role == "induction" and h[0] > 0:
                    w, s = self.strongest_k_writer(h)
                    row["k_writer"], row["k_comp"] = head_label(w), s
                if abl is not None:
                    row["ablated_loss"] = abl.loss_of(head_label(h))
                out.append(row)
        return out

    def summary(self) -> str:
        """A plain-text table of the circuit."""
        lines = [f"Induction circuit of {self.model or 'the model'}"]
        t = self.thresholds
        lines.append(f"  thresholds: score >= max({t['absolute']:g}, {t['relative']:g} x best)"
                     f" -> induction {t['induction']:.3f}, previous-token {t['previous_token']:.3f}")
        rows = self.rows()
        if self.induction_heads and not self.previous_token_heads:
            lines.append(f"  no previous-token head clears {t['previous_token']:.3f} below the induction heads' layers")
        if not rows:
            lines.append("  no previous-token or induction heads found")
        else:
            lines.append(f"  {'head':<7}{'role':<16}{'induct':>8}{'prev':>8}  {'K-writer':<10}{'K-comp':>7}"
                         f"{'ablated loss':>14}")
            for r in rows:
                kw = f"{r['k_writer']:<10}{r['k_comp']:>7.3f}" if "k_writer" in r else f"{'':<10}{'':>7}"
                al = f"{r['ablated_loss']:>14.3f}" if "ablated_loss" in r else ""
                lines.append(f"  {r['head']:<7}{r['role']:<16}{r['induction']:>8.3f}{r['previous_token']:>8.3f}  "
                             f"{kw}{al}")
        top_ind = self.induction_scores.top(3)
        lines.append("  top induction scores: " + ", ".join(f"{head_label(i)} {v:.3f}" for i, v in top_ind))
        top_prev = self.previous_token_scores.top(3)
        lines.append("  top previous-token scores: " + ", ".join(f"{head_label(i)} {v:.3f}" for i, v in top_prev))
        for name, abl in (("induction heads", self.ablation), ("previous-token heads", self.previous_token_ablation),
                          ("control head", self.control_ablation)):
            if abl is None:
                continue
            last = abl.labels["ablated"][-1]
            lines.append(f"  in-context loss ({abl.meta['method']}-ablation), {name}: {abl.baseline:.3f} -> "
                         f"{float(abl.values[-1]):.3f} with {last} ablated (chance {abl.meta['chance_loss']:.3f})")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def find_induction_circuit(
    model: ModelLike,
    seq_len: int | None = None,
    n_seqs: int = DEFAULT_N_SEQS,
    seed: int = 0,
    threshold: float = 0.3,
    relative: float = 0.5,
    method: str = "mean",
    max_pattern_heads: int = 6,
    progress: bool = False,
    max_memory: int = DEFAULT_MAX_MEMORY,
) -> InductionCircuit:
    """Find the induction circuit of Olsson et al. (2022) in any model.

    1. Induction and previous-token scores on repeated random sequences (:func:`head_scores`).
    2. A head is an *induction head* when its induction score is at least ``max(threshold, relative * best)``:
       the absolute floor (0.3, about 10x what even attention earns on 2x21 tokens) keeps a model with no
       induction at all from reporting its least-bad head; the relative cut (half the best head) keeps only the
       heads that do the job nearly as well as the best one. *Previous-token heads* are chosen the same way
       from the previous-token scores, among layers below the deepest induction head (only those can feed
       an induction head's keys).
    3. The K-composition between them (:func:`composition_scores`): an induction head's keys should read the
       previous-token head's output.
    4. The in-context loss with the induction heads, the previous-token heads, and (as a control) the
       weakest head of the induction heads' layers ablated (:func:`ablation_effect`, ``method``).

    Returns:
        an :class:`InductionCircuit` (``print`` it for a table, ``.to_html()`` for a report section).
    """
    seed = check_seed(seed)
    model = as_model(model)
    scores, _ = _all_head_scores(model, ["induction", "previous_token", "duplicate_token"], seq_len, n_seqs, seed,
                                 None, max_memory)
    ind, prev = scores["induction"], scores["previous_token"]
    induction_heads = heads_above(ind, threshold, relative)
    top_layer = max((layer for layer, _ in induction_heads), default=0)
    prev_cut_scores = prev.values.clone()
    prev_cut_scores[top_layer:] = 0  # only layers that can compose into an induction head
    prev_masked = Result(prev_cut_scores, ("layer", "head"))
    previous_heads = heads_above(prev_masked, threshold, relative) if induction_heads else []
    cuts = {"absolute": threshold, "relative": relative,
            "induction": max(threshold, relative * float(ind.values.max())),
            "previous_token": max(threshold, relative * float(prev_cut_scores.max()))}

    kc_all = composition_scores(model, "K")
    k_sub = None
    if induction_heads and top_layer > 0:
        # the previous-token heads as writers; where none clears the threshold, every head below the induction heads
        writers = previous_heads or [(layer, h) for layer in range(top_layer) for h in range(model.cfg.n_heads)]
        vals = torch.stack([torch.stack([kc_all.values[w[0], w[1], i[0], i[1]] for i in induction_heads])
                            for w in writers])
        what = "previous-token heads" if previous_heads else "earlier heads (no previous-token head found)"
        k_sub = Result(vals, axes=("writer", "induction_head"),
                       labels={"writer": [head_label(h) for h in writers],
                               "induction_head": [head_label(h) for h in induction_heads]},
                       title=f"K-composition: {what} -> induction heads", metric=kc_all.metric,
                       model=model_name(model), task="weights")

    common = dict(method=method, seq_len=seq_len, n_seqs=n_seqs, seed=seed, progress=progress, max_memory=max_memory)
    ablation = ablation_effect(model, induction_heads, **common) if induction_heads else None
    prev_ablation = ablation_effect(model, previous_heads, **common) if previous_heads else None
    control = None
    if induction_heads:
        layer = induction_heads[0][0]
        h = int(ind.values[layer].argmin())
        if (layer, h) not in induction_heads:
            control = ablation_effect(model, [(layer, h)], **common)

    # attention patterns of the top heads on the first sequence, for the report
    helpers = (previous_heads or [h for h, _ in prev_masked.top(2)]) if top_layer > 0 else []
    shown = (induction_heads[: max_pattern_heads // 2] + helpers)[:max_pattern_heads]
    if not shown:
        shown = [i for i, _ in ind.top(min(2, ind.values.numel()))]
    rep = repeated_sequences(model, seq_len, 1, seed)
    names = sorted({get_act_name("pattern", layer) for layer, _ in shown})
    with torch.inference_mode():
        _, cache = model.run_with_cache(rep.tokens, names_filter=lambda n: n in names,
                                        stop_at_layer=max(layer for layer, _ in shown) + 1)
    tokens = str_tokens(model, rep.tokens[0])
    patterns = Result(torch.stack([cache[get_act_name("pattern", layer)][0, h] for layer, h in shown]).cpu(),
                      ("head", "dest_pos", "src_pos"),
                      {"head": [head_label(h) for h in shown], "dest_pos": tokens, "src_pos": tokens},
                      title="Attention patterns of the top heads on a repeated sequence", metric="attention",
                      model=model_name(model), task="one repeated random sequence")

    return InductionCircuit(
        model=model_name(model), induction_scores=ind, previous_token_scores=prev,
        duplicate_token_scores=scores["duplicate_token"], induction_heads=induction_heads,
        previous_token_heads=previous_heads, k_composition=k_sub, k_composition_all=kc_all, ablation=ablation,
        previous_token_ablation=prev_ablation, control_ablation=control, thresholds=cuts,
        pattern_heads=shown, patterns=patterns,
    )
