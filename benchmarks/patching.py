"""Activation patching speed: circuitlab's batched sweep against transformer_lens.patching, same process.

GPT-2-small shape with random weights, one prompt pair, 2 threads, LogitDiff metric; two sweeps:
``resid_pre`` by (layer, pos) and ``z`` by (layer, head), at 16 and 64 tokens. Prints the timings, the ratio and
the largest difference between the two results, and writes ``benchmarks/results/patching.json``.

``--model gemma-3-270m`` runs the same sweeps on the real Gemma-3-270m (``circuitlab.load_model``; 18 layers,
4 query heads / 1 key-value head, 262k vocabulary) with an IOI-style prompt pair ("... John gave a drink to" /
"... Mary gave a drink to", LogitDiff " Mary" - " John" at the last position), left-padded with a fixed
preamble to exactly 16 and 64 tokens. Its rows go to the ``models["gemma-3-270m"]`` section of the same JSON;
the GPT-2 rows (top-level ``results``) are kept as they were, and vice versa. Gemma-3 is a verified configuration
of the block runner (``circuitlab.engine.blocks.KV_REUSE_VERIFIED``), so circuitlab reuses cached keys and
values on it; each row records ``result.meta["engine"]``. TransformerLens unembeds all 262k columns at every position for every patch (seconds
per patch on 2 cores), so for Gemma it is always timed on a subset (``--tl-patches``, default 24 per sweep) and
extrapolated as below, the subset spread over the patches that can change the metric.

TransformerLens runs one full forward pass per patch. Where its full sweep would take too long (64 tokens by
default), it is timed on an evenly spread subset of the patches and its total is extrapolated from the per-patch
cost (patch cost does not depend on which patch it is); the JSON says so, and the maximum difference is then
taken over that subset.

Memory: the peak process RSS above the level before the sweep (psutil, sampled every 5 ms), and the
engine's own estimate of its largest chunk's activations (``peak_chunk_bytes``). For Gemma the same is measured
for TransformerLens's (possibly subset) sweep too, and before each measured block the process first hands freed
heap memory back to the system (``gc.collect()`` and glibc's ``malloc_trim(0)``), so that memory freed by the
previous block is not silently reused and hidden from the delta. Peaks shorter than the 5 ms sampling interval
can be missed; the figure is an RSS increase of the whole process, not a count of tensor bytes.

    python benchmarks/patching.py                        # GPT-2 shape, full run (several minutes)
    python benchmarks/patching.py --quick                # subsets only, for a fast look
    python benchmarks/patching.py --model gemma-3-270m   # real Gemma-3-270m (about 15 minutes on 2 cores)
"""

from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")  # TransformerLens's per-patch progress bar (read when tqdm loads)

import argparse  # noqa: E402
import ctypes  # noqa: E402
import ctypes.util  # noqa: E402
import gc  # noqa: E402
import importlib.metadata  # noqa: E402
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


def release_free_memory():
    """Collect garbage and return freed heap pages to the system (glibc only; a no-op elsewhere)."""
    gc.collect()
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        pass


class PeakRSS:
    """Peak resident memory above the starting level while the block runs (sampled by a thread).

    ``trim=True`` first releases freed heap memory (:func:`release_free_memory`), so the block's allocations
    show as growth instead of reusing pages an earlier block left behind.
    """

    def __init__(self, trim: bool = False):
        self.trim = trim

    def __enter__(self):
        try:
            import psutil
        except ImportError:  # pragma: no cover
            self.proc = None
            return self
        if self.trim:
            release_free_memory()
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


def effective_subset(shape, by, n, first_diff):
    """About ``n`` patches spread evenly over those that can change the metric: with a ``pos`` axis, positions
    before the first one where the two prompts differ carry identical activations in both runs (causal
    attention), so they are left out. Used for the real models, whose prompts differ in one late token."""
    rows = [list(t) for t in torch.cartesian_prod(*[torch.arange(s) for s in shape]).tolist()]
    if "pos" in by:
        rows = [r for r in rows if r[list(by).index("pos")] >= first_diff]
    pick = sorted(set(torch.linspace(0, len(rows) - 1, min(n, len(rows))).round().long().tolist()))
    return pd.DataFrame([rows[i] for i in pick], columns=list(by))


