"""Direct logit attribution and the logit lens: which components write the answer into the residual stream.

The residual stream at the last layer is a sum. For a pre-norm transformer (GPT-2, Pythia, LLaMA...)

    resid_final = embed + pos_embed + sum_{layer, head} head_out + sum_layer b_O
                        + sum_{layer, neuron} m_neuron * W_out[neuron] + sum_layer b_out

(``pos_embed`` only where positions are *added* to the residual stream: not for rotary or shortformer
models), and the logits are ``norm(resid_final) @ W_U + b_U``. The final norm is the one non-linear step.
Freezing its scale at the value it actually took on this prompt makes it linear:

    LayerNorm:  norm(x) = (x - mean(x)) / scale * w + b
    RMSNorm:    norm(x) =  x            / scale * w

so every term ``c`` of the sum contributes ``center(c) / scale * w @ W_U[:, answer]`` to the answer's logit,
and the bias terms ``b @ W_U[:, answer] + b_U[answer]`` contribute a constant. The contributions of all terms
add up *exactly* to the logit the model produced (``by="component"`` checks this for you). That is **direct**
logit attribution: the effect of each component through the residual stream straight to the logits, not
through later layers (use activation patching for total effects).

Answers are single tokens (ids or strings); with ``wrong`` the metric is the logit difference
``logit(answer) - logit(wrong)``, which also cancels everything that raises all logits alike.

The logit lens (nostalgebraist 2020) reads the residual stream *before* the last layer as if it were final:
``unembed(norm(resid_l))`` shows what the model "would predict" after ``l`` layers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.utilities import get_act_name

from circuitlab.core import (DEFAULT_MAX_MEMORY, Answer, ModelLike, Prompts, answer_ids, as_model, check_count_within,
                             check_distinct_answers, check_finite, check_layer, check_max_memory, check_pos, final_norm,
                             final_norm_bias, final_norm_kind, final_norm_weight, final_residual, model_name,
                             output_norm, output_norm_scale_hook, position_labels, readout_directions, row_bytes,
                             row_chunks, shorten, through_output_norm, to_tokens, token_label)
from circuitlab.errors import CircuitlabError, InputError
from circuitlab.results import Bundle, Result, TopTokens, token_strings

__all__ = ["DLAResult", "LogitLens", "direct_logit_attribution", "logit_lens"]

By = Literal["head", "layer", "neuron", "position", "component"]
BY_CHOICES = ("head", "layer", "neuron", "position", "component")


# ---------------------------------------------------------------------------------------------------------
# Architecture check
# ---------------------------------------------------------------------------------------------------------

def check_decomposable(model: HookedTransformer) -> None:
    """Raise unless the residual stream of ``model`` is the plain sum that direct attribution assumes."""
    cfg = model.cfg
    why = None
    if getattr(cfg, "original_architecture", None) in _post_norm_architectures():
        why = f"it is a post-norm architecture ({cfg.original_architecture})"
    elif getattr(cfg, "num_experts", None):
        why = "its MLPs are mixtures of experts"
    elif getattr(cfg, "output_logits_soft_cap", -1.0) and cfg.output_logits_soft_cap > 0:
        why = "its logits pass through a soft cap (a non-linearity after the unembedding)"
    if why:
        raise CircuitlabError(
            f"direct logit attribution needs a pre-norm transformer whose residual stream is a plain sum of "
            f"component outputs, but model {shorten(cfg.model_name)} is not: {why}. Use activation patching "
            "(circuitlab.patching) for this model instead."
        )


def _post_norm_architectures() -> tuple[str, ...]:
    try:
        from transformer_lens.components.transformer_block import POST_NORM_ARCHITECTURES

        return tuple(POST_NORM_ARCHITECTURES)
    except ImportError:  # pragma: no cover - older transformer-lens
        return ()


# ---------------------------------------------------------------------------------------------------------
# Direct logit attribution
# ---------------------------------------------------------------------------------------------------------

@dataclass(repr=False)
class DLAResult(Result):
    """A direct-logit-attribution :class:`Result` (batch mean in ``values``) that keeps the per-prompt numbers.

    Attributes:
        per_prompt: ``[batch, *values.shape]``, the attribution on each prompt.
        model_logit: ``[batch]``, the logit (or logit difference) the model actually produced at ``pos``.
    """

    per_prompt: Optional[Float[Tensor, " batch *axes"]] = None
    model_logit: Optional[Float[Tensor, " batch"]] = None

    def for_prompt(self, i: int) -> Result:
        """The attribution on prompt ``i`` alone, as a plain :class:`Result`."""
        return Result(self.per_prompt[i], self.axes, self.labels, title=f"{self.title} (prompt {i})",
                      metric=self.metric, model=self.model, task=self.task, meta=dict(self.meta))


def direct_logit_attribution(
    model: ModelLike,
    tokens: Prompts,
    answer: Answer,
    wrong: Optional[Answer] = None,
    by: By = "head",
    pos: int = -1,
    layer: Optional[int] = None,
    max_memory: int = DEFAULT_MAX_MEMORY,
) -> DLAResult:
    """The direct effect of each component on the answer's logit (or on ``answer - wrong``) at ``pos``.

    The final norm's scale is frozen at the value it took on each prompt, which makes the attribution exact
    and additive (see the module docstring). Values are averaged over the batch; ``result.per_prompt`` keeps
    each prompt's.

    Args:
        model: a pre-norm HookedTransformer (LayerNorm, RMSNorm or none; any positional embedding; parallel or
            sequential attention and MLP; plain or gated MLPs; grouped-query attention).
        tokens: prompts as text or ids (``[batch, pos]``), all of the same length.
        answer: the correct next token: an id or a single-token string, one for all prompts or one per prompt.
        wrong: optional competing token(s); the metric becomes ``logit(answer) - logit(wrong)``.
        by: how to split the residual stream:
            - ``"head"``: each attention head's output (without the attention bias ``b_O``) -> ``[layer, head]``;
            - ``"layer"``: each layer's attention and MLP output, biases included -> ``[layer, sublayer]``;
            - ``"neuron"``: each MLP neuron's ``m_i * W_out[i]`` -> ``[neuron]`` for ``layer``, or
              ``[layer, neuron]`` for all layers when ``layer`` is None;
            - ``"position"``: each head's output split by the source position it read from (the attention
              pattern times the value vectors) -> ``[layer, head, pos]``; summing over ``pos`` gives ``"head"``;
            - ``"component"``: every additive term of the residual stream plus the final bias terms, so that
              the values sum to the model's logit (difference).
        pos: the position whose prediction is attributed (default: the last).
        layer: only for ``by="neuron"``.
        max_memory: rough bound in bytes on the activations held at once: prompts run in batches that fit it.

    Returns:
        a :class:`DLAResult`.
    """
    if by not in BY_CHOICES:
        raise InputError(f"by={shorten(by)} is not one of {BY_CHOICES}.")
    model = as_model(model)
    check_decomposable(model)
    cfg = model.cfg
    toks = to_tokens(model, tokens)
    batch, seq_len = toks.shape
    p = check_pos(pos, seq_len)
    ans = answer_ids(model, answer, batch)
    wrg = answer_ids(model, wrong, batch, what="wrong answer") if wrong is not None else None
    if wrg is not None:
        check_distinct_answers(ans, wrg, model)
    if by == "neuron":
        if cfg.attn_only:
            raise CircuitlabError(
                f"model {shorten(cfg.model_name)} is attention-only: it has no MLP neurons to attribute to. "
                "Use by='head', 'position', 'layer' or 'component'."
            )
        if layer is not None:
            layer = check_layer(model, layer)
    elif layer is not None:
        raise InputError(f"layer= is only used with by='neuron' (got by={shorten(by)}); leave it out.")

    # The unembedding direction of the metric, and the constant the final biases add to it.
    W_U, b_U = model.W_U.detach(), model.b_U.detach()
    direction = W_U[:, ans].T  # [batch, d_model]
    const = b_U[ans]
    if wrg is not None:
        direction = direction - W_U[:, wrg].T
        const = const - b_U[wrg]
    b_final = final_norm_bias(model)
    if b_final is not None:
        # the final norm's bias is added after normalising: it meets W_U directly (no weight, no scale)
        const = const + direction @ b_final

    # One forward pass per batch of prompts that fits max_memory, caching only the activations this split reads.
    # Causal attention: positions after `p` cannot affect it, so they are dropped; the unembedding is applied to
    # the answer columns only. Every prompt's attribution is its own, so the batches' rows are concatenated.
    run_toks = toks[:, : p + 1]
    needed = _needed_hooks(model, by)
    parts = []
    n = p + 1  # a prompt's forward pass plus the activations cached for the split, every layer
    cached = 4 * n * cfg.n_layers * ((cfg.d_mlp or 0) + cfg.n_heads * (cfg.d_head + n) + 2 * cfg.d_model)
    for rows in row_chunks(batch, row_bytes(model, n) + cached, check_max_memory(max_memory)):
        parts.append(_attribute_prompts(model, run_toks[rows], p, direction[rows], const[rows], ans[rows],
                                        None if wrg is None else wrg[rows], by, layer, needed))
    per_prompt = torch.cat([part[0] for part in parts])
    model_logit = torch.cat([part[1] for part in parts])
    axes, labels = parts[0][2], parts[0][3]
    return _make_result(model, toks, p, ans, wrg, by, layer, per_prompt, axes, labels, model_logit)


def _attribute_prompts(model, run_toks, p, direction, const, ans, wrg, by, layer, needed):
    """:func:`direct_logit_attribution` for one batch of prompts: per-prompt values, the model's own logit
    (difference), axis names and labels."""
    cfg = model.cfg
    W_U, b_U = model.W_U.detach(), model.b_U.detach()
    # one forward pass, caching only the activations this split reads
    with torch.no_grad():
        resid, cache = final_residual(model, run_toks, names=needed)
        resid = resid[:, p]  # the final residual stream at p, [batch, d_model]
        scale = None
        if cfg.normalization_type is not None:  # the model's own final norm; we keep the scale it computed
            grabbed = {}

            def grab(x: Tensor, hook) -> None:
                grabbed["scale"] = x[:, 0]

            with model.hooks(fwd_hooks=[("ln_final.hook_scale", grab)]):
                normed = model.ln_final(resid[:, None, :])[:, 0]
            scale = grabbed.get("scale")
        else:
            normed = resid
    model_logit = (normed * W_U[:, ans].T).sum(-1) + b_U[ans]
    if wrg is not None:
        model_logit = model_logit - (normed * W_U[:, wrg].T).sum(-1) - b_U[wrg]

    # Per-prompt readout direction with the frozen scale folded in: contribution(c) = c @ d_eff.
    d_eff = readout_directions(model, direction)
    if scale is not None:
        d_eff = d_eff / scale  # [batch, 1]

    per_prompt, axes, labels = _attribute(model, cache, run_toks, p, d_eff, const, by, layer)
    return per_prompt, model_logit.detach(), axes, labels


def _needed_hooks(model: HookedTransformer, by: str) -> set[str]:
    cfg = model.cfg
    names: set[str] = set()
    layers = range(cfg.n_layers)
    if by in ("head", "component"):
        names |= {get_act_name("z", l) for l in layers}
    if by == "layer":
        names |= {get_act_name("attn_out", l) for l in layers}
        if not cfg.attn_only:
            names |= {get_act_name("mlp_out", l) for l in layers}
    if by in ("neuron", "component") and not cfg.attn_only:
        names |= {get_act_name("post", l) for l in layers}
    if by == "position":
        names |= {get_act_name("pattern", l) for l in layers} | {get_act_name("v", l) for l in layers}
    if by == "component":
        names.add("hook_embed")
        if cfg.positional_embedding_type == "standard":
            names.add("hook_pos_embed")
    if by != "layer":  # heads and neurons reach the residual stream through a sandwich model's output norms
        for l in layers:
            for sub in ("attn",) if cfg.attn_only else ("attn", "mlp"):
                if output_norm(model, l, sub) is not None:
                    names.add(output_norm_scale_hook(l, sub))
    return names


def _attribute(model, cache, toks, p, d_eff, const, by, layer):
    """Per-prompt attributions ``[batch, ...]``, with axis names and labels."""
    cfg = model.cfg
    L, H = cfg.n_layers, cfg.n_heads
    layer_labels = [f"L{l}" for l in range(L)]

    def d_sub(l: int, sub: str) -> Float[Tensor, "batch d_model"]:
        # the readout direction seen by a sub-layer's raw output: d_eff itself, or for a sandwich-norm model
        # pulled back through the sub-layer's output norm with its scale frozen at this prompt's value
        if output_norm(model, l, sub) is None:
            return d_eff
        return through_output_norm(model, l, sub, d_eff, cache[output_norm_scale_hook(l, sub)][:, p])

    def heads(l: int) -> Float[Tensor, "batch head"]:
        # head_out = z @ W_O[head]; project on d_eff without forming the [batch, head, d_model] outputs
        W_O_d = einops.einsum(model.blocks[l].attn.W_O.detach(), d_sub(l, "attn"), "h e m, b m -> b h e")
        return einops.einsum(cache[get_act_name("z", l)][:, p], W_O_d, "b h e, b h e -> b h")

    def neurons(l: int) -> Float[Tensor, "batch neuron"]:
        W_out_d = einops.einsum(model.blocks[l].mlp.W_out.detach(), d_sub(l, "mlp"), "n m, b m -> b n")
        return cache[get_act_name("post", l)][:, p] * W_out_d

    def bias(vec: Optional[Tensor], l: int, sub: str) -> Float[Tensor, " batch"]:
        # a TransformerBridge of a model without biases has None where a HookedTransformer has zeros
        return d_eff.new_zeros(d_eff.shape[0]) if vec is None else d_sub(l, sub) @ vec.detach()

    if by == "head":
        values = torch.stack([heads(l) for l in range(L)], dim=1)
        return values, ("layer", "head"), {"layer": layer_labels}

    if by == "layer":
        cols = [torch.stack([_each_dot(cache[get_act_name("attn_out", l)][:, p], d_eff) for l in range(L)], 1)]
        names = ["attn"]
        if not cfg.attn_only:
            cols.append(torch.stack([_each_dot(cache[get_act_name("mlp_out", l)][:, p], d_eff) for l in range(L)], 1))
            names.append("mlp")
        return torch.stack(cols, dim=-1), ("layer", "sublayer"), {"layer": layer_labels, "sublayer": names}

    if by == "neuron":
        if layer is not None:
            return neurons(layer), ("neuron",), {}
        return torch.stack([neurons(l) for l in range(L)], dim=1), ("layer", "neuron"), {"layer": layer_labels}

    if by == "position":
        out = []
        for l in range(L):
            attn = model.blocks[l].attn
            v = cache[get_act_name("v", l)]  # [batch, src, kv_head, d_head]
            if v.shape[2] != H:  # grouped-query attention: query head h reads key/value head h // group
                v = torch.repeat_interleave(v, H // v.shape[2], dim=2)
            pattern = cache[get_act_name("pattern", l)][:, :, p, :]  # [batch, head, src]
            W_O_d = einops.einsum(attn.W_O.detach(), d_sub(l, "attn"), "h e m, b m -> b h e")
            per_src = einops.einsum(v, W_O_d, "b s h e, b h e -> b h s")
            out.append(pattern * per_src)
        values = torch.stack(out, dim=1)  # [batch, layer, head, pos]
        return values, ("layer", "head", "pos"), {"layer": layer_labels, "pos": position_labels(model, toks)}

    # by == "component": every additive term of the final residual stream, then the constant.
    cols, names = [_each_dot(cache["hook_embed"][:, p], d_eff)], ["embed"]
    if cfg.positional_embedding_type == "standard":
        cols.append(_each_dot(cache["hook_pos_embed"][:, p], d_eff))
        names.append("pos_embed")
    for l in range(L):
        cols.append(heads(l))
        names += [f"L{l}H{h}" for h in range(H)]
        cols.append(bias(model.blocks[l].attn.b_O, l, "attn")[:, None])
        names.append(f"L{l} b_O")
        if not cfg.attn_only:
            cols.append(neurons(l).sum(-1, keepdim=True))
            names.append(f"L{l} MLP")
            cols.append(bias(model.blocks[l].mlp.b_out, l, "mlp")[:, None])
            names.append(f"L{l} b_out")
    cols.append(const[:, None])
    names.append("final biases")
    values = torch.cat([c if c.ndim == 2 else c[:, None] for c in cols], dim=1)
    return values, ("component",), {"component": names}


def _each_dot(x: Float[Tensor, "batch d_model"], d: Float[Tensor, "batch d_model"]) -> Float[Tensor, " batch"]:
    return (x * d).sum(-1)


def _make_result(model, toks, p, ans, wrg, by, layer, per_prompt, axes, labels, model_logit) -> DLAResult:
    a = token_label(model, int(ans[0]))
    metric = f"logit({a!r})" if wrg is None else f"logit({a!r}) - logit({token_label(model, int(wrg[0]))!r})"
    if len(set(ans.tolist())) > 1 or (wrg is not None and len(set(wrg.tolist())) > 1):
        metric = "logit(answer)" if wrg is None else "logit(answer) - logit(wrong)"
    what = {"head": "per head", "layer": "per layer", "neuron": "per neuron",
            "position": "per head and source position", "component": "per residual-stream component"}[by]
    pos_label = position_labels(model, toks)[p]
    meta = {"by": by, "pos": p, "answer": ans.tolist(), "wrong": None if wrg is None else wrg.tolist(),
            "final_norm": f"{final_norm_kind(model)} (scale frozen at its value on each prompt)"}
    if output_norm(model, 0, "attn") is not None and by != "layer":
        meta["output_norms"] = "RMSNorm after each sub-layer (scale frozen at its value on each prompt)"
    if by == "neuron" and layer is not None:
        meta["layer"] = layer
    if by == "component":
        meta["total"] = per_prompt.sum(-1).mean().item()
        meta["model_logit"] = model_logit.mean().item()
    check_finite(model, toks, "direct logit attribution", per_prompt, model_logit)
    return DLAResult(
        values=per_prompt.mean(0).detach(),
        axes=axes,
        labels=labels,
        title=f"Direct logit attribution {what}" + (f", layer {layer}" if by == "neuron" and layer is not None else ""),
        metric=metric,
        model=model_name(model),
        task=f"{toks.shape[0]} prompt(s), prediction at pos {pos_label}",
        meta=meta,
        per_prompt=per_prompt.detach(),
        model_logit=model_logit,
    )


# ---------------------------------------------------------------------------------------------------------
# Logit lens
# ---------------------------------------------------------------------------------------------------------

@dataclass(repr=False)
class LogitLens(Bundle):
    """What the residual stream predicts after each layer, read through the final norm and the unembedding.

    Rows (``layer`` axis) are ``"embed"`` (the residual stream before layer 0) and ``"L0" ... "L{n-1}"`` (after
    each layer); the last row is the model's own output.

    Attributes:
        logits: ``[layer, batch, d_vocab]`` lens logits at the chosen position.
        answer: ``[batch]`` the token tracked in ``answer_logit``/``answer_prob``/``answer_rank``.
        answer_logit, answer_prob, answer_rank: axes ``("batch", "layer")``; rank 1 = top token.
        top: ``[layer, batch, rank]`` the lens's top-k tokens and their probabilities.
        norm: ``"own"`` or ``"frozen"`` (see :func:`logit_lens`).
    """

    logits: Float[Tensor, "layer batch d_vocab"]
    answer: Int[Tensor, " batch"]
    answer_logit: Result
    answer_prob: Result
    answer_rank: Result
    top: TopTokens
    norm: str
    model: str = ""
    meta: dict = field(default_factory=dict)

    def to_dataframe(self):
        """One row per (layer, prompt): the answer's logit, probability and rank, and the top tokens."""
        import pandas as pd

        rows = []
        for li, lab in enumerate(self.answer_prob.labels["layer"]):
            for b in range(self.answer.shape[0]):
                rows.append({"layer": lab, "prompt": b, "answer_logit": float(self.answer_logit.values[b, li]),
                             "answer_prob": float(self.answer_prob.values[b, li]),
                             "answer_rank": int(self.answer_rank.values[b, li]),
                             "top_tokens": self.top.tokens[li][b]})
        return pd.DataFrame(rows)

    def __repr__(self) -> str:
        """Per layer: the tracked answer's mean probability and mean rank over the batch."""
        rows = [f"{lab}: p={float(self.answer_prob.values[:, i].mean()):.3f} "
                f"rank={float(self.answer_rank.values[:, i].float().mean()):.1f}"
                for i, lab in enumerate(self.answer_prob.labels["layer"])]
        return (f"LogitLens(model={self.model!r}, norm={self.norm!r}, batch={self.answer.shape[0]}; "
                + "; ".join(rows) + ")")


