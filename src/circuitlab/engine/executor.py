"""The execution layer: where the shards of an analysis run. Imports nothing of the analyses.

An analysis that can shard owns three small pieces, written at the end of its own module: **split** (its work
cut into independent shards, each a dict of keyword arguments), **run one shard** (a module-level function
``fn(model, **shard)`` running the single-process code on one model), and **gather** (the parts put back into the
Result one process returns). It hands the shards to an executor and never asks which one it got::

    ex, owned = as_executor(executor)          # None: the in-process default
    try:
        shards = [dict(layers=g, ...) for g in split(layers, shard_count(ex, len(layers)))]
        parts, record = run_shards(ex, shard_source(model, loaded), run_one, shards)
    finally:
        if owned:
            ex.close()
    return gather(parts)

An :class:`Executor` imitates :meth:`concurrent.futures.Executor.map`: ``map(model, fn, shards)`` returns
``[fn(replica, **shard) for shard in shards]`` in shard order, where ``replica`` is the caller's model in this
process, or a replica another process loaded from the :class:`~circuitlab.models.identity.ModelSource`; it has a
number of ``workers`` (how many shards an analysis should cut its work into), ``close()``, and is a context manager.

=========================  ====================================================================================
executor                   where the shards run
=========================  ====================================================================================
``None``                   :class:`InProcessExecutor`: this process, on the caller's model, one shard (the plain
                           call: nothing copied, errors raised as they are)
``"local"``                :class:`LocalExecutor`: this process, the shards one after another (for checking the
                           sharding, and for timing one shard)
``"ray"``                  ``circuitlab.distributed.RayExecutor``: Ray actors, each with its own model replica
an object                  anything with ``map(model, fn, shards)`` and ``workers`` (kept across calls)
=========================  ====================================================================================

Named executors come from a registry (:func:`register_executor`). ``"ray"`` is registered here by its import path
(``"circuitlab.distributed:RayExecutor"``), imported only when asked for: this is the one place the engine layer
names a module above it, as a string resolved lazily, like a package's entry point, so that
``import circuitlab.engine.executor`` never imports Ray or the distributed layer.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, Sequence, Union, runtime_checkable

from circuitlab.core import check_count, shorten
from circuitlab.errors import CircuitlabError, InputError
from circuitlab.models.identity import ModelSource

__all__ = ["Executor", "InProcessExecutor", "LocalExecutor", "ShardError", "as_executor", "describe_shard",
           "move_tensors", "register_executor", "run_shards", "shard_count", "split"]


class ShardError(CircuitlabError):
    """A shard failed in a worker: the message names the shard and carries the worker's error."""


@runtime_checkable
class Executor(Protocol):
    """Runs the shards of an analysis: ``map(model, fn, shards)`` is ``[fn(replica, **shard) for shard in
    shards]``, in shard order (as :meth:`concurrent.futures.Executor.map`), where ``replica`` is ``model`` itself
    in this process, a replica loaded from it elsewhere, or ``None`` when ``model`` is ``None`` (a task that needs
    no model). ``model`` is a loaded model, a name or directory for :func:`circuitlab.load_model`, or a
    :class:`~circuitlab.models.identity.ModelSource`. ``workers``: how many shards an analysis should cut its work
    into. A failing shard raises :class:`ShardError` naming it (the in-process default raises the error itself)."""

    @property
    def workers(self) -> int: ...

    def map(self, model: Any, fn: Callable, shards: Sequence[dict]) -> list: ...

    def close(self) -> None: ...

    def __enter__(self) -> "Executor": ...

    def __exit__(self, *exc) -> None: ...


def _here(model: Any) -> Any:
    """The model a shard runs on in this process: a loaded model as it is; a source's model already loaded here
    (:attr:`ModelSource.loaded`), else loaded from it; ``None`` for no model."""
    if isinstance(model, ModelSource):
        return model.loaded if model.loaded is not None else model.load()
    if isinstance(model, (str, Path)):
        return ModelSource(str(model)).load()
    return model


class _InProcess:
    """What the two in-process executors share: the caller's model, nothing to close, a context manager."""

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class InProcessExecutor(_InProcess):
    """The default (``executor=None``): the shards in this process, on the caller's model, exactly as a plain call
    runs them. Analyses cut their work into ``workers`` (one) shard, so the one-process path is the plain code:
    no tensor is copied, no error is wrapped, and the numbers are those of the unsharded computation."""

    workers = 1

    def map(self, model: Any, fn: Callable, shards: Sequence[dict]) -> list:
        model = _here(model)
        return [fn(model, **kwargs) for kwargs in shards]

    def __repr__(self) -> str:
        return "InProcessExecutor()"


