"""``circuitlab ig`` and ``circuitlab tcav`` on zoo/toy-lm: the printed attributions are the library's, their sum
meets the completeness line, the reports carry the token colouring and the bar charts; argument errors."""

from __future__ import annotations

import re

import pytest

import circuitlab
from circuitlab.cli import main
from circuitlab.concepts.gradients import integrated_gradients
from circuitlab.metrics import LogitDiff


def test_ig_prints_the_attributions_and_writes_the_colouring(tmp_path, capsys):
    out = tmp_path / "ig.html"
    argv = ["ig", "-m", "zoo/toy-lm", "--prompt", "the cat sat on the", "--answer", " mat", "--wrong", " cat",
            "--steps", "16", "--baseline", "pad", "-q", "-o", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    printed = [float(v) for v in re.findall(r"^  '.*?'\s+([+-]\d+\.\d+)$", text, flags=re.M)]
    model = circuitlab.load_model("zoo/toy-lm")
    ref = integrated_gradients(model, "the cat sat on the", LogitDiff(" mat", " cat"), baseline="pad", steps=16)
    assert printed == pytest.approx(ref.values[0].tolist(), abs=1e-4)
    line = re.search(r"metric\(input\) - metric\(baseline\) = (\S+) - (\S+) = (\S+); gap", text)
    assert float(line[1]) - float(line[2]) == pytest.approx(float(line[3]), abs=2e-4)
    assert sum(printed) == pytest.approx(float(line[3]), rel=0.05)
    page = out.read_text()
    assert page.count("class='cl-chip'") == len(printed) and "Completeness" in page


def test_ig_gradient_x_input_and_bad_arguments(capsys):
    assert main(["ig", "-m", "zoo/toy-lm", "--prompt", "the cat sat", "--answer", " on", "--gxi", "-q"]) == 0
    assert "Gradient x input of log P(' on')" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["ig", "-m", "zoo/toy-lm", "--prompt", "x", "--answer", " y", "--steps", "0"])
    assert exc.value.code == 2
    assert main(["ig", "-m", "zoo/toy-lm", "--prompt", "the cat", "--answer", " sat", "--hook", "nope", "-q"]) == 1
    assert "not a hook of this model" in capsys.readouterr().err


def test_tcav_prints_scores_with_verdicts_and_draws_the_bars(tmp_path, capsys):
    out = tmp_path / "tcav.html"
    argv = ["tcav", "-m", "zoo/toy-lm", "--hooks", "1,3", "--runs", "3", "--set-size", "5", "--inputs", "3",
            "--random", "12", "--words", " good, bad", "-q", "-o", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    lines = re.findall(r"^  (.+) @ (\S+): .* p = \S+: (significant|not significant)$", text, flags=re.M)
    assert [(c, h) for c, h, _ in lines] == [(c, f"blocks.{l}.hook_resid_post") for c in
                                             ("positive adjectives", "neutral adjectives", "animals") for l in (1, 3)]
    page = out.read_text()
    assert page.count("<svg") == 2 and page.count("class='cl-bar'") == 6
    assert page.count("data-significant='false'") == sum(v == "not significant" for _, _, v in lines)
    assert main(["tcav", "-m", "zoo/toy-lm", "--words", " good", "-q"]) == 1
    assert "--words needs two label words" in capsys.readouterr().err
