"""Neurons in HTML: a neuron's page, the explanation-score distribution, and true vs simulated activations.

- ``NeuronPage``: the activation histogram (inline SVG, counts on a square-root axis so the tail shows), the
  top-activating contexts (the ``KeyExamples`` renderer: a table and circuitsvis token colouring) and the
  value-vector tokens (the ``ValueTokens`` renderer);
- ``ExplanationScores``: the distribution of explanation scores over neurons as a histogram (inline SVG) with
  the shuffled control and chance drawn over it as outlines, the summary, and a table of the best and worst
  explained neurons with their explanations;
- :func:`true_vs_simulated`: one neuron's held-out excerpts twice, side by side: coloured by its true activation
  (left) and by the simulation from its explanation (right), each as a circuitsvis ``ColoredTokens`` view. Both
  sides are divided by their own largest value, so the colours compare where the neuron fires, not its scale
  (the score, a correlation, ignores the scale too).
"""

from __future__ import annotations

import html
from typing import Any, Optional, Sequence

import torch

from circuitlab.core import shorten
from circuitlab.errors import InputError
from circuitlab.render.bundle import bundle_script, fragment_mode, in_fragment_mode
from circuitlab.render.kinds import fragment, heading, key_examples, renders, table, value_tokens
from circuitlab.render.style import stylesheet, svg_open
from circuitlab.render.views import colored_tokens

#: colours of the distributions in the score histogram (explanations filled, controls as outlines)
SERIES = (("scores", "explanations", "#1d4ed8"), ("shuffled", "shuffled control", "#dc2626"),
          ("chance", "chance (random predictions)", "#6b7280"))


def histogram_svg(edges: Sequence[float], series: Sequence[tuple[str, Sequence[float], str, bool]], *, title: str,
                  x_label: str, width: int = 420, height: int = 200, sqrt: bool = False) -> str:
    """A histogram with shared bins: ``series`` are ``(label, counts, colour, filled)``; filled ones as bars,
    the others as step outlines over them. ``sqrt`` draws counts on a square-root axis."""
    pad_l, pad_r, pad_t, pad_b = 46, 10, 18, 34
    f = (lambda c: c ** 0.5) if sqrt else (lambda c: c)
    top = max([f(float(c)) for _, counts, _, _ in series for c in counts] + [1e-12])
    lo, hi = float(edges[0]), float(edges[-1])
    span = hi - lo or 1.0
    plot_w, plot_h = width - pad_l - pad_r, height - pad_t - pad_b

    def x(v: float) -> float:
        return pad_l + (v - lo) / span * plot_w

    def y(c: float) -> float:
        return pad_t + (1 - f(c) / top) * plot_h

    out = svg_open(width, height, "cl-histogram", title)
    out.append(f"<line x1='{pad_l}' x2='{width - pad_r}' y1='{y(0):.1f}' y2='{y(0):.1f}' stroke='#111'/>")
    for label, counts, col, filled in series:
        if filled:
            for i, c in enumerate(counts):
                if c > 0:
                    w = max(0.5, x(edges[i + 1]) - x(edges[i]) - 0.5)
                    out.append(f"<rect x='{x(edges[i]):.1f}' y='{y(c):.1f}' width='{w:.1f}' "
                               f"height='{y(0) - y(c):.1f}' fill='{col}' fill-opacity='0.75'><title>"
                               f"{html.escape(label)}: {c:g} in [{edges[i]:.3g}, {edges[i + 1]:.3g})</title></rect>")
        else:
            pts = [f"{x(edges[0]):.1f},{y(0):.1f}"]
            for i, c in enumerate(counts):
                pts += [f"{x(edges[i]):.1f},{y(c):.1f}", f"{x(edges[i + 1]):.1f},{y(c):.1f}"]
            pts.append(f"{x(edges[-1]):.1f},{y(0):.1f}")
            out.append(f"<polyline points='{' '.join(pts)}' fill='none' stroke='{col}' stroke-width='1.5'>"
                       f"<title>{html.escape(label)}</title></polyline>")
    for v, anchor in ((lo, "start"), ((lo + hi) / 2, "middle"), (hi, "end")):
        out.append(f"<text x='{x(v):.1f}' y='{height - pad_b + 12}' text-anchor='{anchor}'>{v:.3g}</text>")
    out.append(f"<text x='{pad_l + plot_w / 2:.1f}' y='{height - 6}' text-anchor='middle' fill='#555'>"
               f"{html.escape(x_label)}</text>")
    peak = top ** 2 if sqrt else top
    out.append(f"<text x='{pad_l - 4}' y='{pad_t + 3}' text-anchor='end'>{peak:,.0f}</text>"
               f"<text x='{pad_l - 4}' y='{y(0) + 3:.1f}' text-anchor='end'>0</text>")
    lx = pad_l + 6
    for label, _, col, filled in series:
        out.append(f"<rect x='{lx}' y='4' width='10' height='8' fill='{col if filled else 'none'}' stroke='{col}'/>"
                   f"<text x='{lx + 13}' y='11'>{html.escape(label)}</text>")
        lx += 20 + 6 * len(label)
    out.append("</svg>")
    return "".join(out)


