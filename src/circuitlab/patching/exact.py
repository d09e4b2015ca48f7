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

**Which shortcuts run where.** Facts 2 and 3 need a ``HookedTransformer`` (its blocks are run one at a time);
any other model, e.g. a ``TransformerBridge`` in compatibility mode, is patched with full forward passes and
hooks, as TransformerLens does, still many patches per pass. Fact 4 (reusing cached keys and values, and the
last-block shortcut built on it) is exact only where the attention's key/value cache holds exactly what
``hook_k``/``hook_v`` hold, so it is enabled by an allowlist, not a denylist: only when every configuration
field that shapes attention has a value the test-suite verifies (:data:`KV_REUSE_VERIFIED`), and then only after
a self-check at start-up (each block, run on the base prompt's last position from the cached keys and values of
the earlier ones, must reproduce the base run). Anything else takes the exact path without it.
``Result.meta["engine"]`` records which path ran and why.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Optional, Sequence, Union

import einops
import torch
from jaxtyping import Int
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry

from circuitlab.core import (DEFAULT_MAX_MEMORY, ModelLike, Prompts, as_model, check_finite, check_layers,
                             check_max_memory, final_norm, metric_name, model_name, position_labels, progress_bar,
                             readout, row_bytes, softcap)
from circuitlab.metrics import bind_metric, is_declarative, select_logits
from circuitlab.patching.sites import (Site, check_site_exists, get_site, parse_by, patch_spec, prepare_tokens,
                                       scalar, split_prompts)
from circuitlab.results import Result

Metric = Callable[[Tensor], Union[Tensor, float]]

#: positions per causal group (see ``_Engine._groups``)
POSITIONS_PER_GROUP = 8

#: The configurations under which reusing cached keys and values (and the last-block shortcut) is verified by the
#: test-suite: every field of ``model.cfg`` that shapes how attention computes and caches keys and values, with
#: the values the tests cover (``circuitlab.testing.ARCHITECTURES``: GPT-2, attention-only, Pythia-style rotary
#: with parallel attention and MLP, Llama-style RMSNorm, rotary and grouped-query attention; shortformer
#: positions; attention-only without LayerNorm; and the HookedTransformer twins of
#: ``circuitlab.testing.random_bridge``, converted by TransformerLens from GPT-2, GPT-NeoX and Llama checkpoints).
#: A model with any other value takes the exact path without the shortcut. Extend this only together with a test
#: (tests/test_patching.py, tests/test_bridges.py).
KV_REUSE_VERIFIED: dict[str, tuple] = {
    "attention_dir": ("causal",),
    "positional_embedding_type": ("standard", "rotary", "shortformer"),
    "normalization_type": (None, "LN", "LNPre", "RMS", "RMSPre"),
    "original_architecture": (None, "GPT2LMHeadModel", "GPTNeoXForCausalLM", "LlamaForCausalLM"),
    "use_qk_norm": (False,),
    "clip_qkv": (None,),
    "use_attn_in": (False,),
    "use_split_qkv_input": (False,),
    "use_normalization_before_and_after": (False,),
    "ungroup_grouped_query_attention": (False,),
    "attn_types": (None,),
    "use_local_attn": (False,),
    "attn_scores_soft_cap": (-1.0,),
    "use_attention_sinks": (False,),
    "use_logn_attn": (False,),
    "use_dynamic_ntk_rope": (False,),
    "use_yarn_rope": (False,),
    "use_NTK_by_parts_rope": (False,),
    "rotary_adjacent_pairs": (False,),
    "scale_attn_by_inverse_layer_idx": (False,),
    "num_experts": (None,),
}


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
    progress: bool = True,
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
                 progress: bool = True) -> Result:
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


