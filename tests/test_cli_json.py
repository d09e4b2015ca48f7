"""``--json`` on every command and subcommand, and the console streams: stdout carries only the findings (one JSON
object under ``--json``), progress bars go to stderr and only to a terminal.

Each command runs in this process on a zoo model with the cheapest arguments the other CLI tests use; its stdout
must parse as strict JSON (``json.loads`` with NaN refused) holding ``kind``, and the results it names are checked
against a separate library call where that is cheap (a Result read back with ``from_jsonable`` equals the
library's to the last bit).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import circuitlab
from circuitlab.cli import build_parser, main

TOY, ZOO2 = "zoo/toy-lm", "zoo/attn-only-2l"
HELD = Path(circuitlab.__file__).parent / "zoo" / "weights" / "toy-lm" / "heldout.txt"

def _word_tasks_only(monkeypatch) -> None:
    """probe depth's sentence-level tasks need sentences in several tenses (spaCy-labelled text); the template
    sentences are all past tense: run the word-level tasks only."""
    import functools

    import circuitlab.probing as probing

    monkeypatch.setattr(probing, "depth_profile", functools.partial(probing.depth_profile, sentence_tasks=()))


def _small_rationales(monkeypatch) -> None:
    """rationales on a 2-layer random-init model with zoo/toy-lm's tokenizer and a long context (its prompts are
    long), on a small proxy set (as tests/test_concepts_rationales.py runs it)."""
    import functools

    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from circuitlab.concepts import rationales

    tok = circuitlab.load_model(TOY).tokenizer
    cfg = HookedTransformerConfig(n_layers=2, d_model=64, n_heads=4, d_head=16, d_mlp=128, n_ctx=2048,
                                  d_vocab=len(tok), act_fn="gelu_new", normalization_type="LN", seed=0,
                                  default_prepend_bos=True)
    small = HookedTransformer(cfg, tokenizer=tok).eval()
    monkeypatch.setattr(circuitlab, "load_model", lambda name: small)
    monkeypatch.setattr(rationales, "amplify", functools.partial(rationales.amplify, n_proxy=4, n_pool=2))


#: (argv, results the output must name (a dotted name reaches inside one)[, setup(monkeypatch)]); {tmp} is a
#: per-test folder, {texts} a small text file
RUNS = [
    (["models"], {"zoo", "real"}),
    (["induction", "-m", ZOO2, "--n-seqs", "4", "--seq-len", "10"], {"induction_circuit"}),
    (["patch", "-m", ZOO2, "--clean", "t1 t2 t3 t1 t2", "--corrupted", "t1 t2 t4 t1 t2", "--answer", " t3",
      "--wrong", " t4", "--by", "layer"], {"sweep"}),
    (["attribute", "-m", TOY, "--prompt", "The cat sat on the mat and the dog", "--answer", " sat"],
     {"attribution", "all_components", "logit_lens"}),
    (["ffn", "-m", TOY, "--layer", "1", "-k", "2"], {"value_tokens", "neurons", "value_norms"}),
    (["trace", "-m", TOY, "--prompt", "Wexmira has a house in", "--subject", "Wexmira", "--answer", " Brindlecote",
      "--samples", "2", "--kinds", "resid"], {"trace", "indirect_effect"}),
    (["circuit", "-m", ZOO2, "--n-seqs", "2", "--seq-len", "6", "--top", "3"], {"circuit", "clean_value"}),
    (["ig", "-m", TOY, "--prompt", "the cat sat", "--answer", " on", "--gxi"], {"attributions"}),
    (["rationales", "-m", "small", "--proxy", "small", "--seeds", "1", "--queries", "1", "--shots", "2", "-k", "1",
      "--steps", "2"], {"rationales"}, _small_rationales),
    (["tcav", "-m", TOY, "--hooks", "1", "--runs", "2", "--set-size", "3", "--inputs", "2", "--random", "6",
      "--words", " good, bad"], {"tcav"}),
    (["dynamics", "-m", ZOO2], {"curves", "phase_changes"}),
    (["edit", "-m", TOY, "--prompt", "Wexmira has a house in", "--subject", "Wexmira", "--new", " Pellmoor",
      "--layer", "0", "--tokens", "600", "--prefixes", "0"], {"p_new", "p_old", "succeeded"}),
    (["weights", "-m", ZOO2, "--head", "1.2", "--token", "t5", "-k", "3"], {"ov", "qk"}),
    (["attention", "patterns", "-m", ZOO2, "-n", "2", "--seq-len", "8"], {"per_layer", "taxonomy"}),
    (["attention", "rollout", "-m", TOY, "--prompt", "The cat sat on the mat"], {"token_scores", "correlations"}),
    (["attention", "prune", "-m", ZOO2, "-n", "2", "--seq-len", "8", "--order", "random"], {"prune_curve"}),
    (["neurons", "examples", "-m", TOY, "--layer", "1", "--neuron", "42", "--data", "{texts}", "-k", "2"],
     {"pages"}),
    (["neurons", "explain", "-m", TOY, "--layer", "1", "--neuron", "5", "--data", "{texts}", "--excerpts", "2"],
     {"explanations"}),
    (["neurons", "rank", "-m", TOY, "--layer", "1", "--sentences", "12", "--method", "anova"], {"ranking"}),
    (["neurons", "ablate", "-m", TOY, "--layer", "1", "--sentences", "12", "--method", "anova", "--protocol",
      "masked"],
     {"ranking", "ablation_curves"}),
    (["neurons", "compose", "-m", TOY, "--layer", "1", "--sentences", "12", "--n-neurons", "2", "--top", "0.05",
      "--max-length", "1"], {"compositional"}),
    (["probe", "pos", "-m", TOY, "-n", "12"], {"probe", "sentences", "probe.meta.data_split.left_out"}),
    (["probe", "structural", "-m", TOY, "-n", "12"], {"probe", "sentences", "probe.meta.data_split.ids.test"}),
    (["probe", "heads", "-m", TOY, "-n", "30"], {"probe"}),
    (["probe", "pairs", "-m", TOY, "--n-per", "2", "--method", "prefix"], {"probe"}),
    (["probe", "cloze", "-m", TOY, "--relations", "country_currency"], {"probe"}),
    (["probe", "edges", "-m", TOY, "-n", "10", "--task", "pos"], {"probe"}),
    (["probe", "depth", "-m", TOY, "-n", "24"], {"probe"}, _word_tasks_only),
    (["probe", "gaussian", "-m", TOY, "-n", "12", "--task", "pos", "--neurons", "2"], {"probe"}),
    (["probe", "coref", "-m", TOY, "--n-per", "2"], {"probe"}),
    (["sae", "list"], {"saes"}),
    (["sae", "train", "-m", TOY, "--hook", "1", "--data", "{texts}", "--save", "{tmp}/saes", "--d-sae", "64", "--k",
      "4", "--training-tokens", "256", "--batch-tokens", "128", "--context-size", "16"], {"stats", "saved"}),
    (["sae", "eval", "-m", TOY, "--sae", "toy-lm/res-2", "--data", "{texts}"], {"summary", "evaluation"}),
    (["sae", "dashboard", "toy-lm/res-2", "--features", "3,17", "--data", "{texts}", "-o", "{tmp}/dash"],
     {"dashboards", "explained", "index"}),
    (["sae", "attribute", "toy-lm/res-1", "--prompt", "And the LORD said unto", "--answer", " Moses", "--wrong",
      " the", "--exact", "2", "--top", "3"], {"attribution", "exact"}),
    (["sae", "steer", "toy-lm/res-1", "--prompt", "And the LORD said unto", "--feature", "7", "--alpha", "2",
      "--top", "2"], {"steering"}),
    (["superposition", "phase", "--importances", "3", "--sparsities", "0.9", "--steps", "50", "--restarts", "1"],
     {"phase", "counts"}),
    (["superposition", "geometry", "--steps", "50", "--restarts", "1"], {"norms", "dimensionality", "angles"}),
    (["superposition", "train", "--features", "4", "--hidden", "2", "--sparsities", "0.9", "--steps", "50",
      "--restarts", "1"], {"represented"}),
    (["graph", "-m", TOY, "--prompt", "Wexmira has a house in", "--max-logits", "2", "-o", "{tmp}/g.html"],
     {"scores", "graph"}),
    (["reproduce", "induction-heads-need-two-layers"], {"runs"}),
    (["reproduce", "--list"], {"findings"}),
    (["demo", "-m", ZOO2, "--no-ffn", "-o", "{tmp}/demo.html"], {"findings", "induction_circuit"}),
]


def _id(argv: list[str]) -> str:
    return " ".join(a for a in argv[:2] if not a.startswith("-"))


def _strict(text: str):
    """``json.loads`` that refuses NaN and Infinity (not JSON, though Python writes them by default)."""
    def refuse(word):
        raise ValueError(f"not strict JSON: {word}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def texts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("texts") / "texts.txt"
    path.write_text("\n".join(HELD.read_text(encoding="utf-8").splitlines()[:6]) + "\n", encoding="utf-8")
    return path


@pytest.mark.filterwarnings("ignore::circuitlab.concepts.gradients.CompletenessWarning")  # rationales' 2 IG steps
@pytest.mark.parametrize("run", RUNS, ids=[_id(r[0]) for r in RUNS])
def test_every_command_prints_one_json_object_with_json(run, texts, tmp_path, capsys, monkeypatch):
    argv, names, *setup = run
    for prepare in setup:
        prepare(monkeypatch)
    argv = [a.format(tmp=tmp_path, texts=texts) for a in argv]
    assert main([*argv, "--json"]) == 0, capsys.readouterr().err[-2000:]
    out, err = capsys.readouterr()
    data = _strict(out)  # the whole of stdout is one JSON object: no text summary around it
    assert data["kind"] == "CommandOutput" and data["command"] == argv[0] and data["exit_code"] == 0
    for name in names:
        found = data["results"]
        for part in name.split("."):
            assert part in found, (name, sorted(found))
            found = found[part]
    assert "text" not in data  # the command named its results (the fallback for a command that names none)
    assert out.count("\n") == 1 and "\x1b" not in out and "\r" not in out
    assert "\r" not in err and "\x1b" not in err  # no progress bar: stderr is not a terminal here
    for report in data["reports"]:
        assert Path(report).is_file() and f"wrote {report}" in err  # the note goes to stderr, not stdout


def test_every_command_and_subcommand_is_in_the_json_runs():
    """A new command, or a new choice of a command's positional subcommand, needs a row in RUNS."""
    from circuitlab.cli import _load_commands

    _load_commands()
    covered = {tuple(r[0][:2]) for r in RUNS} | {(r[0][0],) for r in RUNS} | {("serve",)}  # serve: below
    missing = []
    for name, sub in build_parser().commands.items():
        if (name,) not in covered:
            missing.append(name)
        for action in sub._actions:
            if not action.option_strings and action.choices:
                missing += [f"{name} {c}" for c in action.choices if (name, c) not in covered]
            if "--json" in action.option_strings:
                assert "JSON" in action.help
    assert not missing, f"commands without a --json run in RUNS: {missing}"


