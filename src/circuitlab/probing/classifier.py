"""Classifier probes with control tasks (Hewitt & Liang 2019): how much of what a probe finds is the probe's doing.

    from circuitlab.probing import classifier, data

    res = classifier.sweep("minilm-l6", data.default_sentences(2000), task="upos")
    res.values                 # [probe, layer, measure]: test accuracy, control accuracy, selectivity (seed means)
    res.meta["ci95"]           # the same axes: half-widths of 95% confidence intervals over seeds

**Probes.** ``"linear"``: multinomial logistic regression, trained full-batch with L-BFGS on the mean
cross-entropy plus ``weight_decay / 2 * ||W||^2`` (bias not penalised); convex, so it converges to the one optimum
whatever the seed. ``"mlp"``: Hewitt & Liang's MLP-1, ``Linear(d, hidden) -> ReLU -> Linear(hidden, classes)``,
trained with Adam on mini-batches, early-stopped on dev accuracy (the epoch with the best dev accuracy is kept).
Features are standardised with the training split's mean and standard deviation. Everything runs in torch;
seeds are arguments.

**Data.** Token-level labels (``task="upos"``, ``"deprel"`` or ``"ent"``) of the words the activations hold. The
split is by *sentence* (no sentence has words in two splits), seeded by ``split_seed`` and fixed across probes,
layers and seeds, so curves compare like with like; ``seeds`` vary the probe's initialisation and batches and the
control task. The sentences of each split, and those left out with why, are in the result's
``meta["data_split"]`` (:func:`split_record`), so a baseline can be computed on the same items.

**Control task** (:func:`control_labels`). Each word *type* (its form; ``lowercase=True`` merges cases) gets one
label drawn at random from the task's empirical label distribution over all the words, fixed per seed, so the
control task has the task's label space and class balance but no linguistic content: a probe can only solve it by
memorising word types. **Selectivity** = task accuracy - control accuracy, on the test split. Hewitt & Liang's
finding (ELMo, POS): linear probes are more selective (97.2 accuracy, 71.2 control) than MLP-1 probes of the same
accuracy (97.3, 92.8).

The linear probe on the task itself does not depend on the seed (a convex problem started at zero), so it is
trained once per hook; its interval over seeds is then zero, and the spread of selectivity comes from the control
task alone.

**Confidence intervals**: over seeds, Student's t: ``mean +- t_{0.975, n-1} * sd / sqrt(n)`` (``NaN`` with one
seed), in ``meta["ci95"]``; per-seed values in ``meta["per_seed"]``.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from circuitlab.core import (check_affordable, check_count, check_number, check_seed, check_seeds, check_texts,
                             minimise_lbfgs, progress_bar, shorten)
from circuitlab.errors import InputError
from circuitlab.probing.activations import WordActivations, check_collect_options, collect, hook_layer_label
from circuitlab.tasks.sentences import Sentence
from circuitlab.results import Result

PROBES = ("linear", "mlp")
MEASURES = ("accuracy", "control", "selectivity")
#: the token-level tasks: annotation layers of a Sentence
TASKS = ("upos", "deprel", "ent")
#: Student's t quantile 0.975 for 1..30 degrees of freedom (1.96 beyond)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_quantile(df: int) -> float:
    """Student's t 0.975 quantile for ``df`` degrees of freedom (for 95% two-sided intervals)."""
    return _T975[df - 1] if 1 <= df <= len(_T975) else 1.96


def ci95(values: Float[Tensor, "..."], dim: int = -1) -> Float[Tensor, "..."]:
    """Half-width of the 95% t-interval of the mean along ``dim`` (NaN for fewer than two values)."""
    n = values.shape[dim]
    if n < 2:
        return torch.full(values.mean(dim).shape, float("nan"))
    return t_quantile(n - 1) * values.std(dim) / math.sqrt(n)


# ---------------------------------------------------------------------------------------------------------
# Splits and control tasks
# ---------------------------------------------------------------------------------------------------------