def kv_reuse_blockers(model) -> list[str]:
    """Why cached keys and values may not be reused on ``model`` (empty: a verified configuration).

    See :data:`KV_REUSE_VERIFIED`. Only a ``HookedTransformer`` qualifies: the shortcut runs its blocks one at a
    time with TransformerLens's key/value cache entries.
    """
    if not isinstance(model, HookedTransformer):
        return [f"the model is a {type(model).__name__}, not a HookedTransformer, so it is run whole with hooks"]
    out = []
    for field, verified in KV_REUSE_VERIFIED.items():
        value = getattr(model.cfg, field, None)
        if value not in verified:
            out.append(f"cfg.{field}={value!r} is not a verified value ({', '.join(map(repr, verified))})")
    return out


class _Engine:
    """Caches of the two runs plus the batched patched forward pass. Internal to :func:`sweep`.

    Runners: ``"blocks"`` (a HookedTransformer: patched rows start at the patched layer, block by block) or
    ``"forward"`` (any other model: whole forward passes with hooks). ``kv_reuse`` and ``last_only`` switch the
    causal shortcuts (fact 4) on; see :func:`kv_reuse_blockers` and :meth:`_self_check`.
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
        keep |= {f"blocks.{layer}.attn.hook_{kv}" for layer in range(n) for kv in "kv"}
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

        # reading keys/values of earlier positions from the cache (fact 4): verified configurations only, and
        # only after the self-check; with only the last position read, the last block then needs its other
        # positions' keys and values only
        self.kv_reuse = self.last_only = False
        if not fast:
            self.why = "fast=False: one patch per forward pass, every position, full logits"
        elif blockers := kv_reuse_blockers(model):
            self.why = "cached keys/values not reused: " + "; ".join(blockers)
        else:
            self.kv_reuse = True
            self.last_only = (self.declarative and self.read_pos.shape[1] == 1
                              and bool((self.read_pos == self.seq_len - 1).all()))
            failed = self._self_check()
            if failed:
                self.kv_reuse = self.last_only = False
                self.why = f"cached keys/values not reused: the start-up self-check failed ({failed})"
            else:
                self.why = "verified configuration (see KV_REUSE_VERIFIED); start-up self-check passed"

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

    @torch.no_grad()
    def _self_check(self) -> Optional[str]:
        """Check, on the base run, that the cached keys/values reproduce it; the reason if not, else None.

        Each block is run on the last position of the base prompt with the cached ``hook_k``/``hook_v`` of the
        earlier positions as its key/value cache, and must give the base run's output there; with
        ``last_only``, so must the last-block shortcut. Costs about one block per layer on one position.
        """
        model, cfg, cache = self.model, self.model.cfg, self.base_cache
        n, s = cfg.n_layers, self.seq_len - 1
        if s < 1:
            return None  # one position: nothing is ever read from the cache
        tol = 1e-4 if cache["blocks.0.hook_resid_pre"].dtype in (torch.float32, torch.float64) else 1e-2
        shortformer = cfg.positional_embedding_type == "shortformer"

        def differs(got: Tensor, want: Tensor) -> Optional[float]:
            err = float((got.float() - want.float()).abs().max())
            return err if err > tol * (1 + float(want.float().abs().max())) else None

        def resid_out(layer: int) -> Tensor:
            return cache[f"blocks.{layer + 1}.hook_resid_pre" if layer < n - 1 else f"blocks.{n - 1}.hook_resid_post"]

        for layer in range(n):
            entry = TransformerLensKeyValueCacheEntry(cache[f"blocks.{layer}.attn.hook_k"][:, :s],
                                                      cache[f"blocks.{layer}.attn.hook_v"][:, :s], frozen=True)
            pos_embed = cache["hook_pos_embed"][:, s:] if shortformer else None
            got = model.blocks[layer](cache[f"blocks.{layer}.hook_resid_pre"][:, s:], shortformer_pos_embed=pos_embed,
                                      past_kv_cache_entry=entry)
            err = differs(got, resid_out(layer)[:, s:])
            if err is not None:
                return f"block {layer} from cached keys/values differs from the base run by {err:.3g}"
        if self.last_only:
            pos_embed = cache["hook_pos_embed"] if shortformer else None
            got = self._last_block(cache[f"blocks.{n - 1}.hook_resid_pre"], [], 0, pos_embed, None)
            err = differs(got, resid_out(n - 1)[:, -1:])
            if err is not None:
                return f"the last-block shortcut differs from the base run by {err:.3g}"
        return None

    # -- the sweep ---------------------------------------------------------------------------------------------
    def run(self, layers: list[int], progress: bool = True) -> Tensor:
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
            fit = self.max_rows * self.seq_len // ((self.seq_len - start) * self.batch)
            n_chunks = len(group) if not self.fast else math.ceil(len(group) / max(1, fit))
            per_chunk = math.ceil(len(group) / n_chunks)
            for i in range(0, len(group), per_chunk):
                chunk = group[i:i + per_chunk]
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
        """The metric for each patch (sorted by layer), computing positions ``start...`` only.

        One forward pass serves patches at several layers: the rows of a patch at layer ``L`` join the batch at
        block ``L`` (before it, they would equal the base run, which is cached), so the batch grows layer by
        layer like a staircase and every block runs once per chunk.
        """
        model, site, cfg = self.model, self.site, self.model.cfg
        B = self.batch
        n_total = len(patches)
        self.peak_chunk_bytes = max(self.peak_chunk_bytes,
                                    n_total * B * self.row_bytes * (self.seq_len - start) // self.seq_len)
        # a patch on resid_post of layer L is a patch on the residual stream entering block L + 1
        enter = [layer + 1 if site.name == "resid_post" else layer for layer, _ in patches]
        resid = None
        for l in range(enter[0], cfg.n_layers + 1):
            joining = [i for i, e in enumerate(enter) if e == l]
            if joining:
                resid = self._join(resid, l, start, [patches[i] for i in joining], other)
            if l == cfg.n_layers:
                break
            at_layer = [p for p in patches if p[0] == l]
            hooks = []
            if at_layer and site.name not in ("resid_pre", "resid_post"):
                hooks = [(site.hook_name(l), self._patch_hook(l, start, at_layer, other))]
            rows = resid.shape[0]
            pos_embed = None
            if cfg.positional_embedding_type == "shortformer":
                pos_embed = einops.repeat(self.base_cache["hook_pos_embed"][:, start:], "b p d -> (n b) p d",
                                          n=rows // B)
            entry = None
            if start > 0:  # keys and values of the unchanged earlier positions, from the base run
                keys, vals = (einops.repeat(self.base_cache[f"blocks.{l}.attn.hook_{kv}"][:, :start],
                                            "b p h d -> (n b) p h d", n=rows // B) for kv in "kv")
                entry = TransformerLensKeyValueCacheEntry(keys, vals, frozen=True)
            if l == cfg.n_layers - 1 and self.last_only and resid.shape[1] > 1:
                out = self._last_block(resid, hooks, len(at_layer) * B if hooks else 0, pos_embed, entry)
                late = [patches[i] for i, e in enumerate(enter) if e == cfg.n_layers]  # resid_post of this block
                if late:
                    out = torch.cat([out, self._join(None, cfg.n_layers, start, late, other)[:, -1:]])
                return self._readout(out, self.seq_len - 1, n_total)
            with model.hooks(fwd_hooks=hooks):
                resid = model.blocks[l](resid, shortformer_pos_embed=pos_embed, past_kv_cache_entry=entry)
        return self._readout(resid, start, n_total)

    def _last_block(self, resid: Tensor, hooks: list, hooked: int, pos_embed: Optional[Tensor],
                    entry: Optional[TransformerLensKeyValueCacheEntry]) -> Tensor:
        """The last block's output at the last position only (all the metric reads).

        Rows without a patch in this block need, from the earlier positions, only their keys and values; those
        rows run the block on the last position alone. The last ``hooked`` rows carry a patch in this block and
        run it whole.
        """
        block, free = self.model.blocks[-1], resid.shape[0] - hooked

        def rows(sl: slice):
            return (None if pos_embed is None else pos_embed[sl],
                    None if entry is None else TransformerLensKeyValueCacheEntry(
                        entry.past_keys[sl], entry.past_values[sl], frozen=True))

        outs = []
        if free:
            pe, prefix = rows(slice(0, free))
            normed = block.ln1(resid[:free, :-1])
            keys_in = normed if pe is None else normed + pe[:, :-1]
            _, k, v = block.attn.calculate_qkv_matrices(keys_in[:, :1], keys_in, normed)  # (a 1-position query)
            if prefix is not None:
                k, v = torch.cat([prefix.past_keys, k], dim=1), torch.cat([prefix.past_values, v], dim=1)
            outs.append(block(resid[:free, -1:], shortformer_pos_embed=None if pe is None else pe[:, -1:],
                              past_kv_cache_entry=TransformerLensKeyValueCacheEntry(k, v, frozen=True)))
        if hooked:
            pe, prefix = rows(slice(free, None))
            with self.model.hooks(fwd_hooks=hooks):
                outs.append(block(resid[free:], shortformer_pos_embed=pe, past_kv_cache_entry=prefix)[:, -1:])
        return torch.cat(outs)

    def _join(self, resid: Optional[Tensor], layer: int, start: int, joining: list, other: list[str]) -> Tensor:
        """Append the rows of patches entering at ``layer``: the base residual stream (patched, for resid sites)."""
        cfg = self.model.cfg
        name = f"blocks.{layer}.hook_resid_pre" if layer < cfg.n_layers else f"blocks.{layer - 1}.hook_resid_post"
        new = einops.repeat(self.base_cache[name][:, start:], "b p d -> (n b) p d", n=len(joining)).clone()
        if self.site.name in ("resid_pre", "resid_post"):
            new = self._patch_hook(joining[0][0], start, joining, other)(new)
        return new if resid is None else torch.cat([resid, new])

    def _patch_hook(self, layer: int, start: int, patches: list, other: list[str],
                    rows: Optional[tuple[int, int]] = None):
        """A hook replacing each patch's slice by the source value in that patch's batch rows.

        The patches own rows ``rows[0]...rows[1]`` in order, ``batch`` rows each (default: the last
        ``len(patches) * batch`` rows).
        """
        site, n, B = self.site, len(patches), self.batch
        mask = self._mask([index for _, index in patches], other, start)
        source = self.source_cache[site.hook_name(layer)]
        source = source[(slice(None),) * (1 + site.dims.index(site.pos_axis)) + (slice(start, None),)]

        def patch(act: Tensor, hook=None) -> Tensor:
            lo, hi = rows if rows is not None else (act.shape[0] - n * B, act.shape[0])
            grouped = act[lo:hi].reshape(n, B, *act.shape[1:])
            act[lo:hi] = torch.where(mask, source[None], grouped).reshape(hi - lo, *act.shape[1:])
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
        model, B = self.model, self.batch
        if self.select_only:
            rel = (self.read_pos - start).to(resid.device)  # [B, k]
            grouped = resid.reshape(n, B, *resid.shape[1:])
            x = grouped.gather(2, einops.repeat(rel, "b k -> n b k d", n=n, d=resid.shape[-1]))
            x = x.reshape(n * B, rel.shape[1], -1)
            if self.read_cols is None:
                logits = readout(model, x).reshape(n, B, rel.shape[1], -1)
            else:  # each prompt's own columns of W_U: the readout of core.readout, column by column
                x = final_norm(model, x).reshape(n, B, rel.shape[1], -1)
                cols = self.read_cols.to(resid.device)  # [B, c]
                w = model.W_U[:, cols]  # [d_model, B, c]
                logits = torch.einsum("nbkd,dbc->nbkc", x, w) + model.b_U[cols][None, :, None, :]
                logits = softcap(logits, model.cfg.output_logits_soft_cap)
            return self.metric.from_selected(logits).float().cpu()
        return self._from_logits(readout(model, resid), start, n)

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
    from pathlib import Path

    from circuitlab.engine.executor import as_executor, run_shards, shard_count, split
    from circuitlab.models.identity import model_source

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
        source = model_source(model, loaded) if isinstance(model, (str, Path)) else loaded
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
