"""The attribution-graph page and export: the JSON has circuit-tracer / Neuronpedia's node and link fields and its
links are the graph's kept edges; the page loads in headless Chromium with no console errors and no network, draws
one mark per node, shows a hover card, pins and groups nodes; ``circuitlab graph`` writes both files."""

from __future__ import annotations

import json

import pytest
import torch

import circuitlab as cl
from circuitlab.cli import main
from circuitlab.graphs import attribution_graph, prune_graph
from circuitlab.graphs.export import graph_json
from circuitlab.render.graphs import graph_page
from chromium import headless_chromium

PROMPT = "And the LORD said unto"
NODE_FIELDS = {"node_id", "feature", "layer", "ctx_idx", "feature_type", "token_prob", "is_target_logit", "run_idx",
               "reverse_ctx_idx", "jsNodeId", "clerp", "influence", "activation"}


@pytest.fixture(scope="module")
def data():
    toy = cl.load_model("zoo/toy-lm")
    g = attribution_graph(toy, "toy-lm", PROMPT)
    pr = prune_graph(g)
    return g, pr, graph_json(pr)


def test_export_schema(data):
    g, pr, d = data
    assert set(d) == {"metadata", "qParams", "nodes", "links"}
    assert {"slug", "scan", "transcoder_list", "prompt_tokens", "prompt", "node_threshold"} <= set(d["metadata"])
    assert len(d["nodes"]) == int(pr.node_mask.sum())
    for n in d["nodes"]:
        assert NODE_FIELDS <= set(n)
    ids = {n["node_id"] for n in d["nodes"]}
    assert len(ids) == len(d["nodes"])
    assert len(d["links"]) == int(pr.edge_mask.sum())
    index = {g.node_id(i): i for i in range(g.n_nodes)}
    for link in d["links"][:50]:
        assert link["source"] in ids and link["target"] in ids
        assert link["weight"] == pytest.approx(float(g.adjacency[index[link["target"]], index[link["source"]]]))
    json.dumps(d)  # strict JSON
    assert torch.isfinite(torch.tensor([n["activation"] for n in d["nodes"]])).all()


def test_cli_writes_page_and_json(tmp_path, capsys):
    rc = main(["graph", "-m", "zoo/toy-lm", "--prompt", PROMPT, "--target", " Moses", "-q", "-o",
               str(tmp_path / "g.html"), "--json-out", str(tmp_path / "g.json")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "logit ' Moses'" in out and "replacement score" in out
    d = json.loads((tmp_path / "g.json").read_text())
    assert [n for n in d["nodes"] if n["feature_type"] == "logit"][0]["is_target_logit"]
    assert "cl-graph-data" in (tmp_path / "g.html").read_text()


@pytest.mark.browser
def test_page_in_chromium(data, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    _, _, d = data
    page = tmp_path / "graph.html"
    page.write_text(graph_page(d, feature_card=lambda layer, latent: f"<i>dashboard L{layer} #{latent}</i>"))
    assert "http://" not in page.read_text().replace("http://www.w3.org/2000/svg", "")
    with headless_chromium(window=(1400, 1000)) as driver:
        driver.get(page.resolve().as_uri())
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors
        assert driver.execute_script("return document.querySelectorAll('.cl-node').length") == len(d["nodes"])
        assert driver.execute_script("return document.querySelectorAll('.cl-edge').length") == len(d["links"])
        feat = next(e for e in driver.find_elements(By.CSS_SELECTOR, "circle.cl-node"))
        driver.execute_script("arguments[0].scrollIntoView({block: 'center', inline: 'center'})", feat)
        ActionChains(driver).move_to_element(feat).perform()
        card = driver.find_element(By.ID, "cl-card")
        assert card.is_displayed() and "dashboard L" in card.text and "raises" in card.text
        nodes = driver.find_elements(By.CSS_SELECTOR, "circle.cl-node")
        for n in nodes[:2]:
            driver.execute_script("arguments[0].dispatchEvent(new MouseEvent('click'))", n)
        assert driver.execute_script("return window.CL_GRAPH.qParams.pinnedIds.length") == 2
        driver.find_element(By.ID, "cl-group").click()
        assert driver.execute_script("return window.CL_GRAPH.qParams.supernodes.length") == 1
        assert not [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
