"""The ``circuitlab`` command line: ``circuitlab models | demo | induction | patch | attribute | ffn | ...``.

Each subcommand lives in its own file in ``circuitlab/commands/``: a small function that parses its arguments,
calls the library and prints a readable summary; the analysis itself lives in the library so that notebooks
and the CLI give the same numbers. This module holds what they share: the registry (:func:`command`), the
options every analysis spells the same way (``--model/-m``, ``--out/-o``, ``--quiet/-q``, and ``--json``, which
:func:`build_parser` gives every command), the argument types
(:func:`positive_int` for every count, :func:`seed_int` for every seed), options that only make sense together
(:func:`requires`), the parsers of prompts and answers given on the command line, the report writer, and
:func:`main`.

Start-up stays fast: this module and the command files import nothing heavy at module level (no torch, no
TransformerLens); each command imports the library inside its ``run``, so ``--help`` and argument errors answer
at once.

Output streams: stdout carries the findings only; progress bars go to stderr, and only on a terminal
(:func:`circuitlab.core.progress_bar`). With ``--json`` stdout carries one JSON object and nothing else (the text
summary is dropped; "wrote FILE" notes go to stderr): ``{"kind": "CommandOutput", "command": NAME, "results":
{name: value}, "reports": [paths]}``, each value in the library's serialisation
(:func:`circuitlab.results.to_jsonable`; a Result comes back with :func:`circuitlab.results.from_jsonable`). A
command names what it computed with :func:`emit`; what it passes to :func:`write_report` is captured too, so a
new command gets ``--json`` without a line of its own (see docs/cli-json.md).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from circuitlab.errors import CircuitlabError, InputError

COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}
#: what each command's ``--json`` output holds (its ``results`` names), shown in ``circuitlab NAME --help``
JSON_SHAPES: dict[str, str] = {}


def command(name: str, help: str, json: str | None = None):
    """Register ``circuitlab NAME``: decorate a ``run(args) -> exit code``; ``run.arguments(parser)`` adds options.

    ``json`` says what ``--json`` prints under ``results`` (the names given to :func:`emit`), for the help."""

    def wrap(run: Callable[[argparse.Namespace], int]):
        COMMANDS[name] = (help, getattr(run, "arguments", lambda p: None), run)
        if json:
            JSON_SHAPES[name] = json
        return run

    return wrap


# ---------------------------------------------------------------------------------------------------------
# Argument types and options that go together
# ---------------------------------------------------------------------------------------------------------

def quote(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to about ``limit`` characters, its length said: :func:`circuitlab.core.shorten`'s rule,
    here because this module imports nothing heavy (a megabyte-long argument must not make a megabyte-long
    error line)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def positive_int(text: str) -> int:
    """An argparse ``type`` for every count option (``--top``, ``-k``, ``--n-seqs``, ...): an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {quote(text)}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number (1 or more), got {value}")
    return value


#: ``core.SEED_LIMIT`` (this module imports nothing heavy, so the bound is repeated here; a test keeps them equal)
SEED_LIMIT = 2**63


