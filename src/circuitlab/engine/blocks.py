"""The block runner: run a model from layer ``L`` with some states replaced, for many rows at once.

Activation patching (:mod:`circuitlab.patching.exact`), edge patching and ACDC (:mod:`circuitlab.circuits.patch`)
and causal tracing (:mod:`circuitlab.tracing`) all ask the same question many times: *what does the model output
when this state is replaced?* Each answer differs from one cached *base* run (the corrupted prompt, the noised
prompt, the clean prompt) only from some layer and some position on. :class:`BlockRunner` answers many of them in
one batched pass, exactly (TransformerLens's own blocks, the same arithmetic as a full forward pass):

1. **Many rows at once.** Each answer is a *group* of ``batch`` rows (the base run's batch) of one larger batch.
   Groups are cut into passes that fit ``max_memory`` (:meth:`BlockRunner.chunks`, one meaning of the bound:
   :func:`circuitlab.core.check_max_memory`).
2. **Start at a layer.** Before the first layer where a group replaces anything it equals the base run, so its
   rows join the batch there, from the cached residual stream (:meth:`BlockRunner.run`: the batch grows layer by
   layer like a staircase and every block runs once per pass).
3. **Replace named states.** A group replaces a hook's value in its own rows: :class:`Replace` names the
   TransformerLens hook (``blocks.3.attn.hook_z``, ``blocks.5.hook_mlp_out``...), the rows, and a function of
   their current value. The analysis decides what a replacement means (patching's site table, a restored clean
   state, an edge's corrected input); the runner only applies it.
4. **Reuse keys and values of unchanged positions.** With causal attention a replacement at position ``p`` changes
   nothing before ``p``, so a pass may compute positions ``start...`` only and read the earlier positions' keys and
   values from the base run (TransformerLens's key/value cache entries). When only the last position is read,
   the last block runs on that position alone for the rows it replaces nothing in (:meth:`BlockRunner.last_block`).
5. **Read only what the metric reads.** A declarative metric (:mod:`circuitlab.metrics`) declares the positions
   and vocabulary columns it reads; :meth:`BlockRunner.read` applies the final norm and unembedding to those alone.
6. **Copy no weights.** TransformerLens's gated MLP (Gemma, Llama, SmolLM2) computes ``F.linear(x, W.T.contiguous())``,
   copying its three weight matrices on every call (for a last-position pass of a few rows, the copies cost more
   than the products). The runner's blocks run it as ``x @ W`` instead (:func:`copy_free_mlp`): the same hooks,
   the same values (bit for bit on CPU float32: tests/test_perf_engine.py), no copy.

**The one safety rule.** Reusing cached keys and values is exact only where the key/value cache holds exactly
what the attention would compute, so fact 4 runs only when *both* hold:

- the model is a ``HookedTransformer`` whose every configuration field that shapes attention has a value the
  test-suite verifies (:data:`KV_REUSE_VERIFIED`: an allowlist, not a denylist; :func:`kv_reuse_blockers`), and
- a start-up self-check against the plain forward pass passes (:meth:`BlockRunner.self_check`: each block, run on
  the base run's last position from the cached keys and values of the earlier ones, reproduces the base run
  within :data:`SELF_CHECK_TOLERANCE`; so does the last-block shortcut where it is used).

Otherwise every position is computed. :attr:`BlockRunner.kv_reuse`, :attr:`BlockRunner.last_only` and
:attr:`BlockRunner.why` record the decision and its reason; each analysis puts them in ``Result.meta["engine"]``.

**Adding a verified configuration.** Add the field's new value to :data:`KV_REUSE_VERIFIED` *together with* a
random model of that shape whose fast results equal the plain path and TransformerLens's
(:func:`circuitlab.testing.architecture_config`: ``ARCHITECTURES``, which every analysis is tested on, or
``ENGINE_ARCHITECTURES``, tested by the engines only; tests/test_patching.py, tests/test_tracing.py,
tests/test_bridges.py), and a real-model test where one exists (tests/test_real_models.py). If the architecture's
key/value cache holds something other than what ``hook_k``/``hook_v`` hold, convert it in
:meth:`BlockRunner.cached_keys` (Gemma-3's keys are normalised per head by ``k_norm`` after ``hook_k``); the
self-check fails until that is right.

**How an analysis uses it** (activation patching and causal tracing are built this way)::

    _, cache = model.run_with_cache(base_tokens, names_filter=lambda n: n in BlockRunner.hook_names(model))
    runner = BlockRunner.from_cache(model, cache, last_position=True)   # the rule runs here: runner.why
    start = first_changed_position if runner.kv_reuse else 0
    max_rows = max(batch, max_memory // runner.row_bytes())
    for part in runner.chunks(n_groups, max_rows, start):               # groups per pass under max_memory
        # enter[i]: the layer group i joins at; join(layer, groups, rows): their entering stream (e.g. patched);
        # replacements(layer, joined): [Replace(hook, rows, fn), ...] inside block `layer`
        final = runner.run(start, enter[part], join, replacements)      # [groups * batch, positions, d_model]
        x = gather_positions(final, positions, n, offset=seq_len - final.shape[1])
        logits = runner.read(x, n, columns)                             # [n, batch, k, columns]

Edge patching (:mod:`circuitlab.circuits.patch`) runs its blocks on the runner too (:meth:`BlockRunner.block`,
each receiver's input corrected in closed form by hooks), takes its rule for its last-block shortcut (whose keys
carry those corrections, so it computes them itself) and reads logits with :func:`read_logits`.

The engine imports nothing from the analyses (it is layer 4, below them).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry
from transformer_lens.components.mlps.gated_mlp import GatedMLP

from circuitlab.core import final_norm, readout, row_bytes, softcap

#: The configurations under which reusing cached keys and values (and the last-block shortcut) is verified by the
#: test-suite: every field of ``model.cfg`` that shapes how attention computes and caches keys and values, with
#: the values the tests cover (``circuitlab.testing.ARCHITECTURES``: GPT-2, attention-only, Pythia-style rotary
#: with parallel attention and MLP, Llama-style RMSNorm, rotary and grouped-query attention, Gemma-3-style
#: per-head query/key norms, sandwich norms, local attention windows and a local rotary base; shortformer
#: positions; attention-only without LayerNorm; the HookedTransformer twins of ``circuitlab.testing.random_bridge``,
#: converted by TransformerLens from GPT-2, GPT-NeoX and Llama checkpoints; and gemma-3-270m itself).
#: A model with any other value takes the exact path without the shortcut. Extend this only together with a test.
KV_REUSE_VERIFIED: dict[str, tuple] = {
    "attention_dir": ("causal",),
    "positional_embedding_type": ("standard", "rotary", "shortformer"),
    "normalization_type": (None, "LN", "LNPre", "RMS", "RMSPre"),
    "original_architecture": (None, "GPT2LMHeadModel", "GPTNeoXForCausalLM", "LlamaForCausalLM",
                              "Gemma3ForCausalLM"),
    "use_qk_norm": (False, True),
    "clip_qkv": (None,),
    "use_attn_in": (False,),
    "use_split_qkv_input": (False,),
    "use_normalization_before_and_after": (False, True),
    "ungroup_grouped_query_attention": (False,),
    "attn_types": (None, "local/global"),
    "use_local_attn": (False, True),
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

#: The self-check's one tolerance: a block run from cached keys and values may differ from the plain forward pass
#: by at most ``SELF_CHECK_TOLERANCE * (1 + max |expected|)`` (32- and 64-bit floats; a 16-bit model, whose
#: rounding is about 2**13 times coarser, gets 100 times this).
SELF_CHECK_TOLERANCE = 1e-4


def _field_value(cfg, field: str):
    """A configuration field as :data:`KV_REUSE_VERIFIED` lists it (``attn_types``: ``None`` or the kinds used)."""
    value = getattr(cfg, field, None)
    if field == "attn_types" and value is not None:
        kinds = set(value)
        return "local/global" if kinds <= {"local", "global"} else repr(sorted(kinds))
    return value


def kv_reuse_blockers(model) -> list[str]:
    """Why cached keys and values may not be reused on ``model`` (empty: a verified configuration).

    See :data:`KV_REUSE_VERIFIED`. Only a ``HookedTransformer`` qualifies: the shortcut runs its blocks one at a
    time with TransformerLens's key/value cache entries.
    """
    if not isinstance(model, HookedTransformer):
        return [f"the model is a {type(model).__name__}, not a HookedTransformer, so it is run whole with hooks"]
    out = []
    for field, verified in KV_REUSE_VERIFIED.items():
        value = _field_value(model.cfg, field)
        if value not in verified:
            out.append(f"cfg.{field}={value!r} is not a verified value ({', '.join(map(repr, verified))})")
    return out


def self_check_tolerance(dtype: torch.dtype) -> float:
    """:data:`SELF_CHECK_TOLERANCE` for activations of ``dtype`` (100 times it for 16-bit floats)."""
    return SELF_CHECK_TOLERANCE if dtype in (torch.float32, torch.float64) else 100 * SELF_CHECK_TOLERANCE


def _copy_free_gated_forward(mlp: GatedMLP) -> Callable[[Tensor], Tensor]:
    """TransformerLens's ``GatedMLP.forward`` with ``x @ W`` for ``F.linear(x, W.T.contiguous())``: same hooks."""
    def forward(x: Tensor) -> Tensor:
        if mlp.W_gate.device != x.device:
            x = x.to(mlp.W_gate.device)
        pre_act = mlp.hook_pre(torch.matmul(x, mlp.W_gate))  # [batch, pos, d_mlp]
        pre_linear = mlp.hook_pre_linear(torch.matmul(x, mlp.W_in))
        post_act = mlp.hook_post(mlp.act_fn(pre_act) * pre_linear + mlp.b_in)
        return torch.matmul(post_act, mlp.W_out) + mlp.b_out
    return forward


