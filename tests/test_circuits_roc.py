"""circuitlab.circuits.roc and circuitlab.circuits.reference.

The ROC reference is independent of the code under test: scikit-learn's ``roc_auc_score`` when installed, else a
brute-force pairwise AUC (the probability that a random positive outranks a random negative, ties one half),
written here. The reference circuit of zoo/attn-only-2l is checked for its roles and for exact path patching.
"""

import math
import random

import pytest
import torch

from circuitlab.circuits import Circuit, Graph
from circuitlab.circuits.roc import roc, roc_auc, roc_points, trapezoid_auc
from circuitlab.errors import InputError

try:  # the independent reference; not a dependency of circuitlab
    from sklearn.metrics import roc_auc_score
except ImportError:  # pragma: no cover - the venv has no scikit-learn
    roc_auc_score = None


def pairwise_auc(keys, labels) -> float:
    pos = [k for k, y in zip(keys, labels) if y]
    neg = [k for k, y in zip(keys, labels) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def reference_auc(keys, labels) -> float:
    if roc_auc_score is not None:
        return float(roc_auc_score([int(y) for y in labels], keys))
    return pairwise_auc(keys, labels)


GRAPH = Graph(2, 4, attn_only=True, model="zoo/attn-only-2l")
TRUE = ["L0H1 -> L1H2.k", "L0H1 -> L1H3.k", "L1H2 -> logits", "L1H3 -> logits", "embed -> L0H1.v",
        "embed -> L1H2.q"]


def scored(seed: int, ties: bool = False) -> Circuit:
    rng = random.Random(seed)
    scores = [rng.choice([-1.0, 0.0, 0.5, 2.0]) if ties else rng.gauss(0, 1) for _ in GRAPH.edges]
    return Circuit.full(GRAPH, scores=scores, title="random scorer")


@pytest.mark.parametrize("seed,ties", [(0, False), (1, False), (2, True), (3, True)])
@pytest.mark.parametrize("by", ["abs", "signed", "negative"])
def test_edge_auc_matches_pairwise_reference(seed, ties, by):
    reference = Circuit.from_edges(GRAPH, TRUE, title="truth")
    s = scored(seed, ties)
    key = {"abs": abs, "signed": lambda x: x, "negative": lambda x: -x}[by]
    keys = [key(s.score(e)) for e in GRAPH.edges]
    labels = [e in reference for e in GRAPH.edges]
    curve = roc(s, reference, by=by)
    assert curve.auc == pytest.approx(reference_auc(keys, labels), abs=1e-12)
    assert curve.auc == pytest.approx(pairwise_auc(keys, labels), abs=1e-12)
    assert curve.axes == ("point", "rate") and curve.labels["rate"] == ["fpr", "tpr"]
    fpr, tpr = curve.fpr, curve.tpr
    assert (fpr[0], tpr[0]) == (0.0, 0.0) and (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert all(b >= a for a, b in zip(fpr, fpr[1:])) and all(b >= a for a, b in zip(tpr, tpr[1:]))
    assert curve.meta["positives"] == len(TRUE) and curve.meta["negatives"] == GRAPH.n_edges - len(TRUE)


def test_node_level_is_max_over_incident_edges():
    reference = Circuit.from_edges(GRAPH, TRUE, title="truth")
    s = scored(5)
    for nodes in ("component", "acdc"):
        def node_of(end, sender):
            if sender:
                return end
            return end if nodes == "acdc" and end[-2:] in (".q", ".k", ".v") else end.split(".")[0]
        keys = {}
        for (a, b) in GRAPH.edges:
            for n in (node_of(a, True), node_of(b, False)):
                keys[n] = max(keys.get(n, -math.inf), abs(s.score((a, b))))
        truth = {node_of(a, True) for a, _ in reference} | {node_of(b, False) for _, b in reference}
        names = sorted(keys)
        curve = roc(s, reference, level="node", nodes=nodes)
        assert curve.auc == pytest.approx(reference_auc([keys[n] for n in names], [n in truth for n in names]))
        assert curve.meta["positives"] == len(truth)
        assert curve.meta["positives"] + curve.meta["negatives"] == (10 if nodes == "component" else 34)


def test_perfect_chance_and_binary_scorers():
    reference = Circuit.from_edges(GRAPH, TRUE)
    perfect = Circuit.full(GRAPH, scores=[1.0 if e in reference else 0.1 for e in GRAPH.edges])
    assert roc_auc(perfect, reference) == 1.0
    inverted = Circuit.full(GRAPH, scores=[0.0 if e in reference else 1.0 for e in GRAPH.edges])
    assert roc_auc(inverted, reference) == 0.0
    flat = Circuit.full(GRAPH, scores=[0.3] * GRAPH.n_edges)
    assert roc_auc(flat, reference) == 0.5
    # an unscored circuit is a yes/no scorer: one point between the ends
    kept = Circuit.from_edges(GRAPH, TRUE[:3] + ["embed -> logits"])
    curve = roc(kept, reference)
    assert len(curve.fpr) == 3
    assert curve.fpr[1] == pytest.approx(1 / (GRAPH.n_edges - len(TRUE))) and curve.tpr[1] == pytest.approx(0.5)
    # a partly scored circuit: missing edges rank last
    part = perfect.top(4)
    assert roc_auc(part, reference) == pytest.approx(pairwise_auc(
        [abs(part.score(e)) if e in part else -math.inf for e in GRAPH.edges], [e in reference for e in GRAPH.edges]))


def test_points_and_trapezoid_helpers():
    fpr, tpr, thr = roc_points([3, 2, 2, 1], [True, False, True, False])
    assert fpr == [0, 0, 0.5, 1] and tpr == [0, 0.5, 1, 1] and thr[0] == math.inf
    assert trapezoid_auc(fpr, tpr) == pytest.approx(pairwise_auc([3, 2, 2, 1], [True, False, True, False]))


def test_roc_bad_inputs():
    reference = Circuit.from_edges(GRAPH, TRUE)
    s = scored(0)
    with pytest.raises(InputError, match="level"):
        roc(s, reference, level="head")
    with pytest.raises(InputError, match="by"):
        roc(s, reference, by="size")
    with pytest.raises(InputError, match="different graphs"):
        roc(Circuit.full(Graph(2, 2, attn_only=True), scores=[0.0] * Graph(2, 2, attn_only=True).n_edges), reference)
    with pytest.raises(InputError, match="reference edges and other edges"):
        roc(s, Circuit(GRAPH, []))
    with pytest.raises(InputError, match="not finite"):
        roc(Circuit.full(GRAPH, scores=[math.nan] * GRAPH.n_edges), reference)
    with pytest.raises(InputError, match="two Circuits"):
        roc(s, TRUE)
    # a reference naming nodes or edges the model's graph lacks
    with pytest.raises(InputError, match="L2H0"):
        Circuit.from_edges(GRAPH, ["L0H1 -> L2H0.k"])
    with pytest.raises(InputError, match="MLP0"):
        Circuit.from_nodes(GRAPH, ["embed", "MLP0", "logits"])


def test_roc_renders_as_svg_curve():
    import xml.etree.ElementTree as ET

    curve = roc(scored(0), Circuit.from_edges(GRAPH, TRUE, title="truth"))
    html = curve.to_html()
    svg = html[html.index("<svg"): html.index("</svg>") + 6]
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    assert "AUC" in html


# ---------------------------------------------------------------------------------------------------------
# The reference induction circuit of zoo/attn-only-2l
# ---------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def attn_only():
    import circuitlab

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield circuitlab.load_model("zoo/attn-only-2l")
    torch.set_num_threads(threads)


def test_induction_reference_of_attn_only_2l(attn_only):
    from circuitlab.circuits.reference import INDUCTION_THRESHOLD, induction_reference

    ref = induction_reference("zoo/attn-only-2l")
    meta = ref.meta
    assert ref.scores is None and ref.model == "zoo/attn-only-2l"
    assert sorted(meta["induction_heads"]) == ["L1H0", "L1H1", "L1H2", "L1H3"]
    assert meta["previous_token_heads"] and all(h.startswith("L0") for h in meta["previous_token_heads"])
    # the behaviour is there: repeated tokens are far better predicted than fresh ones
    assert meta["gap"] > 1.0
    # every kept edge clears the threshold; every dropped candidate does not
    for name, effect in meta["effects"].items():
        s, r = (x.strip() for x in name.split("->"))
        assert ((s, r) in ref) == (abs(effect) >= INDUCTION_THRESHOLD * abs(meta["gap"]))
    # the textbook edges: induction heads -> logits, some previous-token head -> each induction head's key,
    # the embedding -> the previous-token heads' values; not the direct path embed -> logits
    for h in meta["induction_heads"]:
        assert (h, "logits") in ref
        assert any((p, f"{h}.k") in ref for p in meta["previous_token_heads"])
    assert all(("embed", f"{p}.v") in ref for p in meta["previous_token_heads"])
    assert ("embed", "logits") not in ref
    # cached, and handed out as copies
    again = induction_reference("zoo/attn-only-2l")
    again.meta["gap"] = 0
    assert induction_reference("zoo/attn-only-2l").meta["gap"] == meta["gap"]


def test_edge_patch_equals_path_patching(attn_only):
    from circuitlab.circuits.reference import edge_patched_value, induction_task
    from circuitlab.patching import path_patch

    graph = Graph.from_model(attn_only)
    clean, corrupted, metric = induction_task(attn_only, seq_len=6, n_seqs=4, seed=3)
    for sender, receiver in [("L0H1", "L1H2.k"), ("L0H3", "L1H0.q"), ("L1H2", "logits"), ("L0H0", "logits")]:
        mine = edge_patched_value(attn_only, graph, clean, corrupted, metric, (sender, receiver))
        theirs = float(path_patch(attn_only, clean, corrupted, metric, senders=sender,
                                  receivers="resid_final" if receiver == "logits" else receiver,
                                  direction="noising", progress=False).values[0])
        assert mine == pytest.approx(theirs, abs=2e-5)


def test_eap_ranks_the_reference_above_chance(attn_only):
    from circuitlab.circuits import eap, eap_ig
    from circuitlab.circuits.reference import induction_reference, induction_task

    ref = induction_reference("zoo/attn-only-2l")
    clean, corrupted, metric = induction_task(attn_only)
    # measured: EAP 0.654 (edges) / 0.775 (ACDC nodes); EAP-IG with 5 steps 0.883 / 0.858
    scores = eap(attn_only, clean, corrupted, metric)
    assert roc_auc(scores, ref) > 0.6 and roc_auc(scores, ref, level="node", nodes="acdc") > 0.7
    integrated = eap_ig(attn_only, clean, corrupted, metric, steps=5)
    assert roc_auc(integrated, ref) > 0.85 and roc_auc(integrated, ref, level="node", nodes="acdc") > 0.8
    # every component takes part in this reference: component-level node ROC has no negatives
    with pytest.raises(InputError, match="10 of the graph's 10 nodes"):
        roc(scores, ref, level="node")


def test_reference_naming_missing_nodes_is_an_input_error(attn_only):
    from circuitlab.circuits.reference import induction_reference, reference_from_edges

    with pytest.raises(InputError, match="L3H0"):
        reference_from_edges(attn_only, ["L0H1 -> L3H0.k"])
    with pytest.raises(InputError, match="MLP0"):
        reference_from_edges("zoo/attn-only-2l", [("MLP0", "logits")])
    with pytest.raises(InputError, match="threshold"):
        induction_reference(attn_only, threshold=1.5)
