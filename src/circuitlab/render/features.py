"""SAE feature dashboards as self-contained HTML: one page per feature and an index to sort and filter them.

:func:`write_dashboards` writes a folder: ``index.html`` (a table of the features: density, largest activation,
explanation and its score, the tokens each promotes; click a column header to sort, type in the boxes to filter
by density, score or text; the density histogram of all of them) and ``feature-{latent}.html`` per feature (the
layout of sae_vis and Neuronpedia: the explanation and its score, the activation histogram, the logit effect,
the top-activating contexts and samples from activation quantiles, each token coloured by the latent's
activation, its value on hover). Nothing is loaded from the network: the styles and the sorting script are
inline, the figures are inline SVG.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from circuitlab.errors import InputError
from circuitlab.render.kinds import fragment, heading, renders, table
from circuitlab.render.neurons import histogram_svg, score_histogram_svg
from circuitlab.results import to_jsonable

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:20px;color:#111;max-width:1100px}
h1{font-size:1.3em;margin:0 0 4px} h2{font-size:1.05em;margin:18px 0 6px} .sub{color:#555;font-size:.9em}
.ctx{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.85em;line-height:1.9;margin:2px 0;
     white-space:pre-wrap}
.tok{border-radius:2px;padding:1px 0} .focus{outline:1.5px solid #111}
.val{color:#555;font-size:.8em;margin-right:6px;display:inline-block;min-width:3.5em}
table{border-collapse:collapse;font-size:.85em} td,th{border-bottom:1px solid #ddd;padding:3px 6px;text-align:left;
     vertical-align:top}
th{cursor:pointer;background:#f3f4f6;user-select:none} th.asc:after{content:' \\25B2'} th.desc:after{content:' \\25BC'}
.logits td{font-family:ui-monospace,Menlo,Consolas,monospace} .pos{color:#1d4ed8} .neg{color:#b91c1c}
.explanation{background:#f9fafb;border-left:3px solid #1d4ed8;padding:6px 10px;margin:8px 0}
.filters input{width:6em;margin-right:10px} .filters input.text{width:12em}
.cols{display:flex;gap:24px;flex-wrap:wrap}
"""

SORT_JS = """
(function(){
  const table = document.getElementById('features');
  const body = table.tBodies[0];
  const num = (td) => { const v = parseFloat(td.dataset.v); return isNaN(v) ? -Infinity : v; };
  table.querySelectorAll('th').forEach((th, col) => {
    th.addEventListener('click', () => {
      const asc = !th.classList.contains('asc');
      table.querySelectorAll('th').forEach(h => h.classList.remove('asc', 'desc'));
      th.classList.add(asc ? 'asc' : 'desc');
      const rows = Array.from(body.rows);
      const numeric = th.dataset.type === 'num';
      rows.sort((a, b) => {
        const x = a.cells[col], y = b.cells[col];
        const c = numeric ? num(x) - num(y) : x.textContent.localeCompare(y.textContent);
        return asc ? c : -c;
      });
      rows.forEach(r => body.appendChild(r));
    });
  });
  const get = (id) => { const v = parseFloat(document.getElementById(id).value); return isNaN(v) ? null : v; };
  function filter(){
    const dmin = get('density-min'), dmax = get('density-max'), smin = get('score-min');
    const text = document.getElementById('text').value.toLowerCase();
    let shown = 0;
    Array.from(body.rows).forEach(r => {
      const d = parseFloat(r.dataset.density), s = parseFloat(r.dataset.score);
      let ok = (dmin === null || d >= dmin) && (dmax === null || d <= dmax);
      ok = ok && (smin === null || (!isNaN(s) && s >= smin));
      ok = ok && (!text || r.textContent.toLowerCase().includes(text));
      r.style.display = ok ? '' : 'none';
      if (ok) shown++;
    });
    document.getElementById('shown').textContent = shown;
  }
  document.querySelectorAll('.filters input').forEach(i => i.addEventListener('input', filter));
  filter();
})();
"""


def _page(title: str, body: str, script: str = "") -> str:
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>{body}"
            + (f"<script>{script}</script>" if script else "") + "</body></html>\n")


def _colour(a: float, peak: float) -> str:
    if a <= 0 or peak <= 0:
        return "transparent"
    return f"rgba(234,88,12,{min(1.0, a / peak) * 0.85 + 0.05:.3f})"


def context_html(ctx: Any, peak: float) -> str:
    """One context: its tokens, each coloured by the latent's activation (divided by ``peak``), the value on
    hover, the context's own token outlined."""
    spans = []
    for i, (t, a) in enumerate(zip(ctx.tokens, ctx.activations)):
        cls = "tok focus" if i == ctx.focus else "tok"
        spans.append(f"<span class='{cls}' style='background:{_colour(a, peak)}' title='{a:.3f}'>"
                     f"{html.escape(t)}</span>")
    return f"<div class='ctx'><span class='val'>{ctx.value:.2f}</span>{''.join(spans)}</div>"


