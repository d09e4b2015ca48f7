"""The command line: each subcommand prints the numbers the library computes, ``--out`` writes a full report page,
and every analysis command spells its common options the same way (``-m/--model``, ``-o/--out``, ``-q/--quiet``).

Printed numbers are parsed back and compared with a separate library call (and, where it is cheap, with the
model's own forward pass). ``circuitlab demo`` is covered by test_demo.py.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch

import circuitlab
from circuitlab import save_model
from circuitlab.cli import answer_arg, build_parser, main, positive_int, prompt_arg
from circuitlab.errors import CircuitlabError
from circuitlab.render import count_views, external_references
from circuitlab.render.bundle import count_bundles
from circuitlab.testing import random_model

ZOO2 = "zoo/attn-only-2l"
TOY = "zoo/toy-lm"
ANALYSES = ("demo", "induction", "patch", "attribute", "ffn", "trace", "circuit")


# -- helpers ---------------------------------------------------------------------------------------------------------

class _Page(HTMLParser):
    """The parts of a report page the tests read: <title>, <h1>, and whether <html> was opened."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.text: dict[str, str] = {"title": "", "h1": ""}
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag in self.text:
            self._in = tag

    def handle_endtag(self, tag):
        if tag == self._in:
            self._in = None

    def handle_data(self, data):
        if self._in:
            self.text[self._in] += data


def check_page(path: Path, title: str, views: bool | None = None) -> str:
    """``path`` is a full, self-contained report page titled ``title``; returns its text."""
    page = Path(path).read_text(encoding="utf-8")
    parsed = _Page()
    parsed.feed(page)
    assert page.lstrip().lower().startswith("<!doctype html") and "<html" in page
    assert parsed.tags[0] == "html" and "body" in parsed.tags
    assert parsed.text["title"] == title and parsed.text["h1"] == title
    n_views = count_views(page)
    assert count_bundles(page) == (1 if n_views else 0)  # the circuitsvis bundle inlined once where a view is
    if views is not None:
        assert (n_views > 0) == views
    assert external_references(page) == []
    return page


def section(out: str, start: str, stop: str | None = None) -> list[str]:
    """The printed lines after the line starting with ``start`` (up to one starting with ``stop``)."""
    lines = out.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith(start))
    rest = lines[i + 1:]
    if stop is not None:
        rest = rest[:next((j for j, line in enumerate(rest) if line.startswith(stop)), len(rest))]
    return rest


def floats(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"[-+]?\d+\.\d+", text)]


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory) -> Path:
    """A random GPT-2-like model with MLPs and no tokenizer, saved where ``--model`` can find it."""
    return save_model(random_model("gpt2", seed=0), tmp_path_factory.mktemp("models") / "gpt2")


@pytest.fixture(scope="module")
def gpt2(gpt2_dir):
    return circuitlab.load_model(gpt2_dir)


# -- circuitlab models -------------------------------------------------------------------------------------------------

def test_models_command_lists_the_zoo(capsys):
    from circuitlab.models.loading import zoo_entries

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("zoo/attn-only-1l", "zoo/attn-only-2l"):
        assert name in out
    lines = out.splitlines()
    entries = zoo_entries()
    assert [line.split()[0] for line in lines[: len(entries)]] == [e.name for e in entries]
    assert all(line.split(None, 1)[1] == e.description for line, e in zip(lines, entries))
    # then the real models from PyPI, each with its licence and whether it is installed
    from circuitlab.models.real import real_models

    real = lines[len(entries):]
    assert [line.split()[0] for line in real] == list(real_models())
    assert all("real, offline via PyPI" in line for line in real)


def test_models_verbose_prints_the_cards(capsys):
    from circuitlab.models.loading import zoo_entries

    assert main(["models", "-v"]) == 0
    out = capsys.readouterr().out
    for e in zoo_entries():
        for key in ("train_seconds", "in_context", "head_scores"):
            if key in e.card:
                assert f"    {key}: {json.dumps(e.card[key])}" in out


# -- the shared option parsers ---------------------------------------------------------------------------------------

