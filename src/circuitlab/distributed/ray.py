"""Ray's executor: actors, each holding one model replica, that run the shards of an analysis.

:class:`RayExecutor` implements the :class:`~circuitlab.engine.executor.Executor` protocol (``map(model, fn,
shards)``, ``workers``, ``close()``, a context manager) on Ray (``pip install 'circuitlab[distributed]'``). It knows
nothing of the analyses: each analysis cuts its own work into shards and gathers the parts
(:mod:`circuitlab.engine.executor`); Ray places the actors and moves the data.

A replica is loaded in each actor by name (a zoo name, a real model's name, a TransformerLens pretrained name)
or from a directory written by :func:`circuitlab.save_model`, onto the caller's model's device (a caller's
``cuda:N`` is a worker's ``cuda``: Ray numbers each worker's GPUs from 0); a model object is sent by its name and
its weights are checked in the worker against the caller's (:func:`~circuitlab.models.identity.weight_fingerprint`):
a model changed after loading, or built in memory (``HookedTransformer(cfg)``, named ``"custom"``), must be saved
first and passed as its directory. Tensor arguments (tokens, masks, the tensors a metric holds) travel as CPU
tensors and are moved to the replica's device in the worker; parts come back as CPU tensors.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any, Callable, Optional, Sequence

from circuitlab.core import check_number, default_threads
from circuitlab.engine.executor import ShardError, describe_shard, move_tensors
from circuitlab.errors import CircuitlabError, InputError
from circuitlab.models.identity import ModelSource, device_of, replica_source, weight_fingerprint, worker_device

__all__ = ["RayExecutor"]

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
        check_number(cpus_per_worker, "cpus_per_worker", low=0, low_open=True, what="a positive number")
        if gpus_per_worker is not None:
            check_number(gpus_per_worker, "gpus_per_worker", low=0,
                         what="None (1 for a model on CUDA, else 0) or a number >= 0")
        if start_timeout is not None:
            check_number(start_timeout, "start_timeout", low=0, low_open=True,
                         what="None (no limit) or a positive number of seconds")
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
        source = replica_source(model)  # the caller's weights, hashed again: replicas of other weights restart
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

        # the reserved CPUs, never more than the cores this worker may use; CIRCUITLAB_THREADS overrides
        torch.set_num_threads(default_threads(processes=1, cap=max(1, int(threads))))
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
