"""Cached load of a real model before and after the loader's fix, each load in its own child process, interleaved.

* ``before``: what :func:`circuitlab.models.io.load_model_dir` did until this change: build the
  ``HookedTransformer`` with randomly initialised weights, read the safetensors file, copy it into the parameters
  (``load_state_dict``);
* ``after``: :func:`circuitlab.load_model` now (no random initialisation; the loaded tensors become the parameters,
  ``assign=True``).

Each child reports the load's wall time (after ``import circuitlab``) and its peak resident set size
(``ru_maxrss``, the whole process: interpreter, torch, the model). ``--rounds`` rounds of (before, after); medians
and the fp32 weights' size are written to ``benchmarks/results/loading_ab.json`` (or ``--out``). One model at a
time; the model must already be in circuitlab's cache (``circuitlab models --cache NAME``).

    python benchmarks/loading_ab.py --model gemma-3-270m --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "results" / "loading_ab.json"

CHILD = r"""
import json, resource, sys, time
import torch
torch.set_num_threads(1)
import circuitlab as cl
from circuitlab.models.real import ensure_cached
path = ensure_cached(sys.argv[2])
t = time.perf_counter()
if sys.argv[1] == "before":
    from safetensors.torch import load_file
    from transformer_lens import HookedTransformer
    from circuitlab.models.io import config_from_dict, load_tokenizer, read_json_file
    cfg = config_from_dict(read_json_file(path / "config.json", "model config"))
    model = HookedTransformer(cfg, tokenizer=load_tokenizer(path), move_to_device=False)
    model.load_state_dict(load_file(str(path / "model.safetensors")), strict=False)
    model.eval()
else:
    model = cl.load_model(sys.argv[2])
seconds = time.perf_counter() - t
n = sum(p.numel() for p in model.parameters())
print(json.dumps({"seconds": seconds, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "n_params": n}))
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="gemma-3-270m")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="a fast look: one round")
    p.add_argument("--which", nargs="+", default=["before", "after"], choices=["before", "after"],
                   help="run only these (the others' runs are kept from --out)")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    if args.quick:
        args.rounds = 1
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = dict(os.environ, PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""))
    old = json.loads(args.out.read_text()) if args.out.exists() else {}
    runs: dict[str, list[dict]] = {w: [] if w in args.which else old.get("runs", {}).get(w, [])
                                   for w in ("before", "after")}
    load_start = os.getloadavg()
    for _ in range(args.rounds):
        for which in args.which:
            out = subprocess.run([sys.executable, "-c", CHILD, which, args.model], env=env, capture_output=True,
                                 text=True, check=True).stdout
            runs[which].append(json.loads(out.strip().splitlines()[-1]))
            print(which, runs[which][-1], flush=True)
    med = {w: {k: statistics.median(r[k] for r in rs) for k in ("seconds", "peak_rss_mib")} for w, rs in runs.items()}
    n = runs["after"][0]["n_params"]
    result = {"model": args.model, "fp32_weights_mib": n * 4 / 2**20, "median": med, "runs": runs,
              "ratio_seconds_before_over_after": med["before"]["seconds"] / med["after"]["seconds"],
              "date": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count(), "load_average_at_start": load_start,
              "load_average_at_end": os.getloadavg()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(med), f"fp32 weights {result['fp32_weights_mib']:.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
