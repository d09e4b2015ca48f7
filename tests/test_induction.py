"""Induction-head detection: scores against brute force and TransformerLens, composition against
``all_composition_scores``, ablation against hand-written hooks, and the circuit on the zoo models."""

from __future__ import annotations


import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformer_lens.head_detector import detect_head

import circuitlab
from circuitlab import CircuitlabError
from circuitlab import induction as ind
from circuitlab.testing import ARCHITECTURES, random_model
from circuitlab.zoo.tokenizer import word_level_tokenizer


def _zoo(name: str) -> HookedTransformer:
    if name not in circuitlab.list_models():
        pytest.skip(f"{name} is not installed (build it with `python -m circuitlab.zoo build {name}`)")
    return circuitlab.load_model(name)


@pytest.fixture(scope="module")
def zoo2() -> HookedTransformer:
    return _zoo("zoo/attn-only-2l")


@pytest.fixture(scope="module")
def zoo1() -> HookedTransformer:
    return _zoo("zoo/attn-only-1l")


@pytest.fixture(scope="module")
def circuit2(zoo2) -> ind.InductionCircuit:
    return ind.find_induction_circuit(zoo2)


def _worded_model(seed: int = 0, n_words: int = 30) -> HookedTransformer:
    """A random attention-only model with the zoo's word-level tokenizer (BOS = id 0)."""
    cfg = HookedTransformerConfig(n_layers=2, d_model=32, n_heads=4, d_head=8, d_vocab=n_words + 1, n_ctx=40,
                                  attn_only=True, act_fn=None, normalization_type="LN", seed=seed,
                                  positional_embedding_type="standard", default_prepend_bos=True, device="cpu")
    model = HookedTransformer(cfg, tokenizer=word_level_tokenizer(n_words))
    model.eval()
    return model


# -- targets and scores ---------------------------------------------------------------------------------


def _brute_targets(tokens: list[int], kind: str, special: list[bool]) -> set[tuple[int, int]]:
    """(query, key) pairs by the definitions, with plain loops."""
    out = set()
    n = len(tokens)
    for i in range(n):
        if special[i]:
            continue
        for j in range(i):
            if special[j]:
                continue
            if kind == "previous_token" and j == i - 1:
                out.add((i, j))
            if kind == "duplicate_token" and tokens[j] == tokens[i]:
                out.add((i, j))
            if kind == "induction" and tokens[j] == tokens[i] and not special[j + 1]:
                out.add((i, j + 1))
    return out


@pytest.mark.parametrize("kind", ind.KINDS)
def test_target_mask_matches_brute_force(kind):
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(1, 6, (3, 17), generator=gen)  # small alphabet: many repeats
    tokens[:, 0] = 0
    tokens[1, 9] = 0  # a special token in the middle too
    special = tokens == 0
    mask = ind.target_mask(tokens, kind, special)
    for b in range(3):
        got = {(int(i), int(k)) for i, k in mask[b].nonzero().tolist()}
        assert got == _brute_targets(tokens[b].tolist(), kind, special[b].tolist())


def test_scores_on_generated_sequences_are_the_textbook_diagonals():
    """With a large vocabulary (no accidental repeats) the induction score is the mean of the diagonal at offset
    seq_len - 1 over the second half, and the previous-token score the mean of the -1 diagonal."""
    model = random_model("gpt2", seed=3, d_vocab=5000, n_ctx=40, n_layers=3)
    n, n_seqs = 12, 6
    rep = ind.repeated_sequences(model, n, n_seqs, seed=5)
    assert rep.prefix == 0  # no tokenizer: no BOS (documented choice)
    assert all(len(set(row[:n].tolist())) == n for row in rep.tokens)
    _, cache = model.run_with_cache(rep.tokens)
    ind_ref = torch.zeros(3, 4)
    prev_ref = torch.zeros(3, 4)
    for layer in range(3):
        pat = cache["pattern", layer]  # [b, h, q, k]
        ind_ref[layer] = pat.diagonal(offset=-(n - 1), dim1=-2, dim2=-1)[..., 1:].mean((0, -1))
        prev_ref[layer] = pat.diagonal(offset=-1, dim1=-2, dim2=-1).mean((0, -1))
    got_ind = ind.head_scores(model, "induction", seq_len=n, n_seqs=n_seqs, seed=5)
    got_prev = ind.head_scores(model, "previous_token", seq_len=n, n_seqs=n_seqs, seed=5)
    torch.testing.assert_close(got_ind.values, ind_ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_prev.values, prev_ref, atol=1e-5, rtol=1e-5)
    assert got_ind.axes == ("layer", "head") and got_ind.labels["head"][0] == "H0"
    assert got_ind.meta["n_queries"] == n_seqs * n


