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
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Sequence, Union

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer
from transformer_lens.utils import get_act_name

from circuitlab.attribution import readout_directions
from circuitlab.errors import CircuitlabError, InputError
from circuitlab.results import Result
from circuitlab.core import Answer, Prompts, answer_ids, str_tokens, to_tokens

__all__ = ["SubUpdates", "ValueTokens", "KeyExamples", "KeyExample", "sub_updates", "value_tokens", "key_examples"]


# ---------------------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------------------

def check_mlp_layer(model: HookedTransformer, layer: int) -> int:
    """``layer`` as a non-negative index of an MLP layer, or a :class:`CircuitlabError` saying what to do."""
    cfg = model.cfg
    if cfg.attn_only:
        raise CircuitlabError(
            f"model {cfg.model_name!r} is attention-only (cfg.attn_only=True): it has no MLP layers, so there "
            "are no key-value memories to analyse. Use a model with MLPs (e.g. zoo/toy-lm, or "
            "circuitlab.testing.random_model('gpt2') for a random one), or analyse its attention heads with "
            "circuitlab.attribution."
        )
    if getattr(cfg, "num_experts", None):
        raise CircuitlabError(
            f"model {cfg.model_name!r} has mixture-of-experts MLPs; FFN key-value analysis needs one dense MLP "
            "per layer."
        )
    n = cfg.n_layers
    if isinstance(layer, bool) or not isinstance(layer, int) or not -n <= layer < n:
        raise InputError(f"layer={layer!r} is out of range: this model has {n} layers (0 to {n - 1}).")
    return layer % n


def _check_neurons(model: HookedTransformer, neurons: Union[int, Sequence[int], None]) -> list[int]:
    d_mlp = model.cfg.d_mlp
    if neurons is None:
        return list(range(d_mlp))
    items = [neurons] if isinstance(neurons, int) else list(neurons)
    for n in items:
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n < d_mlp:
            raise InputError(f"neuron {n!r} is out of range: this model's MLPs have d_mlp={d_mlp} neurons (0 to "
                             f"{d_mlp - 1}).")
    return items


def unembed_matrix(model: HookedTransformer, through_norm: bool = True) -> Float[Tensor, "d_model d_vocab"]:
    """``W_U``, or (``through_norm``) the directions that reach the logits through the final norm's weight."""
    W_U = model.W_U.detach()
    if not through_norm:
        return W_U
    return readout_directions(model, W_U.T).T


def _strings(model: HookedTransformer, ids: Tensor) -> list[str]:
    return str_tokens(model, ids.reshape(-1))



def _fragment(*parts: Any) -> str:
    """HTML strings and :mod:`circuitlab.render` views joined into one fragment.

    A stand-alone fragment (Jupyter) carries circuitsvis's JavaScript bundle and the stylesheet once, however
    many views it holds; inside a report (``fragment_mode``) it carries neither, since the page provides them.
    """
    from circuitlab.render.bundle import bundle_script, fragment_mode, in_fragment_mode
    from circuitlab.render.style import stylesheet

    head = [] if in_fragment_mode() else [stylesheet(), bundle_script()]
    with fragment_mode():
        body = [p if isinstance(p, str) else p.to_html() for p in parts if p is not None]
    return "\n".join(head + ['<div class="cl-block">'] + body + ["</div>"])


def _colored_rows(rows: Sequence[tuple[str, list[str], Sequence[float]]], caption: str = ""):
    """Labelled rows of tokens as ONE circuitsvis ``ColoredTokens`` view; each row opens with a label token."""
    from circuitlab.render import colored_tokens

    tokens: list[str] = []
    values: list[float] = []
    for label, toks, vals in rows:
        tokens.append(f" \u2016 {label}: ")
        values.append(0.0)
        tokens.extend(toks)
        values.extend(float(v) for v in vals)
    return colored_tokens(tokens, torch.tensor(values), caption=caption)