@contextlib.contextmanager
def copy_free_mlp(block: torch.nn.Module):
    """Within the block, a TransformerLens ``GatedMLP`` runs without copying its weights (fact 6 above); any
    other MLP, or one whose ``forward`` was already replaced on the instance, runs as it is."""
    mlp = getattr(block, "mlp", None)
    plain = (type(mlp) is GatedMLP and "forward" not in vars(mlp)
             and not (mlp.cfg.is_layer_norm_activation() and getattr(mlp, "ln", None) is not None))
    if not plain:
        yield
        return
    mlp.forward = _copy_free_gated_forward(mlp)
    try:
        yield
    finally:
        del mlp.forward


@dataclass(frozen=True)
class Replace:
    """Replace a hook's value in some rows of a batched pass: ``act[rows] = fn(act[rows])``.

    ``hook`` is a TransformerLens hook name inside a block (``blocks.{L}.attn.hook_z``); ``rows`` a slice of the
    pass's batch rows (group ``i`` owns rows ``i * batch ... (i + 1) * batch``); ``fn`` receives those rows'
    current value (a view; positions ``start...`` of the pass) and returns the new value (it may edit the view in
    place and return it).
    """

    hook: str
    rows: slice
    fn: Callable[[Float[Tensor, "rows ..."]], Float[Tensor, "rows ..."]]


