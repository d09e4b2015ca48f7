"""Model identity, written once: which model is this, and where can another process get the same one?

- :func:`weight_fingerprint`: a hash of every parameter's name, shape, dtype and bytes, equal exactly when the
  weights are equal; the one answer to "same model?" (caches keyed by model, a worker's replica checked against the
  caller's model). Memoised per parameter while its state (:func:`circuitlab.core.weight_state`) is unchanged;
  ``recheck=True`` hashes every byte again (for what outlives a weight state: caches on disk, replicas).
- :class:`ModelSource` and :func:`model_source`: what an executor's worker loads (a name or a saved directory), the
  fingerprint its weights must match, and the device to load onto.
- :func:`device_of` and :func:`worker_device`: the device a model lives on, and the one a worker loads onto.
"""

from __future__ import annotations

import dataclasses
import hashlib
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from circuitlab.core import shorten
from circuitlab.errors import CircuitlabError, InputError

__all__ = ["ModelSource", "device_of", "model_source", "replica_source", "weight_fingerprint", "worker_device"]


@dataclass(frozen=True)
class ModelSource:
    """How a worker gets its model replica: ``spec`` for :func:`circuitlab.load_model` (or ``load_encoder``),
    the weights' fingerprint it must match, and the device to load onto.

    ``loaded``: the caller's model, already loaded from ``spec`` in this process, if any. An in-process executor
    runs on it instead of loading a second copy; it is not compared, not shown, and never sent to another process
    (:meth:`load` always loads, as a worker does)."""

    spec: str
    fingerprint: Optional[str] = None
    device: Optional[str] = None
    loaded: Any = dataclasses.field(default=None, compare=False, repr=False)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "loaded": None}  # a worker loads its own replica; the caller's weights stay here

    def load(self):
        """A replica loaded from ``spec`` onto ``device``, its weights checked against ``fingerprint``."""
        from circuitlab.models.loading import as_any_model, load_model
        from circuitlab.models.real import real_models

        real = real_models().get(self.spec)
        if real is not None and real.kind == "encoder":
            model = as_any_model(self.spec)
            if self.device is not None:
                model = model.to(self.device)
        else:
            model = load_model(self.spec, device=self.device)
        if self.fingerprint is not None and weight_fingerprint(model) != self.fingerprint:
            raise CircuitlabError(
                f"the model loaded as {shorten(self.spec)} in a worker has other weights than the caller's model (it "
                "was "
                "changed after loading?). Save it with circuitlab.save_model(model, DIR) and pass DIR as the model.")
        return model


#: per model: ``{parameter name: (its state, the digest of its bytes)}`` (see :func:`weight_fingerprint`)
_FINGERPRINTS: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()
#: parameters are hashed in pieces of this many bytes, several at once (``hashlib`` releases the GIL); the pieces
#: are fixed, so the digest does not depend on the thread count
_PIECE = 64 * 2**20
#: at most this many bytes of parameters copied to the CPU (from a GPU, or made contiguous) wait to be hashed
_COPIED = 512 * 2**20


def weight_fingerprint(model: Any, *, recheck: bool = False) -> str:
    """A hash of every parameter's name, shape, dtype and bytes (SHA-256): equal exactly when the weights are
    equal (a sum or a norm would depend on the thread count that computed it). The one answer to "same model?".

    Each parameter's digest is kept while its state is unchanged (:func:`circuitlab.core.weight_state`: the same
    tensor, version counter, storage address and device), so asking again costs nothing and a change to one
    parameter rehashes that parameter only. The state does not see writes into ``p.data`` in place
    (``p.data[:, [0, 1]] = p.data[:, [1, 0]]``, ``p.data.mul_(2)``), which PyTorch counts in no version counter:
    ``recheck=True`` hashes every byte again. Whatever reuses numbers computed from weights at another time or in
    another process (the activation cache on disk, Ray replicas, result memos) asks with ``recheck=True``."""
    if not callable(getattr(model, "named_parameters", None)):
        raise InputError(f"model must be a loaded model (a torch module with parameters) to fingerprint its weights; "
                         f"got {shorten(model, 40)} ({type(model).__name__}). Load it first: "
                         "circuitlab.load_model(name).")
    params = list(model.named_parameters())
    try:
        known = _FINGERPRINTS.get(model)
    except TypeError:  # not weak-referenceable: nothing is kept
        known = None
    known = {} if known is None or recheck else known
    states = {name: _param_state(p) for name, p in params}
    todo = [(name, p) for name, p in params if known.get(name, (None,))[0] != states[name]]
    digests = {name: known[name][1] for name, _ in params if name in known and known[name][0] == states[name]}
    digests.update(_param_digests(todo))
    h = hashlib.sha256()
    for name, p in params:
        h.update(f"{name}{tuple(p.shape)}{p.dtype}".encode())
        h.update(digests[name])
    try:
        _FINGERPRINTS[model] = {name: (states[name], digests[name]) for name, _ in params}
    except TypeError:
        pass
    return h.hexdigest()[:32]


def _param_state(p: Any) -> tuple:
    """What :func:`circuitlab.core.weight_state` keys one parameter on (identity, version, storage, device), with
    its shape, strides and dtype."""
    return (id(p), p._version, p.data_ptr(), str(p.device), tuple(p.shape), p.stride(), p.dtype)


