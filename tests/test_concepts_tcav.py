"""TCAV for text (circuitlab.concepts.tcav) and its t-test (circuitlab.concepts.stats).

Checked against independent references: Captum's TCAV machinery (its activation store, its CAV assembly from a
classifier's weights, its layer gradients and its sign-count and magnitude scores) driven through a small wrapper
module on the same pooled activation with this package's classifier; finite differences of the class score for
the directional derivatives; a planted direction and the optimality conditions for the classifier; closed forms,
printed table values and numerical integration of the t density for the p-values."""

from __future__ import annotations

import math
import random

import pytest
import torch
from torch import nn

import circuitlab
from circuitlab.concepts.stats import betainc, t_two_sided_p, ttest_ind
from circuitlab.concepts.tcav import (logistic_regression, pooled_activations, pooled_positions, sensitivities, tcav,
                                      tcav_score, train_cav)
from circuitlab.errors import InputError
from circuitlab.metrics import LogitDiff

PLACES = ["store", "market", "garden", "river", "city", "house", "field", "temple"]
OBJECTS = ["drink", "book", "ring", "coin", "loaf", "lamb", "cup", "letter"]
INPUTS = [f"When Mary and John went to the {p}, John gave a {o} to" for p in PLACES[:4] for o in OBJECTS[:3]]
MARY = [f"Mary went to the {p} with her {o}." for p in PLACES for o in OBJECTS[:2]]
COLOURS = [f"The {o} was painted {c}." for o in OBJECTS for c in ("red", "blue")]
RANDOM = [f"And the {p} of the {o} was {a} in those days." for p in PLACES for o in OBJECTS[:4]
          for a in ("great", "old")][:48]
SCORE = LogitDiff(" Mary", " John")
HOOKS = ["blocks.1.hook_resid_post", "blocks.3.hook_resid_post"]
RUNS = 8


@pytest.fixture(scope="module")
def model():
    return circuitlab.load_model("zoo/toy-lm")


# ---------------------------------------------------------------------------------------------------------
# Captum's TCAV on the same pooled activation
# ---------------------------------------------------------------------------------------------------------

class Pooled(nn.Module):
    """Where Captum reads activations and gradients: the pooled vector (a fresh tensor, so its gradient is the
    class score's gradient through the shift it applies)."""

    def forward(self, x):
        return x * 1.0


class PooledTextModel(nn.Module):
    """tokens -> one class score per example, with the activation at ``hook`` mean-pooled over positions 1...
    (BOS left out) exposed as the output of ``self.pooled``, written back as ``act + (p - p.detach())``."""

    def __init__(self, model, hook: str):
        super().__init__()
        self.tl, self.hook, self.pooled = model, hook, Pooled()
        self.mary, self.john = model.to_single_token(" Mary"), model.to_single_token(" John")

    def forward(self, tokens):
        def h(act, hook):
            p = self.pooled(act[:, 1:].mean(1))
            shift = torch.zeros_like(act)
            shift[:, 1:] = (p - p.detach())[:, None, :]
            return act + shift

        logits = self.tl.run_with_hooks(tokens, fwd_hooks=[(self.hook, h)])
        return logits[:, -1, self.mary] - logits[:, -1, self.john]


def make_classifier():
    from captum.concept._utils.classifier import Classifier

    class OurLogisticRegression(Classifier):
        """Captum's classifier interface around this package's logistic regression (concept id 0 = label 1)."""

        def __init__(self):
            self.w = None
            self.seen = []

        def train_and_eval(self, dataloader, **kwargs):
            xs, ys = zip(*[(x, y) for x, y in dataloader])
            X, y = torch.cat(xs).double(), torch.cat(ys)
            self.seen.append((X, y))
            self.w, self.b = logistic_regression(X, (y == 0).long(), l2=0.01)
            self.labels = sorted(set(y.tolist()))  # [0, the random set's id]
            return {"accs": torch.tensor(1.0)}

        def weights(self):
            return torch.stack([self.w, -self.w]).float()  # rows in the order of classes(): concept, random

        def classes(self):
            return self.labels

    return OurLogisticRegression()


