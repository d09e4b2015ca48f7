"""Direct logit attribution and the logit lens, checked against TransformerLens and exact identities."""

from __future__ import annotations

import copy

import pytest
import torch

from circuitlab import CircuitlabError
from circuitlab.attribution import DLAResult, direct_logit_attribution, logit_lens
from circuitlab.errors import InputError
from circuitlab.testing import ARCHITECTURES, random_model

BATCH, SEQ = 3, 8


@pytest.fixture(scope="module", params=ARCHITECTURES)
def arch_model(request):
    return request.param, random_model(request.param, seed=3)


def _tokens(d_vocab: int = 50, seed: int = 0) -> torch.Tensor:
    return torch.randint(1, d_vocab, (BATCH, SEQ), generator=torch.Generator().manual_seed(seed))


def _tl_reference(model, cache, stack, direction):
    """TransformerLens's recipe: a stack of residual components [n, batch, d_model] at the last position,
    normalised with the cached final scale (apply_ln_to_stack), through the final norm's weight where it is not
    folded into W_U, projected on the answer direction (tokens_to_residual_directions)."""
    normed = cache.apply_ln_to_stack(stack, layer=-1, pos_slice=-1)
    w = getattr(model.ln_final, "w", None)
    if w is not None:
        normed = normed * w
    return (normed * direction).sum(-1)  # [n, batch]


def test_component_sum_is_the_models_logit_difference(arch_model):
    arch, model = arch_model
    toks = _tokens()
    answers, wrongs = torch.tensor([3, 7, 11]), torch.tensor([5, 5, 2])
    res = direct_logit_attribution(model, toks, answers, wrong=wrongs, by="component")
    logits = model(toks)[:, -1]  # an independent forward pass
    expected = logits[torch.arange(BATCH), answers] - logits[torch.arange(BATCH), wrongs]
    torch.testing.assert_close(res.per_prompt.sum(-1), expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(res.model_logit, expected, atol=1e-5, rtol=0)
    assert res.values.shape == (len(res.labels["component"]),)
    torch.testing.assert_close(res.values, res.per_prompt.mean(0))
    # the components that exist, by architecture
    names = res.labels["component"]
    assert ("pos_embed" in names) == (model.cfg.positional_embedding_type == "standard")
    assert ("L0 MLP" in names) == (not model.cfg.attn_only)
    assert names[0] == "embed" and names[-1] == "final biases"


def test_component_sum_single_answer_at_inner_position(arch_model):
    _, model = arch_model
    toks = _tokens(seed=1)
    res = direct_logit_attribution(model, toks, 9, by="component", pos=4)
    expected = model(toks)[:, 4, 9]
    torch.testing.assert_close(res.per_prompt.sum(-1), expected, atol=1e-4, rtol=0)
    # by source position: only positions up to the attributed one can be read
    by_pos = direct_logit_attribution(model, toks, 9, by="position", pos=4)
    assert by_pos.values.shape[-1] == 5 and by_pos.labels["pos"][-1].startswith("4:")


def test_model_without_any_norm():
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=32, d_vocab=30, n_ctx=16,
                                  act_fn="relu", normalization_type=None, seed=1, device="cpu")
    model = HookedTransformer(cfg)
    with torch.no_grad():
        for name, prm in model.named_parameters():
            if name.split(".")[-1].startswith("b_"):
                prm.normal_(0, 0.1)
    toks = torch.randint(0, 30, (2, 6), generator=torch.Generator().manual_seed(0))
    res = direct_logit_attribution(model, toks, 3, wrong=4, by="component")
    logits = model(toks)[:, -1]
    torch.testing.assert_close(res.per_prompt.sum(-1), logits[:, 3] - logits[:, 4], atol=1e-4, rtol=0)
    torch.testing.assert_close(logit_lens(model, toks).logits[-1], logits, atol=1e-5, rtol=1e-5)


