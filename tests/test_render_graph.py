"""circuitlab.render.graph: a Circuit as a self-contained SVG (and a ROC curve as a small plot).

Checks read the SVG back with xml.etree: it parses, one path per drawn edge, widths grow with |score|, colours
follow the sign, big circuits draw their top edges and say so, and a report page embeds the graph offline.
"""

import random
import re
import xml.etree.ElementTree as ET

import pytest

from circuitlab.circuits import Circuit, Graph
from circuitlab.render import report_html
from circuitlab.render.graph import DEFAULT_MAX_EDGES, circuit_svg, edge_colour, edge_width
from circuitlab.render.report import external_references

SVG = "{http://www.w3.org/2000/svg}"


def svg_of(page: str) -> ET.Element:
    m = re.search(r"<svg[^>]*class='cl-circuit'.*?</svg>", page, flags=re.S)
    assert m, "no circuit SVG in the page"
    return ET.fromstring(m.group(0))


def edges_of(root: ET.Element) -> list[ET.Element]:
    return [p for p in root.iter(f"{SVG}path") if p.get("class") == "cl-edge"]


def scored_circuit(graph: Graph, seed: int = 0) -> Circuit:
    rng = random.Random(seed)
    return Circuit.full(graph, scores=[rng.gauss(0, 1) for _ in graph.edges], title="random scores",
                        metric="logit_diff")


def test_small_circuit_svg_is_valid_and_encodes_scores():
    graph = Graph(2, 4, attn_only=True, model="zoo/attn-only-2l")
    circuit = scored_circuit(graph)
    root = svg_of(circuit.to_html())
    paths = edges_of(root)
    assert len(paths) == graph.n_edges == 81
    drawn = {p.get("data-edge") for p in paths}
    assert drawn == {f"{s} -> {r}" for s, r in graph.edges}
    # width monotone in |score|
    pairs = sorted((abs(float(p.get("data-score"))), float(p.get("stroke-width"))) for p in paths)
    widths = [w for _, w in pairs]
    assert widths == sorted(widths) and widths[-1] > widths[0]
    # colour by sign: blue for positive, red for negative (the diverging scale's ends)
    for p in paths:
        r, g, b = (int(p.get("stroke")[i:i + 2], 16) for i in (1, 3, 5))
        if float(p.get("data-score")) > 0:
            assert b > r
        else:
            assert r > b
    # hover titles carry the exact score
    first = paths[0]
    assert repr(float(first.get("data-score"))) in first.find(f"{SVG}title").text
    # every component and every q/k/v port is drawn; embed at the top, logits at the bottom
    nodes = {g.get("data-node"): g for g in root.iter(f"{SVG}g") if g.get("data-node")}
    assert set(nodes) == set(graph.components)
    y = {n: float(g.find(f"{SVG}rect").get("y")) for n, g in nodes.items()}
    assert y["embed"] < y["L0H0"] < y["L1H0"] < y["logits"] and y["L0H0"] == y["L0H3"]
    assert sum(1 for c in root.iter(f"{SVG}circle") if c.get("class") == "cl-port") == 3 * 8


def test_width_and_colour_helpers():
    ws = [edge_width(s, 2.0) for s in (0.0, 0.1, 0.5, -1.0, 2.0, 5.0)]
    assert ws == sorted(ws) and ws[3] == edge_width(1.0, 2.0)
    assert edge_colour(1.0, 1.0) == "#2563eb" and edge_colour(-1.0, 1.0) == "#dc2626"
    assert edge_colour(None, 1.0) == edge_colour(None, 0.0)  # unscored: one grey
    nan = float("nan")
    assert edge_width(nan, 2.0) == ws[0] and edge_colour(nan, 1.0) == "#d4d4d4"  # an edge a search left unscored


def test_big_circuit_draws_top_edges_and_says_so():
    graph = Graph(12, 12)  # GPT-2 small's shape: 32,491 edges
    circuit = scored_circuit(graph, seed=1)
    page = circuit.to_html()
    root = svg_of(page)
    paths = edges_of(root)
    assert len(paths) == DEFAULT_MAX_EDGES
    drawn = sorted(abs(float(p.get("data-score"))) for p in paths)
    cut = sorted((abs(s) for s in circuit.scores), reverse=True)[DEFAULT_MAX_EDGES - 1]
    assert drawn[0] == cut
    assert f"The {DEFAULT_MAX_EDGES} edges of largest |score| drawn, of 32491 in the circuit" in page
    _, caption = circuit_svg(circuit.top(80), max_edges=100)
    assert "All 80 edges" in caption


def test_unscored_circuit_and_report_page():
    graph = Graph(2, 4, attn_only=True, model="zoo/attn-only-2l")
    reference = Circuit.from_edges(graph, ["L0H1 -> L1H2.k", "L1H2 -> logits"], title="reference")
    root = svg_of(reference.to_html())
    paths = edges_of(root)
    assert len(paths) == 2 and all(p.get("data-score") is None for p in paths)
    page = report_html([reference, scored_circuit(graph).top(20)], title="circuits")
    assert page.count("class='cl-circuit'") == 2
    assert "<script" not in page.split("</head>")[1]  # no JavaScript in the graphs
    assert external_references(page) == []
    for m in re.finditer(r"<svg[^>]*class='cl-circuit'.*?</svg>", page, flags=re.S):
        ET.fromstring(m.group(0))


@pytest.mark.parametrize("attn_only", [False, True])
def test_mlps_sit_at_the_end_of_their_layer(attn_only):
    graph = Graph(3, 2, attn_only=attn_only)
    root = svg_of(scored_circuit(graph).to_html())
    nodes = {g.get("data-node"): g.find(f"{SVG}rect") for g in root.iter(f"{SVG}g") if g.get("data-node")}
    assert ("MLP1" in nodes) != attn_only
    if not attn_only:
        assert float(nodes["MLP1"].get("x")) > float(nodes["L1H1"].get("x"))
        assert nodes["MLP1"].get("y") == nodes["L1H0"].get("y")


def test_circuit_command_writes_a_report_with_the_graph(tmp_path, capsys):
    import torch

    from circuitlab.cli import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path / "c.html"
        assert main(["circuit", "-m", "zoo/attn-only-2l", "--method", "eap", "--top", "6", "--n-seqs", "4",
                     "--seq-len", "5", "-q", "-o", str(out)]) == 0
        text = capsys.readouterr().out
        assert "the top 6 of 81 edges by |score|" in text and "L1H" in text
        assert "ROC AUC against the induction reference (44 of 81 edges" in text
        page = out.read_text()
        root = svg_of(page)
        assert len(edges_of(root)) == 6
        assert page.count("class='cl-roc'") == 2
        # bad inputs end in one-line errors
        assert main(["circuit", "-m", "zoo/attn-only-2l", "--method", "eap", "--steps", "3", "-q"]) == 1
        assert main(["circuit", "-m", "zoo/attn-only-2l", "--task", "ioi", "-q"]) == 1
        err = capsys.readouterr().err
        assert "circuitlab: error:" in err and "the ioi task does not apply to this model" in err
    finally:
        torch.set_num_threads(threads)