@dataclass
class LocalExecutor(_InProcess):
    """The shards one after another, in this process, on the caller's model: the sharding and gathering of the
    distributed path with no Ray (for tests, and for timing one shard). ``workers``: how many shards to cut the
    work into, as for that many Ray workers."""

    workers: int = 1
    shard_seconds: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workers = check_count(self.workers, "workers")  # as RayExecutor checks its own

    def map(self, model: Any, fn: Callable, shards: Sequence[dict]) -> list:
        model = _here(model)
        out = []
        for i, kwargs in enumerate(shards):
            t0 = time.perf_counter()
            try:
                out.append(fn(model, **kwargs))
            except CircuitlabError:
                raise
            except Exception as exc:  # the same report as a Ray worker's
                raise ShardError(f"shard {i} of {len(shards)} ({describe_shard(kwargs)}) failed: "
                                 f"{type(exc).__name__}: {exc}") from exc
            self.shard_seconds.append(time.perf_counter() - t0)
        return out


# ---------------------------------------------------------------------------------------------------------
# Named executors
# ---------------------------------------------------------------------------------------------------------

#: executor names -> a factory (called with no arguments), or ``"module:attribute"`` imported on first use
_NAMED: dict[str, Union[Callable[[], Any], str]] = {"ray": "circuitlab.distributed:RayExecutor",
                                                     "local": LocalExecutor}


def register_executor(name: str, factory: Union[Callable[[], Any], str]) -> None:
    """Make ``executor=name`` build an executor with ``factory()`` (made for one call and closed after it).
    ``factory`` may be an import path ``"package.module:Class"``, imported only when the name is first used."""
    if not isinstance(name, str) or not name:
        raise InputError(f"name must be a non-empty string; got {shorten(name)}.")
    _NAMED[name] = factory


def _names() -> str:
    quoted = [repr(n) for n in _NAMED]
    return "None, " + ", ".join(quoted) + " or"


def as_executor(executor: Any) -> tuple[Any, bool]:
    """``(executor, owned)``: ``None`` is the :class:`InProcessExecutor`; a name (``"ray"``, ``"local"``, see
    :func:`register_executor`) makes a fresh executor; the caller must close both (``owned``). An executor object
    is used as given.

    ``"ray"`` imports ``circuitlab.distributed`` (its ``RayExecutor``) here, on first use: the one import of a
    layer above the engine, lazy and by name, so that the execution layer loads without Ray or the distributed
    layer, and an executor registered under another name plugs in the same way."""
    if executor is None:
        return InProcessExecutor(), True
    if isinstance(executor, str):
        factory = _NAMED.get(executor)
        if factory is None:
            raise InputError(f"executor must be {_names()} an executor object; got {shorten(executor)}.")
        if isinstance(factory, str):
            module, _, attr = factory.partition(":")
            factory = getattr(importlib.import_module(module), attr)
        return factory(), True
    if not callable(getattr(executor, "map", None)):
        raise InputError(f"executor must be {_names()} an object with a map(model, fn, shards) "
                         f"method (RayExecutor, LocalExecutor); got {type(executor).__name__}.")
    return executor, False


def run_shards(executor: Any, model: Any, fn: Callable, shards: Sequence[dict]) -> tuple[list, dict]:
    """Run ``fn(model_replica, **shard)`` for every shard on ``executor``; returns the parts and a record for the
    result's ``meta["executor"]`` (kind, workers, shards, seconds per shard).

    ``model``: a loaded model, a name or directory, a :class:`ModelSource`, or ``None`` (no model); ``shards``: a
    list of dicts, the keyword arguments of each ``fn`` call."""
    if not (model is None or isinstance(model, (str, Path, ModelSource))
            or callable(getattr(model, "parameters", None))):
        raise InputError(f"model must be a loaded model, a model name or directory, a ModelSource, or None; got "
                         f"{shorten(model)}.")
    if not callable(fn):
        raise InputError(f"fn must be a function fn(model, **shard) that runs one shard; got {shorten(fn)}.")
    if isinstance(shards, (str, bytes, dict)) or not isinstance(shards, Sequence):
        raise InputError(f"shards must be a list of dicts (the keyword arguments of each fn call); got "
                         f"{shorten(shards)}.")
    for i, kwargs in enumerate(shards):
        if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
            raise InputError(f"shards[{i}] must be a dict of fn's keyword arguments; got {shorten(kwargs)}.")
    ex, owned = as_executor(executor)
    t0 = time.perf_counter()
    before = len(getattr(ex, "shard_seconds", []))
    try:
        parts = ex.map(model, fn, shards)
    finally:
        if owned:
            ex.close()
    record = {"kind": type(ex).__name__, "workers": ex.workers, "shards": len(shards),
              "seconds": time.perf_counter() - t0,
              "shard_seconds": list(getattr(ex, "shard_seconds", [])[before:]),
              "startup_seconds": getattr(ex, "startup_seconds", 0.0)}
    return parts, record