def test_per_head_equals_transformer_lens(arch_model):
    _, model = arch_model
    toks = _tokens(seed=2)
    res = direct_logit_attribution(model, toks, 4, wrong=6, by="head")
    _, cache = model.run_with_cache(toks)
    stack = cache.stack_head_results(layer=-1, pos_slice=-1)  # [layer*head, batch, d_model]
    direction = model.tokens_to_residual_directions(4) - model.tokens_to_residual_directions(6)
    ref = _tl_reference(model, cache, stack, direction)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    torch.testing.assert_close(res.per_prompt, ref.T.reshape(BATCH, L, H), atol=1e-5, rtol=1e-4)
    assert res.axes == ("layer", "head") and res.values.shape == (L, H)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_per_head_on_a_folded_model_equals_transformer_lens(arch):
    # fold_ln turns the final norm into LayerNormPre / RMSNormPre (no weight): the other code path
    model = copy.deepcopy(random_model(arch, seed=4))
    model.process_weights_(fold_ln=True, center_writing_weights=True, center_unembed=True)
    assert type(model.ln_final).__name__.endswith("Pre")
    toks = _tokens(seed=5)
    res = direct_logit_attribution(model, toks, 8, wrong=2, by="head")
    _, cache = model.run_with_cache(toks)
    direction = model.tokens_to_residual_directions(8) - model.tokens_to_residual_directions(2)
    ref = _tl_reference(model, cache, cache.stack_head_results(layer=-1, pos_slice=-1), direction)
    torch.testing.assert_close(res.per_prompt, ref.T.reshape(BATCH, 2, -1), atol=1e-5, rtol=1e-4)
    logits = model(toks)[:, -1]
    comp = direct_logit_attribution(model, toks, 8, wrong=2, by="component")
    torch.testing.assert_close(comp.per_prompt.sum(-1), logits[:, 8] - logits[:, 2], atol=1e-4, rtol=0)


def test_per_layer_equals_transformer_lens_decompose_resid(arch_model):
    _, model = arch_model
    toks = _tokens(seed=6)
    res = direct_logit_attribution(model, toks, 12, by="layer")
    _, cache = model.run_with_cache(toks)
    stack, labels = cache.decompose_resid(layer=-1, pos_slice=-1, incl_embeds=False, return_labels=True)
    ref = _tl_reference(model, cache, stack, model.tokens_to_residual_directions(12))  # [n, batch]
    attn = ref[[i for i, lab in enumerate(labels) if lab.endswith("attn_out")]].T
    torch.testing.assert_close(res.per_prompt[..., 0], attn, atol=1e-5, rtol=1e-4)
    if not model.cfg.attn_only:
        mlp = ref[[i for i, lab in enumerate(labels) if lab.endswith("mlp_out")]].T
        torch.testing.assert_close(res.per_prompt[..., 1], mlp, atol=1e-5, rtol=1e-4)
        assert res.labels["sublayer"] == ["attn", "mlp"]
    else:
        assert res.labels["sublayer"] == ["attn"]


@pytest.mark.parametrize("arch", ["gpt2", "pythia", "llama"])
def test_per_neuron_equals_transformer_lens_and_adds_up_to_the_mlp(arch):
    model = random_model(arch, seed=7)
    toks = _tokens(seed=7)
    one = direct_logit_attribution(model, toks, 1, wrong=2, by="neuron", layer=1)
    every = direct_logit_attribution(model, toks, 1, wrong=2, by="neuron")
    assert one.axes == ("neuron",) and every.axes == ("layer", "neuron")
    torch.testing.assert_close(every.per_prompt[:, 1], one.per_prompt)
    _, cache = model.run_with_cache(toks)
    direction = model.tokens_to_residual_directions(1) - model.tokens_to_residual_directions(2)
    stack = cache.stack_neuron_results(layer=1, pos_slice=-1)  # neurons of layers < 1, i.e. layer 0
    ref = _tl_reference(model, cache, stack, direction)
    torch.testing.assert_close(every.per_prompt[:, 0], ref.T, atol=1e-5, rtol=1e-4)
    # neurons + b_out = the whole MLP layer
    layers = direct_logit_attribution(model, toks, 1, wrong=2, by="layer")
    comp = direct_logit_attribution(model, toks, 1, wrong=2, by="component")
    b_out = comp.per_prompt[:, comp.labels["component"].index("L1 b_out")]
    torch.testing.assert_close(one.per_prompt.sum(-1) + b_out, layers.per_prompt[:, 1, 1], atol=1e-5, rtol=1e-4)


