"""A one-layer attention-only transformer is bigrams plus skip-trigrams (Elhage et al. 2021).

Elhage et al. write a one-layer attention-only model's logits, with its attention patterns fixed, as the direct path
(a bigram table ``W_E W_U``) plus, for each head, a sum over the attended tokens of its OV circuit rows: skip-trigrams
``source ... destination -> output`` whose strength is read from the QK and OV circuits. Measured here with
:func:`circuitlab.weights.path_expansion` on ``zoo/attn-only-1l``: (i) the expansion reproduces the model's logits
(the exactness of the description), and (ii) how much of the logits the direct path plus each head's top 1% of
skip-trigrams (ranked from the weights alone, :func:`circuitlab.weights.skip_trigrams`) explain, on the zoo's own
kind of text (seeded repeated random sequences, :func:`circuitlab.tasks.repeated.repeated_sequences`).
"""

from __future__ import annotations

from circuitlab.core import check_seed
from circuitlab.errors import CircuitlabError
from circuitlab.reproduce.registry import Citation, Finding, Measurement, NotApplicable, register, verdict
from circuitlab.tasks.repeated import repeated_sequences
from circuitlab.weights import path_expansion

EXACT = 1e-4  # max |sum of paths - logits| for the expansion to count as exact (float32 logits of size ~10)
SHARE = 0.5  # "well described": the direct path + top skip-trigrams explain at least half of the centred logits
TOP = 0.01  # the share of all d_vocab^3 triples kept per head
N_SEQS = 6


def measure(model, seed: int) -> Measurement:
    seed = check_seed(seed)
    V = model.cfg.d_vocab
    k = max(1, round(TOP * V ** 3))
    rep = repeated_sequences(model, n_seqs=N_SEQS, seed=seed)
    errors, direct, trigrams = [], [], []
    for row in rep.tokens:
        try:
            pe = path_expansion(model, row[None], k=k)
        except CircuitlabError as exc:
            raise NotApplicable(str(exc)) from None
        errors.append(pe.max_error)
        direct.append(float(pe.explained.values[1]))
        trigrams.append(float(pe.explained.values[2]))
    err, d, t = max(errors), sum(direct) / len(direct), sum(trigrams) / len(trigrams)
    exact, described = err <= EXACT, t >= SHARE
    outcome = verdict(exact and described, exact)
    figures = (f"path expansion max error {err:.1e}; share of the centred logits explained by the direct path "
               f"{d:.2f}, by the direct path + top {k:,} skip-trigrams per head ({TOP:.0%} of {V ** 3:,}) {t:.2f} "
               f"(mean of {N_SEQS} repeated random sequences)")
    why = (f"(i) max |sum of paths - logits| {err:.1e} {'<=' if exact else '>'} {EXACT:g}: "
           f"{'holds' if exact else 'fails'}; (ii) direct + top skip-trigrams explain {t:.2f} "
           f"{'>=' if described else '<'} {SHARE}: {'holds' if described else 'fails'}")
    values = {"max_error": err, "share_direct": d, "share_direct_top_trigrams": t, "k": k}
    return Measurement(figures, outcome, why, values, [pe.explained])


FINDING = register(Finding(
    id="one-layer-bigrams-skip-trigrams",
    citation=Citation("Elhage et al.", 2021, "A Mathematical Framework for Transformer Circuits",
                      "section 'One-Layer Attention-Only Transformers' (path expansion, skip-trigrams)",
                      "https://transformer-circuits.pub/2021/framework/index.html"),
    claim="A one-layer attention-only transformer is an ensemble of a bigram model (the direct path) and "
          "skip-trigram models (one per head), read from its weights.",
    published="Qualitative (paraphrased): one-layer attention-only transformers can be understood as an ensemble of "
              "a bigram model and several skip-trigram models; the path expansion with attention patterns fixed is "
              "exact. No share of the logits is quoted.",
    published_model="one-layer attention-only transformers trained by the authors",
    models=("zoo/attn-only-1l",),
    measure=measure,
    rule=f"reproduced if (i) the path expansion (direct path + one term per head + biases, patterns frozen) "
         f"reproduces the logits to within {EXACT:g} and (ii) the direct path plus each head's top {TOP:.0%} of "
         f"skip-trigrams explain >= {SHARE:.0%} of the centred logits (mean over {N_SEQS} seeded repeated random "
         "sequences); partly if only (i) holds",
    seconds=30,
))
