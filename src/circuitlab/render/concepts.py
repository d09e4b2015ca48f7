"""Concept explanations in HTML: token attributions as coloured text, TCAV scores as bar charts with their
significance, and explanation regularisation's before/after table. Plain HTML and inline SVG (no JavaScript), so
they read the same in a notebook, a report, or a browser without circuitsvis.

- ``TokenAttributions`` (integrated gradients, gradient x input): each prompt's tokens as chips on the diverging
  scale (blue pushes the metric up, red down; one scale for all prompts, hover for the value), with the
  completeness check (sum, ``metric(x) - metric(baseline)``, gap);
- ``TCAVResult``: one bar chart per hook: each concept's mean TCAV score over the runs (whisker: +- one standard
  deviation), a dashed line at the random-vs-random CAVs' mean, and above each bar its p-value and ``*``
  (significant after Bonferroni) or ``n.s.``; then the summary;
- ``RegularisationResult``: accuracy per distribution and the shortcut's attribution share, per seed and on
  average, with and without the penalty.
"""

from __future__ import annotations

import html
from typing import Any

from circuitlab.render.kinds import fragment, heading, renders, table
from circuitlab.render.scale import DIVERGING, Scale, colour
from circuitlab.render.style import svg_open

#: prompts shown by the token-attribution renderer
MAX_PROMPTS = 24


def _chip(token: str, value: float, scale: Scale) -> str:
    bg = scale.colour(value)
    return (f"<span class='cl-chip' style='background:{bg};color:{scale.text(value)};margin:1px 0' "
            f"title='{html.escape(repr(token))}: {value:+.4g}'>{html.escape(token)}</span>")


@renders("TokenAttributions")
def token_attributions(result: Any, max_prompts: int = MAX_PROMPTS, **_: Any) -> str:
    """Each prompt's tokens coloured by attribution, and the completeness check."""
    vals = result.values.detach().double().cpu()
    shown = min(len(vals), max_prompts)
    scale = Scale.for_values(vals[:shown], DIVERGING)
    m = result.meta
    facts = [f"metric: {result.metric}" if result.metric else "", f"model: {result.model}" if result.model else "",
             f"steps {m['steps']}" if m.get("method") == "integrated gradients" else ""]
    rows = []
    for i in range(shown):
        toks = result.tokens[i] if i < len(result.tokens) else result.labels["pos"]
        chips = "".join(_chip(t, float(v), scale) for t, v in zip(toks, vals[i].tolist()))
        label = html.escape(result.labels["prompt"][i]) if "prompt" in result.labels else f"p{i}"
        rows.append(f"<div class='cl-attr-row' style='margin:0.25em 0'><span class='cl-meta'>{label}</span><br>"
                    f"<span style='white-space:pre-wrap'>{chips}</span> "
                    f"<span class='cl-meta'>sum {float(vals[i].sum()):+.4g}</span></div>")
    more = f"<p class='cl-caption'>First {shown} of {len(vals)} prompts.</p>" if shown < len(vals) else ""
    check = ""
    if "gap" in m:
        check = (f"<p class='cl-caption'>Completeness: the attributions sum to {m['sum']:.6g}; metric(input) - "
                 f"metric(baseline) = {m['metric_input']:.6g} - {m['metric_baseline']:.6g} = {m['difference']:.6g}; "
                 f"gap {m['gap']:.3g} ({100 * m['relative_gap']:.2g}% of the difference).</p>")
    caption = ("<p class='cl-caption'>Blue tokens push the metric up, red ones down (hover a token for its "
               "attribution).</p>")
    return fragment(heading(result.title or "Token attributions", " · ".join(f for f in facts if f)),
                    caption, *rows, more, scale.legend(), check)


# -- TCAV ---------------------------------------------------------------------------------------------------

