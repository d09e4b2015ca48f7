"""Feature-level analyses (circuitlab.features.attribution) against independent computations: attribution
patching against a finite difference of the metric (the first-order term it approximates) and against the exact
ablation of each latent; exact ablation against hooks written here; steering at the last residual layer against
the final LayerNorm and W_U applied by hand; and patching, DLA and the logit lens run unchanged with an SAE
spliced in with its error term."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import circuitlab as cl
from circuitlab.features import load_sae, splice
from circuitlab.features.attribution import latent_ablation, latent_attribution, steer
from circuitlab.metrics import LogitDiff

PROMPT = "And the LORD said unto"
CORRUPT = "And the people said unto"


@pytest.fixture(scope="module")
def toy():
    return cl.load_model("zoo/toy-lm")


@pytest.fixture(scope="module")
def sae():
    return load_sae("toy-lm/res-1")


@pytest.fixture(scope="module")
def metric(toy):
    return LogitDiff(correct=" Moses", wrong=" the", model=toy)


def _with_latents(toy, sae, edit):
    """The metric's logits with the latents at the SAE's hook edited by ``edit(f)`` (in place; BOS untouched),
    the error term held at its clean value: TransformerLens hooks written here."""
    def hook(act, hook=None):
        f = sae.encode(act)
        err = act - sae.decode(f)
        g = f.clone()
        edit(g[:, 1:])
        return sae.decode(g) + err
    with torch.no_grad():
        return toy.run_with_hooks(PROMPT, fwd_hooks=[(sae.cfg.hook_name, hook)])


@pytest.fixture(scope="module")
def attr(toy, sae, metric):
    first = latent_attribution(toy, sae, PROMPT, metric)
    top = [i for i, _ in first.top(8)]
    return latent_attribution(toy, sae, PROMPT, metric, exact=top), top


def test_attribution_is_the_first_order_term(toy, sae, metric, attr):
    res, top = attr
    clean = float(metric(toy(PROMPT)).detach())
    assert res.clean_metric == pytest.approx(clean, abs=1e-4)
    eps = 1e-2
    for i in top[:4]:
        def shrink(g, i=i):
            g[..., i] *= 1 - eps
        fd = (float(metric(_with_latents(toy, sae, shrink))) - clean) / eps
        assert res.total.values[i].item() == pytest.approx(fd, rel=0.05, abs=2e-3)


def test_exact_ablation_matches_hooks_and_tracks_the_attribution(toy, sae, metric, attr):
    res, top = attr
    clean = float(metric(toy(PROMPT)).detach())
    for j, i in enumerate(top[:4]):
        def zero(g, i=i):
            g[..., i] = 0
        want = float(metric(_with_latents(toy, sae, zero))) - clean
        assert res.exact.values[j].item() == pytest.approx(want, abs=1e-4)
    a, e = res.total.values[top].numpy(), res.exact.values.numpy()
    assert np.corrcoef(a, e)[0, 1] > 0.8
    alone = latent_ablation(toy, sae, PROMPT, metric, top[:2], max_memory=10_000)  # one latent per pass
    np.testing.assert_allclose(alone.values.numpy(), e[:2], atol=1e-4)


def test_corrupted_baseline(toy, sae, metric):
    same = latent_attribution(toy, sae, PROMPT, metric, corrupted=PROMPT)
    assert float(same.total.values.abs().max()) == 0.0
    res = latent_attribution(toy, sae, PROMPT, metric, corrupted=CORRUPT)
    assert res.baseline == "corrupted" and res.per_position.values[0].abs().max() == 0  # BOS left out


@torch.no_grad()
def test_steering_at_the_last_layer_matches_the_unembedding(toy):
    sae3 = load_sae("toy-lm/res-3")
    latent, alpha = 7, 6.0
    s = steer(toy, sae3, PROMPT, latent, alpha, k=5)
    _, cache = toy.run_with_cache(PROMPT)
    resid = cache["blocks.3.hook_resid_post"][0].clone()
    resid[1:] += alpha * sae3.W_dec.detach()[latent]
    x = resid[-1] - resid[-1].mean()
    x = x / (x.pow(2).mean() + toy.cfg.eps).sqrt() * toy.ln_final.w + toy.ln_final.b
    steered = torch.log_softmax(x @ toy.W_U + toy.b_U, -1)
    clean = torch.log_softmax(toy(PROMPT)[0, -1], -1)
    want = torch.topk(steered - clean, 5)
    assert s.rises.token_ids[0].tolist() == want.indices.tolist()
    np.testing.assert_allclose(s.rises.values[0].numpy(), want.values.detach().numpy(), rtol=1e-3, atol=1e-4)
    kl = float((clean.exp() * (clean - steered)).sum())
    assert s.kl.values[0].item() == pytest.approx(kl, rel=1e-3, abs=1e-6)
    assert steer(toy, sae3, PROMPT, latent, 0.0).kl.values[0].item() == pytest.approx(0.0, abs=1e-6)


def test_spliced_model_runs_patching_dla_and_logit_lens_unchanged(toy, sae, metric):
    from circuitlab import attribution, patching

    before = patching.sweep(toy, PROMPT, CORRUPT, metric, "resid_pre", layers=[0, 2])
    dla = attribution.direct_logit_attribution(toy, PROMPT, " Moses")
    with splice(toy, sae, error_term=True):
        after = patching.sweep(toy, PROMPT, CORRUPT, metric, "resid_pre", layers=[0, 2])
        dla2 = attribution.direct_logit_attribution(toy, PROMPT, " Moses")
    np.testing.assert_allclose(after.values.numpy(), before.values.numpy(), atol=1e-4)
    np.testing.assert_allclose(dla2.values.numpy(), dla.values.numpy(), atol=1e-4)
