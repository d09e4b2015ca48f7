"""How well attribution patching (a linear estimate) agrees with exact activation patching.

For the zoo's attention-only models on the induction task (clean: a repeated random sequence; corrupted: the
first copy replaced, so in-context copying has nothing to copy) and for random-init models of the four
architecture families, compares ``patching.attribution`` with the exact ``patching.sweep`` on several sites:
Pearson correlation of the effects (value minus the unpatched value), the largest absolute error, how often
the signs agree, and the worst sites. Writes ``benchmarks/results/attribution_patching.json``.

    python benchmarks/attribution_patching.py
"""

from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

torch.set_num_threads(2)

from circuitlab.metrics import LogitDiff  # noqa: E402
from circuitlab.models import list_models, load_model  # noqa: E402
from circuitlab.patching import attribution, sweep  # noqa: E402
from circuitlab.tasks.repeated import repeated_tokens  # noqa: E402
from circuitlab.testing import ARCHITECTURES, random_model  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "attribution_patching.json"
SITES = [("resid_pre", ("layer", "pos")), ("attn_out", ("layer", "pos")), ("mlp_out", ("layer", "pos")),
         ("z", ("layer", "head")), ("z", ("layer", "pos", "head")), ("v", ("layer", "head")),
         ("pattern", ("layer", "head"))]


def induction_task(model, n_seqs=4, seq_len=10, seed=0):
    """Clean: ``[BOS] r r[:-1]`` (the last position should predict r's last token by copying); corrupted: the
    first copy replaced by other random tokens. Metric: logit of r's last token minus that of the replacement."""
    bos = 0 if model.tokenizer is None else model.tokenizer.bos_token_id
    rep = repeated_tokens(n_seqs, seq_len, model.cfg.d_vocab, seed=seed, bos_token_id=bos)
    other = repeated_tokens(n_seqs, seq_len, model.cfg.d_vocab, seed=seed + 100, bos_token_id=bos)
    clean = rep.tokens[:, :-1]
    corrupted = clean.clone()
    corrupted[:, rep.first_half] = other.tokens[:, other.first_half]
    correct, wrong = rep.tokens[:, -1], other.tokens[:, other.prefix + seq_len - 1]
    return clean, corrupted, LogitDiff(correct, wrong)


def random_task(model, seed=0, seq=12, batch=2):
    gen = torch.Generator().manual_seed(seed)
    clean = torch.randint(1, model.cfg.d_vocab, (batch, seq), generator=gen)
    corrupted = clean.clone()
    corrupted[:, seq // 3:2 * seq // 3] = torch.randint(1, model.cfg.d_vocab, (batch, seq // 3), generator=gen)
    return clean, corrupted, LogitDiff([3, 4][:batch], [5, 6][:batch])


def compare(model, clean, corrupted, metric, site, by):
    exact_res = sweep(model, clean, corrupted, metric, site, by, progress=False)
    approx = attribution(model, clean, corrupted, metric, site, by)
    base = exact_res.meta["corrupted_value"]
    e, a = (exact_res.values - base).flatten(), (approx.values - base).flatten()
    corr = float(torch.corrcoef(torch.stack([e, a]))[0, 1]) if e.std() > 0 and a.std() > 0 else float("nan")
    err = (a - e).abs()
    worst = []
    for i in err.argsort(descending=True)[:3].tolist():
        index = tuple(int(j) for j in torch.unravel_index(torch.tensor(i), exact_res.shape))
        worst.append({"site": exact_res.label_of(index), "exact_effect": round(float(e[i]), 4),
                      "attribution_effect": round(float(a[i]), 4)})
    significant = e.abs() > 0.05 * e.abs().max()
    return {
        "site": site, "by": list(by), "n": int(e.numel()),
        "pearson_r": round(corr, 4),
        "max_abs_error": round(float(err.max()), 4),
        "largest_exact_effect": round(float(e.abs().max()), 4),
        "sign_agreement_on_significant": round(float((e.sign() == a.sign())[significant].float().mean()), 3),
        "worst": worst,
    }


def main(argv: list[str] | None = None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="the same run (it already takes under a minute)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    models = []
    for name in ("zoo/attn-only-1l", "zoo/attn-only-2l"):
        if name in list_models():
            models.append((name, load_model(name), "induction"))
    for arch in ARCHITECTURES:
        models.append((f"random {arch} (2 layers, d_model 32)", random_model(arch, seed=0), "random tokens"))

    rows = []
    for name, model, task in models:
        clean, corrupted, metric = induction_task(model) if task == "induction" else random_task(model)
        for site, by in SITES:
            if site == "mlp_out" and model.cfg.attn_only:
                continue
            t = time.perf_counter()
            row = {"model": name, "task": task, **compare(model, clean, corrupted, metric, site, by),
                   "seconds": round(time.perf_counter() - t, 2)}
            rows.append(row)
            w = row["worst"][0]
            print(f"{name:<34} {site:>9} by {','.join(by):<15} r={row['pearson_r']:+.3f}  "
                  f"max err {row['max_abs_error']:.3f} (largest effect {row['largest_exact_effect']:.3f})  "
                  f"signs {row['sign_agreement_on_significant']:.2f}  worst {w['site']}: exact "
                  f"{w['exact_effect']:+.3f} vs linear {w['attribution_effect']:+.3f}")
    out = {
        "benchmark": "attribution patching (first-order estimate) vs exact activation patching",
        "metric": "LogitDiff at the last position; effects are values minus the unpatched corrupted value",
        "direction": "denoising (run corrupted, patch in clean)",
        "zoo_models_found": [n for n, _, t in models if t == "induction"],
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
