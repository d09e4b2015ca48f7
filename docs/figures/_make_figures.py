"""The figures of the analysis pages that this script draws (the others are drawn by their rooms' benchmarks).

    PYTHONPATH=src python docs/figures/_make_figures.py

On ``zoo/attn-only-2l`` (seconds on one CPU thread, deterministic by seed):

- ``induction-head-scores.svg``: induction and previous-token scores of every head (``induction.head_scores``,
  20 repeated random sequences, seed 0), drawn with matplotlib;
- ``circuits-induction-reference.svg``: the model's induction reference circuit (``circuits.induction_reference``,
  established by exact path patching), drawn by ``circuitlab.render.graph.circuit_svg``.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import circuitlab as cl  # noqa: E402
from circuitlab import circuits, induction  # noqa: E402
from circuitlab.render.graph import circuit_svg  # noqa: E402

HERE = Path(__file__).resolve().parent
plt.rcParams.update({"svg.hashsalt": "circuitlab", "font.size": 9})  # reproducible SVG ids


def head_scores(model) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(7.2, 2.4), constrained_layout=True)
    for ax, kind, title in zip(axes, ("induction", "previous_token"), ("induction score", "previous-token score")):
        res = induction.head_scores(model, kind=kind, n_seqs=20, seed=0)
        v = res.values.float()
        im = ax.imshow(v, vmin=0, vmax=1, cmap="Blues")
        for layer in range(v.shape[0]):
            for head in range(v.shape[1]):
                x = float(v[layer, head])
                ax.text(head, layer, f"{x:.2f}", ha="center", va="center", color="white" if x > 0.5 else "black")
        ax.set_xticks(range(v.shape[1]), [f"H{h}" for h in range(v.shape[1])])
        ax.set_yticks(range(v.shape[0]), [f"L{layer}" for layer in range(v.shape[0])])
        ax.set_title(f"{title}, zoo/attn-only-2l")
    fig.colorbar(im, ax=axes, shrink=0.8)
    fig.savefig(HERE / "induction-head-scores.svg", metadata={"Date": None})
    plt.close(fig)


def reference_circuit(model) -> None:
    svg, caption = circuit_svg(circuits.induction_reference(model))
    (HERE / "circuits-induction-reference.svg").write_text(svg, encoding="utf-8")
    print(caption)


if __name__ == "__main__":
    torch.set_num_threads(1)
    model = cl.load_model("zoo/attn-only-2l")
    head_scores(model)
    reference_circuit(model)