# -- neuron page ------------------------------------------------------------------------------------------

@renders("NeuronPage")
def neuron_page(page: Any, **_: Any) -> str:
    """Histogram, top contexts (token colouring) and value-vector tokens of one neuron."""
    h = page.histogram
    m = h.meta
    svg = histogram_svg(m["edges"], [("tokens", h.values.tolist(), "#1d4ed8", True)],
                        title=f"Activations of MLP L{page.layer} N{page.neuron}", x_label="activation", sqrt=True)
    facts = (f"{page.n_tokens} tokens · mean {m['mean']:.3g} · std {m['std']:.3g} · positive on "
             f"{100 * m['fraction_positive']:.1f}% of tokens" + (f" · model: {page.model}" if page.model else ""))
    return fragment(heading(f"Neuron L{page.layer} N{page.neuron}", facts),
                    f"<div class='cl-view'>{svg}</div>",
                    "<p class='cl-caption'>How often each activation occurs (square-root count axis, so the rare "
                    "high activations at the right show).</p>",
                    key_examples(page.examples), value_tokens(page.values))


# -- explanation scores ---------------------------------------------------------------------------------------

def score_histogram_svg(res: Any, part: str = "all", bins: int = 20) -> str:
    """The distribution of explanation scores over neurons, the controls as outlines (one set of bins)."""
    from circuitlab.neurons.explain import PARTS

    j = PARTS.index(part)
    present = [(label, getattr(res, attr).values[:, j].double(), col) for attr, label, col in SERIES
               if getattr(res, attr, None) is not None]
    lo = min(-0.2, min(float(v.min()) for _, v, _ in present))
    hi = max(1.0, max(float(v.max()) for _, v, _ in present))
    edges = torch.linspace(lo, hi, bins + 1, dtype=torch.float64)
    series = [(label, torch.histc(v, bins=bins, min=lo, max=hi).tolist(), col, i == 0)
              for i, (label, v, col) in enumerate(present)]
    return histogram_svg(edges.tolist(), series, title=f"Explanation scores ({part})",
                         x_label="score: correlation of simulated with true activations", width=460)


@renders("ExplanationScores")
def explanation_scores(res: Any, n_rows: int = 8, **_: Any) -> str:
    """The score histogram with the controls, the summary, and the best and worst explained neurons."""
    s = res.scores.values[:, 0].double()
    order = s.argsort(descending=True).tolist()
    picks = order[:n_rows] + [i for i in order[-n_rows:] if i not in order[:n_rows]]
    rows = [(f"L{res.layer} N{res.neurons[i]}", f"{float(s[i]):+.3f}",
             f"{float(res.shuffled.values[i, 0]):+.3f}" if res.shuffled is not None else "",
             res.explanations[i][:160]) for i in picks]
    baseline = " (a baseline)" if "baseline" in res.explainer else ""
    facts = (f"explainer: {res.explainer}{baseline} · simulator: {res.simulator} · {res.scores.task}"
             + (f" · model: {res.model}" if res.model else ""))
    return fragment(heading(res.title or "Explanation scores", facts),
                    f"<div class='cl-view'>{score_histogram_svg(res)}</div>",
                    "<p class='cl-caption'>Filled: the scores of each neuron's own explanation. Outlines: the same "
                    "neurons scored with another neuron's explanation (shuffled control) and with random predictions "
                    "(chance).</p>",
                    f"<pre>{html.escape(res.summary())}</pre>",
                    table(["neuron", "score", "shuffled", "explanation"], rows))