Join = Callable[[int, list[int], Float[Tensor, "rows pos d_model"]], Float[Tensor, "rows pos d_model"]]
Replacements = Callable[[int, int], Sequence[Replace]]


class BlockRunner:
    """A base run's residual stream, keys and values, and the batched staircase pass over groups of rows.

    Args:
        model: a HookedTransformer.
        resid: the base run's residual stream entering each block, then after the last one: ``n_layers + 1``
            tensors ``[batch, pos, d_model]`` (``blocks.{L}.hook_resid_pre``, last ``hook_resid_post``).
        keys, values: the base run's ``attn.hook_k`` / ``attn.hook_v`` per layer ``[batch, pos, kv_head, d_head]``
            (what the hooks hold; :meth:`cached_keys` turns them into what the key/value cache holds).
        pos_embed: a shortformer's positional embedding ``[batch, pos, d_model]`` (added to queries and keys).
        reuse: whether key/value reuse is wanted at all (``False``: every position is computed).
        last_position: the caller reads the last position only, so the last-block shortcut may run.

    Attributes:
        kv_reuse, last_only, why: the safety rule's decision and its reason (module docstring).
    """

    def __init__(self, model: HookedTransformer, resid: Sequence[Float[Tensor, "batch pos d_model"]],
                 keys: Sequence[Float[Tensor, "batch pos kv_head d_head"]],
                 values: Sequence[Float[Tensor, "batch pos kv_head d_head"]],
                 pos_embed: Optional[Float[Tensor, "batch pos d_model"]] = None, *, reuse: bool = True,
                 last_position: bool = False):
        self.model, self.cfg = model, model.cfg
        self.resid = list(resid)
        self.batch, self.seq_len = self.resid[0].shape[:2]
        self.pos_embed = pos_embed
        self.keys = [self.cached_keys(layer, k) for layer, k in enumerate(keys)]
        self.values = list(values)
        self.kv_reuse = self.last_only = False
        if not reuse:
            self.why = "key/value reuse not requested: every position is computed"
        elif blockers := kv_reuse_blockers(model):
            self.why = "cached keys/values not reused: " + "; ".join(blockers)
        else:
            self.kv_reuse, self.last_only = True, bool(last_position)
            failed = self.self_check()
            if failed:
                self.kv_reuse = self.last_only = False
                self.why = f"cached keys/values not reused: the start-up self-check failed ({failed})"
            else:
                self.why = "verified configuration (see KV_REUSE_VERIFIED); start-up self-check passed"

    # -- building one --------------------------------------------------------------------------------------------
    @staticmethod
    def hook_names(model: HookedTransformer) -> set[str]:
        """The hooks of a base run that :meth:`from_cache` reads."""
        n = model.cfg.n_layers
        names = {f"blocks.{layer}.hook_resid_pre" for layer in range(n)} | {f"blocks.{n - 1}.hook_resid_post"}
        names |= {f"blocks.{layer}.attn.hook_{kv}" for layer in range(n) for kv in "kv"}
        if model.cfg.positional_embedding_type == "shortformer":
            names.add("hook_pos_embed")
        return names

    @classmethod
    def from_cache(cls, model: HookedTransformer, cache, **kwargs) -> "BlockRunner":
        """A runner on a base run cached with (at least) :meth:`hook_names`; ``kwargs`` as for the constructor."""
        n = model.cfg.n_layers
        resid = [cache[f"blocks.{layer}.hook_resid_pre"] for layer in range(n)]
        resid.append(cache[f"blocks.{n - 1}.hook_resid_post"])
        keys = [cache[f"blocks.{layer}.attn.hook_k"] for layer in range(n)]
        values = [cache[f"blocks.{layer}.attn.hook_v"] for layer in range(n)]
        pos_embed = cache["hook_pos_embed"] if model.cfg.positional_embedding_type == "shortformer" else None
        return cls(model, resid, keys, values, pos_embed, **kwargs)

    def cached_keys(self, layer: int, keys: Float[Tensor, "batch pos kv_head d_head"]
                    ) -> Float[Tensor, "batch pos kv_head d_head"]:
        """``attn.hook_k`` as TransformerLens's key/value cache holds it: after the per-head ``k_norm`` where the
        model has query/key norms (Gemma-3: ``hook_k`` fires before the norm, the cache is filled after it)."""
        attn = self.model.blocks[layer].attn
        if self.cfg.use_qk_norm and getattr(attn, "k_norm", None) is not None:
            with torch.no_grad():  # the norm acts on each head's d_head vector, as in the attention's forward
                return attn.k_norm(keys.reshape(-1, keys.shape[-1])).reshape(keys.shape)
        return keys

    # -- the safety rule ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def self_check(self) -> Optional[str]:
        """Check, on the base run, that the cached keys/values reproduce it; the reason if not, else None.

        Each block is run on the last position of the base run with the cached keys and values of the earlier
        positions, and must give the base run's output there (within :data:`SELF_CHECK_TOLERANCE`); with
        :attr:`last_only`, so must the last-block shortcut. Costs about one block per layer on one position.
        """
        n, s = self.cfg.n_layers, self.seq_len - 1
        if s < 1:
            return None  # one position: nothing is ever read from the cache
        tol = self_check_tolerance(self.resid[0].dtype)

        def differs(got: Tensor, want: Tensor) -> Optional[float]:
            err = float((got.float() - want.float()).abs().max())
            return err if not err <= tol * (1 + float(want.float().abs().max())) else None

        for layer in range(n):
            got = self.block(layer, self.resid[layer][:, s:], s)
            err = differs(got, self.resid[layer + 1][:, s:])
            if err is not None:
                return f"block {layer} from cached keys/values differs from the base run by {err:.3g}"
        if self.last_only:
            got = self.last_block(self.resid[n - 1], [], 0, 0)
            err = differs(got, self.resid[n][:, -1:])
            if err is not None:
                return f"the last-block shortcut differs from the base run by {err:.3g}"
        return None

    def describe(self) -> dict:
        """The decision, for ``Result.meta["engine"]``."""
        return {"kv_reuse": self.kv_reuse, "last_block": self.last_only, "why": self.why}

    # -- memory --------------------------------------------------------------------------------------------------
    def row_bytes(self, logits: int = 0) -> int:
        """Rough bytes one row of a pass over every position holds (:func:`circuitlab.core.row_bytes`)."""
        return row_bytes(self.model, self.seq_len, logits=logits)

    def chunks(self, n_groups: int, max_rows: int, start: int = 0, fast: bool = True) -> list[slice]:
        """:func:`group_chunks` for this runner's batch and length."""
        return group_chunks(n_groups, self.batch, self.seq_len, max_rows, start, fast)

    # -- running blocks ----------------------------------------------------------------------------------------
    def base(self, layer: int, start: int, n_groups: int) -> Float[Tensor, "rows pos d_model"]:
        """The base run's residual stream entering block ``layer`` (``n_layers``: after the last block) at
        positions ``start...``, once per group (a fresh tensor)."""
        return einops.repeat(self.resid[layer][:, start:], "b p d -> (n b) p d", n=n_groups).clone()

    def entry(self, layer: int, start: int, rows: int) -> Optional[TransformerLensKeyValueCacheEntry]:
        """The base run's keys and values of positions before ``start`` for ``rows`` rows (a multiple of the
        batch), as a frozen key/value cache entry; None when ``start`` is 0."""
        if start == 0:
            return None
        keys, vals = (einops.repeat(x[:, :start], "b p h d -> (n b) p h d", n=rows // self.batch)
                      for x in (self.keys[layer], self.values[layer]))
        return TransformerLensKeyValueCacheEntry(keys, vals, frozen=True)

    def _pos_embed(self, start: int, rows: int, stop: Optional[int] = None) -> Optional[Tensor]:
        if self.pos_embed is None:
            return None
        return einops.repeat(self.pos_embed[:, start:stop], "b p d -> (n b) p d", n=rows // self.batch)

    def block(self, layer: int, resid: Float[Tensor, "rows pos d_model"], start: int,
              hooks: Sequence = ()) -> Float[Tensor, "rows pos d_model"]:
        """Block ``layer`` on positions ``start...`` (``resid`` holds them), reading the keys and values of the
        earlier positions from the base run; ``hooks`` (TransformerLens ``(name, fn)`` pairs) run inside it."""
        rows = resid.shape[0]
        entry = self.entry(layer, start, rows)
        pos_embed = self._pos_embed(start, rows)
        block = self.model.blocks[layer]
        with copy_free_mlp(block), (self.model.hooks(fwd_hooks=list(hooks)) if hooks else contextlib.nullcontext()):
            return block(resid, shortformer_pos_embed=pos_embed, past_kv_cache_entry=entry)

    def last_block(self, resid: Float[Tensor, "rows pos d_model"], hooks: Sequence, hooked: int,
                   start: int) -> Float[Tensor, "rows 1 d_model"]:
        """The last block's output at the last position only (all a last-position metric reads).

        Rows without a replacement in this block need, from the earlier positions, only their keys and values;
        those rows run the block on the last position alone. The last ``hooked`` rows carry a replacement in this
        block (``hooks``) and run it whole.
        """
        block, free, layer = self.model.blocks[-1], resid.shape[0] - hooked, self.cfg.n_layers - 1
        with copy_free_mlp(block):
            return self._last_block(block, layer, resid, hooks, hooked, free, start)

    def _last_block(self, block, layer: int, resid: Tensor, hooks: Sequence, hooked: int, free: int,
                    start: int) -> Tensor:
        model, outs = self.model, []
        if free:
            pe = self._pos_embed(start, free)
            prefix = self.entry(layer, start, free)
            normed = block.ln1(resid[:free, :-1])
            keys_in = normed if pe is None else normed + pe[:, :-1]
            _, k, v = block.attn.calculate_qkv_matrices(keys_in[:, :1], keys_in, normed)  # (a 1-position query)
            if prefix is not None:
                k, v = torch.cat([prefix.past_keys, k], dim=1), torch.cat([prefix.past_values, v], dim=1)
            outs.append(block(resid[:free, -1:], shortformer_pos_embed=None if pe is None else pe[:, -1:],
                              past_kv_cache_entry=TransformerLensKeyValueCacheEntry(k, v, frozen=True)))
        if hooked:
            pe = self._pos_embed(start, hooked)
            prefix = self.entry(layer, start, hooked)
            with model.hooks(fwd_hooks=list(hooks)):
                outs.append(block(resid[free:], shortformer_pos_embed=pe, past_kv_cache_entry=prefix)[:, -1:])
        return torch.cat(outs)

    @staticmethod
    def hooks_of(replacements: Sequence[Replace]) -> list:
        """TransformerLens hooks applying ``replacements`` (one hook per name, each replacement in turn)."""
        by_name: dict[str, list[Replace]] = {}
        for r in replacements:
            by_name.setdefault(r.hook, []).append(r)

        def hook_for(items: list[Replace]):
            def hook(act: Tensor, hook=None) -> Tensor:  # in place: no gradients, and the tensor is this pass's own
                for r in items:
                    view = act[r.rows]
                    new = r.fn(view)
                    if new is not view:
                        act[r.rows] = new
                return act
            return hook

        return [(name, hook_for(items)) for name, items in by_name.items()]

    @torch.no_grad()
    def run(self, start: int, enter: Sequence[int], join: Optional[Join] = None,
            replacements: Optional[Replacements] = None) -> Float[Tensor, "rows pos d_model"]:
        """The final residual stream of every group, computing positions ``start...`` (a staircase pass).

        Args:
            start: the first position computed (``0`` unless :attr:`kv_reuse`; every group must leave the earlier
                positions unchanged).
            enter: for each group, sorted ascending, the layer whose input its rows join at (``n_layers``: the
                final residual stream); before it, the group equals the base run.
            join: ``join(layer, groups, rows) -> rows``: the rows of ``groups`` (indices into ``enter``) joining
                at ``layer``, given the base run's stream there (:meth:`base`); e.g. a patched residual stream.
                Default: the base stream unchanged.
            replacements: ``replacements(layer, joined) -> [Replace, ...]``: what block ``layer`` replaces, when
                the first ``joined`` groups are in the batch (group ``i``: rows ``i * batch ...``).

        Returns:
            ``[n_groups * batch, seq_len - start, d_model]``; with :attr:`last_only`, ``[n_groups * batch, 1,
            d_model]`` (the last position).
        """
        n = self.cfg.n_layers
        enter = list(enter)
        if not enter:
            raise ValueError("BlockRunner.run: give at least one group")
        if any(a > b for a, b in zip(enter, enter[1:])):
            raise ValueError("BlockRunner.run: groups must be sorted by the layer they enter at")
        resid: Optional[Tensor] = None
        joined = 0
        for layer in range(enter[0], n + 1):
            new = [i for i in range(joined, len(enter)) if enter[i] == layer]
            if new and layer < n:
                rows = self.base(layer, start, len(new))
                rows = rows if join is None else join(layer, new, rows)
                resid = rows if resid is None else torch.cat([resid, rows])
                joined += len(new)
            if layer == n:
                break
            todo = list(replacements(layer, joined)) if replacements is not None else []
            if layer == n - 1 and self.last_only and resid.shape[1] > 1:
                hooked = resid.shape[0] - min((r.rows.start or 0 for r in todo), default=resid.shape[0])
                lo = resid.shape[0] - hooked
                shifted = [Replace(r.hook, slice(r.rows.start - lo, None if r.rows.stop is None else r.rows.stop - lo),
                                   r.fn) for r in todo]
                resid = self.last_block(resid, self.hooks_of(shifted), hooked, start)
                break
            resid = self.block(layer, resid, start, self.hooks_of(todo))
        late = [i for i in range(joined, len(enter)) if enter[i] == n]  # groups replacing the final stream only
        if late:
            rows = self.base(n, start, len(late))
            rows = rows if join is None else join(n, late, rows)
            if self.last_only and rows.shape[1] > 1:
                rows = rows[:, -1:]
            resid = rows if resid is None else torch.cat([resid, rows])
        return resid

    # -- reading logits ----------------------------------------------------------------------------------------
    def read(self, resid: Float[Tensor, "rows k d_model"], n: int, columns: Optional[Int[Tensor, "batch c"]] = None
             ) -> Float[Tensor, "n batch k c"]:
        """Logits of ``n`` groups from the final residual stream at the positions a metric reads (``resid``
        ``[n * batch, k, d_model]``): the final norm, the unembedding of ``columns`` only (each prompt's own;
        ``None``: every column) and the output soft cap, exactly as the model's forward computes them."""
        return read_logits(self.model, resid, n, self.batch, columns)


def group_chunks(n_groups: int, batch: int, seq_len: int, max_rows: int, start: int = 0,
                 fast: bool = True) -> list[slice]:
    """``range(n_groups)`` (groups of ``batch`` rows) cut into passes of equal size, each of at most ``max_rows``
    rows over every position (the rows ``max_memory`` allows, e.g. ``max_memory // row_bytes``); a pass over
    positions ``start...`` holds shorter rows, so more of them. ``fast=False``: one group per pass."""
    if n_groups == 0:
        return []
    fit = max_rows * seq_len // ((seq_len - start) * batch)
    n_chunks = n_groups if not fast else math.ceil(n_groups / max(1, fit))
    per_chunk = math.ceil(n_groups / n_chunks)
    return [slice(i, min(i + per_chunk, n_groups)) for i in range(0, n_groups, per_chunk)]


def gather_positions(resid: Float[Tensor, "rows pos d_model"], positions: Int[Tensor, "batch k"], n: int,
                     offset: int = 0) -> Float[Tensor, "rows k d_model"]:
    """Positions ``positions`` (each prompt's own; ``resid`` holds positions ``offset...``) of ``n`` groups' rows."""
    rel = einops.repeat((positions - offset).to(resid.device), "b k -> (n b) k d", n=n, d=resid.shape[-1])
    return resid.gather(1, rel)


def read_logits(model: HookedTransformer, x: Float[Tensor, "rows k d_model"], n: int, batch: int,
                columns: Optional[Int[Tensor, "batch c"]] = None) -> Float[Tensor, "n batch k c"]:
    """Logits of ``n`` groups of ``batch`` rows at some positions ``x`` (the final residual stream there):
    every column, or each prompt's own ``columns``; final norm, unembedding and soft cap as the model applies them."""
    k = x.shape[1]
    if columns is None:
        return readout(model, x).reshape(n, batch, k, -1)
    x = final_norm(model, x).reshape(n, batch, k, -1)
    cols = columns.to(x.device)  # [batch, c]
    w = model.W_U[:, cols]  # [d_model, batch, c]
    logits = torch.einsum("nbkd,dbc->nbkc", x, w) + model.b_U[cols][None, :, None, :]
    return softcap(logits, model.cfg.output_logits_soft_cap)


__all__ = ["BlockRunner", "Replace", "copy_free_mlp", "KV_REUSE_VERIFIED", "SELF_CHECK_TOLERANCE", "kv_reuse_blockers",
           "self_check_tolerance", "group_chunks", "gather_positions", "read_logits"]
