"""Probing: three published findings on what an encoder's representations and attention heads hold.

1. ``control-tasks-linear-more-selective`` (Hewitt & Liang 2019): a linear probe and an MLP-1 probe reach about
   the same part-of-speech accuracy, but the linear probe is far more *selective* (task accuracy minus the
   accuracy on a control task that pairs word types with random labels). Measured with
   :func:`circuitlab.probing.probe_sweep` (UPOS, probes ``linear`` and ``mlp``, three seeds) at one hook fixed in
   advance: the residual stream after half the blocks (``blocks.{L//2 - 1}.hook_resid_post``).
2. ``structural-probe-middle-layers`` (Hewitt & Manning 2019): a rank-64 distance probe recovers undirected
   dependency trees (UUAS, via the minimum spanning tree of the predicted distances) far better from the
   contextual layers than from the embedding layer or the linear-chain baseline, with the best layers in the
   middle of the network. Measured with :func:`circuitlab.probing.structural_sweep` at the embedding and every
   block's residual stream.
3. ``attention-heads-track-dependencies`` (Clark et al. 2019): single attention heads find specific dependency
   relations (the dependent's most-attended other word is its head) far more often than the best fixed-offset
   baseline. Measured with :func:`circuitlab.probing.head_sweep` for four relations fixed in advance (``dobj``,
   ``det``, ``pobj``, ``nsubj``; spaCy's ClearNLP-style labels, the scheme Clark et al. used). As in the paper, the
   best head per relation is chosen on the same sentences it is scored on.

**Data**: the default offline sentences (:func:`circuitlab.probing.default_sentences`: King James verses and
fortunes labelled by spaCy's ``en_core_web_sm``; 2,000 sentences, about 37,000 words), not the Penn Treebank of the
papers, so gold labels are a small parser's, not annotators'. The probes' train/dev/test split is by sentence,
seeded by the run's seed.

**What had been seen when the rules were written**: MiniLM-L6's figures for all three analyses at the settings
below (linear 95.3 / control 69.6 vs MLP 95.3 / 85.2 at L2; UUAS 63.7 at L2 vs 47.8 for the embedding and 51.2 for
the chain; dobj 74.0 for L2H0 vs 42.6 for the offset baseline). The thresholds come from the papers' own gaps (see
each rule), not from these figures, and were not moved after.
"""

from __future__ import annotations

from typing import Any

from circuitlab.core import check_seed, model_name
from circuitlab.reproduce.registry import Citation, Finding, Measurement, NotApplicable, register, verdict

#: the sentences every probing finding reads (default offline data)
N_SENTENCES = 2000


def _sentences(model: Any, settings: dict):
    """``settings["sentences"]`` if given (tests, other data), else the first ``n_sentences`` default ones."""
    from circuitlab.probing.sentences import labelled_sentences

    if getattr(model, "tokenizer", None) is None:
        raise NotApplicable("the findings read English sentences, and this model has no tokenizer")
    return labelled_sentences(settings.get("sentences"), settings.get("n_sentences", N_SENTENCES))


# -- 1. Control tasks (Hewitt & Liang 2019) -----------------------------------------------------------------------

#: (a) "similar accuracy": the two probes' UPOS accuracies differ by at most this much
SIMILAR_ACCURACY = 0.02
#: (b) the linear probe's selectivity exceeds the MLP's by at least this much (Hewitt & Liang: 26.0 vs 4.5)
SELECTIVITY_GAP = 0.05
CONTROL_SETTINGS = dict(n_sentences=N_SENTENCES, seeds=(0, 1, 2))


def control_hook(model: Any) -> str:
    """The hook the finding reads: the residual stream after half the blocks."""
    return f"blocks.{max(0, model.cfg.n_layers // 2 - 1)}.hook_resid_post"


def control_judge(linear: dict, mlp: dict) -> tuple[bool, bool, dict]:
    """The rule on each probe's ``{"accuracy", "control", "selectivity"}`` (fractions): (a) accuracies within
    :data:`SIMILAR_ACCURACY`; (b) linear selectivity - MLP selectivity >= :data:`SELECTIVITY_GAP`."""
    accuracy_gap = linear["accuracy"] - mlp["accuracy"]
    selectivity_gap = linear["selectivity"] - mlp["selectivity"]
    a = abs(accuracy_gap) <= SIMILAR_ACCURACY
    b = selectivity_gap >= SELECTIVITY_GAP
    return a, b, dict(accuracy_gap=accuracy_gap, selectivity_gap=selectivity_gap)


