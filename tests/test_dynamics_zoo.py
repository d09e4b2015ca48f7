"""The natural-text attention-only zoo recipes (checkpoints, batches, determinism), the zoo's dynamics entry point,
the curves' renderer, and the shipped curves of zoo/attn-only-{1,2}l-text."""

from __future__ import annotations

import json

import pytest
import torch

import circuitlab
from circuitlab import dynamics
from circuitlab.models.loading import ZOO_DIR
from circuitlab.zoo import attn_only_text as T
from circuitlab.zoo import build, text_data
from circuitlab.zoo.training import log_spaced_steps


def corpora_installed() -> bool:
    try:
        text_data.require_corpora()
        return True
    except text_data.CorpusMissingError:
        return False


needs_corpora = pytest.mark.skipif(not corpora_installed(), reason="the Debian corpora (bible-kjv, fortunes) are "
                                                                   "not installed")
TINY = dict(n_ctx=32, vocab_size=300, steps=4, batch_size=2, n_checkpoints=4, max_chars=20_000, repeat_fraction=0.5)


def test_batches_are_bos_then_consecutive_text_or_a_passage_twice():
    ids = torch.arange(5, 5000)  # distinct ids: every row shows where it read from
    recipe = T.TextAttnOnlyRecipe(n_ctx=64, batch_size=200, repeat_fraction=0.5)
    rows = T.training_batch(recipe, ids, torch.Generator().manual_seed(0))
    assert rows.shape == (200, 64) and (rows[:, 0] == 0).all()
    n_repeat = 0
    for row in rows[:, 1:].tolist():
        back = [i for i in range(1, 63) if row[i] != row[i - 1] + 1]
        if not back:
            continue  # a plain window of consecutive text
        n_repeat += 1
        # one passage P of length L, then P again, then the text reads on: two jumps, back by L then forward by L
        assert len(back) in (1, 2)
        a, b = back if len(back) == 2 else (back[0], len(row))  # (the copy may run to the window's end)
        L = b - a
        assert 8 <= L <= 31 and row[a:b] == row[a - L:a]
        assert b == len(row) or row[b] == row[b - 1] + 1 + L
    assert 70 <= n_repeat <= 130  # about half the rows


