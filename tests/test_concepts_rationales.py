"""Explanations as rationales (AMPLIFY): words from token attributions, rationale selection and text, and the
few-shot prompt against hand-written cases; the experiment's accuracies and margins recomputed from the model's own
logits one prompt at a time, on a small random-init model with zoo/toy-lm's tokenizer and a long context."""

from __future__ import annotations

import warnings

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

import circuitlab as cl
from circuitlab.concepts import rationales as R
from circuitlab.errors import CircuitlabError
from circuitlab.tasks.mixed_reviews import ASIDES, mixed_reviews
from circuitlab.tasks.reviews import NEGATIVE, POSITIVE


def long_context_model() -> HookedTransformer:
    """2 layers, d_model 64, n_ctx 2048, random weights (seeded), zoo/toy-lm's BPE tokenizer."""
    tok = cl.load_model("zoo/toy-lm").tokenizer
    cfg = HookedTransformerConfig(n_layers=2, d_model=64, n_heads=4, d_head=16, d_mlp=128, n_ctx=2048,
                                  d_vocab=len(tok), act_fn="gelu_new", normalization_type="LN", seed=0,
                                  default_prepend_bos=True)
    model = HookedTransformer(cfg, tokenizer=tok)
    model.eval()
    return model


@pytest.fixture(scope="module")
def small():
    return long_context_model()


def test_word_scores_sum_tokens_into_words():
    toks = ["<|endoftext|>", "We", " went", " on", " T", "ues", "day", ".", " The", " me", "al", " was", " d", "read",
            "ful", "."]
    scores = torch.arange(len(toks), dtype=torch.float64)
    got = R.word_scores(toks, scores, start=1)
    assert got == [("We", 1.0), ("went", 2.0), ("on", 3.0), ("Tuesday", 4 + 5 + 6.0), ("The", 8.0),
                   ("meal", 9 + 10.0), ("was", 11.0), ("dreadful", 12 + 13 + 14.0)]
    # a punctuation token glued to a word (one token ".\"" or "don't") and surrounding quotes
    assert R.word_scores(["\"Hi", "!\"", " don't"], torch.tensor([1.0, 2.0, 3.0])) == [("Hi", 1.0), ("don't", 3.0)]
    with pytest.raises(CircuitlabError, match="one per token"):
        R.word_scores(["a"], torch.tensor([1.0, 2.0]))


def test_select_rationale_and_random_rationale():
    words = [("The", 0.1), ("meal", 0.5), ("was", -0.2), ("dreadful", 2.0), ("Meal", 0.7), ("the", 0.05)]
    assert R.select_rationale(words, 3) == ["dreadful", "meal", "The"]  # "Meal" counts as "meal", first spelling
    assert R.select_rationale(words, 1) == ["dreadful"]
    assert R.select_rationale([("a", -1.0), ("b", 0.0)], 3) == []
    assert R.select_rationale([("x", 1.0), ("y", 1.0)], 1) == ["x"]  # ties by position
    picked = R.random_rationale(["a", "b", "B", "c", "d"], 3, seed=4)
    assert len(picked) == 3 and len({p.lower() for p in picked}) == 3 and set(picked) <= {"a", "b", "c", "d"}
    assert picked == R.random_rationale(["a", "b", "B", "c", "d"], 3, seed=4)
    assert sorted(R.random_rationale(["a", "b"], 5)) == ["a", "b"]


def test_rationale_text_and_prompt_by_hand():
    assert R.rationale_text(["dreadful", "meal"], "negative") == \
        'The key words: "dreadful" and "meal" are important clues to predict "negative" as the correct answer.'
    assert R.rationale_text(["a", "b", "c"], "positive").startswith('The key words: "a", "b" and "c" are')
    assert R.rationale_text(["lovely"], "positive") == \
        'The key word: "lovely" is an important clue to predict "positive" as the correct answer.'
    assert R.rationale_text([], "positive") == ""
    shots = [R.Shot("The meal was dreadful.", "negative", "R1"), R.Shot("A lovely show.", "positive")]
    assert R.few_shot_prompt(shots, "The trip was superb.", instruction="Classify.") == (
        "Classify.\n\nReview: The meal was dreadful.\nAnswer: negative\nRationale: R1\n\n"
        "Review: A lovely show.\nAnswer: positive\n\nReview: The trip was superb.\nAnswer:")
    with pytest.raises(CircuitlabError, match="shots"):
        R.few_shot_prompt(shots[0], "x")


