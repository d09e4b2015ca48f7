"""Word representations at many hooks, one forward pass per batch, cached on disk.

    from circuitlab.probing import activations, data

    sents = data.default_sentences(2000)
    acts = activations.collect(model, sents)            # every layer's residual stream, one pass per batch
    acts["blocks.3.hook_resid_post"]                    # [n_words, d_model]: one row per aligned word
    acts.labels("upos")                                 # the label of each row
    acts.sentence, acts.word                            # which sentence, which word each row is

**One pass, many hooks.** Each batch of sentences runs through the model once with a hook at every requested
point; each hook pools its activation to words at once (:mod:`circuitlab.probing.align`: the mean of a word's
tokens, or its first), so a batch holds one full activation at a time plus a ``[words, d]`` matrix per hook. A
decoder (``HookedTransformer``) stops after the last block a hook needs (``stop_at_layer``) and never computes
logits.

**Batches**: sentences are sorted by length (less padding) and cut under ``max_memory`` (the package's one meaning:
a rough bound on what one forward pass holds; see :func:`circuitlab.core.check_max_memory`). Decoders are padded
on the right, which changes no real token's activation under causal attention; encoders get an attention mask.
Rows come back in sentence order whatever the batching (a test checks batched against one-at-a-time).

**Any hook** whose activation has batch and position as its first two axes: ``blocks.{l}.hook_resid_post``
(default, with the embedding ``blocks.0.hook_resid_pre``), ``hook_mlp_out``, ``attn.hook_z`` (heads and
``d_head`` are flattened), ``mlp.hook_post``... A hook the model lacks, or one without positions (attention
patterns), is an :class:`~circuitlab.errors.InputError`.

**Cache**: each hook's matrix is written to ``$CIRCUITLAB_CACHE/probing/activations/<model>/`` under a key made
of the model's name and a fingerprint of its weights, the hook, the pooling, and a hash of the aligned token ids
(which covers the data and the tokenizer). Sweeps over probes and layers then read the disk, and only the hooks
not yet cached run. ``cache=False`` turns it off; a path puts it elsewhere.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import warnings
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
from torch import Tensor

from circuitlab.core import (DEFAULT_MAX_MEMORY, check_max_memory, check_weights_finite, model_name, progress_bar,
                             row_bytes)
from circuitlab.errors import InputError
from circuitlab.probing.align import Alignment, align, check_pool, check_sentences, is_encoder
from circuitlab.probing.data import Sentence
from circuitlab.models.loading import as_any_model

#: bump when what a cached file holds changes: older files are then ignored
CACHE_FORMAT = 1
#: hooks whose activations have no position axis after batch (attention patterns and scores)
_NO_POSITIONS = re.compile(r"hook_pattern$|hook_attn_scores$")


@dataclass
class WordActivations:
    """Word-level activations at several hooks, one row per aligned word, in sentence order.

    Attributes:
        acts: per hook name, a ``[n_words, d]`` float tensor (``d`` is the hook's width, flattened).
        sentence: ``[n_words]``: the index in ``sentences`` of each row's sentence.
        word: ``[n_words]``: the index of each row's word within its sentence.
        sentences: the sentences the rows come from.
        model: the model's name.
        pool: ``"mean"`` or ``"first"``.
        skipped: words that could not be aligned to tokens, by reason (see :mod:`circuitlab.probing.align`).
        meta: timings and settings (``seconds``, ``sentences_per_second``, ``from_cache``, ...).
    """

    acts: dict[str, Tensor]
    sentence: Tensor
    word: Tensor
    sentences: list[Sentence]
    model: str = ""
    pool: str = "mean"
    skipped: dict[str, int] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def hooks(self) -> list[str]:
        return list(self.acts)

    def __getitem__(self, hook: str) -> Tensor:
        if hook not in self.acts:
            raise InputError(f"no activations for hook {hook!r}; collected: {', '.join(self.acts)}.")
        return self.acts[hook]

    def __len__(self) -> int:
        return int(self.sentence.numel())

    def labels(self, layer: str) -> list:
        """The label of each row from the sentences' annotation ``layer`` (``"upos"``, ``"deprel"``, ``"ent"``,
        ``"head"``, or ``"word"`` for the word itself). Every sentence must carry it."""
        cache: dict[int, tuple] = {}
        out = []
        for s, w in zip(self.sentence.tolist(), self.word.tolist()):
            if s not in cache:
                cache[s] = self.sentences[s].labels(layer)
            out.append(cache[s][w])
        return out


# ---------------------------------------------------------------------------------------------------------
# Models and hooks
# ---------------------------------------------------------------------------------------------------------

def default_hooks(model: Any) -> list[str]:
    """The embedding (``blocks.0.hook_resid_pre``) and every block's ``hook_resid_post``: one per layer."""
    return ["blocks.0.hook_resid_pre"] + [f"blocks.{l}.hook_resid_post" for l in range(model.cfg.n_layers)]


