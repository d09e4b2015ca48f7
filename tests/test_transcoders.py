"""Transcoders (circuitlab.features.transcoders): the formulas by hand in numpy, SAELens's own classes reading what
we write, training pairing each MLP input with its output (the learned map beats the mean), evaluation against a
direct computation from TransformerLens's cache, and the shipped set's cards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import circuitlab as cl
from circuitlab.errors import InputError
from circuitlab.features.transcoders import (Transcoder, TranscoderConfig, check_transcoders, evaluate_transcoders,
                                             load_transcoder, save_transcoder, shipped_transcoders, train_transcoders)


@pytest.fixture(scope="module")
def toy():
    return cl.load_model("zoo/toy-lm")


@pytest.fixture(scope="module")
def texts():
    path = Path(cl.__file__).parent / "zoo" / "weights" / "toy-lm" / "heldout.txt"
    return [t for t in path.read_text().splitlines() if t.strip()]


def random_tc(arch="standard", skip=False, k=None, d_in=8, d_out=6, d_sae=16, seed=0) -> Transcoder:
    g = torch.Generator().manual_seed(seed)
    tc = Transcoder(TranscoderConfig(arch, d_in, d_out, d_sae, k=k, skip=skip, layer=0))
    with torch.no_grad():
        for name, p in tc.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            if name == "threshold":
                p.abs_()
    return tc


@pytest.mark.parametrize("arch,skip,k", [("standard", False, None), ("standard", True, None), ("topk", True, 3),
                                         ("jumprelu", False, None)])
def test_formulas_by_hand(arch, skip, k):
    tc = random_tc(arch, skip, k)
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(1))
    W_enc, b_enc = tc.W_enc.detach().double().numpy(), tc.b_enc.detach().double().numpy()
    pre = x.double().numpy() @ W_enc + b_enc
    if arch == "standard":
        f = np.maximum(pre, 0)
    elif arch == "jumprelu":
        f = np.where(pre > tc.threshold.detach().double().numpy(), np.maximum(pre, 0), 0)
    else:
        f = np.zeros_like(pre)
        for r in range(pre.shape[0]):
            top = np.argsort(-pre[r])[:k]
            f[r, top] = np.maximum(pre[r, top], 0)
    y = f @ tc.W_dec.detach().double().numpy() + tc.b_dec.detach().double().numpy()
    if skip:
        y = y + x.double().numpy() @ tc.W_skip.detach().double().numpy().T
    np.testing.assert_allclose(tc(x).detach().double().numpy(), y, atol=1e-5)


@pytest.mark.parametrize("arch,skip", [("standard", False), ("standard", True), ("jumprelu", False)])
def test_saelens_reads_what_we_write(tmp_path, arch, skip):
    sae_lens = pytest.importorskip("sae_lens")
    tc = random_tc(arch, skip)
    save_transcoder(tc, tmp_path / "tc")
    theirs = sae_lens.SAE.load_from_disk(str(tmp_path / "tc"))
    x = torch.randn(7, 8, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(theirs.encode(x), tc.encode(x))
    torch.testing.assert_close(theirs(x), tc(x))
    again = load_transcoder(tmp_path / "tc")
    torch.testing.assert_close(again(x), tc(x), rtol=0, atol=0)


def test_topk_round_trip_and_damaged_files(tmp_path):
    tc = random_tc("topk", True, 4)
    save_transcoder(tc, tmp_path / "tc")
    assert json.loads((tmp_path / "tc" / "cfg.json").read_text())["architecture"] == "topk_skip_transcoder"
    x = torch.randn(3, 8)
    torch.testing.assert_close(load_transcoder(tmp_path / "tc")(x), tc(x), rtol=0, atol=0)
    w = tmp_path / "tc" / "sae_weights.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(InputError, match="safetensors"):
        load_transcoder(tmp_path / "tc")
    with pytest.raises(InputError, match="k="):
        TranscoderConfig("standard", 4, 4, 8, k=2)


def test_training_pairs_inputs_with_outputs(toy, texts):
    """Trained on a few thousand tokens, each layer's transcoder predicts the MLP output of held-out tokens better
    than its mean does (FVU < 1, measured here from TransformerLens's cache): only true if the buffer kept each
    input row with its own output row and the scales were folded back right."""
    run = train_transcoders(toy, [0, 2], texts[:120], d_sae=256, k=8, training_tokens=8192, batch_tokens=256,
                            buffer_tokens=1024, context_size=32, lr=1e-2, seed=0)
    _, cache = toy.run_with_cache(toy.to_tokens(" ".join(texts[150:160]))[:, :128])
    for layer in (0, 2):
        x = cache[f"blocks.{layer}.ln2.hook_normalized"][:, 1:].reshape(-1, 128)
        y = cache[f"blocks.{layer}.hook_mlp_out"][:, 1:].reshape(-1, 128)
        fvu = float((y - run.transcoders[layer](x)).pow(2).sum() / (y - y.mean(0)).pow(2).sum())
        assert fvu < 0.9, (layer, fvu)
    assert run.stats["train_tokens"] > 0 and run.stats["steps"] == run.history[0][-1]["step"]


def test_shipped_set_and_evaluation(toy, texts):
    names = shipped_transcoders()
    assert [n for n in names if n.startswith("toy-lm/")] == [f"toy-lm/tc-{l}" for l in range(4)]
    tcs = check_transcoders(toy, "toy-lm")
    _, cache = toy.run_with_cache(toy.to_tokens(texts[0]))
    # explained variance of one text, directly, against the evaluation on that text alone
    one = evaluate_transcoders(toy, tcs, texts[:1])
    x = cache["blocks.1.ln2.hook_normalized"][0, 1:]
    y = cache["blocks.1.hook_mlp_out"][0, 1:]
    ev_direct = 1 - float((y - tcs[1](x)).pow(2).sum() / (y - y.mean(0)).pow(2).sum())
    assert one["layers"][1]["explained_variance_mlp_out"] == pytest.approx(ev_direct, abs=1e-4)
    assert 0 <= one["replacement"]["next_token_agreement"] <= 1
    for l in range(4):
        card = json.loads((Path(cl.__file__).parent / "features" / "transcoder_weights" / "toy-lm" / f"tc-{l}" /
                           "card.json").read_text())
        assert card["heldout"]["l0"] <= 16 + 1e-6 and card["hook_out"] == f"blocks.{l}.hook_mlp_out"
    with pytest.raises(InputError, match="one per MLP layer"):
        check_transcoders(toy, ["toy-lm/tc-0"])