def split_sentences(n_sentences: int, fractions: Sequence[float] = (0.8, 0.1, 0.1),
                    seed: int = 0, *, keys: Optional[Sequence[Any]] = None) -> dict[str, Int[Tensor, " k"]]:
    """Sentence indices for ``"train"``, ``"dev"`` and ``"test"``: a seeded shuffle cut at ``fractions``
    (each split at least one sentence).

    ``keys`` (one hashable per sentence, e.g. its words) groups identical sentences: the shuffle and the cut are
    over the distinct keys, and every copy of a sentence lands in the split its first copy's key drew, so no
    sentence is both trained and tested on (a repeated sentence would otherwise score its own memorised label).
    Fewer than 3 distinct sentences is an :class:`~circuitlab.errors.InputError`. Without repeats the split is the
    same as without ``keys``."""
    seed = check_seed(seed)
    bad = (f"split={tuple(fractions)!r}: give three positive fractions (train, dev, test) summing to at most 1, "
           "e.g. (0.8, 0.1, 0.1).")
    if len(fractions) != 3:
        raise InputError(bad)
    for f in fractions:
        check_number(f, "split", low=0, low_open=True, message=bad)
    if sum(fractions) > 1 + 1e-9:
        raise InputError(bad)
    if keys is not None:
        if len(keys) != n_sentences:
            raise InputError(f"split_sentences got {len(keys)} keys for {n_sentences} sentences; give one each.")
        first: dict[Any, int] = {}
        group = torch.tensor([first.setdefault(k, len(first)) for k in keys], dtype=torch.long)
        n_unique = len(first)
        if n_unique < 3:
            example = next(iter(first), "")
            example = " ".join(map(str, example)) if isinstance(example, tuple) else example
            raise InputError(f"the {n_sentences} sentences hold only {n_unique} distinct one(s) (e.g. "
                             f"{shorten(example, 60)}); identical sentences stay in one split (else a test sentence "
                             "is also a training one), so train, dev and test need at least 3 distinct sentences (a "
                             "few hundred for meaningful probes).")
        if n_unique < n_sentences:
            parts = split_sentences(n_unique, fractions, seed)
            return {name: torch.isin(group, idx).nonzero().flatten() for name, idx in parts.items()}
    if n_sentences < 3:
        raise InputError(f"{n_sentences} sentences cannot be split into train, dev and test; give at least 3 "
                         "(a few hundred for meaningful probes).")
    perm = torch.randperm(n_sentences, generator=torch.Generator().manual_seed(seed))
    n_dev = max(1, round(fractions[1] * n_sentences))
    n_test = max(1, round(fractions[2] * n_sentences))
    n_train = min(n_sentences - n_dev - n_test, max(1, round(fractions[0] * n_sentences)))
    return {"train": perm[:n_train].sort().values, "dev": perm[n_train:n_train + n_dev].sort().values,
            "test": perm[n_train + n_dev:n_train + n_dev + n_test].sort().values}


def control_labels(words: Sequence[str], labels: Sequence[Any], seed: int = 0,
                   lowercase: bool = False) -> list[Any]:
    """Hewitt & Liang's control task: each word type gets one label drawn from the empirical distribution of
    ``labels`` (over all the given words); every occurrence of the type carries it. Types are drawn in sorted
    order with a generator seeded by ``seed``, so a type's control label does not depend on the data's order."""
    words = check_texts(words, "words", item="word", allow_empty=True)
    seed = check_seed(seed)
    if len(words) != len(labels):
        raise InputError(f"{len(words)} words but {len(labels)} labels; give one label per word.")
    if not words:
        raise InputError("no words: a control task needs at least one labelled word.")
    keys = [w.lower() for w in words] if lowercase else list(words)
    counts = Counter(labels)
    classes = sorted(counts, key=str)
    probs = torch.tensor([counts[c] for c in classes], dtype=torch.float64)
    types = sorted(set(keys))
    draws = torch.multinomial(probs / probs.sum(), len(types), replacement=True,
                              generator=torch.Generator().manual_seed(seed))
    assigned = {t: classes[int(i)] for t, i in zip(types, draws)}
    return [assigned[k] for k in keys]


# ---------------------------------------------------------------------------------------------------------
# Probes
# ---------------------------------------------------------------------------------------------------------

