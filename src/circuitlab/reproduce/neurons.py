"""Neuron analysis: two published findings about individual neurons.

1. ``neuron-ablation-top-vs-random`` (Dalvi et al. 2019, linguistic correlation analysis): neurons ranked by an
   elastic-net probe's weight mass concentrate a property: a probe retrained on a small fraction of top-ranked
   neurons keeps most of the accuracy of all neurons, and removing the top neurons from the trained probe hurts
   far more than removing as many random neurons. Measured with :func:`circuitlab.neurons.ranking.rank_neurons`
   (``method="probe"``) and :func:`circuitlab.neurons.ablation.ablation_curves` for UPOS, on the MLP neurons of
   three blocks fixed in advance (at a quarter, half and three quarters of the depth), at 1, 5, 10 and 20 percent
   of them; the rule reads 10 percent.
2. ``cross-model-neuron-correlation`` (Bau et al. 2019): for a neuron of one model, the largest correlation with
   any neuron of an independently trained model (MaxCorr) is high for the top-ranked neurons, far above the median
   neuron's. Measured with :func:`circuitlab.neurons.ranking.correlation_ranking` between two models trained by
   different groups on different data with different tokenizers (smollm2-135m and gemma-3-270m by default),
   word-aligned on the same default sentences, MLP neurons of three blocks of each (quarter, half, three quarters).
   A null reference is reported beside it: the same top neurons against the other model's words shuffled.

**Data**: :func:`circuitlab.probing.default_sentences` (King James verses and fortunes labelled by spaCy), 400
sentences for the ablation finding and 300 for the correlation finding, drawn with the run's seed; the probes'
train/dev/test split is by sentence, seeded by the run's seed, and the ranking reads the training split only.

**What had been seen when the rules were written**: nothing on a real model. The thresholds and settings were
fixed from the papers' claims before the first measurement (only zoo/toy-lm's output on 60 template sentences had
been looked at, to check the plumbing) and were not moved after.
"""

from __future__ import annotations

from typing import Any

import torch

from circuitlab.core import check_seed, model_name
from circuitlab.reproduce.registry import Citation, Finding, Measurement, NotApplicable, register, verdict