def hook_layer_label(hook: str) -> str:
    """A short label for a hook on a layer axis: ``"emb"`` for the embedding, ``"L3"`` for block 3's
    ``hook_resid_post``, the hook name otherwise."""
    if hook == "blocks.0.hook_resid_pre":
        return "emb"
    m = re.fullmatch(r"blocks\.(\d+)\.hook_resid_post", hook)
    return f"L{m.group(1)}" if m else hook


def check_hooks(model: Any, hooks: Any) -> list[str]:
    """``hooks`` as a list of the model's hook names: ``None`` for :func:`default_hooks`; an int ``l`` means
    ``blocks.{l}.hook_resid_post`` (negative counts from the end)."""
    from circuitlab.core import check_layer

    if hooks is None:
        return default_hooks(model)
    if isinstance(hooks, (str, int)):
        hooks = [hooks]
    if not isinstance(hooks, Sequence) or not hooks:
        raise InputError(f"hooks must be a hook name, a layer index, or a non-empty list of them; got {hooks!r}.")
    names = list(model.hook_dict)
    out = []
    for h in hooks:
        if isinstance(h, int) and not isinstance(h, bool):
            h = f"blocks.{check_layer(model, h, what='hooks layer')}.hook_resid_post"
        if not isinstance(h, str):
            raise InputError(f"hooks: {h!r} is neither a hook name nor a layer index.")
        if h not in model.hook_dict:
            close = [n for n in names if n.endswith(h.split(".")[-1])][:4]
            hint = f" Hooks with that ending: {', '.join(close)}." if close else ""
            raise InputError(f"hooks: the model has no hook {h!r}.{hint} See model.hook_dict for every name "
                             "(e.g. blocks.0.hook_resid_post).")
        if _NO_POSITIONS.search(h):
            raise InputError(f"hooks: {h!r} holds attention patterns [batch, head, query, key], not one vector per "
                             "token, so it cannot give word representations. Probe attention heads through "
                             "attn.hook_z or hook_attn_out.")
        if h in out:
            raise InputError(f"hooks lists {h!r} twice.")
        out.append(h)
    return out


def _stop_layer(model: Any, hooks: list[str]) -> Optional[int]:
    """The block after the last one ``hooks`` need, for ``stop_at_layer`` (None: run the whole model)."""
    from transformer_lens import HookedTransformer

    if type(model) is not HookedTransformer and not isinstance(model, HookedTransformer):
        return None
    last = -1
    for h in hooks:
        m = re.match(r"blocks\.(\d+)\.", h)
        if m:
            last = max(last, int(m.group(1)))
        elif not h.startswith(("hook_embed", "hook_pos_embed", "hook_tokens", "embed.")):
            return None
    return last + 1


_FINGERPRINTS: "weakref.WeakKeyDictionary[Any, tuple]" = weakref.WeakKeyDictionary()