class Probe(nn.Module):
    """A trained probe: standardisation (train mean and std) then a linear map or an MLP-1."""

    def __init__(self, d_in: int, n_classes: int, kind: str = "linear", hidden: int = 256) -> None:
        super().__init__()
        self.kind = kind
        self.register_buffer("mean", torch.zeros(d_in))
        self.register_buffer("std", torch.ones(d_in))
        if kind == "linear":
            self.net = nn.Linear(d_in, n_classes)
        elif kind == "mlp":
            self.net = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))
        else:
            raise InputError(f"probe kind {shorten(kind)}: use one of {PROBES}.")

    def standardise_on(self, x: Float[Tensor, "n d"]) -> Float[Tensor, "n d"]:
        """Fit the standardisation to training features ``x`` (per-feature mean, and standard deviation with
        Bessel's correction, floored at ``1e-6``; ones for a single row) and return ``x`` standardised.

        The one standardiser of the probes: :func:`train_probe` and the elastic-net probe of
        :func:`circuitlab.neurons.ranking.elastic_net_probe` both start here."""
        self.mean.copy_(x.mean(0))
        self.std.copy_(x.std(0).clamp(min=1e-6) if x.shape[0] > 1 else torch.ones(x.shape[1], dtype=x.dtype))
        return (x - self.mean) / self.std

    def forward(self, x: Float[Tensor, "n d"]) -> Float[Tensor, "n classes"]:
        return self.net((x.to(self.mean.dtype) - self.mean) / self.std)

    @torch.no_grad()
    def predict(self, x: Float[Tensor, "n d"]) -> Int[Tensor, " n"]:
        return self(x).argmax(-1)

    @torch.no_grad()
    def accuracy(self, x: Float[Tensor, "n d"], y: Int[Tensor, " n"]) -> float:
        return float((self.predict(x) == y).float().mean()) if len(y) else float("nan")


def _check_xy(x: Any, y: Any, what: str) -> tuple[Tensor, Tensor]:
    if not isinstance(x, Tensor) or x.ndim != 2 or not x.is_floating_point():
        raise InputError(f"{what} features must be a float tensor [n, d]; got "
                         f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}.")
    if not isinstance(y, Tensor) or y.ndim != 1 or y.shape[0] != x.shape[0] or y.is_floating_point():
        raise InputError(f"{what} labels must be an integer tensor [n] with one label per row of the features "
                         f"({x.shape[0]}); got {tuple(y.shape) if isinstance(y, Tensor) else type(y).__name__}.")
    if x.shape[0] == 0:
        raise InputError(f"the {what} split has no labelled words; use more sentences or a larger split.")
    return x.float(), y.long()



class EarlyStopping:
    """Early stopping on a dev score: keeps a copy of the module's best state, says when ``patience`` epochs in a
    row have not improved on it, and puts the best state back (:meth:`restore`). ``higher``: a higher score is
    better (accuracy) or a lower one (loss); a new score must beat the best by more than ``min_delta``."""

    def __init__(self, module: nn.Module, patience: int, higher: bool = True, min_delta: float = 0.0) -> None:
        self.module, self.patience, self.higher, self.min_delta = module, patience, higher, min_delta
        self.best = -math.inf if higher else math.inf
        self.state: Optional[dict] = None
        self.stale = 0

    def update(self, score: float) -> bool:
        """Record one epoch's dev score; ``True`` when training should stop."""
        better = score > self.best + self.min_delta if self.higher else score < self.best - self.min_delta
        if better:
            self.best, self.stale = score, 0
            self.state = {k: v.clone() for k, v in self.module.state_dict().items()}
            return False
        self.stale += 1
        return self.stale >= self.patience

    def restore(self) -> None:
        """Load the best state seen (nothing happens if no score was recorded)."""
        if self.state is not None:
            self.module.load_state_dict(self.state)


