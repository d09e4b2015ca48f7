"""Models the circuit-discovery tests share: random-init models in float64 (every architecture family, plus the
norm variants TransformerLens's loaders produce) and zoo/attn-only-2l, each built once."""

from __future__ import annotations

import copy
from functools import lru_cache

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

import circuitlab
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
