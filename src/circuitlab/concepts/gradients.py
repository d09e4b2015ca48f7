"""Integrated gradients over tokens (Sundararajan et al. 2017, "Axiomatic Attribution for Deep Networks"), and
gradient x input: how much each token of a prompt contributes to a metric.

Integrated gradients attribute ``metric(x) - metric(x')`` to the entries of an activation ``x`` (by default the
token embeddings, ``hook_embed``) relative to a baseline ``x'``::

    IG(x) = (x - x') * integral_0^1 d metric(x' + a (x - x')) / dx  da

The integral is a quadrature over ``steps`` points ``a_i`` with weights ``w_i`` (the same rules as Captum's
``approximation_methods``: ``"gausslegendre"`` by default, or ``"riemann_left"``, ``"riemann_right"``,
``"riemann_middle"``, ``"riemann_trapezoid"``; see :func:`quadrature`). Summed over a token's ``d_model`` entries,
an attribution is one number per token; summed over every token of every prompt, the attributions equal
``metric(x) - metric(x')`` up to the quadrature's error (**completeness**). Every call measures that gap, keeps
it in ``meta``, and warns (:class:`CompletenessWarning`) when it exceeds ``tolerance`` of the difference: the fix
is more steps.

    from circuitlab.concepts.gradients import integrated_gradients, gradient_x_input
    from circuitlab.metrics import LogitDiff

    ig = integrated_gradients(model, "The cat sat on the", LogitDiff(" mat", " cat"), baseline="pad", steps=32)
    ig.values                     # [prompt, pos]: each token's share of metric(x) - metric(baseline)
    ig.meta["gap"]                # sum of attributions - (metric(x) - metric(baseline))

**Where the path runs.** ``hook`` names the activation that is interpolated (any TransformerLens hook whose
activation is ``[batch, pos, ...]``): ``"hook_embed"`` (the default) interpolates the token embeddings and
keeps positional embeddings as they are, which is what Captum's ``LayerIntegratedGradients`` on the embedding
layer does; ``"blocks.0.hook_resid_pre"`` interpolates token plus positional embedding; a later hook
(``"blocks.2.hook_resid_pre"``, ``"blocks.1.hook_mlp_out"``) attributes to that layer's input or output. Trailing
axes (``d_model``, or head and ``d_head``) are summed, so the result is always ``[prompt, pos]``.

**Baselines**, defined at the hook as the activation there on a reference input:

- ``"zero"``: zeros at the hook (for ``hook_embed``, the zero embedding);
- ``"pad"`` (or a token id, or ``pad_token=``): the hook's activation when every token is the pad token (for
  ``hook_embed``, the pad token's embedding at every position); by default the tokenizer's ``pad_token_id``;
- ``"mean"``: the hook's activation when every token embedding is the mean embedding over the vocabulary.

By default (``keep_bos=True``) a prompt's leading BOS token stays in the baseline, so that the path changes the
prompt's own tokens only (and BOS, which many models use as an attention sink, gets no attribution).

**The metric** is any circuitlab metric (:mod:`circuitlab.metrics`) or any differentiable function of logits
``[batch, pos, d_vocab]`` returning one number, applied to the prompts as a batch, as everywhere in circuitlab.
The attributions are those of that one number: for a metric that averages over ``B`` prompts (every circuitlab
metric does), prompt ``b``'s row sums to ``(metric_b(x) - metric_b(x')) / B``; ``meta["prompt_sums"]`` holds
the row sums.

**Batching.** The interpolation points of all prompts run as batch rows (``steps x prompts`` rows), cut into
passes whose forward and backward fit ``max_memory`` (whole steps per pass; a metric that can be split by
prompt, as circuitlab's can, is also split by prompt when one step does not fit).
"""

from __future__ import annotations

import math
import re
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Union

