"""circuitsvis views: attention patterns, token-level activations, top-k tokens.

Each function takes plain arguments (token strings, a tensor) and returns a :class:`View`: a circuitsvis React
component plus its props. A view displays itself in Jupyter, has ``to_html()`` like every result, and goes
into :func:`circuitlab.render.report`, which loads circuitsvis's JavaScript once for all its views.

    pattern = cache["pattern", 1][0]                       # [head, dest, src]
    attention_heads(pattern, model.to_str_tokens(prompt))  # one thumbnail per head, click to enlarge
"""

from __future__ import annotations

import html
import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from circuitlab.errors import InputError
from circuitlab.render.bundle import bundle_script, in_fragment_mode
from circuitlab.render.style import stylesheet

#: the CSS class of every view's mount point (the browser test checks each one is filled)
VIEW_CLASS = "cl-view"


#: significant digits kept for float props (the page shows colours and rounded hover values; full float32
#: precision would triple the size of a report)
SIGNIFICANT_DIGITS = 4


def round_significant(x: Float[Tensor, "*shape"], digits: int = SIGNIFICANT_DIGITS) -> Float[Tensor, "*shape"]:
    """``x`` (as float64) rounded to ``digits`` significant digits, so each number prints short in JSON."""
    x = x.detach().double()
    finite = torch.isfinite(x) & (x != 0)
    exponent = torch.where(finite, torch.floor(torch.log10(x.abs().where(finite, torch.ones_like(x)))), 0.0)
    n = digits - 1 - exponent  # decimal places to keep
    # multiply or divide by an exact power of ten, whichever keeps the scale factor exact
    up = torch.pow(10.0, n.clamp(min=0))
    down = torch.pow(10.0, (-n).clamp(min=0))
    rounded = torch.round(x * up / down) / up * down
    return torch.where(finite, rounded, x)


def _js_value(x: Any) -> Any:
    """Tensors and arrays as nested lists (floats rounded, see :func:`round_significant`); the rest as is."""
    if isinstance(x, Tensor):
        x = x.detach().cpu()
        return round_significant(x).tolist() if x.is_floating_point() else x.tolist()
    if hasattr(x, "tolist"):
        return _js_value(torch.as_tensor(x.tolist()))
    if isinstance(x, (list, tuple)):
        return [_js_value(v) for v in x]
    if isinstance(x, dict):
        return {k: _js_value(v) for k, v in x.items()}
    return x


def _props_json(props: dict[str, Any]) -> str:
    """Props as a JavaScript object literal that is safe inside an inline ``<script>``."""
    clean = {k: _js_value(v) for k, v in props.items() if v is not None}
    text = json.dumps(clean, allow_nan=True)  # NaN/Infinity are valid JavaScript (not JSON): fine in a script
    return text.replace("</", "<\\/").replace("<!--", "<\\!--")


@dataclass
class View:
    """One circuitsvis component, ready to mount.

    Attributes:
        component: the component's name in circuitsvis's bundle, e.g. ``"AttentionHeads"``.
        props: its props (tensors become nested lists).
        title: a heading shown above the view.
        caption: a sentence saying what the view shows.
        model, task: what it was computed on (shown under the title).
    """

    component: str
    props: dict[str, Any]
    title: str = ""
    caption: str = ""
    model: str = ""
    task: str = ""
    id: str = field(default_factory=lambda: "cl-view-" + uuid.uuid4().hex[:12])

    def mount_html(self) -> str:
        """The mount point and the call that renders into it; needs the bundle earlier on the page."""
        name = json.dumps(self.component)
        return (
            f'<div class="{VIEW_CLASS}" id="{self.id}" data-component="{html.escape(self.component)}"></div>\n'
            "<script>\n"
            "(function () {\n"
            f'  var el = document.getElementById("{self.id}");\n'
            f"  if (typeof CircuitsVis === 'undefined' || !CircuitsVis[{name}]) {{\n"
            f"    el.textContent = 'circuitsvis could not load, so the ' + {name} + ' view is missing.';\n"
            "    return;\n"
            "  }\n"
            f'  CircuitsVis.render("{self.id}", CircuitsVis[{name}], {_props_json(self.props)});\n'
            "})();\n"
            "</script>"
        )

    def to_html(self) -> str:
        """A heading, what it shows, and the view. Stand-alone (carries the bundle) unless a report builds it."""
        parts = []
        if not in_fragment_mode():
            parts += [stylesheet(), bundle_script()]
        parts.append('<div class="cl-block">')
        if self.title:
            parts.append(f"<h3>{html.escape(self.title)}</h3>")
        facts = [f"{k}: {html.escape(v)}" for k, v in (("model", self.model), ("task", self.task)) if v]
        if facts:
            parts.append("<p class='cl-meta'>" + " · ".join(facts) + "</p>")
        if self.caption:
            parts.append(f"<p class='cl-caption'>{html.escape(self.caption)}</p>")
        parts.append(self.mount_html())
        parts.append("</div>")
        return "\n".join(parts)

    def _repr_html_(self) -> str:  # Jupyter
        return self.to_html()

    def __repr__(self) -> str:
        return f"View({self.component}{'; ' + self.title if self.title else ''})"