class Figure:
    """An HTML figure for a notebook or a report: stand-alone (stylesheet and circuitsvis bundle) outside one."""

    def __init__(self, body: str, title: str = ""):
        self.body, self.title = body, title

    def to_html(self) -> str:
        if in_fragment_mode():
            return self.body
        return "\n".join([stylesheet(), bundle_script(), self.body])

    def _repr_html_(self) -> str:
        return self.to_html()

    def __repr__(self) -> str:
        return f"Figure({self.title})"


def true_vs_simulated(res: Any, neuron: int = 0, max_excerpts: int = 6,
                      kinds: Optional[Sequence[str]] = None) -> Figure:
    """One neuron's held-out excerpts coloured by its true activation (left) and the simulation (right).

    Args:
        res: an :class:`~circuitlab.neurons.explain.ExplanationScores`.
        neuron: which of its neurons, by position in ``res.neurons`` (``res.neurons.index(n)`` for neuron ``n``).
        max_excerpts: excerpts shown (held-out top ones first, then random ones).
        kinds: which excerpts: ``("top", "random")`` by default.
    """
    if not (isinstance(neuron, int) and -len(res.neurons) <= neuron < len(res.neurons)):
        raise InputError(f"neuron={shorten(neuron)} is a position in res.neurons (0 to {len(res.neurons) - 1}); for "
                         f"neuron number n use res.neurons.index(n).")
    rec, sims = res.records[neuron], res.simulations[neuron]
    kinds = tuple(kinds or ("top", "random"))
    pairs = [(e, s) for e, s in zip(rec.held_out, sims) if e.kind in kinds][:max_excerpts]
    if not pairs:
        raise InputError(f"no held-out excerpts of kinds {kinds} to show.")

    def strip(values_of) -> tuple[list[str], torch.Tensor]:
        toks: list[str] = []
        vals: list[float] = []
        peak = max([max(values_of(e, s)) for e, s in pairs] + [1e-12])
        for j, (e, s) in enumerate(pairs):
            toks.append(f" \u2016 {e.kind} {j + 1}: ")
            vals.append(0.0)
            toks += list(e.tokens)
            vals += [max(0.0, v) / peak for v in values_of(e, s)]
        return toks, torch.tensor(vals)

    t_toks, t_vals = strip(lambda e, s: e.activations)
    s_toks, s_vals = strip(lambda e, s: [float(v) for v in s])
    score = float(res.scores.values[neuron, 0])
    with fragment_mode():
        left = colored_tokens(t_toks, t_vals, title="true activation").to_html()
        right = colored_tokens(s_toks, s_vals, title=f"simulated ({res.simulator})").to_html()
    body = ("<div style='display:flex;gap:1em;align-items:flex-start'>"
            f"<div style='flex:1;min-width:0'>{left}</div>"
            f"<div style='flex:1;min-width:0'>{right}</div></div>")
    n = res.neurons[neuron]
    title = f"L{res.layer} N{n}: true vs simulated activations (score {score:+.3f})"
    caption = ("<p class='cl-caption'>Each side is divided by its own largest value (negative activations shown as "
               "0): the colours compare where the neuron fires, not how much.</p>")
    return Figure(fragment(heading(title, f"explanation: {res.explanations[neuron][:200]}"), body, caption), title)


__all__ = ["Figure", "histogram_svg", "neuron_page", "score_histogram_svg", "explanation_scores", "true_vs_simulated"]
