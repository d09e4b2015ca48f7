"""Exact activation patching: one spec-driven sweep, TransformerLens's numbers, many patches per forward pass.

For every index along the swept axes, activation patching runs the model on one prompt (the *base* run), replaces
one slice of one activation by its value on the other prompt (the *source*), and records the metric. This is what
``transformer_lens.patching`` does with one full forward pass per patch. :func:`sweep` gives the same numbers
(up to float rounding) with far less arithmetic, using four facts:

1. **Batching.** Patches are independent, so each becomes a group of batch rows of one larger forward pass
   (``n_patches * batch`` rows), chunked so memory stays bounded.
2. **Start at the patched layer.** Everything before layer ``L`` is the same as in the unpatched base run, so a
   patch at layer ``L`` starts from the cached base ``resid_pre`` of layer ``L`` and runs only blocks ``L...``.
3. **Read only what the metric reads.** A declarative metric (:mod:`circuitlab.metrics`) reads a few logits
   (``LogitDiff``: one position, two vocabulary columns), so the final LayerNorm and unembedding are applied to
   those alone instead of producing ``[batch, pos, d_vocab]``.
4. **Causal attention.** A patch at position ``p`` cannot change positions before ``p``. Patches are grouped by
   position into a few buckets; a bucket starting at ``s`` computes only positions ``s...`` and reads the keys
   and values of earlier positions from the base run (TransformerLens's key/value cache mechanism).

Any other callable metric still works: the engine then unembeds every position and calls the metric once per
patch on ``[batch, pos, d_vocab]`` logits, like TransformerLens.

**Which shortcuts run where.** Facts 2 to 4 run on the block runner (:class:`circuitlab.engine.blocks.BlockRunner`),
which needs a ``HookedTransformer`` (its blocks are run one at a time); any other model, e.g. a
``TransformerBridge`` in compatibility mode, is patched with full forward passes and hooks, as TransformerLens
does, still many patches per pass. Fact 4 (reusing cached keys and values, and the last-block shortcut built on
it) follows the runner's one safety rule: the configuration is in its allowlist of verified configurations
(:data:`~circuitlab.engine.blocks.KV_REUSE_VERIFIED`) and its start-up self-check against the plain forward pass
passes. Anything else takes the exact path without it. ``Result.meta["engine"]`` records which path ran and why.
This module maps each site of :mod:`circuitlab.patching.sites` onto the runner's "replace this hook's value for
these rows" (:class:`~circuitlab.engine.blocks.Replace`).
"""

from __future__ import annotations

import time
from typing import Any, Optional, Sequence

import einops
import torch
from jaxtyping import Int
from torch import Tensor
from transformer_lens import HookedTransformer

from circuitlab.core import (DEFAULT_MAX_MEMORY, ModelLike, Prompts, as_model, check_finite, check_layers,
                             check_max_memory, metric_name, model_name, position_labels, progress_bar, readout,
                             row_bytes)
from circuitlab.engine.blocks import (KV_REUSE_VERIFIED, BlockRunner, Replace, gather_positions, group_chunks,
                                      kv_reuse_blockers, read_logits)
from circuitlab.metrics import Metric, bind_metric, is_declarative, select_logits
from circuitlab.patching.sites import (Site, check_site_exists, get_site, parse_by, patch_spec, prepare_tokens,
                                       scalar, split_prompts)
from circuitlab.results import Result

__all__ = ["sweep", "KV_REUSE_VERIFIED", "kv_reuse_blockers", "POSITIONS_PER_GROUP"]

#: positions per causal group (see ``_Engine._groups``)
POSITIONS_PER_GROUP = 8