def tcav_svg(res: Any, hook: int, width: int = 360, height: int = 210) -> str:
    """One hook's bar chart (see the module docstring)."""
    concepts = res.concepts
    runs = res.run_scores.values[:, hook].double()
    means, stds = runs.mean(-1), runs.std(-1) if runs.shape[-1] > 1 else runs.mean(-1) * 0
    rnd = float(res.random_scores.values[hook].double().mean())
    pad_l, pad_b, pad_t = 34, 46, 22
    plot_h = height - pad_b - pad_t
    bw = (width - pad_l - 10) / max(1, len(concepts))

    def y(v: float) -> float:
        return pad_t + (1 - max(0.0, min(1.0, v))) * plot_h

    out = svg_open(width, height, "cl-tcav", "TCAV scores at " + res.hooks[hook])
    for v in (0.0, 0.5, 1.0):
        out.append(f"<line x1='{pad_l}' x2='{width - 6}' y1='{y(v):.1f}' y2='{y(v):.1f}' stroke='#e5e7eb'/>"
                   f"<text x='{pad_l - 4}' y='{y(v) + 3:.1f}' text-anchor='end'>{v:g}</text>")
    for i, c in enumerate(concepts):
        x0 = pad_l + i * bw + 0.2 * bw
        w = 0.6 * bw
        m, s = float(means[i]), float(stds[i])
        sig = bool(res.significant[i, hook])
        p = float(res.p_values.values[i, hook])
        fill = colour(1.0, 1.0) if sig else "#cbd5e1"
        mark = "*" if sig else "n.s."
        out.append(f"<rect class='cl-bar' data-significant='{str(sig).lower()}' x='{x0:.1f}' y='{y(m):.1f}' "
                   f"width='{w:.1f}' height='{y(0) - y(m):.1f}' fill='{fill}'><title>{html.escape(c)}: "
                   f"{m:.3f} +- {s:.3f}, p = {p:.3g} ({'significant' if sig else 'not significant'})</title></rect>")
        cx = x0 + w / 2
        out.append(f"<line x1='{cx:.1f}' x2='{cx:.1f}' y1='{y(m + s):.1f}' y2='{y(m - s):.1f}' stroke='#111'/>")
        out.append(f"<text class='cl-sig' x='{cx:.1f}' y='{y(min(1.0, m + s)) - 4:.1f}' text-anchor='middle' "
                   f"font-weight='600'>{mark}</text>")
        out.append(f"<text x='{cx:.1f}' y='{height - pad_b + 13}' text-anchor='middle'>{html.escape(c[:22])}</text>"
                   f"<text x='{cx:.1f}' y='{height - pad_b + 25}' text-anchor='middle' fill='#555'>p={p:.2g}</text>")
    out.append(f"<line x1='{pad_l}' x2='{width - 6}' y1='{y(rnd):.1f}' y2='{y(rnd):.1f}' stroke='#111' "
               f"stroke-dasharray='4 3'><title>random-vs-random CAVs: {rnd:.3f}</title></line>")
    out.append(f"<text x='{width - 6}' y='{height - 6}' text-anchor='end' fill='#555'>- - random {rnd:.2f}</text>")
    out.append("</svg>")
    return "".join(out)


@renders("TCAVResult")
def tcav_result(res: Any, **_: Any) -> str:
    """Bar charts per hook, with significance marks, then the summary."""
    m = res.scores.meta
    facts = (f"{m['n_inputs']} inputs · {m['runs']} runs of {m['set_size']} texts · Bonferroni alpha "
             f"{res.alpha}/{len(res.concepts)}" + (f" · model: {res.scores.model}" if res.scores.model else ""))
    charts = "".join(f"<div style='display:inline-block;margin-right:1em'><div class='cl-heatmap-title'>"
                     f"{html.escape(h)}</div>{tcav_svg(res, j)}</div>" for j, h in enumerate(res.hooks))
    caption = ("Mean TCAV score over the runs (whisker: one standard deviation; dashed: random-vs-random CAVs). "
               "* : significantly different from random (two-sided t-test, Bonferroni over concepts); n.s.: not; "
               "grey bars are not significant.")
    return fragment(heading(f"TCAV: {res.scores.metric}", facts), f"<div class='cl-view'>{charts}</div>",
                    f"<p class='cl-caption'>{html.escape(caption)}</p>",
                    f"<pre>{html.escape(res.summary())}</pre>")


# -- explanation regularisation -------------------------------------------------------------------------------

@renders("RegularisationResult")
def regularisation(res: Any, **_: Any) -> str:
    """The before/after table (per seed and mean)."""
    m = res.accuracy.meta
    head = ["training", "seed"] + [f"accuracy: {d}" for d in res.accuracy.labels["distribution"]] + \
        ["shortcut share of IG"]
    from circuitlab.concepts.debugging import penalty_description

    facts = (f"penalty: {penalty_description(m)} · l2 {m['l2']:g} · layer {m['layer']}"
             + (f" · model: {res.accuracy.model}" if res.accuracy.model else ""))
    return fragment(heading(res.title, facts), table(head, res.table()),
                    f"<p class='cl-caption'>{html.escape(res.accuracy.task)}</p>")


__all__ = ["token_attributions", "tcav_svg", "tcav_result", "regularisation"]
