"""Attention as explanation, benchmarked against the straightforward way, in one process.

1. **Head importance** (Michel et al. 2019) for every head, from one forward and one backward pass per batch,
   against masking each head in turn (one forward pass per head over the same data): time, and the Spearman rank
   agreement of the importance with the loss increase of masking a head alone (see
   ``benchmarks/attention_importance.py``, which this calls).
2. **Attention flow** (Abnar & Zuidema 2020) from the last position of a ``--flow-len``-token prompt to every input
   token, against the reference the paper's code computes: the layered attention graph built once as a networkx
   ``DiGraph`` and ``networkx.maximum_flow_value`` (its default preflow-push) called once per input token. circuitlab
   runs networkx's shortest augmenting path on one residual network reused for every token (exact, float64), or
   SciPy's compiled Dinic on capacities in units of ``2**-30`` (``solver="scipy"``). Max difference to the
   reference is reported with the times.

Writes ``benchmarks/results/attention.json`` (or ``--out``) and prints the ratios.

    python benchmarks/attention.py                                   # zoo/toy-lm
    python benchmarks/attention.py --model gemma-3-270m --seqs 8 --repeats 1 \
        --out benchmarks/results/attention_gemma.json
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import networkx as nx  # noqa: E402
import torch  # noqa: E402

from circuitlab.attention.flow import _maps, flow_values, mixed_attention  # noqa: E402
from circuitlab.models import load_model  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from attention_importance import best_time, heldout_tokens  # noqa: E402


def reference_flow(mixed: torch.Tensor, pos: int) -> torch.Tensor:
    """One ``networkx.maximum_flow_value`` per input token on a graph built once (the paper's code's way)."""
    n_layers, n = mixed.shape[0], pos + 1
    graph = nx.DiGraph()
    for layer in range(n_layers):
        for q in range(n):
            for k in range(q + 1):
                cap = float(mixed[layer, q, k])
                if cap > 0:
                    graph.add_edge((layer + 1, q), (layer, k), capacity=cap)
    return torch.tensor([nx.maximum_flow_value(graph, (n_layers, pos), (0, j)) for j in range(n)],
                        dtype=torch.float64)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="zoo/toy-lm")
    parser.add_argument("--seqs", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=32)
    parser.add_argument("--flow-len", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results/attention.json")
    parser.add_argument("--skip-importance", action="store_true")
    parser.add_argument("--quick", action="store_true",
                        help="a fast look: 8 sequences, a 16-token flow prompt, one repeat")
    args = parser.parse_args()
    if args.quick:
        args.seqs, args.flow_len, args.repeats = 8, 16, 1
    result: dict = {"model": args.model, "threads": torch.get_num_threads(), "date": time.strftime("%Y-%m-%d")}
    if not args.skip_importance:
        tmp = ROOT / "benchmarks/results/.attention_importance.tmp.json"
        subprocess.run([sys.executable, str(ROOT / "benchmarks/attention_importance.py"), "--model", args.model,
                        "--seqs", str(args.seqs), "--seq-len", str(args.seq_len), "--repeats", str(args.repeats),
                        "--out", str(tmp.relative_to(ROOT))], check=True, cwd=ROOT)
        imp = json.loads(tmp.read_text())
        tmp.unlink()
        result["importance"] = {k: imp[k] for k in ("sequences", "seq_len", "seconds_importance",
                                                    "seconds_head_by_head", "speedup",
                                                    "spearman_raw_importance_vs_masking",
                                                    "spearman_raw_importance_vs_abs_masking")}
    model = load_model(args.model)
    tokens = heldout_tokens(model, 1, args.flow_len)
    mixed = mixed_attention(_maps(model, tokens, 2**31), 0.5)[:, 0].double()
    pos = tokens.shape[1] - 1
    ref, t_ref = best_time(lambda: reference_flow(mixed, pos), args.repeats)
    ours, t_nx = best_time(lambda: flow_values(mixed, pos, True, "networkx"), args.repeats)
    fast, t_sp = best_time(lambda: flow_values(mixed, pos, True, "scipy"), args.repeats)
    result["flow"] = {"tokens": int(tokens.shape[1]), "layers": model.cfg.n_layers,
                      "seconds_reference_networkx_per_token": t_ref, "seconds_circuitlab_networkx": t_nx,
                      "seconds_circuitlab_scipy": t_sp, "speedup_networkx": t_ref / t_nx,
                      "speedup_scipy": t_ref / t_sp, "max_difference_networkx": float((ours - ref).abs().max()),
                      "max_difference_scipy": float((fast - ref).abs().max())}
    result["load_average_at_end"] = os.getloadavg()[0]
    out = ROOT / args.out
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
