"""Causal tracing: the batched engine against the one-restoration-per-pass reference on every architecture,
exact identities, subject spans, windows, the average indirect effect, and (real, slow) Gemma-3-270m."""

from __future__ import annotations

import pytest
import torch

import circuitlab
from circuitlab import testing, tracing
from circuitlab.engine import blocks
from circuitlab.errors import CircuitlabError, InputError
from circuitlab.tasks.factual import Fact
from circuitlab.testing import ARCHITECTURES, random_model, reference_trace
from circuitlab.tracing import (average_indirect_effect, default_window, embedding_std, position_kinds, subject_noise,
                                subject_span, trace, window_layers)

TOKENS = torch.tensor([1, 5, 7, 9, 11, 13, 2, 4, 8])
SPAN, ANSWER = (2, 5), 4


def reference_for(model, res, tokens=TOKENS):
    """The reference trace with the same noise as ``res`` (same seed, scale and span)."""
    span = res.meta["subject"]
    noise = subject_noise(model, span[1] - span[0], res.meta["samples"], res.meta["noise_std"], res.meta["seed"])
    window = max(res.meta["window"].values())
    return reference_trace(model, tokens.reshape(1, -1), span, res.meta["answer"], noise, tuple(res.labels["kind"]),
                           window)


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("window", [1, 2, 3])
def test_trace_equals_the_one_restoration_per_pass_reference(arch, window):
    model = random_model(arch, n_layers=3)
    res = trace(model, TOKENS, SPAN, ANSWER, window=window, samples=3, seed=1, progress=False)
    ref = reference_for(model, res)
    torch.testing.assert_close(res.values, ref, atol=1e-7, rtol=1e-5)
    assert "cached keys and values" in res.meta["engine"]  # the causal shortcut ran (its self-check passed)
    assert res.values.std() > 1e-4  # restorations do change the answer's probability: the comparison is not trivial
    assert res.axes == ("kind", "pos", "layer") and res.shape[1] == len(TOKENS)
    assert res.labels["kind"] == (["resid", "attn"] if arch == "attn_only" else ["resid", "mlp", "attn"])


def test_without_the_key_value_shortcut_still_equals_the_reference(monkeypatch):
    monkeypatch.setattr(blocks, "SELF_CHECK_TOLERANCE", -1.0)  # every self-check fails
    model = random_model("llama", n_layers=3)
    res = trace(model, TOKENS, SPAN, ANSWER, window=2, samples=2, progress=False)
    assert "every position" in res.meta["engine"]
    torch.testing.assert_close(res.values, reference_for(model, res), atol=1e-7, rtol=1e-5)


def test_chunking_under_max_memory_gives_the_same_numbers():
    model = random_model("gpt2", n_layers=3)
    whole = trace(model, TOKENS, SPAN, ANSWER, window=2, samples=2, progress=False)
    tiny = trace(model, TOKENS, SPAN, ANSWER, window=2, samples=2, max_memory=1, progress=False)
    torch.testing.assert_close(tiny.values, whole.values, atol=1e-7, rtol=1e-5)
    assert tiny.meta["peak_chunk_bytes"] < whole.meta["peak_chunk_bytes"]


def test_exact_identities():
    """Restoring the last block's output at the last token is the clean run; at an earlier token it changes
    nothing the answer reads; tokens before the subject are unchanged by the noise; seeds repeat."""
    model = random_model("gpt2", n_layers=3)
    res = trace(model, TOKENS, SPAN, ANSWER, samples=3, progress=False)
    clean = float(torch.softmax(model(TOKENS[None])[0, -1].detach().double(), -1)[ANSWER])
    assert res.clean_prob == pytest.approx(clean, rel=1e-6)
    resid = res.values[0]
    assert float(resid[-1, -1]) == pytest.approx(clean, rel=1e-5)
    assert torch.allclose(resid[:-1, -1], torch.full_like(resid[:-1, -1], res.corrupted_prob), atol=1e-7)
    assert torch.all(res.values[:, :SPAN[0]] == res.corrupted_prob)
    again = trace(model, TOKENS, SPAN, ANSWER, samples=3, progress=False)
    assert torch.equal(again.values, res.values)
    other = trace(model, TOKENS, SPAN, ANSWER, samples=3, seed=5, progress=False)
    assert other.corrupted_prob != res.corrupted_prob
    ie = res.indirect_effect()
    torch.testing.assert_close(ie.values, res.values - res.corrupted_prob)
    norm = res.indirect_effect(normalized=True)
    assert float(norm.values[0, -1, -1]) == pytest.approx(1.0, rel=1e-4)


