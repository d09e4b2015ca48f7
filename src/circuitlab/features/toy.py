"""Toy models of superposition (Elhage et al. 2022, "Toy Models of Superposition", Anthropic).

**The model.** ``n`` features ``x`` (``n_features``) are embedded into ``m`` hidden dimensions (``n_hidden``) by
``h = W x`` and read back by the transpose, with a bias and a ReLU (the paper's "ReLU output model")::

    x' = ReLU(W^T W x + b)          W: [m, n], b: [n]

or without the ReLU (``kind="linear"``: ``x' = W^T W x + b``, the baseline that cannot use superposition: it
learns the top-``m`` principal features and drops the rest). Each feature is zero with probability ``S`` (the
sparsity) and otherwise uniform on ``[0, 1]``, independently; the loss weights each feature's squared error by its
importance ``I_i``::

    L = E_x sum_i I_i (x_i - x'_i)^2

**Training** follows the paper's setup (``W`` Xavier-normal, ``b = 0``, Adam on fresh batches) with these
choices of ours, made for CPU speed: the learning rate is 1e-2 (the paper: 1e-3) decayed to zero along a cosine
over ``steps`` (2,000 by default), so the loss settles and the final weights read cleanly; batches are 256
samples; and each sample is drawn *given that some feature is active*, the all-zero input entering the loss
exactly, by its probability ``S^n``::

    L = S^n L(0) + (1 - S^n) E[L(x) | x != 0]

This is the same expected loss (so the same optimum) with far less noise at high sparsity, where nearly every
plain sample is all zero. Many models are trained at once as one batched tensor: an *instance* axis carries one
model per (sparsity, importance) setting, each repeated ``restarts`` times from different initialisations, and
the restart with the lowest loss on a held-out batch is kept (a run can stall in a local minimum: a feature whose
ReLU is dead from the start never learns). Every random draw comes from one ``torch.Generator`` seeded by
``seed``: on one thread the same seed gives the same weights. The gradient is written out by hand (a few batched
matrix products; checked against finite differences in the tests).

**Analyses** of a trained :class:`ToyModel` (each a :class:`~circuitlab.results.Result` ``[instance, feature]``):

- :func:`feature_norms`: ``||W_i||``, how strongly feature ``i`` is represented (~1 represented, ~0 dropped);
- :func:`superposition`: ``sum_{j != i} (W^_i . W_j)^2`` with ``W^_i = W_i / ||W_i||``, how much of the other
  features lies along feature ``i``'s direction (0: a dedicated, orthogonal direction);
- :func:`dimensionality`: ``D_i = ||W_i||^2 / sum_j (W^_i . W_j)^2`` (the paper's "feature dimensionality": the
  fraction of a dimension feature ``i`` gets; 1 for a dedicated dimension, 1/2 for an antipodal pair, 2/5 for a
  pentagon, 0 for a dropped feature). For orthogonal columns ``sum_i D_i`` is the number of represented features;
- :func:`feature_angles`: for ``m = 2``, the angle of each column of ``W`` in the plane (the pentagon of 5
  features in 2 dimensions at high sparsity).

**Experiments**, each training its instances in one batch:

- :func:`phase_diagram`: ``n = 2`` features in ``m = 1`` dimension over the relative importance of the second
  ("extra") feature x sparsity, each cell classified by :func:`two_feature_phase`'s rule (below);
- :func:`sparsity_sweep`: ``n = 20``, ``m = 5``, importance ``0.7^i`` over sparsities: how many features are
  represented, and the dimensions per feature ``m / ||W||_F^2``.

**The phase rule** (:func:`two_feature_phase`, ``threshold`` ``tau = 0.5`` by default): the extra feature (the
second) is *not represented* if ``||W_2|| < tau``; it has a *dedicated dimension* if ``||W_2|| >= tau`` and the
first feature is not represented (``||W_1|| < tau``: with ``m = 1`` this is ``superposition_2 < tau^2``); it is in
*superposition* if both norms are ``>= tau`` (they share the one dimension, antipodally).

    from circuitlab.features import toy

    model = toy.train(5, 2, sparsity=0.9, importance=1.0)     # 5 features in 2 dimensions
    toy.feature_norms(model).values                           # [1, 5]: all near 1
    toy.feature_angles(model).values                          # 5 angles 72 degrees apart: a pentagon
    diagram = toy.phase_diagram()                             # .phase: Result [importance, sparsity] of codes
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Optional, Sequence, Union

import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuitlab.core import (DEFAULT_MAX_MEMORY, check_affordable, check_count, check_max_memory, check_number,
                             check_seed, progress_bar, row_chunks, shorten)
from circuitlab.errors import InputError, NonFiniteError
from circuitlab.results import Bundle, Result

#: the kinds of toy model: with the ReLU (superposition possible) and the linear baseline
KINDS = ("relu", "linear")
#: the phases of the extra feature in the two-feature diagram, by code (0, 1, 2)
PHASES = ("not represented", "dedicated dimension", "superposition")
#: the paper's sparsities for the n = 20, m = 5 sweep (its figure "as sparsity increases ...")
SWEEP_SPARSITIES = (0.0, 0.7, 0.9, 0.97, 0.99, 0.997, 0.999)
#: relative importances of the extra feature (0.1 to 10, log-spaced) and feature densities 1 - S (0.01 to 1,
#: log-spaced) of the default phase diagram, as in the paper's figure
PHASE_IMPORTANCES = tuple(round(10 ** (-1 + 2 * i / 8), 4) for i in range(9))
PHASE_SPARSITIES = tuple(round(1 - 10 ** (-2 + 2 * i / 8), 4) for i in reversed(range(9)))

Importance = Union[float, Sequence[float], Float[Tensor, "*instance feature"]]
Sparsity = Union[float, Sequence[float], Float[Tensor, " instance"]]


# ---------------------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True, repr=False)
class ToyModel:
    """Trained toy models, one per instance: ``x' = ReLU(W^T W x + b)`` (``kind="relu"``) or without the ReLU.

    Attributes:
        W: ``[instance, hidden, feature]``; column ``W[k, :, i]`` is feature ``i``'s direction in instance ``k``.
        b: ``[instance, feature]``.
        importance: ``[instance, feature]``, the loss weight of each feature.
        sparsity: ``[instance]``, the probability that a feature is zero.
        kind: ``"relu"`` or ``"linear"``.
        loss: ``[instance]``, the loss on a held-out batch at the end of training.
        settings: how it was trained (steps, batch size, lr, restarts, seed).
    """

    W: Float[Tensor, "instance hidden feature"]
    b: Float[Tensor, "instance feature"]
    importance: Float[Tensor, "instance feature"]
    sparsity: Float[Tensor, " instance"]
    kind: str = "relu"
    loss: Optional[Float[Tensor, " instance"]] = None
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def n_instances(self) -> int:
        return int(self.W.shape[0])

    @property
    def n_hidden(self) -> int:
        return int(self.W.shape[1])

    @property
    def n_features(self) -> int:
        return int(self.W.shape[2])

    def __call__(self, x: Float[Tensor, "batch instance feature"]) -> Float[Tensor, "batch instance feature"]:
        """The reconstruction ``x'`` of ``x`` (one row of features per instance)."""
        return forward(self.W, self.b, x, self.kind)

    def instance(self, k: int) -> "ToyModel":
        """Instance ``k`` alone, as a model of one instance."""
        k = _check_instance(self, k)
        sl = slice(k, k + 1)
        return replace(self, W=self.W[sl], b=self.b[sl], importance=self.importance[sl], sparsity=self.sparsity[sl],
                       loss=None if self.loss is None else self.loss[sl])

    def __repr__(self) -> str:
        return (f"ToyModel({self.kind}; {self.n_instances} instance(s) of {self.n_features} features in "
                f"{self.n_hidden} dimensions)")