def random_pair(model, n_tokens, seed=0):
    """Random clean tokens, the corrupted copy with its second half redrawn, and a LogitDiff on two random ids."""
    gen = torch.Generator().manual_seed(seed + n_tokens)
    clean = torch.randint(0, model.cfg.d_vocab, (1, n_tokens), generator=gen)
    corrupted = clean.clone()
    corrupted[0, n_tokens // 2:] = torch.randint(0, model.cfg.d_vocab, (n_tokens - n_tokens // 2,), generator=gen)
    correct, wrong = torch.randint(0, model.cfg.d_vocab, (2,), generator=gen).tolist()
    return clean, corrupted, LogitDiff(correct, wrong)


#: IOI-style prompt pair for the real models: the corrupted prompt repeats the other name as the giver, which
#: flips the answer (the indirect object) from " Mary" to " John"
IOI_PREAMBLE = ("It was a warm afternoon in the small seaside town, and the market square was busy with people "
                "buying fruit, bread and fresh fish. Children ran between the stalls while their parents talked "
                "about the weather, the harvest and the boats that had come back late the night before. ")
IOI_CLEAN = "When Mary and John went to the store, John gave a drink to"
IOI_CORRUPTED = "When Mary and John went to the store, Mary gave a drink to"
IOI_ANSWERS = (" Mary", " John")  # (correct on the clean prompt, wrong on the clean prompt)


def ioi_pair(model, n_tokens, seed=0):
    """The IOI pair as exactly ``n_tokens`` tokens: a BOS, then the last ``n_tokens - 1`` tokens of
    preamble + prompt (so the preamble is cut from the left), and LogitDiff(" Mary", " John") at the last position.
    (``seed`` is unused: the pair is fixed.)
    """
    def tokens(text):
        ids = model.to_tokens(IOI_PREAMBLE + text, prepend_bos=False)[0]
        if len(ids) < n_tokens - 1:
            raise ValueError(f"the IOI preamble is too short for {n_tokens} tokens")
        bos = torch.tensor([model.tokenizer.bos_token_id])
        return torch.cat([bos, ids[len(ids) - (n_tokens - 1):]])[None]

    clean, corrupted = tokens(IOI_CLEAN), tokens(IOI_CORRUPTED)
    assert clean.shape == corrupted.shape == (1, n_tokens) and int((clean != corrupted).sum()) == 1
    return clean, corrupted, LogitDiff(*IOI_ANSWERS, model=model)


def bench(model, n_tokens, site, by, subset_size, seed=0, pair=random_pair, real=False):
    """One sweep by both; ``real`` (the real models): trimmed memory baselines, the TransformerLens subset taken
    from the patches that can change the metric (:func:`effective_subset`), and extra fields in the row."""
    clean, corrupted, metric = pair(model, n_tokens, seed)

    sweep(model, clean[:, :4], corrupted[:, :4], metric, site, by, progress=False, layers=[0])  # warm-up
    load_before = os.getloadavg()[0]
    with PeakRSS(trim=real) as mem:
        t, cpu = time.perf_counter(), time.process_time()
        ours = sweep(model, clean, corrupted, metric, site, by, progress=False)
        ours_s, ours_cpu = time.perf_counter() - t, time.process_time() - cpu

    with torch.no_grad():
        _, clean_cache = model.run_with_cache(clean)
    total = ours.values.numel()
    if subset_size is None or subset_size >= total:
        subset = None
    elif real:
        first_diff = int((clean != corrupted).any(0).nonzero()[0])
        subset = effective_subset(ours.values.shape, by, subset_size, first_diff)
    else:
        subset = spread_subset(ours.values.shape, by, subset_size)
    with torch.no_grad(), PeakRSS(trim=real) as tl_mem:
        t, cpu = time.perf_counter(), time.process_time()
        ref = tl_sweep(model, corrupted, clean_cache, metric, site, by, subset)
        tl_s, tl_cpu = time.perf_counter() - t, time.process_time() - cpu
    del clean_cache
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
    if real:  # rows for the real models also say how TransformerLens's sweep grew the process, and which path
        row["transformer_lens_peak_rss_delta_mib"] = None if tl_mem.delta_mib is None else round(tl_mem.delta_mib, 1)
        row["clean_value"], row["corrupted_value"] = ours.meta["clean_value"], ours.meta["corrupted_value"]
        row["engine"] = ours.meta["engine"]
        # CPU seconds of this process (all its threads): less sensitive than wall time to other jobs on a shared
        # machine, though not immune (contention also slows each thread down)
        tl_cpu_total = tl_cpu * total / timed
        row["circuitlab_cpu_seconds"] = round(ours_cpu, 3)
        row["transformer_lens_cpu_seconds"] = round(tl_cpu_total, 3)
        row["speedup_cpu"] = round(tl_cpu_total / ours_cpu, 1)
        row["load_average_before_after"] = [round(load_before, 1), round(os.getloadavg()[0], 1)]
    note = f" (TL timed on {timed}/{total} patches, extrapolated)" if subset is not None else ""
    tl_peak = (f", TL +{row['transformer_lens_peak_rss_delta_mib']} MiB; CPU-time ratio {row['speedup_cpu']}x, "
               f"load {row['load_average_before_after']}") if real else ""
    print(f"{site:>9} by {','.join(by):<10} {n_tokens:>3} tokens: circuitlab {ours_s:7.2f} s, "
          f"TransformerLens {tl_total:7.1f} s{note} -> {tl_total / ours_s:5.1f}x; max |diff| {diff:.2e}; "
          f"peak RSS +{row['peak_rss_delta_mib']} MiB{tl_peak}, largest chunk ~{row['engine_peak_chunk_mib']} MiB",
          flush=True)
    return row


NOTE = ("speedup = TransformerLens seconds / circuitlab seconds in the same process; where "
        "transformer_lens_extrapolated is true, TransformerLens was timed on an evenly spread subset of "
        "patches and its time scaled by n_patches / timed patches, and max_abs_diff covers that subset.")


def machine():
    return (f"{platform.machine()}, {os.cpu_count()} cores visible, load average at end "
            f"{os.getloadavg()[0]:.1f}")


def run_gpt2(args):
    model = gpt2_small_shaped(seed=0)
    rows = []
    for n_tokens in args.tokens:
        full = n_tokens <= 16 and not args.quick
        for site, by in (("resid_pre", ("layer", "pos")), ("z", ("layer", "head"))):
            rows.append(bench(model, n_tokens, site, by, None if full else (12 if args.quick else 24)))
    return {
        "benchmark": "activation patching sweep, circuitlab vs transformer_lens.patching (same process)",
        "model": "GPT-2-small shape, random weights (circuitlab.testing.gpt2_small_shaped)",
        "metric": "LogitDiff at the last position", "batch": 1, "threads": torch.get_num_threads(),
        "machine": machine(),
        "torch": torch.__version__,
        "note": NOTE,
        "results": rows,
    }


def run_gemma(args):
    from circuitlab import load_model
    from circuitlab.engine.blocks import kv_reuse_blockers

    t = time.perf_counter()
    model = load_model("gemma-3-270m")
    load_s = time.perf_counter() - t
    print(f"gemma-3-270m loaded in {load_s:.1f} s; key/value reuse blockers: {len(kv_reuse_blockers(model))}",
          flush=True)
    rows = []
    for n_tokens in args.tokens:  # a full TransformerLens sweep takes seconds per patch here: always a subset
        for site, by in (("resid_pre", ("layer", "pos")), ("z", ("layer", "head"))):
            rows.append(bench(model, n_tokens, site, by, 8 if args.quick else args.tl_patches,
                              pair=ioi_pair, real=True))
    prompts = {}
    for n_tokens in args.tokens:
        clean, corrupted, _ = ioi_pair(model, n_tokens)
        prompts[str(n_tokens)] = {"clean": model.tokenizer.decode(clean[0]),
                                  "corrupted": model.tokenizer.decode(corrupted[0])}
    return {
        "benchmark": "activation patching sweep, circuitlab vs transformer_lens.patching (same process)",
        "model": "gemma-3-270m (circuitlab.load_model: google/gemma-3-270m base, Q4_K_M GGUF dequantised to fp32, "
                 "HookedTransformer; 18 layers, 4 query / 1 key-value heads, d_vocab 262144)",
        "metric": "LogitDiff(' Mary', ' John') at the last position (IOI-style pair, denoising)",
        "prompts": prompts,
        "batch": 1, "threads": torch.get_num_threads(),
        "machine": machine(),
        "torch": torch.__version__, "transformer_lens": importlib.metadata.version("transformer-lens"),
        "kv_reuse_blockers": kv_reuse_blockers(model),
        "note": NOTE + " For this model TransformerLens is always timed on a subset, spread over the patches that "
                "can change the metric (for a (layer, pos) sweep: positions from the first where the prompts "
                "differ; a patch costs TransformerLens the same wherever it is). TransformerLens computes full "
                "logits (all 262144 columns at every position) for every patch; circuitlab's fast path computes "
                "only the two columns LogitDiff reads. "
                "peak_rss_delta_mib / transformer_lens_peak_rss_delta_mib: the largest increase of the process's "
                "RSS over its level at the start of that sweep (psutil, sampled every 5 ms), after "
                "gc.collect() + malloc_trim(0) so that freed memory is not reused unseen; for an extrapolated "
                "TransformerLens sweep it covers the timed subset only (its per-patch memory does not grow "
                "with the number of patches). engine: circuitlab's result.meta['engine']. *_cpu_seconds and "
                "speedup_cpu: the same ratio on this process's CPU time (time.process_time, all threads), less "
                "sensitive to other jobs on a shared machine; load_average_before_after: the 1-minute load "
                "average around the row.",
        "results": rows,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="time TransformerLens on subsets only, at 16 tokens only unless --tokens is given")
    parser.add_argument("--tokens", type=int, nargs="*", default=None, help="prompt lengths (default: 16 and 64)")
    parser.add_argument("--model", choices=["gpt2-small-shaped", "gemma-3-270m", "all"], default="gpt2-small-shaped",
                        help="which model to benchmark (default: the GPT-2-small shape with random weights)")
    parser.add_argument("--tl-patches", type=int, default=24,
                        help="real models: patches TransformerLens is timed on per sweep (default 24; 8 with --quick)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.tokens is None:
        args.tokens = [16] if args.quick else [16, 64]

    # one file for all models: each run replaces only its own model's entries
    try:
        out = json.loads(args.out.read_text())
    except (OSError, ValueError):
        out = {}
    if args.model in ("gpt2-small-shaped", "all"):
        models = out.pop("models", None)
        out = run_gpt2(args)
        if models is not None:
            out["models"] = models
    if args.model in ("gemma-3-270m", "all"):
        out.setdefault("models", {})["gemma-3-270m"] = run_gemma(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
