"""MEMIT on zoo/toy-lm: the update against the normal equations solved independently (a stacked least-squares
problem, torch.linalg.lstsq in float64), a batch of one over one layer against ROME's direction C^-1 k
(Sherman-Morrison), and a batch of toy facts written at once."""

from __future__ import annotations

import pytest
import torch

import circuitlab
from circuitlab.editing import key_covariance, rome_update
from circuitlab.editing.memit import default_mom2_weight, memit, memit_update
from circuitlab.errors import InputError
from circuitlab.models.loading import ZOO_DIR
from circuitlab.tasks.factual import toy_facts
from circuitlab.tasks.toy_world import load_world
from circuitlab.zoo.toy_lm import load_heldout_text


@pytest.fixture(scope="module")
def model():
    return circuitlab.load_model("zoo/toy-lm")


@pytest.fixture(scope="module")
def cov(model):
    texts = [line for line in load_heldout_text().splitlines() if line.strip()]
    return key_covariance(model, 0, texts, n_tokens=1500, cache=False).matrix


def test_memit_update_solves_the_normal_equations(cov):
    gen = torch.Generator().manual_seed(0)
    d = cov.shape[0]
    K = torch.randn(7, d, generator=gen, dtype=torch.float64) * cov.diagonal().sqrt()
    R = torch.randn(7, 16, generator=gen, dtype=torch.float64)
    lam = 300.0
    # min |K D - R|^2 + lam tr(D^T C D) = |[K; sqrt(lam) L^T] D - [R; 0]|^2 with C = L L^T
    L = torch.linalg.cholesky(cov + 1e-12 * torch.eye(d, dtype=torch.float64))
    A = torch.cat([K, lam ** 0.5 * L.T])
    B = torch.cat([R, torch.zeros(d, 16, dtype=torch.float64)])
    D = torch.linalg.lstsq(A, B, driver="gelsy").solution
    torch.testing.assert_close(memit_update(K, R, cov + 1e-12 * torch.eye(d, dtype=torch.float64), lam), D,
                               rtol=1e-5, atol=1e-7 * float(D.abs().max()))


def test_one_request_one_layer_is_rome_direction(model, cov):
    # (lam C + k k^T)^-1 k = C^-1 k / (lam + k^T C^-1 k): the same rank-one direction as ROME's u = C^-1 k, and the
    # same update as ROME asked for the value v0 + r (k^T C^-1 k) / (lam + k^T C^-1 k)
    gen = torch.Generator().manual_seed(1)
    W = model.blocks[0].mlp.W_out.detach().double()
    b = model.blocks[0].mlp.b_out.detach().double()
    k = torch.rand(cov.shape[0], generator=gen, dtype=torch.float64) * cov.diagonal().sqrt()
    r = torch.randn(W.shape[1], generator=gen, dtype=torch.float64)
    lam = default_mom2_weight(model.cfg.d_mlp)
    m = memit_update(k[None], r[None], cov, lam)
    q = float(k @ torch.linalg.solve(cov, k))
    ro = rome_update(W, b, k, k @ W + b + r * q / (lam + q), cov)
    torch.testing.assert_close(m, ro, rtol=1e-6, atol=1e-9 * float(ro.abs().max()))
    u = torch.linalg.svd(m).U[:, 0]
    c = torch.linalg.solve(cov, k)
    assert abs(float(u @ c / c.norm())) > 1 - 1e-9


def test_memit_writes_a_batch_of_facts(model, cov):
    facts = [f for f in toy_facts(load_world(ZOO_DIR / "toy-lm")) if f.relation == "home"][:2]
    requests = [(f.prompt, f.subject, facts[(i + 1) % 2].answer) for i, f in enumerate(facts)]
    edit = memit(model, requests, layers=[0], covariances={0: cov}, n_prefixes=1, steps=10)
    assert edit.layers == [0] and len(edit.requests) == 2

    def p(prompt, word):
        with torch.no_grad():
            probs = model(prompt)[0, -1].double().softmax(-1)
        return float(probs[model.to_tokens(word, prepend_bos=False)[0, 0]])

    before = [p(r[0], r[2]) for r in requests]
    with edit.applied(model):
        after = [p(r[0], r[2]) for r in requests]
    assert all(a > 10 * b for a, b in zip(after, before)), (before, after)


def test_memit_refuses_bad_batches(model, cov):
    with pytest.raises(InputError, match="requests"):
        memit(model, [], layers=[0], covariances={0: cov})
    with pytest.raises(InputError, match="twice"):
        memit(model, [("Wexmira has a house in", "Wexmira", " Pellmoor")] * 2, layers=[0], covariances={0: cov})
    with pytest.raises(InputError, match="layer"):
        memit(model, [("Wexmira has a house in", "Wexmira", " Pellmoor")], layers=[0, 0], covariances={0: cov})