def forward(W: Float[Tensor, "instance hidden feature"], b: Float[Tensor, "instance feature"],
            x: Float[Tensor, "batch instance feature"], kind: str = "relu") -> Float[Tensor, "batch instance feature"]:
    """``x' = ReLU(W^T W x + b)`` (``"relu"``) or ``W^T W x + b`` (``"linear"``), for every instance at once."""
    h = torch.einsum("khn,bkn->bkh", W, x)
    out = torch.einsum("khn,bkh->bkn", W, h) + b
    return torch.relu(out) if kind == "relu" else out


def weighted_loss(toy: ToyModel, x: Float[Tensor, "batch instance feature"], *, grad: bool = False
                  ) -> Union[Float[Tensor, " instance"], tuple[Float[Tensor, " instance"],
                                                             Float[Tensor, "instance hidden feature"],
                                                             Float[Tensor, "instance feature"]]]:
    """Each instance's loss on the batch ``x``: ``mean_batch sum_i I_i (x_i - x'_i)^2``; with ``grad``, the tuple
    ``(loss, dL/dW, dL/db)`` from the hand-written backward pass the trainer uses."""
    _check_toy(toy)
    x = _check_batch(toy, x).transpose(0, 1)
    none = torch.zeros(toy.n_instances, dtype=toy.W.dtype)
    loss, gW, gb = _expected_loss(toy.W, toy.b, toy.importance.to(toy.W.dtype), x, none, toy.kind, grad=grad)
    return (loss, gW, gb) if grad else loss


# ---------------------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------------------

