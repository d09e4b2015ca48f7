"""The block runner (circuitlab.engine.blocks) against TransformerLens's plain forward pass with hooks."""

from __future__ import annotations

import pytest
import torch

from circuitlab.engine.blocks import (KV_REUSE_VERIFIED, BlockRunner, Replace, gather_positions, kv_reuse_blockers,
                                      read_logits)
from circuitlab.testing import ARCHITECTURES, ENGINE_ARCHITECTURES, architecture_config, random_model

TOL = 1e-5


def tokens(seq: int = 7):
    return torch.randint(1, 50, (2, seq), generator=torch.Generator().manual_seed(3))


def runner_for(model, toks, **kwargs) -> BlockRunner:
    names = BlockRunner.hook_names(model)
    _, cache = model.run_with_cache(toks, names_filter=lambda n: n in names)
    return BlockRunner.from_cache(model, cache, **kwargs)


@pytest.mark.parametrize("arch", ARCHITECTURES + ENGINE_ARCHITECTURES)
def test_a_replacement_equals_the_forward_pass_with_that_hook(arch):
    """Group 0 replaces nothing (the base run); group 1 zeroes head 1's z at position 5 in layer 1; group 2 adds
    a vector to the residual stream entering layer 2 at position 4. From position 3 on, with cached keys and values
    and the last-block shortcut, every group's last-position logits equal TransformerLens's forward pass with that
    hook."""
    model = random_model(arch, n_layers=3)
    toks = tokens()
    push = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(4))  # (a constant would be
    # removed by LayerNorm's centering)
    runner = runner_for(model, toks, last_position=True)
    assert runner.kv_reuse and runner.last_only and "self-check passed" in runner.why

    def zero_head(act):
        act[:, 5 - 3, 1] = 0.0
        return act

    def join(layer, groups, rows):
        if layer == 2:
            rows[:, 4 - 3] += push
        return rows

    def replacements(layer, joined):
        return [Replace("blocks.1.attn.hook_z", slice(2, 4), zero_head)] if layer == 1 else []

    final = runner.run(3, [0, 1, 2], join, replacements)
    assert final.shape == (6, 1, model.cfg.d_model)
    got = read_logits(model, gather_positions(final, torch.full((2, 1), 6), 3, offset=6), 3, 2)[:, :, 0]

    def hook_z(z, hook):
        z[:, 5, 1] = 0.0
        return z

    def hook_resid(x, hook):
        x[:, 4] += push
        return x

    with torch.no_grad():
        want = [model(toks)[:, -1],
                model.run_with_hooks(toks, fwd_hooks=[("blocks.1.attn.hook_z", hook_z)])[:, -1],
                model.run_with_hooks(toks, fwd_hooks=[("blocks.2.hook_resid_pre", hook_resid)])[:, -1]]
    for g in range(3):
        assert (got[g] - want[g]).abs().max() < TOL
    assert (want[1] - want[0]).abs().max() > 1e-3 and (want[2] - want[0]).abs().max() > 1e-3  # not trivial


def test_columns_readout_equals_full_logits():
    model = random_model("llama", n_layers=2)
    toks = tokens()
    runner = runner_for(model, toks)
    final = runner.run(0, [0, 0])  # two groups, every position (no last-position reading asked for)
    assert final.shape == (4, 7, model.cfg.d_model) and not runner.last_only
    positions, columns = torch.tensor([[6], [2]]), torch.tensor([[3, 9], [4, 1]])
    x = gather_positions(final, positions, 2)
    full = runner.read(x, 2)  # [n, batch, 1, vocab]
    some = runner.read(x, 2, columns)
    want = torch.stack([full[:, b, :, columns[b]] for b in range(2)], dim=1)
    assert (some - want).abs().max() < TOL


def test_the_one_rule_allowlist_and_self_check(monkeypatch):
    cfg = architecture_config("gpt2")
    cfg.attn_scores_soft_cap = 5.0
    from transformer_lens import HookedTransformer

    capped = HookedTransformer(cfg).eval()
    assert any("attn_scores_soft_cap=5.0" in b for b in kv_reuse_blockers(capped))
    runner = runner_for(capped, tokens())
    assert not runner.kv_reuse and "not reused" in runner.why
    model = random_model("gemma3")
    assert kv_reuse_blockers(model) == [] and "Gemma3ForCausalLM" in KV_REUSE_VERIFIED["original_architecture"]
    monkeypatch.setattr("circuitlab.engine.blocks.SELF_CHECK_TOLERANCE", -1.0)
    runner = runner_for(model, tokens(), last_position=True)
    assert not runner.kv_reuse and not runner.last_only and "self-check failed" in runner.why
