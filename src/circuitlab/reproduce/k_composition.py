"""Induction heads read previous-token heads through K-composition.

Elhage et al. (2021) explain the two-layer induction mechanism: a previous-token head in layer 0 writes "the
token before me was A" into each position, and the induction head's keys read it (K-composition), so the head
attends to the token after an earlier A. The composition score of a pair of heads,
``|W_QK(reader)^T W_OV(writer)|_F / (|W_QK(reader)|_F |W_OV(writer)|_F)`` for keys, measures this from the
weights alone (:func:`circuitlab.induction.composition_scores`).

Measured: the induction and previous-token heads of :func:`circuitlab.induction.find_induction_circuit`
(seeded repeated random sequences), and for each induction head the earlier head its keys read most.
"""

from __future__ import annotations

from circuitlab.core import check_seed, head_label
from circuitlab.induction import find_induction_circuit
from circuitlab.reproduce.registry import Citation, Finding, Measurement, NotApplicable, register, verdict

N_SEQS = 20


def measure(model, seed: int) -> Measurement:
    seed = check_seed(seed)
    circuit = find_induction_circuit(model, n_seqs=N_SEQS, seed=seed, method="zero")
    if not circuit.induction_heads:
        raise NotApplicable("no induction head was found in this model (best induction score "
                            f"{float(circuit.induction_scores.values.max()):.2f} < 0.3), so there is no reader to test")
    prev = set(circuit.previous_token_heads)
    prev_scores = circuit.previous_token_scores.values
    kc = circuit.k_composition_all.values
    rows, hits = [], 0
    for head in circuit.induction_heads:
        writer, score = circuit.strongest_k_writer(head, layers=range(head[0]))
        earlier = kc[: head[0], :, head[0], head[1]].flatten()
        hit = writer in prev
        hits += hit
        rows.append({"induction_head": head_label(head), "strongest_writer": head_label(writer),
                     "k_composition": score, "median_earlier": float(earlier.median()),
                     "writer_previous_token_score": float(prev_scores[writer]), "writer_is_previous_token_head": hit})
    n = len(rows)
    outcome = verdict(hits == n, hits > 0)
    figures = "; ".join(f"{r['induction_head']} reads {r['strongest_writer']} (K-comp {r['k_composition']:.2f} vs "
                        f"median {r['median_earlier']:.2f}; its previous-token score "
                        f"{r['writer_previous_token_score']:.2f})" for r in rows)
    why = (f"the strongest earlier K-composition writer is a previous-token head for {hits} of {n} induction "
           f"head(s) (previous-token heads: {', '.join(map(head_label, circuit.previous_token_heads)) or 'none'})")
    values = {"rows": rows, "previous_token_heads": sorted(prev), "induction_heads": circuit.induction_heads}
    evidence = [r for r in (circuit.previous_token_scores, circuit.induction_scores, circuit.k_composition)
                if r is not None]
    return Measurement(figures, outcome, why, values, evidence)


FINDING = register(Finding(
    id="induction-reads-previous-token-heads",
    citation=Citation("Elhage et al.", 2021, "A Mathematical Framework for Transformer Circuits",
                      "section 'Two-Layer Attention-Only Transformers': induction heads use K-composition with a "
                      "previous-token head", "https://transformer-circuits.pub/2021/framework/index.html"),
    claim="An induction head's keys read the output of a previous-token head in an earlier layer (K-composition).",
    published="Qualitative: in two-layer attention-only models, induction heads are formed by K-composition with "
              "a previous-token head in layer 0 (Elhage et al. 2021, composition-score figures of that section).",
    published_model="two-layer attention-only transformers trained by the authors",
    models=("zoo/attn-only-2l", "zoo/toy-lm", "gemma-3-270m"),
    measure=measure,
    rule="for each induction head (find_induction_circuit: score >= max(0.3, half the best)), find the earlier "
         "head with the highest K-composition into it; reproduced if that head is a previous-token head "
         "(found the same way) for every induction head, partly if for some, not reproduced if for none",
    seconds=0.5,
))
