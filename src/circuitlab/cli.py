"""The ``circuitlab`` command line: ``circuitlab models | demo | induction | patch | attribute | ffn | ...``.

Each subcommand lives in its own file in ``circuitlab/commands/``: a small function that parses its arguments,
calls the library and prints a readable summary; the analysis itself lives in the library so that notebooks
and the CLI give the same numbers. This module holds what they share: the registry (:func:`command`), the
options every analysis spells the same way (``--model/-m``, ``--out/-o``, ``--quiet/-q``), the parsers of
prompts and answers given on the command line, the report writer, and :func:`main`.
"""

from __future__ import annotations

import argparse
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


def write_report(items: Sequence[Any], out: str | Path | None, title: str, intro: str = "") -> Path | None:
    """Write ``items`` as one full report page to ``out`` (nothing when ``out`` is None) and say so."""
    if not out:
        return None
    from circuitlab.render import report

    path = report(list(items), Path(out), title=title, intro=intro)
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
        raise InputError(f"{what} {text!r} should be token ids separated by spaces or commas, e.g. '3 17 42' "
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
    for name, (help, add_args, run) in COMMANDS.items():
        p = sub.add_parser(name, help=help, description=help)
        add_args(p)
        p.set_defaults(_run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``circuitlab ARGV``; a :class:`~circuitlab.errors.CircuitlabError` is one line on stderr, exit code 1."""
    _load_commands()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except CircuitlabError as exc:
        print(f"circuitlab: error: {exc}", file=sys.stderr)
        return 1


def _load_commands() -> None:
    """Import the modules that register subcommands (one file per command in ``circuitlab/commands/``)."""
    import importlib
    import pkgutil

    import circuitlab.commands as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        importlib.import_module(f"circuitlab.commands.{info.name}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
