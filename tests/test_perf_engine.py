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


@pytest.mark.parametrize("arch", ["gemma3", "llama"])
def test_copy_free_gated_mlp_is_transformer_lens_bit_for_bit(arch):
    """A block run with :func:`copy_free_mlp` gives TransformerLens's own block output exactly (torch.equal), its
    MLP hooks see the same values, and the block's forward is TransformerLens's again afterwards."""
    from transformer_lens.components.mlps.gated_mlp import GatedMLP

    from circuitlab.engine.blocks import copy_free_mlp
    from circuitlab.testing import random_model

    model = random_model(arch, seed=3)
    block = model.blocks[1]
    assert type(block.mlp) is GatedMLP
    x = torch.randn(3, 7, model.cfg.d_model, generator=torch.Generator().manual_seed(1))
    seen: dict[str, list] = {"tl": [], "ours": []}

    def run(key):
        hooks = [(f"blocks.1.mlp.{h}", lambda a, hook, key=key: seen[key].append(a.clone()))
                 for h in ("hook_pre", "hook_pre_linear", "hook_post")]
        with torch.no_grad(), model.hooks(fwd_hooks=hooks):
            return block(x)

    expected = run("tl")
    with copy_free_mlp(block):
        assert "forward" in vars(block.mlp)
        got = run("ours")
    assert "forward" not in vars(block.mlp)
    assert torch.equal(got, expected)
    assert len(seen["ours"]) == 3 and all(torch.equal(a, b) for a, b in zip(seen["tl"], seen["ours"]))


def test_read_weights_equals_safetensors_and_owns_its_memory(tmp_path):
    """``models.io.read_weights`` gives safetensors' own tensors (every dtype the zoo may save, odd shapes), none
    backed by the file; a truncated file is named."""
    from safetensors.torch import load_file, save_file

    from circuitlab.errors import CircuitlabError
    from circuitlab.models.io import read_weights

    g = torch.Generator().manual_seed(0)
    state = {"a": torch.randn(3, 5, generator=g), "b.half": torch.randn(7, generator=g).half(),
             "c": torch.randn(2, 3, generator=g).bfloat16(), "d": torch.arange(6).reshape(2, 3),
             "e": torch.tensor([True, False, True]), "f": torch.randn((), generator=g).double(), "g": torch.zeros(0, 4)}
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    got = read_weights(path)
    with open("/proc/self/maps") as f:
        assert str(path) not in f.read()  # nothing of the file stays mapped
    ref = load_file(str(path))
    assert set(got) == set(ref)
    for k in ref:
        assert got[k].dtype == ref[k].dtype and torch.equal(got[k], ref[k]), k
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(CircuitlabError, match="truncated"):
        read_weights(path)