@needs_corpora
def test_tiny_recipe_keeps_log_spaced_checkpoints_and_is_deterministic():
    recipe = T.TextAttnOnlyRecipe(n_layers=2, **TINY)
    a = T.train(recipe, "zoo/attn-only-2l-text")
    b = T.train(recipe, "zoo/attn-only-2l-text")
    assert [s for s, _ in a.checkpoints] == log_spaced_steps(4, 4) == a.card["checkpoint_steps"]
    for (_, sa), (_, sb) in zip(a.checkpoints, b.checkpoints):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    last = T.checkpoint_model(a.card["recipe"], a.model, a.checkpoints[-1][1])
    tokens = torch.randint(1, 300, (2, 32), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(last(tokens), a.model(tokens), atol=0, rtol=0)
    first = T.checkpoint_model(a.card["recipe"], a.model, a.checkpoints[0][1])
    torch.manual_seed(recipe.seed)  # step 0 is the initialisation
    fresh = type(a.model)(recipe.config("zoo/attn-only-2l-text"), tokenizer=a.model.tokenizer)
    torch.testing.assert_close(first(tokens), fresh(tokens), atol=0, rtol=0)
    assert a.card["train_tokens_seen"] == 4 * 2 * 32


@needs_corpora
def test_zoo_dynamics_entry_point_writes_curves_svg_and_checkpoints(tmp_path):
    path = build.dynamics("zoo/attn-only-1l-text", tmp_path, tmp_path / "ckpt", progress=False,
                          **{**TINY, "n_layers": 1})
    data = json.loads(path.read_text())
    curves = dynamics.curves_from_json(data)
    assert curves.steps == log_spaced_steps(4, 4) and curves.prefix_matching.shape == (4, 1, 4)
    assert curves.tokens_seen == [s * 64 for s in curves.steps]
    assert set(data["phase_changes"]) == {"induction", "icl", "coincide"}
    svg = (tmp_path / "attn-only-1l-text-dynamics.svg").read_text()
    assert svg.startswith("<svg") and svg.count("<polyline") == 5  # layer 0, previous token, ICL, two loss lines
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [f"step-{s:06d}.safetensors"
                                                                    for s in curves.steps]


def test_the_curves_render_as_html(tmp_path):
    from circuitlab.render import to_html

    n = 6
    xs = [0] + [100 * 2 ** i for i in range(n - 1)]
    r = circuitlab.Result(values=torch.linspace(0, 1, n * 8).reshape(n, 2, 4), axes=("checkpoint", "layer", "head"))
    s = circuitlab.Result(values=-torch.linspace(0, 0.5, n), axes=("checkpoint",), model="m")
    curves = dynamics.TrainingCurves(icl=s, heldout_loss=s, token_losses=circuitlab.Result(
        values=torch.zeros(n, 3), axes=("checkpoint", "position")), prefix_matching=r, induction=r, previous_token=r,
        train_loss=None, steps=list(range(n)), tokens_seen=xs, meta={})
    html = to_html(curves, phase=dynamics.phase_changes(curves))
    assert "Training curves" in html and "<svg" in html and "Coincide" in html


SHIPPED = [n for n in ("attn-only-2l", "attn-only-1l") if (ZOO_DIR / n / T.DYNAMICS_FILE).is_file()]


@pytest.mark.skipif(len(SHIPPED) < 2, reason="the zoo's training curves are not built yet")
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_curves_end_near_the_shipped_weights(name):
    """dynamics.json comes from the recipe retrained on one thread; the shipped weights were trained on two (bitwise
    different, see zoo.training). Re-measured, the shipped model must be close to the last checkpoint."""
    model = circuitlab.load_model(f"zoo/{name}")
    curves = dynamics.curves_from_json(json.loads((ZOO_DIR / name / T.DYNAMICS_FILE).read_text()))
    early, late = T.icl_bands(model.cfg.n_ctx)
    assert curves.meta["early"] == list(early) and curves.meta["late"] == list(late)
    heldout = (ZOO_DIR / name / T.HELDOUT_FILE).read_text()
    now = dynamics.measure_checkpoint(model, heldout, early=early, late=late, stride=model.cfg.n_ctx - 1,
                                      n_seqs=curves.meta["n_seqs"], seed=curves.meta["seed"])
    assert now.icl.score == pytest.approx(float(curves.icl.values[-1]), abs=0.1)
    torch.testing.assert_close(now.prefix_matching.values, curves.prefix_matching.values[-1], atol=0.1, rtol=0)


def test_phase_change_finding_needs_shipped_curves_and_two_layers():
    from circuitlab import reproduce

    no_curves = reproduce.run("induction-phase-change", "zoo/toy-lm")  # ships no checkpoint curves
    assert no_curves.measurement.verdict == "not applicable" and "dynamics.json" in no_curves.measurement.why
    one_layer = reproduce.run("induction-phase-change", "zoo/attn-only-1l")
    assert one_layer.measurement.verdict == "not applicable"


def test_synthetic_heldout_text_gives_back_its_sequences_as_windows():
    from circuitlab.zoo import attn_only

    recipe = attn_only.RECIPES["zoo/attn-only-2l"]
    text = attn_only.heldout_text(recipe, n_seqs=5, seed=3)
    rows = attn_only.training_batch(recipe, 5, torch.Generator().manual_seed(3), second_task=False)
    windows = dynamics.text_windows(circuitlab.load_model("zoo/attn-only-2l"), text, stride=recipe.n_ctx - 1)
    assert torch.equal(windows, rows)


@pytest.mark.skipif(len(SHIPPED) < 2, reason="the zoo's training curves are not built yet")
def test_dynamics_command_prints_the_shipped_curves_and_their_phase_changes(tmp_path, capsys):
    from circuitlab.cli import main

    assert main(["dynamics", "-m", "zoo/attn-only-2l", "-o", str(tmp_path / "r.html")]) == 0
    out = capsys.readouterr().out
    curves = dynamics.load_curves("zoo/attn-only-2l")
    phase = dynamics.phase_changes(curves)
    assert len([ln for ln in out.splitlines() if ln.strip()[:1].isdigit()]) == len(curves.steps)
    assert f"induction phase change: tokens {phase.induction.start:,.0f}-{phase.induction.end:,.0f}" in out
    assert "<svg" in (tmp_path / "r.html").read_text()
    path = tmp_path / "c.json"  # a curves file, as python -m circuitlab.zoo dynamics writes
    path.write_text(json.dumps(dynamics.curves_to_json(curves)))
    torch.testing.assert_close(dynamics.load_curves(path).icl.values, curves.icl.values)
