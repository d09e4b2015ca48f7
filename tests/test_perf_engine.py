"""The engines' speed fixes keep their numbers: each regrouped computation against an independent reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import rel_entr, softmax

from circuitlab.metrics import KLDivergence


@pytest.mark.parametrize("shape", [(3, 1, 50), (2, 4, 1, 300), (5, 2, 2, 17)])
def test_kl_divergence_equals_scipy(shape):
    """KL(reference || patched) from its regrouped form equals SciPy's sum of rel_entr of the two softmaxes,
    for several groups of patched runs at once, prompt by prompt, and for a slice of the prompts (``rows``)."""
    g = torch.Generator().manual_seed(sum(shape))
    batch, k, vocab = shape[-3:]
    ref = torch.randn(batch, k, vocab, generator=g, dtype=torch.float64) * 4
    patched = ref + torch.randn(*shape, generator=g, dtype=torch.float64) * torch.rand(*shape[:-1], 1, generator=g)
    metric = KLDivergence(ref)
    p = softmax(ref.numpy(), -1)
    expected = rel_entr(np.broadcast_to(p, patched.shape), softmax(patched.numpy(), -1)).sum(-1).mean((-2, -1))
    got = metric.from_selected(patched).numpy()
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-13)
    assert float(KLDivergence(ref).from_selected(ref).abs().max()) < 1e-12  # zero on the reference itself
    part = metric.rows(slice(1, batch), batch)
    exp_part = rel_entr(np.broadcast_to(p[1:], patched[..., 1:, :, :].shape),
                        softmax(patched[..., 1:, :, :].numpy(), -1)).sum(-1).mean((-2, -1))
    np.testing.assert_allclose(part.from_selected(patched[..., 1:, :, :]).numpy(), exp_part, rtol=1e-9, atol=1e-13)


def test_kl_divergence_float32_logits_keep_float64_accuracy():
    """float32 logits (what the engines read) give the float64 divergence of those float32 values, cast once."""
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(4, 1, 2000, generator=g) * 5
    patched = (ref + 0.01 * torch.randn(3, 4, 1, 2000, generator=g)).float()
    got = KLDivergence(ref).from_selected(patched)
    p = softmax(ref.double().numpy(), -1)
    expected = rel_entr(p, softmax(patched.double().numpy(), -1)).sum(-1).mean((-2, -1))
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.double().numpy(), expected, rtol=2e-6, atol=1e-12)  # float32 rounding of the result
