"""Integrated gradients and gradient x input over tokens (circuitlab.concepts.gradients): the same numbers as
Captum's LayerIntegratedGradients / LayerGradientXActivation (an independent implementation: its own
interpolation, quadrature and batching), the quadrature rules against exact integrals, the completeness check
against metric values measured here, chunking, and bad input."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import circuitlab
from circuitlab.concepts.gradients import (CompletenessWarning, gradient_x_input, integrated_gradients, quadrature)
from circuitlab.errors import CircuitlabError, InputError
from circuitlab.metrics import LogitDiff

captum_attr = pytest.importorskip("captum.attr")

PROMPTS = ["the cat sat on the", "the dog sat on the"]  # 6 tokens each on zoo/toy-lm (BOS included)
MAT, CAT = " mat", " cat"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return circuitlab.load_model("zoo/toy-lm")


@pytest.fixture(scope="module")
def tokens(model):
    return model.to_tokens(PROMPTS)


def ids(model):
    return model.to_single_token(MAT), model.to_single_token(CAT)


def per_example_logit_diff(model):
    """Captum's forward output: one logit difference per example, written here from the logits."""
    mat, cat = ids(model)

    def f(logits):
        return logits[:, -1, mat] - logits[:, -1, cat]

    return f


class SwappableEmbedding(nn.Module):
    """``model.embed``, except that token id ``sentinel`` embeds as ``vector``: lets Captum's LayerIntegratedGradients
    (whose baselines are token ids) run from a zero or mean embedding."""

    def __init__(self, model, sentinel: int, vector: torch.Tensor):
        super().__init__()
        self.model, self.sentinel, self.vector = model, sentinel, vector

    def forward(self, toks):
        real = self.model.embed(toks.clamp(max=self.model.cfg.d_vocab - 1))
        return torch.where((toks == self.sentinel)[..., None], self.vector.to(real.dtype), real)


def captum_lig(model, tokens, baseline, steps, method, layer=None, per_example=None, keep_bos=False):
    """Captum's LayerIntegratedGradients, summed over d_model: ``[batch, pos]``; ``keep_bos``: the baseline token
    ids keep the prompts' first token."""
    per_example = per_example or per_example_logit_diff(model)
    V = model.cfg.d_vocab
    if baseline == "pad":
        layer = layer if layer is not None else model.embed
        fwd = lambda t: per_example(model(t))  # noqa: E731
        base = torch.full_like(tokens, model.tokenizer.pad_token_id)
    else:
        vec = torch.zeros(model.cfg.d_model) if baseline == "zero" else \
            torch.stack([model.embed(torch.arange(V)[None])[0]]).mean(1)[0]  # mean over the vocabulary
        layer = SwappableEmbedding(model, V, vec)

        def fwd(t):
            e = layer(t)
            return per_example(model.run_with_hooks(t.clamp(max=V - 1), fwd_hooks=[("hook_embed", lambda a, hook: e)]))

        base = torch.full_like(tokens, V)
    if keep_bos:
        base[:, 0] = tokens[:, 0]
    lig = captum_attr.LayerIntegratedGradients(fwd, layer)
    attr, delta = lig.attribute(tokens, baselines=base, n_steps=steps, method=method, return_convergence_delta=True)
    return attr.detach().double().flatten(2).sum(-1), delta.detach().double()


@pytest.mark.parametrize("baseline,method,steps", [("pad", "gausslegendre", 32), ("zero", "riemann_middle", 16),
                                                   ("mean", "riemann_left", 8), ("pad", "riemann_right", 5)])
def test_integrated_gradients_equal_captums_layer_integrated_gradients(model, tokens, baseline, method, steps):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompletenessWarning)  # few steps: the check may warn; not what is tested
        ours = integrated_gradients(model, PROMPTS, LogitDiff(MAT, CAT), baseline=baseline, steps=steps, method=method,
                                    keep_bos=False)
    theirs, delta = captum_lig(model, tokens, baseline, steps, method)
    B = len(PROMPTS)
    # LogitDiff averages over the prompts; Captum attributes each example's own logit difference
    torch.testing.assert_close(ours.values * B, theirs, atol=2e-4, rtol=1e-4)
    assert theirs.abs().max() > 0.05  # a real comparison, not of zeros
    # Captum's convergence delta is each example's sum minus its own metric difference, so Captum's metric
    # differences, averaged over the examples, are the difference our completeness check measured
    assert float((theirs.sum(1) - delta).mean()) == pytest.approx(ours.meta["difference"], abs=1e-4)


