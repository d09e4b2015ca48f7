"""The explorer's web application: :func:`create_app` builds it, :func:`serve` runs it with uvicorn.

FastAPI on Starlette, served by uvicorn. FastAPI rather than bare Starlette for what it adds at no cost here: the
routing with typed path and query parameters (ids, ``limit``, ``format`` checked before our code runs),
exception handlers, ``run_in_threadpool`` for the blocking model calls, and its TestClient for in-process tests.
Request bodies are parsed by hand (:func:`_body`), not by pydantic models, so every refusal is one
:class:`~circuitlab.errors.InputError` message in the library's words and an HTTP 400.

Security, in :class:`Guard` (a plain ASGI middleware, so it sees every request, static files included):

- the ``Host`` header must name this server (loopback names, or the host it was started on), and an ``Origin``
  header, when sent, the same: a page from another site or a DNS-rebinding name is refused (400 / 403);
- with a token (required for any non-loopback host; :func:`create_app` refuses to start without one) every request
  carries it (``Authorization: Bearer``, the ``circuitlab_token`` cookie that opening ``/?token=...`` sets, or
  ``?token=``), else 401;
- request bodies above ``max_body`` bytes are refused (413); prompts are bounded in characters and tokens.

Models are those given at start (registry names or directories), chosen by name in a request; a request never
names a path. Nothing from a request is unpickled or evaluated: arguments are JSON checked against each
analysis' spec (:mod:`circuitlab.serve.analyses`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import io
import json
import secrets
import signal
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence, Union
from urllib.parse import parse_qs, urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from circuitlab.core import DEFAULT_MAX_MEMORY
from circuitlab.errors import CircuitlabError, InputError
from circuitlab.serve.analyses import args_key, canonical_args, describe, get_analysis, result_json, results_of
from circuitlab.serve.jobs import Job, ModelSlot, QueueFull
from circuitlab.serve.store import Store

STATIC = Path(__file__).resolve().parent / "static"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
TOKEN_COOKIE = "circuitlab_token"
#: the shortest token accepted (a generated one is 32 URL-safe characters)
MIN_TOKEN = 16
DEFAULT_MAX_BODY = 64 * 1024
DEFAULT_DATA = "circuitlab-data"


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback name or address (``127.x.x.x``, ``localhost``, ``::1``)."""
    return host in LOOPBACK or host.startswith("127.") and host.replace(".", "").isdigit()


def check_host(host: Any) -> str:
    """A host to bind: a name or an IP address without spaces, ports or paths."""
    import re

    if not isinstance(host, str) or not re.fullmatch(r"[A-Za-z0-9.\-]{1,253}|[0-9A-Fa-f:.]{2,45}", host or ""):
        raise InputError(f"--host {str(host)[:60]!r} is not a host name or address; give e.g. 127.0.0.1 (this "
                         "machine only, the default) or 0.0.0.0 (every interface, with a token).")
    return host


def check_token(token: Any) -> Optional[str]:
    """A token: at least ``MIN_TOKEN`` printable characters without spaces, or None."""
    if token is None:
        return None
    if not isinstance(token, str) or len(token) < MIN_TOKEN or not token.isascii() or not token.isprintable() \
            or any(c.isspace() for c in token) or ";" in token or "," in token:
        raise InputError(f"--token must be at least {MIN_TOKEN} printable ASCII characters without spaces, commas or "
                         "semicolons; leave it out to have one generated.")
    return token


def machine_names() -> set[str]:
    """This machine's host name, fully qualified name and the addresses they resolve to (lowercased)."""
    import socket

    names = {socket.gethostname().lower(), socket.getfqdn().lower()}
    for name in list(names):
        try:
            names |= {info[4][0].lower() for info in socket.getaddrinfo(name, None)}
        except OSError:
            pass
    return names


def new_token() -> str:
    """A fresh random token (32 URL-safe characters)."""
    return secrets.token_urlsafe(24)


