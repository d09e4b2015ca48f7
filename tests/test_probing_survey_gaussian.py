"""Gaussian probing: the probe's class posteriors against SciPy's multivariate normal densities (shrunk unbiased
covariances, training priors), the greedy search against a brute-force search over subsets scored the same way,
planted informative neurons found first, and the sweep's shape and selectivity."""

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import multivariate_normal

import circuitlab
from circuitlab.errors import InputError
from circuitlab.probing import template_sentences
from circuitlab.probing.gaussian import GaussianProbe, gaussian_sweep, greedy_neurons


def data(n=120, d=6, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    x = torch.randn(n, d, generator=g)
    x[:, 2] += 1.5 * y  # neuron 2 separates the classes; neuron 4 a little
    x[:, 4] += 0.5 * (y == 1)
    return x, y


def scipy_log_posterior(x, y, neurons, classes, shrinkage):
    xs, ys = x[:, neurons].double().numpy(), y.numpy()
    joint = []
    for c in range(classes):
        rows = xs[ys == c]
        cov = np.atleast_2d(np.cov(rows, rowvar=False, ddof=1))
        cov = (1 - shrinkage) * cov + shrinkage * np.eye(len(neurons))
        joint.append(np.log(len(rows) / len(ys)) + multivariate_normal(rows.mean(0), cov).logpdf(xs))
    joint = np.stack(joint, 1)
    return joint - logsumexp(joint, axis=1, keepdims=True)


def test_probe_matches_scipy():
    x, y = data()
    for neurons in ([2], [0, 2, 4], [5, 1, 3, 2]):
        probe = GaussianProbe.fit(x, y, 3, neurons, shrinkage=0.2)
        want = scipy_log_posterior(x, y, neurons, 3, 0.2)
        np.testing.assert_allclose(probe.log_proba(x).numpy(), want, rtol=1e-9, atol=1e-9)
        assert probe.predict(x).tolist() == want.argmax(1).tolist()


def test_greedy_matches_brute_force():
    x, y = data(seed=1)

    def score(neurons):
        return scipy_log_posterior(x, y, neurons, 3, 0.1)[np.arange(len(y)), y.numpy()].mean()

    first = max(range(6), key=lambda j: (score([j]), -j))
    second = max((j for j in range(6) if j != first), key=lambda j: (score([first, j]), -j))
    assert greedy_neurons(x, y, 3, 2, shrinkage=0.1) == [first, second]
    assert first == 2  # the planted neuron
    with pytest.raises(InputError, match="k="):
        greedy_neurons(x, y, 3, 7)


def test_gaussian_sweep_on_toy():
    toy = circuitlab.load_model("zoo/toy-lm")
    res = gaussian_sweep(toy, template_sentences(60, seed=3), "upos", hook="blocks.1.hook_resid_post", k=2,
                         max_train=200, cache=False)
    assert res.axes == ("ranking", "k", "measure") and tuple(res.values.shape) == (2, 2, 3)
    v = res.values
    torch.testing.assert_close(v[:, :, 2], v[:, :, 0] - v[:, :, 1])
    assert len(set(res.meta["neurons"]["gaussian"]["accuracy"])) == 2
    assert float(v[0, -1, 0]) > 0.5  # two greedy neurons tag toy-lm's template words well
    with pytest.raises(InputError, match="one hook"):
        gaussian_sweep(toy, template_sentences(30), hook=[1, 2], cache=False)


def test_probe_gaussian_command(capsys):
    from circuitlab.cli import main

    assert main(["probe", "gaussian", "-m", "zoo/toy-lm", "-n", "40", "--task", "pos", "--neurons", "2", "-q"]) == 0
    out = capsys.readouterr().out
    assert "selectivity" in out and "gaussian" in out and "linear" in out
