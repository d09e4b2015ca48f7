"""Feature dashboard data (circuitlab.features.dashboard) against brute force: each latent's activations
recomputed text by text with TransformerLens's run_with_cache and the SAE's encode, and the logit effect written
out as a formula (centre the decoder row, times the final LayerNorm's weight, then W_U)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import circuitlab as cl
from circuitlab.errors import InputError
from circuitlab.features import load_sae
from circuitlab.features.dashboard import feature_dashboards

LATENTS = [5, 17, 300, 1000]


@pytest.fixture(scope="module")
def toy():
    return cl.load_model("zoo/toy-lm")


@pytest.fixture(scope="module")
def texts():
    path = Path(cl.__file__).parent / "zoo" / "weights" / "toy-lm" / "heldout.txt"
    return [t for t in path.read_text().splitlines() if t.strip()][:30]


@pytest.fixture(scope="module")
def sae():
    return load_sae("toy-lm/res-2")


@pytest.fixture(scope="module")
def brute(toy, sae, texts):
    """Per text: the latents' activations on every token but BOS ``[pos - 1, len(LATENTS)]``, one text at a time."""
    out = []
    with torch.no_grad():
        for t in texts:
            toks = toy.to_tokens(t)
            _, cache = toy.run_with_cache(toks, names_filter=sae.cfg.hook_name, stop_at_layer=3)
            f = sae.encode(cache[sae.cfg.hook_name][0])[:, LATENTS]
            out.append(f[1:])
    return out


@pytest.fixture(scope="module")
def dash(toy, sae, texts):
    return feature_dashboards(toy, sae, texts, LATENTS, n_top=5, n_quantiles=4, per_quantile=3, left=3, right=2)


def test_density_maximum_and_histogram_match_brute_force(dash, brute):
    allv = torch.cat(brute)
    assert dash.tokens == allv.shape[0]
    for j, card in enumerate(dash.cards):
        col = allv[:, j]
        nz = col[col > 0]
        assert card.fired == nz.numel()
        assert card.density == pytest.approx(nz.numel() / allv.shape[0])
        assert card.max_activation == pytest.approx(float(col.max()), rel=1e-5, abs=1e-6)
        edges, counts = card.histogram
        ref, _ = np.histogram(nz.numpy(), bins=np.asarray(edges))
        assert np.abs(np.asarray(counts) - ref).sum() <= 2  # float ties at bin edges only
        assert sum(counts) == nz.numel()


def test_top_contexts_are_the_texts_with_the_largest_peaks(dash, brute, toy, texts):
    for j, card in enumerate(dash.cards):
        peaks = torch.tensor([float(b[:, j].max()) for b in brute])
        order = [int(i) for i in torch.argsort(-peaks, stable=True) if peaks[i] > 0][:5]
        assert [c.text for c in card.top] == order
        for c in card.top:
            acts = brute[c.text][:, j]
            assert c.value == pytest.approx(float(acts.max()), rel=1e-5)
            # the window: tokens pos-3 .. pos+2 of the text (BOS is position 0 and never shown)
            strs = toy.to_str_tokens(texts[c.text])
            lo = max(1, c.pos - 3)
            assert c.tokens == strs[lo: c.pos + 3]
            np.testing.assert_allclose(c.activations, acts[lo - 1: c.pos + 2].numpy(), rtol=1e-5, atol=1e-6)


def test_quantile_samples_come_from_their_rank_groups(dash, brute):
    allv = torch.cat(brute)
    for j, card in enumerate(dash.cards):
        nz = torch.sort(allv[:, j][allv[:, j] > 0]).values
        n = nz.numel()
        assert len(card.quantiles) == 4
        for q, (label, low, high, ctxs) in enumerate(card.quantiles):
            a, b = q * n // 4, (q + 1) * n // 4
            assert low == pytest.approx(float(nz[a]), rel=1e-5) and high == pytest.approx(float(nz[b - 1]), rel=1e-5)
            assert len(ctxs) == min(3, b - a)
            for c in ctxs:
                assert low - 1e-6 <= c.value <= high + 1e-6
                assert c.activations[c.focus] == c.value


def test_logit_effect_is_the_decoder_row_through_the_final_layernorm(dash, toy, sae):
    w = toy.ln_final.w.detach()
    for j, latent in enumerate(LATENTS):
        d = sae.W_dec.detach()[latent].double()
        scores = ((d - d.mean()) * w.double()) @ toy.W_U.detach().double()
        top = torch.topk(scores, 10).indices.tolist()
        bottom = torch.topk(-scores, 10).indices.tolist()
        assert dash.promoted.token_ids[j].tolist() == top
        assert dash.suppressed.token_ids[j].tolist() == bottom
        np.testing.assert_allclose([v for _, v in dash.cards[j].promoted], scores[top].numpy(), rtol=1e-4, atol=1e-5)


def test_small_batches_give_the_same_dashboards(toy, sae, texts, dash):
    small = feature_dashboards(toy, sae, texts, LATENTS, n_top=5, n_quantiles=4, per_quantile=3, left=3, right=2,
                               max_memory=4_000_000)
    for a, b in zip(dash.cards, small.cards):
        assert a.fired == b.fired and [c.text for c in a.top] == [c.text for c in b.top]
        assert a.quantiles[0][3] == b.quantiles[0][3]


def test_bad_latents_are_refused(toy, sae, texts):
    for bad, word in ((1024, "[0, 1024)"), ([3, 3], "repeats"), ([], "non-empty"), ("7", "latent")):
        with pytest.raises(InputError, match=word.replace("[", r"\[").replace(")", r"\)")):
            feature_dashboards(toy, sae, texts[:3], bad)


def test_a_pass_of_another_sae_is_refused(toy, texts):
    from circuitlab.features.dashboard import latent_activations

    acts = latent_activations(toy, "toy-lm/res-2", texts[:3], [5])
    with pytest.raises(InputError, match="activations were read with"):
        feature_dashboards(toy, "toy-lm/res-1", texts[:3], activations=acts)
