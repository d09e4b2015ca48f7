"""Declarative metrics: plain callables on full logits, and their fast path reads the same numbers."""

import pytest
import torch

from circuitlab.errors import CircuitlabError, InputError
from circuitlab.metrics import LogitDiff, Normalized, Probability, is_declarative, select_logits
from circuitlab.testing import random_model


@pytest.fixture(scope="module")
def logits():
    return torch.randn(3, 5, 11, generator=torch.Generator().manual_seed(0))


def test_logit_diff_matches_hand_computation(logits):
    m = LogitDiff(correct=[1, 2, 3], wrong=4, pos=-1)
    expected = (logits[torch.arange(3), -1, torch.tensor([1, 2, 3])] - logits[:, -1, 4]).mean()
    assert torch.allclose(m(logits), expected)
    m2 = LogitDiff(correct=2, wrong=7, pos=[1, 2, 0])
    expected2 = torch.stack([logits[b, p, 2] - logits[b, p, 7] for b, p in enumerate([1, 2, 0])]).mean()
    assert torch.allclose(m2(logits), expected2)


def test_probability_matches_softmax(logits):
    p = Probability(answer=6, pos=2)
    assert torch.allclose(p(logits), logits[:, 2].softmax(-1)[:, 6].mean())
    lp = Probability(answer=[6, 0, 1], log=True)
    assert torch.allclose(lp(logits), logits[:, -1].log_softmax(-1)[torch.arange(3), torch.tensor([6, 0, 1])].mean())


def test_from_selected_keeps_leading_patch_axes(logits):
    """The engine calls from_selected on [n_patches, batch, k, c]; each patch must get its own value."""
    m = LogitDiff(correct=1, wrong=2)
    stacked = torch.stack([logits, 2 * logits])  # two "patches"
    pos, cols = m.reads(3, 5)
    sel = torch.stack([select_logits(x, pos, cols) for x in stacked])
    assert torch.allclose(m.from_selected(sel), torch.stack([m(logits), m(2 * logits)]))


def test_normalized_is_zero_on_corrupted_and_one_on_clean():
    model = random_model("gpt2", seed=3)
    clean, corrupted = torch.tensor([[1, 2, 3, 4]]), torch.tensor([[1, 9, 3, 4]])
    norm = Normalized.fit(LogitDiff(5, 6), model, clean, corrupted)
    with torch.no_grad():
        assert abs(float(norm(model(clean))) - 1) < 1e-5
        assert abs(float(norm(model(corrupted)))) < 1e-5
    assert is_declarative(norm) and not is_declarative(Normalized(lambda x: x.sum(), 1.0, 0.0))


def test_text_answers_need_a_model(logits):
    with pytest.raises(CircuitlabError, match="model="):
        LogitDiff(" Mary", " John")(logits)


def test_bad_shapes_are_input_errors(logits):
    with pytest.raises(InputError, match="2 correct answers for 3 prompts"):
        LogitDiff([1, 2], 3)(logits)
    with pytest.raises(InputError, match="outside prompts of 5 tokens"):
        LogitDiff(1, 2, pos=7)(logits)
    with pytest.raises(InputError, match="both the clean and the corrupted"):
        Normalized(LogitDiff(1, 2), 0.5, 0.5)
