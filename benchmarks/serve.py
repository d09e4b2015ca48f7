"""``circuitlab serve`` measured as a user meets it: a real server process (uvicorn on 127.0.0.1), requests over HTTP.

1. **Warm latency** of the three quick views on a ``--tokens``-token prompt, one request at a time after a warm-up:
   next-token distribution, logit lens, direct logit attribution, and the three in a row (what opening a prompt
   shows); p50 / p95 of the wall time the client sees, and the server's own compute time.
2. **Page**: the bytes of the page and its files (the circuitsvis bundle included) and the time to fetch them.
3. **Concurrency**: ``c`` clients each sending DLA requests, for c = 1, 2, 4, ...: p50 / p95 per c, and the first
   c at which p95 is more than twice the p95 of one client (a model's calls run one at a time: its lock).
4. **Load**: ``--clients`` clients x ``--requests`` requests each, mixing the views (80 %) with job submissions
   (20 %: patching sweeps and causal traces with varied arguments, so some are stored runs, some new jobs, some
   refused with 429 when the queue is full): every status counted (no 5xx is the pass rule), latency percentiles.

Writes ``benchmarks/results/serve.json`` (one entry per model, others kept) and prints a summary.

    python benchmarks/serve.py                                         # zoo/toy-lm
    python benchmarks/serve.py --model gemma-3-270m --repeats 10 --latency-only
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
MAIN = "import sys; from circuitlab.cli import main; sys.exit(main(sys.argv[1:]))"
#: a 20-token prompt on the toy model's BPE (other tokenizers cut it otherwise; the token count is recorded)
PROMPT = "When Mary and John went to the store on the hill, John gave a small book to"
PROMPTS = [PROMPT, "Wexmira has a house in", "When Mary and John went to the market, Mary gave a cup to",
           "The painter and the farmer walked to the garden, and the farmer gave a pen to"]
PATCH = {"clean": "When Mary and John went to the store, John gave a book to",
         "corrupted": "When Mary and John went to the store, Mary gave a book to", "answer": " Mary", "wrong": " John"}


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))]


def summary(xs: list[float]) -> dict:
    return {"n": len(xs), "p50_ms": round(1000 * pct(xs, 50), 2), "p95_ms": round(1000 * pct(xs, 95), 2),
            "p99_ms": round(1000 * pct(xs, 99), 2), "mean_ms": round(1000 * statistics.fmean(xs), 2)} if xs else {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(model: str, threads: int, max_queue: int) -> tuple[subprocess.Popen, str, float]:
    port = free_port()
    data = tempfile.mkdtemp(prefix="circuitlab-serve-bench-")
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", MAIN, "serve", "-m", model, "--port", str(port), "--data", data,
                             "--threads", str(threads), "--max-queue", str(max_queue), "-q"], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(url + "/api/health", timeout=5).status_code == 200:
                return proc, url, time.perf_counter() - t0
        except httpx.TransportError:
            time.sleep(0.25)


def view(client: httpx.Client, name: str, args: dict) -> tuple[int, float, float]:
    t0 = time.perf_counter()
    r = client.post(f"/api/view/{name}", json={"args": args})
    wall = time.perf_counter() - t0
    return r.status_code, wall, (r.json().get("seconds", float("nan")) if r.status_code == 200 else float("nan"))


def warm_latency(url: str, n: int) -> dict:
    out: dict = {}
    with httpx.Client(base_url=url, timeout=120) as c:
        shown = c.post("/api/view/attention", json={"args": {"prompt": PROMPT}}).json()
        out["prompt_tokens"] = len(shown["result"]["meta"]["tokens"])
        for name in ("next_token", "logit_lens", "dla"):
            for _ in range(3):
                view(c, name, {"prompt": PROMPT})
            walls, server = [], []
            for _ in range(n):
                code, wall, sec = view(c, name, {"prompt": PROMPT})
                assert code == 200, code
                walls.append(wall)
                server.append(sec)
            out[name] = {**summary(walls), "server_p50_ms": round(1000 * pct(server, 50), 2)}
        walls = []
        for _ in range(n):
            t0 = time.perf_counter()
            for name in ("next_token", "logit_lens", "dla"):
                view(c, name, {"prompt": PROMPT})
            walls.append(time.perf_counter() - t0)
        out["all_three"] = summary(walls)
    return out


def page(url: str) -> dict:
    files = ["/", "/static/app.js", "/static/app.css", "/static/circuitsvis.js"]
    with httpx.Client(base_url=url, timeout=60) as c:
        t0 = time.perf_counter()
        sizes = {f: len(c.get(f).content) for f in files}
        seconds = time.perf_counter() - t0
    return {"bytes": sizes, "total_bytes": sum(sizes.values()), "fetch_all_ms": round(1000 * seconds, 1),
            "circuitsvis_share": round(sizes["/static/circuitsvis.js"] / sum(sizes.values()), 3)}


def concurrency(url: str, levels: list[int], per_client: int) -> dict:
    rows = []
    for c in levels:
        walls: list[float] = []
        lock = threading.Lock()

        def client() -> None:
            with httpx.Client(base_url=url, timeout=300) as h:
                for _ in range(per_client):
                    code, wall, _ = view(h, "dla", {"prompt": PROMPT})
                    with lock:
                        walls.append(wall)

        threads = [threading.Thread(target=client) for _ in range(c)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rows.append({"clients": c, **summary(walls)})
    base = rows[0]["p95_ms"]
    doubled = next((r["clients"] for r in rows if r["p95_ms"] > 2 * base), None)
    return {"levels": rows, "p95_doubles_at_clients": doubled}


def load(url: str, clients: int, requests: int, seed: int) -> dict:
    statuses: dict[str, int] = {}
    view_walls: list[float] = []
    job_walls: list[float] = []
    lock = threading.Lock()
    t_start = time.perf_counter()

    def client(k: int) -> None:
        rng = random.Random(seed * 1000 + k)
        with httpx.Client(base_url=url, timeout=300) as h:
            for _ in range(requests):
                t0 = time.perf_counter()
                if rng.random() < 0.8:
                    name = rng.choice(["next_token", "logit_lens", "dla", "attention"])
                    r = h.post(f"/api/view/{name}", json={"args": {"prompt": rng.choice(PROMPTS)}})
                    bucket = view_walls
                elif rng.random() < 0.5:
                    args = {**PATCH, "by": rng.choice(["layer,pos", "layer", "layer,head"]),
                            "site": rng.choice(["resid_pre", "z"]) if rng.random() < 0.5 else "resid_pre"}
                    if args["site"] == "resid_pre" and "head" in args["by"]:
                        args["site"] = "z"
                    r = h.post("/api/jobs", json={"analysis": "patch", "args": args})
                    bucket = job_walls
                else:
                    r = h.post("/api/jobs", json={"analysis": "trace", "args": {
                        "prompt": "Wexmira has a house in", "subject": "Wexmira", "answer": " Brindlecote",
                        "samples": 3, "seed": rng.randrange(40)}})
                    bucket = job_walls
                wall = time.perf_counter() - t0
                with lock:
                    statuses[str(r.status_code)] = statuses.get(str(r.status_code), 0) + 1
                    bucket.append(wall)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    total = time.perf_counter() - t_start
    five = sum(v for k, v in statuses.items() if k.startswith("5"))
    return {"clients": clients, "requests_each": requests, "statuses": statuses, "server_errors_5xx": five,
            "refused_429": statuses.get("429", 0), "seconds": round(total, 1),
            "requests_per_s": round(clients * requests / total, 1), "views": summary(view_walls),
            "job_submissions": summary(job_walls), "passed": five == 0}


def in_process(model_name: str, n: int) -> dict:
    """The views' own computations called in this process (no HTTP), timed as wall and as this process' CPU time:
    on a busy shared machine the CPU time is what an idle core would take (one torch thread)."""
    import torch

    from circuitlab.models import load_model
    from circuitlab.serve.analyses import ANALYSES, canonical_args

    torch.set_num_threads(1)
    model = load_model(model_name)
    out = {"torch_threads": 1}
    for name in ("next_token", "logit_lens", "dla"):
        a = ANALYSES[name]
        args = canonical_args(a, {"prompt": PROMPT})
        a.run(model, args, max_tokens=256, max_memory=512 * 2**20)
        walls, cpus = [], []
        for _ in range(n):
            w0, c0 = time.perf_counter(), time.process_time()
            a.run(model, args, max_tokens=256, max_memory=512 * 2**20)
            walls.append(time.perf_counter() - w0)
            cpus.append(time.process_time() - c0)
        out[name] = {"wall": summary(walls), "cpu": summary(cpus)}
    out["all_three_cpu_p50_ms"] = round(sum(out[n]["cpu"]["p50_ms"] for n in ("next_token", "logit_lens", "dla")), 1)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="zoo/toy-lm")
    p.add_argument("--threads", type=int, default=2, help="the server's torch threads (default 2: the machine)")
    p.add_argument("--repeats", type=int, default=30, help="timed requests per view (default 30)")
    p.add_argument("--levels", default="1,2,4,8,16", help="concurrent clients to try (default 1,2,4,8,16)")
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--requests", type=int, default=50)
    p.add_argument("--max-queue", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--latency-only", action="store_true", help="measure warm latency and the page only (a real "
                                                                "model on a busy machine)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "serve.json"))
    p.add_argument("--in-process", action="store_true", help="time the views' computations in this process "
                                                              "(wall and CPU time, one torch thread), no server")
    args = p.parse_args()

    if args.in_process:
        entry = {"load_average_at_start": os.getloadavg()[0]}
        entry.update(in_process(args.model, args.repeats))
        entry["load_average_at_end"] = os.getloadavg()[0]
        print(json.dumps(entry, indent=1))
        out = Path(args.out)
        results = json.loads(out.read_text()) if out.exists() else {}
        results.setdefault(args.model, {})["in_process"] = entry
        out.write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {out}")
        return

    proc, url, started = start(args.model, args.threads, args.max_queue)
    try:
        entry = {"model": args.model, "server_threads": args.threads, "cpus": os.cpu_count(),
                 "load_average_at_start": os.getloadavg()[0], "start_seconds": round(started, 1)}
        entry["warm_latency"] = warm_latency(url, args.repeats)
        print(json.dumps(entry["warm_latency"], indent=1), flush=True)
        entry["page"] = page(url)
        print(json.dumps(entry["page"]), flush=True)
        if not args.latency_only:
            entry["concurrency"] = concurrency(url, [int(x) for x in args.levels.split(",")], 10)
            print(json.dumps(entry["concurrency"]), flush=True)
            entry["load"] = load(url, args.clients, args.requests, args.seed)
            print(json.dumps(entry["load"]), flush=True)
        entry["load_average_at_end"] = os.getloadavg()[0]
        with httpx.Client(base_url=url, timeout=30) as c:
            entry["health_after"] = c.get("/api/health").json()
    finally:
        proc.terminate()
        proc.wait(60)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {}
    results[args.model] = entry
    results["command"] = "python benchmarks/serve.py [--model NAME ...]"
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
