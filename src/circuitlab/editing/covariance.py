"""The second moment ``C = E[k k^T]`` of one MLP layer's keys over a corpus, the metric ROME and MEMIT preserve.

A key ``k`` is the input of ``W_out`` at one token (``blocks.L.mlp.hook_post``). ROME's update leaves the outputs
for keys in the corpus as unchanged as it can (it minimises ``|Delta K|`` weighted by ``C``); Meng et al. (2022)
estimate ``C`` from 100,000 Wikipedia samples, which is where users of the reference code spend hours. Here:

- the corpus defaults to the Debian text the package already uses (King James verses and fortune cookies,
  :func:`circuitlab.tasks.sentences.debian_corpus_lines`; public domain and BSD), or any list of texts;
- the first ``n_tokens`` tokens (BOS positions left out: their keys are the model's attention-sink outliers, not a
  subject token's) are read in batches under ``max_memory``, the model run only up to block ``L``, and ``K^T K``
  summed in float64;
- the result is cached on disk (a checksummed cache entry, :func:`circuitlab.core.write_cache_entry`) under a key
  of the weights' fingerprint (:func:`circuitlab.models.identity.weight_fingerprint`), the layer, a hash of the
  corpus and the token count, so an edited or retrained model never reads another model's statistics.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
from jaxtyping import Float
from torch import Tensor

from circuitlab.core import (DEFAULT_MAX_MEMORY, ModelLike, as_model, check_count, check_max_memory, check_mlp_layer,
                             check_texts, model_name, progress_bar, read_cache_entry, shorten, to_tokens,
                             warn_cache_entry, write_cache_entry)
from circuitlab.engine.collect import stream_activations
from circuitlab.errors import CircuitlabError, InputError

__all__ = ["KeyCovariance", "key_covariance", "default_corpus"]

#: bump when what is cached changes
COVARIANCE_FORMAT = 1
#: tokens read by default (ROME reads 100,000 samples; how many are needed is measured in benchmarks/editing.py)
DEFAULT_TOKENS = 20_000


@dataclass(frozen=True, eq=False)
class KeyCovariance:
    """``C = E[k k^T]`` of layer ``layer``'s MLP keys (``matrix``, ``[d_mlp, d_mlp]`` float64), from ``n_tokens``
    tokens of ``corpus``; ``cached``: read from disk; ``seconds``: time to compute or read."""

    matrix: Float[Tensor, "d_mlp d_mlp"]
    layer: int
    n_tokens: int
    corpus: str
    cached: bool
    seconds: float


def default_corpus() -> tuple[list[str], str]:
    """The default corpus and its name: King James verses and fortune cookies interleaved, from the Debian packages
    (:func:`circuitlab.tasks.sentences.debian_corpus_lines`); where they are missing, the held-out KJV books that
    ship with ``zoo/toy-lm`` (27 KB), with a warning."""
    from circuitlab.tasks.sentences import debian_corpus_lines

    try:
        kjv, cookies = debian_corpus_lines(0)
    except CircuitlabError as e:
        from circuitlab.zoo.toy_lm import load_heldout_text

        warnings.warn(f"key_covariance: the Debian corpora are missing ({e}); using the held-out KJV text that "
                      "ships with zoo/toy-lm instead", stacklevel=3)
        return [line for line in load_heldout_text().splitlines() if line.strip()], "toy-lm-heldout"
    texts = [t for pair in zip(kjv, cookies) for t in pair]
    return texts, "debian-kjv-fortunes-seed0"


def _cache_path(cache: Any, model: Any, key: dict) -> Optional[Path]:
    if cache is False or cache is None:
        return None
    if cache is True:
        from circuitlab.models.real import cache_root

        root = cache_root() / "editing" / "covariance"
    elif isinstance(cache, (str, Path)):
        root = Path(cache).expanduser()
    else:
        raise InputError(f"cache must be True (the circuitlab cache), False (none) or a directory; got "
                         f"{shorten(cache)}.")
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in (model_name(model) or "model"))
    return root / name / f"layer{key['layer']}-{digest}.pt"


def key_covariance(model: ModelLike, layer: int, corpus: Optional[Sequence[str]] = None, *,
                   n_tokens: int = DEFAULT_TOKENS, cache: Union[bool, str, Path] = True,
                   max_memory: int = DEFAULT_MAX_MEMORY, progress: bool = False) -> KeyCovariance:
    """The second moment ``E[k k^T]`` of layer ``layer``'s MLP keys over the first ``n_tokens`` tokens of
    ``corpus`` (a list of texts; default :func:`default_corpus`), BOS positions left out; cached on disk (``cache``:
    True for the circuitlab cache, a directory, or False). Fewer tokens than ``n_tokens`` in the corpus is an error."""
    model = as_model(model)
    layer = check_mlp_layer(model, layer)
    n_tokens = check_count(n_tokens, "n_tokens")
    max_memory = check_max_memory(max_memory)
    if corpus is None:
        texts, corpus_name = default_corpus()
    else:
        texts = check_texts(corpus, "corpus", item="text")
        corpus_name = "texts-" + hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:20]
    if model.tokenizer is None:
        raise InputError("key_covariance reads texts, but this model has no tokenizer.")
    from circuitlab.models.identity import weight_fingerprint

    key = {"format": COVARIANCE_FORMAT, "model": model_name(model), "weights": weight_fingerprint(model, recheck=True),
           "layer": layer, "corpus": corpus_name, "n_tokens": n_tokens, "dtype": str(model.cfg.dtype)}
    path = _cache_path(cache, model, key)
    t0 = time.perf_counter()
    if path is not None:
        entry = read_cache_entry(path, key=key)
        if entry is not None:
            payload, count = entry
            try:
                matrix = torch.load(io.BytesIO(payload), weights_only=True)
            except Exception as exc:  # noqa: BLE001 - a damaged payload is recomputed
                warn_cache_entry(path, f"cannot be read as a tensor ({type(exc).__name__})")
                matrix = None
            d = model.cfg.d_mlp
            if matrix is not None and tuple(matrix.shape) == (d, d) and count == n_tokens:
                return KeyCovariance(matrix, layer, n_tokens, corpus_name, True, time.perf_counter() - t0)
            if matrix is not None:
                warn_cache_entry(path, f"holds a {tuple(matrix.shape)} matrix of {count} tokens, not [{d}, {d}] of "
                                       f"{n_tokens}")
    bos = 1 if model.cfg.default_prepend_bos else 0
    rows, total = [], 0
    for text in texts:
        if total >= n_tokens:
            break
        ids = to_tokens(model, text)[0][: model.cfg.n_ctx]
        take = min(len(ids) - bos, n_tokens - total)
        if take <= 0:
            continue
        rows.append(ids[: bos + take])
        total += take
    if total < n_tokens:
        raise InputError(f"n_tokens={n_tokens:,}: the corpus ({corpus_name}) has only {total:,} tokens for this model; "
                         "ask for fewer or give more texts.")
    d = model.cfg.d_mlp
    acc = torch.zeros(d, d, dtype=torch.float64)
    hook = f"blocks.{layer}.mlp.hook_post"
    batches = stream_activations(model, rows, hook, lambda act: act.double().cpu(),
                                 max_memory=max_memory)
    for batch, toks, acts in progress_bar(batches, progress=progress, desc=f"key covariance (layer {layer})",
                                          unit="batch"):
        for i, row in enumerate(batch):
            k = acts[i, bos:len(row)]
            if not bool(torch.isfinite(k).all()):
                raise InputError(f"the MLP keys of layer {layer} are NaN or infinite on the corpus text "
                                 f"{shorten(model.to_string(row))}: the covariance would be NaN.")
            acc += k.T @ k
    matrix = acc / n_tokens
    if path is not None:
        buf = io.BytesIO()
        torch.save(matrix, buf)
        write_cache_entry(path, buf.getvalue(), count=n_tokens, key=key)
    return KeyCovariance(matrix, layer, n_tokens, corpus_name, False, time.perf_counter() - t0)
