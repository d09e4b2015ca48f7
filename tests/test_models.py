"""Loading, saving and the bundled zoo: everything offline."""

from __future__ import annotations

import math
import socket

import pytest
import torch

import circuitlab
from circuitlab import CircuitlabError
from circuitlab.errors import ModelDownloadError, ModelNotFoundError
from circuitlab.models import loading
from circuitlab.testing import ARCHITECTURES, random_model

ZOO_REQUIRED = ["zoo/attn-only-1l", "zoo/attn-only-2l"]


def test_zoo_lists_required_models_with_descriptions():
    models = circuitlab.list_models()
    for name in ZOO_REQUIRED:
        assert name in models
        assert len(models[name]) > 20, "each zoo model has a one-line description"


@pytest.mark.parametrize("name", sorted(n for n in circuitlab.list_models() if n.startswith("zoo/")))
def test_zoo_model_loads_and_runs(name):
    model = circuitlab.load_model(name)
    assert model.cfg.model_name == name
    tokens = torch.randint(1, model.cfg.d_vocab, (2, 10))
    logits = model(tokens)
    assert logits.shape == (2, 10, model.cfg.d_vocab_out)
    assert torch.isfinite(logits).all()
    assert not model.training


def test_attn_only_2l_copies_in_context():
    from circuitlab.zoo.attn_only import in_context_losses

    m = circuitlab.load_model("zoo/attn-only-2l")
    ic = in_context_losses(m, seed=99)  # a seed the card was not measured on
    # chance is ln(100) = 4.6 nats. A model that only knew *which* tokens occurred earlier (a bag of tokens,
    # what one attention layer can do) could at best spread its bet over them: ln(seq_len) = 3.0 nats.
    # Beating that by a wide margin means it uses their order: it copies.
    assert ic["first_half_loss"] > 0.9 * ic["chance_loss"]
    assert ic["second_half_loss"] < 0.7 * math.log(ic["seq_len"])


def test_attn_only_1l_cannot_copy_in_context():
    from circuitlab.zoo.attn_only import in_context_losses

    m = circuitlab.load_model("zoo/attn-only-1l")
    ic = in_context_losses(m, seed=99)
    assert ic["first_half_loss"] > 0.9 * ic["chance_loss"]
    # no better than knowing which tokens occurred (see above): no induction without a second layer
    assert ic["second_half_loss"] > math.log(ic["seq_len"])


def test_zoo_tokenizer_is_word_level():
    m = circuitlab.load_model("zoo/attn-only-2l")
    toks = m.to_tokens("t3 t17 t3")
    assert toks.tolist() == [[0, 4, 18, 4]]
    assert m.to_str_tokens(toks[0]) == ["<bos>", "t3", "t17", "t3"]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_save_load_round_trip_gives_identical_logits(arch, tmp_path):
    model = random_model(arch, seed=3)
    circuitlab.save_model(model, tmp_path / "m")
    loaded = circuitlab.load_model(tmp_path / "m")
    assert loaded.tokenizer is None
    tokens = torch.randint(0, model.cfg.d_vocab, (3, 12))
    assert torch.equal(model(tokens), loaded(tokens))


def test_save_load_round_trip_with_tokenizer_and_card(tmp_path):
    model = circuitlab.load_model("zoo/attn-only-2l")
    circuitlab.save_model(model, tmp_path / "copy", card={"description": "a copy"})
    loaded = circuitlab.load_model(str(tmp_path / "copy"))
    tokens = model.to_tokens("t1 t2 t3 t1 t2")
    assert torch.equal(model(tokens), loaded(tokens))
    assert loaded.to_str_tokens("t5 t6") == ["<bos>", "t5", "t6"]
    assert circuitlab.models.io.read_card(tmp_path / "copy")["description"] == "a copy"


def test_hooked_transformer_passes_through():
    model = random_model("gpt2")
    assert circuitlab.load_model(model) is model


def test_not_a_model_directory(tmp_path):
    with pytest.raises(ModelNotFoundError, match="save_model"):
        circuitlab.load_model(tmp_path)


def test_unknown_names_raise_with_suggestions():
    with pytest.raises(ModelNotFoundError) as err:
        circuitlab.load_model("gpt2-smal")
    msg = str(err.value)
    assert "gpt2-small" in msg  # close match suggested
    assert "zoo/attn-only-2l" in msg  # offline alternatives listed
    with pytest.raises(ModelNotFoundError, match="attn-only-2l"):
        circuitlab.load_model("zoo/attn-only-3l")
    with pytest.raises(CircuitlabError):
        circuitlab.load_model(42)


