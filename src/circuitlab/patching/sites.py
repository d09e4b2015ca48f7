"""Patch targets: which activation (a *site*) and which of its axes a sweep walks over.

A site is a TransformerLens activation name (``utils.get_act_name``'s short names). Each has a fixed layout
after the batch axis; the axes a sweep may walk (``by``) are ``layer`` plus that layout's named axes:

====================================================  ====================================  =================
site                                                  activation ``[batch, ...]``           sweepable axes
====================================================  ====================================  =================
``resid_pre resid_mid resid_post attn_out mlp_out``   ``[batch, pos, d_model]``             layer, pos
``z q k v``                                           ``[batch, pos, head, d_head]``        layer, pos, head
``pattern attn_scores``                               ``[batch, head, dest_pos, src_pos]``  layer, head,
                                                                                            dest_pos, src_pos
====================================================  ====================================  =================

An axis left out of ``by`` is patched whole: ``site="z", by=("layer", "head")`` patches one head at every
position at once, exactly like ``transformer_lens.patching.get_act_patch_attn_head_out_all_pos``.

Grouped-query attention: ``k`` and ``v`` have ``n_key_value_heads`` heads (that is what ``hook_k`` holds), so
``by=("layer", "head")`` on them walks the key/value heads; patching one of them changes every query head that
shares it. This is what TransformerLens does too. (With ``cfg.ungroup_grouped_query_attention`` the hooks hold
``n_heads`` heads and all of them are swept; TransformerLens would still stop at ``n_key_value_heads``.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Sequence

from jaxtyping import Int
from torch import Tensor
from transformer_lens import HookedTransformer

from circuitlab.core import Prompts, shorten, to_tokens
from circuitlab.errors import InputError


@dataclass(frozen=True)
class Site:
    """One kind of activation: its hook name pattern and the names of its axes after ``batch``.

    ``dims`` names each axis after the batch; ``None`` marks an axis that is never swept (d_model, d_head).
    ``pos_axis`` is the axis along which causal attention keeps earlier positions unchanged (the query
    position); the engine may skip recomputing positions before the first patched one.
    """

    name: str
    hook: str
    dims: tuple[Optional[str], ...]
    pos_axis: str = "pos"

    def hook_name(self, layer: int) -> str:
        return self.hook.format(layer=layer)

    @property
    def axes(self) -> tuple[str, ...]:
        """The axes ``by`` may name, in TransformerLens order."""
        return ("layer",) + tuple(d for d in self.dims if d is not None)


_VECTOR = ("pos", None)
_HEAD = ("pos", "head", None)
_PATTERN = ("head", "dest_pos", "src_pos")

SITES: dict[str, Site] = {
    "resid_pre": Site("resid_pre", "blocks.{layer}.hook_resid_pre", _VECTOR),
    "resid_mid": Site("resid_mid", "blocks.{layer}.hook_resid_mid", _VECTOR),
    "resid_post": Site("resid_post", "blocks.{layer}.hook_resid_post", _VECTOR),
    "attn_out": Site("attn_out", "blocks.{layer}.hook_attn_out", _VECTOR),
    "mlp_out": Site("mlp_out", "blocks.{layer}.hook_mlp_out", _VECTOR),
    "z": Site("z", "blocks.{layer}.attn.hook_z", _HEAD),
    "q": Site("q", "blocks.{layer}.attn.hook_q", _HEAD),
    "k": Site("k", "blocks.{layer}.attn.hook_k", _HEAD),
    "v": Site("v", "blocks.{layer}.attn.hook_v", _HEAD),
    "pattern": Site("pattern", "blocks.{layer}.attn.hook_pattern", _PATTERN, pos_axis="dest_pos"),
    "attn_scores": Site("attn_scores", "blocks.{layer}.attn.hook_attn_scores", _PATTERN, pos_axis="dest_pos"),
}
_SITE_ALIASES = {"scores": "attn_scores", "head_out": "z", "result_z": "z"}
_AXIS_ALIASES = {"head_index": "head", "layers": "layer", "heads": "head", "position": "pos"}


def get_site(site: str) -> Site:
    """The :class:`Site` for a short TransformerLens name (``"resid_pre"``, ``"hook_z"``, ``"z"``...)."""
    if not isinstance(site, str):
        raise InputError(f"site must be an activation name such as 'resid_pre' or 'z'; got {shorten(site)}.")
    key = site.strip().lower()
    layer = re.match(r"blocks\.(-?\d+)\.", key)
    if layer:  # a full hook name names one layer; a site names an activation in every layer
        short = key.split(".")[-1].removeprefix("hook_")
        raise InputError(
            f"site={shorten(site)} is a hook name for layer {layer.group(1)} alone, but a site names an activation "
            f"kind that the sweep visits in every layer. To patch only that layer write site={shorten(short)}, "
            f"layers=[{layer.group(1)}]."
        )
    key = key.split(".")[-1] if "." in key else key  # "attn.hook_z" -> "hook_z"
    key = key[5:] if key.startswith("hook_") else key
    key = _SITE_ALIASES.get(key, key)
    if key not in SITES:
        raise InputError(f"unknown site {shorten(site)}. Choose one of: {', '.join(SITES)}.")
    return SITES[key]


def parse_by(site: Site, by: Sequence[str] | str) -> tuple[str, ...]:
    """Validate ``by`` for ``site``: known axes, no repeats, ``layer`` included. Returns the user's order."""
    if isinstance(by, str):
        by = tuple(a.strip() for a in by.split(","))
    if not isinstance(by, (list, tuple)) or not all(isinstance(a, str) for a in by):
        raise InputError(f"by={shorten(by, 60)} must name the axes to sweep as a tuple of strings (or one string "
                         f"'layer,pos'); site {site.name!r} has axes {', '.join(site.axes)}, e.g. by=('layer', 'pos').")
    names = tuple(_AXIS_ALIASES.get(a, a) for a in by)
    bad = [a for a in names if a not in site.axes]
    if bad:
        raise InputError(
            f"axis {shorten(bad[0])} does not fit site {shorten(site.name)}, whose activation is "
            f"[batch, {', '.join(d or 'd' for d in site.dims)}]. Sweep over any of: {', '.join(site.axes)}."
        )
    if len(set(names)) != len(names):
        raise InputError(f"by={tuple(by)} names an axis twice; name each axis once.")
    if "layer" not in names:
        raise InputError(
            f"by={tuple(by)} must include 'layer' (a site exists once per layer); "
            "to patch only some layers pass layers=[...]."
        )
    return names


