"""Gaussian probing (Torroba Hennigen et al. 2020): which few neurons carry a property, chosen greedily under a
Gaussian class-conditional model, against the linear probe's ranking, with selectivity (Antverg & Belinkov 2022).

**The probe** (:class:`GaussianProbe`): per class ``c``, a prior ``pi_c`` (training frequencies), a mean ``mu_c`` and
a covariance ``Sigma_c`` of the selected neurons' activations; a word is labelled ``argmax_c log pi_c + log
N(x; mu_c, Sigma_c)`` (quadratic discriminant analysis). Torroba Hennigen et al. put a conjugate prior on each
class's Gaussian; here the covariance is shrunk instead, ``(1 - shrinkage) * S_c + shrinkage * I`` with ``S_c``
the unbiased sample covariance of the standardised activations (scikit-learn's ``QuadraticDiscriminantAnalysis``
with ``reg_param=shrinkage`` computes the same), which keeps a class with few words well-posed.

**Greedy selection** (:func:`greedy_neurons`): start from no neuron; at each step add the neuron whose addition
gives the highest mean log-probability of the true labels on the training split, ``log p(y | x_S)`` under the
probe fitted on ``S`` (the decomposable objective the paper's Gaussian makes cheap: a fit is means and small
covariances); stop at ``k`` neurons.

**The comparison** (:func:`gaussian_sweep`): for each subset size ``1..k``, the test accuracy of the Gaussian
probe on the greedy subset and on the linear probe's top neurons (a multinomial logistic probe on all neurons,
:func:`circuitlab.probing.train_probe`; neurons ranked by the L2 norm of their weight column over classes, on
standardised features: the ranking Dalvi et al. 2019 and Antverg & Belinkov compare), each with the **control
task** (Hewitt & Liang word-type labels, :func:`circuitlab.probing.control_labels`) run through the same selection,
and **selectivity** = accuracy - control accuracy. Antverg & Belinkov's point: a ranking that reaches high accuracy
with few neurons may do so by memorising word identity, which the control exposes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuitlab.core import check_count, check_number, check_seed, progress_bar, shorten
from circuitlab.errors import InputError
from circuitlab.probing.classifier import TASKS, control_labels, row_split_record, split_rows, sentence_keys, \
    train_probe, word_activations
from circuitlab.results import Result
from circuitlab.tasks.sentences import Sentence

RANKINGS = ("gaussian", "linear")
MEASURES = ("accuracy", "control", "selectivity")


@dataclass
class GaussianProbe:
    """A fitted Gaussian class-conditional probe on some neurons (see the module docstring)."""

    neurons: list[int]
    log_prior: Float[Tensor, " classes"]
    means: Float[Tensor, "classes k"]
    chol: Float[Tensor, "classes k k"]  # Cholesky factors of the shrunk covariances

    @classmethod
    def fit(cls, x: Float[Tensor, "n d"], y: Int[Tensor, " n"], n_classes: int, neurons: Sequence[int],
            shrinkage: float = 0.1) -> "GaussianProbe":
        """Fit on the columns ``neurons`` of ``x`` (rows: words; ``y`` in ``[0, n_classes)``); a class without a
        training word gets prior 0 (log -inf) and never wins."""
        neurons = list(neurons)
        xs = x[:, neurons].double()
        k = len(neurons)
        counts = torch.bincount(y, minlength=n_classes).double()
        log_prior = (counts / counts.sum()).log()
        means = torch.zeros(n_classes, k, dtype=torch.float64)
        chol = torch.eye(k, dtype=torch.float64).repeat(n_classes, 1, 1)
        eye = torch.eye(k, dtype=torch.float64)
        for c in range(n_classes):
            rows = xs[y == c]
            if len(rows) == 0:
                continue
            means[c] = rows.mean(0)
            centred = rows - means[c]
            cov = centred.T @ centred / max(len(rows) - 1, 1) if len(rows) > 1 else torch.zeros(k, k,
                                                                                             dtype=torch.float64)
            chol[c] = torch.linalg.cholesky((1 - shrinkage) * cov + shrinkage * eye)
        return cls(neurons, log_prior, means, chol)

    def joint_log_likelihood(self, x: Float[Tensor, "n d"]) -> Float[Tensor, "n classes"]:
        """``log pi_c + log N(x_S; mu_c, Sigma_c)`` for every row and class."""
        xs = x[:, self.neurons].double()
        k = len(self.neurons)
        diff = xs[None] - self.means[:, None]  # [classes, n, k]
        z = torch.linalg.solve_triangular(self.chol, diff.transpose(1, 2), upper=False)  # [classes, k, n]
        maha = (z ** 2).sum(1)  # [classes, n]
        logdet = 2 * torch.diagonal(self.chol, dim1=1, dim2=2).log().sum(1)  # [classes]
        out = self.log_prior[:, None] - 0.5 * (maha + logdet[:, None] + k * math.log(2 * math.pi))
        return out.T

    def log_proba(self, x: Float[Tensor, "n d"]) -> Float[Tensor, "n classes"]:
        """``log p(c | x_S)``: the joint log-likelihood normalised over classes."""
        j = self.joint_log_likelihood(x)
        return j - torch.logsumexp(j, 1, keepdim=True)

    def predict(self, x: Float[Tensor, "n d"]) -> Int[Tensor, " n"]:
        return self.joint_log_likelihood(x).argmax(1)

    def accuracy(self, x: Float[Tensor, "n d"], y: Int[Tensor, " n"]) -> float:
        return float((self.predict(x) == y).double().mean())


def greedy_neurons(x: Float[Tensor, "n d"], y: Int[Tensor, " n"], n_classes: int, k: int, *,
                   shrinkage: float = 0.1, progress: bool = False) -> list[int]:
    """``k`` neurons (columns of ``x``) chosen greedily: each step adds the one that maximises the mean
    ``log p(y | x_S)`` of the rows under :class:`GaussianProbe` fitted on them (ties: the lowest index)."""
    k = check_count(k, "k")
    if k > x.shape[1]:
        raise InputError(f"k={k} neurons asked for, but the activations have {x.shape[1]}; give k <= {x.shape[1]}.")
    chosen: list[int] = []
    for _ in progress_bar(range(k), progress=progress, desc="greedy neurons", unit="neuron"):
        best, best_score = -1, -math.inf
        for j in range(x.shape[1]):
            if j in chosen:
                continue
            probe = GaussianProbe.fit(x, y, n_classes, chosen + [j], shrinkage)
            score = float(probe.log_proba(x).gather(1, y[:, None]).mean())
            if score > best_score:
                best, best_score = j, score
        chosen.append(best)
    return chosen


def linear_ranking(x: Float[Tensor, "n d"], y: Int[Tensor, " n"], n_classes: int, *,
                   weight_decay: Optional[float] = None, seed: int = 0) -> list[int]:
    """Neurons ranked by the L2 norm, over classes, of a linear probe's weight on each (standardised) neuron."""
    probe = train_probe(x, y, n_classes, "linear", seed=seed, weight_decay=weight_decay)
    norms = probe.net.weight.detach().norm(dim=0)
    return [int(i) for i in torch.argsort(norms, descending=True, stable=True)]