def _check_toy(toy: Any, what: str = "toy") -> ToyModel:
    if not isinstance(toy, ToyModel):
        raise InputError(f"{what} must be a ToyModel (from circuitlab.features.toy.train); got "
                         f"{type(toy).__name__} {shorten(toy, 40)}.")
    if not bool(torch.isfinite(toy.W).all() and torch.isfinite(toy.b).all()):
        raise NonFiniteError(f"{what}'s weights W or b hold NaN or infinite values; train it again (a smaller lr "
                             "keeps Adam stable).")
    return toy


def _check_instance(toy: ToyModel, k: Any) -> int:
    n = toy.n_instances
    if isinstance(k, bool) or not isinstance(k, int) or not -n <= k < n:
        raise InputError(f"instance must be an integer in [-{n}, {n}) (the model has {n} instances); got "
                         f"{shorten(k, 30)}.")
    return k % n


def _check_batch(toy: ToyModel, x: Any) -> Tensor:
    shape = (toy.n_instances, toy.n_features)
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.ndim != 3 or tuple(x.shape[1:]) != shape:
        got = f"shape {tuple(x.shape)}" if isinstance(x, Tensor) else type(x).__name__
        raise InputError(f"x must be a float tensor [batch, instance, feature] = [batch, {shape[0]}, {shape[1]}]; "
                         f"got {got}.")
    return x.to(toy.W.dtype)


def check_sparsity(sparsity: Any, what: str = "sparsity") -> Float[Tensor, " instance"]:
    """One sparsity (a number in ``[0, 1)``) or a non-empty list of them (one instance each), as a float tensor.
    ``S = 1`` (every feature always zero) leaves nothing to learn and is refused."""
    if isinstance(sparsity, Tensor):
        if sparsity.ndim > 1 or not sparsity.is_floating_point() and sparsity.dtype not in (torch.int64, torch.int32):
            raise InputError(f"{what} must be a number in [0, 1) or a list of them; got a tensor of shape "
                             f"{tuple(sparsity.shape)} ({sparsity.dtype}).")
        sparsity = sparsity.tolist()
    items = [sparsity] if not isinstance(sparsity, (list, tuple)) else list(sparsity)
    if not items:
        raise InputError(f"{what} is empty; give a number in [0, 1) or a list of them, e.g. (0.0, 0.9, 0.99).")
    for s in items:
        check_number(s, what, low=0, high=1, high_open=True,
                     what="a number in [0, 1) (the probability that a feature is zero) or a list of them")
    return torch.tensor([float(s) for s in items], dtype=torch.float32)


def check_importance(importance: Any, n_features: int, what: str = "importance") -> Float[Tensor, "instance feature"]:
    """Feature importances as ``[instance, feature]``: a number ``r`` in ``(0, 1]`` gives ``r^i`` (the paper's
    decaying importance; ``1`` is uniform), a list of ``n_features`` positive numbers one set for every instance,
    a 2-D tensor or nested list ``[instance, feature]`` one set per instance."""
    if isinstance(importance, (int, float)) and not isinstance(importance, bool):
        r = check_number(importance, what, low=0, high=1, low_open=True,
                         what="a decay rate r in (0, 1] (importance r^i), or a list of positive importances")
        return (r ** torch.arange(n_features, dtype=torch.float64)).float()[None]
    if isinstance(importance, (list, tuple)):
        try:
            importance = torch.tensor(importance, dtype=torch.float64)
        except (TypeError, ValueError):
            raise InputError(f"{what} must be a number in (0, 1] or a list of {n_features} positive numbers; got "
                             f"{shorten(importance, 60)}.") from None
    if not isinstance(importance, Tensor) or importance.ndim not in (1, 2) or importance.shape[-1] != n_features:
        got = f"shape {tuple(importance.shape)}" if isinstance(importance, Tensor) else shorten(importance, 60)
        raise InputError(f"{what} must be a number in (0, 1], {n_features} positive numbers (one per feature) or "
                         f"a [instance, {n_features}] tensor; got {got}.")
    importance = importance.double()
    if not bool(torch.isfinite(importance).all()) or bool((importance <= 0).any()):
        raise InputError(f"{what} must hold finite positive numbers (a feature of importance 0 is never learned; "
                         f"leave it out); got {shorten(importance.tolist(), 60)}.")
    return importance.float().reshape(-1, n_features)


def _check_kind(kind: Any) -> str:
    if kind not in KINDS:
        raise InputError(f"kind={shorten(kind, 30)} is not a kind of toy model; use one of "
                         f"{', '.join(map(repr, KINDS))}.")
    return kind


def _instances(sparsity: Tensor, importance: Tensor) -> tuple[Tensor, Tensor]:
    """Sparsities and importances broadcast to one row per instance."""
    n_s, n_i = sparsity.shape[0], importance.shape[0]
    if n_s != n_i and 1 not in (n_s, n_i):
        raise InputError(f"sparsity gives {n_s} instances and importance {n_i}; give as many of each (one per "
                         "instance), or one of either for every instance.")
    n = max(n_s, n_i)
    return sparsity.expand(n).clone(), importance.expand(n, -1).clone()