import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuitlab.core import (DEFAULT_MAX_MEMORY, ModelLike, Prompts, as_model, check_affordable, check_count,
                             check_finite, check_max_memory, check_number, final_norm, final_residual, metric_name,
                             model_name, position_labels, progress_bar, resolution, row_bytes, shorten, softcap,
                             str_tokens, to_tokens, unresolved)
from circuitlab.engine.collect import stop_kwargs
from circuitlab.errors import InputError
from circuitlab.metrics import Metric, bind_metric, can_split, is_declarative
from circuitlab.results import Result

#: the quadrature rules (Captum's names)
METHODS = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid")
#: the named baselines
BASELINES = ("zero", "pad", "mean")
#: hooks whose second axis is not the position (attention patterns and scores: [batch, head, query, key])
NOT_PER_TOKEN = ("hook_pattern", "hook_attn_scores")
#: default relative completeness gap above which a warning is given
DEFAULT_TOLERANCE = 0.05

Baseline = Union[str, int]


class CompletenessWarning(UserWarning):
    """Integrated gradients whose sum misses ``metric(x) - metric(baseline)`` by more than the tolerance."""


# ---------------------------------------------------------------------------------------------------------
# The quadrature
# ---------------------------------------------------------------------------------------------------------

def quadrature(steps: int, method: str = "gausslegendre") -> tuple[Float[Tensor, " steps"], Float[Tensor, " steps"]]:
    """Points ``alphas`` in [0, 1] and weights for ``integral_0^1 f(a) da ~ sum_i weights[i] * f(alphas[i])``.

    - ``"gausslegendre"``: Gauss-Legendre nodes and weights mapped from [-1, 1] to [0, 1] (exact for polynomials
      of degree ``2 * steps - 1``); Captum's default.
    - ``"riemann_left"``, ``"riemann_right"``, ``"riemann_middle"``: ``steps`` equal intervals, each evaluated at
      its left end, right end or middle; weights ``1 / steps``.
    - ``"riemann_trapezoid"``: the trapezoid rule on ``steps`` equally spaced points including both ends (at least
      2): weights ``1 / (steps - 1)``, halved at the ends, so they sum to 1. (Captum 0.9's trapezoid uses
      ``1 / steps``, halved at the ends, which sum to ``(steps - 1) / steps``: its attributions are ours times
      ``(steps - 1) / steps``.)

    Returns float64 tensors.
    """
    steps = check_steps(steps)
    method = check_method(method)
    n = steps
    # the points and weights are held at once (two float64 tensors; Gauss-Legendre's come from the eigenvalues of an
    # n x n companion matrix, several copies of it): refuse up front what does not fit, with the memory it needs
    need = 4 * 8 * n * n if method == "gausslegendre" else 4 * 8 * n
    check_affordable(need, f"steps={n:,} with method={method!r}", "use fewer steps (20 to 300 is usual)"
                     + (", or a Riemann method" if method == "gausslegendre" else ""))
    if method == "gausslegendre":
        import numpy as np

        x, w = np.polynomial.legendre.leggauss(n)
        return torch.from_numpy(0.5 * (x + 1)).double(), torch.from_numpy(0.5 * w).double()
    i = torch.arange(n, dtype=torch.float64)
    if method == "riemann_trapezoid":
        if n < 2:
            raise InputError("steps=1 with method='riemann_trapezoid': the trapezoid rule needs both ends of the "
                             "path, so at least steps=2. Use more steps, or method='gausslegendre'.")
        w = torch.full((n,), 1.0 / (n - 1), dtype=torch.float64)
        w[0] /= 2
        w[-1] /= 2
        return i / (n - 1), w
    offset = {"riemann_left": 0.0, "riemann_right": 1.0, "riemann_middle": 0.5}[method]
    return (i + offset) / n, torch.full((n,), 1.0 / n, dtype=torch.float64)


def check_steps(steps: Any) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InputError(f"steps must be an integer >= 1 (the number of points on the path from the baseline to the "
                         f"input; 20 to 300 is usual); got {shorten(steps)}.")
    return steps


