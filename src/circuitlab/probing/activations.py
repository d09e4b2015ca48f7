"""Word representations at many hooks, one forward pass per batch, cached on disk.

    from circuitlab.probing import activations, data

    sents = data.default_sentences(2000)
    acts = activations.collect(model, sents)            # every layer's residual stream, one pass per batch
    acts["blocks.3.hook_resid_post"]                    # [n_words, d_model]: one row per aligned word
    acts.labels("upos")                                 # the label of each row
    acts.sentence, acts.word                            # which sentence, which word each row is

**One pass, many hooks.** The words are aligned to token spans (:mod:`circuitlab.probing.align`: the mean of a
word's tokens, or its first) and the activation collector (:mod:`circuitlab.engine.collect`) does the rest: each
batch of sentences runs through the model once with a hook at every requested point, and each hook pools its
activation to words at once, so a batch holds one full activation at a time plus a ``[words, d]`` matrix per hook. A
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
(which covers the data and the tokenizer). The fingerprint hashes every weight's bytes on each call
(:func:`circuitlab.models.identity.weight_fingerprint` with ``recheck=True``), so a model changed in any way gets
new files. Each file carries a checksum and its row count: a damaged one is recomputed, with a warning. Sweeps over
probes and layers then read the disk, and only the hooks not yet cached run. ``cache=False`` turns it off; a path
puts it elsewhere.

**Sharding**: ``executor=`` shares the batches (cut as one process cuts them) out among workers that each hold a
model replica; the rows come back in sentence order (in one process, with ``"local"``, the very bits of the plain
call; see the end of this module).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuitlab.core import DEFAULT_MAX_MEMORY, check_max_memory, model_name, shorten
from circuitlab.engine.collect import (DiskCache, batches_by_length, bytes_per_row, check_hooks, check_pool,
                                       collect_rows, default_hooks)
from circuitlab.engine.executor import as_executor, run_shards, shard_count, split
from circuitlab.errors import InputError
from circuitlab.models.identity import shard_source, weight_fingerprint
from circuitlab.models.loading import as_any_model
from circuitlab.probing.align import POOLS, Alignment, align, check_sentences
from circuitlab.probing.data import Sentence

#: bump when what a cached file holds changes: older files are then ignored (2: files are checksummed cache entries,
#: :func:`circuitlab.core.write_cache_entry`, and the weights' fingerprint is SHA-256)
CACHE_FORMAT = 2


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

    acts: dict[str, Float[Tensor, "word d"]]
    sentence: Int[Tensor, " word"]
    word: Int[Tensor, " word"]
    sentences: list[Sentence]
    model: str = ""
    pool: str = "mean"
    skipped: dict[str, int] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def hooks(self) -> list[str]:
        return list(self.acts)

    def __getitem__(self, hook: str) -> Float[Tensor, "word d"]:
        if hook not in self.acts:
            raise InputError(f"no activations for hook {shorten(hook)}; collected: {', '.join(self.acts)}.")
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

def hook_layer_label(hook: str) -> str:
    """A short label for a hook on a layer axis: ``"emb"`` for the embedding, ``"L3"`` for block 3's
    ``hook_resid_post``, the hook name otherwise."""
    if hook == "blocks.0.hook_resid_pre":
        return "emb"
    m = re.fullmatch(r"blocks\.(\d+)\.hook_resid_post", hook)
    return f"L{m.group(1)}" if m else hook


def _alignment_hash(al: Alignment, pool: str) -> str:
    h = hashlib.sha256(pool.encode())
    for toks, pieces in zip(al.tokens, al.pieces):
        h.update(json.dumps([toks, [list(p) for p in pieces]], separators=(",", ":")).encode())
    return h.hexdigest()[:20]


# ---------------------------------------------------------------------------------------------------------
# Collection
# ---------------------------------------------------------------------------------------------------------

def collect(model: Any, sentences: Sequence[Sentence], hooks: Any = None, *, pool: str = "mean",
            max_memory: int = DEFAULT_MAX_MEMORY, batch_size: Optional[int] = None,
            cache: Union[bool, str, Path] = True, dtype: torch.dtype = torch.float32,
            progress: bool = False, executor: Any = None) -> WordActivations:
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
        executor: ``None`` (this process), ``"ray"``, ``"local"``, or an executor object
            (:mod:`circuitlab.engine.executor`, :mod:`circuitlab.distributed`): the batches (cut as one process cuts
            them) are shared out among workers that each hold a model replica.

    Returns:
        a :class:`WordActivations`; words that could not be aligned are left out and counted in ``skipped``
        (with a warning).
    """
    t0 = time.perf_counter()
    source, model = model, as_any_model(model)
    pool = check_pool(pool, POOLS)
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

    store = DiskCache(DiskCache.folder_for(cache, model, "probing/activations"), {})
    if store.folder is not None:
        # every byte hashed again (recheck): the files outlive this weight state, and writes into p.data in place
        # move no version counter
        store.key = {"format": CACHE_FORMAT, "model": model_name(model),
                     "weights": weight_fingerprint(model, recheck=True), "pool": pool,
                     "data": _alignment_hash(al, pool), "dtype": str(dtype)}
    acts: dict[str, Tensor] = store.load(hooks, len(rows))
    todo = [h for h in hooks if h not in acts]
    if todo:
        computed = _sharded_rows(source, model, al, sentences, todo, pool, dtype=dtype, max_memory=max_memory,
                                 batch_size=batch_size, progress=progress, executor=executor)
        acts.update(computed)
        store.save({h: computed[h] for h in todo})
    seconds = time.perf_counter() - t0
    meta = {"seconds": seconds, "sentences_per_second": len(sentences) / seconds if seconds > 0 else float("inf"),
            "from_cache": [h for h in hooks if h not in todo], "computed": todo, "n_sentences": len(sentences),
            "n_words": al.n_words, "n_rows": len(rows), "alignment": al.summary()}
    return WordActivations({h: acts[h] for h in hooks}, sentence, word, sentences, model_name(model), pool,
                           dict(al.skipped), meta)


