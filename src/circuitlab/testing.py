"""Random-init models of the architectures circuitlab supports, for tests and benchmarks.

Random weights make exactness checks sharp (nothing is accidentally symmetric) and need no download.
Biases are filled with random values too (TransformerLens initialises them to zero, which would hide bugs
in how an analysis treats them).
"""

from __future__ import annotations

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

#: the architectures every analysis is checked on
ARCHITECTURES = ("gpt2", "attn_only", "pythia", "llama")


def architecture_config(arch: str, n_layers: int = 2, d_model: int = 32, n_heads: int = 4, d_vocab: int = 50,
                        n_ctx: int = 32, seed: int = 0) -> HookedTransformerConfig:
    """A small config of one architecture family.

    - ``gpt2``: LayerNorm, learned absolute positions, GELU MLP, sequential attention then MLP.
    - ``attn_only``: LayerNorm, learned positions, no MLPs.
    - ``pythia``: rotary positions (partial rotary_dim), parallel attention + MLP, untied LayerNorms.
    - ``llama``: RMSNorm, rotary, gated SiLU MLP, grouped-query attention (fewer key/value heads).
    """
    common = dict(n_layers=n_layers, d_model=d_model, n_heads=n_heads, d_head=d_model // n_heads,
                  d_vocab=d_vocab, n_ctx=n_ctx, seed=seed, default_prepend_bos=True, device="cpu")
    if arch == "gpt2":
        return HookedTransformerConfig(**common, d_mlp=4 * d_model, act_fn="gelu_new", normalization_type="LN",
                                       positional_embedding_type="standard", model_name="random-gpt2")
    if arch == "attn_only":
        return HookedTransformerConfig(**common, attn_only=True, act_fn=None, normalization_type="LN",
                                       positional_embedding_type="standard", model_name="random-attn-only")
    if arch == "pythia":
        return HookedTransformerConfig(**common, d_mlp=4 * d_model, act_fn="gelu", normalization_type="LN",
                                       positional_embedding_type="rotary", rotary_dim=(d_model // n_heads) // 2,
                                       parallel_attn_mlp=True, model_name="random-pythia")
    if arch == "llama":
        return HookedTransformerConfig(**common, d_mlp=3 * d_model, act_fn="silu", normalization_type="RMS",
                                       final_rms=True, gated_mlp=True, positional_embedding_type="rotary",
                                       n_key_value_heads=max(1, n_heads // 2), model_name="random-llama")
    raise ValueError(f"unknown architecture {arch!r}; choose from {ARCHITECTURES}")


def random_model(arch: str, seed: int = 0, **kwargs) -> HookedTransformer:
    """A random-init HookedTransformer of ``arch`` (see :func:`architecture_config`), biases randomised, eval mode."""
    cfg = architecture_config(arch, seed=seed, **kwargs)
    model = HookedTransformer(cfg)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.split(".")[-1].lstrip("_").startswith("b_") or name.endswith(".b"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith((".w",)):  # norm scales: away from 1 so they matter
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
    model.eval()
    return model


def gpt2_small_shaped(seed: int = 0, n_ctx: int = 1024) -> HookedTransformer:
    """GPT-2 small's shape (12 layers, 12 heads, d_model 768, vocabulary 50257) with random weights."""
    cfg = HookedTransformerConfig(n_layers=12, d_model=768, n_heads=12, d_head=64, d_mlp=3072, d_vocab=50257,
                                  n_ctx=n_ctx, act_fn="gelu_new", normalization_type="LN", seed=seed,
                                  positional_embedding_type="standard", model_name="random-gpt2-small",
                                  default_prepend_bos=True, device="cpu")
    model = HookedTransformer(cfg)
    model.eval()
    return model