def logit_lens(
    model: ModelLike,
    tokens: Prompts,
    answer: Optional[Answer] = None,
    pos: int = -1,
    k: int = 5,
    norm: Literal["own", "frozen"] = "own",
    max_memory: int = DEFAULT_MAX_MEMORY,
) -> LogitLens:
    """The logit lens: unembed the accumulated residual stream after every layer.

    Args:
        model: any HookedTransformer.
        tokens: prompts (text or ids), all of the same length.
        answer: the token to track (id or single-token string, one or one per prompt). Default: the model's
            own top prediction on each prompt, so the lens shows how early the final answer emerges.
        pos: the position whose prediction is read (default: the last).
        k: how many top tokens to keep per layer.
        norm: how the final norm treats the intermediate residual streams.
            ``"own"`` (the standard logit lens, and the default) normalises each layer's residual with *its
            own* statistics, as if the model stopped there: the natural reading of "what would the model say
            now", since early residuals are often much smaller than the final one. ``"frozen"`` divides by
            the final residual's scale instead, which makes the lens linear, so consecutive differences are
            exactly the direct logit attributions of each layer (``by="layer"``, summed). The two agree at
            the last layer, where both equal the model's logits.
        max_memory: rough bound in bytes on the activations held at once: prompts run in batches that fit it.

    Returns:
        a :class:`LogitLens`.
    """
    if norm not in ("own", "frozen"):
        raise InputError(f"norm={shorten(norm)} must be 'own' (each layer's own statistics) or 'frozen' (final scale).")
    model = as_model(model)
    k = check_count_within(k, "k", model.cfg.d_vocab_out, "tokens in the vocabulary")
    toks = to_tokens(model, tokens)
    batch, seq_len = toks.shape
    p = check_pos(pos, seq_len)
    L = model.cfg.n_layers
    names = {get_act_name("resid_pre", l) for l in range(L)} | {get_act_name("resid_post", L - 1)}
    has_norm = final_norm_kind(model) != "none"
    if has_norm:
        names.add("ln_final.hook_scale")
    # batches of prompts that fit max_memory (a forward pass with its logits, and the lens of every layer)
    per_row = row_bytes(model, p + 1, logits=model.cfg.d_vocab_out) + 3 * 4 * (L + 1) * model.cfg.d_vocab_out
    lens_parts, logit_parts = [], []
    for rows in row_chunks(batch, per_row, check_max_memory(max_memory)):
        with torch.no_grad():  # positions after p cannot affect p (causal attention)
            logits, cache = model.run_with_cache(toks[rows, : p + 1], names_filter=lambda n: n in names)
            resid = torch.stack([cache[get_act_name("resid_pre", l)][:, p] for l in range(L)]
                                + [cache[get_act_name("resid_post", L - 1)][:, p]])  # [layer, batch, d_model]
            if norm == "own" or not has_norm:
                normed = final_norm(model, resid)
            else:
                scale = cache["ln_final.hook_scale"][:, p]  # [batch, 1]
                x = resid - resid.mean(-1, keepdim=True) if final_norm_kind(model) == "ln" else resid
                x = x / scale
                w, b = final_norm_weight(model), final_norm_bias(model)
                normed = (x * w if w is not None else x) + (b if b is not None else 0.0)
            lens_parts.append(normed @ model.W_U.detach() + model.b_U.detach())  # [layer, batch, d_vocab]
            logit_parts.append(logits[:, p])
        del logits, cache
    lens, model_logits = torch.cat(lens_parts, dim=1), torch.cat(logit_parts)  # [layer, batch, vocab], [batch, vocab]
    check_finite(model, toks, "the logit lens (residual streams through the readout)", lens, model_logits)

    if answer is None:
        ans = model_logits.argmax(-1)
    else:
        ans = answer_ids(model, answer, batch)
    idx = ans[None, :, None].expand(L + 1, batch, 1)
    a_logit = lens.gather(-1, idx)[..., 0]
    probs = lens.softmax(-1)
    a_prob = probs.gather(-1, idx)[..., 0]
    a_rank = (lens > a_logit[..., None]).sum(-1) + 1
    layer_labels = ["embed"] + [f"L{l}" for l in range(L)]
    a_str = [token_label(model, int(t)) for t in ans]
    batch_labels = [f"{b}:{s!r}" for b, s in enumerate(a_str)]
    task = f"{batch} prompt(s), prediction at pos {p}"
    common = dict(axes=("batch", "layer"), labels={"batch": batch_labels, "layer": layer_labels},
                  model=model_name(model), task=task, meta={"norm": norm, "pos": p})
    what = "the model's final prediction" if answer is None else "the answer"
    return LogitLens(
        logits=lens,
        answer=ans,
        answer_logit=Result(a_logit.T.contiguous(), title=f"Logit lens: logit of {what}", metric="logit", **common),
        answer_prob=Result(a_prob.T.contiguous(), title=f"Logit lens: probability of {what}", metric="probability",
                           **common),
        answer_rank=Result(a_rank.T.contiguous().float(), title=f"Logit lens: rank of {what} (1 = top)",
                           metric="rank", **common),
        top=TopTokens.from_scores(probs, k, lambda ids: token_strings(model, ids), axes=("layer", "batch", "rank"),
                                  labels={"layer": layer_labels}, title="Logit lens: top tokens after each layer",
                                  metric="probability", model=model_name(model), task=task),
        norm=norm,
        model=model_name(model),
        meta={"pos": p, "answer_given": answer is not None},
    )
