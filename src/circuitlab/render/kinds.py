"""One renderer per result kind, and :func:`to_html`, which picks it: the only place results become HTML.

``result.to_html()`` (and Jupyter display, and :func:`circuitlab.render.report`) call :func:`to_html`, which
walks the object's class hierarchy and uses the first renderer registered for one of its class names:

- :class:`~circuitlab.results.Result` -> a heatmap (:func:`~circuitlab.render.heatmap.result_html`);
- :class:`~circuitlab.results.TopTokens` -> ranked token chips per row;
- an analysis bundle with a renderer below (``ValueTokens``, ``SubUpdates``, ``KeyExamples``, ``LogitLens``,
  ``InductionCircuit``, ``ReferenceCheck``);
- any other :class:`~circuitlab.results.Bundle` -> each of its results in turn, under the bundle's name.

A new analysis that returns Results and Bundles needs no renderer; one whose output deserves a special view
registers it here with ``@renders("ClassName")``.
"""

from __future__ import annotations

import html
from typing import Any, Callable, Sequence

import torch

from circuitlab.render.bundle import bundle_script, fragment_mode, in_fragment_mode
from circuitlab.render.heatmap import result_html
from circuitlab.render.scale import DIVERGING, scale_kind
from circuitlab.render.style import stylesheet
from circuitlab.render.views import attention_heads, colored_tokens, top_tokens_html, topk_tokens, visible

_RENDERERS: dict[str, Callable[..., str]] = {}


def renders(class_name: str):
    """Register the decorated ``f(obj, **options) -> str`` as the HTML of objects of class ``class_name``."""

    def wrap(fn: Callable[..., str]) -> Callable[..., str]:
        _RENDERERS[class_name] = fn
        return fn

    return wrap


def to_html(item: Any, **options: Any) -> str:
    """The HTML fragment of a result, a bundle, or anything else with a registered renderer.

    Renderers always run in fragment mode, so nothing they build (however they nest helpers and views) carries
    the stylesheet or circuitsvis's bundle; a stand-alone fragment (Jupyter) gets both here, once, and the bundle
    only when the fragment mounts a view. Inside a report the page provides them.
    """
    for cls in type(item).__mro__:
        if cls.__name__ in _RENDERERS:
            renderer = _RENDERERS[cls.__name__]
            break
    else:  # pragma: no cover - Rendered covers all
        raise TypeError(f"no renderer for {type(item).__name__}")
    if in_fragment_mode():
        return renderer(item, **options)
    with fragment_mode():
        body = renderer(item, **options)
    head = [stylesheet()] + ([bundle_script()] if "CircuitsVis.render(" in body else [])
    return "\n".join(head + [body])


# -- building blocks ------------------------------------------------------------------------------------------

def fragment(*parts: Any) -> str:
    """HTML strings and views joined into one block, without the stylesheet or circuitsvis's bundle (which
    :func:`to_html` adds once to a stand-alone fragment, and a report once to its page)."""
    with fragment_mode():
        body = [p if isinstance(p, str) else p.to_html() for p in parts if p is not None]
    return "\n".join(['<div class="cl-block">'] + body + ["</div>"])


