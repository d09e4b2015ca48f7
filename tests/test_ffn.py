"""FFN key-value memories: sub-updates rebuild the MLP, value tokens equal a direct top-k, streaming top-k keys."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from circuitlab import CircuitlabError
from circuitlab.attribution import direct_logit_attribution
from circuitlab.errors import InputError
from circuitlab.ffn import key_examples, sub_updates, value_tokens
from circuitlab.testing import random_model

MLP_ARCHS = ("gpt2", "pythia", "llama")
BATCH, SEQ = 3, 9


@pytest.fixture(scope="module", params=MLP_ARCHS)
def model(request):
    return random_model(request.param, seed=11)


def _tokens(seed: int = 0, batch: int = BATCH, seq: int = SEQ) -> torch.Tensor:
    return torch.randint(1, 50, (batch, seq), generator=torch.Generator().manual_seed(seed))


def _through_norm(model, W_U):
    """Directions reaching the logits through the final norm, written out by hand: for any vector v,
    LayerNorm sends (v - mean v) * w to W_U, RMSNorm sends v * w."""
    w = model.ln_final.w
    U = w[:, None] * W_U
    if type(model.ln_final).__name__ == "LayerNorm":
        U = U - U.mean(0, keepdim=True)
    return U


@pytest.mark.parametrize("pos", [-1, 3])
def test_sub_updates_rebuild_the_mlp_output(model, pos):
    toks = _tokens(seed=1)
    layer = 1
    sub = sub_updates(model, toks, layer, pos=pos)
    mlp = model.blocks[layer].mlp
    _, cache = model.run_with_cache(toks)
    rebuilt = sub.coefficients.values @ mlp.W_out + mlp.b_out
    torch.testing.assert_close(rebuilt, cache[f"blocks.{layer}.hook_mlp_out"][:, pos], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(sub.mlp_out, cache[f"blocks.{layer}.hook_mlp_out"][:, pos])
    # the coefficients from the MLP's input, by hand (gated: act(x W_gate) * (x W_in) + b_in)
    ln2 = model.blocks[layer].ln2  # hook_normalized is taken before the norm's weight and bias
    x = cache[f"blocks.{layer}.ln2.hook_normalized"][:, pos] * ln2.w + getattr(ln2, "b", 0.0)
    if model.cfg.gated_mlp:
        m = F.silu(x @ mlp.W_gate) * (x @ mlp.W_in) + mlp.b_in
    else:
        m = mlp.act_fn(x @ mlp.W_in + mlp.b_in)
    torch.testing.assert_close(sub.coefficients.values, m, atol=1e-5, rtol=1e-5)
    assert sub.coefficients.axes == ("batch", "neuron") and sub.coefficients.shape == (BATCH, model.cfg.d_mlp)


def test_sub_updates_ranked_by_effect_on_a_token(model):
    toks = _tokens(seed=2)
    layer, target = 1, 7
    sub = sub_updates(model, toks, layer, token=target, k=6, n_tokens=4)
    W_out = model.blocks[layer].mlp.W_out
    U = _through_norm(model, model.W_U)
    for b in range(BATCH):
        effects = torch.stack([sub.coefficients.values[b, i] * (W_out[i] @ U[:, target])
                               for i in range(model.cfg.d_mlp)])
        torch.testing.assert_close(sub.effect.values[b], effects, atol=1e-5, rtol=1e-4)
        assert sub.top_neurons[b].tolist() == effects.topk(6).indices.tolist()
        for j, n in enumerate(sub.top_neurons[b].tolist()):
            proj = sub.coefficients.values[b, n] * (W_out[n] @ U)
            assert sub.promotes.token_ids[b, j].tolist() == proj.topk(4).indices.tolist()
            assert sub.promotes.tokens[b][j] == [f"#{t}" for t in proj.topk(4).indices.tolist()]
    # the vocabulary projection of every sub-update
    proj = sub.projection([0, 5])
    torch.testing.assert_close(proj[:, 1], sub.coefficients.values[:, 5:6] * (W_out[5] @ U)[None], atol=1e-5,
                               rtol=1e-4)
    # the same numbers, divided by the final norm's scale, are the last layer's per-neuron direct attributions
    dla = direct_logit_attribution(model, toks, target, by="neuron", layer=layer)
    _, cache = model.run_with_cache(toks)
    scale = cache["ln_final.hook_scale"][:, -1]
    torch.testing.assert_close(dla.per_prompt, sub.effect.values / scale, atol=1e-5, rtol=1e-4)


def test_sub_updates_ranked_by_size_without_a_token(model):
    toks = _tokens(seed=3)
    sub = sub_updates(model, toks, 0, k=5)
    W_out = model.blocks[0].mlp.W_out
    size = sub.coefficients.values.abs() * W_out.norm(dim=-1)
    assert sub.effect is None and sub.token is None
    assert sub.top_neurons.tolist() == size.topk(5, dim=-1).indices.tolist()
    _, cache = model.run_with_cache(toks)
    post = cache["blocks.0.mlp.hook_post"]
    for b in range(BATCH):
        torch.testing.assert_close(sub.top_activations.values[b], post[b][:, sub.top_neurons[b]])


@pytest.mark.parametrize("through_norm", [False, True])
def test_value_tokens_equal_a_direct_top_k(model, through_norm):
    layer, neurons, k = 1, [0, 17, 63], 6
    vt = value_tokens(model, layer, neurons, k=k, through_norm=through_norm)
    W_U = model.W_U
    U = _through_norm(model, W_U) if through_norm else W_U
    scores = model.blocks[layer].mlp.W_out[neurons] @ U
    torch.testing.assert_close(vt.promoted.values, scores.topk(k, dim=-1).values, atol=1e-5, rtol=1e-5)
    assert vt.promoted.token_ids.tolist() == scores.topk(k, dim=-1).indices.tolist()
    assert vt.suppressed.token_ids.tolist() == (-scores).topk(k, dim=-1).indices.tolist()
    assert vt.promoted.tokens[1] == [f"#{i}" for i in scores[1].topk(k).indices.tolist()]
    assert vt.neurons == neurons


def test_value_tokens_with_a_tokenizer_and_all_neurons():
    from circuitlab.zoo.tokenizer import word_level_tokenizer

    model = random_model("gpt2", seed=5)
    model.set_tokenizer(word_level_tokenizer(49))
    vt = value_tokens(model, -1, None, k=3)  # negative layer counts from the end
    assert vt.layer == 1 and len(vt.neurons) == model.cfg.d_mlp
    ids = vt.promoted.token_ids[0].tolist()
    assert vt.promoted.tokens[0] == [("<bos>" if i == 0 else f"t{i - 1}") for i in ids]
    df = vt.to_dataframe()
    assert len(df) == model.cfg.d_mlp * 2 * 3


def _brute_force_top(model, rows, layer, neuron, k):
    acts = []
    for i, row in enumerate(rows):
        _, cache = model.run_with_cache(row[None])
        for q, a in enumerate(cache[f"blocks.{layer}.mlp.hook_post"][0, :, neuron].tolist()):
            acts.append((a, i, q))
    acts.sort(reverse=True)
    return acts[:k]


def test_key_examples_stream_equals_brute_force(model):
    gen = torch.Generator().manual_seed(4)
    rows = [torch.randint(0, 50, (int(n),), generator=gen) for n in torch.randint(3, 16, (11,), generator=gen)]
    consumed = []

    def stream():  # a generator: key_examples must not need len() or random access
        for r in rows:
            consumed.append(1)
            yield r

    ke = key_examples(model, stream(), layer=1, neuron=9, k=7, batch_size=3, context=(2, 1), progress=False)
    ref = _brute_force_top(model, rows, 1, 9, 7)
    assert [(e.prompt, e.pos) for e in ke.examples] == [(i, q) for _, i, q in ref]
    torch.testing.assert_close(torch.tensor([e.activation for e in ke.examples]), torch.tensor([a for a, _, _ in ref]),
                               atol=1e-5, rtol=1e-5)
    assert ke.n_prompts == 11 and ke.n_tokens == sum(len(r) for r in rows) and len(consumed) == 11
    e = ke.examples[0]
    row = rows[e.prompt]
    lo = max(0, e.pos - 2)
    assert e.tokens == [f"#{t}" for t in row[lo:e.pos + 2].tolist()] and e.tokens[e.focus] == e.token
    assert e.activations[e.focus] == pytest.approx(e.activation)


def test_key_examples_on_texts_skip_bos():
    from circuitlab.zoo.tokenizer import word_level_tokenizer

    model = random_model("gpt2", seed=6)
    model.set_tokenizer(word_level_tokenizer(49))
    texts = ["t1 t2 t3 t4", "t5 t6", "t7 t8 t9 t10 t11"]
    ke = key_examples(model, texts, layer=0, neuron=3, k=100, batch_size=2, progress=False)
    assert ke.n_tokens == 4 + 2 + 5  # BOS positions excluded
    assert all(e.pos > 0 and e.token != "<bos>" for e in ke.examples)
    for e in ke.examples:  # the decoded window is a stretch of its prompt, around the firing token
        words = ["<bos>"] + texts[e.prompt].split()
        lo = max(0, e.pos - 10)
        assert e.text.split() == words[lo:e.pos + 4] and e.token == words[e.pos]
    acts = [e.activation for e in ke.examples]
    assert acts == sorted(acts, reverse=True)
    with_bos = key_examples(model, texts, layer=0, neuron=3, k=100, exclude_bos=False, progress=False)
    assert with_bos.n_tokens == 14
    assert ke.activations.values.shape == (11,)


def test_html_views_use_one_circuitsvis_bundle():
    from circuitlab.render.bundle import count_bundles, fragment_mode

    model = random_model("gpt2", seed=0)
    toks = _tokens(seed=8)
    views = [value_tokens(model, 0, [1, 2], k=3), sub_updates(model, toks, 1, token=2, k=3),
             key_examples(model, toks, 0, 1, k=3, progress=False)]
    for v in views:
        html = v.to_html()
        assert "ColoredTokens" in html and "<table" in html and count_bundles(html) == 1
        with fragment_mode():  # inside a report, the page carries the bundle
            assert count_bundles(v.to_html()) == 0


def test_ffn_errors():
    toks = _tokens()
    attn_only = random_model("attn_only")
    for call in (lambda: sub_updates(attn_only, toks, 0), lambda: value_tokens(attn_only, 0, 1),
                 lambda: key_examples(attn_only, toks, 0, 1, progress=False)):
        with pytest.raises(CircuitlabError, match="attention-only"):
            call()
    model = random_model("gpt2")
    with pytest.raises(InputError, match="layer=2 is out of range"):
        sub_updates(model, toks, 2)
    with pytest.raises(InputError, match="layer=-3"):
        value_tokens(model, -3, 0)
    with pytest.raises(InputError, match="neuron=128 is out of range"):
        value_tokens(model, 0, 128)
    with pytest.raises(InputError, match="pos=9"):
        sub_updates(model, toks, 0, pos=9)
    with pytest.raises(InputError, match="no data"):
        key_examples(model, iter([]), 0, 1, progress=False)
