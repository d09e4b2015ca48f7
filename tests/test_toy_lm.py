"""zoo/toy-lm: its recipe's parts, and the four behaviours of the shipped model, recomputed here."""

from __future__ import annotations

import random
import shutil

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

import circuitlab
from circuitlab.tasks import repeated_tokens
from circuitlab.tasks import toy_world as facts
from circuitlab.zoo import text_data
from circuitlab.zoo import toy_lm as T
from circuitlab.zoo.fastgpt import REBUILT_BUFFERS, FastGPT
from circuitlab.zoo.tokenizer import EOT, single_token_id, train_tokenizer

ZOO = T.zoo_dir()
shipped = pytest.mark.skipif(not (ZOO / "model.safetensors").is_file(), reason="zoo/toy-lm weights not built yet")
corpora_installed = shutil.which("bible") is not None and (text_data.FORTUNE_DIR / "fortunes").is_file()

ENGLISH = (
    "In the beginning was the word, and the word was with the people of the town. "
    "The baker and the farmer went to the market, and the potter gave a cup to the weaver. "
) * 20


@pytest.fixture(scope="module")
def world() -> facts.World:
    return facts.make_world(n_people=40, seed=3)


@pytest.fixture(scope="module")
def small_tokenizer(world):
    rng = random.Random(0)
    texts = [ENGLISH] + [facts.synthetic_text(world, kind, rng, 50) for kind in ("fact", "ioi") for _ in range(20)]
    words = [v for spec in world.relations.values() for v in spec["values"]] + world.ioi_names
    texts += [" ".join(words)] * 100  # so every answer and name is frequent enough to become one token
    return train_tokenizer(texts, vocab_size=800)


def tiny_model(tokenizer, seed: int = 0, **kw) -> HookedTransformer:
    cfg = HookedTransformerConfig(n_layers=2, d_model=32, n_heads=2, d_head=16, d_mlp=64, n_ctx=64,
                                  d_vocab=tokenizer.vocab_size if tokenizer else 97, act_fn="gelu_new",
                                  normalization_type="LN", seed=seed, **kw)
    model = HookedTransformer(cfg, tokenizer=tokenizer)
    with torch.no_grad():  # non-trivial biases and LayerNorm weights, so nothing is checked at a special point
        for name, p in model.named_parameters():
            if p.ndim == 1 or name.endswith(("b_Q", "b_K", "b_V")):
                p.add_(0.2 * torch.randn_like(p))
    return model.eval()


# ------------------------------------------------------------------------------------ recipe parts, offline

@pytest.mark.parametrize("positions", [{}, {"positional_embedding_type": "rotary", "rotary_dim": 4},
                                       {"positional_embedding_type": "rotary", "rotary_dim": 16}],
                         ids=["standard", "rotary-partial", "rotary-full"])
