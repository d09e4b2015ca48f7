"""Model identity, written once: which model is this, and where can another process get the same one?

- :func:`weight_fingerprint`: a hash of every parameter's name, shape, dtype and bytes, equal exactly when the
  weights are equal; the one answer to "same model?" (caches keyed by model, a worker's replica checked against the
  caller's model). Memoised per model while :func:`circuitlab.core.weight_state` is unchanged.
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

from circuitlab.core import shorten, weight_state
from circuitlab.errors import CircuitlabError, InputError

__all__ = ["ModelSource", "device_of", "model_source", "weight_fingerprint", "worker_device"]


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


_FINGERPRINTS: "weakref.WeakKeyDictionary[Any, tuple]" = weakref.WeakKeyDictionary()


def weight_fingerprint(model: Any) -> str:
    """A hash of every parameter's name, shape, dtype and bytes: equal exactly when the weights are equal (a sum
    or a norm would depend on the thread count that computed it). Kept per model while no parameter is replaced,
    changed in place or moved (:func:`circuitlab.core.weight_state`), so asking again costs nothing."""
    import torch

    state = weight_state(model)
    try:
        known = _FINGERPRINTS.get(model)
    except TypeError:
        known = None
    if known is not None and known[0] == state:
        return known[1]
    h = hashlib.blake2b(digest_size=16)
    for name, p in model.named_parameters():
        t = p.detach().to("cpu").contiguous()
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().data if t.numel() else b"")
    digest = h.hexdigest()
    try:
        _FINGERPRINTS[model] = (state, digest)
    except TypeError:
        pass
    return digest


def shard_source(given: Any, loaded: Any) -> Any:
    """What an executor's workers load for a call given ``given`` (a name, a directory or a model) and holding
    ``loaded`` (the caller's model): the name or directory as given, with ``loaded`` (its device, and the model
    itself for executors in this process), else the loaded model, which the executor turns into its source."""
    return model_source(given, loaded) if isinstance(given, (str, Path)) else loaded


def model_source(model: Any, loaded: Any = None) -> ModelSource:
    """The :class:`ModelSource` of ``model``: a name or a saved directory as given (with the device of ``loaded``,
    the caller's model loaded from it, when given, kept as ``loaded`` for executors in this process), or a
    loaded model's directory (when it was loaded from one) or name, with its device and its weights' fingerprint
    (checked in each worker).

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
    return ModelSource(name, weight_fingerprint(model), device_of(model))


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
    for p in model.parameters():
        return str(p.device)
    return str(getattr(getattr(model, "cfg", None), "device", None) or "cpu")


def worker_device(device: Optional[str]) -> Optional[str]:
    """The device a worker loads onto for a caller's ``device``: ``"cuda"`` for any ``"cuda:N"`` (Ray shows a
    worker only its own GPUs, numbered from 0), anything else as it is."""
    if device is not None and str(device).startswith("cuda"):
        return "cuda"
    return device
