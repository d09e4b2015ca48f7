"""Result.top against a brute-force sort of the entries, NaN entries left out."""

from __future__ import annotations

import math

import pytest
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


# -- serialisation: to_jsonable / to_json / from_jsonable ---------------------------------------------------------
def test_result_json_round_trip_is_exact_and_strict():
    import json
    import math

    from circuitlab.results import Result, from_jsonable

    g = torch.Generator().manual_seed(0)
    values = torch.randn(3, 4, generator=g)
    values[1, 2] = float("nan")
    values[0, 0] = float("inf")
    res = Result(values=values, axes=("layer", "head"), title="t", metric="m", model="zoo/x", task="k",
                 meta={"scores": torch.arange(3.0, dtype=torch.float64), "n": 2, "path": ("a", 1)})
    text = res.to_json()
    data = json.loads(text)  # strict JSON: no NaN / Infinity literals
    assert "NaN" not in text and data["values"]["data"][1][2] is None and data["values"]["data"][0][0] == "Infinity"
    assert data["labels"]["head"] == ["H0", "H1", "H2", "H3"] and data["axes"] == ["layer", "head"]
    back = from_jsonable(data)
    assert torch.equal(back.values.isnan(), values.isnan())
    finite = ~values.isnan()
    assert torch.equal(back.values[finite], values[finite]) and back.values.dtype == torch.float32
    assert back.meta["scores"].dtype == torch.float64 and torch.equal(back.meta["scores"], torch.arange(3.0).double())
    assert back.meta["path"] == ["a", 1] and back.axes == res.axes and back.labels == res.labels
    assert math.isinf(back.values[0, 0])


def test_top_tokens_and_bundles_serialise():
    from dataclasses import dataclass

    from circuitlab.results import Bundle, Result, TopTokens, from_jsonable, to_jsonable
    from circuitlab.errors import InputError

    top = TopTokens.from_scores(torch.tensor([[0.1, 0.9, 0.5], [0.3, 0.2, 0.7]]), 2,
                                lambda ids: [f"tok{i}" for i in ids.tolist()], axes=("layer", "rank"))
    back = from_jsonable(to_jsonable(top))
    assert isinstance(back, TopTokens) and back.tokens == [["tok1", "tok2"], ["tok2", "tok0"]]
    assert torch.equal(back.token_ids, top.token_ids) and torch.equal(back.values, top.values)

    @dataclass(repr=False)
    class Pair(Bundle):
        a: Result
        layer: int

    pair = Pair(a=Result(values=torch.zeros(2, dtype=torch.bfloat16), axes=("pos",)), layer=3)
    d = to_jsonable(pair)
    assert d["kind"] == "Pair" and d["fields"]["layer"] == 3
    assert d["fields"]["a"]["values"] == {"dtype": "bfloat16", "shape": [2], "data": [0.0, 0.0]}
    with pytest.raises(InputError, match="Result or TopTokens"):
        from_jsonable(d)