def _hostname(value: str) -> str:
    """The host of a ``Host`` header value (``name:port``, ``[::1]:port``), lowercased."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


class BodyTooLarge(Exception):
    pass


class Guard:
    """The ASGI middleware that checks ``Host``, ``Origin``, the token and the body size of every request."""

    def __init__(self, app: Any, *, hosts: Iterable[str], token: Optional[str], max_body: int) -> None:
        self.app, self.hosts, self.token, self.max_body = app, {h.lower() for h in hosts}, token, max_body

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if _hostname(headers.get("host", "")) not in self.hosts:
            return await _refuse(send, 400, "this server does not answer to that Host header (DNS rebinding guard); "
                                            "open it by the address it printed")
        origin = headers.get("origin")
        if origin is not None:  # same origin only: the scheme's host and port are the ones this request came to
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or parts.netloc.lower() != headers.get("host", "").lower():
                return await _refuse(send, 403, "cross-origin requests are refused; use the page this server serves")
        set_cookie = False
        if self.token is not None:
            given = None
            auth = headers.get("authorization", "")
            if auth.lower().startswith("bearer "):
                given = auth[7:].strip()
            query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
            if given is None and query:
                given, set_cookie = query[0], True
            if given is None:
                for part in headers.get("cookie", "").split(";"):
                    name, _, value = part.strip().partition("=")
                    if name == TOKEN_COOKIE:
                        given = value
            if given is None or not hmac.compare_digest(given.encode(), self.token.encode()):
                return await _refuse(send, 401, "a valid token is required: open the address the server printed "
                                                "(with ?token=...) or send Authorization: Bearer TOKEN")
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return await _refuse(send, 413, f"the request body is over {self.max_body:,} bytes")
        seen = 0
        started = False

        async def limited_receive() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise BodyTooLarge()
            return message

        async def guarded_send(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if set_cookie:
                    cookie = f"{TOKEN_COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict"
                    message = {**message, "headers": list(message.get("headers", [])) +
                               [(b"set-cookie", cookie.encode("latin-1"))]}
                message = {**message, "headers": list(message.get("headers", [])) + [
                    (b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer")]}
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except BodyTooLarge:
            if not started:
                await _refuse(send, 413, f"the request body is over {self.max_body:,} bytes")


async def _refuse(send: Any, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _load_models(models: Union[Sequence[str], Mapping[str, Any]]) -> dict[str, Any]:
    """Models by name: a mapping of names to loaded models is used as is; names (registry names or directories,
    as on the command line) are loaded here."""
    if isinstance(models, Mapping):
        return dict(models)
    if isinstance(models, str):
        models = [models]
    from circuitlab.models import load_model

    out = {}
    for name in models:
        if not isinstance(name, str) or not name:
            raise InputError(f"-m {name!r:.60}: give a model's registry name or a model directory.")
        if name in out:
            continue
        path = Path(name).expanduser()
        if not name.startswith("zoo/") and ("/" in name or name.startswith(".")) and not path.exists():
            raise InputError(f"-m {name!r:.80}: no such model directory; give a model directory or a registry name "
                             "(circuitlab models lists them).")
        out[name] = load_model(name)
    return out


def create_app(models: Union[Sequence[str], Mapping[str, Any]] = ("zoo/toy-lm",), data_dir: Union[str, Path] =
               DEFAULT_DATA, token: Optional[str] = None, *, host: str = "127.0.0.1", allowed_hosts: Sequence[str] = (),
               max_body: int = DEFAULT_MAX_BODY, max_queue: int = 8, max_prompt_tokens: int = 256,
               max_memory: int = DEFAULT_MAX_MEMORY, threads: Optional[int] = None) -> Any:
    """The explorer as an ASGI application (FastAPI).

    Args:
        models: registry names or model directories (loaded here, at start; requests choose among them by name),
            or a mapping ``{name: loaded model}``.
        data_dir: the folder of the SQLite store (created if missing).
        token: required on every request when given; a non-loopback ``host`` without one is refused here.
        host: the host the server binds (a non-loopback one is also accepted in ``Host`` headers).
        allowed_hosts: more names accepted in ``Host`` / ``Origin`` (say, the machine's DNS name).
        max_body: the largest request body in bytes; max_queue: jobs waiting per model before 429;
        max_prompt_tokens: the longest prompt in tokens (also bounded by the model's context);
        max_memory: each analysis' ``max_memory`` (the library's meaning and default);
        threads: torch's intra-op threads (default: up to 4).
    """
    import os

    import torch

    from circuitlab.core import check_count, check_max_memory

    host = check_host(host)
    token = check_token(token)
    if not is_loopback(host) and token is None:
        raise InputError(f"--host {host} makes the server reachable from other machines; it needs a token (--token, "
                         "or leave it out on the command line to have one generated).")
    max_body, max_queue = check_count(max_body, "max_body"), check_count(max_queue, "max_queue")
    max_tokens = check_count(max_prompt_tokens, "max_prompt_tokens")
    max_memory = check_max_memory(max_memory)
    threads = check_count(threads if threads is not None else min(4, os.cpu_count() or 1), "threads")
    torch.set_num_threads(threads)

    loaded = _load_models(models)
    if not loaded:
        raise InputError("give at least one model (-m NAME).")
    store = Store(data_dir)
    jobs: dict[str, Job] = {}
    slots = {name: ModelSlot(name, m, store, max_queue=max_queue, max_tokens=max_tokens, max_memory=max_memory,
                             jobs=jobs)
             for name, m in loaded.items()}
    stopping = threading.Event()

    def shutdown() -> None:
        if store.closed:
            return
        stopping.set()
        for slot in slots.values():
            slot.stop()
        store.close()

    @asynccontextmanager
    async def lifespan(app: Any):
        yield
        shutdown()

    app = FastAPI(title="circuitlab serve", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.store, app.state.slots, app.state.jobs, app.state.stopping = store, slots, jobs, stopping
    app.state.token, app.state.shutdown = token, shutdown
    hosts = set(LOOPBACK) | {host.lower(), *[h.lower() for h in allowed_hosts]}
    if host in ("0.0.0.0", "::"):  # every interface: this machine's names and addresses
        hosts |= machine_names()
    app.add_middleware(Guard, hosts=hosts, token=token, max_body=max_body)

    # ---- errors: the library's errors are the client's (400), a full queue is 429, the rest a clear 500 ----
    @app.exception_handler(CircuitlabError)
    async def circuitlab_error(request: Request, exc: CircuitlabError):
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.exception_handler(QueueFull)
    async def queue_full(request: Request, exc: QueueFull):
        return JSONResponse({"error": str(exc)}, status_code=429, headers={"Retry-After": "2"})

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        return JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)

    async def body(request: Request) -> dict:
        raw = await request.body()

        def constant(name: str) -> Any:
            raise InputError(f"the request body holds {name}, which JSON does not have.")

        try:
            data = json.loads(raw or b"{}", parse_constant=constant)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InputError(f"the request body is not valid JSON ({exc}).") from None
        if not isinstance(data, dict):
            raise InputError("the request body must be a JSON object.")
        return data

    def slot_of(name: Any) -> ModelSlot:
        if isinstance(name, str) and name in slots:
            return slots[name]
        if name is None and len(slots) == 1:
            return next(iter(slots.values()))
        raise InputError(f"model {str(name)[:80]!r} is not loaded here; choose one of {', '.join(slots)} (models are "
                         "given when the server starts, never as paths in a request).")

    def job_state(run_id: str, with_result: bool = True) -> dict:
        if run_id in jobs and not jobs[run_id].done.is_set():
            return jobs[run_id].state()
        row = store.get(run_id, with_result=with_result)
        if row is None:
            raise HTTPException(404, f"no job {run_id[:40]!r}")
        return row

    # ---- the page and its files ----
    files = {p.name: p for p in STATIC.iterdir() if p.is_file()}
    types = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
             ".css": "text/css; charset=utf-8"}

    @app.get("/")
    def index():
        return Response(files["index.html"].read_bytes(), media_type=types[".html"],
                        headers={"Cache-Control": "no-store", "Content-Security-Policy": CSP})

    @app.get("/static/{name}")
    def static(name: str):
        if name == "circuitsvis.js":
            from circuitlab.render.bundle import raw_bundle

            return Response(raw_bundle(), media_type=types[".js"], headers={"Cache-Control": "max-age=3600"})
        path = files.get(name)
        if path is None:
            raise HTTPException(404, "no such file")
        return Response(path.read_bytes(), media_type=types.get(path.suffix, "application/octet-stream"))

    # ---- the API ----
    @app.get("/api/health")
    def health():
        return {"ok": True, "models": list(slots), "jobs_running": sum(s.current is not None for s in slots.values())}

    @app.get("/api/models")
    def list_models():
        return {"models": [s.info() for s in slots.values()], "analyses": describe(),
                "limits": {"max_body": max_body, "max_queue": max_queue, "max_tokens": max_tokens}}

    async def view_result(name: str, request: Request) -> tuple:
        analysis = get_analysis(name)
        if analysis.job:
            raise InputError(f"{name} runs as a job: POST /api/jobs with analysis {name!r}.")
        data = await body(request)
        slot = slot_of(data.get("model"))
        args = canonical_args(analysis, data.get("args", {}))
        extra = {}
        if analysis.stored_run is not None:  # a view of a stored run (a saved classifier): that run's result
            row = await run_in_threadpool(store.get, args["run"][:64])
            if row is None or row["analysis"] != analysis.stored_run or row["status"] != "done":
                raise InputError(f"run {args['run'][:40]!r} is not a finished {analysis.stored_run} job; give the id "
                                 "of one (see the history page).")
            if row["fingerprint"] != slot.fingerprint:
                raise InputError(f"run {args['run'][:40]!r} was computed on {row['model']}, not on {slot.name}; "
                                 f"choose {row['model']}.")
            extra["stored"] = row["result"]
        t0 = time.perf_counter()
        result = await run_in_threadpool(slot.compute, analysis, args, False, **extra)
        return slot, analysis, args, result, time.perf_counter() - t0

    @app.post("/api/view/{name}")
    async def view(name: str, request: Request):
        slot, analysis, args, result, seconds = await view_result(name, request)
        data = await run_in_threadpool(result_json, result)
        return {"model": slot.name, "analysis": analysis.name, "args": args, "seconds": seconds, "result": data}

    @app.post("/api/view/{name}/export")
    async def view_export(name: str, request: Request, format: str = "json"):
        slot, analysis, args, result, _ = await view_result(name, request)
        data = await run_in_threadpool(result_json, result)
        return export(data, format, f"{analysis.name}", f"{analysis.title}: {slot.name}")

    @app.post("/api/jobs")
    async def submit(request: Request):
        data = await body(request)
        analysis = get_analysis(data.get("analysis"))
        if not analysis.job:
            raise InputError(f"{analysis.name} answers at once: POST /api/view/{analysis.name}.")
        slot = slot_of(data.get("model"))
        args = canonical_args(analysis, data.get("args", {}))
        key = args_key(args)
        if not data.get("rerun"):
            found = await run_in_threadpool(store.find_done, slot.fingerprint, analysis.name, key)
            if found is not None:
                return {**found, "cached": True}
            for job in list(jobs.values()):  # the same job already waiting or running: follow it
                if (job.slot is slot and job.analysis is analysis and args_key(job.args) == key
                        and not job.done.is_set()):
                    return {**job.state(), "cached": False}
        run_id = store.add(slot.name, slot.fingerprint, analysis.name, key)
        job = Job(run_id, slot, analysis, args)
        try:
            slot.submit(job)
        except QueueFull:
            store.remove(run_id)
            raise
        return JSONResponse({**job.state(), "cached": False}, status_code=202)

    @app.get("/api/jobs/{run_id}")
    def get_job(run_id: str):
        return job_state(run_id)

    @app.post("/api/jobs/{run_id}/cancel")
    def cancel(run_id: str):
        job = jobs.get(run_id)
        if job is None or job.done.is_set():
            state = job_state(run_id, with_result=False)
            return {**state, "note": f"the job is {state['status']}; nothing to cancel"}
        job.slot.cancel(job)
        return job.state()

    @app.get("/api/jobs/{run_id}/events")
    async def events(run_id: str, request: Request):
        job_state(run_id, with_result=False)  # 404 for an unknown id, before the stream starts

        async def stream():
            version = -1
            last_beat = time.monotonic()
            while True:
                job = jobs.get(run_id)
                if job is None or job.done.is_set():
                    row = store.get(run_id, with_result=False) if not store.closed else None
                    final = row or (job.state() if job else {"id": run_id, "status": "interrupted"})
                    yield f"event: end\ndata: {json.dumps(final)}\n\n"
                    return
                if job.version != version:
                    version = job.version
                    yield f"event: progress\ndata: {json.dumps(job.state())}\n\n"
                elif time.monotonic() - last_beat > 10:
                    yield ": keep-alive\n\n"
                    last_beat = time.monotonic()
                if stopping.is_set() or await request.is_disconnected():
                    return
                await asyncio.sleep(0.1)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @app.get("/api/jobs/{run_id}/export")
    def job_export(run_id: str, format: str = "json"):
        row = job_state(run_id)
        if row.get("status") != "done":
            raise InputError(f"job {run_id[:40]!r} is {row.get('status')}; only a finished job has a result to export.")
        return export(row["result"], format, row["analysis"], f"{get_analysis(row['analysis']).title}: {row['model']}")

    @app.get("/api/history")
    def history(limit: int = 100):
        if not 1 <= limit <= 1000:
            raise InputError(f"limit must be between 1 and 1000; got {limit}.")
        return {"runs": store.history(last=limit)}

    return app


#: the page's Content-Security-Policy: everything from this server; circuitsvis (React) needs inline styles
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")


def export(data: dict, format: str, name: str, title: str) -> Any:
    """A result's JSON as a download: ``json`` (as stored), ``csv`` (each result's long table) or ``html`` (the
    library's self-contained report, :func:`circuitlab.render.report_html`)."""
    from fastapi.responses import Response

    if format == "json":
        text, media = json.dumps(data, indent=1), "application/json"
    elif format == "csv":
        import pandas as pd

        frames = [r.to_dataframe().assign(result=r.title) for r in results_of(data)]
        buf = io.StringIO()
        (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()).to_csv(buf, index=False)
        text, media = buf.getvalue(), "text/csv"
    elif format == "html":
        from circuitlab.render.report import report_html

        text, media = report_html(results_of(data), title=title), "text/html"
    else:
        raise InputError(f"format must be json, csv or html; got {format[:40]!r}.")
    return Response(text, media_type=f"{media}; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}.{format}"'})


def serve(models: Sequence[str], *, host: str = "127.0.0.1", port: int = 8765, data_dir: Union[str, Path] =
          DEFAULT_DATA, token: Optional[str] = None, quiet: bool = False, **options: Any) -> int:
    """Run the explorer with uvicorn until SIGINT / SIGTERM (which cancel the jobs and close the database)."""
    import uvicorn

    host = check_host(host)
    if not is_loopback(host) and token is None:
        token = new_token()
    app = create_app(models, data_dir, token, host=host, **options)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else shown}:{port}/"
    print(f"circuitlab serve: {', '.join(app.state.slots)} at {url}{'?token=' + token if token else ''}", flush=True)
    if app.state.store.interrupted:
        print(f"  {app.state.store.interrupted} run(s) left unfinished by the last server are marked interrupted",
              flush=True)

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            app.state.stopping.set()  # event streams end, so the graceful shutdown does not wait for them
            super().handle_exit(sig, frame)

        @contextlib.contextmanager
        def capture_signals(self):
            # uvicorn's own re-raises SIGTERM after its shutdown, so a clean stop would end as "killed by SIGTERM";
            # here SIGINT and SIGTERM stop the server and the process ends normally (exit code 0)
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

    config = uvicorn.Config(app, host=host, port=port, log_level="warning" if quiet else "info",
                            timeout_graceful_shutdown=5, access_log=not quiet)
    server = Server(config)
    try:
        server.run()
    finally:
        app.state.shutdown()
    if not server.started:
        raise InputError(f"--port {port}: could not listen on {host}:{port} (in use, or not allowed); choose "
                         "another port.")
    return 0