def seed_int(text: str) -> int:
    """An argparse ``type`` for every ``--seed``: a whole number in [0, 2**63), the rule of
    :func:`circuitlab.core.check_seed` (a seed beyond it, negative or not a whole number is a usage error here,
    not a raw error from the random generator later)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number in [0, 2**63), got {quote(text, 40)}") from None
    if not 0 <= value < SEED_LIMIT:
        shown = text if len(text) <= 40 else f"{text[:20]}... ({len(text)} digits)"
        raise argparse.ArgumentTypeError(f"expected a whole number in [0, 2**63), got {shown}")
    return value


def requires(p: argparse.ArgumentParser, option: str, needs: str, why: str) -> None:
    """Declare that ``option`` only makes sense together with ``needs`` (both as spelled on the command line).

    :func:`main` rejects ``option`` given without ``needs`` as an argument error, before anything is loaded,
    instead of ignoring it; ``why`` says what ``option`` does with ``needs``.
    """
    def dest(long_option: str) -> str:  # argparse's own rule: --seq-len -> seq_len
        return long_option.lstrip("-").replace("-", "_")

    rules = list(p.get_default("_requires") or [])
    rules.append((dest(option), dest(needs), f"{option} needs {needs} ({why}); add {needs}, or drop {option}"))
    p.set_defaults(_requires=rules)


def _given(value: Any) -> bool:
    return value is not None and value is not False


# ---------------------------------------------------------------------------------------------------------
# Options every analysis command spells the same way
# ---------------------------------------------------------------------------------------------------------

def add_model_option(p: argparse.ArgumentParser, default: str | None = None) -> None:
    """``--model/-m``: a zoo name, a model directory or a pretrained name (required unless given a default)."""
    what = "zoo name (e.g. zoo/attn-only-2l), model directory, or pretrained name (e.g. gpt2-small)"
    if default is None:
        p.add_argument("--model", "-m", required=True, help=what)
    else:
        p.add_argument("--model", "-m", default=default, help=f"{what}; default {default}")


def add_out_option(p: argparse.ArgumentParser, default: str | None = None) -> None:
    """``--out/-o FILE``: write a self-contained HTML report (see :func:`write_report`)."""
    if default is None:
        p.add_argument("--out", "-o", metavar="FILE", help="also write a self-contained HTML report to this file")
    else:
        p.add_argument("--out", "-o", metavar="FILE", default=default,
                       help=f"where to write the self-contained HTML report (default {default})")


def add_quiet_option(p: argparse.ArgumentParser) -> None:
    """``--quiet/-q``: no progress bars (the library's ``progress=not args.quiet``; bars are drawn on stderr and only
    when it is a terminal, so piped output never has them)."""
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars (they go to stderr, and only to a "
                                                             "terminal)")


def add_json_option(p: argparse.ArgumentParser, shape: str | None = None) -> None:
    """``--json``: print one JSON object on stdout instead of the text summary (see :func:`emit`).

    :func:`build_parser` adds it to every command (a command need not call this); ``shape`` says what ``results``
    holds for this command."""
    what = f" results: {shape}." if shape else ""
    p.add_argument("--json", action="store_true",
                   help='print one JSON object on stdout and nothing else: {"kind": "CommandOutput", "command", '
                        '"results": {name: value}, "reports": [files written]}, each value in circuitlab\'s '
                        f"serialisation (results.to_jsonable; load a Result back with results.from_jsonable).{what} "
                        "Reports (-o) are still written; notes go to stderr")


# ---------------------------------------------------------------------------------------------------------
# --json: what a command computed, as data
# ---------------------------------------------------------------------------------------------------------

#: the ``--json`` output being gathered for the command running now (``None`` when not in JSON mode)
_json_output: dict[str, Any] | None = None


def json_mode() -> bool:
    """Whether the command running now was given ``--json`` (its text output is then dropped)."""
    return _json_output is not None


def emit(**named: Any) -> None:
    """Name what the command computed, for ``--json``: ``emit(trace=res, clean_prob=0.83)``.

    Values are results (:class:`~circuitlab.results.Result`, bundles, dataclasses) or plain data (numbers,
    strings, lists, dicts); each is written with :func:`circuitlab.results.to_jsonable` under ``results``. Without
    ``--json`` this does nothing, so a command calls it unconditionally. A later ``emit`` of a name replaces it."""
    if _json_output is None:
        return
    for name, value in named.items():
        _json_output["results"][name] = value


def report_data(items: Sequence[Any]) -> list[Any]:
    """The data among report items: results, bundles and other dataclasses, looking inside
    :class:`~circuitlab.render.Section`\\ s; not the views and HTML of :mod:`circuitlab.render`."""
    import dataclasses

    found = []
    for item in items:
        module = type(item).__module__
        if module.startswith("circuitlab.render"):
            found += report_data(getattr(item, "items", None) or [])  # a Section's items; a view has none
        elif dataclasses.is_dataclass(item) and not isinstance(item, type):
            found.append(item)
    return found


def _capture(items: Sequence[Any]) -> None:
    """In JSON mode, for a command that has named nothing with :func:`emit`, keep the data of its report's items
    (:func:`report_data`), each under its class name in snake case (``InductionCircuit`` -> ``induction_circuit``):
    a new command's ``--json`` holds what its report shows before it names anything itself."""
    import re

    if _json_output is None or _json_output["results"]:
        return
    results = _json_output["results"]
    for item in report_data(items):
        base = re.sub(r"(?<!^)(?=[A-Z])", "_", type(item).__name__).lower()
        name, n = base, 2
        while name in results:
            name, n = f"{base}_{n}", n + 1
        results[name] = item