def heading(title: str, meta: str = "") -> str:
    """A block heading and its grey line of facts (escaped here)."""
    out = f"<h3>{html.escape(title)}</h3>"
    return out + (f"<p class='cl-meta'>{html.escape(meta)}</p>" if meta else "")


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain table of text cells (escaped here), styled by the shared stylesheet."""
    out = ["<table class='cl-grid'>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
    for r in rows:
        out.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


#: what separates the tokens of a list (not a text) in a ``ColoredTokens`` strip: a blank, uncoloured token
SPACER = "\u2002"


def colored_rows(rows: Sequence[tuple[str, list[str], Sequence[float]]], caption: str = "", spaced: bool = False):
    """Labelled rows of tokens as ONE circuitsvis ``ColoredTokens`` view; each row opens with a label token.

    A row of text (a context) runs its tokens together, as the text reads. With ``spaced``, the tokens are a list
    (ranked tokens, not text): each shows with its whitespace made visible (``' the'`` as ``·the``) and a blank,
    uncoloured :data:`SPACER` between neighbours, so each reads as a chip of its own.
    """
    tokens: list[str] = []
    values: list[float] = []
    for label, toks, vals in rows:
        tokens.append(f" \u2016 {label}: ")
        values.append(0.0)
        for j, (t, v) in enumerate(zip(toks, vals)):
            if spaced and j:
                tokens.append(SPACER)
                values.append(0.0)
            tokens.append(visible(t) if spaced else t)
            values.append(float(v))
    return colored_tokens(tokens, torch.tensor(values), caption=caption)


def _model_fact(obj: Any) -> str:
    return f" · model: {obj.model}" if getattr(obj, "model", "") else ""


# -- results ---------------------------------------------------------------------------------------------------

renders("Result")(lambda result, **_: result_html(result))


def token_chip_label(token: str, token_id: int | None = None) -> str:
    """A token string for a chip: as is, unless it is U+FFFD (a byte piece decoded alone, which would look like
    every other byte piece): then its id, ``"<#95>"``. Labels from :func:`circuitlab.results.token_strings`
    carry the bytes themselves (``"<0xE2>"``) and pass through unchanged."""
    if "\ufffd" in token and token_id is not None:
        return f"<#{int(token_id)}>"
    return token


def _row_items(tt, index: Sequence[int], skip: set[int] = frozenset()) -> list[tuple[str, float]]:
    """(label, value) chips of one row of a TopTokens, leaving out token ids in ``skip``."""
    ids = tt.token_ids[tuple(index)].tolist()
    return [(token_chip_label(tok, i), v)
            for tok, i, v in zip(tt.row_tokens(index), ids, tt.values[tuple(index)].tolist())
            if i not in skip]


@renders("TopTokens")
def top_tokens(result, max_rows: int = 24, **_) -> str:
    """Ranked token chips, one row per index of the leading axes (the first ``max_rows``)."""
    lead = result.values.shape[:-1]
    index_rows = (torch.cartesian_prod(*[torch.arange(n) for n in lead]).reshape(-1, len(lead)).tolist()
                  if lead else [[]])
    chips = {result.label_of(i) or "top": _row_items(result, i) for i in index_rows[:max_rows]}
    more = f" (first {max_rows} of {len(index_rows)} rows)" if len(index_rows) > max_rows else ""
    facts = " · ".join(f"{k}: {v}" for k, v in (("metric", result.metric), ("model", result.model),
                                                    ("task", result.task)) if v)
    return fragment(heading((result.title or "Top tokens") + more, facts),
                    top_tokens_html(chips, value_name=result.metric or "value",
                                    scale=scale_kind(result.values, result.metric, result.title, meta=result.meta)))


@renders("Bundle")
def bundle(item, **_) -> str:
    """Any bundle: its results one after another, under the bundle's name."""
    title = getattr(item, "title", "") or type(item).__name__
    return fragment(heading(title, _model_fact(item).removeprefix(" · ")), *item.results().values())


# -- analysis bundles ----------------------------------------------------------------------------------------

@renders("ValueTokens")
def value_tokens(vt, max_neurons: int = 20, **_) -> str:
    """Promoted and suppressed tokens per neuron, one chip per token (whitespace made visible), shaded by score.

    With a small vocabulary (``k`` over half of it) the most suppressed tokens would include promoted ones: a
    token is listed once, under whichever end it ranks nearer.
    """
    shown = list(enumerate(vt.neurons[:max_neurons]))
    up, down = vt.promoted, vt.suppressed
    chips = {}
    for r, n in shown:
        top, bottom = up.token_ids[r].tolist(), down.token_ids[r].tolist()
        overlap = set(top) & set(bottom)
        # a token in both lists goes to the end it is nearer: promoted if its rank there is no worse
        to_top = {i for i in overlap if top.index(i) <= bottom.index(i)}
        chips[f"L{vt.layer} N{n} +"] = _row_items(up, [r], skip=overlap - to_top)
        chips[f"L{vt.layer} N{n} \u2212"] = _row_items(down, [r], skip=to_top)
    proj = "center(w_ln * W_U)" if vt.through_norm else "W_U"
    note = f" (first {max_neurons} of {len(vt.neurons)})" if len(vt.neurons) > max_neurons else ""
    strip = []
    for r, n in shown:  # promoted best first, then suppressed from the least to the most suppressed
        items = chips[f"L{vt.layer} N{n} +"] + chips[f"L{vt.layer} N{n} \u2212"][::-1]
        strip.append((f"N{n}", [t for t, _ in items], [v for _, v in items]))
    return fragment(
        heading(f"Value vectors of MLP layer {vt.layer}: tokens promoted and suppressed{note}",
                f"score = W_out[neuron] @ {proj}{_model_fact(vt)}"),
        top_tokens_html(chips, value_name="score", scale=DIVERGING,
                        caption="Each neuron's most promoted tokens (+, best first), then its most suppressed "
                                "(\u2212, most suppressed first). \u00b7 is a space, \u23ce a newline."),
        colored_rows(strip, spaced=True,
                     caption="Each neuron's most promoted tokens, then its most suppressed, coloured by score "
                             "(hover for it)."),
    )


