"""Ratios of noise and repeats that invalidate a control (issue 30, items 3 and 4).

A difference within the resolution of the values' dtype (:func:`circuitlab.core.resolution`) is never divided by
or decided on: a user's input that does not move the quantity is an ``InputError``; a per-item tie inside a larger
result is undefined (NaN / left out, counted, warned). Repeated items where a method assumes distinct ones are
refused, and identical sentences never straddle a train / test split. Every test here fails on the code before
these fixes (each says what the old code did).
"""

from __future__ import annotations

import copy
import functools
import math
import warnings

import pytest
import torch

import circuitlab as cl
from circuitlab import circuits, probing, tracing
from circuitlab.concepts import gradients, tcav
from circuitlab.core import check_difference, resolution, unresolved
from circuitlab.errors import InputError
from circuitlab.metrics import LogitDiff, Normalized
from circuitlab.neurons import explain
from circuitlab.probing import minimal_pairs
from circuitlab.probing.cloze import answer_ranks
from circuitlab.tasks.minimal_pairs import MinimalPair

TOY, WORDS = "zoo/toy-lm", "zoo/attn-only-2l"
CLEAN, CORRUPTED = "The cat sat on the mat and the dog", "The dog sat on the mat and the cat"
LD = LogitDiff(" mat", " cat")


@functools.lru_cache(maxsize=None)
def toy():
    return cl.load_model(TOY)


@functools.lru_cache(maxsize=None)
def twin_tokens():
    """zoo/toy-lm with " dog"'s embedding 1e-6 away from " cat"'s (relative): a corruption " cat" -> " dog" then moves
    the logit difference by 1.2e-6, ten float32 ulps of it (the same size as the disagreement between two code
    paths computing it)."""
    model = copy.deepcopy(toy())
    cat, dog = model.to_single_token(" cat"), model.to_single_token(" dog")
    with torch.no_grad():
        noise = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0))
        model.embed.W_E[dog] = model.embed.W_E[cat] * (1 + 1e-6 * noise)
    return model


# -- the rule ----------------------------------------------------------------------------------------------------

def test_resolution_is_ulps_of_the_dtype_times_the_magnitude():
    eps32, eps16 = torch.finfo(torch.float32).eps, torch.finfo(torch.bfloat16).eps
    assert resolution(0.5) == resolution(1.0) == 1024 * eps32  # floor 1: logit-scale values
    assert resolution(40.0) == 1024 * eps32 * 40
    assert resolution(1e-3, floor=0.0) == 1024 * eps32 * 1e-3  # probabilities: relative to themselves
    assert resolution(1.0, torch.bfloat16) == 1024 * eps16
    assert check_difference(2.0, 1.5, "x", "fix") == 0.5
    with pytest.raises(InputError, match="within the resolution.*Choose better"):
        check_difference(2.0, 2.0 + 1e-7, "the two values", "Choose better.")
    with pytest.raises(InputError):
        check_difference(float("nan"), 1.0, "x", "fix")
    assert unresolved([1.0, 1.0, -30.0], [1.0 + 1e-7, 1.1, -30.0 + 1e-4]).tolist() == [True, False, True]


# -- ratios: a corruption that does not move the metric is refused -----------------------------------------------

@pytest.mark.parametrize("metric", [LD, None], ids=["logit_diff", "kl"])
def test_faithfulness_with_a_corruption_equal_to_the_clean_prompt_is_refused(metric):
    """The old code reported "recovered" 0.0 (logit diff: full - empty was 1.9e-6 of float noise)."""
    circuit = circuits.Circuit.from_edges(circuits.Graph.from_model(toy()), ["L0H0 -> logits"])
    with pytest.raises(InputError, match="does not move the metric"):
        circuits.faithfulness(toy(), CLEAN, CLEAN, circuit, metric)
    # a real corruption still gives numbers
    assert torch.isfinite(circuits.faithfulness(toy(), CLEAN, CORRUPTED, circuit, metric).values).all()


def test_faithfulness_curve_with_a_corruption_that_moves_the_metric_by_noise_is_refused():
    """The corruption swaps " cat" for its near twin: the old curve gave "recovered" -1.0, 4.0, 2.0 for k = 0, 5, 50."""
    model = twin_tokens()
    scores = circuits.eap(model, CLEAN, CORRUPTED, LD)
    with pytest.raises(InputError, match="float noise"):
        circuits.faithfulness_curve(model, CLEAN, CORRUPTED, scores, ks=[0, 5, 50], metric=LD)


