"""Attention rollout and flow (circuitlab.attention.flow) against independent references: the attention maps
against TransformerLens's own cache; rollout against a hand-written numpy product of the cached patterns; flow on a
hand-made graph against a brute-force enumeration of cuts (max-flow = min-cut), and on zoo/toy-lm against networkx
run here on capacities built here; input ablation against one forward pass per replaced token; bad input."""

from __future__ import annotations

import itertools

import networkx as nx
import numpy as np
import pytest
import torch

import circuitlab
from circuitlab.attention import flow as ro
from circuitlab.errors import InputError

PROMPTS = ["the cat sat on the", "the dog sat on the"]  # 6 tokens each on zoo/toy-lm (BOS included)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return circuitlab.load_model("zoo/toy-lm")


@pytest.fixture(scope="module")
def patterns(model):
    """Head-averaged patterns from TransformerLens's cache, numpy float64 [layer, batch, q, k]."""
    _, cache = model.run_with_cache(model.to_tokens(PROMPTS))
    return np.stack([cache["pattern", layer].double().mean(1).numpy() for layer in range(model.cfg.n_layers)])


def mixed_np(a: np.ndarray, residual: float = 0.5) -> np.ndarray:
    m = residual * np.eye(a.shape[-1]) + (1 - residual) * a
    return m / m.sum(-1, keepdims=True)


def test_maps_match_the_cache_and_do_not_depend_on_batching(model, patterns):
    maps = ro.attention_maps(model, PROMPTS)
    assert maps.axes == ("layer", "prompt", "query", "key")
    np.testing.assert_allclose(maps.values.numpy(), patterns, atol=1e-6)
    small = ro.attention_maps(model, PROMPTS, max_memory=1)  # one prompt per batch
    np.testing.assert_allclose(small.values.numpy(), patterns, atol=1e-6)


def test_rollout_equals_a_hand_written_product(model, patterns):
    for residual in (0.5, 0.2):
        full = ro.rollout(model, PROMPTS, pos=None, residual=residual).values.double().numpy()
        for b in range(len(PROMPTS)):
            expected = np.eye(patterns.shape[-1])
            for layer in range(patterns.shape[0]):
                expected = mixed_np(patterns[layer, b], residual) @ expected
            np.testing.assert_allclose(full[b], expected, atol=1e-5)
            np.testing.assert_allclose(full[b].sum(-1), 1.0, atol=1e-5)  # rows sum to 1
            assert np.allclose(np.triu(full[b], 1), 0)  # causal: nothing from later tokens
    last = ro.rollout(model, PROMPTS).values
    np.testing.assert_allclose(last.numpy(), ro.rollout(model, PROMPTS, pos=None).values[:, -1].numpy())
    assert ro.rollout(model, PROMPTS, pos=2).values.shape == (2, 6)


def test_rollout_of_one_layer_is_the_mixed_attention():
    one = circuitlab.load_model("zoo/attn-only-1l")
    tokens = torch.randint(0, one.cfg.d_vocab, (2, 7), generator=torch.Generator().manual_seed(1))
    _, cache = one.run_with_cache(tokens)
    a = cache["pattern", 0].double().mean(1).numpy()
    full = ro.rollout(one, tokens, pos=None).values.double().numpy()
    np.testing.assert_allclose(full, 0.5 * np.eye(7) + 0.5 * a, atol=1e-6)  # rows of A sum to 1 already
    # residual=1: only the identity; residual=0: raw attention
    np.testing.assert_allclose(ro.rollout(one, tokens, pos=None, residual=1.0).values.numpy(),
                               np.broadcast_to(np.eye(7), (2, 7, 7)), atol=1e-6)
    np.testing.assert_allclose(ro.rollout(one, tokens, pos=None, residual=0.0).values.double().numpy(), a, atol=1e-6)
    np.testing.assert_allclose(ro.raw_attention(one, tokens, pos=3).values.double().numpy(), a[:, 3], atol=1e-6)