def test_same_activations_cavs_and_scores_as_captums_tcav(model, tmp_path):
    captum_concept = pytest.importorskip("captum.concept")
    hook = "blocks.2.hook_resid_post"
    concept_texts, random_a, random_b = MARY[:10], RANDOM[:10], RANDOM[10:20]

    def data(texts):  # one text per batch: Captum stores each batch's activations
        return [model.to_tokens(t) for t in texts]

    wrapper = PooledTextModel(model, hook)
    concept = captum_concept.Concept(0, "mary", data(concept_texts))
    rand_a = captum_concept.Concept(1, "random_a", data(random_a))
    rand_b = captum_concept.Concept(2, "random_b", data(random_b))
    clf = make_classifier()
    tc = captum_concept.TCAV(wrapper, layers=["pooled"], classifier=clf, save_path=str(tmp_path))
    inputs = model.to_tokens(INPUTS)
    scores = tc.interpret(inputs, experimental_sets=[[concept, rand_a], [concept, rand_b]], target=None)

    ours_acts = pooled_activations(model, concept_texts + random_a + random_b, hook)[hook]
    sens = sensitivities(model, INPUTS, SCORE, hook)[hook]
    for k, (key, randoms) in enumerate([("0-1", slice(10, 20)), ("0-2", slice(20, 30))]):
        X, _ = clf.seen[k]  # the activations Captum stored and handed to the classifier
        torch.testing.assert_close(X, torch.cat([ours_acts[:10], ours_acts[randoms]]), atol=1e-5, rtol=1e-5)
        cav = train_cav(ours_acts[:10], ours_acts[randoms])
        w_captum = tc.cavs[key]["pooled"].stats["weights"][0].double()
        cos = float(cav.vector @ w_captum / w_captum.norm())
        assert cos > 1 - 1e-6
        ours_sign = tcav_score(sens, cav)
        assert float(scores[key]["pooled"]["sign_count"][0]) == pytest.approx(ours_sign, abs=1e-6)  # float32
        assert float(scores[key]["pooled"]["sign_count"][1]) == pytest.approx(1 - ours_sign, abs=1e-6)
        # Captum's magnitude score: the mean of gradient . weights (unnormalised)
        ours_mag = float((sens @ cav.weight).mean())
        assert float(scores[key]["pooled"]["magnitude"][0]) == pytest.approx(ours_mag, rel=1e-3, abs=1e-4)
    assert 0 < ours_sign < 1 or abs(ours_mag) > 1e-3  # a non-degenerate comparison


# ---------------------------------------------------------------------------------------------------------
# Directional derivatives, pooling and the classifier
# ---------------------------------------------------------------------------------------------------------

def score_with_shift(model, text, hook, direction, eps, positions):
    """LogitDiff(' Mary', ' John') of one text with ``eps * direction`` added at ``positions`` of ``hook``."""
    toks = model.to_tokens(text)

    def h(act, hook):
        act = act.clone()
        act[:, positions] += eps * direction.to(act.dtype)
        return act

    with torch.no_grad():
        logits = model.run_with_hooks(toks, fwd_hooks=[(hook, h)])
    return float(logits[0, -1, model.to_single_token(" Mary")] - logits[0, -1, model.to_single_token(" John")])


@pytest.mark.parametrize("pool", ["mean", "last"])
def test_directional_derivatives_match_finite_differences(model, pool):
    texts = [INPUTS[0], "Then Mary and John went home, and John gave it to", INPUTS[5]]  # two lengths
    hook = "blocks.1.hook_resid_post"
    sens = sensitivities(model, texts, SCORE, hook, pool=pool)[hook]
    v = torch.nn.functional.normalize(torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0)), dim=0)
    eps = 1e-2
    for i, text in enumerate(texts):
        n = model.to_tokens(text).shape[1]
        where = list(range(1, n)) if pool == "mean" else [n - 1]
        fd = (score_with_shift(model, text, hook, v, eps, where) - score_with_shift(model, text, hook, v, -eps, where))
        assert float(sens[i].float() @ v) == pytest.approx(fd / (2 * eps), rel=2e-2, abs=2e-3)


