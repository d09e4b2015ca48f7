"""Concept explanations and debugging with explanations: two findings.

1. ``tcav-sentiment-concepts`` (Kim et al. 2018's TCAV, on the sentiment example of circuitlab's issue 20): for
   negative reviews and the class score "negative", the concept "positive adjectives" has a low TCAV score
   compared with "neutral adjectives", and an unrelated concept ("animals") is not significant. Measured with
   :func:`circuitlab.concepts.sentiment.sentiment_tcav` (label-word classifier, held-out negative reviews, 10 CAVs
   per concept against random word lists, t-test against random-vs-random CAVs, Bonferroni over the 3 concepts) at
   three hooks fixed in advance: the residual stream after the blocks at a quarter, half and three quarters of the
   depth.
2. ``explanation-regularisation-ood`` (Ross et al. 2017; Joshi et al. 2022, ER-TEST): penalising the attribution
   to tokens marked irrelevant leaves in-distribution accuracy about unchanged and raises out-of-distribution
   accuracy. Measured with :func:`circuitlab.concepts.debugging.regularisation_experiment`: a linear head on a
   frozen model, trained on signed reviews where one name signs 95% of the positive ones (a shortcut), with and
   without the penalty (integrated gradients, 2 steps, on every signature's name, ``lam`` 10), over seeds 0, 1, 2
   (each its own training and test draws); out of distribution: the correlation removed and reversed.

The settings (layer a third of the way up, ``l2`` 1, ``lam`` 10, 2 IG steps, every name marked) were chosen on a
development seed (100), which the finding does not use. What had been seen when the rules were written: the TCAV
scores of smollm2-135m with these settings, and zoo/toy-lm's explanation-regularisation table for seeds 0-2 (it
gets "partly"; the thresholds were not moved). Measured after: TCAV on gemma-3-270m, and explanation
regularisation on smollm2-135m with these settings.
"""

from __future__ import annotations

from circuitlab.core import check_seed, model_name
from circuitlab.reproduce.registry import Citation, Finding, Measurement, NotApplicable, register, verdict

# -- 1. TCAV ------------------------------------------------------------------------------------------------

#: TCAV settings (see the module docstring)
TCAV_SETTINGS = dict(n_inputs=16, runs=10, set_size=15, n_random=60)
TCAV_CONCEPTS = ("positive adjectives", "neutral adjectives", "animals")