def train_probe(x: Float[Tensor, "n d"], y: Int[Tensor, " n"], n_classes: int, kind: str = "linear", *,
                x_dev: Optional[Float[Tensor, "n_dev d"]] = None, y_dev: Optional[Int[Tensor, " n_dev"]] = None,
                seed: int = 0,
                weight_decay: Optional[float] = None, hidden: int = 256, max_iter: int = 100,
                epochs: int = 100, lr: float = 3e-3, batch_size: int = 512, patience: int = 3,
                dtype: torch.dtype = torch.float32) -> Probe:
    """Train a probe on features ``x`` and labels ``y`` (ids in ``[0, n_classes)``).

    ``"linear"``: L-BFGS (strong Wolfe line search, at most ``max_iter`` iterations) on mean cross-entropy +
    ``weight_decay / 2 * ||W||^2`` (default ``1e-3``). ``"mlp"``: Adam (``lr``; mini-batches of ``batch_size``,
    smaller where the data would give fewer than 8 an epoch; decoupled weight decay, default ``0``) for at most
    ``epochs`` epochs, keeping the epoch with the best dev accuracy and stopping after ``patience`` epochs without
    improvement (without dev data: the last epoch). ``dtype``: the probe's arithmetic (float32 reaches the
    optimum to about 1e-4 in probability; float64 to rounding, at twice the cost).
    """
    seed = check_seed(seed)
    x, y = _check_xy(x, y, "training")
    x = x.to(dtype)
    n_classes = check_count(n_classes, "n_classes", minimum=2)
    if int(y.min()) < 0 or int(y.max()) >= n_classes:
        raise InputError(f"labels must lie in [0, {n_classes}); got range [{int(y.min())}, {int(y.max())}].")
    if kind not in PROBES:
        raise InputError(f"probe kind {shorten(kind)}: use one of {PROBES}.")
    if kind == "mlp":  # its weights (with gradients, AdamW's moments and early stopping's copy), and a batch's
        hidden = check_count(hidden, "hidden")  # hidden activations (with their gradients)
        size = torch.empty((), dtype=dtype).element_size()
        check_affordable(size * (5 * hidden * (x.shape[1] + n_classes) + 3 * min(batch_size, x.shape[0]) * hidden),
                         f"an MLP probe with hidden={hidden:,}", "use a smaller hidden (Hewitt & Liang used 1000)")
    torch.manual_seed(seed)
    probe = Probe(x.shape[1], n_classes, kind, hidden).to(dtype)
    xs = probe.standardise_on(x)
    if kind == "linear":
        lam = 1e-3 if weight_decay is None else float(weight_decay)
        with torch.no_grad():
            probe.net.weight.zero_()
            probe.net.bias.zero_()
        single = dtype == torch.float32
        minimise_lbfgs(probe.net.parameters(),
                       lambda: (nn.functional.cross_entropy(probe.net(xs), y)
                                + 0.5 * lam * probe.net.weight.pow(2).sum()),
                       max_iter=max_iter, tolerance_grad=1e-7 if single else 1e-11,
                       tolerance_change=1e-12 if single else 1e-18)
        return probe
    lam = 0.0 if weight_decay is None else float(weight_decay)
    opt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=lam)
    gen = torch.Generator().manual_seed(seed)
    have_dev = x_dev is not None and y_dev is not None and len(y_dev) > 0
    stopping = EarlyStopping(probe, patience)
    step = min(batch_size, max(32, math.ceil(x.shape[0] / 8)))  # at least 8 steps an epoch on small data
    for _ in range(epochs):
        probe.train()
        for idx in torch.randperm(x.shape[0], generator=gen).split(step):
            opt.zero_grad()
            nn.functional.cross_entropy(probe(x[idx]), y[idx]).backward()
            opt.step()
        probe.eval()
        if have_dev and stopping.update(probe.accuracy(x_dev, y_dev.long())):
            break
    stopping.restore()
    return probe


# ---------------------------------------------------------------------------------------------------------
# The sweep
# ---------------------------------------------------------------------------------------------------------

class ProbeSweep(Result):
    """:func:`sweep` / :func:`sentence_sweep`'s result (axes ``("probe", "layer", "measure")``, seed means, the
    95% intervals in ``meta["ci95"]``): renders as layer curves with the intervals as whiskers."""


def _check_probes(probes: Any) -> tuple[str, ...]:
    if not isinstance(probes, (str, Sequence)):
        raise InputError(f"probes={shorten(probes)}: give probe kinds from {PROBES}, e.g. probes=('linear', 'mlp').")
    probes = tuple([probes] if isinstance(probes, str) else probes)
    if not probes or any(p not in PROBES for p in probes) or len(set(probes)) != len(probes):
        raise InputError(f"probes={shorten(probes)}: give distinct probe kinds from {PROBES}.")
    return probes


