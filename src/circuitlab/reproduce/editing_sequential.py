"""Sequential edits degrade specificity (Meng et al. 2023, section 5; Gupta et al. 2024).

ROME was built for one edit; applied one after another, each computed on the already-edited model, its edits
pile up in one layer and the model starts to say the new objects for other subjects too. Measured here: ``K``
CounterFact-style edits (:mod:`circuitlab.tasks.counterfact`) with ROME at the MLP tracing peak, applied in turn
(the key covariance of the original model, as the reference code keeps it); after each edit, the neighbourhood
score over every case's neighbours (the share that still prefer their own answer to the edit's new object) and the
share of the edits so far that still hold.
"""

from __future__ import annotations

import contextlib

import torch

from circuitlab.core import model_name
from circuitlab.editing import key_covariance, rome
from circuitlab.editing.evaluate import sequence_logprobs
from circuitlab.reproduce.editing_rome_vs_finetuning import MEMIT_PAPER, TOKENS, editing_setup
from circuitlab.reproduce.registry import Citation, Finding, Measurement, register, verdict
from circuitlab.results import Result

DROP, SOME = 0.1, 0.02
K = 8


def _neighbourhood(model, neighbours) -> float:
    own = sequence_logprobs(model, [n[0] for n in neighbours], [n[1] for n in neighbours])
    new = sequence_logprobs(model, [n[0] for n in neighbours], [n[2] for n in neighbours])
    return float((own > new).double().mean())


def measure(model, seed: int) -> Measurement:
    cases, peak, _ = editing_setup(model, seed, K)
    C = key_covariance(model, peak, n_tokens=TOKENS).matrix
    neighbours = [(g.prompt, g.answer, c.new) for c in cases for g in c.neighbours]
    before = _neighbourhood(model, neighbours)
    curve, held = [], []
    with contextlib.ExitStack() as stack:
        for k, c in enumerate(cases):
            stack.enter_context(rome(model, *c.request, layer=peak, covariance=C, seed=seed).applied(model))
            curve.append(_neighbourhood(model, neighbours))
            done = cases[: k + 1]
            a = sequence_logprobs(model, [d.fact.prompt for d in done], [d.new for d in done])
            b = sequence_logprobs(model, [d.fact.prompt for d in done], [d.fact.answer for d in done])
            held.append(float((a > b).double().mean()))
    first, last = curve[0], curve[-1]
    outcome = verdict(last <= first - DROP, last < first - SOME or held[-1] < 1.0)
    figures = (f"{len(cases)} sequential ROME edits at layer {peak}: neighbourhood score {before:.2f} before, "
               f"{first:.2f} after 1 edit, {last:.2f} after {len(cases)} (curve {[round(v, 2) for v in curve]}); "
               f"edits still holding after each: {[round(v, 2) for v in held]}")
    why = (f"neighbourhood after {len(cases)} edits {last:.2f} vs after 1 {first:.2f}: drop {first - last:+.2f} "
           f"({'>=' if first - last >= DROP else '<'} {DROP}); edits still holding at the end {held[-1]:.2f}")
    res = Result(torch.tensor([curve, held], dtype=torch.float64), ("measure", "edits"),
                 {"measure": ["neighbourhood score", "edits still holding"],
                  "edits": [str(i + 1) for i in range(len(curve))]},
                 title=f"Sequential ROME edits ({model_name(model)})", metric="share", model=model_name(model))
    return Measurement(figures, outcome, why, dict(layer=peak, before=before, curve=curve, held=held), [res])


FINDING = register(Finding(
    id="sequential-edits-degrade-specificity",
    citation=MEMIT_PAPER,
    also=(Citation("Gupta et al.", 2024, "Model Editing at Scale leads to Gradual and Catastrophic Forgetting "
                   "(Findings of ACL 2024)", "Section 4", "https://arxiv.org/abs/2401.07453"),),
    claim="Applied one after another, ROME edits accumulate in one layer and specificity falls: other subjects "
          "increasingly take the edits' new objects.",
    published="Qualitative: MEMIT's scaling curves (GPT-J, up to 10,000 edits) show ROME's specificity and "
              "generalisation falling as edits accumulate; Gupta et al. report gradual then catastrophic forgetting "
              "over sequential ROME edits on GPT-2 XL and GPT-J.",
    published_model="GPT-J (MEMIT), GPT-2 XL and GPT-J (Gupta et al.)",
    models=("zoo/toy-lm", "gemma-3-270m"),
    measure=measure,
    rule=f"The neighbourhood score after {K} sequential ROME edits at the tracing peak is at least {DROP} below its "
         f"value after the first edit: reproduced; partly if it falls by more than {SOME}, or if some earlier edit "
         "no longer holds at the end.",
    seconds=300.0,
))
