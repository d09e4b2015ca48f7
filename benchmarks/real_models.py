"""Loading the real pretrained models: first load (conversion into an empty cache), cached load, peak memory.

For each real model circuitlab loads offline from PyPI (``gemma-3-270m`` and ``smollm2-135m`` through
``circuitlab.load_model``, ``minilm-l6`` through ``circuitlab.load_encoder``), every measurement runs in its own
child process, so the peaks of different loads never mix:

* **first load**: ``$CIRCUITLAB_CACHE`` points at a fresh, empty temporary folder, so the load converts the
  model from its PyPI package (GGUF dequantised to fp32) and writes the cache;
* **cached load** (``--repeats`` times, default 2): the same folder, now holding the converted copy.

``minilm-l6`` is read straight from its package's fp32 safetensors and never cached, so its two kinds of load do
the same work.

Each child reports: ``load_seconds`` (the ``load_model`` / ``load_encoder`` call alone, after ``import torch``
and ``import circuitlab``), ``import_seconds``, ``process_seconds`` (the child's whole life as the parent sees
it: interpreter start, imports, load), and memory from ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` in the
child: ``rss_after_imports_mib`` (the peak before the load starts) and ``peak_rss_mib`` (the peak of the whole
child, load included). The difference ``load_peak_delta_mib`` is what the load added on top of the imports.
For first loads ``convert_seconds`` is the conversion time recorded in the cache's ``card.json``.

Prints a table and writes ``benchmarks/results/real_models.json`` with the machine (CPU count, memory, load
average) and the torch, transformers and transformer-lens versions. The temporary caches are removed
afterwards; the user's own cache is not touched. Timings on a shared machine are noisy: compare them only
within one run.

    python benchmarks/real_models.py                       # all three (the Gemma conversion takes about a minute)
    python benchmarks/real_models.py --models smollm2-135m
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "real_models.json"
MODELS = ("gemma-3-270m", "smollm2-135m", "minilm-l6")


def child(name: str) -> None:
    """Load ``name`` once in this (fresh) process and print the measurements as one JSON line."""
    import resource

    def maxrss_mib() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    t = time.perf_counter()
    import torch

    import circuitlab
    from circuitlab.models.real import cache_dir, real_model

    import_s = time.perf_counter() - t
    before = maxrss_mib()
    spec = real_model(name)
    t = time.perf_counter()
    model = circuitlab.load_encoder(name) if spec.kind == "encoder" else circuitlab.load_model(name)
    load_s = time.perf_counter() - t
    peak = maxrss_mib()
    card = cache_dir(name) / "card.json"
    print(json.dumps({
        "model_type": type(model).__name__,
        "n_params": sum(p.numel() for p in model.parameters()),
        "import_seconds": round(import_s, 2),
        "load_seconds": round(load_s, 2),
        "rss_after_imports_mib": round(before, 1),
        "peak_rss_mib": round(peak, 1),
        "load_peak_delta_mib": round(peak - before, 1),
        "convert_seconds": json.loads(card.read_text()).get("convert_seconds") if card.is_file() else None,
        "torch_threads": torch.get_num_threads(),
    }))


def measure(name: str, cache: Path) -> dict:
    """Run one load of ``name`` in a child process with ``$CIRCUITLAB_CACHE=cache``."""
    env = dict(os.environ, CIRCUITLAB_CACHE=str(cache), TQDM_DISABLE="1")
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", name],
                          env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"loading {name} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_seconds"] = round(wall, 2)
    return out


def machine() -> dict:
    import psutil
    import torch
    import transformers

    return {
        "platform": f"{platform.system()} {platform.machine()}",
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "transformer_lens": importlib.metadata.version("transformer-lens"),
        "circuitlab": importlib.metadata.version("circuitlab"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=MODELS)
    parser.add_argument("--repeats", type=int, default=2, help="cached loads per model (default 2)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="a fast look: minilm-l6 only, one cached load")
    args = parser.parse_args()
    if args.quick:
        args.models, args.repeats = ["minilm-l6"], 1
    if args.child:
        return child(args.child)

    info = machine()
    info["load_average_start"] = round(os.getloadavg()[0], 1)
    rows = []
    for name in args.models:
        cache = Path(tempfile.mkdtemp(prefix="circuitlab-bench-cache-"))
        try:
            first = measure(name, cache)
            print(f"{name}: first load {first['load_seconds']:.1f} s, peak RSS {first['peak_rss_mib']:.0f} MiB",
                  flush=True)
            cached = []
            for _ in range(args.repeats):
                cached.append(measure(name, cache))
                print(f"{name}: cached load {cached[-1]['load_seconds']:.1f} s, "
                      f"peak RSS {cached[-1]['peak_rss_mib']:.0f} MiB", flush=True)
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        rows.append({
            "model": name,
            "model_type": first["model_type"],
            "n_params": first["n_params"],
            "converted_on_first_load": first["convert_seconds"] is not None,
            "first_load": first,
            "cached_loads": cached,
            "cached_load_seconds_min": min(c["load_seconds"] for c in cached) if cached else None,
            "cached_peak_rss_mib_max": max(c["peak_rss_mib"] for c in cached) if cached else None,
        })
    info["load_average_end"] = round(os.getloadavg()[0], 1)

    print()
    header = (f"{'model':<14} {'type':<19} {'first load s':>12} {'convert s':>9} {'first peak MiB':>14} "
              f"{'cached load s':>13} {'cached peak MiB':>15} {'imports MiB':>11}")
    print(header)
    print("-" * len(header))
    for r in rows:
        f = r["first_load"]
        conv = f"{f['convert_seconds']:.1f}" if f["convert_seconds"] is not None else "-"
        cached_s = "/".join(f"{c['load_seconds']:.1f}" for c in r["cached_loads"]) or "-"
        cached_peak = f"{r['cached_peak_rss_mib_max']:.0f}" if r["cached_loads"] else "-"
        print(f"{r['model']:<14} {r['model_type']:<19} {f['load_seconds']:>12.1f} {conv:>9} "
              f"{f['peak_rss_mib']:>14.0f} {cached_s:>13} {cached_peak:>15} {f['rss_after_imports_mib']:>11.0f}")

    out = {
        "benchmark": "loading the real models: first load (conversion into an empty cache) and cached loads, "
                     "each in its own child process",
        "machine": info,
        "note": "load_seconds: the load_model / load_encoder call only (after importing torch and circuitlab); "
                "process_seconds: the child process's whole life (interpreter start, imports, load); "
                "peak_rss_mib: ru_maxrss of the child (its peak resident memory, imports included); "
                "rss_after_imports_mib: ru_maxrss just before the load; load_peak_delta_mib: the difference. "
                "first_load runs with CIRCUITLAB_CACHE set to a fresh empty temporary folder (so the model is "
                "converted from its PyPI package); cached_loads reuse that folder. minilm-l6 is never cached "
                "(read straight from its package), so its first and cached loads do the same work. The machine "
                "is shared with other jobs: timings are noisy. n_params counts the loaded object's parameters "
                "(TransformerLens keeps the unembedding apart from the embedding, so tied embeddings count twice).",
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