def check_method(method: Any) -> str:
    if method not in METHODS:
        raise InputError(f"method={shorten(method)} is not a quadrature rule; use one of "
                         f"{', '.join(map(repr, METHODS))} "
                         "(Captum's names; 'gausslegendre' is the default).")
    return method


def check_hook(model, hook: Any, what: str = "hook") -> str:
    """``hook`` checked: a hook name the model has, and one a gradient of the metric can reach
    (:func:`check_gradient_hook`)."""
    names = getattr(model, "hook_dict", {})
    if not isinstance(hook, str) or hook not in names:
        last = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
        examples = [n for n in ("hook_embed", "blocks.0.hook_resid_pre", last) if n in names]
        raise InputError(f"{what}={shorten(hook)} is not a hook of this model. Give a TransformerLens hook name it "
                         f"has, e.g. {', '.join(map(repr, examples))} (all of them: model.hook_dict).")
    return check_gradient_hook(model, hook, what)


#: hooks a metric's gradient flows through: the embeddings and every hook inside the blocks
_GRADIENT_PATH = re.compile(r"^(hook_embed|hook_pos_embed|blocks\.\d+\..+)$")


def check_gradient_hook(model, hook: str, what: str = "hook") -> str:
    """Refuse a hook that a gradient-based method (integrated gradients, gradient x input, TCAV's directional
    derivatives) cannot use, with the hooks it can: one outside the path from the embeddings to the final norm's
    input (the final norm's own hooks ``ln_final.*`` and the unembedding are not run when a circuitlab metric reads
    the logits through :func:`circuitlab.core.readout`, so no gradient would reach them; ``hook_tokens`` holds token
    ids), or one without one vector per token (attention patterns and scores)."""
    if not _GRADIENT_PATH.match(hook) or hook.endswith(NOT_PER_TOKEN):
        last = model.cfg.n_layers - 1
        why = ("holds attention patterns or scores [batch, head, query, key], not one vector per token"
               if hook.endswith(NOT_PER_TOKEN) else
               "is not on the path from the embeddings to the final norm's input, so the metric's gradient does not "
               "reach it (the metric reads the final residual stream through the final norm itself)")
        pos = ", 'hook_pos_embed'" if "hook_pos_embed" in model.hook_dict else ""
        raise InputError(f"{what}={shorten(hook)} {why}. This method takes 'hook_embed'{pos} or a hook inside a "
                         f"block with one vector per token: blocks.{{l}}.hook_resid_pre / hook_resid_mid / "
                         f"hook_resid_post / hook_attn_out / hook_mlp_out / attn.hook_z / mlp.hook_post ..., l in "
                         f"0..{last} (for the final norm's input, 'blocks.{last}.hook_resid_post').")
    return hook


# ---------------------------------------------------------------------------------------------------------
# The result
# ---------------------------------------------------------------------------------------------------------

@dataclass(repr=False)
class TokenAttributions(Result):
    """Attributions per token: ``values[prompt, pos]``; ``tokens[prompt]`` lists each prompt's token strings.

    ``meta`` holds what was run (``method``: ``"integrated gradients"`` or ``"gradient x input"``, ``hook``,
    ``baseline``, ``steps``, ``quadrature``) and the completeness check: ``metric_input``, ``metric_baseline``,
    ``difference`` (their difference), ``sum`` (of every attribution), ``gap`` (``sum - difference``),
    ``relative_gap`` (``|gap| / |difference|``; NaN where the difference is within float noise, see
    :func:`circuitlab.core.resolution`) and ``prompt_sums`` (each row's sum).
    """

    tokens: list = field(default_factory=list)

    @property
    def gap(self) -> float:
        """The completeness gap: sum of attributions minus ``metric(x) - metric(baseline)``."""
        return float(self.meta["gap"])

    def prompt(self, i: int) -> list[tuple[str, float]]:
        """Prompt ``i``'s ``(token, attribution)`` pairs."""
        return list(zip(self.tokens[i], self.values[i].tolist()))