def test_serve_refuses_json(capsys):
    """The server runs until stopped (its /api answers in JSON): --json is refused, not silently dropped."""
    assert main(["serve", "--json"]) == 1
    assert "leave out --json" in capsys.readouterr().err


def test_json_results_are_the_library_results(capsys):
    """The patching sweep in the JSON output, read back with from_jsonable, is the library's sweep to the last
    bit (and the help says what the output holds)."""
    from circuitlab.metrics import LogitDiff
    from circuitlab.patching import sweep
    from circuitlab.results import from_jsonable

    assert main(["patch", "-m", ZOO2, "--clean", "t1 t2 t3 t1 t2", "--corrupted", "t1 t2 t4 t1 t2", "--answer",
                 " t3", "--wrong", " t4", "--json"]) == 0
    data = _strict(capsys.readouterr().out)
    got = from_jsonable(data["results"]["sweep"])
    model = circuitlab.load_model(ZOO2)
    want = sweep(model, "t1 t2 t3 t1 t2", "t1 t2 t4 t1 t2", LogitDiff(" t3", " t4", model=model), progress=False)
    assert torch.equal(got.values, want.values) and got.axes == want.axes and got.labels == want.labels
    assert got.meta["clean_value"] == want.meta["clean_value"]
    help_text = build_parser().commands["patch"].format_help()
    assert "--json" in help_text and "sweep (Result" in help_text


