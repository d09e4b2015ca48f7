"""Toy models of superposition (Elhage et al. 2022): the figures of ``docs/superposition.md`` and their numbers.

Trains (on one thread, as :func:`circuitlab.features.toy.train` always does) the default two-feature phase diagram
(9 x 9 cells x 5 restarts), 5 features of equal importance in 2 dimensions at sparsity 0 and 0.9, and the n = 20,
m = 5, importance 0.7^i sparsity sweep (ReLU with 2 restarts, as the finding measures it; and the linear
baseline), and writes the SVG figures to ``docs/figures/superposition-*.svg`` and the numbers, with the CPU
seconds each took, to ``benchmarks/results/superposition.json``.

    PYTHONPATH=src python benchmarks/superposition.py
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from circuitlab.features import toy
from circuitlab.render.superposition import arrows_svg, phase_svg, sweep_svg

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "docs" / "figures"


def timed(out: dict, name: str, fn):
    start = time.process_time()
    value = fn()
    out[f"{name}_cpu_s"] = round(time.process_time() - start, 2)
    return value


def main() -> None:
    out: dict = {"torch": torch.__version__}
    FIGURES.mkdir(parents=True, exist_ok=True)
    d = timed(out, "phase", lambda: toy.phase_diagram(seed=0))
    (FIGURES / "superposition-phase.svg").write_text(phase_svg(d))
    out["phase"] = {"codes": d.phase.values.tolist(), "relative_importance": d.phase.meta["relative_importance"],
                    "sparsity_grid": d.phase.meta["sparsity_grid"], "counts": d.counts()}
    m = timed(out, "pentagon", lambda: toy.train(5, 2, [0.0, 0.9], 1.0, seed=0))
    (FIGURES / "superposition-pentagon.svg").write_text(arrows_svg(m, 1))
    (FIGURES / "superposition-dense-5in2.svg").write_text(arrows_svg(m, 0))
    out["pentagon"] = {"sparsity": [0.0, 0.9], "norms": toy.feature_norms(m).values.tolist(),
                       "angles": toy.feature_angles(m).values.tolist(),
                       "dimensionality": toy.dimensionality(m).values.tolist()}
    s = timed(out, "sweep", lambda: toy.sparsity_sweep(restarts=2, seed=0))
    (FIGURES / "superposition-sweep.svg").write_text(sweep_svg(s))
    out["sweep"] = {"sparsities": list(toy.SWEEP_SPARSITIES), "represented": s.represented.values.tolist(),
                    "dimensions_per_feature": s.dimensions_per_feature.values.tolist()}
    lin = timed(out, "linear_sweep", lambda: toy.sparsity_sweep(kind="linear", restarts=1, seed=0))
    out["linear_sweep"] = {"represented": lin.represented.values.tolist(),
                           "dimensions_per_feature": lin.dimensions_per_feature.values.tolist()}
    path = ROOT / "benchmarks" / "results" / "superposition.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k.endswith("_s")}))


if __name__ == "__main__":
    main()