# ---------------------------------------------------------------------------------------------------------
# Baselines
# ---------------------------------------------------------------------------------------------------------

def _capture(model, tokens: Tensor, hook: str, embed: Optional[Tensor] = None, start: int = 0) -> Tensor:
    """The activation at ``hook`` on ``tokens`` (with ``hook_embed`` replaced by ``embed`` from position ``start``
    on, when given)."""
    got: dict[str, Tensor] = {}

    def keep(act, hook=None):
        got["act"] = act.detach().clone()

    def put_embed(act, hook=None):
        act = act.clone()
        act[:, start:] = embed.to(act.dtype)
        return act

    hooks = [("hook_embed", put_embed)] if embed is not None else []
    hooks.append((hook, keep))
    with torch.no_grad():
        model.run_with_hooks(tokens, fwd_hooks=hooks, return_type=None, **stop_kwargs(model, [hook]))
    return got["act"]


def starts_with_bos(model, tokens: Int[Tensor, "batch pos"]) -> bool:
    """Whether every prompt of ``tokens`` begins with the tokenizer's BOS token (and has a token after it)."""
    tok = getattr(model, "tokenizer", None)
    bos = getattr(tok, "bos_token_id", None) if tok is not None else None
    return bos is not None and tokens.shape[1] > 1 and bool((tokens[:, 0] == int(bos)).all())


@torch.no_grad()
def mean_embedding(model, chunk: int = 8192) -> Float[Tensor, " d_model"]:
    """The mean of ``model.embed(t)`` over every token ``t`` of the vocabulary (what ``hook_embed`` would hold);
    ``chunk`` tokens embedded at a time."""
    model = as_model(model)
    chunk = check_count(chunk, "chunk")
    V = model.cfg.d_vocab
    total = None
    for lo in range(0, V, chunk):
        ids = torch.arange(lo, min(V, lo + chunk), device=model.cfg.device)[None]
        part = model.embed(ids)[0].double().sum(0)
        total = part if total is None else total + part
    return (total / V).to(model.cfg.dtype)


def pad_token_id(model, pad_token: Any = None, what: str = "pad_token") -> int:
    """The pad token's id: ``pad_token`` (an id or one token's text), else the tokenizer's ``pad_token_id``.
    An id is an input token: it is checked against the input vocabulary (``d_vocab``), not the output's (a
    classifier made of the model has two outputs and the model's whole vocabulary as input)."""
    from circuitlab.core import answer_id

    if isinstance(pad_token, int) and not isinstance(pad_token, bool):
        if not 0 <= pad_token < model.cfg.d_vocab:
            raise InputError(f"{what} token id {pad_token} is outside the vocabulary [0, {model.cfg.d_vocab}).")
        return pad_token
    if pad_token is not None:
        return answer_id(model, pad_token, what=what)
    tok = getattr(model, "tokenizer", None)
    pid = getattr(tok, "pad_token_id", None) if tok is not None else None
    if pid is None:
        raise InputError("baseline='pad' needs a pad token, and this model's tokenizer has none. Pass its id: "
                         "baseline=<token id>, or pad_token=<id or text>.")
    return int(pid)


def check_baseline(baseline: Any) -> None:
    """``baseline``: ``'zero'``, ``'pad'``, ``'mean'`` or a token id (checked against a model where it is used)."""
    if isinstance(baseline, Tensor):
        raise InputError("baseline must be 'zero', 'pad', 'mean' or a token id; got a tensor. For baseline token ids "
                         "per position, compute their activation yourself and compare.")
    if isinstance(baseline, bool) or not (isinstance(baseline, int) or baseline in BASELINES):
        raise InputError(f"baseline={shorten(baseline)}: use 'zero', 'pad' (the tokenizer's pad token, or "
                         "pad_token=...), 'mean' (the mean token embedding), or a token id.")