def record_report(path: str | Path) -> None:
    """Say, in the ``--json`` output's ``reports``, that a file was written (:func:`write_report` does it)."""
    if _json_output is not None:
        _json_output["reports"].append(str(path))


def note(text: str) -> None:
    """A line about the run rather than a finding ("wrote FILE"): on stdout, or on stderr under ``--json``."""
    print(text, file=sys.stderr if json_mode() else sys.stdout)


def _run_json(args: argparse.Namespace) -> int:
    """Run the command with its text output dropped, then print what it named with :func:`emit` as one JSON
    object.

    A command that names nothing and writes no report gets its printed lines as ``text`` (so the output is still
    JSON); a :class:`~circuitlab.errors.CircuitlabError` prints no JSON (one line on stderr, as always)."""
    import json

    global _json_output
    real_stdout = sys.stdout
    _json_output = {"results": {}, "reports": []}
    try:
        dropped = io.StringIO()
        with contextlib.redirect_stdout(dropped):
            code = int(args._run(args) or 0)
        from circuitlab.results import to_jsonable

        payload: dict[str, Any] = {"kind": "CommandOutput", "command": args.command, "exit_code": code,
                                   "results": to_jsonable(_json_output["results"]),
                                   "reports": _json_output["reports"]}
        if not _json_output["results"]:
            payload["text"] = dropped.getvalue().splitlines()
        real_stdout.write(json.dumps(payload, allow_nan=False) + "\n")
        real_stdout.flush()
        return code
    finally:
        _json_output = None


def check_out(out: str | Path | None, option: str = "--out") -> Path | None:
    """Check, before any work, that a report can be written to ``out``; creates nothing.

    Missing parent folders are fine (:func:`prepare_out` creates them); a path that is a directory, a parent that
    is a file, or a folder that cannot be written is a :class:`~circuitlab.errors.InputError` naming ``option``.
    """
    if not out:
        return None
    path = Path(out)
    if path.is_dir():
        raise InputError(f"{option} {out} is a directory; give a file name in it, e.g. {option} "
                         f"{path / 'report.html'}")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:  # the nearest folder that exists
        folder = folder.parent
    if not folder.is_dir():
        raise InputError(f"{option} {out}: {folder} is a file, not a folder; choose another path for {option}")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"{option} {out}: the folder {folder} is not writable; choose a folder you can write "
                         f"to for {option}")
    if path.exists() and not os.access(path, os.W_OK):
        raise InputError(f"{option} {out}: the file exists and is not writable; choose another path for "
                         f"{option}")
    return path


def prepare_out(out: str | Path | None, option: str = "--out") -> Path | None:
    """:func:`check_out`, then create ``out``'s missing parent folders and say so."""
    path = check_out(out, option)
    if path is not None and not path.parent.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"{option} {out}: could not create the folder {path.parent} ({exc.strerror}); "
                             f"choose another path for {option}") from None
        note(f"created folder {path.parent} for {option}")
    return path