# ---------------------------------------------------------------------------------------------------------
# Data and training
# ---------------------------------------------------------------------------------------------------------

def sample_features(n_features: int, sparsity: Sparsity, batch_size: int, *, seed: int = 0,
                    generator: Optional[torch.Generator] = None) -> Float[Tensor, "batch instance feature"]:
    """A batch of synthetic features, one row per instance: each feature independently zero with probability
    ``sparsity`` (of its instance), else uniform on ``[0, 1]``. ``generator`` (if given) is drawn from instead
    of a new one seeded by ``seed``."""
    n_features = check_count(n_features, "n_features")
    batch_size = check_count(batch_size, "batch_size")
    s = check_sparsity(sparsity)
    if generator is None:
        generator = torch.Generator().manual_seed(check_seed(seed))
    values = torch.rand(batch_size, s.shape[0], n_features, generator=generator)
    keep = torch.rand(batch_size, s.shape[0], n_features, generator=generator) >= s[None, :, None]
    return values * keep


class _ActiveSampler:
    """Samples ``[instance, batch, feature]`` of the features *given that at least one is active*: the first active
    feature ``k`` is drawn from its truncated geometric law ``P(k) = S^k (1 - S) / (1 - S^n)`` (by inverting its
    distribution function), the features before it are zero, those after it independently active with
    probability ``1 - S``, and every active feature uniform on ``[0, 1]``."""

    def __init__(self, n: int, s: Tensor, gen: torch.Generator):
        self.n, self.k, self.gen = n, s.shape[0], gen
        p = (1 - s.double())[:, None, None]
        self.p = p.float()
        self.none = s.double() ** n  # P(x = 0), per instance
        self.scale = (1 - self.none)[:, None, None]
        log_s = torch.log1p(-p.clamp(max=1 - 1e-12))  # log S (finite at S = 0, where k is always 0)
        self.log_s = torch.where(p >= 1, torch.full_like(log_s, -math.inf), log_s)
        self.idx = torch.arange(n, dtype=torch.float64)

    def __call__(self, batch: int) -> Tensor:
        u = torch.rand(self.k, batch, 1, generator=self.gen, dtype=torch.float64)
        first = torch.floor(torch.log1p(-u * self.scale) / self.log_s).clamp_(max=self.n - 1)
        later = torch.rand(self.k, batch, self.n, generator=self.gen) < self.p
        active = (self.idx == first) | ((self.idx > first) & later)
        return torch.rand(self.k, batch, self.n, generator=self.gen) * active


def _expected_loss(W: Tensor, b: Tensor, importance: Tensor, x_active: Tensor, none: Tensor, kind: str,
                   grad: bool = False) -> tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
    """Each instance's expected loss, split exactly on whether any feature is active: ``P(x = 0) L(0) + (1 -
    P(x = 0)) E[L(x) | x != 0]``, the second term estimated on ``x_active`` (``[instance, batch, feature]``, from
    :class:`_ActiveSampler`); ``none`` is ``P(x = 0)`` per instance. The same loss as on plain samples, with far
    less noise at high sparsity (where almost every plain sample is all zero).

    With ``grad``, also its gradients in ``W`` and ``b`` (summed over instances), written out by hand: one
    forward and one backward pass of a few batched matrix products (the test checks them against finite
    differences of a loss written in NumPy)."""
    batch = x_active.shape[1]
    none = none.to(W.dtype)
    zero_out = torch.relu(b) if kind == "relu" else b
    at_zero = (importance * zero_out ** 2).sum(-1)
    h = torch.bmm(x_active, W.transpose(1, 2))  # [instance, batch, hidden]
    z = torch.baddbmm(b[:, None, :], h, W)  # [instance, batch, feature]
    out = torch.relu(z) if kind == "relu" else z
    err = out - x_active
    active = (importance[:, None, :] * err ** 2).sum(-1).mean(-1)
    loss = none * at_zero + (1 - none) * active
    if not grad:
        return loss, None, None
    g = err.mul_(importance[:, None, :] * (2 * (1 - none) / batch)[:, None, None])  # dL/d out
    if kind == "relu":
        g = g.mul_(z > 0)  # dL/dz
    gb = g.sum(1) + 2 * none[:, None] * importance * zero_out
    gW = torch.bmm(h.transpose(1, 2), g) + torch.bmm(torch.bmm(g, W.transpose(1, 2)).transpose(1, 2), x_active)
    return loss, gW, gb


