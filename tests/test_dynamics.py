"""circuitlab.dynamics and the zoo's checkpoints: per-token losses and the ICL score against TransformerLens's own
per-token loss, head scores against attention patterns read by brute force, the phase-change detector against
synthetic curves with and without a planted jump, and checkpoints against training run separately."""

from __future__ import annotations

import math
import random

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

import circuitlab
from circuitlab import dynamics
from circuitlab.errors import InputError
from circuitlab.tasks.repeated import repeated_sequences
from circuitlab.zoo.training import log_spaced_steps, train_loop


@pytest.fixture(scope="module")
def model():
    return circuitlab.load_model("zoo/attn-only-2l")


@pytest.fixture(scope="module")
def text():
    rng = random.Random(0)  # words from a small part of the vocabulary, so tokens repeat in every window
    return " ".join(f"t{rng.randrange(12)}" for _ in range(400))


def reference_losses(model, tokens):
    """TransformerLens's per-token loss, ``[batch, pos - 1]``."""
    with torch.no_grad():
        return model(tokens, return_type="loss", loss_per_token=True).double()


def test_text_windows_are_bos_and_consecutive_text(model, text):
    ids = model.tokenizer.encode(text, add_special_tokens=False)
    w = dynamics.text_windows(model, text, seq_len=20, stride=7)
    assert w.shape == ((len(ids) - 19) // 7 + 1, 20)
    for r in (0, 3, len(w) - 1):
        assert w[r, 0].item() == model.tokenizer.bos_token_id
        assert w[r, 1:].tolist() == ids[7 * r: 7 * r + 19]


def test_token_losses_are_transformer_lens_per_token_loss_averaged_over_rows(model, text):
    tokens = dynamics.text_windows(model, text, stride=16)
    ref = reference_losses(model, tokens)
    res = dynamics.token_losses(model, tokens, max_memory=tokens.shape[1] * 30_000)  # several batches
    assert res.axes == ("position",) and res.labels["position"][0] == "1"
    torch.testing.assert_close(res.values.double(), ref.mean(0), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.tensor(res.meta["sem"]).double(), ref.std(0) / math.sqrt(len(ref)),
                               atol=1e-5, rtol=1e-4)


def test_icl_score_is_late_minus_early_mean_loss_by_hand(model, text):
    tokens = dynamics.text_windows(model, text, stride=16)
    ref = reference_losses(model, tokens)  # ref[:, t - 1] predicts token t
    early, late = (5, 10), (40, 60)
    hand_early = sum(ref[b, t - 1] for b in range(len(ref)) for t in range(5, 10)) / (5 * len(ref))
    hand_late = sum(ref[b, t - 1] for b in range(len(ref)) for t in range(40, 60)) / (20 * len(ref))
    s = dynamics.icl_score(model, tokens, early=early, late=late)
    assert s.early == early and s.late == late
    assert s.early_loss == pytest.approx(float(hand_early), abs=1e-5)
    assert s.late_loss == pytest.approx(float(hand_late), abs=1e-5)
    assert s.score == pytest.approx(float(hand_late - hand_early), abs=1e-5)


def brute_force_attention_on_targets(model, tokens, target, skip_first):
    """``[layer, head]``: mean over queries with targets of the attention on the targets, with the targets found by
    loops over the tokens and the patterns read from a TransformerLens cache."""
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens)
    mask = torch.zeros(tokens.shape[0], tokens.shape[1], tokens.shape[1], dtype=torch.float64)
    for b in range(tokens.shape[0]):
        t = tokens[b].tolist()
        for i in range(skip_first, len(t)):
            for k in target(t, i, skip_first):
                mask[b, i, k] = 1.0
    pattern = torch.stack([cache["pattern", layer] for layer in range(model.cfg.n_layers)]).double()
    return torch.einsum("lbhqk,bqk->lh", pattern, mask) / mask.amax(-1).sum()


def induction_targets(t, i, skip_first):
    return {j + 1 for j in range(skip_first, i) if t[j] == t[i]}


def previous_targets(t, i, skip_first):
    return {i - 1} if i - 1 >= skip_first else set()


