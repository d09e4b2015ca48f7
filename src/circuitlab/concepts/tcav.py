"""Testing with concept activation vectors (TCAV; Kim et al. 2018, "Interpretability Beyond Feature Attribution"),
for text: does a human concept ("positive adjectives") push a model's class score up?

1. **Concept activations.** Each text of a concept (e.g. sentences full of positive adjectives) and each text of
   a set of random counterexamples runs through the model; its activation at a hook (``[pos, d]``) is pooled
   into one vector: ``"mean"`` over the text's own tokens (the BOS token, where the model prepends one, is left
   out: its activation is the same for every text) or ``"last"`` (the last token) (:func:`pooled_activations`).
2. **The CAV.** A linear classifier (L2-regularised logistic regression, :func:`logistic_regression`) separates
   the concept's vectors from the random ones; its unit normal, pointing towards the concept, is the concept
   activation vector ``v`` (:func:`train_cav`).
3. **Directional derivatives.** For each input ``x`` of the class being explained, the sensitivity
   ``S(x) = grad_h f(x) . v``: how the class score ``f`` (a circuitlab metric, e.g. a logit difference, or a
   function of the logits) changes when the input's pooled activation ``h`` moves along ``v``. Moving the pooled
   vector means moving every pooled position by the same amount, so ``grad_h f`` is the gradient of ``f`` with
   respect to a shift added at each pooled position (:func:`sensitivities`: one forward and backward pass for
   all hooks at once).
4. **The TCAV score**: the fraction of inputs with ``S(x) > 0``.

**Significance, as in the paper.** One CAV could separate the concept from random texts by chance directions;
so ``runs`` CAVs are trained, each against a different random set ``R_1 ... R_runs`` drawn (seeded) from
``random_texts``, giving ``runs`` TCAV scores per concept and hook. The same is done with another random set in
the concept's place, ``R'_r`` against ``R_r`` (random-vs-random CAVs). ``R'_r`` is drawn afresh for each run from
the texts not in ``R_r``, so that no single random set decides the reference scores (the paper's code, when no
fixed ``random_counterpart`` is named, likewise uses every random set as a positive set). A two-sided Student
t-test compares the concept's scores with the random ones (:func:`circuitlab.concepts.stats.ttest_ind`); a concept
is significant at a hook when ``p < alpha / n_concepts`` (Bonferroni over the concepts). Insignificant concepts are
marked in the result (:attr:`TCAVResult.significant`, :meth:`TCAVResult.summary`).

    from circuitlab.concepts.tcav import tcav

    res = tcav(model, inputs, LogitDiff(" good", " bad"), {"positive adjectives": pos, "neutral": neutral},
               random_texts, hooks=["blocks.1.hook_resid_post", "blocks.3.hook_resid_post"], runs=10)
    res.scores.values      # [concept, hook]: mean TCAV score over the runs
    res.p_values.values    # [concept, hook]
    print(res.summary())

**Compared with Captum's TCAV** (a test drives ``captum.concept.TCAV`` on the same pooled activation through a
small wrapper module, with this module's classifier): the same activations, CAVs and scores.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence, Union

import torch
from jaxtyping import Bool, Float, Int, Shaped
from torch import Tensor

from circuitlab.core import (DEFAULT_MAX_MEMORY, ModelLike, as_model, check_affordable, check_count, check_distinct,
                             check_finite, check_max_memory, check_number, check_seed, format_bytes, metric_name,
                             minimise_lbfgs, model_name, progress_bar, row_bytes, shorten, to_tokens)
from circuitlab.concepts.gradients import NOT_PER_TOKEN, check_gradient_hook, forward_for_metric, metric_from
from circuitlab.concepts.stats import ttest_ind
from circuitlab.engine.collect import check_hooks, check_pool, collect_rows, residual_hooks, same_length_runs
from circuitlab.errors import InputError
from circuitlab.metrics import Metric, bind_metric, can_split, is_declarative
from circuitlab.results import Bundle, Result

#: how a text's activations ``[pos, d]`` become one vector (the choices of ``pool``)
POOLINGS = {"mean": "over the text's tokens, BOS left out", "last": "the last token"}

Texts = Union[Sequence[str], Int[Tensor, "text pos"]]


# ---------------------------------------------------------------------------------------------------------
# Inputs: texts as token rows, hooks, pooling
# ---------------------------------------------------------------------------------------------------------

def text_tokens(model, texts: Texts, what: str) -> list[Int[Tensor, " pos"]]:
    """Each text as a 1-D row of token ids (the model's BOS prepended by its default); texts may differ in length.
    A token tensor ``[n, pos]`` gives its rows."""
    if isinstance(texts, Tensor):
        toks = to_tokens(model, texts)
        return [row for row in toks]
    if isinstance(texts, str) or not isinstance(texts, Sequence) or len(texts) == 0:
        raise InputError(f"{what} must be a non-empty list of texts (or token ids [n, pos]); got {shorten(texts, 80)}.")
    rows = []
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise InputError(f"{what}[{i}] is a {type(t).__name__}; give texts.")
        rows.append(to_tokens(model, t)[0])
    return rows


def _starts_with_bos(model, row: Tensor) -> bool:
    tok = getattr(model, "tokenizer", None)
    bos = getattr(tok, "bos_token_id", None) if tok is not None else None
    return bool(model.cfg.default_prepend_bos) and bos is not None and int(row[0]) == int(bos)


def pooled_positions(model, row: Int[Tensor, " pos"], pool: str) -> list[int]:
    """The positions of a text ``row`` that ``pool`` reads: its last, or all but a prepended BOS (all of a
    one-token text)."""
    n = int(row.shape[0])
    if pool == "last":
        return [n - 1]
    first = 1 if n > 1 and _starts_with_bos(model, row) else 0
    return list(range(first, n))


# ---------------------------------------------------------------------------------------------------------
# 1. Pooled activations
# ---------------------------------------------------------------------------------------------------------

@torch.no_grad()
def pooled_activations(model: ModelLike, texts: Texts, hooks: Union[str, Sequence[str], None] = None, *,
                       pool: str = "mean", max_memory: int = DEFAULT_MAX_MEMORY,
                       progress: bool = False) -> dict[str, Float[Tensor, "text d"]]:
    """Each text's activation at each hook, pooled over its tokens (``pool``): ``{hook: [n_texts, d]}``.

    Texts of one token length run together (trailing axes of the activation, e.g. heads and ``d_head``, are
    flattened into ``d``); float64.
    """
    model = as_model(model)
    hooks = check_hooks(model, hooks, residual_hooks(model))
    pool = check_pool(pool, POOLINGS)
    max_memory = check_max_memory(max_memory)
    rows = text_tokens(model, texts, "texts")
    return _pooled(model, rows, hooks, pool, max_memory, progress)


def _pooled(model, rows: list[Tensor], hooks: list[str], pool: str, max_memory: int,
            progress: bool) -> dict[str, Tensor]:
    """The pooled activations through the collector: texts of one length run together, unpadded; each text one
    span (:func:`pooled_positions`, decided by the first text of its batch, as every text of a batch has its
    length), averaged in float64."""
    batches = same_length_runs([len(r) for r in rows], lambda n: row_bytes(model, n), max_memory)
    spans: list[list[list[int]]] = [[] for _ in rows]
    for batch in batches:
        where = pooled_positions(model, rows[batch[0]], pool)
        for i in batch:
            spans[i] = [where]
    device = rows[0].device
    result = collect_rows(model, rows, spans, hooks, batches=batches, dtype=torch.float64, accumulate=torch.float64,
                          progress=progress, desc="concept activations")
    result = {h: t.to(device) for h, t in result.items()}
    check_finite(model, None, "the pooled activations", *result.values())
    return result


def _check_per_token(hook: str, act: Tensor, toks: Tensor) -> None:
    if hook.endswith(NOT_PER_TOKEN) or act.ndim < 3 or act.shape[:2] != toks.shape:
        raise InputError(f"hooks: {shorten(hook)} holds activations of shape {tuple(act.shape)}, not [batch, pos, "
                         "...], so they cannot be pooled per text. Use a residual stream or sub-layer output hook "
                         "(e.g. 'blocks.1.hook_resid_post').")


# ---------------------------------------------------------------------------------------------------------
# 2. The classifier and the CAV
# ---------------------------------------------------------------------------------------------------------

def logistic_regression(X: Float[Tensor, "n d"], y: Shaped[Tensor, " n"], *, l2: float = 0.01, max_iter: int = 500,
                        penalty: Optional[Float[Tensor, "m d"]] = None,
                        lam: float = 0.0) -> tuple[Float[Tensor, " d"], float]:
    """L2-regularised logistic regression, ``y`` in {0, 1}: minimises ``mean(log(1 + exp(-s (X w + b)))) +
    l2 / 2 * |w|^2`` (``s = 2 y - 1``) with L-BFGS in float64, full batch, so the answer does not depend on the
    order of the examples or a seed. Returns ``(w, b)`` in the coordinates of ``X``.

    The features are centred and divided by one number (their overall standard deviation) first, which leaves
    directions as they are; ``l2`` applies to the weights in those units. With ``penalty`` ``G`` (rows in ``X``'s
    coordinates) and ``lam > 0``, ``lam * mean_j (w . G_j)^2`` is added (explanation regularisation,
    :func:`circuitlab.concepts.debugging.train_head`).
    """
    X = X.double()
    s = y.double() * 2 - 1
    mu = X.mean(0)
    scale = float((X - mu).pow(2).mean().sqrt()) or 1.0
    Z = (X - mu) / scale
    G = None
    if penalty is not None and lam > 0 and len(penalty):
        G = penalty.double() / scale  # w_x . G = (w_z / scale) . G
    w = torch.zeros(X.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)

    def loss():
        value = torch.nn.functional.softplus(-s * (Z @ w + b)).mean() + 0.5 * l2 * (w * w).sum()
        if G is not None:
            value = value + lam * (G @ w).pow(2).mean()
        return value

    minimise_lbfgs([w, b], loss, max_iter=max_iter, tolerance_grad=1e-10, tolerance_change=1e-14)
    w_x = w.detach() / scale
    return w_x, float(b.detach() - (w_x * mu).sum())


@dataclass
class CAV:
    """A concept activation vector: ``vector`` (unit length, pointing towards the concept's side), the classifier's
    ``weight`` and ``bias`` in activation coordinates, and its training ``accuracy``."""

    vector: Float[Tensor, " d"]
    weight: Float[Tensor, " d"]
    bias: float
    accuracy: float


def train_cav(concept: Float[Tensor, "n d"], random: Float[Tensor, "m d"], *, l2: float = 0.01) -> CAV:
    """The CAV separating ``concept`` activations (label 1) from ``random`` ones (label 0): the unit normal of a
    logistic-regression boundary (:func:`logistic_regression`)."""
    X = torch.cat([concept, random]).double()
    y = torch.cat([torch.ones(len(concept)), torch.zeros(len(random))])
    w, b = logistic_regression(X, y, l2=l2)
    norm = float(w.norm())
    if norm == 0.0:
        raise InputError("the concept and random activations could not be told apart at all (the classifier's "
                         "weights are zero): the texts give identical activations at this hook. Use other texts "
                         "or another hook.")
    accuracy = float((((X @ w + b) > 0).double() == y.double()).double().mean())
    return CAV(w / norm, w, b, accuracy)


# ---------------------------------------------------------------------------------------------------------
# 3. Directional derivatives
# ---------------------------------------------------------------------------------------------------------

def sensitivities(model: ModelLike, inputs: Texts, metric: Metric,
                  hooks: Union[str, Sequence[str], None] = None, *, pool: str = "mean",
                  max_memory: int = DEFAULT_MAX_MEMORY, progress: bool = False) -> dict[str, Float[Tensor, "input d"]]:
    """``{hook: [n_inputs, d]}``: for each input, the gradient of the class score with respect to its pooled
    activation (a shift added at every pooled position); ``S(x) = sensitivities[hook][i] @ cav.vector``.

    The score of each input is the metric on that input alone: inputs of one token length run as one batch, on
    which a circuitlab metric (a mean over prompts) is taken for those rows (:meth:`LogitMetric.rows`) and its
    gradient multiplied by the batch size. A plain function of the logits must likewise be a mean over the batch,
    with its answers shared by every input.
    """
    model = as_model(model)
    hooks = [check_gradient_hook(model, h, "hooks") for h in check_hooks(model, hooks, residual_hooks(model))]
    pool = check_pool(pool, POOLINGS)
    max_memory = check_max_memory(max_memory)
    metric = bind_metric(metric, model)
    rows = text_tokens(model, inputs, "inputs")
    return _sensitivities(model, rows, metric, hooks, pool, max_memory, progress)


def _sensitivities(model, rows, metric, hooks, pool, max_memory, progress) -> dict[str, Tensor]:
    N = len(rows)
    split = can_split(metric)
    cfg = model.cfg
    size = next(model.parameters()).element_size()
    batches = same_length_runs([len(r) for r in rows], lambda n: cfg.n_layers * row_bytes(model, n) + 3 * size *
                               cfg.d_vocab_out * (1 if is_declarative(metric) else n), max_memory)
    out: dict[str, list[Optional[Tensor]]] = {h: [None] * N for h in hooks}
    for batch in progress_bar(batches, progress=progress, desc="directional derivatives"):
        toks = torch.stack([rows[i] for i in batch])
        b, n = toks.shape
        where = pooled_positions(model, toks[0], pool)
        mask = torch.zeros(n, dtype=torch.bool, device=toks.device)
        mask[where] = True
        deltas: dict[str, Tensor] = {}

        def shift(name):
            return lambda act, hook=None: shifted(name, act)

        def shifted(name, act):  # by closure, not hook.name: a bridge's hook points may report alias names
            _check_per_token(name, act, toks)
            if name not in deltas:
                deltas[name] = torch.zeros(b, act[0, 0].numel(), dtype=act.dtype, device=act.device,
                                           requires_grad=True)
            d = deltas[name].reshape(b, 1, *act.shape[2:])
            m = mask.reshape(1, n, *([1] * (act.ndim - 2)))
            return act + d * m.to(act.dtype)

        m = metric.rows(slice(batch[0], batch[-1] + 1), N) if split and b < N else metric
        value = metric_from(model, forward_for_metric(model, toks, [(h, shift(h)) for h in hooks], m), m, "the inputs")
        grads = torch.autograd.grad(value, [deltas[h] for h in hooks])
        for h, g in zip(hooks, grads):
            g = g.detach().double() * b  # the metric averages over the batch: each input's own gradient
            for j, i in enumerate(batch):
                out[h][i] = g[j]
    result = {h: torch.stack(v) for h, v in out.items()}  # type: ignore[arg-type]
    check_finite(model, None, "the directional derivatives", *result.values())
    return result


def tcav_score(sens: Float[Tensor, "input d"], cav: Union[CAV, Float[Tensor, " d"]]) -> float:
    """The fraction of inputs whose directional derivative along ``cav`` is positive."""
    v = cav.vector if isinstance(cav, CAV) else cav
    return float((sens.double() @ v.double() > 0).double().mean())


# ---------------------------------------------------------------------------------------------------------
# 4. TCAV with significance
# ---------------------------------------------------------------------------------------------------------

@dataclass(repr=False)
class TCAVResult(Bundle):
    """TCAV scores of several concepts at several hooks, with the significance test.

    ``scores [concept, hook]``: mean TCAV score over the runs; ``p_values [concept, hook]``: two-sided t-test of
    the concept's run scores against the random-vs-random ones; ``run_scores [concept, hook, run]``;
    ``random_scores [hook, run]``; ``accuracy [concept, hook, run]``: each CAV classifier's training accuracy.
    ``significant [concept, hook]`` is True where ``p < alpha / n_concepts`` (Bonferroni); ``cavs [concept, hook,
    run, d]`` (a hook's ``d`` padded with zeros to the widest hook) and ``random_cavs [hook, run, d]`` hold the
    unit CAVs.
    """

    scores: Result
    p_values: Result
    run_scores: Result
    random_scores: Result
    accuracy: Result
    significant: Bool[Tensor, "concept hook"] = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool))
    alpha: float = 0.05
    cavs: Optional[Float[Tensor, "concept hook run d"]] = None
    random_cavs: Optional[Float[Tensor, "hook run d"]] = None

    @property
    def concepts(self) -> list[str]:
        return self.scores.labels["concept"]

    @property
    def hooks(self) -> list[str]:
        return self.scores.labels["hook"]

    def insignificant(self) -> list[tuple[str, str]]:
        """``(concept, hook)`` pairs whose scores do not differ significantly from random CAVs'."""
        return [(c, h) for i, c in enumerate(self.concepts) for j, h in enumerate(self.hooks)
                if not bool(self.significant[i, j])]

    def summary(self) -> str:
        """One line per concept and hook: mean score +- std over runs, the random mean, p-value, verdict."""
        m = len(self.concepts)
        lines = [f"TCAV ({self.scores.metric}; {self.run_scores.shape[2]} runs; Bonferroni alpha "
                 f"{self.alpha}/{m} = {self.alpha / m:.3g})"]
        for i, c in enumerate(self.concepts):
            for j, h in enumerate(self.hooks):
                runs = self.run_scores.values[i, j]
                rnd = self.random_scores.values[j]
                mark = "significant" if bool(self.significant[i, j]) else "not significant"
                lines.append(f"  {c} @ {h}: {float(runs.mean()):.3f} +- {float(runs.std()):.3f} (random "
                             f"{float(rnd.mean()):.3f}), p = {float(self.p_values.values[i, j]):.3g}: {mark}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()


def _check_concepts(concepts: Any) -> dict[str, list[str]]:
    if not isinstance(concepts, Mapping) or not concepts:
        raise InputError("concepts must be a non-empty dict {name: [texts]}, e.g. {'positive adjectives': "
                         "['a wonderful day', ...]}; got " + f"{shorten(concepts, 80)}.")
    out = {}
    for name, texts in concepts.items():
        if not isinstance(name, str) or not name.strip():
            raise InputError(f"concepts: the name {name!r} of a concept must be non-empty text (it labels the "
                             "concept in the result), e.g. {'positive adjectives': [...]}.")
        if isinstance(texts, str) or not isinstance(texts, Sequence) or not all(isinstance(t, str) for t in texts):
            raise InputError(f"concepts[{shorten(name)}] must be a list of texts; got {shorten(texts, 80)}.")
        check_distinct(list(texts), f"concepts[{shorten(name, 40)}]", why="a CAV is trained on a sample of distinct "
                       "texts: a repeat counts one text twice and the runs' subsamples overlap")
        out[str(name)] = list(texts)
    return out


def tcav(
    model: ModelLike,
    inputs: Texts,
    metric: Metric,
    concepts: Mapping[str, Sequence[str]],
    random_texts: Sequence[str],
    *,
    hooks: Union[str, Sequence[str], None] = None,
    pool: str = "mean",
    runs: int = 10,
    set_size: Optional[int] = None,
    alpha: float = 0.05,
    l2: float = 0.01,
    seed: int = 0,
    max_memory: int = DEFAULT_MAX_MEMORY,
    progress: bool = False,
) -> TCAVResult:
    """TCAV scores of ``concepts`` for the class score ``metric`` on ``inputs``, with the paper's significance test.

    Args:
        model: a HookedTransformer, a TransformerBridge in compatibility mode, or a name for
            :func:`circuitlab.load_model`.
        inputs: examples of the class being explained (texts; lengths may differ), or token ids ``[n, pos]``.
        metric: the class score: a circuitlab metric (e.g. ``LogitDiff(" good", " bad")``) or a differentiable
            function of logits that averages over the batch.
        concepts: ``{name: texts}``; each concept needs at least ``set_size`` texts.
        random_texts: the pool random sets are drawn from; at least ``2 * set_size`` texts (each run draws two
            disjoint sets of ``set_size``).
        hooks: where to test: a hook name, or several names and layer numbers (a layer sweep; a layer ``l`` means
            ``blocks.{l}.hook_resid_post``; default every block's ``hook_resid_post``).
        pool: ``"mean"`` or ``"last"`` (see the module docstring).
        runs: CAVs per concept (each against a different random set), at least 2 for the t-test.
        set_size: texts per set (concept and random); default the smallest concept's size (and at most half the
            random pool). A concept with more texts is subsampled per run.
        alpha: significance level before the Bonferroni correction over concepts.
        l2: the classifier's L2 penalty.
        seed: seeds the random sets and subsamples.
        max_memory: rough bound in bytes on the activations one forward (and backward) pass holds.
        progress: show progress bars.

    Returns:
        :class:`TCAVResult`.
    """
    seed = check_seed(seed)
    t0 = time.perf_counter()
    model = as_model(model)
    hooks = [check_gradient_hook(model, h, "hooks") for h in check_hooks(model, hooks, residual_hooks(model))]
    pool = check_pool(pool, POOLINGS)
    max_memory = check_max_memory(max_memory)
    metric = bind_metric(metric, model)
    concepts = _check_concepts(concepts)
    runs = check_count(runs, "runs", minimum=2)
    if isinstance(random_texts, str) or not isinstance(random_texts, Sequence) or \
            not all(isinstance(t, str) for t in random_texts):
        raise InputError("random_texts must be a list of texts (the pool random counterexample sets are drawn "
                         f"from); got {shorten(random_texts)}.")
    pool_texts = list(random_texts)
    check_distinct(pool_texts, "random_texts", why="each run draws two disjoint random sets (random vs random, the "
                   "test's null); a repeated text can fall on both sides")
    in_pool = set(pool_texts)
    for name, texts in concepts.items():
        shared = [t for t in texts if t in in_pool]
        if shared:
            raise InputError(f"concepts[{shorten(name, 40)}] shares {len(shared)} text(s) with random_texts (e.g. "
                             f"{shorten(shared[0], 60)}): a CAV separates the concept from random texts, and a text on "
                             "both sides leaves it nothing to learn. Remove them from random_texts.")
    if set_size is None:
        set_size = max(2, min(min(len(t) for t in concepts.values()), len(pool_texts) // 2))
    set_size = check_count(set_size, "set_size", minimum=2)
    for name, texts in concepts.items():
        if len(texts) < set_size:
            raise InputError(f"concept {shorten(name)} has {len(texts)} texts, too few for set_size={set_size} (each "
                             "of the "
                             f"runs={runs} CAVs trains on {set_size} concept texts against {set_size} random ones). "
                             f"Give it at least {set_size} texts, or a smaller set_size.")
    if len(pool_texts) < 2 * set_size:
        raise InputError(f"random_texts has {len(pool_texts)} texts, too few for two disjoint random sets of "
                         f"set_size={set_size} per run (random vs random): give at least {2 * set_size} "
                         "(the paper used 500 random examples per set), or a smaller set_size.")
    check_number(alpha, "alpha", 0, 1, low_open=True, high_open=True,
                 what="a significance level between 0 and 1 (e.g. 0.05)")
    check_number(l2, "l2", low=0, what="a finite number >= 0 (the classifier's penalty, e.g. 0.01)")
    # the runs' sets (lists of text indices) and CAVs are all kept (the result holds every CAV): refuse up front
    # what does not fit
    width = max(model.cfg.d_model, getattr(model.cfg, "d_mlp", None) or 0)
    per_run = (2 + len(concepts)) * set_size * 40 + (len(concepts) + 1) * len(hooks) * (width + 3) * 8
    check_affordable(runs * per_run, f"runs={runs:,} (every run's CAVs are kept, {format_bytes(per_run)} a run)",
                     "use fewer runs (the paper used up to 500)")

    # every text once: concept texts, then the random pool
    names = list(concepts)
    all_texts = list(dict.fromkeys([t for n in names for t in concepts[n]] + pool_texts))
    index = {t: i for i, t in enumerate(all_texts)}
    acts = _pooled(model, text_tokens(model, all_texts, "concept and random texts"), hooks, pool, max_memory,
                   progress)
    sens = _sensitivities(model, text_tokens(model, inputs, "inputs"), metric, hooks, pool, max_memory, progress)

    # the sets of each run: R_r, and R'_r (random in the concept's place) from the texts not in R_r; concept
    # subsamples per run
    gen = torch.Generator().manual_seed(seed)
    random_sets, random_positives = [], []
    for _ in range(runs):
        perm = torch.randperm(len(pool_texts), generator=gen).tolist()
        random_sets.append([index[pool_texts[i]] for i in perm[:set_size]])
        random_positives.append([index[pool_texts[i]] for i in perm[set_size:2 * set_size]])
    concept_sets = {}
    for n in names:
        texts = concepts[n]
        concept_sets[n] = [[index[texts[i]] for i in torch.randperm(len(texts), generator=gen)[:set_size].tolist()]
                           for _ in range(runs)]

    C, H = len(names), len(hooks)
    width = max(a.shape[1] for a in acts.values())
    run_scores = torch.zeros(C, H, runs, dtype=torch.float64)
    accuracy = torch.zeros(C, H, runs, dtype=torch.float64)
    random_scores = torch.zeros(H, runs, dtype=torch.float64)
    cavs = torch.zeros(C, H, runs, width, dtype=torch.float64)
    random_cavs = torch.zeros(H, runs, width, dtype=torch.float64)
    work = [(j, h) for j, h in enumerate(hooks)]
    for j, h in progress_bar(work, progress=progress, desc="CAVs"):
        A, S = acts[h], sens[h]
        d = A.shape[1]
        for r in range(runs):
            cav = train_cav(A[random_positives[r]], A[random_sets[r]], l2=l2)
            random_scores[j, r] = tcav_score(S, cav)
            random_cavs[j, r, :d] = cav.vector
            for i, n in enumerate(names):
                cav = train_cav(A[concept_sets[n][r]], A[random_sets[r]], l2=l2)
                run_scores[i, j, r] = tcav_score(S, cav)
                accuracy[i, j, r] = cav.accuracy
                cavs[i, j, r, :d] = cav.vector

    p = torch.zeros(C, H, dtype=torch.float64)
    for i in range(C):
        for j in range(H):
            p[i, j] = ttest_ind(run_scores[i, j].tolist(), random_scores[j].tolist())[1]
    significant = p < alpha / C

    n_inputs = len(sens[hooks[0]])
    common = dict(metric=metric_name(metric), model=model_name(model), task=f"{n_inputs} inputs; concepts {names}")
    labels = {"concept": names, "hook": hooks}
    run_labels = [f"run {r}" for r in range(runs)]
    meta = dict(pool=pool, runs=runs, set_size=set_size, alpha=alpha, bonferroni_alpha=alpha / C, l2=l2, seed=seed,
                n_inputs=n_inputs, random_pool=len(pool_texts), seconds=time.perf_counter() - t0,
                corrected_p=(p * C).clamp(max=1.0))
    return TCAVResult(
        scores=Result(run_scores.mean(-1), ("concept", "hook"), labels, title="TCAV score (mean over runs)",
                      meta={**meta, "std": run_scores.std(-1), "random_mean": random_scores.mean(-1)}, **common),
        p_values=Result(p, ("concept", "hook"), labels, title="TCAV p-value (two-sided t-test vs random CAVs)",
                        meta={"significant": significant, "bonferroni_alpha": alpha / C}, **common),
        run_scores=Result(run_scores, ("concept", "hook", "run"), {**labels, "run": run_labels},
                          title="TCAV score per run", **common),
        random_scores=Result(random_scores, ("hook", "run"), {"hook": hooks, "run": run_labels},
                             title="TCAV score of random-vs-random CAVs", **common),
        accuracy=Result(accuracy, ("concept", "hook", "run"), {**labels, "run": run_labels},
                        title="CAV classifier training accuracy", **common),
        significant=significant, alpha=float(alpha), cavs=cavs, random_cavs=random_cavs)


__all__ = ["tcav", "TCAVResult", "CAV", "train_cav", "logistic_regression", "pooled_activations", "sensitivities",
           "tcav_score", "pooled_positions", "POOLINGS"]