def control_measure(model, seed: int, **settings) -> Measurement:
    seed = check_seed(seed)
    from circuitlab.probing import probe_sweep

    opts = {**CONTROL_SETTINGS, **settings}
    sentences = _sentences(model, opts)
    hook = opts.get("hook") or control_hook(model)
    res = probe_sweep(model, sentences, "upos", hooks=[hook], probes=("linear", "mlp"),
                      seeds=tuple(seed + s for s in opts["seeds"]), split_seed=seed, linear=opts.get("linear"),
                      mlp=opts.get("mlp"), progress=False)
    v = res.values[:, 0].tolist()  # [probe, measure]
    measures = res.labels["measure"]
    linear, mlp = (dict(zip(measures, row)) for row in v)
    a, b, gaps = control_judge(linear, mlp)
    outcome = verdict(a and b, b)
    ci = res.meta["ci95"][:, 0].tolist()
    figures = (f"UPOS at {res.labels['layer'][0]} ({res.meta['n_words']['test']} test words, "
               f"{len(res.meta['seeds'])} seeds): linear accuracy {100 * linear['accuracy']:.1f} / control "
               f"{100 * linear['control']:.1f} (selectivity {100 * linear['selectivity']:.1f} +- "
               f"{100 * ci[0][2]:.1f}); MLP-1 {100 * mlp['accuracy']:.1f} / {100 * mlp['control']:.1f} (selectivity "
               f"{100 * mlp['selectivity']:.1f} +- {100 * ci[1][2]:.1f}); majority baseline "
               f"{100 * res.meta['majority_baseline']:.1f}")
    why = (f"(a) accuracy gap {100 * gaps['accuracy_gap']:+.1f} points, within +-{100 * SIMILAR_ACCURACY:.0f}: "
           f"{'holds' if a else 'fails'}; (b) selectivity gap {100 * gaps['selectivity_gap']:+.1f} points >= "
           f"+{100 * SELECTIVITY_GAP:.0f}: {'holds' if b else 'fails'}")
    values = dict(gaps, hook=hook, linear=linear, mlp=mlp, ci95=ci, seeds=res.meta["seeds"],
                  majority_baseline=res.meta["majority_baseline"], n_words=res.meta["n_words"])
    res.title = f"Probe accuracy and selectivity, UPOS ({model_name(model)})"
    return Measurement(figures, outcome, why, values, [res])


CONTROL_FINDING = register(Finding(
    id="control-tasks-linear-more-selective",
    citation=Citation("Hewitt & Liang", 2019, "Designing and Interpreting Probes with Control Tasks (EMNLP 2019)",
                      "Table 1 (part-of-speech, ELMo layer 1: linear vs MLP-1 probes)",
                      "https://arxiv.org/abs/1909.03368"),
    claim="A linear probe and an MLP-1 probe reach about the same part-of-speech accuracy, but the linear probe is "
          "much more selective: it does far worse on a control task that pairs word types with random labels.",
    published="part-of-speech on ELMo layer 1 (PTB): linear probe accuracy 97.2, control 71.2 (selectivity 26.0); "
              "MLP-1 accuracy 97.3, control 92.8 (selectivity 4.5) (Hewitt & Liang 2019, Table 1)",
    published_model="ELMo (layer 1), Penn Treebank",
    models=("minilm-l6", "smollm2-135m"),
    measure=control_measure,
    rule=f"At the residual stream after half the blocks, UPOS on the default sentences, 3 seeds: (a) the linear "
         f"and MLP-1 test accuracies differ by at most {100 * SIMILAR_ACCURACY:.0f} points; (b) the linear probe's "
         f"selectivity exceeds the MLP-1's by at least {100 * SELECTIVITY_GAP:.0f} points. Reproduced if both hold, "
         "partly if (b) holds alone, not reproduced otherwise.",
    seconds=45.0,
))


# -- 2. Structural probe (Hewitt & Manning 2019) -------------------------------------------------------------------

