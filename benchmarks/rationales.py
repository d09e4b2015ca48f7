"""The finding "amplify-rationales-help-few-shot" on smollm2-135m, written to benchmarks/results/rationales.json.

    PYTHONPATH=src nice -n 10 python benchmarks/rationales.py [smollm2-135m]
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from circuitlab import reproduce

OUT = Path(__file__).resolve().parent / "results" / "rationales.json"


def main(models: list[str]) -> None:
    torch.set_num_threads(1)
    rows = json.loads(OUT.read_text()) if OUT.exists() else {}
    for name in models:
        t0 = time.perf_counter()
        r = reproduce.run("amplify-rationales-help-few-shot", model=name)
        m = r.measurement
        rows[name] = {"verdict": m.verdict, "figures": m.figures, "why": m.why, "seconds": round(r.seconds, 1),
                      "seed": r.seed, "values": m.values, "wall": round(time.perf_counter() - t0, 1),
                      "threads": torch.get_num_threads()}
        OUT.write_text(json.dumps(rows, indent=1, default=str))
        print(name, m.verdict, m.figures, m.why, sep="\n", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["smollm2-135m"])
