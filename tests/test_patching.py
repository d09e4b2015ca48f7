"""circuitlab.patching against TransformerLens's own patching functions, plus path and attribution patching.

The references are independent: ``transformer_lens.patching`` (one hooked forward pass per patch), direct
computations from cached activations and weights, and algebraic identities.
"""

from functools import lru_cache

import pytest
import torch
import transformer_lens.patching as tlp
from transformer_lens import HookedTransformer, HookedTransformerConfig

import circuitlab.patching.exact as exact
from circuitlab.errors import CircuitlabError, InputError
from circuitlab.metrics import LogitDiff, Normalized, Probability
from circuitlab.patching import attribution, path_patch, sweep
from circuitlab.testing import ARCHITECTURES, random_model

TOL = 1e-5


@pytest.fixture(autouse=True)
def small_position_groups(monkeypatch):
    # prompts here are 6 tokens; groups of 2 positions make the causal shortcut (cached keys/values of earlier
    # positions) actually run in every test
    monkeypatch.setattr(exact, "POSITIONS_PER_GROUP", 2)


@lru_cache(maxsize=None)
def model_of(arch: str) -> HookedTransformer:
    return random_model(arch, seed=11)


@lru_cache(maxsize=None)
def shortformer_model() -> HookedTransformer:
    cfg = HookedTransformerConfig(n_layers=2, d_model=32, n_heads=4, d_head=8, d_vocab=50, n_ctx=32, attn_only=True,
                                  act_fn=None, normalization_type="LN", positional_embedding_type="shortformer",
                                  seed=5, device="cpu", model_name="random-shortformer")
    model = HookedTransformer(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".b_" in name or name.endswith(".b"):
                p.copy_(0.1 * torch.randn(p.shape, generator=torch.Generator().manual_seed(len(name))))
    return model.eval()


def prompts(batch: int = 2, seq: int = 6, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    clean = torch.randint(1, 50, (batch, seq), generator=gen)
    corrupted = clean.clone()
    corrupted[:, 1::2] = torch.randint(1, 50, (batch, len(range(1, seq, 2))), generator=gen)
    return clean, corrupted


METRIC = LogitDiff(correct=[3, 5], wrong=[7, 9])  # one answer pair per prompt

# (site, by, TransformerLens function): every site/axes combination transformer_lens.patching offers
CASES = [
    ("resid_pre", ("layer", "pos"), tlp.get_act_patch_resid_pre),
    ("resid_mid", ("layer", "pos"), tlp.get_act_patch_resid_mid),
    ("attn_out", ("layer", "pos"), tlp.get_act_patch_attn_out),
    ("mlp_out", ("layer", "pos"), tlp.get_act_patch_mlp_out),
    ("z", ("layer", "pos", "head"), tlp.get_act_patch_attn_head_out_by_pos),
    ("q", ("layer", "pos", "head"), tlp.get_act_patch_attn_head_q_by_pos),
    ("k", ("layer", "pos", "head"), tlp.get_act_patch_attn_head_k_by_pos),
    ("v", ("layer", "pos", "head"), tlp.get_act_patch_attn_head_v_by_pos),
    ("z", ("layer", "head"), tlp.get_act_patch_attn_head_out_all_pos),
    ("q", ("layer", "head"), tlp.get_act_patch_attn_head_q_all_pos),
    ("k", ("layer", "head"), tlp.get_act_patch_attn_head_k_all_pos),
    ("v", ("layer", "head"), tlp.get_act_patch_attn_head_v_all_pos),
    ("pattern", ("layer", "head"), tlp.get_act_patch_attn_head_pattern_all_pos),
    ("pattern", ("layer", "head", "dest_pos"), tlp.get_act_patch_attn_head_pattern_by_pos),
]


def absent(arch: str, site: str) -> bool:
    return (site == "mlp_out" and arch == "attn_only") or (site == "resid_mid" and arch in ("attn_only", "pythia"))


def case_id(case) -> str:
    """A stable test id for a CASES row (its TransformerLens function is a partial whose str holds an address)."""
    site, by = case[0], case[1]
    return f"{site}-{'_'.join(by)}"


@pytest.mark.parametrize("arch", ARCHITECTURES, ids=str)
@pytest.mark.parametrize("site,by,tl_fn", CASES, ids=[case_id(c) for c in CASES])
def test_sweep_equals_transformer_lens(arch, site, by, tl_fn):
    model = model_of(arch)
    clean, corrupted = prompts()
    if absent(arch, site):
        with pytest.raises(InputError, match="does not exist in this model"):
            sweep(model, clean, corrupted, METRIC, site, by, progress=False)
        return
    _, clean_cache = model.run_with_cache(clean)
    with torch.no_grad():
        ref = tl_fn(model, corrupted, clean_cache, METRIC)
    ours = sweep(model, clean, corrupted, METRIC, site, by, progress=False)
    assert ours.axes == by and ours.shape == tuple(ref.shape)
    assert (ours.values - ref).abs().max() < TOL


@pytest.mark.parametrize("arch", ["gpt2", "llama"], ids=str)
@pytest.mark.parametrize("site,by,tl_fn", [CASES[i] for i in (0, 4, 8, 9, 12, 13)],
                         ids=[case_id(CASES[i]) for i in (0, 4, 8, 9, 12, 13)])
def test_shared_prefix_shortcuts_equal_transformer_lens(arch, site, by, tl_fn):
    """Inputs that agree on their first positions: patches there are no-ops, all-position patches start later."""
    model = model_of(arch)
    gen = torch.Generator().manual_seed(7)
    clean = torch.randint(1, 50, (2, 9), generator=gen)
    corrupted = clean.clone()
    corrupted[0, 5] = (clean[0, 5] % 49) + 1  # prompts first differ at position 5 (prompt 0) ...
    corrupted[1, 6:] = (clean[1, 6:] % 49) + 1  # ... and 6 (prompt 1)
    _, clean_cache = model.run_with_cache(clean)
    with torch.no_grad():
        ref = tl_fn(model, corrupted, clean_cache, METRIC)
    ours = sweep(model, clean, corrupted, METRIC, site, by, progress=False)
    assert (ours.values - ref).abs().max() < TOL


@pytest.mark.slow
def test_pattern_dest_src_equals_transformer_lens():
    model = model_of("attn_only")
    clean, corrupted = prompts(seq=5)
    _, clean_cache = model.run_with_cache(clean)
    with torch.no_grad():
        ref = tlp.get_act_patch_attn_head_pattern_dest_src_pos(model, corrupted, clean_cache, METRIC)
    ours = sweep(model, clean, corrupted, METRIC, "pattern", ("layer", "head", "dest_pos", "src_pos"), progress=False)
    assert (ours.values - ref).abs().max() < TOL


@pytest.mark.parametrize("arch", ["gpt2", "pythia"], ids=str)
def test_general_metric_path_equals_transformer_lens(arch):
    """Any callable works: here one that reads two positions and is not declarative (full logits path)."""
    model = model_of(arch)
    clean, corrupted = prompts()

    def metric(logits):
        return (logits[:, -1, 3] - logits[:, 2, 4]).mean() + logits[:, 0, 1].mean()

    _, clean_cache = model.run_with_cache(clean)
    for site, by, fn in [CASES[0], CASES[4], CASES[8]]:
        with torch.no_grad():
            ref = fn(model, corrupted, clean_cache, metric)
        ours = sweep(model, clean, corrupted, metric, site, by, progress=False)
        assert (ours.values - ref).abs().max() < TOL, site


def test_probability_and_normalized_metrics_equal_transformer_lens():
    model = model_of("llama")
    clean, corrupted = prompts()
    _, clean_cache = model.run_with_cache(clean)
    per_prompt_position = LogitDiff(3, 4, pos=[3, 5])  # reads a different position in each prompt
    for metric in (Probability([3, 4]), Normalized.fit(LogitDiff(3, 4), model, clean, corrupted), per_prompt_position):
        with torch.no_grad():
            ref = tlp.get_act_patch_resid_pre(model, corrupted, clean_cache, metric)
        ours = sweep(model, clean, corrupted, metric, "resid_pre", ("layer", "pos"), progress=False)
        assert (ours.values - ref).abs().max() < TOL


def test_shortformer_positions_equal_transformer_lens():
    """The zoo's attention-only models add positions to queries and keys only (shortformer)."""
    model = shortformer_model()
    clean, corrupted = prompts()
    _, clean_cache = model.run_with_cache(clean)
    for site, by, fn in [CASES[0], CASES[4], CASES[6], CASES[13]]:
        with torch.no_grad():
            ref = fn(model, corrupted, clean_cache, METRIC)
        assert (sweep(model, clean, corrupted, METRIC, site, by, progress=False).values - ref).abs().max() < TOL


@pytest.mark.parametrize("arch", ["gpt2", "llama"], ids=str)
def test_noising_direction_swaps_the_runs(arch):
    model = model_of(arch)
    clean, corrupted = prompts()
    _, corrupted_cache = model.run_with_cache(corrupted)
    with torch.no_grad():
        ref = tlp.get_act_patch_attn_head_out_by_pos(model, clean, corrupted_cache, METRIC)
    ours = sweep(model, clean, corrupted, METRIC, "z", ("layer", "pos", "head"), direction="noising", progress=False)
    assert (ours.values - ref).abs().max() < TOL
    with torch.no_grad():
        assert abs(ours.meta["clean_value"] - float(METRIC(model(clean)))) < TOL
        assert abs(ours.meta["corrupted_value"] - float(METRIC(model(corrupted)))) < TOL


def test_a_batch_too_large_for_max_memory_is_patched_in_parts_with_the_same_numbers():  # sweep, approx, path
    """Prompt pairs split into parts (one pair each) give the whole batch's values: every circuitlab metric is a
    mean over prompts, so the parts' values averaged by size are exact; per-prompt answers follow their prompts."""
    model = model_of("gpt2")
    clean, corrupted = prompts(batch=5, seed=3)
    answers = dict(correct=[3, 5, 8, 2, 11], wrong=[7, 9, 1, 4, 6])
    metrics = [LogitDiff(**answers), LogitDiff(**answers, pos=[-1, -2, -1, -3, -1]),
               Probability([3, 5, 8, 2, 11], log=True),
               Normalized(LogitDiff(**answers), clean=1.5, corrupted=-0.5)]
    for metric in metrics:
        whole = sweep(model, clean, corrupted, metric, "resid_pre", progress=False)
        parts = sweep(model, clean, corrupted, metric, "resid_pre", max_memory=1, progress=False)
        assert whole.meta["prompt_parts"] == 1 and parts.meta["prompt_parts"] == 5
        assert (whole.values - parts.values).abs().max() < TOL, metric
        assert abs(whole.meta["clean_value"] - parts.meta["clean_value"]) < TOL
        assert abs(whole.meta["corrupted_value"] - parts.meta["corrupted_value"]) < TOL
        approx_whole = attribution(model, clean, corrupted, metric, "z", ("layer", "head"))
        approx_parts = attribution(model, clean, corrupted, metric, "z", ("layer", "head"), max_memory=1)
        assert approx_parts.meta["prompt_parts"] == 5
        assert (approx_whole.values - approx_parts.values).abs().max() < TOL, metric
        for senders in ("heads", [(0, 1), (1, 2)]):
            path_whole = path_patch(model, clean, corrupted, metric, senders, progress=False)
            path_parts = path_patch(model, clean, corrupted, metric, senders, progress=False, max_memory=1)
            assert path_parts.meta["prompt_parts"] == 5
            assert (path_whole.values - path_parts.values).abs().max() < TOL, (metric, senders)
            assert abs(path_whole.meta["clean_value"] - path_parts.meta["clean_value"]) < TOL
    # a general metric sees the whole batch: it cannot be split, and the overrun is said, not hidden
    with pytest.warns(UserWarning, match="cannot be split"):
        general = sweep(model, clean, corrupted, lambda logits: logits[:, -1, 3].mean(), "resid_pre",
                        max_memory=1, progress=False)
    assert general.meta["prompt_parts"] == 1


def test_options_do_not_change_the_numbers():
    """Slow reference loop, tiny chunks, a layer subset, another axis order, resid_post: same values."""
    model = model_of("gpt2")
    clean, corrupted = prompts()
    full = sweep(model, clean, corrupted, METRIC, "z", ("layer", "pos", "head"), progress=False)
    slow = sweep(model, clean, corrupted, METRIC, "z", ("layer", "pos", "head"), fast=False, progress=False)
    tiny = sweep(model, clean, corrupted, METRIC, "z", ("layer", "pos", "head"), max_memory=1, progress=False)
    one = sweep(model, clean, corrupted, METRIC, "z", ("layer", "pos", "head"), layers=[1], progress=False)
    swapped = sweep(model, clean, corrupted, METRIC, "hook_z", "layer,head,pos", progress=False)
    assert (full.values - slow.values).abs().max() < TOL
    assert (full.values - tiny.values).abs().max() < TOL
    assert (full.values[1:] - one.values).abs().max() < TOL and one.labels["layer"] == ["L1"]
    assert swapped.axes == ("layer", "head", "pos")
    assert (full.values.permute(0, 2, 1) - swapped.values).abs().max() < TOL
    # resid_post of layer L is resid_pre of layer L + 1; the last layer's is the final residual stream
    post = sweep(model, clean, corrupted, METRIC, "resid_post", ("layer", "pos"), progress=False)
    pre = sweep(model, clean, corrupted, METRIC, "resid_pre", ("layer", "pos"), progress=False)
    assert (post.values[0] - pre.values[1]).abs().max() < TOL
    assert abs(float(post.values[1, -1]) - post.meta["clean_value"]) < TOL  # last position, last layer: clean


def test_labels_and_grouped_query_heads():
    model = model_of("llama")  # 4 query heads, 2 key/value heads
    clean, corrupted = prompts()
    res = sweep(model, clean, corrupted, METRIC, "k", ("layer", "head"), progress=False)
    assert res.shape == (2, 2) and res.labels["head"] == ["KV0", "KV1"]
    res = sweep(model, clean, corrupted, METRIC, "resid_pre", ("layer", "pos"), progress=False)
    assert res.labels["pos"][0].startswith("0:") and len(res.labels["pos"]) == 6
    assert res.meta["site"] == "resid_pre" and res.to_dataframe().shape[0] == 12


def test_errors_say_what_is_wrong():
    model = model_of("gpt2")
    clean, corrupted = prompts()
    with pytest.raises(InputError, match="same number of tokens"):
        sweep(model, clean, corrupted[:, :5], METRIC, progress=False)
    with pytest.raises(InputError, match="unknown site 'resid_middle'"):
        sweep(model, clean, corrupted, METRIC, "resid_middle", progress=False)
    with pytest.raises(InputError, match="does not fit site 'resid_pre'"):
        sweep(model, clean, corrupted, METRIC, "resid_pre", ("layer", "head"), progress=False)
    with pytest.raises(InputError, match="must include 'layer'"):
        sweep(model, clean, corrupted, METRIC, "z", ("head",), progress=False)
    with pytest.raises(InputError, match="one number"):
        sweep(model, clean, corrupted, lambda logits: logits[:, -1, 0], progress=False)
    with pytest.raises(InputError, match="out of range"):
        sweep(model, clean, corrupted, METRIC, layers=[2], progress=False)
    with pytest.raises(InputError, match="direction"):
        sweep(model, clean, corrupted, METRIC, direction="sideways", progress=False)
    assert issubclass(InputError, CircuitlabError)


def test_unverified_configuration_takes_the_exact_path():
    """A configuration field outside KV_REUSE_VERIFIED (here an attention soft cap) turns the cached key/value
    shortcut off; the sweep still gives TransformerLens's numbers, and meta says why."""
    from circuitlab.testing import architecture_config

    cfg = architecture_config("gpt2", seed=11)
    cfg.attn_scores_soft_cap = 5.0
    model = HookedTransformer(cfg).eval()
    clean, corrupted = prompts()
    _, clean_cache = model.run_with_cache(clean)
    for site, by, fn in [CASES[0], CASES[4]]:
        with torch.no_grad():
            ref = fn(model, corrupted, clean_cache, METRIC)
        ours = sweep(model, clean, corrupted, METRIC, site, by, progress=False)
        engine = ours.meta["engine"]
        assert not engine["kv_reuse"] and not engine["last_block"] and "attn_scores_soft_cap=5.0" in engine["why"]
        assert engine["runner"] == "blocks" and engine["declarative_readout"]  # the other shortcuts stay on
        assert (ours.values - ref).abs().max() < TOL
    verified = sweep(model_of("gpt2"), clean, corrupted, METRIC, progress=False).meta["engine"]
    assert verified["kv_reuse"] and verified["last_block"] and "self-check passed" in verified["why"]


def test_failed_self_check_falls_back_to_the_exact_path(monkeypatch):
    """Where the attention's key/value cache does not hold what hook_k/hook_v hold (clip_qkv clamps after the
    hooks), the start-up self-check catches it even if the allowlist let the configuration through."""
    from circuitlab.testing import architecture_config

    cfg = architecture_config("gpt2", seed=11)
    cfg.clip_qkv = 0.05
    model = HookedTransformer(cfg).eval()
    monkeypatch.setitem(exact.KV_REUSE_VERIFIED, "clip_qkv", (None, 0.05))
    clean, corrupted = prompts()
    _, clean_cache = model.run_with_cache(clean)
    with torch.no_grad():
        ref = tlp.get_act_patch_resid_pre(model, corrupted, clean_cache, METRIC)
    ours = sweep(model, clean, corrupted, METRIC, "resid_pre", ("layer", "pos"), progress=False)
    assert not ours.meta["engine"]["kv_reuse"] and "self-check failed" in ours.meta["engine"]["why"]
    assert (ours.values - ref).abs().max() < TOL


def test_patch_spec_and_model_names(tmp_path):
    """The patch spec is recorded alike by every method; a saved model's path works as the model."""
    from circuitlab.models import save_model

    model = model_of("gpt2")
    clean, corrupted = prompts()
    res = sweep(model, clean, corrupted, METRIC, "z", ("layer", "head"), layers=[-1], progress=False)
    approx = attribution(model, clean, corrupted, METRIC, "z", ("layer", "head"), layers=[1])
    for r, method in ((res, "activation patching"), (approx, "attribution patching")):
        assert {k: r.meta[k] for k in ("method", "site", "by", "direction", "layers")} == {
            "method": method, "site": "z", "by": ("layer", "head"), "direction": "denoising", "layers": [1]}
    assert abs(approx.meta["clean_value"] - res.meta["clean_value"]) < TOL
    assert abs(approx.meta["corrupted_value"] - res.meta["corrupted_value"]) < TOL
    paths = path_patch(model, clean, corrupted, METRIC, senders="heads", receivers="1.0.q", progress=False)
    assert paths.meta["method"] == "path patching" and paths.meta["senders"] == "heads"
    assert paths.meta["by"] == ("layer", "head") and paths.meta["layers"] == [0]
    assert paths.meta["direction"] == "denoising" and paths.meta["receivers"] == [(1, 0, "q")]

    save_model(model, tmp_path / "m")
    by_path = sweep(str(tmp_path / "m"), clean, corrupted, METRIC, "z", ("layer", "head"), layers=[1], progress=False)
    assert torch.allclose(by_path.values, res.values, atol=TOL)


# -- attribution patching ---------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def linear_readout_model() -> HookedTransformer:
    """Attention-only, no LayerNorm: the logits are linear in every last-layer head's q-independent inputs."""
    cfg = HookedTransformerConfig(n_layers=2, d_model=32, n_heads=4, d_head=8, d_vocab=50, n_ctx=16, attn_only=True,
                                  act_fn=None, normalization_type=None, seed=2, device="cpu", model_name="linear")
    return HookedTransformer(cfg).eval()


LINEAR_CASES = [("z", ("layer", "head")), ("attn_out", ("layer", "pos")), ("v", ("layer", "pos", "head")),
                ("pattern", ("layer", "head", "dest_pos")), ("resid_post", ("layer", "pos"))]


@pytest.mark.parametrize("site,by", LINEAR_CASES, ids=[case_id(c) for c in LINEAR_CASES])
def test_attribution_is_exact_where_the_metric_is_linear(site, by):
    """In the last layer of a model without LayerNorm, the logit difference is linear in z, attn_out, v (the
    pattern does not depend on v), the pattern (z = pattern @ v) and resid_post: first order is exact."""
    model = linear_readout_model()
    clean, corrupted = prompts()
    exact_res = sweep(model, clean, corrupted, METRIC, site, by, layers=[1], progress=False)
    approx = attribution(model, clean, corrupted, METRIC, site, by, layers=[1])
    assert approx.shape == exact_res.shape and approx.axes == exact_res.axes
    assert (approx.values - exact_res.values).abs().max() < 1e-4


def test_attribution_shape_and_first_order_behaviour():
    model = model_of("gpt2")
    clean, corrupted = prompts()
    exact_res = sweep(model, clean, corrupted, METRIC, "resid_pre", ("layer", "pos"), progress=False)
    approx = attribution(model, clean, corrupted, METRIC, "resid_pre", ("layer", "pos"))
    assert approx.shape == exact_res.shape and "linear estimate" in approx.title
    # patching position 0 (identical tokens, hence identical activations) changes nothing, exactly and linearly
    assert torch.allclose(approx.values[:, 0], torch.full((2,), approx.meta["base_value"]), atol=1e-5)
    assert torch.allclose(exact_res.values[:, 0], torch.full((2,), exact_res.meta["corrupted_value"]), atol=1e-5)


# -- path patching -------------------------------------------------------------------------------------------------

def _head_out(model, cache, layer, head):
    return cache[f"blocks.{layer}.attn.hook_z"][:, :, head] @ model.W_O[layer, head]


@pytest.mark.parametrize("arch", ["gpt2", "llama"], ids=str)
def test_path_patch_to_logits_equals_direct_computation(arch):
    """Senders = every head of the last layer, receiver = final residual stream: with all else frozen, the final
    residual stream is the corrupted one plus the senders' output differences, then ln_final and unembed."""
    model = model_of(arch)
    clean, corrupted = prompts()
    last = model.cfg.n_layers - 1
    _, cc = model.run_with_cache(clean)
    _, xc = model.run_with_cache(corrupted)
    resid = xc[f"blocks.{last}.hook_resid_post"].clone()
    for h in range(model.cfg.n_heads):
        resid += _head_out(model, cc, last, h) - _head_out(model, xc, last, h)
    with torch.no_grad():
        expected = float(METRIC(model.unembed(model.ln_final(resid))))
    res = path_patch(model, clean, corrupted, METRIC, senders=[(last, h) for h in range(model.cfg.n_heads)],
                     receivers="resid_final")
    assert abs(float(res.values[0]) - expected) < TOL


@pytest.mark.parametrize("arch,component", [("gpt2", "q"), ("pythia", "k"), ("llama", "v")],
                         ids=["gpt2-q", "pythia-k", "llama-v"])
def test_path_patch_into_head_input_equals_brute_force(arch, component):
    """Receiver = one head's q/k/v in layer 1: its input is the corrupted residual stream plus the senders'
    output differences (head 0.2 and MLP 0), through ln1; then a normal run with only that input replaced."""
    model = model_of(arch)
    clean, corrupted = prompts()
    _, cc = model.run_with_cache(clean)
    _, xc = model.run_with_cache(corrupted)
    x = xc["blocks.1.hook_resid_pre"] + _head_out(model, cc, 0, 2) - _head_out(model, xc, 0, 2)
    x = x + cc["blocks.0.hook_mlp_out"] - xc["blocks.0.hook_mlp_out"]
    attn = model.blocks[1].attn
    w, b = {"q": (attn.W_Q, attn.b_Q), "k": (attn._W_K, attn._b_K) if hasattr(attn, "_W_K") else (attn.W_K, attn.b_K),
            "v": (attn._W_V, attn._b_V) if hasattr(attn, "_W_V") else (attn.W_V, attn.b_V)}[component]
    head = 1
    with torch.no_grad():
        new = model.blocks[1].ln1(x) @ w[head] + b[head]

        def put(act, hook):
            act[:, :, head] = new
            return act

        expected = float(METRIC(model.run_with_hooks(corrupted, fwd_hooks=[(f"blocks.1.attn.hook_{component}", put)])))
    res = path_patch(model, clean, corrupted, METRIC, senders=["L0H2", ("mlp", 0)], receivers=[(1, head, component)])
    assert abs(float(res.values[0]) - expected) < TOL
    assert res.labels["senders"] == ["L0H2+MLP0"]


def test_path_patch_head_sweep_and_errors():
    model = model_of("attn_only")
    clean, corrupted = prompts()
    res = path_patch(model, clean, corrupted, METRIC, senders="heads", receivers="L1H0.q", progress=False)
    assert res.axes == ("layer", "head") and res.shape == (2, 4)
    assert torch.allclose(res.values[1], torch.full((4,), res.meta["corrupted_value"]))  # no path from layer 1
    with pytest.raises(InputError, match="no path"):
        path_patch(model, clean, corrupted, METRIC, senders=(1, 0), receivers=[(1, 2, "q")])
    with pytest.raises(InputError, match="attention-only"):
        path_patch(model, clean, corrupted, METRIC, senders="MLP0")
    with pytest.raises(InputError, match="cannot read receiver"):
        path_patch(model, clean, corrupted, METRIC, senders=(0, 0), receivers=["L1H0.z"])


def test_path_patch_head_grammar():
    """Senders and receivers use the package's one head grammar: (l, h), "L1H2" and "1.2" (negative from the end);
    receivers add ".q/.k/.v"; MLP senders stay "MLP2" / ("mlp", 2)."""
    from circuitlab.patching.path import _parse_receivers, _parse_senders

    model = model_of("llama")  # 4 query heads, 2 key/value heads
    clean, corrupted = prompts()
    for senders in ([(0, 2), ("mlp", 0)], ["L0H2", "MLP0"], ["0.2", "mlp0"], [(0, -2), "MLP-2"], ("0.2", "MLP0")):
        assert _parse_senders(model, senders) == [("head", 0, 2), ("mlp", 0)], senders
    assert _parse_senders(model, "1.3") == _parse_senders(model, (1, 3)) == [("head", 1, 3)]
    for receivers in ("L1H1.q", "1.1.q", "1.1q", "L1H1q", ["-1.-3.q"], (1, 1, "q"), [(1, 1, "q")]):
        assert _parse_receivers(model, receivers) == [(1, 1, "q")], receivers
    assert _parse_receivers(model, ["1.-1.k", "L0H0.v"]) == [(1, 1, "k"), (0, 0, "v")]  # key/value heads

    def value(senders, receivers):
        return float(path_patch(model, clean, corrupted, METRIC, senders, receivers).values[0])

    assert abs(value(["0.2", "MLP0"], "1.1.q") - value([(0, 2), ("mlp", 0)], [(1, 1, "q")])) < TOL
    res = path_patch(model, clean, corrupted, METRIC, senders=["0.2", "MLP0"], receivers="1.1.v")
    assert res.labels["senders"] == ["L0H2+MLP0"] and res.meta["senders"] == ["L0H2", "MLP0"]
    with pytest.raises(InputError, match="cannot read sender"):
        path_patch(model, clean, corrupted, METRIC, senders="head 3")
    with pytest.raises(InputError, match="out of range"):
        path_patch(model, clean, corrupted, METRIC, senders="0.7")
    with pytest.raises(InputError, match="key/value head"):  # a k/v receiver indexes the 2 key/value heads
        path_patch(model, clean, corrupted, METRIC, senders="0.2", receivers="1.3.k")
    with pytest.raises(InputError, match="cannot read receiver"):
        path_patch(model, clean, corrupted, METRIC, senders="0.2", receivers="1.3")


# -- command line --------------------------------------------------------------------------------------------------


GEMMA3_CASES = [CASES[i] for i in (0, 2, 4, 6, 8)]


@pytest.mark.parametrize("site,by,tl_fn", GEMMA3_CASES, ids=[case_id(c) for c in GEMMA3_CASES])
def test_gemma3_shape_reuses_keys_and_values_with_transformer_lens_numbers(site, by, tl_fn):
    """A random Gemma-3-shaped model (per-head q/k norms after hook_k, sandwich norms, local windows shorter than
    the prompt, one key/value head) is a verified configuration: key/value reuse and the last-block shortcut run,
    and the numbers are TransformerLens's."""
    model = model_of("gemma3")
    clean, corrupted = prompts()
    _, clean_cache = model.run_with_cache(clean)
    with torch.no_grad():
        ref = tl_fn(model, corrupted, clean_cache, METRIC)
    ours = sweep(model, clean, corrupted, METRIC, site, by, progress=False)
    engine = ours.meta["engine"]
    assert engine["kv_reuse"] and engine["last_block"] and "self-check passed" in engine["why"]
    assert ours.shape == tuple(ref.shape) and ref.abs().max() > 0.1
    assert (ours.values - ref).abs().max() < TOL


def test_gemma3_keys_must_be_normalised_before_reuse(monkeypatch):
    """hook_k fires before Gemma-3's per-head k_norm: reusing the hooked keys unnormalised would be wrong, and the
    start-up self-check says so (the sweep then takes the exact path with the same numbers)."""
    from circuitlab.engine.blocks import BlockRunner

    monkeypatch.setattr(BlockRunner, "cached_keys", lambda self, layer, keys: keys)
    model = model_of("gemma3")
    clean, corrupted = prompts()
    _, clean_cache = model.run_with_cache(clean)
    with torch.no_grad():
        ref = tlp.get_act_patch_resid_pre(model, corrupted, clean_cache, METRIC)
    ours = sweep(model, clean, corrupted, METRIC, "resid_pre", ("layer", "pos"), progress=False)
    assert not ours.meta["engine"]["kv_reuse"] and "self-check failed" in ours.meta["engine"]["why"]
    assert (ours.values - ref).abs().max() < TOL