def test_normalized_refuses_a_difference_of_float_noise():
    """The old threshold was 1e-12: Normalized.fit on the twin-token corruption (1.2e-6 apart) normalised by noise."""
    with pytest.raises(InputError, match="cannot normalise"):
        Normalized.fit(LD, twin_tokens(), CLEAN, CORRUPTED)
    with pytest.raises(InputError, match="cannot normalise"):
        Normalized(LD, 1.0, 1.0 + 1e-9)
    assert Normalized(LD, 1.0, 0.5).clean == 1.0


def test_a_normalised_indirect_effect_over_a_gap_of_noise_is_refused():
    """clean and corrupted probabilities 1e-9 apart: the old code divided by the gap (effects of order 1e8)."""
    res = tracing.CausalTrace(values=torch.full((1, 2, 2), 0.5), axes=("kind", "pos", "layer"),
                              labels={"kind": ["resid"], "pos": ["a", "b"], "layer": ["0", "1"]},
                              meta={"clean_prob": 0.5 + 1e-9, "corrupted_prob": 0.5})
    with pytest.raises(InputError, match="noise scale"):
        res.indirect_effect(normalized=True)
    res.meta["clean_prob"] = 0.75
    assert torch.allclose(res.indirect_effect(normalized=True).values, torch.zeros(1, 2, 2))  # (0.5 - 0.5) / 0.25


def test_integrated_gradients_over_a_null_difference_has_no_relative_gap():
    """The baseline is the input itself: metric(input) - metric(baseline) = 0, and |gap| / 0 is undefined (NaN), not
    0 (the old code's value) or inf."""
    model = toy()
    the = model.to_single_token(" the")
    tokens = torch.tensor([[model.tokenizer.bos_token_id, the, the, the]])
    with warnings.catch_warnings():
        warnings.simplefilter("error", gradients.CompletenessWarning)
        res = gradients.integrated_gradients(model, tokens, LD, baseline=the, keep_bos=True, steps=4)
    assert math.isnan(res.meta["relative_gap"]) and res.meta["difference"] == 0.0


# -- decisions by a comparison: ties are not wins ----------------------------------------------------------------

def test_a_minimal_pair_of_identical_sentences_is_refused():
    """The old code accepted it (the pair then scored by float noise)."""
    with pytest.raises(InputError, match="same sentence"):
        MinimalPair("The dogs are hungry.", "The dogs are hungry.", "agreement")
    with pytest.raises(InputError, match="line 2.*same sentence"):
        minimal_pairs.read_blimp(['{"sentence_good": "A b.", "sentence_bad": "A c.", "UID": "x"}',
                                  '{"sentence_good": "A b.", "sentence_bad": "A b. ", "UID": "x"}'])


def test_a_minimal_pair_that_tokenises_identically_is_refused_by_its_index():
    """On the word-level model two spaces read as one: the two sentences are one token sequence."""
    pairs = [MinimalPair("t1 t2 t3", "t1 t2 t4", "x"), MinimalPair("t1  t2 t3", "t1 t2 t3", "x")]
    with pytest.raises(InputError, match="pair 1 is not a minimal pair.*tokenise identically"):
        minimal_pairs.score_pairs(cl.load_model(WORDS), pairs)
    prefix = [MinimalPair("The dogs are.", "The dogs is.", "x", "The dogs", "are", " are")]
    with pytest.raises(InputError, match="pair 0 .*critical words"):
        minimal_pairs.score_pairs(toy(), prefix, method="prefix")


def test_minimal_pairs_within_float_noise_are_undefined_and_left_out(monkeypatch):
    """Four pairs; pair 1's log-probabilities differ by 1e-9 (a tie). The old code scored it (good > bad: correct)
    and reported 3/4; now it is undefined, warned about, and the accuracy is over the three decided pairs."""
    pairs = [MinimalPair(f"The dog{'s' * (i % 2)} run {i}.", f"The dog{'s' * (i % 2)} runs {i}.", "agr")
             for i in range(4)]
    good = torch.tensor([-20.0, -30.0 + 1e-9, -25.0, -22.0], dtype=torch.float64)
    bad = torch.tensor([-21.0, -30.0, -24.0, -23.0], dtype=torch.float64)
    monkeypatch.setattr(minimal_pairs, "sentence_logprob", lambda *a, **k: torch.cat([good, bad]))
    with pytest.warns(UserWarning, match="1 of 4 pairs"):
        res = minimal_pairs.score_pairs(toy(), pairs)
    assert res.decided.tolist() == [True, False, True, True]
    assert res.correct.tolist() == [True, False, False, True]
    assert res.meta["undefined"] == [1]
    assert res.values.tolist() == [pytest.approx(2 / 3)] and res.meta["overall"] == pytest.approx(2 / 3)


