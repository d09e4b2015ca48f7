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