def test_pooled_activations_by_hand(model):
    hook = "blocks.2.hook_mlp_out"
    texts = ["Mary went home.", "The cup was red and old."]
    got = pooled_activations(model, texts, hook)[hook]
    last = pooled_activations(model, texts, hook, pool="last")[hook]
    for i, t in enumerate(texts):
        _, cache = model.run_with_cache(t, names_filter=hook)
        act = cache[hook][0]
        torch.testing.assert_close(got[i].float(), act[1:].mean(0), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(last[i].float(), act[-1], atol=1e-6, rtol=1e-6)
    assert model.to_tokens("the").shape[1] == 2 and pooled_positions(model, model.to_tokens("the")[0], "mean") == [1]


def test_the_cav_finds_a_planted_direction_and_the_classifier_is_optimal():
    gen = torch.Generator().manual_seed(1)
    d, n = 32, 40
    u = torch.nn.functional.normalize(torch.randn(d, generator=gen, dtype=torch.float64), dim=0)
    base = torch.randn(2 * n, d, generator=gen, dtype=torch.float64) + 5
    concept, random = base[:n] + 2.0 * u, base[n:]
    cav = train_cav(concept, random)
    assert float(cav.vector @ u) > 0.7  # towards the concept; chance level is ~1/sqrt(d) = 0.18
    assert float(cav.vector.norm()) == pytest.approx(1.0)
    # optimality: the gradient of the objective (in the classifier's centred, rescaled units) vanishes
    X = torch.cat([concept, random])
    y = torch.cat([torch.ones(n), torch.zeros(n)]).double()
    mu, scale = X.mean(0), float((X - X.mean(0)).pow(2).mean().sqrt())
    w = (cav.weight * scale).clone().requires_grad_(True)
    b = torch.tensor(cav.bias + float(cav.weight @ mu), dtype=torch.float64, requires_grad=True)
    loss = nn.functional.softplus(-(2 * y - 1) * (((X - mu) / scale) @ w + b)).mean() + 0.005 * (w * w).sum()
    gw, gb = torch.autograd.grad(loss, [w, b])
    assert float(gw.abs().max()) < 1e-6 and abs(float(gb)) < 1e-6


# ---------------------------------------------------------------------------------------------------------
# The t-test
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("t", [0.1, 0.7, 2.0, 12.0])
def test_t_p_values_against_closed_forms(t):
    assert t_two_sided_p(t, 1) == pytest.approx(1 - 2 / math.pi * math.atan(t), rel=1e-12)  # Cauchy
    assert t_two_sided_p(t, 2) == pytest.approx(1 - t / math.sqrt(t * t + 2), rel=1e-12)
    # df = 4: P(|T| > t) = 1 - x (3 - x^2) / 2 with x = t / sqrt(t^2 + 4)
    x = t / math.sqrt(t * t + 4)
    assert t_two_sided_p(t, 4) == pytest.approx(1 - x * (3 - x * x) / 2, rel=1e-12)
    # the normal limit (the relative tail difference is about t^4 / (4 df))
    assert t_two_sided_p(t, 1e9) == pytest.approx(math.erfc(t / math.sqrt(2)), rel=1e-5 + t ** 4 / 1e9)


@pytest.mark.parametrize("df,t", [(10, 2.228), (20, 2.086), (5, 4.032), (30, 2.750)])
def test_t_p_values_against_printed_tables(df, t):
    """Two-sided critical values from standard t tables (0.05 and 0.01 columns), to their printed 3 decimals."""
    p = 0.01 if (df, t) in ((5, 4.032), (30, 2.750)) else 0.05
    assert t_two_sided_p(t, df) == pytest.approx(p, rel=2e-3)


@pytest.mark.parametrize("df", [3, 7, 17])
def test_t_p_values_against_numerical_integration(df):
    """Simpson's rule on Student's t density from 0 to t: an independent evaluation for any df."""
    c = math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2))
    for t in (0.5, 1.7, 3.3):
        n = 2000
        h = t / n
        f = [c * (1 + (i * h) ** 2 / df) ** (-(df + 1) / 2) for i in range(n + 1)]
        area = h / 3 * (f[0] + f[-1] + 4 * sum(f[1:-1:2]) + 2 * sum(f[2:-1:2]))
        assert t_two_sided_p(t, df) == pytest.approx(1 - 2 * area, rel=1e-8)


