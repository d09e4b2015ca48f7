"""Causal tracing (Meng et al. 2022, "Locating and Editing Factual Associations in GPT"): where a fact is recalled.

Three runs of a factual prompt such as ``"The Eiffel Tower is located in the city of" -> " Paris"``:

1. **clean**: the prompt as it is; ``P_clean`` is the probability of the answer.
2. **corrupted**: Gaussian noise is added to the input embeddings of the subject's tokens (``"The Eiffel
   Tower"``), so the model no longer knows what the prompt is about; ``P_corrupted`` drops. The noise has
   standard deviation ``noise * sigma``: ``noise=3`` as in the paper, ``sigma`` the standard deviation of the
   model's token embeddings (:func:`embedding_std`). ``samples`` noise draws (seeded) are averaged.
3. **corrupted-with-restoration**: the corrupted run again, but one clean state is put back: the residual stream
   after block ``L`` at token ``t`` (``kind="resid"``), or the MLP output (``"mlp"``) or attention output
   (``"attn"``) at token ``t`` over a *window* of layers centred on ``L``. ``P_restored(kind, t, L)``.

The **indirect effect** of a state is ``P_restored - P_corrupted``; normalised, ``(P_restored - P_corrupted) /
(P_clean - P_corrupted)``. The paper's finding: restoring MLP outputs at the *last subject token* in early-to-middle
layers brings the answer back, and attention matters at the *last token* in later layers.

    from circuitlab.tracing import trace, average_indirect_effect

    res = trace(model, "The Eiffel Tower is located in the city of", "The Eiffel Tower", " Paris")
    res.values                  # [kind, pos, layer]: P_restored, one panel per kind
    res.indirect_effect()       # the same minus P_corrupted (normalised=True: as a fraction of the clean gap)
    aie = average_indirect_effect(model, facts)   # [kind, position kind, layer], averaged over facts

**Conventions, as in the paper and its code.** The same noise draw serves every restoration of a prompt (so
differences between states are not noise). The residual state of layer ``L`` is ``blocks.L.hook_resid_post``
and is restored alone (window 1); MLP and attention outputs are restored over ``window`` layers,
``range(max(0, L - window // 2), min(n_layers, L + window - window // 2))``. The paper used ``window=10`` on
GPT-2 XL (48 layers) and GPT-J (28 layers); by default this is scaled to shallower models as
``min(10, max(1, round(10 * n_layers / 28)))`` (GPT-J's proportion): 6 for Gemma-3-270m's 18 layers, 1 for a
4-layer model (:func:`default_window`).

**Exact and fast.** :func:`circuitlab.testing.reference_trace` restores one (layer, token) per forward pass with
hooks, as the paper's code does. :func:`trace` gives the same numbers (up to float rounding; a test checks on every
architecture family) with far less arithmetic, using the block runner's levers (see
:mod:`circuitlab.engine.blocks`):

- **batching**: every restoration at one token is a group of ``samples`` rows of one forward pass, chunked
  under ``max_memory``;
- **start at the restored layer**: before its first restored layer a run equals the corrupted run, so its rows
  join the batch there, from the cached corrupted residual stream (a staircase: every block runs once);
- **causal attention**: restoring token ``t`` changes no earlier position, so only positions ``t...`` are computed,
  reading the earlier positions' keys and values from the corrupted run, under the block runner's one safety
  rule (:class:`circuitlab.engine.blocks.BlockRunner`: a verified configuration and a start-up self-check; a model
  that fails it is traced without this shortcut, and ``meta["engine"]`` says so). Tokens before the subject are
  not computed at all: the clean and corrupted runs agree there, so restoring them changes nothing (their entries are
  ``P_corrupted``);
- **read only what is needed**: the final norm and unembedding run on the last position only.

A ``TransformerBridge`` (compatibility mode) is traced with whole forward passes and hooks, still batched.
"""

from __future__ import annotations

import math
import time
import weakref
from dataclasses import dataclass
from typing import Any, Iterable, Optional, Sequence, Union

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from circuitlab.core import (DEFAULT_MAX_MEMORY, ModelLike, answer_id, as_model, check_affordable, check_count,
                             check_difference, check_finite, check_max_memory, check_number, check_seed, check_texts,
                             final_residual, model_name, progress_bar, readout, row_bytes, row_chunks, shorten,
                             str_tokens, to_tokens)
from circuitlab.engine.blocks import BlockRunner, Replace
from circuitlab.errors import InputError
from circuitlab.results import Result

