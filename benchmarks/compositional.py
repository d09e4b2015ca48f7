"""The finding "compositional-explanations-longer-formulas" on the real models, one at a time, written to
benchmarks/results/compositional.json (each model's row as soon as it is measured).

    PYTHONPATH=src nice -n 10 python benchmarks/compositional.py [minilm-l6 smollm2-135m gemma-3-270m]
    PYTHONPATH=src nice -n 10 python benchmarks/compositional.py search   # the beam search alone, timed

``search`` times :func:`circuitlab.neurons.compositional.search_formulas` alone at the finding's sizes (192 neurons
with masks of 28 words, 5,570 words, 281 random concepts, length 5, beam 10), one thread.
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


def search_timing() -> None:
    from circuitlab.neurons.compositional import Concepts, search_formulas

    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    n, k, N = 5570, 281, 192
    p = torch.rand(k, 1, generator=g) * 0.2
    concepts = Concepts(tuple(f"c{i}" for i in range(k)), torch.rand(k, n, generator=g) < p)
    masks = torch.zeros(N, n, dtype=torch.bool)
    for i in range(N):
        masks[i, torch.randperm(n, generator=g)[:28]] = True
    t = time.perf_counter()
    search_formulas(masks, concepts, max_length=5, beam=10)
    dt = time.perf_counter() - t
    print(f"search: {N} neurons, {n} words, {k} concepts, length 5, beam 10: {dt:.1f} s "
          f"({dt / N * 1000:.0f} ms per neuron)")


def main(models: list[str]) -> None:
    torch.set_num_threads(1)
    rows = json.loads(OUT.read_text()) if OUT.exists() else {}
    for name in models:
        t0 = time.perf_counter()
        r = reproduce.run("compositional-explanations-longer-formulas", model=name)
        m = r.measurement
        v = m.values
        per_neuron = [f"{lab}: IoU " + " ".join(f"{x:.3f}" for x in v["iou"][i]) + " / held-out "
                      + " ".join(f"{x:.3f}" for x in v["heldout_iou"][i]) + f" / {v['formulas'][i][-1]}"
                      for i, lab in enumerate(v["neurons"])]
        rows[name] = {"verdict": m.verdict, "figures": m.figures, "why": m.why, "seconds": round(r.seconds, 1),
                      "seed": r.seed, "values": {k: x for k, x in v.items()
                                                 if k not in ("iou", "heldout_iou", "neurons", "formulas")},
                      "wall": round(time.perf_counter() - t0, 1), "threads": torch.get_num_threads(),
                      "per_neuron": per_neuron}
        OUT.write_text(json.dumps(rows, indent=1))
        print(name, m.verdict, m.figures, m.why, sep="\n", flush=True)
        del r, m
        gc.collect()


if __name__ == "__main__":
    if sys.argv[1:] == ["search"]:
        search_timing()
        sys.exit(0)
    main(sys.argv[1:] or ["minilm-l6", "smollm2-135m", "gemma-3-270m"])