def test_a_command_that_names_nothing_still_prints_json(capsys, monkeypatch):
    """The fallback for a command that names no result and writes no report: its printed lines, as ``text``."""
    from circuitlab import cli

    def run(args):
        print("a finding")
        return 0

    monkeypatch.setitem(cli.COMMANDS, "x-plain", ("a command with text only", lambda p: None, run))
    monkeypatch.setattr(cli, "_load_commands", lambda: None)
    assert main(["x-plain", "--json"]) == 0
    data = _strict(capsys.readouterr().out)
    assert data == {"kind": "CommandOutput", "command": "x-plain", "exit_code": 0, "results": {}, "reports": [],
                    "text": ["a finding"]}


def test_a_command_that_names_nothing_gets_its_report_items(capsys, monkeypatch):
    """A command that names nothing but passes results to write_report: those results, under their class names
    (views and HTML left out, a Section's items looked into)."""
    from circuitlab import cli
    from circuitlab.render import HTML, Section
    from circuitlab.results import Result, from_jsonable

    first, second = Result(torch.tensor([1.0, 2.0]), ("x",)), Result(torch.tensor([[3.0]]), ("a", "b"))

    def run(args):
        cli.write_report([HTML("<p>a view</p>"), first, Section("more", [second])], None, title="t")
        return 0

    monkeypatch.setitem(cli.COMMANDS, "x-report", ("a command with a report", lambda p: None, run))
    monkeypatch.setattr(cli, "_load_commands", lambda: None)
    assert main(["x-report", "--json"]) == 0
    data = _strict(capsys.readouterr().out)
    assert list(data["results"]) == ["result", "result_2"] and "text" not in data
    assert torch.equal(from_jsonable(data["results"]["result"]).values, first.values)
    assert torch.equal(from_jsonable(data["results"]["result_2"]).values, second.values)


