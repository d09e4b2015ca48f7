"""Sparse autoencoders: the three architectures, SAELens's on-disk format, loading by name, splicing into a model.

An SAE reads an activation ``x`` (``d_in`` numbers at one hook and token) and writes it as a sparse, non-negative
combination of ``d_sae`` learned directions (Bricken et al. 2023, "Towards Monosemanticity"; Cunningham et al.
2023)::

    pre   = (x - b_dec) @ W_enc + b_enc                      # [.., d_sae]  (b_dec subtracted: apply_b_dec_to_input)
    f     = act(pre)                                         # the latents
    x_hat = f @ W_dec + b_dec                                # [.., d_in]

==============  ==============================================  =========================================  ===========
architecture    ``act(pre)``                                    trained with (:mod:`~.training`)           paper
==============  ==============================================  =========================================  ===========
``standard``    ``relu(pre)``                                   MSE + ``l1`` * sum_i f_i * ||W_dec[i]||    Bricken 2023
``topk``        the ``k`` largest of ``pre`` kept (then relu)   MSE + AuxK on dead latents                 Gao 2024
``jumprelu``    ``pre * (pre > threshold)`` (after relu)        MSE + ``l0`` * L0 (straight-through)       Rajamanoharan
==============  ==============================================  =========================================  ===========

The names are SAELens's (``sae-lens`` 6.x, the ecosystem's SAE library): the parameters ``W_enc`` ``[d_in,
d_sae]``, ``b_enc``, ``W_dec`` ``[d_sae, d_in]``, ``b_dec``, ``threshold``, the architectures ``"standard"``,
``"topk"``, ``"jumprelu"``, and the folder format: ``cfg.json`` (``d_in``, ``d_sae``, ``architecture``,
``apply_b_dec_to_input``, ``k``, ``metadata.hook_name``, ``metadata.model_name``, ...) beside
``sae_weights.safetensors``. :func:`save_sae` writes what ``sae_lens.SAE.load_from_disk`` reads and
:func:`load_sae` reads what ``SAE.save_model`` writes (the tests check both directions against SAELens's own
classes). SAELens options this module does not implement (activation normalisation other than ``"none"``,
``hook_z`` reshaping, other architectures) are refused on load with the option named, never silently ignored.

:func:`load_sae` also takes a shipped SAE's name (``"toy-lm/res-2"``: :func:`shipped_saes` lists them) and
:func:`splice` puts an SAE into a model for any analysis: the hook's output is replaced by the reconstruction
(plus the reconstruction error with ``error_term=True``, which leaves the model's output unchanged while the
latents stay readable).
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Optional, Union

import torch
from jaxtyping import Float
from torch import Tensor, nn

from circuitlab.core import check_count, check_number, shorten
from circuitlab.errors import InputError

ARCHITECTURES = ("standard", "topk", "jumprelu")
#: other spellings users reach for
ALIASES = {"relu": "standard", "l1": "standard", "standard": "standard", "topk": "topk", "jumprelu": "jumprelu"}
CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
#: the SAELens version whose format :func:`save_sae` writes (the metadata says so: SAELens reads it as 6.x)
SAELENS_FORMAT = "6.54.12"
SHIPPED = Path(__file__).parent / "saes"


@dataclass(frozen=True)
class SAEConfig:
    """What an SAE is: its architecture, sizes and where it reads.

    ``k``: the latents kept per token (``topk`` only). ``hook_name`` / ``model_name``: where it was trained
    (SAELens's ``metadata.hook_name`` / ``metadata.model_name``). ``rescale_acts_by_decoder_norm`` (``topk``, as
    in SAELens): pre-activations are multiplied by each decoder row's norm before the top k are chosen, and the
    latents divided by it before decoding. ``metadata``: anything else SAELens's metadata held (kept on a round
    trip).
    """

    architecture: str
    d_in: int
    d_sae: int
    k: Optional[int] = None
    hook_name: Optional[str] = None
    model_name: Optional[str] = None
    apply_b_dec_to_input: bool = True
    rescale_acts_by_decoder_norm: bool = False
    metadata: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        arch = check_architecture(self.architecture)
        object.__setattr__(self, "architecture", arch)
        check_count(self.d_in, "d_in")
        check_count(self.d_sae, "d_sae")
        if arch == "topk":
            check_count(self.k, "k")
            if self.k > self.d_sae:
                raise InputError(f"k={self.k} is more latents than the SAE has (d_sae={self.d_sae}); use k <= d_sae.")
        elif self.k is not None:
            raise InputError(f"k={shorten(self.k)} is for architecture='topk' only; the {arch} SAE keeps every latent "
                             "above its threshold. Leave k out.")


def check_architecture(architecture: Any) -> str:
    """An architecture name (``"standard"`` or its aliases ``"relu"``/``"l1"``, ``"topk"``, ``"jumprelu"``) as
    SAELens spells it."""
    if not isinstance(architecture, str) or architecture.lower() not in ALIASES:
        raise InputError(f"architecture={shorten(architecture)}: use one of 'standard' (ReLU + L1; also 'relu'), "
                         "'topk' or 'jumprelu'.")
    return ALIASES[architecture.lower()]


class SAE(nn.Module):
    """A sparse autoencoder (see the module notes for the formulas); parameters named as in SAELens.

    ``SAE(cfg)`` starts with zeros: :func:`~circuitlab.features.training.train_sae` initialises and trains it,
    :func:`load_sae` fills it from a folder.
    """

    def __init__(self, cfg: SAEConfig):
        super().__init__()
        self.cfg = cfg
        self.W_enc = nn.Parameter(torch.zeros(cfg.d_in, cfg.d_sae))
        self.b_enc = nn.Parameter(torch.zeros(cfg.d_sae))
        self.W_dec = nn.Parameter(torch.zeros(cfg.d_sae, cfg.d_in))
        self.b_dec = nn.Parameter(torch.zeros(cfg.d_in))
        if cfg.architecture == "jumprelu":
            self.threshold = nn.Parameter(torch.zeros(cfg.d_sae))

    def __repr__(self) -> str:
        c = self.cfg
        extra = f", k={c.k}" if c.k else ""
        return f"SAE({c.architecture}, d_in={c.d_in}, d_sae={c.d_sae}{extra}, hook={c.hook_name!r})"

    def _check_input(self, x: Tensor, what: str, width: int) -> None:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise InputError(f"{what} must be a floating-point tensor [..., {width}]; got {shorten(x, 40)}.")
        if x.ndim == 0 or x.shape[-1] != width:
            raise InputError(f"{what} has shape {tuple(x.shape)}; this SAE reads vectors of {width} "
                             f"(d_in={self.cfg.d_in}, d_sae={self.cfg.d_sae}, hook {self.cfg.hook_name!r}). "
                             "Use activations of the hook the SAE was trained on.")

    def pre_activations(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        """``(x - b_dec) @ W_enc + b_enc`` (``b_dec`` subtracted only with ``apply_b_dec_to_input``)."""
        self._check_input(x, "x", self.cfg.d_in)
        x = x.to(self.W_enc.dtype)
        if self.cfg.apply_b_dec_to_input:
            x = x - self.b_dec
        pre = x @ self.W_enc + self.b_enc
        if self.cfg.rescale_acts_by_decoder_norm:
            pre = pre * self.W_dec.norm(dim=-1)
        return pre

    def activate(self, pre: Float[Tensor, "... d_sae"]) -> Float[Tensor, "... d_sae"]:
        """The architecture's activation function on pre-activations (module notes)."""
        arch = self.cfg.architecture
        if arch == "standard":
            return torch.relu(pre)
        if arch == "jumprelu":
            return torch.relu(pre) * (pre > self.threshold).to(pre.dtype)
        values, indices = pre.topk(self.cfg.k, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter(-1, indices, torch.relu(values))

    def encode(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_sae"]:
        """The latents of ``x``: ``act(pre_activations(x))``."""
        return self.activate(self.pre_activations(x))

    def decode(self, f: Float[Tensor, "... d_sae"]) -> Float[Tensor, "... d_in"]:
        """The reconstruction ``f @ W_dec + b_dec`` of latents ``f``."""
        self._check_input(f, "latents", self.cfg.d_sae)
        if self.cfg.rescale_acts_by_decoder_norm:
            f = f / self.W_dec.norm(dim=-1)
        return f.to(self.W_dec.dtype) @ self.W_dec + self.b_dec

    def forward(self, x: Float[Tensor, "... d_in"]) -> Float[Tensor, "... d_in"]:
        """The reconstruction of ``x``."""
        return self.decode(self.encode(x))

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Scale each decoder row to unit norm, and its encoder column (and ``b_enc``, ``threshold``) the other way,
        so that the reconstruction is unchanged (ReLU and JumpReLU commute with positive scaling; TopK's choice does
        not, so training keeps TopK decoders at unit norm from the start)."""
        norms = self.W_dec.norm(dim=-1).clamp_min(1e-8)
        self.W_dec.div_(norms[:, None])
        self.W_enc.mul_(norms[None, :])
        self.b_enc.mul_(norms)
        if self.cfg.architecture == "jumprelu":
            self.threshold.mul_(norms)


# ---------------------------------------------------------------------------------------------------------
# SAELens's folder format
# ---------------------------------------------------------------------------------------------------------

def sae_to_saelens_cfg(cfg: SAEConfig) -> dict:
    """``cfg`` as SAELens 6.x writes ``cfg.json``."""
    meta = {**cfg.metadata, "sae_lens_version": cfg.metadata.get("sae_lens_version", SAELENS_FORMAT),
            "sae_lens_training_version": cfg.metadata.get("sae_lens_training_version", SAELENS_FORMAT)}
    if cfg.hook_name is not None:
        meta["hook_name"] = cfg.hook_name
    if cfg.model_name is not None:
        meta["model_name"] = cfg.model_name
    out = {"d_in": cfg.d_in, "d_sae": cfg.d_sae, "dtype": "float32", "device": "cpu",
           "apply_b_dec_to_input": cfg.apply_b_dec_to_input, "normalize_activations": "none",
           "reshape_activations": "none", "metadata": meta}
    if cfg.architecture == "topk":
        out["k"] = cfg.k
        out["rescale_acts_by_decoder_norm"] = cfg.rescale_acts_by_decoder_norm
    out["architecture"] = cfg.architecture
    return out


def sae_from_saelens_cfg(raw: Any, where: str) -> SAEConfig:
    """An :class:`SAEConfig` from SAELens's ``cfg.json`` (6.x, or the flat 5.x form with ``hook_name`` at the
    top); options this module does not implement are refused by name."""
    if not isinstance(raw, dict):
        raise InputError(f"{where}: cfg.json must hold a JSON object; got {shorten(raw, 40)}.")
    meta = dict(raw.get("metadata") or {})
    arch = raw.get("architecture", "standard")
    if arch not in ARCHITECTURES:
        raise InputError(f"{where}: architecture {shorten(arch)} is not one this package runs (standard, topk, "
                         "jumprelu); load it with sae_lens.SAE.load_from_disk instead.")
    for option, plain in (("normalize_activations", "none"), ("reshape_activations", "none")):
        value = raw.get(option, plain)
        if value not in (plain, None):
            raise InputError(f"{where}: {option}={shorten(value)} is not supported here (only {plain!r}); fold it "
                             "into the weights with SAELens first, or load it with sae_lens.")
    if arch == "standard" and raw.get("activation_fn", "relu") not in ("relu", None):
        raise InputError(f"{where}: activation_fn={shorten(raw.get('activation_fn'))} is not supported (relu only).")
    missing = [k for k in ("d_in", "d_sae") if k not in raw]
    if missing:
        raise InputError(f"{where}: cfg.json lacks {', '.join(missing)}; it is not an SAELens SAE config.")
    hook = meta.pop("hook_name", raw.get("hook_name"))
    model = meta.pop("model_name", raw.get("model_name"))
    k = raw.get("k")
    if k is None and arch == "topk":
        k = (raw.get("activation_fn_kwargs") or {}).get("k")
    try:
        return SAEConfig(architecture=arch, d_in=raw["d_in"], d_sae=raw["d_sae"], k=k if arch == "topk" else None,
                         hook_name=hook, model_name=model,
                         apply_b_dec_to_input=bool(raw.get("apply_b_dec_to_input", True)),
                         rescale_acts_by_decoder_norm=bool(raw.get("rescale_acts_by_decoder_norm", False))
                         if arch == "topk" else False, metadata=meta)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None


def save_sae(sae: SAE, folder: Union[str, Path], extra: Optional[dict] = None) -> Path:
    """Write ``sae`` to ``folder`` in SAELens's format (``cfg.json``, ``sae_weights.safetensors``, float32), which
    ``sae_lens.SAE.load_from_disk(folder)`` loads. ``extra``: more entries for the config's ``metadata``."""
    from safetensors.torch import save_file

    if not isinstance(sae, SAE):
        raise InputError(f"sae must be a circuitlab SAE (load_sae or train_sae make one); got {shorten(sae, 40)}.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = sae.cfg if not extra else replace(sae.cfg, metadata={**sae.cfg.metadata, **extra})
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in sae.state_dict().items()}
    save_file(tensors, str(folder / WEIGHTS_FILE))
    (folder / CFG_FILE).write_text(json.dumps(sae_to_saelens_cfg(cfg), indent=1) + "\n")
    return folder


def shipped_saes() -> list[str]:
    """The names of the SAEs that ship with the package (``"toy-lm/res-0"``, ...), for :func:`load_sae`."""
    if not SHIPPED.is_dir():
        return []
    return sorted(f"{p.parent.parent.name}/{p.parent.name}" for p in SHIPPED.glob("*/*/" + CFG_FILE))


def sae_folder(name_or_folder: Any) -> Path:
    """A shipped SAE's name or a folder holding ``cfg.json``, as that folder."""
    if isinstance(name_or_folder, SAE):
        raise InputError("sae: got an SAE object where a name or folder was expected; pass it on directly.")
    if not isinstance(name_or_folder, (str, Path)) or not str(name_or_folder).strip():
        raise InputError(f"sae must be a shipped SAE's name (one of {', '.join(shipped_saes()) or 'none'}) or a "
                         f"folder holding {CFG_FILE} and {WEIGHTS_FILE}; got {shorten(name_or_folder, 40)}.")
    text = str(name_or_folder)
    shipped = SHIPPED / text
    zoo_style = SHIPPED / text.removeprefix("zoo/")
    for candidate in (shipped, zoo_style):
        if text in shipped_saes() or text.removeprefix("zoo/") in shipped_saes():
            if (candidate / CFG_FILE).is_file():
                return candidate
    folder = Path(text).expanduser()
    if (folder / CFG_FILE).is_file():
        return folder
    raise InputError(f"sae={shorten(text)}: neither a shipped SAE ({', '.join(shipped_saes()) or 'none shipped'}) "
                     f"nor a folder holding {CFG_FILE} (SAELens's format: cfg.json + {WEIGHTS_FILE}).")


def load_sae(sae: Any) -> SAE:
    """An SAE by shipped name (``"toy-lm/res-2"``, :func:`shipped_saes`) or from a folder in SAELens's format.

    The weights are checked: every tensor present with the shape the config gives, finite, readable (a truncated
    or damaged file is an :class:`~circuitlab.errors.InputError` naming the file, not a crash deeper in).
    """
    if isinstance(sae, SAE):
        return sae
    from safetensors import safe_open

    folder = sae_folder(sae)
    where = str(folder)
    try:
        raw = json.loads((folder / CFG_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{where}/{CFG_FILE} cannot be read as JSON ({type(exc).__name__}: {exc}).") from None
    cfg = sae_from_saelens_cfg(raw, where)
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise InputError(f"{where}: {WEIGHTS_FILE} is missing beside {CFG_FILE}.")
    model = SAE(cfg)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    try:
        with safe_open(str(weights), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for a truncated header or body
        raise InputError(f"{weights} cannot be read as safetensors ({type(exc).__name__}: "
                         f"{shorten(str(exc), 120)}); the file is damaged or cut short: copy or train it again.") \
            from None
    if cfg.architecture == "jumprelu" and "threshold" not in tensors and "log_threshold" in tensors:
        tensors["threshold"] = tensors.pop("log_threshold").exp()
    for k, shape in expected.items():
        if k not in tensors:
            raise InputError(f"{weights} lacks the tensor {k!r} that a {cfg.architecture} SAE needs "
                             f"(it holds {', '.join(sorted(tensors))}).")
        if tuple(tensors[k].shape) != shape:
            raise InputError(f"{weights}: {k} has shape {tuple(tensors[k].shape)} but cfg.json (d_in={cfg.d_in}, "
                             f"d_sae={cfg.d_sae}) needs {shape}.")
        if not torch.isfinite(tensors[k]).all():
            raise InputError(f"{weights}: {k} holds NaN or infinite values; the SAE cannot be used.")
    model.load_state_dict({k: tensors[k].to(torch.float32) for k in expected})
    model.requires_grad_(False)
    return model


def check_sae(sae: Any, model: Any = None, hook_name: Optional[str] = None) -> SAE:
    """``sae`` (an :class:`SAE`, a shipped name or a folder) loaded, and, given ``model``, checked against the hook
    it reads (``hook_name`` or the SAE's own): the hook exists and its width is ``d_in`` (:func:`sae_hook`)."""
    sae = load_sae(sae)
    if model is not None:
        sae_hook(model, sae, hook_name)
    return sae


def hook_width(model: Any, hook: str) -> int:
    """The width of one token's activation at ``hook`` (trailing axes flattened), from a one-token forward pass."""
    from circuitlab.engine.collect import run_hooks, stop_layer

    seen: dict[str, int] = {}

    def grab(act: Tensor, hook=None) -> None:
        seen["d"] = int(math.prod(act.shape[2:]))

    bos = getattr(getattr(model, "tokenizer", None), "bos_token_id", None)
    toks = torch.tensor([[0 if bos is None else bos]], device=model.cfg.device)
    with torch.no_grad():
        run_hooks(model, toks, [(hook, grab)], stop=stop_layer(model, [hook]))
    return seen["d"]


def sae_hook(model: Any, sae: SAE, hook_name: Optional[str] = None) -> str:
    """The hook ``sae`` reads in ``model``: ``hook_name`` if given, else the SAE's own; checked to exist and to
    have ``d_in`` numbers per token."""
    from circuitlab.engine.collect import check_hooks

    name = hook_name if hook_name is not None else sae.cfg.hook_name
    if name is None:
        raise InputError("hook_name: the SAE's config names no hook; pass hook_name= (e.g. "
                         "'blocks.2.hook_resid_post').")
    (name,) = check_hooks(model, [name])
    width = hook_width(model, name)
    if width != sae.cfg.d_in:
        raise InputError(f"the SAE reads d_in={sae.cfg.d_in} numbers per token but hook {name!r} of this model has "
                         f"{width}: the SAE was trained on another hook or model ({sae.cfg.model_name!r}, "
                         f"{sae.cfg.hook_name!r}). Pass the hook it was trained on.")
    return name


@contextmanager
def splice(model: Any, sae: Any, hook_name: Optional[str] = None, *, error_term: bool = False) -> Iterator[SAE]:
    """Within the block, ``model``'s activation at the SAE's hook is replaced by the SAE's reconstruction.

    With ``error_term=True`` the reconstruction error ``x - x_hat`` is added back, so the model computes exactly
    what it did without the SAE (up to rounding) while the latents (``sae.last_latents`` after each forward pass,
    ``[batch, pos, d_sae]``) are those of the real activations. The hook is added as a TransformerLens
    *permanent* hook, so analyses that reset their own hooks (``run_with_hooks``, ``run_with_cache``) keep it; it
    runs before their hooks on the same hook point (a cache there reads the reconstruction). It is removed on
    exit, even after an error. Yields the SAE.
    """
    if not hasattr(model, "hook_dict") or not hasattr(model, "cfg"):
        raise InputError(f"model: splice changes a loaded model's hooks, so it needs the model object itself (e.g. "
                         f"model = circuitlab.load_model('zoo/toy-lm')); got {shorten(model, 40)}.")
    sae = check_sae(sae)
    if not isinstance(error_term, bool):
        raise InputError(f"error_term must be True or False; got {shorten(error_term)}.")
    name = sae_hook(model, sae, hook_name)
    point = model.hook_dict[name]

    def replace_act(act: Tensor, hook=None) -> Tensor:
        flat = act.reshape(*act.shape[:2], -1)
        latents = sae.encode(flat.to(sae.W_enc.dtype))
        recon = sae.decode(latents)
        sae.last_latents = latents.detach()
        if error_term:
            recon = recon + (flat.to(recon.dtype) - recon).detach()
        return recon.to(act.dtype).reshape(act.shape)

    point.add_hook(replace_act, is_permanent=True)
    try:
        yield sae
    finally:
        for handle in list(point.fwd_hooks):
            if getattr(handle, "user_hook", None) is replace_act:
                handle.hook.remove()
                point.fwd_hooks.remove(handle)


def config_dict(cfg: SAEConfig) -> dict:
    """``cfg`` as a plain dict (for cards and checkpoints)."""
    return asdict(cfg)


def check_l_coefficient(value: Any, name: str) -> float:
    """A sparsity coefficient (``l1``, ``l0``): a finite number >= 0."""
    return check_number(value, name, low=0, what="a finite number >= 0 (the weight of the sparsity penalty)")


__all__ = ["ARCHITECTURES", "SAEConfig", "SAE", "check_architecture", "save_sae", "load_sae", "shipped_saes",
           "sae_folder", "splice", "sae_to_saelens_cfg", "sae_from_saelens_cfg", "config_dict", "check_l_coefficient"]
