"""`circuitlab edit` on zoo/toy-lm: the edit is printed with its probabilities before and after, and --save writes
an edited model that says the new object while the original on disk is untouched."""

from __future__ import annotations

import io
from contextlib import redirect_stdout

import torch

import circuitlab
from circuitlab.cli import main


def test_edit_command_prints_before_and_after_and_saves(tmp_path, monkeypatch):
    monkeypatch.setenv("CIRCUITLAB_CACHE", str(tmp_path / "cache"))
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(["edit", "-m", "zoo/toy-lm", "--prompt", "Wexmira has a house in", "--subject", "Wexmira",
                     "--new", " Pellmoor", "--layer", "0", "--tokens", "1500", "--prefixes", "1", "-q",
                     "--save", str(tmp_path / "edited")])
    text = out.getvalue()
    assert code == 0, text
    assert "ROME on" in text and "P(' Pellmoor')" in text and "succeeded" in text
    edited = circuitlab.load_model(str(tmp_path / "edited"))
    with torch.no_grad():
        top = int(edited("Wexmira has a house in")[0, -1].argmax())
    assert edited.to_string([top]) == " Pellmoor"
    original = circuitlab.load_model("zoo/toy-lm")
    with torch.no_grad():
        assert original.to_string([int(original("Wexmira has a house in")[0, -1].argmax())]) == " Brindlecote"
