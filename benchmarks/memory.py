"""Peak memory of the analyses that loop over data, for growing amounts of data, under one ``max_memory``.

Every analysis that reads many sequences, prompt pairs or examples cuts them into batches that fit its
``max_memory`` (default 512 MiB; see ``circuitlab.core.check_max_memory``), so its peak memory should stay flat as
the data grows: only the results grow (one number per sequence, patch or example). This measures that.

Each (analysis, size) runs in its own child process on ``zoo/toy-lm`` (4 layers, d_model 128, 512 MLP neurons,
n_ctx 128). The child loads the model, builds its inputs, then samples its resident set size every 2 ms on a
thread while the analysis runs; ``peak_delta_mib`` is the highest sample minus the RSS just before the call (the
model, the inputs and the imports excluded). The cases:

* ``head_scores``: induction scores on ``n`` repeated random sequences of 2x42 tokens (+ BOS);
* ``ablation_effect``: the in-context loss with two heads mean-ablated, on ``n`` such sequences;
* ``sweep``: exact activation patching of ``resid_pre`` by (layer, pos) on ``n`` prompt pairs of 10 tokens, with
  a ``LogitDiff`` metric (one answer pair per prompt);
* ``key_examples``: the top-10 contexts of one MLP neuron over ``n`` lines of 12 to 60 tokens.

``--max-memory`` sets the bound passed to each analysis (default 512 MiB), ``--compat`` leaves the argument out
for a run against a version of circuitlab without it. Prints a table and writes ``benchmarks/results/memory.json``
with the machine and versions.

    python benchmarks/memory.py                          # every case, sizes from small to the issue's sizes
    python benchmarks/memory.py --cases sweep --sizes 250 1000 4000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

SIZES = {"head_scores": [100, 1000, 4000, 8000], "ablation_effect": [100, 1000, 4000],
         "sweep": [250, 1000, 4000], "key_examples": [1000, 10000, 40000]}
QUICK_SIZES = {"head_scores": [50, 200], "ablation_effect": [20, 80], "sweep": [20, 80], "key_examples": [200, 800]}

CHILD = r"""
import json, os, sys, threading, time
import torch
import circuitlab as cl
from circuitlab import induction, patching, ffn
from circuitlab.metrics import LogitDiff

case, n, max_memory = sys.argv[1], int(sys.argv[2]), sys.argv[3]
kw = {} if max_memory == "none" else {"max_memory": int(max_memory)}
torch.manual_seed(0)
model = cl.load_model("zoo/toy-lm")

def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

if case == "head_scores":
    run = lambda: induction.head_scores(model, "induction", n_seqs=n, **kw)
elif case == "ablation_effect":
    run = lambda: induction.ablation_effect(model, [(1, 2), (2, 0)], "mean", n_seqs=n, **kw)
elif case == "sweep":
    gen = torch.Generator().manual_seed(0)
    clean = torch.randint(100, 4000, (n, 10), generator=gen)
    clean[:, 0] = 0
    corrupted = clean.clone()
    corrupted[:, 3] = torch.randint(100, 4000, (n,), generator=gen)
    correct = torch.randint(100, 4000, (n,), generator=gen)
    metric = LogitDiff(correct=correct.tolist(), wrong=(correct + 1).tolist())  # never the same token
    run = lambda: patching.sweep(model, clean, corrupted, metric, "resid_pre", progress=False, **kw)
elif case == "key_examples":
    gen = torch.Generator().manual_seed(0)
    lines = [torch.randint(100, 4000, (int(torch.randint(12, 61, (1,), generator=gen)),), generator=gen)
             for _ in range(n)]
    run = lambda: ffn.key_examples(model, lines, 2, 17, progress=False, **kw)
else:
    raise SystemExit(f"unknown case {case}")

before = rss()
peak = [before]
done = threading.Event()
def sample():
    while not done.is_set():
        peak[0] = max(peak[0], rss())
        time.sleep(0.002)
thread = threading.Thread(target=sample, daemon=True)
thread.start()
t0 = time.perf_counter()
result = run()
seconds = time.perf_counter() - t0
done.set(); thread.join()
peak[0] = max(peak[0], rss())
meta = getattr(result, "meta", {}) or {}
print(json.dumps({"seconds": seconds, "rss_before_mib": before / 2**20, "peak_mib": peak[0] / 2**20,
                  "peak_delta_mib": (peak[0] - before) / 2**20, "prompt_parts": meta.get("prompt_parts")}))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="+", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--sizes", nargs="+", type=int, help="the same sizes for every case (default: per case)")
    ap.add_argument("--max-memory", type=int, default=512 * 2**20, help="bytes (default 512 MiB)")
    ap.add_argument("--compat", action="store_true", help="do not pass max_memory (an older circuitlab)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "memory.json"))
    ap.add_argument("--quick", action="store_true", help="a fast look: two small sizes of each case")
    args = ap.parse_args()

    rows = []
    print(f"{'case':<16} {'n':>7} {'seconds':>8} {'peak delta MiB':>15} {'prompt parts':>13}")
    for case in args.cases:
        for n in args.sizes or (QUICK_SIZES if args.quick else SIZES)[case]:
            limit = "none" if args.compat else str(args.max_memory)
            proc = subprocess.run([sys.executable, "-c", CHILD, case, str(n), limit], capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{case:<16} {n:>7}  failed: {proc.stderr.strip().splitlines()[-1][:120]}")
                rows.append({"case": case, "n": n, "error": proc.stderr.strip().splitlines()[-1]})
                continue
            row = {"case": case, "n": n, **json.loads(proc.stdout.strip().splitlines()[-1])}
            rows.append(row)
            parts = row["prompt_parts"] if row["prompt_parts"] is not None else "-"
            print(f"{case:<16} {n:>7} {row['seconds']:8.1f} {row['peak_delta_mib']:15.0f} {parts:>13}")

    import importlib.metadata

    out = {
        "benchmark": "peak memory of data-looping analyses vs data size (zoo/toy-lm)",
        "max_memory_bytes": None if args.compat else args.max_memory,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_average": os.getloadavg()},
        "versions": {p: importlib.metadata.version(p) for p in ("torch", "transformer-lens", "circuitlab")},
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
