"""Attribution graphs (circuitlab.graphs) on zoo/toy-lm with its shipped transcoders, against independent references:
the model's own logits (the replacement model is exact), linearity in a feature (scaling twice moves twice), exact
perturbations of single sources in the frozen model (an edge is the change when its source is removed), one backward
pass per node, the all-sources-zero run (edges + bias = input), the influence as an explicit power series, and the
interventions' frozen setting (float precision)."""

from __future__ import annotations

import pytest
import torch

import circuitlab as cl
from circuitlab.errors import InputError
from circuitlab.graphs import (attribution_graph, attribution_graph_reference, graph_scores, local_replacement,
                               node_influence, prune_graph, run_replacement)
from circuitlab.graphs.attribution import logit_weights, normalized_adjacency
from circuitlab.graphs.interventions import intervention_agreement, logit_inputs, steer_feature

PROMPT = "And the LORD said unto"


@pytest.fixture(scope="module")
def toy():
    return cl.load_model("zoo/toy-lm")


@pytest.fixture(scope="module")
def graph(toy):
    return attribution_graph(toy, "toy-lm", PROMPT)


def test_replacement_reproduces_the_model(toy, graph):
    rep = graph.replacement
    clean = toy(rep.tokens[None])[0]
    with torch.no_grad():
        got = run_replacement(rep)[0]
    torch.testing.assert_close(got, clean, atol=2e-5, rtol=0)
    assert rep.features.shape[0] == 4 * rep.n_pos * 16  # TopK k=16 at every layer and position


def test_linear_in_a_feature(graph):
    rep = graph.replacement
    i = int(rep.features.shape[0]) // 3
    outs = []
    for c in (1.0, 2.0, 3.0):
        acts = rep.activations.clone()
        acts[i] *= c
        with torch.no_grad():
            outs.append(run_replacement(rep, activations=acts)[0].double())
    d1, d2 = outs[1] - outs[0], outs[2] - outs[0]
    assert float(d1.abs().max()) > 1e-4
    torch.testing.assert_close(d2, 2 * d1, atol=3e-5, rtol=0)


def _target_input(graph, t, acts=None, errs=None, embs=None):
    """Target node t's input by a plain forward pass of the frozen model (no gradients)."""
    rep = graph.replacement
    cap = {}
    with torch.no_grad():
        logits = run_replacement(rep, activations=acts, errors=errs, embeddings=embs, capture=cap)
    if graph.kinds[t] == "logit":
        j = t - graph.slices()["logit"].start
        return float(logit_inputs(graph, logits)[0, j])
    L, p, lat = int(graph.layer[t]), int(graph.pos[t]), int(graph.index[t])
    tc = rep.transcoders[L]
    return float(cap[f"mlp_in.{L}"][0, p] @ tc.W_enc[:, lat] + tc.b_enc[lat])


def test_edges_are_exact_perturbations(graph):
    """Removing one source (its activation, error or embedding set to zero) changes the target's input by exactly
    the edge: the frozen model is affine in each source."""
    rep = graph.replacement
    sl = graph.slices()
    logit0 = sl["logit"].start
    targets = [logit0, int(((graph.layer == 3) & (graph.pos == rep.n_pos - 1)).nonzero()[0, 0])]
    for t in targets:
        full = _target_input(graph, t)
        row = graph.adjacency[t]
        src_feats = row[sl["feature"]].abs().topk(2).indices.tolist()
        for s in src_feats:
            acts = rep.activations.clone()
            acts[s] = 0
            assert full - _target_input(graph, t, acts=acts) == pytest.approx(float(row[s]), abs=2e-4)
        e = int(row[sl["error"]].abs().argmax())
        errs = rep.errors.clone()
        errs.view(-1, errs.shape[-1])[e] = 0
        assert full - _target_input(graph, t, errs=errs) == pytest.approx(float(row[sl["error"].start + e]), abs=2e-4)
        p = int(row[sl["embedding"]].abs().argmax())
        embs = rep.embeddings.clone()
        embs[p] = 0
        assert full - _target_input(graph, t, embs=embs) == pytest.approx(float(row[sl["embedding"].start + p]),
                                                                            abs=2e-4)


def test_batched_equals_one_backward_per_node(toy, graph):
    rows = [5, 200, 300, graph.n_nodes - 1]  # features of layers 0, 2, 3 and a logit
    ref = attribution_graph_reference(toy, "toy-lm", PROMPT, rows=rows)
    assert ref.meta["backward_passes"] == len(rows)
    torch.testing.assert_close(graph.adjacency[rows], ref.adjacency[rows], atol=1e-5, rtol=1e-5)
    small = attribution_graph(toy, "toy-lm", PROMPT, max_memory=2**25)  # smaller batches
    assert small.meta["batch"] < graph.meta["batch"]
    torch.testing.assert_close(small.adjacency, graph.adjacency, atol=1e-5, rtol=1e-5)


