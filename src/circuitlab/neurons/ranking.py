"""Which individual neurons carry a property: three rankings, each a :class:`~circuitlab.results.Result` over
neurons (axes ``("layer", "neuron")``, higher = more important) with the order in ``meta``.

    from circuitlab.neurons.ranking import rank_neurons, correlation_ranking
    from circuitlab.probing import default_sentences

    sents = default_sentences(300)
    r = rank_neurons("minilm-l6", sents, task="upos")                 # Dalvi et al.'s elastic-net probe ranking
    r.meta["ranking"][:5]                                             # ["L3 N17", ...], best first
    r.meta["per_class"]["NOUN"][:5]                                   # the top neurons of one class
    f = rank_neurons(acts, labels=my_labels, method="anova")           # any per-word labels a user gives
    c = correlation_ranking("smollm2-135m", "gemma-3-270m", sents)    # Bau et al.'s cross-model correlation

**Neurons** are the columns of word-level activations (:func:`circuitlab.probing.collect`) at one or more hooks;
by default every block's MLP neurons, ``blocks.{l}.mlp.hook_post`` (an int ``l`` in ``hooks`` means that hook).
Residual dimensions (``blocks.{l}.hook_resid_post``) work the same way. A ranking reads the *training* split of
the sentences only (the split of :func:`circuitlab.probing.split_sentences`, the same ``split`` and
``split_seed`` as the probes), so that :mod:`~circuitlab.neurons.ablation` can evaluate it on held-out words.

**1. Probe weights** (``method="probe"``; Dalvi et al. 2019, "What is one grain of sand in the desert?",
linguistic correlation analysis). A multinomial logistic regression on standardised activations with an elastic
net penalty, ``mean cross-entropy + l1 * |W|_1 + l2 / 2 * |W|^2`` (bias not penalised), trained to optimality by
proximal gradient descent with Nesterov momentum (FISTA, backtracking step, restarts when the objective rises;
:func:`elastic_net_probe`). The L1 term drives most weights to exactly zero, the L2 term keeps groups of correlated
neurons together instead of picking one at random. Then, per class ``c``: sort the neurons by ``|W[c, j]|`` and
call ``mass_c(j)`` the share of the class's total weight mass held by the neurons at least as heavy as ``j``
(the heaviest neuron's share, ..., up to 1). Dalvi et al. take, per class, the top neurons that make up a given
percentage of the mass, and grow the percentage to order the neurons overall; a neuron therefore enters the
overall ranking at ``entry(j) = min_c mass_c(j)``, and the score is ``1 - entry(j)`` (1: the heaviest weight of
some class; 0: no weight at all). ``meta["per_class"]`` holds each class's own order, ``meta["class_scores"]``
the ``[class, layer, neuron]`` scores ``1 - mass_c(j)``.

**2. A per-neuron statistic** (``method="anova"`` or ``"mi"``; the univariate rankings that Torroba Hennigen et
al. 2020 and others compare probes against). ``"anova"``: the one-way ANOVA F statistic of the neuron's value
across the classes, ``between-class mean square / within-class mean square``. ``"mi"``: the mutual information
(nats) between the class and the neuron's value cut into ``bins`` equal-width bins between its minimum and
maximum (a plug-in estimate; biased upwards by about ``(bins - 1)(classes - 1) / (2 n)``, the same for every
neuron). Neither looks at other neurons: redundant neurons rank alike.

**3. Cross-model correlation** (:func:`correlation_ranking`; Bau et al. 2019, "Identifying and controlling
important neurons in neural machine translation"). No labels: for each neuron of model A, the largest absolute
Pearson correlation with any neuron of model B over the same words (``MaxCorr``); with several other models,
``MaxCorr`` is the largest over them and ``meta["min_corr"]`` the smallest (Bau et al.'s ``MinCorr``). Neurons
that independently trained models share rank first. The two models may tokenize differently: words are matched by
(sentence, word) after each model's own word alignment (:mod:`circuitlab.probing.align`), and words either model
could not align are left out. The ``[neurons A, neurons B]`` correlation matrix is computed in column chunks under
``max_memory``. A constant neuron (dead on every word) has no correlation and scores 0.
"""