def plan_batches(model: Any, al: Alignment, max_memory: int, batch_size: Optional[int]) -> list[list[int]]:
    """The sentence indices of each forward pass: longest first, as many as fit ``max_memory``
    (:func:`circuitlab.engine.collect.batches_by_length` with the model's bytes per row)."""
    return batches_by_length([len(t) for t in al.tokens], bytes_per_row(model), max_memory, batch_size)


def word_rows(model: Any, al: Alignment, hooks: list[str], pool: str, *, dtype: torch.dtype = torch.float32,
              batches: Optional[list[list[int]]] = None, max_memory: int = DEFAULT_MAX_MEMORY,
              batch_size: Optional[int] = None, progress: bool = False) -> dict[str, Float[Tensor, "word d"]]:
    """The forward passes behind :func:`collect`: per batch of sentences (``batches``, default
    :func:`plan_batches`), every hook pools its activation to the batch's words; ``{hook: [n_rows, d]}`` with one
    row per aligned word, in sentence order (:func:`circuitlab.engine.collect.collect_rows`)."""
    if batches is None:
        batches = plan_batches(model, al, max_memory, batch_size)
    return collect_rows(model, al.tokens, al.spans(pool), hooks, batches=batches, dtype=dtype,
                        accumulate=torch.float32, progress=progress, desc="activations")


# ---------------------------------------------------------------------------------------------------------
# Sharding (the executor contract, circuitlab.engine.executor): the batches one process would run, cut as it cuts
# them, shared out among the workers (interleaved, for balance); each shard aligns its own sentences again on its
# replica and runs its batches (collect_shard); the rows are put back in sentence order. One process is one shard:
# the plain call (word_rows) on the caller's model.
# ---------------------------------------------------------------------------------------------------------

