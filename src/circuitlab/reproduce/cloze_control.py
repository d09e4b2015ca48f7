"""Prompt-probing controls (Zhong et al. 2021): part of a cloze probe's precision needs no fact.

``cloze-precision-needs-a-control``: Zhong, Friedman & Chen (2021) show that what a factual prompt retrieves mixes
*recall* of facts with *regularities* of the prompt and of the answer distribution that need no fact at all, and
argue that precision is to be read against controls that remove the fact. Measured with
:func:`circuitlab.probing.cloze.cloze_control` on the package's facts (:data:`circuitlab.tasks.factual.FACTS`) and
cloze templates (:data:`circuitlab.probing.cloze.CLOZE_TEMPLATES`): raw P@1 beside two controls that keep every
prompt's wording and remove the fact (the subject replaced by an invented name, one draw per fact; the same
prompts on a copy of the model whose transformer blocks have their weights shuffled), and the gain over the
stronger control.

The rule was fixed before anything was measured on a real model (only zoo/toy-lm's facts had been run, where the
controls score 0): it reads the mean over relations of raw P@1 and of the stronger control's P@1.
"""

from __future__ import annotations

from circuitlab.core import check_seed, model_name
from circuitlab.reproduce.registry import Citation, Finding, Measurement, NotApplicable, register, verdict

#: (a) the stronger control reaches at least this share of raw P@1 (mean over relations)
CONTROL_SHARE = 0.2
#: (b) the gain over the stronger control is at least this (P@1, mean over relations): the model still recalls facts
MIN_GAIN = 0.05
N_NAMES = 1


def judge(raw: float, control: float) -> tuple[bool, bool, dict]:
    """The rule on the mean-over-relations raw P@1 and the stronger control's P@1: (a) ``control >=
    CONTROL_SHARE * raw`` (and ``raw > 0``); (b) ``raw - control >= MIN_GAIN``."""
    share = control / raw if raw > 0 else float("nan")
    a = raw > 0 and control >= CONTROL_SHARE * raw
    b = raw - control >= MIN_GAIN
    return a, b, dict(share=share, gain=raw - control)


def measure(model, seed: int, **settings) -> Measurement:
    seed = check_seed(seed)
    from circuitlab.probing.cloze import CONTROL_METRICS, cloze_control

    if getattr(model, "tokenizer", None) is None or not hasattr(model, "unembed"):
        raise NotApplicable("cloze prompts need a decoder with a tokenizer (the next token is read)")
    res = cloze_control(model, settings.get("facts"), settings.get("templates"), n_names=N_NAMES, seed=seed)
    v = res.by_relation.values
    col = {m: i for i, m in enumerate(CONTROL_METRICS)}
    per_relation_control = v[:, [col["names P@1"], col["shuffled P@1"]]].amax(1)
    raw = float(v[:, col["P@1"]].mean())
    names, shuffled = float(v[:, col["names P@1"]].mean()), float(v[:, col["shuffled P@1"]].mean())
    control = float(per_relation_control.mean())
    a, b, extra = judge(raw, control)
    worst = max(range(len(v)), key=lambda i: float(per_relation_control[i]))
    relation = res.by_relation.labels["relation"][worst]
    n_facts = sum(len(f) for f in res.scores.facts.values())
    figures = (f"P@1 {100 * raw:.1f} (mean over {len(v)} relations, {n_facts} facts, 3 templates each); controls: "
               f"invented subject {100 * names:.1f}, shuffled blocks {100 * shuffled:.1f}, the stronger per relation "
               f"{100 * control:.1f} ({100 * extra['share']:.0f}% of raw); gain {100 * extra['gain']:+.1f}; highest "
               f"control: {relation} {100 * float(per_relation_control[worst]):.1f} vs raw "
               f"{100 * float(v[worst, col['P@1']]):.1f}")
    why = (f"(a) control {100 * control:.1f} >= {CONTROL_SHARE:.0%} of raw {100 * raw:.1f}: "
           f"{'holds' if a else 'fails'}; (b) gain {100 * extra['gain']:+.1f} >= {100 * MIN_GAIN:.0f} points: "
           f"{'holds' if b else 'fails'}")
    res.by_relation.title = f"Cloze P@k and its controls ({model_name(model)})"
    values = dict(raw=raw, names=names, shuffled=shuffled, control=control, **extra,
                  by_relation={r: dict(zip(CONTROL_METRICS, row)) for r, row in
                               zip(res.by_relation.labels["relation"], v.tolist())})
    return Measurement(figures, verdict(a and b, a), why, values, [res.by_relation])


FINDING = register(Finding(
    id="cloze-precision-needs-a-control",
    citation=Citation("Zhong et al.", 2021, "Factual Probing Is [MASK]: Learning vs. Learning to Recall (NAACL 2021)",
                      "Abstract; Section 5 (control experiments)", "https://arxiv.org/abs/2104.05240"),
    claim="Part of what a factual prompt retrieves needs no fact: prompts exploit regularities of the prompt and of "
          "the answer distribution, so a control that removes the fact reaches part of the raw precision, and the "
          "gain over the control, not raw precision, measures recall.",
    published="Qualitative: \"the training data used by these methods contains certain regularities of the "
              "underlying fact distribution, and all the existing prompt methods, including ours, are able to "
              "exploit them for better fact prediction\" (Zhong et al. 2021, abstract); their control experiments "
              "(Section 5) train prompts on randomly initialised BERT models. The paper's control figures are not "
              "restated here.",
    published_model="BERT-base-cased, LAMA (T-REx)",
    models=("smollm2-135m",),
    measure=measure,
    rule=f"On the package's facts and cloze templates, the mean over relations of raw P@1 and of the stronger "
         f"control's P@1 (per relation, the higher of an invented subject ({N_NAMES} draw per fact) and shuffled block "
         f"weights): (a) the control reaches at least {CONTROL_SHARE:.0%} of raw P@1; (b) the gain (raw - control) is "
         f"at least {100 * MIN_GAIN:.0f} points. Reproduced if both hold, partly if (a) holds alone, not reproduced "
         "otherwise.",
    seconds=60.0,
))