def _param_digests(params: list) -> dict[str, bytes]:
    """``{name: digest}`` of each parameter's bytes: the SHA-256 of its pieces' SHA-256 digests (pieces of
    :data:`_PIECE` bytes, hashed on a few threads). Parameters on another device than the CPU are copied to it a
    few at a time (at most :data:`_COPIED` bytes held at once: a model on a GPU is never copied whole)."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    import torch

    if not params:
        return {}
    sha = lambda piece: hashlib.sha256(piece.numpy().data).digest()  # noqa: E731
    workers = max(1, min(os.cpu_count() or 1, 16))
    hashes: dict[str, "hashlib._Hash"] = {}
    pieces: list = []  # (name, piece) waiting to be hashed
    copied = 0

    def flush(pool) -> None:
        nonlocal copied
        parts = pool.map(sha, [piece for _, piece in pieces]) if pool is not None else map(
            sha, [piece for _, piece in pieces])
        for (name, _), part in zip(pieces, parts):
            hashes[name].update(part)
        pieces.clear()
        copied = 0

    with ThreadPoolExecutor(workers) as pool:
        for name, p in params:
            t = p.detach().to("cpu").contiguous().reshape(-1)
            if p.device.type != "cpu" or t.data_ptr() != p.data_ptr():
                copied += t.numel() * t.element_size()
            raw = t.view(torch.uint8) if t.numel() else torch.empty(0, dtype=torch.uint8)
            hashes[name] = hashlib.sha256()
            pieces.extend((name, raw[at:at + _PIECE]) for at in range(0, max(raw.numel(), 1), _PIECE))
            if copied > _COPIED:
                flush(pool)
        flush(pool if workers > 1 else None)
    return {name: h.digest() for name, h in hashes.items()}


def shard_source(given: Any, loaded: Any) -> Any:
    """What an executor's workers load for a call given ``given`` (a name, a directory or a model) and holding
    ``loaded`` (the caller's model): the name or directory as given, with ``loaded`` (its device, and the model
    itself for executors in this process), else the loaded model, which the executor turns into its source."""
    return model_source(given, loaded) if isinstance(given, (str, Path)) else loaded


def model_source(model: Any, loaded: Any = None) -> ModelSource:
    """The :class:`ModelSource` of ``model``: a name or a saved directory as given (with the device of ``loaded``,
    the caller's model loaded from it, when given, kept as ``loaded`` for executors in this process), or a
    loaded model's directory (when it was loaded from one) or name, with its device and its weights' fingerprint
    (every byte hashed again, ``recheck=True``: writes into ``p.data`` in place are seen; checked in each worker).
    A name or directory as given has no fingerprint here (most calls run in this process and need none):
    :func:`replica_source` adds it for executors that keep replicas.

    A model whose name :func:`circuitlab.load_model` cannot resolve here without the network (one built in memory,
    ``HookedTransformer(cfg)``, is named ``"custom"``) is an :class:`~circuitlab.errors.InputError`: a worker could
    not load it."""
    if isinstance(model, ModelSource):
        return model
    if isinstance(model, (str, Path)):
        return ModelSource(str(model), None, None if loaded is None else device_of(loaded), loaded)
    name = getattr(model, "_circuitlab_source", None) or str(getattr(getattr(model, "cfg", None), "model_name", "")
                                                              or "")
    if not name or not _resolvable(name):
        what = f"named {name!r}" if name else "without a name"
        raise InputError(f"model: a model {what} (built in memory, or renamed) cannot be reloaded in a worker: "
                         "circuitlab.load_model does not know that name. Save it with circuitlab.save_model(model, "
                         "DIR) and pass DIR as the model.")
    return ModelSource(name, weight_fingerprint(model, recheck=True), device_of(model))


def replica_source(model: Any) -> Optional[ModelSource]:
    """What an executor that keeps model replicas between calls (Ray's) compares its replicas against: the
    :class:`ModelSource` of ``model`` (see :func:`model_source`) with the fingerprint of the caller's weights
    always set, every byte hashed again. A name or directory given with the model loaded from it gets that
    model's fingerprint, so a directory saved again with other weights is not served by replicas of the old
    ones. ``None`` for no model."""
    if model is None:
        return None
    source = model_source(model)
    if source.fingerprint is None and source.loaded is not None:
        source = dataclasses.replace(source, fingerprint=weight_fingerprint(source.loaded, recheck=True))
    return source


def _resolvable(name: str) -> bool:
    """Whether :func:`circuitlab.load_model` (or ``load_encoder``) resolves ``name`` without the network: a real
    model, a zoo name, an existing directory, or a TransformerLens pretrained name (not its default ``"custom"``)."""
    from circuitlab.models.loading import ZOO_PREFIX, zoo_entries
    from circuitlab.models.real import real_models

    if name == "custom":  # HookedTransformerConfig's default model_name
        return False
    if name in real_models():
        return True
    if name.startswith(ZOO_PREFIX):
        return any(e.name == name for e in zoo_entries())
    if Path(name).expanduser().exists():
        return True
    from transformer_lens.loading_from_pretrained import get_official_model_name

    try:
        get_official_model_name(name)
    except ValueError:
        return False
    return True


def device_of(model: Any) -> str:
    """The device ``model``'s parameters live on (``"cpu"``, ``"cuda:1"``...), else its ``cfg.device``."""
    if not callable(getattr(model, "parameters", None)):
        from circuitlab.core import shorten

        raise InputError(f"model must be a loaded model (a torch module); got {shorten(model)}.")
    for p in model.parameters():
        return str(p.device)
    return str(getattr(getattr(model, "cfg", None), "device", None) or "cpu")


def worker_device(device: Optional[str]) -> Optional[str]:
    """The device a worker loads onto for a caller's ``device``: ``"cuda"`` for any ``"cuda:N"`` (Ray shows a
    worker only its own GPUs, numbered from 0), anything else as it is."""
    if device is not None and str(device).startswith("cuda"):
        return "cuda"
    return device
