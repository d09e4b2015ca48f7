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


def test_answers_follow_the_one_answer_rule(logits):
    """One answer for every prompt (a str, an int, a one-element list or tensor) or one per prompt."""
    shared = LogitDiff(2, 7)(logits)
    for correct, wrong in (([2], 7), (torch.tensor([2]), [7]), (torch.tensor(2), torch.tensor([7]))):
        assert torch.allclose(LogitDiff(correct, wrong)(logits), shared)
    assert torch.allclose(LogitDiff([2, 2, 2], torch.tensor([7, 7, 7]))(logits), shared)


def _word_tokenizer(words: list[str]):
    """A word-level tokenizer whose ids follow ``words`` (``words[0]`` is BOS), like the zoo's."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token=words[0]))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token=words[0], eos_token=words[0],
                                   pad_token=words[0], unk_token=words[0], add_bos_token=True,
                                   name_or_path=f"test-word-level-{words[1]}")


def test_a_metric_reused_on_another_model_reads_that_models_ids():
    """Text answers are tokenized per model: the same metric on two models with different vocabularies."""
    from circuitlab.patching import sweep

    words = ["<bos>"] + [f"t{i}" for i in range(49)]
    a, b = random_model("gpt2", seed=1), random_model("gpt2", seed=2)
    a.set_tokenizer(_word_tokenizer(words))
    b.set_tokenizer(_word_tokenizer(words[:1] + words[:0:-1]))  # the same words in reverse order
    assert a.to_single_token("t3") != b.to_single_token("t3")
    metric = LogitDiff("t3", "t7")
    clean, corrupted = torch.tensor([[0, 5, 9, 12, 30]]), torch.tensor([[0, 5, 40, 12, 30]])
    for model in (a, b, a):
        by_id = LogitDiff(model.to_single_token("t3"), model.to_single_token("t7"))
        ours = sweep(model, clean, corrupted, metric, "resid_pre", progress=False)
        ref = sweep(model, clean, corrupted, by_id, "resid_pre", progress=False)
        assert torch.allclose(ours.values, ref.values, atol=1e-6)
        with torch.no_grad():
            assert abs(ours.meta["clean_value"] - float(by_id(model(clean)))) < 1e-5
    assert metric.model is None  # binding made copies; the metric itself is unchanged
    cols_a, cols_b = metric.bind(a).reads(1, 5)[1], metric.bind(b).reads(1, 5)[1]
    assert cols_a.tolist() == [[4, 8]] and cols_b.tolist() == [[46, 42]]
    explicit = LogitDiff("t3", "t7", model=a)  # model= serves direct calls; an analysis binds its own model
    assert explicit.reads(1, 5)[1].tolist() == [[4, 8]] and explicit.bind(b).reads(1, 5)[1].tolist() == [[46, 42]]
    norm = Normalized.fit(metric, b, clean, corrupted)
    assert norm.bind(b).reads(1, 5)[1].tolist() == [[46, 42]] and norm.metric is metric