def write_report(items: Sequence[Any], out: str | Path | None, title: str, intro: str = "") -> Path | None:
    """Write ``items`` as one full report page to ``out`` (nothing when ``out`` is None) and say so.

    Missing parent folders are created (and said so); an unusable path is an error naming ``--out``.
    """
    _capture(items)
    path = prepare_out(out)
    if path is None:
        return None
    from circuitlab.render import report

    try:
        path = report(list(items), path, title=title, intro=intro)
    except OSError as exc:
        raise InputError(f"--out {out}: could not write the report ({exc.strerror}); choose another path for "
                         "--out") from None
    record_report(path)
    note(f"wrote {path}")
    return path


# ---------------------------------------------------------------------------------------------------------
# Prompts and answers written on the command line
# ---------------------------------------------------------------------------------------------------------

def token_ids(text: str, what: str) -> list[int]:
    """Token ids written on the command line, separated by spaces or commas: ``"3 17 42"``."""
    try:
        ids = [int(t) for t in text.replace(",", " ").split()]
    except ValueError:
        ids = []
    if not ids:
        raise InputError(f"{what} {quote(text)} should be token ids separated by spaces or commas, e.g. '3 17 42' "
                         "(the model has no tokenizer, or ids were asked for).")
    return ids


def prompt_arg(model, text: str | None, what: str = "--prompt", as_ids: bool = False):
    """A prompt option: text for a model with a tokenizer, token ids for one without (or with ``as_ids``)."""
    if text is None or (model.tokenizer is not None and not as_ids):
        return text
    return token_ids(text, what)


def answer_arg(model, text: str | None, what: str = "--answer", as_ids: bool = False):
    """An answer option: text for a model with a tokenizer, else exactly one token id."""
    if text is None or (model.tokenizer is not None and not as_ids):
        return text
    ids = token_ids(text, what)
    if len(ids) != 1:
        raise InputError(f"{what} must be a single token id; got {len(ids)} ids {ids}.")
    return ids[0]


# ---------------------------------------------------------------------------------------------------------
# The entry point
# ---------------------------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="circuitlab", description="Find circuits in transformer language models (TransformerLens)."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.commands = {}
    for name, (help, add_args, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help, description=help)
        add_args(p)
        if "--json" not in p._option_string_actions:  # every command takes --json; a command may add its own
            add_json_option(p, JSON_SHAPES.get(name))
        p.set_defaults(_run=run)
        parser.commands[name] = p
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """``parser.parse_args``, then what argparse cannot express: an option given without the option it needs
    (:func:`requires`) is an argument error too (usage on stderr, exit code 2)."""
    args = parser.parse_args(argv)
    sub = getattr(parser, "commands", {}).get(getattr(args, "command", None), parser)
    for dest, needs, message in getattr(args, "_requires", None) or []:
        if _given(getattr(args, dest)) and not _given(getattr(args, needs)):
            sub.error(message)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``circuitlab ARGV``; a :class:`~circuitlab.errors.CircuitlabError` is one line on stderr, exit code 1;
    Ctrl-C is one line, exit code 130 (the shell's code for SIGINT)."""
    _load_commands()
    parser = build_parser()
    args = parse_args(parser, argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        check_out(getattr(args, "out", None))  # before any work: a bad --out should not cost a model load
        if hasattr(args, "model"):  # a command that runs a model imports torch anyway: set its threads first
            from circuitlab.core import apply_default_threads

            apply_default_threads()  # never more torch threads than usable cores / processes (CIRCUITLAB_THREADS)
        if getattr(args, "json", False):
            return _run_json(args)
        return int(args._run(args) or 0)
    except CircuitlabError as exc:
        print(f"circuitlab: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C: one line, not a traceback; reports are written whole or not at all
        print("circuitlab: interrupted.", file=sys.stderr)
        return 130


def _load_commands() -> None:
    """Import the modules that register subcommands (one file per command in ``circuitlab/commands/``)."""
    import importlib
    import pkgutil

    import circuitlab.commands as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        importlib.import_module(f"circuitlab.commands.{info.name}")


if __name__ == "__main__":  # pragma: no cover
    # `python -m circuitlab.cli`: the commands register with the importable module, not with this __main__ copy
    from circuitlab.cli import main as _main

    sys.exit(_main())
