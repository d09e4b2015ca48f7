"""The start token: ``start_token_loss`` against a brute-force loop, ``set_start_token`` on a zoo model.

The real models' chosen start tokens (and their cards) are tested in ``test_real_models.py``, which shares their
loads.
"""

from __future__ import annotations

import math

import pytest
import torch

import circuitlab
from circuitlab.core import to_tokens
from circuitlab.errors import InputError
from circuitlab.models.start_token import set_start_token, start_token_loss
from circuitlab.tasks.repeated import bos_token_id

TEXTS = ["the cat sat on the mat.", "a small dog ran to the old house and slept", "she said no."]


@pytest.fixture(scope="module")
def toy():
    return circuitlab.load_model("zoo/toy-lm")


def _brute_force(model, text, start):
    """One forward pass per text and candidate, the loss summed token by token in Python."""
    ids = model.tokenizer.encode(text, add_special_tokens=False)
    seq = ([] if start is None else [start]) + ids
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([seq]))[0].double(), -1)
    off = 0 if start is None else 1
    rest = [-logp[off + k - 1, ids[k]].item() for k in range(1, len(ids))]  # tokens 2..n
    first = -logp[0, ids[0]].item() if start is not None else math.nan
    return rest, first


def test_start_token_loss_equals_a_brute_force_loop(toy):
    word = toy.tokenizer.encode(" house", add_special_tokens=False)[0]
    res = start_token_loss(toy, TEXTS, [None, "<|endoftext|>", word], max_memory=2**16)  # several batches
    assert res.axes == ("candidate", "measure") and res.labels["candidate"][:2] == ["none", "<|endoftext|>"]
    for c, start in enumerate([None, 0, word]):
        pooled, firsts = [], []
        for t, text in enumerate(TEXTS):
            rest, first = _brute_force(toy, text, start)
            pooled += rest
            firsts.append(first)
            assert res.meta["per_text"][c, t].item() == pytest.approx(sum(rest) / len(rest), abs=1e-5)
        assert res.values[c, 0].item() == pytest.approx(sum(pooled) / len(pooled), abs=1e-5)
        if start is None:
            assert math.isnan(res.values[c, 1].item())
        else:
            assert res.values[c, 1].item() == pytest.approx(sum(firsts) / len(firsts), abs=1e-5)
    assert res.meta["n_tokens"] == len(pooled)
    # the model was trained with <|endoftext|> in front of its texts: the loss says so
    assert res.values[1, 0] < res.values[0, 0] and res.values[1, 0] < res.values[2, 0]


def test_start_token_loss_refuses_bad_inputs(toy):
    with pytest.raises(InputError, match="texts must be a list"):
        start_token_loss(toy, "the cat sat.", [None])
    with pytest.raises(InputError, match="not one token"):
        start_token_loss(toy, TEXTS, ["the cat"])
    with pytest.raises(InputError, match="outside this model's vocabulary"):
        start_token_loss(toy, TEXTS, [10**9])
    with pytest.raises(InputError, match="same start token twice"):
        start_token_loss(toy, TEXTS, ["<|endoftext|>", 0])
    with pytest.raises(InputError, match="at least two"):
        start_token_loss(toy, ["the"], [None])
    with pytest.raises(InputError, match="single value"):
        start_token_loss(toy, TEXTS, "<|endoftext|>")


def test_set_start_token_changes_what_every_analysis_prepends():
    model = circuitlab.load_model("zoo/toy-lm")  # its own copy: the tokenizer is changed
    the = model.tokenizer.encode("the", add_special_tokens=False)[0]
    assert to_tokens(model, "the cat sat")[0, 0].item() == 0
    assert set_start_token(model, "the") == the
    toks = to_tokens(model, "a cat sat")[0].tolist()
    assert toks[0] == the and toks[1:] == model.tokenizer.encode("a cat sat", add_special_tokens=False)
    assert to_tokens(model, "a cat sat", prepend_bos=False)[0].tolist() == toks[1:]
    assert bos_token_id(model) == the  # what the induction tasks put in front of repeated tokens