def word_activations(source: Any, sentences: Optional[Sequence[Sentence]], hooks: Any, progress: bool,
                     collect_options: dict) -> WordActivations:
    """``source`` if it is :class:`WordActivations` (narrowed to ``hooks``), else collected from the model
    ``source`` on ``sentences``."""
    if isinstance(source, WordActivations):
        if hooks is None:
            return source
        hooks = [hooks] if isinstance(hooks, str) else list(hooks)
        missing = [h for h in hooks if h not in source.acts]
        if missing:
            raise InputError(f"hooks {missing} are not in the given activations ({', '.join(source.hooks)}).")
        return WordActivations({h: source.acts[h] for h in hooks}, source.sentence, source.word, source.sentences,
                               source.model, source.pool, source.skipped, source.meta)
    if sentences is None:
        raise InputError("sentences are needed to collect activations from a model: pass sentences=... "
                         "(e.g. circuitlab.probing.data.default_sentences()), or pass WordActivations.")
    return collect(source, sentences, hooks, progress=progress, **check_collect_options(collect_options, "the probe"))


@dataclass
class _Split:
    rows: dict[str, Tensor]  # split -> row indices into the activations
    sentences: dict[str, Tensor]


def split_rows(row_sentence: Int[Tensor, " rows"], n_sentences: int, fractions: Sequence[float], seed: int,
               what: str = "aligned word", *, keys: Optional[Sequence[Any]] = None
               ) -> tuple[dict[str, Int[Tensor, " k"]], dict[str, Int[Tensor, " k"]]]:
    """The rows (words, spans, examples) of each split of the sentences (:func:`split_sentences`), given each
    row's sentence index: ``(rows, sentences)``, each a dict over ``train``/``dev``/``test``. A split without a
    row is an error naming ``what`` it lacks. ``keys``: see :func:`split_sentences` (identical sentences share
    a split)."""
    seed = check_seed(seed)
    by_sentence = split_sentences(n_sentences, fractions, seed, keys=keys)
    rows = {}
    for name, idx in by_sentence.items():
        member = torch.zeros(n_sentences, dtype=torch.bool)
        member[idx] = True
        rows[name] = member[row_sentence].nonzero().flatten()
        if rows[name].numel() == 0:
            raise InputError(f"the {name} split ({idx.numel()} sentence(s)) holds no {what}; use more sentences.")
    return rows, by_sentence


def split_record(sentences: Sequence[Sentence], splits: dict[str, Sequence[int]],
                 left_out: Optional[dict[int, str]] = None) -> dict[str, Any]:
    """Which sentences a result was trained, tuned and tested on, and which it left out and why: plain data for
    its ``meta["data_split"]``, so a user can compute baselines on the same items.

    ``splits``: per split (``train``/``dev``/``test``), the indices into ``sentences`` of the sentences used;
    ``left_out``: index -> why; a sentence in neither is listed as left out by the split itself. Returns
    ``{"sentences": {split: [index]}, "ids": {split: [id]}, "left_out":
    [{"index", "id", "why"}]}``; a sentence's id is its ``id`` (``sent_id`` of CoNLL-U, ``file:line``), else
    ``"#INDEX"``.
    """
    def name(i: int) -> str:
        return sentences[i].id or f"#{i}"

    used = {k: sorted(int(i) for i in v) for k, v in splits.items()}
    why = dict(left_out or {})
    drawn = {i for v in used.values() for i in v} | set(why)
    for i in range(len(sentences)):
        if i not in drawn:  # e.g. 25 sentences at (0.8, 0.1, 0.1): 20 + 2 + 2 drawn
            why[i] = "drawn into no split (the train, dev and test fractions, rounded, leave it over)"
    return {"sentences": used, "ids": {k: [name(i) for i in v] for k, v in used.items()},
            "left_out": [{"index": i, "id": name(i), "why": w} for i, w in sorted(why.items())]}


def _row_splits(acts: WordActivations, fractions: Sequence[float], seed: int) -> _Split:
    return _Split(*split_rows(acts.sentence, len(acts.sentences), fractions, seed, keys=sentence_keys(acts)))


