"""User files and user values in messages: every reader of a user's file goes through
:func:`circuitlab.core.read_text_file` (a UTF-8 byte-order mark is accepted and dropped; another encoding is an
:class:`~circuitlab.errors.InputError` naming the file, the line and the column), and every message quotes a
user's value through :func:`circuitlab.core.shorten` (a megabyte-long value makes a line-long message)."""

from __future__ import annotations

import argparse
import io
import shutil
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

import circuitlab as cl
from circuitlab import attribution, probing, tracing
from circuitlab.cli import main
from circuitlab.commands.ffn import data_lines
from circuitlab.commands.neurons import _texts
from circuitlab.errors import CircuitlabError, InputError
from circuitlab.models.io import read_card
from circuitlab.models.loading import ZOO_DIR
from circuitlab.tasks.toy_world import load_world

BOM = b"\xef\xbb\xbf"
LINES = ["Caf\u00e9 au lait, said the cat.", "The dog sat on the mat."]  # an accented letter in line 1, column 4
HUGE = "x" * 1_000_000


def _write(path: Path, text: str, encoding: str, bom: bool = False) -> Path:
    path.write_bytes((BOM if bom else b"") + text.encode(encoding))
    return path


# -- the command line's text files (ffn --data, neurons --data) --------------------------------------------------

def test_ffn_data_with_a_byte_order_mark_reads_as_without(tmp_path):
    plain = _write(tmp_path / "plain.txt", "\n".join(LINES) + "\n", "utf-8")
    bom = _write(tmp_path / "bom.txt", "\n".join(LINES) + "\n", "utf-8", bom=True)
    assert list(data_lines(str(bom))) == list(data_lines(str(plain))) == [(1, LINES[0]), (2, LINES[1])]


def test_ffn_data_in_latin1_is_refused_before_the_model_loads_naming_line_and_column(tmp_path):
    """The check before the model loads reads the whole file: a bad byte in the last line is found there."""
    latin = _write(tmp_path / "latin.txt", "The cat.\n" * 50 + LINES[0] + "\n", "latin-1")
    with pytest.raises(InputError, match=r"--data file .*latin\.txt' is not UTF-8: line 51, column 4 holds byte 0xe9"):
        list(data_lines(str(latin), check_only=True))


def _neuron_texts(path: Path) -> list[str]:
    return _texts(argparse.Namespace(data=str(path), texts=100, seed=0))


def test_neurons_data_reads_a_byte_order_mark_and_refuses_latin1(tmp_path):
    """It read with errors="replace": a Latin-1 file became text with U+FFFD in place of its accents, silently."""
    bom = _write(tmp_path / "bom.txt", "\n".join(LINES) + "\n", "utf-8", bom=True)
    assert _neuron_texts(bom) == LINES
    latin = _write(tmp_path / "latin.txt", "\n".join(LINES) + "\n", "latin-1")
    with pytest.raises(InputError, match=r"latin\.txt' is not UTF-8: line 1, column 4 holds byte 0xe9"):
        _neuron_texts(latin)


# -- model directories and world files ---------------------------------------------------------------------------

def test_a_model_directory_whose_json_files_have_a_byte_order_mark_loads(tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(ZOO_DIR / "attn-only-1l", folder)
    want = read_card(folder)
    for name in ("config.json", "card.json"):
        (folder / name).write_bytes(BOM + (folder / name).read_bytes())
    assert read_card(folder) == want
    assert cl.load_model(str(folder)).cfg.n_layers == 1


def test_a_model_config_in_latin1_is_an_input_error_naming_the_file(tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(ZOO_DIR / "attn-only-1l", folder)
    card = (folder / "card.json").read_text(encoding="utf-8")
    _write(folder / "card.json", card.replace("{", '{"note": "caf\u00e9", ', 1), "latin-1")
    with pytest.raises(InputError, match=r"card\.json' is not UTF-8: line 1, column \d+ holds byte 0xe9"):
        read_card(folder)


@pytest.mark.parametrize("name", ["config.json", "card.json"])
def test_a_hand_broken_model_json_file_is_an_input_error_naming_file_line_and_column(tmp_path, name):
    """A config or card cut short or edited by hand was a raw JSONDecodeError from the loader."""
    folder = tmp_path / "model"
    shutil.copytree(ZOO_DIR / "attn-only-1l", folder)
    text = (folder / name).read_text(encoding="utf-8")
    (folder / name).write_text(text[: len(text) // 2], encoding="utf-8")  # cut short
    with pytest.raises(InputError, match=rf"{name.replace('.', '[.]')}' is not valid JSON: line \d+, column \d+"):
        cl.load_model(str(folder)) if name == "config.json" else read_card(folder)


def test_world_files_with_a_byte_order_mark_or_in_latin1(tmp_path):
    text = (ZOO_DIR / "toy-lm" / "world.json").read_text(encoding="utf-8")
    want = load_world(ZOO_DIR / "toy-lm")
    assert load_world(_write(tmp_path / "bom.json", text, "utf-8", bom=True)) == want
    latin = _write(tmp_path / "latin.json", text.replace('"', '"\u00e9', 1), "latin-1")
    with pytest.raises(InputError, match=r"world file .*latin\.json' is not UTF-8: line 2, column 3 "):
        load_world(latin)


# -- a megabyte-long value in a message --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def toy():
    return cl.load_model("zoo/toy-lm")


@pytest.mark.parametrize("call", [
    lambda m: tracing.trace(m, "Wexmira has a house in", HUGE, " Brindlecote", progress=False),
    lambda m: attribution.logit_lens(m, "The cat sat", norm=HUGE),
    lambda m: probing.edge_probe(m, probing.template_sentences(5), task=HUGE, progress=False),
    lambda m: tracing.trace(m, "Wexmira has a house in", "Wexmira", " Brindlecote", kinds=[HUGE], progress=False),
    lambda m: attribution.logit_lens(m, "The cat sat", k=HUGE),
], ids=["trace subject", "logit_lens norm", "edge_probe task", "trace kinds", "logit_lens k"])
def test_a_megabyte_value_makes_a_message_of_a_line(toy, call):
    """Each message quoted the value whole (a million characters); now shortened, with its length said."""
    with pytest.raises(CircuitlabError) as err:
        call(toy)
    message = str(err.value)
    assert len(message) < 400, f"a message of {len(message):,} characters"
    assert "1,000,002 characters" in message  # the repr's length: the value and its two quotes


def test_a_megabyte_argument_on_the_command_line_makes_one_short_error_line():
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        code = main(["trace", "-m", "zoo/toy-lm", "--prompt", "Wexmira has a house in", "--subject", HUGE,
                     "--answer", " Brindlecote", "-q"])
    lines = err.getvalue().strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("circuitlab: error:")
    assert len(lines[0]) < 400, f"an error line of {len(lines[0]):,} characters"


@pytest.mark.parametrize("argv", [
    ["attribute", "-m", "zoo/toy-lm", "--prompt", "The cat", "--answer", " mat", "--top", HUGE],
    ["induction", "-m", "zoo/toy-lm", "--seed", HUGE],
    ["reproduce", HUGE],
], ids=["--top", "--seed", "finding id"])
def test_a_megabyte_argument_makes_a_short_usage_error(argv):
    err = io.StringIO()
    with redirect_stderr(err), redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    last = err.getvalue().strip().splitlines()[-1]
    assert code not in (0, None) and "error:" in last
    # the value shortened (an unknown finding's message also lists the known ones)
    assert len(last) < 2000, f"an error line of {len(last):,} characters"
