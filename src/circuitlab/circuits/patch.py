"""Exact edge patching: run the model with some edges of its graph removed, many edge sets per forward pass.

**What removing an edge means.** In the graph of :mod:`circuitlab.circuits.graph`, receiver ``v`` reads the
residual stream, which is the sum of every earlier sender's output (plus constants). Removing the edge ``u -> v``
makes ``v`` read sender ``u``'s *ablated* output instead of its output in the run itself::

    input_v = resid_v(this run) - sum over removed edges u -> v of ( a_u(this run) - a_u(ablated) )

Every other reader of ``u`` still sees ``a_u(this run)``. "This run" matters: when edges upstream of ``u`` are
removed, ``u``'s own output changes, and the receivers that keep their edge from ``u`` read that changed output
(as in ACDC and auto-circuit). The ablated value ``a_u(ablated)`` is ``u``'s output on the corrupted prompts
(``ablation="corrupted"``, the default), its mean over the corrupted batch at each position (``"mean"``), or zero
(``"zero"``). Removing every edge with corrupted ablation gives the corrupted run; removing none, the clean run.

**How it is computed.** :class:`EdgePatcher` caches the clean run (each layer's residual stream and every
sender's output) and the ablated outputs once. Then each *mask* (a set of removed edges) becomes one group of
``batch`` rows of a batched forward pass, run block by block with TransformerLens's own blocks:

1. **Many masks per pass**, chunked so one pass holds at most ``max_memory`` bytes of activations.
2. **Start late.** Before the first layer where any mask in the chunk removes an edge, every mask's run equals
   the clean run, so the pass starts there from the cached clean residual stream.
3. **Per-receiver inputs.** Each receiver's correction (the sum over its removed edges above) is one matrix
   product per hook: ``[mask, sender] x [sender, batch * pos * d_model]`` over the senders before the start layer
   (whose differences ``a_u(clean) - a_u(ablated)`` are cached once and shared by every mask, so only the
   distinct mask columns are multiplied, each from the fewer of its removed or kept senders: a sum over most
   senders is a cached prefix sum minus the few left out), plus a batched product over the senders computed in this
   pass (their current outputs are captured at ``hook_z`` times ``W_O[h]``, and at ``hook_mlp_out``, as the pass reaches
   them). An MLP's correction is subtracted at ``hook_mlp_in``, the logits' from the final residual stream.
   Heads' query, key and value inputs are not copied per head (as TransformerLens's ``use_split_qkv_input``
   does, at about twice a block's cost): the block runs on the shared stream and each head's ``q``/``k``/``v``
   is corrected in closed form at ``hook_q``/``hook_k``/``hook_v`` (:class:`_AttentionInputs`), exactly.
4. **Few kept, many removed.** When a mask removes most of the edges from the senders computed in the pass
   (ACDC's usual state), the removed senders' sum is taken as everything they wrote (this run's stream minus
   the clean one where the receiver reads it, plus their cached clean differences) minus the few kept ones.
5. **Dead components are not computed.** A sender whose every outgoing edge is removed in every mask of a pass
   (a component ACDC has pruned) has no reader of its own output: each reader takes its ablated output instead.
   So it outputs the ablated value directly: a dead MLP is not run (its block's ``apply_mlp`` returns the cached
   ablated output), a dead head's ``z`` is replaced by its ablated ``z``, and neither's inputs are corrected.
   The metric is unchanged (every reader would subtract whatever it wrote), and the corrections it would need are
   exactly zero.
6. **Read only what the metric reads.** The logits' own correction is applied to the final residual stream and
   a declarative metric (:mod:`circuitlab.metrics`, e.g. :class:`~circuitlab.metrics.KLDivergence`) is computed
   from its positions and columns only; any other callable gets full logits per mask. Nothing after the last
   block reads other positions, so the last block runs only from the first position read on, with the keys and
   values of the earlier positions computed (with their corrections) into a key/value cache entry; this runs
   only under the block runner's one rule for key/value reuse (:mod:`circuitlab.engine.blocks`: a verified
   configuration and a start-up self-check on the clean run).

The same masks are evaluated with plain hooks and one forward per mask by the reference in the tests.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterable, Optional, Sequence, Union

import einops
import torch
from jaxtyping import Bool, Float, Int, Shaped
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry

from circuitlab.circuits.circuit import Circuit
from circuitlab.circuits.eap import capture_senders, compute_dtype, receiver_inputs, stack_senders
from circuitlab.circuits.graph import Graph
from circuitlab.core import (DEFAULT_MAX_MEMORY, ModelLike, Prompts, as_model, check_finite, check_max_memory,
                             progress_bar, readout, row_bytes, shorten, to_tokens)
from circuitlab.engine.blocks import BlockRunner, gather_positions, read_logits
from circuitlab.errors import InputError
from circuitlab.metrics import KLDivergence, Metric, bind_metric, is_declarative
from circuitlab.patching.sites import scalar

ABLATIONS = ("corrupted", "mean", "zero")
Masks = Union[Bool[Tensor, "mask edge"], Sequence[Iterable]]


def check_prompt_pair(model: HookedTransformer, clean_tokens: Prompts, corrupted_tokens: Prompts,
                      what: str = "edge patching") -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """Clean and corrupted prompts as token tensors of one shape, or an error saying how to make them so."""
    clean_t, corrupted_t = to_tokens(model, clean_tokens), to_tokens(model, corrupted_tokens)
    if clean_t.shape != corrupted_t.shape:
        raise InputError(
            f"clean tokens have shape {tuple(clean_t.shape)} but corrupted tokens have shape "
            f"{tuple(corrupted_t.shape)}. {what[0].upper() + what[1:]} replaces a sender's output by its value on the "
            "corrupted prompt at the same position, so give as many corrupted prompts as clean ones, each with the "
            "same number of tokens as its clean prompt (pad or rephrase the shorter ones)."
        )
    return clean_t, corrupted_t


def check_ablation(ablation: str) -> str:
    if ablation not in ABLATIONS:
        raise InputError(f"ablation={shorten(ablation)}: use 'corrupted' (the sender's output on the corrupted "
                         "prompt), 'mean' (its mean over the corrupted batch) or 'zero'.")
    return ablation


def check_boolean_mask(mask: Shaped[Tensor, "..."], what: str) -> Bool[Tensor, "..."]:
    """An edge mask as a CPU boolean tensor: a boolean tensor as it is, a numeric one only when every value is
    exactly 0 or 1. A fractional value (0.4, a score, NaN) is an :class:`~circuitlab.errors.InputError` naming
    ``what``: ``.bool()`` would silently read every non-zero value as "removed"."""
    if mask.dtype == torch.bool:
        return mask.cpu()
    exact = (mask == 0) | (mask == 1)
    if mask.is_complex() or not bool(exact.all()):
        bad = mask[~exact].flatten()[:3].tolist()
        raise InputError(f"{what} must be a boolean mask (True = edge removed) or hold only 0 and 1; got a "
                         f"{str(mask.dtype).replace('torch.', '')} tensor with values such as {shorten(bad, 40)}. "
                         f"Decide each edge yourself, e.g. {what}=scores > 0.5.")
    return mask.bool().cpu()


class EdgePatcher:
    """The cached clean run and ablated sender outputs, and the batched forward pass over edge masks.

    Build one per (model, prompts, ablation); call :meth:`run` with masks as often as needed (ACDC calls it once
    per speculative window). ``metrics`` are read from every patched run; the first is the one that
    :meth:`run` returns per mask in column 0, the others in the next columns.

    Attributes:
        graph: the model's graph.
        passes: batched forward passes run so far; ``masks_run``: masks evaluated so far.
        blocks: the block runner on the clean run, which runs every block but the shortcut last one.
        engine: the block runner's key/value reuse decision (``kv_reuse``, ``last_block``, ``why``) for the
            last-block shortcut.
    """

    def __init__(self, model: HookedTransformer, clean_t: Int[Tensor, "batch pos"],
                 corrupted_t: Int[Tensor, "batch pos"], metrics: Sequence, *, ablation: str = "corrupted",
                 max_memory: int = DEFAULT_MAX_MEMORY):
        self.model, self.graph = model, Graph.from_model(model)
        self.ablation, self.max_memory = check_ablation(ablation), check_max_memory(max_memory)
        self.metrics = [bind_metric(m, model) for m in metrics]
        self.clean_t = clean_t
        self.batch, self.seq_len = clean_t.shape
        self.dtype = compute_dtype(model)
        cfg = model.cfg
        graph = self.graph
        keep = {f"blocks.{layer}.hook_resid_pre" for layer in range(cfg.n_layers)}
        if not cfg.attn_only and not cfg.parallel_attn_mlp:  # what each MLP reads (parallel ones: resid_pre)
            keep |= {f"blocks.{layer}.hook_resid_mid" for layer in range(cfg.n_layers)}
        if cfg.positional_embedding_type == "shortformer":  # added to queries and keys, not to the stream
            keep.add("hook_pos_embed")
        kv_names = [(f"blocks.{layer}.attn.hook_k", f"blocks.{layer}.attn.hook_v") for layer in range(cfg.n_layers)]
        keep |= {name for pair in kv_names for name in pair}  # the clean keys and values, for the block runner
        outputs: dict[str, Tensor] = {}

        def cache(name: str):
            def hook(act: Tensor, hook=None) -> None:
                outputs[name] = act.detach()
            return hook

        with torch.no_grad():
            self.clean_final = model.run_with_hooks(
                clean_t, fwd_hooks=capture_senders(model, graph, outputs) + [(n, cache(n)) for n in keep
                                                                             if n != "blocks.0.hook_resid_pre"],
                stop_at_layer=cfg.n_layers)
            self.clean_resid = [outputs[f"blocks.{layer}.hook_resid_pre"] for layer in range(cfg.n_layers)]
            self.clean_mlp_stream = [outputs.get(f"blocks.{layer}.hook_resid_mid", self.clean_resid[layer])
                                     for layer in range(cfg.n_layers)]
            self.pos_embed = outputs.get("hook_pos_embed") if cfg.positional_embedding_type == "shortformer" else None
            clean_kv = [(outputs[k], outputs[v]) for k, v in kv_names]
            clean = stack_senders(model, graph, outputs)  # [sender, batch, pos, d_model]
            if ablation == "zero":
                ablated = torch.zeros_like(clean)
            else:
                outputs = {}
                model.run_with_hooks(corrupted_t, fwd_hooks=capture_senders(model, graph, outputs),
                                     stop_at_layer=cfg.n_layers)
                ablated = stack_senders(model, graph, outputs)
                if ablation == "mean":
                    ablated = ablated.mean(1, keepdim=True).expand_as(ablated).contiguous()
            # each layer's ablated z (what a head outputs when nothing reads its own output: see _pass)
            self.ablated_z = []
            for layer in range(cfg.n_layers):
                z = outputs[f"blocks.{layer}.attn.hook_z"] if ablation != "zero" else None
                if ablation == "zero":
                    shape = (self.batch, self.seq_len, cfg.n_heads, cfg.d_head)
                    z = torch.zeros(shape, dtype=self.clean_final.dtype, device=self.clean_final.device)
                elif ablation == "mean":
                    z = z.mean(0, keepdim=True).expand_as(z).contiguous()
                self.ablated_z.append(z)
        self.ablated = ablated
        self.diff = clean.sub_(ablated)  # a_u(clean) - a_u(ablated): what removing u's edge subtracts, unchanged runs
        del clean
        # prefix[j] = diff[0] + ... + diff[j] (summed in float64): a sum over most senders is the prefix minus the
        # few left out
        self.prefix = self.diff.flatten(1).double().cumsum(0).to(self.dtype)
        # the first sender of each layer (heads of layer l read senders [:first_sender[l]])
        self.first_sender = [1 + layer * (cfg.n_heads + (0 if cfg.attn_only else 1)) for layer in range(cfg.n_layers)]
        self.first_sender.append(len(graph.senders))
        self.passes = self.masks_run = 0
        self.receivers_at: dict[int, dict[str, list[int]]] = {}  # layer -> kind -> receiver indices
        for i, node in enumerate(graph.receivers):
            self.receivers_at.setdefault(node.layer, {}).setdefault(node.kind, []).append(i)
        with receiver_inputs(model, split_qkv=False):
            self.first_read = self._first_read(clean_kv)  # builds self.blocks, the block runner on the clean run
        with torch.no_grad():
            self.clean_values = self._read(self.clean_final, 1)[0]  # [n_metrics]

    # -- memory ------------------------------------------------------------------------------------------------
    def bytes_per_mask(self, start: int = 0) -> int:
        """Rough bytes one mask's rows hold in a pass that starts at layer ``start``: a forward pass's activations,
        one letter's per-head corrections and their temporaries (two residual streams per head and letter), the
        current outputs of the senders computed in the pass, and the readout."""
        cfg, B, p = self.model.cfg, self.batch, self.seq_len
        size = torch.tensor([], dtype=self.dtype).element_size()
        late = len(self.graph.senders) - self.first_sender[min(start, cfg.n_layers)]
        per_token = cfg.d_model * (late + 2 * 3 * cfg.n_heads + 2)
        reads = max((self._read_width(m) for m in self.metrics), default=cfg.d_vocab_out)
        return B * (row_bytes(self.model, p) + size * p * per_token + 2 * size * reads)

    def _read_width(self, metric) -> int:
        if not is_declarative(metric):
            return self.seq_len * self.model.cfg.d_vocab_out
        positions, columns = metric.reads(self.batch, self.seq_len)
        return positions.shape[1] * (self.model.cfg.d_vocab_out if columns is None else columns.shape[1])

    def masks_per_pass(self, start: int = 0) -> int:
        """How many masks fit in one pass under ``max_memory`` when the pass starts at layer ``start``."""
        return max(1, self.max_memory // max(1, self.bytes_per_mask(start)))

    def start_layer(self, masks: Bool[Tensor, "mask sender receiver"]) -> int:
        """The first layer where some mask removes an edge (``n_layers``: only the logits' input changes)."""
        touched = masks.any(0).any(0).nonzero().flatten().tolist()
        return min([self.graph.receivers[r].layer for r in touched], default=self.model.cfg.n_layers)

    def _first_read(self, clean_kv: Optional[list[tuple[Tensor, Tensor]]]) -> int:
        """The first position any metric reads, when the last block may run from it on alone (else 0).

        That shortcut reuses keys and values of earlier positions through TransformerLens's key/value cache
        entries, so it runs only under the block runner's one rule (:class:`circuitlab.engine.blocks.BlockRunner`:
        a verified configuration, with the receivers' inputs as this patcher sets them, and a start-up self-check
        on the clean run); :attr:`engine` records the decision. (With grouped-query attention ungrouped for the
        receivers, the configuration is not verified.)"""
        declarative = all(is_declarative(m) for m in self.metrics)
        self.blocks = BlockRunner(self.model, self.clean_resid + [self.clean_final], [k for k, _ in clean_kv],
                                  [v for _, v in clean_kv], self.pos_embed, reuse=declarative)
        self.engine = self.blocks.describe()
        if not declarative:
            self.engine["why"] = "a metric that is not declarative may read any position: every position is computed"
        if not self.blocks.kv_reuse:
            return 0
        return min(int(m.reads(self.batch, self.seq_len)[0].min()) for m in self.metrics)

    # -- masks -------------------------------------------------------------------------------------------------
    def mask_matrix(self, removed: Iterable) -> Bool[Tensor, "sender receiver"]:
        """Edges (``("L0H1", "L1H2.k")`` pairs, ``"L0H1 -> L1H2.k"`` strings, or a Circuit) as a
        ``[sender, receiver]`` boolean matrix."""
        graph = self.graph
        out = torch.zeros(len(graph.senders), len(graph.receivers), dtype=torch.bool)
        for edge in removed:
            s, r = graph.check_edge(edge)
            out[graph.sender_index[s], graph.receiver_index[r]] = True
        return out

    def as_masks(self, masks: Masks) -> Bool[Tensor, "mask sender receiver"]:
        """Masks as ``[mask, sender, receiver]``: from that tensor itself, from ``[mask, edge]`` (the graph's edge
        order), or from a list of edge collections."""
        graph = self.graph
        if isinstance(masks, Tensor):
            masks = check_boolean_mask(masks, "removed")
            if masks.ndim == 3 and masks.shape[1:] == graph.mask.shape:
                if (masks & ~graph.mask).any():
                    raise InputError("a mask removes a (sender, receiver) pair that is not an edge of the graph.")
                return masks
            if masks.ndim == 2 and masks.shape[1] == graph.n_edges:
                out = torch.zeros(masks.shape[0], *graph.mask.shape, dtype=torch.bool)
                out[:, graph.mask] = masks[:, self._edge_to_cell]
                return out
            raise InputError(f"masks of shape {tuple(masks.shape)}: give [n_masks, n_edges={graph.n_edges}] "
                             f"(graph edge order) or [n_masks, {len(graph.senders)}, {len(graph.receivers)}].")
        if isinstance(masks, Circuit):  # one circuit: one mask removing its edges
            masks = [masks]
        if isinstance(masks, (str, bytes)) or not isinstance(masks, Iterable):
            raise InputError(f"removed must be a list of edge sets (each a Circuit or a list of edges such as "
                             f"'L0H1 -> L1H2.k'), a Circuit, or a boolean mask tensor; got {shorten(masks, 60)}.")
        masks = list(masks)
        for i, m in enumerate(masks):
            if isinstance(m, (str, bytes)) or not isinstance(m, Iterable):
                raise InputError(f"removed[{i}] is {shorten(m, 60)}: each edge set must be a Circuit or a list of "
                                 "edges (e.g. ['L0H1 -> L1H2.k']).")
            if isinstance(m, Circuit):
                graph.check_same(m.graph, f"removed[{i}] (a circuit)")
            if isinstance(m, Tensor):
                raise InputError(f"removed[{i}] is a tensor: give all masks as one boolean tensor [n_masks, n_edges] "
                                 "(True = removed), or each edge set as a Circuit or a list of edges.")
        return torch.stack([self.mask_matrix(m) for m in masks]) if len(masks) else \
            torch.zeros(0, *graph.mask.shape, dtype=torch.bool)

    @property
    def _edge_to_cell(self) -> Tensor:
        """For the cells of ``graph.mask`` in row-major order, the index of their edge in the graph's order."""
        graph = self.graph
        index = torch.full(graph.mask.shape, -1, dtype=torch.long)
        for i, (s, r) in enumerate(graph.edges):
            index[graph.sender_index[s], graph.receiver_index[r]] = i
        return index[graph.mask]

    # -- evaluation --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def run(self, masks: Bool[Tensor, "mask sender receiver"], progress: bool = False) -> Float[Tensor, "mask metric"]:
        """Every metric for every mask (``True`` = edge removed), in batched passes of :attr:`masks_per_pass`."""
        n = masks.shape[0]
        out = torch.empty(n, len(self.metrics), dtype=torch.float64)
        step = self.masks_per_pass(self.start_layer(masks))
        chunks = [slice(i, min(i + step, n)) for i in range(0, n, step)]
        with receiver_inputs(self.model, split_qkv=False):
            for sl in progress_bar(chunks, progress=progress and len(chunks) > 1, desc="edge patching"):
                out[sl] = self._pass(masks[sl])
        return out

    def _pass(self, masks: Bool[Tensor, "n sender receiver"]) -> Float[Tensor, "n metric"]:
        """One batched forward pass: ``batch`` rows per mask."""
        model, graph, cfg = self.model, self.graph, self.model.cfg
        n, B, p = masks.shape[0], self.batch, self.seq_len
        self.passes += 1
        self.masks_run += n
        start = self.start_layer(masks)
        # the clean stream entering the first block that runs (after the last block: only the logits' input changes)
        resid = self.blocks.base(min(start, cfg.n_layers), 0, n)
        masks = masks.to(resid.device)
        n_early = self.first_sender[min(start, cfg.n_layers)]
        # a_u(now) - a_u(ablated) of the senders this pass computes, filled in as the pass reaches them
        late = torch.empty(n, len(graph.senders) - n_early, B * p * cfg.d_model, dtype=self.dtype,
                           device=resid.device)
        filled = [0]
        graph_mask = graph.mask.to(resid.device)
        # senders whose every outgoing edge is removed in every mask (ACDC's pruned components): nothing reads
        # their output in this run, only their ablated one, so they output the ablated value directly: a dead
        # MLP is not computed, and no dead component's inputs are corrected. (Any value would give the same
        # metric: every reader subtracts it again; this one makes those corrections exactly zero.)
        dead = (masks | ~graph_mask[None]).all(2).all(0).tolist()

        def correction(columns: list[int], drift: Optional[Tensor] = None) -> Optional[Float[Tensor, "n r b p d"]]:
            """Each receiver's sum over its removed senders of (a_u(now) - a_u(ablated)), mask by mask.

            The senders before the pass share one difference for every mask: one matrix product over the
            *distinct* mask columns (in ACDC, all candidates share the current circuit's columns but one). The
            senders computed in the pass differ per mask: a batched product over those that some mask removes.
            When most of them are removed (ACDC's usual state), their sum is taken as everything they wrote minus
            the few kept: everything is ``drift`` (this run's stream minus the clean one, where the receiver reads
            it, ``[n, batch, pos, d_model]``) plus their cached clean differences."""
            m = masks[:, :, columns]  # [n, sender, r]
            if not bool(m.any()):
                return None
            k = filled[0]
            m_late = m[:, n_early:n_early + k]
            valid = graph_mask[n_early:n_early + k, columns]  # [k, r]: which of them the receivers read at all
            kept = valid[None] & ~m_late
            n_removed, n_kept = int(m_late.any(2).any(0).sum()), int(kept.any(2).any(0).sum())
            complement = drift is not None and n_kept < n_removed
            if complement:
                shared = torch.cat([m[:, :n_early], valid[None].expand(n, -1, -1)], dim=1)
            else:
                shared = m[:, :n_early]
            rows = einops.rearrange(shared, "n s r -> (n r) s")
            distinct, inverse = torch.unique(rows, dim=0, return_inverse=True)
            corr = self._sum_rows(distinct)[inverse].view(n, len(columns), -1)  # [n, r, batch*pos*d]
            coef = kept if complement else m_late
            active = coef.any(2).any(0).nonzero().flatten()
            if len(active):
                corr.baddbmm_(coef[:, active].transpose(1, 2).to(self.dtype), late[:, active],
                              alpha=-1.0 if complement else 1.0)
            if complement:
                corr += drift.reshape(n, 1, -1).to(self.dtype)
            return corr.view(n, len(columns), B, p, cfg.d_model)

        def drift_of(stream: Tensor, clean: Tensor, positions: slice = slice(None)) -> Tensor:
            """This run's stream minus the clean one ``[n, batch, pos, d_model]`` (zero outside ``positions``)."""
            now = stream.view(n, B, -1, cfg.d_model)
            if positions == slice(None):
                return now - clean[None]
            out = torch.zeros(n, B, p, cfg.d_model, dtype=now.dtype, device=now.device)
            out[:, :, positions] = now - clean[None, :, positions]
            return out

        def capture_heads(layer: int, positions: slice = slice(None)):
            first = self.first_sender[layer]
            gone = [h for h in range(cfg.n_heads) if dead[first + h]]

            def hook(z: Tensor, hook=None) -> Optional[Tensor]:
                if gone:  # dead heads output their ablated z
                    z = z.clone()
                    z[:, :, gone] = einops.repeat(self.ablated_z[layer][:, positions][:, :, gone],
                                                  "b p h e -> (n b) p h e", n=n).to(z.dtype)
                replaced = z if gone else None
                z = einops.rearrange(z.to(self.dtype), "(n b) p h e -> n b p h e", n=n)
                k = filled[0]
                out = einops.einsum(z, model.blocks[layer].attn.W_O.to(self.dtype), "n b p h e, h e d -> n h b p d")
                out -= self.ablated[None, first:first + cfg.n_heads, :, positions]  # own output minus ablated one
                if gone:
                    out[:, gone] = 0.0
                store = late[:, k:k + cfg.n_heads].view(n, cfg.n_heads, B, p, cfg.d_model)
                if positions != slice(None):
                    store.zero_()  # positions before the last block's computed ones: read by nothing
                store[:, :, :, positions] = out
                filled[0] += cfg.n_heads
                return replaced
            return hook

        def capture_mlp(layer: int, positions: slice = slice(None)):
            def hook(act: Tensor, hook=None) -> None:
                s, k = self.first_sender[layer] + cfg.n_heads, filled[0]
                out = einops.rearrange(act.to(self.dtype), "(n b) p d -> n b p d", n=n) - \
                    self.ablated[s][None, :, positions]
                if dead[s]:
                    out.zero_()
                store = late[:, k].view(n, B, p, cfg.d_model)
                if positions != slice(None):
                    store.zero_()
                store[:, :, positions] = out
                filled[0] += 1
            return hook

        def subtract(columns: list[int], clean: Tensor, positions: slice = slice(None)):
            """A hook that subtracts one receiver's correction from the stream it reads (an MLP's, the logits');
            ``clean`` is the clean run's stream there."""
            def hook(act: Tensor, hook=None) -> Tensor:
                corr = correction(columns, drift_of(act, clean, positions))
                if corr is None:
                    return act
                return act - corr[:, 0, :, positions].reshape(act.shape).to(act.dtype)
            return hook

        def once(columns: list[int], stream: Tensor, clean: Tensor):
            """The correction of these receivers, computed at most once (the last block reads it twice)."""
            memo: list = []

            def get():
                if not memo:
                    memo.append(correction(columns, drift_of(stream, clean)))
                return memo[0]
            return get

        def layer_hooks(layer: int, norm: "_AttentionInputs", qkv: dict, positions: slice = slice(None)) -> list:
            """The hooks of one block: live heads' q/k/v corrections, the heads' and MLP's outputs captured, the
            MLP's input corrected (a dead MLP's input is not: it is not computed, see :meth:`_dead_mlp`)."""
            hooks = [(f"blocks.{layer}.attn.hook_{letter}", norm.hook(letter, qkv[letter])) for letter in qkv]
            hooks.append((f"blocks.{layer}.attn.hook_z", capture_heads(layer, positions)))
            if not cfg.attn_only:
                mlp = self.first_sender[layer] + cfg.n_heads
                if not dead[mlp]:
                    hooks.append((f"blocks.{layer}.hook_mlp_in",
                                  subtract(self.receivers_at[layer]["mlp"], self.clean_mlp_stream[layer], positions)))
                hooks.append((f"blocks.{layer}.hook_mlp_out", capture_mlp(layer, positions)))
            return hooks

        def attention_inputs(layer: int, x: Tensor, pos: Optional[Tensor], positions: slice = slice(None)):
            live = [h for h in range(cfg.n_heads) if not dead[self.first_sender[layer] + h]]
            return _AttentionInputs(model, layer, x, pos, n, positions, heads=live)

        pos_embed = None if self.pos_embed is None else einops.repeat(self.pos_embed, "b p d -> (n b) p d", n=n)
        first_read = self.first_read
        for layer in range(start, cfg.n_layers):
            kinds = self.receivers_at[layer]
            live = [h for h in range(cfg.n_heads) if not dead[self.first_sender[layer] + h]]
            qkv = {letter: once([kinds[letter][h] for h in live], resid, self.clean_resid[layer])
                   for letter in "qkv"} if live else {}
            block = model.blocks[layer]
            if layer == cfg.n_layers - 1 and first_read:
                # the last block only at the positions the metrics read, from the keys and values of the earlier
                # positions (computed here with their corrections): nothing after this block reads the others
                ahead = slice(first_read, None)
                early_pos = None if self.pos_embed is None else self.pos_embed[:, :first_read]
                before = attention_inputs(layer, resid[:, :first_read], early_pos, slice(0, first_read))
                normed = block.ln1(resid[:, :first_read])
                keys_in = normed if pos_embed is None else normed + pos_embed[:, :first_read]
                with model.hooks(fwd_hooks=[(f"blocks.{layer}.attn.hook_{kv}", before.hook(kv, qkv[kv]))
                                            for kv in "kv" if kv in qkv]):
                    _, keys, values = block.attn.calculate_qkv_matrices(keys_in[:, :1], keys_in, normed)
                entry = TransformerLensKeyValueCacheEntry(keys, values, frozen=True)
                rest = None if self.pos_embed is None else self.pos_embed[:, ahead]
                norm = attention_inputs(layer, resid[:, ahead], rest, ahead)
                with model.hooks(fwd_hooks=layer_hooks(layer, norm, qkv, ahead)), self._dead_mlp(layer, dead, n, ahead):
                    resid = block(resid[:, ahead], past_kv_cache_entry=entry,
                                  shortformer_pos_embed=None if pos_embed is None else pos_embed[:, ahead])
                resid = subtract(self.receivers_at[cfg.n_layers]["logits"], self.clean_final, ahead)(resid)
                return self._read(resid, n, offset=first_read)
            norm = attention_inputs(layer, resid, self.pos_embed)
            with self._dead_mlp(layer, dead, n):
                resid = self.blocks.block(layer, resid, 0, layer_hooks(layer, norm, qkv))
        resid = subtract(self.receivers_at[cfg.n_layers]["logits"], self.clean_final)(resid)
        return self._read(resid, n)

    @contextlib.contextmanager
    def _dead_mlp(self, layer: int, dead: list, n: int, positions: slice = slice(None)):
        """While in it, a dead MLP (no reader of its own output) is not computed: its block's ``apply_mlp``
        returns the MLP's ablated output (through ``hook_mlp_out``, which the pass captures)."""
        cfg = self.model.cfg
        if cfg.attn_only or not dead[self.first_sender[layer] + cfg.n_heads]:
            yield
            return
        block = self.model.blocks[layer]
        value = einops.repeat(self.ablated[self.first_sender[layer] + cfg.n_heads][:, positions],
                              "b p d -> (n b) p d", n=n).to(self.clean_final.dtype)
        block.apply_mlp = lambda normalized: block.hook_mlp_out(value)  # an instance attribute, removed below
        try:
            yield
        finally:
            del block.apply_mlp

    def _sum_rows(self, rows: Bool[Tensor, "row width"]) -> Float[Tensor, "row flat"]:
        """``rows @ diff[:width]``: for each row, the sum of the cached clean differences of the senders it marks.

        A row marking most of its senders is computed as the prefix sum minus the senders it leaves out (ACDC's
        circuits remove most edges), and only the senders some row needs are read: the cost grows with the
        senders named, not with the graph."""
        width = rows.shape[1]
        flip = rows.sum(1) * 2 > width
        weights = torch.where(flip[:, None], ~rows, rows)
        needed = weights.any(0).nonzero().flatten()
        flat = self.diff.flatten(1)
        if len(needed):
            out = weights[:, needed].to(self.dtype) @ flat[needed]
        else:
            out = torch.zeros(rows.shape[0], flat.shape[1], dtype=self.dtype, device=flat.device)
        if bool(flip.any()):
            out[flip] = self.prefix[width - 1][None] - out[flip]
        return out

    def _read(self, resid: Float[Tensor, "rows pos d_model"], n: int, offset: int = 0) -> Float[Tensor, "n metric"]:
        """Each metric on each mask's rows of the final residual stream (only the logits it reads, by the block
        runner's readout); ``resid`` holds positions ``offset...``."""
        B = self.batch
        values = []
        for metric in self.metrics:
            if is_declarative(metric):
                positions, columns = metric.reads(B, self.seq_len)
                logits = read_logits(self.model, gather_positions(resid, positions, n, offset), n, B, columns)
                values.append(metric.from_selected(logits).double().cpu().reshape(n))
            else:
                logits = readout(self.model, resid)
                values.append(torch.tensor([scalar(metric(logits[i * B:(i + 1) * B])) for i in range(n)],
                                           dtype=torch.float64))
        return torch.stack(values, dim=1)


class _AttentionInputs:
    """Each head's query, key and value computed from its own input ``x - c_h``, in closed form.

    The block runs on the shared residual stream ``x`` (TransformerLens computes ``q_h(x)`` for every head, as
    usual); a hook at ``attn.hook_q`` (``hook_k``, ``hook_v``) then turns each head's ``q_h(x)`` into ``q_h(x - c_h)``
    without running the norm once per head. With ``ln1(y) = w * center(y) / s(y) + b`` (``center`` and ``w, b``
    only where the norm has them; ``s(y) = sqrt(mean(center(y)^2) + eps)``) and ``K_h = b_Q[h] + (b + pos) @ W_Q[h]``
    (``pos``: a shortformer's positional embedding, queries and keys only)::

        q_h(y) = (w * center(y) / s(y)) @ W_Q[h] + K_h
        q_h(x - c) = K_h + ( s(x) (q_h(x) - K_h) - (w * center(c)) @ W_Q[h] ) / s(x - c)

    and ``s(x - c)^2 = mean(center(x)^2) - 2 mean(center(x) c) + mean(c^2) - mean(c)^2 (centering norms) + eps``.
    So each head needs four reductions of its correction ``c_h`` and one ``[d_model, d_head]`` projection of it:
    no copy of the residual stream per head, and nothing recomputed for the heads' shared part. Without a norm,
    ``q_h(x - c) = q_h(x) - c @ W_Q[h]``. (Equal to TransformerLens's split q/k/v inputs; the tests compare with
    them.)
    """

    def __init__(self, model: HookedTransformer, layer: int, x: Float[Tensor, "rows pos d_model"],
                 pos_embed: Optional[Tensor], n: int, positions: slice = slice(None),
                 heads: Optional[list[int]] = None):
        from circuitlab.circuits.eap import norm_of

        self.model, self.layer, self.n, self.positions = model, layer, n, positions  # x holds these positions
        # the heads whose inputs are corrected (the corrections come in this order); default: every head
        self.heads = None if heads is None or list(heads) == list(range(model.cfg.n_heads)) else list(heads)
        self.norm = norm_of(model, layer)  # None, or what it does: ("center", "weight")
        self.attn, self.ln = model.blocks[layer].attn, model.blocks[layer].ln1
        self.pos_embed = pos_embed
        if self.norm is not None:
            self.centered = x - x.mean(-1, keepdim=True) if "center" in self.norm else x
            self.sq = self.centered.pow(2).mean(-1)  # [rows, pos]
            self.scale = (self.sq + self.ln.eps).sqrt()

    def hook(self, letter: str, correction: Callable[[], Optional[Tensor]]):
        def hook(act: Float[Tensor, "rows pos head d_head"], hook=None) -> Tensor:
            c = correction()  # [n, head, batch, pos, d_model] or None
            if c is None:
                return act
            c = c[:, :, :, self.positions].to(act.dtype)
            if self.heads is None:
                return self._apply(letter, act, c)
            out = act.clone()
            out[:, :, self.heads] = self._apply(letter, act[:, :, self.heads], c)
            return out
        return hook

    def _apply(self, letter: str, act: Float[Tensor, "rows pos head d_head"],
               c: Float[Tensor, "n head batch pos d_model"]) -> Float[Tensor, "rows pos head d_head"]:
        W = getattr(self.attn, f"W_{letter.upper()}")  # [head, d_model, d_head] (key/value heads ungrouped)
        if self.heads is not None:
            W = W[self.heads]
        n, _, B, p, d = c.shape

        def as_act(t: Tensor) -> Tensor:  # [n, head, batch * pos, e] -> act's layout [(n batch), pos, head, e]
            return einops.rearrange(t, "n h (b p) e -> (n b) p h e", b=B)

        if self.norm is None:
            return act - as_act(torch.matmul(c.flatten(2, 3), W))
        norm, ln = self.norm, self.ln
        Ww = W * ln.w[None, :, None] if "weight" in norm else W
        proj = torch.matmul(c.flatten(2, 3), Ww)  # [n, head, batch * pos, d_head]
        centered = self.centered.view(n, 1, B, p, d)
        cross = (c * centered).sum(-1) / d  # mean(center(x) * c_h): [n, head, batch, pos]
        var = self.sq.view(n, 1, B, p) - 2 * cross + torch.linalg.vector_norm(c, dim=-1).pow(2) / d
        if "center" in norm:
            mean_c = c.mean(-1)  # [n, head, batch, pos]
            var = var - mean_c.pow(2)
            proj = proj - mean_c.flatten(2)[..., None] * Ww.sum(1)[None, :, None, :]
        new_scale = einops.rearrange((var + ln.eps).sqrt(), "n h b p -> (n b) p h")[..., None]
        K = getattr(self.attn, f"b_{letter.upper()}")  # [head, d_head]
        if self.heads is not None:
            K = K[self.heads]
        if "center" in norm and "weight" in norm:  # LayerNorm's bias b
            K = K + einops.einsum(ln.b, W, "d, h d e -> h e")
        K = K[None, None]  # [1, 1, head, d_head]
        if self.pos_embed is not None and letter in "qk":  # a shortformer's positions: [batch, pos] per mask
            pos = einops.einsum(self.pos_embed, W, "b p d, h d e -> b p h e")
            K = einops.repeat(pos, "b p h e -> (n b) p h e", n=self.n) + K
        scale = self.scale[..., None, None]
        return K + (scale * (act - K) - as_act(proj)) / new_scale


def setup_patcher(model: ModelLike, clean_tokens: Prompts, corrupted_tokens: Prompts, metric, *, ablation: str,
           max_memory: int, what: str, kl_pos=-1, with_kl: bool = False):
    """The model, token tensors and an :class:`EdgePatcher` reading ``metric`` (KL to the clean run when None),
    plus the KL as a second metric with ``with_kl``."""
    model = as_model(model)
    Graph.from_model(model)  # an unsupported architecture is named before any run
    clean_t, corrupted_t = check_prompt_pair(model, clean_tokens, corrupted_tokens, what)
    check_ablation(ablation)
    kl = None
    if metric is None or with_kl:
        kl = KLDivergence(_clean_logits_at(model, clean_t, kl_pos), pos=kl_pos)
    metrics = [kl if metric is None else metric] + ([kl] if with_kl and metric is not None else [])
    patcher = EdgePatcher(model, clean_t, corrupted_t, metrics, ablation=ablation, max_memory=max_memory)
    return model, clean_t, patcher


def _clean_logits_at(model: HookedTransformer, tokens: Tensor, pos) -> Tensor:
    """The clean run's logits at ``pos`` (one per prompt), ``[batch, 1, d_vocab]``: the KL metric's reference."""
    from circuitlab.metrics import resolve_positions, select_logits

    with torch.no_grad():
        logits = model(tokens)
    return select_logits(logits, resolve_positions(pos, tokens.shape[0], tokens.shape[1]), None)


def patch_edges(
    model: ModelLike,
    clean_tokens: Prompts,
    corrupted_tokens: Prompts,
    removed: Masks,
    metric: Optional[Metric] = None,
    *,
    ablation: str = "corrupted",
    max_memory: int = DEFAULT_MAX_MEMORY,
    progress: bool = False,
    executor: Any = None,
) -> Float[Tensor, " mask"]:
    """The metric with each set of edges removed: exact edge patching, many edge sets per forward pass.

    Args:
        model: a HookedTransformer the circuit graph supports, or a name for :func:`circuitlab.load_model`.
        clean_tokens, corrupted_tokens: prompt pairs of identical shape.
        removed: the edge sets, one per evaluation: a list of edge collections (``("L0H1", "L1H2.k")`` pairs,
            ``"L0H1 -> L1H2.k"`` strings, Circuits), or a boolean tensor ``[n_masks, n_edges]`` in the graph's
            edge order (``True`` = removed).
        metric: a metric of :mod:`circuitlab.metrics` (only the logits it reads are computed) or any callable on
            logits ``[batch, pos, d_vocab]``; default: :class:`~circuitlab.metrics.KLDivergence` from the clean
            run's last-position predictions.
        ablation: what a removed edge carries instead: ``"corrupted"``, ``"mean"`` or ``"zero"`` (module docstring).
        max_memory: rough bound in bytes on the activations one batched pass holds.
        progress: show a progress bar over the passes.
        executor: ``None`` (this process), ``"ray"``, or an executor of :mod:`circuitlab.distributed`: the edge
            sets are shared out in blocks among workers that each hold a model replica.

    Returns:
        ``[n_masks]`` float64 metric values.
    """
    return _sharded_patch_edges(model, clean_tokens, corrupted_tokens, removed, metric, ablation=ablation,
                                max_memory=max_memory, progress=progress, executor=executor)


def _patch_edges_shard(model: ModelLike, clean_tokens: Prompts, corrupted_tokens: Prompts, removed: Masks,
                       metric: Optional[Metric] = None, *, ablation: str = "corrupted",
                       max_memory: int = DEFAULT_MAX_MEMORY, progress: bool = False) -> Float[Tensor, " mask"]:
    """:func:`patch_edges` as one shard of all its edge sets: the call in this process."""
    model, _, patcher = setup_patcher(model, clean_tokens, corrupted_tokens, metric, ablation=ablation,
                               max_memory=max_memory, what="edge patching")
    values = patcher.run(patcher.as_masks(removed), progress=progress)[:, 0]
    check_finite(model, patcher.clean_t, "the patched metric values", values)
    return values


__all__ = ["EdgePatcher", "patch_edges", "ABLATIONS"]


# ---------------------------------------------------------------------------------------------------------
# Sharding (the executor contract, circuitlab.engine.executor): split the edge sets into the passes one process
# would run, run blocks of passes with _run_passes, gather by concatenation. One process is one shard: the plain
# call (_patch_edges_shard), on the caller's model, its passes planned where they run.
# ---------------------------------------------------------------------------------------------------------

def _sharded_patch_edges(model: ModelLike, clean_tokens: Prompts, corrupted_tokens: Prompts, removed: Masks,
                         metric: Optional[Metric], *, ablation: str, max_memory: int, progress: bool,
                         executor: Any) -> Float[Tensor, " mask"]:
    """:func:`patch_edges` on ``executor``: with several workers, its passes (the edge sets in the batches one
    process would run) shared out in contiguous blocks, the values back in order; the same passes, so the same
    numbers, as one process."""
    from circuitlab.engine.executor import as_executor, run_shards, shard_count, split
    from circuitlab.models.identity import shard_source

    loaded = as_model(model)
    ex, owned = as_executor(executor)
    try:
        source = shard_source(model, loaded)
        common = dict(clean_tokens=clean_tokens, corrupted_tokens=corrupted_tokens, metric=metric, ablation=ablation,
                      max_memory=max_memory)
        if ex.workers == 1:  # one worker (this process, by default): the whole call is its one shard
            parts, _ = run_shards(ex, source, _patch_edges_shard,
                                  [dict(common, removed=removed, progress=progress and executor is None)])
            return parts[0]
        passes = _plan_passes(loaded, clean_tokens, corrupted_tokens, removed, metric, ablation=ablation,
                              max_memory=max_memory)
        if not passes:  # no edge sets: nothing to share out; the call's empty answer, here
            return _patch_edges_shard(loaded, removed=removed, progress=False, **common)
        blocks = split(passes, shard_count(ex, len(passes), per_worker=2))
        parts, _ = run_shards(ex, source, _run_passes, [dict(common, passes=block) for block in blocks])
    finally:
        if owned:
            ex.close()
    return torch.cat(parts)


def _plan_passes(model: ModelLike, clean_tokens: Prompts, corrupted_tokens: Prompts, removed: Masks,
                 metric: Optional[Metric] = None, *, ablation: str = "corrupted",
                 max_memory: int = DEFAULT_MAX_MEMORY) -> list[Bool[Tensor, "n sender receiver"]]:
    """The edge sets of :func:`patch_edges` as masks, cut into the batches its passes take (for sharing them out
    among workers that then run exactly these passes, :func:`_run_passes`)."""
    model, _, patcher = setup_patcher(model, clean_tokens, corrupted_tokens, metric, ablation=ablation,
                               max_memory=max_memory, what="edge patching")
    masks = patcher.as_masks(removed)
    step = patcher.masks_per_pass(patcher.start_layer(masks))
    return [masks[i:i + step] for i in range(0, masks.shape[0], step)]


def _run_passes(model: ModelLike, clean_tokens: Prompts, corrupted_tokens: Prompts,
                passes: Sequence[Bool[Tensor, "n sender receiver"]], metric: Optional[Metric] = None, *,
                ablation: str = "corrupted", max_memory: int = DEFAULT_MAX_MEMORY) -> Float[Tensor, " mask"]:
    """The metric for every mask of ``passes`` (from :func:`_plan_passes`), each pass as one batched forward pass:
    the same passes, so the same numbers, as :func:`patch_edges` in one process."""
    model, _, patcher = setup_patcher(model, clean_tokens, corrupted_tokens, metric, ablation=ablation,
                               max_memory=max_memory, what="edge patching")
    values = torch.cat([patcher.run(p)[:, 0] for p in passes])  # a pass's masks fit in one pass by construction
    check_finite(model, patcher.clean_t, "the patched metric values", values)
    return values