def test_betainc_and_ttest_by_hand():
    # I_x(2, 3) = sum_{j=2}^{4} C(4, j) x^j (1 - x)^(4 - j); I_x(1/2, 1/2) = 2/pi asin(sqrt(x))
    x = 0.4
    assert betainc(2, 3, x) == pytest.approx(sum(math.comb(4, j) * x ** j * (1 - x) ** (4 - j) for j in (2, 3, 4)))
    assert betainc(0.5, 0.5, 0.3) == pytest.approx(2 / math.pi * math.asin(math.sqrt(0.3)), rel=1e-12)
    # t by hand: means 2.5 and 4.6, pooled variance 34.2 / 7, so t = -2.1 / sqrt(34.2 / 7 * 0.45), df 7
    t, p = ttest_ind([1, 2, 3, 4], [2, 3, 4, 5, 9])
    assert t == pytest.approx(-2.1 / math.sqrt(34.2 / 7 * 0.45), rel=1e-12)
    assert p == pytest.approx(t_two_sided_p(t, 7))
    assert ttest_ind([0.5, 0.5], [0.5, 0.5]) == (0.0, 1.0) and ttest_ind([1.0, 1.0], [0.0, 0.0])[1] == 0.0


# ---------------------------------------------------------------------------------------------------------
# TCAV end to end
# ---------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def result(model):
    shuffled = random.Random(0).sample(RANDOM, len(RANDOM))  # "random texts": a concept from the pool's distribution
    concepts = {"Mary": MARY, "colours": COLOURS, "random texts": shuffled[:16]}
    return tcav(model, INPUTS, SCORE, concepts, shuffled[16:], hooks=HOOKS, runs=RUNS, set_size=8, seed=0)


def test_tcav_scores_are_the_fractions_and_p_values_the_t_test(result):
    runs = result.run_scores.values
    assert result.scores.axes == ("concept", "hook") and result.scores.labels["hook"] == HOOKS
    torch.testing.assert_close(result.scores.values, runs.mean(-1))
    assert ((runs * 12) - (runs * 12).round()).abs().max() < 1e-9  # fractions of the 12 inputs
    assert result.run_scores.shape == (3, 2, RUNS)
    for i in range(3):
        for j in range(2):
            a, b = runs[i, j].tolist(), result.random_scores.values[j].tolist()
            ma, mb = sum(a) / RUNS, sum(b) / RUNS
            ss = sum((v - ma) ** 2 for v in a) + sum((v - mb) ** 2 for v in b)
            if ss == 0:
                continue
            t = (ma - mb) / math.sqrt(ss / (2 * RUNS - 2) * (2 / RUNS))
            assert float(result.p_values.values[i, j]) == pytest.approx(t_two_sided_p(t, 2 * RUNS - 2), rel=1e-9)
    assert result.significant.tolist() == (result.p_values.values < 0.05 / 3).tolist()
    assert set(result.insignificant()) == {(c, h) for c in result.concepts for h in HOOKS} - \
        {(c, h) for i, c in enumerate(result.concepts) for j, h in enumerate(HOOKS) if result.significant[i, j]}
    assert "p = " in result.summary() and result.to_dataframe().shape[0] > 0