def test_fast_twin_matches_hooked_transformer(positions):
    model = tiny_model(None, seed=1, **positions)
    fast = FastGPT.from_hooked(model)
    tokens = torch.randint(0, model.cfg.d_vocab, (3, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref, got = model(tokens), fast(tokens)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    # and its weights load back into a HookedTransformer unchanged
    other = HookedTransformer(model.cfg)
    missing, unexpected = other.load_state_dict(fast.to_hooked_state(), strict=False)
    assert not unexpected and missing and all(k.endswith(REBUILT_BUFFERS) for k in missing)
    with torch.no_grad():
        torch.testing.assert_close(other(tokens), ref)


def test_fast_twin_with_tied_embeddings_is_the_hooked_model_with_w_u_equal_to_w_e_transposed():
    model = tiny_model(None, seed=2, positional_embedding_type="rotary", rotary_dim=8)
    fast = FastGPT.from_hooked(model, tied=True)
    assert "unembed.W_U" not in fast.state_dict() and "unembed.b_U" in fast.state_dict()
    with torch.no_grad():
        model.W_U.copy_(model.W_E.T)
    tokens = torch.randint(0, model.cfg.d_vocab, (2, 30), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(fast(tokens), model(tokens), atol=1e-4, rtol=1e-4)
    # one parameter: a gradient step on the twin moves the embedding and the unembedding together
    fast(tokens).logsumexp(-1).sum().backward()
    assert fast.embed.W_E.grad is not None
    state = fast.to_hooked_state()
    assert torch.equal(state["unembed.W_U"], state["embed.W_E"].T)


def test_fast_twin_refuses_what_it_does_not_implement():
    model = tiny_model(None, seed=0, positional_embedding_type="shortformer")
    with pytest.raises(circuitlab.CircuitlabError, match="positional_embedding_type='shortformer'"):
        FastGPT.from_hooked(model)


def test_repeated_tokens_half_losses_by_brute_force():
    model = tiny_model(None, seed=3, positional_embedding_type="rotary", rotary_dim=8)
    probe = repeated_tokens(4, 10, model.cfg.d_vocab, seed=1, bos_token_id=0)
    tokens = probe.tokens
    assert tokens.shape == (4, 21) and (tokens[:, 0] == 0).all()
    assert torch.equal(tokens[:, 1:11], tokens[:, 11:]) and (tokens[:, 1:] > 0).all()
    with torch.no_grad():
        first, second = probe.half_losses(model(tokens))
        per_tok = model(tokens, return_type="loss", loss_per_token=True)  # [:, j] predicts token j + 1
    assert first == pytest.approx(per_tok[:, 1:10].mean().item(), rel=1e-5)  # predicts r_2..r_10, first copy
    assert second == pytest.approx(per_tok[:, 11:20].mean().item(), rel=1e-5)  # predicts r_2..r_10, second copy
    with pytest.raises(circuitlab.CircuitlabError, match="do not belong to tokens"):
        probe.half_losses(model(tokens[:, :-1]))


def test_batches_mix_the_recipes_kinds(small_tokenizer, world):
    recipe = T.ToyLMRecipe(n_ctx=64, vocab_size=small_tokenizer.vocab_size, batch_size=400, n_people=40, seed=3,
                           repeat_fraction=0.3, random_repeat_fraction=0.2, fact_fraction=0.2, ioi_fraction=0.1)
    ids = torch.tensor(small_tokenizer.encode(ENGLISH * 5, add_special_tokens=False))
    batch = T.BatchSampler(recipe, small_tokenizer, ids, world).batch()
    assert batch.shape == (400, 64) and (batch[:, 0] == 0).all()
    periodic = 0
    for row in batch[:, 1:].tolist():  # a passage repeated k >= 2 times in a row: some period L in 6..31 repeats
        periodic += any(row[i:i + L] == row[i + L:i + 2 * L] and len(set(row[i:i + L])) > 3
                        for L in range(6, 32) for i in range(0, 63 - 2 * L + 1))
    # ENGLISH is itself periodic (a 2-sentence text repeated), so real text rows may also count; at least the
    # repeated kinds (50% of rows) must
    assert periodic >= 0.4 * 400
    with pytest.raises(circuitlab.CircuitlabError, match="sum to more than 1"):
        T.BatchSampler(T.ToyLMRecipe(repeat_fraction=0.9, fact_fraction=0.2), small_tokenizer, ids, world)


def test_world_is_deterministic_and_splits_are_disjoint(world):
    again = facts.make_world(n_people=40, seed=3)
    assert again == world
    assert facts.make_world(n_people=40, seed=4).facts != world.facts
    assert len(set(world.people)) == 40
    train_pairs = {frozenset(p) for p in world.ioi_train_pairs}
    assert not train_pairs & {frozenset(p) for p in world.ioi_test_pairs}
    n = len(world.ioi_names)
    assert len(world.ioi_train_pairs) + len(world.ioi_test_pairs) == n * (n - 1) // 2
    # every relation's value is one of its values, and the held-out templates rotate over all templates
    for person in world.people:
        for rel, spec in world.relations.items():
            assert world.facts[person][rel] in spec["values"]
    held = [world.heldout_template[p][r] for p in world.people for r in world.relations]
    assert set(held) == {0, 1, 2, 3}
    assert facts.World.from_json(world.to_json()) == world


def test_load_world_reads_a_world_file_or_the_model_folder_holding_one(world, tmp_path):
    (tmp_path / "world.json").write_text(world.to_json())
    assert facts.load_world(tmp_path) == world
    assert facts.load_world(tmp_path / "world.json") == world
    with pytest.raises(circuitlab.CircuitlabError, match="No world.json"):
        facts.load_world(tmp_path / "elsewhere")


def test_training_lines_never_use_heldout_templates_or_pairs(world):
    rng = random.Random(1)
    fact_lines = set(facts.synthetic_text(world, "fact", rng, 4000).splitlines())
    for person in world.people:
        for rel in world.relations:
            held_line = facts.fact_line(world, person, rel, world.heldout_template[person][rel])
            assert held_line not in fact_lines
    # the trained templates do occur (so the test above is not vacuous)
    p, r = world.people[0], "home"
    trained = [facts.fact_line(world, p, r, t) for t in range(4) if t != world.heldout_template[p][r]]
    assert any(line in fact_lines for line in trained)
    test_names = {frozenset(p) for p in world.ioi_test_pairs}
    for line in facts.synthetic_text(world, "ioi", rng, 2000).splitlines():
        present = frozenset(n for n in world.ioi_names if f" {n} " in line or f" {n}," in line or f" {n}." in line)
        assert present not in test_names, line


def test_prompt_builders(world):
    person = world.people[0]
    prompt, answer = facts.fact_sentence(world, person, "home", 0)
    assert prompt == f"{person} lives in" and answer == " " + world.facts[person]["home"]
    prompt, io = facts.ioi_sentence(world, "Mary", "John", True, 0, "store", "drink")
    assert prompt == "When Mary and John went to the store, John gave a drink to" and io == " Mary"
    prompt, io = facts.ioi_sentence(world, "Mary", "John", False, 0, "store", "drink")
    assert prompt == "When John and Mary went to the store, John gave a drink to" and io == " Mary"


def test_tokenizer_conventions(small_tokenizer, world):
    tok = small_tokenizer
    assert tok.convert_ids_to_tokens(0) == EOT and tok.bos_token_id == 0
    text = "When Mary and John went to the store, John gave a drink to Mary."
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    # leading-space convention: " Mary" is one token, different from "Mary"
    assert single_token_id(tok, " Mary") != tok.encode("Mary", add_special_tokens=False)[0]
    with pytest.raises(circuitlab.CircuitlabError, match="single tokens"):
        single_token_id(tok, " Mary John")


def test_tokenizer_round_trips_through_save_and_load(small_tokenizer, tmp_path):
    model = tiny_model(small_tokenizer, seed=2)
    text = "Zorvath lives in Pellmoor. When Mary and John went to the store"
    before = model.to_tokens(text)
    assert before[0, 0].item() == 0 and (before[0, 1:] != 0).all()  # exactly one BOS
    circuitlab.save_model(model, tmp_path / "m")
    loaded = circuitlab.load_model(str(tmp_path / "m"))
    assert torch.equal(loaded.to_tokens(text), before)
    assert loaded.to_str_tokens(text) == model.to_str_tokens(text)
    with torch.no_grad():
        torch.testing.assert_close(loaded(before), model(before))


def test_heldout_loss_matches_transformer_lens_loss(small_tokenizer):
    model = tiny_model(small_tokenizer, seed=3)
    text = ENGLISH * 3
    got = T.heldout_loss(model, text)
    ids = torch.tensor(small_tokenizer.encode(text, add_special_tokens=False))
    body = model.cfg.n_ctx - 1
    n = len(ids) // body
    windows = torch.cat([torch.zeros(n, 1, dtype=torch.long), ids[: n * body].view(n, body)], 1)
    with torch.no_grad():
        ref = model(windows, return_type="loss").item()
    assert got["loss"] == pytest.approx(ref, rel=1e-5)
    assert got["n_tokens"] == n * body
    # the unigram entropy, brute force
    counts = {}
    for i in ids[: n * body].tolist():
        counts[i] = counts.get(i, 0) + 1
    total = sum(counts.values())
    import math
    assert got["unigram_entropy"] == pytest.approx(-sum(c / total * math.log(c / total) for c in counts.values()),
                                                   rel=1e-5)


def test_repeated_passage_losses_by_brute_force(small_tokenizer):
    model = tiny_model(small_tokenizer, seed=4)
    text = ENGLISH
    got = T.repeated_passage_losses(model, text, passage_len=20, n_passages=3)
    ids = small_tokenizer.encode(text, add_special_tokens=False)
    firsts, seconds = [], []
    for i in range(3):
        p = ids[20 * i: 20 * (i + 1)]
        seq = torch.tensor([[0] + p + p])
        with torch.no_grad():
            per_tok = model(seq, return_type="loss", loss_per_token=True)[0]  # per_tok[j] predicts seq[j + 1]
        firsts += per_tok[1:20].tolist()  # predicts p[1..19], first copy (seq positions 2..20)
        seconds += per_tok[21:40].tolist()  # predicts p[1..19], second copy (seq positions 22..40)
    assert got["first_loss"] == pytest.approx(sum(firsts) / len(firsts), rel=1e-5)
    assert got["second_loss"] == pytest.approx(sum(seconds) / len(seconds), rel=1e-5)


def test_fact_and_ioi_measures_read_the_right_logits(small_tokenizer, world):
    model = tiny_model(small_tokenizer, seed=5)
    # brute force for one IOI prompt and one fact query: run each prompt alone, read the last position
    pair = world.ioi_test_pairs[0]
    got = T.ioi_logit_diff(model, world, pairs=[pair])
    rng = random.Random(0)
    diffs = []
    for io, s in (pair, pair[::-1]):
        for io_first in (True, False):
            for t in range(len(world.ioi_templates)):
                prompt, answer = facts.ioi_sentence(world, io, s, io_first, t, rng.choice(world.ioi_places),
                                                rng.choice(world.ioi_objects))
                with torch.no_grad():
                    logits = model(model.to_tokens(prompt))[0, -1]
                diffs.append((logits[small_tokenizer.encode(answer)[-1]]
                              - logits[small_tokenizer.encode(" " + s)[-1]]).item())
    assert got["n_prompts"] == len(diffs) == 12
    assert got["mean"] == pytest.approx(sum(diffs) / len(diffs), abs=1e-4)

    acc = T.fact_accuracy(model, world)
    correct = 0
    for person in world.people:
        for rel in world.relations:
            prompt, answer = facts.fact_sentence(world, person, rel, world.heldout_template[person][rel])
            with torch.no_grad():
                pred = model(model.to_tokens(prompt))[0, -1].argmax().item()
            correct += pred == single_token_id(small_tokenizer, answer)
    assert acc["n_queries"] == 4 * len(world.people)
    assert acc["accuracy"] == pytest.approx(correct / acc["n_queries"])
    assert acc["chance"] == pytest.approx((1 / 12 + 1 / 10 + 1 / 8 + 1 / 8) / 4)


# ------------------------------------------------------------------------------------------ shipped model

@pytest.fixture(scope="module")
def toy_lm():
    return circuitlab.load_model("zoo/toy-lm")


@pytest.fixture(scope="module")
def shipped_world():
    return facts.load_world(ZOO)


@shipped
def test_shipped_model_loads_offline_and_is_what_the_card_says(toy_lm):
    cfg = toy_lm.cfg
    card = circuitlab.zoo_card("zoo/toy-lm")
    assert not cfg.attn_only and cfg.d_mlp and cfg.normalization_type == "LN" and cfg.act_fn == "gelu_new"
    assert 2 <= cfg.n_layers <= 4 and cfg.n_ctx >= 128
    assert cfg.dtype == torch.float32 and all(p.dtype == torch.float32 for p in toy_lm.parameters())
    assert card["n_params"] == sum(p.numel() for p in toy_lm.parameters())
    assert (ZOO / "model.safetensors").stat().st_size < 10 * 2**20
    assert cfg.d_vocab == card["recipe"]["vocab_size"] == toy_lm.tokenizer.vocab_size
    desc = circuitlab.list_models()["zoo/toy-lm"]
    assert desc == card["description"] and "\n" not in desc and "min" in desc
    for key in ("name", "description", "recipe", "train_seconds", "behaviours"):
        assert key in card


@shipped
def test_shipped_model_round_trips(toy_lm, tmp_path):
    circuitlab.save_model(toy_lm, tmp_path / "copy")
    again = circuitlab.load_model(str(tmp_path / "copy"))
    text = "When Mary and John went to the store, John gave a drink to"
    tokens = toy_lm.to_tokens(text)
    assert torch.equal(again.to_tokens(text), tokens)
    with torch.no_grad():
        torch.testing.assert_close(again(tokens), toy_lm(tokens), rtol=0, atol=0)


@shipped
def test_shipped_world_is_the_recipes_world(toy_lm, shipped_world):
    card = circuitlab.zoo_card("zoo/toy-lm")
    r = card["recipe"]
    assert shipped_world == facts.make_world(r["n_people"], r["seed"], r["heldout_pair_fraction"])
    assert shipped_world == T.world_for(toy_lm)
    for spec in shipped_world.relations.values():  # every answer is one token
        for v in spec["values"]:
            single_token_id(toy_lm.tokenizer, " " + v)


@pytest.fixture(scope="module")
def behaviours(toy_lm):
    # what `python -m circuitlab.zoo measure zoo/toy-lm` measures: with world.json and heldout.txt beside the weights
    return T.measure_model(toy_lm, ZOO)["behaviours"]


@shipped
def test_heldout_text_loss(behaviours):
    h = behaviours["heldout_text"]
    assert h["n_tokens"] > 5000
    # a model that ignores context can do no better than the text's own unigram entropy (~6 nats here)
    assert h["loss"] < h["unigram_entropy"] - 1.0


@shipped
def test_repeated_passage_loss_drops(behaviours):
    rp = behaviours["repeated_passage"]
    assert rp["n_passages"] == 64 and rp["passage_len"] == 40
    assert rp["drop"] > 1.0
    assert rp["second_loss"] < 0.6 * rp["first_loss"]


@shipped
def test_shipped_model_copies_repeated_random_tokens(toy_lm):
    # the standard induction test (Olsson et al. 2022): with no language prior to help, only copying predicts
    # the second copy of random tokens; chance is ln(4095) = 8.3 nats
    probe = repeated_tokens(64, 25, toy_lm.cfg.d_vocab, seed=123, bos_token_id=0)
    with torch.no_grad():
        first, second = probe.half_losses(toy_lm(probe.tokens))
    assert first > 7.0
    assert second < 2.0
    # and the induction heads are there: some head attends to the token after the previous occurrence
    from circuitlab import induction
    scores = induction.head_scores(toy_lm, kind="induction", seed=0)
    assert scores.values.max() > 0.4


@shipped
def test_shipped_model_has_tied_embeddings(toy_lm):
    assert torch.equal(toy_lm.W_U, toy_lm.W_E.T)
    assert toy_lm.cfg.positional_embedding_type == "rotary"


@shipped
def test_fact_recall_on_heldout_templates(behaviours):
    held = behaviours["fact_recall_heldout_template"]
    trained = behaviours["fact_recall_trained_template"]
    assert held["n_queries"] == 4 * 80
    assert held["chance"] < 0.15
    assert held["accuracy"] > 0.6  # chance is 11%
    assert trained["accuracy"] > 0.8


@shipped
def test_ioi_logit_difference_on_heldout_pairs(behaviours):
    ioi = behaviours["ioi_heldout_pairs"]
    assert ioi["n_prompts"] == 660
    assert ioi["mean"] > 2.0
    assert ioi["fraction_positive"] > 0.9


@shipped
def test_card_numbers_match_the_shipped_weights(behaviours):
    card = circuitlab.zoo_card("zoo/toy-lm")["behaviours"]
    assert card["heldout_text"]["loss"] == pytest.approx(behaviours["heldout_text"]["loss"], abs=2e-3)
    assert card["repeated_passage"]["drop"] == pytest.approx(behaviours["repeated_passage"]["drop"], abs=2e-3)
    assert card["fact_recall_heldout_template"]["accuracy"] == pytest.approx(
        behaviours["fact_recall_heldout_template"]["accuracy"], abs=1e-3)
    assert card["ioi_heldout_pairs"]["mean"] == pytest.approx(behaviours["ioi_heldout_pairs"]["mean"], abs=2e-3)


@pytest.mark.slow
@pytest.mark.skipif(not corpora_installed, reason="needs the Debian corpora: apt-get install -y bible-kjv fortunes")
def test_zoo_build_trains_a_variant_and_measures_it_from_the_files_beside_it(tmp_path):
    from circuitlab.models.io import read_card
    from circuitlab.zoo import build

    tiny = dict(n_layers=1, d_model=32, n_heads=2, d_head=16, d_mlp=64, vocab_size=1500, max_real_chars=150_000,
                tokenizer_glossary_lines=200, steps=3, eval_every=2, batch_size=4, seed=5)
    path = build.build("zoo/toy-lm", out_dir=tmp_path, verbose=False, progress=False, **tiny)
    assert path == tmp_path / "toy-lm"
    card = read_card(path)
    assert card["recipe"]["steps"] == 3 and card["recipe"]["seed"] == 5
    world = facts.load_world(path)
    assert world == facts.make_world(80, 5, 0.2)
    model = circuitlab.load_model(path)
    assert card["behaviours"] == T.measure_model(model, path)["behaviours"]
    with pytest.raises(circuitlab.CircuitlabError, match="stepz"):
        build.build("zoo/toy-lm", out_dir=tmp_path, verbose=False, stepz=3)


@pytest.mark.slow
@pytest.mark.skipif(not corpora_installed, reason="needs the Debian corpora: apt-get install -y bible-kjv fortunes")
def test_recipe_is_deterministic_by_seed(tmp_path):
    def run(seed):
        recipe = T.ToyLMRecipe(n_layers=1, d_model=32, n_heads=2, d_head=16, d_mlp=64, vocab_size=1500,
                               max_real_chars=150_000, tokenizer_glossary_lines=200, steps=5, eval_every=2,
                               batch_size=4, seed=seed)
        model, card, world, _ = T.train(recipe, progress=False, log_every=0)
        return model, card, world

    a, card_a, world_a = run(0)
    b, card_b, world_b = run(0)
    c, _, _ = run(1)
    assert world_a == world_b
    assert a.tokenizer.backend_tokenizer.to_str() == b.tokenizer.backend_tokenizer.to_str()
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    assert card_a["behaviours"] == card_b["behaviours"]
    assert card_a["induction_curve"] == card_b["induction_curve"]
    assert [row[0] for row in card_a["induction_curve"]["rows"]] == [0, 2, 4, 5]
    assert not torch.equal(a.W_E, c.W_E)
    assert torch.equal(a.W_U, a.W_E.T) and a.cfg.positional_embedding_type == "rotary"
    # the card's description is what describe() makes of it
    assert card_a["description"] == T.describe(card_a) and "min on 2 CPU threads" in card_a["description"]
