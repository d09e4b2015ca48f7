"""HTML of concept results (circuitlab.render.concepts): token attributions as coloured chips with the completeness
check, TCAV bar charts with significance marks, the explanation-regularisation table; and all of them in a report.
Results are built here by hand, so the expected colours, marks and cells are known without running an analysis."""

from __future__ import annotations

import re

import torch

from circuitlab.concepts.debugging import RegularisationResult
from circuitlab.concepts.gradients import TokenAttributions
from circuitlab.concepts.tcav import TCAVResult
from circuitlab.render import report_html
from circuitlab.render.scale import colour
from circuitlab.results import Result


def attributions():
    vals = torch.tensor([[0.0, 2.0, -1.0, 0.5], [0.0, -0.25, 1.0, 0.1]], dtype=torch.float64)
    meta = dict(method="integrated gradients", steps=16, sum=2.35, metric_input=3.0, metric_baseline=0.5,
                difference=2.5, gap=-0.15, relative_gap=0.06)
    return TokenAttributions(vals, ("prompt", "pos"), {"prompt": ["a b c", "d e f"], "pos": ["0", "1", "2", "3"]},
                             title="Integrated gradients", metric="class margin", model="m", meta=meta,
                             tokens=[["<s>", " good", " <bad>", "."], ["<s>", " x", " y", " z"]])


def test_token_attributions_are_coloured_chips_with_the_completeness_check():
    html = attributions().to_html()
    chips = re.findall(r"<span class='cl-chip' style='background:(#[0-9a-f]{6});[^']*' title='([^']*)'>([^<]*)</span>",
                       html)
    assert len(chips) == 8
    by_token = {tok: bg for bg, _, tok in chips}
    assert by_token[" good"] == colour(2.0, 2.0)  # the largest |value| of all prompts gets full colour
    assert by_token[" &lt;bad&gt;"] == colour(-1.0, 2.0)  # escaped, red for negative
    assert by_token[" y"] == colour(1.0, 2.0)  # one scale across prompts
    assert "gap -0.15" in html and "6% of the difference" in html and "<s>" not in html.replace("&lt;s&gt;", "")


def tcav_result():
    concepts, hooks = ["pos", "neutral", "animals"], ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    runs = torch.tensor([[[0.1, 0.2, 0.0], [0.0, 0.1, 0.05]], [[0.9, 0.8, 1.0], [0.7, 0.6, 0.8]],
                         [[0.5, 0.4, 0.6], [0.3, 0.7, 0.5]]], dtype=torch.float64)
    p = torch.tensor([[0.001, 0.002], [0.003, 0.2], [0.9, 0.5]], dtype=torch.float64)
    labels = {"concept": concepts, "hook": hooks}
    run_labels = {**labels, "run": ["r0", "r1", "r2"]}
    rnd = torch.full((2, 3), 0.5, dtype=torch.float64)
    meta = dict(n_inputs=4, runs=3, set_size=5)
    return TCAVResult(scores=Result(runs.mean(-1), ("concept", "hook"), labels, metric="logit_diff", meta=meta),
                      p_values=Result(p, ("concept", "hook"), labels),
                      run_scores=Result(runs, ("concept", "hook", "run"), run_labels),
                      random_scores=Result(rnd, ("hook", "run"), {"hook": hooks, "run": ["r0", "r1", "r2"]}),
                      accuracy=Result(torch.ones(3, 2, 3), ("concept", "hook", "run"), run_labels),
                      significant=p < 0.05 / 3)


def test_tcav_bars_carry_their_significance():
    res = tcav_result()
    html = res.to_html()
    assert html.count("<svg") == 2
    bars = re.findall(r"<rect class='cl-bar' data-significant='(true|false)' x='[^']*' y='([^']*)'", html)
    assert [s for s, _ in bars] == ["true", "true", "false", "true", "false", "false"]
    marks = re.findall(r"<text class='cl-sig'[^>]*>([^<]*)</text>", html)
    assert marks == ["*", "*", "n.s.", "*", "n.s.", "n.s."]
    # bar tops: y = 22 + (1 - mean) * (210 - 46 - 22)
    assert float(bars[1][1]) == round(22 + (1 - 0.9) * 142, 1)
    assert "p=0.2" in html and "random 0.50" in html


def regularisation():
    A = torch.tensor([[[0.9, 0.8], [0.6, 0.5], [0.3, 0.2]], [[0.9, 0.85], [0.7, 0.6], [0.5, 0.4]]],
                     dtype=torch.float64)
    S = torch.tensor([[0.3, 0.2], [0.1, 0.05]], dtype=torch.float64)
    meta = dict(method="ig", steps=2, lam=10.0, l2=1.0, layer=1, shortcut="Carl", baseline="pad", irrelevant="names",
                ig_steps=64)
    labels = {"training": ["plain", "regularised"], "distribution": ["in distribution", "no correlation", "reversed"],
              "seed": ["0", "1"]}
    return RegularisationResult(Result(A, ("training", "distribution", "seed"), labels, meta=meta, task="t"),
                                Result(S, ("training", "seed"), {"training": labels["training"], "seed": ["0", "1"]},
                                       meta=meta))


def test_regularisation_table_has_a_row_per_seed_and_the_means():
    res = regularisation()
    html = res.to_html()
    rows = re.findall(r"<tr>(.*?)</tr>", html)
    cells = [re.findall(r"<td>([^<]*)</td>", r) for r in rows[1:]]
    assert cells[0] == ["plain", "0", "0.900", "0.600", "0.300", "0.300"]
    assert cells[2] == ["plain", "mean", "0.850", "0.550", "0.250", "0.250"]
    assert cells[5] == ["regularised", "mean", "0.875", "0.650", "0.450", "0.075"]
    assert "every signature&#x27;s name" in html
    assert "0.875" in res.summary()


def test_all_render_in_one_report():
    page = report_html([attributions(), tcav_result(), regularisation()], title="concepts")
    assert page.count("<svg") == 2 and page.count("cl-chip") >= 8 and "regularised" in page