def baseline_activation(model, tokens: Int[Tensor, "batch pos"], hook: str, baseline: Any, pad_token: Any = None,
                        keep_bos: bool = True, x: Optional[Float[Tensor, "batch pos ..."]] = None
                        ) -> tuple[Float[Tensor, "batch pos ..."], str]:
    """The baseline activation at ``hook`` for prompts ``tokens``, and a description of it (see the module
    docstring). With ``keep_bos`` and prompts that begin with BOS, the reference input keeps its BOS token and the
    baseline equals the input at position 0 (so BOS gets no attribution). ``x``: the input's activation there,
    if already computed."""
    check_baseline(baseline)
    x = _capture(model, tokens, hook) if x is None else x
    keep = bool(keep_bos) and starts_with_bos(model, tokens)
    if baseline == "zero":
        base, name = torch.zeros_like(x), "zero"
    elif baseline == "mean":
        base, name = _capture(model, tokens, hook, embed=mean_embedding(model), start=int(keep)), "mean embedding"
    else:
        pid = (pad_token_id(model, baseline, what="baseline") if isinstance(baseline, int)
               else pad_token_id(model, pad_token))
        ref = torch.full_like(tokens, pid)
        if keep:
            ref[:, 0] = tokens[:, 0]
        base, name = _capture(model, ref, hook), f"pad token {pid}"
    if keep:
        base[:, 0] = x[:, 0]
        name += ", BOS kept"
    return base, name


# ---------------------------------------------------------------------------------------------------------
# The metric
# ---------------------------------------------------------------------------------------------------------

def forward_for_metric(model, tokens: Int[Tensor, "batch pos"], fwd_hooks: Sequence, metric
                       ) -> Union[Float[Tensor, "batch pos d_model"], Float[Tensor, "batch pos d_vocab"]]:
    """Run ``model`` on ``tokens`` with ``fwd_hooks`` as far as ``metric`` needs: for a declarative circuitlab
    metric (one that says which logits it reads) the final residual stream ``[batch, pos, d_model]``, whose
    readout :func:`metric_from` computes at those positions and vocabulary columns only; else the logits."""
    if is_declarative(metric):
        resid, _ = final_residual(model, tokens, (), fwd_hooks)
        return resid
    return model.run_with_hooks(tokens, fwd_hooks=list(fwd_hooks))


def metric_from(model, out: Union[Float[Tensor, "batch pos d_model"], Float[Tensor, "batch pos d_vocab"]], metric,
                what: str) -> Float[Tensor, ""]:
    """``metric`` on the output of :func:`forward_for_metric`, checked: one number, differentiable where
    gradients are being taken."""
    if is_declarative(metric):
        b, n = out.shape[:2]
        positions, columns = metric.reads(b, n)
        positions = positions.to(out.device)
        x = final_norm(model, out.gather(1, positions[:, :, None].expand(-1, -1, out.shape[-1])))  # [b, k, d]
        if columns is None:
            logits = x @ model.W_U + model.b_U
        else:
            columns = columns.to(out.device)
            logits = torch.einsum("bkd,dbc->bkc", x, model.W_U[:, columns]) + model.b_U[columns][:, None, :]
        value = metric.from_selected(softcap(logits, model.cfg.output_logits_soft_cap))
    else:
        value = metric(out)
    if not isinstance(value, Tensor) or value.numel() != 1:
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise InputError(f"metric={shorten(metric_name(metric))} must return one number (a 0-d tensor) from logits "
                         f"[batch, pos, d_vocab]; got {shape}. Average or sum its per-prompt values.")
    if torch.is_grad_enabled() and not value.requires_grad:
        raise InputError(
            f"metric={shorten(metric_name(metric))} is not differentiable: its value on {what} does not require grad "
            "(it detaches, rounds, takes an argmax, or converts to a Python number). Gradient attributions need the "
            "gradient of the metric with respect to the logits: give a differentiable metric, e.g. "
            "LogitDiff(correct=' Mary', wrong=' John') or Probability(' Paris', log=True)."
        )
    return value.reshape(())