def test_per_position_sums_to_per_head_and_matches_zeroing_values(arch_model):
    _, model = arch_model
    toks = _tokens(seed=8)
    pos_res = direct_logit_attribution(model, toks, 5, by="position")
    head_res = direct_logit_attribution(model, toks, 5, by="head")
    assert pos_res.axes == ("layer", "head", "pos") and pos_res.values.shape[-1] == SEQ
    torch.testing.assert_close(pos_res.per_prompt.sum(-1), head_res.per_prompt, atol=1e-5, rtol=1e-4)
    # brute force: zero the value vectors of one source position in layer 1; the heads' outputs at the last
    # position lose exactly that source's share (the pattern does not depend on values)
    src, layer = 2, 1
    _, clean = model.run_with_cache(toks)

    def zero_v(v, hook):
        v = v.clone()
        v[:, src] = 0.0
        return v

    with model.hooks(fwd_hooks=[(f"blocks.{layer}.attn.hook_v", zero_v)]):
        _, ablated = model.run_with_cache(toks)
    dz = clean[f"blocks.{layer}.attn.hook_z"][:, -1] - ablated[f"blocks.{layer}.attn.hook_z"][:, -1]
    d_out = torch.einsum("bhe,hem->hbm", dz, model.blocks[layer].attn.W_O)  # [head, batch, d_model]
    ref = _tl_reference(model, clean, d_out, model.tokens_to_residual_directions(5))
    torch.testing.assert_close(pos_res.per_prompt[:, layer, :, src], ref.T, atol=1e-5, rtol=1e-4)


def test_result_shape_labels_and_rendering():
    model = random_model("gpt2", seed=0)
    toks = _tokens()
    res = direct_logit_attribution(model, toks, 3, by="head")
    assert isinstance(res, DLAResult)
    assert res.labels["layer"] == ["L0", "L1"] and res.labels["head"] == ["H0", "H1", "H2", "H3"]
    assert res.per_prompt.shape == (BATCH, 2, 4)
    one = res.for_prompt(1)
    torch.testing.assert_close(one.values, res.per_prompt[1])
    html = res.to_html()
    assert "<table" in html and "Direct logit attribution" in html
    assert len(res.to_dataframe()) == 8
    pos_html = direct_logit_attribution(model, toks, 3, by="position").to_html()
    assert pos_html.count("<table") == 2  # one heatmap per layer


def _with_word_tokenizer(model):
    from circuitlab.zoo.tokenizer import word_level_tokenizer

    model.set_tokenizer(word_level_tokenizer(model.cfg.d_vocab - 1))
    return model


def test_string_answers_and_multi_token_error():
    model = _with_word_tokenizer(random_model("gpt2", seed=1))
    prompt = "t1 t2 t3 t1 t2"
    by_str = direct_logit_attribution(model, prompt, " t3", wrong="t4", by="head")
    # 't3' is id 4 and 't4' is id 5 in the word-level vocabulary (<bos> = 0)
    by_id = direct_logit_attribution(model, prompt, 4, wrong=5, by="head")
    torch.testing.assert_close(by_str.values, by_id.values)
    assert "t3" in by_str.metric and "t4" in by_str.metric
    with pytest.raises(CircuitlabError, match=r"2 tokens.*t3.*t4"):
        direct_logit_attribution(model, prompt, "t3 t4")


def test_bad_inputs():
    model = random_model("gpt2", seed=0)
    toks = _tokens()
    with pytest.raises(InputError, match="by="):
        direct_logit_attribution(model, toks, 3, by="neurons")
    with pytest.raises(InputError, match="out of range"):
        direct_logit_attribution(model, toks, 3, by="neuron", layer=2)
    with pytest.raises(InputError, match="only used with by='neuron'"):
        direct_logit_attribution(model, toks, 3, by="head", layer=0)
    with pytest.raises(InputError, match="pos=8"):
        direct_logit_attribution(model, toks, 3, pos=8)
    with pytest.raises(InputError, match="outside the vocabulary"):
        direct_logit_attribution(model, toks, 50)
    with pytest.raises(CircuitlabError, match="attention-only"):
        direct_logit_attribution(random_model("attn_only"), toks, 3, by="neuron")