def test_random_texts_as_a_concept_are_not_significant_and_their_cavs_unstable(result):
    """A "concept" drawn from the random pool's own distribution: insignificant, its CAV direction changing from
    run to run (mean cosine between runs' CAVs), while a real concept's CAVs agree across runs."""
    def agreement(v):  # [run, d] unit vectors: mean cosine of distinct pairs
        g = v @ v.T
        return float((g.sum() - g.trace()) / (len(v) * (len(v) - 1)))

    i = result.concepts.index("random texts")
    assert not result.significant[i].any()
    for j in range(len(HOOKS)):
        assert agreement(result.cavs[i, j]) < 0.5
        assert agreement(result.cavs[result.concepts.index("Mary"), j]) > 0.9
        assert abs(agreement(result.random_cavs[j])) < 0.5


@pytest.mark.parametrize("kwargs,arg", [
    (dict(runs=1), "runs"), (dict(set_size=30), "concept 'Mary'"), (dict(hooks="blocks.7.hook_resid_post"), "hooks"),
    (dict(pool="max"), "pool"), (dict(alpha=1.5), "alpha"), (dict(random_texts=RANDOM[:10]), "random_texts"),
    (dict(concepts={}), "concepts"), (dict(hooks="blocks.0.attn.hook_pattern"), "hooks"),
])
def test_bad_input_names_the_argument(model, kwargs, arg):
    args = dict(inputs=INPUTS[:2], metric=SCORE, concepts={"Mary": MARY[:12]}, random_texts=RANDOM[:30],
                hooks="blocks.1.hook_resid_post", runs=2, set_size=6)
    args.update(kwargs)
    with pytest.raises(InputError, match=arg):
        tcav(model, **args)


def test_layer_numbers_name_residual_stream_hooks_and_inputs_may_differ_in_length(model):
    texts = [INPUTS[0], "Then Mary and John went home, and John gave it to", INPUTS[1]]
    by_layer = sensitivities(model, texts, SCORE, [1, -1])
    by_name = sensitivities(model, texts, SCORE, ["blocks.1.hook_resid_post", "blocks.3.hook_resid_post"])
    assert list(by_layer) == list(by_name)
    one_by_one = [sensitivities(model, [t], SCORE, 1)["blocks.1.hook_resid_post"][0] for t in texts]
    torch.testing.assert_close(by_layer["blocks.1.hook_resid_post"], torch.stack(one_by_one), atol=1e-6, rtol=1e-4)
    with pytest.raises(InputError, match="hooks layer=4"):
        sensitivities(model, texts, SCORE, [4])


def test_a_metric_that_is_not_differentiable_is_refused(model):
    mary = model.to_single_token(" Mary")
    with pytest.raises(InputError, match="metric=.*not differentiable"):
        sensitivities(model, INPUTS[:2], lambda logits: (logits[:, -1].argmax(-1) == mary).float().mean(),
                      "blocks.1.hook_resid_post")


def test_a_transformer_bridge_gives_the_numbers_of_its_hooked_twin():
    """Hooks by closure (a bridge's hook points may report alias names): integrated gradients, directional
    derivatives and pooled activations on a compatibility-mode TransformerBridge equal its HookedTransformer's."""
    from circuitlab.concepts.gradients import integrated_gradients
    from circuitlab.testing import random_bridge

    bridge, hooked = random_bridge("gpt2")
    toks = torch.tensor([[1, 5, 7, 9, 11], [2, 4, 6, 8, 10]])
    out = []
    for m in (bridge, hooked):
        ig = integrated_gradients(m, toks, LogitDiff(3, 7), hook="blocks.1.hook_resid_pre", baseline="mean", steps=4,
                                  tolerance=float("inf"))
        out.append([ig.values, *sensitivities(m, toks, LogitDiff(3, 7), [0, 1]).values(),
                    *pooled_activations(m, toks, [0, 1], pool="last").values()])
    for a, b in zip(*out):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
        assert b.abs().max() > 1e-2