def test_mixed_reviews_keep_the_review_and_add_one_aside():
    data = mixed_reviews(10, "test", seed=3)
    assert len(data) == 20 and {lab for _, lab in data} == {0, 1}
    for text, label in data:
        assert sum(a in text for a in ASIDES) == 1
        words = {w.strip(".,").lower() for w in text.split()}
        assert words & set(POSITIVE if label else NEGATIVE) and not words & set(NEGATIVE if label else POSITIVE)
    assert data == mixed_reviews(10, "test", seed=3) and data != mixed_reviews(10, "test", seed=4)


def test_amplify_accuracy_is_the_models_own_answers(small):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the random model's IG completeness at few steps is not under test here
        r = R.amplify(small, n_proxy=6, n_pool=3, n_queries=2, n_shots=2, k=2, seeds=(3,), steps=4)
    assert r.accuracy.shape == (3, 1) and r.accuracy.labels["condition"] == list(R.CONDITIONS)
    assert r.accuracy.meta["prefix_reuse"]  # the common prefix ran once, and the numbers below are the plain ones
    test = mixed_reviews(2, "test", seed=0)
    ids = [int(small.to_tokens(" negative", prepend_bos=False)[0, 0]),
           int(small.to_tokens(" positive", prepend_bos=False)[0, 0])]
    for si in range(1):
        for ci, cond in enumerate(R.CONDITIONS):
            shots = [R.Shot(d["text"], d["label"], "" if cond == "none" else R.rationale_text(d[cond], d["label"]))
                     for d in r.shots[si]]
            right, margins = 0, []
            for q, y in test:
                prompt = R.few_shot_prompt(shots, q)
                if si == 0 and q == test[0][0]:
                    assert prompt == r.prompts[cond]
                with torch.no_grad():
                    lp = torch.log_softmax(small(prompt)[0, -1].double(), -1)[ids]
                right += int(lp.argmax()) == y
                margins.append(float(lp[y] - lp[1 - y]))
            assert float(r.accuracy.values[ci, si]) == pytest.approx(right / len(test))
            assert float(r.margin.values[ci, si]) == pytest.approx(sum(margins) / len(margins), abs=1e-4)
    for d in r.shots[0]:  # the rationale words are words of the demonstration, the IG ones of positive score
        words = dict((w.lower(), s) for w, s in d["words"])
        assert all(w.lower() in words and words[w.lower()] > 0 for w in d["ig"])
        assert all(w.lower() in words for w in d["random"]) and len(d["random"]) == (len(d["ig"]) or 2)
    assert sorted(d["label"] for d in r.shots[0]) == ["negative", "positive"]


@pytest.mark.parametrize("kwargs", [dict(n_shots=3), dict(n_shots=8, n_pool=2), dict(k=0), dict(seeds=[1, 1]),
                                    dict(steps=0), dict(n_queries=0)])
def test_bad_arguments_are_named(small, kwargs):
    with pytest.raises(CircuitlabError, match=list(kwargs)[0]):
        R.amplify(small, **kwargs)


def test_the_finding_is_registered_and_its_judge_is_the_rule():
    import random

    from circuitlab import reproduce
    from circuitlab.reproduce import rationales as F

    f = reproduce.get_finding("amplify-rationales-help-few-shot")
    assert f is F.FINDING and "Ma" in f.citation.authors and f.models == ("smollm2-135m",)
    assert "5 points" in f.rule and "2.5 points" in f.rule and "random words" in f.rule
    rng = random.Random(0)
    for _ in range(500):
        acc = {c: rng.choice([0.4, 0.45, 0.5, 0.525, 0.55, 0.6]) for c in ("none", "ig", "random")}
        assert F.judge(acc) == (acc["ig"] - acc["none"] >= 0.05, acc["ig"] - acc["random"] >= 0.025)


def test_cli_rationales_prints_the_librarys_numbers(small, capsys, monkeypatch):
    import circuitlab
    from circuitlab.cli import main

    made = []

    def small_amplify(model, **kwargs):  # the library's function, on a small proxy set; its result kept
        made.append(real_amplify(model, **{**kwargs, "n_proxy": 4, "n_pool": 2}))
        return made[-1]

    real_amplify = R.amplify
    monkeypatch.setattr(circuitlab, "load_model", lambda name: small)
    monkeypatch.setattr(R, "amplify", small_amplify)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["rationales", "-m", "small", "--proxy", "small", "--seeds", "1", "--queries", "1", "--shots",
                     "2", "-k", "1", "--steps", "2", "-q"]) == 0
    (r,) = made
    text = capsys.readouterr().out
    for i, c in enumerate(R.CONDITIONS):
        assert f"{c:<7} accuracy {100 * float(r.accuracy.values[i].mean()):5.1f}%  margin " \
               f"{float(r.margin.values[i].mean()):+.3f}" in text
    assert r.prompts["ig"] in text and r.accuracy.shape == (3, 1)