def row_split_record(acts: WordActivations, by_split: dict[str, Int[Tensor, " k"]],
                     row_sentence: Optional[Int[Tensor, " rows"]] = None,
                     reason: str = "no word aligned to a token") -> dict[str, Any]:
    """:func:`split_record` for probes on rows (words, spans) of the sentences, given :func:`split_rows`'s
    sentences per split: a sentence that gives no row (``row_sentence``: each row's sentence, default the
    words') is listed as left out, with ``reason``."""
    has_rows = set((acts.sentence if row_sentence is None else row_sentence).unique().tolist())
    left = {i: reason for i in range(len(acts.sentences)) if i not in has_rows}
    return split_record(acts.sentences, {k: [i for i in v.tolist() if i in has_rows] for k, v in by_split.items()},
                        left)


def sentence_keys(acts: WordActivations) -> list[tuple[str, ...]]:
    """One key per sentence of ``acts`` for :func:`split_sentences`: its words (identical words, identical
    activations: such sentences must share a split)."""
    return [tuple(s.words) for s in acts.sentences]


def sweep(source: Any, sentences: Optional[Sequence[Sentence]] = None, task: str = "upos", *, hooks: Any = None,
          probes: Sequence[str] = PROBES, seeds: Sequence[int] = (0, 1, 2), control: bool = True,
          split: Sequence[float] = (0.8, 0.1, 0.1), split_seed: int = 0, lowercase: bool = False,
          linear: Optional[dict] = None, mlp: Optional[dict] = None, progress: bool = False,
          **collect_options: Any) -> ProbeSweep:
    """Probe accuracy, control accuracy and selectivity at every hook: a :class:`ProbeSweep` (a
    :class:`~circuitlab.results.Result`) with axes ``("probe", "layer", "measure")``, seed means; test split.

    Args:
        source: :class:`~circuitlab.probing.activations.WordActivations`, or a model (or name) to collect them
            from on ``sentences`` at ``hooks`` (``collect_options`` go to
            :func:`~circuitlab.probing.activations.collect`: ``pool``, ``max_memory``, ``cache``...).
        task: ``"upos"``, ``"deprel"`` or ``"ent"``: the annotation each word is labelled with.
        probes: ``"linear"`` and/or ``"mlp"``.
        seeds: one probe (and one control task) per seed; the intervals are over seeds.
        control: also train on the control task (:func:`control_labels`); without it ``control`` and
            ``selectivity`` are NaN.
        split, split_seed: train/dev/test fractions of the sentences, and the shuffle's seed.
        lowercase: control task word types ignore case.
        linear, mlp: keyword arguments for :func:`train_probe` per probe kind (``weight_decay``, ``hidden``...).

    ``meta`` holds ``per_seed`` (``[probe, layer, measure, seed]``), ``ci95``, ``dev`` accuracies, the majority
    baseline (the most frequent training label's test accuracy), split sizes, classes, alignment skips, timings.
    """
    split_seed = check_seed(split_seed, "split_seed")
    t0 = time.perf_counter()
    if task not in TASKS:
        raise InputError(f"task={shorten(task)}: token-level tasks are {', '.join(map(repr, TASKS))} (part of speech, "
                         "dependency label, entity type).")
    probes, seeds = _check_probes(probes), check_seeds(seeds)
    acts = word_activations(source, sentences, hooks, progress, collect_options)
    labels = acts.labels(task)
    words = acts.labels("word")
    parts = _row_splits(acts, split, split_seed)
    classes = sorted(set(labels), key=str)
    index = {c: i for i, c in enumerate(classes)}
    if len(classes) < 2:
        raise InputError(f"task {shorten(task)}: every word has the label {shorten(classes[0])}; a probe needs two "
                         "labels or more.")
    y_task = torch.tensor([index[c] for c in labels])
    train_classes = set(y_task[parts.rows["train"]].tolist())
    if len(train_classes) < 2:
        raise InputError(f"task {shorten(task)}: the training split holds only one label; use more sentences.")
    controls = {s: torch.tensor([index[c] for c in control_labels(words, labels, s, lowercase)])
                for s in seeds} if control else {}
    options = {"linear": dict(linear or {}), "mlp": dict(mlp or {})}
    hooks_used = acts.hooks
    per_seed = torch.full((len(probes), len(hooks_used), len(MEASURES), len(seeds)), float("nan"))
    dev = torch.full((len(probes), len(hooks_used), 2, len(seeds)), float("nan"))
    tr, dv, te = parts.rows["train"], parts.rows["dev"], parts.rows["test"]
    jobs = [(p, h, s) for p in range(len(probes)) for h in range(len(hooks_used)) for s in range(len(seeds))]
    for p, h, s in progress_bar(jobs, progress=progress, desc=f"probes ({task})", unit="probe"):
        x = acts.acts[hooks_used[h]].float()
        for m, y in enumerate([y_task] + ([controls[seeds[s]]] if control else [])):
            if m == 0 and s > 0 and probes[p] == "linear":  # convex, started at zero: the same probe every seed
                per_seed[p, h, m, s], dev[p, h, m, s] = per_seed[p, h, m, 0], dev[p, h, m, 0]
                continue
            probe = train_probe(x[tr], y[tr], len(classes), probes[p], x_dev=x[dv], y_dev=y[dv], seed=seeds[s],
                                **options[probes[p]])
            per_seed[p, h, m, s] = probe.accuracy(x[te], y[te])
            dev[p, h, m, s] = probe.accuracy(x[dv], y[dv])
    per_seed[:, :, 2] = per_seed[:, :, 0] - per_seed[:, :, 1]
    majority = Counter(y_task[tr].tolist()).most_common(1)[0][0]
    unseen = sorted({classes[int(c)] for c in y_task[te].tolist()} - {classes[c] for c in train_classes}, key=str)
    meta = {
        "per_seed": per_seed, "ci95": ci95(per_seed), "seeds": seeds, "dev": dev,
        "dev_measures": ("accuracy", "control"), "hooks": hooks_used, "classes": classes,
        "majority_baseline": float((y_task[te] == majority).float().mean()),
        "unseen_test_labels": unseen,  # labels of test words that no training word has: always missed
        "n_words": {k: int(v.numel()) for k, v in parts.rows.items()},
        "n_sentences": {k: int(v.numel()) for k, v in parts.sentences.items()},
        "data_split": row_split_record(acts, parts.sentences),
        "split": tuple(split), "split_seed": split_seed, "pool": acts.pool, "skipped": dict(acts.skipped),
        "probe_options": options, "lowercase": lowercase, "seconds": time.perf_counter() - t0,
        "activations": {k: v for k, v in acts.meta.items() if k in ("seconds", "sentences_per_second", "alignment")},
    }
    return ProbeSweep(values=per_seed.mean(-1), axes=("probe", "layer", "measure"),
                  labels={"probe": list(probes), "layer": [hook_layer_label(h) for h in hooks_used],
                          "measure": list(MEASURES)},
                  title=f"Probe accuracy and selectivity ({task})",
                  metric="test accuracy (control: Hewitt & Liang control task; selectivity = accuracy - control)",
                  model=acts.model, task=task, meta=meta)


