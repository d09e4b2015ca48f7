"""Beyond one process: the same call, its work cut into shards that Ray actors run, each on its own model replica.

An analysis that takes ``executor=`` splits its work into independent shards, runs each shard with the
single-process code on a replica of the model, and gathers the parts into the Result the single-process call
returns. Nothing is scheduled here: Ray (``pip install 'circuitlab[distributed]'``) places the actors and moves
the data; this module only decides the shards and puts the parts back together.

=====================================  =========================================  ================================
analysis                               one shard                                  gathered by
=====================================  =========================================  ================================
``patching.sweep``                     a set of layers (interleaved, for balance)  the layer axis, in order
``circuits.patch_edges``               a block of edge sets (masks)               concatenation
``tracing.average_indirect_effect``    a block of facts                           the per-fact table, then the
                                                                                  same average as one process
``probing.collect``                    whole batches of sentences, cut as one     rows put back by sentence
                                       process cuts them
``circuitlab reproduce --all``         one finding                                the list of reproductions
=====================================  =========================================  ================================

Every shard runs the single-process code. Edge patching, causal tracing and activation collection shards run the
very batches one process would, so in one process their parts are equal to the bit; an activation-patching pass
batches patches at several layers, a shard's passes hold fewer, and float32 rounds them differently (a few 1e-6
on logit differences of about 7 in the tests). A Ray worker runs ``cpus_per_worker`` torch threads, which may
round matrix products differently from the caller's thread count: compare with a float tolerance.

``executor`` is ``None`` (one process, the default), ``"ray"`` (a :class:`RayExecutor` with its defaults, made for
the call and closed after it), ``"local"`` (:class:`LocalExecutor`: the shards one after another in this process,
for checking the sharding), or an executor object you keep across calls (its actors keep their model replicas)::

    with circuitlab.distributed.RayExecutor(workers=4, address="auto") as ex:
        res = circuitlab.patching.sweep("gemma-3-270m", clean, corrupted, metric, executor=ex)

A replica is loaded in each actor by name (a zoo name, a real model's name, a TransformerLens pretrained name)
or from a directory written by :func:`circuitlab.save_model`, onto the caller's model's device (a caller's
``cuda:N`` is a worker's ``cuda``: Ray numbers each worker's GPUs from 0); a model object is sent by its name and
its weights are checked in the worker against the caller's (a fingerprint): a model changed after loading, or built
in memory (``HookedTransformer(cfg)``, named ``"custom"``), must be saved first and passed as its directory.
Tensor arguments (tokens, masks, the tensors a metric holds) travel as CPU tensors and are moved to the replica's
device in the worker; parts come back as CPU tensors.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from circuitlab.errors import CircuitlabError, InputError
from circuitlab.engine.executor import (  # noqa: F401  (re-exported: the names users had here)
    InProcessExecutor, LocalExecutor, ShardError, as_executor, describe_shard, move_tensors, run_shards, shard_count,
    split)
from circuitlab.models.identity import ModelSource, device_of, model_source, weight_fingerprint, worker_device  # noqa: F401

#: the former name of :func:`circuitlab.models.identity.weight_fingerprint`
exact_fingerprint = weight_fingerprint

#: environment variables a worker inherits from the caller (the cache of converted models, test switches)
_ENV_PREFIXES = ("CIRCUITLAB_", "HF_", "TRANSFORMERS_")


def _ray():
    try:
        import ray
    except ImportError:
        raise CircuitlabError("executor='ray' needs Ray, which is not installed. Install the extra: "
                              "pip install 'circuitlab[distributed]' (or pip install ray).") from None
    return ray


class RayExecutor:
    """Ray actors, each holding one model replica, that run shards of an analysis.

    Args:
        workers: how many actors (model replicas).
        address: the Ray cluster to join (``"auto"``, ``"ray://host:10001"``...); default: ``RAY_ADDRESS`` or
            ``CIRCUITLAB_RAY_ADDRESS`` from the environment, else a local Ray instance started here (and shut down
            by :meth:`close`).
        cpus_per_worker: CPUs Ray reserves for each actor (its torch threads).
        gpus_per_worker: GPUs per actor (default: 1 when the model is on CUDA, else 0).
        init: more keyword arguments for ``ray.init`` (e.g. ``num_cpus`` of a local instance).
        start_timeout: seconds to wait for the actors to start and load their replicas (``None``: no limit);
            then a :class:`ShardError` names the actors still waiting and the cluster's free CPUs and GPUs.

    The actors start on first use and keep their replica between calls for the same model; :meth:`close` (or
    leaving a ``with`` block) ends them. Workers that ask for more CPUs or GPUs than the cluster's nodes have
    (e.g. two workers of one GPU each on a one-GPU machine) are an :class:`~circuitlab.errors.InputError` before
    any actor starts: Ray would wait for them forever.
    """

    def __init__(self, workers: int = 2, *, address: Optional[str] = None, cpus_per_worker: float = 1,
                 gpus_per_worker: Optional[float] = None, init: Optional[dict] = None,
                 start_timeout: Optional[float] = 300.0) -> None:
        from circuitlab.core import check_count

        self._workers = check_count(workers, "workers")
        if isinstance(cpus_per_worker, bool) or not isinstance(cpus_per_worker, (int, float)) or \
                not cpus_per_worker > 0 or math.isinf(cpus_per_worker):
            raise InputError(f"cpus_per_worker must be a positive number; got {cpus_per_worker!r}.")
        if gpus_per_worker is not None and (isinstance(gpus_per_worker, bool) or
                                            not isinstance(gpus_per_worker, (int, float)) or
                                            not gpus_per_worker >= 0 or math.isinf(gpus_per_worker)):
            raise InputError(f"gpus_per_worker must be None (1 for a model on CUDA, else 0) or a number >= 0; got "
                             f"{gpus_per_worker!r}.")
        if start_timeout is not None and (isinstance(start_timeout, bool) or
                                          not isinstance(start_timeout, (int, float)) or not start_timeout > 0):
            raise InputError(f"start_timeout must be None (no limit) or a positive number of seconds; got "
                             f"{start_timeout!r}.")
        self.start_timeout = start_timeout
        self.address = address or os.environ.get("CIRCUITLAB_RAY_ADDRESS") or os.environ.get("RAY_ADDRESS")
        self.cpus_per_worker = cpus_per_worker
        self.gpus_per_worker = gpus_per_worker
        self.init = dict(init or {})
        self._started_ray = False
        self._actors: list = []
        self._source: Optional[ModelSource] = None
        self.shard_seconds: list[float] = []
        self.startup_seconds = 0.0

    @property
    def workers(self) -> int:
        return self._workers

    def _start(self, source: Optional[ModelSource]) -> None:
        ray = _ray()
        t0 = time.perf_counter()
        if not ray.is_initialized():
            env = {k: v for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES)}
            kwargs = dict(include_dashboard=False, log_to_driver=False, configure_logging=False,
                          runtime_env={"env_vars": env})
            if self.address:
                kwargs["address"] = self.address
            else:
                kwargs.setdefault("num_cpus", max(1, math.ceil(self._workers * self.cpus_per_worker - 1e-9)))
            kwargs.update(self.init)
            ray.init(**kwargs)
            self._started_ray = True
        if self._actors and (source is None or _same_model(self._source, source)):
            return  # the replicas serve (a task that needs no model runs on any actors)
        self._stop_actors()
        gpus = self.gpus_per_worker
        if gpus is None:
            gpus = 1 if source is not None and (source.device or "").startswith("cuda") else 0
        self._check_resources(ray, gpus)
        actor = ray.remote(num_cpus=self.cpus_per_worker, num_gpus=gpus)(_Replica)
        # a worker sees its own GPUs only, numbered from 0: a caller's "cuda:1" is the worker's "cuda"
        sent = None if source is None else dataclasses.replace(source, device=worker_device(source.device))
        self._actors = [actor.remote(sent, self.cpus_per_worker) for _ in range(self._workers)]
        ready = [a.ready.remote() for a in self._actors]
        what = f"model replica {source.spec!r}" if source else "no model"
        done, waiting = ray.wait(ready, num_returns=len(ready), timeout=self.start_timeout)
        if waiting:
            late = [i for i, r in enumerate(ready) if r in waiting]
            self._stop_actors()
            raise ShardError(
                f"worker{'s' if len(late) > 1 else ''} {', '.join(map(str, late))} of {len(ready)} ({what}; "
                f"{self.cpus_per_worker:g} CPU and {gpus:g} GPU each) did not start within start_timeout="
                f"{self.start_timeout:g} s. The cluster has {_resources(ray.available_resources())} free now (of "
                f"{_resources(ray.cluster_resources())}): other jobs may hold them, or loading the model takes longer "
                "(raise start_timeout).")
        try:
            prints = ray.get(ready)
        except Exception as exc:
            self._stop_actors()
            raise ShardError(f"a worker could not load its model replica ({source.spec if source else 'none'}): "
                             f"{_worker_message(exc)}") from None
        self._source = None if source is None else dataclasses.replace(source, fingerprint=prints[0], loaded=None)
        self.startup_seconds += time.perf_counter() - t0

    def _check_resources(self, ray, gpus: float) -> None:
        """An InputError when the cluster's nodes have no room for ``workers`` actors of ``cpus_per_worker`` CPUs
        and ``gpus`` GPUs each (an actor runs on one node): Ray would wait for them forever."""
        cpus = self.cpus_per_worker
        try:
            nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive", True)]
        except Exception:  # a client without the nodes table: the cluster's totals only
            nodes = [ray.cluster_resources()]
        room = sum(_room(n.get("CPU", 0.0), cpus) if gpus <= 0 else
                   min(_room(n.get("CPU", 0.0), cpus), _room(n.get("GPU", 0.0), gpus)) for n in nodes)
        if room >= self._workers:
            return
        total = ray.cluster_resources()
        fix = "a larger cluster" + (" (init={'num_cpus': N} for the local instance)" if self._started_ray else "")
        raise InputError(
            f"RayExecutor(workers={self._workers}, cpus_per_worker={cpus:g}, gpus_per_worker={gpus:g}) asks for "
            f"{self._workers * cpus:g} CPUs and {self._workers * gpus:g} GPUs, but the Ray cluster has "
            f"{_resources(total)} on {len(nodes)} node{'s' if len(nodes) != 1 else ''}: room for {room} such "
            f"worker{'s' if room != 1 else ''}, and Ray would wait forever for the rest. Use fewer workers, fewer "
            f"cpus_per_worker or gpus_per_worker, or {fix}.")

    def map(self, model: Any, fn: Callable, shards: Sequence[dict]) -> list:
        source = None if model is None else model if isinstance(model, ModelSource) else model_source(model)
        self._start(source)
        ray = _ray()
        pending = {}
        for i, kwargs in enumerate(shards):
            actor = self._actors[i % len(self._actors)]
            # tensors go as CPU tensors (a worker may have no GPU, or other GPUs); the replica moves them to its own
            pending[actor.run.remote(fn, move_tensors(kwargs, "cpu", drop_models=True))] = i
        out: list = [None] * len(shards)
        for ref, i in pending.items():
            try:
                value, seconds = ray.get(ref)
            except Exception as exc:
                raise ShardError(f"shard {i} of {len(shards)} ({describe_shard(shards[i])}) failed in a Ray worker: "
                                 f"{_worker_message(exc)}") from None
            out[i] = value
            self.shard_seconds.append(seconds)
        return out

    def _stop_actors(self) -> None:
        if self._actors:
            ray = _ray()
            for a in self._actors:
                ray.kill(a)
        self._actors, self._source = [], None

    def close(self) -> None:
        """End the actors, and the local Ray instance if this executor started it."""
        self._stop_actors()
        if self._started_ray:
            _ray().shutdown()
            self._started_ray = False

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"RayExecutor(workers={self._workers}, address={self.address!r}, "
                f"cpus_per_worker={self.cpus_per_worker}, gpus_per_worker={self.gpus_per_worker}, "
                f"start_timeout={self.start_timeout})")


def _room(have: float, each: float) -> int:
    """How many actors needing ``each`` of a resource fit in ``have`` of it."""
    return int(math.floor(have / each + 1e-9))


def _resources(res: dict) -> str:
    cpus, gpus = res.get("CPU", 0.0), res.get("GPU", 0.0)
    return f"{cpus:g} CPU{'' if cpus == 1 else 's'} and {gpus:g} GPU{'' if gpus == 1 else 's'}"


class _Replica:
    """A Ray actor: one model replica and the shards it runs."""

    def __init__(self, source: Optional[ModelSource], threads: float) -> None:
        import torch

        torch.set_num_threads(max(1, int(threads)))
        self.model = None if source is None else source.load()

    def ready(self) -> Optional[str]:
        """The fingerprint of the replica's weights (``None`` without a model)."""
        return None if self.model is None else weight_fingerprint(self.model)

    def run(self, fn: Callable, kwargs: dict):
        t0 = time.perf_counter()
        if self.model is not None:  # the caller sent CPU tensors: put them on this replica's device
            kwargs = move_tensors(kwargs, device_of(self.model))
        value = move_tensors(fn(self.model, **kwargs), "cpu")  # the caller may have no GPU, or other GPUs
        return value, time.perf_counter() - t0


