"""``circuitlab serve``: the interactive explorer in the browser (see ``docs/serve.md``).

    circuitlab serve -m zoo/toy-lm                                   # http://127.0.0.1:8765/, this machine only
    circuitlab serve -m gemma-3-270m -m zoo/toy-lm --data ~/explorer --port 9000
    circuitlab serve -m gemma-3-270m --host 0.0.0.0                  # for a lab: prints a URL with a fresh token

Models are loaded at start (registry names or model directories); the page chooses among them. Runs are stored in
SQLite under ``--data``; reopening a URL shows a stored result at once. Ctrl-C or SIGTERM cancels running jobs and
closes the database.
"""

from __future__ import annotations

import argparse

from circuitlab.cli import add_quiet_option, command, positive_int, quote


def port_int(text: str) -> int:
    """An argparse ``type`` for ``--port``: 1 to 65535."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number (1 to 65535), got {quote(text)}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number (1 to 65535), got {value}")
    return value


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "-m", action="append", metavar="MODEL",
                   help="a model to serve (registry name or model directory); repeat for several "
                        "(default zoo/toy-lm)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only); any other needs a token")
    p.add_argument("--port", type=port_int, default=8765, help="port (default 8765)")
    p.add_argument("--data", default="circuitlab-data", metavar="DIR",
                   help="folder of the run store (SQLite), created if missing (default ./circuitlab-data)")
    p.add_argument("--token", help="token required on every request (default: none on 127.0.0.1; generated and "
                                   "printed for any other host)")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="another name or address this server answers to in the Host header (e.g. a DNS alias); "
                        "repeat for several")
    p.add_argument("--max-queue", type=positive_int, default=8, help="jobs waiting per model before HTTP 429 "
                                                                     "(default 8)")
    p.add_argument("--threads", type=positive_int, help="torch threads (default: up to 4)")
    add_quiet_option(p)


def _check_port(host: str, port: int) -> None:
    """Fail before loading any model when ``host:port`` cannot be listened on."""
    import socket

    from circuitlab.errors import InputError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise InputError(f"--host {host} --port {port}: cannot listen there ({exc.strerror}); choose another "
                             "port, or a host address of this machine.") from None


def run(args: argparse.Namespace) -> int:
    from circuitlab.serve.app import check_host, check_token, serve

    if getattr(args, "json", False):
        from circuitlab.errors import InputError

        raise InputError("serve runs until stopped and answers in JSON itself (every /api route returns the "
                         "library's serialisation); leave out --json.")
    host = check_host(args.host)
    token = check_token(args.token)
    _check_port(host, args.port)
    return serve(args.model or ["zoo/toy-lm"], host=host, port=args.port, data_dir=args.data, token=token,
                 quiet=args.quiet, max_queue=args.max_queue, threads=args.threads,
                 allowed_hosts=[check_host(h) for h in args.allow_host])


run.arguments = arguments
command("serve", "the interactive explorer: a local web app over the analyses, with jobs and stored runs",
        json="nothing: serve refuses --json (it runs until stopped; its /api routes answer in JSON)")(run)