def _decode(model: HookedTransformer, ids: Sequence[int]) -> str:
    """Token ids as readable text: the tokenizer's decoding, or the ``#id`` labels joined by spaces."""
    ids = [int(i) for i in ids]
    if model.tokenizer is None:
        return " ".join(f"#{i}" for i in ids)
    return model.tokenizer.decode(ids)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain HTML table; cells are escaped here."""
    out = ["<table style='border-collapse:collapse;font:11px monospace'>",
           "<tr>" + "".join(f"<th style='padding:2px 6px'>{html.escape(h)}</th>" for h in header) + "</tr>"]
    for r in rows:
        out.append("<tr>" + "".join(f"<td style='padding:2px 6px'>{html.escape(str(c))}</td>" for c in r) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------------------
# Value vectors: which tokens each neuron promotes
# ---------------------------------------------------------------------------------------------------------

@dataclass
class ValueTokens:
    """The tokens each value vector (row of ``W_out``) promotes and suppresses most.

    Attributes:
        layer: the MLP layer.
        neurons: the neurons, one row each below.
        top_ids, top_values: ``[neuron, k]`` the most promoted tokens and their scores ``W_out[i] @ W_U[:, t]``.
        bottom_ids, bottom_values: ``[neuron, k]`` the most suppressed (most negative first).
        top_strings, bottom_strings: the same tokens as text.
        through_norm: whether the projection went through the final norm's weight (see module docstring).
    """

    layer: int
    neurons: list[int]
    top_ids: Int[Tensor, "neuron k"]
    top_values: Float[Tensor, "neuron k"]
    bottom_ids: Int[Tensor, "neuron k"]
    bottom_values: Float[Tensor, "neuron k"]
    top_strings: list[list[str]]
    bottom_strings: list[list[str]]
    through_norm: bool
    model: str = ""

    def to_dataframe(self):
        import pandas as pd

        rows = []
        for r, n in enumerate(self.neurons):
            for kind, ids, vals, strs in (("promotes", self.top_ids, self.top_values, self.top_strings),
                                          ("suppresses", self.bottom_ids, self.bottom_values, self.bottom_strings)):
                for j in range(ids.shape[1]):
                    rows.append({"layer": self.layer, "neuron": n, "kind": kind, "rank": j + 1,
                                 "token_id": int(ids[r, j]), "token": strs[r][j], "score": float(vals[r, j])})
        return pd.DataFrame(rows)

    def to_html(self, max_neurons: int = 20) -> str:
        """Promoted and suppressed tokens per neuron: ranked token chips, and a circuitsvis strip by score."""
        from circuitlab.render import top_tokens_html

        shown = list(enumerate(self.neurons[:max_neurons]))
        chips = {}
        for r, n in shown:
            chips[f"L{self.layer} N{n} +"] = list(zip(self.top_strings[r], self.top_values[r].tolist()))
            chips[f"L{self.layer} N{n} \u2212"] = list(zip(self.bottom_strings[r], self.bottom_values[r].tolist()))
        proj = "center(w_ln * W_U)" if self.through_norm else "W_U"
        note = f" (first {max_neurons} of {len(self.neurons)})" if len(self.neurons) > max_neurons else ""
        return _fragment(
            f"<h3>Value vectors of MLP layer {self.layer}: tokens promoted and suppressed{note}</h3>",
            f"<p class='cl-meta'>score = W_out[neuron] @ {proj}"
            f"{' · model: ' + html.escape(self.model) if self.model else ''}</p>",
            top_tokens_html(chips, value_name="score"),
            _colored_rows([(f"N{n}", self.top_strings[r] + self.bottom_strings[r][::-1],
                            self.top_values[r].tolist() + self.bottom_values[r].flip(0).tolist()) for r, n in shown],
                          caption="Each neuron's most promoted tokens, then its most suppressed, coloured by score."),
        )

    def _repr_html_(self) -> str:
        return self.to_html()

    def __repr__(self) -> str:
        lines = [f"ValueTokens(layer {self.layer}, {len(self.neurons)} neuron(s), through_norm={self.through_norm})"]
        for r, n in enumerate(self.neurons[:10]):
            lines.append(f"  N{n}: + {self.top_strings[r][:5]}  - {self.bottom_strings[r][:5]}")
        return "\n".join(lines)


def value_tokens(
    model: HookedTransformer,
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
    layer = check_mlp_layer(model, layer)
    neurons = _check_neurons(model, neuron)
    W_out = model.blocks[layer].mlp.W_out.detach()[neurons]  # [n, d_model]
    scores = W_out @ unembed_matrix(model, through_norm)  # [n, d_vocab]
    kk = min(k, scores.shape[-1])
    top_v, top_i = scores.topk(kk, dim=-1)
    bot_v, bot_i = scores.topk(kk, dim=-1, largest=False)
    return ValueTokens(
        layer=layer, neurons=neurons, top_ids=top_i, top_values=top_v, bottom_ids=bot_i, bottom_values=bot_v,
        top_strings=[_strings(model, row) for row in top_i], bottom_strings=[_strings(model, row) for row in bot_i],
        through_norm=through_norm, model=model.cfg.model_name,
    )


# ---------------------------------------------------------------------------------------------------------
# Sub-updates on a prompt
# ---------------------------------------------------------------------------------------------------------

@dataclass
class SubUpdates:
    """An MLP layer's output at one position, split into its sub-updates ``m_i * W_out[i]``.

    Attributes:
        layer, pos: where.
        coefficients: Result ``("batch", "neuron")``, the coefficients ``m`` (post-activation, the gated product
            for gated MLPs); ``m @ W_out + b_out`` is the MLP output.
        mlp_out: ``[batch, d_model]`` the MLP output the model computed (``hook_mlp_out``).
        token: ``[batch]`` the token whose logit ranks the sub-updates, or None.
        effect: Result ``("batch", "neuron")``: ``m_i * W_out[i] @ u_token`` when a token was given, else None.
        score: ``[batch, d_mlp]`` what the top sub-updates are ranked by: ``effect`` when a token was given
            (largest first: the sub-updates that promote it), otherwise ``|m_i| * ||W_out[i]||``.
        top_neurons: ``[batch, k]`` the best-ranked neurons; ``top_token_ids``/``top_tokens``
            (``[batch, k, n_tokens]``) the tokens each of those sub-updates promotes most.
        top_activations: ``[batch, pos, k]`` those neurons' coefficients at every position of the prompt
            (where their keys fire).
        through_norm: projections went through the final norm's weight.
    """

    layer: int
    pos: int
    coefficients: Result
    mlp_out: Float[Tensor, "batch d_model"]
    token: Optional[Int[Tensor, "batch"]]
    effect: Optional[Result]
    score: Float[Tensor, "batch d_mlp"]
    top_neurons: Int[Tensor, "batch k"]
    top_token_ids: Int[Tensor, "batch k n_tokens"]
    top_tokens: list[list[list[str]]]
    through_norm: bool
    model: str = ""
    prompt_strings: list[list[str]] = field(default_factory=list)
    prompt_texts: list[str] = field(default_factory=list)
    top_activations: Optional[Float[Tensor, "batch pos k"]] = None
    _unembed: Optional[Tensor] = field(default=None, repr=False)
    _W_out: Optional[Tensor] = field(default=None, repr=False)

    def projection(self, neurons: Union[int, Sequence[int], None] = None) -> Float[Tensor, "batch neuron d_vocab"]:
        """Each sub-update projected on the vocabulary, ``m_i * W_out[i] @ W_U`` (all neurons if None).

        ``[batch, d_mlp, d_vocab]`` can be large for a full vocabulary; ask for the neurons you need.
        """
        idx = list(range(self._W_out.shape[0])) if neurons is None else (
            [neurons] if isinstance(neurons, int) else list(neurons))
        m = self.coefficients.values[:, idx]  # [batch, n]
        return m[..., None] * (self._W_out[idx] @ self._unembed)[None]

    def to_dataframe(self):
        """One row per (prompt, top sub-update): neuron, coefficient, score and the tokens it promotes."""
        import pandas as pd

        rows = []
        for b in range(self.top_neurons.shape[0]):
            for j, n in enumerate(self.top_neurons[b].tolist()):
                row = {"prompt": b, "rank": j + 1, "neuron": n, "coefficient": float(self.coefficients.values[b, n]),
                       "score": float(self.score[b, n]), "promotes": self.top_tokens[b][j]}
                if self.effect is not None:
                    row["effect_on_token"] = float(self.effect.values[b, n])
                rows.append(row)
        return pd.DataFrame(rows)

    def to_html(self, prompt: int = 0) -> str:
        """Prompt ``prompt``'s top sub-updates: a table, the tokens each promotes, and where each neuron fires."""
        from circuitlab.render import top_tokens_html, topk_tokens

        ranked = "effect on the token" if self.effect is not None else "|m| * ||value||"
        neurons = self.top_neurons[prompt].tolist()
        proj = self.projection(neurons)[prompt]  # [k, d_vocab]
        table = _table(["rank", "neuron", "coefficient m", ranked, "promotes"],
                       [(j + 1, f"N{n}", f"{float(self.coefficients.values[prompt, n]):.3g}",
                         f"{float(self.score[prompt, n]):.3g}", ", ".join(map(repr, self.top_tokens[prompt][j])))
                        for j, n in enumerate(neurons)])
        chips = top_tokens_html({f"#{j + 1} N{n}": list(zip(self.top_tokens[prompt][j],
                                                            proj[j, self.top_token_ids[prompt, j]].tolist()))
                                 for j, n in enumerate(neurons)}, value_name="logit effect")
        where = None
        if self.prompt_strings and self.top_activations is not None:
            where = topk_tokens([self.prompt_strings[prompt]], [self.top_activations[prompt][None]],
                                layer_names=[f"L{self.layer}"], unit="Sub-update",
                                caption="Where in the prompt each top-ranked neuron fires (sub-update j = rank j + 1 "
                                        "in the table).")
        return _fragment(
            f"<h3>Top sub-updates of MLP layer {self.layer} at pos {self.pos} (prompt {prompt})</h3>",
            "<p class='cl-meta'>" + html.escape(self.prompt_texts[prompt] if self.prompt_texts else "") + "</p>",
            table, chips, where)

    def _repr_html_(self) -> str:
        return self.to_html()

    def __repr__(self) -> str:
        b, d = self.coefficients.shape
        return f"SubUpdates(layer {self.layer}, pos {self.pos}, batch={b}, d_mlp={d}, model={self.model})"