def _explanation_map(explanations: Any) -> dict:
    """``{latent: (explanation, score)}`` from explain_features' result or a mapping."""
    if explanations is None:
        return {}
    if isinstance(explanations, Mapping):
        return {int(k): (str(v[0]), float(v[1])) for k, v in explanations.items()}
    neurons = getattr(explanations, "neurons", None)
    texts = getattr(explanations, "explanations", None)
    scores = getattr(explanations, "scores", None)
    if neurons is None or texts is None or scores is None:
        raise InputError("explanations: give explain_features' result or a {latent: (explanation, score)} mapping.")
    return {int(n): (t, float(scores.values[i, 0])) for i, (n, t) in enumerate(zip(neurons, texts))}


def _short(explanation: str) -> str:
    """An n-gram baseline explanation without its machine-readable tail."""
    return explanation.split(" | n-grams:")[0]


def feature_page(card: Any, dash: Any, explanation: Optional[tuple] = None) -> str:
    """The HTML page of one feature (module notes)."""
    peak = card.max_activation
    head = (f"<h1>Feature {card.latent}</h1><p class='sub'>{html.escape(dash.sae)} at {html.escape(dash.hook)} of "
            f"{html.escape(dash.model)} · density {100 * card.density:.3f}% ({card.fired:,} of {dash.tokens:,} "
            f"tokens) · largest activation {peak:.3f} · mean when firing {card.mean_activation:.3f} · "
            "<a href='index.html'>all features</a></p>")
    if explanation is not None:
        head += (f"<div class='explanation' id='explanation'>{html.escape(_short(explanation[0]))}<br><span "
                 f"class='sub'>explanation score (correlation of simulated with true activations on held-out "
                 f"excerpts): <b id='score'>{explanation[1]:.3f}</b></span></div>")
    edges, counts = card.histogram
    hist = histogram_svg(edges, [("tokens", counts, "#ea580c", True)], title=f"Activations of feature {card.latent}",
                         x_label="activation (where it fires)", sqrt=True)
    rows = "".join(f"<tr><td class='pos'>{html.escape(t)}</td><td>{v:+.3f}</td><td class='neg'>{html.escape(s)}</td>"
                   f"<td>{w:+.3f}</td></tr>" for (t, v), (s, w) in zip(card.promoted, card.suppressed))
    logits = (f"<table class='logits'><tr><th>promoted</th><th>effect</th><th>suppressed</th><th>effect</th></tr>"
              f"{rows}</table><p class='sub'>W_dec[{card.latent}] through the final norm's weight and W_U "
              "(direct effect only).</p>")
    top = "".join(context_html(c, peak) for c in card.top) or "<p class='sub'>never fires on this text</p>"
    quant = []
    for label, low, high, ctxs in reversed(card.quantiles):
        if not ctxs:
            continue
        quant.append(f"<h3 class='sub'>quantile {label} of its activations ({low:.2f} to {high:.2f})</h3>"
                     + "".join(context_html(c, peak) for c in ctxs))
    body = (head + f"<div class='cols'><div><h2>Activation histogram</h2>{hist}</div><div><h2>Logit effect</h2>"
            f"{logits}</div></div><h2>Top-activating contexts</h2><div id='top'>{top}</div>"
            f"<h2>Samples from activation quantiles</h2><div id='quantiles'>{''.join(quant)}</div>")
    return _page(f"Feature {card.latent}", body)