def sweep(
    model: ModelLike,
    clean_tokens: Prompts,
    corrupted_tokens: Prompts,
    metric: Metric,
    site: str = "resid_pre",
    by: Sequence[str] | str = ("layer", "pos"),
    direction: str = "denoising",
    *,
    layers: Optional[Sequence[int]] = None,
    fast: bool = True,
    max_memory: int = DEFAULT_MAX_MEMORY,
    progress: bool = False,
    executor: Any = None,
) -> Result:
    """Patch one slice of ``site`` at a time and record ``metric``: exact activation patching.

    Args:
        model: a HookedTransformer, a TransformerBridge in compatibility mode, or a name for
            :func:`circuitlab.load_model`.
        clean_tokens, corrupted_tokens: prompts (text, or token ids ``[batch, pos]``) of identical shape. A batch
            of prompt pairs is patched together and the metric sees the whole batch, as in TransformerLens.
        metric: ``metric(logits [batch, pos, d_vocab]) -> scalar``. Metrics from :mod:`circuitlab.metrics` also
            enable the fast path (only the logits they read are computed).
        site: activation name: ``resid_pre resid_mid resid_post attn_out mlp_out z q k v pattern attn_scores``.
        by: axes to sweep, e.g. ``("layer", "pos")`` or ``("layer", "head")`` (see
            :mod:`circuitlab.patching.sites`); axes left out are patched whole. The result's axes follow this order.
        direction: ``"denoising"`` (run corrupted, patch in clean; TransformerLens's choice) or ``"noising"``.
        layers: sweep only these layers (default: all; negative counts from the end).
        fast: use the shortcuts described in the module docstring. ``False`` runs one patch per forward pass
            (every position, full logits; from the patched layer on for a HookedTransformer): slow, for checking.
        max_memory: rough bound in bytes on the activations one batched forward pass holds (the package's one
            meaning, :func:`circuitlab.core.check_max_memory`). A batch of prompts too large for it is patched
            in parts and the parts' metric values averaged by size (exact for the metrics of
            :mod:`circuitlab.metrics`, which are means over prompts).
        progress: show a progress bar.
        executor: ``None`` (this process), ``"ray"``, or an executor of :mod:`circuitlab.distributed`: the layers
            are shared out among workers that each hold a model replica, and the parts gathered into the same
            Result (``meta["executor"]`` records the run).

    Returns:
        a :class:`~circuitlab.results.Result` with one axis per name in ``by``; ``values[i, j, ...]`` is the
        metric with that slice patched. ``meta`` holds the patch spec (``site``, ``by``, ``direction``,
        ``layers``), the unpatched ``clean_value`` and ``corrupted_value``, and ``engine``: which path ran
        (``runner``, ``kv_reuse``, ``last_block``) and ``why``.

    Example::

        metric = LogitDiff(" Mary", " John")
        res = sweep(model, clean, corrupted, metric, site="z", by=("layer", "head"))
        res.top(5)
    """
    return _sharded_sweep(model, clean_tokens, corrupted_tokens, metric, site, by, direction, layers=layers,
                          fast=fast, max_memory=max_memory, progress=progress, executor=executor)


