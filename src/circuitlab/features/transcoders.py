"""Transcoders: sparse replacements of MLP layers (MLP input -> sparse latents -> MLP output).

A transcoder reads what an MLP reads (its normalised input, ``blocks.L.ln2.hook_normalized``) and predicts what the
MLP writes (``blocks.L.hook_mlp_out``) through a sparse, non-negative code (Dunefsky, Chlenski & Nanda 2024,
"Transcoders find interpretable LLM feature circuits"; Ameisen et al. 2025, "Circuit Tracing")::

    pre   = x_in @ W_enc + b_enc                                  # [.., d_sae]   (no b_dec subtracted: d_in != d_out)
    f     = act(pre)                                              # the latents (features)
    y_hat = f @ W_dec + b_dec  [+ x_in @ W_skip.T]                # [.., d_out]   (the optional linear skip)

``act`` is one of the SAE architectures of :mod:`~circuitlab.features.sae` (``topk``: the ``k`` largest kept;
``standard``: ReLU; ``jumprelu``). Because the output differs from the input, the MLP's nonlinearity is replaced by
the latents' and an attribution graph can be read through them (:mod:`circuitlab.graphs`).

**Training** (:func:`train_transcoders`): the machinery of :mod:`~circuitlab.features.training` - token windows with
BOS (BOS positions not trained on), the one shuffled :class:`~circuitlab.features.training.ActivationBuffer` holding
the input and output hooks of every layer from the same forward passes (the same shuffle, so each input row stays
paired with its output row), Adam with warm-up and decay, decoder rows at unit norm (TopK), AuxK on dead latents.
The loss is the FVU of the MLP output (``||y - y_hat||^2`` over the output's variance); inputs and outputs are each
scaled to ``E||.||^2 = d`` during training and the scales folded back into the weights.

**Format**: SAELens's folder (``cfg.json`` + ``sae_weights.safetensors``) with its transcoder fields (``d_out``,
``architecture`` ``"transcoder"`` (ReLU), ``"skip_transcoder"``, ``"jumprelu_transcoder"``, ``W_skip`` as
``[d_out, d_in]``, ``apply_b_dec_to_input`` false) and ``metadata.hook_name`` / ``metadata.hook_name_out``. SAELens
6 has no TopK transcoder: ours are written ``"topk_transcoder"`` / ``"topk_skip_transcoder"`` with ``k`` (SAELens
refuses that name rather than misreading it). Shipped: ``toy-lm/tc-0`` ... ``tc-3`` (:func:`shipped_transcoders`;
recipe :data:`RECIPES`, ``python -m circuitlab.features.transcoders toy-lm``; cards beside the weights).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import torch
from jaxtyping import Float
from torch import Tensor, nn

from circuitlab.core import (DEFAULT_MAX_MEMORY, as_model, check_count, check_max_memory, check_number, check_seed,
                             model_name, progress_bar, row_bytes, shorten)
from circuitlab.errors import InputError
from circuitlab.features.sae import SAE, check_architecture

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
SHIPPED = Path(__file__).parent / "transcoder_weights"
#: SAELens's architecture names (ours for TopK, which SAELens 6 lacks) by (activation, skip)
SAELENS_NAMES = {("standard", False): "transcoder", ("standard", True): "skip_transcoder",
                 ("jumprelu", False): "jumprelu_transcoder", ("jumprelu", True): "jumprelu_skip_transcoder",
                 ("topk", False): "topk_transcoder", ("topk", True): "topk_skip_transcoder"}
FROM_SAELENS = {v: k for k, v in SAELENS_NAMES.items()}


def mlp_in_hook(layer: int) -> str:
    """The hook a transcoder of MLP ``layer`` reads: the MLP's normalised input."""
    return f"blocks.{layer}.ln2.hook_normalized"


def mlp_out_hook(layer: int) -> str:
    """The hook a transcoder of MLP ``layer`` predicts: the MLP's output."""
    return f"blocks.{layer}.hook_mlp_out"


