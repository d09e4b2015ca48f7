"""Induction heads need two layers, and ablating them removes most of the in-context loss drop.

Elhage et al. (2021) found induction heads in two-layer attention-only transformers and none in one-layer ones
(a one-layer model can only copy by skip-trigrams); Olsson et al. (2022, Argument 3) knocked induction heads
out of small attention-only models at test time and most of their in-context learning went with them.

Measured on repeated random sequences ``[BOS] r_1..r_n r_1..r_n`` (seeded): the best induction score of the
model and of the one-layer zoo model ``zoo/attn-only-1l``; the loss on ``r_2..r_n`` in the first copy (no
context to copy from) and in the repeated copy; and the repeated-copy loss with the model's induction heads
(found by :func:`circuitlab.induction.find_induction_circuit`) mean-ablated together.
"""

from __future__ import annotations

from circuitlab.core import as_model, check_seed
from circuitlab.induction import find_induction_circuit, head_scores
from circuitlab.reproduce.induction_real import half_nll
from circuitlab.reproduce.registry import Citation, Finding, Measurement, NotApplicable, register, verdict
from circuitlab.tasks.repeated import repeated_sequences

ONE_LAYER = "zoo/attn-only-1l"
THRESHOLD = 0.3  # find_induction_circuit's absolute floor for an induction head
REMOVED = 0.5  # the share of the in-context loss drop the ablation must remove
N_SEQS = 20


def measure(model, seed: int) -> Measurement:
    seed = check_seed(seed)
    if model.cfg.n_layers < 2:
        raise NotApplicable(f"the claim contrasts a model of two or more layers with {ONE_LAYER}; this model has "
                            f"{model.cfg.n_layers} layer")
    circuit = find_induction_circuit(model, n_seqs=N_SEQS, seed=seed, method="mean")
    best = float(circuit.induction_scores.values.max())
    one = head_scores(as_model(ONE_LAYER), "induction", n_seqs=N_SEQS, seed=seed)
    best_one = float(one.values.max())
    rep = repeated_sequences(model, n_seqs=N_SEQS, seed=seed)
    nll = half_nll(model, rep)  # [copy, sequence, token]
    first, second = float(nll[0].mean()), float(nll[1].mean())
    drop = first - second
    heads = circuit.induction_heads
    if heads and circuit.ablation is not None:
        ablated = circuit.ablation.loss_of("+".join(f"L{l}H{h}" for l, h in heads))
        removed = (ablated - circuit.ablation.baseline) / drop if drop > 0 else float("nan")
    else:
        ablated, removed = float("nan"), float("nan")

    two_vs_one = best >= THRESHOLD and best_one < THRESHOLD
    ablation_ok = removed == removed and removed >= REMOVED
    outcome = verdict(two_vs_one and ablation_ok, two_vs_one or ablation_ok)
    names = ", ".join(f"L{l}H{h} {float(circuit.induction_scores.values[l, h]):.2f}" for l, h in heads) or "none"
    figures = (f"induction heads {names} (best {best:.2f}) vs best {best_one:.2f} in {ONE_LAYER}; in-context loss "
               f"{first:.2f} -> {second:.2f} nats; ablating the induction heads removes {removed:.0%} of the drop")
    why = (f"(a) best induction score {best:.2f} {'>=' if best >= THRESHOLD else '<'} {THRESHOLD} here and "
           f"{best_one:.2f} "
           f"{'<' if best_one < THRESHOLD else '>='} {THRESHOLD} in {ONE_LAYER}: {'holds' if two_vs_one else 'fails'}; "
           f"(b) mean-ablating them removes {removed:.0%} of the {drop:.2f}-nat drop "
           f"({'>=' if ablation_ok else 'not >='} {REMOVED:.0%}): {'holds' if ablation_ok else 'fails'}")
    values = {"best_induction": best, "best_induction_one_layer": best_one, "induction_heads": heads,
              "first_half_loss": first, "repeated_half_loss": second, "ablated_loss": ablated,
              "drop_removed": removed}
    evidence = [circuit.induction_scores, one, circuit.ablation] if circuit.ablation is not None else \
        [circuit.induction_scores, one]
    return Measurement(figures, outcome, why, values, evidence)


FINDING = register(Finding(
    id="induction-heads-need-two-layers",
    citation=Citation("Elhage et al.", 2021, "A Mathematical Framework for Transformer Circuits",
                      "section 'Two-Layer Attention-Only Transformers', induction heads",
                      "https://transformer-circuits.pub/2021/framework/index.html"),
    also=(Citation("Olsson et al.", 2022, "In-context Learning and Induction Heads",
                   "Argument 3 (ablations in small attention-only models)",
                   "https://transformer-circuits.pub/2022/in-context-learning-and-induction-heads/index.html"),),
    claim="Induction heads form in a two-layer attention-only transformer but not in a one-layer one, and "
          "knocking them out removes most of the in-context loss drop.",
    published="Qualitative: two-layer attention-only models develop induction heads, one-layer models do not "
              "(Elhage et al. 2021); knocking out induction heads at test time greatly decreases in-context "
              "learning in small attention-only models (Olsson et al. 2022, Argument 3).",
    published_model="small attention-only transformers trained by the authors",
    models=("zoo/attn-only-2l", "zoo/toy-lm"),
    measure=measure,
    rule=f"reproduced if (a) the model's best induction score is >= {THRESHOLD} while {ONE_LAYER}'s is < "
         f"{THRESHOLD}, and (b) mean-ablating the induction heads together removes >= {REMOVED:.0%} of the drop "
         "from first-copy to repeated-copy loss; partly if one of (a), (b) holds",
    seconds=0.5,
))
