"""Head importance and pruning curves (circuitlab.attention.importance) against references written here: a loop
over sequences with one backward pass each (its own mask hooks and cross-entropy), central finite differences of
the loss in the mask, TransformerLens's own loss with a layer's ``hook_z`` zeroed, and the model's parameters
before and after; bad input."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import circuitlab
from circuitlab.attention.importance import head_importance, masked_loss, prune_curve
from circuitlab.errors import InputError
from circuitlab.metrics import LogitDiff


@pytest.fixture(scope="module")
def model():
    return circuitlab.load_model("zoo/toy-lm")


@pytest.fixture(scope="module")
def tokens(model):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, model.cfg.d_vocab, (5, 9), generator=g)


def scaled_hooks(model, xi):
    """Hooks multiplying head h of layer l by xi[l, h] (written here, independently of the module)."""
    def make(layer):
        return lambda z, hook: z * xi[layer].to(z.dtype)[None, None, :, None]
    return [(f"blocks.{layer}.attn.hook_z", make(layer)) for layer in range(model.cfg.n_layers)]


def lm_loss(model, toks, xi):
    logits = model.run_with_hooks(toks[None], fwd_hooks=scaled_hooks(model, xi))[0]
    return F.cross_entropy(logits[:-1].double(), toks[1:])


def brute_force(model, tokens, loss_fn):
    """mean over sequences of |dL(x)/dxi|, one backward pass per sequence."""
    total = torch.zeros(model.cfg.n_layers, model.cfg.n_heads, dtype=torch.float64)
    for i in range(tokens.shape[0]):
        xi = torch.ones(model.cfg.n_layers, model.cfg.n_heads, dtype=torch.float64, requires_grad=True)
        loss = loss_fn(i, xi)
        (grad,) = torch.autograd.grad(loss, xi)
        total += grad.abs()
    return total / tokens.shape[0]


def test_importance_equals_per_sequence_autograd(model, tokens):
    expected = brute_force(model, tokens, lambda i, xi: lm_loss(model, tokens[i], xi))
    raw = head_importance(model, tokens, normalise=False)
    assert raw.axes == ("layer", "head") and raw.shape == (4, 4)
    torch.testing.assert_close(raw.values.double(), expected, rtol=1e-4, atol=1e-6)
    # |mean| would differ: the test is sharp
    assert not torch.allclose(expected, brute_force_sum(model, tokens), rtol=1e-3)
    # per-layer l2 normalisation (Michel et al.)
    normalised = head_importance(model, tokens)
    torch.testing.assert_close(normalised.values.double(), expected / expected.norm(dim=1, keepdim=True),
                               rtol=1e-4, atol=1e-6)
    # batches cut small by max_memory give the same numbers
    small = head_importance(model, tokens, normalise=False, max_memory=1)
    torch.testing.assert_close(small.values, raw.values, rtol=1e-5, atol=1e-7)


def brute_force_sum(model, tokens):
    """|d sum_x L(x) / dxi| / n: the absolute value of the mean gradient (what per-sequence |.| avoids)."""
    xi = torch.ones(model.cfg.n_layers, model.cfg.n_heads, dtype=torch.float64, requires_grad=True)
    loss = sum(lm_loss(model, tokens[i], xi) for i in range(tokens.shape[0]))
    (grad,) = torch.autograd.grad(loss, xi)
    return grad.abs() / tokens.shape[0]


def test_importance_with_a_metric_equals_per_sequence_autograd(model):
    prompts = ["the cat sat on the", "the dog sat on the", "the man sat on the"]
    toks = model.to_tokens(prompts)
    correct, wrong = [" mat", " cat", " dog"], [" cat", " dog", " mat"]
    metric = LogitDiff(correct=correct, wrong=wrong, model=model)
    ids = [(model.to_single_token(c), model.to_single_token(w)) for c, w in zip(correct, wrong)]

    def diff(i, xi):
        logits = model.run_with_hooks(toks[i][None], fwd_hooks=scaled_hooks(model, xi))[0, -1]
        return logits[ids[i][0]].double() - logits[ids[i][1]].double()

    expected = brute_force(model, toks, diff)
    got = head_importance(model, prompts, metric=metric, normalise=False)
    torch.testing.assert_close(got.values.double(), expected, rtol=1e-4, atol=1e-6)


def test_importance_agrees_with_central_finite_differences(model, tokens):
    """In float64 the central difference (eps 1e-4) has error ~eps^2 * L''' ~ 1e-8: tolerance 1e-5 relative."""
    m64 = copy.deepcopy(model).to(torch.float64)
    raw = head_importance(m64, tokens, normalise=False).values.double()
    eps = 1e-4
    for layer, head in [(0, 1), (2, 3), (3, 0)]:
        grads = []
        for i in range(tokens.shape[0]):
            with torch.no_grad():
                values = []
                for sign in (1, -1):
                    xi = torch.ones(4, 4, dtype=torch.float64)
                    xi[layer, head] += sign * eps
                    values.append(float(lm_loss(m64, tokens[i], xi)))
            grads.append(abs(values[0] - values[1]) / (2 * eps))
        expected = sum(grads) / len(grads)
        assert abs(float(raw[layer, head]) - expected) <= 1e-5 * abs(expected) + 1e-9


def test_pruning_a_whole_layer_equals_zeroing_its_hook_z(model, tokens):
    for layer in (0, 2):
        order = [(layer, h) for h in range(4)]
        curve = prune_curve(model, tokens, order, fractions_pruned=(0, 0.25))
        with torch.no_grad():
            zeroed = model.run_with_hooks(tokens, return_type="loss",
                                          fwd_hooks=[(f"blocks.{layer}.attn.hook_z", lambda z, hook: z * 0)])
            clean = model(tokens, return_type="loss")
        assert curve.meta["counts"] == [0, 4]
        assert curve.values[0].item() == pytest.approx(float(clean), rel=1e-5)
        assert curve.values[1].item() == pytest.approx(float(zeroed), rel=1e-5)
        assert masked_loss(model, tokens, order) == pytest.approx(float(zeroed), rel=1e-5)


def test_prune_curve_leaves_the_model_unchanged(model, tokens):
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for order in ("importance", "random", "greedy"):
        curve = prune_curve(model, tokens, order, fractions_pruned=(0, 0.5, 1.0))
        assert curve.shape == (3,) and len(curve.meta["order"]) == 16
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in model.parameters())
    assert not model.hook_dict["blocks.0.attn.hook_z"].fwd_hooks  # no hook left behind


def test_orders(model, tokens):
    imp = head_importance(model, tokens)
    by_importance = prune_curve(model, tokens, "importance", fractions_pruned=(0, 0.25))
    flat = imp.values.flatten()
    expected = sorted(range(16), key=lambda i: (float(flat[i]), i))[:4]
    assert by_importance.meta["order"] == [(i // 4, i % 4) for i in expected]
    # greedy's first step is the importance order's first step; random is seeded
    greedy = prune_curve(model, tokens, "greedy", fractions_pruned=(0, 0.25, 0.5))
    assert greedy.meta["order"][:4] == by_importance.meta["order"]
    assert prune_curve(model, tokens, "random", seed=3).meta["order"] == \
        prune_curve(model, tokens, "random", seed=3).meta["order"]
    # all heads pruned: every fraction's loss is that of its own mask
    full = prune_curve(model, tokens, "random", fractions_pruned=(1.0,))
    assert full.values[0].item() == pytest.approx(masked_loss(model, tokens, full.meta["order"]), rel=1e-6)
    # by pattern class: the heads of the classes Kovaleva et al. tie to pre-training go first
    from circuitlab.attention.patterns import CLASSES, PRUNE_FIRST, pattern_taxonomy

    by_class = prune_curve(model, tokens, "taxonomy", fractions_pruned=(0, 1.0), seed=2)
    tax = pattern_taxonomy(model, "random", n=32, length=32, seed=2)
    ranks = [PRUNE_FIRST.index(CLASSES[int(tax.values[layer, head].argmax())])
             for layer, head in by_class.meta["order"]]
    assert ranks == sorted(ranks) and len(set(by_class.meta["order"])) == 16


@pytest.mark.parametrize("call", [
    lambda m, t: head_importance(m, []),
    lambda m, t: head_importance(m, t, metric="logit_diff"),
    lambda m, t: head_importance(m, t, metric=3),
    lambda m, t: head_importance(m, t, metric=lambda logits: 1.0),
    lambda m, t: head_importance(m, t, metric=lambda logits: logits[0, -1, 0].item()),
    lambda m, t: head_importance(m, t[:, :1]),
    lambda m, t: head_importance(m, t, normalise="yes"),
    lambda m, t: head_importance(m, t, max_memory=0),
    lambda m, t: prune_curve(m, [], "random"),
    lambda m, t: prune_curve(m, t, "random", fractions_pruned=(0, 1.5)),
    lambda m, t: prune_curve(m, t, "random", fractions_pruned=(0.5, 0.2)),
    lambda m, t: prune_curve(m, t, "random", fractions_pruned=()),
    lambda m, t: prune_curve(m, t, "random", fractions_pruned="0.5"),
    lambda m, t: prune_curve(m, t, "by size"),
    lambda m, t: prune_curve(m, t, [(0, 0), (0, 0)], fractions_pruned=(0.1,)),
    lambda m, t: prune_curve(m, t, [(9, 0)], fractions_pruned=(0.1,)),
    lambda m, t: prune_curve(m, t, [(0, 0)], fractions_pruned=(0.5,)),
    lambda m, t: prune_curve(m, t, "random", metric=object()),
    lambda m, t: prune_curve(m, t, "random", seed=-1),
])
def test_bad_inputs_are_input_errors(model, tokens, call):
    with pytest.raises(InputError):
        call(model, tokens)


def test_prune_curve_with_a_metric_equals_the_metric_on_the_masked_run(model):
    prompts = ["the cat sat on the", "the dog sat on the"]
    toks = model.to_tokens(prompts)
    metric = LogitDiff(correct=[" mat", " cat"], wrong=[" cat", " dog"], model=model)
    order = [(1, 2), (3, 0), (0, 1), (2, 2)]
    curve = prune_curve(model, prompts, order, fractions_pruned=(0, 0.125, 0.25), metric=metric)
    mat, cat, dog = (model.to_single_token(w) for w in (" mat", " cat", " dog"))
    for value, count in zip(curve.values.tolist(), (0, 2, 4)):
        hooks = [(f"blocks.{layer}.attn.hook_z", lambda z, hook, h=head: z.index_fill(2, torch.tensor([h]), 0.0))
                 for layer, head in order[:count]]
        with torch.no_grad():
            last = model.run_with_hooks(toks, fwd_hooks=hooks)[:, -1]
        expected = ((last[0, mat] - last[0, cat]) + (last[1, cat] - last[1, dog])) / 2
        assert value == pytest.approx(float(expected), rel=1e-5, abs=1e-6)