@pytest.mark.parametrize("baseline", ["zero", "mean"])
def test_keeping_bos_equals_captum_with_bos_in_the_baseline_tokens(model, tokens, baseline):
    assert bool((tokens[:, 0] == model.tokenizer.bos_token_id).all())
    ours = integrated_gradients(model, PROMPTS, LogitDiff(MAT, CAT), baseline=baseline, steps=16, tolerance=1.0)
    theirs, _ = captum_lig(model, tokens, baseline, 16, "gausslegendre", keep_bos=True)
    torch.testing.assert_close(ours.values * len(PROMPTS), theirs, atol=2e-4, rtol=1e-4)
    assert (ours.values[:, 0] == 0).all() and "BOS kept" in ours.meta["baseline"]
    replaced = integrated_gradients(model, PROMPTS, LogitDiff(MAT, CAT), baseline=baseline, steps=16,
                                    tolerance=float("inf"), keep_bos=False)
    assert (replaced.values[:, 0] != 0).all()


def test_trapezoid_differs_from_captums_by_its_weights(model, tokens):
    """Captum 0.9's trapezoid weights sum to (n - 1) / n; ours to 1 (see quadrature's docstring)."""
    n = 6
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CompletenessWarning)
        ours = integrated_gradients(model, PROMPTS, LogitDiff(MAT, CAT), baseline="pad", steps=n,
                                    method="riemann_trapezoid", keep_bos=False)
    theirs, _ = captum_lig(model, tokens, "pad", n, "riemann_trapezoid")
    torch.testing.assert_close(ours.values * len(PROMPTS) * (n - 1) / n, theirs, atol=2e-4, rtol=1e-4)


def test_at_a_later_hook_equals_captum_on_that_layer(model, tokens):
    """The path at blocks.1.hook_resid_pre (block 0's output): Captum's LIG on model.blocks[0], pad baseline."""
    ours = integrated_gradients(model, tokens, LogitDiff(MAT, CAT), hook="blocks.1.hook_resid_pre", baseline="pad",
                                steps=16, tolerance=1.0, keep_bos=False)
    theirs, _ = captum_lig(model, tokens, "pad", 16, "gausslegendre", layer=model.blocks[0])
    torch.testing.assert_close(ours.values * len(PROMPTS), theirs, atol=2e-4, rtol=1e-4)
    assert ours.labels["prompt"] == ["p0", "p1"] and ours.meta["hook"] == "blocks.1.hook_resid_pre"


def test_gradient_x_input_equals_captums_layer_gradient_x_activation(model, tokens):
    ours = gradient_x_input(model, PROMPTS, LogitDiff(MAT, CAT), keep_bos=False)  # the classic x * grad everywhere
    f = per_example_logit_diff(model)
    theirs = captum_attr.LayerGradientXActivation(lambda t: f(model(t)), model.embed).attribute(tokens)
    theirs = theirs.detach().double().sum(-1)
    torch.testing.assert_close(ours.values * len(PROMPTS), theirs, atol=1e-5, rtol=1e-4)
    assert theirs.abs().max() > 1e-3


def metric_at(model, tokens, embed):
    """LogitDiff (batch mean) with hook_embed replaced by ``embed``: measured here, not by the code under test."""
    mat, cat = ids(model)
    with torch.no_grad():
        logits = model.run_with_hooks(tokens, fwd_hooks=[("hook_embed", lambda a, hook: embed.expand_as(a))])
    return float((logits[:, -1, mat] - logits[:, -1, cat]).mean())


def test_completeness_with_enough_steps_and_a_warning_with_too_few(model, tokens):
    pad = model.tokenizer.pad_token_id
    want = metric_at(model, tokens, model.embed(tokens)) - metric_at(model, tokens, model.W_E[pad].detach())
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompletenessWarning)
        many = integrated_gradients(model, PROMPTS, LogitDiff(MAT, CAT), baseline="pad", steps=64)
    assert abs(float(many.values.sum()) - want) < 0.01 * abs(want)
    assert abs(many.meta["difference"] - want) < 1e-4
    with pytest.warns(CompletenessWarning, match=r"steps=1: use more steps \(e\.g\. steps=4\)"):
        few = integrated_gradients(model, PROMPTS, LogitDiff(MAT, CAT), baseline="pad", steps=1)
    assert abs(float(few.values.sum()) - want) > 0.05 * abs(want)
    assert few.meta["gap"] == pytest.approx(float(few.values.sum()) - want, abs=1e-4)