from __future__ import annotations

import math
import re
import time
from typing import Any, Optional, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuitlab.core import (DEFAULT_MAX_MEMORY, check_affordable, check_count, check_max_memory, check_number,
                             check_seed, progress_bar, row_chunks, shorten)
from circuitlab.engine.collect import check_hooks
from circuitlab.errors import InputError
from circuitlab.models.loading import as_any_model
from circuitlab.probing.activations import WordActivations, check_collect_options, collect, hook_layer_label
from circuitlab.probing.classifier import Probe, TASKS, sentence_keys, split_rows
from circuitlab.tasks.sentences import Sentence
from circuitlab.results import Result

METHODS = ("probe", "anova", "mi")
#: the elastic-net penalties of the probe ranking (on standardised activations)
DEFAULT_L1, DEFAULT_L2 = 1e-3, 1e-3


# ---------------------------------------------------------------------------------------------------------
# Inputs: activations, labels, the neuron axis
# ---------------------------------------------------------------------------------------------------------

def neuron_hooks(model: Any, hooks: Any) -> list[str]:
    """Hook names for neurons: ``None`` is every block's ``mlp.hook_post``; an int ``l`` is
    ``blocks.{l}.mlp.hook_post``; names are checked as :func:`circuitlab.engine.collect.check_hooks` does."""
    from circuitlab.core import check_layer

    if hooks is None:
        hooks = list(range(model.cfg.n_layers))
    items = [hooks] if isinstance(hooks, (str, int)) else hooks
    if isinstance(items, Sequence) and not isinstance(items, str):
        items = [f"blocks.{check_layer(model, h, what='hooks layer')}.mlp.hook_post"
                 if isinstance(h, int) and not isinstance(h, bool) else h for h in items]
    return check_hooks(model, items)


def neuron_activations(source: Any, sentences: Optional[Sequence[Sentence]] = None, hooks: Any = None, *,
                       progress: bool = False, **collect_options: Any) -> WordActivations:
    """``source`` itself if it is :class:`WordActivations` (narrowed to ``hooks`` if given), else the word-level
    activations of the model ``source`` on ``sentences`` at :func:`neuron_hooks` ``(hooks)``."""
    if isinstance(source, WordActivations):
        if hooks is None:
            return source
        hooks = [hooks] if isinstance(hooks, str) else list(hooks) if isinstance(hooks, Sequence) else hooks
        if not isinstance(hooks, list) or not hooks or not all(isinstance(h, str) for h in hooks):
            raise InputError(f"hooks={shorten(hooks)}: with WordActivations give hook names among {source.hooks}.")
        missing = [h for h in hooks if h not in source.acts]
        if missing:
            raise InputError(f"hooks {missing} were not collected; these activations hold {source.hooks}. Collect "
                             "them first (circuitlab.probing.collect(model, sentences, hooks=...)).")
        return WordActivations({h: source.acts[h] for h in hooks}, source.sentence, source.word, source.sentences,
                               source.model, source.pool, source.skipped, source.meta)
    if sentences is None:
        raise InputError("sentences are needed to collect activations from a model: pass sentences=... "
                         "(e.g. circuitlab.probing.default_sentences(300)), or pass WordActivations.")
    model = as_any_model(source)
    return collect(model, sentences, neuron_hooks(model, hooks), progress=progress,
                   **check_collect_options(collect_options, "the neuron analysis"))


def layer_labels(hooks: Sequence[str]) -> list[str]:
    """Labels for the layer axis: ``"L3"`` for ``blocks.3.mlp.hook_post`` (and for block 3's residual output),
    ``"emb"`` for the embedding, the hook name where two labels would clash."""
    labels = []
    for h in hooks:
        m = re.fullmatch(r"blocks\.(\d+)\.mlp\.hook_post", h)
        labels.append(f"L{m.group(1)}" if m else hook_layer_label(h))
    return labels if len(set(labels)) == len(labels) else list(hooks)