#: the states causal tracing restores, and the TransformerLens hook each one is
KINDS: dict[str, str] = {
    "resid": "blocks.{layer}.hook_resid_post",
    "mlp": "blocks.{layer}.hook_mlp_out",
    "attn": "blocks.{layer}.hook_attn_out",
}
#: what each kind is called in reports
KIND_NAMES = {"resid": "residual stream (single layer)", "mlp": "MLP output (window)",
              "attn": "attention output (window)"}
#: the position kinds of the paper's average indirect effect (Meng et al. 2022, Figure 2)
POSITION_KINDS = ("first subject token", "middle subject tokens", "last subject token", "first subsequent token",
                  "further tokens", "last token")

#: the window the paper used, and the depth of the shallower of its two models (GPT-J)
PAPER_WINDOW, PAPER_LAYERS = 10, 28

Subject = Union[str, tuple[int, int]]


# ---------------------------------------------------------------------------------------------------------
# Settings: windows, subject spans, noise
# ---------------------------------------------------------------------------------------------------------

def default_window(n_layers: int) -> int:
    """The paper's window of 10 layers, scaled to shallower models: ``min(10, max(1, round(10 * n_layers / 28)))``."""
    return min(PAPER_WINDOW, max(1, round(PAPER_WINDOW * n_layers / PAPER_LAYERS)))