def prepare_tokens(model: HookedTransformer, clean: Prompts, corrupted: Prompts, direction: str
                   ) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"], Int[Tensor, "batch pos"],
                              Int[Tensor, "batch pos"]]:
    """Clean and corrupted tokens checked against each other, ordered as (base run, source of patches).

    ``"denoising"`` (TransformerLens's default) runs the corrupted prompt and patches in clean activations;
    ``"noising"`` runs the clean prompt and patches in corrupted ones.
    """
    clean_t, corrupted_t = to_tokens(model, clean), to_tokens(model, corrupted)
    if clean_t.shape != corrupted_t.shape:
        raise InputError(
            f"clean tokens have shape {tuple(clean_t.shape)} but corrupted tokens have shape "
            f"{tuple(corrupted_t.shape)}. Patching compares the same positions in both runs, so give as many "
            "prompts of each, all with the same number of tokens."
        )
    if direction == "denoising":
        return clean_t, corrupted_t, corrupted_t, clean_t
    if direction == "noising":
        return clean_t, corrupted_t, clean_t, corrupted_t
    raise InputError(f"direction must be 'denoising' (run corrupted, patch in clean) or 'noising'; got "
                     f"{shorten(direction, 300)}.")


def check_site_exists(model: HookedTransformer, site: Site, names: set[str]) -> None:
    """Raise if this architecture never computes ``site`` (e.g. ``resid_mid`` in an attention-only model)."""
    if site.hook_name(0) not in names:
        why = {
            "resid_mid": "it has no residual stream between attention and MLP (attention-only or parallel "
                         "attention+MLP)",
            "mlp_out": "it has no MLPs",
        }.get(site.name, "its forward pass never reaches that hook")
        raise InputError(f"site {shorten(site.name)} does not exist in this model: {why}. Choose another site.")


def scalar(value, what: str = "the metric") -> float:
    """A metric's value as a float, or a clear error if it is not one number."""
    import torch

    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise InputError(
                f"{what} must return one number (a 0-d tensor or float) for a batch of prompts; it returned shape "
                f"{tuple(value.shape)}. Average over the batch (e.g. .mean()) inside the metric."
            )
        return float(value.item())
    if isinstance(value, (int, float)):
        return float(value)
    raise InputError(f"{what} must return a number or a 0-d tensor; it returned {type(value).__name__}.")


def split_prompts(batch: int, per_prompt_bytes: int, metric, max_memory: int) -> list[slice]:
    """A batch of ``batch`` prompt pairs cut into parts of ``per_prompt_bytes`` each that fit ``max_memory``.

    Every metric of :mod:`circuitlab.metrics` is a mean over prompts (:meth:`~circuitlab.metrics.LogitMetric.rows`
    gives its part for some prompts), so an analysis may run the parts one at a time and average their values
    by size, exactly. Any other metric must see the whole batch: then the batch is one part, with a warning
    that it overruns ``max_memory``.
    """
    import warnings

    from circuitlab.core import metric_name, row_chunks
    from circuitlab.metrics import can_split

    parts = row_chunks(batch, per_prompt_bytes, max_memory)
    if len(parts) > 1 and not can_split(metric):
        warnings.warn(
            f"{batch} prompt pairs need about {batch * per_prompt_bytes / 2**20:.1f} MiB at once, over "
            f"max_memory={max_memory / 2**20:.1f} MiB, but the metric {shorten(metric_name(metric))} must see the "
            "whole batch, so it cannot be split: running it whole. Use a metric from circuitlab.metrics (a mean over "
            "prompts, split exactly), fewer prompts, or a larger max_memory.", stacklevel=3)
        return [slice(0, batch)]
    return parts


def patch_spec(method: str, site: Site, by: tuple[str, ...], direction: str, layers: list[int]) -> dict:
    """What was patched, as every patching result records it in ``meta`` (the same keys for each method)."""
    return {"method": method, "site": site.name, "hook": site.hook, "by": tuple(by), "direction": direction,
            "layers": list(layers)}

