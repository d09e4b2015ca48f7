"""``FastGPT``: the fast training twin of a GPT-2-style ``HookedTransformer``.

``HookedTransformer`` runs every activation through a hook point, which makes it the model to analyse and a slow
model to train. :class:`FastGPT` is the same forward pass in plain PyTorch with fused kernels, over parameters
with HookedTransformer's names and shapes: build it from a model with :meth:`FastGPT.from_hooked`, train it, and
load :meth:`FastGPT.to_hooked_state` back into the model (:meth:`FastGPT.load_into` does that and checks it).
"""

from __future__ import annotations

import einops
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformer_lens import HookedTransformer, HookedTransformerConfig

from circuitlab.errors import CircuitlabError

#: buffers HookedTransformer builds itself (causal masks, rotary tables): absent from FastGPT's state dict
REBUILT_BUFFERS = ("mask", "IGNORE", "rotary_sin", "rotary_cos")


class _Params(nn.Module):
    def __init__(self, tensors: dict[str, Tensor]):
        super().__init__()
        for k, v in tensors.items():
            self.register_parameter(k, nn.Parameter(v.detach().clone()))


class FastGPT(nn.Module):
    """A plain-PyTorch forward pass of a GPT-2-style ``HookedTransformer`` with the same parameters.

    Its state dict has HookedTransformer's keys and shapes (see :meth:`to_hooked_state`), so the weights move back
    with ``model.load_state_dict(...)``. It uses fused kernels (``F.layer_norm``, tanh-GELU, which is
    ``gelu_new``, and ``scaled_dot_product_attention``), hence its speed; it supports exactly the configurations
    ``zoo/toy-lm`` uses: LayerNorm, gelu_new, causal attention, standard or GPT-NeoX-style rotary
    positions (rotary tables are taken from the model, never trained), and optionally tied embeddings
    (``tied=True``: no ``W_U`` parameter, the unembedding is ``W_E^T``).
    """

    def __init__(self, cfg: HookedTransformerConfig, state: dict[str, Tensor], tied: bool = False):
        super().__init__()
        self.tied = tied
        if not (cfg.normalization_type == "LN" and cfg.act_fn == "gelu_new" and not cfg.rotary_adjacent_pairs
                and cfg.positional_embedding_type in ("standard", "rotary")):
            raise CircuitlabError(
                "FastGPT supports LayerNorm, gelu_new and standard or (GPT-NeoX-style) rotary positions; got "
                f"normalization_type={cfg.normalization_type!r}, act_fn={cfg.act_fn!r}, "
                f"positional_embedding_type={cfg.positional_embedding_type!r}. Train other models with "
                "HookedTransformer itself."
            )
        self.cfg = cfg
        self.rotary = cfg.positional_embedding_type == "rotary"
        if self.rotary:  # the tables every layer shares; buffers, not parameters, and never saved
            self.register_buffer("rotary_sin", state["blocks.0.attn.rotary_sin"].clone(), persistent=False)
            self.register_buffer("rotary_cos", state["blocks.0.attn.rotary_cos"].clone(), persistent=False)
            state = {k: v for k, v in state.items() if not k.endswith(("rotary_sin", "rotary_cos"))}

        def group(prefix: str) -> _Params:
            return _Params({k[len(prefix):]: v for k, v in state.items()
                            if k.startswith(prefix) and "." not in k[len(prefix):]})

        self.embed = group("embed.")
        if not self.rotary:
            self.pos_embed = group("pos_embed.")
        self.blocks = nn.ModuleList()
        for l in range(cfg.n_layers):
            block = nn.Module()
            for part in ("ln1", "attn", "ln2", "mlp"):
                setattr(block, part, group(f"blocks.{l}.{part}."))
            self.blocks.append(block)
        self.ln_final, self.unembed = group("ln_final."), group("unembed.")

    @classmethod
    def from_hooked(cls, model: HookedTransformer, tied: bool = False) -> "FastGPT":
        """The twin of ``model``; with ``tied=True`` the model's ``W_U`` is dropped and ``W_E^T`` used instead."""
        state = {k: v for k, v in model.state_dict().items() if not k.endswith(("mask", "IGNORE"))}
        if tied:
            state.pop("unembed.W_U")
        return cls(model.cfg, state, tied)

    def to_hooked_state(self) -> dict[str, Tensor]:
        """The parameters under HookedTransformer's names (with ``W_U = W_E^T`` when tied), detached copies."""
        state = {k: v.detach().clone() for k, v in self.state_dict().items()}
        if self.tied:
            state["unembed.W_U"] = self.embed.W_E.detach().T.clone()
        return state

    def load_into(self, model: HookedTransformer) -> HookedTransformer:
        """Copy the trained parameters into ``model`` (its own rebuilt buffers stay); returns ``model``."""
        missing, unexpected = model.load_state_dict(self.to_hooked_state(), strict=False)
        assert not unexpected and all(k.endswith(REBUILT_BUFFERS) for k in missing), (missing, unexpected)
        return model

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_vocab"]:
        cfg = self.cfg
        d, eps = (cfg.d_model,), cfg.eps
        n_pos = tokens.shape[1]
        x = self.embed.W_E[tokens]
        if not self.rotary:
            x = x + self.pos_embed.W_pos[:n_pos]
        else:
            r = cfg.rotary_dim
            sin, cos = self.rotary_sin[:n_pos, :r], self.rotary_cos[:n_pos, :r]
        for b in self.blocks:
            a = b.attn
            h = F.layer_norm(x, d, b.ln1.w, b.ln1.b, eps)
            w_qkv = einops.rearrange(torch.stack([a.W_Q, a.W_K, a.W_V]), "three h d e -> d (three h e)")
            b_qkv = einops.rearrange(torch.stack([a.b_Q, a.b_K, a.b_V]), "three h e -> (three h e)")
            q, k, v = einops.rearrange(h @ w_qkv + b_qkv, "b p (three h e) -> three b h p e", three=3, h=cfg.n_heads)
            if self.rotary:
                q, k = _rotate(q, sin, cos, r), _rotate(k, sin, cos, r)
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + einops.rearrange(z, "b h p e -> b p (h e)") @ einops.rearrange(a.W_O, "h e d -> (h e) d") + a.b_O
            h = F.layer_norm(x, d, b.ln2.w, b.ln2.b, eps)
            x = x + F.gelu(h @ b.mlp.W_in + b.mlp.b_in, approximate="tanh") @ b.mlp.W_out + b.mlp.b_out
        x = F.layer_norm(x, d, self.ln_final.w, self.ln_final.b, eps)
        W_U = self.embed.W_E.T if self.tied else self.unembed.W_U
        return x @ W_U + self.unembed.b_U


def _rotate(x: Float[Tensor, "b h p e"], sin: Tensor, cos: Tensor, r: int) -> Float[Tensor, "b h p e"]:
    """GPT-NeoX-style rotary embedding of the first ``r`` dimensions of ``x`` (TransformerLens's convention)."""
    x_rot, x_pass = x[..., :r], x[..., r:]
    half = r // 2
    flipped = torch.cat([-x_rot[..., half:], x_rot[..., :half]], dim=-1)
    return torch.cat([x_rot * cos + flipped * sin, x_pass], dim=-1)