def test_checkpoint_head_scores_by_brute_force_on_the_attention(model, text):
    m = dynamics.measure_checkpoint(model, text, early=(5, 10), late=(40, 60), stride=48, n_seqs=4, seq_len=12)
    windows = dynamics.text_windows(model, text, stride=48)
    rep = repeated_sequences(model, 12, 4, 0)
    assert m.prefix_matching.axes == ("layer", "head") and m.prefix_matching.shape == (2, 4)
    pm = brute_force_attention_on_targets(model, rep.tokens, induction_targets, rep.prefix)
    ind = brute_force_attention_on_targets(model, windows, induction_targets, 1)
    prev = brute_force_attention_on_targets(model, windows, previous_targets, 1)
    torch.testing.assert_close(m.prefix_matching.values.double(), pm, atol=1e-5, rtol=0)
    torch.testing.assert_close(m.induction.values.double(), ind, atol=1e-5, rtol=0)
    torch.testing.assert_close(m.previous_token.values.double(), prev, atol=1e-5, rtol=0)
    # the shipped attn-only-2l has induction heads in layer 1 (its card): they match prefixes, layer 0 does not
    assert m.prefix_matching.values[1].max() > 0.5 > m.prefix_matching.values[0].max()
    assert m.heldout_loss == pytest.approx(float(reference_losses(model, windows).mean()), abs=1e-5)


def test_training_curves_stack_checkpoints_and_round_trip_json(model, text):
    blank = HookedTransformer(model.cfg, tokenizer=model.tokenizer)  # an untrained checkpoint
    curves = dynamics.training_curves([(0, blank), (10, model)], text, tokens_per_step=100, train_losses=[3.0] * 10,
                                      early=(5, 10), late=(40, 60), stride=48, n_seqs=4)
    assert curves.steps == [0, 10] and curves.tokens_seen == [0, 1000]
    assert curves.prefix_matching.shape == (2, 2, 4) and curves.token_losses.shape == (2, 63)
    last = dynamics.measure_checkpoint(model, text, early=(5, 10), late=(40, 60), stride=48, n_seqs=4)
    torch.testing.assert_close(curves.prefix_matching.values[1], last.prefix_matching.values)
    assert curves.icl.values[1].item() == pytest.approx(last.icl.score, abs=1e-6)
    back = dynamics.curves_from_json(dynamics.curves_to_json(curves))
    for name, r in curves.results().items():
        torch.testing.assert_close(getattr(back, name).values, r.values, atol=1e-4, rtol=0)
    assert back.tokens_seen == curves.tokens_seen


# ---------------------------------------------------------------------------------------------- the detector

X = [0.0] + [1000.0 * 1.25 ** i for i in range(30)]  # log-spaced, ~3 checkpoints per doubling


