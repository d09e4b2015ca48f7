"""Patching metrics: functions of the logits that say how much a run looks like the clean one.

Any callable ``metric(logits) -> scalar`` works with circuitlab, exactly as in TransformerLens. The metrics in
this module are such callables too (hand them to ``transformer_lens.patching`` unchanged), and they also say
*which* logits they read: a few positions per prompt and, for logit differences, two vocabulary columns. The
patching engine uses that to compute only those logits (a final LayerNorm on one position and two columns of
``W_U`` instead of the full ``[batch, pos, d_vocab]`` tensor), which is most of a forward pass on a small model.

    metric = LogitDiff(correct=" Mary", wrong=" John", model=model)   # strings need the model's tokenizer
    metric(model(tokens))                                             # a plain callable: a 0-d tensor
    normalised = Normalized.fit(metric, model, clean_tokens, corrupted_tokens)  # 0 = corrupted, 1 = clean

Every metric here averages over the prompts of a batch, as the usual TransformerLens metrics do.

How a declarative metric works: :meth:`LogitMetric.reads` names positions ``[batch, k]`` and columns
``[batch, c]`` (or ``None`` for the whole vocabulary); :meth:`LogitMetric.from_selected` maps the selected logits
``[..., batch, k, c]`` to one number per leading index. ``__call__`` is just "select, then ``from_selected``", so
the fast path and the plain call cannot disagree.
"""

from __future__ import annotations

import copy
import math
from typing import Callable, Optional, Sequence, Union

import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuitlab.core import (Prompts, answer_ids, check_difference, check_distinct_answers, check_pos, metric_name,
                             shorten)
from circuitlab.errors import InputError

Answers = Union[str, int, Sequence[Union[str, int]], Int[Tensor, "*batch"]]
Positions = Union[int, Sequence[int], Int[Tensor, "*batch"]]
#: a metric: logits ``[batch, pos, d_vocab]`` -> one number (a 0-d tensor or a float). Every analysis that takes a
#: ``metric`` takes this; the declarative metrics here (:class:`LogitMetric`) are such callables and also say which
#: logits they read.
Metric = Callable[[Float[Tensor, "batch pos d_vocab"]], Union[Float[Tensor, ""], float]]


def _resolve_answers(answers: Answers, batch: int, model=None, what: str = "answer") -> Int[Tensor, " batch"]:
    """Answers as token ids on the CPU, one per prompt, by the package's one rule (:func:`circuitlab.core.answer_ids`):
    one answer shared by every prompt, or one per prompt. Text needs ``model``'s tokenizer."""
    return answer_ids(model, answers, batch, what=what).cpu()


def resolve_positions(pos: Positions, batch: int, seq_len: int) -> Int[Tensor, "batch 1"]:
    """Positions (negative ones count from the end), one per prompt, as a ``[batch, 1]`` tensor."""
    if isinstance(pos, Tensor):
        items = pos.flatten().tolist()
    elif isinstance(pos, (list, tuple)):
        items = list(pos)
    else:
        items = [pos]
    if len(items) == 1:
        items = items * batch
    if len(items) != batch:
        raise InputError(f"got {len(items)} positions for {batch} prompts; give one, or one per prompt.")
    return torch.tensor([check_pos(p, seq_len, "metric pos") for p in items], dtype=torch.long)[:, None]


def _rows(value, rows: slice, batch: int):
    """``value[rows]`` where ``value`` holds one entry per prompt of ``batch``; a shared value as it is."""
    if isinstance(value, (str, int)) or batch <= 1:
        return value
    if isinstance(value, Tensor):
        return value[rows] if value.numel() == batch else value
    if isinstance(value, (list, tuple)) and len(value) == batch:
        return list(value)[rows]
    return value


def can_split(metric) -> bool:
    """Whether ``metric`` is a mean over prompts that :meth:`LogitMetric.rows` can split (every metric here)."""
    if isinstance(metric, Normalized):
        return can_split(metric.metric)
    return isinstance(metric, LogitMetric) and type(metric).rows is not LogitMetric.rows


def select_logits(
    logits: Float[Tensor, "batch pos d_vocab"], positions: Int[Tensor, "batch k"],
    columns: Optional[Int[Tensor, "batch c"]],
) -> Float[Tensor, "batch k c"]:
    """``logits[b, positions[b, j], columns[b, c]]``: the entries a declarative metric reads."""
    positions = positions.to(logits.device)
    index = positions[:, :, None].expand(-1, -1, logits.shape[-1])
    rows = logits.gather(1, index)  # [batch, k, d_vocab]
    if columns is None:
        return rows
    columns = columns.to(logits.device)
    return rows.gather(2, columns[:, None, :].expand(-1, rows.shape[1], -1))