def brute_force_max_flow(caps: np.ndarray, pos: int, sink: int) -> float:
    """Max flow = min cut, by enumerating every set of nodes on the source side (tiny graphs only)."""
    n_layers, seq = caps.shape[0], caps.shape[-1]
    nodes = [(layer, i) for layer in range(n_layers + 1) for i in range(seq)]
    source, target = (n_layers, pos), (0, sink)
    free = [v for v in nodes if v not in (source, target)]
    best = float("inf")
    for bits in itertools.product((0, 1), repeat=len(free)):
        side = {source} | {v for v, bit in zip(free, bits) if bit}
        cut = sum(caps[layer, q, k] for layer in range(n_layers) for q in range(seq) for k in range(seq)
                  if (layer + 1, q) in side and (layer, k) not in side)
        best = min(best, cut)
    return best


def test_flow_on_a_hand_made_graph():
    # two layers, three positions, causal (lower triangular) rows that sum to 1
    caps = np.array([[[1.0, 0, 0], [0.7, 0.3, 0], [0.2, 0.2, 0.6]],
                     [[1.0, 0, 0], [0.1, 0.9, 0], [0.5, 0.4, 0.1]]])
    flows = ro.flow_values(torch.tensor(caps), pos=2).numpy()
    scipy_flows = ro.flow_values(torch.tensor(caps), pos=2, solver="scipy").numpy()
    for j in range(3):
        assert flows[j] == pytest.approx(brute_force_max_flow(caps, 2, j), abs=1e-12)
        assert scipy_flows[j] == pytest.approx(flows[j], abs=1e-8)
    # by hand: to token 2 only the path (2,2)->(1,2)->(0,2): min(0.1, 0.6) = 0.1
    assert flows[2] == pytest.approx(0.1)
    # token 1: the paths (2,2)->(1,1)->(0,1), min(0.4, 0.3), and (2,2)->(1,2)->(0,1), min(0.1, 0.2), share no edge
    assert flows[1] == pytest.approx(min(0.4, 0.3) + min(0.1, 0.2))
    assert ro.flow_values(torch.tensor(caps), pos=1).numpy()[2] == 0  # after pos: no flow


def test_flow_on_toy_lm_equals_networkx_run_here(model, patterns):
    res = ro.attention_flow(model, PROMPTS, pos=-2)
    n_layers, seq = patterns.shape[0], patterns.shape[-1]
    pos = seq - 2
    assert res.axes == ("prompt", "key") and res.values.shape == (2, seq)
    for b in range(len(PROMPTS)):
        caps = [mixed_np(patterns[layer, b]) for layer in range(n_layers)]
        graph = nx.DiGraph()
        for layer in range(n_layers):
            for q in range(seq):
                for k in range(q + 1):
                    graph.add_edge(("in", layer + 1, q), ("in", layer, k), capacity=float(caps[layer][q, k]))
        for j in range(seq):
            expected = nx.maximum_flow_value(graph, ("in", n_layers, pos), ("in", 0, j)) if j <= pos else 0.0
            got = float(res.values[b, j])
            assert got == pytest.approx(expected, abs=1e-5)
            # at most what leaves the output node (1) and what reaches the token from the layer above
            assert got <= min(1.0, caps[0][:, j].sum()) + 1e-6


def test_scipy_solver_agrees_on_a_longer_prompt(model):
    pytest.importorskip("scipy")
    tokens = torch.randint(0, model.cfg.d_vocab, (1, 24), generator=torch.Generator().manual_seed(2))
    exact = ro.attention_flow(model, tokens, pos=20)
    fast = ro.attention_flow(model, tokens, pos=20, solver="scipy")
    assert fast.meta["solver"] == "scipy"
    np.testing.assert_allclose(fast.values.numpy(), exact.values.numpy(), atol=1e-6)
    assert float(exact.values[0, 21:].abs().sum()) == 0


def test_ablation_importance_equals_one_forward_per_token(model):
    res = ro.ablation_importance(model, PROMPTS, pos=-1, baseline=7, max_memory=1)
    tokens = model.to_tokens(PROMPTS)
    for b in range(len(PROMPTS)):
        with torch.no_grad():
            clean = model(tokens[b:b + 1])[0, -1].double().log_softmax(-1)
            y = int(clean.argmax())
            for j in range(tokens.shape[1]):
                row = tokens[b:b + 1].clone()
                row[0, j] = 7
                drop = float(clean[y] - model(row)[0, -1].double().log_softmax(-1)[y])
                assert float(res.values[b, j]) == pytest.approx(drop, abs=1e-4)
        assert res.meta["targets"][b] == y


