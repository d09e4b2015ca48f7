"""Saving and loading models in circuitlab's directory format.

A model directory holds:

- ``config.json``: the ``HookedTransformerConfig`` fields (JSON-safe: dtypes as strings);
- ``model.safetensors``: the weights (``model.state_dict()``);
- tokenizer files (``tokenizer.json`` and friends, as ``save_pretrained`` writes them), if the model has one;
- ``card.json`` (optional): a name, a one-line description, how it was made and what was measured.

Everything loads offline: no hub is contacted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Shaped
from safetensors.torch import load_file, save_file
from transformer_lens import HookedTransformer, HookedTransformerConfig

from circuitlab.core import read_json_file, shorten
from circuitlab.errors import CircuitlabError, ModelNotFoundError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "card.json"
TOKENIZER_FILE = "tokenizer.json"


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.dtype):
        return str(value)  # "torch.float32"
    if isinstance(value, torch.device):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def config_to_dict(cfg: HookedTransformerConfig) -> dict[str, Any]:
    """The config's constructor fields as JSON-safe values (derived fields are recomputed on load)."""
    import dataclasses

    out = {}
    for f in dataclasses.fields(cfg):
        if not f.init or f.name in ("device",):
            continue
        out[f.name] = _jsonable(getattr(cfg, f.name))
    return out


def config_from_dict(d: dict[str, Any], device: str | None = None) -> HookedTransformerConfig:
    import dataclasses

    d = dict(d)
    known = {f.name for f in dataclasses.fields(HookedTransformerConfig) if f.init}
    unknown = sorted(set(d) - known)
    if unknown:
        raise CircuitlabError(
            f"config.json has fields this transformer-lens does not know: {unknown}. The model was saved by a "
            "different transformer-lens version; upgrade or downgrade transformer-lens to match."
        )
    if isinstance(d.get("dtype"), str):
        d["dtype"] = getattr(torch, d["dtype"].removeprefix("torch."))
    d["device"] = device or "cpu"
    return HookedTransformerConfig(**d)


def save_model(model: HookedTransformer, path: str | Path, card: dict[str, Any] | None = None) -> Path:
    """Write ``model`` to directory ``path`` (config JSON, safetensors weights, tokenizer files, card).

    ``circuitlab.load_model(path)`` reads it back with identical logits.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    cfg = config_to_dict(model.cfg)
    (path / CONFIG_FILE).write_text(json.dumps(cfg, indent=1, sort_keys=True) + "\n")
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(path / WEIGHTS_FILE), metadata={"format": "circuitlab-hooked-transformer"})
    if model.tokenizer is not None:
        model.tokenizer.save_pretrained(str(path))
    if card is not None:
        (path / CARD_FILE).write_text(json.dumps(_jsonable(card), indent=1) + "\n")
    return path


def is_model_dir(path: Path) -> bool:
    return path.is_dir() and (path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()


def read_card(path: str | Path) -> dict[str, Any]:
    p = Path(path) / CARD_FILE
    return read_json_file(p, "model card") if p.is_file() else {}


def load_tokenizer(path: Path):
    """The tokenizer saved in ``path``, or ``None`` if the model has none."""
    if not (path / TOKENIZER_FILE).is_file():
        return None
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(path))
    if tokenizer.bos_token is not None and not tokenizer.init_kwargs.get("add_bos_token"):
        # transformers 5 does not save add_bos_token; without it TransformerLens's get_tokenizer_with_bos
        # reloads the tokenizer with AutoTokenizer.from_pretrained(path), which misreads our config.json.
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(path), add_bos_token=True)
    return tokenizer


def load_model_dir(path: str | Path, device: str | None = None, name: str | None = None) -> HookedTransformer:
    """Load a model directory written by :func:`save_model`."""
    path = Path(path)
    if not is_model_dir(path):
        raise ModelNotFoundError(
            f"{shorten(str(path), 300)} is not a circuitlab model directory: it needs {CONFIG_FILE} and "
            f"{WEIGHTS_FILE}. Write one with circuitlab.save_model(model, path)."
        )
    cfg = config_from_dict(read_json_file(path / CONFIG_FILE, "model config"), device=device)
    if name is not None:
        cfg.model_name = name
    tokenizer = load_tokenizer(path)
    # no random initialisation (its values are overwritten: for Gemma-3-270m it costs seconds), and the loaded
    # tensors become the parameters (assign=True) instead of being copied into them: one copy of the weights in
    # memory, not two (the parameters' uninitialised storage is released untouched)
    saved_init, cfg.init_weights = cfg.init_weights, False
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    cfg.init_weights = saved_init  # the saved config's value: a model rebuilt from model.cfg initialises as usual
    state = read_weights(path / WEIGHTS_FILE)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    del state
    # Buffers that HookedTransformer rebuilds itself (masks, rotary tables) may legitimately be absent.
    missing = [k for k in missing if not _is_rebuilt_buffer(k)]
    if missing or unexpected:
        raise CircuitlabError(
            f"weights in {path / WEIGHTS_FILE} do not match its config: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}. Re-save the model with circuitlab.save_model."
        )
    model.to(cfg.device, print_details=False)
    model.eval()
    return model


_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                       "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                       "U8": torch.uint8, "BOOL": torch.bool}


def read_weights(path: Path) -> dict[str, Shaped[torch.Tensor, "..."]]:
    """A safetensors file read into tensors that own their memory, each filled straight from the file.

    ``safetensors.torch.load_file`` returns tensors backed by a private memory map of the file: kept as a model's
    parameters they would change if the file were rewritten, and copying them into the parameters touches every
    page twice (two copies of the weights in the resident set). This reads each tensor's bytes into its own
    storage with one ``readinto`` (one copy of the weights in memory, nothing mapped). Files with a dtype this does
    not know are read by ``load_file`` and cloned.
    """
    import struct

    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        header.pop("__metadata__", None)
        if any(v["dtype"] not in _SAFETENSORS_DTYPES for v in header.values()):
            return {k: v.clone() for k, v in load_file(str(path)).items()}
        out = {}
        for name, v in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
            start, end = v["data_offsets"]
            t = torch.empty(v["shape"], dtype=_SAFETENSORS_DTYPES[v["dtype"]])
            f.seek(8 + n + start)
            if end > start and f.readinto(t.view(-1).view(torch.uint8).numpy()) != end - start:
                raise CircuitlabError(f"{shorten(str(path), 300)} is truncated (tensor {name!r}); re-save the model.")
            out[name] = t
    return out


def _is_rebuilt_buffer(key: str) -> bool:
    return key.endswith(("IGNORE", "mask", "rotary_sin", "rotary_cos"))
