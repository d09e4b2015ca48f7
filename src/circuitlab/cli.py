"""The ``circuitlab`` command line: ``circuitlab models | demo | induction | patch | attribute | ffn | ...``.

Each subcommand lives in its own file in ``circuitlab/commands/``: a small function that parses its arguments,
calls the library and prints a readable summary; the analysis itself lives in the library so that notebooks
and the CLI give the same numbers. This module holds what they share: the registry (:func:`command`), the
options every analysis spells the same way (``--model/-m``, ``--out/-o``, ``--quiet/-q``), the argument types
(:func:`positive_int` for every count, :func:`seed_int` for every seed), options that only make sense together
(:func:`requires`), the parsers of prompts and answers given on the command line, the report writer, and
:func:`main`.

Start-up stays fast: this module and the command files import nothing heavy at module level (no torch, no
TransformerLens); each command imports the library inside its ``run``, so ``--help`` and argument errors answer
at once.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from circuitlab.errors import CircuitlabError, InputError

COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def command(name: str, help: str):
    """Register ``circuitlab NAME``: decorate a ``run(args) -> exit code``; ``run.arguments(parser)`` adds options."""

    def wrap(run: Callable[[argparse.Namespace], int]):
        COMMANDS[name] = (help, getattr(run, "arguments", lambda p: None), run)
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
    """``--quiet/-q``: no progress bars (the library's ``progress=not args.quiet``)."""
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


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
        print(f"created folder {path.parent} for {option}")
    return path


def write_report(items: Sequence[Any], out: str | Path | None, title: str, intro: str = "") -> Path | None:
    """Write ``items`` as one full report page to ``out`` (nothing when ``out`` is None) and say so.

    Missing parent folders are created (and said so); an unusable path is an error naming ``--out``.
    """
    path = prepare_out(out)
    if path is None:
        return None
    from circuitlab.render import report

    try:
        path = report(list(items), path, title=title, intro=intro)
    except OSError as exc:
        raise InputError(f"--out {out}: could not write the report ({exc.strerror}); choose another path for "
                         "--out") from None
    print(f"wrote {path}")
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