def sub_updates(
    model: HookedTransformer,
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
    layer = check_mlp_layer(model, layer)
    toks = to_tokens(model, tokens)
    batch, seq_len = toks.shape
    if not -seq_len <= pos < seq_len:
        raise InputError(f"pos={pos} is outside prompts of {seq_len} tokens; use -{seq_len} <= pos < {seq_len}.")
    p = pos % seq_len
    names = {get_act_name("post", layer), get_act_name("mlp_out", layer)}
    with torch.no_grad():
        _, cache = model.run_with_cache(toks, names_filter=lambda n: n in names, stop_at_layer=layer + 1)
    post = cache[get_act_name("post", layer)]  # [batch, pos, d_mlp]
    m = post[:, p]
    mlp_out = cache[get_act_name("mlp_out", layer)][:, p]

    W_out = model.blocks[layer].mlp.W_out.detach()  # [d_mlp, d_model]
    U = unembed_matrix(model, through_norm)  # [d_model, d_vocab]
    neuron_labels = [f"N{i}" for i in range(m.shape[1])]
    common = dict(axes=("batch", "neuron"), labels={"neuron": neuron_labels}, model=model.cfg.model_name,
                  task=f"{batch} prompt(s), MLP layer {layer}, pos {p}")
    coeffs = Result(m.detach(), title=f"MLP L{layer} coefficients", metric="post-activation m", **common)

    tok_ids, effect = None, None
    if token is not None:
        tok_ids = answer_ids(model, token, batch)
        effect_vals = m * (W_out @ U[:, tok_ids]).T  # [batch, d_mlp]
        effect = Result(effect_vals.detach(), title=f"MLP L{layer} sub-update effect on the token",
                        metric="logit effect", **common)
        score = effect_vals
    else:
        score = m.abs() * W_out.norm(dim=-1)
    kk = min(k, m.shape[1])
    top_n = score.topk(kk, dim=-1).indices  # [batch, k]
    # the tokens each top sub-update promotes: largest entries of m_i * (W_out[i] @ U)
    proj = m.gather(1, top_n)[..., None] * (W_out[top_n] @ U)  # [batch, k, d_vocab]
    nt = min(n_tokens, proj.shape[-1])
    top_t = proj.topk(nt, dim=-1).indices
    top_s = [[_strings(model, top_t[b, j]) for j in range(kk)] for b in range(batch)]
    return SubUpdates(
        layer=layer, pos=p, coefficients=coeffs, mlp_out=mlp_out.detach(), token=tok_ids, effect=effect,
        score=score.detach(), top_neurons=top_n, top_token_ids=top_t, top_tokens=top_s, through_norm=through_norm,
        model=model.cfg.model_name, prompt_strings=[str_tokens(model, row) for row in toks],
        prompt_texts=[_decode(model, row.tolist()) for row in toks],
        top_activations=post.gather(2, top_n[:, None, :].expand(-1, seq_len, -1)).detach(), _unembed=U, _W_out=W_out,
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


@dataclass
class KeyExamples:
    """A neuron's top-``k`` activating contexts over a dataset (Geva et al. 2021: keys detect input patterns).

    Attributes:
        layer, neuron: which key.
        examples: best first.
        n_prompts, n_tokens: how much data was scanned.
    """

    layer: int
    neuron: int
    examples: list[KeyExample]
    n_prompts: int
    n_tokens: int
    model: str = ""

    def as_result(self) -> Result:
        """The activations of the examples as a labelled 1-D :class:`Result`."""
        labels = [f"p{e.prompt}:{e.pos} {e.token!r}" for e in self.examples]
        return Result(torch.tensor([e.activation for e in self.examples]), ("example",), {"example": labels},
                      title=f"Top activations of L{self.layer} N{self.neuron}", metric="post-activation",
                      model=self.model, task=f"{self.n_prompts} prompts, {self.n_tokens} tokens")

    def to_dataframe(self):
        import pandas as pd

        return pd.DataFrame([{"prompt": e.prompt, "pos": e.pos, "activation": e.activation, "token": e.token,
                              "context": e.text} for e in self.examples])

    def to_html(self) -> str:
        """The contexts as a table and as one circuitsvis ``ColoredTokens`` strip (coloured by activation)."""
        table = _table(["#", "prompt", "pos", "token", "activation", "context"],
                       [(i + 1, e.prompt, e.pos, repr(e.token), f"{e.activation:.4g}", e.text)
                        for i, e in enumerate(self.examples)])
        strip = _colored_rows([(f"#{i + 1} p{e.prompt}:{e.pos}", e.tokens, e.activations)
                               for i, e in enumerate(self.examples)],
                              caption="Each context coloured by the neuron's activation on every token.")
        return _fragment(
            f"<h3>Top-activating contexts of MLP L{self.layer} N{self.neuron}</h3>",
            f"<p class='cl-meta'>{self.n_prompts} prompts, {self.n_tokens} tokens scanned"
            f"{' · model: ' + html.escape(self.model) if self.model else ''}</p>", table, strip)

    def _repr_html_(self) -> str:
        return self.to_html()

    def __repr__(self) -> str:
        lines = [f"KeyExamples(L{self.layer} N{self.neuron}, top {len(self.examples)} of {self.n_tokens} tokens)"]
        lines += [f"  {e.activation:8.4g}  p{e.prompt}:{e.pos}  {e.text!r}" for e in self.examples[:10]]
        return "\n".join(lines)


def _iter_rows(model: HookedTransformer, data: Any) -> Iterable[Tensor]:
    """Each item of ``data`` as a 1-D LongTensor (texts tokenized with BOS, cut to the context length)."""
    if isinstance(data, str):
        data = [data]
    if isinstance(data, Tensor):
        data = data if data.ndim == 2 else data[None]
    n_ctx = model.cfg.n_ctx
    for item in data:
        if isinstance(item, str):
            row = to_tokens(model, model.to_tokens(item, truncate=True)[0][:n_ctx])[0]
        else:
            row = torch.as_tensor(item, dtype=torch.long).reshape(-1)[:n_ctx]
            row = to_tokens(model, row)[0]
        yield row


def key_examples(
    model: HookedTransformer,
    tokens_or_texts: Union[Prompts, Iterable[Union[str, Sequence[int], Tensor]]],
    layer: int,
    neuron: int,
    k: int = 10,
    batch_size: int = 32,
    context: tuple[int, int] = (10, 3),
    exclude_bos: bool = True,
    quiet: bool = False,
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
        batch_size: items per forward pass.
        context: tokens shown (before, after) the firing token.
        exclude_bos: skip position 0 when it holds the BOS token (its activations say little about the input).
        quiet: no progress bar.
    """
    layer = check_mlp_layer(model, layer)
    (neuron,) = _check_neurons(model, neuron)
    if k < 1 or batch_size < 1:
        raise InputError(f"k and batch_size must be positive; got k={k}, batch_size={batch_size}.")
    before, after = context
    bos = getattr(model.tokenizer, "bos_token_id", None) if model.tokenizer is not None else None
    hook = get_act_name("post", layer)

    # running top-k: activations, and for each candidate (prompt, pos, window tokens, window activations)
    best_acts = torch.empty(0)
    best_info: list[tuple[int, int, list[int], list[float], int]] = []
    n_prompts = n_tokens = 0

    def run_batch(rows: list[Tensor], first_idx: int) -> None:
        nonlocal best_acts, best_info, n_tokens
        lengths = torch.tensor([len(r) for r in rows])
        padded = torch.zeros(len(rows), int(lengths.max()), dtype=torch.long, device=rows[0].device)
        for i, r in enumerate(rows):
            padded[i, : len(r)] = r
        store: dict[str, Tensor] = {}

        def grab(act: Tensor, hook) -> None:  # keep only our neuron's column
            store["a"] = act[:, :, neuron].detach().float().cpu()

        with torch.no_grad():
            model.run_with_hooks(padded, fwd_hooks=[(hook, grab)], stop_at_layer=layer + 1)
        acts = store["a"]  # [batch, pos]
        valid = torch.arange(acts.shape[1])[None, :] < lengths[:, None]
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
            cand_info.append((first_idx + b, q, padded[b, lo:hi].tolist(), acts[b, lo:hi].tolist(), q - lo))
        all_acts = torch.cat([best_acts, vals])
        all_info = best_info + cand_info
        keep = all_acts.topk(min(k, len(all_info))).indices.tolist()
        best_acts = all_acts[keep]
        best_info = [all_info[i] for i in keep]

    rows: list[Tensor] = []
    first = 0
    for row in tqdm(_iter_rows(model, tokens_or_texts), desc=f"L{layer} N{neuron} keys", unit="prompt",
                    disable=quiet):
        rows.append(row)
        n_prompts += 1
        if len(rows) == batch_size:
            run_batch(rows, first)
            first += len(rows)
            rows = []
    if rows:
        run_batch(rows, first)
    if n_prompts == 0:
        raise InputError("key_examples got no data: pass a non-empty list of texts, token rows, or an iterable.")

    examples = []
    for act, (prompt, q, window, wacts, focus) in zip(best_acts.tolist(), best_info):
        strs = str_tokens(model, torch.tensor(window))
        examples.append(KeyExample(prompt=prompt, pos=q, activation=act, token=strs[focus], tokens=strs,
                                   token_ids=window, activations=wacts, focus=focus, text=_decode(model, window)))
    return KeyExamples(layer=layer, neuron=neuron, examples=examples, n_prompts=n_prompts, n_tokens=n_tokens,
                       model=model.cfg.model_name)