def sentence_features(acts: WordActivations,
                      hook: str) -> tuple[Float[Tensor, "n_sentences d"], Bool[Tensor, " n_sentences"]]:
    """Each sentence's representation at ``hook``: the mean of its aligned words' rows; and a ``[n_sentences]``
    bool mask of the sentences that have at least one aligned word (the others get zeros)."""
    x = acts[hook].float()
    n = len(acts.sentences)
    sums = torch.zeros(n, x.shape[1]).index_add_(0, acts.sentence, x)
    counts = torch.bincount(acts.sentence, minlength=n)
    return sums / counts.clamp(min=1)[:, None].float(), counts > 0


def sentence_sweep(source: Any, labels: Any, sentences: Optional[Sequence[Sentence]] = None, *, hooks: Any = None,
                   probes: Sequence[str] = PROBES, seeds: Sequence[int] = (0, 1, 2),
                   split: Sequence[float] = (0.8, 0.1, 0.1), split_seed: int = 0, linear: Optional[dict] = None,
                   mlp: Optional[dict] = None, progress: bool = False, **collect_options: Any) -> ProbeSweep:
    """Sentence-level probes: test accuracy of predicting one label per sentence from the mean of its words'
    representations, at every hook; a :class:`ProbeSweep` with axes ``("probe", "layer",
    "measure")`` and the one measure ``"accuracy"`` (seed means; intervals in ``meta["ci95"]``).

    ``labels``: one label per sentence (a sequence), or a function of a :class:`Sentence` (e.g.
    ``lambda s: s.id.rstrip("0123456789")`` tells the default data's KJV verses from its fortunes). Word-type
    control tasks have no sentence-level counterpart, so none is run; ``meta["majority_baseline"]`` is the
    reference. Sentences none of whose words aligned to tokens are left out and counted
    (``meta["sentences_left_out"]``). Other arguments as in :func:`sweep`.
    """
    split_seed = check_seed(split_seed, "split_seed")
    t0 = time.perf_counter()
    probes, seeds = _check_probes(probes), check_seeds(seeds)
    acts = word_activations(source, sentences, hooks, progress, collect_options)
    n = len(acts.sentences)
    if callable(labels):
        values = [labels(s) for s in acts.sentences]
    elif isinstance(labels, Sequence) and not isinstance(labels, str):
        values = list(labels)
    else:
        raise InputError("labels must be one label per sentence (a list) or a function of a Sentence.")
    if len(values) != n:
        raise InputError(f"{len(values)} labels for {n} sentences; give one label per sentence.")
    if any(v is None for v in values):
        raise InputError(f"labels: sentence {values.index(None)} has no label (None); give every sentence one.")
    classes = sorted(set(values), key=str)
    if len(classes) < 2:
        raise InputError(f"every sentence has the label {shorten(classes[0])}; a probe needs two labels or more.")
    y = torch.tensor([classes.index(v) for v in values])
    parts = split_sentences(n, split, split_seed, keys=sentence_keys(acts))
    _, aligned = sentence_features(acts, acts.hooks[0])
    idx = {k: v[aligned[v]] for k, v in parts.items()}
    for k, v in idx.items():
        if v.numel() == 0:
            raise InputError(f"the {k} split holds no sentence with an aligned word; use more sentences.")
    if len(set(y[idx["train"]].tolist())) < 2:
        raise InputError("the training split holds only one sentence label; use more sentences.")
    options = {"linear": dict(linear or {}), "mlp": dict(mlp or {})}
    per_seed = torch.full((len(probes), len(acts.hooks), 1, len(seeds)), float("nan"))
    jobs = [(p, h, s) for p in range(len(probes)) for h in range(len(acts.hooks)) for s in range(len(seeds))]
    features: dict[int, Tensor] = {}
    for p, h, s in progress_bar(jobs, progress=progress, desc="sentence probes", unit="probe"):
        if h not in features:
            features[h] = sentence_features(acts, acts.hooks[h])[0]
        x = features[h]
        if s > 0 and probes[p] == "linear":  # the same convex problem every seed
            per_seed[p, h, 0, s] = per_seed[p, h, 0, 0]
            continue
        probe = train_probe(x[idx["train"]], y[idx["train"]], len(classes), probes[p], x_dev=x[idx["dev"]],
                            y_dev=y[idx["dev"]], seed=seeds[s], **options[probes[p]])
        per_seed[p, h, 0, s] = probe.accuracy(x[idx["test"]], y[idx["test"]])
    majority = Counter(y[idx["train"]].tolist()).most_common(1)[0][0]
    meta = {"per_seed": per_seed, "ci95": ci95(per_seed), "seeds": seeds, "hooks": acts.hooks, "classes": classes,
            "majority_baseline": float((y[idx["test"]] == majority).float().mean()),
            "n_sentences": {k: int(v.numel()) for k, v in idx.items()},
            "sentences_left_out": int((~aligned).sum()), "split": tuple(split), "split_seed": split_seed,
            "data_split": split_record(acts.sentences, {k: v.tolist() for k, v in idx.items()},
                                       {int(i): "no word aligned to a token (a sentence's vector is the mean of its "
                                                "aligned words')" for i in (~aligned).nonzero().flatten().tolist()}),
            "pool": acts.pool, "probe_options": options, "seconds": time.perf_counter() - t0}
    return ProbeSweep(values=per_seed.mean(-1), axes=("probe", "layer", "measure"),
                  labels={"probe": list(probes), "layer": [hook_layer_label(h) for h in acts.hooks],
                          "measure": ["accuracy"]},
                  title="Sentence-level probe accuracy", metric="test accuracy (sentence = mean of its words)",
                  model=acts.model, task="sentence labels", meta=meta)
