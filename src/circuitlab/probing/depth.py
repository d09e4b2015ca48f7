"""Word-level syntax low, sentence-level semantics high: one layer-wise profile of word- and sentence-level probes.

The survey's summary of Belinkov et al. (2017), Peters et al. (2018) and Jawahar et al. (2019): part of speech and
other word-level syntax are best decoded from the lower layers, sentence-level properties (tense, and more
semantic ones) from higher layers. :func:`depth_profile` measures it on one model in one figure:

    from circuitlab.probing import depth_profile, default_sentences

    prof = depth_profile("minilm-l6", default_sentences(1000))
    prof.normalised       # [task, layer]: each task's test accuracy over its own maximum
    prof.summary()        # the expected layer of each task, word-level first

**Tasks.** Word-level: ``upos`` and ``deprel`` (each aligned word's label; a linear probe per layer,
:func:`circuitlab.probing.probe_sweep`). Sentence-level: ``tense``, ``voice`` and ``type`` (one label per sentence,
read from spaCy's tags and parse of the sentence's own words, :mod:`circuitlab.tasks.sentence_labels`; a linear
probe on the mean of the sentence's word representations, :func:`circuitlab.probing.sentence_sweep`). A sentence
without a label for a task (no finite verb has no tense) is left out of that task, and so is a class with fewer
than ``min_class`` sentences. All tasks read the activations of one collection; splits are by sentence.

**Normalised** curves divide each task's test accuracy by its maximum over the layers (the issue's reading, so
tasks of different difficulty share one axis). **Expected layer** (after Tenney et al. 2019's expected layer of
cumulative scores): with ``d_i`` the depth of hook ``i`` (0 for the embedding, ``l + 1`` after block ``l``) and
``Delta_i`` the gain of the running best accuracy at hook ``i`` (``max(acc[:i+1]) - max(acc[:i])``, so at least 0),
``E = sum_i d_i Delta_i / sum_i Delta_i``: the depth at which the task's decodability is gained. It reads gains
only, so it does not depend on the normalisation or on a task's baseline; a task with no gain over the embedding
has none (``NaN``). The best layer (the argmax) is reported beside it.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from circuitlab.core import check_count, check_seed, shorten
from circuitlab.errors import InputError
from circuitlab.probing.activations import WordActivations, hook_layer_label
from circuitlab.probing.classifier import TASKS, sentence_sweep, sweep, word_activations
from circuitlab.results import Bundle, Result
from circuitlab.tasks.sentence_labels import SENTENCE_TASKS
from circuitlab.tasks.sentences import Sentence

WORD_TASKS = ("upos", "deprel")
MEASURES = ("expected layer", "best layer", "max accuracy", "majority baseline")


def hook_depth(hook: str) -> int:
    """The depth of a residual-stream hook: 0 for the embedding (``blocks.0.hook_resid_pre``), ``l`` for
    ``blocks.{l}.hook_resid_pre`` and ``l + 1`` for ``blocks.{l}.hook_resid_post``; any other hook is an
    :class:`~circuitlab.errors.InputError` (depth is defined on the residual stream)."""
    m = re.fullmatch(r"blocks\.(\d+)\.hook_resid_(pre|post)", hook) if isinstance(hook, str) else None
    if m is None:
        raise InputError(f"hook {shorten(hook)}: a depth profile reads the residual stream; give hooks "
                         "blocks.{l}.hook_resid_post (or the embedding, blocks.0.hook_resid_pre).")
    return int(m.group(1)) + (m.group(2) == "post")


def expected_layer(accuracy: Float[Tensor, " hooks"], depths: Sequence[float]) -> float:
    """``sum_i d_i Delta_i / sum_i Delta_i`` with ``Delta_i`` the gains of the running maximum of ``accuracy``
    (see the module docstring); ``NaN`` when the accuracy never rises above the first hook's."""
    acc = torch.as_tensor(accuracy, dtype=torch.float64).reshape(-1)
    if len(acc) != len(depths):
        raise InputError(f"expected_layer got {len(acc)} accuracies for {len(depths)} depths; give one each.")
    best = torch.cummax(acc, 0).values
    gain = torch.cat([torch.zeros(1, dtype=torch.float64), best[1:] - best[:-1]])
    total = float(gain.sum())
    if not total > 0:
        return float("nan")
    return float((gain * torch.tensor(list(depths), dtype=torch.float64)).sum() / total)