def _check_tokens(tokens: Sequence[str], n: int, what: str) -> list[str]:
    tokens = [str(t) for t in tokens]
    if len(tokens) != n:
        raise InputError(f"{what} covers {n} positions but {len(tokens)} token strings were given; "
                         "give one per position.")
    return tokens


def attention_heads(
    pattern: Float[Tensor, "head dest src"],
    tokens: Sequence[str],
    head_names: Sequence[str] | None = None,
    title: str = "",
    caption: str = "",
    model: str = "",
    task: str = "",
) -> View:
    """Attention patterns of several heads on one prompt: a thumbnail per head, click one to see it large.

    Args:
        pattern: attention probabilities, ``[head, dest, src]`` (e.g. ``cache["pattern", layer][0]``).
        tokens: one string per position.
        head_names: one name per head (default ``"L?H0"``, ...: pass ``"L1H3"``-style names to show the layer).
    """
    if pattern.ndim == 2:
        pattern = pattern[None]
    if pattern.ndim != 3 or pattern.shape[1] != pattern.shape[2]:
        raise InputError("attention pattern must have shape [head, dest, src] with dest == src; "
                         f"got {tuple(pattern.shape)}.")
    tokens = _check_tokens(tokens, pattern.shape[-1], "the attention pattern")
    names = [str(h) for h in head_names] if head_names is not None else [f"H{h}" for h in range(pattern.shape[0])]
    if len(names) != pattern.shape[0]:
        raise InputError(f"{len(names)} head names for {pattern.shape[0]} heads; give one name per head.")
    return View("AttentionHeads", {"attention": pattern, "tokens": tokens, "attentionHeadNames": names,
                                   "maskUpperTri": True}, title, caption, model, task)


def attention_patterns(model, tokens, layers: Sequence[int] | None = None, batch_index: int = 0,
                       title: str = "Attention patterns", task: str = "") -> View:
    """Run ``model`` on ``tokens`` and show every head's attention pattern (of ``layers``, default all).

    Args:
        model: a ``HookedTransformer``.
        tokens: a prompt as text or token ids (see :func:`circuitlab.core.to_tokens`).
        layers: which layers to show.
        batch_index: which prompt of a batch to show.
    """
    from circuitlab.core import to_tokens
    from circuitlab.results import token_strings

    toks = to_tokens(model, tokens)
    layers = list(range(model.cfg.n_layers)) if layers is None else list(layers)
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in layers]
    with torch.no_grad():
        _, cache = model.run_with_cache(toks[batch_index: batch_index + 1], names_filter=lambda n: n in names)
    pattern = torch.cat([cache[n][0] for n in names])  # [layer*head, dest, src]
    head_names = [f"L{layer}H{h}" for layer in layers for h in range(model.cfg.n_heads)]
    return attention_heads(pattern, token_strings(model, toks[batch_index]), head_names, title=title,
                           caption="Attention from each destination token (row) to each source token (column).",
                           model=model.cfg.model_name, task=task)


def colored_tokens(
    tokens: Sequence[str],
    values: Float[Tensor, " pos"],
    title: str = "",
    caption: str = "",
    model: str = "",
    task: str = "",
) -> View:
    """A prompt with each token coloured by one value (an activation, a loss, an attribution); hover for it."""
    values = torch.as_tensor(values).detach().float().flatten()
    tokens = _check_tokens(tokens, len(values), "values")
    return View("ColoredTokens", {"tokens": tokens, "values": values}, title, caption, model, task)


def token_activations(
    tokens: Sequence[str],
    activations: Float[Tensor, "pos layer neuron"],
    layer_names: Sequence[str] | None = None,
    neuron_names: Sequence[str] | None = None,
    title: str = "",
    caption: str = "",
    model: str = "",
    task: str = "",
) -> View:
    """Token-level activations of many neurons (or heads, or directions): pick a layer and a unit, see the text.

    Args:
        activations: ``[pos, layer, neuron]``: one value per token for each unit of each layer.
    """
    activations = torch.as_tensor(activations).detach().float()
    if activations.ndim != 3:
        raise InputError(f"activations must have shape [pos, layer, neuron]; got {tuple(activations.shape)}.")
    tokens = _check_tokens(tokens, activations.shape[0], "activations")
    return View("TextNeuronActivations", {
        "tokens": tokens, "activations": activations, "firstDimensionName": "Layer",
        "secondDimensionName": "Neuron",
        "firstDimensionLabels": list(layer_names) if layer_names is not None else None,
        "secondDimensionLabels": list(neuron_names) if neuron_names is not None else None,
    }, title, caption, model, task)


