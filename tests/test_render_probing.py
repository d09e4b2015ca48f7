"""Probing renderers: the tree SVG parses as XML and holds one arc per gold and per predicted edge, coloured by
membership in the gold tree; the head heatmaps caption the best head and baseline; edge probing's view."""

from __future__ import annotations

import xml.etree.ElementTree as ET

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
