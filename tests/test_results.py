"""Result.top against a brute-force sort of the entries, NaN entries left out."""

from __future__ import annotations

import math

import torch

from circuitlab.results import Result


def _brute(values: torch.Tensor, k: int, largest: bool, absolute: bool):
    entries = [(idx, float(values[idx])) for idx in
               [tuple(int(j) for j in torch.unravel_index(torch.tensor(i), values.shape))
                for i in range(values.numel())]]
    entries = [e for e in entries if not math.isnan(e[1])]
    key = (lambda e: abs(e[1])) if absolute else (lambda e: e[1])
    return sorted(entries, key=key, reverse=largest)[:k]


def test_top_leaves_nan_entries_out():
    gen = torch.Generator().manual_seed(0)
    values = torch.randn(3, 5, generator=gen)
    values[0, 1] = values[2, 4] = float("nan")  # e.g. the padding of a narrower hook
    res = Result(values, ("layer", "neuron"))
    for largest in (True, False):
        for absolute in (False, True):
            for k in (1, 4, 13, 20):
                assert res.top(k, largest=largest, absolute=absolute) == _brute(values, k, largest, absolute)
    assert len(res.top(20)) == 13
    assert Result(torch.full((2,), float("nan")), ("x",)).top(3) == []
