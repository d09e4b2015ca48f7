"""The two-feature phase diagram: not represented, dedicated dimension, superposition.

Elhage et al. (2022), section "Superposition as a Phase Change": two features in one dimension, the second
("extra") of relative importance 0.1 to 10, feature density 0.01 to 1. Dense features give the dimension to the
more important feature (the extra one is *not represented* when less important, has a *dedicated dimension* when
more important); sparse features share it antipodally (*superposition*). Measured with
:func:`circuitlab.features.toy.phase_diagram` on its default 9 x 9 grid, classified by
:func:`~circuitlab.features.toy.two_feature_phase` (threshold 0.5 on ``||W_i||``).
"""

from __future__ import annotations

from circuitlab.core import check_seed
from circuitlab.features.toy import PHASES, phase_diagram
from circuitlab.reproduce.registry import Citation, Finding, Measurement, register, verdict

SHARE = 0.8  # the share of rows that must show superposition when sparsest, and read in the expected order
MODELS = "toy ReLU models, 2 features in 1 dimension (trained here)"


def row_in_order(row: list[int], dense_phase: int) -> bool:
    """Whether a row of phases (by rising sparsity) is ``dense_phase`` up to some sparsity and superposition
    after it: at most one change, from the dense phase to superposition."""
    changes = [(a, b) for a, b in zip(row, row[1:]) if a != b]
    return row[0] == dense_phase and (not changes or changes == [(dense_phase, 2)])


def phase_verdict(codes: list[list[int]], rel: list[float], sparsities: list[float]) -> tuple[str, str, dict]:
    """The rule of this finding on a grid of phase codes ``[importance, sparsity]``: the verdict, why, and the
    parts' numbers."""
    order = sorted(range(len(sparsities)), key=lambda j: sparsities[j])
    rows = [[codes[i][j] for j in order] for i in range(len(rel))]
    sided = [(r, row) for r, row in zip(rel, rows) if r != 1]
    dense_ok = all(row[0] == (0 if r < 1 else 1) for r, row in sided)
    sparse_share = sum(row[-1] == 2 for row in rows) / len(rows)
    ordered = sum(row_in_order(row, 0 if r < 1 else 1) for r, row in sided) / max(1, len(sided))
    parts = [dense_ok, sparse_share >= SHARE, ordered >= SHARE]
    why = (f"(a) densest column: {'every' if dense_ok else 'not every'} row with r < 1 is not represented and with "
           f"r > 1 dedicated; (b) sparsest column: {sparse_share:.0%} of rows in superposition "
           f"({'>=' if parts[1] else '<'} {SHARE:.0%}); (c) {ordered:.0%} of rows with r != 1 read dense phase then "
           f"superposition ({'>=' if parts[2] else '<'} {SHARE:.0%})")
    return verdict(all(parts), sum(parts) >= 2), why, {"dense_ok": dense_ok, "sparse_share": sparse_share,
                                                        "ordered_share": ordered}


def measure(model, seed: int) -> Measurement:
    seed = check_seed(seed)
    diagram = phase_diagram(seed=seed)
    meta = diagram.phase.meta
    codes = diagram.phase.values.tolist()
    outcome, why, parts = phase_verdict(codes, meta["relative_importance"], meta["sparsity_grid"])
    counts = diagram.counts()
    figures = (f"{len(codes)} x {len(codes[0])} grid (relative importance 0.1-10 x density 0.01-1): "
               + ", ".join(f"{n} {name}" for name, n in counts.items()) + "; " + why.split("; ", 1)[0][4:])
    values = {"phases": codes, "relative_importance": meta["relative_importance"],
              "sparsity_grid": meta["sparsity_grid"], "counts": counts, **parts}
    return Measurement(figures, outcome, why, values, [diagram.phase, diagram.norms])


FINDING = register(Finding(
    id="superposition-two-feature-phases",
    citation=Citation("Elhage et al.", 2022, "Toy Models of Superposition",
                      "section 'Superposition as a Phase Change' (n = 2, m = 1 phase diagram)",
                      "https://transformer-circuits.pub/2022/toy_model/index.html"),
    claim="For two features in one dimension, the extra feature is not represented (less important) or gets the "
          "dimension (more important) when features are dense, and shares it in superposition when sparse.",
    published=f"Qualitative: three regions ({', '.join(PHASES)}) over relative importance 0.1-10 x feature "
              "density 0.01-1, empirical and theoretical diagrams agreeing, superposition at low density.",
    published_model="toy ReLU output models trained by the authors",
    models=(MODELS,),
    measure=measure,
    rule=f"on a 9 x 9 grid: reproduced if (a) at the densest sparsity (0) every row with relative importance r < 1 "
         f"is 'not represented' and every row with r > 1 'dedicated dimension', (b) at the sparsest (0.99) at least "
         f"{SHARE:.0%} of rows are in superposition, and (c) at least {SHARE:.0%} of rows with r != 1 change phase at "
         "most once as sparsity rises, from their dense phase to superposition; partly if two of (a)-(c) hold",
    seconds=20.0,
    loads_model=False,
))