@renders("SubUpdates")
def sub_updates(su, prompt: int = 0, **_) -> str:
    """One prompt's top sub-updates: a table, the tokens each promotes, and where each neuron fires."""
    ranked = "effect on the token" if su.effect is not None else "|m| * ||value||"
    neurons = su.top_neurons[prompt].tolist()
    rows = [(j + 1, f"N{n}", f"{float(su.coefficients.values[prompt, n]):.3g}",
             f"{float(su.score.values[prompt, n]):.3g}",
             ", ".join(repr(t) for t, _ in _row_items(su.promotes, [prompt, j])))
            for j, n in enumerate(neurons)]
    chips = top_tokens_html({f"#{j + 1} N{n}": _row_items(su.promotes, [prompt, j]) for j, n in enumerate(neurons)},
                            value_name="logit effect", scale=DIVERGING)
    where = None
    if su.prompt_strings and su.top_activations is not None:
        where = topk_tokens([su.prompt_strings[prompt]], [su.top_activations.values[prompt][None]],
                            layer_names=[f"L{su.layer}"], unit="Sub-update",
                            caption="Where in the prompt each top-ranked neuron fires (sub-update j = rank j + 1 "
                                    "in the table).")
    return fragment(
        heading(f"Top sub-updates of MLP layer {su.layer} at pos {su.pos} (prompt {prompt})",
                su.prompt_texts[prompt] if su.prompt_texts else ""),
        table(["rank", "neuron", "coefficient m", ranked, "promotes"], rows), chips, where)


@renders("KeyExamples")
def key_examples(ke, **_) -> str:
    """The contexts as a table and as one circuitsvis ``ColoredTokens`` strip (coloured by activation)."""
    rows = [(i + 1, e.prompt, e.pos, repr(e.token), f"{e.activation:.4g}", e.text) for i, e in enumerate(ke.examples)]
    strip = colored_rows([(f"#{i + 1} p{e.prompt}:{e.pos}", e.tokens, e.activations)
                          for i, e in enumerate(ke.examples)],
                         caption="Each context coloured by the neuron's activation on every token.")
    return fragment(
        heading(f"Top-activating contexts of MLP L{ke.layer} N{ke.neuron}",
                f"{ke.n_prompts} prompts, {ke.n_tokens} tokens scanned{_model_fact(ke)}"),
        table(["#", "prompt", "pos", "token", "activation", "context"], rows), strip)


@renders("LogitLens")
def logit_lens(lens, prompt: int = 0, **_) -> str:
    """The answer's probability per layer as a heatmap, and one prompt's top tokens per layer."""
    layers = lens.answer_prob.labels["layer"]
    rows = []
    for li, lab in enumerate(layers):
        toks = ", ".join(f"{s!r} ({float(p):.2f})" for s, p in zip(lens.top.tokens[li][prompt],
                                                                   lens.top.values[li, prompt]))
        rows.append((lab, int(lens.answer_rank.values[prompt, li]), toks))
    return fragment(lens.answer_prob, heading(f"Top tokens per layer (prompt {prompt})"),
                    table(["layer", "answer rank", "top tokens (probability)"], rows))


@renders("InductionCircuit")
def induction_circuit(circuit, **_) -> str:
    """The circuit's table, score heatmaps, K-composition, ablations and the top heads' attention patterns."""
    parts: list[Any] = [f"<h3>Induction circuit: {html.escape(circuit.model)}</h3>",
                        f"<pre>{html.escape(circuit.summary())}</pre>",
                        circuit.induction_scores, circuit.previous_token_scores]
    parts += [r for r in (circuit.k_composition, circuit.ablation, circuit.previous_token_ablation,
                          circuit.control_ablation) if r is not None]
    if circuit.patterns is not None:
        p = circuit.patterns
        parts.append(attention_heads(
            p.values.float().cpu(), p.labels["src_pos"], p.labels["head"], title=p.title,
            caption="Induction heads attend along the diagonal seq_len - 1 below the main one (the token after "
                    "the earlier copy); previous-token heads along the first subdiagonal.", model=circuit.model))
    return fragment(*parts)


@renders("ReferenceCheck")
def reference_check(check, **_) -> str:
    """The verdict against the published heads, then the circuit found."""
    return fragment("<h3>GPT-2 small reference check</h3>", f"<pre>{html.escape(check.summary())}</pre>",
                    check.circuit)