@dataclass(frozen=True)
class TranscoderConfig:
    """What a transcoder is. ``architecture``: the latents' activation (``topk``, ``standard`` = ReLU, ``jumprelu``);
    ``k`` for ``topk``; ``skip``: a linear skip ``W_skip`` from input to output; ``layer``: the MLP it replaces
    (its hooks :func:`mlp_in_hook` / :func:`mlp_out_hook` unless ``hook_name`` / ``hook_name_out`` say
    otherwise)."""

    architecture: str
    d_in: int
    d_out: int
    d_sae: int
    k: Optional[int] = None
    skip: bool = False
    layer: Optional[int] = None
    hook_name: Optional[str] = None
    hook_name_out: Optional[str] = None
    model_name: Optional[str] = None
    metadata: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        arch = check_architecture(self.architecture)
        object.__setattr__(self, "architecture", arch)
        for name in ("d_in", "d_out", "d_sae"):
            check_count(getattr(self, name), name)
        if arch == "topk":
            check_count(self.k, "k")
            if self.k > self.d_sae:
                raise InputError(f"k={self.k} is more latents than the transcoder has (d_sae={self.d_sae}); "
                                 "use k <= d_sae.")
        elif self.k is not None:
            raise InputError(f"k={shorten(self.k)} is for architecture='topk' only; leave it out.")
        if not isinstance(self.skip, bool):
            raise InputError(f"skip must be True or False; got {shorten(self.skip)}.")
        if self.layer is not None:
            check_count(self.layer, "layer", minimum=0)
            if self.hook_name is None:
                object.__setattr__(self, "hook_name", mlp_in_hook(self.layer))
            if self.hook_name_out is None:
                object.__setattr__(self, "hook_name_out", mlp_out_hook(self.layer))


