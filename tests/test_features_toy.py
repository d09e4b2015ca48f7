"""circuitlab.features.toy: toy models of superposition (Elhage et al. 2022), against independent references.

- the linear model against its closed-form optimum (the top-m important features dedicated, the rest dropped and
  replaced by their mean: weighted PCA on independent features, Eckart-Young), and its exact expected loss;
- the loss's gradient against central finite differences of a loss written out here in NumPy;
- the loss the trainer reports (samples drawn given that a feature is active, the all-zero input weighted in
  exactly) against a plain Monte-Carlo average over independent samples;
- norms, superposition, dimensionality and angles against hand-computed values for orthogonal columns, an
  antipodal pair and a regular pentagon (sum_i D_i = m for a tight frame);
- the phases of the two-feature model in its corner cases (dense: the less important feature dropped, or the extra
  feature given the dimension; very sparse: an antipodal pair) and the rule re-applied to the weights here;
- the pentagon of 5 features in 2 dimensions at high sparsity.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import torch

from circuitlab.errors import CircuitlabError
from circuitlab.features import toy
from circuitlab.results import Result


def _model(W, b=None, importance=None, sparsity=0.9, kind="relu", dtype=torch.float64) -> toy.ToyModel:
    W = torch.as_tensor(W, dtype=dtype)
    if W.ndim == 2:
        W = W[None]
    k, _, n = W.shape
    b = torch.zeros(k, n, dtype=dtype) if b is None else torch.as_tensor(b, dtype=dtype).reshape(k, n)
    imp = torch.ones(k, n, dtype=dtype) if importance is None else \
        torch.as_tensor(importance, dtype=dtype).reshape(k, n)
    return toy.ToyModel(W=W, b=b, importance=imp, sparsity=torch.full((k,), sparsity), kind=kind)


# -- the linear baseline: closed form ------------------------------------------------------------------------------

def test_linear_model_learns_the_top_m_features_as_the_closed_form_says():
    n, m, r, S = 5, 2, 0.7, 0.5
    model = toy.train(n, m, sparsity=S, importance=r, kind="linear", steps=1500, restarts=1, seed=1)
    p = 1 - S
    mean, var = p / 2, p / 3 - p ** 2 / 4  # each feature: 0 w.p. S, else uniform [0, 1]
    imp = torch.tensor([r ** i for i in range(n)], dtype=torch.float64)
    optimum = var * float(imp[m:].sum())  # the n - m least important features, replaced by their mean
    P = torch.diag(torch.tensor([1.0] * m + [0.0] * (n - m), dtype=torch.float64))
    WtW = (model.W[0].T @ model.W[0]).double()
    assert torch.allclose(WtW, P, atol=0.05), WtW
    b_star = (torch.eye(n, dtype=torch.float64) - P) @ torch.full((n,), mean, dtype=torch.float64)
    assert torch.allclose(model.b[0].double(), b_star, atol=0.05)
    # the exact expected loss of the trained weights (linear: second moments only) and the trainer's estimate
    A = torch.eye(n, dtype=torch.float64) - WtW
    resid = A @ torch.full((n,), mean, dtype=torch.float64) - model.b[0].double()
    exact = float((imp * (var * (A * A).sum(1) + resid ** 2)).sum())
    assert abs(exact - optimum) / optimum < 0.03
    assert abs(float(model.loss[0]) - exact) / exact < 0.05


# -- the loss: gradient and the trainer's estimate --------------------------------------------------------------------

def _numpy_loss(W: np.ndarray, b: np.ndarray, imp: np.ndarray, x: np.ndarray, kind: str = "relu") -> float:
    """sum_i I_i (x_i - ReLU(W^T W x + b)_i)^2 (no ReLU for the linear kind), averaged over rows of x ([batch, n]);
    one instance."""
    out = x @ W.T @ W + b
    out = np.maximum(out, 0.0) if kind == "relu" else out
    return float((imp * (x - out) ** 2).sum(1).mean())


@pytest.mark.parametrize("kind", toy.KINDS)
def test_loss_gradient_matches_finite_differences_of_a_hand_written_loss(kind):
    g = torch.Generator().manual_seed(3)
    W = torch.randn(1, 2, 4, generator=g, dtype=torch.float64) * 0.7
    b = torch.randn(1, 4, generator=g, dtype=torch.float64) * 0.1
    imp = torch.tensor([[1.0, 0.8, 0.6, 0.3]], dtype=torch.float64)
    x = toy.sample_features(4, 0.4, 64, seed=5).double()
    model = _model(W, b, imp, kind=kind)
    loss, gW, gb = toy.weighted_loss(model, x, grad=True)  # the trainer's hand-written backward pass
    Wn, bn, In, xn = W[0].numpy(), b[0].numpy(), imp[0].numpy(), x[:, 0].numpy()
    assert abs(float(loss) - _numpy_loss(Wn, bn, In, xn, kind)) < 1e-12
    eps = 1e-6
    for arr, grad in ((Wn, gW[0]), (bn, gb[0])):
        for idx in np.ndindex(arr.shape):
            old = arr[idx]
            arr[idx] = old + eps
            up = _numpy_loss(Wn, bn, In, xn, kind)
            arr[idx] = old - eps
            down = _numpy_loss(Wn, bn, In, xn, kind)
            arr[idx] = old
            assert abs((up - down) / (2 * eps) - float(grad[idx])) < 1e-6


def test_trainer_loss_equals_a_plain_monte_carlo_estimate():
    """The trainer draws samples given that a feature is active and weighs the all-zero input in exactly; its
    held-out loss must be the plain expectation over independent sparse features."""
    model = toy.train(6, 2, sparsity=[0.0, 0.9, 0.99], importance=0.8, steps=200, batch_size=2048, restarts=1,
                      seed=2)
    x = toy.sample_features(6, model.sparsity.tolist(), 200_000, seed=9)
    plain = toy.weighted_loss(model, x)
    assert torch.allclose(model.loss, plain, rtol=0.03), (model.loss, plain)


def test_sample_features_zero_rate_and_values():
    x = toy.sample_features(10, [0.0, 0.7, 0.99], 20_000, seed=0)
    assert x.shape == (20_000, 3, 10) and float(x.min()) >= 0 and float(x.max()) <= 1
    for k, S in enumerate((0.0, 0.7, 0.99)):
        zero = float((x[:, k] == 0).double().mean())
        assert abs(zero - S) < 4 * math.sqrt(S * (1 - S) / 200_000) + 1e-6  # binomial, 4 sigma
        nz = x[:, k][x[:, k] > 0]
        assert abs(float(nz.mean()) - 0.5) < 0.02


def test_training_is_deterministic_by_seed():
    a = toy.train(4, 2, 0.8, 1.0, steps=30, restarts=1, seed=7)
    b = toy.train(4, 2, 0.8, 1.0, steps=30, restarts=1, seed=7)
    c = toy.train(4, 2, 0.8, 1.0, steps=30, restarts=1, seed=8)
    assert torch.equal(a.W, b.W) and torch.equal(a.b, b.b) and not torch.equal(a.W, c.W)


# -- the analyses on hand-built weights ------------------------------------------------------------------------------

def test_orthogonal_columns_have_dimensionality_one_and_no_superposition():
    model = _model([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    torch.testing.assert_close(toy.feature_norms(model).values[0], torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(toy.superposition(model).values[0], torch.zeros(3, dtype=torch.float64))
    d = toy.dimensionality(model)
    torch.testing.assert_close(d.values[0], torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64))
    assert float(d.values.sum()) == 2.0  # the number of represented features
    assert d.meta["dimensions_per_feature"] == [pytest.approx(2 / 5)]  # m / ||W||_F^2 = 2 / (1 + 4)


def test_antipodal_pair_and_pentagon_by_hand():
    pair = _model([[0.9, -0.9]])
    torch.testing.assert_close(toy.dimensionality(pair).values[0], torch.tensor([0.5, 0.5], dtype=torch.float64))
    torch.testing.assert_close(toy.superposition(pair).values[0], torch.tensor([0.81, 0.81], dtype=torch.float64))
    angles = [math.radians(90 + 72 * i) for i in range(5)]
    pent = _model([[math.cos(a) for a in angles], [math.sin(a) for a in angles]])
    d = toy.dimensionality(pent).values[0]
    torch.testing.assert_close(d, torch.full((5,), 0.4, dtype=torch.float64))  # 2/5 each
    assert float(d.sum()) == pytest.approx(2.0)  # a tight frame: sum_i D_i = m
    # sum_{j != i} cos^2(72 (j - i)) = 5/2 - 1
    torch.testing.assert_close(toy.superposition(pent).values[0], torch.full((5,), 1.5, dtype=torch.float64))
    got = toy.feature_angles(pent).values[0]
    torch.testing.assert_close(got, torch.tensor([(90 + 72 * i) % 360 for i in range(5)], dtype=torch.float64))
    torch.testing.assert_close(toy.angle_gaps(got), torch.full((5,), 72.0, dtype=torch.float64))


def test_two_feature_phase_rule_on_hand_built_weights():
    model = _model([[[1.0, 0.1]], [[0.1, 1.0]], [[1.0, -1.0]], [[0.2, 0.3]]], sparsity=0.5)
    assert toy.two_feature_phase(model).tolist() == [0, 1, 2, 0]
    with pytest.raises(CircuitlabError, match="n_features = 2"):
        toy.two_feature_phase(_model([[1.0, 0.0, 0.0]]))


# -- trained toy models: phases, pentagon, sweep --------------------------------------------------------------------

@pytest.fixture(scope="module")
def corners():
    return toy.phase_diagram(relative_importance=(0.3, 3.0), sparsity_grid=(0.0, 0.99), steps=800, restarts=6, seed=0)


def test_phase_corner_cases(corners):
    # dense: the less important extra feature is dropped (r < 1), or takes the dimension (r > 1); very sparse: both
    # features share the one dimension
    assert corners.phase.values.tolist() == [[0, 2], [1, 2]]
    assert corners.phase.labels == {"importance": ["0.3", "3"], "sparsity": ["0", "0.99"]}
    assert corners.counts() == {"not represented": 1, "dedicated dimension": 1, "superposition": 2}
    W = corners.toy.W[:, 0, :]  # [cell, feature]; cells in (importance, sparsity) order
    norms = W.abs()
    for cell, (i, j) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        extra, first = bool(norms[cell, 1] >= 0.5), bool(norms[cell, 0] >= 0.5)
        assert corners.phase.values[i, j] == (2 if extra and first else 1 if extra else 0)
    for cell in (1, 3):  # superposition is antipodal: opposite signs, both near unit norm
        assert float(W[cell, 0] * W[cell, 1]) < 0 and bool((norms[cell] > 0.8).all())
    torch.testing.assert_close(corners.norms.values.reshape(4, 2), norms)


def test_pentagon_at_high_sparsity():
    model = toy.train(5, 2, sparsity=0.9, importance=1.0, steps=1000, restarts=2, seed=0)
    norms = toy.feature_norms(model).values[0]
    assert bool((norms > 0.9).all()), norms
    gaps = toy.angle_gaps(toy.feature_angles(model).values[0])
    assert bool(((gaps - 72).abs() < 3).all()), gaps
    assert abs(float(toy.dimensionality(model).values[0].sum()) - 2.0) < 0.05  # a tight frame: sum_i D_i = m


def test_sparsity_sweep_represents_more_features_when_sparse():
    sweep = toy.sparsity_sweep(6, 2, sparsities=(0.0, 0.95), importance=0.8, steps=800, restarts=1, seed=0)
    W = sweep.toy.W
    assert sweep.represented.values.tolist() == [int((W[k].norm(dim=0) >= 0.5).sum()) for k in range(2)]
    assert int(sweep.represented.values[0]) == 2 and int(sweep.represented.values[1]) > 2
    torch.testing.assert_close(sweep.dimensions_per_feature.values, 2 / (W ** 2).sum((1, 2)))


# -- figures ---------------------------------------------------------------------------------------------------------

def test_figures_are_valid_svg_with_one_mark_per_item(corners):
    from circuitlab.render.superposition import arrows_svg, phase_svg, sweep_svg

    svg = phase_svg(corners)
    cells = [e for e in ET.fromstring(svg).iter("{http://www.w3.org/2000/svg}rect")
             if e.get("class") == "cl-phase-cell"]
    assert sorted(int(c.get("data-phase")) for c in cells) == sorted(corners.phase.values.flatten().tolist())
    angles = [math.radians(72 * i) for i in range(5)]
    pent = _model([[math.cos(a) for a in angles], [math.sin(a) for a in angles]])
    arrows = [e for e in ET.fromstring(arrows_svg(pent)).iter("{http://www.w3.org/2000/svg}line")
              if e.get("class") == "cl-arrow"]
    assert len(arrows) == 5
    sweep = toy.SparsitySweep(
        norms=toy.feature_norms(pent), superposition=toy.superposition(pent),
        represented=Result(values=torch.tensor([5]), axes=("sparsity",), labels={"sparsity": ["0.9"]}),
        dimensions_per_feature=Result(values=torch.tensor([0.4]), axes=("sparsity",)), toy=pent)
    bars = [e for e in ET.fromstring(sweep_svg(sweep)).iter("{http://www.w3.org/2000/svg}rect")
            if e.get("class") == "cl-norm"]
    assert len(bars) == 5


# -- the reproductions' rules and the command line --------------------------------------------------------------------

def test_phase_rule_on_hand_made_grids():
    from circuitlab.reproduce.superposition_phase import phase_verdict, row_in_order

    assert row_in_order([0, 0, 2, 2], 0) and row_in_order([1, 1, 1, 1], 1) and row_in_order([1, 2, 2], 1)
    assert not row_in_order([0, 2, 0, 2], 0) and not row_in_order([1, 2], 0) and not row_in_order([0, 1, 2], 0)
    rel, sps = [0.1, 0.5, 1.0, 2.0, 10.0], [0.0, 0.5, 0.9, 0.99]
    good = [[0, 0, 2, 2], [0, 2, 2, 2], [1, 2, 2, 2], [1, 1, 2, 2], [1, 1, 1, 2]]
    assert phase_verdict(good, rel, sps)[0] == "reproduced"
    # the sparsities given in another order are read in rising order
    assert phase_verdict([row[::-1] for row in good], rel, sps[::-1])[0] == "reproduced"
    wavering = [row[:] for row in good]
    wavering[0], wavering[1] = [0, 2, 0, 2], [0, 2, 0, 2]  # (a), (b) hold; (c): 2 of 4 rows in order, 50% < 80%
    assert phase_verdict(wavering, rel, sps)[0] == "partly"
    wrong_dense = [row[:] for row in good]
    wrong_dense[0][0] = 1  # r = 0.1 dense: dedicated; (a) fails, and (c) for that row (3 of 4 rows: 75% < 80%)
    assert phase_verdict(wrong_dense, rel, sps)[0] == "not reproduced"
    # no superposition anywhere: (a) holds, and (c) (no change of phase is in order); (b) fails
    nothing = [[0] * 4, [0] * 4, [0] * 4, [1] * 4, [1] * 4]
    assert phase_verdict(nothing, rel, sps)[0] == "partly"
    reversed_rows = [[2, 2, 0, 0], [2, 0, 0, 0], [2, 2, 2, 1], [2, 1, 1, 1], [2, 2, 1, 1]]  # superposition when dense
    assert phase_verdict(reversed_rows, rel, sps)[0] == "not reproduced"


def test_a_toy_finding_takes_no_model():
    from circuitlab import reproduce

    r = reproduce.run("superposition-pentagon", model="zoo/toy-lm")
    assert r.verdict == "not applicable" and "trains its own models" in r.measurement.why
    assert not reproduce.get_finding("superposition-two-feature-phases").loads_model


def test_cli_phase_and_geometry(tmp_path, capsys):
    from circuitlab.cli import main

    out = tmp_path / "phase.html"
    assert main(["superposition", "phase", "--importances", "0.3,3", "--sparsities", "0,0.99", "--steps", "300",
                 "--restarts", "2", "-q", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "not represented" in text and "rule:" in text and len(text.splitlines()) >= 5
    assert "cl-phase-cell" in out.read_text()
    assert main(["superposition", "geometry", "--steps", "100", "--restarts", "1", "-q"]) == 0
    text = capsys.readouterr().out
    assert "sum of D_i" in text and text.count("\n      f") == 5
