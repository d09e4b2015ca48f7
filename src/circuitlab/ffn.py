"""MLP layers as key-value memories (Geva et al. 2021, "Transformer Feed-Forward Layers Are Key-Value
Memories"; Geva et al. 2022, "... Build Predictions by Promoting Concepts in the Vocabulary Space").

An MLP layer computes ``out = m @ W_out + b_out`` where ``m = act(x @ W_in + b_in)`` (for gated MLPs
``m = act(x @ W_gate) * (x @ W_in) + b_in``). Read row by row:

- neuron ``i``'s **key** is column ``i`` of ``W_in``: it fires (coefficient ``m_i``) on inputs that match it;
  :func:`key_examples` finds the contexts where it fires most;
- its **value** is row ``i`` of ``W_out``, the vector it adds to the residual stream; projected on the
  vocabulary (``W_out[i] @ W_U``) it names the tokens the neuron promotes and suppresses: :func:`value_tokens`;
- the layer's output is a sum of **sub-updates** ``m_i * W_out[i]`` (plus ``b_out``); the largest of them on
  a given prompt, and the ones that push a given token up, are what :func:`sub_updates` reports.

"Through the final norm" (the default in vocabulary projections): a vector reaches the logits through the
final norm's weight, and for LayerNorm after centering, so we project on ``center(w * W_U)`` (exactly the
direction :mod:`circuitlab.attribution` uses, without the prompt-dependent scale). ``through_norm=False``
projects on ``W_U`` alone, as in the papers.

Sandwich-norm models (Gemma 2 and 3) normalise the MLP's output before adding it to the residual stream
(``ln2_post``, an RMSNorm). A value vector then reaches the residual stream as ``W_out[i] * w_post / scale``:
value vectors are projected through ``w_post`` (the scale is one positive number per prompt and position, so it
changes no ranking), and sub-updates on a prompt use the scale the norm took there, so that they sum to the
layer's actual contribution ``mlp_out - b_out`` term for term.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence, Union

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.utilities import get_act_name

from circuitlab.core import (DEFAULT_MAX_MEMORY, Answer, ModelLike, Prompts, answer_ids, as_model, check_count,
                             check_count_within, check_finite, check_max_memory, check_mlp_layer, check_neurons,
                             check_pos, decode, model_name, output_norm, output_norm_scale_hook, progress_bar, shorten,
                             str_tokens, to_tokens, unembed_matrix)
from circuitlab.engine.collect import stream_activations, token_rows
from circuitlab.errors import InputError
from circuitlab.results import Bundle, Result, TopTokens, token_strings

__all__ = ["SubUpdates", "ValueTokens", "KeyExamples", "KeyExample", "sub_updates", "value_tokens", "key_examples"]


# ---------------------------------------------------------------------------------------------------------
# Value vectors: which tokens each neuron promotes
# ---------------------------------------------------------------------------------------------------------

@dataclass(repr=False)
class ValueTokens(Bundle):
    """The tokens each value vector (row of ``W_out``) promotes and suppresses most.

    Attributes:
        layer: the MLP layer; neurons: the neurons, one row each in the results.
        promoted: ``[neuron, rank]`` the most promoted tokens and their scores ``W_out[i] @ W_U[:, t]``.
        suppressed: ``[neuron, rank]`` the most suppressed (most negative first).
        through_norm: whether the projection went through the final norm's weight (see module docstring).
    """

    layer: int
    neurons: list[int]
    promoted: TopTokens
    suppressed: TopTokens
    through_norm: bool
    model: str = ""


def value_tokens(
    model: ModelLike,
    layer: int,
    neuron: Union[int, Sequence[int], None] = None,
    k: int = 10,
    through_norm: bool = True,
) -> ValueTokens:
    """The ``k`` tokens each value vector promotes most (largest ``W_out[layer][i] @ W_U``) and suppresses most.

    Args:
        model: a model with MLPs.
        layer: the MLP layer.
        neuron: one neuron, a list of them, or None for all ``d_mlp``.
        k: tokens per direction.
        through_norm: project through the final norm's weight (and centering, for LayerNorm); False projects
            on ``W_U`` alone.
    """
    model = as_model(model)
    layer = check_mlp_layer(model, layer)
    k = check_count_within(k, "k", model.cfg.d_vocab_out, "tokens in the vocabulary")
    neurons = check_neurons(model, neuron)
    W_out = value_vectors(model, layer)[neurons]  # [n, d_model]
    scores = W_out @ unembed_matrix(model, through_norm)  # [n, d_vocab]
    proj = "center(w_ln * W_U)" if through_norm else "W_U"
    if output_norm(model, layer, "mlp") is not None:
        proj = f"(w_post * {proj})"
    common = dict(k=k, strings=lambda ids: token_strings(model, ids), axes=("neuron", "rank"),
                  labels={"neuron": [f"N{n}" for n in neurons]}, metric=f"W_out[neuron] @ {proj}",
                  model=model_name(model), task=f"MLP layer {layer} value vectors", meta={"layer": layer})
    return ValueTokens(
        layer=layer, neurons=neurons, through_norm=through_norm, model=model_name(model),
        promoted=TopTokens.from_scores(scores, title=f"Tokens promoted by L{layer} value vectors", **common),
        suppressed=TopTokens.from_scores(scores, largest=False, title=f"Tokens suppressed by L{layer} value vectors",
                                         **common),
    )


def value_vectors(model: HookedTransformer, layer: int) -> Float[Tensor, "d_mlp d_model"]:
    """``W_out`` of MLP ``layer`` as the residual stream receives it: times the output norm's weight for a
    sandwich-norm model (see the module docstring). Row ``i`` is neuron ``i``'s value vector (Geva et al.), what
    :func:`value_tokens` projects onto the vocabulary."""
    W_out = model.blocks[layer].mlp.W_out.detach()
    norm = output_norm(model, layer, "mlp")
    return W_out * norm.w.detach() if norm is not None else W_out


# ---------------------------------------------------------------------------------------------------------
# Sub-updates on a prompt
# ---------------------------------------------------------------------------------------------------------

@dataclass(repr=False)
class SubUpdates(Bundle):
    """An MLP layer's output at one position, split into its sub-updates ``m_i * W_out[i]``.

    Attributes:
        layer, pos: where.
        coefficients: ``[batch, neuron]`` the coefficients ``m`` (post-activation, the gated product for gated
            MLPs); ``m @ W_out + b_out`` is the MLP output.
        effect: ``[batch, neuron]`` ``m_i * W_out[i] @ u_token`` when a token was given, else None.
        score: ``[batch, neuron]`` what the top sub-updates are ranked by: ``effect`` when a token was given
            (largest first: the sub-updates that promote it), otherwise ``|m_i| * ||W_out[i]||``.
        top_neurons: ``[batch, k]`` the best-ranked neurons.
        promotes: ``[batch, sub_update, rank]`` the tokens each of those sub-updates promotes most, with the
            logit effect ``m_i * W_out[i] @ u_t``.
        top_activations: ``[batch, pos, sub_update]`` those neurons' coefficients at every position of the
            prompt (where their keys fire).
        mlp_out: ``[batch, d_model]`` the MLP output the model computed (``hook_mlp_out``).
        token: ``[batch]`` the token whose logit ranks the sub-updates, or None.
        through_norm: projections went through the final norm's weight.
    """

    layer: int
    pos: int
    coefficients: Result
    effect: Optional[Result]
    score: Result
    top_neurons: Int[Tensor, "batch k"]
    promotes: TopTokens
    top_activations: Result
    mlp_out: Float[Tensor, "batch d_model"]
    token: Optional[Int[Tensor, " batch"]]
    through_norm: bool
    model: str = ""
    prompt_strings: list[list[str]] = field(default_factory=list)
    prompt_texts: list[str] = field(default_factory=list)
    _unembed: Optional[Tensor] = field(default=None, repr=False)
    _W_out: Optional[Tensor] = field(default=None, repr=False)
    _m_eff: Optional[Tensor] = field(default=None, repr=False)  # m, over the output norm's scale where there is one

    def projection(self, neurons: Union[int, Sequence[int], None] = None) -> Float[Tensor, "batch neuron d_vocab"]:
        """Each sub-update projected on the vocabulary, ``m_i * W_out[i] @ W_U`` (all neurons if None).

        ``[batch, d_mlp, d_vocab]`` can be large for a full vocabulary; ask for the neurons you need.
        """
        idx = list(range(self._W_out.shape[0])) if neurons is None else (
            [neurons] if isinstance(neurons, int) else list(neurons))
        m = (self.coefficients.values if self._m_eff is None else self._m_eff)[:, idx]  # [batch, n]
        return m[..., None] * (self._W_out[idx] @ self._unembed)[None]


def sub_updates(
    model: ModelLike,
    tokens: Prompts,
    layer: int,
    pos: int = -1,
    token: Optional[Answer] = None,
    k: int = 10,
    n_tokens: int = 5,
    through_norm: bool = True,
) -> SubUpdates:
    """Split MLP layer ``layer``'s output at ``pos`` into its sub-updates, and rank them.

    Args:
        model: a model with MLPs.
        tokens: prompts (text or ids), all of the same length.
        layer: the MLP layer.
        pos: the position (default: the last).
        token: optional token (id or single-token string; one, or one per prompt). The sub-updates are then
            ranked by how much they raise its logit, ``m_i * W_out[i] @ u_token`` (Geva et al. 2022's
            "promoting"); without it, by their size ``|m_i| * ||W_out[i]||``.
        k: how many top sub-updates to report per prompt.
        n_tokens: how many promoted tokens to list for each of them.
        through_norm: project through the final norm's weight (see the module docstring).
    """
    model = as_model(model)
    layer = check_mlp_layer(model, layer)
    k = check_count_within(k, "k", model.cfg.d_mlp, f"sub-updates (neurons) of MLP layer {layer}")
    n_tokens = check_count_within(n_tokens, "n_tokens", model.cfg.d_vocab_out, "tokens in the vocabulary")
    toks = to_tokens(model, tokens)
    batch, seq_len = toks.shape
    p = check_pos(pos, seq_len)
    names = {get_act_name("post", layer), get_act_name("mlp_out", layer)}
    sandwich = output_norm(model, layer, "mlp") is not None
    if sandwich:
        names.add(output_norm_scale_hook(layer, "mlp"))
    with torch.no_grad():
        _, cache = model.run_with_cache(toks, names_filter=lambda n: n in names, stop_at_layer=layer + 1)
    post = cache[get_act_name("post", layer)]  # [batch, pos, d_mlp]
    m = post[:, p]
    mlp_out = cache[get_act_name("mlp_out", layer)][:, p]
    check_finite(model, toks, f"MLP layer {layer}'s activations", post, mlp_out)
    # what each sub-update adds to the residual stream is m_eff[i] * W_out[i] (see the module docstring)
    m_eff = m / cache[output_norm_scale_hook(layer, "mlp")][:, p] if sandwich else m

    W_out = value_vectors(model, layer)  # [d_mlp, d_model]
    U = unembed_matrix(model, through_norm)  # [d_model, d_vocab]
    neuron_labels = [f"N{i}" for i in range(m.shape[1])]
    task = f"{batch} prompt(s), MLP layer {layer}, pos {p}"
    common = dict(axes=("batch", "neuron"), labels={"neuron": neuron_labels}, model=model_name(model), task=task)
    coeffs = Result(m.detach(), title=f"MLP L{layer} coefficients", metric="post-activation m", **common)

    tok_ids, effect = None, None
    if token is not None:
        tok_ids = answer_ids(model, token, batch)
        effect_vals = m_eff * (W_out @ U[:, tok_ids]).T  # [batch, d_mlp]
        effect = Result(effect_vals.detach(), title=f"MLP L{layer} sub-update effect on the token",
                        metric="logit effect", **common)
        score = effect_vals
        ranked_by = "effect on the token"
    else:
        score = m_eff.abs() * W_out.norm(dim=-1)
        ranked_by = "|m_i| * ||W_out[i]||"
    kk = min(k, m.shape[1])
    top_n = score.topk(kk, dim=-1).indices  # [batch, k]
    # the tokens each top sub-update promotes: largest entries of m_i * (W_out[i] @ U)
    proj = m_eff.gather(1, top_n)[..., None] * (W_out[top_n] @ U)  # [batch, k, d_vocab]
    ranks = {"sub_update": [f"#{j + 1}" for j in range(kk)]}
    promotes = TopTokens.from_scores(proj, n_tokens, lambda ids: token_strings(model, ids),
                                     axes=("batch", "sub_update", "rank"), labels=ranks,
                                     title=f"Tokens each top sub-update of MLP L{layer} promotes",
                                     metric="logit effect m_i * W_out[i] @ u_t", model=model_name(model), task=task)
    where = post.gather(2, top_n[:, None, :].expand(-1, seq_len, -1)).detach()
    return SubUpdates(
        layer=layer, pos=p, coefficients=coeffs, effect=effect,
        score=Result(score.detach(), title=f"MLP L{layer} sub-update ranking", metric=ranked_by, **common),
        top_neurons=top_n, promotes=promotes,
        top_activations=Result(where, ("batch", "pos", "sub_update"), labels=ranks,
                               title=f"Coefficients of the top sub-updates of MLP L{layer} at every position",
                               metric="post-activation m", model=model_name(model), task=task),
        mlp_out=mlp_out.detach(), token=tok_ids, through_norm=through_norm, model=model_name(model),
        prompt_strings=[str_tokens(model, row) for row in toks],
        prompt_texts=[decode(model, row.tolist()) for row in toks], _unembed=U, _W_out=W_out,
        _m_eff=m_eff.detach(),
    )


# ---------------------------------------------------------------------------------------------------------
# Keys: the contexts a neuron fires on, over a stream of data
# ---------------------------------------------------------------------------------------------------------

@dataclass
class KeyExample:
    """One top-activating context: ``tokens[focus]`` is the token at ``prompt``/``pos`` where the neuron fired.

    ``tokens``/``token_ids``/``activations`` cover the window around it; ``text`` is the window decoded.
    """

    prompt: int
    pos: int
    activation: float
    token: str
    tokens: list[str]
    token_ids: list[int]
    activations: list[float]
    focus: int
    text: str


@dataclass(repr=False)
class KeyExamples(Bundle):
    """A neuron's top-``k`` activating contexts over a dataset (Geva et al. 2021: keys detect input patterns).

    Attributes:
        layer, neuron: which key.
        examples: best first.
        activations: ``[example]`` the examples' activations, labelled by where they occurred.
        n_prompts, n_tokens: how much data was scanned.
    """

    layer: int
    neuron: int
    examples: list[KeyExample]
    activations: Result
    n_prompts: int
    n_tokens: int
    model: str = ""


def key_examples(
    model: ModelLike,
    tokens_or_texts: Union[Prompts, Iterable[Union[str, Sequence[int], Int[Tensor, " pos"]]]],
    layer: int,
    neuron: int,
    k: int = 10,
    batch_size: int = 32,
    context: tuple[int, int] = (10, 3),
    exclude_bos: bool = True,
    progress: bool = False,
    max_memory: int = DEFAULT_MAX_MEMORY,
) -> KeyExamples:
    """The ``k`` positions of a dataset where neuron ``neuron`` of MLP layer ``layer`` fires most.

    The data is streamed: items are read one at a time from any iterable (a generator over a corpus larger
    than memory is fine), run in batches of ``batch_size``, and only a running top-``k`` (with each
    candidate's context) is kept. Items of different lengths are padded on the right; with causal attention
    padding never changes the activations of the real tokens, and padded positions are never selected.

    Args:
        model: a model with MLPs.
        tokens_or_texts: a ``[batch, pos]`` tensor, a list of texts, or any iterable of texts / token-id rows.
            Texts are tokenized with BOS and cut to ``n_ctx``.
        layer, neuron: the key.
        k: how many contexts to keep.
        batch_size: items per forward pass (fewer where ``max_memory`` needs it).
        context: tokens shown (before, after) the firing token.
        exclude_bos: skip position 0 when it holds the BOS token (its activations say little about the input).
        progress: show a progress bar over the data.
        max_memory: rough bound in bytes on one forward pass's activations (the package's one meaning).
    """
    model = as_model(model)
    layer = check_mlp_layer(model, layer)
    (neuron,) = check_neurons(model, neuron)
    k, batch_size = check_count(k, "k"), check_count(batch_size, "batch_size")
    if isinstance(tokens_or_texts, (int, float)) or tokens_or_texts is None:
        raise InputError(f"tokens_or_texts must be texts, token rows or an iterable of them; got "
                         f"{shorten(tokens_or_texts)}.")
    max_memory = check_max_memory(max_memory)
    before, after = context
    bos = getattr(model.tokenizer, "bos_token_id", None) if model.tokenizer is not None else None
    hook = get_act_name("post", layer)

    # running top-k: activations, and for each candidate (prompt, pos, window tokens, window activations)
    best_acts = torch.empty(0)
    best_info: list[tuple[int, int, list[int], list[float], int]] = []
    n_prompts = n_tokens = 0

    def scan(ids: list[int], lengths: Tensor, padded: Tensor, acts: Tensor) -> None:
        """Fold one batch's activations ``[batch, pos]`` into the running top-k."""
        nonlocal best_acts, best_info, n_tokens
        valid = torch.arange(acts.shape[1])[None, :] < lengths[:, None]
        check_finite(model, padded, f"L{layer} N{neuron}'s activations", acts[valid])
        if exclude_bos and bos is not None:
            valid[:, 0] &= padded[:, 0].cpu() != bos
        n_tokens += int(valid.sum())
        masked = acts.masked_fill(~valid, float("-inf"))
        kk = min(k, int(valid.sum()))
        if kk == 0:
            return
        vals, flat = masked.flatten().topk(kk)
        cand_info = []
        for v, f in zip(vals.tolist(), flat.tolist()):
            b, q = divmod(f, acts.shape[1])
            lo, hi = max(0, q - before), min(int(lengths[b]), q + after + 1)
            cand_info.append((ids[b], q, padded[b, lo:hi].tolist(), acts[b, lo:hi].tolist(), q - lo))
        all_acts = torch.cat([best_acts, vals])
        all_info = best_info + cand_info
        keep = all_acts.topk(min(k, len(all_info))).indices.tolist()
        best_acts = all_acts[keep]
        best_info = [all_info[i] for i in keep]

    rows = progress_bar(enumerate(token_rows(model, tokens_or_texts)), progress=progress,
                        desc=f"L{layer} N{neuron} keys", unit="prompt")
    for batch, padded, acts in stream_activations(model, rows, hook, lambda act: act[:, :, neuron].float().cpu(),
                                                  row=lambda item: item[1], batch_size=batch_size,
                                                  max_memory=max_memory):
        n_prompts += len(batch)
        scan([i for i, _ in batch], torch.tensor([len(r) for _, r in batch]), padded, acts)
    if n_prompts == 0:
        raise InputError("key_examples got no data: pass a non-empty list of texts, token rows, or an iterable.")

    examples = []
    for act, (prompt, q, window, wacts, focus) in zip(best_acts.tolist(), best_info):
        strs = str_tokens(model, torch.tensor(window))
        examples.append(KeyExample(prompt=prompt, pos=q, activation=act, token=strs[focus], tokens=strs,
                                   token_ids=window, activations=wacts, focus=focus, text=decode(model, window)))
    activations = Result(torch.tensor([e.activation for e in examples]), ("example",),
                         {"example": [f"p{e.prompt}:{e.pos} {e.token!r}" for e in examples]},
                         title=f"Top activations of L{layer} N{neuron}", metric="post-activation",
                         model=model_name(model), task=f"{n_prompts} prompts, {n_tokens} tokens")
    return KeyExamples(layer=layer, neuron=neuron, examples=examples, activations=activations, n_prompts=n_prompts,
                       n_tokens=n_tokens, model=model_name(model))