#: (a) the best layer's UUAS beats both the embedding layer's and the linear chain's by at least this much
#: (Hewitt & Manning: BERT-large 82.5 vs 48.9 for the chain; ELMo layer 1 77.0 vs 26.8 for ELMo's layer 0)
UUAS_MARGIN = 0.10
STRUCTURAL_SETTINGS = dict(n_sentences=N_SENTENCES, rank=64)


def structural_judge(uuas: list[float], baseline: float) -> tuple[bool, bool, dict]:
    """The rule on ``uuas`` per hook (embedding first, then blocks 0..L-1) and the chain's ``baseline``:
    (a) the best block beats both the embedding and the chain by :data:`UUAS_MARGIN`; (b) the best hook is a
    middle block: neither the embedding nor the last block."""
    best = max(range(len(uuas)), key=lambda i: (uuas[i], -i))
    a = uuas[best] - uuas[0] >= UUAS_MARGIN and uuas[best] - baseline >= UUAS_MARGIN
    b = 0 < best < len(uuas) - 1
    return a, b, dict(best_index=best, best_uuas=uuas[best], over_embedding=uuas[best] - uuas[0],
                      over_chain=uuas[best] - baseline)


def structural_measure(model, seed: int, **settings) -> Measurement:
    seed = check_seed(seed)
    from circuitlab.probing import structural_sweep

    opts = {**STRUCTURAL_SETTINGS, **settings}
    sentences = _sentences(model, opts)
    res = structural_sweep(model, sentences, hooks=opts.get("hooks"), rank=opts["rank"], seeds=(seed,),
                           split_seed=seed, progress=False)
    m = res.labels["measure"].index("uuas")
    layers = res.labels["layer"][:-1]
    uuas = res.values[:-1, m].tolist()
    chain = float(res.values[-1, m])
    a, b, v = structural_judge(uuas, chain)
    outcome = verdict(a and b, a or b)
    best = layers[v["best_index"]]
    figures = (f"UUAS on {res.meta['n_sentences']['test']} test sentences: "
               + ", ".join(f"{name} {100 * u:.1f}" for name, u in zip(layers, uuas))
               + f"; linear chain {100 * chain:.1f}; best {best}")
    why = (f"(a) best ({best}) {100 * v['best_uuas']:.1f} is {100 * v['over_embedding']:+.1f} over the embedding and "
           f"{100 * v['over_chain']:+.1f} over the chain, both >= +{100 * UUAS_MARGIN:.0f} needed: "
           f"{'holds' if a else 'fails'}; (b) the best is a middle layer (not the embedding, not the last): "
           f"{'holds' if b else 'fails'}")
    values = dict(v, best=best, layers=layers, uuas=uuas, chain=chain,
                  dspr=res.values[:, res.labels["measure"].index("dspr")].tolist())
    res.title = f"Structural probes ({model_name(model)})"
    return Measurement(figures, outcome, why, values, [res])


STRUCTURAL_FINDING = register(Finding(
    id="structural-probe-middle-layers",
    citation=Citation("Hewitt & Manning", 2019, "A Structural Probe for Finding Syntax in Word Representations "
                      "(NAACL 2019)", "Table 1 (UUAS of the distance probe) and the figure of UUAS by layer",
                      "https://aclanthology.org/N19-1419/"),
    claim="Dependency trees are embedded in a low-rank linear transformation of contextual word representations: "
          "the distance probe's minimum spanning trees recover undirected dependencies far better than the "
          "non-contextual embeddings or a linear-chain baseline, and best from the middle layers.",
    published="UUAS on PTB (WSJ test): BERT-large layer 15 82.5, BERT-base layer 7 79.8, ELMo layer 1 77.0; "
              "baselines: linear chain 48.9, ELMo's character layer 0 26.8 (Hewitt & Manning 2019, Table 1); "
              "UUAS peaks in the middle layers of BERT (by-layer figure)",
    published_model="BERT-base, BERT-large, ELMo; Penn Treebank",
    models=("minilm-l6", "smollm2-135m"),
    measure=structural_measure,
    rule=f"Rank-64 distance probes at the embedding and every block, on the default sentences, one seed: (a) the "
         f"best layer's test UUAS exceeds both the embedding layer's and the linear-chain baseline's by at least "
         f"{100 * UUAS_MARGIN:.0f} points; (b) the best layer is a middle one (neither the embedding nor the last "
         "block). Reproduced if both hold, partly if one.",
    seconds=60.0,
))


