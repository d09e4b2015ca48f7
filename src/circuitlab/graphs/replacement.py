"""The local replacement model of a prompt: transcoders in place of MLPs, everything nonlinear frozen.

On one prompt (Ameisen et al. 2025, "Circuit Tracing", section 2.2):

- every MLP's output is replaced by its transcoder's reconstruction ``f_L @ W_dec + b_dec (+ skip)`` plus a fixed
  **error** ``e_L = mlp_out_L - transcoder(x_L)`` (the model's MLP output minus the transcoder's, on the prompt);
- every attention **pattern** (``blocks.L.attn.hook_pattern``) and every LayerNorm **scale**
  (``blocks.L.ln1/ln2.hook_scale``, ``ln_final.hook_scale``) is frozen at its value on the prompt.

Then the residual stream, every MLP input, every feature's pre-activation and every logit is an affine function of
the **leaves**: the token embeddings (``hook_embed`` plus ``hook_pos_embed`` where the model has one, one vector per
position), the active features' activations (one number each) and the error vectors (one per layer and position).
With the leaves at their values on the prompt the replacement model reproduces the model's logits exactly (to
float rounding: the frozen quantities are the model's own); scaling a feature's activation moves every downstream
quantity exactly linearly, as long as the other features are held at their values (``recompute=False``, the
attribution graph's setting). With ``recompute=True`` each transcoder reads its (frozen-attention) input and
computes its features again, as the replacement model proper does; then only the attention and norms are frozen.

The forward pass is the model's own (``run_with_hooks``): the frozen quantities and leaves enter through hooks, so
any TransformerLens decoder with LayerNorm or RMSNorm and MLPs runs (rotary or learned positions). Leaves may carry
a leading batch axis ``[B, ...]`` (many copies evaluated at once: the attribution graph's batched backward passes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuitlab.core import as_model, model_name, shorten
from circuitlab.errors import InputError
from circuitlab.features.transcoders import Transcoder, check_transcoders, mlp_in_hook, mlp_out_hook


@dataclass(frozen=True)
class LocalReplacement:
    """A prompt's local replacement model (module notes).

    ``tokens`` ``[pos]``; ``logits`` ``[pos, d_vocab]`` (the model's, clean); ``frozen``: hook name -> the tensor
    held fixed there (``[1, ...]``); ``embeddings`` ``[pos, d_model]``; ``features`` ``[n_active, 3]`` rows
    ``(layer, pos, latent)`` sorted, and ``activations`` ``[n_active]`` their values; ``errors`` ``[n_layers, pos,
    d_model]``; ``mlp_inputs`` ``[n_layers, pos, d_model]`` (the transcoders' inputs on the prompt)."""

    model: Any = field(repr=False)
    transcoders: dict = field(repr=False)
    tokens: Int[Tensor, " pos"]
    logits: Float[Tensor, "pos vocab"]
    frozen: dict = field(repr=False)
    embeddings: Float[Tensor, "pos d_model"]
    features: Int[Tensor, "active 3"]
    activations: Float[Tensor, " active"]
    errors: Float[Tensor, "layer pos d_model"]
    mlp_inputs: Float[Tensor, "layer pos d_model"] = field(repr=False)
    has_pos_embed: bool = False

    @property
    def n_pos(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def n_layers(self) -> int:
        return len(self.transcoders)


def _frozen_hook_names(model: Any) -> list[str]:
    names = []
    for l in range(model.cfg.n_layers):
        names += [f"blocks.{l}.ln1.hook_scale", f"blocks.{l}.ln2.hook_scale", f"blocks.{l}.attn.hook_pattern"]
    names.append("ln_final.hook_scale")
    return [n for n in names if n in model.hook_dict]


@torch.no_grad()
def local_replacement(model: Any, transcoders: Any, prompt: Any) -> LocalReplacement:
    """The local replacement model of ``prompt`` (module notes).

    Args:
        model: a decoder (``HookedTransformer``) or a registry name (``"zoo/toy-lm"``).
        transcoders: one per MLP layer: a shipped set's name (``"toy-lm"``), a list, or ``{layer: transcoder}``
            (:func:`circuitlab.features.transcoders.check_transcoders`).
        prompt: a text (tokenized with BOS) or a 1-D sequence of token ids.
    """
    from circuitlab.core import check_weights_finite, to_tokens

    model = as_model(model)
    check_weights_finite(model)
    if getattr(model.cfg, "original_architecture", None) and not hasattr(model, "blocks"):
        raise InputError("model: the local replacement model needs a TransformerLens decoder with MLP blocks.")
    if getattr(model.cfg, "attn_only", False):
        raise InputError(f"model {model_name(model)!r} is attention-only: it has no MLPs for transcoders to replace.")
    tcs = check_transcoders(model, transcoders)
    if isinstance(prompt, str):
        if not prompt.strip():
            raise InputError("prompt is empty; give a text (or token ids).")
        tokens = to_tokens(model, prompt)[0]
    elif isinstance(prompt, (list, tuple, Tensor)) and len(prompt) and all(
            isinstance(t, int) and not isinstance(t, bool) for t in
            (prompt.tolist() if isinstance(prompt, Tensor) else prompt)):
        tokens = torch.as_tensor(prompt if not isinstance(prompt, Tensor) else prompt.tolist(), dtype=torch.long)
        if tokens.ndim != 1 or int(tokens.min()) < 0 or int(tokens.max()) >= model.cfg.d_vocab:
            raise InputError(f"prompt: token ids must be a flat list in [0, {model.cfg.d_vocab}).")
    else:
        raise InputError(f"prompt must be a text or a flat list of token ids; got {shorten(prompt, 40)}.")
    if tokens.shape[0] > model.cfg.n_ctx:
        raise InputError(f"prompt has {tokens.shape[0]} tokens, more than the model's n_ctx={model.cfg.n_ctx}.")
    tokens = tokens.to(model.cfg.device)
    names = _frozen_hook_names(model)
    cache: dict[str, Tensor] = {}
    wanted = set(names) | {"hook_embed", "hook_pos_embed"} | {mlp_in_hook(l) for l in tcs} | \
        {mlp_out_hook(l) for l in tcs}

    def keep(act: Tensor, hook=None) -> None:
        cache[hook.name] = act.detach().clone()

    logits = model.run_with_hooks(tokens[None], fwd_hooks=[(n, keep) for n in wanted if n in model.hook_dict])
    emb = cache["hook_embed"][0]
    has_pos = "hook_pos_embed" in cache
    if has_pos:
        emb = emb + cache["hook_pos_embed"][0]
    rows, values, errors, inputs = [], [], [], []
    for l in range(model.cfg.n_layers):
        x = cache[mlp_in_hook(l)][0].float()
        f = tcs[l].encode(x)
        errors.append(cache[mlp_out_hook(l)][0].float() - tcs[l].decode(f, x))
        inputs.append(x)
        pos, lat = torch.nonzero(f, as_tuple=True)
        rows.append(torch.stack([torch.full_like(pos, l), pos, lat], 1))
        values.append(f[pos, lat])
    feats = torch.cat(rows) if rows else torch.zeros(0, 3, dtype=torch.long)
    order = torch.argsort(feats[:, 0] * (10**12) + feats[:, 1] * (10**6) + feats[:, 2])
    return LocalReplacement(model=model, transcoders=tcs, tokens=tokens.cpu(), logits=logits[0].detach().float(),
                            frozen={n: cache[n] for n in names}, embeddings=emb.float(), features=feats[order],
                            activations=torch.cat(values)[order], errors=torch.stack(errors),
                            mlp_inputs=torch.stack(inputs), has_pos_embed=has_pos)


def run_replacement(rep: LocalReplacement, *, activations: Optional[Float[Tensor, "*batch active"]] = None,
                    errors: Optional[Float[Tensor, "*batch layer pos d_model"]] = None,
                    embeddings: Optional[Float[Tensor, "*batch pos d_model"]] = None, recompute: bool = False,
                    stop_at_layer: Optional[int] = None, feature_edit: Optional[Any] = None,
                    capture: Optional[dict] = None, read: Optional[list] = None,
                    feature_outputs: Optional[Float[Tensor, "*batch layer pos d_model"]] = None
                    ) -> Optional[Float[Tensor, "batch pos vocab"]]:
    """Run the frozen replacement model with the given leaves (default: their values on the prompt).

    ``activations`` ``[(B,) n_active]``, ``errors`` ``[(B,) n_layers, pos, d_model]``, ``embeddings`` ``[(B,) pos,
    d_model]``; with a batch axis on any of them, all run as ``B`` copies. ``recompute``: features are computed
    again from each transcoder's input (``activations`` is then ignored; ``feature_edit(layer, f)`` may change the
    ``[B, pos, d_sae]`` latents before decoding). ``stop_at_layer``: stop before that block (no logits; ``capture``
    still receives the MLP inputs read). ``capture``: filled with ``mlp_in.L`` -> ``[B, pos, d_model]``, and with
    the activation of each hook named in ``read`` under its name. ``feature_outputs``: each layer's summed feature
    decodings ``sum_i a_i W_dec[i]`` per position given directly (``activations`` then unused): the attribution
    graph's leaf, whose gradient is ``[pos, d_model]`` per layer rather than one number per active feature.
    Returns the logits ``[B, pos, d_vocab]`` (``None`` with ``stop_at_layer``). Gradients flow to the leaves.
    """
    model = rep.model
    acts = rep.activations if activations is None else activations
    errs = rep.errors if errors is None else errors
    embs = rep.embeddings if embeddings is None else embeddings
    batched = [t.shape[0] for t, nd in ((acts, 2), (errs, 4), (embs, 3)) if t.ndim == nd]
    B = batched[0] if batched else 1
    if feature_outputs is not None and feature_outputs.ndim == 4:
        B = feature_outputs.shape[0]
    elif feature_outputs is not None:
        feature_outputs = feature_outputs[None]
    acts = acts if acts.ndim == 2 else acts[None].expand(B, -1)
    errs = errs if errs.ndim == 4 else errs[None].expand(B, -1, -1, -1)
    embs = embs if embs.ndim == 3 else embs[None].expand(B, -1, -1)
    n_pos = rep.n_pos
    feats = rep.features
    inputs: dict[int, Tensor] = {}

    def frozen(act: Tensor, hook=None) -> Tensor:
        v = rep.frozen[hook.name]
        return v.expand(act.shape[0], *v.shape[1:]).to(act.dtype)

    def embed(act: Tensor, hook=None) -> Tensor:
        return embs.to(act.dtype)

    def no_pos(act: Tensor, hook=None) -> Tensor:
        return torch.zeros_like(act)

    def read_in(act: Tensor, hook=None, layer: int = 0) -> None:
        inputs[layer] = act
        if capture is not None:
            capture[f"mlp_in.{layer}"] = act

    def mlp_out(act: Tensor, hook=None, layer: int = 0) -> Tensor:
        tc: Transcoder = rep.transcoders[layer]
        x = inputs[layer]
        if recompute:
            f = tc.encode(x)
            if feature_edit is not None:
                f = feature_edit(layer, f)
            out = tc.decode(f, x)
        elif feature_outputs is not None:
            out = feature_outputs[:, layer] + tc.b_dec
            if tc.cfg.skip:
                out = out + x @ tc.W_skip.T
        else:
            sel = (feats[:, 0] == layer).nonzero()[:, 0]
            pos, lat = feats[sel, 1], feats[sel, 2]
            contrib = acts[:, sel, None] * tc.W_dec[lat][None]  # [B, n, d]
            out = torch.zeros(B, n_pos, tc.cfg.d_out, dtype=contrib.dtype, device=contrib.device)
            out = out.index_add(1, pos.to(contrib.device), contrib) + tc.b_dec
            if tc.cfg.skip:
                out = out + x @ tc.W_skip.T
        return (out + errs[:, layer]).to(act.dtype)

    hooks = [(n, frozen) for n in rep.frozen]
    hooks.append(("hook_embed", embed))
    if rep.has_pos_embed:
        hooks.append(("hook_pos_embed", no_pos))
    for l in range(rep.n_layers):
        if stop_at_layer is not None and l >= stop_at_layer:
            break
        hooks.append((mlp_in_hook(l), (lambda a, hook=None, _l=l: read_in(a, hook, _l))))
        hooks.append((mlp_out_hook(l), (lambda a, hook=None, _l=l: mlp_out(a, hook, _l))))
    for name in read or []:
        hooks.append((name, (lambda a, hook=None: capture.__setitem__(hook.name, a))))
    toks = rep.tokens.to(model.cfg.device)[None].expand(B, -1)
    if stop_at_layer is not None and stop_at_layer < model.cfg.n_layers:
        model.run_with_hooks(toks, fwd_hooks=hooks, stop_at_layer=stop_at_layer)
        return None
    return model.run_with_hooks(toks, fwd_hooks=hooks)


def feature_outputs(rep: LocalReplacement) -> Float[Tensor, "layer pos d_model"]:
    """Each layer's summed feature decodings ``sum_i a_i W_dec[i]`` at each position (no ``b_dec``, no skip)."""
    out = torch.zeros(rep.n_layers, rep.n_pos, rep.model.cfg.d_model)
    for layer, tc in rep.transcoders.items():
        sel = (rep.features[:, 0] == layer).nonzero()[:, 0]
        pos, lat = rep.features[sel, 1], rep.features[sel, 2]
        out[layer].index_add_(0, pos, rep.activations[sel, None] * tc.W_dec[lat].float())
    return out


def feature_pre_activation(rep: LocalReplacement, mlp_input: Float[Tensor, "batch pos d_model"], layer: int,
                           pos: Int[Tensor, " batch"], latent: Int[Tensor, " batch"]) -> Float[Tensor, " batch"]:
    """Row ``b``'s pre-activation of feature ``(layer, pos[b], latent[b])`` from the MLP inputs ``mlp_input``:
    ``x[pos] @ W_enc[:, latent] + b_enc[latent]`` (a feature node's input in the graph)."""
    tc = rep.transcoders[layer]
    idx = torch.arange(mlp_input.shape[0])
    x = mlp_input[idx, pos]
    return (x * tc.W_enc[:, latent].T).sum(-1) + tc.b_enc[latent]


__all__ = ["LocalReplacement", "local_replacement", "run_replacement", "feature_pre_activation", "feature_outputs"]
