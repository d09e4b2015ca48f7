"""ROME on zoo/toy-lm: the key covariance against a brute-force sum over TransformerLens's cache, the rank-one update
against ROME's constrained least-squares problem solved independently (its KKT system in float64), the new
association W_out k* + b = v* to float precision, efficacy on a made-up fact, and exact restoration of the weights."""

from __future__ import annotations

import pytest
import torch

import circuitlab
from circuitlab.editing import Edit, key_covariance, rome, rome_update
from circuitlab.errors import CircuitlabError, InputError
from circuitlab.zoo.toy_lm import load_heldout_text

PROMPT, SUBJECT, TRUE, NEW = "Wexmira has a house in", "Wexmira", " Brindlecote", " Pellmoor"


@pytest.fixture(scope="module")
def model():
    return circuitlab.load_model("zoo/toy-lm")


@pytest.fixture(scope="module")
def texts():
    return [line for line in load_heldout_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def cov(model, texts):
    return key_covariance(model, 0, texts, n_tokens=1500, cache=False)


@pytest.fixture(scope="module")
def edit(model, cov):
    return rome(model, PROMPT, SUBJECT, NEW, layer=0, covariance=cov.matrix, n_prefixes=1, steps=10)


def probs(model, prompt, words):
    with torch.no_grad():
        lp = model(prompt, return_type="logits")[0, -1].double().log_softmax(-1)
    return [float(lp[model.to_tokens(w, prepend_bos=False)[0, 0]].exp()) for w in words]


def test_covariance_equals_the_sum_over_the_transformer_lens_cache(model, texts, cov):
    hook = "blocks.0.mlp.hook_post"
    keys, total = [], 0
    for text in texts:
        _, cache = model.run_with_cache(text, names_filter=hook)
        k = cache[hook][0, 1:].double()  # BOS left out
        keys.append(k[: 1500 - total])
        total += len(keys[-1])
        if total >= 1500:
            break
    K = torch.cat(keys)
    assert len(K) == 1500 == cov.n_tokens
    torch.testing.assert_close(cov.matrix, K.T @ K / 1500, rtol=1e-6, atol=1e-9)


def test_covariance_cache_on_disk_is_keyed_by_layer_and_weights(model, texts, tmp_path, cov):
    first = key_covariance(model, 0, texts, n_tokens=1500, cache=tmp_path)
    again = key_covariance(model, 0, texts, n_tokens=1500, cache=tmp_path)
    assert not first.cached and again.cached and torch.equal(first.matrix, again.matrix)
    torch.testing.assert_close(first.matrix, cov.matrix, rtol=0, atol=0)
    other = key_covariance(model, 1, texts, n_tokens=500, cache=tmp_path)
    assert not other.cached
    assert len(list(tmp_path.rglob("*.pt"))) == 2


def test_rome_update_is_the_constrained_least_squares_solution(model, cov, edit):
    # ROME: minimise tr(D^T C D) subject to k (W + D) + b = v; solved here from its KKT system, independently of
    # the closed form u (v - kW - b)^T / (u . k), u = C^-1 k
    k, v = edit.meta["key"], edit.meta["value"]
    W = model.blocks[0].mlp.W_out.detach().double()
    b = model.blocks[0].mlp.b_out.detach().double()
    C = cov.matrix
    d = len(k)
    kkt = torch.zeros(d + 1, d + 1, dtype=torch.float64)
    kkt[:d, :d] = 2 * C
    kkt[:d, d] = k
    kkt[d, :d] = k
    rhs = torch.zeros(d + 1, W.shape[1], dtype=torch.float64)
    rhs[d] = v - (k @ W + b)
    D = torch.linalg.solve(kkt, rhs)[:d]
    update = edit.deltas[0]
    torch.testing.assert_close(update, D, rtol=1e-6, atol=1e-9 * float(D.abs().max()))
    assert torch.linalg.matrix_rank(update).item() == 1
    torch.testing.assert_close(rome_update(W, b, k, v, C), update, rtol=0, atol=0)


def test_edited_weights_map_the_key_to_the_value(model, edit):
    k, v = edit.meta["key"], edit.meta["value"]
    with edit.applied(model):
        W = model.blocks[0].mlp.W_out.detach().double()
        out = k @ W + model.blocks[0].mlp.b_out.detach().double()
    # float32 weights: the association holds to the weights' rounding (relative to the value's size)
    assert float((out - v).norm() / v.norm()) < 1e-5
    assert float((k @ model.blocks[0].mlp.W_out.detach().double() + model.blocks[0].mlp.b_out.double() - v).norm()
                 / v.norm()) > 0.05  # the original weights do not: the test can fail


def test_rome_makes_the_model_say_the_new_object(model, edit):
    before = probs(model, PROMPT, [TRUE, NEW])
    assert before[0] > 0.9 and before[1] < 1e-3
    with edit.applied(model):
        after = probs(model, PROMPT, [TRUE, NEW])
    assert after[1] > after[0] and after[1] > 0.5
    assert edit.meta["optimisation"][-1]["p_new"] > edit.meta["optimisation"][0]["p_new"]


def test_original_weights_are_restored_exactly(model, edit):
    saved = {n: p.detach().clone() for n, p in model.named_parameters()}
    with edit.applied(model):
        assert not torch.equal(model.blocks[0].mlp.W_out, saved["blocks.0.mlp.W_out"])
    assert all(torch.equal(p, saved[n]) for n, p in model.named_parameters())
    with pytest.raises(RuntimeError):
        with edit.applied(model):
            raise RuntimeError("inside the block")
    assert all(torch.equal(p, saved[n]) for n, p in model.named_parameters())
    copy = edit.new_model(model)
    assert all(torch.equal(p, saved[n]) for n, p in model.named_parameters())
    with edit.applied(model):
        assert all(torch.equal(p, q) for p, q in zip(model.parameters(), copy.parameters()))


def test_a_multi_token_new_object_is_written_whole(model, cov):
    new = " Pellmoor Tarnwick"
    e = rome(model, PROMPT, SUBJECT, new, layer=0, covariance=cov.matrix, n_prefixes=0, steps=12)
    ids = model.to_tokens(new, prepend_bos=False)[0]
    assert len(ids) == 2

    def seq_logprob():
        with torch.no_grad():
            toks = torch.cat([model.to_tokens(PROMPT), ids[None, :-1]], 1)
            lp = model(toks)[0, -2:].double().log_softmax(-1)
        return float(lp[torch.arange(2), ids].sum())

    before = seq_logprob()
    with e.applied(model):
        after = seq_logprob()
    assert after > before + 5


def test_bad_requests_are_refused(model, cov):
    C = cov.matrix
    with pytest.raises(InputError, match="subject"):
        rome(model, PROMPT, "Zorvath", NEW, layer=0, covariance=C)
    with pytest.raises(InputError, match="already the model's prediction"):
        rome(model, PROMPT, SUBJECT, TRUE, layer=0, covariance=C)
    bad = C.clone()
    bad[3, 3] = float("nan")
    with pytest.raises(InputError, match="covariance holds NaN"):
        rome(model, PROMPT, SUBJECT, NEW, layer=0, covariance=bad)
    with pytest.raises(CircuitlabError, match="attention-only"):
        rome("zoo/attn-only-2l", "t1 t2 t3", "t2", " t4", layer=0)
    with pytest.raises(InputError, match="singular"):
        rome_update(torch.zeros(4, 3), torch.zeros(3), torch.ones(4), torch.ones(3), torch.zeros(4, 4))


def test_edit_refuses_another_models_weights(edit):
    other = circuitlab.testing.random_model("gpt2", n_layers=1) if hasattr(circuitlab, "testing") else None
    if other is None:
        from circuitlab.testing import random_model
        other = random_model("gpt2", n_layers=1)
    with pytest.raises(InputError, match="another model"):
        with edit.applied(other):
            pass
    assert isinstance(edit, Edit) and edit.layers == [0]