def _same_model(a: Optional[ModelSource], b: ModelSource) -> bool:
    """Whether actors holding ``a`` (with the fingerprint of the weights they loaded) serve ``b``: same name or
    directory, same device, and the same weights where ``b`` is a loaded model."""
    if a is None:
        return False
    dev = lambda d: d or "cpu"  # noqa: E731
    return a.spec == b.spec and dev(a.device) == dev(b.device) and b.fingerprint in (None, a.fingerprint)


def _worker_message(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)
    if cause is not None:
        return f"{type(cause).__name__}: {cause}"
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


# ---------------------------------------------------------------------------------------------------------
# The sharded analyses: shards out, parts back
# ---------------------------------------------------------------------------------------------------------

def _source_of(given: Any, loaded: Any) -> Any:
    """What the workers load: the name or directory the caller gave (with the device the caller loaded it onto),
    else the loaded model (sent by name)."""
    return model_source(given, loaded) if isinstance(given, (str, Path)) else loaded


def _sweep_shard(model, **kwargs):
    from circuitlab.patching.exact import sweep as one_process

    return one_process(model, **kwargs)


def sweep(model: Any, clean_tokens: Any, corrupted_tokens: Any, metric: Any, site: str, by: Any, direction: str, *,
          layers: Any, fast: bool, max_memory: int, executor: Any):
    """:func:`circuitlab.patching.sweep` with its layers shared out among ``executor``'s workers."""
    import dataclasses

    import torch

    from circuitlab.core import as_model, check_layers, check_max_memory
    from circuitlab.patching.sites import get_site, parse_by

    t0 = time.perf_counter()
    loaded = as_model(model)
    ex, owned = as_executor(executor)
    try:
        axes = parse_by(get_site(site), by)
        layer_list = check_layers(loaded, layers)
        check_max_memory(max_memory)
        groups = (split(layer_list, shard_count(ex, len(layer_list)), interleave=True) if "layer" in axes
                  else [layer_list])
        shards = [dict(clean_tokens=clean_tokens, corrupted_tokens=corrupted_tokens, metric=metric, site=site,
                       by=by, direction=direction, layers=g, fast=fast, max_memory=max_memory, progress=False)
                  for g in groups]
        parts, record = run_shards(ex, _source_of(model, loaded), _sweep_shard, shards)
    finally:
        if owned:
            ex.close()
    first = parts[0]
    if len(parts) == 1:
        return dataclasses.replace(first, meta={**first.meta, "executor": record})
    dim = first.axes.index("layer")
    order = [l for g in groups for l in g]
    perm = torch.tensor([order.index(l) for l in layer_list])
    values = torch.cat([p.values for p in parts], dim=dim)
    values = values.index_select(dim, perm.to(values.device))
    labels = dict(first.labels)
    joined = [lab for p in parts for lab in p.labels["layer"]]
    labels["layer"] = [joined[i] for i in perm.tolist()]
    meta = {**first.meta, "layers": layer_list, "n_patches": int(values.numel()),
            "seconds": time.perf_counter() - t0, "executor": record,
            "peak_chunk_bytes": max(p.meta.get("peak_chunk_bytes", 0) for p in parts)}
    return dataclasses.replace(first, values=values, labels=labels, meta=meta)


