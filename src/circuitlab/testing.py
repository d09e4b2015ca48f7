"""Random-init models of the architectures circuitlab supports, for tests and benchmarks.

Random weights make exactness checks sharp (nothing is accidentally symmetric) and need no download.
Biases are filled with random values too (TransformerLens initialises them to zero, which would hide bugs
in how an analysis treats them).
"""

from __future__ import annotations

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from circuitlab.core import check_seed, shorten

#: the architectures every analysis is checked on
ARCHITECTURES = ("gpt2", "attn_only", "pythia", "llama")
#: further shapes :func:`architecture_config` builds for the engine's tests only (the block runner's verified
#: configurations, ``circuitlab.engine.blocks.KV_REUSE_VERIFIED``), not run through every analysis
ENGINE_ARCHITECTURES = ("gemma3",)


def architecture_config(arch: str, n_layers: int = 2, d_model: int = 32, n_heads: int = 4, d_vocab: int = 50,
                        n_ctx: int = 32, seed: int = 0) -> HookedTransformerConfig:
    """A small config of one architecture family.

    - ``gpt2``: LayerNorm, learned absolute positions, GELU MLP, sequential attention then MLP.
    - ``attn_only``: LayerNorm, learned positions, no MLPs.
    - ``pythia``: rotary positions (partial rotary_dim), parallel attention + MLP, untied LayerNorms.
    - ``llama``: RMSNorm, rotary, gated SiLU MLP, grouped-query attention (fewer key/value heads).
    - ``gemma3`` (:data:`ENGINE_ARCHITECTURES`): Gemma-3's attention: per-head query/key RMSNorms (``hook_k``
      fires before ``k_norm``), sandwich norms around attention and MLP, local sliding-window layers (window 3)
      with their own rotary base beside global ones, one key/value head, ``d_head`` wider than
      ``d_model / n_heads``, gated tanh-GELU MLP.
    """
    seed = check_seed(seed)
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
    if arch == "gemma3":
        attn_types = ["local" if (layer + 1) % 3 else "global" for layer in range(n_layers)]
        attn_types[-1] = "global"
        return HookedTransformerConfig(**{**common, "d_head": 2 * d_model // n_heads}, d_mlp=2 * d_model,
                                       act_fn="gelu_pytorch_tanh", normalization_type="RMS", final_rms=True,
                                       gated_mlp=True, positional_embedding_type="rotary", rotary_base=1_000_000,
                                       rotary_base_local=10_000, n_key_value_heads=1, use_qk_norm=True,
                                       use_normalization_before_and_after=True, use_local_attn=True,
                                       attn_types=attn_types, window_size=3,
                                       original_architecture="Gemma3ForCausalLM", model_name="random-gemma3")
    raise ValueError(f"unknown architecture {shorten(arch)}; choose from {ARCHITECTURES + ENGINE_ARCHITECTURES}")


def random_model(arch: str, seed: int = 0, **kwargs) -> HookedTransformer:
    """A random-init HookedTransformer of ``arch`` (see :func:`architecture_config`), biases randomised, eval mode."""
    seed = check_seed(seed)
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
    seed = check_seed(seed)
    cfg = HookedTransformerConfig(n_layers=12, d_model=768, n_heads=12, d_head=64, d_mlp=3072, d_vocab=50257,
                                  n_ctx=n_ctx, act_fn="gelu_new", normalization_type="LN", seed=seed,
                                  positional_embedding_type="standard", model_name="random-gpt2-small",
                                  default_prepend_bos=True, device="cpu")
    model = HookedTransformer(cfg)
    model.eval()
    return model


#: the TransformerBridge families :func:`random_bridge` builds
BRIDGE_ARCHITECTURES = ("gpt2", "neox", "llama")


def random_bridge(arch: str = "gpt2", seed: int = 0, n_layers: int = 2, d_model: int = 32, n_heads: int = 4,
                  d_vocab: int = 50, n_ctx: int = 32):
    """A small random-init ``TransformerBridge`` in compatibility mode, and the ``HookedTransformer`` equal to it.

    Built offline: a Hugging Face model from a small ``transformers`` config (``GPT2Config`` for ``"gpt2"``:
    LayerNorm, learned positions, GELU; ``GPTNeoXConfig`` for ``"neox"`` (Pythia): partial rotary, parallel
    attention and MLP; ``LlamaConfig`` for ``"llama"``: RMSNorm, rotary, gated SiLU MLP, grouped-query
    attention) with random weights, biases and norm scales, saved with a word-level tokenizer
    (``"t0 t1 ..."``, see :func:`circuitlab.zoo.tokenizer.word_level_tokenizer`) to a temporary directory. The
    bridge boots from that directory and is put in compatibility mode (TransformerLens's default weight
    processing: folded norms, centred writing weights and unembedding); the HookedTransformer is converted from
    the same Hugging Face model by TransformerLens's own loader with the same processing. The two compute the
    same logits up to float32 rounding, so any analysis can be compared between them.

    Returns:
        ``(bridge, hooked)``.
    """
    seed = check_seed(seed)
    import logging
    import shutil
    import tempfile

    import transformer_lens.loading_from_pretrained as loading
    from transformer_lens.model_bridge import TransformerBridge
    from transformers import (GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig,
                              LlamaForCausalLM)

    from circuitlab.zoo.tokenizer import word_level_tokenizer

    std = 0.8 / d_model ** 0.5  # TransformerLens's scale: HF's default 0.02 leaves a tiny model almost linear
    torch.manual_seed(seed)
    if arch == "gpt2":
        hf = GPT2LMHeadModel(GPT2Config(n_layer=n_layers, n_head=n_heads, n_embd=d_model, vocab_size=d_vocab,
                                        n_positions=n_ctx, n_ctx=n_ctx, initializer_range=std))
    elif arch == "neox":
        hf = GPTNeoXForCausalLM(GPTNeoXConfig(num_hidden_layers=n_layers, num_attention_heads=n_heads,
                                              hidden_size=d_model, intermediate_size=4 * d_model,
                                              vocab_size=d_vocab, max_position_embeddings=n_ctx, rotary_pct=0.5,
                                              use_parallel_residual=True, initializer_range=std))
    elif arch == "llama":
        hf = LlamaForCausalLM(LlamaConfig(num_hidden_layers=n_layers, num_attention_heads=n_heads,
                                          num_key_value_heads=max(1, n_heads // 2), hidden_size=d_model,
                                          intermediate_size=3 * d_model, vocab_size=d_vocab,
                                          max_position_embeddings=n_ctx, tie_word_embeddings=False,
                                          initializer_range=std))
    else:
        raise ValueError(f"unknown bridge architecture {shorten(arch)}; choose from {BRIDGE_ARCHITECTURES}")
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif "ln" in name or "norm" in name:  # norm scales: away from 1 so they matter
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=gen))
    hf.eval()
    tokenizer = word_level_tokenizer(d_vocab - 1)

    # TransformerLens reads a local directory's architecture from its config, unless the path names a family
    tmp = tempfile.mkdtemp(prefix="circuitlab-bridge-")
    if any(word in tmp.lower() for word in ("llama", "gemma")):
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError(f"the temporary directory {shorten(tmp)} names a model family; set TMPDIR elsewhere.")
    name = f"random-{arch}-bridge"
    quiet = logging.getLogger("transformers").level
    try:
        logging.getLogger("transformers").setLevel(logging.ERROR)
        hf.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        bridge = TransformerBridge.boot_transformers(tmp, device="cpu")
        bridge.enable_compatibility_mode(disable_warnings=True)
        cfg = loading.get_pretrained_model_config(tmp, fold_ln=True, device="cpu")
        cfg.model_name = name
        hooked = HookedTransformer(cfg, tokenizer, move_to_device=False)
        hooked.load_and_process_state_dict(loading.get_pretrained_state_dict(tmp, cfg, hf), fold_ln=True,
                                           center_writing_weights=True, center_unembed=True, fold_value_biases=True)
    finally:
        logging.getLogger("transformers").setLevel(quiet)
        shutil.rmtree(tmp, ignore_errors=True)
    bridge.cfg.model_name = name
    bridge.eval()
    hooked.eval()
    return bridge, hooked