def test_noise_is_three_embedding_standard_deviations_by_default():
    model = random_model("gpt2")
    assert embedding_std(model) == pytest.approx(float(model.W_E.detach().double().std()), rel=1e-9)
    res = trace(model, TOKENS, SPAN, ANSWER, kinds="resid", samples=2, progress=False)
    assert res.meta["noise_std"] == pytest.approx(3 * embedding_std(model))
    quiet = trace(model, TOKENS, SPAN, ANSWER, kinds="resid", noise=1e-6, samples=2, progress=False)
    assert quiet.corrupted_prob == pytest.approx(quiet.clean_prob, rel=1e-4)


def test_windows_follow_the_paper():
    assert [default_window(n) for n in (48, 28, 18, 12, 4, 1)] == [10, 10, 6, 4, 1, 1]
    # the paper's code: range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2)))
    for window in range(1, 11):
        for layer in range(18):
            assert window_layers(layer, window, 18) == range(max(0, layer - window // 2),
                                                             min(18, layer - (-window // 2)))
    assert list(window_layers(9, 10, 48)) == list(range(4, 14))


def test_position_kinds():
    assert position_kinds((1, 4), 9) == [[1], [2], [3], [4], [5, 6, 7], [8]]
    assert position_kinds((2, 3), 5) == [[2], [], [2], [3], [], [4]]
    assert position_kinds((1, 5), 6) == [[1], [2, 3], [4], [], [], [5]]


@pytest.fixture(scope="module")
def toy():
    return circuitlab.load_model("zoo/toy-lm")


def test_subject_spans_on_a_tokenizer(toy):
    prompt = "Every evening Zorvath walks home to"
    toks = toy.to_tokens(prompt)[0].tolist()
    start, end = subject_span(toy, prompt, "Zorvath")
    assert toy.to_tokens(" Zorvath", prepend_bos=False)[0].tolist() == toks[start:end]
    assert subject_span(toy, prompt, "Every evening") == (1, len(toy.to_tokens("Every evening")[0]))
    assert subject_span(toy, prompt, (2, 4)) == (2, 4)


@pytest.mark.parametrize("subject,words", [
    ("Kelmira", "does not occur"), ("Zorv", "inside the token"), ("", "empty"), ((4, 2), "not a span"),
    ((0, 99), "not a span"), (3.5, "subject must be"),
])
def test_bad_subjects_are_named(toy, subject, words):
    with pytest.raises(CircuitlabError, match="subject") as err:
        trace(toy, "Every evening Zorvath walks home to", subject, " Pellmoor", progress=False)
    assert words in str(err.value)


def test_other_bad_inputs_are_named(toy):
    prompt, subject = "Every evening Zorvath walks home to", "Zorvath"
    with pytest.raises(InputError, match="window=9 is larger than the model: it has 4 layers"):
        trace(toy, prompt, subject, " Pellmoor", window=9, progress=False)
    with pytest.raises(InputError, match="noise must be a positive number"):
        trace(toy, prompt, subject, " Pellmoor", noise=0, progress=False)
    with pytest.raises(InputError, match="answer"):
        trace(toy, prompt, subject, " Pellmoor Varnholt", progress=False)
    with pytest.raises(InputError, match="token ids"):
        trace(toy, toy.to_tokens(prompt), subject, " Pellmoor", progress=False)
    with pytest.raises(InputError, match="attention-only"):
        trace(random_model("attn_only"), TOKENS, SPAN, ANSWER, kinds=["mlp"], progress=False)


def test_average_indirect_effect_is_the_mean_over_facts_of_each_position_kind(toy):
    facts = [Fact("Every evening Zorvath walks home to", "Zorvath", " Pellmoor", "home"),
             ("The home of Kelmira is in", "Kelmira", " Varnholt"),
             ("Zorvath works as a", "Zorvath", " baker")]
    aie = average_indirect_effect(toy, facts, samples=2, progress=False)
    # by hand, from separate traces and explicitly listed positions
    sums, counts = torch.zeros(3, 6, 4, dtype=torch.float64), [0] * 6
    for prompt, subject, answer in [(f.prompt, f.subject, f.answer) if isinstance(f, Fact) else f for f in facts]:
        res = trace(toy, prompt, subject, answer, samples=2, progress=False)
        s0, s1 = res.meta["subject"]
        n = res.shape[1]
        groups = [[s0], list(range(s0 + 1, s1 - 1)), [s1 - 1], [s1] if s1 < n - 1 else [],
                  list(range(s1 + 1, n - 1)), [n - 1]]
        for k, g in enumerate(groups):
            if g:
                sums[:, k] += (res.values[:, g] - res.corrupted_prob).mean(1)
                counts[k] += 1
    want = sums / torch.tensor([max(c, 1) for c in counts], dtype=torch.float64)[None, :, None]
    for k, c in enumerate(counts):
        if c == 0:
            assert torch.isnan(aie.values[:, k]).all()
            want[:, k] = float("nan")
    torch.testing.assert_close(aie.values, want, equal_nan=True)
    assert aie.axes == ("kind", "position", "layer") and aie.meta["n_facts"] == 3
    assert list(aie.meta["counts"].values()) == counts


def test_average_indirect_effect_names_the_bad_fact(toy):
    with pytest.raises(InputError, match=r"facts\[1\]"):
        average_indirect_effect(toy, [("Zorvath works as a", "Zorvath", " baker"),
                                      ("Zorvath works as a", "Kelmira", " baker")], samples=1, progress=False)
    with pytest.raises(InputError, match="facts must be a non-empty list"):
        average_indirect_effect(toy, [], progress=False)


# -- the real model -------------------------------------------------------------------------------------------

@pytest.mark.real
@pytest.mark.slow
def test_gemma_trace_equals_single_restorations():
    """On Gemma-3-270m (local attention, qk-norm, grouped-query): a few entries of the batched trace against
    single hooked forward passes, and the multi-token answer error."""
    testing.need_real_model("gemma-3-270m")
    model = circuitlab.load_model("gemma-3-270m")
    prompt, subject = "The Eiffel Tower is located in the city of", "The Eiffel Tower"
    res = trace(model, prompt, subject, " Paris", samples=1, window=4, progress=False)
    assert "cached keys and values" in res.meta["engine"]
    assert res.meta["subject"] == (1, 4)
    tokens = model.to_tokens(prompt)
    span = res.meta["subject"]
    noise = subject_noise(model, 3, 1, res.meta["noise_std"], 0)
    _, clean = model.run_with_cache(tokens)
    for k, pos, layer in [(0, 3, 2), (1, 3, 5), (2, 9, 14), (1, 6, 0)]:
        kind = res.labels["kind"][k]
        hook = tracing.KINDS[kind]
        layers = [layer] if kind == "resid" else list(window_layers(layer, 4, model.cfg.n_layers))

        def restore(act, hook, pos=pos):
            act = act.clone()
            act[:, pos] = clean[hook.name][0, pos]
            return act

        def add_noise(embed, hook):
            embed = embed.clone()
            embed[:, span[0]:span[1]] += noise
            return embed

        logits = model.run_with_hooks(tokens, fwd_hooks=[("hook_embed", add_noise)] + [
            (hook.format(layer=l), restore) for l in layers])
        want = float(torch.softmax(logits[:, -1].double(), -1)[:, res.meta["answer"]].mean())
        assert float(res.values[k, pos, layer]) == pytest.approx(want, rel=1e-3, abs=1e-6), (kind, pos, layer)
    with pytest.raises(InputError, match="answer ' ruble' is 2 tokens"):
        trace(model, prompt, subject, " ruble", progress=False)


def test_gemma3_shape_traces_with_cached_keys_and_values():
    """The block runner's one rule serves tracing too: a random Gemma-3-shaped model (keys normalised after
    hook_k, local attention windows) reuses the corrupted run's keys and values, with the reference's numbers."""
    model = random_model("gemma3", n_layers=3)
    res = trace(model, TOKENS, SPAN, ANSWER, window=2, samples=2, seed=1, progress=False)
    assert "cached keys and values" in res.meta["engine"]
    assert res.values.std() > 1e-4
    torch.testing.assert_close(res.values, reference_for(model, res), atol=1e-7, rtol=1e-5)