def test_cli_token_id_options():
    no_tok = random_model("gpt2")
    zoo = circuitlab.load_model(ZOO2)
    assert prompt_arg(no_tok, "3, 17 42") == [3, 17, 42]
    assert prompt_arg(zoo, "t3 t4") == "t3 t4"  # text where there is a tokenizer
    assert prompt_arg(zoo, "3 4", as_ids=True) == [3, 4]
    assert answer_arg(no_tok, "7") == 7 and answer_arg(no_tok, None) is None
    with pytest.raises(CircuitlabError, match="single token id"):
        answer_arg(no_tok, "7 8", "--answer")
    with pytest.raises(CircuitlabError, match="token ids"):
        prompt_arg(no_tok, "t3 t4", "--clean")


REQUIRED = {
    "demo": [],
    "induction": [],
    "patch": ["--clean", "1 2", "--corrupted", "1 3", "--answer", "4", "--wrong", "5"],
    "attribute": ["--prompt", "1 2", "--answer", "4"],
    "ffn": ["--layer", "0"],
    "trace": ["--prompt", "1 2 3", "--subject", "1:2", "--answer", "4"],
    "circuit": [],
}


@pytest.mark.parametrize("name", ANALYSES)
def test_every_analysis_takes_the_common_options(name):
    from circuitlab.cli import _load_commands

    _load_commands()
    parser = build_parser()
    short = parser.parse_args([name, "-m", "zoo/x", "-o", "r.html", "-q", *REQUIRED[name]])
    long = parser.parse_args([name, "--model", "zoo/x", "--out", "r.html", "--quiet", *REQUIRED[name]])
    for args in (short, long):
        assert (args.model, args.out, args.quiet) == ("zoo/x", "r.html", True)
    with pytest.raises(SystemExit):  # the old spelling is gone
        parser.parse_args([name, "-m", "zoo/x", "--html", "r.html", *REQUIRED[name]])


#: a script run in a fresh interpreter: ``circuitlab --help``, every ``circuitlab COMMAND --help`` and an argument
#: error, then which heavy modules got imported; then the public names, which must still import from circuitlab
LIGHT_START = """
import contextlib, io, sys
import circuitlab.cli as cli

cli._load_commands()
argvs = [["--help"], *[[name, "--help"] for name in sorted(cli.COMMANDS)],
         ["ffn", "-m", "x", "--layer", "0", "-k", "0"], ["ffn", "-m", "x", "--layer", "0", "--token", "a"],
         ["patch"], ["no-such-command"]]
codes = []
for argv in argvs:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            codes.append(cli.main(argv))
        except SystemExit as exc:
            codes.append(exc.code)
print("codes", codes)
print("n_commands", len(cli.COMMANDS))
print("heavy", sorted(m for m in ("torch", "transformer_lens") if m in sys.modules))
import circuitlab
from circuitlab import CircuitlabError, Result, list_models, load_encoder, load_model, save_model, zoo_card
from circuitlab.errors import CircuitlabError as E
from circuitlab.results import Result as R
assert CircuitlabError is E and Result is R and load_model.__module__.startswith("circuitlab.models")
assert set(circuitlab.__all__) <= set(dir(circuitlab))
print("names ok")
"""