# ---------------------------------------------------------------------------------------------------------
# Integrated gradients
# ---------------------------------------------------------------------------------------------------------

def integrated_gradients(
    model: ModelLike,
    prompts: Prompts,
    metric: Metric,
    *,
    hook: str = "hook_embed",
    baseline: Baseline = "zero",
    pad_token: Any = None,
    keep_bos: bool = True,
    steps: int = 50,
    method: str = "gausslegendre",
    tolerance: float = DEFAULT_TOLERANCE,
    max_memory: int = DEFAULT_MAX_MEMORY,
    progress: bool = False,
) -> TokenAttributions:
    """Integrated gradients of ``metric`` over the tokens of ``prompts`` (see the module docstring).

    Args:
        model: a HookedTransformer, a TransformerBridge in compatibility mode, or a name for
            :func:`circuitlab.load_model`.
        prompts: text, texts of equal token length, or token ids ``[batch, pos]``.
        metric: a circuitlab metric or a differentiable function of logits ``[batch, pos, d_vocab]`` -> scalar.
        hook: the activation interpolated (default ``"hook_embed"``: token embeddings).
        baseline: ``"zero"``, ``"pad"``, ``"mean"``, or a token id (the pad baseline with that token).
        pad_token: the pad token for ``baseline="pad"`` (id or text; default the tokenizer's).
        keep_bos: where the prompts begin with BOS, keep it in the baseline (it gets no attribution). Replacing
            a BOS token, which many models use as an attention sink, changes every later position at once: its
            attribution then dominates and the path needs many more steps. ``False`` replaces every position,
            as Captum does with baseline token ids.
        steps: points on the path (at least 1).
        method: quadrature rule (:data:`METHODS`; default Gauss-Legendre, as Captum).
        tolerance: relative completeness gap ``|gap| / |metric(x) - metric(baseline)|`` above which a
            :class:`CompletenessWarning` is given.
        max_memory: rough bound in bytes on the activations one forward and backward pass holds.
        progress: show a progress bar over the passes.

    Returns:
        :class:`TokenAttributions` ``[prompt, pos]``; the completeness check in ``meta``.
    """
    alphas, weights = quadrature(steps, method)
    return _attribute(model, prompts, metric, hook=hook, baseline=baseline, pad_token=pad_token, keep_bos=keep_bos,
                      alphas=alphas, weights=weights, tolerance=tolerance, max_memory=max_memory, progress=progress,
                      kind="integrated gradients", settings=dict(steps=steps, quadrature=method))


