"""Attribution graphs: build + prune time and peak memory against prompt length, batched vs one backward per node.

    nice -n 10 python benchmarks/graphs.py [--lengths 16 64 128] [--out benchmarks/results/graphs.json]

On ``zoo/toy-lm`` (4 layers, d_model 128, n_ctx 128: a 256-token prompt does not fit it, so the longest is 128)
with its shipped transcoders (``toy-lm/tc-0..3``, TopK k = 16: 64 active features per position), prompts cut from
the model's held-out text (``heldout.txt``). Each length runs in a fresh subprocess (one thread) so that its peak RSS
(``ru_maxrss``) is its own: :func:`circuitlab.graphs.attribution_graph` (batched backward passes, default
``max_memory``) then :func:`circuitlab.graphs.prune_graph` (0.8 / 0.98); then the reference,
:func:`circuitlab.graphs.attribution_graph_reference` (one backward pass per target node, the same code path with
``B = 1``), in the same process: in full where it takes under ``--full-under`` rows, otherwise on ``--sample``
rows spread over the layers, its per-row time multiplied by the number of rows (said in the output:
``reference_extrapolated``). The rows it computed are compared with the batched graph's (max |difference|).

circuit-tracer itself cannot be compared here: ``pip install --dry-run circuit-tracer`` (offline, against the
project's pins) fails (see ``circuit_tracer_install`` in the output).
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

ONE = r"""
import json, resource, sys, time, torch
torch.set_num_threads(1)
from pathlib import Path
import circuitlab as cl
from circuitlab.graphs import attribution_graph, attribution_graph_reference, prune_graph
n, sample, full_under = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
model = cl.load_model("zoo/toy-lm")
text = (Path(cl.__file__).parent / "zoo" / "weights" / "toy-lm" / "heldout.txt").read_text()
ids = model.to_tokens(text.replace("\n", " "))[0][:n].tolist()
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
t0 = time.perf_counter()
g = attribution_graph(model, "toy-lm", ids)
t1 = time.perf_counter()
pr = prune_graph(g)
t2 = time.perf_counter()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
n_rows = g.slices()["feature"].stop + (g.n_nodes - g.slices()["logit"].start)
targets = [i for i in range(g.n_nodes) if g.kinds[i] in ("feature", "logit")]
full = n_rows <= full_under
rows = targets if full else targets[:: max(1, len(targets) // sample)][:sample]
t3 = time.perf_counter()
ref = attribution_graph_reference(model, "toy-lm", ids, rows=rows)
t4 = time.perf_counter()
per_row = (t4 - t3) / len(rows)
print(json.dumps({"tokens": len(ids), "nodes": g.n_nodes, "target_rows": n_rows,
                  "features": g.slices()["feature"].stop, "batch": g.meta["batch"],
                  "backward_passes": g.meta["backward_passes"], "build_seconds": t1 - t0, "prune_seconds": t2 - t1,
                  "build_and_prune_seconds": t2 - t0, "peak_rss_bytes": peak, "rss_before_bytes": base,
                  "reference_rows_run": len(rows), "reference_seconds_run": t4 - t3,
                  "reference_seconds_all_rows": per_row * n_rows, "reference_extrapolated": not full,
                  "speedup_build": per_row * n_rows / (t1 - t0),
                  "max_abs_difference": float((g.adjacency[rows] - ref.adjacency[rows]).abs().max()),
                  "scores": pr.scores}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lengths", type=int, nargs="+", default=[16, 64, 128])
    p.add_argument("--sample", type=int, default=96)
    p.add_argument("--full-under", type=int, default=1100)
    p.add_argument("--out", default="benchmarks/results/graphs.json")
    args = p.parse_args()
    runs = []
    for n in args.lengths:
        out = subprocess.run([sys.executable, "-c", ONE, str(n), str(args.sample), str(args.full_under)],
                             capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps({k: v for k, v in runs[-1].items() if k != "scores"}), flush=True)
    try:
        dry = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "circuit-tracer"],
                             capture_output=True, text=True, timeout=300)
        lines = (dry.stdout + dry.stderr).strip().splitlines()
        install = {"returncode": dry.returncode, "would_install": [x for x in lines if x.startswith("Would install")],
                   "errors": [x for x in lines if x.startswith("ERROR")][-3:]}
    except subprocess.TimeoutExpired:
        install = {"returncode": None, "tail": ["pip install --dry-run circuit-tracer: no answer in 300 s"]}
    result = {"what": "attribution graph build + prune vs one backward per node, zoo/toy-lm, transcoders toy-lm/tc-*",
              "command": "nice -n 10 python benchmarks/graphs.py", "machine": platform.platform(),
              "python": platform.python_version(), "threads": 1,
              "runs": runs, "circuit_tracer_install": install}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
