"""The one remaining analysis adapter in the distributed layer: the sharded activation collection of
:func:`circuitlab.probing.collect`, which calls into :mod:`circuitlab.probing.activations` (lazily: importing
:mod:`circuitlab.distributed` imports no analysis). It goes when the collector owns its split / run-one-shard /
gather, as patching, edge patching and causal tracing do (see :mod:`circuitlab.engine.executor`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from circuitlab.engine.executor import as_executor, run_shards, shard_count, split
from circuitlab.models.identity import model_source

__all__ = ["collect"]


def _source_of(given: Any, loaded: Any) -> Any:
    """What the workers load: the name or directory the caller gave (with the device the caller loaded it onto),
    else the loaded model (sent by name)."""
    return model_source(given, loaded) if isinstance(given, (str, Path)) else loaded


def _collect_shard(model, sentences, batches, hooks, pool, dtype):
    # the last import of an analysis's private name from this layer: it goes with this adapter
    from circuitlab.probing.activations import _run
    from circuitlab.probing.align import align

    al = align(model, sentences)
    n_rows = sum(1 for pieces in al.pieces for p in pieces if p)
    return _run(model, al, hooks, pool, 0, None, dtype, False, n_rows, batches=batches)


def collect(source: Any, model: Any, al: Any, sentences: Sequence, hooks: list[str], pool: str,
            batches: list[list[int]], dtype: Any, n_rows: int, executor: Any) -> dict:
    """The activations of :func:`circuitlab.probing.collect`, its batches (as one process cuts them) shared out
    among ``executor``'s workers; each worker's rows are put back in sentence order."""
    import torch

    ex, owned = as_executor(executor)
    try:
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
        parts, _ = run_shards(ex, _source_of(source, model), _collect_shard, shards)
    finally:
        if owned:
            ex.close()
    out = {}
    for h in hooks:
        width = parts[0][h].shape[1]
        full = torch.empty((n_rows, width), dtype=dtype)
        for rows, part in zip(row_index, parts):
            full[rows] = part[h]
        out[h] = full
    return out