def gradient_x_input(
    model: ModelLike,
    prompts: Prompts,
    metric: Metric,
    *,
    hook: str = "hook_embed",
    baseline: Baseline = "zero",
    pad_token: Any = None,
    keep_bos: bool = True,
    max_memory: int = DEFAULT_MAX_MEMORY,
) -> TokenAttributions:
    """Gradient x input: ``(x - x') * d metric / dx`` at the input ``x`` itself, summed per token.

    With ``baseline="zero"`` (the default) and ``keep_bos=False`` this is the classic ``x * grad`` at every
    position (Shrikumar et al. 2016); by default (``keep_bos=True``, as in :func:`integrated_gradients`) a leading
    BOS token stays in the baseline and gets no attribution, and every other position is ``x * grad``. It is
    integrated gradients with one step at the input (``riemann_right``, ``steps=1``). Its sum is a first-order
    estimate of ``metric(x) - metric(x')``: the gap in ``meta`` says how far from linear the model is, and no
    warning is given.
    """
    alphas, weights = torch.ones(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    return _attribute(model, prompts, metric, hook=hook, baseline=baseline, pad_token=pad_token, keep_bos=keep_bos,
                      alphas=alphas, weights=weights, tolerance=math.inf, max_memory=max_memory, progress=False,
                      kind="gradient x input", settings=dict(steps=1, quadrature="gradient at the input"))


def _check_tolerance(tolerance: Any) -> float:
    # an upper bound on the gap: math.inf means "no bound" (never warn), so infinity is allowed
    return check_number(tolerance, "tolerance", low=0, finite=False,
                        what="a number >= 0 (the relative completeness gap that triggers a warning, e.g. 0.05)")


def _attribute(model, prompts, metric, *, hook, baseline, pad_token, keep_bos, alphas, weights, tolerance, max_memory,
               progress, kind, settings) -> TokenAttributions:
    model = as_model(model)
    hook = check_hook(model, hook)
    tolerance = _check_tolerance(tolerance)
    max_memory = check_max_memory(max_memory)
    metric = bind_metric(metric, model)
    tokens = to_tokens(model, prompts)
    B, n = tokens.shape
    t0 = time.perf_counter()

    if pad_token is not None and not baseline == "pad":
        raise InputError(f"pad_token={shorten(pad_token)} is only read with baseline='pad' (this call has baseline="
                         f"{shorten(baseline)}); drop it, or use baseline='pad'.")
    x = _capture(model, tokens, hook)
    if hook.endswith(NOT_PER_TOKEN) or x.ndim < 2 or x.shape[0] != B or x.shape[1] != n:
        raise InputError(f"hook={shorten(hook)} holds activations of shape {tuple(x.shape)}, not [batch, pos, ...] "
                         f"([{B}, {n}, ...] here), so they cannot be attributed per token. Use a hook on the "
                         "residual stream or a sub-layer output (e.g. 'blocks.0.hook_resid_pre').")
    if not isinstance(keep_bos, bool):
        raise InputError(f"keep_bos must be True or False; got {shorten(keep_bos)}.")
    base, base_name = baseline_activation(model, tokens, hook, baseline, pad_token, keep_bos, x)
    diff = x - base

    # the endpoints, for the completeness check
    with torch.no_grad():
        m_input = float(metric_from(model, forward_for_metric(model, tokens, [(hook, _put(x))], metric), metric,
                                    "the input"))
        m_base = float(metric_from(model, forward_for_metric(model, tokens, [(hook, _put(base))], metric), metric,
                                   "the baseline"))

    # passes: whole steps of all prompts, or (splittable metrics) parts of the prompts of one step
    cfg = model.cfg
    size = x.element_size()
    logit_columns = cfg.d_vocab_out * (1 if is_declarative(metric) else n)  # declarative: few positions are read
    per_row = cfg.n_layers * row_bytes(model, n) + 3 * logit_columns * size + 3 * x[0].numel() * size
    per_step = B * per_row
    S = len(alphas)
    # the passes, generated as they run (a list of them would grow with steps): (a range of steps, a part of the rows)
    if per_step <= max_memory or not can_split(metric) or B == 1:
        k = max(1, max_memory // per_step)
        n_passes = -(-S // k)
        passes = ((range(lo, min(S, lo + k)), slice(0, B)) for lo in range(0, S, k))
    else:
        rows = max(1, max_memory // per_row)
        n_passes = S * -(-B // rows)
        passes = ((range(s, s + 1), slice(lo, min(B, lo + rows))) for s in range(S) for lo in range(0, B, rows))

    grad_sum = torch.zeros_like(x, dtype=torch.float64)
    a = alphas.to(x.device)
    for step_ids, part in progress_bar(passes, progress=progress, desc=kind, unit="pass", total=n_passes):
        b = part.stop - part.start
        m = metric if (part.start == 0 and part.stop == B) else metric.rows(part, B)
        share = b / B  # a splittable metric is a mean over prompts: a part of b prompts weighs b / B in it
        k = len(step_ids)
        al = a[step_ids.start:step_ids.stop].to(x.dtype).reshape(k, *([1] * x.ndim))
        path = (base[part][None] + al * diff[part][None]).reshape(k * b, *x.shape[1:]).detach().requires_grad_(True)
        out = forward_for_metric(model, tokens[part].repeat(k, 1), [(hook, _put(path))], m)
        out = out.reshape(k, b, *out.shape[1:])
        total = sum(float(weights[s]) * share * metric_from(model, out[j], m, "the path")
                    for j, s in enumerate(step_ids))
        (grad,) = torch.autograd.grad(total, path)
        grad_sum[part] += grad.reshape(k, b, *x.shape[1:]).double().sum(0)
        del out, total, grad, path

    attributions = (diff.double() * grad_sum)
    per_token = attributions.flatten(2).sum(-1) if attributions.ndim > 2 else attributions
    check_finite(model, tokens, "the attributions", per_token)
    difference = m_input - m_base
    total = float(per_token.sum())
    gap = total - difference
    if unresolved(m_input, m_base, model.cfg.dtype):
        # the metric does not move between baseline and input: a gap relative to that difference is undefined
        # (NaN), and completeness is judged on the gap alone, against the same resolution
        rel = math.nan
        if abs(gap) > resolution(max(abs(m_input), abs(m_base)), model.cfg.dtype):
            warnings.warn(
                f"integrated gradients are not complete: the attributions sum to {total:.6g} but metric(input) and "
                f"metric(baseline) are equal within float noise ({m_input:.6g}, {m_base:.6g}), so the sum should be "
                f"about 0. Use more steps (e.g. steps={4 * settings['steps']}); and a baseline on which the metric "
                "differs from the input's, or the attributions explain no difference.", CompletenessWarning,
                stacklevel=3)
    elif (rel := abs(gap) / abs(difference)) > tolerance:
        warnings.warn(
            f"integrated gradients are not complete: the attributions sum to {total:.6g} but metric(input) - "
            f"metric(baseline) = {difference:.6g} (gap {gap:.3g}, {100 * rel:.2g}% of the difference, tolerance "
            f"{100 * tolerance:.2g}%). The path integral is not resolved with steps={settings['steps']}: use more "
            f"steps (e.g. steps={4 * settings['steps']}).", CompletenessWarning, stacklevel=3)
    tok_strings = [str_tokens(model, row) for row in tokens]
    meta = dict(method=kind, hook=hook, baseline=base_name, **settings, metric_input=m_input, metric_baseline=m_base,
                difference=difference, sum=total, gap=gap, relative_gap=rel, tolerance=tolerance,
                prompt_sums=per_token.sum(1).tolist(), passes=n_passes, seconds=time.perf_counter() - t0)
    text = prompts if isinstance(prompts, str) else (list(prompts) if isinstance(prompts, Sequence)
                                                     and prompts and isinstance(prompts[0], str) else None)
    prompt_labels = [f"p{i}" for i in range(B)] if text is None else ([text] if isinstance(text, str) else text)
    labels = {"prompt": prompt_labels, "pos": position_labels(model, tokens)}
    return TokenAttributions(per_token, ("prompt", "pos"), labels,
                             title=f"{kind[0].upper()}{kind[1:]} ({hook}, baseline {base_name})",
                             metric=metric_name(metric), model=model_name(model), task=f"{B} prompt(s)", meta=meta,
                             tokens=tok_strings)


def _put(value: Tensor):
    """A hook that replaces the activation by ``value`` (same shape)."""

    def hook(act: Tensor, hook=None) -> Tensor:
        return value

    return hook


__all__ = ["integrated_gradients", "gradient_x_input", "quadrature", "mean_embedding", "baseline_activation",
           "TokenAttributions", "CompletenessWarning", "METHODS", "BASELINES"]
