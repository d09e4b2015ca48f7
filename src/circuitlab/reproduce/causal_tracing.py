"""Causal tracing: MLPs at the last subject token in early-to-middle layers, attention at the last token later.

Meng et al. (2022) corrupted the subject of known facts with noise and restored one clean state at a time. Averaged
over facts (their Figure 2), two sites stood out: the MLP outputs at the *last subject token* in middle layers
(the "early site", which ROME then edits), and the attention outputs at the *last token* in later layers (the
"late site").

Measured with :func:`circuitlab.tracing.average_indirect_effect` (noise 3 sigma of the token embeddings, MLP and
attention restored over the default window) on facts the model knows (:func:`circuitlab.tasks.factual.known_facts`):
for a model of English, the hand-written facts of :data:`circuitlab.tasks.factual.FACTS`; for a zoo model trained
on the synthetic world (``zoo/toy-lm``), its facts asked with the template each never saw in training. ``seed``
picks which known facts (a seeded shuffle) and seeds the noise. A bootstrap over the facts (1000 resamples)
reports how often each part of the rule holds; the verdict is the rule on the full average.
"""

from __future__ import annotations

import random

import torch
from jaxtyping import Float

from circuitlab.core import check_seed, model_name
from circuitlab.reproduce.logit_lens import world_dir
from circuitlab.reproduce.registry import Citation, Finding, Measurement, NotApplicable, register, verdict
from circuitlab.tasks.factual import FACTS, known_facts, toy_facts
from circuitlab.tasks.toy_world import load_world
from circuitlab.tracing import POSITION_KINDS, average_indirect_effect

EARLY = 0.6  # (a): the MLP peak at the last subject token lies at relative depth <= EARLY ...
FALLS = 2.0  # ... and is at least FALLS times the mean over the last third of the layers
LATE = 0.5  # (b): the attention peak at the last token lies at relative depth >= LATE
#: facts traced (the paper: 1000 on GPT-2 XL) and noise samples per fact (the paper: 10), by kind of model
N_FACTS = {"real": 32, "zoo": 64}
SAMPLES = {"real": 3, "zoo": 10}
BOOTSTRAP = 1000
LAST_SUBJECT, LAST = POSITION_KINDS.index("last subject token"), POSITION_KINDS.index("last token")


def facts_for(model, seed: int, n: int | None = None) -> tuple[list, int, str]:
    """The facts traced on ``model``: ``n`` known facts in a seeded random order; also how many were known
    of how many, as text."""
    seed = check_seed(seed)
    folder = world_dir(model)
    candidates = toy_facts(load_world(folder)) if folder is not None else list(FACTS)
    known = known_facts(model, candidates)
    if not known:
        raise NotApplicable(f"the model answers none of the {len(candidates)} facts correctly")
    random.Random(seed).shuffle(known)
    n = n or N_FACTS["zoo" if folder is not None else "real"]
    return known[:n], len(known), f"{len(known)} of {len(candidates)} facts known"


def peak(curve: Float[torch.Tensor, " layer"]) -> int:
    return int(torch.argmax(curve))


