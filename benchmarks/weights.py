"""Weight circuits of every head of a model: OV / QK top-k rows and copying eigenvalues, against the obvious
alternatives.

For every head of the model (gemma-3-270m by default: 18 layers x 4 heads, a 262,144-token vocabulary) measures,
each step's wall time and peak resident memory above what the process held before it (the loaded model):

- **circuitlab**: :func:`circuitlab.weights.copying_scores` for the OV and the QK circuits of all heads (float64
  eigenvalues through the ``d_head x d_head`` form, from two ``d_model x d_model`` Gram matrices), and the top-``k``
  rows of the OV and QK circuits of every head for ``--rows`` sample tokens (:func:`ov_circuit`,
  :func:`qk_circuit`, streamed over the vocabulary);
- **FactoredMatrix used the obvious way**: ``(model.W_E @ model.OV[l, h] @ model.W_U).eigenvalues`` and
  ``model.W_E @ model.QK[l, h] @ model.W_E.T`` (float32, raw weights: no norm rule) for ``--fm-heads`` heads, the
  time extrapolated to all heads; its top-k needs ``.AB``, the dense ``d_vocab x d_vocab`` matrix, whose size is
  recorded (it does not fit in memory for a 262k vocabulary);
- **dense reference** where it fits (``d_vocab^2`` floats under ``--dense-limit`` bytes): the dense OV matrix of one
  head, its top-k rows and ``torch.linalg.eigvals`` (float64), and the agreement with circuitlab's numbers.

    nice -n 10 python benchmarks/weights.py                       # gemma-3-270m, writes results/weights.json
    python benchmarks/weights.py --model zoo/toy-lm --out /tmp/w.json
"""

from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from circuitlab.models import load_model  # noqa: E402
from circuitlab.weights import circuit_matrix, copying_scores, ov_circuit, qk_circuit  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class Peak:
    """Wall time, CPU time (all threads; what a loaded machine does not inflate much) and peak RSS above the RSS
    at entry (sampled every 5 ms)."""

    def __enter__(self):
        self.base = self.peak = rss()
        self.done = False
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def _watch(self):
        while not self.done:
            self.peak = max(self.peak, rss())
            time.sleep(0.005)

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        self.cpu = time.process_time() - self.c0
        self.done = True
        self.thread.join()
        self.peak = max(self.peak, rss())
        self.above = self.peak - self.base
        return False

    def record(self) -> dict:
        return {"seconds": round(self.seconds, 2), "cpu_seconds": round(self.cpu, 2),
                "peak_rss_above_start_mib": round(self.above / 2**20, 1)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="gemma-3-270m")
    p.add_argument("--rows", type=int, default=32, help="sample tokens whose OV / QK rows get a top-k")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--fm-heads", type=int, default=2, help="heads timed with FactoredMatrix (then extrapolated)")
    p.add_argument("--dense-limit", type=float, default=2 * 2**30)
    p.add_argument("--dense-eig-limit", type=int, default=1024, help="largest d_vocab whose dense eig is timed")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "benchmarks/results/weights.json"))
    p.add_argument("--quick", action="store_true", help="a fast look: zoo/toy-lm, 8 sample rows")
    args = p.parse_args()
    if args.quick:
        args.model, args.rows = "zoo/toy-lm", 8
    torch.set_num_threads(args.threads)

    before = rss()
    model = load_model(args.model)
    cfg = model.cfg
    out: dict = {"model": args.model, "n_layers": cfg.n_layers, "n_heads": cfg.n_heads, "d_model": cfg.d_model,
                 "d_head": cfg.d_head, "d_vocab": cfg.d_vocab, "dtype": str(cfg.dtype), "threads": args.threads,
                 "cpus": os.cpu_count(), "load_average_at_start": os.getloadavg(),
                 "model_rss_mib": round((rss() - before) / 2**20, 1), "rows": args.rows, "k": args.k}
    heads = [(l, h) for l in range(cfg.n_layers) for h in range(cfg.n_heads)]
    gen = torch.Generator().manual_seed(0)
    rows = torch.randperm(cfg.d_vocab, generator=gen)[:args.rows].tolist()

    with torch.no_grad():
        with Peak() as eig:
            ov = copying_scores(model, path="ov", self_top1=False)
            qk = copying_scores(model, path="qk", self_top1=False)
        with Peak() as top:
            for hd in heads:
                ov_circuit(model, hd, tokens=rows, k=args.k)
                qk_circuit(model, hd, tokens=rows, k=args.k)
        out["circuitlab"] = {
            "eigenvalues_all_heads": eig.record(), "top_k_rows_all_heads": top.record(),
            "total_seconds": round(eig.seconds + top.seconds, 2), "total_cpu_seconds": round(eig.cpu + top.cpu, 2),
            "peak_rss_above_model_mib": round(max(eig.above, top.above) / 2**20, 1),
            "ov_copying": {f"L{l}H{h}": round(float(v), 4) for (l, h), v in zip(ov.heads, ov.copying.values)},
            "qk_copying": {f"L{l}H{h}": round(float(v), 4) for (l, h), v in zip(qk.heads, qk.copying.values)},
        }
        print(json.dumps(out["circuitlab"], indent=1)[:600], flush=True)

        n_fm = min(args.fm_heads, len(heads))
        with Peak() as fm:
            fm_scores = []
            for hd in heads[:n_fm]:
                lam = (model.W_E @ model.OV[hd[0], hd[1]] @ model.W_U).eigenvalues.to(torch.complex128)
                lam_qk = (model.W_E @ model.QK[hd[0], hd[1]] @ model.W_E.T).eigenvalues
                fm_scores.append(float(lam.sum().real / lam.abs().sum()))
                del lam_qk
        dense_bytes = cfg.d_vocab * cfg.d_vocab_out * 4
        out["factored_matrix"] = {
            "heads_timed": n_fm, **fm.record(),
            "seconds_extrapolated_all_heads": round(fm.seconds / n_fm * len(heads), 1),
            "cpu_seconds_extrapolated_all_heads": round(fm.cpu / n_fm * len(heads), 1),
            "ov_copying_raw_weights": fm_scores,
            "top_k_needs_dense_AB_bytes": dense_bytes,
            "top_k_dense_AB_fits": dense_bytes <= args.dense_limit,
            "note": "raw weights (no norm rule): its copying scores differ from circuitlab's by the norm weights",
        }
        print(json.dumps(out["factored_matrix"], indent=1), flush=True)

        if dense_bytes <= args.dense_limit:
            hd = heads[-1]
            with Peak() as dense:
                M = circuit_matrix(model, hd, max_memory=int(args.dense_limit)).values.double()
                dtop = M[rows].topk(args.k, dim=-1)
                lam = torch.linalg.eigvals(M) if M.shape[0] <= args.dense_eig_limit else None
                score = float(lam.sum().real / lam.abs().sum()) if lam is not None else None
            ours = ov_circuit(model, hd, tokens=rows, k=args.k)
            mine = copying_scores(model, heads=[hd], self_top1=False).copying.values[0].item()
            out["dense_reference"] = {
                "head": f"L{hd[0]}H{hd[1]}", **dense.record(),
                "top_k_ids_equal": bool((dtop.indices == ours.token_ids).all()),
                "top_k_max_abs_diff": float((dtop.values - ours.values.double()).abs().max()),
                "copying_dense_eig": score, "copying_circuitlab": mine,
            }
        else:
            out["dense_reference"] = {"fits": False, "bytes": dense_bytes}
    out["load_average_at_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k not in ("circuitlab",)}, indent=1))


if __name__ == "__main__":
    main()