class LogitMetric:
    """A metric on logits that declares what it reads. Subclasses define ``reads`` and ``from_selected``."""

    name = "metric"

    def reads(self, batch: int, seq_len: int) -> tuple[Int[Tensor, "batch k"], Optional[Int[Tensor, "batch c"]]]:
        """Positions ``[batch, k]`` and vocabulary columns ``[batch, c]`` (``None`` = all) this metric reads."""
        raise NotImplementedError

    def from_selected(self, selected: Float[Tensor, "... batch k c"]) -> Float[Tensor, "..."]:
        """The metric from the selected logits; leading dimensions (one per patch) are kept."""
        raise NotImplementedError

    def rows(self, rows: slice, batch: int) -> "LogitMetric":
        """This metric for the prompts ``rows`` of a batch of ``batch``: per-prompt answers and positions are
        sliced, shared ones kept. Every metric here is a mean over prompts, so an analysis may split a large
        batch into such parts and average their values, weighted by size, to get the whole batch's value."""
        raise NotImplementedError

    def bind(self, model) -> "LogitMetric":
        """This metric for ``model``: a copy whose text answers are tokenized by ``model``'s tokenizer.

        Every analysis binds the metric to the model it runs, so one metric reused on several models reads each
        model's own token ids. The metric itself is left unchanged. (Without text answers a copy is harmless.)
        """
        bound = copy.copy(self)
        if hasattr(bound, "model"):
            bound.model = model
        return bound

    def __call__(self, logits: Float[Tensor, "batch pos d_vocab"]) -> Float[Tensor, ""]:
        if logits.ndim != 3:
            raise InputError(f"a metric takes logits [batch, pos, d_vocab]; got shape {tuple(logits.shape)}.")
        positions, columns = self.reads(logits.shape[0], logits.shape[1])
        return self.from_selected(select_logits(logits, positions, columns))

    def __repr__(self) -> str:
        return self.name


class LogitDiff(LogitMetric):
    """``logit[correct] - logit[wrong]`` at position ``pos``, averaged over the batch.

    Args:
        correct, wrong: token ids or single-token strings (then pass ``model``), one shared answer or one per
            prompt.
        pos: the position whose next-token prediction is read (default: the last), or one per prompt.
        model: tokenizes string answers when the metric is called directly; an analysis binds the metric to the
            model it runs (see :meth:`LogitMetric.bind`).
    """

    def __init__(self, correct: Answers = None, wrong: Answers = None, pos: Positions = -1, model=None):
        for name, value in (("correct", correct), ("wrong", wrong)):
            if value is None:
                raise InputError(
                    f"LogitDiff needs both a correct and a wrong answer; {name} is missing. Write "
                    "LogitDiff(correct=' Mary', wrong=' John') (token ids work too). For one token's own "
                    "log-probability use Probability(' Mary', log=True)."
                )
        if isinstance(correct, (str, int)) and not isinstance(correct, bool) and correct == wrong:
            raise InputError(
                f"LogitDiff(correct={shorten(correct)}, wrong={shorten(wrong)}): the two answers are the same token, "
                "so the difference is 0 by construction. Pick a competing token for wrong."
            )
        self.correct, self.wrong, self.pos, self.model = correct, wrong, pos, model
        self.name = "logit_diff"

    def reads(self, batch: int, seq_len: int) -> tuple[Int[Tensor, "batch 1"], Int[Tensor, "batch 2"]]:
        correct = _resolve_answers(self.correct, batch, self.model, "correct answer")
        wrong = _resolve_answers(self.wrong, batch, self.model, "wrong answer")
        check_distinct_answers(correct, wrong, self.model, what="correct")
        return resolve_positions(self.pos, batch, seq_len), torch.stack([correct, wrong], dim=1)

    def rows(self, rows: slice, batch: int) -> "LogitDiff":
        part = copy.copy(self)
        part.correct, part.wrong, part.pos = (_rows(v, rows, batch) for v in (self.correct, self.wrong, self.pos))
        return part

    def from_selected(self, selected: Float[Tensor, "... batch 1 2"]) -> Float[Tensor, "..."]:
        return (selected[..., 0, 0] - selected[..., 0, 1]).mean(-1)


