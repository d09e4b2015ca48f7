"""The ``circuitlab`` command line: ``circuitlab models | demo | induction | patch | attribute | ffn | ...``.

Each subcommand is a small function that parses its arguments, calls the library and prints a readable
summary; the analysis itself lives in the library so that notebooks and the CLI give the same numbers.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Callable, Sequence

from circuitlab.errors import CircuitlabError, InputError

warnings.filterwarnings("ignore", category=DeprecationWarning)

COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def command(name: str, help: str):
    """Register ``circuitlab NAME``: decorate a ``run(args) -> exit code``; ``run.arguments(parser)`` adds options."""

    def wrap(run: Callable[[argparse.Namespace], int]):
        COMMANDS[name] = (help, getattr(run, "arguments", lambda p: None), run)
        return run

    return wrap


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


def _models_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--verbose", "-v", action="store_true", help="also print each model's measured properties")


def run_models(args: argparse.Namespace) -> int:
    from circuitlab.models.loading import zoo_entries

    entries = zoo_entries()
    if not entries:
        print("no zoo models are installed")
        return 1
    width = max(len(e.name) for e in entries)
    for e in entries:
        print(f"{e.name:<{width}}  {e.description}")
        if args.verbose:
            import json

            for key in ("train_seconds", "in_context", "head_scores"):
                if key in e.card:
                    print(f"{'':<{width}}    {key}: {json.dumps(e.card[key])}")
    return 0


run_models.arguments = _models_args
command("models", "list the bundled offline model zoo")(run_models)


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
    """Import the modules that register subcommands (each analysis adds its own in ``circuitlab/commands/``)."""
    import importlib
    import pkgutil

    import circuitlab.commands as pkg

    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        importlib.import_module(f"circuitlab.commands.{info.name}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