class Transcoder(nn.Module):
    """A transcoder (module notes); parameters named as in SAELens (``W_enc`` ``[d_in, d_sae]``, ``b_enc``,
    ``W_dec`` ``[d_sae, d_out]``, ``b_dec`` ``[d_out]``, ``W_skip`` ``[d_out, d_in]``, ``threshold``)."""

    def __init__(self, cfg: TranscoderConfig):
        super().__init__()
        self.cfg = cfg
        self.W_enc = nn.Parameter(torch.zeros(cfg.d_in, cfg.d_sae))
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.W_dec = nn.Parameter(torch.zeros(cfg.d_sae, cfg.d_out))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_out))
        if cfg.skip:
            self.W_skip = nn.Parameter(torch.zeros(cfg.d_out, cfg.d_in))
        if cfg.architecture == "jumprelu":
            self.threshold = nn.Parameter(torch.zeros(cfg.d_sae))

    def __repr__(self) -> str:
        c = self.cfg
        extra = (f", k={c.k}" if c.k else "") + (", skip" if c.skip else "")
        return f"Transcoder({c.architecture}, {c.d_in}->{c.d_sae}->{c.d_out}{extra}, layer={c.layer})"

    def _check(self, x: Any, what: str, width: int) -> None:
        if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim == 0 or x.shape[-1] != width:
            got = tuple(x.shape) if isinstance(x, Tensor) else shorten(x, 40)
            raise InputError(f"{what}: a floating-point tensor [..., {width}] is expected (this transcoder: "
                             f"{self!r}); got {got}.")

    def pre_activations(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        """``x @ W_enc + b_enc``."""
        self._check(x, "x", self.cfg.d_in)
        return x.to(self.W_enc.dtype) @ self.W_enc + self.b_enc

    # the architecture's activation and the encoder are the SAE's, on the same fields (cfg.architecture, cfg.k,
    # threshold): one definition of TopK / ReLU / JumpReLU for both
    activate = SAE.activate
    encode = SAE.encode

    def decode(self, f: Float[Tensor, "... d_sae"],
               x: Optional[Float[Tensor, "... d_in"]] = None) -> Float[Tensor, "... d_out"]:
        """``f @ W_dec + b_dec``, plus the skip ``x @ W_skip.T`` when the transcoder has one (then ``x`` is
        needed)."""
        self._check(f, "latents", self.cfg.d_sae)
        out = f.to(self.W_dec.dtype) @ self.W_dec + self.b_dec
        if self.cfg.skip:
            if x is None:
                raise InputError("x: this transcoder has a linear skip; decode(f, x) needs the input x too.")
            out = out + x.to(self.W_skip.dtype) @ self.W_skip.T
        return out

    def forward(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_out"]:
        """The predicted MLP output for input ``x``."""
        return self.decode(self.encode(x), x)


# ---------------------------------------------------------------------------------------------------------
# SAELens's folder format
# ---------------------------------------------------------------------------------------------------------

def save_transcoder(tc: Transcoder, folder: Union[str, Path], extra: Optional[dict] = None) -> Path:
    """Write ``tc`` to ``folder`` in SAELens's transcoder format (module notes)."""
    from safetensors.torch import save_file

    from circuitlab.features.sae import SAELENS_FORMAT

    if not isinstance(tc, Transcoder):
        raise InputError(f"tc must be a Transcoder; got {shorten(tc, 40)}.")
    c = tc.cfg
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {**c.metadata, **(extra or {}), "sae_lens_version": SAELENS_FORMAT,
            "sae_lens_training_version": SAELENS_FORMAT, "hook_name": c.hook_name, "hook_name_out": c.hook_name_out,
            "model_name": c.model_name, "layer": c.layer}
    raw = {"d_in": c.d_in, "d_sae": c.d_sae, "d_out": c.d_out, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": False, "normalize_activations": "none", "reshape_activations": "none",
           "metadata": meta, "architecture": SAELENS_NAMES[(c.architecture, c.skip)]}
    if c.architecture == "topk":
        raw["k"] = c.k
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in tc.state_dict().items()}
    save_file(tensors, str(folder / WEIGHTS_FILE))
    (folder / CFG_FILE).write_text(json.dumps(raw, indent=1) + "\n")
    return folder


def shipped_transcoders() -> list[str]:
    """The names of the transcoders that ship with the package (``"toy-lm/tc-0"``, ...)."""
    if not SHIPPED.is_dir():
        return []
    return sorted(f"{p.parent.parent.name}/{p.parent.name}" for p in SHIPPED.glob("*/*/" + CFG_FILE))


def load_transcoder(tc: Any) -> Transcoder:
    """A transcoder by shipped name (``"toy-lm/tc-1"``) or from a folder in SAELens's transcoder format; weights
    checked (present, shapes as the config says, finite)."""
    if isinstance(tc, Transcoder):
        return tc
    from safetensors import safe_open

    if not isinstance(tc, (str, Path)) or not str(tc).strip():
        raise InputError(f"transcoder must be a shipped name (one of {', '.join(shipped_transcoders()) or 'none'}) "
                         f"or a folder holding {CFG_FILE} and {WEIGHTS_FILE}; got {shorten(tc, 40)}.")
    text = str(tc).removeprefix("zoo/")
    folder = SHIPPED / text if text in shipped_transcoders() else Path(str(tc)).expanduser()
    if not (folder / CFG_FILE).is_file():
        raise InputError(f"transcoder={shorten(str(tc))}: neither a shipped transcoder "
                         f"({', '.join(shipped_transcoders()) or 'none'}) nor a folder holding {CFG_FILE}.")
    try:
        raw = json.loads((folder / CFG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{folder}/{CFG_FILE} cannot be read as JSON ({type(exc).__name__}).") from None
    if not isinstance(raw, dict) or raw.get("architecture") not in FROM_SAELENS:
        got = raw.get("architecture") if isinstance(raw, dict) else raw
        raise InputError(f"{folder}: architecture {shorten(got)} "
                         f"is not a transcoder this package runs ({', '.join(FROM_SAELENS)}).")
    if raw.get("normalize_activations", "none") not in ("none", None):
        raise InputError(f"{folder}: normalize_activations={shorten(raw['normalize_activations'])} is not supported.")
    arch, skip = FROM_SAELENS[raw["architecture"]]
    meta = dict(raw.get("metadata") or {})
    try:
        cfg = TranscoderConfig(arch, raw["d_in"], raw["d_out"], raw["d_sae"],
                               k=raw.get("k") if arch == "topk" else None, skip=skip, layer=meta.pop("layer", None),
                               hook_name=meta.pop("hook_name", None),
                               hook_name_out=meta.pop("hook_name_out", None), model_name=meta.pop("model_name", None),
                               metadata=meta)
    except KeyError as exc:
        raise InputError(f"{folder}: cfg.json lacks {exc}; it is not a transcoder config.") from None
    out = Transcoder(cfg)
    try:
        with safe_open(str(folder / WEIGHTS_FILE), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise InputError(f"{folder / WEIGHTS_FILE} cannot be read as safetensors ({type(exc).__name__}); the file "
                         "is missing, damaged or cut short.") from None
    for k, v in out.state_dict().items():
        if k not in tensors or tuple(tensors[k].shape) != tuple(v.shape) or not torch.isfinite(tensors[k]).all():
            raise InputError(f"{folder / WEIGHTS_FILE}: tensor {k!r} is missing, has the wrong shape (config needs "
                             f"{tuple(v.shape)}) or holds NaN/inf.")
    out.load_state_dict({k: tensors[k].float() for k in out.state_dict()})
    out.requires_grad_(False)
    return out


def check_transcoders(model: Any, transcoders: Any) -> dict[int, Transcoder]:
    """``transcoders`` (a model's shipped set by its name prefix, e.g. ``"toy-lm"``; a list of transcoders, names
    or folders; or a ``{layer: transcoder}`` dict) as ``{layer: Transcoder}``, one per MLP layer of ``model``,
    each checked against the model's widths."""
    if isinstance(transcoders, str) and "/" not in transcoders.removeprefix("zoo/"):
        prefix = transcoders.removeprefix("zoo/")
        names = [n for n in shipped_transcoders() if n.startswith(prefix + "/")]
        if not names:
            raise InputError(f"transcoders={shorten(transcoders)}: no shipped set by that name (shipped: "
                             f"{', '.join(shipped_transcoders()) or 'none'}).")
        transcoders = names
    if isinstance(transcoders, dict):
        items = list(transcoders.values())
    elif isinstance(transcoders, (list, tuple)):
        items = list(transcoders)
    else:
        raise InputError(f"transcoders: give a shipped set's name (e.g. 'toy-lm'), a list of transcoders (one per "
                         f"MLP layer) or a {{layer: transcoder}} dict; got {shorten(transcoders, 40)}.")
    loaded = [load_transcoder(t) for t in items]
    out: dict[int, Transcoder] = {}
    for i, tc in enumerate(loaded):
        layer = tc.cfg.layer if tc.cfg.layer is not None else (list(transcoders)[i] if isinstance(transcoders, dict)
                                                                else i)
        if layer in out:
            raise InputError(f"transcoders: two transcoders for layer {layer}; give one per MLP layer.")
        out[int(layer)] = tc
    n = model.cfg.n_layers
    if sorted(out) != list(range(n)):
        raise InputError(f"transcoders: one per MLP layer is needed (layers 0..{n - 1}); got layers {sorted(out)}.")
    for layer, tc in out.items():
        if tc.cfg.d_in != model.cfg.d_model or tc.cfg.d_out != model.cfg.d_model:
            raise InputError(f"transcoder of layer {layer} maps {tc.cfg.d_in}->{tc.cfg.d_out} but the model's MLPs "
                             f"read and write d_model={model.cfg.d_model}: it belongs to another model "
                             f"({tc.cfg.model_name!r}).")
    return out


# ---------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainedTranscoders:
    """What :func:`train_transcoders` returns: ``transcoders`` ``{layer: Transcoder}`` (raw units), ``history``
    per layer (rows ``{"step", "tokens", "fvu", "l0", "dead"}``), ``stats`` (tokens, seconds, settings)."""

    transcoders: dict
    history: dict
    stats: dict = field(default_factory=dict)


def _init(cfg: TranscoderConfig, y_mean: Tensor, gen: torch.Generator) -> Transcoder:
    tc = Transcoder(cfg)
    with torch.no_grad():
        w = torch.randn(cfg.d_sae, cfg.d_out, generator=gen)
        tc.W_dec.copy_(w / w.norm(dim=-1, keepdim=True))
        e = torch.randn(cfg.d_in, cfg.d_sae, generator=gen)
        tc.W_enc.copy_(e / e.norm(dim=0, keepdim=True))
        tc.b_dec.copy_(y_mean)
        if cfg.architecture == "jumprelu":
            tc.threshold.fill_(0.001)
    return tc


def train_transcoders(model: Any, layers: Any, data: Any, *, architecture: str = "topk", d_sae: Optional[int] = None,
                      k: Optional[int] = 16, with_skip: bool = False, l1_coefficient: float = 1.0,
                      lr: Optional[float] = None, training_tokens: int = 200_000, batch_tokens: int = 1024,
                      buffer_tokens: int = 32_768, context_size: Optional[int] = None,
                      aux_coefficient: float = 1 / 32, dead_tokens: Optional[int] = None, seed: int = 0,
                      max_memory: int = DEFAULT_MAX_MEMORY, progress: bool = False) -> TrainedTranscoders:
    """Train one transcoder per MLP layer in ``layers`` of ``model`` over ``data``, all from the same forward passes
    (module notes).

    Args:
        model: a model or a registry name. layers: MLP layers (an int, a list, or ``None`` for all).
        data: texts or token rows (as :func:`~circuitlab.features.training.train_sae`).
        architecture: ``"topk"`` (default; ``k`` latents per token), ``"standard"`` (ReLU + L1 with weight
            ``l1_coefficient``). ``d_sae``: latents (default 8 x d_model). ``with_skip``: add a linear skip.
        lr, training_tokens, batch_tokens, buffer_tokens: as in :func:`~circuitlab.features.training.train_sae`.
        context_size, aux_coefficient, dead_tokens, seed, max_memory, progress: as there too.
    """
    from circuitlab.core import check_layers
    from circuitlab.features.training import ActivationBuffer, bos_id, lr_schedule, token_stream, windows

    from circuitlab.core import check_weights_finite

    model = as_model(model)
    check_weights_finite(model)
    layers = check_layers(model, layers)
    arch = check_architecture(architecture)
    if arch == "jumprelu":
        raise InputError("architecture='jumprelu': transcoders train as 'topk' or 'standard' here; a JumpReLU "
                         "transcoder (e.g. from SAELens) loads and runs, but is not trained by this function.")
    if not isinstance(with_skip, bool):
        raise InputError(f"with_skip must be True or False; got {shorten(with_skip)}.")
    skip = with_skip
    seed = check_seed(seed)
    max_memory = check_max_memory(max_memory)
    tokens = check_count(training_tokens, "training_tokens")
    batch_tokens = check_count(batch_tokens, "batch_tokens")
    buffer_tokens = check_count(buffer_tokens, "buffer_tokens")
    if buffer_tokens < 2 * batch_tokens:
        raise InputError(f"buffer_tokens={buffer_tokens} must be at least twice batch_tokens={batch_tokens}.")
    d = model.cfg.d_model
    d_sae = check_count(d_sae, "d_sae") if d_sae is not None else 8 * d
    if arch == "topk":
        k = check_count(k, "k")
        if k > d_sae:
            raise InputError(f"k={k} is more latents than d_sae={d_sae}; use k <= d_sae.")
    else:
        k = None
    l1 = check_number(l1_coefficient, "l1_coefficient", low=0)
    lr = check_number(lr if lr is not None else 2e-4 / math.sqrt(d_sae / 2**14), "lr", low=0, low_open=True)
    aux_coefficient = check_number(aux_coefficient, "aux_coefficient", low=0)
    dead_tokens = check_count(dead_tokens, "dead_tokens") if dead_tokens is not None else \
        max(batch_tokens, min(tokens // 4, 1_000_000))
    context = check_count(context_size, "context_size", minimum=2) if context_size is not None else \
        min(model.cfg.n_ctx, 128)
    if context > model.cfg.n_ctx:
        raise InputError(f"context_size={context} is longer than the model's n_ctx={model.cfg.n_ctx}.")
    ins, outs = [mlp_in_hook(l) for l in layers], [mlp_out_hook(l) for l in layers]
    bos = bos_id(model)
    rows = windows(token_stream(model, data), context, bos)
    gen = torch.Generator().manual_seed(seed)
    buffer = ActivationBuffer(model, ins + outs, rows, buffer_tokens=buffer_tokens, batch_tokens=batch_tokens,
                              rows_per_pass=max(1, max_memory // max(1, row_bytes(model, context))),
                              skip_first=bos is not None, generator=gen)
    steps = max(1, min(tokens, len(rows) * (context - (bos is not None))) // batch_tokens)
    first = buffer.peek()
    tcs, s_in, s_out, var, since, opts, history = {}, {}, {}, {}, {}, {}, {}
    for l, hi, ho in zip(layers, ins, outs):
        s_in[l] = float(first[hi].pow(2).sum(-1).mean().div(d).sqrt().clamp_min(1e-12))
        s_out[l] = float(first[ho].pow(2).sum(-1).mean().div(d).sqrt().clamp_min(1e-12))
        y = first[ho] / s_out[l]
        var[l] = float((y - y.mean(0)).pow(2).sum(-1).mean().clamp_min(1e-12))
        cfg = TranscoderConfig(arch, d, d, d_sae, k=k, skip=skip, layer=l, model_name=model_name(model))
        tcs[l] = _init(cfg, y.mean(0), gen)
        tcs[l].requires_grad_(True)
        since[l] = torch.zeros(d_sae, dtype=torch.long)
        opts[l] = torch.optim.Adam(tcs[l].parameters(), lr=lr)
        history[l] = []
    running = {l: [0.0, 0.0, 0.0, 0] for l in layers}
    bar = progress_bar(total=steps, progress=progress, desc=f"transcoders x{len(layers)}", unit="step")
    start, step = time.perf_counter(), 0
    aux_k = max(1, d // 2)
    while step < steps:
        batch = buffer.next_batch()
        if batch is None:
            break
        for l, hi, ho in zip(layers, ins, outs):
            tc, opt = tcs[l], opts[l]
            for g in opt.param_groups:
                g["lr"] = lr_schedule(step, steps, lr)
            x, y = batch[hi] / s_in[l], batch[ho] / s_out[l]
            pre = tc.pre_activations(x)
            f = tc.activate(pre)
            err = y - tc.decode(f, x)
            fvu = err.pow(2).sum(-1).mean() / var[l]
            loss = fvu
            if arch == "standard":
                loss = loss + l1 * (f * tc.W_dec.norm(dim=-1)).sum(-1).mean() / math.sqrt(var[l])
            dead = since[l] >= dead_tokens
            if int(dead.sum()) and aux_coefficient > 0:
                vals, idx = pre.masked_fill(~dead, float("-inf")).topk(min(aux_k, int(dead.sum())), dim=-1)
                e_hat = torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals)) @ tc.W_dec
                target = err.detach()
                loss = loss + aux_coefficient * (target - e_hat).pow(2).sum(-1).mean() / \
                    target.pow(2).sum(-1).mean().clamp_min(1e-12)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                if arch == "topk":
                    tc.W_dec.div_(tc.W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-8))
            fired = (f > 0).any(0)
            since[l] = torch.where(fired, torch.zeros_like(since[l]), since[l] + x.shape[0])
            r = running[l]
            r[0] += float(fvu.detach())
            r[1] += float((f > 0).float().sum(-1).mean())
            r[2] += float(dead.float().mean())
            r[3] += 1
        step += 1
        bar.update(1)
        if step % 50 == 0 or step == steps:
            for l in layers:
                r = running[l]
                history[l].append({"step": step, "tokens": step * batch_tokens, "fvu": r[0] / r[3], "l0": r[1] / r[3],
                                   "dead": r[2] / r[3]})
                running[l] = [0.0, 0.0, 0.0, 0]
            bar.set_postfix(fvu=f"{history[layers[0]][-1]['fvu']:.3f}")
    bar.close()
    seconds = time.perf_counter() - start
    out = {}
    for l in layers:  # fold the scales back: raw x in, raw y out
        tc = tcs[l]
        new = Transcoder(tc.cfg)
        with torch.no_grad():
            new.W_enc.copy_(tc.W_enc / s_in[l])
            new.b_enc.copy_(tc.b_enc)
            new.W_dec.copy_(tc.W_dec * s_out[l])
            new.b_dec.copy_(tc.b_dec * s_out[l])
            if skip:
                new.W_skip.copy_(tc.W_skip * (s_out[l] / s_in[l]))
            if arch == "jumprelu":
                new.threshold.copy_(tc.threshold)
        new.requires_grad_(False)
        out[l] = new
    stats = {"steps": step, "train_tokens": step * batch_tokens, "model_tokens": buffer.model_tokens,
             "seconds": seconds, "settings": {"architecture": arch, "d_sae": d_sae, "k": k, "skip": skip, "lr": lr,
                                              "tokens": tokens, "batch_tokens": batch_tokens, "context": context,
                                              "seed": seed, "rows": len(rows)}}
    return TrainedTranscoders(out, history, stats)


# ---------------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------------

@torch.no_grad()
def evaluate_transcoders(model: Any, transcoders: Any, texts: Any, *,
                         max_memory: int = DEFAULT_MAX_MEMORY) -> dict:
    """The transcoders' metrics over ``texts`` (each tokenized with BOS, cut to the context length).

    Per layer: explained variance of the MLP output (``1 - sum||y - y_hat||^2 / sum||y - mean y||^2`` over non-BOS
    tokens, on the clean model's activations), L0, the dead fraction (latents that never fire), and the CE loss
    recovered with that layer's MLP replaced (against zero-ablating that MLP). For the **replacement model** (every
    MLP replaced by its transcoder at once, no error terms; BOS positions keep the MLP's output, as in training):
    next-token agreement (the argmax equals the model's) over every predicted position, and CE loss recovered
    against zero-ablating every MLP. Returns a plain dict (for cards).
    """
    from circuitlab.core import check_texts
    from circuitlab.engine.collect import batches_by_length, pad_right, pad_token, token_rows

    from circuitlab.core import check_weights_finite

    model = as_model(model)
    check_weights_finite(model)
    tcs = check_transcoders(model, transcoders)
    texts = check_texts(texts, "texts")
    max_memory = check_max_memory(max_memory)
    rows = list(token_rows(model, texts, what="evaluate_transcoders"))
    vocab = model.cfg.d_vocab_out
    batches = batches_by_length([len(r) for r in rows], lambda n: row_bytes(model, n, logits=4 * vocab), max_memory)
    pad, n = pad_token(model), model.cfg.n_layers
    sums = {l: {"err": 0.0, "y": None, "y2": 0.0, "l0": 0.0, "fired": torch.zeros(tcs[l].cfg.d_sae, dtype=torch.bool),
                "ce_one": 0.0, "ce_zero_one": 0.0} for l in range(n)}
    tot = {"ce_clean": 0.0, "ce_replaced": 0.0, "ce_zero_all": 0.0, "agree": 0, "pred": 0, "tok": 0}
    for batch in batches:
        toks = pad_right([rows[i] for i in batch], pad)
        real = torch.arange(toks.shape[1]) < torch.tensor([len(rows[i]) for i in batch])[:, None]
        keep = real.clone()
        keep[:, 0] = False
        pred = real[:, 1:] & real[:, :-1]
        target = toks[:, 1:]

        def ce(logits: Tensor) -> tuple[float, Tensor]:
            logp = torch.log_softmax(logits.float(), -1)[:, :-1]
            return float(-logp.gather(-1, target[..., None])[..., 0][pred].sum()), logp

        cache: dict[str, Tensor] = {}
        hooks = [(h, (lambda a, hook=None, _h=h: cache.__setitem__(_h, a.detach())))
                 for l in range(n) for h in (mlp_in_hook(l), mlp_out_hook(l))]
        clean = model.run_with_hooks(toks, fwd_hooks=hooks)
        c, logp_clean = ce(clean)
        tot["ce_clean"] += c
        for l in range(n):
            x, y = cache[mlp_in_hook(l)][keep], cache[mlp_out_hook(l)][keep]
            f = tcs[l].encode(x)
            y_hat = tcs[l].decode(f, x)
            s = sums[l]
            s["err"] += float((y - y_hat).double().pow(2).sum())
            s["y"] = y.double().sum(0) if s["y"] is None else s["y"] + y.double().sum(0)
            s["y2"] += float(y.double().pow(2).sum())
            s["l0"] += float((f > 0).sum())
            s["fired"] |= (f > 0).any(0)

            def one(act, hook=None, _l=l):
                new = tcs[_l](cache[mlp_in_hook(_l)])
                return torch.cat([act[:, :1], new[:, 1:]], 1)

            def zero(act, hook=None):
                return torch.cat([act[:, :1], torch.zeros_like(act[:, 1:])], 1)

            s["ce_one"] += ce(model.run_with_hooks(toks, fwd_hooks=[(mlp_out_hook(l), one)]))[0]
            s["ce_zero_one"] += ce(model.run_with_hooks(toks, fwd_hooks=[(mlp_out_hook(l), zero)]))[0]
        # the replacement model: every MLP replaced, each transcoder reading the replaced model's own inputs
        live: dict[str, Tensor] = {}
        rep_hooks = []
        for l in range(n):
            rep_hooks.append((mlp_in_hook(l), (lambda a, hook=None, _l=l: live.__setitem__(mlp_in_hook(_l), a))))
            rep_hooks.append((mlp_out_hook(l), (lambda a, hook=None, _l=l: torch.cat(
                [a[:, :1], tcs[_l](live[mlp_in_hook(_l)])[:, 1:]], 1))))
        rep = model.run_with_hooks(toks, fwd_hooks=rep_hooks)
        c, _ = ce(rep)
        tot["ce_replaced"] += c
        tot["agree"] += int((rep[:, :-1].argmax(-1) == clean[:, :-1].argmax(-1))[pred].sum())
        zhooks = [(mlp_out_hook(l), (lambda a, hook=None: torch.cat([a[:, :1], torch.zeros_like(a[:, 1:])], 1)))
                  for l in range(n)]
        tot["ce_zero_all"] += ce(model.run_with_hooks(toks, fwd_hooks=zhooks))[0]
        tot["pred"] += int(pred.sum())
        tot["tok"] += int(keep.sum())

    def rec(ablated: float, replaced: float, clean: float) -> float:
        return float("nan") if abs(ablated - clean) < 1e-12 else (ablated - replaced) / (ablated - clean)

    p, t = tot["pred"], tot["tok"]
    per_layer = {}
    for l in range(n):
        s = sums[l]
        mean = s["y"] / t
        dev = s["y2"] - float((mean * mean).sum()) * t
        per_layer[l] = {"explained_variance_mlp_out": 1 - s["err"] / max(dev, 1e-30), "l0": s["l0"] / t,
                        "dead_fraction": float((~s["fired"]).double().mean()),
                        "ce_spliced": s["ce_one"] / p, "ce_mlp_zero_ablated": s["ce_zero_one"] / p,
                        "ce_loss_recovered": rec(s["ce_zero_one"] / p, s["ce_one"] / p, tot["ce_clean"] / p)}
    return {"layers": per_layer, "tokens": t, "predicted_positions": p,
            "replacement": {"next_token_agreement": tot["agree"] / p, "ce_clean": tot["ce_clean"] / p,
                            "ce_replacement": tot["ce_replaced"] / p,
                            "ce_all_mlps_zero_ablated": tot["ce_zero_all"] / p,
                            "ce_loss_recovered": rec(tot["ce_zero_all"] / p, tot["ce_replaced"] / p,
                                                     tot["ce_clean"] / p)}}


# ---------------------------------------------------------------------------------------------------------
# The shipped transcoders' recipe
# ---------------------------------------------------------------------------------------------------------

#: ``python -m circuitlab.features.transcoders toy-lm``: TopK (k = 16), 1,024 latents, no skip, every MLP layer of
#: zoo/toy-lm from the same forward passes, on the corpus the model was trained on (as the shipped SAEs)
RECIPES = {"toy-lm": {"model": "zoo/toy-lm", "names": "tc-{layer}",
                      "train": {"architecture": "topk", "d_sae": 1024, "k": 16, "with_skip": False,
                                "training_tokens": 400_000, "batch_tokens": 1024, "buffer_tokens": 32_768,
                                "context_size": 128, "seed": 0}}}


def ship(which: str, out: Optional[Path] = None, progress: bool = False) -> dict:
    """Train, evaluate (on the model's held-out text) and write the transcoders of recipe ``which`` with cards."""
    from circuitlab.features.ship import peak_rss
    from circuitlab.zoo import text_data

    torch.set_num_threads(1)
    recipe = RECIPES[which]
    out = Path(out) if out is not None else SHIPPED
    model = as_model(recipe["model"])
    docs, heldout, sizes = text_data.real_documents()
    run = train_transcoders(model, None, docs, progress=progress, **recipe["train"])
    held = [line for line in heldout.splitlines() if line.strip()]
    ev = evaluate_transcoders(model, run.transcoders, held)
    cards = {}
    for l, tc in run.transcoders.items():
        name = recipe["names"].format(layer=l)
        card = {"name": f"{which}/{name}", "model": recipe["model"], "layer": l, "hook_in": tc.cfg.hook_name,
                "hook_out": tc.cfg.hook_name_out, "recipe": recipe["train"],
                "corpus": {"what": "KJV (less Ruth, Jonah, Titus, Philemon) + BSD fortunes (as the shipped SAEs)",
                           "chars": sizes["used_train_chars"], "windows": run.stats["settings"]["rows"]},
                "training": {"train_tokens": run.stats["train_tokens"], "model_tokens": run.stats["model_tokens"],
                             "seconds_all_layers": round(run.stats["seconds"], 1), "threads": 1,
                             "peak_rss_bytes": peak_rss(), "final_history": run.history[l][-1]},
                "heldout": {"what": "heldout.txt of zoo/toy-lm, never trained on",
                            **{k: round(v, 4) for k, v in ev["layers"][l].items()}, "tokens": ev["tokens"]},
                "replacement_model_heldout": {k: round(v, 4) for k, v in ev["replacement"].items()}}
        save_transcoder(tc, out / which / name, extra={"context_size": recipe["train"]["context_size"],
                                                       "prepend_bos": True})
        (out / which / name / "card.json").write_text(json.dumps(card, indent=1) + "\n")
        cards[name] = card
    return cards


__all__ = ["TranscoderConfig", "Transcoder", "save_transcoder", "load_transcoder", "shipped_transcoders",
           "check_transcoders", "train_transcoders", "TrainedTranscoders", "evaluate_transcoders", "mlp_in_hook",
           "mlp_out_hook", "RECIPES"]


if __name__ == "__main__":
    import sys

    cards = ship(sys.argv[1] if len(sys.argv) > 1 else "toy-lm", progress=True)
    print(json.dumps({k: (v["heldout"], v["replacement_model_heldout"]) for k, v in cards.items()}, indent=1))