def split(items: Sequence, n: int, interleave: bool = False) -> list[list]:
    """``items`` cut into at most ``n`` non-empty parts: contiguous blocks, or every n-th item (``interleave``)."""
    items = list(items)
    n = max(1, min(n, len(items)))
    if interleave:
        return [items[i::n] for i in range(n)]
    size, extra = divmod(len(items), n)
    out, at = [], 0
    for i in range(n):
        step = size + (1 if i < extra else 0)
        out.append(items[at:at + step])
        at += step
    return out


def shard_count(executor: Any, n_items: int, per_worker: int = 1) -> int:
    """How many shards to cut ``n_items`` into for ``executor``: ``per_worker`` per worker (shards for several
    workers to balance), at most one per item; one worker (one process) runs one shard."""
    workers = 1 if executor is None else 2 if isinstance(executor, str) else getattr(executor, "workers", 2)
    if workers == 1:
        return 1
    return max(1, min(n_items, workers * per_worker))


def describe_shard(kwargs: dict) -> str:
    """A shard's arguments in a few words, for the error that names a failing shard."""
    parts = []
    for k, v in kwargs.items():
        if isinstance(v, (list, tuple)) and len(v) > 6:
            parts.append(f"{k}: {len(v)} items")
        elif hasattr(v, "shape"):
            parts.append(f"{k}: shape {tuple(v.shape)}")
        else:
            parts.append(f"{k}={v!r:.60}")
    return ", ".join(parts)


def move_tensors(obj: Any, device: Any, *, drop_models: bool = False, _seen: Optional[dict] = None) -> Any:
    """``obj`` with every tensor in it on ``device``: tensors nested in dicts, lists and tuples, in the fields of
    dataclasses (a :class:`~circuitlab.results.Result`) and in the attributes of circuitlab's metric objects.
    Containers and objects holding a tensor that moves are copied (``obj`` is left unchanged); everything else is
    returned as it is. ``drop_models``: a model held by a metric becomes ``None`` (every analysis binds the metric
    to the model it runs, so a worker's replica takes its place; the caller's weights are not sent)."""
    import torch

    from circuitlab.metrics import LogitMetric

    seen = {} if _seen is None else _seen
    if id(obj) in seen:
        return seen[id(obj)]
    move = lambda v: move_tensors(v, device, drop_models=drop_models, _seen=seen)  # noqa: E731
    if isinstance(obj, torch.Tensor):
        return obj if obj.device == torch.device(device) else obj.detach().to(device)
    if isinstance(obj, (str, bytes, int, float, bool, type(None), torch.nn.Module)):
        return obj
    seen[id(obj)] = obj  # a container that holds itself is left as it is
    out = obj
    if type(obj) in (dict, list, tuple) or (isinstance(obj, tuple) and hasattr(obj, "_fields")):
        items = list(obj.items()) if isinstance(obj, dict) else list(obj)
        moved = [(k, move(v)) for k, v in items] if isinstance(obj, dict) else [move(v) for v in items]
        if any((m[1] is not v[1]) if isinstance(obj, dict) else (m is not v) for m, v in zip(moved, items)):
            out = (dict(moved) if isinstance(obj, dict) else moved if isinstance(obj, list)
                   else tuple(moved) if type(obj) is tuple else type(obj)(*moved))
    elif isinstance(obj, LogitMetric) or (dataclasses.is_dataclass(obj) and not isinstance(obj, type)):
        attrs = getattr(obj, "__dict__", {})
        changed = {}
        for k, v in attrs.items():
            if drop_models and isinstance(obj, LogitMetric) and isinstance(v, torch.nn.Module):
                changed[k] = None
                continue
            m = move(v)
            if m is not v:
                changed[k] = m
        if changed:
            out = copy.copy(obj)
            for k, v in changed.items():
                object.__setattr__(out, k, v)  # frozen dataclasses too
    seen[id(obj)] = out
    return out