def _sweep_shard(model: ModelLike, clean_tokens: Prompts, corrupted_tokens: Prompts, metric: Metric,
                 site: str = "resid_pre", by: Sequence[str] | str = ("layer", "pos"), direction: str = "denoising", *,
                 layers: Optional[Sequence[int]] = None, fast: bool = True, max_memory: int = DEFAULT_MAX_MEMORY,
                 progress: bool = False) -> Result:
    """One shard of :func:`sweep` (its arguments, ``layers`` a shard's layers): the sweep in this process."""
    started = time.perf_counter()
    model = as_model(model)
    spec = get_site(site)
    by = parse_by(spec, by)
    layer_list = check_layers(model, layers)
    max_memory = check_max_memory(max_memory)
    clean_t, corrupted_t, base_t, source_t = prepare_tokens(model, clean_tokens, corrupted_tokens, direction)
    bound = bind_metric(metric, model)
    parts = _prompt_parts(model, base_t.shape, bound, max_memory)

    # a batch too large for max_memory is patched in parts of prompts; every splittable metric is a mean over
    # prompts, so the whole batch's value is the parts' values averaged by their sizes
    values = base_value = source_value = 0.0
    engine = None
    for rows in progress_bar(parts, progress=progress and len(parts) > 1, desc="prompt batches"):
        part_metric = bound if len(parts) == 1 else bound.rows(rows, base_t.shape[0])
        engine = _Engine(model, spec, by, base_t[rows], source_t[rows], part_metric, fast=fast, max_memory=max_memory)
        weight = (rows.stop - rows.start) / base_t.shape[0]
        part_values = engine.run(layer_list, progress=progress and len(parts) == 1)
        values = values + weight * part_values
        base_value += weight * engine.base_value
        source_value += weight * engine.source_value
    check_finite(model, base_t, "the patched metric values", values, torch.tensor([base_value, source_value]))
    clean_value = base_value if direction == "noising" else source_value
    corrupted_value = source_value if direction == "noising" else base_value
    canonical = engine.canonical_axes  # canonical axis order (layer first, then activation order)
    values = values.permute(*[canonical.index(a) for a in by])

    labels = engine.labels(layer_list, clean_t)
    return Result(
        values=values,
        axes=by,
        labels={a: labels[a] for a in by},
        title=f"Activation patching ({direction}): {spec.name} by {', '.join(by)}",
        metric=metric_name(metric),
        model=model_name(model),
        task=f"{clean_t.shape[0]} prompt pair(s), {clean_t.shape[1]} tokens",
        meta={
            **patch_spec("activation patching", spec, by, direction, layer_list),
            "clean_value": clean_value, "corrupted_value": corrupted_value,
            "n_patches": int(values.numel()), "fast_path": engine.declarative, "engine": engine.describe(),
            "seconds": time.perf_counter() - started, "peak_chunk_bytes": engine.peak_chunk_bytes,
            "prompt_parts": len(parts), "max_memory": max_memory,
        },
    )


def _prompt_parts(model: HookedTransformer, shape: tuple[int, int], metric, max_memory: int) -> list[slice]:
    """The batch of prompts cut into parts (see :func:`~circuitlab.patching.sites.split_prompts`): a part of
    ``b`` prompts holds the base run's residual streams, keys and values and both runs' site activations for
    every layer, plus at least one patched forward pass of ``b`` rows."""
    batch, seq_len = shape
    cfg = model.cfg
    per_layer = cfg.d_model + 2 * cfg.n_heads * cfg.d_head + max(cfg.d_model, cfg.n_heads * max(cfg.d_head, seq_len))
    per_prompt = 4 * seq_len * cfg.n_layers * 2 * per_layer + row_bytes(model, seq_len, logits=cfg.d_vocab_out)
    return split_prompts(batch, per_prompt, metric, max_memory)


