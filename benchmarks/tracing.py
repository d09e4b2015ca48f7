"""Causal tracing: circuitlab's batched :func:`circuitlab.tracing.trace` against the paper-style reference, in one process.

The **reference** (:func:`circuitlab.testing.reference_restoration`) restores one (kind, token, layer) per hooked
forward pass of ``samples`` rows and reads the full softmax at the last position, as the paper's code does (and as
a hand-rolled TransformerLens loop would). The full grid is ``3 kinds x n_layers x n_tokens`` such passes; every
pass does the same work (same rows, same tokens, the same model run to the end), so by default the reference is
timed on ``--reference-entries`` entries drawn at random from the grid and its total is that mean time x the grid
size (``--full-reference`` runs every entry instead). Those entries are also compared with circuitlab's numbers.

**circuitlab** computes the whole grid with one call (the levers are in :mod:`circuitlab.tracing`'s docstring).
Both use the paper's settings: 10 noise samples, noise 3 x the embeddings' standard deviation, the default window.

Models: ``gemma-3-270m`` (a factual prompt; 262k-token vocabulary) and a GPT-2-small-shaped model with random
weights (16 token ids, the subject at positions 3-5). Prints a table; writes ``benchmarks/results/tracing.json``
with the machine (CPU count, load average) and versions. Timings on a shared machine are noisy; the ratio is
measured in one process, so load affects both sides.

    python benchmarks/tracing.py                        # both models
    python benchmarks/tracing.py --models gpt2-small-shaped --full-reference
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import sys
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results" / "tracing.json"
PROMPTS = {
    "gemma-3-270m": ("The Eiffel Tower is located in the city of", "The Eiffel Tower", " Paris"),
}


def load(name: str):
    import circuitlab
    from circuitlab.testing import gpt2_small_shaped

    if name == "gpt2-small-shaped":
        model = gpt2_small_shaped()
        tokens = torch.randint(0, model.cfg.d_vocab, (16,), generator=torch.Generator().manual_seed(0))
        return model, tokens, (3, 6), int(tokens[-2])
    model = circuitlab.load_model(name)
    return (model, *PROMPTS[name])


def bench(name: str, entries: int, full: bool, samples: int, seed: int) -> dict:
    from circuitlab.core import to_tokens
    from circuitlab.testing import reference_restoration
    from circuitlab.tracing import subject_noise, trace

    model, prompt, subject, answer = load(name)
    torch.manual_seed(seed)
    trace(model, prompt, subject, answer, kinds="resid", samples=1, progress=False)  # warm-up (allocations, caches)

    t = time.perf_counter()
    res = trace(model, prompt, subject, answer, samples=samples, seed=seed, progress=False)
    fast = time.perf_counter() - t

    tokens = to_tokens(model, prompt)
    span, ans = res.meta["subject"], res.meta["answer"]
    noise = subject_noise(model, span[1] - span[0], samples, res.meta["noise_std"], seed)
    _, clean = model.run_with_cache(tokens)
    grid = [(k, kind, pos, layer) for k, kind in enumerate(res.labels["kind"]) for pos in range(res.shape[1])
            for layer in range(res.shape[2])]
    chosen = grid if full else random.Random(seed).sample(grid, min(entries, len(grid)))
    window = res.meta["window"].get("mlp", res.meta["window"].get("attn", 1))
    times, diffs = [], []
    for k, kind, pos, layer in chosen:
        t = time.perf_counter()
        p = reference_restoration(model, tokens, span, ans, noise, clean, kind, layer, pos, window)
        times.append(time.perf_counter() - t)
        diffs.append(abs(p - float(res.values[k, pos, layer])))
    per_pass = sum(times) / len(times)
    reference = sum(times) if full else per_pass * len(grid)
    return dict(model=name, tokens=int(tokens.shape[1]), n_layers=model.cfg.n_layers, d_vocab=model.cfg.d_vocab,
                kinds=res.labels["kind"], window=res.meta["window"], samples=samples, grid=len(grid),
                reference_entries_timed=len(chosen), reference_seconds_per_pass=per_pass,
                reference_seconds=reference, reference_extrapolated=not full, circuitlab_seconds=fast,
                speedup=reference / fast, max_abs_difference=max(diffs), engine=res.meta["engine"],
                peak_chunk_mib=res.meta["peak_chunk_bytes"] / 2**20,
                clean_prob=res.clean_prob, corrupted_prob=res.corrupted_prob)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["gemma-3-270m", "gpt2-small-shaped"])
    p.add_argument("--reference-entries", type=int, default=30)
    p.add_argument("--full-reference", action="store_true")
    p.add_argument("--samples", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--quick", action="store_true",
                   help="a fast look: the GPT-2-small shape only, the reference timed on 6 entries")
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.reference_entries, args.full_reference = ["gpt2-small-shaped"], 6, False

    rows = [bench(m, args.reference_entries, args.full_reference, args.samples, args.seed) for m in args.models]
    print(f"{'model':<20} {'grid':>6} {'reference s':>12} {'circuitlab s':>13} {'speedup':>8} {'max |diff|':>11} "
          f"{'chunk MiB':>10}")
    for r in rows:
        ref = f"{r['reference_seconds']:.1f}" + ("*" if r["reference_extrapolated"] else "")
        print(f"{r['model']:<20} {r['grid']:>6} {ref:>12} {r['circuitlab_seconds']:>13.1f} {r['speedup']:>7.1f}x "
              f"{r['max_abs_difference']:>11.2e} {r['peak_chunk_mib']:>10.0f}")
    if any(r["reference_extrapolated"] for r in rows):
        print("* reference: mean time of the timed passes x the grid size (every pass does the same work)")
    import importlib.metadata

    out = dict(machine=dict(cpus=os.cpu_count(), load_average=os.getloadavg(), platform=platform.platform(),
                            python=sys.version.split()[0], torch=torch.__version__,
                            transformer_lens=importlib.metadata.version("transformer-lens"),
                            threads=torch.get_num_threads()),
               peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, results=rows)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
