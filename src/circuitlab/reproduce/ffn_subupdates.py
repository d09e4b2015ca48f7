"""FFN sub-updates: a few of the thousands of sub-updates of an upper MLP layer dominate its output.

Geva et al. (2022) write an MLP layer's output as a sum of sub-updates ``m_i * v_i`` (coefficient times value
vector, one per neuron) and read each in the vocabulary space; they find that a small number of sub-updates with
large coefficients dominate each update, and that the top tokens of those sub-updates are often coherent concepts.

Measured with :func:`circuitlab.ffn.sub_updates` at the last position of the fixed prompts of the logit-lens
finding (:func:`circuitlab.reproduce.logit_lens.prompts_for`), in every layer of the upper half: the share of
the summed scores ``|m_i| * ||v_i||`` held by the top 10 sub-updates, against the share 10 sub-updates would
hold if all were equal (``10 / d_mlp``). Only the first part of the claim (dominance) enters the verdict; the
coherence of the top tokens is a human judgement, so the report shows them (evidence) without scoring them.
"""

from __future__ import annotations

import statistics

from circuitlab.core import check_seed
from circuitlab.ffn import sub_updates
from circuitlab.reproduce.logit_lens import prompts_for
from circuitlab.reproduce.registry import Citation, Finding, Measurement, NotApplicable, register, verdict

TOP = 10
REPRODUCED, PARTLY = 10.0, 3.0  # the median top-10 share must be this many times the uniform share


def measure(model, seed: int) -> Measurement:
    seed = check_seed(seed)
    cfg = model.cfg
    if cfg.attn_only or not cfg.d_mlp:
        raise NotApplicable("the model has no MLP layers")
    layers = list(range(cfg.n_layers // 2, cfg.n_layers))
    prompts = prompts_for(model)
    shares: dict[int, list[float]] = {layer: [] for layer in layers}
    evidence = []
    for layer in layers:
        for i, prompt in enumerate(prompts):
            sub = sub_updates(model, prompt, layer, k=TOP)
            score = sub.score.values[0].abs()
            shares[layer].append(float(score.topk(TOP).values.sum() / score.sum()))
            if i == 0 and layer == layers[-1]:
                evidence.append(sub)
    uniform = TOP / cfg.d_mlp
    per_layer = {layer: statistics.median(v) for layer, v in shares.items()}
    overall = statistics.median([s for v in shares.values() for s in v])
    ratio = overall / uniform
    outcome = verdict(ratio >= REPRODUCED, ratio >= PARTLY)
    figures = (f"top {TOP} of {cfg.d_mlp} sub-updates hold a median {overall:.1%} of the layer's |m|*||v|| "
               f"({ratio:.0f}x the uniform {uniform:.2%}); by layer " +
               ", ".join(f"L{layer} {s:.1%}" for layer, s in per_layer.items()) +
               f"; {len(prompts)} prompts, last position")
    why = (f"median top-{TOP} share {overall:.1%} is {ratio:.1f}x the uniform share {uniform:.2%} "
           f"(reproduced at >= {REPRODUCED:.0f}x, partly at >= {PARTLY:.0f}x)")
    values = {"median_share": overall, "uniform_share": uniform, "ratio": ratio, "per_layer": per_layer,
              "shares": shares, "layers": layers, "n_prompts": len(prompts)}
    return Measurement(figures, outcome, why, values, evidence)


FINDING = register(Finding(
    id="ffn-few-sub-updates-dominate",
    citation=Citation("Geva et al.", 2022, "Transformer Feed-Forward Layers Build Predictions by Promoting "
                      "Concepts in the Vocabulary Space", "sections on sub-updates (EMNLP 2022)",
                      "https://arxiv.org/abs/2203.14680"),
    claim="In the upper MLP layers a few sub-updates (coefficient times value vector) dominate each layer's "
          "update, and their top tokens are often coherent.",
    published="Qualitative: a small number of sub-updates with high coefficients dominate the FFN update, and "
              "their top-scoring tokens are often interpretable concepts (Geva et al. 2022).",
    published_model="GPT-2 medium and a 16-layer WikiLM (Geva et al. 2022)",
    models=("zoo/toy-lm", "gemma-3-270m", "smollm2-135m"),
    measure=measure,
    rule=f"over the logit-lens prompts and the upper half of the layers, the median share of the summed "
         f"|m_i|*||v_i|| held by the top {TOP} sub-updates, divided by the uniform share {TOP}/d_mlp: reproduced if "
         f">= {REPRODUCED:.0f}, partly if >= {PARTLY:.0f}, else not reproduced (coherence of the top tokens is "
         "shown, not scored)",
    seconds=2.0,
    uses_seed=False,
))