def check_collect_options(options: dict, where: str) -> dict:
    """The ``**collect_options`` an analysis forwards to :func:`collect`, checked: a keyword :func:`collect` does
    not take (a training option such as ``epochs`` passed at the top level) is an
    :class:`~circuitlab.errors.InputError` naming it and the keywords that are collect's, not a raw ``TypeError``
    from deep inside."""
    import inspect

    known = [p for p in inspect.signature(collect).parameters if p not in ("model", "sentences", "hooks", "progress")]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise InputError(f"{where} got unknown keyword argument(s) {', '.join(unknown)}: its extra keywords go to "
                         f"collect, which takes {', '.join(known)}. Training settings (lr, epochs, batch_size, "
                         "patience) go in the analysis's own options (see its docstring).")
    return options


def collect_shard(model: Any, sentences: Sequence[Sentence], batches: list[list[int]], hooks: list[str], pool: str,
                  dtype: torch.dtype) -> dict[str, Float[Tensor, "word d"]]:
    """One shard of a sharded :func:`collect`: the rows of ``sentences`` (a part of the caller's, aligned again on
    this replica), run in ``batches`` (indices into ``sentences``, as the caller's process cut them)."""
    return word_rows(model, align(model, sentences), hooks, pool, dtype=dtype, batches=batches)


def _one_shard(model: Any, al: Alignment, hooks: list[str], pool: str, dtype: torch.dtype, max_memory: int,
               batch_size: Optional[int], progress: bool) -> dict[str, Tensor]:
    """The whole collection as one shard (one worker: the plain call)."""
    return word_rows(model, al, hooks, pool, dtype=dtype, max_memory=max_memory, batch_size=batch_size,
                     progress=progress)


def _sharded_rows(given: Any, model: Any, al: Alignment, sentences: Sequence[Sentence], hooks: list[str], pool: str,
                  *, dtype: torch.dtype, max_memory: int, batch_size: Optional[int], progress: bool,
                  executor: Any) -> dict[str, Tensor]:
    """:func:`word_rows` on ``executor`` (``None``: this process). ``given``: the caller's model argument (a name or
    directory is what workers load); ``model``: the model loaded from it."""
    ex, owned = as_executor(executor)
    try:
        source = shard_source(given, model)
        if ex.workers == 1:
            parts, _ = run_shards(ex, source, _one_shard, [dict(
                al=al, hooks=hooks, pool=pool, dtype=dtype, max_memory=max_memory, batch_size=batch_size,
                progress=progress and executor is None)])
            return parts[0]
        batches = plan_batches(model, al, max_memory, batch_size)
        groups = split(batches, shard_count(ex, len(batches), per_worker=2), interleave=True)
        # rows are in sentence order; a sentence's rows are contiguous, starting at starts[i]
        counts = [sum(1 for p in pieces if p) for pieces in al.pieces]
        starts = [0]
        for c in counts[:-1]:
            starts.append(starts[-1] + c)
        shards, row_index = [], []
        for group in groups:
            mine = sorted(i for batch in group for i in batch)
            local = {i: j for j, i in enumerate(mine)}
            shards.append(dict(sentences=[sentences[i] for i in mine], batches=[[local[i] for i in b] for b in group],
                               hooks=hooks, pool=pool, dtype=dtype))
            row_index.append(torch.tensor([r for i in mine for r in range(starts[i], starts[i] + counts[i])],
                                          dtype=torch.long))
        parts, _ = run_shards(ex, source, collect_shard, shards)
    finally:
        if owned:
            ex.close()
    n_rows = sum(counts)
    out = {}
    for h in hooks:
        full = torch.empty((n_rows, parts[0][h].shape[1]), dtype=dtype)
        for rows, part in zip(row_index, parts):
            full[rows] = part[h]
        out[h] = full
    return out


#: the weights' fingerprint under this module's earlier name (the one fingerprint lives in circuitlab.models.identity)
weights_fingerprint = weight_fingerprint

#: ``check_hooks`` and ``default_hooks`` live in the collector (:mod:`circuitlab.engine.collect`) and are re-exported
#: here for users of this module
__all__ = ["WordActivations", "collect", "check_collect_options", "collect_shard", "word_rows", "plan_batches",
           "check_hooks", "default_hooks", "hook_layer_label", "weights_fingerprint", "CACHE_FORMAT"]