@pytest.mark.parametrize("kind,tl_name", [("induction", "induction_head"), ("previous_token", "previous_token_head"),
                                          ("duplicate_token", "duplicate_token_head")])
def test_scores_on_text_agree_with_transformer_lens_detect_head(kind, tl_name):
    """TransformerLens's ``detect_head`` ("mul") divides the attention on the targets by all query rows; we divide
    by the rows that have a target. Its previous-token pattern also counts position 1 -> BOS, which we skip (BOS is
    no target); otherwise the targets are the same."""
    model = _worded_model()
    text = "t1 t2 t3 t4 t5 t6 t2 t7 t1 t2 t3 t4 t8 t5 t6"
    tl = detect_head(model, text, tl_name, error_measure="mul")
    toks = model.to_tokens(text)
    assert int(toks[0, 0]) == 0  # BOS
    got = ind.head_scores(model, kind, tokens=text)
    n_rows = toks.shape[1]
    n_q = got.meta["n_queries"]
    expected_n_q = len({i for i, _ in _brute_targets(toks[0].tolist(), kind, (toks[0] == 0).tolist())})
    assert n_q == expected_n_q
    numerator = tl.float() * n_rows
    if kind == "previous_token":
        _, cache = model.run_with_cache(toks)
        numerator -= torch.stack([cache["pattern", layer][0, :, 1, 0] for layer in range(2)])
    torch.testing.assert_close(got.values, numerator / n_q, atol=1e-5, rtol=1e-4)


def test_bos_convention_and_special_tokens():
    model = _worded_model(n_words=12)
    rep = ind.repeated_sequences(model, seq_len=10, n_seqs=50, seed=0)
    assert rep.prefix == 1 and (rep.tokens[:, 0] == 0).all()  # the tokenizer's BOS, because the model prepends it
    assert (rep.tokens[:, 1:] != 0).all()  # the special id is never drawn
    model.cfg.default_prepend_bos = False
    try:
        assert ind.repeated_sequences(model, seq_len=10, n_seqs=2).prefix == 0
    finally:
        model.cfg.default_prepend_bos = True


def test_scores_are_seeded_and_in_unit_interval():
    model = random_model("pythia", seed=1)
    a = ind.head_scores(model, "duplicate_token", seed=7)
    b = ind.head_scores(model, "duplicate_token", seed=7)
    c = ind.head_scores(model, "duplicate_token", seed=8)
    assert torch.equal(a.values, b.values) and not torch.equal(a.values, c.values)
    for kind in ind.KINDS:
        v = ind.head_scores(model, kind).values
        assert (v >= 0).all() and (v <= 1 + 1e-6).all()


# -- composition ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("kind", ["Q", "K", "V"])
def test_composition_scores_equal_transformer_lens(arch, kind):
    model = random_model(arch, seed=2, n_layers=3, d_model=48, n_heads=6)
    got = ind.composition_scores(model, kind)
    ref = model.all_composition_scores(kind)
    assert got.values.shape == (3, 6, 3, 6)
    torch.testing.assert_close(got.values, ref, atol=2e-6, rtol=1e-4)


def test_composition_scores_with_heads_wider_than_the_residual_stream():
    cfg = HookedTransformerConfig(n_layers=2, d_model=16, n_heads=3, d_head=24, d_vocab=20, n_ctx=8, act_fn="relu",
                                  d_mlp=32, normalization_type=None, seed=4, device="cpu")
    model = HookedTransformer(cfg)
    for kind in "QKV":
        torch.testing.assert_close(ind.composition_scores(model, kind).values, model.all_composition_scores(kind),
                                   atol=2e-6, rtol=1e-4)


# -- ablation -------------------------------------------------------------------------------------------