def test_correlations_are_spearman_of_the_scores(model):
    from scipy.stats import spearmanr

    res = ro.correlations(model, PROMPTS, baseline=7)
    assert res.axes == ("method", "prompt") and res.values.shape == (3, 2)
    assert res.meta["first"] == 1  # the start token is left out
    ablation = ro.ablation_importance(model, PROMPTS, baseline=7).values
    for i, method in enumerate(("raw", "rollout", "flow")):
        scores = {"raw": ro.raw_attention, "rollout": ro.rollout, "flow": ro.attention_flow}[method](model, PROMPTS)
        for b in range(2):
            expected = spearmanr(scores.values[b, 1:].numpy(), ablation[b, 1:].numpy()).statistic
            assert float(res.values[i, b]) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("call, word", [
    (lambda m: ro.rollout(m, PROMPTS, pos=6), "pos"),
    (lambda m: ro.rollout(m, PROMPTS, pos=-7), "pos"),
    (lambda m: ro.attention_flow(m, PROMPTS, pos=9), "pos"),
    (lambda m: ro.raw_attention(m, PROMPTS, pos="last"), "pos"),
    (lambda m: ro.rollout(m, PROMPTS, residual=1.5), "residual"),
    (lambda m: ro.rollout(m, PROMPTS, residual=-0.1), "residual"),
    (lambda m: ro.attention_flow(m, PROMPTS, residual=float("nan")), "residual"),
    (lambda m: ro.rollout(m, []), "prompts"),
    (lambda m: ro.attention_flow(m, PROMPTS, solver="lp"), "solver"),
    (lambda m: ro.flow_values(torch.zeros(2, 3, 3), pos=3), "pos"),
    (lambda m: ro.attention_flow(m, ""), "empty"),
    (lambda m: ro.attention_maps(m, PROMPTS, max_memory=0), "max_memory"),
    (lambda m: ro.ablation_importance(m, PROMPTS, baseline=-1), "baseline"),
    (lambda m: ro.mixed_attention(torch.zeros(2, 3), residual=2), "residual"),
    (lambda m: ro.mixed_attention(torch.zeros(2, 3)), "maps"),
    (lambda m: ro.correlations(m, PROMPTS, skip_bos="yes"), "skip_bos"),
])
def test_bad_input(model, call, word):
    with pytest.raises(InputError, match=word):
        call(model)


def test_gradient_importance_is_complete_against_a_direct_forward(model):
    """Integrated gradients of log p(y) add up to log p(y) on the prompt minus log p(y) with every token but BOS
    given the padding token's embedding, measured here by a forward pass with the embeddings replaced."""
    imp = ro.gradient_importance(model, PROMPTS, pos=-1, steps=128)
    tokens = model.to_tokens(PROMPTS)
    pad = model.tokenizer.pad_token_id
    assert pad is not None
    for b in range(len(PROMPTS)):
        y = imp.meta["targets"][b]
        with torch.no_grad():
            clean = model(tokens[b:b + 1])[0, -1].log_softmax(-1)[y]

            def to_pad(embed, hook):
                embed[:, 1:] = model.W_E[pad]
                return embed

            base = model.run_with_hooks(tokens[b:b + 1], fwd_hooks=[("hook_embed", to_pad)])[0, -1].log_softmax(-1)[y]
        assert imp.values[b].sum().item() == pytest.approx((clean - base).item(), abs=2e-3)
        assert imp.values[b, 0] == 0  # BOS stays in the baseline
    corr = ro.correlations(model, PROMPTS, reference="gradients")
    assert corr.meta["reference"] == "gradients" and corr.values.shape == (3, 2)
    assert ((corr.values.abs() <= 1) | corr.values.isnan()).all()
    with pytest.raises(InputError, match="reference"):
        ro.correlations(model, PROMPTS, reference="saliency")