def features(acts: WordActivations) -> tuple[Float[Tensor, "n neurons"], Int[Tensor, "neurons 2"]]:
    """Every hook's columns side by side, and for each column its ``(hook index, neuron)``."""
    cols = [acts.acts[h].float() for h in acts.hooks]
    where = torch.cat([torch.stack([torch.full((c.shape[1],), i), torch.arange(c.shape[1])], 1)
                       for i, c in enumerate(cols)])
    return torch.cat(cols, 1), where


def word_labels(acts: WordActivations, task: Optional[str], labels: Any) -> list:
    """One label per row: ``labels`` if given (checked: one per row, none missing), else the task's."""
    if labels is not None:
        if isinstance(labels, Tensor):
            labels = labels.flatten().tolist()
        if isinstance(labels, str) or not isinstance(labels, Sequence):
            raise InputError(f"labels must be a list with one label per word row; got {type(labels).__name__}.")
        if len(labels) != len(acts):
            raise InputError(f"labels: {len(labels)} labels for {len(acts)} word rows; give one label per row of "
                             "the activations (acts.labels('upos') shows the order: sentence order, aligned words "
                             "only).")
        if any(v is None for v in labels):
            raise InputError(f"labels: row {list(labels).index(None)} has no label (None); label every row.")
        return list(labels)
    if task not in TASKS:
        raise InputError(f"task={shorten(task)}: token-level tasks are {', '.join(map(repr, TASKS))}; or give your own "
                         "labels=[one per word row].")
    return acts.labels(task)


def train_rows(acts: WordActivations, split: Sequence[float], split_seed: int) -> dict[str, Int[Tensor, " k"]]:
    """Row indices of the train, dev and test sentences (the probes' split)."""
    split_seed = check_seed(split_seed, "split_seed")
    return split_rows(acts.sentence, len(acts.sentences), split, split_seed, keys=sentence_keys(acts))[0]


def encode(values: Sequence[Any]) -> tuple[Int[Tensor, " n"], list]:
    """Labels as class ids (classes sorted by their text) and the classes."""
    classes = sorted(set(values), key=str)
    if len(classes) < 2:
        raise InputError(f"labels: every word has the label {shorten(classes[0])}; a ranking needs two labels or more.")
    index = {c: i for i, c in enumerate(classes)}
    return torch.tensor([index[v] for v in values]), classes


def grid(scores: Float[Tensor, " neurons"], where: Int[Tensor, "neurons 2"],
         n_hooks: int) -> Float[Tensor, "hook neuron"]:
    """Per-column scores laid out as ``[hook, neuron]`` (NaN where a hook is narrower than the widest)."""
    width = int(where[:, 1].max()) + 1
    out = torch.full((n_hooks, width), float("nan"), dtype=scores.dtype)
    out[where[:, 0], where[:, 1]] = scores
    return out


def order_of(scores: Float[Tensor, " n"]) -> Int[Tensor, " n"]:
    """Column indices best first: by score, descending; ties by column index (a stable order)."""
    return torch.sort(scores, descending=True, stable=True).indices


def neuron_names(where: Int[Tensor, "neurons 2"], layers: Sequence[str], order: Int[Tensor, " k"]) -> list[str]:
    return [f"{layers[int(where[j, 0])]} N{int(where[j, 1])}" for j in order.tolist()]


# ---------------------------------------------------------------------------------------------------------
# The elastic-net probe
# ---------------------------------------------------------------------------------------------------------

def _soft(w: Tensor, t: float) -> Tensor:
    return torch.sign(w) * (w.abs() - t).clamp(min=0)