def weights_fingerprint(model: Any) -> str:
    """A short hash of the model's parameters, for cache keys: per parameter its name, shape, sum, norm and an
    evenly strided sample of about 4,096 entries. Kept per model while no parameter is replaced or changed in
    place (PyTorch's ``_version`` counters), so repeated collections do not re-read the weights."""
    params = list(model.named_parameters())
    state = tuple((name, id(p), p._version) for name, p in params)
    try:
        known = _FINGERPRINTS.get(model)
    except TypeError:
        known = None
    if known is not None and known[0] == state:
        return known[1]
    h = hashlib.sha256()
    with torch.no_grad():
        for name, p in params:
            flat = p.detach().reshape(-1)
            sample = flat[::max(1, flat.numel() // 4096)].float()
            h.update(f"{name}{tuple(p.shape)}{float(flat.sum()):.8e}{float(torch.linalg.vector_norm(flat)):.8e}"
                     .encode())
            h.update(sample.cpu().numpy().tobytes())
    digest = h.hexdigest()[:16]
    try:
        _FINGERPRINTS[model] = (state, digest)
    except TypeError:
        pass
    return digest


def _alignment_hash(al: Alignment, pool: str) -> str:
    h = hashlib.sha256(pool.encode())
    for toks, pieces in zip(al.tokens, al.pieces):
        h.update(json.dumps([toks, [list(p) for p in pieces]], separators=(",", ":")).encode())
    return h.hexdigest()[:20]


def _cache_dir(cache: Any, model: Any) -> Optional[Path]:
    if cache is False or cache is None:
        return None
    if cache is True:
        from circuitlab.models.real import cache_root

        root = cache_root() / "probing" / "activations"
    elif isinstance(cache, (str, Path)):
        root = Path(cache).expanduser()
    else:
        raise InputError(f"cache must be True (the circuitlab cache), False (none) or a directory; got {cache!r}.")
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", model_name(model) or "model")
    return root / safe


# ---------------------------------------------------------------------------------------------------------
# Collection
# ---------------------------------------------------------------------------------------------------------

def _batches(lengths: list[int], per_row: Any, max_memory: int, batch_size: Optional[int]) -> list[list[int]]:
    """Sentence indices in batches: longest first, each batch as many rows as fit ``max_memory``."""
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


def collect(model: Any, sentences: Sequence[Sentence], hooks: Any = None, *, pool: str = "mean",
            max_memory: int = DEFAULT_MAX_MEMORY, batch_size: Optional[int] = None,
            cache: Union[bool, str, Path] = True, dtype: torch.dtype = torch.float32,
            progress: bool = True, executor: Any = None) -> WordActivations:
    """Word-level activations of ``model`` on ``sentences`` at every hook in ``hooks``, one pass per batch.

    Args:
        model: a model or a name (see :func:`as_any_model`): decoder, bridge or encoder.
        sentences: labelled sentences (:mod:`circuitlab.probing.data`).
        hooks: hook names or layer indices (see :func:`check_hooks`); default: the embedding and every layer's
            residual stream.
        pool: ``"mean"`` of a word's tokens or its ``"first"`` token.
        max_memory: bytes one forward pass may hold, roughly; batches are cut to fit.
        batch_size: at most this many sentences per batch (default: as many as fit ``max_memory``).
        cache: ``True`` (the circuitlab cache directory), ``False``, or a directory.
        dtype: the stored activations' dtype.
        progress: show a progress bar over batches.
        executor: ``None`` (this process), ``"ray"``, or an executor of :mod:`circuitlab.distributed`: the batches
            (cut as one process cuts them) are shared out among workers that each hold a model replica.

    Returns:
        a :class:`WordActivations`; words that could not be aligned are left out and counted in ``skipped``
        (with a warning).
    """
    t0 = time.perf_counter()
    source, model = model, as_any_model(model)
    pool = check_pool(pool)
    hooks = check_hooks(model, hooks)
    max_memory = check_max_memory(max_memory)
    if batch_size is not None:
        from circuitlab.core import check_count

        batch_size = check_count(batch_size, "batch_size")
    sentences = check_sentences(sentences)
    al = align(model, sentences)
    if al.n_skipped:
        warnings.warn(f"probing: {al.summary()}. Skipped words have no row in the activations.", stacklevel=2)
    rows = [(si, wi) for si, pieces in enumerate(al.pieces) for wi, p in enumerate(pieces) if p]
    if not rows:
        raise InputError(f"no word of the {len(sentences)} sentences could be aligned to the model's tokens "
                         f"({al.summary()}). Use text this model's tokenizer can read.")
    sentence = torch.tensor([r[0] for r in rows], dtype=torch.long)
    word = torch.tensor([r[1] for r in rows], dtype=torch.long)

    folder = _cache_dir(cache, model)
    paths = {}
    if folder is not None:
        base = {"format": CACHE_FORMAT, "model": model_name(model), "weights": weights_fingerprint(model),
                "pool": pool, "data": _alignment_hash(al, pool), "dtype": str(dtype)}
        paths = {h: folder / (hashlib.sha256(json.dumps({**base, "hook": h}).encode()).hexdigest()[:24] + ".pt")
                 for h in hooks}
    acts: dict[str, Tensor] = {}
    for h, path in paths.items():
        if path.is_file():
            try:
                t = torch.load(path, weights_only=True)
            except Exception:  # a damaged file is recomputed
                continue
            if t.ndim == 2 and t.shape[0] == len(rows):
                acts[h] = t
    todo = [h for h in hooks if h not in acts]
    if todo:
        if executor is None:
            computed = _run(model, al, todo, pool, max_memory, batch_size, dtype, progress, len(rows))
        else:
            from circuitlab import distributed

            computed = distributed.collect(source, model, al, sentences, todo, pool,
                                           plan_batches(model, al, max_memory, batch_size), dtype, len(rows), executor)
        for h in todo:
            acts[h] = computed[h]
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
                tmp = paths[h].with_suffix(f".tmp-{os.getpid()}")  # one per process (concurrent collections)
                torch.save(computed[h], tmp)
                tmp.replace(paths[h])
    seconds = time.perf_counter() - t0
    meta = {"seconds": seconds, "sentences_per_second": len(sentences) / seconds if seconds > 0 else float("inf"),
            "from_cache": [h for h in hooks if h not in todo], "computed": todo, "n_sentences": len(sentences),
            "n_words": al.n_words, "n_rows": len(rows), "alignment": al.summary()}
    return WordActivations({h: acts[h] for h in hooks}, sentence, word, sentences, model_name(model), pool,
                           dict(al.skipped), meta)


def plan_batches(model: Any, al: Alignment, max_memory: int, batch_size: Optional[int]) -> list[list[int]]:
    """The sentence indices of each forward pass (:func:`_batches` with the model's bytes per row)."""
    try:
        per_row = lambda n: row_bytes(model, n)  # noqa: E731
        per_row(4)
    except Exception:  # a config without the fields row_bytes reads: a rough guess from the width
        per_row = lambda n: 4 * n * 16 * int(model.cfg.d_model)  # noqa: E731
    return _batches([len(t) for t in al.tokens], per_row, max_memory, batch_size)


@torch.no_grad()
def _run(model: Any, al: Alignment, hooks: list[str], pool: str, max_memory: int, batch_size: Optional[int],
         dtype: torch.dtype, progress: bool, n_rows: int, batches: Optional[list[list[int]]] = None
         ) -> dict[str, Tensor]:
    """The forward passes: per batch (``batches``, default :func:`plan_batches`), every hook pools its activation
    to the batch's words."""
    encoder = is_encoder(model)
    device = model.cfg.device if getattr(model.cfg, "device", None) is not None else "cpu"
    pad = getattr(model.tokenizer, "pad_token_id", None)
    pad = 0 if pad is None else int(pad)
    # row offsets: the first output row of each sentence (rows are in sentence order)
    starts, at = [], 0
    for pieces in al.pieces:
        starts.append(at)
        at += sum(1 for p in pieces if p)
    out: dict[str, Optional[Tensor]] = {h: None for h in hooks}
    stop = _stop_layer(model, hooks)
    if batches is None:
        batches = plan_batches(model, al, max_memory, batch_size)
    for batch in progress_bar(batches, progress=progress, desc="activations", unit="batch"):
        width = max(len(al.tokens[i]) for i in batch)
        tokens = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        tok_index, row_index, weight = [], [], []
        for b, i in enumerate(batch):
            tokens[b, :len(al.tokens[i])] = torch.tensor(al.tokens[i])
            mask[b, :len(al.tokens[i])] = 1
            r = starts[i]
            for p in al.pieces[i]:
                if not p:
                    continue
                use = p if pool == "mean" else p[:1]
                for t in use:
                    tok_index.append(b * width + t)
                    row_index.append(r)
                    weight.append(1.0 / len(use))
                r += 1
        tok_index_t = torch.tensor(tok_index, device=device)
        rows_t = torch.tensor(row_index)
        order = torch.unique(rows_t)  # the output rows of this batch's words, sorted
        local = torch.searchsorted(order, rows_t).to(device)
        weight_t = torch.tensor(weight, device=device)

        def pool_hook(act: Tensor, name: str, batch=batch, width=width, tok_index_t=tok_index_t, order=order,
                      local=local, weight_t=weight_t) -> None:
            if act.ndim < 3 or act.shape[0] != len(batch) or act.shape[1] != width:
                raise InputError(f"hooks: {name!r} has activations of shape {tuple(act.shape)}, not [batch, pos, "
                                 f"...] = [{len(batch)}, {width}, ...]; probing needs one vector per token.")
            flat = act.reshape(len(batch) * width, -1)[tok_index_t].float() * weight_t[:, None]
            words = torch.zeros((order.numel(), flat.shape[1]), dtype=flat.dtype, device=flat.device)
            words.index_add_(0, local, flat)
            if out[name] is None:
                out[name] = torch.empty((n_rows, flat.shape[1]), dtype=dtype)
            out[name][order] = words.to("cpu", dtype)

        fwd = [(h, (lambda act, hook, _h=h, _f=pool_hook: _f(act, _h))) for h in hooks]
        tokens = tokens.to(device)
        if encoder:
            model.run_with_hooks(tokens, return_type=None, one_zero_attention_mask=mask.to(device),
                                 token_type_ids=torch.zeros_like(tokens), fwd_hooks=fwd)
        elif stop is not None:
            model.run_with_hooks(tokens, stop_at_layer=stop, fwd_hooks=fwd)
        else:
            model.run_with_hooks(tokens, return_type=None, fwd_hooks=fwd)
    missing = [h for h, t in out.items() if t is None]
    if missing:
        raise InputError(f"hooks {missing} never ran in the model's forward pass (is the hook point used?).")
    return out  # type: ignore[return-value]