def train(n_features: int, n_hidden: int, sparsity: Sparsity, importance: Importance, *,
          kind: str = "relu", steps: int = 2000, batch_size: int = 256, lr: float = 1e-2, restarts: int = 5,
          seed: int = 0, max_memory: int = DEFAULT_MAX_MEMORY, progress: bool = False) -> ToyModel:
    """Train toy models ``x' = ReLU(W^T W x + b)`` (or linear) on sparse synthetic features, all at once.

    Args:
        n_features: ``n``, the number of features.
        n_hidden: ``m``, the hidden dimensions (``m < n`` for superposition to matter).
        sparsity: the probability ``S`` that a feature is zero: one number, or a list (one instance each).
        importance: ``r`` in ``(0, 1]`` for ``I_i = r^i``, or ``n`` importances, or ``[instance, n]``; broadcast
            against ``sparsity`` (one of either for every instance, or as many of each).
        kind: ``"relu"`` (the ReLU output model) or ``"linear"`` (the baseline).
        steps, batch_size, lr: Adam on fresh batches (drawn given that a feature is active; see the module
            docstring), the learning rate decayed along a cosine to 0.
        restarts: each instance trained this many times from different initialisations; the one with the lowest
            loss on a held-out batch (``4 * batch_size`` samples) is kept (5 by default: see
            :func:`phase_diagram` for how often a single run stalls).
        seed: every draw (initialisation, batches) comes from one generator seeded by it.
        max_memory: the bytes one batch's activations and gradients may take; a larger batch is cut into
            chunks whose gradients add up to the whole batch's.
        progress: a progress bar over the steps.

    Training runs on one thread (``torch.set_num_threads(1)``, restored afterwards): tensors this small gain
    nothing from more, and one thread makes a seed's weights the same on every machine's thread count.

    Returns:
        a :class:`ToyModel` with one instance per setting (``restarts`` is resolved: the best of each is kept).
    """
    n_features = check_count(n_features, "n_features")
    n_hidden = check_count(n_hidden, "n_hidden")
    s = check_sparsity(sparsity)
    imp = check_importance(importance, n_features)
    s, imp = _instances(s, imp)
    kind = _check_kind(kind)
    steps = check_count(steps, "steps")
    batch_size = check_count(batch_size, "batch_size")
    lr = check_number(lr, "lr", low=0, low_open=True, what="a positive learning rate, e.g. 1e-3")
    restarts = check_count(restarts, "restarts")
    seed = check_seed(seed)
    max_memory = check_max_memory(max_memory)

    n_settings = s.shape[0]
    k = n_settings * restarts  # instance k is setting k % n_settings, restart k // n_settings
    s_all, imp_all = s.repeat(restarts), imp.repeat(restarts, 1)
    # W, b, Adam's two moments, gradients: 5 copies of the parameters; per sample: x, its mask, h, out, err + grads
    check_affordable(4 * 5 * k * (n_hidden + 1) * n_features, "train's parameters",
                     "use fewer instances (sparsities x importances x restarts) or features")
    per_row = 4 * 8 * k * (n_features + n_hidden)
    chunks = row_chunks(batch_size, per_row, max_memory)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tensors this small gain nothing from threads, and lose much to a busy machine
    try:
        return _train(n_features, n_hidden, s, imp, s_all, imp_all, kind, steps, batch_size, lr, restarts, seed,
                      chunks, per_row, max_memory, progress)
    finally:
        torch.set_num_threads(threads)


def _train(n_features: int, n_hidden: int, s: Tensor, imp: Tensor, s_all: Tensor, imp_all: Tensor, kind: str,
           steps: int, batch_size: int, lr: float, restarts: int, seed: int, chunks: list, per_row: int,
           max_memory: int, progress: bool) -> ToyModel:
    n_settings, k = s.shape[0], s_all.shape[0]
    gen = torch.Generator().manual_seed(seed)
    W = torch.randn(k, n_hidden, n_features, generator=gen) * math.sqrt(2.0 / (n_hidden + n_features))
    b = torch.zeros(k, n_features)
    sampler = _ActiveSampler(n_features, s_all, gen)
    opt = torch.optim.Adam([W, b], lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + math.cos(math.pi * t / steps)))
    for _ in progress_bar(range(steps), progress=progress, desc="toy models", unit="step"):
        gW, gb = torch.zeros_like(W), torch.zeros_like(b)
        for sl in chunks:
            rows = sl.stop - sl.start
            _, dW, db = _expected_loss(W, b, imp_all, sampler(rows), sampler.none, kind, grad=True)
            gW.add_(dW, alpha=rows / batch_size)
            gb.add_(db, alpha=rows / batch_size)
        W.grad, b.grad = gW, gb
        opt.step()
        sched.step()
    if not bool(torch.isfinite(W).all() and torch.isfinite(b).all()):
        raise NonFiniteError(f"training diverged: the weights hold NaN or inf after {steps} steps at lr={lr:g}; use a "
                             "smaller lr.")
    # the held-out loss, on 4 batches' worth of samples (chunked like the training batches)
    parts = [(sl.stop - sl.start) * _expected_loss(W, b, imp_all, sampler(sl.stop - sl.start), sampler.none, kind)[0]
             for sl in row_chunks(4 * batch_size, per_row, max_memory)]
    final = torch.stack(parts).sum(0) / (4 * batch_size)
    best = final.reshape(restarts, n_settings).argmin(0) * n_settings + torch.arange(n_settings)
    settings = dict(steps=steps, batch_size=batch_size, lr=lr, restarts=restarts, seed=seed,
                    restart_losses=final.reshape(restarts, n_settings).T.tolist())
    return ToyModel(W=W[best].clone(), b=b[best].clone(), importance=imp, sparsity=s, kind=kind,
                    loss=final[best].clone(), settings=settings)