def elastic_net_probe(x: Float[Tensor, "n d"], y: Int[Tensor, " n"], n_classes: int, *, l1: float = DEFAULT_L1,
                      l2: float = DEFAULT_L2, max_iter: int = 500, tol: float = 1e-5,
                      dtype: torch.dtype = torch.float32) -> Probe:
    """A linear :class:`~circuitlab.probing.classifier.Probe` minimising ``mean cross-entropy + l1 * |W|_1 +
    l2 / 2 * |W|^2`` on standardised ``x`` (bias not penalised), by FISTA (proximal gradient with momentum).

    Each step takes a gradient step on the smooth part (cross-entropy + L2) of length ``1 / L`` from the momentum
    point, then soft-thresholds the weights by ``l1 / L`` (the L1 term's proximal map); ``L`` doubles until the
    step's quadratic bound holds (backtracking), and momentum restarts whenever the objective would rise. It stops
    when the step's largest move times ``L`` (the proximal gradient, which is zero exactly at the optimum) is below
    ``tol``, or after ``max_iter`` steps; ``probe.meta`` holds the iterations, the final residual and whether it
    converged. Started at zero; convex, so the optimum does not depend on a seed.
    """
    if not isinstance(x, Tensor) or x.ndim != 2 or not x.is_floating_point():
        raise InputError(f"features must be a float tensor [n, d]; got "
                         f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}.")
    if not isinstance(y, Tensor) or y.shape != (x.shape[0],) or y.is_floating_point():
        raise InputError(f"labels must be an integer tensor with one label per row of the features ({x.shape[0]}).")
    n_classes = check_count(n_classes, "n_classes", minimum=2)
    for name, v in (("l1", l1), ("l2", l2)):
        check_number(v, name, low=0, message=f"{name}={v!r}: give a finite penalty >= 0 (e.g. {name}=1e-3).")
    if x.shape[0] == 0 or int(y.min()) < 0 or int(y.max()) >= n_classes:
        raise InputError(f"labels must lie in [0, {n_classes}) and there must be at least one row.")
    x = x.to(dtype)
    probe = Probe(x.shape[1], n_classes, "linear").to(dtype)
    xs = probe.standardise_on(x)
    y = y.long()
    n = x.shape[0]

    def smooth(W: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """value, dW, db of cross-entropy + l2/2 |W|^2"""
        logits = xs @ W.T + b
        p = torch.softmax(logits, -1)
        value = torch.nn.functional.cross_entropy(logits, y) + 0.5 * l2 * W.pow(2).sum()
        p[torch.arange(n), y] -= 1
        p /= n
        return value, p.T @ xs + l2 * W, p.sum(0)

    W = torch.zeros(n_classes, x.shape[1], dtype=dtype)
    b = torch.zeros(n_classes, dtype=dtype)
    VW, Vb = W.clone(), b.clone()  # the momentum point
    t, L = 1.0, 1.0
    objective = float("inf")
    residual, it = float("inf"), 0
    for it in range(1, max_iter + 1):
        f, gW, gb = smooth(VW, Vb)
        while True:
            W_new = _soft(VW - gW / L, l1 / L)
            b_new = Vb - gb / L
            dW, db = W_new - VW, b_new - Vb
            f_new = float(torch.nn.functional.cross_entropy(xs @ W_new.T + b_new, y) + 0.5 * l2 * W_new.pow(2).sum())
            bound = float(f) + float((gW * dW).sum() + (gb * db).sum()) \
                + 0.5 * L * float(dW.pow(2).sum() + db.pow(2).sum())
            if f_new <= bound + 1e-12 * max(1.0, abs(bound)) or L > 1e12:
                break
            L *= 2.0
        residual = L * max(float(dW.abs().max()), float(db.abs().max()))
        new_objective = f_new + l1 * float(W_new.abs().sum())
        if new_objective > objective + 1e-12 * max(1.0, abs(objective)) and t > 1.0:
            VW, Vb, t = W.clone(), b.clone(), 1.0  # the momentum overshot: restart from the last iterate
            continue
        t_new = (1 + math.sqrt(1 + 4 * t * t)) / 2
        VW = W_new + (t - 1) / t_new * (W_new - W)
        Vb = b_new + (t - 1) / t_new * (b_new - b)
        W, b, t, objective = W_new, b_new, t_new, new_objective
        L = max(L / 1.5, 1e-6)  # let the step grow again
        if residual < tol:
            break
    with torch.no_grad():
        probe.net.weight.copy_(W)
        probe.net.bias.copy_(b)
    probe.meta = {"iterations": it, "residual": residual, "converged": residual < tol, "objective": objective,
                  "l1": float(l1), "l2": float(l2)}
    return probe


def mass_entry(weight: Float[Tensor, "classes d"]) -> Float[Tensor, "classes d"]:
    """Per class, each neuron's cumulative share of the class's weight mass: the share of ``sum_j |W[c, j]|``
    held by the neurons at least as heavy as it (ties: the same share). A class without weights gives 1."""
    a = weight.abs().double()
    total = a.sum(1, keepdim=True)
    sorted_a, idx = torch.sort(a, 1, descending=True)
    cum = sorted_a.cumsum(1)
    # a tie takes the share of its whole group: the last cumulative sum among equal values
    out = torch.empty_like(a)
    for c in range(a.shape[0]):
        values, counts = torch.unique_consecutive(sorted_a[c], return_counts=True)
        ends = counts.cumsum(0) - 1
        group_cum = cum[c][ends].repeat_interleave(counts)
        out[c, idx[c]] = group_cum
    share = torch.where(total > 0, out / total.clamp(min=1e-300), torch.ones_like(out))
    return torch.where(a > 0, share, torch.ones_like(share)).to(weight.dtype)


# ---------------------------------------------------------------------------------------------------------
# Per-neuron statistics
# ---------------------------------------------------------------------------------------------------------

def anova_f(x: Float[Tensor, "n d"], y: Int[Tensor, " n"], n_classes: Optional[int] = None) -> Float[Tensor, " d"]:
    """The one-way ANOVA F statistic of every column of ``x`` across the classes ``y``:
    ``(sum_c n_c (mean_c - mean)^2 / (C - 1)) / (sum_c sum_i (x_i - mean_c)^2 / (n - C))``, with ``C`` the
    classes present. A column constant within every class gives ``inf`` (``nan`` if it is constant overall)."""
    x = x.double()
    C = int(n_classes if n_classes is not None else int(y.max()) + 1)
    counts = torch.bincount(y, minlength=C).double()
    present = counts > 0
    k = int(present.sum())
    n = x.shape[0]
    if k < 2 or n <= k:
        raise InputError(f"labels: an F statistic needs two classes or more and more rows than classes; got {k} "
                         f"classes over {n} rows.")
    sums = torch.zeros(C, x.shape[1], dtype=x.dtype).index_add_(0, y, x)
    means = sums / counts.clamp(min=1)[:, None]
    grand = x.mean(0)
    between = (counts[:, None] * (means - grand) ** 2)[present].sum(0) / (k - 1)
    within = ((x - means[y]) ** 2).sum(0) / (n - k)
    return (between / within).float()


def binned_mutual_information(x: Float[Tensor, "n d"], y: Int[Tensor, " n"], bins: int = 10,
                              n_classes: Optional[int] = None,
                              max_memory: int = DEFAULT_MAX_MEMORY) -> Float[Tensor, " d"]:
    """Mutual information (nats) between ``y`` and each column of ``x`` cut into ``bins`` equal-width bins
    between the column's minimum and maximum (a constant column: one bin, information 0), from the plug-in joint
    frequencies. Columns are processed in chunks under ``max_memory``."""
    bins = check_count(bins, "bins", minimum=2)
    max_memory = check_max_memory(max_memory)
    C = int(n_classes if n_classes is not None else int(y.max()) + 1)
    n, d = x.shape
    p_y = torch.bincount(y, minlength=C).double() / n
    out = torch.empty(d, dtype=torch.float64)
    # per column: n float64 values and n long codes, and its joint table of bins x classes (four float64 copies)
    per_column = 24 * n + 32 * bins * C
    check_affordable(per_column, f"bins={bins:,} (a joint table of {bins:,} bins x {C} classes per neuron)",
                     "use fewer bins (10 is the default)")
    for sl in row_chunks(d, per_column, max_memory):
        xc = x[:, sl].double()
        lo, hi = xc.min(0).values, xc.max(0).values
        width = (hi - lo).clamp(min=1e-300)
        b = ((xc - lo) / width * bins).floor().long().clamp(0, bins - 1)
        b = torch.where((hi > lo)[None, :], b, torch.zeros_like(b))
        m = xc.shape[1]
        code = (torch.arange(m)[None, :] * bins + b) * C + y[:, None]
        joint = torch.bincount(code.flatten(), minlength=m * bins * C).double().reshape(m, bins, C) / n
        p_b = joint.sum(2, keepdim=True)
        ratio = joint / (p_b * p_y[None, None, :]).clamp(min=1e-300)
        out[sl] = torch.where(joint > 0, joint * ratio.clamp(min=1e-300).log(), torch.zeros_like(joint)).sum((1, 2))
    return out.float()


# ---------------------------------------------------------------------------------------------------------
# The rankings
# ---------------------------------------------------------------------------------------------------------

def rank_neurons(source: Any, sentences: Optional[Sequence[Sentence]] = None, task: str = "upos", *,
                 labels: Any = None, method: str = "probe", hooks: Any = None, l1: float = DEFAULT_L1,
                 l2: float = DEFAULT_L2, bins: int = 10, split: Sequence[float] = (0.8, 0.1, 0.1),
                 split_seed: int = 0, max_iter: int = 500, max_memory: int = DEFAULT_MAX_MEMORY,
                 progress: bool = False, **collect_options: Any) -> Result:
    """Rank neurons by how much they carry a per-word property: a :class:`~circuitlab.results.Result` with axes
    ``("layer", "neuron")`` holding each neuron's score (higher: more important), computed on the training split.

    Args:
        source: a model (or name) to collect activations from on ``sentences``, or
            :class:`~circuitlab.probing.activations.WordActivations`.
        task: ``"upos"``, ``"deprel"`` or ``"ent"``: the sentences' annotation each word is labelled with.
        labels: instead of ``task``, one label per word row of the activations (any labels a user has).
        method: ``"probe"`` (elastic-net probe weight mass, Dalvi et al.; score ``1 - entry mass``), ``"anova"``
            (F statistic) or ``"mi"`` (binned mutual information, nats); see the module docstring.
        hooks: neuron hooks (default every block's ``mlp.hook_post``; an int is that block's).
        l1, l2, max_iter: the elastic-net probe's penalties and iteration cap (``method="probe"``).
        bins: equal-width bins per neuron (``method="mi"``).
        split, split_seed: the sentence split; only ``"train"`` sentences are read.
        max_memory: bytes for column chunks (and, for a model, its forward passes).

    ``meta``: ``order`` (``[neurons, 2]``: hook index and neuron, best first), ``ranking`` (the same as
    ``"L3 N17"`` labels), ``hooks``, ``classes``, ``n_train``, and for ``"probe"`` the per-class orders
    (``per_class``: class -> labels, best first, neurons with non-zero weight only), ``class_scores``
    (``[class, layer, neuron]``), the probe's train accuracy and convergence.
    """
    split_seed = check_seed(split_seed, "split_seed")
    t0 = time.perf_counter()
    if method not in METHODS:
        raise InputError(f"method={shorten(method)}: use one of {', '.join(map(repr, METHODS))}.")
    max_memory = check_max_memory(max_memory)
    bins = check_count(bins, "bins", minimum=2)
    max_iter = check_count(max_iter, "max_iter")
    if not isinstance(source, WordActivations):
        collect_options["max_memory"] = max_memory
    acts = neuron_activations(source, sentences, hooks, progress=progress, **collect_options)
    values = word_labels(acts, task, labels)
    y, classes = encode(values)
    rows = train_rows(acts, split, split_seed)["train"]
    x, where = features(acts)
    x, y_train = x[rows], y[rows]
    layers = layer_labels(acts.hooks)
    meta: dict[str, Any] = {"method": method, "hooks": acts.hooks, "classes": classes, "n_train": int(rows.numel()),
                            "split": tuple(split), "split_seed": split_seed}
    if method == "probe":
        probe = elastic_net_probe(x, y_train, len(classes), l1=l1, l2=l2, max_iter=max_iter)
        entry = mass_entry(probe.net.weight.detach())  # [class, d]
        scores = 1 - entry.min(0).values
        class_scores = 1 - entry
        W = probe.net.weight.detach()
        per_class = {}
        for c, name in enumerate(classes):
            nz = (W[c] != 0).nonzero().flatten()
            o = nz[order_of(class_scores[c, nz])]
            per_class[str(name)] = neuron_names(where, layers, o)
        meta.update(per_class=per_class, class_scores=torch.stack([grid(s, where, len(acts.hooks))
                                                                  for s in class_scores]),
                    train_accuracy=probe.accuracy(x, y_train), nonzero=int((W != 0).any(0).sum()),
                    probe=probe.meta, l1=l1, l2=l2)
        metric = ("1 - the smallest cumulative weight-mass share at which the neuron enters some class's top "
                  "neurons (elastic-net probe, Dalvi et al. 2019)")
    elif method == "anova":
        scores = anova_f(x, y_train, len(classes))
        scores = torch.nan_to_num(scores, nan=0.0)
        metric = "one-way ANOVA F statistic across the classes"
    else:
        scores = binned_mutual_information(x, y_train, bins, len(classes), max_memory)
        meta["bins"] = bins
        metric = f"mutual information with the label (nats, {bins} equal-width bins)"
    order = order_of(scores)
    meta.update(order=where[order], ranking=neuron_names(where, layers, order), seconds=time.perf_counter() - t0)
    return Result(values=grid(scores.float(), where, len(acts.hooks)), axes=("layer", "neuron"),
                  labels={"layer": layers}, title=f"Neuron ranking ({method}, {task if labels is None else 'labels'})",
                  metric=metric, model=acts.model, task=task if labels is None else "user labels", meta=meta)


def max_correlation(a: Float[Tensor, "n da"], b: Float[Tensor, "n db"], max_memory: int = DEFAULT_MAX_MEMORY,
                    ) -> tuple[Float[Tensor, " da"], Int[Tensor, " da"], Float[Tensor, " da"]]:
    """For each column of ``a``: the largest ``|Pearson r|`` with any column of ``b``, the index of that column,
    and the signed ``r`` there. Constant columns (either side) correlate 0. ``[chunk, db]`` blocks of the
    correlation matrix are computed under ``max_memory``."""
    for name, x in (("a", a), ("b", b)):
        if not isinstance(x, Tensor) or x.dtype == torch.bool or x.is_complex():
            raise InputError(f"{name} must be a real [n, d] activation matrix (a tensor); got {shorten(x)}.")
        if x.ndim == 2 and x.shape[1] == 0:
            raise InputError(f"{name} has no columns (shape {tuple(x.shape)}); give at least one activation column.")
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
        raise InputError(f"activations must be [n, d] matrices over the same n rows; got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}.")
    if a.shape[0] < 2:
        raise InputError("a correlation needs at least two words in common; use more sentences.")

    def unit(x: Tensor) -> Tensor:
        x = x.double() - x.double().mean(0)
        norm = x.norm(dim=0)
        return torch.where(norm > 0, x / norm.clamp(min=1e-300), torch.zeros_like(x)).float()

    za, zb = unit(a), unit(b)
    best = torch.empty(a.shape[1])
    arg = torch.empty(a.shape[1], dtype=torch.long)
    signed = torch.empty(a.shape[1])
    step = max(1, check_max_memory(max_memory) // max(1, 8 * b.shape[1]))
    for lo in range(0, a.shape[1], step):
        r = za[:, lo:lo + step].T @ zb  # [chunk, db]
        m = r.abs().max(1)
        best[lo:lo + step], arg[lo:lo + step] = m.values, m.indices
        signed[lo:lo + step] = r.gather(1, m.indices[:, None]).squeeze(1)
    return best.clamp(max=1.0), arg, signed


def common_rows(acts: Sequence[WordActivations]) -> list[Int[Tensor, " common"]]:
    """Row indices of each activation set for the (sentence, word) pairs they all hold, in the same order: how two
    models' activations on the same sentences are paired word by word (:func:`correlation_ranking`)."""
    first = acts[0]
    for other in acts[1:]:
        if len(other.sentences) != len(first.sentences) or any(
                s.words != t.words for s, t in zip(first.sentences, other.sentences)):
            raise InputError("the activations come from different sentences; collect every model's activations on "
                             "the same sentences (the correlation pairs words by sentence and position).")
    keys = [dict(((int(s), int(w)), i) for i, (s, w) in enumerate(zip(a.sentence.tolist(), a.word.tolist())))
            for a in acts]
    common = sorted(set(keys[0]).intersection(*[set(k) for k in keys[1:]]))
    return [torch.tensor([k[key] for key in common], dtype=torch.long) for k in keys]


def correlation_ranking(source: Any, others: Any, sentences: Optional[Sequence[Sentence]] = None, *,
                        hooks: Any = None, other_hooks: Any = None, max_memory: int = DEFAULT_MAX_MEMORY,
                        progress: bool = False, **collect_options: Any) -> Result:
    """Bau et al.'s cross-model correlation ranking of ``source``'s neurons: for each, the largest ``|Pearson r|``
    with any neuron of another model over the same words (``MaxCorr``); a
    :class:`~circuitlab.results.Result` with axes ``("layer", "neuron")`` over ``source``'s neurons.

    Args:
        source: the model (or name) whose neurons are ranked, or its
            :class:`~circuitlab.probing.activations.WordActivations`.
        others: one other model (or name, or WordActivations), or a list of them (independently trained models
            of any architecture and tokenizer).
        sentences: the text all models read (needed unless every source is WordActivations).
        hooks, other_hooks: neuron hooks of ``source`` and of the others (default: every block's
            ``mlp.hook_post``; ``other_hooks`` applies to each other model).
        max_memory: bytes for a block of the correlation matrix (and for each model's forward passes).

    ``meta``: ``order`` and ``ranking`` (best first, as in :func:`rank_neurons`), ``min_corr`` (``[layer,
    neuron]``: the smallest over the other models of each one's best ``|r|``), ``best_match`` (per other model, a
    ``[layer, neuron, 2]`` tensor of the matching neuron's hook index and neuron), ``signed_r``, ``median``
    (the median ``MaxCorr``), ``n_words`` (the words all models aligned), ``other_models``, ``dead`` (constant
    neurons of ``source``).
    """
    t0 = time.perf_counter()
    max_memory = check_max_memory(max_memory)
    if not isinstance(others, (list, tuple)):
        others = [others]
    if not others:
        raise InputError("others: give at least one other model (or its WordActivations) to correlate with.")
    options = dict(collect_options, max_memory=max_memory)
    a = neuron_activations(source, sentences, hooks, progress=progress,
                           **({} if isinstance(source, WordActivations) else options))
    bs = [neuron_activations(o, sentences, other_hooks, progress=progress,
                             **({} if isinstance(o, WordActivations) else options)) for o in others]
    rows = common_rows([a, *bs])
    xa, where = features(a)
    xa = xa[rows[0]]
    per_model, matches, signs = [], [], []
    for b, r in progress_bar(list(zip(bs, rows[1:])), progress=progress and len(bs) > 1, desc="correlations",
                             unit="model"):
        xb, where_b = features(b)
        best, arg, signed = max_correlation(xa, xb[r], max_memory)
        per_model.append(best)
        matches.append(where_b[arg])
        signs.append(signed)
    stacked = torch.stack(per_model)  # [others, neurons]
    maxcorr, mincorr = stacked.max(0).values, stacked.min(0).values
    order = order_of(maxcorr)
    layers = layer_labels(a.hooks)
    H = len(a.hooks)
    dead = int((xa.std(0) == 0).sum())
    meta = {"order": where[order], "ranking": neuron_names(where, layers, order), "hooks": a.hooks,
            "min_corr": grid(mincorr, where, H),
            "best_match": [torch.stack([grid(m[:, 0].float(), where, H), grid(m[:, 1].float(), where, H)], -1)
                           for m in matches],
            "signed_r": [grid(s, where, H) for s in signs], "median": float(maxcorr.median()),
            "n_words": int(rows[0].numel()), "other_models": [b.model for b in bs],
            "other_hooks": [b.hooks for b in bs], "dead": dead, "seconds": time.perf_counter() - t0}
    return Result(values=grid(maxcorr, where, H), axes=("layer", "neuron"), labels={"layer": layers},
                  title="Cross-model correlation ranking (MaxCorr)",
                  metric=f"largest |Pearson r| with a neuron of {', '.join(b.model for b in bs)} over "
                         f"{int(rows[0].numel())} shared words",
                  model=a.model, task="cross-model correlation", meta=meta)