# ---------------------------------------------------------------------------------------------------------
# Logit lens
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("norm", ["own", "frozen"])
def test_logit_lens_last_layer_is_the_models_output(arch_model, norm):
    _, model = arch_model
    toks = _tokens(seed=9)
    lens = logit_lens(model, toks, norm=norm, pos=-2)
    logits = model(toks)[:, -2]
    L = model.cfg.n_layers
    assert lens.logits.shape == (L + 1, BATCH, model.cfg.d_vocab)
    torch.testing.assert_close(lens.logits[-1], logits, atol=1e-4, rtol=1e-4)
    # default answer: the model's own top token, which has rank 1 and the top probability at the last layer
    assert torch.equal(lens.answer, logits.argmax(-1))
    assert torch.all(lens.answer_rank.values[:, -1] == 1)
    torch.testing.assert_close(lens.answer_prob.values[:, -1], logits.softmax(-1).max(-1).values)
    assert lens.answer_prob.labels["layer"] == ["embed"] + [f"L{i}" for i in range(L)]


def test_logit_lens_intermediate_layers_match_transformer_lens(arch_model):
    _, model = arch_model
    toks = _tokens(seed=10)
    _, cache = model.run_with_cache(toks)
    resid = cache.accumulated_resid(layer=-1, pos_slice=-1)  # [L+1, batch, d_model]
    W_U, b_U = model.W_U, model.b_U
    b = getattr(model.ln_final, "b", 0.0)
    w = getattr(model.ln_final, "w", 1.0)
    own = cache.apply_ln_to_stack(resid, layer=-1, pos_slice=-1, recompute_ln=True) @ W_U + b_U
    frozen = (cache.apply_ln_to_stack(resid, layer=-1, pos_slice=-1) * w + b) @ W_U + b_U
    torch.testing.assert_close(logit_lens(model, toks).logits, own, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(logit_lens(model, toks, norm="frozen").logits, frozen, atol=1e-4, rtol=1e-4)


def test_logit_lens_answer_rank_and_top_tokens():
    model = random_model("gpt2", seed=2)
    toks = _tokens(seed=11)
    lens = logit_lens(model, toks, answer=[1, 2, 3], k=4)
    for li in range(lens.logits.shape[0]):
        for b in range(BATCH):
            row = lens.logits[li, b]
            a = [1, 2, 3][b]
            assert lens.answer_rank.values[b, li] == 1 + int((row > row[a]).sum())
            assert lens.top.token_ids[li, b].tolist() == row.topk(4).indices.tolist()
            assert lens.top.tokens[li][b] == [f"#{i}" for i in row.topk(4).indices.tolist()]
    # frozen lens is linear: consecutive differences are the per-layer direct attributions
    frozen = logit_lens(model, toks, answer=[1, 2, 3], norm="frozen")
    per_layer = direct_logit_attribution(model, toks, [1, 2, 3], by="layer")
    steps = frozen.answer_logit.values.diff(dim=1)  # [batch, layer]
    torch.testing.assert_close(steps, per_layer.per_prompt.sum(-1), atol=1e-4, rtol=1e-4)
    df = lens.to_dataframe()
    assert len(df) == 3 * BATCH and set(df.columns) >= {"layer", "answer_prob", "answer_rank", "top_tokens"}
    assert "<table" in lens.to_html()


def test_prompts_in_batches_under_max_memory_give_the_same_numbers(arch_model):
    """With max_memory=1 every prompt runs alone; each prompt's attribution and lens are its own, so nothing
    may change (the whole batch at once is the reference)."""
    _, model = arch_model
    toks = torch.randint(1, model.cfg.d_vocab, (4, 7), generator=torch.Generator().manual_seed(5))
    for by in ("head", "layer", "component", "position"):
        whole = direct_logit_attribution(model, toks, [3, 4, 5, 6], wrong=[7, 8, 9, 10], by=by, pos=-2)
        alone = direct_logit_attribution(model, toks, [3, 4, 5, 6], wrong=[7, 8, 9, 10], by=by, pos=-2, max_memory=1)
        torch.testing.assert_close(whole.per_prompt, alone.per_prompt, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(whole.model_logit, alone.model_logit, atol=1e-5, rtol=1e-5)
    for norm in ("own", "frozen"):
        whole, alone = logit_lens(model, toks, norm=norm), logit_lens(model, toks, norm=norm, max_memory=1)
        torch.testing.assert_close(whole.logits, alone.logits, atol=1e-5, rtol=1e-5)
        assert whole.top.tokens == alone.top.tokens