@dataclass(repr=False)
class DepthProfile(Bundle):
    """What :func:`depth_profile` returns: ``accuracy`` and ``normalised`` (``[task, layer]``, test accuracy and
    accuracy over the task's maximum), ``expected`` (``[task, measure]``, :data:`MEASURES`; layers as depths: 0 =
    the embedding, ``l + 1`` = after block ``l``); ``level``: ``"word"`` or ``"sentence"`` per task; ``n``: the
    test items (words or sentences) per task."""

    accuracy: Result
    normalised: Result
    expected: Result
    level: dict = field(default_factory=dict)
    n: dict = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"{'task':<10} {'level':<9} {'test n':>7} {'expected':>9} {'best':>5} {'max acc':>8} {'majority':>9}"]
        for i, task in enumerate(self.expected.labels["task"]):
            e, b, m, maj = self.expected.values[i].tolist()
            lines.append(f"{task:<10} {self.level[task]:<9} {self.n.get(task, 0):>7} {e:>9.2f} {b:>5.0f} {m:>8.3f} "
                         f"{maj:>9.3f}")
        return "\n".join(lines)


def _subset(acts: WordActivations, keep: list[int]) -> WordActivations:
    """``acts`` restricted to the sentences ``keep`` (indices, in order), renumbered."""
    index = torch.full((len(acts.sentences),), -1, dtype=torch.long)
    index[torch.tensor(keep, dtype=torch.long)] = torch.arange(len(keep))
    rows = (index[acts.sentence] >= 0).nonzero().flatten()
    return WordActivations({h: a[rows] for h, a in acts.acts.items()}, index[acts.sentence[rows]], acts.word[rows],
                           [acts.sentences[i] for i in keep], acts.model, acts.pool, dict(acts.skipped),
                           dict(acts.meta))


