"""The shared checks and numeric helpers, each against an independent reference or a value worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from circuitlab.core import check_max_memory, check_number
from circuitlab.errors import InputError


# ---------------------------------------------------------------------------------------------------------
# check_number
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value,kwargs", [
    (1e-3, dict(low=0, low_open=True)), (0, dict(low=0)), (0.0, dict(low=0, high=1)), (1, dict(low=0, high=1)),
    (0.5, dict(low=0, high=1, low_open=True, high_open=True)), (-7, {}), (10**6, dict(low=1)),
    (-2.5, dict(high=-2.5)), (float("inf"), dict(low=0, finite=False)), (float("-inf"), dict(finite=False)),
])
def test_check_number_accepts_values_inside_the_bounds_as_floats(value, kwargs):
    got = check_number(value, "x", **kwargs)
    assert type(got) is float and (got == value)


@pytest.mark.parametrize("value,kwargs", [
    (0, dict(low=0, low_open=True)), (-1e-12, dict(low=0)), (1.0, dict(high=1, high_open=True)),
    (1.5, dict(low=0, high=1)), (0, dict(low=0, high=1, low_open=True, high_open=True)),
    (1, dict(low=0, high=1, low_open=True, high_open=True)), (2, dict(low=3)),
])
def test_check_number_rejects_each_bound(value, kwargs):
    with pytest.raises(InputError, match=r"^x must be .*; got "):
        check_number(value, "x", **kwargs)


@pytest.mark.parametrize("value", [float("inf"), float("-inf")])
def test_infinity_is_rejected_unless_finite_is_false_and_the_bounds_allow_it(value):
    with pytest.raises(InputError, match="finite"):
        check_number(value, "x")
    assert check_number(value, "x", finite=False) == value
    with pytest.raises(InputError):  # bounds hold even where infinity is allowed
        check_number(value, "x", low=0, high=10, finite=False)


def test_nan_is_rejected_always():
    for kwargs in ({}, dict(finite=False), dict(low=0), dict(high=1), dict(low=0, high=1, finite=False)):
        with pytest.raises(InputError, match="got nan"):
            check_number(float("nan"), "x", **kwargs)


@pytest.mark.parametrize("value", [True, False, "1", None, [1.0], torch.tensor(1.0), 1j])
def test_bools_strings_tensors_and_others_are_rejected(value):
    with pytest.raises(InputError, match=r"^lr must be"):
        check_number(value, "lr")


def test_messages_name_the_argument_and_say_what_the_bounds_are():
    def message(value, **kwargs):
        with pytest.raises(InputError) as info:
            check_number(value, "sigma", **kwargs)
        return str(info.value)

    assert message(0, low=0, low_open=True) == "sigma must be a finite positive number; got 0."
    assert message(-1, low=0) == "sigma must be a finite number >= 0; got -1."
    assert message(-1, low=0, finite=False) == "sigma must be a number >= 0; got -1."
    assert message(2, low=0, high=1) == "sigma must be a number in [0, 1]; got 2."
    assert message(1, low=0, high=1, low_open=True, high_open=True) == "sigma must be a number in (0, 1); got 1."
    assert message(5, high=1, high_open=True) == "sigma must be a finite number < 1; got 5."
    assert message("a") == "sigma must be a finite number; got 'a'."
    assert message(0, low=0, low_open=True, what="a positive scale (e.g. 3)") == \
        "sigma must be a positive scale (e.g. 3); got 0."
    assert message(0, low=0, low_open=True, message="give a positive sigma") == "give a positive sigma"


def test_max_memory_infinity_is_an_input_error_not_an_overflow():
    for bad in (float("inf"), float("nan"), 0, -1, True, "1GB"):
        with pytest.raises(InputError, match=r"max_memory must be a positive number of bytes"):
            check_max_memory(bad)
    assert check_max_memory(2.5 * 2**20) == int(2.5 * 2**20)
    assert check_max_memory(2**20) == 2**20


# ---------------------------------------------------------------------------------------------------------
# verdict
# ---------------------------------------------------------------------------------------------------------

def test_verdict_truth_table():
    from circuitlab.reproduce import VERDICTS, verdict

    assert verdict(True, True) == "reproduced"
    assert verdict(True, False) == "reproduced"  # the whole claim holding wins
    assert verdict(False, True) == "partly"
    assert verdict(False, False) == "not reproduced"
    # the rule's usual shapes: two parts that both must hold, one number against two thresholds
    for a in (False, True):
        for b in (False, True):
            assert verdict(a and b, a or b) == ["not reproduced", "partly", "partly", "reproduced"][2 * a + b]
    assert [verdict(r >= 10, r >= 3) for r in (2.9, 3, 9.99, 10)] == \
        ["not reproduced", "partly", "partly", "reproduced"]
    assert {verdict(x, y) for x in (0, 1) for y in (0, 1)} < set(VERDICTS)


# ---------------------------------------------------------------------------------------------------------
# spearman: one implementation (circuitlab.core), against pandas' and SciPy's
# ---------------------------------------------------------------------------------------------------------

def _random_with_ties(gen: torch.Generator, n: int) -> torch.Tensor:
    return torch.randint(0, max(2, n // 3), (n,), generator=gen).double()  # many ties


def test_spearman_against_pandas_average_ranks_with_ties():
    import pandas as pd

    from circuitlab.core import average_ranks, spearman

    gen = torch.Generator().manual_seed(0)
    for n in (2, 3, 7, 50, 301):
        a, b = _random_with_ties(gen, n), torch.randn(n, generator=gen, dtype=torch.float64).round(decimals=1)
        want = pd.Series(a.numpy()).rank().corr(pd.Series(b.numpy()).rank())
        got = spearman(a, b)
        assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, abs=1e-12)
        assert spearman(a.tolist(), b.tolist()) == pytest.approx(got, abs=1e-15, nan_ok=True)  # lists too
        assert average_ranks(a).tolist() == (pd.Series(a.numpy()).rank() - 1).tolist()
    assert math.isnan(spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))


def test_spearman_against_scipy():
    stats = pytest.importorskip("scipy.stats")
    from circuitlab.core import spearman

    gen = torch.Generator().manual_seed(1)
    for n in (5, 40, 400):
        a, b = _random_with_ties(gen, n), _random_with_ties(gen, n)
        assert spearman(a, b) == pytest.approx(stats.spearmanr(a.numpy(), b.numpy())[0], abs=1e-12)


def test_the_probing_and_reproduction_spearman_are_the_one_in_core():
    from circuitlab import core
    from circuitlab.probing import structural
    from circuitlab.reproduce import logit_lens

    assert structural.spearman is core.spearman and logit_lens.spearman is core.spearman


# ---------------------------------------------------------------------------------------------------------
# The L-BFGS logistic regressions and the probes' standardiser, against closed forms
# ---------------------------------------------------------------------------------------------------------

def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_binary_logistic_regression_without_penalty_fits_the_group_frequencies():
    # one 0/1 feature: the unpenalised fit is saturated, so sigmoid(b) and sigmoid(w + b) are the fractions of
    # positives among x = 0 and x = 1 (the maximum-likelihood estimate, in closed form)
    from circuitlab.concepts.tcav import logistic_regression

    x = torch.tensor([0.0] * 10 + [1.0] * 20)[:, None]
    y = torch.tensor([1] * 3 + [0] * 7 + [1] * 16 + [0] * 4)
    w, b = logistic_regression(x, y, l2=0.0, max_iter=1000)
    assert b == pytest.approx(_logit(0.3), abs=1e-6)
    assert float(w[0]) == pytest.approx(_logit(0.8) - _logit(0.3), abs=1e-6)


def test_linear_probe_without_weight_decay_fits_the_class_frequencies_of_each_group():
    # one-hot groups: the softmax probe is saturated, so its probabilities in each group are the class frequencies
    from circuitlab.probing import train_probe

    counts = [[6, 3, 1], [1, 1, 8], [2, 5, 3], [4, 4, 2]]  # [group][class]
    x, y = [], []
    for g, row in enumerate(counts):
        for c, k in enumerate(row):
            x += [torch.nn.functional.one_hot(torch.tensor(g), len(counts)).double()] * k
            y += [c] * k
    x, y = torch.stack(x), torch.tensor(y)
    probe = train_probe(x, y, 3, "linear", weight_decay=0.0, max_iter=2000, dtype=torch.float64)
    with torch.no_grad():
        p = torch.softmax(probe(torch.eye(len(counts), dtype=torch.float64)), -1)
    want = torch.tensor(counts, dtype=torch.float64)
    torch.testing.assert_close(p, want / want.sum(1, keepdim=True), atol=1e-5, rtol=0)


def test_the_probes_standardiser_uses_the_sample_mean_and_standard_deviation():
    import statistics

    from circuitlab.probing.classifier import Probe

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(9, 4, generator=gen, dtype=torch.float64) * torch.tensor([1.0, 10.0, 0.1, 0.0]) + 3
    probe = Probe(4, 2).double()
    xs = probe.standardise_on(x)
    cols = x.T.tolist()
    assert probe.mean.tolist() == pytest.approx([statistics.mean(c) for c in cols], abs=1e-12)
    # Bessel-corrected, and a constant column divided by the floor 1e-6 instead of zero
    assert probe.std.tolist() == pytest.approx([max(statistics.stdev(c), 1e-6) for c in cols], rel=1e-12)
    torch.testing.assert_close(xs[:, :3].mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(xs[:, :3].std(0), torch.ones(3, dtype=torch.float64))
    one = Probe(4, 2).double()
    assert one.standardise_on(x[:1]).abs().max() == 0 and one.std.tolist() == [1.0] * 4  # a single row


def test_the_elastic_net_probe_standardises_like_the_probe():
    from circuitlab.neurons.ranking import elastic_net_probe

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(30, 3, generator=gen) * torch.tensor([1.0, 5.0, 0.2]) + 1
    y = (x[:, 0] > 1).long()
    probe = elastic_net_probe(x, y, 2, l1=0.0, l2=0.1)
    torch.testing.assert_close(probe.mean, x.mean(0))
    torch.testing.assert_close(probe.std, x.std(0))


# ---------------------------------------------------------------------------------------------------------
# svg_open: the one opening of an inline SVG
# ---------------------------------------------------------------------------------------------------------

def test_svg_open_is_well_formed_svg_with_an_escaped_title():
    import xml.etree.ElementTree as ET

    from circuitlab.render.style import svg_open

    ns = "{http://www.w3.org/2000/svg}"
    root = ET.fromstring("".join(svg_open(120, "45.5", "cl-x", "a < b & 'c'", role="img") + ["</svg>"]))
    assert root.tag == f"{ns}svg" and root.get("class") == "cl-x" and root.get("role") == "img"
    assert (root.get("viewBox"), root.get("width"), root.get("height")) == ("0 0 120 45.5", "120", "45.5")
    assert root.get("font-size") == "10" and root.find(f"{ns}title").text == "a < b & 'c'"
    bare = ET.fromstring("".join(svg_open(3, 4, "cl-y", font_size=12) + ["</svg>"]))
    assert bare.get("font-size") == "12" and bare.find(f"{ns}title") is None and bare.get("role") is None


def test_every_renderer_opens_its_svg_with_svg_open():
    import inspect

    from circuitlab import render
    from circuitlab.render import concepts, graph, neurons, probing, style

    for module in (concepts, graph, neurons, probing):
        text = inspect.getsource(module)
        assert "<svg " not in text and "svg_open(" in text, module.__name__
    assert "<svg " in inspect.getsource(style) and render is not None


# ---------------------------------------------------------------------------------------------------------
# labelled_sentences: the one loader of sentences by name
# ---------------------------------------------------------------------------------------------------------

def test_labelled_sentences_reads_each_source(tmp_path):
    from circuitlab.probing import template_sentences, write_conllu
    from circuitlab.probing.sentences import labelled_sentences

    want = template_sentences(12, seed=3)
    got = labelled_sentences("templates", 12, seed=3)
    assert [s.words for s in got] == [s.words for s in want] and [s.head for s in got] == [s.head for s in want]
    path = tmp_path / "s.conllu"
    path.write_text(write_conllu(want))
    read = labelled_sentences(str(path), 5)
    assert [s.words for s in read] == [s.words for s in want[:5]] and [s.upos for s in read] == \
        [s.upos for s in want[:5]]
    assert labelled_sentences(want, 3) is want  # loaded sentences pass through
    with pytest.raises(InputError, match=r"^--labelled 'nope\.conllu' is neither 'templates', 'default' nor a CoNLL-U"):
        labelled_sentences("nope.conllu", 5, option="--labelled")
