"""Probing speed: activation collection throughput and a layer x task probe sweep with control tasks.

MiniLM-L6 (``minilm-l6``, an encoder arriving from PyPI) on the default offline data (``default_sentences``: 2,000
King James verses and fortune lines labelled by spaCy):

1. ``collect``: word activations at the embedding and all 6 layers in one streamed pass (no disk cache), timed
   twice, the faster run kept; sentences and words per second. The reference in the same process is the plain
   TransformerLens loop a probing script would write: one ``run_with_cache`` per sentence, then the mean over each
   word's tokens in Python. The two give the same word vectors (max difference reported).
2. ``sweep``: :func:`circuitlab.probing.probe_sweep` for UPOS, dependency label and entity type at the 7 hooks,
   with Hewitt & Liang control tasks, 3 seeds; linear probes by default (``--mlp`` adds the MLP-1 probes, which
   take most of the time). The activations come from step 1 (one collection serves every task).

Writes ``benchmarks/results/probing.json``. ``--threads`` sets torch's threads (default 2).

    python benchmarks/probing.py            # about 5 minutes on 2 cores
    python benchmarks/probing.py --mlp      # with MLP probes too
    python benchmarks/probing.py --quick    # 300 sentences, one seed
"""

from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from circuitlab import probing  # noqa: E402
from circuitlab.models.loading import as_any_model  # noqa: E402
from circuitlab.probing.align import align  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "probing.json"


def reference_collect(model, sentences, n: int) -> tuple[dict, float]:
    """The hand-rolled loop: one sentence per forward pass, ``run_with_cache``, Python means over word pieces."""
    al = align(model, sentences[:n])
    t0 = time.perf_counter()
    out = []
    with torch.no_grad():
        for tokens, pieces in zip(al.tokens, al.pieces):
            ids = torch.tensor([tokens])
            _, cache = model.run_with_cache(ids, token_type_ids=torch.zeros_like(ids))
            layers = [cache["hook_full_embed"] if "hook_full_embed" in cache else cache["blocks.0.hook_resid_pre"]]
            layers += [cache[f"blocks.{l}.hook_resid_post"] for l in range(model.cfg.n_layers)]
            for p in pieces:
                if p:
                    out.append(torch.stack([h[0, p].mean(0) for h in layers]))
    return torch.stack(out), time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--mlp", action="store_true", help="also MLP-1 probes")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    n = 300 if args.quick else 2000
    seeds = (0,) if args.quick else (0, 1, 2)
    model = as_any_model("minilm-l6")
    sentences = probing.default_sentences(n)
    n_words = sum(len(s.words) for s in sentences)
    out = {"model": "minilm-l6", "sentences": n, "words": n_words, "threads": args.threads,
           "load_average_at_start": os.getloadavg()}

    runs, acts = [], None
    for _ in range(2):
        t0 = time.perf_counter()
        acts = probing.collect(model, sentences, cache=False, progress=False)
        runs.append(time.perf_counter() - t0)
    best = min(runs)
    n_ref = min(200, n)
    ref, ref_s = reference_collect(model, sentences, n_ref)
    ours = torch.stack([acts[h] for h in acts.hooks], dim=1)[:ref.shape[0]]
    out["collect"] = {"runs_s": runs, "seconds": best, "sentences_per_s": n / best, "words_per_s": len(acts) / best,
                      "hooks": acts.hooks, "rows": len(acts),
                      "reference_loop": {"sentences": n_ref, "seconds": ref_s, "sentences_per_s": n_ref / ref_s},
                      "speedup_vs_reference": (n_ref / ref_s and (n / best) / (n_ref / ref_s)),
                      "max_diff_vs_reference": float((ours - ref).abs().max()) if ours.shape == ref.shape else None}
    c = out["collect"]
    print(f"collect: {n} sentences ({len(acts)} words), {len(acts.hooks)} hooks: {best:.2f} s = "
          f"{c['sentences_per_s']:.0f} sentences/s; one-sentence run_with_cache loop: {c['reference_loop']['sentences_per_s']:.0f} "
          f"sentences/s ({c['speedup_vs_reference']:.1f}x), max diff {c['max_diff_vs_reference']}")

    probes = ("linear", "mlp") if args.mlp else ("linear",)
    out["sweep"] = {"probes": probes, "seeds": list(seeds), "tasks": {}}
    total = 0.0
    for task in ("upos", "deprel", "ent"):
        t0 = time.perf_counter()
        res = probing.probe_sweep(acts, task=task, probes=probes, seeds=seeds, progress=False)
        secs = time.perf_counter() - t0
        total += secs
        sel = res.values[0, :, 2]
        acc = res.values[0, :, 0]
        best_layer = int(acc.argmax())
        out["sweep"]["tasks"][task] = {"seconds": secs, "accuracy_linear": acc.tolist(),
                                       "selectivity_linear": sel.tolist(), "best_layer": res.labels["layer"][best_layer]}
        print(f"sweep {task}: {secs:.1f} s; linear accuracy best at {res.labels['layer'][best_layer]} "
              f"({float(acc[best_layer]):.3f}, selectivity {float(sel[best_layer]):.3f})")
    out["sweep"]["seconds"] = total
    print(f"sweep: 3 tasks x {len(acts.hooks)} hooks x {len(probes)} probe kinds x {len(seeds)} seeds with control "
          f"tasks: {total:.1f} s")
    out["load_average_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
