"""Induction heads copy and match: positive eigenvalues of their OV and K-composed QK circuits (Elhage et al. 2021).

Elhage et al. read copying from a head's OV circuit ``W_E W_V W_O W_U``: a head that raises the logit of the token it
attends to has mostly positive eigenvalues; an induction head's QK circuit, through K-composition with a
previous-token head, ``W_E W_Q W_K^T (W_E W_OV^prev)^T``, has positive eigenvalues too: it attends to the key whose
previous token matches the query token. Measured here with :func:`circuitlab.weights.copying_scores` (the copying
score ``sum(lambda) / sum(|lambda|)`` in float64) on the induction heads that the *behavioural* induction score
finds on repeated random sequences (:func:`circuitlab.induction.head_scores`, threshold 0.3 as in
``induction-heads-need-two-layers``), the keys read through all heads of the earlier layers.
"""

from __future__ import annotations

from circuitlab.core import check_seed, head_label
from circuitlab.induction import head_scores
from circuitlab.reproduce.registry import Citation, Finding, Measurement, NotApplicable, register, verdict
from circuitlab.weights import copying_scores

THRESHOLD = 0.3  # induction score of an induction head (as induction-heads-need-two-layers)
COPYING = 0.5  # copying score of "mostly positive eigenvalues" (positive ones carry >= 75% of sum |lambda|)
N_SEQS = 20


def measure(model, seed: int) -> Measurement:
    seed = check_seed(seed)
    if model.cfg.n_layers < 2:
        raise NotApplicable(f"K-composition needs two layers; this model has {model.cfg.n_layers}")
    scores = head_scores(model, "induction", n_seqs=N_SEQS, seed=seed)
    heads = [(l, h) for l in range(1, model.cfg.n_layers) for h in range(model.cfg.n_heads)
             if float(scores.values[l, h]) >= THRESHOLD]
    if not heads:
        return Measurement(f"no head has an induction score >= {THRESHOLD}", "not reproduced",
                           "no induction heads to read the eigenvalues of", {"induction_heads": []}, [scores])
    ov = copying_scores(model, heads=heads, path="ov", self_top1=False)
    kc = copying_scores(model, heads=heads, path="k_composed", self_top1=False)
    ov_v, kc_v = ov.copying.values.tolist(), kc.copying.values.tolist()
    copy_ok, match_ok = min(ov_v) >= COPYING, min(kc_v) >= COPYING
    outcome = verdict(copy_ok and match_ok, (copy_ok or match_ok) or (min(ov_v) > 0 and min(kc_v) > 0))
    per = ", ".join(f"{head_label(h)} (induction {float(scores.values[h]):.2f}): OV {a:+.3f}, K-composed {b:+.3f}"
                    for h, a, b in zip(heads, ov_v, kc_v))
    figures = f"copying scores sum(lambda)/sum(|lambda|) of the induction heads: {per}"
    why = (f"(a) lowest OV copying score {min(ov_v):+.3f} {'>=' if copy_ok else '<'} {COPYING}: "
           f"{'holds' if copy_ok else 'fails'}; (b) lowest K-composed copying score {min(kc_v):+.3f} "
           f"{'>=' if match_ok else '<'} {COPYING}: {'holds' if match_ok else 'fails'}")
    values = {"induction_heads": heads, "ov_copying": ov_v, "k_composed_copying": kc_v}
    return Measurement(figures, outcome, why, values, [scores, ov, kc])


FINDING = register(Finding(
    id="induction-heads-positive-eigenvalues",
    citation=Citation("Elhage et al.", 2021, "A Mathematical Framework for Transformer Circuits",
                      "sections 'Copying / Primarily Positive Eigenvalues' and 'Two-Layer Attention-Only "
                      "Transformers' (induction heads, K-composition term of the QK circuit)",
                      "https://transformer-circuits.pub/2021/framework/index.html"),
    claim="Induction heads copy (their OV circuits have mostly positive eigenvalues) and match (the K-composed term "
          "of their QK circuit has mostly positive eigenvalues).",
    published="Qualitative (paraphrased; the paper's eigenvalue plots were not available to quote here): copying "
              "heads' OV circuits have primarily positive eigenvalues, and the induction heads of the two-layer "
              "model have positive eigenvalues both in their OV circuits and in the K-composition term of their QK "
              "circuits.",
    published_model="two-layer attention-only transformers trained by the authors",
    models=("zoo/attn-only-2l",),
    measure=measure,
    rule=f"reproduced if every head of layer >= 1 with induction score >= {THRESHOLD} ({N_SEQS} seeded repeated "
         f"random sequences) has (a) OV copying score >= {COPYING} and (b) K-composed (keys through all earlier "
         f"heads) copying score >= {COPYING}; partly if one of (a), (b) holds or all scores are > 0",
    seconds=5,
))