def index_page(dash: Any, explained: Mapping[int, tuple]) -> str:
    """The index of the features: a sortable, filterable table and the density histogram."""
    rows = []
    for c in dash.cards:
        e = explained.get(c.latent)
        score = e[1] if e is not None else float("nan")
        s_txt = f"{score:.3f}" if e is not None else ""
        expl = html.escape(_short(e[0]))[:160] if e is not None else ""
        promoted = html.escape(" ".join(repr(t) for t, _ in c.promoted[:5]))
        rows.append(f"<tr data-density='{c.density:.6g}' data-score='{score if e is not None else 'NaN'}'>"
                    f"<td data-v='{c.latent}'><a href='feature-{c.latent}.html'>{c.latent}</a></td>"
                    f"<td data-v='{c.density:.6g}'>{100 * c.density:.3f}%</td>"
                    f"<td data-v='{c.max_activation:.6g}'>{c.max_activation:.2f}</td>"
                    f"<td data-v='{score if e is not None else 'NaN'}'>{s_txt}</td><td>{expl}</td>"
                    f"<td class='logits'>{promoted}</td></tr>")
    dens = [c.density for c in dash.cards]
    logs = [math.log10(d) for d in dens if d > 0]
    never = sum(1 for d in dens if d == 0)
    hist = ""
    if logs:
        lo, hi = math.floor(min(logs)), max(0.0, math.ceil(max(logs)))
        edges = [lo + (hi - lo) * i / 20 for i in range(21)] if hi > lo else [lo, lo + 1]
        counts = [0] * (len(edges) - 1)
        for v in logs:
            counts[min(len(counts) - 1, int((v - edges[0]) / (edges[-1] - edges[0]) * len(counts)))] += 1
        hist = histogram_svg(edges, [("features", counts, "#1d4ed8", True)], title="Feature density",
                             x_label="log10 of the fraction of tokens a feature fires on")
    body = (f"<h1>SAE features</h1><p class='sub'>{html.escape(dash.sae)} at {html.escape(dash.hook)} of "
            f"{html.escape(dash.model)} · {len(dash.cards):,} features on {dash.tokens:,} tokens · {never} never "
            f"fire here</p>{hist}<div class='filters'>density from <input id='density-min' placeholder='0'> to "
            "<input id='density-max' placeholder='1'> score at least <input id='score-min' placeholder='-1'> text "
            "<input id='text' class='text' placeholder='explanation or token'> · <span id='shown'></span> shown"
            "</div><table id='features'><thead><tr><th data-type='num'>feature</th><th data-type='num'>density</th>"
            "<th data-type='num'>max</th><th data-type='num'>score</th><th data-type='text'>explanation</th>"
            f"<th data-type='text'>promotes</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")
    return _page("SAE features", body, SORT_JS)


def write_dashboards(dash: Any, folder: Union[str, Path], explanations: Any = None) -> Path:
    """Write ``index.html`` and ``feature-{latent}.html`` for every card of ``dash`` (what
    :func:`circuitlab.features.dashboard.feature_dashboards` returned) into ``folder``; ``explanations``:
    :func:`circuitlab.neurons.features.explain_features`' result, or ``{latent: (explanation, score)}``.
    Returns the index's path."""
    if not hasattr(dash, "cards"):
        raise InputError(f"dash: give what feature_dashboards returned; got {type(dash).__name__}.")
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"folder {str(folder)!r} is a file; give a folder to write the dashboards into.")
    folder.mkdir(parents=True, exist_ok=True)
    explained = _explanation_map(explanations)
    for card in dash.cards:
        (folder / f"feature-{card.latent}.html").write_text(feature_page(card, dash, explained.get(card.latent)),
                                                            encoding="utf-8")
    index = folder / "index.html"
    index.write_text(index_page(dash, explained), encoding="utf-8")
    (folder / "features.json").write_text(json.dumps(to_jsonable(
        [{"latent": c.latent, "density": c.density, "max_activation": c.max_activation,
          "explanation": explained.get(c.latent, (None, None))[0],
          "score": explained.get(c.latent, (None, None))[1]} for c in dash.cards]), indent=0) + "\n",
        encoding="utf-8")
    return index


@renders("FeatureExplanationScores")
def feature_explanation_scores(res: Any, n_rows: int = 8, **_: Any) -> str:
    """Explanation scores of SAE latents (:func:`circuitlab.neurons.features.explain_features`): the score
    histogram with the controls, the summary, and the best and worst explained latents."""
    s = res.scores.values[:, 0].double()
    order = s.argsort(descending=True).tolist()
    picks = order[:n_rows] + [i for i in order[-n_rows:] if i not in order[:n_rows]]
    rows = [(f"F{res.neurons[i]}", f"{float(s[i]):+.3f}",
             f"{float(res.shuffled.values[i, 0]):+.3f}" if res.shuffled is not None else "",
             _short(res.explanations[i])[:160]) for i in picks]
    facts = (f"explainer: {res.explainer} · simulator: {res.simulator} · {res.scores.task}"
             + (f" · model: {res.model}" if res.model else ""))
    return fragment(heading(res.title or "Explanation scores of SAE latents", facts),
                    f"<div class='cl-view'>{score_histogram_svg(res)}</div>",
                    "<p class='cl-caption'>Filled: the scores of each latent's own explanation. Outlines: the same "
                    "latents scored with another latent's explanation (shuffled control) and with random predictions "
                    "(chance).</p>",
                    f"<pre>{html.escape(res.summary())}</pre>",
                    table(["latent", "score", "shuffled", "explanation"], rows))


__all__ = ["write_dashboards", "feature_page", "index_page", "context_html"]