def _reference_in_context_loss(model, rep, layer_heads=(), fill=None):
    """Loss on r_2..r_n of the second copy from full logits, with ablation by a hand-written hook."""

    def hook(z, hook):
        for layer, h in layer_heads:
            if hook.layer() == layer:
                z[:, :, h] = 0 if fill is None else fill[(layer, h)]
        return z

    names = {f"blocks.{layer}.attn.hook_z" for layer, _ in layer_heads}
    with torch.no_grad():
        per_tok = model.run_with_hooks(rep.tokens, return_type="loss", loss_per_token=True,
                                       fwd_hooks=[(n, hook) for n in names])
    s = rep.prefix + rep.seq_len  # loss_per_token[:, t] predicts token t + 1
    return float(per_tok[:, s : s + rep.seq_len - 1].mean())


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_ablation_matches_hand_written_hooks(arch):
    model = random_model(arch, seed=5)
    rep = ind.repeated_sequences(model, seq_len=10, n_seqs=4, seed=1)
    heads = [(1, 2), (0, 3)]
    zero = ind.ablation_effect(model, heads, "zero", tokens=rep)
    assert zero.labels["ablated"] == ["none", "L1H2", "L0H3", "L1H2+L0H3"]
    ref = [_reference_in_context_loss(model, rep, hs) for hs in ([], [heads[0]], [heads[1]], heads)]
    torch.testing.assert_close(zero.values, torch.tensor(ref), atol=1e-5, rtol=1e-5)
    assert zero.baseline == pytest.approx(ref[0], abs=1e-5)

    _, cache = model.run_with_cache(rep.tokens)
    fill = {(layer, h): cache["z", layer][:, :, h].mean((0, 1)) for layer, h in heads}
    mean = ind.ablation_effect(model, heads, "mean", tokens=rep)
    ref = [_reference_in_context_loss(model, rep, hs, fill) for hs in ([], [heads[0]], [heads[1]], heads)]
    torch.testing.assert_close(mean.values, torch.tensor(ref), atol=1e-5, rtol=1e-5)


def test_ablation_chunks_give_the_same_numbers():
    model = random_model("attn_only", seed=6)
    whole = ind.ablation_effect(model, [(1, 0), (0, 1)], "mean", n_seqs=3)
    chunked = ind.ablation_effect(model, [(1, 0), (0, 1)], "mean", n_seqs=3, progress=True,
                                  max_memory=1)  # one batch row per chunk, the mean summed over single sequences
    torch.testing.assert_close(whole.values, chunked.values, atol=1e-6, rtol=1e-6)


def test_head_scores_in_batches_give_the_same_numbers():
    model = random_model("attn_only", seed=6)
    for kind in ("induction", "previous_token", "duplicate_token"):
        whole = ind.head_scores(model, kind, n_seqs=5)
        one_by_one = ind.head_scores(model, kind, n_seqs=5, max_memory=1)
        torch.testing.assert_close(whole.values, one_by_one.values, atol=1e-6, rtol=1e-6)
        assert whole.meta["n_queries"] == one_by_one.meta["n_queries"]


# -- bad input ------------------------------------------------------------------------------------------


def test_bad_input_raises_circuitlab_errors():
    model = random_model("attn_only", seed=0)  # n_ctx 32, no BOS
    with pytest.raises(CircuitlabError, match="n_ctx=32"):
        ind.head_scores(model, seq_len=17)
    ind.head_scores(model, seq_len=16)  # the largest that fits
    with pytest.raises(CircuitlabError, match="unknown head kind"):
        ind.head_scores(model, kind="inductive")
    with pytest.raises(CircuitlabError, match="out of range"):
        ind.ablation_effect(model, [(0, 4)])
    with pytest.raises(CircuitlabError, match="out of range"):
        ind.ablation_effect(model, [(2, 0)])
    with pytest.raises(CircuitlabError, match="unknown ablation method"):
        ind.ablation_effect(model, [(0, 1)], method="resample")
    with pytest.raises(CircuitlabError, match="unknown composition kind"):
        ind.composition_scores(model, "O")
    with pytest.raises(CircuitlabError, match="no position"):
        ind.head_scores(model, "induction", tokens=torch.arange(10)[None])
    with pytest.raises(ValueError):  # InputError is a ValueError too
        ind.head_scores(model, seq_len=0)


def test_heads_can_be_written_as_strings():
    model = random_model("attn_only", seed=0)
    a = ind.ablation_effect(model, ["L1H2", "0.3"], n_seqs=2)
    assert a.labels["ablated"] == ["none", "L1H2", "L0H3", "L1H2+L0H3"]
    assert ind.ablation_effect(model, (1, 2), n_seqs=2).labels["ablated"] == ["none", "L1H2"]


def test_circuit_on_a_random_model_finds_nothing_and_still_renders():
    circuit = ind.find_induction_circuit(random_model("llama", seed=0), n_seqs=4)
    assert circuit.induction_heads == [] and circuit.previous_token_heads == []
    assert circuit.ablation is None and "no previous-token or induction heads found" in circuit.summary()
    assert "Induction score" in circuit.to_html()


# -- the zoo: the circuit of Olsson et al. ---------------------------------------------------------------


