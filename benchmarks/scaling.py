"""How activation patching's time and memory grow: prompt length x prompt pairs, with fitted growth exponents.

:func:`circuitlab.patching.sweep` of ``resid_pre`` by (layer, pos) with a ``LogitDiff`` metric (the workload whose
size grows with both: one patch per layer and position, each run over every pair) on random token prompts of
``--lengths`` tokens and ``--pairs`` prompt pairs (the corrupted prompt differs at the middle position), for each
model in ``--models``. Each cell runs once after one warm-up; memory is the peak resident set size above the level
before the call (sampled every 5 ms by a thread) and the engine's own estimate of its largest pass
(``peak_chunk_bytes``). The growth exponent is the least-squares slope of log(seconds) against log(length) at each
pair count (and against log(pairs) at each length): time ~ length^a x pairs^b, so a user can predict a run's cost
from a small one. One thread. Writes ``benchmarks/results/scaling.json`` (or ``--out``).

    python benchmarks/scaling.py                                   # zoo/toy-lm, 16/64/256 tokens x 1/16/64 pairs
    python benchmarks/scaling.py --models gpt2-small-shaped --lengths 16 64 --pairs 1 16
"""

from __future__ import annotations

import argparse
import json
import math
import os
import threading
import time
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parent / "results" / "scaling.json"


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(fn):
    start, peak, done = rss_mib(), [0.0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], rss_mib())
            time.sleep(0.005)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t = time.perf_counter()
    try:
        value = fn()
    finally:
        seconds = time.perf_counter() - t
        done.set()
        th.join()
    return value, seconds, max(0.0, max(peak[0], rss_mib()) - start)


def slope(xs, ys) -> float | None:
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if y and y > 0]
    if len(pts) < 2:
        return None
    mx, my = sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return round(sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx, 2) if sxx else None


def run_model(name: str, lengths, pairs) -> dict:
    from circuitlab import load_model
    from circuitlab.metrics import LogitDiff
    from circuitlab.patching import sweep
    from circuitlab.testing import gpt2_small_shaped

    model = gpt2_small_shaped() if name == "gpt2-small-shaped" else load_model(name)
    vocab = min(model.cfg.d_vocab, 1000)
    rows = []
    for n_pairs in pairs:
        for length in lengths:
            if length > model.cfg.n_ctx:
                continue
            g = torch.Generator().manual_seed(length * 1000 + n_pairs)
            clean = torch.randint(1, vocab, (n_pairs, length), generator=g)
            corrupted = clean.clone()
            corrupted[:, length // 2] = (corrupted[:, length // 2] + 1) % vocab
            metric = LogitDiff(clean[:, 1].tolist(), ((clean[:, 1] + 1) % vocab).tolist())

            def call():
                return sweep(model, clean, corrupted, metric, "resid_pre", ("layer", "pos"))

            call() if length * n_pairs <= 1024 else None  # warm-up on the small cells only
            res, seconds, peak = measure(call)
            row = {"tokens": length, "pairs": n_pairs, "patches": int(res.values.numel()), "seconds": seconds,
                   "peak_rss_delta_mib": round(peak, 1),
                   "engine_peak_chunk_mib": round(res.meta.get("peak_chunk_bytes", 0) / 2**20, 1)}
            rows.append(row)
            print(f"{name:<18} {length:>4} tokens {n_pairs:>3} pairs  {seconds:8.2f} s  peak +{peak:7.1f} MiB  "
                  f"chunk {row['engine_peak_chunk_mib']:7.1f} MiB", flush=True)
    fits = {"time_vs_tokens": {}, "time_vs_pairs": {}, "memory_vs_tokens": {}}
    for n_pairs in pairs:
        rs = [r for r in rows if r["pairs"] == n_pairs]
        fits["time_vs_tokens"][str(n_pairs)] = slope([r["tokens"] for r in rs], [r["seconds"] for r in rs])
        fits["memory_vs_tokens"][str(n_pairs)] = slope([r["tokens"] for r in rs], [r["peak_rss_delta_mib"] for r in rs])
    for length in lengths:
        rs = [r for r in rows if r["tokens"] == length]
        fits["time_vs_pairs"][str(length)] = slope([r["pairs"] for r in rs], [r["seconds"] for r in rs])
    return {"model": name, "n_layers": model.cfg.n_layers, "d_model": model.cfg.d_model, "rows": rows,
            "exponents": fits}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["zoo/toy-lm"])
    p.add_argument("--lengths", type=int, nargs="+", default=[16, 64, 256])
    p.add_argument("--pairs", type=int, nargs="+", default=[1, 16, 64])
    p.add_argument("--quick", action="store_true", help="a fast look: 16/64 tokens x 1/16 pairs")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    if args.quick:
        args.lengths, args.pairs = [16, 64], [1, 16]
    torch.set_num_threads(1)
    out = json.loads(args.out.read_text()) if args.out.exists() else {}
    meta = {"workload": "patching.sweep resid_pre by (layer, pos), LogitDiff, random tokens", "threads": 1,
            "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M"), "load_average_at_start": os.getloadavg()}
    models = out.setdefault("models", {})
    for name in args.models:
        models[name] = {**run_model(name, args.lengths, args.pairs), **meta, "load_average_at_end": os.getloadavg()}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({n: m["exponents"] for n, m in models.items()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