def test_cloze_ranks_count_a_tied_token_above_the_answer():
    """A token whose unembedding equals the answer's has the same logit: the old rank (strictly higher logits only)
    put the answer first regardless; brute force counts every other token with a logit >= the answer's."""
    model = copy.deepcopy(toy())
    prompt, answer = "The cat sat on the", model.to_single_token(" mat")
    with torch.no_grad():
        logits = model(prompt)[0, -1]
        twin = int(logits.argsort(descending=True)[5]) if int(logits.argmax()) == answer else int(logits.argmax())
        model.unembed.W_U[:, twin] = model.unembed.W_U[:, answer]
        model.unembed.b_U[twin] = model.unembed.b_U[answer]
        logits = model(prompt)[0, -1]
    want = int((logits >= logits[answer]).sum()) - 1
    got = int(answer_ranks(model, [prompt], torch.tensor([answer]))[0])
    assert got == want and got >= 1


# -- repeats that invalidate a control ---------------------------------------------------------------------------

def test_score_explanations_refuses_a_neuron_twice():
    """The old code scored [511, 511]: the shuffled control of one copy was the other's (equal) explanation."""
    texts = [CLEAN, CORRUPTED, "Wexmira has a house in", "The king went to the sea."]
    for neurons in ([511, 511], [3, 511, -1]):
        with pytest.raises(InputError, match="neurons repeats 511"):
            explain.score_explanations(toy(), texts, layer=3, neurons=neurons, n_explain=2, n_top=2, n_random=2,
                                       progress=False)


def test_identical_sentences_share_a_split():
    """Brute force: every copy of a sentence lands in one split; without repeats the split is the old one."""
    keys = [0, 1, 2, 0, 3, 4, 5, 1, 6, 7, 8, 9, 0, 10]
    parts = probing.split_sentences(len(keys), (0.6, 0.2, 0.2), seed=3, keys=keys)
    where = {i: name for name, idx in parts.items() for i in idx.tolist()}
    assert sorted(where) == list(range(len(keys)))  # every sentence in exactly one split
    for k in set(keys):
        assert len({where[i] for i, key in enumerate(keys) if key == k}) == 1
    plain = probing.split_sentences(20, seed=1)
    keyed = probing.split_sentences(20, seed=1, keys=list("abcdefghijklmnopqrst"))
    assert all(torch.equal(plain[n], keyed[n]) for n in plain)
    with pytest.raises(InputError, match="only 2 distinct"):
        probing.split_sentences(10, keys=["a", "b"] * 5)


def test_a_probe_on_one_repeated_sentence_is_refused():
    """30 copies of one sentence: the old split put copies in train and test, and the probe scored 1.0 on its own
    memorised labels."""
    one = probing.template_sentences(30)[:1] * 30
    with pytest.raises(InputError, match="1 distinct"):
        probing.probe_sweep(toy(), one, hooks=["blocks.1.hook_resid_post"], probes=("linear",), seeds=(0,),
                            progress=False, cache=False)


@pytest.mark.parametrize("concepts,random_texts,match", [
    ({"pets": ["the cat", "a dog", "the cat", "my cat"]}, None, r"concepts\['pets'\] repeats 'the cat'"),
    ({"pets": ["the cat", "a dog", "my cat"]}, ["the sea", "a hill", "the sea", "the king", "a door", "the road"],
     "random_texts repeats 'the sea'"),
    ({"pets": ["the sea", "a hill", "old bread"]}, None, "shares 3 text"),  # the concept set is the random set
])
def test_tcav_refuses_repeats_and_concepts_inside_the_random_pool(concepts, random_texts, match):
    """The old code trained CAVs on them (a text on both sides of the classifier, or twice in one set)."""
    pool = random_texts or ["the sea", "a hill", "old bread", "the king", "a door", "the road", "my coat", "the rain"]
    with pytest.raises(InputError, match=match):
        tcav.tcav(toy(), [CLEAN], LD, concepts, pool, hooks="blocks.1.hook_resid_pre", runs=2, set_size=2)


def test_an_explanation_score_against_activations_constant_within_float_noise_is_undefined():
    """True activations 0.5 + 1e-8 noise: the old correlation was a number (of the noise); now NaN (scored 0 and
    flagged undefined by score_simulation's caller, as for exactly constant activations)."""
    gen = torch.Generator().manual_seed(0)
    true = 0.5 + 1e-8 * torch.randn(40, generator=gen)
    simulated = torch.randn(40, generator=gen)
    assert math.isnan(explain.correlation_score(true, simulated))
    assert math.isnan(explain.correlation_score(simulated, torch.full((40,), 3.0) + 1e-12 * torch.randn(40)))
    # a simulation on a tiny scale is still a simulation (it is scale-free)
    assert explain.correlation_score(simulated, 1e-6 * simulated) == pytest.approx(1.0)