def judge(mlp_last_subject: Float[torch.Tensor, " layer"], attn_last: Float[torch.Tensor, " layer"]
          ) -> tuple[bool, bool, dict]:
    """The rule on one pair of AIE curves over layers (see :data:`FINDING`'s rule)."""
    n = len(mlp_last_subject)
    depth = max(n - 1, 1)
    m, a = peak(mlp_last_subject), peak(attn_last)
    tail = mlp_last_subject[n - max(1, n // 3):].mean()
    early = m / depth <= EARLY and float(mlp_last_subject[m]) > 0 and float(mlp_last_subject[m]) >= FALLS * float(tail)
    late = a / depth >= LATE and float(attn_last[a]) > 0
    return early, late, dict(mlp_peak=m, attn_peak=a, mlp_peak_depth=m / depth, attn_peak_depth=a / depth,
                             mlp_peak_value=float(mlp_last_subject[m]), mlp_tail_mean=float(tail),
                             attn_peak_value=float(attn_last[a]))


def measure(model, seed: int, n_facts: int | None = None, samples: int | None = None) -> Measurement:
    seed = check_seed(seed)
    if model.tokenizer is None:
        raise NotApplicable("the finding reads factual sentences, and this model has no tokenizer")
    if model.cfg.attn_only:
        raise NotApplicable("the finding is about MLP outputs, and this model has no MLPs")
    facts, n_known, known_text = facts_for(model, seed, n_facts)
    zoo = world_dir(model) is not None
    samples = samples or SAMPLES["zoo" if zoo else "real"]
    aie = average_indirect_effect(model, facts, kinds=("mlp", "attn"), samples=samples, seed=seed, progress=False)
    mlp, attn = aie.values[0, LAST_SUBJECT], aie.values[1, LAST]
    early, late, v = judge(mlp, attn)

    per_fact = aie.meta["per_fact"]  # [fact, kind, position, layer]
    gen = torch.Generator().manual_seed(seed)
    held = torch.zeros(2)
    for _ in range(BOOTSTRAP):
        idx = torch.randint(len(facts), (len(facts),), generator=gen)
        e, l, _ = judge(per_fact[idx, 0, LAST_SUBJECT].mean(0), per_fact[idx, 1, LAST].mean(0))
        held += torch.tensor([float(e), float(l)])
    stable = (held / BOOTSTRAP).tolist()

    L = model.cfg.n_layers
    outcome = verdict(early and late, early or late)
    window = aie.meta["window"]["mlp"]
    figures = (f"{len(facts)} facts ({known_text}), {samples} noise samples each, window {window} of {L} layers: "
               f"MLP AIE at the last subject token peaks at layer {v['mlp_peak']} ({v['mlp_peak_value']:+.3f}; "
               f"relative depth {v['mlp_peak_depth']:.2f}); attention AIE at the last token peaks at layer "
               f"{v['attn_peak']} ({v['attn_peak_value']:+.3f}; depth {v['attn_peak_depth']:.2f}); "
               f"P(answer) clean {aie.meta['clean_prob']:.3f}, corrupted {aie.meta['corrupted_prob']:.3f}")
    why = (f"(a) MLP peak at depth {v['mlp_peak_depth']:.2f} {'<=' if v['mlp_peak_depth'] <= EARLY else '>'} "
           f"{EARLY}, peak {v['mlp_peak_value']:+.3f} vs {FALLS:g}x last-third mean {v['mlp_tail_mean']:+.3f}: "
           f"{'holds' if early else 'fails'} (in {stable[0]:.0%} of {BOOTSTRAP} bootstrap resamples of the facts); "
           f"(b) attention peak at depth {v['attn_peak_depth']:.2f} {'>=' if v['attn_peak_depth'] >= LATE else '<'} "
           f"{LATE}: {'holds' if late else 'fails'} (in {stable[1]:.0%} of resamples)")
    values = dict(v, n_facts=len(facts), n_known=n_known, samples=samples, window=window, n_layers=L,
                  mlp_last_subject=mlp.tolist(), attn_last=attn.tolist(), bootstrap_early=stable[0],
                  bootstrap_late=stable[1], clean_prob=aie.meta["clean_prob"],
                  corrupted_prob=aie.meta["corrupted_prob"], facts=[f.prompt for f in facts])
    aie.title = f"Average indirect effect over {len(facts)} known facts ({model_name(model)})"
    return Measurement(figures, outcome, why, values, [aie])


FINDING = register(Finding(
    id="causal-tracing-mlp-early-attention-late",
    citation=Citation("Meng et al.", 2022, "Locating and Editing Factual Associations in GPT "
                      "(NeurIPS 2022)", "Section 2 (causal tracing), Figures 1 and 2",
                      "https://arxiv.org/abs/2202.05262"),
    claim="Averaged over known facts with the subject corrupted by noise, restoring MLP outputs at the last subject "
          "token matters most in early-to-middle layers, and restoring attention outputs at the last token matters "
          "in later layers.",
    published="Qualitative, on the average indirect effect over 1000 known facts (Figure 2, window 10): a high "
              "effect of MLP states at the last subject token in middle layers (the 'early site') and of attention "
              "states at the last token in late layers (the 'late site'). Abstract: \"a distinct set of steps in "
              "middle-layer feed-forward modules that mediate factual predictions while processing subject tokens\".",
    published_model="GPT-2 XL (48 layers), also GPT-J (28 layers)",
    models=("gemma-3-270m", "smollm2-135m", "zoo/toy-lm"),
    measure=measure,
    rule=f"(a) the MLP's average indirect effect at the last subject token peaks at relative depth <= {EARLY} "
         f"(peak layer / (n_layers - 1)) and the peak is positive and at least {FALLS:g}x its mean over the last "
         f"third of the layers; (b) attention's average indirect effect at the last token peaks at relative depth "
         f">= {LATE} and is positive. Reproduced if both hold, partly if one.",
    seconds=600.0,
))