# -- 3. Attention heads (Clark et al. 2019) ------------------------------------------------------------------------

#: the relations tested, fixed in advance (Clark et al.'s examples, spaCy's labels)
RELATIONS = ("dobj", "det", "pobj", "nsubj")
#: a head "tracks" a relation when it beats the best fixed offset by at least this much (Clark et al.: dobj +46.8,
#: det +42.6, pobj +41.7, nsubj +13.0)
HEAD_MARGIN = 0.15


def heads_judge(best: dict[str, float], baseline: dict[str, float]) -> tuple[str, dict]:
    """The verdict from the best head's accuracy and the offset baseline per relation of :data:`RELATIONS`:
    a relation counts where ``best - baseline >= HEAD_MARGIN``; reproduced if at least 3 of the 4 count,
    partly if 1 or 2, not reproduced if none."""
    counted = [r for r in RELATIONS if best[r] - baseline[r] >= HEAD_MARGIN]
    n = len(counted)
    outcome = verdict(n >= 3, n >= 1)
    return outcome, dict(tracked=counted, n_tracked=n)


def heads_measure(model, seed: int, **settings) -> Measurement:
    seed = check_seed(seed)
    from circuitlab.probing import head_sweep

    sentences = _sentences(model, settings)
    res = head_sweep(model, sentences, RELATIONS, progress=False)
    best = {r: res.meta["best"][r]["accuracy"] for r in RELATIONS}
    baseline = {r: res.meta["baseline"][r]["accuracy"] for r in RELATIONS}
    verdict, v = heads_judge(best, baseline)
    parts = []
    for r in RELATIONS:
        b = res.meta["best"][r]
        parts.append(f"{r} L{b['layer']}H{b['head']} {100 * b['accuracy']:.1f} vs offset "
                     f"{res.meta['baseline'][r]['offset']:+d} {100 * baseline[r]:.1f} ({res.meta['counts'][r]} edges)")
    figures = f"best head per relation on {res.meta['n_sentences']} sentences: " + "; ".join(parts)
    why = (f"{v['n_tracked']} of {len(RELATIONS)} relations have a head >= {100 * HEAD_MARGIN:.0f} points above "
           f"the offset baseline ({', '.join(v['tracked']) or 'none'}); 3 needed for reproduced, 1 for partly")
    values = dict(v, best=best, baseline=baseline, heads={r: (res.meta["best"][r]["layer"],
                                                               res.meta["best"][r]["head"]) for r in RELATIONS},
                  counts=res.meta["counts"])
    res.title = f"Attention heads as dependency finders ({model_name(model)})"
    return Measurement(figures, verdict, why, values, [res])


HEADS_FINDING = register(Finding(
    id="attention-heads-track-dependencies",
    citation=Citation("Clark et al.", 2019, "What Does BERT Look At? An Analysis of BERT's Attention "
                      "(BlackboxNLP 2019)", "Section 4.2 and its figure of the best head per dependency relation",
                      "https://arxiv.org/abs/1906.04341"),
    claim="Particular attention heads track particular dependency relations: for a word with that relation, the "
          "head's most-attended other word is its syntactic head far more often than a fixed-offset baseline finds "
          "it.",
    published="best single head vs the best fixed offset (WSJ, dependent attends to head): dobj head 8-10 86.8 vs "
              "40.0; det head 8-11 94.3 vs 51.7; pobj head 9-6 76.3 vs 34.6; nsubj head 8-2 58.5 vs 45.5 "
              "(Clark et al. 2019, Section 4.2)",
    published_model="BERT-base (uncased)",
    models=("minilm-l6",),
    measure=heads_measure,
    rule=f"For dobj, det, pobj and nsubj on the default sentences (spaCy labels), the best head's accuracy minus the "
         f"best fixed-offset baseline's (offsets -5..5): a relation counts if the difference is at least "
         f"{100 * HEAD_MARGIN:.0f} points. Reproduced if at least 3 of the 4 count, partly if 1 or 2, not "
         "reproduced if none.",
    seconds=15.0,
    uses_seed=False,
))
