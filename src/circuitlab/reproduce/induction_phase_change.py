"""Induction heads form in a phase change that coincides with the in-context learning improvement (Olsson et al.
2022, Argument 1); a one-layer model shows neither.

Olsson et al. trained small attention-only models and saw, in the models of two or more layers only, a short
window early in training in which induction heads appeared (prefix-matching scores jumped), the in-context
learning score (loss at the 500th token minus the 50th) fell sharply, and the training loss showed a bump.

Measured here on ``zoo/attn-only-2l`` and ``zoo/attn-only-1l``, from the curves :mod:`circuitlab.dynamics`
measured on 30 log-spaced checkpoints of their recipe retrained on one thread, shipped beside their weights
(``dynamics.json``, with the held-out sequences as ``heldout.txt``; ``python -m circuitlab.zoo dynamics NAME``
retrains and re-measures). Unlike Olsson et al.'s models, these train on synthetic sequences (random tokens with
a repeated segment; see :mod:`circuitlab.zoo.attn_only`), and the ICL score is measured on held-out sequences of
that distribution: the natural-text recipe (:mod:`circuitlab.zoo.attn_only_text`) formed no induction heads
within the CPU budget (docs/dynamics.md). The shipped weights were trained on two threads, so the run re-measures
them and reports how far they are from the last checkpoint of the one-thread run.
"""

from __future__ import annotations

import json

from circuitlab.core import as_model, check_seed, model_name
from circuitlab.dynamics import curves_from_json, measure_checkpoint, phase_changes
from circuitlab.models.loading import ZOO_DIR, ZOO_PREFIX
from circuitlab.reproduce.registry import Citation, Finding, Measurement, NotApplicable, register, verdict

ONE_LAYER = "zoo/attn-only-1l"
DYNAMICS_FILE = "dynamics.json"
HELDOUT_FILE = "heldout.txt"
# the detector's criterion (circuitlab.dynamics.phase_changes' defaults), fixed before measuring
WITHIN, MIN_FRACTION, MIN_INDUCTION_JUMP, MIN_ICL_JUMP = 2.0, 0.5, 0.2, 0.1


def _shipped(name: str):
    path = ZOO_DIR / name.removeprefix(ZOO_PREFIX)
    f = path / DYNAMICS_FILE
    if not name.startswith(ZOO_PREFIX) or not f.is_file():
        raise NotApplicable(f"the claim is about training; {name} ships no checkpoint curves ({DYNAMICS_FILE}); "
                            "zoo/attn-only-2l and zoo/attn-only-1l do")
    return curves_from_json(json.loads(f.read_text())), (path / HELDOUT_FILE).read_text()


def _phase(curves):
    return phase_changes(curves, within=WITHIN, min_fraction=MIN_FRACTION, min_induction_jump=MIN_INDUCTION_JUMP,
                         min_icl_jump=MIN_ICL_JUMP)


def _window(w, tokens_per_step: int) -> str:
    if not w.found:
        return f"none (at most {w.jump:.2f} of a range of {w.span:.2f} within a doubling)"
    return (f"steps {w.start / tokens_per_step:.0f}-{w.end / tokens_per_step:.0f} ({w.start:,.0f}-{w.end:,.0f} "
            f"tokens), {w.jump:.2f} of a range of {w.span:.2f}")


