"""The activation collector: hooks -> rows of activations, for every analysis that reads activations over data.

Probes (:mod:`circuitlab.probing`), TCAV's concept activations (:mod:`circuitlab.concepts.tcav`), neuron
explanations and pages (:mod:`circuitlab.neurons`) and FFN key examples (:func:`circuitlab.ffn.key_examples`) all
run the model over token rows with hooks and keep a little of each activation. They share this module:

- **hooks**: :func:`check_hooks` (hook names and layer numbers, one meaning everywhere) and :func:`check_pool`
  (a pooling name among the caller's);
- **the stop layer**: :func:`stop_layer`: a ``HookedTransformer`` runs no block after the last one a hook reads,
  and never computes logits;
- **batching under** ``max_memory`` (the package's one meaning, :func:`circuitlab.core.check_max_memory`, with
  :func:`circuitlab.core.row_bytes` per row): :func:`batches_by_length` (longest first, padded on the right),
  :func:`same_length_runs` (consecutive rows of one length, no padding) and :func:`stream_batches` (rows in arrival
  order from any iterable, for corpora larger than memory);
- **pooling over spans**: :func:`collect_rows`: one output row per span, the mean of the activations at the
  span's token positions. Spans are whatever the caller gives: the tokens of a word
  (:mod:`circuitlab.probing.align` converts words to spans), a text's tokens without BOS, its last token;
- **per-token activations streamed**: :func:`stream_activations`: each batch's rows with what a reader keeps of the
  hook's activation (a neuron's column, say), for running top-k scans;
- **a disk cache** keyed by the weights' one fingerprint
  (:func:`circuitlab.models.identity.weight_fingerprint`): :class:`DiskCache`.

Decoders are padded on the right, which changes no real token's activation under causal attention; encoders get an
attention mask. A row's activations do not depend on how rows are batched, up to floating-point rounding
(tests check batched against one at a time); the batch plans are deterministic, so equal inputs give equal bits.

    from circuitlab.engine.collect import collect_rows

    rows = collect_rows(model, [[50256, 464, 3797], [50256, 32]], [[(1, 2)], [(1,)]], ["blocks.1.hook_resid_post"])
    rows["blocks.1.hook_resid_post"]    # [2, d_model]: the mean of tokens 1-2 of the first row; token 1 of the second

**A new analysis** that reads activations over data (an SAE's training activations, say) checks its hooks with
:func:`check_hooks`, turns its units (words, texts, tokens) into token rows and spans, and calls
:func:`collect_rows` (pooled rows) or :func:`stream_activations` (per-token reads over a stream); it caches with
:class:`DiskCache` under a key holding :func:`~circuitlab.models.identity.weight_fingerprint`, and shards by cutting
its batch plan among an executor's workers (:mod:`circuitlab.engine.executor`;
:func:`circuitlab.probing.activations.collect` shows how).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence, TypeVar

import torch
from jaxtyping import Float, Int, Shaped
from torch import Tensor

from circuitlab.core import (DEFAULT_MAX_MEMORY, check_layer, model_name, progress_bar, read_cache_entry, row_bytes,
                             shorten, warn_cache_entry, write_cache_entry)
from circuitlab.errors import InputError

T = TypeVar("T")

#: hooks whose activations have no position axis after batch (attention patterns and scores)
NO_POSITIONS = re.compile(r"hook_pattern$|hook_attn_scores$")


# ---------------------------------------------------------------------------------------------------------
# Models, hooks, pooling names, the stop layer
# ---------------------------------------------------------------------------------------------------------

def is_encoder(model: Any) -> bool:
    """Whether ``model`` reads text in both directions (a BERT-style ``HookedEncoder``)."""
    from transformer_lens import HookedEncoder

    return isinstance(model, HookedEncoder) or getattr(model.cfg, "attention_dir", "causal") == "bidirectional"


def default_hooks(model: Any) -> list[str]:
    """The embedding (``blocks.0.hook_resid_pre``) and every block's ``hook_resid_post``: one per layer.
    ``model``: a loaded model or a name (see :func:`~circuitlab.models.loading.as_any_model`)."""
    from circuitlab.models.loading import as_any_model

    return ["blocks.0.hook_resid_pre"] + residual_hooks(as_any_model(model))


def residual_hooks(model: Any) -> list[str]:
    """Every block's residual stream output, ``blocks.{l}.hook_resid_post``."""
    return [f"blocks.{l}.hook_resid_post" for l in range(model.cfg.n_layers)]