class _Engine:
    """Caches of the two runs plus the batched patched forward pass. Internal to :func:`sweep`.

    Runners: ``"blocks"`` (a HookedTransformer: patched rows start at the patched layer, block by block) or
    ``"forward"`` (any other model: whole forward passes with hooks). ``kv_reuse`` and ``last_only`` switch the
    causal shortcuts (fact 4) on, as the block runner decides (:class:`~circuitlab.engine.blocks.BlockRunner`).
    """

    def __init__(self, model: HookedTransformer, site: Site, by: tuple[str, ...], base: Tensor, source: Tensor,
                 metric: Metric, fast: bool, max_memory: int):
        self.model, self.site, self.by, self.fast = model, site, by, fast
        self.metric = bind_metric(metric, model)
        self.runner = "blocks" if isinstance(model, HookedTransformer) else "forward"
        self.declarative = fast and is_declarative(self.metric)
        # the blocks runner computes only the logits a declarative metric reads (fact 3); the forward runner
        # computes full logits and selects from them
        self.select_only = self.declarative and self.runner == "blocks"
        self.batch, self.seq_len = base.shape
        self.base_tokens = base
        cfg = model.cfg
        n = cfg.n_layers

        site_hooks = {site.hook_name(layer) for layer in range(n)}
        final = f"blocks.{n - 1}.hook_resid_post"
        keep = site_hooks | {f"blocks.{layer}.hook_resid_pre" for layer in range(n)} | {final, "hook_pos_embed"}
        keep |= BlockRunner.hook_names(model) if self.runner == "blocks" else set()
        # a declarative metric needs no full logits, not even for the two unpatched runs
        return_type = None if self.select_only else "logits"
        with torch.no_grad():
            base_logits, base_cache = model.run_with_cache(base, names_filter=lambda name: name in keep,
                                                           return_type=return_type)
            source_logits, source_cache = model.run_with_cache(
                source, names_filter=lambda name: name in site_hooks | {final}, return_type=return_type)
        check_site_exists(model, site, set(base_cache.keys()))
        self.base_cache, self.source_cache, self.base_logits = base_cache, source_cache, base_logits
        # before the first position where the two inputs differ (in any prompt), both runs compute the same
        # activations (causal attention), so a patch changes nothing there and patched runs may start at it
        differs = (base != source).any(0).nonzero()
        self.first_diff = int(differs[0]) if len(differs) else self.seq_len

        # which logits the metric reads, and how early a patch may start along the positions
        if self.declarative:
            self.read_pos, self.read_cols = self.metric.reads(self.batch, self.seq_len)
            self.first_read = int(self.read_pos.min())
        else:
            self.first_read = self.seq_len  # a general metric may read any position: unembed them all
        if self.select_only:
            self.base_value = float(self._readout(base_cache[final], 0, 1)[0])
            self.source_value = float(self._readout(source_cache[final], 0, 1)[0])
        else:
            self.base_value = scalar(self.metric(base_logits))
            self.source_value = scalar(self.metric(source_logits))

        # reading keys/values of earlier positions from the cache (fact 4): the block runner's one rule (verified
        # configurations only, and only after its self-check); with only the last position read, the last block
        # then needs its other positions' keys and values only
        self.blocks: Optional[BlockRunner] = None
        if self.runner == "blocks":
            last = self.declarative and self.read_pos.shape[1] == 1 and bool((self.read_pos == self.seq_len - 1).all())
            self.blocks = BlockRunner.from_cache(model, base_cache, reuse=fast, last_position=last)
            self.kv_reuse, self.last_only, self.why = self.blocks.kv_reuse, self.blocks.last_only, self.blocks.why
        else:
            self.kv_reuse = self.last_only = False
            self.why = "cached keys/values not reused: " + "; ".join(kv_reuse_blockers(model))
        if not fast:
            self.why = "fast=False: one patch per forward pass, every position, full logits"

        # the sizes of the swept axes, read off the activation itself (k/v have n_key_value_heads heads)
        act = source_cache[site.hook_name(0)]
        self.dim_sizes = dict(zip(site.dims, act.shape[1:]))
        self.canonical_axes = tuple(a for a in site.axes if a in by)

        # one batch row of one patched forward pass, roughly
        self.row_bytes = row_bytes(model, self.seq_len, logits=0 if self.select_only else cfg.d_vocab_out)
        self.max_rows = max(self.batch, max_memory // self.row_bytes)
        self.peak_chunk_bytes = 0

    def describe(self) -> dict:
        """Which path the sweep took, for ``Result.meta["engine"]``."""
        return {"runner": self.runner, "batched": self.fast, "declarative_readout": self.select_only,
                "kv_reuse": self.kv_reuse, "last_block": self.last_only, "why": self.why}

    # -- the sweep ---------------------------------------------------------------------------------------------
    def run(self, layers: list[int], progress: bool = False) -> Tensor:
        """Every patch's metric, as a tensor ``[layer, *other swept axes]`` (activation order)."""
        other = [a for a in self.canonical_axes if a != "layer"]
        sizes = [self.dim_sizes[a] for a in other]
        out = torch.zeros(len(layers), *sizes)
        grid = torch.cartesian_prod(*[torch.arange(s) for s in sizes]).reshape(-1, len(sizes)).tolist() \
            if sizes else [[]]
        patches = [(layer, tuple(index)) for layer in layers for index in grid]
        row_of_layer = {layer: li for li, layer in enumerate(layers)}
        where = {patch: (row_of_layer[patch[0]], *patch[1]) for patch in patches}
        bar = progress_bar(total=len(patches), progress=progress, desc=f"patching {self.site.name}")
        if self.kv_reuse and self.site.pos_axis in other:
            # a patch before the first position where the inputs differ replaces values by equal values
            k = other.index(self.site.pos_axis)
            no_ops = [patch for patch in patches if patch[1][k] < self.first_diff]
            for patch in no_ops:
                out[where[patch]] = self.base_value
            patches = [patch for patch in patches if patch[1][k] >= self.first_diff]
            bar.update(len(no_ops))
        for start, group in self._groups(patches, other):
            group.sort(key=lambda patch: patch[0])  # by layer: a chunk's rows join the batch layer by layer
            # as many patches per forward pass as the memory bound allows (shorter rows when start > 0), in
            # chunks of equal size
            for part in group_chunks(len(group), self.batch, self.seq_len, self.max_rows, start, self.fast):
                chunk = group[part]
                values = self._patched(start, chunk, other) if self.runner == "blocks" else \
                    self._forward(chunk, other)
                for patch, value in zip(chunk, values.tolist()):
                    out[where[patch]] = value
                bar.update(len(chunk))
        bar.close()
        return out

    def _groups(self, patches: list, other: list[str]):
        """Patches grouped by the first position they can change (the causal-attention shortcut).

        A patch that covers all positions can change nothing before the first position where the clean and
        corrupted inputs differ, so such patches start there.

        A group whose patches all sit at position ``s`` or later computes only positions ``s...``. More groups
        mean less arithmetic but more, smaller operations; a group per ``POSITIONS_PER_GROUP`` positions
        balances the two.
        """
        pos_axis = self.site.pos_axis
        if not self.kv_reuse:
            yield 0, list(patches)
            return
        if pos_axis not in other:  # every patch covers all positions: start where the inputs first differ
            yield min(self.first_diff, self.first_read), list(patches)
            return
        k = other.index(pos_axis)
        width = POSITIONS_PER_GROUP
        buckets: dict[int, list] = {}
        for patch in patches:
            start = min((patch[1][k] // width) * width, self.first_read)
            buckets.setdefault(start, []).append(patch)
        yield from sorted(buckets.items())

    # -- one batched forward pass --------------------------------------------------------------------------------
    @torch.no_grad()
    def _forward(self, patches: list[tuple[int, tuple]], other: list[str]) -> Tensor:
        """The metric for each patch (sorted by layer) from whole forward passes with hooks (any model).

        Patch ``i`` owns batch rows ``i * batch ... (i + 1) * batch``; the hook at each layer replaces the
        slices of that layer's patches in their rows.
        """
        B, n = self.batch, len(patches)
        self.peak_chunk_bytes = max(self.peak_chunk_bytes, n * B * self.row_bytes)
        tokens = einops.repeat(self.base_tokens, "b p -> (n b) p", n=n)
        hooks, i = [], 0
        while i < n:
            j = i
            while j < n and patches[j][0] == patches[i][0]:
                j += 1
            layer = patches[i][0]
            hooks.append((self.site.hook_name(layer),
                          self._patch_hook(layer, 0, patches[i:j], other, rows=(i * B, j * B))))
            i = j
        logits = self.model.run_with_hooks(tokens, fwd_hooks=hooks)
        return self._from_logits(logits, 0, n)

    @torch.no_grad()
    def _patched(self, start: int, patches: list[tuple[int, tuple]], other: list[str]) -> Tensor:
        """The metric for each patch (sorted by layer), computing positions ``start...`` only, on the block runner.

        One forward pass serves patches at several layers: the rows of a patch at layer ``L`` join the batch at
        block ``L`` (before it, they would equal the base run, which is cached), so the batch grows layer by
        layer like a staircase and every block runs once per chunk.
        """
        site, B = self.site, self.batch
        n_total = len(patches)
        self.peak_chunk_bytes = max(self.peak_chunk_bytes,
                                    n_total * B * self.row_bytes * (self.seq_len - start) // self.seq_len)
        # a patch on resid_post of layer L is a patch on the residual stream entering block L + 1
        enter = [layer + 1 if site.name == "resid_post" else layer for layer, _ in patches]
        resid_site = site.name in ("resid_pre", "resid_post")

        def join(layer: int, groups: list[int], rows: Tensor) -> Tensor:  # a resid site is patched as it joins
            if not resid_site:
                return rows
            joining = [patches[i] for i in groups]
            return self._replacement(joining[0][0], start, joining, other)(rows)

        def replacements(layer: int, joined: int) -> list[Replace]:  # the patches of this layer: the newest rows
            at_layer = [i for i in range(joined) if patches[i][0] == layer]
            if not at_layer or resid_site:
                return []
            fn = self._replacement(layer, start, [patches[i] for i in at_layer], other)
            return [Replace(site.hook_name(layer), slice(at_layer[0] * B, (at_layer[-1] + 1) * B), fn)]

        resid = self.blocks.run(start, enter, join, replacements)
        return self._readout(resid, self.seq_len - resid.shape[1], n_total)

    def _replacement(self, layer: int, start: int, patches: list, other: list[str]):
        """``fn(act) -> act`` for the rows of ``patches`` (``batch`` rows each, in order): each patch's slice
        replaced by the source value."""
        site, n, B = self.site, len(patches), self.batch
        mask = self._mask([index for _, index in patches], other, start)
        source = self.source_cache[site.hook_name(layer)]
        source = source[(slice(None),) * (1 + site.dims.index(site.pos_axis)) + (slice(start, None),)]

        def replace(act: Tensor) -> Tensor:
            grouped = act.reshape(n, B, *act.shape[1:])
            return torch.where(mask, source[None], grouped).reshape(act.shape)

        return replace

    def _patch_hook(self, layer: int, start: int, patches: list, other: list[str], rows: tuple[int, int]):
        """A hook applying :meth:`_replacement` to rows ``rows[0]...rows[1]`` (the whole-forward runner)."""
        replace = self._replacement(layer, start, patches, other)

        def patch(act: Tensor, hook=None) -> Tensor:
            lo, hi = rows
            act[lo:hi] = replace(act[lo:hi])
            return act

        return patch

    def _mask(self, patches: list[list[int]], other: list[str], start: int) -> Tensor:
        """Boolean ``[n, 1, *activation dims]`` (size 1 on unswept axes): True where a patch replaces values."""
        site = self.site
        shape = [len(patches), 1]
        for d in site.dims:
            size = self.dim_sizes[d] - (start if d == site.pos_axis else 0) if d in other else 1
            shape.append(size)
        mask = torch.zeros(shape, dtype=torch.bool)
        for i, patch in enumerate(patches):
            index: list = [i, 0]
            for d in site.dims:
                if d in other:
                    index.append(patch[other.index(d)] - (start if d == site.pos_axis else 0))
                else:
                    index.append(0)
            mask[tuple(index)] = True
        return mask.to(self.model.cfg.device)

    @torch.no_grad()
    def _readout(self, resid: Tensor, start: int, n: int) -> Tensor:
        """The metric for each of ``n`` patches from the final residual stream of positions ``start...``."""
        if self.select_only:
            x = gather_positions(resid, self.read_pos, n, offset=start)
            logits = read_logits(self.model, x, n, self.batch, self.read_cols)
            return self.metric.from_selected(logits).float().cpu()
        return self._from_logits(readout(self.model, resid), start, n)

    def _from_logits(self, logits: Tensor, start: int, n: int) -> Tensor:
        """The metric for each of ``n`` patches from their logits ``[n * batch, pos - start, d_vocab]``."""
        B = self.batch
        if start > 0:
            prefix = einops.repeat(self.base_logits[:, :start], "b p v -> (n b) p v", n=n)
            logits = torch.cat([prefix, logits], dim=1)
        if self.declarative:  # one selection for every patch, then the metric on each patch's rows
            sel = select_logits(logits, self.read_pos.repeat(n, 1),
                                None if self.read_cols is None else self.read_cols.repeat(n, 1))
            return self.metric.from_selected(sel.reshape(n, B, *sel.shape[1:])).float().cpu()
        return torch.tensor([scalar(self.metric(logits[i * B:(i + 1) * B])) for i in range(n)])

    # -- labels ------------------------------------------------------------------------------------------------
    def labels(self, layers: list[int], clean_tokens: Int[Tensor, "batch pos"]) -> dict[str, list[str]]:
        pos = position_labels(self.model, clean_tokens)
        out = {"layer": [f"L{layer}" for layer in layers], "pos": pos, "dest_pos": pos, "src_pos": pos}
        heads = self.dim_sizes.get("head", self.model.cfg.n_heads)
        grouped = self.site.name in ("k", "v") and heads != self.model.cfg.n_heads
        out["head"] = [f"KV{h}" if grouped else f"H{h}" for h in range(heads)]
        return out


# ---------------------------------------------------------------------------------------------------------
# Sharding (the executor contract, circuitlab.engine.executor): split the layers, run each shard with
# _sweep_shard, gather the layer axis. One process is one shard: the plain sweep, on the caller's model.
# ---------------------------------------------------------------------------------------------------------

def _sharded_sweep(model: ModelLike, clean_tokens: Prompts, corrupted_tokens: Prompts, metric: Metric, site: str,
                   by: Sequence[str] | str, direction: str, *, layers: Optional[Sequence[int]], fast: bool,
                   max_memory: int, progress: bool, executor: Any) -> Result:
    """:func:`sweep` on ``executor``: its layers shared out among the workers (interleaved, for balance) and the
    parts put back along the layer axis in the caller's order."""
    import dataclasses  # imported here to keep this section self-contained

    from circuitlab.engine.executor import as_executor, run_shards, shard_count, split
    from circuitlab.models.identity import shard_source

    started = time.perf_counter()
    loaded = as_model(model)
    ex, owned = as_executor(executor)
    try:
        axes = parse_by(get_site(site), by)
        layer_list = check_layers(loaded, layers)
        check_max_memory(max_memory)
        groups = (split(layer_list, shard_count(ex, len(layer_list)), interleave=True) if "layer" in axes
                  else [layer_list])
        shards = [dict(clean_tokens=clean_tokens, corrupted_tokens=corrupted_tokens, metric=metric, site=site,
                       by=by, direction=direction, layers=layers if len(groups) == 1 else g, fast=fast,
                       max_memory=max_memory, progress=progress and executor is None) for g in groups]
        source = shard_source(model, loaded)
        parts, record = run_shards(ex, source, _sweep_shard, shards)
    finally:
        if owned:
            ex.close()
    first = parts[0]
    if len(parts) == 1:
        return first if executor is None else dataclasses.replace(first, meta={**first.meta, "executor": record})
    dim = first.axes.index("layer")
    order = [l for g in groups for l in g]
    perm = torch.tensor([order.index(l) for l in layer_list])
    values = torch.cat([p.values for p in parts], dim=dim)
    values = values.index_select(dim, perm.to(values.device))
    labels = dict(first.labels)
    joined = [lab for p in parts for lab in p.labels["layer"]]
    labels["layer"] = [joined[i] for i in perm.tolist()]
    meta = {**first.meta, "layers": layer_list, "n_patches": int(values.numel()),
            "seconds": time.perf_counter() - started, "executor": record,
            "peak_chunk_bytes": max(p.meta.get("peak_chunk_bytes", 0) for p in parts)}
    return dataclasses.replace(first, values=values, labels=labels, meta=meta)