def test_help_and_argument_errors_do_not_import_the_library(capsys):
    """``circuitlab --help``, ``circuitlab COMMAND --help`` and argument errors import neither TransformerLens nor
    torch (``import circuitlab`` is light; the commands import the library inside ``run``); the public names
    still import from ``circuitlab``. The wall time of ``circuitlab --help`` is printed, not asserted."""
    proc = subprocess.run([sys.executable, "-c", LIGHT_START], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    n = int(lines["n_commands"])
    assert n >= 7  # attribute demo ffn induction models patch reproduce
    assert lines["codes"] == str([0] * (1 + n) + [2] * 4)  # --help exits 0 (top level and each command); errors 2
    assert lines["heavy"] == "[]"
    assert lines["names"] == "ok"

    script = Path(sys.executable).with_name("circuitlab")  # the console script, as a user runs it
    command = [str(script)] if script.exists() else [sys.executable, "-m", "circuitlab.cli"]
    started = time.perf_counter()
    run = subprocess.run([*command, "--help"], capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - started
    assert run.returncode == 0 and all(name in run.stdout for name in ANALYSES)
    with capsys.disabled():
        print(f"\n`circuitlab --help` took {seconds:.2f} s")


#: every int option of every command that is not a count: indices (negative counts from the end) and seeds
NOT_COUNTS = {("ffn", "layer"), ("ffn", "neuron"), ("attribute", "pos"), ("demo", "seed"), ("induction", "seed"),
              ("probe", "seed"), ("neurons", "layer"), ("neurons", "seed"), ("reproduce", "seed"), ("trace", "seed"),
              ("circuit", "seed"),
              ("edit", "prefixes")}  # 0 is meaningful: k* from the prompt alone, no generated prefixes


def _int_options():
    from circuitlab.cli import _load_commands

    _load_commands()
    for name, sub in build_parser().commands.items():
        for action in sub._actions:
            if action.type in (int, positive_int):
                yield name, action


def test_every_count_option_takes_positive_int_only():
    """A new count option typed plain ``int`` fails here: counts take :func:`circuitlab.cli.positive_int`."""
    found = {(name, a.dest): a.type for name, a in _int_options()}
    counts = {k for k in found if k not in NOT_COUNTS}
    assert {("patch", "top"), ("attribute", "top"), ("ffn", "k"), ("induction", "n_seqs"),
            ("induction", "seq_len")} <= counts
    assert all(found[k] is positive_int for k in counts), {k: t for k, t in found.items() if k in counts}


@pytest.mark.parametrize("value", ["0", "-2", "two"])
@pytest.mark.parametrize("name,option", [("patch", "--top"), ("attribute", "--top"), ("ffn", "-k"),
                                         ("induction", "--n-seqs"), ("induction", "--seq-len")])
def test_counts_below_one_are_argument_errors(name, option, value, capsys):
    with pytest.raises(SystemExit) as exc:
        main([name, "-m", "zoo/no-such-model", *REQUIRED[name], option, value])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"circuitlab {name}: error: argument {option}" in err and "positive whole number" in err
    assert repr(value) in err or value in err
    assert positive_int("3") == 3


@pytest.mark.parametrize("given,needs,argv", [
    ("--token", "--prompt", ["ffn", "-m", "zoo/no-such-model", "--layer", "0", "--token", "4"]),
    ("--data", "--neuron", ["ffn", "-m", "zoo/no-such-model", "--layer", "0", "--data", "d.txt"]),
])
def test_an_option_without_the_one_it_needs_is_an_argument_error(given, needs, argv, capsys):
    """Options that only make sense together: one alone is refused (before any model loads), not ignored."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"error: {given} needs {needs}" in err and f"add {needs}, or drop {given}" in err


def test_a_circuitlab_error_is_one_line_on_stderr_and_exit_code_1(capsys):
    assert main(["induction", "-m", "zoo/no-such-model", "-q"]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("circuitlab: error: ") and "Traceback" not in captured.err
    assert "zoo/no-such-model" in captured.err and captured.out == ""


def test_out_into_missing_folders_creates_them_and_says_so(gpt2_dir, tmp_path, capsys):
    out = tmp_path / "new" / "deeper" / "top.html"
    assert main(["ffn", "-m", str(gpt2_dir), "--layer", "1", "-k", "2", "-q", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"created folder {out.parent} for --out" in printed and f"wrote {out}" in printed
    check_page(out, f"FFN key-value memories: {circuitlab.load_model(gpt2_dir).cfg.model_name}, MLP layer 1")


@pytest.mark.parametrize("name", ANALYSES)
def test_an_unusable_out_is_an_error_naming_it_before_any_work(name, tmp_path, capsys):
    """A directory, or a path under a file, is a one-line error naming --out and what to do, raised before the
    model loads (the model named here does not exist, and it is not the error)."""
    (tmp_path / "a-file").write_text("")
    for out, why in ((tmp_path, "is a directory; give a file name in it, e.g. --out"),
                     (tmp_path / "a-file" / "r.html", "is a file, not a folder; choose another path for --out")):
        assert main([name, "-m", "zoo/no-such-model", *REQUIRED[name], "-q", "-o", str(out)]) == 1
        captured = capsys.readouterr()
        assert captured.err.startswith(f"circuitlab: error: --out {out}") and why in captured.err
        assert "no-such-model" not in captured.err and "Traceback" not in captured.err


def test_an_unwritable_out_folder_is_an_error_naming_it(monkeypatch, tmp_path, capsys):
    import os

    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != tmp_path)  # as if tmp_path were read-only
    assert main(["ffn", "-m", "zoo/no-such-model", "--layer", "0", "-o", str(tmp_path / "sub" / "r.html")]) == 1
    err = capsys.readouterr().err
    assert f"--out {tmp_path / 'sub' / 'r.html'}: the folder {tmp_path} is not writable" in err
    assert "choose a folder you can write to for --out" in err and not (tmp_path / "sub").exists()


def test_the_cli_installs_no_process_wide_warning_filter():
    """Running the CLI's modules (cli.py and every command file) adds no entry to ``warnings.filters``."""
    import importlib
    import pkgutil
    import warnings

    import circuitlab.cli as cli
    import circuitlab.commands as pkg

    cli._load_commands()
    modules = [importlib.import_module(f"circuitlab.commands.{i.name}") for i in pkgutil.iter_modules(pkg.__path__)]
    registry = cli.COMMANDS
    with warnings.catch_warnings():
        warnings.resetwarnings()  # no filters at all (pytest installs its own), so any new one shows
        try:
            importlib.reload(cli)
        finally:
            cli.COMMANDS = registry  # the commands stay registered where main() looks for them
        for module in modules:
            importlib.reload(module)
        assert warnings.filters == []
    assert sorted(registry) == ["attention", "attribute", "circuit", "demo", "dynamics", "edit", "ffn", "graph", "ig",
                                "induction", "models", "neurons", "patch", "probe", "rationales", "reproduce", "sae",
                                "serve", "superposition", "tcav", "trace", "weights"]


# -- circuitlab induction --------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_cli_induction_prints_the_library_numbers_and_writes_a_report(tmp_path, capsys):
    from circuitlab.induction import ablation_effect, head_scores

    out = tmp_path / "report.html"
    assert main(["induction", "-m", ZOO2, "-o", str(out), "-q", "--n-seqs", "8"]) == 0
    printed = capsys.readouterr().out
    assert "Induction circuit" in printed and "in-context loss" in printed
    model = circuitlab.load_model(ZOO2)
    for kind, start in (("induction", "  top induction scores: "), ("previous_token", "  top previous-token scores: ")):
        line = next(line for line in printed.splitlines() if line.startswith(start))
        scores = head_scores(model, kind, n_seqs=8).values
        found = re.findall(r"L(\d+)H(\d+) ([\d.]+)", line)
        for layer, head, value in found:
            assert float(value) == pytest.approx(float(scores[int(layer), int(head)]), abs=6e-4)
        assert [float(v) for *_, v in found] == pytest.approx(scores.flatten().topk(3).values.tolist(), abs=6e-4)
    heads = [(int(l), int(h)) for l, h in re.findall(r"^  L(\d+)H(\d+)\s+induction", printed, flags=re.M)]
    assert heads
    abl = ablation_effect(model, heads, method="mean", n_seqs=8)
    line = next(line for line in printed.splitlines() if "ablation), induction heads:" in line)
    before, after, chance = floats(line)
    assert before == pytest.approx(abl.baseline, abs=6e-4)
    assert after == pytest.approx(float(abl.values[-1]), abs=6e-4)
    assert chance == pytest.approx(abl.meta["chance_loss"], abs=6e-4)
    page = check_page(out, f"Induction circuit: {model.cfg.model_name or ZOO2}", views=True)
    assert "Induction score" in page


@pytest.mark.slow
def test_cli_induction_reports_bad_input_cleanly(capsys):
    assert main(["induction", "--model", ZOO2, "--seq-len", "40", "--quiet"]) == 1
    assert "n_ctx=64" in capsys.readouterr().err


# -- circuitlab patch --------------------------------------------------------------------------------------------------

def test_cli_patch_prints_a_top_table(tmp_path, capsys):
    """The table is the library's sweep, ranked by |effect|; the top patch is checked by hand with a hook."""
    from circuitlab.metrics import LogitDiff
    from circuitlab.patching import sweep

    model = random_model("gpt2", seed=11)
    save_model(model, tmp_path / "m")
    out = tmp_path / "patch.html"
    args = ["patch", "-m", str(tmp_path / "m"), "--clean", "1 2 3 4 5 6", "--corrupted", "1 2 9 4 5 6",
            "--answer", "7", "--wrong", "8", "--site", "z", "--by", "layer,head", "--top", "3", "-q", "-o", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "z by layer, head" in printed and "recovered" in printed
    rows = [line for line in printed.splitlines() if line.strip()[:2] in ("1 ", "2 ", "3 ")]
    assert len(rows) == 3

    clean, corrupted = torch.tensor([[1, 2, 3, 4, 5, 6]]), torch.tensor([[1, 2, 9, 4, 5, 6]])
    with torch.no_grad():
        clean_v, corrupted_v = (float(model(t)[0, -1, 7] - model(t)[0, -1, 8]) for t in (clean, corrupted))
    assert floats(next(line for line in printed.splitlines() if line.startswith("logit difference:"))) == \
        pytest.approx([clean_v, corrupted_v], abs=6e-5)
    res = sweep(model, clean, corrupted, LogitDiff(7, 8), site="z", by=("layer", "head"), progress=False)
    index_of = {res.label_of((layer, head)): (layer, head)
                for layer in range(res.shape[0]) for head in range(res.shape[1])}
    expected = sorted(index_of.values(), key=lambda i: -abs(float(res.values[i]) - corrupted_v))[:3]
    for rank, (row, want) in enumerate(zip(rows, expected), 1):
        m = re.fullmatch(r"\s+(\d+)\s+(.+?)\s+(\S+)\s+(\S+)\s+(\S+)", row)
        assert int(m.group(1)) == rank and index_of[m.group(2)] == want
        value, effect, recovered = (float(m.group(i)) for i in (3, 4, 5))
        assert value == pytest.approx(float(res.values[want]), abs=6e-5)
        assert effect == pytest.approx(value - corrupted_v, abs=1e-4)
        assert recovered == pytest.approx((value - corrupted_v) / (clean_v - corrupted_v), abs=6e-4)

    # the top patch, by hand: the corrupted run with one head's z taken from the clean run
    layer, head = expected[0]
    _, cache = model.run_with_cache(clean, names_filter=f"blocks.{layer}.attn.hook_z")

    def patch_z(z, hook):
        z[:, :, head] = cache[hook.name][:, :, head]
        return z

    with torch.no_grad():
        logits = model.run_with_hooks(corrupted, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", patch_z)])
    assert floats(rows[0])[0] == pytest.approx(float(logits[0, -1, 7] - logits[0, -1, 8]), abs=6e-5)

    check_page(out, f"Activation patching: {model.cfg.model_name}", views=False)
    assert main(args[:6] + ["1 2 9 4"] + args[7:]) == 1  # a clear error, not a traceback
    assert "same number of tokens" in capsys.readouterr().err


# -- circuitlab attribute ----------------------------------------------------------------------------------------------

def test_cli_attribute(gpt2_dir, gpt2, tmp_path, capsys):
    from circuitlab.attribution import direct_logit_attribution, logit_lens

    out_html = tmp_path / "a.html"
    rc = main(["attribute", "-m", str(gpt2_dir), "--prompt", "1 2 3 4 1 2 3", "--answer", "4", "--wrong", "5",
               "-q", "-o", str(out_html)])
    text = capsys.readouterr().out
    assert rc == 0
    assert "sum of all direct contributions" in text and "logit lens" in text

    toks = torch.tensor([[1, 2, 3, 4, 1, 2, 3]])
    with torch.no_grad():
        logits = gpt2(toks)[0, -1]
    model_line = next(line for line in text.splitlines() if line.startswith("model's "))
    model_value, total = floats(model_line)
    assert model_value == pytest.approx(float(logits[4] - logits[5]), abs=6e-5)
    assert total == pytest.approx(model_value, abs=2e-4)  # the direct contributions sum to the model's logit

    dla = direct_logit_attribution(gpt2, toks, 4, wrong=5, by="head")
    rows = section(text, "top 10 by |value|:", "logit lens")
    expected = dla.top(10, absolute=True)
    assert len(rows) == len(expected)
    for row, (idx, v) in zip(rows, expected):
        label, value = row.strip().rsplit(" ", 1)
        assert label.strip() == dla.label_of(idx) and float(value) == pytest.approx(v, abs=6e-5)

    lens = logit_lens(gpt2, toks, answer=4)
    rows = section(text, "  layer ", "wrote")
    labels = lens.answer_prob.labels["layer"]
    assert len(rows) == len(labels)
    for li, (row, lab) in enumerate(zip(rows, labels)):
        name, logit, prob, rank = row.split()[:4]
        assert name == lab
        assert float(logit) == pytest.approx(float(lens.answer_logit.values[0, li]), abs=6e-4)
        assert float(prob) == pytest.approx(float(lens.answer_prob.values[0, li]), abs=6e-4)
        assert int(rank) == int(lens.answer_rank.values[0, li])
        assert row.endswith(str(lens.top.tokens[li][0]))
    # the last row is the model's own output
    name, logit, prob, rank = rows[-1].split()[:4]
    assert float(logit) == pytest.approx(float(logits[4]), abs=6e-4)
    assert float(prob) == pytest.approx(float(logits.softmax(-1)[4]), abs=6e-4)
    assert int(rank) == 1 + int((logits > logits[4]).sum())

    page = check_page(out_html, f"Logit attribution: {gpt2.cfg.model_name}")
    assert page.count("<table") >= 2
    assert main(["attribute", "--model", str(gpt2_dir), "--prompt", "1 2 3", "--answer", "4", "--pos", "7"]) == 1


# -- circuitlab ffn ----------------------------------------------------------------------------------------------------

def test_cli_ffn(gpt2_dir, gpt2, tmp_path, capsys):
    from circuitlab.ffn import sub_updates, value_tokens

    data = tmp_path / "data.txt"
    data.write_text("\n1 2 3 4 5\n6 7 8\n  \n\n9 10 11 12\n")  # the examples are on lines 2, 3 and 6

    # no neuron, no prompt: the neurons with the largest value vectors
    out1 = tmp_path / "top.html"
    assert main(["ffn", "-m", str(gpt2_dir), "--layer", "1", "-k", "3", "-o", str(out1)]) == 0
    printed = capsys.readouterr().out
    assert "largest value vectors" in printed
    norms = gpt2.blocks[1].mlp.W_out.detach().norm(dim=-1)
    top = norms.topk(3).indices.tolist()
    vt = value_tokens(gpt2, 1, top, k=5)
    rows = section(printed, "MLP layer 1:", "wrote")
    assert len(rows) == 3
    for r, (row, n) in enumerate(zip(rows, top)):
        m = re.fullmatch(r"  N(\d+)\s+\|v\|=([\d.]+)  promotes (\[.*?\])  suppresses (\[.*?\])", row)
        assert int(m.group(1)) == n and float(m.group(2)) == pytest.approx(float(norms[n]), abs=6e-4)
        assert m.group(3) == str(vt.promoted.tokens[r]) and m.group(4) == str(vt.suppressed.tokens[r])
    check_page(out1, f"FFN key-value memories: {gpt2.cfg.model_name}, MLP layer 1")

    # one neuron, sub-updates on a prompt, and key examples from a file
    out2 = tmp_path / "f.html"
    assert main(["ffn", "--model", str(gpt2_dir), "--layer", "0", "--neuron", "5", "--prompt", "1 2 3", "--token",
                 "4", "--data", str(data), "--quiet", "-k", "2", "--out", str(out2)]) == 0
    printed = capsys.readouterr().out
    assert "top sub-updates" in printed and "promotes" in printed
    assert "top-activating contexts (3 lines, 12 tokens)" in printed

    toks = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        _, cache = gpt2.run_with_cache(toks, names_filter="blocks.0.mlp.hook_post")
    post = cache["blocks.0.mlp.hook_post"][0, -1]
    sub = sub_updates(gpt2, toks, 0, token=4, k=2)
    rows = section(printed, "top sub-updates", "L0 N5")
    assert len(rows) == 2
    for j, row in enumerate(rows):
        m = re.fullmatch(r"  N(\d+)\s+m=\s*(\S+)\s+score=\s*(\S+)\s+promotes (\[.*\])", row)
        n = int(m.group(1))
        assert n == int(sub.top_neurons[0, j])
        assert float(m.group(2)) == pytest.approx(float(post[n]), abs=6e-4)
        assert float(m.group(3)) == pytest.approx(float(sub.score.values[0, n]), abs=6e-4)
        assert m.group(4) == str(sub.promotes.tokens[0][j])
    vt = value_tokens(gpt2, 0, 5, k=2)
    assert f"L0 N5 value vector promotes  {vt.promoted.tokens[0]}" in printed
    assert f"and suppresses {vt.suppressed.tokens[0]}" in printed

    # key examples, by brute force over every token of the file; printed with their line number in the file
    acts = []
    for i, line in ((2, "1 2 3 4 5"), (3, "6 7 8"), (6, "9 10 11 12")):
        row = torch.tensor([[int(t) for t in line.split()]])
        with torch.no_grad():
            _, c = gpt2.run_with_cache(row, names_filter="blocks.0.mlp.hook_post")
        acts += [(float(a), i, p) for p, a in enumerate(c["blocks.0.mlp.hook_post"][0, :, 5])]
    best = sorted(acts, reverse=True)[:2]
    rows = section(printed, "top-activating contexts", "wrote")
    assert len(rows) == 2
    for row, (a, i, p) in zip(rows, best):
        m = re.match(r"\s+(\S+)  line (\d+) pos (\d+): ", row)
        assert float(m.group(1)) == pytest.approx(a, abs=6e-4) and (int(m.group(2)), int(m.group(3))) == (i, p)
    check_page(out2, f"FFN key-value memories: {gpt2.cfg.model_name}, MLP layer 0")

    save_model(random_model("attn_only"), tmp_path / "ao")
    assert main(["ffn", "--model", str(tmp_path / "ao"), "--layer", "0"]) == 1
    assert "attention-only" in capsys.readouterr().err


@pytest.mark.skipif(TOY not in circuitlab.list_models(), reason=f"{TOY} is not installed")
def test_cli_ffn_on_a_learned_fact(tmp_path, capsys):
    """On zoo/toy-lm: the sub-updates that promote a fact's answer, with the prompt's tokens shown as a view."""
    from circuitlab.ffn import sub_updates
    from circuitlab.models.loading import ZOO_DIR
    from circuitlab.tasks.toy_world import fact_sentence, load_world

    world = load_world(ZOO_DIR / "toy-lm" / "world.json")
    prompt, answer = fact_sentence(world, world.people[0], "home", 0)
    model = circuitlab.load_model(TOY)
    layer = model.cfg.n_layers - 1
    out = tmp_path / "fact.html"
    assert main(["ffn", "-m", TOY, "--layer", str(layer), "--prompt", prompt, "--token", answer, "-k", "3", "-q",
                 "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    sub = sub_updates(model, prompt, layer, token=answer, k=3)
    rows = section(printed, "top sub-updates", "wrote")
    assert [int(re.match(r"  N(\d+)", row).group(1)) for row in rows] == sub.top_neurons[0].tolist()
    for row, n in zip(rows, sub.top_neurons[0].tolist()):
        m_value, score = floats(row.split("promotes")[0])
        assert m_value == pytest.approx(float(sub.coefficients.values[0, n]), abs=6e-4)
        assert score == pytest.approx(float(sub.effect.values[0, n]), abs=6e-4)
    check_page(out, f"FFN key-value memories: {model.cfg.model_name or TOY}, MLP layer {layer}")


def test_cli_ffn_data_lines_are_numbered_as_in_the_file(gpt2_dir, tmp_path, capsys):
    """With -k as large as the file, every token is listed: each line number names the file line it came from."""
    lines = ["", "", "3 4 5", "", "6 7", "   ", "8 9 10 11"]
    data = tmp_path / "data.txt"
    data.write_text("\n".join(lines) + "\n")
    assert main(["ffn", "-m", str(gpt2_dir), "--layer", "0", "--neuron", "5", "--data", str(data), "-k", "9",
                 "-q"]) == 0
    rows = section(capsys.readouterr().out, "top-activating contexts (3 lines, 9 tokens)")
    assert len(rows) == 9
    seen = {(int(m.group(1)), int(m.group(2))) for m in (re.match(r"\s+\S+  line (\d+) pos (\d+): ", r) for r in rows)}
    assert seen == {(n, pos) for n, line in enumerate(lines, 1) for pos in range(len(line.split()))}


@pytest.mark.parametrize("content,why", [(None, "no such file"), ("", "has no non-blank lines"),
                                         ("\n  \n\t\n", "has no non-blank lines")])
def test_cli_ffn_bad_data_file_is_an_error_naming_it(content, why, tmp_path, capsys):
    """A missing or empty --data file is a one-line error naming --data and the path, before the model loads."""
    data = tmp_path / "data.txt"
    if content is not None:
        data.write_text(content)
    assert main(["ffn", "-m", "zoo/no-such-model", "--layer", "0", "--neuron", "1", "--data", str(data)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"circuitlab: error: --data {data}") and why in err
    assert "one example per line" in err and "Traceback" not in err


@pytest.mark.parametrize("by", ["layer", "head", "neuron"])
def test_attribute_header_splits_the_total_into_the_listed_values_and_the_rest(by, capsys):
    """The header's sum is the model's logit difference; the values a --by split lists add up to the first part
    (checked against a separate library call) and the rest is said, so no printed sum disagrees with its rows."""
    from circuitlab.attribution import direct_logit_attribution

    prompt = "The cat sat on the mat and the dog"
    assert main(["attribute", "-m", TOY, "--prompt", prompt, "--answer", " sat", "--wrong", " cat", "--by", by,
                 "--no-lens"]) == 0
    out = capsys.readouterr().out
    total = float(re.search(r"sum of all direct contributions: (-?[\d.]+)", out).group(1))
    shown = float(re.search(r"= (-?[\d.]+) from the", out).group(1))
    sign, rest = re.search(r"([+-]) ([\d.]+) from the rest", out).groups()
    lib = direct_logit_attribution(TOY, prompt, " sat", wrong=" cat", by=by)
    assert abs(shown - float(lib.values.sum())) < 1e-3
    assert abs(shown + (1 if sign == "+" else -1) * float(rest) - total) < 2e-4
    assert abs(total - float(lib.model_logit[0])) < 1e-3


def test_cli_trace_prints_the_library_numbers_and_writes_a_report(tmp_path, capsys):
    """On a fact zoo/toy-lm knows: the printed probabilities and top restorations are the library's."""
    from circuitlab.tracing import trace

    prompt, subject, answer = "Wexmira has a house in", "Wexmira", " Brindlecote"
    out = tmp_path / "trace.html"
    assert main(["trace", "-m", TOY, "--prompt", prompt, "--subject", subject, "--answer", answer, "--samples", "3",
                 "--top", "2", "-q", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    res = trace(circuitlab.load_model(TOY), prompt, subject, answer, samples=3, progress=False)
    clean, corrupted = floats(printed.splitlines()[0])
    assert clean == pytest.approx(res.clean_prob, abs=6e-5) and corrupted == pytest.approx(res.corrupted_prob, abs=6e-5)
    for k, kind in enumerate(["residual stream", "MLP output", "attention output"]):
        rows = section(printed, kind)[:2]
        effect = res.values[k] - res.corrupted_prob
        best = effect.flatten().argsort(descending=True)[:2].tolist()
        for row, i in zip(rows, best):
            pos, layer = divmod(i, effect.shape[1])
            assert row.split()[1].split(":")[0] == str(pos)
            assert int(re.search(r"layer (\d+)", row).group(1)) == layer
            p, e = floats(row)[:2]
            assert p == pytest.approx(float(res.values[k, pos, layer]), abs=6e-5)
            assert e == pytest.approx(float(effect[pos, layer]), abs=6e-5)
    page = check_page(out, "Causal tracing: " + (circuitlab.load_model(TOY).cfg.model_name or TOY))
    assert "Causal trace" in page and "Indirect effect" in page


def test_ctrl_c_is_one_line_and_exit_code_130(tmp_path):
    """SIGINT while a command runs (a real signal, in a child process): one line on stderr, no traceback, exit
    code 130, and no report file left behind."""
    out = tmp_path / "report.html"
    # a test runner's worker may ignore SIGINT, and a child inherits that: restore Python's handler, as in a shell
    code = ("import os, signal, sys, threading\n"
            "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            "from circuitlab.cli import main\n"
            "threading.Timer(3.0, lambda: os.kill(os.getpid(), signal.SIGINT)).start()\n"
            f"sys.exit(main(['reproduce', '--all', '-q', '-o', {str(out)!r}]))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 130, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == ["circuitlab: interrupted."], proc.stderr[-2000:]
    assert not out.exists()