@pytest.fixture
def no_network(monkeypatch):
    """Every outgoing connection fails, as on a machine without network."""

    def refuse(*args, **kwargs):
        raise OSError("network is unreachable (simulated)")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(loading, "_in_hf_cache", lambda name: False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


@pytest.mark.timeout(60)
def test_pretrained_name_without_network_fails_fast_and_clearly(no_network):
    with pytest.raises(ModelDownloadError) as err:
        circuitlab.load_model("gpt2-small")
    msg = str(err.value)
    assert "gpt2-small" in msg and "download" in msg
    for name in ZOO_REQUIRED:
        assert name in msg
    assert isinstance(err.value, CircuitlabError)


@pytest.mark.timeout(60)
def test_download_failure_midway_is_translated(monkeypatch):
    """If the hub answers the probe but the download itself fails, the error is still ours."""
    from transformer_lens import HookedTransformer

    monkeypatch.setattr(loading, "hub_reachable", lambda timeout=0: True)
    monkeypatch.setattr(loading, "_in_hf_cache", lambda name: False)

    def fail(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' (simulated)")

    monkeypatch.setattr(HookedTransformer, "from_pretrained", fail)
    with pytest.raises(ModelDownloadError, match="attn-only-2l"):
        circuitlab.load_model("attn-only-2l")  # TransformerLens's own attn-only-2l, not the zoo's


def test_hf_hub_offline_env_is_respected(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert loading.hub_reachable() is False


PINNED_SHORT_RUN = {"final_train_loss": 4.5634, "first_half_loss": 4.6195, "second_half_loss": 4.6055}


def test_recipe_is_the_shipped_models_and_trains_deterministically():
    """zoo/attn-only-2l's recipe is the one its card records; a few steps of it, twice with the same seed, give
    bitwise the same weights, and the numbers the recipe's code gives (pinned below) have not changed."""
    from dataclasses import asdict, replace

    from circuitlab.zoo.attn_only import RECIPES, train

    recipe = RECIPES["zoo/attn-only-2l"]
    shipped = circuitlab.zoo_card("zoo/attn-only-2l")
    assert shipped["recipe"] == {"module": "circuitlab.zoo.attn_only", **asdict(recipe)}
    # one thread: with two, torch's CPU backward of the embedding lookup (index_put with accumulate) adds rows in
    # a thread-dependent order, so the last bits of W_E may differ between runs
    short = replace(recipe, steps=20, warmup=5, second_task_from=10, threads=1)
    a, card_a = train(short, "a")
    b, card_b = train(short, "b")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    assert card_a["in_context"] == card_b["in_context"] and card_a["final_train_loss"] == card_b["final_train_loss"]
    c, _ = train(replace(short, seed=1), "c")
    assert not torch.equal(a.W_E, c.W_E)
    # the recipe's code (batches, schedule, optimiser) is the one that trained the shipped model: these numbers
    # move if any of it changes
    assert card_a["final_train_loss"] == pytest.approx(PINNED_SHORT_RUN["final_train_loss"], abs=2e-3)
    assert card_a["in_context"]["first_half_loss"] == pytest.approx(PINNED_SHORT_RUN["first_half_loss"], abs=2e-3)
    assert card_a["in_context"]["second_half_loss"] == pytest.approx(PINNED_SHORT_RUN["second_half_loss"], abs=2e-3)


def test_shipped_attn_only_2l_has_its_cards_properties():
    """The shipped zoo/attn-only-2l measures as its card says: it copies, and the same heads play the same roles."""
    from circuitlab import induction
    from circuitlab.zoo.attn_only import in_context_losses

    model = circuitlab.load_model("zoo/attn-only-2l")
    shipped = circuitlab.zoo_card("zoo/attn-only-2l")
    ic = in_context_losses(model)
    assert abs(ic["second_half_loss"] - shipped["in_context"]["second_half_loss"]) < 2e-3
    assert ic["second_half_loss"] < 0.5 * ic["first_half_loss"]
    prev = induction.head_scores(model, kind="previous_token").values
    ind = induction.head_scores(model, kind="induction").values
    shipped_prev = torch.tensor(shipped["head_scores"]["previous_token"])
    shipped_ind = torch.tensor(shipped["head_scores"]["induction"])
    # the same heads play the same roles
    assert prev[0].argmax() == shipped_prev[0].argmax()
    assert ((ind[1] > 0.3) == (shipped_ind[1] > 0.3)).all()


def test_zoo_build_writes_the_recipes_extra_files_beside_the_weights(tmp_path, monkeypatch):
    import json

    from circuitlab.zoo import build, registry

    model = random_model("gpt2", seed=4)
    fake = registry.ZooRecipe(
        name="zoo/fake",
        train=lambda: (model, {"trained": True}, {"world.json": '{"a": 1}', "heldout.txt": "In the beginning\n"}),
        # measure reads the files shipped beside the weights, as it does for a shipped model
        measure=lambda m, path: {"behaviours": {"n_layers": m.cfg.n_layers,
                                                "world": json.loads((path / "world.json").read_text())}},
        describe=lambda card: f"fake, {card['behaviours']['n_layers']} layers",
    )
    monkeypatch.setitem(registry._RECIPES, fake.name, fake)  # registered for this test only
    path = build.build("zoo/fake", out_dir=tmp_path, verbose=False)
    assert path == tmp_path / "fake"
    assert (path / "world.json").read_text() == '{"a": 1}'
    assert (path / "heldout.txt").read_text() == "In the beginning\n"
    card = circuitlab.models.io.read_card(path)
    assert card["trained"] and card["description"] == f"fake, {model.cfg.n_layers} layers"
    assert card["behaviours"]["world"] == {"a": 1}
    tokens = torch.randint(0, model.cfg.d_vocab, (2, 7))
    assert torch.equal(circuitlab.load_model(path)(tokens), model(tokens))
    # and `measure` re-reads them from the folder it measures
    (path / "world.json").write_text('{"a": 2}')
    assert build.main(["measure", "zoo/fake", "--out", str(tmp_path)]) == 0
    assert circuitlab.models.io.read_card(path)["behaviours"]["world"] == {"a": 2}


def test_zoo_registry_lists_every_recipe_and_fails_loudly_on_a_broken_one(monkeypatch):
    from circuitlab.zoo import registry

    assert list(registry.recipes()) == ["zoo/attn-only-2l", "zoo/attn-only-1l", "zoo/toy-lm"]
    assert set(registry.recipes()) == {n for n in circuitlab.list_models() if n.startswith("zoo/")}  # all have recipes
    with pytest.raises(CircuitlabError, match="zoo/attn-only-2l"):
        registry.get("zoo/attn-only-3l")
    from circuitlab.zoo.attn_only import RECIPES

    with pytest.raises(CircuitlabError, match="'stepz'"):
        registry.with_fields(RECIPES["zoo/attn-only-2l"], {"stepz": 3})
    monkeypatch.setattr(registry, "RECIPE_MODULES", (*registry.RECIPE_MODULES, "circuitlab.zoo.no_such_recipe"))
    with pytest.raises(ImportError):
        registry.recipes()


@pytest.fixture(scope="module")
def tiny_bridge(tmp_path_factory):
    """A TransformerBridge booted offline from a tiny random GPT-2 saved locally."""
    pytest.importorskip("transformer_lens.model_bridge")
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformer_lens.model_bridge import TransformerBridge

    d = tmp_path_factory.mktemp("hf-gpt2")
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=4, n_embd=32, vocab_size=50, n_positions=32)).save_pretrained(d)
    return TransformerBridge.boot_transformers(str(d), device="cpu")


def test_transformer_bridge_needs_compatibility_mode(tiny_bridge):
    with pytest.raises(CircuitlabError, match="enable_compatibility_mode"):
        circuitlab.load_model(tiny_bridge)
    tiny_bridge.enable_compatibility_mode(disable_warnings=True)
    assert circuitlab.load_model(tiny_bridge) is tiny_bridge


def test_weight_fingerprint_sees_every_kind_of_weight_change():
    """The one fingerprint (models.identity) against a recomputation from scratch: a parameter's data replaced
    (``p.data = ...``, which moves no version counter), two MLP neurons swapped, an in-place change under no_grad,
    and a change undone (equal weights give the equal fingerprint again)."""
    import copy

    from circuitlab.models.identity import weight_fingerprint

    model = circuitlab.load_model("zoo/toy-lm")
    fresh = lambda: weight_fingerprint(copy.deepcopy(model))  # noqa: E731  (a new object: no memo)
    before = weight_fingerprint(model)
    assert before == fresh()
    W = model.blocks[0].mlp.W_in
    original = W.data.clone()
    W.data = original[:, [1, 0, *range(2, W.shape[1])]]  # swap two neurons' input weights
    swapped = weight_fingerprint(model)
    assert swapped != before and swapped == fresh()
    with torch.no_grad():
        W.mul_(2.0)
    doubled = weight_fingerprint(model)
    assert doubled not in (before, swapped) and doubled == fresh()
    W.data = original.clone()
    assert weight_fingerprint(model) == before