def test_completeness_edges_plus_bias_is_the_input(graph):
    rep = graph.replacement
    targets = [i for i in range(graph.n_nodes) if graph.kinds[i] in ("feature", "logit")]
    # the bias term independently: every source at zero
    zero_in = {t: _target_input(graph, t, acts=torch.zeros_like(rep.activations), errs=torch.zeros_like(rep.errors),
                                embs=torch.zeros_like(rep.embeddings)) for t in targets[::97] + targets[-1:]}
    for t, bias in zero_in.items():
        assert float(graph.adjacency[t].sum()) + bias == pytest.approx(float(graph.inputs[t]), abs=5e-4)
        assert float(graph.inputs[t]) == pytest.approx(_target_input(graph, t), abs=5e-4)
    # a feature's input is its pre-activation, which TopK kept as its activation
    f = graph.slices()["feature"]
    torch.testing.assert_close(graph.inputs[f], graph.activation[f], atol=2e-5, rtol=1e-5)


def test_influence_and_scores_by_closed_form(graph):
    """Influence against the closed form w ((I - N)^-1 - I) (a linear solve; the code sums the series)."""
    w = logit_weights(graph).double()
    n = normalized_adjacency(graph.adjacency).double()
    eye = torch.eye(n.shape[0], dtype=torch.float64)
    series = torch.linalg.solve((eye - n).T, w) - w
    torch.testing.assert_close(node_influence(graph.adjacency, logit_weights(graph)).double(), series,
                               atol=1e-5, rtol=1e-4)
    sl = graph.slices()
    rs = float(series[sl["embedding"]].sum() / (series[sl["embedding"]].sum() + series[sl["error"]].sum()))
    out = series + w
    cs = float(((1 - n[:, sl["error"]].sum(1)) * out).sum() / out.sum())
    sc = graph_scores(graph)
    assert sc["replacement_score"] == pytest.approx(rs, abs=1e-5)
    assert sc["completeness_score"] == pytest.approx(cs, abs=1e-5)
    pr = prune_graph(graph, node_threshold=0.8, edge_threshold=0.98)
    assert pr.node_mask[sl["embedding"].start:].all()  # tokens and logits always kept
    assert 0 < pr.scores["features_kept"] < pr.scores["features_total"]
    kept_edges = pr.edge_mask.nonzero()
    assert pr.node_mask[kept_edges[:, 0]].all() and pr.node_mask[kept_edges[:, 1]].all()
    everything = prune_graph(graph, node_threshold=1.0, edge_threshold=1.0)
    assert everything.scores["edges_kept"] >= pr.scores["edges_kept"]


def test_interventions_frozen_are_exact(graph):
    res = intervention_agreement(graph, n_features=4, factor=0.0)
    assert res["frozen"]["max_abs_error"] < 1e-4
    assert res["frozen"]["pearson"] > 0.999999
    for key in ("replacement", "model", "model_vs_direct"):
        assert len(res[key]["actual"]) == 4
    i = graph.slices()["feature"].start
    a = float(graph.activation[i])
    before = steer_feature(graph, i, a)
    after = steer_feature(graph, i, 3 * a)
    lo = graph.slices()["logit"]
    torch.testing.assert_close(after - before, graph.adjacency[lo, i] * 2, atol=2e-5, rtol=0)


def test_qk_attribution_sums_to_the_attention_score(toy, graph):
    """The bilinear decomposition (every query-side node x every key-side node, plus the two bias lines) adds up to
    the model's own pre-softmax score (TransformerLens's hook_attn_scores), for a rotary model."""
    from circuitlab.graphs import qk_attribution

    res = qk_attribution(graph, "L2H1", -1, 2)
    _, cache = toy.run_with_cache(graph.replacement.tokens[None])
    score = float(cache["blocks.2.attn.hook_attn_scores"][0, 1, -1, 2])
    assert res.score == pytest.approx(score, abs=1e-5)
    assert float(res.matrix.double().sum()) == pytest.approx(score, abs=1e-4)
    # a node at a later position than the key cannot touch the key vector
    sl = graph.slices()["feature"]
    later = ((graph.pos[sl] > 2)).nonzero()[:, 0]
    assert float(res.key_contributions[later].abs().max()) == 0.0
    assert len(res.top_pairs(3)) == 3
    with pytest.raises(InputError, match="key_pos"):
        qk_attribution(graph, (2, 1), 1, 3)


def test_bad_inputs(toy, graph):
    with pytest.raises(InputError, match="logit_mass"):
        attribution_graph(toy, "toy-lm", PROMPT, logit_mass=1.5)
    with pytest.raises(InputError, match="node_threshold"):
        prune_graph(graph, node_threshold=2)
    with pytest.raises(InputError, match="one per MLP layer"):
        local_replacement(toy, ["toy-lm/tc-0"], PROMPT)
    with pytest.raises(InputError, match="no active feature"):
        steer_feature(graph, (0, 0, 10**6), 1.0)
