"""torch threads under contention: one engine (exact activation patching) with 1 and 2 threads, alone, beside a
busy process, and two at once (as pytest-xdist ``-n 2`` runs them).

Each measurement runs in its own child process (``--child``): it loads the model, builds the workload, runs it
once to warm up, then times ``--repeats`` runs and reports their median. The workload is
:func:`circuitlab.patching.sweep` of ``resid_pre`` by (layer, pos) with a ``LogitDiff`` metric on ``--pairs``
prompt pairs of ``--tokens`` random tokens. Scenarios, each with 1 and then 2 torch threads in the child(ren),
interleaved (1, 2, 1, 2, ... for ``--rounds`` rounds; the median over rounds is reported):

* ``alone``: one child;
* ``busy``: one child while another process keeps one core busy (a one-thread float32 matmul loop: another
  user's job);
* ``pair``: two children started together, each with the same thread count (two pytest-xdist workers, or two
  Ray workers on one node); the time reported is the slower child's.

The ratio is ``seconds with 2 threads / seconds with 1 thread`` (above 1: the second thread costs time). Writes
``benchmarks/results/threads.json`` (or ``--out``) with the machine's usable cores and load average, and what
:func:`circuitlab.core.default_threads` chooses there.

    python benchmarks/threads.py                       # zoo/toy-lm
    python benchmarks/threads.py --model gpt2-small-shaped --pairs 2 --tokens 16
    python benchmarks/threads.py --quick
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

OUT = Path(__file__).resolve().parent / "results" / "threads.json"
BUSY = ("import torch\ntorch.set_num_threads(1)\na = torch.randn(384, 384)\n"
        "while True:\n    a = torch.tanh(a @ a) \n")


def child(model_name: str, threads: int, pairs: int, tokens: int, repeats: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    from circuitlab import load_model
    from circuitlab.metrics import LogitDiff
    from circuitlab.patching import sweep
    from circuitlab.testing import gpt2_small_shaped

    model = gpt2_small_shaped() if model_name == "gpt2-small-shaped" else load_model(model_name)
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(1, min(model.cfg.d_vocab, 1000), (pairs, tokens), generator=g)
    corrupted = clean.clone()
    corrupted[:, tokens // 2] = torch.randint(1, min(model.cfg.d_vocab, 1000), (pairs,), generator=g)
    metric = LogitDiff(clean[:, 1].tolist(), ((clean[:, 1] + 1) % model.cfg.d_vocab).tolist())

    def run():
        return sweep(model, clean, corrupted, metric, "resid_pre", ("layer", "pos"))

    run()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return {"threads": torch.get_num_threads(), "seconds": statistics.median(times), "runs": times}


def spawn(args, threads: int) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--child", str(threads), "--model", args.model, "--pairs", str(args.pairs),
           "--tokens", str(args.tokens), "--repeats", str(args.repeats)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), CIRCUITLAB_THREADS=str(threads))
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)


def result(proc: subprocess.Popen) -> float:
    out, _ = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"child failed ({proc.returncode})")
    return json.loads(out.strip().splitlines()[-1])["seconds"]


def scenario(args, name: str) -> dict:
    busy = None
    if name == "busy":
        busy = subprocess.Popen([sys.executable, "-c", BUSY], env=dict(os.environ, OMP_NUM_THREADS="1"))
        time.sleep(1.0)
    try:
        seconds: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(args.rounds):
            for threads in (1, 2):
                procs = [spawn(args, threads) for _ in range(2 if name == "pair" else 1)]
                seconds[threads].append(max(result(p) for p in procs))
    finally:
        if busy is not None:
            busy.terminate()
            busy.wait()
    med = {t: statistics.median(s) for t, s in seconds.items()}
    row = {"scenario": name, "seconds_1_thread": med[1], "seconds_2_threads": med[2],
           "ratio_2_over_1": med[2] / med[1], "runs": {str(k): v for k, v in seconds.items()}}
    print(f"{name:<6} 1 thread {med[1]:7.3f} s   2 threads {med[2]:7.3f} s   2/1 = {row['ratio_2_over_1']:.2f}",
          flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="zoo/toy-lm")
    p.add_argument("--pairs", type=int, default=8)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3, help="timed runs per child (median)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per scenario (median)")
    p.add_argument("--scenarios", nargs="+", default=["alone", "busy", "pair"])
    p.add_argument("--quick", action="store_true", help="a fast look: 2 pairs, one round of each scenario")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args.model, args.child, args.pairs, args.tokens, args.repeats)))
        return 0
    if args.quick:
        args.pairs, args.rounds, args.repeats = 2, 1, 2
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    from circuitlab.core import default_threads, usable_cores

    out = {"benchmark": "torch threads under contention: activation patching sweep, 1 vs 2 threads",
           "model": args.model, "workload": f"sweep resid_pre by layer/pos, {args.pairs} pairs x {args.tokens} tokens",
           "usable_cores": usable_cores(), "default_threads_here": default_threads(),
           "date": time.strftime("%Y-%m-%d %H:%M"), "load_average_at_start": os.getloadavg(), "rows": []}
    for name in args.scenarios:
        out["rows"].append(scenario(args, name))
    out["load_average_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