# ---------------------------------------------------------------------------------------------------------
# Analyses of a trained model
# ---------------------------------------------------------------------------------------------------------

def _labels(toy: ToyModel) -> dict[str, list[str]]:
    return {"instance": [f"S={float(s):g}" for s in toy.sparsity], "feature": [f"f{i}" for i in range(toy.n_features)]}


def _result(toy: ToyModel, values: Tensor, title: str, metric: str, **meta: Any) -> Result:
    return Result(values=values, axes=("instance", "feature"), labels=_labels(toy), title=title, metric=metric,
                  model=f"toy {toy.kind} model, {toy.n_features} features in {toy.n_hidden} dimensions",
                  task="sparse uniform features", meta={"sparsity": toy.sparsity.tolist(), **meta})


def feature_norms(toy: ToyModel) -> Result:
    """``||W_i||`` for each instance and feature (``[instance, feature]``): ~1 where feature ``i`` is represented,
    ~0 where it is dropped."""
    toy = _check_toy(toy)
    return _result(toy, toy.W.norm(dim=1), "Feature norms", "||W_i||")


def _overlaps(W: Tensor) -> tuple[Tensor, Tensor]:
    """``(W^_i . W_j)^2`` ``[instance, i, j]`` and the norms ``[instance, feature]``; a zero column has no
    direction and its row is 0."""
    norms = W.norm(dim=1)
    unit = W / norms.clamp_min(1e-12)[:, None, :]
    dots = torch.einsum("khi,khj->kij", unit, W)
    dots = torch.where(norms[:, :, None] > 0, dots, torch.zeros_like(dots))
    return dots ** 2, norms


def superposition(toy: ToyModel) -> Result:
    """``sum_{j != i} (W^_i . W_j)^2`` for each instance and feature (``[instance, feature]``): how much of the
    other features' directions lies along feature ``i``'s (0: ``i`` has a direction of its own)."""
    toy = _check_toy(toy)
    sq, _ = _overlaps(toy.W)
    off = sq.sum(-1) - torch.diagonal(sq, dim1=1, dim2=2)
    return _result(toy, off, "Superposition", "sum_{j!=i} (W^_i . W_j)^2")


def dimensionality(toy: ToyModel) -> Result:
    """Feature dimensionality ``D_i = ||W_i||^2 / sum_j (W^_i . W_j)^2`` (``[instance, feature]``; Elhage et al.
    2022, section "Feature Dimensionality"): the fraction of a dimension feature ``i`` occupies: 1 alone in its
    dimension, 1/2 in an antipodal pair, 2/5 in a pentagon, 0 where not represented (a zero column, by
    convention). ``meta["dimensions_per_feature"]`` holds ``m / ||W||_F^2`` per instance (the paper's ``D*``)."""
    toy = _check_toy(toy)
    sq, norms = _overlaps(toy.W)
    denom = sq.sum(-1)
    d = torch.where(denom > 0, norms ** 2 / denom.clamp_min(1e-30), torch.zeros_like(denom))
    frob = (toy.W ** 2).sum((1, 2))
    return _result(toy, d, "Feature dimensionality", "D_i = ||W_i||^2 / sum_j (W^_i . W_j)^2",
                   dimensions_per_feature=(toy.n_hidden / frob.clamp_min(1e-30)).tolist())


def feature_angles(toy: ToyModel) -> Result:
    """The angle of each feature's direction ``W_i`` in the plane, in degrees ``[0, 360)``
    (``[instance, feature]``), for models with ``n_hidden = 2``: 5 features at high sparsity sit 72 degrees apart
    (a regular pentagon). ``meta["norms"]`` holds ``||W_i||`` (the angle of a dropped feature means little)."""
    toy = _check_toy(toy)
    if toy.n_hidden != 2:
        raise InputError(f"toy has {toy.n_hidden} hidden dimensions; feature_angles reads angles in a plane and "
                         "needs n_hidden = 2 (use dimensionality for other widths).")
    angles = torch.rad2deg(torch.atan2(toy.W[:, 1], toy.W[:, 0])) % 360
    return _result(toy, angles, "Feature angles", "degrees", norms=toy.W.norm(dim=1).tolist())