def tcav_hooks(model) -> list[int]:
    L = model.cfg.n_layers
    return sorted({max(0, L // 4), L // 2, min(L - 1, 3 * L // 4)})


def tcav_judge(scores: list[list[float]], significant: list[list[bool]]) -> tuple[bool, bool, dict]:
    """The rule on ``scores[concept][hook]`` and ``significant[concept][hook]`` (concepts in
    :data:`TCAV_CONCEPTS` order): (a) positive < neutral at a majority of hooks; (b) animals not significant at a
    majority of hooks."""
    H = len(scores[0])
    lower = sum(scores[0][j] < scores[1][j] for j in range(H))
    insignificant = sum(not significant[2][j] for j in range(H))
    return 2 * lower > H, 2 * insignificant > H, dict(positive_below_neutral=lower, animals_insignificant=insignificant,
                                                      hooks_tested=H)


def tcav_measure(model, seed: int, **settings) -> Measurement:
    seed = check_seed(seed)
    from circuitlab.concepts.sentiment import LABEL_WORDS, sentiment_tcav

    if model.tokenizer is None:
        raise NotApplicable("the finding reads English reviews, and this model has no tokenizer")
    words = LABEL_WORDS
    if any(len(model.to_tokens(w, prepend_bos=False)[0]) != 1 for w in words):
        words = (" good", " bad")
        if any(len(model.to_tokens(w, prepend_bos=False)[0]) != 1 for w in words):
            raise NotApplicable("neither ' positive'/' negative' nor ' good'/' bad' are single tokens of this model")
    opts = {**TCAV_SETTINGS, **settings}
    hooks = opts.pop("hooks", None) or tcav_hooks(model)
    res = sentiment_tcav(model, concepts=TCAV_CONCEPTS, hooks=hooks, words=words, seed=seed, **opts)
    scores = res.scores.values.tolist()
    sig = res.significant.tolist()
    a, b, v = tcav_judge(scores, sig)
    p = res.p_values.values.tolist()
    outcome = verdict(a and b, a or b)
    parts = []
    for j, h in enumerate(res.hooks):
        parts.append(f"{h}: positive {scores[0][j]:.2f} (p={p[0][j]:.2g}{'' if sig[0][j] else ', n.s.'}), neutral "
                     f"{scores[1][j]:.2f} (p={p[1][j]:.2g}{'' if sig[1][j] else ', n.s.'}), animals {scores[2][j]:.2f} "
                     f"(p={p[2][j]:.2g}{'' if sig[2][j] else ', n.s.'})")
    figures = (f"TCAV for the class {words[1]!r} on {res.scores.meta['n_inputs']} negative held-out reviews, "
               f"{opts['runs']} runs: " + "; ".join(parts))
    H = v["hooks_tested"]
    why = (f"(a) positive adjectives below neutral at {v['positive_below_neutral']} of {H} hooks: "
           f"{'holds' if a else 'fails'}; (b) animals not significant (Bonferroni) at {v['animals_insignificant']} "
           f"of {H} hooks: {'holds' if b else 'fails'}")
    values = dict(v, hooks=res.hooks, scores=scores, p_values=p, significant=sig, label_words=list(words),
                  concepts=list(TCAV_CONCEPTS))
    return Measurement(figures, outcome, why, values, [res])


TCAV_FINDING = register(Finding(
    id="tcav-sentiment-concepts",
    citation=Citation("Kim et al.", 2018, "Interpretability Beyond Feature Attribution: Quantitative Testing with "
                      "Concept Activation Vectors (TCAV) (ICML 2018)", "Sections 3 and 4 (TCAV, statistical "
                      "significance testing)", "https://arxiv.org/abs/1711.11279"),
    claim="For negative-sentiment inputs, the TCAV score of the concept 'positive adjectives' (towards the class "
          "'negative') is low compared with 'neutral adjectives', and a concept unrelated to the label is not "
          "statistically significant against random concepts.",
    published="Method paper: TCAV scores with a two-sided t-test against random CAVs and Bonferroni correction; "
              "concepts that fail the test are to be discarded. The paper's examples are image classifiers "
              "(e.g. 'stripes' for 'zebra'); this sentiment version is the expectation stated with circuitlab's "
              "issue 20 (its 'seed' example), not a figure from the paper.",
    published_model="GoogLeNet, Inception V3 (images); no text model",
    models=("smollm2-135m", "gemma-3-270m"),
    measure=tcav_measure,
    rule="At three hooks fixed in advance (residual stream after the blocks at L//4, L//2 and 3L//4), with 10 CAVs "
         "per concept: (a) the mean TCAV score of 'positive adjectives' is below that of 'neutral adjectives' at a "
         "majority of the hooks; (b) 'animals' is not significant (p >= 0.05/3) at a majority of the hooks. "
         "Reproduced if both hold, partly if one.",
    seconds=60.0,
))


# -- 2. Explanation regularisation ------------------------------------------------------------------------------

#: settings of the measurement (see the module docstring)
ER_SETTINGS = dict(seeds=(0, 1, 2), lam=10.0, l2=1.0, method="ig", steps=2, ig_steps=64, n_train=100, n_test=50,
                   n_attributed=8)
ID_TOLERANCE = 0.02  # (a): mean in-distribution accuracy falls by at most this much
OOD_GAIN = 0.05  # (b): mean OOD accuracy rises by at least this much, and rises in every seed
OOD = ("no correlation", "reversed")


def er_judge(accuracy, labels: dict) -> tuple[bool, bool, dict]:
    """The rule on ``accuracy [training, distribution, seed]`` (training: plain, regularised)."""
    d = labels["distribution"]
    ind = d.index("in distribution")
    ood = [d.index(x) for x in OOD]
    id_plain, id_reg = float(accuracy[0, ind].mean()), float(accuracy[1, ind].mean())
    ood_seed = accuracy[:, ood].mean(1)  # [training, seed]
    ood_plain, ood_reg = float(ood_seed[0].mean()), float(ood_seed[1].mean())
    every = bool((ood_seed[1] > ood_seed[0]).all())
    a = id_reg - id_plain >= -ID_TOLERANCE
    b = ood_reg - ood_plain >= OOD_GAIN and every
    return a, b, dict(id_plain=id_plain, id_regularised=id_reg, ood_plain=ood_plain, ood_regularised=ood_reg,
                      ood_up_every_seed=every)


def er_measure(model, seed: int, **settings) -> Measurement:
    seed = check_seed(seed)
    from circuitlab.concepts.debugging import regularisation_experiment

    if model.tokenizer is None:
        raise NotApplicable("the finding reads English reviews, and this model has no tokenizer")
    opts = {**ER_SETTINGS, **settings}
    opts["seeds"] = tuple(seed + s for s in opts["seeds"])
    res = regularisation_experiment(model, **opts)
    a, b, v = er_judge(res.accuracy.values, res.accuracy.labels)
    outcome = verdict(a and b, b)
    S = res.share.values
    figures = (f"seeds {list(opts['seeds'])}: in-distribution accuracy {v['id_plain']:.3f} -> "
               f"{v['id_regularised']:.3f}; "
               f"OOD accuracy (mean of correlation removed and reversed) {v['ood_plain']:.3f} -> "
               f"{v['ood_regularised']:.3f} (removed {res.mean('plain', 'no correlation'):.3f} -> "
               f"{res.mean('regularised', 'no correlation'):.3f}, reversed {res.mean('plain', 'reversed'):.3f} -> "
               f"{res.mean('regularised', 'reversed'):.3f}); shortcut share of IG {float(S[0].mean()):.3f} -> "
               f"{float(S[1].mean()):.3f}")
    why = (f"(a) in-distribution change {v['id_regularised'] - v['id_plain']:+.3f} >= -{ID_TOLERANCE}: "
           f"{'holds' if a else 'fails'}; (b) OOD change {v['ood_regularised'] - v['ood_plain']:+.3f} >= "
           f"+{OOD_GAIN} and up in every seed ({'yes' if v['ood_up_every_seed'] else 'no'}): "
           f"{'holds' if b else 'fails'}")
    values = dict(v, accuracy=res.accuracy.values.tolist(), share=S.tolist(), seeds=list(opts["seeds"]),
                  distributions=res.accuracy.labels["distribution"], layer=res.accuracy.meta["layer"])
    res.title = f"Explanation regularisation ({model_name(model)})"
    return Measurement(figures, outcome, why, values, [res])


ER_FINDING = register(Finding(
    id="explanation-regularisation-ood",
    citation=Citation("Joshi et al.", 2022, "ER-TEST: Evaluating Explanation Regularization Methods for Language "
                      "Models (Findings of EMNLP 2022)", "main results (in-distribution vs out-of-distribution "
                      "performance)", "https://arxiv.org/abs/2205.12542"),
    also=(Citation("Ross et al.", 2017, "Right for the Right Reasons: Training Differentiable Models by "
                   "Constraining their Explanations (IJCAI 2017)", "input-gradient penalty on annotated irrelevant "
                   "features", "https://arxiv.org/abs/1703.03717"),),
    claim="Explanation regularisation (a penalty on the attribution to tokens marked irrelevant) leaves "
          "in-distribution accuracy about unchanged and improves out-of-distribution accuracy.",
    published="Qualitative (paraphrased): ER-TEST reports that explanation regularisation generally improves OOD "
              "generalisation while in-distribution performance stays about the same; Ross et al. report that "
              "penalising input gradients on irrelevant features lets a model ignore a confounder that a plain model "
              "relies on.",
    published_model="fine-tuned pretrained Transformer language models (see the paper); Ross et al.: small "
                    "networks on Decoy MNIST and toy data",
    models=("zoo/toy-lm", "smollm2-135m"),
    measure=er_measure,
    rule=f"Over seeds 0, 1, 2: (a) the mean in-distribution accuracy with the penalty is at most {ID_TOLERANCE} below "
         f"the plain classifier's; (b) the mean OOD accuracy (the average of 'correlation removed' and 'reversed') "
         f"rises by at least {OOD_GAIN}, and rises in every seed. Reproduced if both hold, partly if (b) holds "
         "alone, not reproduced otherwise.",
    seconds=25.0,
))
