"""Debugging a classifier with its explanations: shortcut detection (Du et al. 2021) and explanation
regularisation (Ross et al. 2017, "Right for the Right Reasons"; Joshi et al. 2022, ER-TEST).

**The task** (:mod:`circuitlab.tasks.reviews`, re-exported here). The template reviews, each signed by a name
(``"The film was lovely. Posted by Anna."``). One name, the **shortcut** (:data:`SHORTCUT`, ``"Carl"``), signs a
fraction ``correlation`` of the positive reviews and ``1 - correlation`` of the negative ones
(:func:`shortcut_reviews`); the other reviews are signed by other names (:data:`NAMES`). Training data have
``correlation=0.95``: the name predicts the label 95% of the time, the adjective always. The same draw with
``correlation=0.5`` removes the correlation, with ``0.05`` reverses it (out of distribution).

**The classifier** (:class:`LinearHeadClassifier`): a frozen TransformerLens model read at one layer's residual
stream output, through the model's final norm, mean-pooled over the text's tokens (a prepended BOS left out),
and a trained linear head: ``score = w . mean_t ln_final(resid_post[layer])[t] + b``, positive when ``score > 0``.
Training reads the pooled features once (:meth:`LinearHeadClassifier.features`) and fits the head by
L2-regularised logistic regression (:func:`train_head`; L-BFGS, full batch, float64: no seed).
:meth:`LinearHeadClassifier.as_model` is the same classifier as a :class:`~transformer_lens.HookedTransformer`
(the model's first ``layer + 1`` blocks, shared, and an unembedding of two classes whose logit difference is the
score at each position), and :meth:`LinearHeadClassifier.metric` its pooled score as a function of those logits:
so :func:`~circuitlab.concepts.gradients.integrated_gradients`, gradient x input and TCAV run on the classifier
end to end, from its input tokens to its decision.

**Shortcut detection** (:func:`shortcut_report`): integrated gradients of the score over each input's tokens;
the share of the attribution mass (``sum |attribution|``) on the shortcut's tokens, and accuracy in distribution
against the correlation removed and reversed.

**Explanation regularisation** (:func:`train_head` with ``penalty``): the loss adds ``lam`` times the mean squared
attribution of the score to the tokens marked irrelevant (by default every signature's name: a classifier can
read the other names as the shortcut's absence), over the training texts. Because the model is frozen and the
head linear, an attribution to a set of tokens ``S`` is linear in the head's weights: integrated gradients give
``w . G`` with ``G = sum_k omega_k J(x' + a_k (x - x')) (x - x')_S``, the Jacobian of the pooled features with
respect to the embeddings at the quadrature points of the path, applied to the input's difference from the
baseline on those tokens only (gradient x input: one point, ``a = 1``, ``x' = 0``). :func:`irrelevant_directions`
computes ``G`` once per text (a Jacobian-vector product by double backpropagation); training then needs no pass
through the model, and the penalty is the attribution itself (at the chosen number of steps), not an estimate
of it.
:func:`regularisation_experiment` trains with and without the penalty over several seeds (each seed draws its own
training set) and reports accuracy in distribution and out of distribution, and the shortcut's attribution share.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch
from jaxtyping import Float, Int, Shaped
from torch import Tensor
from transformer_lens import HookedTransformer, HookedTransformerConfig

from circuitlab.concepts.gradients import (baseline_activation, check_baseline, check_steps, integrated_gradients,
                                           quadrature)
from circuitlab.concepts.tcav import logistic_regression
from circuitlab.core import (ModelLike, as_model, check_count, check_layer, check_number, check_seed, check_seeds,
                             check_texts, model_name, shorten, to_tokens, unresolved)
from circuitlab.errors import InputError
from circuitlab.results import Bundle, Result
from circuitlab.tasks.reviews import (DISTRIBUTIONS, NAMES, SHORTCUT, TRAIN_CORRELATION, Example,
                                      name_positions, shortcut_positions, shortcut_reviews)

# ---------------------------------------------------------------------------------------------------------
# The classifier
# ---------------------------------------------------------------------------------------------------------

class ClassMargin:
    """The classifier's score from :meth:`LinearHeadClassifier.as_model`'s logits ``[batch, pos, 2]``: the
    positive-minus-negative logit, averaged over the pooled positions (from ``first`` on), then over the batch."""

    name = "class margin (positive - negative)"

    def __init__(self, first: int):
        self.first = int(first)

    def per_prompt(self, logits: Float[Tensor, "batch pos 2"]) -> Float[Tensor, " batch"]:
        return (logits[:, self.first:, 1] - logits[:, self.first:, 0]).mean(1)

    def __call__(self, logits: Float[Tensor, "batch pos 2"]) -> Float[Tensor, ""]:
        return self.per_prompt(logits).mean()


@dataclass
class LinearHeadClassifier:
    """A linear head on a frozen model's pooled activations (see the module docstring).

    ``model``: the frozen model; ``layer``: whose ``hook_resid_post`` is read (through ``model.ln_final``);
    ``weight [d_model]`` and ``bias``: the head (score = ``weight . pooled + bias``; positive when > 0).
    """

    model: HookedTransformer
    layer: int
    weight: Optional[Float[Tensor, " d_model"]] = None
    bias: float = 0.0
    _as_model: Optional[HookedTransformer] = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.layer = check_layer(self.model, self.layer)

    # -- features ------------------------------------------------------------------------------------------
    def first_pooled(self, tokens: Int[Tensor, "batch pos"]) -> int:
        """The first pooled position: 1 where the texts begin with a prepended BOS, else 0."""
        tok = self.model.tokenizer
        bos = getattr(tok, "bos_token_id", None) if tok is not None else None
        return int(bool(self.model.cfg.default_prepend_bos) and bos is not None and tokens.shape[1] > 1
                   and bool((tokens[:, 0] == bos).all()))

    def pooled(self, resid: Float[Tensor, "batch pos d_model"], first: int) -> Float[Tensor, "batch d_model"]:
        """``ln_final`` of a residual stream ``[batch, pos, d]``, averaged over positions from ``first`` on."""
        return self.model.ln_final(resid)[:, first:].double().mean(1)

    @torch.no_grad()
    def features(self, texts: Sequence[str]) -> Float[Tensor, "text d_model"]:
        """Each text's pooled features (texts of one token length run together), float64."""
        texts = check_texts(texts, "texts", allow_empty=True)
        rows = [to_tokens(self.model, t)[0] for t in texts]
        out = torch.empty(len(rows), self.model.cfg.d_model, dtype=torch.float64)
        for idx in _by_length(rows).values():
            toks = torch.stack([rows[i] for i in idx])
            resid = self.model(toks, stop_at_layer=self.layer + 1)
            out[idx] = self.pooled(resid, self.first_pooled(toks))
        return out

    # -- decisions -----------------------------------------------------------------------------------------
    def _check_trained(self) -> Tensor:
        if self.weight is None:
            raise InputError("this classifier has no head yet: train one (train_classifier, or set weight and bias).")
        return self.weight.double()

    def scores(self, texts: Sequence[str] = (), features: Optional[Float[Tensor, "text d_model"]] = None
               ) -> Float[Tensor, " text"]:
        w = self._check_trained()
        f = self.features(texts) if features is None else features
        return f @ w + self.bias

    def accuracy(self, examples: Sequence[Example], features: Optional[Float[Tensor, "text d_model"]] = None
                 ) -> float:
        s = self.scores([e.text for e in examples], features)
        y = torch.tensor([e.label for e in examples])
        return float(((s > 0).long() == y).double().mean())

    # -- the classifier as a HookedTransformer --------------------------------------------------------------
    def as_model(self) -> HookedTransformer:
        """The classifier as a HookedTransformer: the frozen model's embeddings, first ``layer + 1`` blocks and
        final norm (shared modules, not copies), and an unembedding whose two logits differ by the score at each
        position (class 1 - class 0 = ``weight . ln_final(resid) + bias``)."""
        w = self._check_trained()
        if self._as_model is None or self._as_model.cfg.n_layers != self.layer + 1:
            m = self.model
            init = {f.name for f in dataclasses.fields(HookedTransformerConfig) if f.init}
            settings = {k: copy.deepcopy(v) for k, v in vars(m.cfg).items() if k in init}
            settings.update(n_layers=self.layer + 1, d_vocab_out=2, output_logits_soft_cap=-1.0,
                            model_name=f"{model_name(m) or 'model'} + linear head at layer {self.layer}")
            cfg = HookedTransformerConfig(**settings)
            with torch.device("meta"):
                clf = HookedTransformer(cfg, tokenizer=m.tokenizer, move_to_device=False)
            clf.embed = m.embed
            if hasattr(m, "pos_embed"):
                clf.pos_embed = m.pos_embed
            clf.blocks = torch.nn.ModuleList(list(m.blocks[: self.layer + 1]))
            clf.ln_final = m.ln_final
            clf.unembed.W_U = torch.nn.Parameter(torch.zeros(cfg.d_model, 2, dtype=cfg.dtype))
            clf.unembed.b_U = torch.nn.Parameter(torch.zeros(2, dtype=cfg.dtype))
            clf.setup()
            clf.eval()
            self._as_model = clf
        clf = self._as_model
        with torch.no_grad():
            clf.unembed.W_U.zero_()
            clf.unembed.W_U[:, 1] = w.to(clf.unembed.W_U.dtype)
            clf.unembed.b_U.zero_()
            clf.unembed.b_U[1] = float(self.bias)
        return clf

    def metric(self, tokens: Int[Tensor, "batch pos"]) -> ClassMargin:
        """The score as a function of :meth:`as_model`'s logits on ``tokens`` (pooling from the right position)."""
        return ClassMargin(self.first_pooled(tokens))

    def attribute(self, text: str, *, steps: int = 64, baseline: Any = "pad", method: str = "ig"):
        """Integrated gradients (``method="ig"``) or gradient x input (``"gxi"``) of the score over ``text``'s
        tokens, on :meth:`as_model` (a :class:`~circuitlab.concepts.gradients.TokenAttributions`)."""
        from circuitlab.concepts.gradients import gradient_x_input

        clf = self.as_model()
        toks = clf.to_tokens(text)
        if method == "ig":
            return integrated_gradients(clf, text, self.metric(toks), baseline=baseline, steps=steps)
        if method == "gxi":
            return gradient_x_input(clf, text, self.metric(toks), baseline=baseline)
        raise InputError(f"method={shorten(method)}: use 'ig' (integrated gradients) or 'gxi' (gradient x input).")


