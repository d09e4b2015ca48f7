"""Probing renderers: the tree SVG parses as XML and holds one arc per gold and per predicted edge, coloured by
membership in the gold tree; the head heatmaps caption the best head and baseline; edge probing's view."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
import torch

from circuitlab.probing import score_heads
from circuitlab.probing.data import template_sentences
from circuitlab.render.probing import CORRECT, WRONG, head_accuracy_html, tree_html, tree_svg
from circuitlab.results import Result

SVG = "{http://www.w3.org/2000/svg}"


def test_tree_svg_is_well_formed_with_one_arc_per_edge():
    words = ["The", "old", "dog", "saw", "a", "<cat>", "&"]
    head = [3, 3, 4, 0, 6, 4, 4]  # gold edges: (0,2) (1,2) (2,3) (4,5) (3,5) (3,6)
    predicted = {(0, 2), (1, 2), (2, 3), (4, 5), (5, 6), (1, 3)}  # 4 right, 2 wrong
    root = ET.fromstring(tree_svg(words, head, predicted, title="gold vs probe"))
    paths = root.findall(f".//{SVG}path")
    gold = [p for p in paths if p.get("class") == "cl-arc-gold"]
    pred = [p for p in paths if p.get("class") == "cl-arc-pred"]
    assert len(gold) == 6 and len(pred) == 6
    assert sum(p.get("data-correct") == "true" for p in pred) == 4
    assert {p.get("stroke") for p in pred if p.get("data-correct") == "true"} == {CORRECT}
    assert {p.get("stroke") for p in pred if p.get("data-correct") == "false"} == {WRONG}
    assert [t.text for t in root.findall(f"{SVG}text")][1:] == words  # escaped, and read back as written
    assert "4 of 6 gold edges recovered" in tree_html(words, head, predicted)
    assert len(ET.fromstring(tree_svg(words, head)).findall(f".//{SVG}path")) == 6  # no prediction: gold only


def test_head_heatmaps_caption_best_head_and_baseline():
    sents = template_sentences(20)
    gen = torch.Generator().manual_seed(0)
    att = [torch.rand(2, 3, len(s), len(s), generator=gen) for s in sents]
    res = score_heads(att, sents, ["det", "nsubj"], min_count=1)
    page = head_accuracy_html(res)
    for r in ("det", "nsubj"):
        b = res.meta["best"][r]
        assert f"{r}: best L{b['layer']}H{b['head']} {b['accuracy']:.3f}" in page
        assert f"{res.meta['baseline'][r]['accuracy']:.3f}" in page
    assert page.count("class='cl-heatmap'") == 2


def test_edge_scores_view():
    from circuitlab.probing.edge import EdgeScores

    scores = Result(torch.tensor([0.9, 0.7]), ("probe",), {"probe": ["scalar mix", "lexical"]}, title="Edge probing",
                    task="deprel", meta={"majority_baseline": 0.2, "n_examples": {"test": 50},
                                         "options": {"pool": "mean"}})
    mix = Result(torch.tensor([0.1, 0.2, 0.7]), ("layer",), {"layer": ["emb", "L0", "L1"]})
    page = EdgeScores(scores, mix, 1.6, 1.1).to_html()
    assert "0.900" in page and "0.700" in page and "majority class" in page
    assert "center of gravity 1.60" in page and page.count("class='cl-bar'") == 3


def test_a_head_sweep_result_renders_as_heatmaps_per_relation():
    from dataclasses import dataclass

    @dataclass
    class HeadSweep(Result):  # the kind the renderer is registered for
        pass

    sents = template_sentences(20)
    att = [torch.rand(2, 3, len(s), len(s), generator=torch.Generator().manual_seed(1)) for s in sents]
    res = score_heads(att, sents, ["det"], min_count=1)
    page = HeadSweep(res.values, res.axes, res.labels, res.title, res.metric, meta=res.meta).to_html()
    assert page.count("class='cl-heatmap'") == 1 and "det: best L" in page


# -- layer curves ------------------------------------------------------------------------------------------------

def _svgs(page):
    """Every inline SVG of a page, parsed (each must be well-formed XML)."""
    import re

    return [ET.fromstring(s) for s in re.findall(r"<svg\b.*?</svg>", page, re.S)]


def _points(svg):
    return [(float(c.get("cx")), float(c.get("cy")), c.find(f"{SVG}title").text)
            for c in svg.iter(f"{SVG}circle") if c.get("class") == "cl-point"]


def test_layer_curve_points_whiskers_and_gaps_sit_where_the_values_say():
    from circuitlab.render.probing import layer_curve_svg

    nan = float("nan")
    svg = ET.fromstring(layer_curve_svg(
        ["emb", "L0", "L1", "L2"],
        [("a", [0.2, 0.6, nan, 0.6], [0.1, nan, 0.3, 0.0], "#111111"),
         ("b", [0.9, 0.3, 0.5, 0.1], [nan] * 4, "#222222")],
        title="accuracy", baselines=[("chance", 0.25, "#999999")]))
    pts = _points(svg)
    assert len(pts) == 7  # the NaN mean draws nothing
    a, b = pts[:3], pts[3:]
    assert [t for *_, t in a] == ["a at emb: 0.200 \u00b1 0.100", "a at L0: 0.600", "a at L2: 0.600 \u00b1 0.000"]
    assert a[1][1] == a[2][1] and a[0][1] > a[1][1]  # equal values at one height, larger values higher up
    # y is linear in the value: the axis runs from 0 to 1 here (0 included, rounded out to tenths)
    (x_b0, y9, _), (_, y3, _), (_, y5, _), (_, y1, _) = b
    assert (y1 - y9) / (0.1 - 0.9) == pytest.approx((y5 - y3) / (0.5 - 0.3), rel=1e-2)
    assert [p[0] for p in b] == sorted(p[0] for p in b) and x_b0 == a[0][0]
    # whiskers only where the half-width is finite and positive: a at emb (+-0.1), none for b
    ci = [p for p in svg.iter(f"{SVG}path") if p.get("class") == "cl-ci"]
    assert len(ci) == 1
    ys = [float(v) for v in ci[0].get("d").split()[2:5:2]]  # "M x y0 V y1 ..."
    per_unit = (y3 - y9) / (0.9 - 0.3)
    assert sorted(ys) == pytest.approx(sorted([a[0][1] - 0.1 * per_unit, a[0][1] + 0.1 * per_unit]), abs=0.15)
    # series a has a gap at L1..L2 (NaN at L1): two segments, one of them a lone point, so one polyline for a
    lines = [p for p in svg.iter(f"{SVG}polyline") if p.get("class") == "cl-curve"]
    assert [p.find(f"{SVG}title").text for p in lines] == ["a", "b"]
    assert len(lines[0].get("points").split()) == 2 and len(lines[1].get("points").split()) == 4
    base = [p for p in svg.iter(f"{SVG}line") if p.get("class") == "cl-baseline"]
    assert len(base) == 1 and y3 < float(base[0].get("y1")) < y1  # 0.25 lies between 0.3 and 0.1


def _probe_sweep(n_seeds=3, control=True):
    from circuitlab.probing.classifier import ProbeSweep

    gen = torch.Generator().manual_seed(0)
    per_seed = torch.rand(2, 3, 3, n_seeds, generator=gen)
    if not control:
        per_seed[:, :, 1:] = float("nan")
    from circuitlab.probing.classifier import ci95

    meta = {"per_seed": per_seed, "ci95": ci95(per_seed), "seeds": list(range(n_seeds)), "majority_baseline": 0.3,
            "n_words": {"test": 40}}
    return ProbeSweep(per_seed.mean(-1), ("probe", "layer", "measure"),
                      {"probe": ["linear", "mlp"], "layer": ["emb", "L0", "L1"],
                       "measure": ["accuracy", "control", "selectivity"]}, title="Probe accuracy", task="upos",
                      meta=meta)


def test_probe_sweep_view_draws_one_curve_per_measure_with_intervals_and_a_table():
    res = _probe_sweep()
    page = res.to_html()
    charts = [s for s in _svgs(page) if s.get("class") == "cl-curves"]
    assert [c.find(f"{SVG}title").text for c in charts] == ["task accuracy", "control-task accuracy",
                                                             "selectivity (accuracy - control)"]
    ci = res.meta["ci95"]
    for k, chart in enumerate(charts):
        tips = [t for *_, t in _points(chart)]
        want = [f"{p} at {layer}: {float(res.values[i, j, k]):.3f} \u00b1 {float(ci[i, j, k]):.3f}"
                for i, p in enumerate(["linear", "mlp"]) for j, layer in enumerate(["emb", "L0", "L1"])]
        assert tips == want
        assert len([p for p in chart.iter(f"{SVG}path") if p.get("class") == "cl-ci"]) == 6
        assert len([p for p in chart.iter(f"{SVG}line") if p.get("class") == "cl-baseline"]) == (k == 0)
    cell = f"{float(res.values[1, 2, 2]):.3f} \u00b1 {float(ci[1, 2, 2]):.3f}"
    assert f"<td>{cell}</td>" in page and "majority-class baseline" in page and "40 test words" in page


def test_probe_sweep_view_with_one_seed_and_no_control():
    page = _probe_sweep(n_seeds=1, control=False).to_html()
    charts = [s for s in _svgs(page) if s.get("class") == "cl-curves"]
    assert len(charts) == 1  # control and selectivity are NaN: no empty charts
    assert "cl-ci" not in page and "\u00b1" not in page.split("<table")[1] and "one seed, so no intervals" in page


def test_structural_sweep_view_curves_baseline_and_example_trees():
    from circuitlab.probing.structural import MEASURES, StructuralSweep

    per_seed = torch.rand(4, 4, 2, generator=torch.Generator().manual_seed(3))
    per_seed[-1] = per_seed[-1, :, :1]  # the baseline is the same for every seed
    from circuitlab.probing.classifier import ci95

    words = ["The", "old", "dog", "saw", "a", "cat", "."]
    example = {"sentence": 5, "id": "s5", "words": words, "upos": None, "head": [3, 3, 4, 0, 6, 4, 4],
               "keep": [True] * 6 + [False], "layer": "L1", "hook": "blocks.1.hook_resid_post", "seed": 0,
               "predicted": [(0, 2), (1, 3), (2, 3), (3, 4), (4, 5)], "correct": 3, "gold_edges": 5}
    res = StructuralSweep(per_seed.mean(-1), ("layer", "measure"),
                          {"layer": ["emb", "L0", "L1", "linear baseline"], "measure": list(MEASURES)},
                          title="Structural probes", meta={"per_seed": per_seed, "ci95": ci95(per_seed),
                                                           "seeds": [0, 1], "rank": 8, "example": example,
                                                           "n_sentences": {"test": 9}})
    page = res.to_html()
    svgs = _svgs(page)
    charts = [s for s in svgs if s.get("class") == "cl-curves"]
    assert len(charts) == 4
    for k, chart in enumerate(charts):
        assert len(_points(chart)) == 3  # the baseline row is a dashed line, not a point
        (line,) = [p for p in chart.iter(f"{SVG}line") if p.get("class") == "cl-baseline"]
        assert line.find(f"{SVG}title").text == f"linear chain: {float(res.values[-1, k]):.3f}"
    (tree,) = [s for s in svgs if s.get("class") == "cl-tree"]
    paths = list(tree.iter(f"{SVG}path"))
    gold = [p for p in paths if p.get("class") == "cl-arc-gold"]
    pred = [p for p in paths if p.get("class") == "cl-arc-pred"]
    assert len(gold) == 6 and [p.get("data-scored") for p in gold].count("false") == 1  # saw -> "." not scored
    assert len(pred) == 5 and [p.get("data-correct") for p in pred].count("true") == 3
    assert "3 of 5 gold edges recovered" in page and "predicts at L1" in page
    assert f"<td>{float(res.values[-1, 0]):.3f}</td>" in page  # the baseline's cell has no interval


def test_tree_keep_leaves_punctuation_out_of_the_count():
    words, head = ["a", "b", ","], [0, 1, 2]  # gold edges a-b, b-","
    assert "1 of 2 gold edges recovered" in tree_html(words, head, {(0, 1)})
    assert "1 of 1 gold edges recovered" in tree_html(words, head, {(0, 1)}, keep=[True, True, False])
    with pytest.raises(ValueError, match="keep flags"):
        tree_svg(words, head, keep=[True])