def need_real_model(name: str) -> None:
    """In a test: skip when the real model ``name``'s PyPI package is not installed, or fail instead where
    ``CIRCUITLAB_REQUIRE_REAL`` is set (``make test`` installs the packages, so there a missing one is an error)."""
    import os

    import pytest

    from circuitlab.models import real

    spec = real.real_models()[name]
    if spec.installed:
        return
    why = f"{name} needs its PyPI package: {spec.install}"
    if os.environ.get("CIRCUITLAB_REQUIRE_REAL"):
        pytest.fail(why + " (make test installs it; CIRCUITLAB_REQUIRE_REAL is set)")
    pytest.skip(why)


#: the hook each causal-tracing state is restored at (written out here, apart from circuitlab.tracing)
_TRACE_HOOKS = {"resid": "blocks.{}.hook_resid_post", "mlp": "blocks.{}.hook_mlp_out",
                "attn": "blocks.{}.hook_attn_out"}


@torch.no_grad()
def reference_restoration(model, tokens: torch.Tensor, span: tuple[int, int], answer: int, noise: torch.Tensor,
                          clean, kind: str, layer: int, pos: int, window: int = 1) -> float:
    """One restored state, as the paper's code computes it: one hooked forward pass of ``samples`` rows.

    ``clean`` is the clean run's ``ActivationCache``; the noise ``[samples, span, d_model]`` is added to
    ``hook_embed`` at ``span``; ``kind``'s state at ``pos`` is restored at ``layer`` (``resid``) or over the
    window of layers centred on it (``mlp``, ``attn``); returns P(answer) at the last position (full softmax),
    averaged over the samples.
    """
    n_layers = model.cfg.n_layers
    start, end = span
    layers = [layer] if kind == "resid" else list(range(max(0, layer - window // 2),
                                                        min(n_layers, layer - (-window // 2))))

    def add_noise(embed, hook=None):
        embed = embed.clone()
        embed[:, start:end] += noise
        return embed

    def restore(act, hook):
        act = act.clone()
        act[:, pos] = clean[hook.name][0, pos]
        return act

    hooks = [("hook_embed", add_noise)] + [(_TRACE_HOOKS[kind].format(l), restore) for l in layers]
    logits = model.run_with_hooks(tokens.repeat(noise.shape[0], 1), fwd_hooks=hooks)
    return float(torch.softmax(logits[:, -1].double(), -1)[:, answer].mean())


@torch.no_grad()
def reference_trace(model, tokens: torch.Tensor, span: tuple[int, int], answer: int, noise: torch.Tensor,
                    kinds=("resid", "mlp", "attn"), window: int = 1) -> torch.Tensor:
    """Causal tracing as the paper's code does it, for tests and benchmarks: one forward pass per restored state
    (:func:`reference_restoration`) for every (kind, position, layer). Written apart from
    :mod:`circuitlab.tracing` on purpose, sharing none of its code. ``tokens [1, pos]``; returns
    ``[kind, pos, layer]``."""
    _, clean = model.run_with_cache(tokens)
    n_layers, n = model.cfg.n_layers, tokens.shape[1]
    out = torch.zeros(len(kinds), n, n_layers, dtype=torch.float64)
    for k, kind in enumerate(kinds):
        for layer in range(n_layers):
            for pos in range(n):
                out[k, pos, layer] = reference_restoration(model, tokens, span, answer, noise, clean, kind, layer,
                                                           pos, window)
    return out
