"""Every analysis on a TransformerBridge (compatibility mode) against the HookedTransformer with the same weights.

``circuitlab.testing.random_bridge`` builds both offline from one random Hugging Face model (GPT-2, GPT-NeoX and
Llama configs); they compute the same logits up to float32 rounding, so each analysis must give the same numbers
on both (``TOL``, fp32; observed differences are about 1e-6). The HookedTransformer twins are also the models that
verify the patching engine's cached key/value shortcut for the architectures TransformerLens loads from those
checkpoints (``circuitlab.patching.exact.KV_REUSE_VERIFIED``): their fast sweeps are checked against
``transformer_lens.patching`` here.
"""

from functools import lru_cache

import pytest
import torch

import transformer_lens.patching as tlp

import circuitlab
import circuitlab.patching.exact as exact
from circuitlab import attribution, ffn, induction, patching, tracing
from circuitlab.metrics import LogitDiff
from circuitlab.testing import BRIDGE_ARCHITECTURES, random_bridge

TOL = 1e-5
ARCHS = BRIDGE_ARCHITECTURES  # ("gpt2", "neox", "llama")


@lru_cache(maxsize=None)
def pair(arch: str):
    """``(bridge, hooked)`` for ``arch``."""
    return random_bridge(arch, seed=3)


def prompts(batch: int = 2, seq: int = 7, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    clean = torch.randint(1, 50, (batch, seq), generator=gen)
    corrupted = clean.clone()
    corrupted[:, 2::2] = torch.randint(1, 50, (batch, len(range(2, seq, 2))), generator=gen)
    return clean, corrupted


METRIC = LogitDiff(correct=[3, 5], wrong=[7, 9])


def assert_same(a, b, what: str = "") -> None:
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    assert a.shape == b.shape, f"{what}: shapes {tuple(a.shape)} vs {tuple(b.shape)}"
    if a.dtype in (torch.long, torch.int32, torch.bool):
        assert torch.equal(a, b), what
    else:
        assert (a.float() - b.float()).abs().max() < TOL, f"{what}: max |diff| {(a - b).abs().max():.3g}"


@pytest.mark.parametrize("arch", ARCHS, ids=str)
def test_bridge_equals_its_hooked_twin(arch):
    bridge, hooked = pair(arch)
    assert bridge.compatibility_mode and circuitlab.load_model(bridge) is bridge
    clean, _ = prompts()
    with torch.no_grad():
        assert_same(bridge(clean), hooked(clean), "logits")
    assert torch.equal(bridge.to_tokens("t1 t2 t3"), hooked.to_tokens("t1 t2 t3"))  # the same tokenizer


# -- patching ------------------------------------------------------------------------------------------------------

SWEEPS = [
    ("resid_pre", ("layer", "pos")),
    ("resid_mid", ("layer", "pos")),
    ("resid_post", ("layer", "pos")),
    ("attn_out", ("layer", "pos")),
    ("mlp_out", ("layer", "pos")),
    ("z", ("layer", "pos", "head")),
    ("z", ("layer", "head")),
    ("q", ("layer", "head")),
    ("k", ("layer", "pos", "head")),
    ("v", ("layer", "head")),
    ("pattern", ("layer", "head", "dest_pos")),
    ("attn_scores", ("layer", "head")),
]


def sweep_id(case) -> str:
    return f"{case[0]}-{'_'.join(case[1])}"


@pytest.mark.parametrize("arch", ARCHS, ids=str)
@pytest.mark.parametrize("site,by", SWEEPS, ids=[sweep_id(c) for c in SWEEPS])
def test_sweep_on_bridge_equals_hooked(arch, site, by):
    bridge, hooked = pair(arch)
    clean, corrupted = prompts()
    if site == "resid_mid" and arch == "neox":  # parallel attention and MLP: no residual stream between them
        with pytest.raises(circuitlab.CircuitlabError, match="does not exist in this model"):
            patching.sweep(bridge, clean, corrupted, METRIC, site, by, progress=False)
        return
    ours = patching.sweep(bridge, clean, corrupted, METRIC, site, by, progress=False)
    ref = patching.sweep(hooked, clean, corrupted, METRIC, site, by, progress=False)
    assert ours.axes == ref.axes and ours.labels == ref.labels
    assert_same(ours.values, ref.values, f"{site} by {by}")
    assert abs(ours.meta["clean_value"] - ref.meta["clean_value"]) < TOL
    # the bridge is patched with whole forward passes and hooks; the twin takes the verified fast path
    assert ours.meta["engine"]["runner"] == "forward" and not ours.meta["engine"]["kv_reuse"]
    assert ref.meta["engine"]["runner"] == "blocks" and ref.meta["engine"]["kv_reuse"]


@pytest.mark.parametrize("arch", ARCHS, ids=str)
def test_sweep_options_on_bridge(arch):
    """A general (non-declarative) metric, fast=False, tiny chunks, text prompts and text answers."""
    bridge, hooked = pair(arch)
    clean, corrupted = prompts()

    def metric(logits):
        return (logits[:, -1, 3] - logits[:, 2, 4]).mean()

    for kwargs in ({}, {"fast": False}, {"max_memory": 1}):
        ours = patching.sweep(bridge, clean, corrupted, metric, "z", ("layer", "head"), progress=False, **kwargs)
        ref = patching.sweep(hooked, clean, corrupted, metric, "z", ("layer", "head"), progress=False, **kwargs)
        assert_same(ours.values, ref.values, str(kwargs))
    text = LogitDiff("t3", "t7")
    ours = patching.sweep(bridge, "t1 t2 t3 t4", "t1 t9 t3 t4", text, progress=False)
    ref = patching.sweep(hooked, "t1 t2 t3 t4", "t1 t9 t3 t4", text, progress=False)
    assert_same(ours.values, ref.values, "text")


@pytest.mark.parametrize("arch", ARCHS, ids=str)
def test_twin_fast_path_equals_transformer_lens(arch, monkeypatch):
    """The HookedTransformer twins (TransformerLens's conversion of GPT-2, GPT-NeoX and Llama checkpoints) take
    the cached key/value shortcut; it must give TransformerLens's numbers. Small position groups make it run."""
    monkeypatch.setattr(exact, "POSITIONS_PER_GROUP", 2)
    _, hooked = pair(arch)
    assert hooked.cfg.original_architecture in exact.KV_REUSE_VERIFIED["original_architecture"]
    clean, corrupted = prompts(seq=9)
    _, clean_cache = hooked.run_with_cache(clean)
    for site, by, fn in [("resid_pre", ("layer", "pos"), tlp.get_act_patch_resid_pre),
                         ("z", ("layer", "pos", "head"), tlp.get_act_patch_attn_head_out_by_pos),
                         ("v", ("layer", "head"), tlp.get_act_patch_attn_head_v_all_pos)]:
        with torch.no_grad():
            ref = fn(hooked, corrupted, clean_cache, METRIC)
        ours = patching.sweep(hooked, clean, corrupted, METRIC, site, by, progress=False)
        assert ours.meta["engine"]["kv_reuse"] and ours.meta["engine"]["last_block"]
        assert (ours.values - ref).abs().max() < TOL, site


@pytest.mark.parametrize("arch", ARCHS, ids=str)
def test_path_patch_on_bridge_equals_hooked(arch):
    bridge, hooked = pair(arch)
    clean, corrupted = prompts()
    mlp = [] if hooked.cfg.attn_only else ["MLP0"]
    for senders, receivers in [("heads", "resid_final"), (["0.2", *mlp], "1.1.q"), ("heads", ["L1H1.k", "1.0.v"])]:
        ours = patching.path_patch(bridge, clean, corrupted, METRIC, senders, receivers, progress=False)
        ref = patching.path_patch(hooked, clean, corrupted, METRIC, senders, receivers, progress=False)
        assert_same(ours.values, ref.values, f"{senders} -> {receivers}")


@pytest.mark.parametrize("arch", ARCHS, ids=str)
def test_attribution_patching_on_bridge_equals_hooked(arch):
    bridge, hooked = pair(arch)
    clean, corrupted = prompts()
    for site, by in [("z", ("layer", "head")), ("resid_pre", ("layer", "pos")), ("v", ("layer", "pos", "head")),
                     ("pattern", ("layer", "head", "dest_pos"))]:
        ours = patching.attribution(bridge, clean, corrupted, METRIC, site, by)
        ref = patching.attribution(hooked, clean, corrupted, METRIC, site, by)
        assert_same(ours.values, ref.values, site)


# -- the other analyses ------------------------------------------------------------------------------------------

def tensors_of(x, prefix: str = "") -> dict:
    """Every tensor inside a result (dataclass fields, lists), by path."""
    if isinstance(x, torch.Tensor):
        return {prefix: x}
    out: dict = {}
    if hasattr(x, "__dataclass_fields__"):
        for name in x.__dataclass_fields__:
            out.update(tensors_of(getattr(x, name), f"{prefix}.{name}"))
    elif isinstance(x, (list, tuple)):
        for i, v in enumerate(x):
            out.update(tensors_of(v, f"{prefix}[{i}]"))
    return out


def assert_same_result(ours, ref) -> None:
    a, b = tensors_of(ours), tensors_of(ref)
    assert a.keys() == b.keys() and a
    for key in a:
        assert_same(a[key], b[key], key)


def cases(name, fn):
    """One pytest.param per architecture."""
    return [pytest.param(arch, fn, id=f"{name}-{arch}") for arch in ARCHS]


def _tokens():
    return prompts()[0]


ANALYSES = [
    *cases("head_scores", lambda m: induction.head_scores(m, seq_len=5, n_seqs=3)),
    *cases("head_scores_prev", lambda m: induction.head_scores(m, kind="previous_token", seq_len=5, n_seqs=3)),
    *cases("composition_Q", lambda m: induction.composition_scores(m, "Q")),
    *cases("composition_K", lambda m: induction.composition_scores(m, "K")),
    *cases("composition_V", lambda m: induction.composition_scores(m, "V")),
    *cases("ablation_zero", lambda m: induction.ablation_effect(m, [(1, 0), "0.1"], seq_len=5, n_seqs=3)),
    *cases("ablation_mean", lambda m: induction.ablation_effect(m, [(1, 0)], method="mean", seq_len=5, n_seqs=3)),
    *cases("dla_head", lambda m: attribution.direct_logit_attribution(m, _tokens(), 3, 7)),
    *cases("dla_layer", lambda m: attribution.direct_logit_attribution(m, _tokens(), 3, by="layer")),
    *cases("dla_component", lambda m: attribution.direct_logit_attribution(m, _tokens(), 3, by="component")),
    *cases("dla_neuron", lambda m: attribution.direct_logit_attribution(m, _tokens(), 3, by="neuron", layer=1)),
    *cases("logit_lens_own", lambda m: attribution.logit_lens(m, _tokens(), 3)),
    *cases("logit_lens_frozen", lambda m: attribution.logit_lens(m, _tokens(), norm="frozen")),
    *cases("sub_updates", lambda m: ffn.sub_updates(m, _tokens(), 1, token=3)),
    *cases("value_tokens", lambda m: ffn.value_tokens(m, 1, [0, 1, 2], k=5)),
    *cases("key_examples", lambda m: ffn.key_examples(m, list(_tokens()), 1, 3, k=3, progress=False)),
    *cases("trace", lambda m: tracing.trace(m, _tokens()[0], (1, 3), 7, window=2, samples=2, progress=False)),
]


@pytest.mark.parametrize("arch,analysis", ANALYSES)
def test_analysis_on_bridge_equals_hooked(arch, analysis):
    bridge, hooked = pair(arch)
    assert_same_result(analysis(bridge), analysis(hooked))
