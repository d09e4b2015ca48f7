"""Explanations as rationales: post-hoc attributions of a proxy model improve few-shot prompting (AMPLIFY).

``amplify-rationales-help-few-shot`` (Ma et al. 2023): rationales made from a small proxy classifier's post-hoc
attributions ("the key words ... are important clues to predict ...") added to the few-shot demonstrations raise
a language model's accuracy over the same demonstrations without rationales. Measured with
:func:`circuitlab.concepts.rationales.amplify` on SmolLM2-135M-Instruct (an instruction-tuned model 1,000 times
smaller than the paper's GPT-3.5; the paper's gain may need a model that reads instructions well, and a finding
that does not reproduce is a result), with random words of the same demonstrations as the control.

**Data**: :func:`circuitlab.tasks.mixed_reviews.mixed_reviews` (a review sentence and a neutral aside, written for
circuitlab): 40 training reviews per label for the proxy and a pool of 20 per label for the demonstrations, drawn
with each seed; 10 test reviews per label with adjectives the proxy never saw, the same for every seed. Four
demonstrations (two per label, the proxy's most confidently misclassified), rationales of three words, integrated
gradients with 32 points of a linear head on zoo/toy-lm (a small model trained on the default corpora, and a
HookedTransformer, whose blocks the attribution rebuilds; AMPLIFY's proxies were small models too); seeds 0 and 1
(few, because each prompt of about 250 tokens is a full forward pass of the 135M model on shared CPUs: 120 of
them).

**What had been seen when the rule was written**: nothing on a real model (only a random-init model and
zoo/toy-lm's plumbing). The thresholds were fixed before the first measurement and were not moved after.
"""

from __future__ import annotations

from typing import Any

from circuitlab.core import check_seed, model_name
from circuitlab.reproduce.registry import Citation, Finding, Measurement, NotApplicable, register, verdict

SETTINGS = dict(proxy="zoo/toy-lm", n_proxy=40, n_pool=20, n_queries=10, n_shots=4, k=3, steps=32, seeds=2)
#: (a) IG rationales beat no rationales by at least this much accuracy (mean over seeds)
GAIN = 0.05
#: (b) ... and beat random rationales by at least this much
OVER_RANDOM = 0.025


def judge(acc: dict[str, float]) -> tuple[bool, bool]:
    """The rule on the mean accuracy per condition (``"none"``, ``"ig"``, ``"random"``)."""
    return acc["ig"] - acc["none"] >= GAIN, acc["ig"] - acc["random"] >= OVER_RANDOM


def measure(model: Any, seed: int, **settings: Any) -> Measurement:
    seed = check_seed(seed)
    from circuitlab.concepts.rationales import CONDITIONS, amplify

    if getattr(model, "tokenizer", None) is None or not hasattr(model, "blocks"):
        raise NotApplicable("the finding prompts a decoder with English text, and this model is not one")
    opts = {**SETTINGS, **settings}
    r = amplify(model, proxy=opts["proxy"], n_proxy=opts["n_proxy"], n_pool=opts["n_pool"], n_queries=opts["n_queries"],
                n_shots=opts["n_shots"], k=opts["k"], steps=opts["steps"],
                seeds=tuple(seed + i for i in range(opts["seeds"])), progress=False)
    acc = {c: float(r.accuracy.values[i].mean()) for i, c in enumerate(CONDITIONS)}
    mar = {c: float(r.margin.values[i].mean()) for i, c in enumerate(CONDITIONS)}
    a, b = judge(acc)
    n_seeds = r.accuracy.shape[1]
    figures = (f"{2 * opts['n_queries']} test reviews, {opts['n_shots']} shots, {n_seeds} seeds; accuracy: none "
               f"{100 * acc['none']:.1f}%, IG rationales {100 * acc['ig']:.1f}%, random rationales "
               f"{100 * acc['random']:.1f}% (per seed: " + "; ".join(
                   f"{c} " + "/".join(f"{100 * float(v):.0f}" for v in r.accuracy.values[i])
                   for i, c in enumerate(CONDITIONS)) +
               f"); answer margin (nats): none {mar['none']:.3f}, IG {mar['ig']:.3f}, random {mar['random']:.3f}; "
               f"proxy accuracy {100 * sum(r.proxy_accuracy) / len(r.proxy_accuracy):.1f}%")
    why = (f"(a) IG rationales - none = {100 * (acc['ig'] - acc['none']):+.1f} points (needs >= "
           f"{100 * GAIN:g}): {'holds' if a else 'fails'}; (b) IG - random = {100 * (acc['ig'] - acc['random']):+.1f} "
           f"points (needs >= {100 * OVER_RANDOM:g}): {'holds' if b else 'fails'}")
    values = dict(accuracy=acc, margin=mar, per_seed=r.accuracy.values.tolist(),
                  margin_per_seed=r.margin.values.tolist(), proxy_accuracy=r.proxy_accuracy, prompts=r.prompts,
                  shots=[[{k: v for k, v in d.items() if k != "words"} for d in s] for s in r.shots],
                  settings=opts)
    r.accuracy.title = f"Few-shot accuracy with rationales ({model_name(model)})"
    return Measurement(figures, verdict(a and b, a), why, values, [r.accuracy, r.margin])


FINDING = register(Finding(
    id="amplify-rationales-help-few-shot",
    citation=Citation("Ma et al.", 2023, "Post Hoc Explanations of Language Models Can Improve Language Models "
                      "(NeurIPS 2023)", "Section 3 (AMPLIFY), Section 4 (results)", "https://arxiv.org/abs/2305.11426"),
    claim="Rationales built from a small proxy model's post-hoc attributions (the top attributed words of each "
          "demonstration), added to few-shot prompts, improve a language model's accuracy over the same prompts "
          "without rationales.",
    published="Improvements of about 10 to 25% over a wide range of BIG-Bench tasks (the paper's abstract, as the "
              "survey and the issue quote it), with GPT-3 and GPT-3.5 prompted and a fine-tuned GPT-2 or BERT as "
              "the proxy.",
    published_model="GPT-3 / GPT-3.5 (text-davinci), see the paper",
    models=("smollm2-135m",),
    measure=measure,
    rule=f"Mixed reviews (a review sentence and a neutral aside), 20 test reviews, 4 demonstrations (the proxy's "
         f"most confidently misclassified), 3-word rationales from integrated gradients of a linear-head proxy on "
         f"zoo/toy-lm, seeds 0 and 1: (a) the mean accuracy with IG rationales is at least {100 * GAIN:g} points "
         f"above the mean accuracy without rationales; (b) it is at least {100 * OVER_RANDOM:g} points above the "
         f"mean accuracy with random words of the same demonstrations as rationales. Reproduced if both hold, "
         f"partly if (a) only.",
    seconds=900.0,
))
