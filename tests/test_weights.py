"""circuitlab.weights against independent references.

The reference circuits are TransformerLens's own products on a copy of the model whose norms were folded by
TransformerLens (``process_weights_(fold_ln=True, center_writing_weights=True, center_unembed=False)``):
``W_E @ model.OV[l, h] @ W_U``, ``W_E @ model.QK[l, h] @ W_E.T`` (``FactoredMatrix``), materialised densely. Folding
puts the norm weights and centering into the reading weights and centres the writing ones, which is the module's
rule (scale and biases dropped) reached by another road. Eigenvalues are checked against NumPy's ``eig`` of the
dense matrix and ``FactoredMatrix.eigenvalues``; skip-trigrams against a brute-force ``d_vocab^3`` tensor; the path
expansion against the model's own logits.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import circuitlab as cl
from circuitlab.errors import CircuitlabError, InputError
from circuitlab.weights import (bigram_table, circuit_matrix, copying_scores, ov_circuit, path_expansion, qk_circuit,
                                skip_trigrams)


def _folded(model):
    ref = copy.deepcopy(model)
    ref.process_weights_(fold_ln=True, center_writing_weights=True, center_unembed=False)
    return ref


@pytest.fixture(scope="module")
def two():
    model = cl.load_model("zoo/attn-only-2l")
    return model, _folded(model)


@pytest.fixture(scope="module")
def one():
    return cl.load_model("zoo/attn-only-1l")


@pytest.fixture(scope="module")
def toy():
    model = cl.load_model("zoo/toy-lm")
    return model, _folded(model)


def dense_ov(ref, l, h):
    return (ref.W_E @ ref.OV[l, h] @ ref.W_U).AB.detach().double()


def dense_qk(ref, l, h, q="token", k="token"):
    X = {"token": ref.W_E, "pos": ref.W_pos}
    return (X[q] @ ref.QK[l, h] @ X[k].T).AB.detach().double()


def assert_topk(top, dense, rows, k):
    """Exact top-k: the values equal the dense row's k largest, and each id's dense entry is its value."""
    want = dense[rows].topk(k, dim=-1)
    torch.testing.assert_close(top.values.double(), want.values, atol=1e-4, rtol=1e-4)
    got = dense[rows].gather(1, top.token_ids.long())
    torch.testing.assert_close(got, want.values, atol=1e-4, rtol=1e-4)


def test_ov_and_qk_top_k_match_transformer_lens_dense_products(two):
    model, ref = two
    rows = list(range(model.cfg.d_vocab))
    for (l, h) in [(0, 1), (1, 2)]:
        ov = dense_ov(ref, l, h)
        assert_topk(ov_circuit(model, (l, h), k=7, max_memory=3000), ov, rows, 7)  # many blocks of rows
        torch.testing.assert_close(circuit_matrix(model, (l, h)).values.double(), ov, atol=1e-4, rtol=1e-4)
        qk = dense_qk(ref, l, h)
        assert_topk(qk_circuit(model, f"{l}.{h}", k=5), qk, rows, 5)
    # positional parts (shortformer: positions enter queries and keys)
    pp = dense_qk(ref, 1, 0, "pos", "pos")
    top = qk_circuit(model, (1, 0), tokens=[3, 10, 40], k=4, query_side="pos", key_side="pos")
    assert_topk(top, pp, [3, 10, 40], 4)
    tp = dense_qk(ref, 0, 3, "token", "pos")
    torch.testing.assert_close(circuit_matrix(model, (0, 3), kind="qk", key_side="pos").values.double(), tp,
                               atol=1e-4, rtol=1e-4)


def test_k_composed_and_bigram_match_dense_products(two):
    model, ref = two
    via = sum((ref.W_E @ ref.OV[0, h]).AB for h in range(model.cfg.n_heads))  # token -> what layer 0 writes
    for h in range(model.cfg.n_heads):
        dense = (ref.W_E @ ref.QK[1, h]).AB @ via.T
        assert_topk(qk_circuit(model, (1, h), key_side="k_composed", k=3), dense.detach().double(),
                    list(range(model.cfg.d_vocab)), 3)
    only = (ref.W_E @ ref.OV[0, 2]).AB
    dense = ((ref.W_E @ ref.QK[1, 1]).AB @ only.T).detach().double()
    got = circuit_matrix(model, (1, 1), kind="qk", key_side="k_composed", via=["L0H2"]).values.double()
    torch.testing.assert_close(got, dense, atol=1e-4, rtol=1e-4)
    bigram = (ref.W_E @ ref.W_U).detach().double()
    assert_topk(bigram_table(model, k=5), bigram, list(range(model.cfg.d_vocab)), 5)


def test_ov_top_k_on_a_bpe_vocabulary_with_mlps_and_rotary(toy):
    model, ref = toy
    rows = [5, 100, 2000, 4095]
    ov = (ref.W_E[rows] @ ref.OV[2, 1] @ ref.W_U).AB.detach().double()
    top = ov_circuit(model, "L2H1", tokens=rows, k=6, max_memory=4096 * 4 * 3)  # one row per block
    assert_topk(top, ov, list(range(len(rows))), 6)
    qk = (ref.W_E[rows] @ ref.QK[3, 0] @ ref.W_E.T).AB.detach().double()
    assert_topk(qk_circuit(model, (3, 0), tokens=rows, k=4), qk, list(range(len(rows))), 4)
    with pytest.raises(InputError, match="pos"):
        qk_circuit(model, (3, 0), query_side="pos")  # rotary: no W_pos
    with pytest.raises(InputError, match="max_memory"):
        circuit_matrix(model, (0, 0), max_memory=2**25)  # 4096 x 4096 float32 is 64 MiB
    assert circuit_matrix(model, (0, 0), max_memory=2**27).shape == (4096, 4096)


def test_copying_scores_match_numpy_eig_and_factored_matrix(two):
    model, ref = two
    cs = copying_scores(model)
    for i, (l, h) in enumerate(cs.heads):
        dense = dense_ov(ref, l, h).numpy()
        lam = np.linalg.eigvals(dense)
        assert cs.copying.values[i].item() == pytest.approx(lam.sum().real / np.abs(lam).sum(), abs=1e-6)
        fm = (ref.W_E @ ref.OV[l, h] @ ref.W_U).eigenvalues.to(torch.complex128)
        got = cs.eigenvalues[i]
        torch.testing.assert_close(got.abs().sort().values, fm.abs().sort().values, atol=1e-3, rtol=1e-4)
        assert cs.self_top1.values[i].item() == pytest.approx(
            float((dense.argmax(1) == np.arange(len(dense))).mean()))
    # the QK and K-composed circuits, and a sample of tokens for the top-1 fraction
    qk = copying_scores(model, heads=["L1H3"], path="qk", tokens=list(range(10, 30)))
    dense = dense_qk(ref, 1, 3).numpy()
    lam = np.linalg.eigvals(dense)
    assert qk.copying.values[0].item() == pytest.approx(lam.sum().real / np.abs(lam).sum(), abs=1e-6)
    assert qk.self_top1.values[0].item() == pytest.approx(float((dense[10:30].argmax(1) == np.arange(10, 30)).mean()))
    kc = copying_scores(model, path="k_composed", self_top1=False)
    via = sum((ref.W_E @ ref.OV[0, h]).AB for h in range(model.cfg.n_heads))
    for i, (l, h) in enumerate(kc.heads):
        lam = np.linalg.eigvals(((ref.W_E @ ref.QK[l, h]).AB @ via.T).detach().double().numpy())
        assert kc.copying.values[i].item() == pytest.approx(lam.sum().real / np.abs(lam).sum(), abs=1e-5)
    assert kc.self_top1 is None and [h[0] for h in kc.heads] == [1] * 4


def test_copying_scores_are_float64_for_a_bf16_model(two):
    model, _ = two
    half = copy.deepcopy(model).to(torch.bfloat16)
    half.cfg.dtype = torch.bfloat16
    cs = copying_scores(half, heads=[(1, 0)], self_top1=False)
    assert cs.copying.values.dtype == torch.float64 and cs.eigenvalues.dtype == torch.complex128
    full = copying_scores(model, heads=[(1, 0)], self_top1=False)
    assert cs.copying.values[0].item() == pytest.approx(full.copying.values[0].item(), abs=0.02)


def test_skip_trigrams_match_brute_force(one):
    model = one
    ref = _folded(model)
    qk = dense_qk(ref, 0, 2)
    ov = dense_ov(ref, 0, 2)
    qk = (qk - qk.mean(1, keepdim=True)).clamp(min=0)  # [dst, src]
    ov = (ov - ov.mean(1, keepdim=True)).clamp(min=0)  # [src, out]
    brute = qk.T[:, :, None] * ov[:, None, :]  # [src, dst, out]
    top = brute.reshape(-1).topk(25)
    n = model.cfg.d_vocab
    tri = skip_trigrams(model, (0, 2), k=25, max_memory=n * n * 4 * 3)  # three sources per block
    torch.testing.assert_close(tri.scores.values.double(), top.values, atol=1e-4, rtol=1e-4)
    got = brute[tri.source, tri.destination, tri.output]
    torch.testing.assert_close(got, top.values, atol=1e-4, rtol=1e-4)


def test_path_expansion_reproduces_the_logits(one):
    model = one
    toks = torch.tensor([[0, 5, 17, 33, 5, 17, 60, 2, 5]])
    pe = path_expansion(model, toks, k=500)
    logits = model(toks)[0].double()
    torch.testing.assert_close(pe.terms.values.sum(0).double(), logits, atol=2e-5, rtol=1e-5)
    assert pe.max_error < 2e-5
    # keeping every triple (scores 0 included) keeps every OV entry: the skip-trigrams then explain all of it
    n = model.cfg.d_vocab
    full = path_expansion(model, toks, k=n ** 3)
    assert full.explained.values[2].item() == pytest.approx(1.0, abs=1e-6)
    assert pe.explained.values[3].item() == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(CircuitlabError, match="one-layer"):
        path_expansion(cl.load_model("zoo/attn-only-2l"), toks)


def test_the_weights_command_prints_the_scores_it_computes(two, capsys, tmp_path):
    from circuitlab.cli import main

    model, _ = two
    assert main(["weights", "-m", "zoo/attn-only-2l", "-o", str(tmp_path / "w.html")]) == 0
    out = capsys.readouterr().out
    cs = copying_scores(model, heads=[(1, 2)])
    kc = copying_scores(model, heads=[(1, 2)], path="k_composed")
    line = next(row for row in out.splitlines() if row.strip().startswith("L1H2"))
    assert line.split()[1:] == [f"{float(cs.copying.values[0]):+.3f}", f"{float(cs.self_top1.values[0]):.3f}",
                                f"{float(kc.copying.values[0]):+.3f}", f"{float(kc.self_top1.values[0]):.3f}"]
    assert (tmp_path / "w.html").exists()
    assert main(["weights", "-m", "zoo/attn-only-2l", "--head", "1.2", "--token", "t5", "-k", "3"]) == 0
    out = capsys.readouterr().out
    top = ov_circuit(model, (1, 2), tokens=["t5"], k=3)
    assert str(top.tokens[0]) in out


def test_gemma3_shaped_heads_stream_and_factor_like_their_dense_circuits():
    """Grouped-query keys, QK norms and sandwich norms (a random Gemma-3-shaped model): the streamed top-k and the
    d_head-form copying scores agree with the dense circuit and NumPy's eig of it."""
    from circuitlab.testing import random_model

    model = random_model("gemma3")
    rows = list(range(model.cfg.d_vocab))
    for kind, top in (("ov", ov_circuit(model, (1, 0), k=4, max_memory=1000)),
                      ("qk", qk_circuit(model, (1, 0), k=4, max_memory=1000))):
        assert_topk(top, circuit_matrix(model, (1, 0), kind=kind).values.double(), rows, 4)
    for path, kind, key in (("ov", "ov", "token"), ("qk", "qk", "token"), ("k_composed", "qk", "k_composed")):
        dense = circuit_matrix(model, (1, 1), kind=kind, key_side=key).values.double().numpy()
        lam = np.linalg.eigvals(dense)
        got = copying_scores(model, heads=[(1, 1)], path=path, self_top1=False).copying.values[0].item()
        assert got == pytest.approx(lam.sum().real / np.abs(lam).sum(), abs=1e-5)
