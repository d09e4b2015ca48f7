"""SAE features as units (circuitlab.neurons.features): records against neuron_records through an identity SAE
on the MLP neurons (latent i = relu(neuron i): the same ranking, the activations relu'd), against brute-force
activations of a shipped SAE, and scores against a correlation computed here with numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import circuitlab as cl
from circuitlab.features import SAE, SAEConfig, load_sae
from circuitlab.neurons.explain import NgramExplainer, NgramSimulator, neuron_records
from circuitlab.neurons.features import explain_features, feature_records

LATENTS = [5, 17, 300]


@pytest.fixture(scope="module")
def toy():
    return cl.load_model("zoo/toy-lm")


@pytest.fixture(scope="module")
def texts():
    path = Path(cl.__file__).parent / "zoo" / "weights" / "toy-lm" / "heldout.txt"
    return [t for t in path.read_text().splitlines() if t.strip()][:30]


def identity_sae(d: int, layer: int) -> SAE:
    sae = SAE(SAEConfig("standard", d, d, hook_name=f"blocks.{layer}.mlp.hook_post"))
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(d))
        sae.W_dec.copy_(torch.eye(d))
    return sae


def test_identity_sae_on_the_neurons_gives_the_neuron_records(toy, texts):
    neurons = [0, 7, 100, 200, 300]
    sae = identity_sae(toy.cfg.d_mlp, 1)
    feats = feature_records(toy, sae, texts, neurons, n_explain=3, n_top=3, n_random=3, max_tokens=24)
    ref = neuron_records(toy, texts, 1, neurons, n_explain=3, n_top=3, n_random=3, max_tokens=24)
    compared = 0
    for f, n in zip(feats, ref):
        assert f.neuron == n.neuron and f.layer == 1
        if min(e.max_activation for e in n.explain + n.top) <= 0:
            continue  # relu ties the texts where the neuron stays negative: their order is not comparable
        compared += 1
        # the same ranking of peaks (texts with equal peaks may come in another order: topk does not keep it)
        fp = [e.max_activation for e in f.explain + f.top]
        np.testing.assert_allclose(fp, [max(e.max_activation, 0) for e in n.explain + n.top], atol=1e-5)
        by_text = {e.text: e for e in n.explain + n.top}
        assert set(by_text) == {e.text for e in f.explain + f.top}
        for fe in f.explain + f.top:
            assert fe.tokens == by_text[fe.text].tokens
            np.testing.assert_allclose(fe.activations, np.maximum(by_text[fe.text].activations, 0), atol=1e-5)
    assert compared >= 2


def test_records_of_a_shipped_sae_match_brute_force(toy, texts):
    sae = load_sae("toy-lm/res-2")
    texts = texts[:16]
    recs = feature_records(toy, sae, texts, LATENTS, n_explain=3, n_top=3, n_random=4, max_tokens=20)
    acts = []
    with torch.no_grad():
        for t in texts:
            _, cache = toy.run_with_cache(toy.to_tokens(t)[:, :20], names_filter=sae.cfg.hook_name, stop_at_layer=3)
            acts.append(sae.encode(cache[sae.cfg.hook_name][0])[1:, LATENTS])
    for j, r in enumerate(recs):
        peaks = torch.tensor([float(a[:, j].max()) for a in acts])
        ranked = torch.argsort(-peaks, stable=True)[:6].tolist()
        assert [e.text for e in r.explain] == ranked[0::2] and [e.text for e in r.top] == ranked[1::2]
        for e in r.explain + r.top + r.random:
            np.testing.assert_allclose(e.activations, acts[e.text][:, j].numpy(), rtol=1e-5, atol=1e-6)
        assert not {e.text for e in r.random} & set(ranked) and len(r.random) == 4


def test_scores_are_the_correlation_of_the_simulation(toy, texts):
    res = explain_features(toy, "toy-lm/res-2", texts, LATENTS, n_explain=5, n_top=5, n_random=5)
    assert res.scores.labels["neuron"] == [f"F{i}" for i in LATENTS]
    assert "latents of SAE" in res.summary()
    assert "F17" in res.to_html()  # the latents are labelled as latents (render.features)
    sim = NgramSimulator()
    for j, r in enumerate(res.records):
        assert res.explanations[j] == NgramExplainer().explain(r.explain)
        true = np.concatenate([e.activations for e in r.held_out])
        pred = np.concatenate([sim.simulate(res.explanations[j], e.tokens) for e in r.held_out])
        want = 0.0 if pred.std() == 0 or true.std() == 0 else np.corrcoef(true, pred)[0, 1]
        assert res.scores.values[j, 0].item() == pytest.approx(want, abs=1e-6)


def test_the_features_vs_neurons_rule():
    from circuitlab.errors import NotApplicable
    from circuitlab.reproduce.features_vs_neurons import judge, measure

    a, b, v = judge([0.5, 0.6], [0.1, 0.55])  # pairs: 0.5 > 0.1, 0.5 < 0.55, 0.6 > 0.1, 0.6 > 0.55
    assert a and b and v["p_feature_wins"] == 0.75
    a, b, _ = judge([0.3, 0.3], [0.3, 0.3])  # all ties: half
    assert not a and not b
    with pytest.raises(NotApplicable, match="no shipped residual SAE"):
        measure(cl.load_model("zoo/attn-only-1l"), 0)