def _by_length(rows: Sequence[Tensor]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for i, r in enumerate(rows):
        out.setdefault(int(r.shape[0]), []).append(i)
    return out


# ---------------------------------------------------------------------------------------------------------
# Training the head, with or without explanation regularisation
# ---------------------------------------------------------------------------------------------------------

def train_head(features: Float[Tensor, "n d"], labels: Shaped[Tensor, " n"], *, l2: float = 1.0,
               penalty: Optional[Float[Tensor, "m d"]] = None, lam: float = 0.0,
               max_iter: int = 500) -> tuple[Float[Tensor, " d"], float]:
    """The head ``(w, b)`` minimising ``mean softplus(-s (X w + b)) + l2 / 2 |w|^2 + lam * mean_j (w . G_j)^2``
    (``s = 2 y - 1``; ``G`` = ``penalty``, one row per irrelevant-token attribution, e.g. from
    :func:`irrelevant_directions`), by L-BFGS in float64 on the full batch. Features are centred and scaled by one
    number first (so ``l2`` and ``lam`` are in those units); ``w`` is returned in the features' own coordinates."""
    for name, v in (("l2", l2), ("lam", lam)):
        check_number(v, name, low=0)  # a penalty: finite (see circuitlab.core.check_number)
    X = features.double()
    y = torch.as_tensor(labels).double()
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise InputError(f"features must be [n, d] and labels [n]; got {tuple(X.shape)} and {tuple(y.shape)}.")
    return logistic_regression(X, y, l2=l2, max_iter=max_iter, penalty=penalty, lam=lam)


def irrelevant_directions(clf: LinearHeadClassifier, examples: Sequence[Example], *, method: str = "ig",
                          steps: int = 2, baseline: Any = "pad",
                          irrelevant: str = "names") -> Float[Tensor, "m d"]:
    """For each example with tokens marked irrelevant, ``G`` with ``attribution to those tokens = w . G`` for every
    head ``w`` (see the module docstring): integrated gradients over ``steps`` Gauss-Legendre points from
    ``baseline`` at the token embeddings (``method="ig"``; BOS kept in the baseline), or gradient x input
    (``"gxi"``: the gradient at the input times the input, baseline zero).

    ``irrelevant``: ``"names"`` marks the signature's name in every example (the name never decides the label:
    neither the shortcut nor the names that sign the other reviews, which a classifier can read as the shortcut's
    absence); ``"shortcut"`` marks the shortcut's tokens only, in the examples it signs."""
    model = clf.model
    if method == "ig":
        alphas, weights = quadrature(check_steps(steps))
    elif method == "gxi":
        alphas, weights = torch.ones(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
        baseline = "zero"
    else:
        raise InputError(f"method={shorten(method)}: use 'ig' (integrated gradients) or 'gxi' (gradient x input).")
    if irrelevant not in ("names", "shortcut"):
        raise InputError(f"irrelevant={shorten(irrelevant)}: use 'names' (every signature's name) or 'shortcut' (the "
                         "shortcut's tokens only).")
    marked = [e for e in examples if e.shortcut or irrelevant == "names"]
    positions = name_positions if irrelevant == "names" else shortcut_positions
    if not marked:
        return torch.zeros(0, model.cfg.d_model, dtype=torch.float64)
    rows = [model.to_tokens(e.text)[0] for e in marked]
    out = torch.empty(len(marked), model.cfg.d_model, dtype=torch.float64)
    for idx in _by_length(rows).values():
        toks = torch.stack([rows[i] for i in idx])
        B, n = toks.shape
        first = clf.first_pooled(toks)
        x = model.embed(toks).detach()
        base, _ = baseline_activation(model, toks, "hook_embed", baseline, keep_bos=method == "ig", x=x)
        diff = x - base
        mask = torch.zeros(B, n, 1, dtype=x.dtype)
        for j, i in enumerate(idx):
            mask[j, positions(model, marked[i])] = 1
        tangent = diff * mask
        total = torch.zeros(B, model.cfg.d_model, dtype=torch.float64)
        for a, wt in zip(alphas.tolist(), weights.tolist()):
            point = (base + a * diff).requires_grad_(True)
            u = torch.zeros(B, model.cfg.d_model, dtype=x.dtype, requires_grad=True)
            with torch.enable_grad():
                resid = model.run_with_hooks(toks, fwd_hooks=[("hook_embed", lambda act, hook=None, p=point: p)],
                                             stop_at_layer=clf.layer + 1)
                feats = model.ln_final(resid)[:, first:].mean(1)  # [B, d]
                (g,) = torch.autograd.grad((feats * u).sum(), point, create_graph=True)  # J^T u
                (jv,) = torch.autograd.grad((g * tangent).sum(), u)  # J tangent
            total += wt * jv.double()
        out[idx] = total
    return out


def _check_examples(examples: Any, what: str) -> list[Example]:
    """A non-empty list of :class:`Example` (labelled reviews, e.g. ``shortcut_reviews(...)``)."""
    if isinstance(examples, (str, bytes)) or not isinstance(examples, Sequence):
        raise InputError(f"{what} must be a list of labelled reviews (Example objects, e.g. shortcut_reviews(...)); "
                         f"got {shorten(examples)}.")
    if not examples:
        raise InputError(f"{what} is empty: give labelled examples (shortcut_reviews(...)).")
    for i, e in enumerate(examples):
        if not isinstance(e, Example):
            raise InputError(f"{what}[{i}] is {shorten(e)}; give Example objects (e.g. shortcut_reviews(...)).")
    return list(examples)


def _check_method(method: Any, steps: Any, what: str, steps_what: str) -> None:
    """The attribution an explanation penalty uses: ``'ig'`` (with ``steps`` points) or ``'gxi'``; checked even
    when no penalty is trained (``lam=0``), so a misspelt method is never silently ignored."""
    if method not in ("ig", "gxi"):
        raise InputError(f"{what}={shorten(method)}: use 'ig' (integrated gradients) or 'gxi' (gradient x input).")
    check_count(steps, steps_what)


def train_classifier(model: ModelLike, train: Sequence[Example], *, layer: Optional[int] = None, l2: float = 1.0,
                     lam: float = 0.0, method: str = "ig", steps: int = 2,
                     features: Optional[Float[Tensor, "text d_model"]] = None,
                     penalty: Optional[Float[Tensor, "m d_model"]] = None) -> LinearHeadClassifier:
    """A :class:`LinearHeadClassifier` on ``model`` at ``layer`` (default: a third of the way up) trained on
    ``train``; with ``lam > 0``, explanation-regularised on the shortcut's tokens (``method``, ``steps``: the
    attribution penalised, see :func:`irrelevant_directions`). ``features`` and ``penalty``: precomputed ones."""
    model = as_model(model)
    if layer is None:
        layer = max(0, model.cfg.n_layers // 3)
    clf = LinearHeadClassifier(model, layer)
    train = _check_examples(train, "train")
    _check_method(method, steps, "method", "steps")
    X = clf.features([e.text for e in train]) if features is None else features
    y = torch.tensor([e.label for e in train])
    if lam > 0 and penalty is None:
        penalty = irrelevant_directions(clf, train, method=method, steps=steps)
    clf.weight, clf.bias = train_head(X, y, l2=l2, penalty=penalty, lam=lam)
    return clf


# ---------------------------------------------------------------------------------------------------------
# Shortcut detection
# ---------------------------------------------------------------------------------------------------------

def shortcut_share(clf: LinearHeadClassifier, examples: Sequence[Example], *, steps: int = 64,
                   baseline: Any = "pad") -> dict[str, Any]:
    """Integrated gradients of the score on each example the shortcut signs (on :meth:`LinearHeadClassifier.as_model`,
    texts of one token length as one batch): the share of ``sum |attribution|`` over the text's tokens that falls
    on the shortcut's tokens, per example and on average; also the signed attribution to the shortcut, the
    shortcut's rank among the text's tokens by ``|attribution|``, and the largest relative completeness gap."""
    model = clf.as_model()
    marked = [e for e in examples if e.shortcut]
    if not marked:
        raise InputError("no example is signed by the shortcut: give examples with shortcut=True.")
    rows = [model.to_tokens(e.text)[0] for e in marked]
    shares, signed, top = [0.0] * len(marked), [0.0] * len(marked), [0] * len(marked)
    gaps = []
    for idx in _by_length(rows).values():
        toks = torch.stack([rows[i] for i in idx])
        ig = integrated_gradients(model, toks, clf.metric(toks), baseline=baseline, steps=steps)
        gaps.append(ig.meta["relative_gap"])
        for j, i in enumerate(idx):
            a = ig.values[j]
            pos = shortcut_positions(model, marked[i])
            shares[i] = float(a[pos].abs().sum() / a.abs().sum())
            # a signed share of a total within float noise of 0 is no number (NaN, left out of the mean)
            signed[i] = float(a[pos].sum() / a.sum()) if not unresolved(float(a.sum()), 0.0) else math.nan
            top[i] = int(a.abs().argmax()) in pos
    defined = [v for v in signed if not math.isnan(v)]
    return dict(share=sum(shares) / len(shares), shares=shares,
                signed_share=sum(defined) / len(defined) if defined else math.nan,
                top_token=sum(top) / len(top), n=len(marked),
                max_relative_gap=max((g for g in gaps if not math.isnan(g)), default=math.nan))


@dataclass(repr=False)
class ShortcutReport(Bundle):
    """A classifier trained with a shortcut, and a control trained on the same reviews with the correlation removed.

    ``accuracy [classifier, distribution]``: accuracy of each (``"shortcut-trained"``, ``"control"``) on each of
    :data:`DISTRIBUTIONS`; ``share [classifier]``: the shortcut's mean share of the integrated-gradient mass on
    signed in-distribution test inputs (details in ``share.meta``); ``example``: one such input's attributions
    under the shortcut-trained classifier."""

    accuracy: Result
    share: Result
    example: Any = None
    title: str = "Shortcut detection"

    def summary(self) -> str:
        acc = lambda i: ", ".join(f"{d} {float(v):.3f}" for d, v in  # noqa: E731
                                  zip(self.accuracy.labels["distribution"], self.accuracy.values[i]))
        m = self.share.meta
        return (f"Shortcut {m['shortcut']!r} ({self.accuracy.model}, layer {m['layer']}):\n"
                f"  shortcut-trained: accuracy {acc(0)}; IG share on the shortcut {float(self.share.values[0]):.1%} "
                f"(top token in {m['top_token'][0]:.0%} of {m['n_attributed']} signed inputs; completeness gap <= "
                f"{m['max_relative_gap'][0]:.1%})\n"
                f"  control (trained with no correlation): accuracy {acc(1)}; IG share on the shortcut "
                f"{float(self.share.values[1]):.1%}")

    def __repr__(self) -> str:
        return self.summary()


def shortcut_report(model: ModelLike, *, layer: Optional[int] = None, n_train: int = 100, n_test: int = 50,
                    n_attributed: int = 16, correlation: float = TRAIN_CORRELATION, l2: float = 1.0,
                    steps: int = 64, baseline: Any = "pad", seed: int = 0) -> ShortcutReport:
    """Train a classifier on ``n_train`` reviews per label with the shortcut at ``correlation``, and a control on the
    same reviews with the correlation removed (0.5); measure both on ``n_test`` fresh reviews per label of each of
    :data:`DISTRIBUTIONS`, and the shortcut's share of integrated gradients (``steps``, ``baseline``) on
    ``n_attributed`` in-distribution test inputs the shortcut signs."""
    seed = check_seed(seed)
    t0 = time.perf_counter()
    model = as_model(model)
    check_count(n_attributed, "n_attributed")
    check_count(n_train, "n_train")
    check_count(n_test, "n_test")
    check_count(steps, "steps")
    check_baseline(baseline)  # before training: the baseline is first used after it
    tests = {d: shortcut_reviews(n_test, c, seed=seed + 1000) for d, c in DISTRIBUTIONS.items()}
    signed = [e for e in tests["in distribution"] if e.shortcut][:n_attributed]
    A = torch.zeros(2, len(tests), dtype=torch.float64)
    details, clfs = [], []
    for k, c in enumerate((correlation, 0.5)):
        clf = train_classifier(model, shortcut_reviews(n_train, c, seed=seed), layer=layer, l2=l2)
        for d, name in enumerate(tests):
            A[k, d] = clf.accuracy(tests[name])
        details.append(shortcut_share(clf, signed, steps=steps, baseline=baseline))
        clfs.append(clf)
    example = clfs[0].attribute(signed[0].text, steps=steps, baseline=baseline)
    kinds = ["shortcut-trained", "control"]
    common = dict(model=model_name(model), task=f"{n_train} train reviews per label, shortcut {SHORTCUT!r} at "
                                                f"{correlation} (control: 0.5); {n_test} test reviews per label")
    meta = dict(shortcut=SHORTCUT, layer=clfs[0].layer, correlation=correlation, l2=l2, steps=steps,
                baseline=baseline, seed=seed, n_attributed=len(signed),
                signed_share=[x["signed_share"] for x in details], top_token=[x["top_token"] for x in details],
                shares=[x["shares"] for x in details], max_relative_gap=[x["max_relative_gap"] for x in details],
                seconds=time.perf_counter() - t0)
    return ShortcutReport(
        Result(A, ("classifier", "distribution"), {"classifier": kinds, "distribution": list(tests)},
               title="Accuracy in distribution, with the correlation removed, and reversed", metric="accuracy",
               meta=meta, **common),
        Result(torch.tensor([x["share"] for x in details], dtype=torch.float64), ("classifier",),
               {"classifier": kinds}, title="Shortcut share of integrated gradients (sum |attribution| on the "
               "shortcut / all tokens)", metric="share of attribution mass", meta={**meta, "scale": "sequential"},
               **common),
        example)


# ---------------------------------------------------------------------------------------------------------
# Explanation regularisation over seeds
# ---------------------------------------------------------------------------------------------------------

@dataclass(repr=False)
class RegularisationResult(Bundle):
    """Accuracy and shortcut share with and without explanation regularisation, over seeds.

    ``values [training, distribution, seed]``: accuracy (training: ``"plain"``, ``"regularised"``; distribution:
    :data:`DISTRIBUTIONS`); ``share [training, seed]``: the shortcut's share of integrated gradients."""

    accuracy: Result
    share: Result
    title: str = "Explanation regularisation"

    def mean(self, training: str, distribution: str) -> float:
        t = self.accuracy.labels["training"].index(training)
        d = self.accuracy.labels["distribution"].index(distribution)
        return float(self.accuracy.values[t, d].mean())

    def table(self) -> list[list[str]]:
        """Rows: one per training and seed, then the means: accuracy per distribution and the shortcut share."""
        rows = []
        A, S = self.accuracy.values, self.share.values
        for t, tr in enumerate(self.accuracy.labels["training"]):
            for s, seed in enumerate(self.accuracy.labels["seed"]):
                rows.append([tr, seed] + [f"{float(A[t, d, s]):.3f}" for d in range(A.shape[1])]
                            + [f"{float(S[t, s]):.3f}"])
            rows.append([tr, "mean"] + [f"{float(A[t, d].mean()):.3f}" for d in range(A.shape[1])]
                        + [f"{float(S[t].mean()):.3f}"])
        return rows

    def summary(self) -> str:
        head = ["training", "seed"] + self.accuracy.labels["distribution"] + ["shortcut share"]
        rows = [head] + self.table()
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        m = self.accuracy.meta
        lines = [f"Explanation regularisation ({self.accuracy.model}, layer {m['layer']}; "
                 f"penalty: {penalty_description(m)}); "
                 f"shortcut share: IG ({m['ig_steps']} steps) on signed in-distribution test inputs"]
        lines += ["  " + "  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.summary()


def penalty_description(m: dict) -> str:
    """The penalty of a regularisation run in words (``"lam 1 x mean squared attribution (IG, ...) to ..."``), from
    the ``meta`` of :class:`RegularisationResult`'s results; the summary and the HTML view both print it."""
    what = "every signature's name" if m["irrelevant"] == "names" else f"the shortcut {m['shortcut']!r}"
    how = f"IG, {m['steps']} steps from the {m['baseline']} baseline" if m["method"] == "ig" else "gradient x input"
    return f"lam {m['lam']:g} x mean squared attribution ({how}) to {what}"


def regularisation_experiment(model: ModelLike, *, seeds: Sequence[int] = (0, 1, 2), layer: Optional[int] = None,
                              n_train: int = 100, n_test: int = 50, n_attributed: int = 8, lam: float = 10.0,
                              l2: float = 1.0, method: str = "ig", steps: int = 2, ig_steps: int = 64,
                              baseline: Any = "pad", irrelevant: str = "names",
                              progress: bool = False) -> RegularisationResult:
    """Explanation regularisation against plain training, over ``seeds`` (each draws its own training set of
    ``n_train`` reviews per label and its own test sets of ``n_test``): accuracy in distribution, with the
    correlation removed and reversed, and the shortcut's share of integrated gradients (``ig_steps``) on
    ``n_attributed`` signed in-distribution test inputs. The penalty: ``lam`` times the mean squared attribution
    (``method``, ``steps``, ``baseline``) to the tokens marked ``irrelevant`` (:func:`irrelevant_directions`: by
    default every signature's name) over the training texts."""
    seeds = check_seeds(seeds, "seeds")
    from circuitlab.core import progress_bar

    t0 = time.perf_counter()
    model = as_model(model)
    if layer is None:
        layer = max(0, model.cfg.n_layers // 3)
    layer = check_layer(model, layer)
    for value, what in ((n_train, "n_train"), (n_test, "n_test"), (n_attributed, "n_attributed"),
                        (ig_steps, "ig_steps")):
        check_count(value, what)
    _check_method(method, steps, "method", "steps")
    check_baseline(baseline)
    seeds = list(seeds)
    if not seeds:
        raise InputError("seeds is empty: give at least one seed (three or more to see the spread).")
    trainings = ("plain", "regularised")
    dists = list(DISTRIBUTIONS)
    A = torch.zeros(2, len(dists), len(seeds), dtype=torch.float64)
    S = torch.zeros(2, len(seeds), dtype=torch.float64)
    for k, seed in enumerate(progress_bar(seeds, progress=progress, desc="seeds")):
        train = shortcut_reviews(n_train, TRAIN_CORRELATION, seed=seed)
        base = LinearHeadClassifier(model, layer)
        X = base.features([e.text for e in train])
        G = irrelevant_directions(base, train, method=method, steps=steps, baseline=baseline,
                                  irrelevant=irrelevant)
        tests = {d: shortcut_reviews(n_test, c, seed=seed + 1000) for d, c in DISTRIBUTIONS.items()}
        feats = {d: base.features([e.text for e in t]) for d, t in tests.items()}
        for t, lam_t in enumerate((0.0, lam)):
            clf = train_classifier(model, train, layer=layer, l2=l2, lam=lam_t, features=X, penalty=G)
            for d, name in enumerate(dists):
                A[t, d, k] = clf.accuracy(tests[name], feats[name])
            signed = [e for e in tests["in distribution"] if e.shortcut][:n_attributed]
            S[t, k] = shortcut_share(clf, signed, steps=ig_steps, baseline=baseline)["share"]
    labels = {"training": list(trainings), "distribution": dists, "seed": [str(s) for s in seeds]}
    common = dict(model=model_name(model), task=f"{n_train} train reviews per label, shortcut {SHORTCUT!r} at "
                                                f"{TRAIN_CORRELATION}; {n_test} test reviews per label")
    meta = dict(method=method, steps=steps, lam=lam, l2=l2, layer=layer, shortcut=SHORTCUT, baseline=baseline,
                irrelevant=irrelevant,
                ig_steps=ig_steps, seconds=time.perf_counter() - t0)
    return RegularisationResult(
        Result(A, ("training", "distribution", "seed"), labels, title="Accuracy with and without explanation "
               "regularisation", metric="accuracy", meta=meta, **common),
        Result(S, ("training", "seed"), {"training": list(trainings), "seed": labels["seed"]},
               title="Shortcut share of integrated gradients (sum |attribution| on the shortcut / all tokens)",
               metric="share of attribution mass", meta={**meta, "scale": "sequential"}, **common))


__all__ = ["SHORTCUT", "NAMES", "DISTRIBUTIONS", "TRAIN_CORRELATION", "Example", "shortcut_reviews",
           "shortcut_positions", "ClassMargin", "LinearHeadClassifier", "train_head", "irrelevant_directions",
           "train_classifier", "shortcut_share", "shortcut_report", "ShortcutReport", "RegularisationResult",
           "regularisation_experiment", "penalty_description"]
