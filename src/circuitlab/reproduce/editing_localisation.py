"""Does localisation inform editing? (Hase et al. 2023): the tracing effect at a layer barely predicts edit success.

Hase et al. edited every layer of GPT-J with ROME and compared, fact by fact, the causal-tracing effect of each
layer's MLP with how well the edit at that layer rewrote the fact: tracing explained almost none of the variation in
edit success. Measured here on CounterFact-style cases (:mod:`circuitlab.tasks.counterfact`): per fact, the
indirect effect of the MLP at the last subject token per layer (:func:`circuitlab.tracing.average_indirect_effect`,
``per_fact``), and ROME at each layer with the rewrite score ``(p_new_after - p_new_before) / (1 - p_new_before)``;
the R^2 of a least-squares line of rewrite score on tracing effect over all (fact, layer) pairs.
"""

from __future__ import annotations

import torch
from jaxtyping import Float

from circuitlab.core import model_name
from circuitlab.editing import evaluate_edit, key_covariance, rome
from circuitlab.reproduce.editing_rome_vs_finetuning import LAST_SUBJECT, TOKENS, editing_setup
from circuitlab.reproduce.registry import Citation, Finding, Measurement, register, verdict
from circuitlab.results import Result
from circuitlab.tracing import average_indirect_effect

WEAK, MODEST = 0.1, 0.3
N_CASES = 4
MAX_LAYERS = 6  # layers edited: every layer of a shallow model, else MAX_LAYERS spread over the depth


def r_squared(x: Float[torch.Tensor, " n"], y: Float[torch.Tensor, " n"]) -> float:
    """R^2 of the least-squares line of ``y`` on ``x`` (the squared Pearson correlation)."""
    x, y = x.double() - x.double().mean(), y.double() - y.double().mean()
    denom = float((x * x).sum() * (y * y).sum())
    return float((x * y).sum()) ** 2 / denom if denom > 0 else 0.0


def measure(model, seed: int) -> Measurement:
    cases, peak, curve = editing_setup(model, seed, N_CASES)
    L = model.cfg.n_layers
    layers = list(range(L)) if L <= MAX_LAYERS else sorted({round(i * (L - 1) / (MAX_LAYERS - 1))
                                                              for i in range(MAX_LAYERS)})
    aie = average_indirect_effect(model, [c.fact for c in cases], kinds="mlp", samples=3, seed=seed)
    tracing = aie.meta["per_fact"][:, 0, LAST_SUBJECT]  # [fact, layer]
    rewrite = torch.zeros(len(cases), len(layers), dtype=torch.float64)
    for j, layer in enumerate(layers):
        C = key_covariance(model, layer, n_tokens=TOKENS).matrix
        for i, c in enumerate(cases):
            s = evaluate_edit(model, rome(model, *c.request, layer=layer, covariance=C, seed=seed), c,
                              generate_tokens=2, seed=seed)
            rewrite[i, j] = (s.p_new_after - s.p_new_before) / max(1e-12, 1 - s.p_new_before)
    x = tracing[:, layers].flatten()
    r2 = r_squared(x, rewrite.flatten())
    best = layers[int(rewrite.mean(0).argmax())]
    outcome = verdict(r2 < WEAK, r2 < MODEST)
    figures = (f"{len(cases)} facts x {len(layers)} layers {layers}: R^2 of rewrite score on tracing effect "
               f"{r2:.3f}; tracing peak layer {peak}, best mean rewrite at layer {best}; mean rewrite by layer "
               f"{[round(v, 2) for v in rewrite.mean(0).tolist()]}")
    why = f"R^2 = {r2:.3f}: {'<' if r2 < WEAK else '>='} {WEAK} (weak), {'<' if r2 < MODEST else '>='} {MODEST}"
    res = Result(torch.stack([tracing[:, layers].mean(0), rewrite.mean(0)]), ("measure", "layer"),
                 {"measure": ["tracing effect (MLP, last subject token)", "ROME rewrite score"],
                  "layer": [str(l) for l in layers]}, title=f"Tracing vs editing by layer ({model_name(model)})",
                 metric="mean over facts", model=model_name(model))
    return Measurement(figures, outcome, why, dict(r2=r2, layers=layers, peak=peak, best=best,
                                                   rewrite=rewrite.tolist(), tracing=tracing.tolist()), [res])


FINDING = register(Finding(
    id="tracing-does-not-predict-edit-layer",
    citation=Citation("Hase et al.", 2023, "Does Localization Inform Editing? Surprising Differences in "
                      "Causality-Based Localization vs. Knowledge Editing in Language Models (NeurIPS 2023)",
                      "Section 4, Figure 1", "https://arxiv.org/abs/2301.04213"),
    claim="Across layers and facts, the causal-tracing effect of an MLP barely predicts how well ROME edits the fact "
          "at that layer.",
    published="GPT-J on CounterFact: tracing effects explain very little of the variance in rewrite score "
              "(Figure 1: the layer with the largest tracing effect is often not the best layer to edit; "
              "edit success depends mostly on the layer, not on the fact's tracing effect).",
    published_model="GPT-J (28 layers)",
    models=("zoo/toy-lm", "gemma-3-270m"),
    measure=measure,
    rule=f"R^2 of the least-squares line of ROME's rewrite score on the MLP tracing effect at the last subject token, "
         f"over (fact, layer) pairs: reproduced if below {WEAK}, partly if below {MODEST}.",
    seconds=300.0,
))