def gaussian_sweep(source: Any, sentences: Optional[Sequence[Sentence]] = None, task: str = "upos", *,
                   hook: Any = None, k: int = 10, shrinkage: float = 0.1, control: bool = True,
                   max_train: Optional[int] = 4000, split: Sequence[float] = (0.8, 0.1, 0.1), split_seed: int = 0,
                   seed: int = 0, progress: bool = False, **collect_options: Any) -> Result:
    """Test accuracy of the Gaussian probe on ``1..k`` neurons chosen greedily (``"gaussian"``) and by the linear
    probe's weights (``"linear"``), with control accuracy and selectivity (see the module docstring): a
    :class:`~circuitlab.results.Result` with axes ``("ranking", "k", "measure")``.

    ``source``: word activations or a model to collect them from on ``sentences`` at ``hook`` (one hook; default
    the residual stream after the middle block). ``task``: ``"upos"``, ``"deprel"`` or ``"ent"``. ``max_train``:
    the greedy search and both fits read at most this many training words (drawn with ``seed``; ``None``: all),
    since each step fits one probe per neuron. ``meta`` holds the chosen neurons per ranking and label set.
    """
    t0 = time.perf_counter()
    if task not in TASKS:
        raise InputError(f"task={shorten(task)}: token-level tasks are {', '.join(map(repr, TASKS))}.")
    k = check_count(k, "k")
    shrinkage = check_number(shrinkage, "shrinkage", low=0, high=1, low_open=True)
    split_seed, seed = check_seed(split_seed, "split_seed"), check_seed(seed)
    if max_train is not None:
        max_train = check_count(max_train, "max_train", minimum=2)
    if hook is None and not hasattr(source, "acts"):
        from circuitlab.models.loading import as_any_model

        source = as_any_model(source)
        hook = f"blocks.{max(0, source.cfg.n_layers // 2 - 1)}.hook_resid_post"
    if isinstance(hook, (list, tuple)):
        raise InputError(f"hook={shorten(hook)}: gaussian_sweep reads one hook; give one name or layer.")
    acts = word_activations(source, sentences, None if hook is None else [hook], progress, collect_options)
    hook = acts.hooks[0]
    x_all = acts[hook].float()
    if k > x_all.shape[1]:
        raise InputError(f"k={k} neurons asked for, but {hook} has {x_all.shape[1]}; give k <= {x_all.shape[1]}.")
    labels, words = acts.labels(task), acts.labels("word")
    classes = sorted(set(labels), key=str)
    if len(classes) < 2:
        raise InputError(f"task {shorten(task)}: every word has one label; a probe needs two labels or more.")
    index = {c: i for i, c in enumerate(classes)}
    rows, by_sentence = split_rows(acts.sentence, len(acts.sentences), split, split_seed, keys=sentence_keys(acts))
    train, test = rows["train"], rows["test"]
    if max_train is not None and len(train) > max_train:
        pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:max_train]
        train = train[pick.sort().values]
    mean, std = x_all[train].mean(0), x_all[train].std(0).clamp(min=1e-6)
    x = (x_all - mean) / std
    label_sets = {"accuracy": torch.tensor([index[c] for c in labels])}
    if control:
        label_sets["control"] = torch.tensor([index[c] for c in control_labels(words, labels, seed)])
    out = torch.full((len(RANKINGS), k, len(MEASURES)), float("nan"))
    chosen: dict[str, dict[str, list[int]]] = {r: {} for r in RANKINGS}
    for m, (name, y) in enumerate(label_sets.items()):
        ranked = {"gaussian": greedy_neurons(x[train], y[train], len(classes), k, shrinkage=shrinkage,
                                             progress=progress),
                  "linear": linear_ranking(x[train], y[train], len(classes), seed=seed)[:k]}
        for r, ranking in enumerate(RANKINGS):
            chosen[ranking][name] = ranked[ranking]
            for size in range(1, k + 1):
                probe = GaussianProbe.fit(x[train], y[train], len(classes), ranked[ranking][:size], shrinkage)
                out[r, size - 1, m] = probe.accuracy(x[test], y[test])
    out[:, :, 2] = out[:, :, 0] - out[:, :, 1]
    meta = {"neurons": chosen, "hook": hook, "classes": classes, "shrinkage": shrinkage, "n_train": len(train),
            "n_test": len(test), "seed": seed, "split_seed": split_seed,
            "data_split": row_split_record(acts, by_sentence),  # as drawn; the dev sentences go unused here
            "seconds": time.perf_counter() - t0}
    return Result(values=out, axes=("ranking", "k", "measure"),
                  labels={"ranking": list(RANKINGS), "k": [str(i) for i in range(1, k + 1)],
                          "measure": list(MEASURES)},
                  title=f"Gaussian probe on k neurons ({task}, {hook})",
                  metric="test accuracy of the Gaussian probe on the first k neurons of each ranking; control: "
                         "word-type control task; selectivity = accuracy - control",
                  model=acts.model, task=task, meta=meta)


__all__ = ["GaussianProbe", "RANKINGS", "greedy_neurons", "linear_ranking", "gaussian_sweep"]