def test_zoo_2l_induction_heads_in_layer_1_previous_token_heads_in_layer_0(circuit2):
    assert circuit2.induction_heads, circuit2.summary()
    assert all(layer == 1 for layer, _ in circuit2.induction_heads)
    ind_scores, prev = circuit2.induction_scores.values, circuit2.previous_token_scores.values
    assert float(ind_scores[1].max()) > 0.5 and float(ind_scores[0].max()) < 0.1  # layer 0 cannot do induction
    # previous-token attention lives in layer 0: its best head is there, every layer-0 head far above layer 1
    best = circuit2.previous_token_scores.top(1)[0][0]
    assert best[0] == 0, circuit2.summary()
    assert float(prev[0].min()) > 5 * float(prev[1].max())
    assert all(layer == 0 for layer, _ in circuit2.previous_token_heads)


def test_zoo_2l_induction_keys_read_the_previous_token_head(circuit2, zoo2):
    heads = [h for _, h in circuit2.induction_heads]
    kc = circuit2.k_composition_all.values[0, :, 1][:, heads]  # [layer-0 writer, induction head]
    kq = ind.composition_scores(zoo2, "Q").values[0, :, 1][:, heads]
    # the layer-0 head whose output the induction heads' keys read most is the best previous-token head
    best_prev = int(circuit2.previous_token_scores.values[0].argmax())
    assert int(kc.sum(-1).argmax()) == best_prev, circuit2.summary()
    # and layer 0 reaches the induction heads through their keys more than through their queries (Olsson et al.)
    assert float(kc.min()) > float(kq.max())
    assert circuit2.k_composition is not None and circuit2.k_composition.shape[1] == len(circuit2.induction_heads)


def test_zoo_2l_ablation_confirms_the_induction_heads(circuit2):
    abl = circuit2.ablation
    chance = abl.meta["chance_loss"]
    assert abl.baseline < 0.5 * chance  # the model copies in context: far below chance unablated
    # removing the induction heads sends the repeated-half loss (nearly) back to chance
    assert float(abl.values[-1]) - abl.baseline > 0.8 * (chance - abl.baseline)
    # each induction head matters on its own
    assert float(abl.increase[1:-1].min()) > 0.2


def test_zoo_2l_ablating_a_non_induction_head_barely_matters(circuit2, zoo2):
    """Heads outside the found circuit (neither induction nor previous-token heads) each matter little."""
    circuit_heads = set(circuit2.induction_heads) | set(circuit2.previous_token_heads)
    others = [(layer, h) for layer in range(zoo2.cfg.n_layers) for h in range(zoo2.cfg.n_heads)
              if (layer, h) not in circuit_heads]
    if not others:
        pytest.skip("every head of zoo/attn-only-2l is in the found circuit; there is no head outside it to ablate")
    effect = float(circuit2.ablation.values[-1]) - circuit2.ablation.baseline
    control = ind.ablation_effect(zoo2, others, method="mean")
    one_at_a_time = control.increase[1:1 + len(others)]
    assert float(one_at_a_time.abs().max()) < 0.1 * effect
    # while each induction head alone matters more than any of them
    assert float(circuit2.ablation.increase[1:-1].min()) > float(one_at_a_time.max())


def test_zoo_1l_has_no_induction_head(zoo1):
    scores = ind.head_scores(zoo1, "induction")
    assert float(scores.values.max()) < 0.3
    assert ind.find_induction_circuit(zoo1).induction_heads == []


def test_circuit_renders(circuit2, tmp_path):
    text = str(circuit2)
    assert "induction" in text and "L1H" in text and "L0H" in text
    page = circuit2.to_html()
    assert "Induction score" in page and "Previous-token score" in page
    assert "K-composition" in page and "circuits-vis" in page
    assert circuit2.patterns is not None and circuit2.patterns.shape[0] == len(circuit2.pattern_heads)


@pytest.mark.network
@pytest.mark.slow
def test_gpt2_small_reference():
    from circuitlab.errors import ModelDownloadError
    from circuitlab.models import hub_reachable
    from circuitlab.reproduce.induction_gpt2 import check_gpt2_reference

    if not hub_reachable():
        pytest.skip("gpt2-small needs a download from the Hugging Face hub, which is not reachable here")
    try:
        check = check_gpt2_reference()
    except ModelDownloadError as exc:
        pytest.skip(f"gpt2-small could not be downloaded: {exc}")
    assert check.passed, check.summary()


def test_empty_head_list_is_a_clear_error():
    model = random_model("attn_only")
    with pytest.raises(CircuitlabError, match="no heads"):
        ind.ablation_effect(model, [])