class Probability(LogitMetric):
    """The probability (or log-probability with ``log=True``) of ``answer`` at position ``pos``, batch mean.

    Reads the whole vocabulary at one position (the softmax needs every logit), still ``pos``-times cheaper
    than full logits.
    """

    def __init__(self, answer: Answers, pos: Positions = -1, log: bool = False, model=None):
        self.answer, self.pos, self.log, self.model = answer, pos, log, model
        self.name = "log_prob" if log else "prob"
        self._ids: Optional[Tensor] = None

    def reads(self, batch: int, seq_len: int) -> tuple[Int[Tensor, "batch 1"], None]:
        self._ids = _resolve_answers(self.answer, batch, self.model)
        return resolve_positions(self.pos, batch, seq_len), None

    def rows(self, rows: slice, batch: int) -> "Probability":
        part = copy.copy(self)
        part.answer, part.pos, part._ids = _rows(self.answer, rows, batch), _rows(self.pos, rows, batch), None
        return part

    def from_selected(self, selected: Float[Tensor, "... batch 1 d_vocab"]) -> Float[Tensor, "..."]:
        if self._ids is None:  # reads() resolves the answers; __call__ and the engine call it first
            raise InputError("Probability.from_selected needs reads(batch, seq_len) to be called first.")
        logp = selected[..., 0, :].float().log_softmax(-1)
        ids = self._ids.to(selected.device).expand(*logp.shape[:-1])
        out = logp.gather(-1, ids[..., None])[..., 0]
        return (out if self.log else out.exp()).mean(-1)


class Normalized(LogitMetric):
    """``(metric - corrupted) / (clean - corrupted)``: 0 means "as corrupted", 1 means "as clean".

    ``clean`` and ``corrupted`` are the metric's values on the unpatched clean and corrupted runs;
    :meth:`fit` measures them. Any callable works as the inner metric; only a declarative inner metric
    keeps the engine's fast path.
    """

    def __init__(self, metric, clean: float, corrupted: float, *, dtype: torch.dtype = torch.float32):
        # a difference within the resolution of the model's dtype (core.resolution) is float noise, not a scale;
        # KL is quadratic in the logits' change, so its two values are compared as sqrt(KL), in logit units
        kl = isinstance(metric, KLDivergence)
        ends = (math.sqrt(abs(float(clean))), math.sqrt(abs(float(corrupted)))) if kl else (clean, corrupted)
        check_difference(*ends, f"cannot normalise: the metric's values{' (as sqrt(KL))' if kl else ''} on both the "
                         "clean and the corrupted run", "Choose prompts (or answers) on which the model behaves "
                         "differently.", dtype=dtype)
        self.metric, self.clean, self.corrupted = metric, float(clean), float(corrupted)
        self.name = f"normalized {metric_name(metric)}"

    @classmethod
    def fit(cls, metric, model, clean_tokens: Prompts, corrupted_tokens: Prompts) -> "Normalized":
        """Measure ``metric`` on the clean and corrupted runs of ``model`` and normalise between them."""
        from circuitlab.core import as_model, to_tokens

        model = as_model(model)
        bound = bind_metric(metric, model)
        with torch.no_grad():
            clean = float(bound(model(to_tokens(model, clean_tokens))))
            corrupted = float(bound(model(to_tokens(model, corrupted_tokens))))
        return cls(metric, clean, corrupted, dtype=model.cfg.dtype)

    def bind(self, model) -> "Normalized":
        bound = copy.copy(self)
        if isinstance(self.metric, LogitMetric):
            bound.metric = self.metric.bind(model)
        return bound

    def rows(self, rows: slice, batch: int) -> "Normalized":
        if not isinstance(self.metric, LogitMetric):
            raise NotImplementedError
        part = copy.copy(self)
        part.metric = self.metric.rows(rows, batch)
        return part

    def _scale(self, value: Tensor) -> Tensor:
        return (value - self.corrupted) / (self.clean - self.corrupted)

    def reads(self, batch: int, seq_len: int) -> tuple[Int[Tensor, "batch k"], Optional[Int[Tensor, "batch c"]]]:
        if not isinstance(self.metric, LogitMetric):
            raise NotImplementedError
        return self.metric.reads(batch, seq_len)

    def from_selected(self, selected: Float[Tensor, "... batch k c"]) -> Float[Tensor, "..."]:
        return self._scale(self.metric.from_selected(selected))

    def __call__(self, logits: Float[Tensor, "batch pos d_vocab"]) -> Float[Tensor, ""]:
        return self._scale(self.metric(logits))