def topk_tokens(
    tokens: Sequence[Sequence[str]],
    activations: Sequence[Float[Tensor, "layer pos neuron"]],
    k: int = 5,
    layer_names: Sequence[str] | None = None,
    sample_names: Sequence[str] | None = None,
    unit: str = "Neuron",
    title: str = "",
    caption: str = "",
    model: str = "",
    task: str = "",
) -> View:
    """For each unit, the ``k`` tokens of each prompt where it fires most (and least), in a table.

    Args:
        tokens: token strings of each prompt.
        activations: per prompt, ``[layer, pos, neuron]`` activations.
        k: how many top and bottom tokens to list. A prompt of fewer than ``2 k`` tokens splits its ranking
            between top and bottom (the larger half on top), so no token is listed under both.
        unit: what the last axis counts ("Neuron", "Head", ...).
    """
    if len(tokens) != len(activations):
        raise InputError(f"{len(tokens)} token lists but {len(activations)} activation tensors; give one per prompt.")
    top_vals, top_idx, bot_vals, bot_idx, toks = [], [], [], [], []
    for t, acts in zip(tokens, activations):
        acts = torch.as_tensor(acts).detach().float()
        if acts.ndim != 3:
            raise InputError(f"each activation tensor must be [layer, pos, neuron]; got {tuple(acts.shape)}.")
        toks.append(_check_tokens(t, acts.shape[1], "an activation tensor"))
        n_pos = acts.shape[1]
        # each position once: with k over half the positions, top and bottom split the ranking between them
        k_top = min(k, (n_pos + 1) // 2) if 2 * k > n_pos else k
        k_bottom = min(k, n_pos - k_top)
        top = acts.topk(k_top, dim=1)
        bottom = acts.topk(k_bottom, dim=1, largest=False)  # most negative first
        top_vals.append(top.values)
        top_idx.append(top.indices)
        # the component lists bottom-k in ascending order of "how far from the top": reverse ours
        bot_vals.append(bottom.values.flip(1))
        bot_idx.append(bottom.indices.flip(1))
    return View("TopkTokens", {
        "tokens": toks, "topkVals": top_vals, "topkIdxs": top_idx, "bottomkVals": bot_vals,
        "bottomkIdxs": bot_idx, "firstDimensionName": "Layer", "thirdDimensionName": unit,
        "sampleLabels": list(sample_names) if sample_names is not None else None,
        "firstDimensionLabels": list(layer_names) if layer_names is not None else None,
    }, title, caption, model, task)


def top_tokens_html(
    rows: dict[str, Sequence[tuple[str, float]]],
    title: str = "",
    caption: str = "",
    value_name: str = "value",
    scale: str | None = None,
) -> str:
    """A table of ranked tokens per row, e.g. the vocabulary a neuron's value vector promotes.

    Args:
        rows: ``{row label: [(token string, value), ...]}``, best first.
        value_name: what the values are (shown on hover; it also picks the colour scale, see below).
        scale: ``"diverging"`` or ``"sequential"``; default by the rule of :mod:`circuitlab.render.scale`
            from the values and ``value_name``.

    Plain HTML (no JavaScript): each token is its own chip, shaded by its value, with its spaces and newlines
    made visible (``' the'`` shows as ``·the``) and the exact string and value on hover.
    """
    from circuitlab.render.scale import Scale

    flat = [v for items in rows.values() for _, v in items]
    sc = Scale.for_values(torch.tensor(flat, dtype=torch.float32), scale, value_name)
    out = [] if in_fragment_mode() else [stylesheet()]
    out.append(f'<div class="cl-block cl-toptokens" data-scale="{sc.kind}">')
    if title:
        out.append(f"<h3>{html.escape(title)}</h3>")
    if caption:
        out.append(f"<p class='cl-caption'>{html.escape(caption)}</p>")
    out.append("<table class='cl-table'>")
    for label, items in rows.items():
        chips = "".join(
            f"<span class='cl-chip' style='background:{sc.colour(v)};color:{sc.text(v)}' "
            f"title='{html.escape(f'{tok!r}: {value_name} {v:.4g}', quote=True)}'>{html.escape(visible(tok))}</span>"
            for tok, v in items
        )
        out.append(f"<tr><th>{html.escape(str(label))}</th><td>{chips}</td></tr>")
    out.append("</table></div>")
    return "\n".join(out)


#: how whitespace and invisible characters show in a token chip
_VISIBLE = {" ": "\u00b7", "\n": "\u23ce", "\t": "\u21e5", "\r": "\u240d", "\u00a0": "\u237d"}


def visible(token: str) -> str:
    """A token string with its whitespace and invisible characters made visible: ``' the'`` -> ``'·the'``,
    ``'\\n'`` -> ``'⏎'``, a control character -> ``'<U+000B>'``, the empty string -> ``'∅'``."""
    if not token:
        return "\u2205"
    return "".join(_VISIBLE.get(c) or (c if c.isprintable() else f"<U+{ord(c):04X}>") for c in token)


_visible = visible  # the name earlier code used
