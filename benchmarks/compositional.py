"""The finding "compositional-explanations-longer-formulas" on the real models, one at a time, written to
benchmarks/results/compositional.json (each model's row as soon as it is measured).

    PYTHONPATH=src nice -n 10 python benchmarks/compositional.py [minilm-l6 smollm2-135m gemma-3-270m]
"""

from __future__ import annotations

import gc
import json
import sys
import time
from pathlib import Path

import torch

from circuitlab import reproduce

OUT = Path(__file__).resolve().parent / "results" / "compositional.json"


def main(models: list[str]) -> None:
    torch.set_num_threads(1)
    rows = json.loads(OUT.read_text()) if OUT.exists() else {}
    for name in models:
        t0 = time.perf_counter()
        r = reproduce.run("compositional-explanations-longer-formulas", model=name)
        m = r.measurement
        rows[name] = {"verdict": m.verdict, "figures": m.figures, "why": m.why, "seconds": round(r.seconds, 1),
                      "seed": r.seed, "values": {k: v for k, v in m.values.items() if k not in ("iou", "heldout_iou")},
                      "iou": m.values.get("iou"), "heldout_iou": m.values.get("heldout_iou"),
                      "wall": round(time.perf_counter() - t0, 1), "threads": torch.get_num_threads()}
        OUT.write_text(json.dumps(rows, indent=1))
        print(name, m.verdict, m.figures, m.why, sep="\n", flush=True)
        del r, m
        gc.collect()


if __name__ == "__main__":
    main(sys.argv[1:] or ["minilm-l6", "smollm2-135m", "gemma-3-270m"])