def sigmoid_curve(center, width, low=0.05, high=0.8, noise=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [low + (high - low) / (1 + math.exp(-(math.log(x) - math.log(center)) / width)) if x > 0 else low
            for x in X], (noise * torch.randn(len(X), generator=g)).tolist()


def test_detector_finds_a_planted_jump_where_it_was_planted():
    center = X[15]
    y, eps = sigmoid_curve(center, width=0.1, noise=0.01)
    pc = dynamics.detect_phase_change(X, [a + b for a, b in zip(y, eps)], min_jump=0.2)
    assert pc.found and pc.start <= center <= pc.end and pc.end <= 2 * pc.start
    assert pc.jump == pytest.approx(0.75, abs=0.1) and pc.span == pytest.approx(0.75, abs=0.1)
    # falling curves with increasing=False: the same window
    down = dynamics.detect_phase_change(X, [-a for a in y], increasing=False, min_jump=0.2)
    assert down.found and (down.start, down.end) == (dynamics.detect_phase_change(X, y).start,
                                                   dynamics.detect_phase_change(X, y).end)
    assert not dynamics.detect_phase_change(X, [-a for a in y], increasing=True, min_jump=0.2).found


def test_detector_finds_no_jump_in_gradual_or_flat_curves():
    # linear in log(tokens): any one doubling moves log(2) / log(x_end / x_1) of the range (closed form)
    gradual = [0.05] + [0.05 + 0.75 * math.log(x / X[1]) / math.log(X[-1] / X[1]) for x in X[1:]]
    pc = dynamics.detect_phase_change(X, gradual, min_jump=0.0)
    best_closed_form = max(math.log(X[j] / X[i]) for i in range(1, len(X)) for j in range(i, len(X))
                           if X[j] <= 2 * X[i]) / math.log(X[-1] / X[1])
    assert not pc.found and pc.jump / pc.span == pytest.approx(best_closed_form, rel=1e-6)
    g = torch.Generator().manual_seed(1)
    flat = (0.3 + 0.01 * torch.randn(len(X), generator=g)).tolist()  # noise only: fails the absolute bound
    assert not dynamics.detect_phase_change(X, flat, min_jump=0.2).found
    slow, _ = sigmoid_curve(X[15], width=3.0)  # a sigmoid too wide to be a phase change
    assert not dynamics.detect_phase_change(X, slow, min_jump=0.2).found


def test_phase_changes_of_planted_curves_coincide_or_not():
    def curves(ind_center, icl_center):
        n = len(X)
        ind, _ = sigmoid_curve(ind_center, 0.1)
        icl, _ = sigmoid_curve(icl_center, 0.1, low=0.0, high=-0.5)
        heads = torch.zeros(n, 2, 4)
        heads[:, 1, 2] = torch.tensor(ind)
        from circuitlab.results import Result
        r = Result(values=heads, axes=("checkpoint", "layer", "head"))
        s = Result(values=torch.tensor(icl), axes=("checkpoint",))
        t = Result(values=torch.zeros(n, 3), axes=("checkpoint", "position"))
        return dynamics.TrainingCurves(icl=s, heldout_loss=s, token_losses=t, prefix_matching=r, induction=r,
                                       previous_token=r, train_loss=None, steps=list(range(n)),
                                       tokens_seen=[int(x) for x in X], meta={})

    same = dynamics.phase_changes(curves(X[12], X[12]))
    assert same.induction.found and same.icl.found and same.coincide
    apart = dynamics.phase_changes(curves(X[8], X[22]))
    assert apart.induction.found and apart.icl.found and not apart.coincide


def test_detector_checks_its_inputs():
    with pytest.raises(InputError, match="increase"):
        dynamics.detect_phase_change([0, 2, 1], [0, 1, 2])
    with pytest.raises(InputError, match="same length"):
        dynamics.detect_phase_change([0, 1], [0, 1, 2])


# --------------------------------------------------------------------------------------------- checkpoints

def test_log_spaced_steps():
    s = log_spaced_steps(600, 40)
    assert s[0] == 0 and s[1] == 1 and s[-1] == 600 and s == sorted(set(s))
    later = [b / a for a, b in zip(s[10:], s[11:])]  # past the integer crowding: a constant ratio
    assert max(later) / min(later) < 1.2
    assert log_spaced_steps(5, 2) == [0, 5]


def test_checkpoints_are_the_weights_after_that_many_steps():
    cfg = HookedTransformerConfig(n_layers=1, n_heads=2, d_model=16, d_head=8, n_ctx=12, d_vocab=20,
                                  attn_only=True, act_fn=None, normalization_type="LN", seed=0)

    def run(steps, checkpoints=()):
        torch.manual_seed(0)
        m = HookedTransformer(cfg)
        gen = torch.Generator().manual_seed(1)
        kept = {}
        train_loop(m, lambda step: torch.randint(0, 20, (4, 12), generator=gen), steps=steps, lr=1e-2,
                   lr_factor=lambda s: 1.0, weight_decay=0.0, checkpoints=checkpoints,
                   on_checkpoint=lambda s: kept.__setitem__(s, {k: v.clone() for k, v in m.state_dict().items()}))
        return m, kept

    final, kept = run(5, checkpoints=[0, 2, 5])
    assert sorted(kept) == [0, 2, 5]
    two, _ = run(2)
    for k, v in two.state_dict().items():
        torch.testing.assert_close(kept[2][k], v, atol=0, rtol=0)
        torch.testing.assert_close(kept[5][k], final.state_dict()[k], atol=0, rtol=0)
    fresh, _ = run(0)
    assert all(torch.equal(kept[0][k], v) for k, v in fresh.state_dict().items())