class KLDivergence(LogitMetric):
    """``KL(reference || patched)`` of the next-token distributions at position ``pos``, averaged over prompts.

    The divergence ACDC (Conmy et al. 2023) thresholds: how far a patched run's predictions moved away from a
    reference run's (usually the clean run's), in nats. It is 0 on the reference run itself and never negative.
    ``reference`` holds the reference run's logits at the read positions, ``[batch, k, d_vocab]`` (or
    ``[batch, d_vocab]`` for one position); :meth:`fit` measures them. Reads the whole vocabulary at those
    positions (the softmax needs every logit), still ``pos``-times cheaper than full logits.
    """

    def __init__(self, reference: Float[Tensor, "batch k d_vocab"], pos: Positions = -1):
        reference = torch.as_tensor(reference).detach()
        if reference.ndim == 2:
            reference = reference[:, None, :]
        if reference.ndim != 3:
            raise InputError(f"KLDivergence needs reference logits [batch, k, d_vocab] (or [batch, d_vocab]); got "
                             f"shape {tuple(reference.shape)}. Use KLDivergence.fit(model, clean_tokens).")
        self.reference, self.pos, self.name = reference, pos, "kl_div"
        self._ref_logp = reference.double().log_softmax(-1)
        self._prepare()

    def _prepare(self) -> None:
        """The reference's parts of ``KL = sum p log p - sum p x + logsumexp(x) sum p`` (float64, once)."""
        p = self._ref_logp.exp()
        self._ref_p, self._ref_plogp, self._ref_mass = p, (p * self._ref_logp).sum(-1), p.sum(-1)

    @classmethod
    def fit(cls, model, tokens: Prompts, pos: Positions = -1) -> "KLDivergence":
        """The divergence from ``model``'s own predictions on ``tokens`` at ``pos`` (default: the last position)."""
        from circuitlab.core import as_model, to_tokens

        model = as_model(model)
        tokens = to_tokens(model, tokens)
        positions = resolve_positions(pos, tokens.shape[0], tokens.shape[1])
        with torch.no_grad():
            logits = model(tokens)
        return cls(select_logits(logits, positions, None), pos)

    def reads(self, batch: int, seq_len: int) -> tuple[Int[Tensor, "batch 1"], None]:
        if self.reference.shape[0] != batch:
            raise InputError(f"KLDivergence was fitted on {self.reference.shape[0]} prompts but is applied to {batch}; "
                             "fit it on the same prompts (KLDivergence.fit(model, clean_tokens)).")
        positions = resolve_positions(self.pos, batch, seq_len)
        if positions.shape[1] != self.reference.shape[1]:
            raise InputError("KLDivergence reads one position per prompt; its reference has "
                             f"{self.reference.shape[1]}. Refit it with KLDivergence.fit.")
        return positions, None

    def rows(self, rows: slice, batch: int) -> "KLDivergence":
        part = copy.copy(self)
        part.reference, part._ref_logp = self.reference[rows], self._ref_logp[rows]
        part._prepare()
        part.pos = _rows(self.pos, rows, batch)
        return part

    def from_selected(self, selected: Float[Tensor, "... batch k d_vocab"]) -> Float[Tensor, "..."]:
        """``KL(p || softmax(x)) = sum p log p - sum p x + logsumexp(x) sum p`` in float64, with ``p`` the reference:
        the patched logits ``x`` are read twice (a log-sum-exp and one dot product with ``p``) instead of building
        their log-softmax and two more vocabulary-sized arrays (the same sum, regrouped; the tests compare it with
        the direct formula and with SciPy)."""
        dev = selected.device
        x = selected.to(torch.float64, copy=True)  # our own copy: exponentiated in place below
        dot = torch.einsum("...bkv,bkv->...bk", x, self._ref_p.to(dev))  # sum_v p x: a matrix-vector product
        top = x.amax(-1, keepdim=True)
        lse = top[..., 0] + x.sub_(top).exp_().sum(-1).log()  # logsumexp(x), without another vocabulary-sized array
        kl = self._ref_plogp.to(dev) - dot + lse * self._ref_mass.to(dev)
        return kl.mean((-2, -1)).to(torch.promote_types(selected.dtype, torch.float32))


def bind_metric(metric, model):
    """``metric`` ready to run on ``model``: a :class:`LogitMetric` bound to it, any other callable as it is.

    Every analysis that takes a metric calls this first, so a metric given by name, or anything else that is
    not a function of logits, is refused with one message.
    """
    if isinstance(metric, LogitMetric):
        return metric.bind(model)
    if isinstance(metric, str):
        raise InputError(
            f"metric={shorten(metric)} is a name; pass a metric object that knows its answers, e.g. "
            "metric=LogitDiff(correct=' Mary', wrong=' John') or Probability(' Paris') from circuitlab.metrics, "
            "or any function logits [batch, pos, d_vocab] -> scalar."
        )
    if not callable(metric):
        raise InputError(
            f"metric must be a function of logits [batch, pos, d_vocab] returning one number, e.g. "
            f"LogitDiff(correct=' Mary', wrong=' John'); got {type(metric).__name__}."
        )
    return metric


def is_declarative(metric) -> bool:
    """True when ``metric`` says which logits it reads (so the engine may compute only those)."""
    if isinstance(metric, Normalized):
        return is_declarative(metric.metric)
    return isinstance(metric, LogitMetric)


__all__ = ["LogitMetric", "LogitDiff", "Probability", "Normalized", "KLDivergence", "select_logits", "is_declarative"]
