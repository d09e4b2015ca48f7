"""Sparse autoencoders (circuitlab.features): architectures against hand-written formulas, SAELens interop both
ways (a fixture SAELens wrote, and SAELens's own classes where sae-lens is installed), splicing against
TransformerLens hooks, training (resume = uninterrupted, bit for bit), evaluation against direct computations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import circuitlab as cl
from circuitlab.errors import InputError
from circuitlab.features import SAE, SAEConfig, load_sae, save_sae, splice, train_sae
from circuitlab.features.evaluation import evaluate_sae
from circuitlab.features.training import activation_sample

FIXTURE = Path(__file__).parent / "data" / "saelens"
HOOK = "blocks.1.hook_resid_post"


@pytest.fixture(scope="module")
def toy():
    return cl.load_model("zoo/toy-lm")


@pytest.fixture(scope="module")
def texts():
    path = Path(cl.__file__).parent / "zoo" / "weights" / "toy-lm" / "heldout.txt"
    return [t for t in path.read_text().splitlines() if t.strip()]


def random_sae(arch: str, d_in: int = 8, d_sae: int = 16, k=None, seed: int = 0, hook=None) -> SAE:
    g = torch.Generator().manual_seed(seed)
    sae = SAE(SAEConfig(arch, d_in, d_sae, k=k, hook_name=hook))
    with torch.no_grad():
        for name, p in sae.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            if name == "threshold":
                p.abs_()
    return sae


def hand_encode(sae: SAE, x: np.ndarray) -> np.ndarray:
    """The formulas of the papers, in numpy, one token at a time."""
    W_enc, b_enc = sae.W_enc.detach().double().numpy(), sae.b_enc.detach().double().numpy()
    b_dec = sae.b_dec.detach().double().numpy()
    out = []
    for row in x.astype(np.float64):
        pre = (row - b_dec) @ W_enc + b_enc
        if sae.cfg.architecture == "standard":
            f = np.maximum(pre, 0)
        elif sae.cfg.architecture == "jumprelu":
            th = sae.threshold.detach().double().numpy()
            f = np.where(pre > th, np.maximum(pre, 0), 0.0)
        else:
            f = np.zeros_like(pre)
            top = np.argsort(-pre)[: sae.cfg.k]
            f[top] = np.maximum(pre[top], 0)
        out.append(f)
    return np.array(out)


@pytest.mark.parametrize("arch,k", [("standard", None), ("topk", 3), ("jumprelu", None)])
def test_encode_decode_match_the_formulas(arch, k):
    sae = random_sae(arch, k=k)
    x = torch.randn(6, 8, generator=torch.Generator().manual_seed(1)) * 2
    f = sae.encode(x)
    np.testing.assert_allclose(f.detach().numpy(), hand_encode(sae, x.numpy()), atol=1e-5)
    recon = f.detach().double().numpy() @ sae.W_dec.detach().double().numpy() + sae.b_dec.detach().double().numpy()
    np.testing.assert_allclose(sae(x).detach().numpy(), recon, atol=1e-5)
    if arch == "topk":
        assert ((f > 0).sum(-1) <= 3).all()


@pytest.mark.parametrize("arch", ["standard", "topk", "jumprelu"])
def test_loads_what_saelens_wrote(arch):
    """The fixture was written by sae_lens's save_model; the encodings are SAELens's (make_fixture.py)."""
    sae = load_sae(FIXTURE / arch)
    assert sae.cfg.architecture == arch and sae.cfg.hook_name == "blocks.1.hook_resid_post"
    want = load_file(str(FIXTURE / "expected.safetensors"))
    x = want[f"{arch}.x"]
    assert (sae.encode(x) - want[f"{arch}.latents"]).abs().max() < 1e-5
    assert (sae(x) - want[f"{arch}.recon"]).abs().max() < 1e-5


def test_round_trip_with_saelens_classes(tmp_path):
    """circuitlab -> SAELens: SAE.load_from_disk reads save_sae's folder and encodes the same; SAELens -> circuitlab
    through a folder SAELens writes now."""
    sae_lens = pytest.importorskip("sae_lens")
    x = torch.randn(7, 8, generator=torch.Generator().manual_seed(3))
    for arch, k in (("standard", None), ("topk", 3), ("jumprelu", None)):
        ours = random_sae(arch, k=k, seed=5, hook=HOOK)
        save_sae(ours, tmp_path / arch)
        theirs = sae_lens.SAE.load_from_disk(str(tmp_path / arch))
        assert theirs.cfg.architecture() == arch and theirs.cfg.metadata.hook_name == HOOK
        with torch.no_grad():
            assert (theirs.encode(x) - ours.encode(x)).abs().max() < 1e-5
            theirs.save_model(tmp_path / f"{arch}-back")
        back = load_sae(tmp_path / f"{arch}-back")
        assert (back.encode(x) - theirs.encode(x)).abs().max() < 1e-5


def test_bad_files_are_refused(tmp_path):
    sae = random_sae("topk", k=3)
    save_sae(sae, tmp_path / "ok")
    weights = (tmp_path / "ok" / "sae_weights.safetensors").read_bytes()
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "cfg.json").write_text((tmp_path / "ok" / "cfg.json").read_text())
    (tmp_path / "cut" / "sae_weights.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(InputError, match="damaged or cut short"):
        load_sae(tmp_path / "cut")
    cfg = json.loads((tmp_path / "ok" / "cfg.json").read_text())
    cfg["d_in"] = 9
    (tmp_path / "ok" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="shape"):
        load_sae(tmp_path / "ok")
    cfg["normalize_activations"] = "layer_norm"
    (tmp_path / "ok" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="normalize_activations"):
        load_sae(tmp_path / "ok")


def test_splice_replaces_the_hook_and_the_error_term_restores_the_output(toy):
    tokens = toy.to_tokens("And the word of the LORD came unto Jonah the son of Amittai")
    sae = random_sae("topk", d_in=128, d_sae=256, k=8, hook=HOOK)
    clean = toy(tokens)
    reference = toy.run_with_hooks(tokens, fwd_hooks=[(HOOK, lambda act, hook: sae(act))])
    with splice(toy, sae) as s:
        spliced = toy(tokens)
        _, cache = toy.run_with_cache(tokens, names_filter=HOOK)  # resets its own hooks, keeps the splice
        assert s.last_latents.shape == (1, tokens.shape[1], 256)
    assert (spliced - reference).abs().max() < 1e-4
    clean_x = toy.run_with_cache(tokens, names_filter=HOOK)[1][HOOK]
    assert (cache[HOOK] - sae(clean_x)).abs().max() < 1e-4  # the cache read the reconstruction
    assert (spliced - clean).abs().max() > 1e-2
    with splice(toy, sae, error_term=True):
        restored = toy(tokens)
    assert (restored - clean).abs().max() < 1e-4
    assert (toy(tokens) - clean).abs().max() == 0  # removed on exit
    with pytest.raises(InputError, match="d_in"):
        with splice(toy, random_sae("topk", d_in=8, k=3, hook=HOOK)):
            pass


def test_training_resumes_to_the_same_weights(toy, texts, tmp_path):
    kw = dict(architecture="topk", d_sae=128, k=8, training_tokens=6 * 128, batch_tokens=128, buffer_tokens=512,
              context_size=16, seed=3, log_every=2)
    data = texts[:30]
    full = train_sae(toy, [HOOK, "blocks.2.hook_resid_post"], data, **kw)
    part = train_sae(toy, [HOOK, "blocks.2.hook_resid_post"], data, checkpoint=tmp_path, stop_after=3, **kw)
    assert not part.stats["done"] and part.stats["steps"] == 3
    resumed = train_sae(toy, [HOOK, "blocks.2.hook_resid_post"], data, checkpoint=tmp_path, **kw)
    assert resumed.stats["done"] and resumed.stats["steps"] == 6
    for h in full.saes:
        for name, p in full.saes[h].state_dict().items():
            assert torch.equal(p, resumed.saes[h].state_dict()[name]), name
    hist = full.history[HOOK]
    assert hist[-1]["fvu"] < hist[0]["fvu"] and hist[-1]["l0"] == 8
    with pytest.raises(InputError, match="other settings"):
        train_sae(toy, [HOOK, "blocks.2.hook_resid_post"], data, checkpoint=tmp_path, **{**kw, "seed": 4})


@pytest.mark.parametrize("arch,kw", [("standard", {"l1_coefficient": 0.5}), ("jumprelu", {"l0_coefficient": 0.01})])
def test_other_architectures_train(toy, texts, arch, kw):
    run = train_sae(toy, HOOK, texts[:30], architecture=arch, k=None, d_sae=128, training_tokens=8 * 128,
                    batch_tokens=128,
                    buffer_tokens=512, context_size=16, log_every=2, **kw)
    hist = run.history[HOOK]
    assert hist[-1]["loss"] < hist[0]["loss"]


@torch.no_grad()
def test_evaluation_against_direct_computation(toy, texts):
    held = texts[100:104]
    sae = random_sae("topk", d_in=128, d_sae=256, k=8, hook=HOOK)
    ev = evaluate_sae(toy, sae, held)
    # activations read by the collector's own path, one text at a time, BOS left out
    xs = torch.cat([toy.run_with_cache(t, names_filter=HOOK)[1][HOOK][0, 1:] for t in held])
    f = sae.encode(xs)
    err = (xs - sae(xs)).double().pow(2).sum()
    assert ev.tokens == xs.shape[0]
    assert ev.l0 == pytest.approx(float((f > 0).sum(-1).double().mean()), rel=1e-6)
    assert ev.explained_variance == pytest.approx(float(1 - err / (xs - xs.mean(0)).double().pow(2).sum()), rel=1e-4)
    assert ev.mse == pytest.approx(float(err / xs.numel()), rel=1e-4)
    # cross-entropy: TransformerLens's own loss, token-weighted over the texts
    n = [toy.to_tokens(t).shape[1] - 1 for t in held]
    ce_clean = sum(float(toy(t, return_type="loss")) * m for t, m in zip(held, n)) / sum(n)
    zero = [(HOOK, lambda a, hook: torch.cat([a[:, :1], a[:, 1:] * 0], dim=1))]  # BOS kept (evaluation's rule)
    ce_zero = sum(float(toy.run_with_hooks(t, return_type="loss", fwd_hooks=zero)) * m
                  for t, m in zip(held, n)) / sum(n)
    assert ev.ce_clean == pytest.approx(ce_clean, rel=1e-4)
    assert ev.ce_zero_ablation == pytest.approx(ce_zero, rel=1e-4)
    assert ev.ce_loss_recovered_zero == pytest.approx((ce_zero - ev.ce_spliced) / (ce_zero - ce_clean), rel=1e-6)
    assert abs(ev.kl_spliced_with_error) < 1e-5 and ev.kl_spliced > 1e-3
    assert ev.ce_spliced_with_error == pytest.approx(ce_clean, rel=1e-4)
    fired = (f > 0).double().mean(0)
    assert ev.dead_fraction == pytest.approx(float((fired == 0).double().mean()))
    assert int(ev.histogram.values.sum()) == 256


def test_activation_sample_matches_transformerlens(toy, texts):
    got = activation_sample(toy, [HOOK], texts[:3], 20, context_size=16)[HOOK]
    toks = torch.cat([toy.to_tokens(t, prepend_bos=False)[0] for t in texts[:3]])
    row = torch.cat([toy.to_tokens("")[0, :1], toks[:15]])
    want = toy.run_with_cache(row[None], names_filter=HOOK)[1][HOOK][0, 1:]
    assert (got[:15] - want).abs().max() < 1e-4


@torch.no_grad()
def test_shipped_saes_load_by_name_and_reconstruct_held_out_activations(toy, texts):
    from circuitlab.features import shipped_saes

    assert shipped_saes() == [f"toy-lm/res-{l}" for l in range(4)]
    sae = load_sae("toy-lm/res-2")
    assert sae.cfg.hook_name == "blocks.2.hook_resid_post" and sae.cfg.d_in == toy.cfg.d_model and sae.cfg.k == 16
    assert torch.equal(load_sae("zoo/toy-lm/res-2").W_enc, sae.W_enc)
    card = json.loads((Path(cl.features.__file__).parent / "saes" / "toy-lm" / "res-2" / "card.json").read_text())
    xs = torch.cat([toy.run_with_cache(t, names_filter=sae.cfg.hook_name)[1][sae.cfg.hook_name][0, 1:]
                    for t in texts[:8]])
    explained = 1 - (xs - sae(xs)).pow(2).sum() / (xs - xs.mean(0)).pow(2).sum()
    assert explained > 0.5  # held-out text: the SAE learned the layer, not noise
    assert abs(float(explained) - card["heldout"]["explained_variance"]) < 0.1  # the card, on 8 of 204 verses


def test_existing_analyses_run_with_the_sae_spliced_in(toy):
    """The logit lens and direct logit attribution read the spliced model: with the error term they give the clean
    numbers; without it, layer 2 onwards moves (the layers before the SAE's hook do not)."""
    from circuitlab.attribution import direct_logit_attribution, logit_lens

    prompt, answer = "And the LORD spake unto Moses, saying", " the"
    sae = load_sae("toy-lm/res-1")
    clean_lens = logit_lens(toy, prompt, answer).logits
    clean_dla = direct_logit_attribution(toy, prompt, answer, by="layer").values
    with splice(toy, sae, error_term=True):
        assert (logit_lens(toy, prompt, answer).logits - clean_lens).abs().max() < 1e-3
        assert (direct_logit_attribution(toy, prompt, answer, by="layer").values - clean_dla).abs().max() < 1e-3
    with splice(toy, sae):
        moved = logit_lens(toy, prompt, answer).logits - clean_lens
    first = 2 if moved.shape[0] == toy.cfg.n_layers + 1 else 1  # the lens row after block 1 (row 0: embeddings)
    assert moved[:first].abs().max() < 1e-4 and moved[first:].abs().max() > 1e-3