def test_chunking_and_splitting_by_prompt_give_the_same_numbers(model):
    kw = dict(baseline="pad", steps=8, tolerance=1.0)
    whole = integrated_gradients(model, PROMPTS, LogitDiff(MAT, CAT), **kw)
    tiny = integrated_gradients(model, PROMPTS, LogitDiff(MAT, CAT), max_memory=1, **kw)
    assert whole.meta["passes"] == 1 and tiny.meta["passes"] == 8 * len(PROMPTS)  # one prompt of one step per pass
    torch.testing.assert_close(tiny.values, whole.values, atol=1e-6, rtol=1e-5)
    # a plain callable cannot be split by prompt: whole steps per pass
    f = per_example_logit_diff(model)
    fn = integrated_gradients(model, PROMPTS, lambda logits: f(logits).mean(), max_memory=1, **kw)
    assert fn.meta["passes"] == 8
    torch.testing.assert_close(fn.values, whole.values, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("method,exact_degree", [("gausslegendre", 7), ("riemann_trapezoid", 1),
                                                 ("riemann_middle", 1)])
def test_quadrature_integrates_polynomials_exactly(method, exact_degree):
    a, w = quadrature(4, method)
    for d in range(exact_degree + 1):
        assert float((w * a ** d).sum()) == pytest.approx(1 / (d + 1), abs=1e-12)  # integral_0^1 a^d da
    assert float((w * a ** (exact_degree + 1)).sum()) != pytest.approx(1 / (exact_degree + 2), abs=1e-6)
    a, w = quadrature(4, "riemann_left")
    assert a.tolist() == [0, 0.25, 0.5, 0.75] and w.tolist() == [0.25] * 4


@pytest.mark.parametrize("kwargs,arg", [
    (dict(steps=0), "steps"), (dict(steps=2.5), "steps"), (dict(method="simpson"), "method"),
    (dict(hook="blocks.9.hook_resid_pre"), "hook"), (dict(hook="blocks.0.attn.hook_pattern"), "hook"),
    (dict(baseline="ones"), "baseline"), (dict(steps=1, method="riemann_trapezoid"), "steps"),
    (dict(tolerance=-1), "tolerance"), (dict(max_memory=0), "max_memory"), (dict(keep_bos=None), "keep_bos"),
    (dict(baseline="zero", pad_token=0), "pad_token"),
])
def test_bad_input_names_the_argument(model, kwargs, arg):
    with pytest.raises(InputError, match=arg):
        integrated_gradients(model, PROMPTS, LogitDiff(MAT, CAT), **kwargs)


def test_attention_patterns_are_refused_even_when_heads_equal_positions(model):
    toks = model.to_tokens("the cat sat")  # 4 tokens, and zoo/toy-lm has 4 heads: [batch, head, q, k] fits [batch, pos]
    assert toks.shape[1] == model.cfg.n_heads
    with pytest.raises(InputError, match="hook="):
        integrated_gradients(model, toks, LogitDiff(MAT, CAT), hook="blocks.0.attn.hook_pattern", steps=2)


def test_a_metric_that_is_not_differentiable_is_refused(model):
    mat = model.to_single_token(MAT)
    with pytest.raises(InputError, match=r"metric=.*not differentiable"):
        integrated_gradients(model, PROMPTS, lambda logits: (logits[:, -1].argmax(-1) == mat).float().mean(), steps=2)
    with pytest.raises(InputError, match=r"metric=.*one number"):
        integrated_gradients(model, PROMPTS, lambda logits: logits[:, -1, mat], steps=2)
    with pytest.raises(CircuitlabError, match="metric"):
        integrated_gradients(model, PROMPTS, "logit_diff", steps=2)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_reading_only_the_metrics_logits_equals_the_full_logits(arch):
    """A declarative metric is read from the final residual stream at its own positions and columns; a plain
    function of the full logits must give the same attributions (per-prompt answers and a softmax metric too)."""
    from circuitlab.metrics import Probability
    from circuitlab.testing import random_model

    m = random_model(arch, n_layers=2)
    m.cfg.output_logits_soft_cap = 3.0 if arch == "llama" else m.cfg.output_logits_soft_cap  # exercise the cap
    toks = torch.tensor([[1, 5, 7, 9, 11], [2, 4, 6, 8, 10]])
    correct, wrong = torch.tensor([3, 12]), torch.tensor([7, 7])
    kw = dict(baseline=0, steps=3, tolerance=float("inf"), keep_bos=False)

    def diff(logits):
        return (logits[:, -1].gather(1, correct[:, None]) - logits[:, -1].gather(1, wrong[:, None])).mean()

    def logp(logits):
        return logits[:, 2].log_softmax(-1)[:, 5].mean()

    for declarative, plain in ((LogitDiff(correct, wrong), diff), (Probability(5, pos=2, log=True), logp)):
        a = integrated_gradients(m, toks, declarative, **kw)
        b = integrated_gradients(m, toks, plain, **kw)
        torch.testing.assert_close(a.values, b.values, atol=1e-6, rtol=1e-5)
        assert a.values.abs().max() > 1e-3