def _edges_shard(model, **kwargs):
    from circuitlab.circuits.patch import run_passes

    return run_passes(model, **kwargs)


def patch_edges(model: Any, clean_tokens: Any, corrupted_tokens: Any, removed: Any, metric: Any, *, ablation: str,
                max_memory: int, executor: Any):
    """:func:`circuitlab.circuits.patch_edges` with its passes (the edge sets in the batches one process would
    run) shared out among ``executor``'s workers in contiguous blocks; the values come back in order."""
    import torch

    from circuitlab.circuits.patch import plan_passes
    from circuitlab.core import as_model

    loaded = as_model(model)
    passes = plan_passes(loaded, clean_tokens, corrupted_tokens, removed, metric, ablation=ablation,
                         max_memory=max_memory)
    ex, owned = as_executor(executor)
    if not passes:  # no edge sets: nothing to share out, and one process's (empty) answer
        if owned:
            ex.close()
        from circuitlab.circuits.patch import patch_edges as one_process

        return one_process(loaded, clean_tokens, corrupted_tokens, removed, metric, ablation=ablation,
                           max_memory=max_memory)
    try:
        blocks = split(passes, shard_count(ex, len(passes), per_worker=2))
        shards = [dict(clean_tokens=clean_tokens, corrupted_tokens=corrupted_tokens, passes=block, metric=metric,
                       ablation=ablation, max_memory=max_memory) for block in blocks]
        parts, _ = run_shards(ex, _source_of(model, loaded), _edges_shard, shards)
    finally:
        if owned:
            ex.close()
    return torch.cat(parts)


