"""Superposition rises with sparsity: a ReLU toy model of 20 features in 5 dimensions represents only its 5 most
important features when they are dense, and more and more of them, in superposition, as they become sparse.

Elhage et al. (2022), section "Demonstrating Superposition": ``n = 20`` features, ``m = 5`` hidden dimensions,
importance ``0.7^i``, sparsity 0 to 0.999. Measured with :func:`circuitlab.features.toy.sparsity_sweep` at the
paper's sparsities: the number of features with ``||W_i|| >= 0.5`` at each.
"""

from __future__ import annotations

from circuitlab.core import check_seed
from circuitlab.features.toy import SWEEP_SPARSITIES, sparsity_sweep
from circuitlab.reproduce.registry import Citation, Finding, Measurement, register, verdict

N, M, DECAY = 20, 5, 0.7
THRESHOLD = 0.5  # ||W_i|| at or above which a feature counts as represented
RESTARTS = 2
MODELS = "toy ReLU models, 20 features in 5 dimensions (trained here)"


def measure(model, seed: int) -> Measurement:
    seed = check_seed(seed)
    sweep = sparsity_sweep(N, M, SWEEP_SPARSITIES, DECAY, threshold=THRESHOLD, restarts=RESTARTS, seed=seed)
    counts = [int(c) for c in sweep.represented.values]
    dpf = [float(d) for d in sweep.dimensions_per_feature.values]
    dense_ok = counts[0] <= M
    sparse_ok = counts[-1] >= 2 * M
    rises = all(b >= a for a, b in zip(counts, counts[1:]))
    outcome = verdict(dense_ok and sparse_ok and rises, counts[-1] > counts[0])
    pairs = ", ".join(f"S={s:g}: {c}" for s, c in zip(SWEEP_SPARSITIES, counts))
    figures = (f"features represented (||W_i|| >= {THRESHOLD}) {pairs}; dimensions per feature m/||W||^2 "
               f"{dpf[0]:.2f} -> {dpf[-1]:.2f}")
    why = (f"(a) {counts[0]} represented when dense ({'<=' if dense_ok else '>'} m = {M}); (b) {counts[-1]} at "
           f"S={SWEEP_SPARSITIES[-1]:g} ({'>=' if sparse_ok else '<'} 2m = {2 * M}); (c) the count "
           f"{'never falls' if rises else 'falls somewhere'} as sparsity rises")
    values = {"sparsities": list(SWEEP_SPARSITIES), "represented": counts, "dimensions_per_feature": dpf,
              "norms": sweep.norms.values.tolist()}
    return Measurement(figures, outcome, why, values, [sweep.norms, sweep.superposition, sweep.represented])


FINDING = register(Finding(
    id="superposition-rises-with-sparsity",
    citation=Citation("Elhage et al.", 2022, "Toy Models of Superposition",
                      "section 'Demonstrating Superposition' (n = 20, m = 5, importance 0.7^i)",
                      "https://transformer-circuits.pub/2022/toy_model/index.html"),
    claim="With dense features a ReLU toy model represents only its m most important features, like PCA; as the "
          "features become sparser it represents more and more of them in superposition.",
    published="Qualitative: at sparsity 0 the model learns the top 5 features orthogonally and drops the rest; at "
              "sparsities 0.7 to 0.999 it represents progressively more features in superposition (the paper's "
              "figure of ||W_i|| and superposition per feature).",
    published_model="toy ReLU output models trained by the authors",
    models=(MODELS,),
    measure=measure,
    rule=f"reproduced if (a) at sparsity 0 at most m = {M} features have ||W_i|| >= {THRESHOLD}, (b) at sparsity "
         f"{SWEEP_SPARSITIES[-1]:g} at least 2m = {2 * M} do, and (c) the count never falls as sparsity rises "
         f"through {', '.join(f'{s:g}' for s in SWEEP_SPARSITIES)}; partly if the sparsest model represents more "
         "features than the densest",
    seconds=5.0,
    loads_model=False,
))