def test_an_error_under_json_prints_no_json(capsys):
    assert main(["induction", "-m", "zoo/no-such-model", "--json"]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("circuitlab: error: ")


# -- progress bars ----------------------------------------------------------------------------------------------------

class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bars_are_drawn_only_on_a_terminal_stderr(monkeypatch, capsys):
    """tqdm draws a bar into stderr when it is a terminal; into a pipe or file it draws nothing, and with
    ``progress=False`` nothing anywhere; stdout never gets a bar."""
    from circuitlab.core import progress_bar, progress_visible

    def draw(progress: bool) -> None:
        for _ in progress_bar(range(3), progress=progress, desc="counting"):
            pass

    assert not progress_visible()  # pytest captures stderr: not a terminal
    draw(True)
    assert capsys.readouterr() == ("", "")
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert progress_visible()
    draw(True)
    assert "counting" in terminal.getvalue() and "\r" in terminal.getvalue()
    terminal.seek(0)
    terminal.truncate()
    draw(False)
    assert terminal.getvalue() == ""
    assert capsys.readouterr().out == ""


def test_progress_bars_are_shown_in_a_notebook_kernel(monkeypatch):
    """In a Jupyter kernel (IPython's ZMQInteractiveShell) stderr is no terminal, yet the bar is shown (tqdm draws
    a widget, or a text bar the notebook redraws); in a terminal IPython without a terminal stderr it is not."""
    import types

    from circuitlab.core import progress_visible

    class ZMQInteractiveShell:
        pass

    class TerminalInteractiveShell:
        pass

    for shell, shown in ((ZMQInteractiveShell(), True), (TerminalInteractiveShell(), False), (None, False)):
        monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))
        assert progress_visible() is shown


def test_a_piped_command_has_clean_stdout_and_no_bar_on_stderr():
    """As a shell pipe sees it (a child process, stdout and stderr captured, so neither is a terminal): stdout
    holds the findings without escape codes or carriage returns, and stderr no bar (``--json`` is checked the same
    way in this process by the tests above)."""
    code = "import sys; from circuitlab.cli import main; sys.exit(main(sys.argv[1:]))"
    proc = subprocess.run([sys.executable, "-c", code, "induction", "-m", ZOO2, "--n-seqs", "4", "--seq-len", "10"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "\x1b" not in proc.stdout and "\r" not in proc.stdout and "induction" in proc.stdout.lower()
    assert "\r" not in proc.stderr and "it/s" not in proc.stderr and "%|" not in proc.stderr