def check_hooks(model: Any, hooks: Any, default: Optional[Sequence[str]] = None) -> list[str]:
    """``hooks`` as a list of the model's hook names, each once, each with one vector per token.

    A hook name, a layer number ``l`` (its residual stream output ``blocks.{l}.hook_resid_post``; negative counts
    from the end), or a non-empty list of them; ``None`` gives ``default`` (the caller's defaults; if not given,
    :func:`default_hooks`). Hooks without a position axis (attention patterns and scores) are refused: they hold no
    vector per token to collect.
    """
    if hooks is None:
        return list(default) if default is not None else default_hooks(model)
    if isinstance(hooks, (str, int)) and not isinstance(hooks, bool):
        hooks = [hooks]
    if not isinstance(hooks, Sequence) or isinstance(hooks, bool) or not hooks:
        raise InputError(f"hooks must be a hook name, a layer index, or a non-empty list of them (e.g. "
                         f"'blocks.1.hook_resid_post' or [2, 5, 8]); got {shorten(hooks)}.")
    names = list(model.hook_dict)
    out = []
    for h in hooks:
        if isinstance(h, int) and not isinstance(h, bool):
            h = f"blocks.{check_layer(model, h, what='hooks layer')}.hook_resid_post"
        if not isinstance(h, str):
            raise InputError(f"hooks: {shorten(h)} is neither a hook name nor a layer index.")
        if h not in model.hook_dict:
            close = [n for n in names if n.endswith(h.split(".")[-1])][:4]
            hint = f" Hooks with that ending: {', '.join(close)}." if close else ""
            raise InputError(f"hooks: the model has no hook {shorten(h)}.{hint} See model.hook_dict for every name "
                             "(e.g. blocks.0.hook_resid_post).")
        if NO_POSITIONS.search(h):
            raise InputError(f"hooks: {shorten(h)} holds attention patterns [batch, head, query, key], not one "
                             "vector per "
                             "token, so its activations cannot be pooled over tokens. Probe attention heads through "
                             "attn.hook_z or hook_attn_out.")
        if h in out:
            raise InputError(f"hooks lists {shorten(h)} twice; give each hook once.")
        out.append(h)
    return out


def check_pool(pool: Any, choices: Mapping[str, str]) -> str:
    """``pool`` checked against the caller's poolings ``{name: what it reads}`` (an analysis names its own: a probe
    pools a word's tokens, TCAV a text's)."""
    if not isinstance(pool, str) or pool not in choices:
        ways = " or ".join(f"{name!r} ({meaning})" for name, meaning in choices.items())
        raise InputError(f"pool={shorten(pool)}: use {ways}.")
    return pool


def stop_layer(model: Any, hooks: Sequence[str]) -> Optional[int]:
    """The block after the last one ``hooks`` read, for ``stop_at_layer``: a ``HookedTransformer`` or a
    ``TransformerBridge`` then runs no later block and no unembedding. ``None``: run the whole model (an encoder,
    or a hook after the blocks)."""
    from transformer_lens import HookedTransformer
    from transformer_lens.model_bridge import TransformerBridge

    if not isinstance(model, (HookedTransformer, TransformerBridge)):
        return None
    last = -1
    for h in hooks:
        m = re.match(r"blocks\.(\d+)\.", h)
        if m:
            last = max(last, int(m.group(1)))
        elif not h.startswith(("hook_embed", "hook_pos_embed", "hook_tokens", "embed.")):
            return None
    return last + 1