def window_layers(layer: int, window: int, n_layers: int) -> range:
    """The layers restored together for a state centred on ``layer`` (the paper's code: ``layer - window // 2`` on)."""
    return range(max(0, layer - window // 2), min(n_layers, layer + window - window // 2))


def check_kinds(model: HookedTransformer, kinds: Any) -> tuple[str, ...]:
    """``kinds`` checked: a kind name or a sequence of distinct names from :data:`KINDS` (``None``: every kind
    the model has; an attention-only model has no MLP)."""
    if kinds is None:
        return tuple(k for k in KINDS if not (k == "mlp" and model.cfg.attn_only))
    if isinstance(kinds, str):
        kinds = (kinds,)
    if not isinstance(kinds, Sequence) or not kinds:
        raise InputError(f"kinds must be one or more of {tuple(KINDS)}; got {shorten(kinds)}.")
    for k in kinds:
        if k not in KINDS:
            raise InputError(f"kinds: unknown state {shorten(k)}. Causal tracing restores "
                             f"{', '.join(map(repr, KINDS))} "
                             "(the residual stream, MLP output and attention output).")
    if len(set(kinds)) != len(kinds):
        raise InputError(f"kinds lists a state twice: {tuple(kinds)}. Give each at most once.")
    if "mlp" in kinds and model.cfg.attn_only:
        raise InputError("kinds includes 'mlp' but this model is attention-only: it has no MLPs. Leave 'mlp' out.")
    return tuple(kinds)


def check_window(model: HookedTransformer, window: Any) -> int:
    """``window`` checked against the model's depth (``None``: :func:`default_window`)."""
    n = model.cfg.n_layers
    if window is None:
        return default_window(n)
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise InputError(f"window must be a whole number of layers, at least 1; got {shorten(window)}.")
    if window > n:
        raise InputError(f"window={window} is larger than the model: it has {n} layers. Use a window of at most "
                         f"{n} (the default for this model is {default_window(n)}).")
    return window


def subject_span(model: HookedTransformer, prompt: Union[str, Int[Tensor, " pos"], Int[Tensor, "1 pos"]],
                 subject: Subject, tokens: Optional[Int[Tensor, "1 pos"]] = None) -> tuple[int, int]:
    """The token positions ``[start, end)`` of ``subject`` in ``prompt``.

    ``subject`` is text that occurs in the prompt (its first occurrence), and must begin and end on token
    boundaries; or a ``(start, end)`` pair of positions (needed for prompts given as token ids). A space before the
    subject belongs to its first token, as tokenizers attach it (``" Eiffel"``).
    """
    toks = to_tokens(model, prompt) if tokens is None else tokens
    n = toks.shape[1]
    if isinstance(subject, tuple) and len(subject) == 2 and all(isinstance(i, int) and not isinstance(i, bool)
                                                                for i in subject):
        start, end = subject
        if not 0 <= start < end <= n:
            raise InputError(f"subject={shorten(subject)} is not a span of token positions of the prompt: it has {n} "
                             f"tokens, so give (start, end) with 0 <= start < end <= {n}.")
        return start, end
    if not isinstance(subject, str):
        raise InputError(f"subject must be text that occurs in the prompt, or a (start, end) pair of token "
                         f"positions; got {type(subject).__name__} {shorten(subject)}.")
    if not isinstance(prompt, str):
        raise InputError("subject was given as text but the prompt as token ids: give the subject as a (start, end) "
                         "pair of token positions instead.")
    if not subject.strip():
        raise InputError(f"subject={shorten(subject)} is empty: give the words of the prompt that name the subject.")
    at = prompt.find(subject)
    if at < 0:
        raise InputError(f"subject {shorten(subject)} does not occur in the prompt {shorten(prompt)}. Give it "
                         "exactly as it is written there (case and spaces included).")
    full = toks[0].tolist()

    def prefix_len(text: str, where: str) -> int:
        """How many tokens of the prompt ``text`` (a prefix of it) covers; an error if it ends inside a token."""
        if text:
            ids = to_tokens(model, text)[0].tolist()
        else:
            ids = full[:1] if model.cfg.default_prepend_bos else []
        if ids != full[:len(ids)]:
            diff = [i for i, (a, b) in enumerate(zip(ids, full)) if a != b]
            inside = diff[0] if diff else min(len(ids), len(full)) - 1
            label = str_tokens(model, toks[0, inside:inside + 1])[0]
            raise InputError(
                f"subject {shorten(subject)} is not a token span of the prompt: its {where} falls inside the token "
                f"{shorten(label)} (position {inside}). Choose a subject that starts and ends on token boundaries "
                "(see model.to_str_tokens(prompt)), or give (start, end) token positions."
            )
        return len(ids)

    start = prefix_len(prompt[:at].rstrip(), "start")
    end = prefix_len(prompt[:at + len(subject)], "end")
    if end <= start:  # pragma: no cover - a non-empty subject always adds a token
        raise InputError(f"subject {shorten(subject)} covers no token of the prompt.")
    return start, end


_EMBEDDING_STD: "weakref.WeakKeyDictionary[HookedTransformer, tuple]" = weakref.WeakKeyDictionary()


@torch.no_grad()
def embedding_std(model: ModelLike, subjects: Optional[Iterable[str]] = None) -> float:
    """The standard deviation ``sigma`` that the noise scale multiplies.

    By default, of every entry of the token embedding matrix ``W_E`` (what ``hook_embed`` holds for a token):
    a property of the model alone, so every prompt gets the same noise scale. With ``subjects`` (texts), of
    the embeddings of their tokens, as the paper's code computes it over the subjects of its facts.
    """
    model = as_model(model)
    W_E = model.W_E.detach()
    if subjects is None:
        key = (W_E.data_ptr(), W_E._version)
        cached = _EMBEDDING_STD.get(model)
        if cached is not None and cached[0] == key:
            return cached[1]
        x = W_E.double()
        value = float(((x - x.mean()) ** 2).mean().sqrt() * math.sqrt(x.numel() / max(1, x.numel() - 1)))
        _EMBEDDING_STD[model] = (key, value)
        return value
    subjects = check_texts(subjects, "subjects", item="subject text")
    ids = [i for s in subjects for i in to_tokens(model, s, prepend_bos=False)[0].tolist()]
    if not ids:
        raise InputError("subjects is empty: give the subject texts whose embeddings set the noise scale.")
    return float(W_E[torch.tensor(ids, device=W_E.device)].double().std())


def check_noise(noise: Any) -> float:
    return check_number(noise, "noise", low=0, low_open=True,
                        what="a positive number (the noise's standard deviation in units of the embeddings' "
                             "standard deviation; the paper used 3)")


def subject_noise(model: HookedTransformer, n_tokens: int, samples: int, scale: float,
                  seed: int) -> Float[Tensor, "samples subject d_model"]:
    """The Gaussian noise added to the subject's embeddings: ``samples`` draws, standard deviation ``scale``.

    Drawn on the CPU from ``seed`` (the same numbers on every device), then moved to the model's device and dtype.
    """
    seed = check_seed(seed)
    gen = torch.Generator().manual_seed(int(seed))
    noise = torch.randn(samples, n_tokens, model.cfg.d_model, generator=gen, dtype=torch.float64) * scale
    return noise.to(device=model.cfg.device, dtype=model.cfg.dtype)


def check_samples_affordable(model: HookedTransformer, samples: int, n_tokens: int, n_subject: int) -> None:
    """Refuse up front a ``samples`` whose corrupted run does not fit: the noise draws (float64, then the model's
    dtype) and the corrupted run's activations at every layer (the base the restored runs start from) are held
    for all samples at once, so they cannot be cut into ``max_memory`` chunks."""
    per_sample = (8 + 4) * n_subject * model.cfg.d_model + model.cfg.n_layers * row_bytes(model, n_tokens)
    check_affordable(samples * per_sample, f"samples={samples:,} (the corrupted run holds every sample's activations)",
                     "use fewer samples (the paper used 10)")


def noise_hook(span: tuple[int, int], noise: Float[Tensor, "samples subject d_model"]):
    """A ``hook_embed`` hook adding ``noise`` to the subject's embeddings; batch rows cycle through the samples."""
    start, end = span

    def hook(embed: Tensor, hook=None) -> Tensor:
        reps = embed.shape[0] // noise.shape[0]
        embed = embed.clone()
        embed[:, start:end] = embed[:, start:end] + noise.repeat(reps, 1, 1)
        return embed

    return hook


# ---------------------------------------------------------------------------------------------------------
# The result
# ---------------------------------------------------------------------------------------------------------

@dataclass(repr=False)
class CausalTrace(Result):
    """Probabilities of the answer with one state restored: ``values[kind, pos, layer]`` (``P_restored``).

    ``meta`` holds ``clean_prob``, ``corrupted_prob``, the ``subject`` span, ``window``, ``noise_std`` (the noise's
    absolute standard deviation), ``sigma``, ``samples``, ``seed`` and ``engine``.
    """

    @property
    def clean_prob(self) -> float:
        return float(self.meta["clean_prob"])

    @property
    def corrupted_prob(self) -> float:
        return float(self.meta["corrupted_prob"])

    def indirect_effect(self, normalized: bool = False) -> Result:
        """``P_restored - P_corrupted`` for every state; ``normalized``: divided by ``P_clean - P_corrupted`` (an
        :class:`~circuitlab.errors.InputError` when that gap is within float noise, see
        :func:`circuitlab.core.resolution`)."""
        effect = self.values - self.corrupted_prob
        metric = "indirect effect: P(answer) restored - corrupted"
        if normalized:
            # probabilities' rounding errors are relative to themselves (floor 0; float32 logits or finer)
            gap = check_difference(self.clean_prob, self.corrupted_prob, "the answer's probability clean and with "
                                   "noise on the subject (a normalised effect divides by their difference)",
                                   "Use a larger noise scale, or the unnormalised indirect effect.", floor=0.0)
            effect, metric = effect / gap, "normalised indirect effect: (restored - corrupted) / (clean - corrupted)"
        return Result(effect, self.axes, dict(self.labels), title=f"Indirect effect ({self.task})", metric=metric,
                      model=self.model, task=self.task, meta=dict(self.meta))


# ---------------------------------------------------------------------------------------------------------
# Tracing one prompt
# ---------------------------------------------------------------------------------------------------------

def trace(
    model: ModelLike,
    prompt: Union[str, Int[Tensor, " pos"], Int[Tensor, "1 pos"]],
    subject: Subject,
    answer: Union[str, int],
    *,
    kinds: Sequence[str] | str | None = None,
    window: Optional[int] = None,
    noise: float = 3.0,
    sigma: Optional[float] = None,
    samples: int = 10,
    seed: int = 0,
    max_memory: int = DEFAULT_MAX_MEMORY,
    progress: bool = False,
) -> CausalTrace:
    """Causal tracing of one factual prompt: the answer's probability with each clean state restored.

    Args:
        model: a HookedTransformer, a TransformerBridge in compatibility mode, or a name for
            :func:`circuitlab.load_model`. Its attention must be causal.
        prompt: the text before the answer (or token ids ``[pos]`` / ``[1, pos]``).
        subject: the words of the prompt the fact is about, as written there (``"The Eiffel Tower"``), or a
            ``(start, end)`` pair of token positions.
        answer: the correct next token, one token (``" Paris"``, leading space included), or its id.
        kinds: which states to restore: ``"resid"``, ``"mlp"``, ``"attn"`` (default: all the model has).
        window: layers restored together for ``"mlp"`` and ``"attn"`` (default :func:`default_window`).
        noise: the noise's standard deviation in units of ``sigma`` (the paper: 3).
        sigma: the embeddings' standard deviation (default :func:`embedding_std` of the model).
        samples: noise draws, averaged (the paper: 10).
        seed: seeds the noise.
        max_memory: rough bound in bytes on the activations of one batched forward pass.
        progress: show a progress bar.

    Returns:
        A :class:`CausalTrace`: ``values[kind, pos, layer]`` = ``P_restored``; ``meta["clean_prob"]`` and
        ``meta["corrupted_prob"]``; ``.indirect_effect()``.
    """
    model = as_model(model)
    if model.cfg.attention_dir != "causal":
        raise InputError("causal tracing needs a model that predicts the next token (causal attention); this model's "
                         f"attention is {shorten(model.cfg.attention_dir, 300)}.")
    kinds = check_kinds(model, kinds)
    window = check_window(model, window)
    noise = check_noise(noise)
    samples = check_count(samples, "samples")
    max_memory = check_max_memory(max_memory)
    seed = check_seed(seed)
    if isinstance(prompt, Tensor) and prompt.ndim == 2 and prompt.shape[0] != 1:
        raise InputError(f"causal tracing takes one prompt at a time; got token ids of shape {tuple(prompt.shape)}. "
                         "Use average_indirect_effect for many facts.")
    tokens = to_tokens(model, prompt)
    span = subject_span(model, prompt, subject, tokens)
    ans = answer_id(model, answer)
    if sigma is None:
        sigma = embedding_std(model)
    else:
        sigma = check_number(sigma, "sigma", low=0, low_open=True,
                             what="a positive number (the embeddings' standard deviation)")
    check_samples_affordable(model, samples, tokens.shape[1], span[1] - span[0])
    draws = subject_noise(model, span[1] - span[0], samples, noise * sigma, seed)

    t0 = time.perf_counter()
    tracer = _Tracer(model, tokens, span, ans, draws, kinds, window, max_memory)
    values = tracer.run(progress)
    seconds = time.perf_counter() - t0
    check_finite(model, tokens, "the restored runs", values)

    labels = [f"{i}:{s}" + ("*" if span[0] <= i < span[1] else "") for i, s in enumerate(str_tokens(model, tokens[0]))]
    text = prompt if isinstance(prompt, str) else " ".join(str(i) for i in tokens[0].tolist())
    windows = {k: 1 if k == "resid" else window for k in kinds}
    meta = dict(clean_prob=tracer.clean_prob, corrupted_prob=tracer.corrupted_prob, subject=span,
                subject_text=subject if isinstance(subject, str) else None, answer=ans, window=windows,
                noise=noise, sigma=float(sigma), noise_std=noise * float(sigma), samples=samples, seed=seed,
                engine=tracer.engine, seconds=seconds, peak_chunk_bytes=tracer.peak_chunk_bytes)
    return CausalTrace(values, ("kind", "pos", "layer"),
                       {"kind": list(kinds), "pos": labels, "layer": [str(l) for l in range(model.cfg.n_layers)]},
                       title="Causal trace", metric="P(answer) with the clean state restored (* = subject token)",
                       model=model_name(model), task=f"{text!r} -> {answer!r}", meta=meta)


class _Tracer:
    """The clean and corrupted runs of one prompt, and the restored runs (see the module docstring)."""

    def __init__(self, model: HookedTransformer, tokens: Tensor, span: tuple[int, int], answer: int,
                 noise: Tensor, kinds: tuple[str, ...], window: int, max_memory: int):
        self.model, self.tokens, self.span, self.answer = model, tokens, span, answer
        self.noise, self.kinds, self.window, self.max_memory = noise, kinds, window, max_memory
        cfg = model.cfg
        self.S, self.n = noise.shape[0], tokens.shape[1]
        self.peak_chunk_bytes = 0
        self.block_level = isinstance(model, HookedTransformer)

        with torch.no_grad():
            names = {KINDS[k].format(layer=l) for k in kinds for l in range(cfg.n_layers)}
            resid, cache = final_residual(model, tokens, names)
            logits = readout(model, resid[:, -1])
            self.clean = {k: torch.stack([cache[KINDS[k].format(layer=l)][0] for l in range(cfg.n_layers)])
                          for k in kinds}  # [layer, pos, d_model]
            self.clean_prob = float(self._prob(logits)[0])
            check_finite(model, tokens, "the clean run", logits)
            self._corrupted_run()

    @torch.no_grad()
    def _corrupted_run(self) -> None:
        model = self.model
        rows = self.tokens.expand(self.S, -1)
        hooks = [("hook_embed", noise_hook(self.span, self.noise))]
        if not self.block_level:
            resid, _ = final_residual(model, rows, (), hooks)
            self.corrupted_prob = self._prob(readout(model, resid[:, -1])).mean().item()
            self.engine = "TransformerBridge: whole forward passes with hooks, many restorations per pass"
            self.start_of = lambda t: 0
            return
        names = BlockRunner.hook_names(model)
        resid, cache = final_residual(model, rows, names, hooks)
        logits = readout(model, resid[:, -1])
        check_finite(model, self.tokens, "the corrupted run (noise on the subject)", logits)
        self.corrupted_prob = self._prob(logits).mean().item()
        # the corrupted run as the block runner's base run: its residual stream, keys and values, and the one rule
        # deciding whether those keys and values may be reused
        self.blocks = BlockRunner.from_cache(model, cache)
        if self.blocks.kv_reuse:
            self.engine = ("block by block from the restored layer; positions from the restored token on, with the "
                           "corrupted run's cached keys and values; last position read out")
            self.start_of = lambda t: t
        else:
            self.engine = (f"block by block from the restored layer, every position ({self.blocks.why}); last "
                           "position read out")
            self.start_of = lambda t: 0

    def _prob(self, last_logits: Float[Tensor, "rows d_vocab"]) -> Float[Tensor, " rows"]:
        """Softmax probability of the answer (log-sum-exp in the logits' own precision, the rest in float64)."""
        logits = last_logits.float()
        return (logits[:, self.answer] - torch.logsumexp(logits, -1)).double().exp()

    # -- the restored runs --------------------------------------------------------------------------------
    def layers_of(self, kind: str, layer: int) -> range:
        return range(layer, layer + 1) if kind == "resid" else window_layers(layer, self.window,
                                                                              self.model.cfg.n_layers)

    def run(self, progress: bool) -> Float[Tensor, "kind pos layer"]:
        cfg = self.model.cfg
        out = torch.full((len(self.kinds), self.n, cfg.n_layers), self.corrupted_prob, dtype=torch.float64)
        positions = list(range(self.span[0], self.n))
        per_row = row_bytes(self.model, self.n) + 2 * 8 * cfg.d_vocab  # activations, plus one row of logits
        per_restoration = self.S * per_row
        every = [(k, l) for k in self.kinds for l in range(cfg.n_layers)]  # the restorations at each token
        parts = row_chunks(len(every), per_restoration, self.max_memory)
        work = [(t, every[part]) for t in positions for part in parts]
        kind_index = {k: i for i, k in enumerate(self.kinds)}
        for t, todo in progress_bar(work, progress=progress, desc="causal tracing"):
            start = self.start_of(t)
            self.peak_chunk_bytes = max(self.peak_chunk_bytes,
                                        len(todo) * per_restoration * (self.n - start) // self.n)
            probs = self._restored(t, start, todo) if self.block_level else self._restored_whole(t, todo)
            for (kind, layer), p in zip(todo, probs.tolist()):
                out[kind_index[kind], t, layer] = p
        return out

    def _patches(self, t: int, todo: list[tuple[str, int]], offset: int):
        """For each layer and kind, the batch rows whose restoration patches it (restoration ``i`` owns rows
        ``i * S ... (i + 1) * S``, shifted by ``offset``)."""
        S = self.S
        patches: dict[tuple[int, str], list[int]] = {}
        for i, (kind, layer) in enumerate(todo):
            for l in self.layers_of(kind, layer):
                patches.setdefault((l, kind), []).extend(range(offset + i * S, offset + (i + 1) * S))
        return patches

    def _hook(self, kind: str, layer: int, rows: list[int], t: int, start: int):
        idx = torch.tensor(rows, device=self.model.cfg.device)
        clean = self.clean[kind][layer, t]

        def hook(act: Tensor, hook=None) -> Tensor:  # in place: no gradients here, and the tensor is this pass's own
            act[idx, t - start] = clean
            return act

        return hook

    @torch.no_grad()
    def _restored(self, t: int, start: int, todo: list[tuple[str, int]]) -> Tensor:
        """Mean P(answer) over the samples for each restoration at token ``t``, computing positions ``start...``:
        the block runner's staircase (rows join at their first restored layer)."""
        S = self.S
        # a resid restoration at layer L replaces the residual stream entering block L + 1
        enter = [layer + 1 if kind == "resid" else self.layers_of(kind, layer)[0] for kind, layer in todo]
        order = sorted(range(len(todo)), key=lambda i: enter[i])
        todo, enter = [todo[i] for i in order], [enter[i] for i in order]

        def join(layer: int, groups: list[int], rows: Tensor) -> Tensor:
            for j, i in enumerate(groups):
                kind, restored = todo[i]
                if kind == "resid":
                    rows[j * S:(j + 1) * S, t - start] = self.clean["resid"][restored, t]
            return rows

        def restore(clean: Tensor):
            def fn(act: Tensor) -> Tensor:  # in place: no gradients here, and the tensor is this pass's own
                act[:, t - start] = clean
                return act
            return fn

        def replacements(layer: int, joined: int) -> list[Replace]:
            return [Replace(KINDS[kind].format(layer=layer), slice(i * S, (i + 1) * S),
                            restore(self.clean[kind][layer, t]))
                    for i, (kind, restored) in enumerate(todo[:joined])
                    if kind != "resid" and layer in self.layers_of(kind, restored)]

        resid = self.blocks.run(start, enter, join, replacements)
        probs = self._prob(readout(self.model, resid[:, -1]))
        means = probs.reshape(len(todo), S).mean(1)
        back = torch.empty_like(means)
        back[torch.tensor(order)] = means
        return back

    @torch.no_grad()
    def _restored_whole(self, t: int, todo: list[tuple[str, int]]) -> Tensor:
        """The same from whole forward passes with hooks (any model, e.g. a TransformerBridge)."""
        S = self.S
        rows = self.tokens.expand(S * len(todo), -1)
        hooks = [("hook_embed", noise_hook(self.span, self.noise))]
        for (layer, kind), rows_ in self._patches(t, todo, 0).items():
            hooks.append((KINDS[kind].format(layer=layer), self._hook(kind, layer, rows_, t, 0)))
        resid, _ = final_residual(self.model, rows, (), hooks)
        return self._prob(readout(self.model, resid[:, -1])).reshape(len(todo), S).mean(1)


# ---------------------------------------------------------------------------------------------------------
# Many facts: the average indirect effect by kind of position
# ---------------------------------------------------------------------------------------------------------

def position_kinds(span: tuple[int, int], n: int) -> list[list[int]]:
    """The positions of each of :data:`POSITION_KINDS` in a prompt of ``n`` tokens with the subject at ``span``.

    First, middle (those between first and last), and last subject token; the first token after the subject;
    further tokens (between that one and the last); the last token. A kind with no position in this prompt (a
    one- or two-token subject has no middle; a subject right before the last token has no further tokens) is an
    empty list; a one-token subject is both first and last subject token.
    """
    s0, s1 = span
    after = list(range(s1, n - 1))
    return [[s0], list(range(s0 + 1, s1 - 1)), [s1 - 1], after[:1], after[1:], [n - 1]]


def as_fact(fact: Any, i: int) -> tuple[str, Subject, Union[str, int]]:
    """A fact as ``(prompt, subject, answer)``: a :class:`circuitlab.tasks.factual.Fact`, or such a triple."""
    if all(hasattr(fact, a) for a in ("prompt", "subject", "answer")):
        return fact.prompt, fact.subject, fact.answer
    if isinstance(fact, (tuple, list)) and len(fact) == 3:
        return tuple(fact)
    raise InputError(f"facts[{i}] is {shorten(fact)}: give Fact objects (circuitlab.tasks.factual) or (prompt, "
                     "subject, answer) triples.")


def average_indirect_effect(
    model: ModelLike,
    facts: Sequence[Any],
    *,
    kinds: Sequence[str] | str | None = None,
    window: Optional[int] = None,
    noise: float = 3.0,
    sigma: Optional[float] = None,
    samples: int = 10,
    seed: int = 0,
    max_memory: int = DEFAULT_MAX_MEMORY,
    progress: bool = False,
    executor: Any = None,
) -> Result:
    """The average indirect effect (AIE) over ``facts`` at the paper's kinds of position (its Figure 2).

    Every fact is traced (:func:`trace`, with the same settings and seed), its indirect effects
    ``P_restored - P_corrupted`` averaged within each kind of position (:func:`position_kinds`), then over the
    facts that have that kind. Trace only facts the model knows (:func:`circuitlab.tasks.factual.known_facts`),
    as the paper does.

    ``executor`` (``"ray"`` or an executor of :mod:`circuitlab.distributed`) shares the facts out among workers
    that each hold a model replica; the average is then taken here, as in one process.

    Returns:
        A Result ``[kind, position, layer]`` of average indirect effects (probability), with ``meta``: ``n_facts``,
        ``counts`` (facts contributing to each position kind), ``clean_prob`` and ``corrupted_prob`` (averages
        over facts), ``window``, ``sigma``, ``noise_std``, ``samples``, ``seed``, ``facts``: one
        ``(prompt, subject span, clean, corrupted)`` row per fact, and ``per_fact``: the indirect effects
        ``[fact, kind, position, layer]`` the average is taken over (NaN where a fact lacks that position kind),
        e.g. for a bootstrap over facts.
    """
    source, model = model, as_model(model)
    if isinstance(facts, (str, bytes)) or not isinstance(facts, Sequence) or len(facts) == 0:
        raise InputError("facts must be a non-empty list of facts (Fact objects or (prompt, subject, answer) "
                         f"triples); got {shorten(facts)}.")
    triples = [as_fact(f, i) for i, f in enumerate(facts)]
    samples, seed = check_count(samples, "samples"), check_seed(seed)
    max_memory = check_max_memory(max_memory)
    kinds = check_kinds(model, kinds)
    window = check_window(model, window)
    sigma = embedding_std(model) if sigma is None else sigma
    L = model.cfg.n_layers
    per_fact, rows, seconds, record = _sharded_facts(
        source, model, triples, kinds=kinds, window=window, noise=noise, sigma=sigma, samples=samples, seed=seed,
        max_memory=max_memory, progress=progress, executor=executor)
    counts = (~per_fact[:, 0, :, 0].isnan()).sum(0).tolist()
    values = per_fact.nanmean(0)  # NaN where no fact has that kind of position
    meta = dict(n_facts=len(triples), counts=dict(zip(POSITION_KINDS, counts)),
                clean_prob=sum(r[2] for r in rows) / len(rows), corrupted_prob=sum(r[3] for r in rows) / len(rows),
                window={k: 1 if k == "resid" else window for k in kinds}, sigma=float(sigma),
                noise_std=noise * float(sigma), samples=samples, seed=seed, facts=rows, per_fact=per_fact,
                seconds=seconds, **({} if record is None else {"executor": record}))
    return Result(values, ("kind", "position", "layer"),
                  {"kind": list(kinds), "position": list(POSITION_KINDS), "layer": [str(l) for l in range(L)]},
                  title=f"Average indirect effect over {len(triples)} facts",
                  metric="average indirect effect: P(answer) restored - corrupted", model=model_name(model),
                  task=f"{len(triples)} facts", meta=meta)


# ---------------------------------------------------------------------------------------------------------
# Sharding (the executor contract, circuitlab.engine.executor): split the facts into contiguous blocks, trace
# each block with _trace_facts, gather the per-fact table (the average is then taken by the caller, as in one
# process). One process is one shard: every fact traced here, on the caller's model.
# ---------------------------------------------------------------------------------------------------------

def _trace_facts(model: HookedTransformer, facts: list, *, kinds: list, window: int, noise: float, sigma: float,
                 samples: int, seed: int, max_memory: int, progress: bool, first: int = 0) -> tuple:
    """One shard of :func:`average_indirect_effect`: ``(per_fact, rows, seconds)`` for ``facts`` (triples; the
    ``first`` of them is the caller's ``facts[first]``, for its errors). Every fact is traced with the same seed,
    so a fact's trace does not depend on its shard."""
    per_fact = torch.full((len(facts), len(kinds), len(POSITION_KINDS), model.cfg.n_layers), float("nan"),
                          dtype=torch.float64)
    rows, seconds = [], 0.0
    for i, (prompt, subject, answer) in enumerate(progress_bar(facts, progress=progress, desc="causal tracing")):
        try:
            res = trace(model, prompt, subject, answer, kinds=kinds, window=window, noise=noise, sigma=sigma,
                        samples=samples, seed=seed, max_memory=max_memory, progress=False)
        except InputError as e:
            raise InputError(f"facts[{first + i}] ({shorten(prompt)}): {e}") from None
        effect = res.indirect_effect().values  # [kind, pos, layer]
        for k, where in enumerate(position_kinds(res.meta["subject"], effect.shape[1])):
            if where:
                per_fact[i, :, k] = effect[:, where].mean(1)
        rows.append((prompt, res.meta["subject"], res.clean_prob, res.corrupted_prob))
        seconds += res.meta["seconds"]
    return per_fact, rows, seconds


def _sharded_facts(given: ModelLike, model: HookedTransformer, triples: list, *, kinds: list, window: int,
                   noise: float, sigma: float, samples: int, seed: int, max_memory: int, progress: bool,
                   executor: Any) -> tuple:
    """The per-fact table of :func:`average_indirect_effect` on ``executor``, its facts shared out in contiguous
    blocks: ``(per_fact, rows, seconds, record)``, ``record`` (``None`` in this process, by default) for the
    result's ``meta["executor"]``. ``given``: the caller's model argument; ``model``: the model loaded from it."""
    from circuitlab.engine.executor import as_executor, run_shards, shard_count, split
    from circuitlab.models.identity import shard_source

    ex, owned = as_executor(executor)
    try:
        blocks = split(triples, shard_count(ex, len(triples)))
        starts = [sum(len(b) for b in blocks[:j]) for j in range(len(blocks))]
        shards = [dict(facts=block, kinds=kinds, window=window, noise=noise, sigma=sigma, samples=samples, seed=seed,
                       max_memory=max_memory, progress=progress and executor is None, first=start)
                  for block, start in zip(blocks, starts)]
        source = shard_source(given, model)
        parts, record = run_shards(ex, source, _trace_facts, shards)
    finally:
        if owned:
            ex.close()
    if len(parts) == 1:
        per_fact, rows, seconds = parts[0]
    else:
        per_fact = torch.cat([p[0] for p in parts])
        rows = [r for p in parts for r in p[1]]
        seconds = sum(p[2] for p in parts)
    return per_fact, rows, seconds, None if executor is None else record
