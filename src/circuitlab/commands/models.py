"""``circuitlab models [-v]``: list the bundled offline model zoo (with ``-v``, each model's measured properties)."""

from __future__ import annotations

import argparse
import json

from circuitlab.cli import command


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--verbose", "-v", action="store_true", help="also print each model's measured properties")


def run(args: argparse.Namespace) -> int:
    from circuitlab.models.loading import zoo_entries

    entries = zoo_entries()
    if not entries:
        print("no zoo models are installed")
        return 1
    width = max(len(e.name) for e in entries)
    for e in entries:
        print(f"{e.name:<{width}}  {e.description}")
        if args.verbose:
            for key in ("train_seconds", "in_context", "head_scores"):
                if key in e.card:
                    print(f"{'':<{width}}    {key}: {json.dumps(e.card[key])}")
    return 0


run.arguments = arguments
command("models", "list the bundled offline model zoo")(run)
