"""Scaling: the same analyses in one process and on Ray workers (circuitlab.distributed), in the same process.

Two workloads, each run three ways on this machine: in one process (``executor=None``, 2 torch threads), on one
Ray worker holding 2 CPUs, and on two Ray workers holding 1 CPU each:

- ``sweep``: activation patching, ``resid_pre`` by (layer, pos), GPT-2-small shape with random weights (saved to a
  temporary directory, which every worker loads), 8 prompt pairs of 16 random tokens, LogitDiff of two token ids;
  shards are layers (interleaved), so at most 12 workers can share it;
- ``collect``: probing activations of zoo/toy-lm at every layer for 1,000 template sentences; shards are whole
  batches (as one process cuts them), at most one per batch.

One process is timed before and after the Ray runs and the faster run kept (both are in the JSON): a run that
shares the 2 cores with anything else can take several times as long. For Ray, the first call starts the actors (each imports torch and loads its replica) and the second call is timed
as the steady state; both are reported. The largest difference from the one-process result is reported too.

The projection to N workers (one machine each, or one GPU each) uses the measured one-worker figures:
``T(N) = overhead + work / N`` where ``work`` is the summed shard time of the one-worker run and ``overhead`` its
steady wall time minus that work (sending shards and results, gathering); it ignores the imbalance of uneven shards
(later layers are cheaper to patch) and caps N at the number of shards the workload has. On this 2-core machine
two workers cannot beat one process that already uses both cores: the figures here measure the overhead, which is
what the projection needs.

    python benchmarks/scale.py            # both workloads (a few minutes on 2 cores)
    python benchmarks/scale.py --quick    # smaller workloads, for a fast look

Writes ``benchmarks/results/scale.json``.
"""

from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

torch.set_num_threads(2)

import circuitlab as cl  # noqa: E402
from circuitlab import distributed, patching, probing  # noqa: E402
from circuitlab.metrics import LogitDiff  # noqa: E402
from circuitlab.testing import gpt2_small_shaped  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "scale.json"
PROJECT = (1, 2, 4, 8, 16, 64)


def _max_diff(a, b) -> float:
    if isinstance(a, dict):
        return max(float((a[h] - b[h]).abs().max()) for h in a)
    return float((a - b).abs().max())


def workloads(quick: bool, folder: Path) -> dict:
    gpt2 = gpt2_small_shaped(seed=0)
    cl.save_model(gpt2, folder / "gpt2-shape")
    gen = torch.Generator().manual_seed(0)
    n_pairs = 2 if quick else 8
    clean = torch.randint(0, gpt2.cfg.d_vocab, (n_pairs, 16), generator=gen)
    corrupted = clean.clone()
    corrupted[:, 3] = torch.randint(0, gpt2.cfg.d_vocab, (n_pairs,), generator=gen)
    metric = LogitDiff(11, 12)
    del gpt2
    gpt2 = cl.load_model(folder / "gpt2-shape")  # loaded once here; workers reload the directory it came from
    toy = cl.load_model("zoo/toy-lm")
    sentences = probing.template_sentences(200 if quick else 1000, seed=0)

    def sweep(executor):
        res = patching.sweep(gpt2, clean, corrupted, metric, "resid_pre", ("layer", "pos"),
                             progress=False, executor=executor)
        return res.values, res.values.shape[0]

    def collect(executor):
        acts = probing.collect(toy, sentences, cache=False, progress=False, batch_size=32,
                               executor=executor)
        return acts.acts, None

    return {"sweep": (sweep, f"resid_pre by (layer, pos), GPT-2-small shape (random), {n_pairs} pairs x 16 tokens",
                      12),
            "collect": (collect, f"probing.collect, zoo/toy-lm, every layer, {len(sentences)} template sentences, "
                                 "batches of 32", -(-len(sentences) // 32))}


def run(quick: bool) -> dict:
    import ray

    out = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                       "ray": ray.__version__, "load_average_at_start": os.getloadavg()},
           "workloads": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (fn, what, max_shards) in workloads(quick, Path(tmp)).items():
            row = {"what": what, "max_shards": max_shards}
            fn(None)  # warm-up: the model's first load, conversion caches
            t0 = time.perf_counter()
            reference, _ = fn(None)
            row["one_process_runs_s"] = [time.perf_counter() - t0]
            for workers, cpus in ((1, 2), (2, 1)):
                with distributed.RayExecutor(workers, cpus_per_worker=cpus, init={"num_cpus": 2}) as ex:
                    t0 = time.perf_counter()
                    fn(ex)
                    first = time.perf_counter() - t0
                    before = len(ex.shard_seconds)
                    t0 = time.perf_counter()
                    values, _ = fn(ex)
                    steady = time.perf_counter() - t0
                    shards = ex.shard_seconds[before:]
                    row[f"ray_{workers}"] = {"cpus_per_worker": cpus, "first_call_s": first,
                                             "startup_s": ex.startup_seconds, "steady_s": steady,
                                             "shard_s": shards, "work_s": sum(shards),
                                             "max_diff_vs_one_process": _max_diff(reference, values)}
                print(f"  ray x{workers} ({cpus} cpu each): first call {first:.2f} s (actor start-up "
                      f"{row[f'ray_{workers}']['startup_s']:.2f} s), steady {steady:.2f} s, shards "
                      f"{', '.join(f'{s:.2f}' for s in shards)} s, max diff {row[f'ray_{workers}']['max_diff_vs_one_process']:.1e}")
            t0 = time.perf_counter()
            fn(None)
            row["one_process_runs_s"].append(time.perf_counter() - t0)
            row["one_process_s"] = min(row["one_process_runs_s"])
            print(f"{name}: one process {row['one_process_s']:.2f} s (the faster of a run before and one after the "
                  f"Ray runs: {', '.join(f'{t:.2f}' for t in row['one_process_runs_s'])} s; {what})")
            one = row["ray_1"]
            overhead = max(0.0, one["steady_s"] - one["work_s"])
            row["overhead_s"] = overhead
            row["ratio_ray1_vs_one_process"] = one["steady_s"] / row["one_process_s"]
            row["ratio_ray2_vs_one_process"] = row["ray_2"]["steady_s"] / row["one_process_s"]
            row["projection"] = {n: overhead + one["work_s"] / min(n, max_shards) for n in PROJECT}
            print(f"  overhead per call {overhead:.2f} s; projected seconds on N workers: "
                  + ", ".join(f"{n}: {t:.2f}" for n, t in row["projection"].items())
                  + f" (at most {max_shards} shards)")
            out["workloads"][name] = row
    out["load_average_at_end"] = os.getloadavg()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smaller workloads")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    out = run(args.quick)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
