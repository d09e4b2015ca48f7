"""Training dynamics: what a model can do at each checkpoint of its training, and where it changes abruptly.

Olsson et al. (2022), "In-context learning and induction heads" (Argument 1): in small attention-only models
with two or more layers, induction heads form in a *phase change*, a short window of training in which the
heads' prefix-matching scores jump, the in-context learning score improves, and the training loss shows a bump;
one-layer models show none of it. This module measures a model at every checkpoint and finds such windows:

- :func:`token_losses`: the mean next-token loss at every position of a batch of sequences (the per-token loss
  curve whose fall with position is in-context learning);
- :func:`icl_score`: Olsson et al.'s in-context learning score, the loss at a late token minus the loss at an
  early token (theirs: the 500th minus the 50th token of an 8192-token context; ours by default: tokens 200-249
  minus tokens 20-29 of a 256-token context, averaged over a band of positions to cut noise). Negative is
  better: the model predicts later tokens better because it has more context;
- :func:`measure_checkpoint`: one checkpoint's per-token losses and ICL score on held-out text, and its heads'
  prefix-matching, previous-token and natural-text induction scores (:func:`circuitlab.induction.head_scores`);
- :func:`training_curves`: :func:`measure_checkpoint` over a list of checkpoints, as a
  :class:`TrainingCurves` bundle with a ``checkpoint`` axis (and the training loss of every step);
- :func:`detect_phase_change`: the one-doubling window in which a curve moves most, and whether that is a phase
  change by a stated criterion; :func:`phase_changes` runs it on the induction and ICL curves and says whether
  the two windows coincide.

Scores of heads (all from :func:`circuitlab.induction.head_scores`, attention averaged over the queries that
have a target):

- *prefix matching* (Olsson et al.): attention on repeated random tokens ``[BOS] r_1..r_n r_1..r_n`` from each
  token to the token after its earlier occurrence (``kind="induction"``);
- *induction on text*: the same target, on the held-out natural text (token repeats that occur naturally);
- *previous token*: attention to the position just before, on the held-out text.

    import circuitlab as cl
    curves = cl.dynamics.training_curves([(step, model_at_step) ...], heldout_text, tokens_per_step=2048)
    print(cl.dynamics.phase_changes(curves))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from circuitlab.core import (DEFAULT_MAX_MEMORY, ModelLike, as_model, check_count, check_finite, check_max_memory,
                             check_number, check_seed, model_name, progress_bar, row_bytes, row_chunks, shorten)
from circuitlab.errors import InputError
from circuitlab.induction import head_scores
from circuitlab.results import Bundle, Result

__all__ = [
    "DEFAULT_EARLY",
    "DEFAULT_LATE",
    "text_windows",
    "token_losses",
    "icl_score",
    "ICLScore",
    "measure_checkpoint",
    "CheckpointMeasurement",
    "training_curves",
    "TrainingCurves",
    "curves_to_json",
    "curves_from_json",
    "load_curves",
    "detect_phase_change",
    "PhaseChange",
    "phase_changes",
    "PhaseChanges",
]

#: the ICL score's early and late tokens: positions ``[start, stop)`` of the predicted token (BOS is position 0)
DEFAULT_EARLY = (20, 30)
DEFAULT_LATE = (200, 250)


# ----------------------------------------------------------------------------------------------------------
# Per-token losses and the in-context learning score
# ----------------------------------------------------------------------------------------------------------


def text_windows(model: ModelLike, text: str, seq_len: Optional[int] = None,
                 stride: int = 64) -> Int[Tensor, "batch pos"]:
    """``text`` as overlapping windows ``[BOS, t_i, ..., t_{i+seq_len-2}]`` starting every ``stride`` tokens.

    ``seq_len`` defaults to the model's context. Windows overlap when ``stride < seq_len - 1``, which gives more
    samples of each position from a short held-out text (they are not independent samples).
    """
    model = as_model(model)
    if not isinstance(text, str) or not text:
        raise InputError(f"text must be a non-empty string, got {shorten(text)}.")
    seq_len = model.cfg.n_ctx if seq_len is None else check_count(seq_len, "seq_len", minimum=2)
    if seq_len > model.cfg.n_ctx:
        raise InputError(f"seq_len={seq_len} is longer than the model's context ({model.cfg.n_ctx}); "
                         "pass at most that.")
    stride = check_count(stride, "stride (tokens between window starts)")
    if model.tokenizer is None:
        raise InputError("text_windows needs a model with a tokenizer; pass token ids to the analysis instead.")
    ids = torch.tensor(model.tokenizer.encode(text, add_special_tokens=False), dtype=torch.long)
    body = seq_len - 1
    if len(ids) < body:
        raise InputError(f"the text is {len(ids)} tokens, shorter than one window of {body} tokens after BOS; "
                         "pass a longer text or a smaller seq_len.")
    starts = torch.arange(0, len(ids) - body + 1, stride)
    rows = ids[starts[:, None] + torch.arange(body)[None, :]]
    bos = model.tokenizer.bos_token_id if model.tokenizer.bos_token_id is not None else 0
    return torch.cat([torch.full((len(rows), 1), bos, dtype=torch.long), rows], dim=1).to(model.cfg.device)


def _check_tokens(model: HookedTransformer, tokens: Any) -> Tensor:
    if not isinstance(tokens, Tensor) or tokens.ndim != 2 or tokens.dtype not in (torch.long, torch.int32, torch.int64):
        raise InputError(f"tokens must be an integer tensor [batch, pos], got {shorten(tokens)}; make one with "
                         "circuitlab.dynamics.text_windows(model, text).")
    if tokens.shape[1] < 2 or tokens.shape[0] < 1:
        raise InputError(f"tokens must have at least one row of 2 positions, got shape {tuple(tokens.shape)}.")
    if tokens.shape[1] > model.cfg.n_ctx:
        raise InputError(f"tokens have {tokens.shape[1]} positions, more than the model's context "
                         f"({model.cfg.n_ctx}); cut them.")
    if int(tokens.min()) < 0 or int(tokens.max()) >= model.cfg.d_vocab:
        raise InputError(f"tokens hold ids outside the vocabulary [0, {model.cfg.d_vocab}).")
    return tokens.long().to(model.cfg.device)


def _losses(model: HookedTransformer, tokens: Tensor, max_memory: int) -> Float[Tensor, "batch pos_minus_1"]:
    """``loss[b, t - 1]``: the loss (nats) of predicting ``tokens[b, t]`` from ``tokens[b, :t]``, in float64."""
    out = []
    per_row = row_bytes(model, tokens.shape[1], logits=model.cfg.d_vocab_out)
    for rows in row_chunks(tokens.shape[0], per_row, max_memory):
        with torch.inference_mode():
            logits = model(tokens[rows], return_type="logits")
        logp = logits[:, :-1].double().log_softmax(-1)
        out.append(-logp.gather(-1, tokens[rows, 1:, None])[..., 0].cpu())
    return torch.cat(out)


def token_losses(model: ModelLike, tokens: Int[Tensor, "batch pos"],
                 max_memory: int = DEFAULT_MAX_MEMORY) -> Result:
    """The mean next-token loss at every position: ``values[t - 1]`` is the loss (nats) of predicting token ``t``
    from tokens ``0..t-1``, averaged over the rows of ``tokens`` (the per-token loss curve of Olsson et al.).

    Args:
        model: a ``HookedTransformer`` or a name for :func:`circuitlab.load_model`.
        tokens: ``[batch, pos]`` token ids, e.g. :func:`text_windows` of held-out text.
        max_memory: rough bound in bytes on one forward pass (rows run in batches that fit it).

    Returns:
        a :class:`~circuitlab.results.Result` of shape ``[pos - 1]``, axis ``"position"`` labelled by the position
        of the predicted token (``1 .. pos - 1``); ``meta["sem"]`` holds each position's standard error.
    """
    model = as_model(model)
    max_memory = check_max_memory(max_memory)
    tokens = _check_tokens(model, tokens)
    loss = _losses(model, tokens, max_memory)
    check_finite(model, tokens, "the per-token losses", loss)
    sem = loss.std(0) / math.sqrt(loss.shape[0]) if loss.shape[0] > 1 else torch.zeros(loss.shape[1])
    return Result(values=loss.mean(0).float(), axes=("position",),
                  labels={"position": [str(t) for t in range(1, tokens.shape[1])]},
                  title="Per-token loss", metric="mean next-token loss (nats) of the token at each position",
                  model=model_name(model), task=f"{tokens.shape[0]} sequences of {tokens.shape[1]} tokens",
                  meta={"sem": sem.float().tolist(), "n_seqs": tokens.shape[0]})


@dataclass(frozen=True)
class ICLScore:
    """Olsson et al.'s in-context learning score: ``score = late_loss - early_loss`` (nats; negative is better).

    ``early`` and ``late`` are the ``[start, stop)`` positions of the predicted tokens averaged over."""

    score: float
    early_loss: float
    late_loss: float
    early: tuple[int, int]
    late: tuple[int, int]


def _check_band(band: Any, what: str, n_pos: int) -> tuple[int, int]:
    if (not isinstance(band, (tuple, list)) or len(band) != 2
            or not all(isinstance(b, int) and not isinstance(b, bool) for b in band)):
        raise InputError(f"{what} must be a pair of positions (start, stop), got {shorten(band)}.")
    lo, hi = band
    if not 1 <= lo < hi <= n_pos:
        raise InputError(f"{what}={tuple(band)} must satisfy 1 <= start < stop <= {n_pos} (the sequences' length); "
                         "positions are those of the predicted tokens, BOS being 0.")
    return int(lo), int(hi)


def icl_from_losses(losses: Result, early: tuple[int, int] = DEFAULT_EARLY,
                    late: tuple[int, int] = DEFAULT_LATE) -> ICLScore:
    """The ICL score read from a per-token loss curve (:func:`token_losses`)."""
    n_pos = losses.values.shape[-1] + 1
    early, late = _check_band(early, "early", n_pos), _check_band(late, "late", n_pos)
    v = losses.values.double()
    e, lt = float(v[..., early[0] - 1: early[1] - 1].mean()), float(v[..., late[0] - 1: late[1] - 1].mean())
    return ICLScore(score=lt - e, early_loss=e, late_loss=lt, early=early, late=late)


def icl_score(model: ModelLike, tokens: Int[Tensor, "batch pos"], early: tuple[int, int] = DEFAULT_EARLY,
              late: tuple[int, int] = DEFAULT_LATE, max_memory: int = DEFAULT_MAX_MEMORY) -> ICLScore:
    """In-context learning score: the mean loss at the late tokens minus the mean loss at the early tokens.

    Olsson et al. (2022) take the loss of the 500th token minus that of the 50th. Here ``early`` and ``late`` are
    bands ``[start, stop)`` of positions of the predicted token (BOS is 0), each averaged over its positions and
    over the rows of ``tokens``; defaults tokens 20-29 and 200-249 (for a 256-token context: the same 1:10 ratio
    as theirs). Every position's loss counts once (:func:`token_losses`).

    Returns:
        an :class:`ICLScore` (score, the two mean losses, the bands).
    """
    model = as_model(model)
    tokens = _check_tokens(model, tokens)
    _check_band(early, "early", tokens.shape[1])
    _check_band(late, "late", tokens.shape[1])
    return icl_from_losses(token_losses(model, tokens, max_memory=max_memory), early, late)


# ----------------------------------------------------------------------------------------------------------
# One checkpoint, many checkpoints
# ----------------------------------------------------------------------------------------------------------


@dataclass(repr=False)
class CheckpointMeasurement(Bundle):
    """What :func:`measure_checkpoint` measures on one model: per-token losses, the ICL score, the mean held-out
    loss, and three ``[layer, head]`` score tables."""

    token_losses: Result
    prefix_matching: Result
    induction: Result
    previous_token: Result
    icl: ICLScore
    heldout_loss: float


def measure_checkpoint(model: ModelLike, text: str, *, early: tuple[int, int] = DEFAULT_EARLY,
                       late: tuple[int, int] = DEFAULT_LATE, stride: int = 64, n_seqs: int = 32,
                       seq_len: Optional[int] = None, seed: int = 0,
                       max_memory: int = DEFAULT_MAX_MEMORY) -> CheckpointMeasurement:
    """Measure one model (a training checkpoint) on held-out ``text`` and on repeated random tokens.

    - per-token losses and the ICL score on :func:`text_windows` of ``text`` (``stride`` apart, the model's
      context long), and their mean (the held-out loss);
    - prefix-matching scores on ``n_seqs`` repeated random sequences (halves of ``seq_len``, default of
      :func:`circuitlab.induction.head_scores`; ``seed``), and induction and previous-token scores on the text
      windows, all by :func:`circuitlab.induction.head_scores`.
    """
    seed = check_seed(seed)
    model = as_model(model)
    n_seqs = check_count(n_seqs, "n_seqs")
    tokens = text_windows(model, text, stride=stride)
    _check_band(early, "early", tokens.shape[1])
    _check_band(late, "late", tokens.shape[1])
    losses = token_losses(model, tokens, max_memory=max_memory)
    return CheckpointMeasurement(
        token_losses=losses,
        prefix_matching=head_scores(model, "induction", seq_len=seq_len, n_seqs=n_seqs, seed=seed,
                                    max_memory=max_memory),
        induction=head_scores(model, "induction", tokens=tokens, max_memory=max_memory),
        previous_token=head_scores(model, "previous_token", tokens=tokens, max_memory=max_memory),
        icl=icl_from_losses(losses, early, late),
        heldout_loss=float(losses.values.double().mean()),
    )


@dataclass(repr=False)
class TrainingCurves(Bundle):
    """Measurements over training, one row per checkpoint (axis ``"checkpoint"``, labelled by step).

    ``steps`` and ``tokens_seen`` give each checkpoint's optimiser steps and training tokens; ``train_loss`` is
    the training loss of every step (axis ``"step"``), or ``None`` when not given."""

    icl: Result
    heldout_loss: Result
    token_losses: Result
    prefix_matching: Result
    induction: Result
    previous_token: Result
    train_loss: Optional[Result]
    steps: list[int]
    tokens_seen: list[int]
    meta: dict[str, Any]


def _stack(rows: list[Result], steps: list[int], title: str) -> Result:
    first = rows[0]
    return Result(values=torch.stack([r.values for r in rows]), axes=("checkpoint", *first.axes),
                  labels={"checkpoint": [str(s) for s in steps], **first.labels}, title=title,
                  metric=first.metric, model=first.model, task=first.task, meta=dict(first.meta))


def training_curves(checkpoints: Sequence[tuple[int, ModelLike]], text: str, *, tokens_per_step: int,
                    train_losses: Optional[Sequence[float]] = None, early: tuple[int, int] = DEFAULT_EARLY,
                    late: tuple[int, int] = DEFAULT_LATE, stride: int = 64, n_seqs: int = 32, seed: int = 0,
                    max_memory: int = DEFAULT_MAX_MEMORY, progress: bool = False) -> TrainingCurves:
    """:func:`measure_checkpoint` at every checkpoint ``(step, model)`` (steps increasing), stacked over a
    ``"checkpoint"`` axis. ``tokens_per_step`` converts steps to training tokens seen; ``train_losses`` (the loss
    of every training step, optional) rides along for the loss-bump plot."""
    if not isinstance(checkpoints, Sequence) or not checkpoints:
        raise InputError(f"checkpoints must be a non-empty list of (step, model) pairs, got {shorten(checkpoints)}.")
    steps = []
    for item in checkpoints:
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise InputError(f"each checkpoint must be a (step, model) pair, got {shorten(item)}.")
        steps.append(check_count(item[0], "a checkpoint's step", minimum=0))
    if any(b <= a for a, b in zip(steps, steps[1:])):
        raise InputError(f"checkpoint steps must increase, got {shorten(steps)}.")
    tokens_per_step = check_count(tokens_per_step, "tokens_per_step")
    if train_losses is not None:
        train_losses = [check_number(x, "train_losses[i]") for x in train_losses]
    ms = [measure_checkpoint(m, text, early=early, late=late, stride=stride, n_seqs=n_seqs, seed=seed,
                             max_memory=max_memory)
          for _, m in progress_bar(checkpoints, progress=progress, desc="checkpoints")]
    labels = {"checkpoint": [str(s) for s in steps]}
    name = ms[-1].token_losses.model
    scalar = dict(axes=("checkpoint",), labels=labels, model=name, task=ms[-1].token_losses.task)
    return TrainingCurves(
        icl=Result(values=torch.tensor([m.icl.score for m in ms]), title="ICL score",
                   metric=f"loss at tokens {early[0]}-{early[1] - 1} subtracted from loss at tokens "
                          f"{late[0]}-{late[1] - 1} (nats)", meta={"early": list(early), "late": list(late)},
                   **scalar),
        heldout_loss=Result(values=torch.tensor([m.heldout_loss for m in ms]), title="Held-out loss",
                            metric="mean next-token loss (nats)", **scalar),
        token_losses=_stack([m.token_losses for m in ms], steps, "Per-token loss"),
        prefix_matching=_stack([m.prefix_matching for m in ms], steps, "Prefix-matching score"),
        induction=_stack([m.induction for m in ms], steps, "Induction score on text"),
        previous_token=_stack([m.previous_token for m in ms], steps, "Previous-token score"),
        train_loss=None if train_losses is None else Result(
            values=torch.tensor(train_losses), axes=("step",), title="Training loss",
            metric="next-token loss of the step's batch (nats)", model=name),
        steps=steps, tokens_seen=[s * tokens_per_step for s in steps],
        meta={"tokens_per_step": tokens_per_step, "early": list(early), "late": list(late), "stride": stride,
              "n_seqs": n_seqs, "seed": seed},
    )


def _r(t: Tensor, digits: int = 4) -> Any:
    return [_r(x, digits) for x in t] if t.ndim else round(float(t), digits)


def curves_to_json(curves: TrainingCurves) -> dict[str, Any]:
    """``curves`` as plain JSON data (values rounded to 4 decimals); :func:`curves_from_json` reads it back."""
    out: dict[str, Any] = {"steps": curves.steps, "tokens_seen": curves.tokens_seen, "meta": curves.meta,
                           "model": curves.icl.model}
    for name, r in curves.results().items():
        out[name] = {"values": _r(r.values), "axes": list(r.axes), "title": r.title, "metric": r.metric,
                     "task": r.task}
    return out


def curves_from_json(data: dict[str, Any]) -> TrainingCurves:
    """The :class:`TrainingCurves` written by :func:`curves_to_json`."""
    steps = [int(s) for s in data["steps"]]

    def result(name: str) -> Optional[Result]:
        d = data.get(name)
        if d is None:
            return None
        labels = {"checkpoint": [str(s) for s in steps]} if d["axes"][0] == "checkpoint" else {}
        if "position" in d["axes"]:
            n = len(d["values"][0])
            labels["position"] = [str(t) for t in range(1, n + 1)]
        return Result(values=torch.tensor(d["values"], dtype=torch.float32), axes=tuple(d["axes"]), labels=labels,
                      title=d["title"], metric=d["metric"], model=data.get("model", ""), task=d.get("task", ""))

    return TrainingCurves(icl=result("icl"), heldout_loss=result("heldout_loss"),
                          token_losses=result("token_losses"), prefix_matching=result("prefix_matching"),
                          induction=result("induction"), previous_token=result("previous_token"),
                          train_loss=result("train_loss"), steps=steps,
                          tokens_seen=[int(t) for t in data["tokens_seen"]], meta=dict(data.get("meta", {})))


def load_curves(source: Any) -> TrainingCurves:
    """The training curves of ``source``: a zoo model's name (``"zoo/attn-only-2l"``: the ``dynamics.json``
    shipped beside its weights) or the path of a JSON file written by :func:`curves_to_json` (or by
    ``python -m circuitlab.zoo dynamics``)."""
    import json
    from pathlib import Path

    from circuitlab.models.loading import ZOO_DIR, ZOO_PREFIX

    if not isinstance(source, (str, Path)) or not str(source):
        raise InputError(f"source must be a zoo model name (e.g. 'zoo/attn-only-2l') or the path of a curves JSON "
                         f"file, got {shorten(source)}.")
    text = str(source)
    path = ZOO_DIR / text.removeprefix(ZOO_PREFIX) / "dynamics.json" if text.startswith(ZOO_PREFIX) else Path(text)
    if not path.is_file():
        raise InputError(f"no training curves for {shorten(text)}: {path.name} not found. Zoo models with curves: "
                         f"{', '.join(sorted(ZOO_PREFIX + d.parent.name for d in ZOO_DIR.glob('*/dynamics.json')))}; "
                         "or pass a JSON file written by python -m circuitlab.zoo dynamics.")
    try:
        return curves_from_json(json.loads(path.read_text()))
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{shorten(text)} is not a training-curves JSON file ({type(exc).__name__}: "
                         f"{shorten(str(exc))}).") from None


# ----------------------------------------------------------------------------------------------------------
# Phase changes
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhaseChange:
    """The window of a curve where it moved most within a factor ``within`` of training, and whether that is a
    phase change: ``found`` when the window's move is at least ``min_fraction`` of the curve's whole range and at
    least ``min_jump``. ``start`` / ``end`` are the window's x values (tokens seen), ``start_index`` /
    ``end_index`` its checkpoints; ``jump`` the move (in the detector's direction), ``span`` the curve's range."""

    found: bool
    start: float
    end: float
    start_index: int
    end_index: int
    jump: float
    span: float
    criterion: str

    def overlaps(self, other: "PhaseChange") -> bool:
        """Whether the two windows share some training (``[start, end]`` intervals intersect)."""
        return self.start <= other.end and other.start <= self.end

    def to_json(self) -> dict[str, Any]:
        return {"found": self.found, "start": self.start, "end": self.end, "start_index": self.start_index,
                "end_index": self.end_index, "jump": round(self.jump, 4), "span": round(self.span, 4),
                "criterion": self.criterion}


def detect_phase_change(x: Sequence[float], y: Sequence[float], *, increasing: bool = True, within: float = 2.0,
                        min_fraction: float = 0.5, min_jump: float = 0.0) -> PhaseChange:
    """Find the abrupt change of a training curve ``y`` over checkpoints at ``x`` (tokens seen, increasing).

    Criterion: among all pairs of checkpoints ``i < j`` with ``0 < x[i]`` and ``x[j] <= within * x[i]`` (one
    doubling of training for ``within=2``), take the one where ``y`` moves most in the given direction
    (``y[j] - y[i]``, or ``y[i] - y[j]`` with ``increasing=False``). It is a phase change when that move is at
    least ``min_fraction`` of the curve's whole range (``max(y) - min(y)``) and at least ``min_jump``: most of
    what the curve ever does happens within one doubling of training. A curve that changes gradually on a log
    scale moves only ``log(within) / log(x[-1] / x[1])`` of its range in any such window.
    """
    if not isinstance(x, Sequence) or not isinstance(y, Sequence) or len(x) != len(y) or len(x) < 2:
        raise InputError(f"x and y must be sequences of the same length >= 2, got {shorten(x)} and {shorten(y)}.")
    xs = [check_number(v, "x[i]", low=0) for v in x]
    ys = [check_number(v, "y[i]") for v in y]
    if any(b <= a for a, b in zip(xs, xs[1:])):
        raise InputError(f"x must increase, got {shorten(xs)}.")
    within = check_number(within, "within", low=1, low_open=True)
    min_fraction = check_number(min_fraction, "min_fraction", low=0, high=1)
    min_jump = check_number(min_jump, "min_jump", low=0)
    sign = 1.0 if increasing else -1.0
    best = (-math.inf, 0, 0)
    for i, xi in enumerate(xs):
        if xi <= 0:
            continue
        for j in range(i + 1, len(xs)):
            if xs[j] > within * xi:
                break
            move = sign * (ys[j] - ys[i])
            if move > best[0]:
                best = (move, i, j)
    span = max(ys) - min(ys)
    move, i, j = best
    if move == -math.inf:  # no window: every x is 0 or no two checkpoints lie within a factor `within`
        move, i, j = 0.0, 0, 0
    found = move > 0 and move >= min_fraction * span and move >= min_jump
    criterion = (f"largest {'rise' if increasing else 'fall'} within a factor {within:g} of tokens seen >= "
                 f"{min_fraction:g} x the curve's range and >= {min_jump:g}")
    return PhaseChange(found=found, start=xs[i], end=xs[j], start_index=i, end_index=j, jump=move, span=span,
                       criterion=criterion)


@dataclass(frozen=True)
class PhaseChanges:
    """:func:`phase_changes`' answer: the induction curve's and the ICL curve's windows, and whether they
    coincide (both found, and their windows overlap)."""

    induction: PhaseChange
    icl: PhaseChange
    coincide: bool

    def to_json(self) -> dict[str, Any]:
        return {"induction": self.induction.to_json(), "icl": self.icl.to_json(), "coincide": self.coincide}


def phase_changes(curves: TrainingCurves, *, within: float = 2.0, min_fraction: float = 0.5,
                  min_induction_jump: float = 0.2, min_icl_jump: float = 0.1) -> PhaseChanges:
    """Run :func:`detect_phase_change` on the best head's prefix-matching score (max over layers and heads, at
    each checkpoint; rising) and on the ICL score (falling), with ``x`` the training tokens seen, and say whether
    the two windows coincide. Defaults: one doubling of training holds at least half of the curve's range, and at
    least 0.2 of prefix-matching score / 0.1 nats of ICL score."""
    if not isinstance(curves, TrainingCurves):
        raise InputError(f"curves must be TrainingCurves (from training_curves), got {shorten(curves)}.")
    x = [float(t) for t in curves.tokens_seen]
    best_head = curves.prefix_matching.values.flatten(1).max(1).values.tolist()
    ind = detect_phase_change(x, best_head, increasing=True, within=within, min_fraction=min_fraction,
                              min_jump=min_induction_jump)
    icl = detect_phase_change(x, curves.icl.values.tolist(), increasing=False, within=within,
                              min_fraction=min_fraction, min_jump=min_icl_jump)
    return PhaseChanges(induction=ind, icl=icl, coincide=ind.found and icl.found and ind.overlaps(icl))