def angle_gaps(angles: Float[Tensor, " feature"]) -> Float[Tensor, " feature"]:
    """The gaps in degrees between consecutive angles around the circle (sorted, the last gap wrapping round to
    the first): ``360 / n`` each for a regular polygon."""
    try:
        a = torch.as_tensor(angles, dtype=torch.float64).flatten().sort().values
    except (TypeError, ValueError, RuntimeError):
        raise InputError(f"angles must be numbers (degrees), e.g. feature_angles(toy).values[0]; got "
                         f"{shorten(angles, 60)}.") from None
    if a.numel() == 0 or not bool(torch.isfinite(a).all()):
        raise InputError(f"angles must be a non-empty list of finite numbers (degrees); got {shorten(angles, 60)}.")
    return torch.diff(torch.cat([a, a[:1] + 360]))


def two_feature_phase(toy: ToyModel, threshold: float = 0.5) -> Int[Tensor, " instance"]:
    """The phase of the second ("extra") feature in each instance of a model of ``n = 2`` features in ``m = 1``
    dimension, as a code into :data:`PHASES`: 0 *not represented* (``||W_2|| < threshold``), 1 *dedicated
    dimension* (``||W_2|| >= threshold`` and ``||W_1|| < threshold``), 2 *superposition* (both ``>=
    threshold``)."""
    toy = _check_toy(toy)
    if (toy.n_features, toy.n_hidden) != (2, 1):
        raise InputError(f"toy has {toy.n_features} features in {toy.n_hidden} dimensions; the two-feature phase "
                         "is defined for n_features = 2, n_hidden = 1.")
    threshold = check_number(threshold, "threshold", low=0, low_open=True)
    norms = toy.W.norm(dim=1)
    extra, first = norms[:, 1] >= threshold, norms[:, 0] >= threshold
    return torch.where(~extra, 0, torch.where(first, 2, 1))


# ---------------------------------------------------------------------------------------------------------
# Experiments
# ---------------------------------------------------------------------------------------------------------

@dataclass(repr=False)
class PhaseDiagram(Bundle):
    """The two-feature phase diagram: ``phase`` (codes into :data:`PHASES`, ``[importance, sparsity]``), the
    norms of both features (``[importance, sparsity, feature]``) and the trained models."""

    phase: Result
    norms: Result
    toy: ToyModel

    def counts(self) -> dict[str, int]:
        """How many cells each phase holds."""
        return {name: int((self.phase.values == i).sum()) for i, name in enumerate(PHASES)}


def _check_values(values: Any, what: str, check) -> list[float]:
    if isinstance(values, Tensor):
        values = values.tolist()
    if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple)) or not values:
        raise InputError(f"{what} must be a non-empty list of numbers; got {shorten(values, 60)}.")
    out = [check(v) for v in values]
    if len(set(out)) != len(out):
        raise InputError(f"{what} repeats a value ({shorten(values, 60)}); give each once.")
    return out


def phase_diagram(relative_importance: Sequence[float] = PHASE_IMPORTANCES,
                  sparsity_grid: Sequence[float] = PHASE_SPARSITIES, *, threshold: float = 0.5, steps: int = 2000,
                  batch_size: int = 256, lr: float = 1e-2, restarts: int = 5, seed: int = 0,
                  max_memory: int = DEFAULT_MAX_MEMORY, progress: bool = False) -> PhaseDiagram:
    """Elhage et al.'s two-feature phase diagram: ``n = 2`` features in ``m = 1`` dimension, the first of
    importance 1 and the second ("extra") of importance ``r`` for each ``r`` in ``relative_importance``, at each
    sparsity of ``sparsity_grid``; one ReLU model per cell (all cells, times ``restarts``, trained in one batch by
    :func:`train`), classified by :func:`two_feature_phase` at ``threshold``. ``restarts`` is 5 by default:
    at high sparsity and a low relative importance about half the runs stall with the extra feature's ReLU dead
    (its bias at the feature's mean, its weight 0), a local minimum whose loss the antipodal solution beats; the
    best of 5 by held-out loss finds the better one in all but ~3% of cells.

    The paper's figure spans relative importance 0.1 to 10 and feature density ``1 - S`` 0.01 to 1 (both log
    scales): dense features give the extra feature's dimension to the more important feature (*not represented*
    for ``r < 1``, *dedicated dimension* for ``r > 1``); sparse ones store both, antipodally (*superposition*).
    """
    rel = _check_values(relative_importance, "relative_importance",
                        lambda v: check_number(v, "relative_importance", low=0, low_open=True))
    sps = _check_values(sparsity_grid, "sparsity_grid",
                        lambda v: check_number(v, "sparsity_grid", low=0, high=1, high_open=True))
    threshold = check_number(threshold, "threshold", low=0, low_open=True)
    cells = [(r, s) for r in rel for s in sps]
    imp = torch.tensor([[1.0, r] for r, _ in cells])
    toy = train(2, 1, [s for _, s in cells], imp, steps=steps, batch_size=batch_size, lr=lr, restarts=restarts,
                seed=seed, max_memory=max_memory, progress=progress)
    codes = two_feature_phase(toy, threshold).reshape(len(rel), len(sps))
    labels = {"importance": [f"{r:g}" for r in rel], "sparsity": [f"{s:g}" for s in sps]}
    name = "toy ReLU model, 2 features in 1 dimension"
    meta = dict(phases=list(PHASES), threshold=threshold, relative_importance=rel, sparsity_grid=sps,
                rule=f"extra feature: not represented if ||W_2|| < {threshold:g}; dedicated dimension if ||W_2|| >= "
                     f"{threshold:g} and ||W_1|| < {threshold:g}; superposition if both >= {threshold:g}")
    phase = Result(values=codes, axes=("importance", "sparsity"), labels=labels, title="Two-feature phase diagram",
                   metric="phase of the extra feature (0 not represented, 1 dedicated, 2 superposition)",
                   model=name, task="sparse uniform features", meta=meta)
    norms = Result(values=toy.W.norm(dim=1).reshape(len(rel), len(sps), 2), axes=("importance", "sparsity", "feature"),
                   labels={**labels, "feature": ["f0", "extra f1"]}, title="Feature norms", metric="||W_i||",
                   model=name, task="sparse uniform features")
    return PhaseDiagram(phase=phase, norms=norms, toy=toy)