def measure(model, seed: int) -> Measurement:
    check_seed(seed)
    model = as_model(model)
    name = model_name(model)
    if model.cfg.n_layers < 2:
        raise NotApplicable(f"the claim contrasts a model of two or more layers with {ONE_LAYER}; this model has "
                            f"{model.cfg.n_layers} layer")
    curves, heldout = _shipped(name)
    one, _ = _shipped(ONE_LAYER)
    two_pc, one_pc = _phase(curves), _phase(one)
    # the shipped curves' last checkpoint is the shipped model: re-measure it
    now = measure_checkpoint(model, heldout, early=tuple(curves.meta["early"]), late=tuple(curves.meta["late"]),
                             stride=curves.meta["stride"], n_seqs=curves.meta["n_seqs"], seed=curves.meta["seed"])
    drift = max(abs(now.icl.score - float(curves.icl.values[-1])),
                float((now.prefix_matching.values - curves.prefix_matching.values[-1]).abs().max()))
    per = curves.meta["tokens_per_step"]
    pm2 = curves.prefix_matching.values.flatten(1).max(1).values
    pm1 = one.prefix_matching.values.flatten(1).max(1).values
    a = two_pc.induction.found and two_pc.icl.found and two_pc.coincide
    b = not one_pc.induction.found and not one_pc.icl.found
    i, j = two_pc.induction.start_index, two_pc.induction.end_index
    figures = (f"{name}: best prefix-matching score {pm2[0]:.2f} -> {pm2[-1]:.2f}, "
               f"jump {_window(two_pc.induction, per)}; "
               f"ICL score {curves.icl.values[0]:.2f} -> {curves.icl.values[-1]:.2f} nats "
               f"({curves.icl.values[i]:.2f} -> {curves.icl.values[j]:.2f} across the induction window), ICL "
               f"fall {_window(two_pc.icl, per)}; {ONE_LAYER}: best prefix matching {pm1[-1]:.2f}, ICL score "
               f"{one.icl.values[-1]:.2f} nats, induction jump {_window(one_pc.induction, per)}, ICL fall "
               f"{_window(one_pc.icl, per)}; the shipped weights re-measure within {drift:.3f} of the last "
               f"checkpoint")
    why = (f"(a) {name}: induction phase change {'found' if two_pc.induction.found else 'not found'}, ICL phase "
           f"change {'found' if two_pc.icl.found else 'not found'}, windows "
           f"{'overlap' if two_pc.coincide else 'do not overlap (or one is missing)'}: {'holds' if a else 'fails'}; "
           f"(b) {ONE_LAYER}: induction phase change {'found' if one_pc.induction.found else 'none'}, ICL phase "
           f"change {'found' if one_pc.icl.found else 'none'}: {'holds' if b else 'fails'}")
    values = {"two_layer": two_pc.to_json(), "one_layer": one_pc.to_json(), "tokens_per_step": per,
              "best_prefix_matching_final": float(pm2[-1]), "best_prefix_matching_final_one_layer": float(pm1[-1]),
              "icl_final": float(curves.icl.values[-1]), "icl_final_one_layer": float(one.icl.values[-1]),
              "recheck_drift": drift}
    return Measurement(figures, verdict(a and b, a or b), why, values, [curves.prefix_matching, curves.icl, one.icl])


FINDING = register(Finding(
    id="induction-phase-change",
    citation=Citation("Olsson et al.", 2022, "In-context Learning and Induction Heads",
                      "Argument 1 (macroscopic co-occurrence: the phase change)",
                      "https://transformer-circuits.pub/2022/in-context-learning-and-induction-heads/index.html"),
    claim="In attention-only models of two or more layers, induction heads form in a phase change early in "
          "training that coincides with a sharp improvement of in-context learning; one-layer models show neither.",
    published="Qualitative, with figures: small attention-only models of 2+ layers show a sudden rise of "
              "prefix-matching scores and a sudden fall of the ICL score (loss at token 500 minus token 50) in "
              "the same narrow window early in training (about 2.5e9-5e9 tokens), visible as a bump in the loss "
              "curve; the one-layer model shows no such change.",
    published_model="small attention-only transformers (1-6 layers) trained by the authors on natural text",
    models=("zoo/attn-only-2l",),
    measure=measure,
    rule=(f"with the phase-change criterion of circuitlab.dynamics (the largest move within one doubling of "
          f"training tokens is >= {MIN_FRACTION:.0%} of the curve's range and >= {MIN_INDUCTION_JUMP} of "
          f"prefix-matching score for the best head / >= {MIN_ICL_JUMP} nats of ICL score): reproduced if (a) the "
          f"2-layer model has an induction and an ICL phase change whose windows overlap, and (b) {ONE_LAYER} has "
          "neither; partly if one of (a), (b) holds"),
    seconds=5.0,
))
