"""Exact path patching (circuitlab) against TransformerLens 3.9's linearised direct path patching.

For every (sender head, receiver head) pair with the receiver in a later layer and each receiver input (q, k, v),
compares ``circuitlab.patching.path_patch`` (exact two-pass method: the receiver's input is recomputed through its
LayerNorm from the frozen corrupted residual stream plus the sender's output difference) with
``transformer_lens.tools.analysis.direct_path_patching.get_act_patch_direct_path`` (adds
``(sender output difference / corrupted LayerNorm scale) @ W`` to the receiver's input: no mean-centring, no
LayerNorm weight, no change of scale). Both run the corrupted prompt with clean sender values (denoising) and let
everything after the receiver recompute, so they differ only in how the receiver's input is computed.

Models: the zoo's ``attn-only-2l`` on the induction task (when installed), a random 3-layer GPT-2-like model as
is, and the same model after ``process_weights_(fold_ln=True, center_writing_weights=True)`` (the setting
TransformerLens recommends). Writes ``benchmarks/results/path_patching.json``.

    python benchmarks/path_patching.py
"""

from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

torch.set_num_threads(2)

from transformer_lens.tools.analysis.direct_path_patching import get_act_patch_direct_path  # noqa: E402

from circuitlab.metrics import LogitDiff  # noqa: E402
from circuitlab.models import list_models, load_model  # noqa: E402
from circuitlab.patching import path_patch  # noqa: E402
from circuitlab.testing import random_model  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "path_patching.json"


def compare(name, model, clean, corrupted, metric, component):
    _, clean_cache = model.run_with_cache(clean)
    corrupted_logits, corrupted_cache = model.run_with_cache(corrupted)
    base = float(metric(corrupted_logits.detach()))
    exact, linear, pairs = [], [], []
    for sl in range(model.cfg.n_layers - 1):
        for sh in range(model.cfg.n_heads):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TransformerLens warns about unfolded LayerNorm; that is the point
                with torch.no_grad():
                    tl = get_act_patch_direct_path(model, corrupted, clean_cache, corrupted_cache, metric, sl, sh,
                                                   component=component, verbose=False)
            for dl in range(sl + 1, model.cfg.n_layers):
                for dh in range(model.cfg.n_heads):
                    ours = path_patch(model, clean, corrupted, metric, senders=(sl, sh), receivers=[(dl, dh, component)])
                    exact.append(float(ours.values[0]) - base)
                    linear.append(float(tl[dl, dh]) - base)
                    pairs.append(f"L{sl}H{sh}->L{dl}H{dh}.{component}")
    e, a = torch.tensor(exact), torch.tensor(linear)
    err = (a - e).abs()
    worst = [{"path": pairs[i], "exact_effect": round(exact[i], 4), "linearised_effect": round(linear[i], 4)}
             for i in err.argsort(descending=True)[:3].tolist()]
    row = {
        "model": name, "component": component, "n_paths": len(pairs),
        "pearson_r": round(float(torch.corrcoef(torch.stack([e, a]))[0, 1]), 4),
        "max_abs_difference": round(float(err.max()), 4),
        "median_abs_difference": round(float(err.median()), 5),
        "largest_exact_effect": round(float(e.abs().max()), 4),
        "worst": worst,
    }
    print(f"{name:<40} {component}: {len(pairs)} paths, r={row['pearson_r']:+.3f}, max |exact - linearised| "
          f"{row['max_abs_difference']:.4f} (largest exact effect {row['largest_exact_effect']:.4f}); worst "
          f"{worst[0]['path']}: {worst[0]['exact_effect']:+.4f} vs {worst[0]['linearised_effect']:+.4f}")
    return row


def main(argv: list[str] | None = None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="the same run (it already takes under a minute)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    models = []
    if "zoo/attn-only-2l" in list_models():
        sys.path.insert(0, str(Path(__file__).parent))
        from attribution_patching import induction_task  # the same induction task as that benchmark

        model = load_model("zoo/attn-only-2l")
        models.append(("zoo/attn-only-2l (induction)", model, *induction_task(model)))
    gen = torch.Generator().manual_seed(0)
    clean = torch.randint(1, 50, (2, 10), generator=gen)
    corrupted = clean.clone()
    corrupted[:, 2:6] = torch.randint(1, 50, (2, 4), generator=gen)
    metric = LogitDiff([3, 4], [5, 6])
    raw = random_model("gpt2", seed=4, n_layers=3)
    models.append(("random gpt2-like, 3 layers, LayerNorm as is", raw, clean, corrupted, metric))
    folded = random_model("gpt2", seed=4, n_layers=3)
    folded.process_weights_(fold_ln=True, center_writing_weights=True, center_unembed=True)
    models.append(("same model, LayerNorm folded + centred", folded, clean, corrupted, metric))

    rows = [compare(name, m, c, x, met, comp) for name, m, c, x, met in models for comp in ("q", "k", "v")]
    out = {
        "benchmark": "exact path patching (circuitlab.patching.path_patch) vs TransformerLens 3.9 linearised "
                     "direct path patching (transformer_lens.tools.analysis.direct_path_patching)",
        "metric": "LogitDiff at the last position; effects are values minus the unpatched corrupted value",
        "why_they_differ": "the linearised version adds (delta / corrupted ln1 scale) @ W to the receiver input: it "
                           "skips LayerNorm's mean-centring (exact only if writing weights are centred), its weight "
                           "(exact only if folded) and the change of scale caused by the sender's delta",
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
