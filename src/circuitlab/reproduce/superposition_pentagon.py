"""Five features in two dimensions: a pentagon at high sparsity.

Elhage et al. (2022), introduction and section "The Geometry of Superposition": five features of equal importance
embedded in two dimensions with a ReLU output. Dense, the model represents two of them orthogonally; sparse, all
five, as the vertices of a regular pentagon. Measured with :func:`circuitlab.features.toy.train` at sparsity 0
and 0.9, read with :func:`~circuitlab.features.toy.feature_norms` and
:func:`~circuitlab.features.toy.feature_angles`.
"""

from __future__ import annotations

from circuitlab.core import check_seed
from circuitlab.features.toy import angle_gaps, feature_angles, feature_norms, train
from circuitlab.reproduce.registry import Citation, Finding, Measurement, register, verdict

N, M = 5, 2
SPARSE, DENSE = 0.9, 0.0
THRESHOLD = 0.5  # ||W_i|| at or above which a feature counts as represented
TOLERANCE = 5.0  # degrees from 72 allowed for each gap between neighbouring features
MODELS = "toy ReLU models, 5 features in 2 dimensions (trained here)"


def measure(model, seed: int) -> Measurement:
    seed = check_seed(seed)
    toy = train(N, M, [DENSE, SPARSE], 1.0, seed=seed)
    norms = feature_norms(toy)
    angles = feature_angles(toy)
    dense_count = int((norms.values[0] >= THRESHOLD).sum())
    sparse_norms = [float(v) for v in norms.values[1]]
    gaps = [float(g) for g in angle_gaps(angles.values[1])]
    all_five = all(v >= THRESHOLD for v in sparse_norms)
    regular = all_five and all(abs(g - 72) <= TOLERANCE for g in gaps)
    dense_ok = dense_count == M
    outcome = verdict(regular and dense_ok, regular or dense_ok)
    figures = (f"dense: {dense_count} of 5 features represented; S={SPARSE:g}: norms "
               f"{', '.join(f'{v:.2f}' for v in sparse_norms)}, gaps between neighbours "
               f"{', '.join(f'{g:.1f}' for g in sorted(gaps))} degrees")
    why = (f"(a) at S={SPARSE:g} {'all five' if all_five else 'not all five'} features have ||W_i|| >= {THRESHOLD} "
           f"and the largest gap's distance from 72 degrees is {max(abs(g - 72) for g in gaps):.1f} "
           f"({'<=' if regular else 'not <='} {TOLERANCE:g}); (b) dense: {dense_count} represented "
           f"({'=' if dense_ok else '!='} m = {M})")
    values = {"dense_represented": dense_count, "sparse_norms": sparse_norms, "gaps": gaps,
              "angles": [float(a) for a in angles.values[1]]}
    return Measurement(figures, outcome, why, values, [norms, angles])


FINDING = register(Finding(
    id="superposition-pentagon",
    citation=Citation("Elhage et al.", 2022, "Toy Models of Superposition",
                      "introduction figure and section 'The Geometry of Superposition' (5 features, 2 dimensions)",
                      "https://transformer-circuits.pub/2022/toy_model/index.html"),
    claim="Five equally important features in two dimensions: dense, the model keeps two orthogonal features; "
          "sparse, it keeps all five as a regular pentagon.",
    published="Qualitative: with dense features the model learns an orthogonal basis of two features and drops "
              "the other three; as sparsity rises all five are stored, at high sparsity as a pentagon (the paper's "
              "intro figure).",
    published_model="toy ReLU output models trained by the authors",
    models=(MODELS,),
    measure=measure,
    rule=f"reproduced if (a) at sparsity {SPARSE:g} all five features have ||W_i|| >= {THRESHOLD} and every gap "
         f"between neighbouring directions is 72 +- {TOLERANCE:g} degrees, and (b) at sparsity 0 exactly {M} "
         "features have ||W_i|| >= 0.5; partly if one of (a), (b) holds",
    seconds=2.0,
    loads_model=False,
))
