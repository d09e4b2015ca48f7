"""Activation patching speed: circuitlab's batched sweep against transformer_lens.patching, same process.

GPT-2-small shape with random weights, one prompt pair, 2 threads, LogitDiff metric; two sweeps:
``resid_pre`` by (layer, pos) and ``z`` by (layer, head), at 16 and 64 tokens. Prints the timings, the ratio and
the largest difference between the two results, and writes ``benchmarks/results/patching.json``.

TransformerLens runs one full forward pass per patch. Where its full sweep would take too long (64 tokens by
default), it is timed on an evenly spread subset of the patches and its total is extrapolated from the per-patch
cost (patch cost does not depend on which patch it is); the JSON says so, and the maximum difference is then
taken over that subset.

Memory: the peak process RSS above the level before the sweep (psutil, sampled every 5 ms), and the
engine's own estimate of its largest chunk's activations (``peak_chunk_bytes``).

    python benchmarks/patching.py            # full run (several minutes)
    python benchmarks/patching.py --quick    # subsets only, for a fast look
"""

from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")  # TransformerLens's per-patch progress bar (read when tqdm loads)

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

torch.set_num_threads(2)

import pandas as pd  # noqa: E402
import transformer_lens.patching as tlp  # noqa: E402

from circuitlab.metrics import LogitDiff  # noqa: E402
from circuitlab.patching import sweep  # noqa: E402
from circuitlab.testing import gpt2_small_shaped  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "patching.json"


class PeakRSS:
    """Peak resident memory above the starting level while the block runs (sampled by a thread)."""

    def __enter__(self):
        try:
            import psutil
        except ImportError:  # pragma: no cover
            self.proc = None
            return self
        self.proc = psutil.Process()
        self.start = self.peak = self.proc.memory_info().rss
        self.running = True

        def sample():
            while self.running:
                self.peak = max(self.peak, self.proc.memory_info().rss)
                time.sleep(0.005)

        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.proc is not None:
            self.running = False
            self.thread.join()

    @property
    def delta_mib(self):
        return None if self.proc is None else (self.peak - self.start) / 2**20


def tl_sweep(model, corrupted, clean_cache, metric, site, by, subset):
    """TransformerLens's own sweep; on ``subset`` (an index DataFrame) when given."""
    fn = {"resid_pre": tlp.get_act_patch_resid_pre, "z": tlp.get_act_patch_attn_head_out_all_pos}[site]
    if subset is None:
        return fn(model, corrupted, clean_cache, metric)
    setter = {"resid_pre": tlp.layer_pos_patch_setter, "z": tlp.layer_head_vector_patch_setter}[site]
    return tlp.generic_activation_patch(model, corrupted, clean_cache, metric, setter, site, index_df=subset)


def spread_subset(shape, by, n):
    """About ``n`` patches spread evenly over the sweep grid (every layer represented)."""
    rows = [list(t) for t in torch.cartesian_prod(*[torch.arange(s) for s in shape]).tolist()]
    step = max(1, len(rows) // n)
    return pd.DataFrame(rows[::step], columns=list(by))


def bench(model, n_tokens, site, by, subset_size, seed=0):
    gen = torch.Generator().manual_seed(seed + n_tokens)
    clean = torch.randint(0, model.cfg.d_vocab, (1, n_tokens), generator=gen)
    corrupted = clean.clone()
    corrupted[0, n_tokens // 2:] = torch.randint(0, model.cfg.d_vocab, (n_tokens - n_tokens // 2,), generator=gen)
    correct, wrong = torch.randint(0, model.cfg.d_vocab, (2,), generator=gen).tolist()
    metric = LogitDiff(correct, wrong)

    sweep(model, clean[:, :4], corrupted[:, :4], metric, site, by, progress=False, layers=[0])  # warm-up
    with PeakRSS() as mem:
        t = time.perf_counter()
        ours = sweep(model, clean, corrupted, metric, site, by, progress=False)
        ours_s = time.perf_counter() - t

    with torch.no_grad():
        _, clean_cache = model.run_with_cache(clean)
    total = ours.values.numel()
    subset = None if subset_size is None or subset_size >= total else spread_subset(ours.values.shape, by, subset_size)
    with torch.no_grad():
        t = time.perf_counter()
        ref = tl_sweep(model, corrupted, clean_cache, metric, site, by, subset)
        tl_s = time.perf_counter() - t
    if subset is None:
        diff = (ours.values - ref).abs().max().item()
        tl_total, timed = tl_s, total
    else:
        idx = tuple(torch.tensor(subset[c].values) for c in by)
        diff = (ours.values[idx] - ref).abs().max().item()
        tl_total, timed = tl_s * total / len(subset), len(subset)
    row = {
        "n_tokens": n_tokens, "site": site, "by": list(by), "n_patches": total,
        "circuitlab_seconds": round(ours_s, 3),
        "transformer_lens_seconds": round(tl_total, 3),
        "transformer_lens_timed_patches": timed,
        "transformer_lens_extrapolated": subset is not None,
        "speedup": round(tl_total / ours_s, 1),
        "max_abs_diff": diff,
        "metric_range": [float(ours.values.min()), float(ours.values.max())],
        "peak_rss_delta_mib": None if mem.delta_mib is None else round(mem.delta_mib, 1),
        "engine_peak_chunk_mib": round(ours.meta["peak_chunk_bytes"] / 2**20, 1),
    }
    note = f" (TL timed on {timed}/{total} patches, extrapolated)" if subset is not None else ""
    print(f"{site:>9} by {','.join(by):<10} {n_tokens:>3} tokens: circuitlab {ours_s:7.2f} s, "
          f"TransformerLens {tl_total:7.1f} s{note} -> {tl_total / ours_s:5.1f}x; max |diff| {diff:.2e}; "
          f"peak RSS +{row['peak_rss_delta_mib']} MiB, largest chunk ~{row['engine_peak_chunk_mib']} MiB")
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="time TransformerLens on subsets only")
    parser.add_argument("--tokens", type=int, nargs="*", default=[16, 64])
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    model = gpt2_small_shaped(seed=0)
    rows = []
    for n_tokens in args.tokens:
        full = n_tokens <= 16 and not args.quick
        for site, by in (("resid_pre", ("layer", "pos")), ("z", ("layer", "head"))):
            rows.append(bench(model, n_tokens, site, by, None if full else (12 if args.quick else 24)))
    out = {
        "benchmark": "activation patching sweep, circuitlab vs transformer_lens.patching (same process)",
        "model": "GPT-2-small shape, random weights (circuitlab.testing.gpt2_small_shaped)",
        "metric": "LogitDiff at the last position", "batch": 1, "threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores visible, load average at end "
                   f"{os.getloadavg()[0]:.1f}",
        "torch": torch.__version__,
        "note": "speedup = TransformerLens seconds / circuitlab seconds in the same process; where "
                "transformer_lens_extrapolated is true, TransformerLens was timed on an evenly spread subset of "
                "patches and its time scaled by n_patches / timed patches, and max_abs_diff covers that subset.",
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