@dataclass(repr=False)
class SparsitySweep(Bundle):
    """Superposition as sparsity rises: per sparsity the feature norms and superposition (``[sparsity,
    feature]``), how many features are represented (``||W_i|| >= threshold``) and the dimensions per feature
    ``m / ||W||_F^2`` (``[sparsity]``), and the trained models."""

    norms: Result
    superposition: Result
    represented: Result
    dimensions_per_feature: Result
    toy: ToyModel


def sparsity_sweep(n_features: int = 20, n_hidden: int = 5, sparsities: Sequence[float] = SWEEP_SPARSITIES,
                   importance: Importance = 0.7, *, threshold: float = 0.5, kind: str = "relu", steps: int = 2000,
                   batch_size: int = 256, lr: float = 1e-2, restarts: int = 5, seed: int = 0,
                   max_memory: int = DEFAULT_MAX_MEMORY, progress: bool = False) -> SparsitySweep:
    """Train one model per sparsity (Elhage et al.'s ``n = 20``, ``m = 5``, ``I_i = 0.7^i`` by default) and read
    how many features it represents (``||W_i|| >= threshold``), how much they overlap, and ``m / ||W||_F^2``
    (1 without superposition, falling below 1 as features share dimensions)."""
    sps = _check_values(sparsities, "sparsities",
                        lambda v: check_number(v, "sparsities", low=0, high=1, high_open=True))
    threshold = check_number(threshold, "threshold", low=0, low_open=True)
    toy = train(n_features, n_hidden, sps, importance, kind=kind, steps=steps, batch_size=batch_size, lr=lr,
                restarts=restarts, seed=seed, max_memory=max_memory, progress=progress)
    norms, sup, dims = feature_norms(toy), superposition(toy), dimensionality(toy)
    labels = {"sparsity": [f"{s:g}" for s in sps]}
    count = (norms.values >= threshold).sum(-1)
    name = norms.model

    def per_sparsity(r: Result) -> Result:
        return Result(values=r.values, axes=("sparsity", "feature"), labels={**labels, "feature": r.labels["feature"]},
                      title=r.title, metric=r.metric, model=name, task=r.task)

    represented = Result(values=count, axes=("sparsity",), labels=labels, title="Features represented",
                         metric=f"features with ||W_i|| >= {threshold:g}", model=name, task=norms.task,
                         meta={"threshold": threshold, "n_hidden": n_hidden})
    dpf = Result(values=torch.tensor(dims.meta["dimensions_per_feature"]), axes=("sparsity",), labels=labels,
                 title="Dimensions per feature", metric="m / ||W||_F^2", model=name, task=norms.task)
    return SparsitySweep(norms=per_sparsity(norms), superposition=per_sparsity(sup), represented=represented,
                         dimensions_per_feature=dpf, toy=toy)


__all__ = ["KINDS", "PHASES", "PHASE_IMPORTANCES", "PHASE_SPARSITIES", "SWEEP_SPARSITIES", "PhaseDiagram",
           "SparsitySweep", "ToyModel", "angle_gaps", "check_importance", "check_sparsity", "dimensionality",
           "feature_angles", "feature_norms", "forward", "phase_diagram", "sample_features", "sparsity_sweep",
           "superposition", "train", "two_feature_phase", "weighted_loss"]
