"""What the circuit-discovery tests share: random-init models in float64 (every architecture family, plus the
norm variants TransformerLens's loaders produce), zoo/attn-only-2l, each built once, and every sender's output
from TransformerLens's own per-head results."""

from __future__ import annotations

import copy
from functools import lru_cache

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

import circuitlab
from circuitlab.circuits import Graph
from circuitlab.testing import random_model


def float64(model: HookedTransformer) -> HookedTransformer:
    return copy.deepcopy(model).to(torch.float64).eval()


@lru_cache(maxsize=None)
def model_of(arch: str) -> HookedTransformer:
    """``arch`` from :data:`circuitlab.testing.ARCHITECTURES`, or ``"norm=LNPre"`` / ``"norm=RMSPre"`` /
    ``"norm=None"``: TransformerLens's folded norms (from_pretrained's default) and none at all."""
    if arch.startswith("norm="):
        norm = arch.split("=")[1]
        cfg = HookedTransformerConfig(n_layers=2, d_model=32, n_heads=4, d_head=8, d_mlp=64, d_vocab=50, n_ctx=32,
                                      act_fn="gelu", normalization_type=None if norm == "None" else norm, seed=7,
                                      device="cpu", model_name=f"random-{norm}")
        return float64(HookedTransformer(cfg))
    return float64(random_model(arch, seed=3))


@lru_cache(maxsize=None)
def attn_only_2l() -> HookedTransformer:
    return float64(circuitlab.load_model("zoo/attn-only-2l"))


def sender_outputs(model: HookedTransformer, tokens) -> dict:
    """Every sender's output from TransformerLens's own per-head results (hook_result), by sender name."""
    graph = Graph.from_model(model)
    model.cfg.use_attn_result = True
    try:
        _, cache = model.run_with_cache(tokens)
    finally:
        model.cfg.use_attn_result = False
    out = {"embed": cache["blocks.0.hook_resid_pre"]}
    for node in graph.senders[1:]:
        if node.kind == "head":
            out[node.name] = cache[f"blocks.{node.layer}.attn.hook_result"][:, :, node.head]
        else:
            out[node.name] = cache[f"blocks.{node.layer}.hook_mlp_out"]
    return out