def _tracing_shard(model, facts, **kwargs):
    from circuitlab.tracing import average_indirect_effect as one_process

    res = one_process(model, facts, **kwargs)
    return res.meta["per_fact"], res.meta["facts"], res.meta["seconds"]


def average_indirect_effect(model: Any, triples: list, *, kinds: list, window: int, noise: float, sigma: float,
                            samples: int, seed: int, max_memory: int, executor: Any, loaded: Any = None):
    """The per-fact table of :func:`circuitlab.tracing.average_indirect_effect`, its facts shared out among
    ``executor``'s workers in contiguous blocks (every fact is traced with the same seed, so a fact's trace does
    not depend on its shard). ``loaded``: the caller's model loaded from ``model`` (a name or directory), whose
    device the workers then load onto. Returns ``(per_fact, rows, seconds, record)`` for the caller to average."""
    import torch

    ex, owned = as_executor(executor)
    try:
        blocks = split(triples, shard_count(ex, len(triples)))
        shards = [dict(facts=block, kinds=kinds, window=window, noise=noise, sigma=sigma, samples=samples, seed=seed,
                       max_memory=max_memory, progress=False) for block in blocks]
        parts, record = run_shards(ex, model if loaded is None else _source_of(model, loaded), _tracing_shard,
                                   shards)
    finally:
        if owned:
            ex.close()
    per_fact = torch.cat([p[0] for p in parts])
    rows = [r for p in parts for r in p[1]]
    return per_fact, rows, sum(p[2] for p in parts), record


def _collect_shard(model, sentences, batches, hooks, pool, dtype):
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