def neuron_layers(model: Any) -> list[int]:
    """The blocks both findings read: at a quarter, half and three quarters of the depth."""
    L = model.cfg.n_layers
    return sorted({max(0, L // 4), L // 2, min(L - 1, 3 * L // 4)})


def _mlp_hooks(model: Any) -> list[str]:
    if getattr(model.cfg, "attn_only", False) or not getattr(model.cfg, "d_mlp", None):
        raise NotApplicable("the finding is about MLP neurons, and this model has none")
    if getattr(model, "tokenizer", None) is None:
        raise NotApplicable("the finding reads English sentences, and this model has no tokenizer")
    return [f"blocks.{l}.mlp.hook_post" for l in neuron_layers(model)]


def _sentences(settings: dict, seed: int):
    from circuitlab.probing.sentences import labelled_sentences

    return labelled_sentences(settings.get("sentences"), settings["n_sentences"], seed=seed)


# -- 1. Ablation (Dalvi et al. 2019) ------------------------------------------------------------------------------

ABLATION_SETTINGS = dict(n_sentences=400, task="upos", fractions=(0.01, 0.05, 0.1, 0.2), n_random=3)
#: the fraction of neurons the rule reads
RULE_FRACTION = 0.1
#: (a) the probe retrained on the top 10% keeps at least this share of the all-neuron probe's accuracy
KEEP_SHARE = 0.9
#: (b) removing the top 10% from the trained probe costs at least this many times what removing random 10% costs
REMOVE_RATIO = 2.0
#: (b) ... and at least this much accuracy in absolute terms
REMOVE_MIN_DROP = 0.02


def ablation_judge(values, labels: dict, full, k: str) -> tuple[bool, bool, dict]:
    """The rule on :func:`~circuitlab.neurons.ablation.ablation_curves`' ``values [protocol, measure, selection,
    k]`` and ``full [protocol, measure]`` at the column ``k``."""
    P, M, S, K = (labels[a] for a in ("protocol", "measure", "selection", "k"))
    j, acc = K.index(k), M.index("accuracy")
    retr, mask = P.index("retrained"), P.index("masked")
    keep_top = float(values[retr, acc, S.index("top keep"), j])
    keep_share = keep_top / float(full[retr][acc])
    drop_top = float(full[mask][acc]) - float(values[mask, acc, S.index("top remove"), j])
    drop_random = float(full[mask][acc]) - float(values[mask, acc, S.index("random remove"), j])
    a = keep_share >= KEEP_SHARE
    b = drop_top >= REMOVE_RATIO * max(drop_random, 0.0) and drop_top >= REMOVE_MIN_DROP
    return a, b, dict(keep_top=keep_top, keep_share=keep_share, drop_top=drop_top, drop_random=drop_random)


def ablation_measure(model, seed: int, **settings) -> Measurement:
    seed = check_seed(seed)
    from circuitlab.neurons.ablation import ablation_curves
    from circuitlab.neurons.ranking import rank_neurons
    from circuitlab.probing import collect

    opts = {**ABLATION_SETTINGS, **settings}
    hooks = opts.get("hooks") or _mlp_hooks(model)
    acts = collect(model, _sentences(opts, seed), hooks, progress=False, cache=opts.get("cache", True))
    max_iter = opts.get("max_iter", 500)  # the elastic-net probes' iteration cap
    ranking = rank_neurons(acts, task=opts["task"], split_seed=seed, max_iter=max_iter, progress=False)
    N = int(ranking.meta["order"].shape[0])
    ks = sorted({max(1, round(f * N)) for f in (*opts["fractions"], RULE_FRACTION)})
    k_rule = str(max(1, round(RULE_FRACTION * N)))
    cur = ablation_curves(acts, ranking, task=opts["task"], ks=ks, split_seed=seed, control_seed=seed,
                          random_seeds=tuple(seed + s for s in range(opts["n_random"])), max_iter=max_iter,
                          progress=False)
    V, full, lab = cur.values, cur.meta["full"], cur.labels
    a, b, v = ablation_judge(V, lab, full.tolist(), k_rule)
    outcome = verdict(a and b, a or b)
    P, M, S = lab["protocol"], lab["measure"], lab["selection"]
    acc, sel = M.index("accuracy"), M.index("selectivity")

    def row(protocol: str, selection: str) -> str:
        p, s = P.index(protocol), S.index(selection)
        return ", ".join(f"k={k}: {100 * float(V[p, acc, s, j]):.1f} (sel {100 * float(V[p, sel, s, j]):.1f})"
                         for j, k in enumerate(lab["k"]))

    figures = (f"UPOS, {N} MLP neurons ({', '.join(cur.meta['layers'])}), {cur.meta['n_words']['test']} test words; "
               f"all neurons: retrained {100 * float(full[1, acc]):.1f} (sel {100 * float(full[1, sel]):.1f}), "
               f"masked {100 * float(full[0, acc]):.1f}; majority {100 * cur.meta['majority_baseline']:.1f}. "
               f"Retrained, keep: top [{row('retrained', 'top keep')}]; random [{row('retrained', 'random keep')}]; "
               f"bottom [{row('retrained', 'bottom keep')}]. Masked, remove: top [{row('masked', 'top remove')}]; "
               f"random [{row('masked', 'random remove')}]; bottom [{row('masked', 'bottom remove')}]")
    why = (f"(a) retrained on the top {k_rule} ({100 * RULE_FRACTION:.0f}%): {100 * v['keep_top']:.1f}, "
           f"{100 * v['keep_share']:.1f}% of all neurons' accuracy, >= {100 * KEEP_SHARE:.0f}%: "
           f"{'holds' if a else 'fails'}; (b) removing them from the trained probe costs "
           f"{100 * v['drop_top']:.1f} points vs {100 * v['drop_random']:.1f} for random ones (needs >= "
           f"{REMOVE_RATIO:g}x and >= {100 * REMOVE_MIN_DROP:.0f} points): {'holds' if b else 'fails'}")
    values = dict(v, k_rule=int(k_rule), n_neurons=N, ks=ks, values=V.tolist(), full=full.tolist(),
                  labels=lab, hooks=hooks, random_sd=cur.meta["random_sd"].tolist(),
                  majority_baseline=cur.meta["majority_baseline"], n_words=cur.meta["n_words"])
    cur.title = f"Ablation curves, UPOS ({model_name(model)})"
    return Measurement(figures, outcome, why, values, [cur])


ABLATION_FINDING = register(Finding(
    id="neuron-ablation-top-vs-random",
    citation=Citation("Dalvi et al.", 2019, "What Is One Grain of Sand in the Desert? Analyzing Individual Neurons "
                      "in Deep NLP Models (AAAI 2019)", "linguistic correlation analysis; ablation and retraining "
                      "on selected neurons", "https://arxiv.org/abs/1812.09355"),
    claim="Neurons ranked by an elastic-net probe's weights concentrate a linguistic property: a small fraction of "
          "top-ranked neurons keeps most of the probe's accuracy, and removing them hurts the trained probe far more "
          "than removing random or bottom-ranked neurons.",
    published="Qualitative (paraphrased; the paper's tables were not available to quote here): in NMT and language "
              "model encoders, masking the top-ranked neurons in the trained classifier lowers property accuracy "
              "much more than masking random or bottom neurons, and a classifier retrained on a small top fraction "
              "of the neurons comes close to the accuracy of all neurons.",
    published_model="LSTM NMT encoders and LSTM language models (see the paper)",
    models=("minilm-l6", "smollm2-135m"),
    measure=ablation_measure,
    rule=f"UPOS, MLP neurons of three blocks (quarter, half, three quarters of the depth), 400 default sentences: "
         f"at the top {100 * RULE_FRACTION:.0f}% of the neurons, (a) a linear probe retrained on them alone reaches "
         f"at least {100 * KEEP_SHARE:.0f}% of the all-neuron probe's test accuracy; (b) removing them from the "
         f"trained elastic-net probe lowers its test accuracy by at least {REMOVE_RATIO:g} times as much as removing "
         f"as many random neurons (mean of 3 draws), and by at least {100 * REMOVE_MIN_DROP:.0f} points. "
         "Reproduced if both hold, partly if one.",
    seconds=600.0,  # minilm-l6: about 9 CPU-minutes at one thread (22 min wall on 2 busy shared cores)
))


# -- 2. Cross-model correlation (Bau et al. 2019) -----------------------------------------------------------------

CORRELATION_SETTINGS = dict(n_sentences=300, top_fraction=0.01)
#: (a) the top 1% neurons' mean MaxCorr is at least this
TOP_MAXCORR = 0.7
#: (b) ... and exceeds the median neuron's MaxCorr by at least this
ABOVE_MEDIAN = 0.2


def partner_of(model: Any) -> str:
    """The independently trained model a finding run compares with: gemma-3-270m, or smollm2-135m for Gemma."""
    return "smollm2-135m" if "gemma" in model_name(model).lower() else "gemma-3-270m"


def correlation_judge(top_mean: float, median: float) -> tuple[bool, bool]:
    return top_mean >= TOP_MAXCORR, top_mean - median >= ABOVE_MEDIAN


def correlation_measure(model, seed: int, **settings) -> Measurement:
    seed = check_seed(seed)
    from circuitlab.neurons.ranking import correlation_ranking, max_correlation, features
    from circuitlab.probing import collect
    from circuitlab.models.loading import as_any_model

    opts = {**CORRELATION_SETTINGS, **settings}
    hooks = opts.get("hooks") or _mlp_hooks(model)
    other = opts.get("other") or partner_of(model)
    other = as_any_model(other)
    other_hooks = opts.get("other_hooks") or _mlp_hooks(other)
    sents = _sentences(opts, seed)
    a = collect(model, sents, hooks, progress=False, cache=opts.get("cache", True))
    b = collect(other, sents, other_hooks, progress=False, cache=opts.get("cache", True))
    res = correlation_ranking(a, b, progress=False)
    maxcorr = res.values.flatten()
    maxcorr = maxcorr[~maxcorr.isnan()]
    N = maxcorr.numel()
    n_top = max(1, round(opts["top_fraction"] * N))
    top = maxcorr.sort(descending=True).values[:n_top]
    top_mean, median = float(top.mean()), res.meta["median"]
    # the null: the same top neurons against the other model's rows shuffled across words
    from circuitlab.neurons.ranking import common_rows

    ra, rb = common_rows([a, b])
    xa, where = features(a)
    xb, _ = features(b)
    order = res.meta["order"][:n_top]
    cols = torch.tensor([int((where[:, 0] == h).nonzero()[0]) + int(j) for h, j in order.tolist()])
    perm = torch.randperm(rb.numel(), generator=torch.Generator().manual_seed(seed))
    null, _, _ = max_correlation(xa[ra][:, cols], xb[rb][perm])
    null_mean = float(null.mean())
    a_ok, b_ok = correlation_judge(top_mean, median)
    outcome = verdict(a_ok and b_ok, a_ok or b_ok)
    q = torch.quantile(maxcorr, torch.tensor([0.5, 0.9, 0.99])).tolist()
    figures = (f"{model_name(model)} MLP neurons ({N}, {', '.join(res.labels['layer'])}) against "
               f"{model_name(other)}'s ({', '.join(other_hooks)}) on {res.meta['n_words']} shared words: MaxCorr "
               f"of the top {n_top} (1%) mean {top_mean:.3f} (best {float(top[0]):.3f}); median neuron {q[0]:.3f}, "
               f"90th percentile {q[1]:.3f}, 99th {q[2]:.3f}; null (same top neurons, words shuffled) mean "
               f"{null_mean:.3f}; dead neurons {res.meta['dead']}")
    why = (f"(a) top-1% mean MaxCorr {top_mean:.3f} >= {TOP_MAXCORR}: {'holds' if a_ok else 'fails'}; (b) it exceeds "
           f"the median {median:.3f} by {top_mean - median:.3f} >= {ABOVE_MEDIAN}: {'holds' if b_ok else 'fails'}")
    values = dict(top_mean=top_mean, top_best=float(top[0]), median=median, quantiles=q, null_mean=null_mean,
                  n_top=n_top, n_neurons=N, n_words=res.meta["n_words"], other=model_name(other),
                  ranking=res.meta["ranking"][:20])
    return Measurement(figures, outcome, why, values, [res])


CORRELATION_FINDING = register(Finding(
    id="cross-model-neuron-correlation",
    citation=Citation("Bau et al.", 2019, "Identifying and Controlling Important Neurons in Neural Machine "
                      "Translation (ICLR 2019)", "Section 3 (MaxCorr), Section 5 (results)",
                      "https://arxiv.org/abs/1811.01157"),
    also=(Citation("Dalvi et al.", 2019, "What Is One Grain of Sand in the Desert? (AAAI 2019)",
                   "cross-model correlation analysis", "https://arxiv.org/abs/1812.09355"),),
    claim="Independently trained models share neurons: the top neurons by MaxCorr (the largest correlation with any "
          "neuron of another model) correlate highly with a neuron of that model, far above the typical neuron.",
    published="Qualitative (paraphrased): Bau et al. rank the neurons of NMT encoders by their maximum correlation "
              "with neurons of other independently trained encoders; the top-ranked neurons are highly correlated "
              "across models and matter most for translation (erasing them hurts BLEU more than erasing others).",
    published_model="LSTM NMT encoders (English to several languages), see the paper",
    models=("smollm2-135m", "gemma-3-270m"),
    measure=correlation_measure,
    rule=f"MLP neurons of three blocks (quarter, half, three quarters of the depth) of the model and of its partner "
         f"(gemma-3-270m; smollm2-135m for Gemma), 300 default sentences, word-aligned: (a) the mean MaxCorr of the "
         f"top 1% of the model's neurons is at least {TOP_MAXCORR}; (b) it exceeds the median neuron's MaxCorr by at "
         f"least {ABOVE_MEDIAN}. Reproduced if both hold, partly if one.",
    seconds=180.0,  # smollm2-135m against gemma-3-270m: 135-235 s on 2 busy shared cores, loading included
))