def depth_profile(source: Any, sentences: Optional[Sequence[Sentence]] = None, *,
                  word_tasks: Sequence[str] = WORD_TASKS, sentence_tasks: Sequence[str] = SENTENCE_TASKS,
                  sentence_labels: Optional[Mapping[str, Sequence[Optional[str]]]] = None, hooks: Any = None,
                  min_class: int = 10, split: Sequence[float] = (0.8, 0.1, 0.1), split_seed: int = 0,
                  linear: Optional[dict] = None, too_few: str = "raise", progress: bool = False,
                  **collect_options: Any) -> DepthProfile:
    """Linear-probe test accuracy per layer for word-level and sentence-level tasks, each normalised to its own
    maximum, and each task's expected layer (see the module docstring).

    Args:
        source: a model (or name) to collect residual-stream activations from on ``sentences``, or
            :class:`~circuitlab.probing.activations.WordActivations` already collected at residual-stream hooks.
        word_tasks: from ``"upos"``, ``"deprel"``, ``"ent"``.
        sentence_tasks: names of sentence-level tasks; with ``sentence_labels=None`` they come from
            :func:`circuitlab.tasks.sentence_labels.sentence_properties` (spaCy) and must be among
            :data:`~circuitlab.tasks.sentence_labels.SENTENCE_TASKS`.
        sentence_labels: task -> one label per sentence (``None``: the sentence is left out of that task).
        hooks: residual-stream hooks (default: the embedding and every block's output).
        min_class: a sentence-level class with fewer sentences is left out of its task.
        too_few: a sentence-level task left with fewer than two such classes: ``"raise"`` (default) an
            :class:`~circuitlab.errors.InputError`, or ``"skip"`` it and say why in ``meta["left_out_tasks"]``
            (what ``circuitlab probe depth`` does, printing the reason); at least one task must remain.
        split, split_seed, linear: as in :func:`circuitlab.probing.probe_sweep` (one linear probe per task and hook).
    """
    split_seed = check_seed(split_seed, "split_seed")
    min_class = check_count(min_class, "min_class")
    if too_few not in ("raise", "skip"):
        raise InputError(f"too_few={shorten(too_few)}: use 'raise' (an error) or 'skip' (leave the task out and "
                         f"say why in meta['left_out_tasks']).")
    for name, tasks, allowed in (("word_tasks", word_tasks, TASKS), ("sentence_tasks", sentence_tasks, None)):
        if isinstance(tasks, str) or not isinstance(tasks, Sequence) or len(set(tasks)) != len(tasks) \
                or any(not isinstance(t, str) for t in tasks) or (allowed and any(t not in allowed for t in tasks)):
            raise InputError(f"{name}={shorten(tasks)}: give a list of distinct task names"
                             + (f" from {allowed}." if allowed else "."))
    if not word_tasks and not sentence_tasks:
        raise InputError("depth_profile got no task: give word_tasks and/or sentence_tasks.")
    if sentence_labels is None and any(t not in SENTENCE_TASKS for t in sentence_tasks):
        raise InputError(f"sentence_tasks={shorten(sentence_tasks)}: without sentence_labels=... the tasks are "
                         f"{SENTENCE_TASKS} (labelled by spaCy); give sentence_labels={{task: [label per sentence]}} "
                         "for others.")
    if sentence_labels is not None and not isinstance(sentence_labels, Mapping):
        raise InputError(f"sentence_labels must map each sentence task to one label per sentence; got "
                         f"{shorten(sentence_labels)}.")
    acts = word_activations(source, sentences, hooks, progress, collect_options)
    depths = [hook_depth(h) for h in acts.hooks]
    if sentence_tasks and sentence_labels is None:
        from circuitlab.tasks.sentence_labels import sentence_properties

        props = sentence_properties(acts.sentences, progress=progress)
        sentence_labels = {t: [p[t] for p in props] for t in sentence_tasks}
    rows, level, n, majority, left_out = [], {}, {}, {}, {}
    options = dict(probes=("linear",), seeds=(0,), split=split, split_seed=split_seed, linear=linear,
                   progress=progress)
    for task in word_tasks:
        res = sweep(acts, task=task, control=False, **options)
        rows.append(res.values[0, :, 0])
        level[task], n[task], majority[task] = "word", res.meta["n_words"]["test"], res.meta["majority_baseline"]
    for task in sentence_tasks:
        labels = sentence_labels.get(task) if task in sentence_labels else None
        if labels is None or isinstance(labels, str) or len(labels) != len(acts.sentences):
            raise InputError(f"sentence_labels[{task!r}] must hold one label per sentence "
                             f"({len(acts.sentences)}); got {shorten(labels)}.")
        counts = Counter(v for v in labels if v is not None)
        kept_classes = {c for c, k in counts.items() if k >= min_class}
        keep = [i for i, v in enumerate(labels) if v in kept_classes]
        if len(kept_classes) < 2:
            why = (f"fewer than two labels have {min_class} sentences or more ({dict(counts)}); use more sentences "
                   f"or a smaller min_class")
            if too_few == "skip":
                left_out[task] = why
                continue
            raise InputError(f"sentence task {task!r}: {why}.")
        res = sentence_sweep(_subset(acts, keep), [labels[i] for i in keep], **options)
        rows.append(res.values[0, :, 0])
        level[task], n[task], majority[task] = "sentence", res.meta["n_sentences"]["test"], res.meta[
            "majority_baseline"]
    if not rows:
        raise InputError(f"depth_profile has no task left to probe: {left_out}.")
    acc = torch.stack(rows).float()
    sentence_tasks = [t for t in sentence_tasks if t not in left_out]
    tasks = list(word_tasks) + sentence_tasks
    layers = [hook_layer_label(h) for h in acts.hooks]
    common = dict(model=acts.model, task=f"{len(acts.sentences)} sentences; word: {', '.join(word_tasks) or '-'}; "
                                          f"sentence: {', '.join(sentence_tasks) or '-'}")
    meta = {"depths": depths, "hooks": acts.hooks, "level": level, "n_test": n, "split": tuple(split),
            "split_seed": split_seed, "min_class": min_class, "left_out_tasks": left_out}
    accuracy = Result(values=acc, axes=("task", "layer"), labels={"task": tasks, "layer": layers},
                      title="Probe accuracy by layer (linear probes)", metric="test accuracy", meta=meta, **common)
    normalised = Result(values=acc / acc.amax(1, keepdim=True).clamp(min=1e-12), axes=("task", "layer"),
                        labels={"task": tasks, "layer": layers}, title="Probe accuracy by layer, each task over its "
                        "maximum", metric="test accuracy / the task's maximum over layers", meta=meta, **common)
    stats = [[expected_layer(acc[i], depths), float(depths[int(acc[i].argmax())]), float(acc[i].max()),
              majority[t]] for i, t in enumerate(tasks)]
    expected = Result(values=torch.tensor(stats, dtype=torch.float32), axes=("task", "measure"),
                      labels={"task": tasks, "measure": list(MEASURES)}, title="Expected layer of each task",
                      metric="depth (0 = embedding, l + 1 = after block l); accuracies", meta=meta, **common)
    return DepthProfile(accuracy=accuracy, normalised=normalised, expected=expected, level=level, n=n)


__all__ = ["DepthProfile", "WORD_TASKS", "MEASURES", "depth_profile", "expected_layer", "hook_depth"]