def stop_kwargs(model: Any, hooks: Sequence[str]) -> dict[str, int]:
    """:func:`stop_layer` as keyword arguments for ``run_with_hooks``: ``{"stop_at_layer": l}``, or ``{}``."""
    stop = stop_layer(model, hooks)
    return {} if stop is None else {"stop_at_layer": stop}


# ---------------------------------------------------------------------------------------------------------
# Batches under max_memory
# ---------------------------------------------------------------------------------------------------------

def bytes_per_row(model: Any) -> Callable[[int], int]:
    """``n -> bytes`` one row of ``n`` tokens holds in a forward pass (:func:`circuitlab.core.row_bytes`; for a
    config without the fields it reads, a rough guess from the width)."""
    try:
        per_row = lambda n: row_bytes(model, n)  # noqa: E731
        per_row(4)
    except Exception:
        per_row = lambda n: 4 * n * 16 * int(model.cfg.d_model)  # noqa: E731
    return per_row


def batches_by_length(lengths: Sequence[int], per_row: Callable[[int], int], max_memory: int,
                      batch_size: Optional[int] = None) -> list[list[int]]:
    """Row indices in batches: longest first, each batch as many rows as fit ``max_memory`` (``per_row(n)``: the
    bytes of one row padded to ``n`` tokens) and at most ``batch_size``."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    out, current, longest = [], [], 0
    for i in order:
        n = max(longest, lengths[i])
        full = batch_size is not None and len(current) >= batch_size
        if current and (full or (len(current) + 1) * per_row(n) > max_memory):
            out.append(current)
            current, n = [], lengths[i]
        current.append(i)
        longest = n
    if current:
        out.append(current)
    return out


def same_length_runs(lengths: Sequence[int], per_row: Callable[[int], int], max_memory: int) -> list[list[int]]:
    """Row indices in batches without padding: consecutive rows of one length, as many as fit ``max_memory``
    (``per_row(n)``: the bytes one row of ``n`` tokens needs)."""
    out: list[list[int]] = []
    for i, n in enumerate(lengths):
        if out and lengths[out[-1][0]] == n and (len(out[-1]) + 1) * per_row(n) <= max_memory:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def stream_batches(items: Iterable[T], length: Callable[[T], int], per_row: Callable[[int], int], max_memory: int,
                   batch_size: Optional[int] = None) -> Iterator[list[T]]:
    """``items`` in batches, in arrival order, read lazily (a generator over a corpus larger than memory is fine): a
    batch is sent on when the next item would take it past ``max_memory`` (padded to its longest row, ``length``
    of an item in tokens) or when it holds ``batch_size`` items."""
    current: list[T] = []
    longest = 0
    for item in items:
        n = length(item)
        if current and (len(current) + 1) * per_row(max(longest, n)) > max_memory:
            yield current
            current, longest = [], 0
        current.append(item)
        longest = max(longest, n)
        if batch_size is not None and len(current) == batch_size:
            yield current
            current, longest = [], 0
    if current:
        yield current


def pad_right(rows: Sequence[Int[Tensor, " pos"]], pad: int = 0) -> Int[Tensor, "batch pos"]:
    """1-D token rows as one ``[batch, longest]`` tensor, padded on the right with ``pad`` (on the rows' device)."""
    toks = torch.full((len(rows), max(len(r) for r in rows)), pad, dtype=torch.long, device=rows[0].device)
    for i, r in enumerate(rows):
        toks[i, : len(r)] = r
    return toks


# ---------------------------------------------------------------------------------------------------------
# Token rows from texts
# ---------------------------------------------------------------------------------------------------------

def token_rows(model: Any, data: Any, what: str = "key_examples") -> Iterator[Int[Tensor, " pos"]]:
    """Each item of ``data`` (texts, token-id rows, a ``[batch, pos]`` tensor, or any iterable of them) as a 1-D
    LongTensor: texts tokenized with BOS, every row cut to the context length (with one warning naming ``what``)."""
    import warnings

    from circuitlab.core import check_text_tokens, to_tokens

    if isinstance(data, str):
        data = [data]
    if isinstance(data, Tensor):
        data = data if data.ndim == 2 else data[None]
    n_ctx = model.cfg.n_ctx
    cut = 0
    for i, item in enumerate(data):
        if isinstance(item, str):
            row = model.to_tokens(item, truncate=False)[0]
            if len(row) <= 1:
                check_text_tokens(model, item, f"text {i}")
        elif isinstance(item, Tensor) or (isinstance(item, Sequence) and not isinstance(item, (bytes, Mapping))):
            row = torch.as_tensor(item, dtype=torch.long).reshape(-1)
        else:  # a number or None is neither a text nor a row (a bare 3 would be read as the one-token row [3])
            from circuitlab.core import shorten

            raise InputError(f"{what}: item {i} of the texts is {shorten(item, 40)} ({type(item).__name__}); each item "
                             "must be a text or a row of token ids.")
        if len(row) > n_ctx:
            cut += 1
            if cut == 1:
                warnings.warn(f"{what}: item {i} is {len(row)} tokens, longer than the model's context "
                              f"(n_ctx={n_ctx}); it and any other such items are scanned up to their first "
                              f"{n_ctx} tokens only.", stacklevel=3)
        yield to_tokens(model, row[:n_ctx])[0]


# ---------------------------------------------------------------------------------------------------------
# Running the model
# ---------------------------------------------------------------------------------------------------------

def run_hooks(model: Any, tokens: Int[Tensor, "batch pos"], fwd_hooks: list, *, stop: Optional[int] = None,
              mask: Optional[Int[Tensor, "batch pos"]] = None) -> None:
    """One forward pass of ``tokens`` with ``fwd_hooks``, for what the hooks read: an encoder with its attention
    ``mask`` (``[batch, pos]``, 1 on real tokens), a decoder up to block ``stop`` (``None``: every block, no
    logits kept)."""
    if is_encoder(model):
        if mask is None:
            mask = torch.ones_like(tokens)
        model.run_with_hooks(tokens, return_type=None, one_zero_attention_mask=mask.to(tokens.device),
                             token_type_ids=torch.zeros_like(tokens), fwd_hooks=fwd_hooks)
    elif stop is not None:
        model.run_with_hooks(tokens, stop_at_layer=stop, fwd_hooks=fwd_hooks)
    else:
        model.run_with_hooks(tokens, return_type=None, fwd_hooks=fwd_hooks)


def _device(model: Any) -> Any:
    return model.cfg.device if getattr(model.cfg, "device", None) is not None else "cpu"


def pad_token(model: Any) -> int:
    """The token padding fills rows with: the tokenizer's ``pad_token_id``, else 0."""
    pad = getattr(getattr(model, "tokenizer", None), "pad_token_id", None)
    return 0 if pad is None else int(pad)


@torch.no_grad()
def collect_rows(model: Any, tokens: Sequence[Sequence[int]], spans: Sequence[Sequence[Sequence[int]]],
                 hooks: Sequence[str], *, batches: Optional[list[list[int]]] = None,
                 max_memory: int = DEFAULT_MAX_MEMORY, batch_size: Optional[int] = None,
                 dtype: torch.dtype = torch.float32, accumulate: torch.dtype = torch.float32,
                 progress: bool = False, desc: str = "activations") -> dict[str, Float[Tensor, "row d"]]:
    """Pooled activations: per hook, one row per span, the mean of the hook's activation over the span's tokens.

    Args:
        model: a loaded model (decoder, bridge or encoder).
        tokens: token ids per sequence (special tokens included).
        spans: per sequence, its spans: each a non-empty list of token positions in that sequence. Output rows are
            in order: sequence 0's spans, then sequence 1's, ...
        hooks: checked hook names (:func:`check_hooks`); trailing axes of an activation (heads and ``d_head``) are
            flattened into ``d``.
        batches: sequence indices of each forward pass; default :func:`batches_by_length` under ``max_memory`` and
            ``batch_size``. Rows of a batch are padded on the right.
        dtype: the returned rows' dtype; ``accumulate``: the dtype the mean is taken in (each token's activation
            times ``1 / len(span)``, summed).
        progress, desc: a progress bar over the batches.

    Returns:
        ``{hook: [n_rows, d]}`` on the CPU.
    """
    starts, at = [], 0
    for s in spans:
        starts.append(at)
        at += len(s)
    n_rows = at
    device = _device(model)
    pad = pad_token(model)
    stop = stop_layer(model, hooks)
    if batches is None:
        batches = batches_by_length([len(t) for t in tokens], bytes_per_row(model), max_memory, batch_size)
    out: dict[str, Optional[Tensor]] = {h: None for h in hooks}
    for batch in progress_bar(batches, progress=progress, desc=desc, unit="batch"):
        width = max(len(tokens[i]) for i in batch)
        toks = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        tok_index, row_index, weight = [], [], []
        for b, i in enumerate(batch):
            toks[b, :len(tokens[i])] = torch.as_tensor(tokens[i])
            mask[b, :len(tokens[i])] = 1
            r = starts[i]
            for span in spans[i]:
                for t in span:
                    tok_index.append(b * width + t)
                    row_index.append(r)
                    weight.append(1.0 / len(span))
                r += 1
        tok_index_t = torch.tensor(tok_index, device=device)
        rows_t = torch.tensor(row_index)
        order = torch.unique(rows_t)  # the output rows of this batch's spans, sorted
        local = torch.searchsorted(order, rows_t).to(device)
        weight_t = torch.tensor(weight, dtype=accumulate, device=device)

        def pool_hook(act: Tensor, name: str, n=len(batch), width=width, tok_index_t=tok_index_t, order=order,
                      local=local, weight_t=weight_t) -> None:
            if act.ndim < 3 or act.shape[0] != n or act.shape[1] != width:
                raise InputError(f"hooks: {shorten(name)} has activations of shape {tuple(act.shape)}, not [batch, "
                                 f"pos, ...] = [{n}, {width}, ...]: pooling needs one vector per token. Use a residual "
                                 "stream or sub-layer output hook (e.g. 'blocks.1.hook_resid_post').")
            flat = act.reshape(n * width, -1)[tok_index_t].to(accumulate) * weight_t[:, None]
            pooled = torch.zeros((order.numel(), flat.shape[1]), dtype=flat.dtype, device=flat.device)
            pooled.index_add_(0, local, flat)
            if out[name] is None:
                out[name] = torch.empty((n_rows, flat.shape[1]), dtype=dtype)
            out[name][order] = pooled.to("cpu", dtype)

        # each hook by closure, not hook.name: a bridge's hook points may report alias names
        fwd = [(h, (lambda act, hook, _h=h, _f=pool_hook: _f(act, _h))) for h in hooks]
        run_hooks(model, toks.to(device), fwd, stop=stop, mask=mask)
    missing = [h for h, t in out.items() if t is None]
    if missing:
        raise InputError(f"hooks {missing} never ran in the model's forward pass (is the hook point used?).")
    return out  # type: ignore[return-value]


def stream_activations(model: Any, items: Iterable[T], hook: str,
                       read: Callable[[Float[Tensor, "batch pos ..."]], Shaped[Tensor, "..."]], *,
                       row: Callable[[T], Int[Tensor, " pos"]] = lambda item: item, batch_size: Optional[int] = None,
                       max_memory: int = DEFAULT_MAX_MEMORY
                       ) -> Iterator[tuple[list[T], Int[Tensor, "batch pos"], Shaped[Tensor, "..."]]]:
    """Per batch of ``items`` (in arrival order, :func:`stream_batches`): ``(items, tokens, kept)``, where ``tokens``
    is the batch's token rows (``row(item)``, 1-D) padded on the right with 0 and ``kept`` is ``read`` of the
    activation at ``hook`` (``[batch, pos, ...]``; keep only what you need, e.g. ``act[..., neuron].float().cpu()``).
    A decoder stops after the hook's block."""
    stop = stop_layer(model, [hook])
    for batch in stream_batches(items, lambda item: len(row(item)), lambda n: row_bytes(model, n), max_memory,
                                batch_size):
        toks = pad_right([row(item) for item in batch])
        store: dict[str, Tensor] = {}

        def grab(act: Tensor, hook=None) -> None:
            store["a"] = read(act.detach())

        with torch.no_grad():
            run_hooks(model, toks, [(hook, grab)], stop=stop)
        yield batch, toks, store["a"]


# ---------------------------------------------------------------------------------------------------------
# The disk cache
# ---------------------------------------------------------------------------------------------------------


class DiskCache:
    """Collected rows on disk, one file per hook, under ``folder``, keyed by what decides them.

    ``key`` holds everything the rows depend on besides the hook (the model's name and weights' fingerprint, the
    data, the pooling, the dtype...). Each file is a cache entry (:func:`circuitlab.core.write_cache_entry`): a
    checksum of its bytes, its row count and its key, then the tensor. A file is used only if it is intact (same
    length, same checksum), its key matches and it holds ``n_rows`` rows; any other file (damaged, cut short,
    written by an older version) is recomputed, with a warning naming it. Files are written to a temporary name
    and renamed, so concurrent collections never read a half-written file.
    """

    def __init__(self, folder: Optional[Path], key: Mapping[str, Any]):
        self.folder = folder
        self.key = dict(key)

    @staticmethod
    def folder_for(cache: Any, model: Any, kind: str) -> Optional[Path]:
        """``cache`` (``True``: the circuitlab cache directory, ``False``/``None``: no cache, or a directory) as
        the folder for ``model``'s files of ``kind`` (e.g. ``"probing/activations"``); ``None`` without a cache."""
        if cache is False or cache is None:
            return None
        if cache is True:
            from circuitlab.models.real import cache_root

            root = cache_root().joinpath(*kind.split("/"))
        elif isinstance(cache, (str, Path)):
            root = Path(cache).expanduser()
        else:
            raise InputError(f"cache must be True (the circuitlab cache), False (none) or a directory; got "
                             f"{shorten(cache)}.")
        return root / re.sub(r"[^A-Za-z0-9_.-]+", "_", model_name(model) or "model")

    def _key(self, hook: str) -> dict:
        return {**self.key, "hook": hook}

    def path(self, hook: str) -> Optional[Path]:
        if self.folder is None:
            return None
        digest = hashlib.sha256(json.dumps(self._key(hook)).encode()).hexdigest()[:24]
        return self.folder / (digest + ".pt")

    def load(self, hooks: Sequence[str], n_rows: int) -> dict[str, Float[Tensor, "row d"]]:
        """The hooks whose rows are on disk, intact; a file that is not (see the class) is left out, with a
        warning, to be recomputed."""
        found = {}
        for h in hooks:
            path = self.path(h)
            if path is None:
                continue
            entry = read_cache_entry(path, key=self._key(h))
            if entry is None:
                continue
            payload, count = entry
            try:
                t = torch.load(io.BytesIO(payload), weights_only=True)
            except Exception as exc:
                warn_cache_entry(path, f"cannot be read as a tensor ({type(exc).__name__})")
                continue
            rows = t.shape[0] if isinstance(t, Tensor) and t.ndim == 2 else None
            if rows != count or count != n_rows:
                what = f"{rows} rows" if rows is not None else "no [rows, d] tensor"
                warn_cache_entry(path, f"holds {what}; its header promised {count} and the collection needs "
                                       f"{n_rows}")
                continue
            found[h] = t
        return found

    def save(self, rows: Mapping[str, Float[Tensor, "row d"]]) -> None:
        for h, t in rows.items():
            path = self.path(h)
            if path is None:
                continue
            buffer = io.BytesIO()
            torch.save(t.contiguous(), buffer)
            write_cache_entry(path, buffer.getvalue(), count=t.shape[0], key=self._key(h))


__all__ = ["NO_POSITIONS", "is_encoder", "default_hooks", "residual_hooks", "check_hooks", "check_pool",
           "stop_layer", "stop_kwargs", "bytes_per_row", "batches_by_length", "same_length_runs", "stream_batches",
           "pad_right", "token_rows", "run_hooks", "pad_token", "collect_rows", "stream_activations",
           "DiskCache"]
