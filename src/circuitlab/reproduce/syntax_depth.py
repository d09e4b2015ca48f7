"""Word-level syntax low, sentence-level semantics high (Belinkov et al. 2017; Peters et al. 2018; Jawahar et al.
2019, as the survey of global explanations summarises them).

``word-syntax-low-sentence-semantics-high``: linear probes per layer (:func:`circuitlab.probing.depth_profile`)
for two word-level tasks (UPOS, dependency label) and three sentence-level ones (tense, voice, sentence type,
labelled from spaCy's parse, :mod:`circuitlab.tasks.sentence_labels`) on the default offline sentences; each
task's **expected layer** (the depth at which its decodability is gained, after Tenney et al. 2019) is compared
between the two levels.

The rule was written before the profile was measured on any real model (only zoo/toy-lm on template sentences with
stand-in labels had been run, for the tests); the number of sentences was lowered from 1,000 to 300 before any
real-model result was seen, for the CPU time a shared machine allowed. Depths: 0 is the embedding, ``l + 1`` the
output of block ``l``; on a model with more than 12 blocks the profile reads the embedding and 12 evenly spaced
block outputs (the last block always among them), to bound the activations held.
"""

from __future__ import annotations

from typing import Any

from circuitlab.core import check_seed, model_name
from circuitlab.reproduce.registry import Citation, Finding, Measurement, NotApplicable, register, verdict

N_SENTENCES = 300
#: (a) the mean expected layer of the sentence-level tasks exceeds the word-level tasks' by at least this share of
#: the model's depth (number of blocks)
MARGIN = 0.1
MAX_HOOKS = 12


def profile_hooks(model: Any) -> list[str]:
    """The embedding and every block's output, or ``MAX_HOOKS`` evenly spaced block outputs (ending at the last)."""
    n = model.cfg.n_layers
    blocks = list(range(n)) if n <= MAX_HOOKS else sorted({round((i + 1) * n / MAX_HOOKS) - 1
                                                          for i in range(MAX_HOOKS)})
    return ["blocks.0.hook_resid_pre"] + [f"blocks.{b}.hook_resid_post" for b in blocks]


def judge(expected: dict[str, float], level: dict[str, str], n_layers: int) -> tuple[bool, bool, dict]:
    """(a) mean expected layer of the sentence-level tasks - that of the word-level tasks >= ``MARGIN * n_layers``;
    (b) every sentence-level task's expected layer exceeds every word-level task's. A task with no gain over the
    embedding (NaN) counts at depth 0."""
    e = {t: (0.0 if v != v else v) for t, v in expected.items()}
    word = [e[t] for t in e if level[t] == "word"]
    sent = [e[t] for t in e if level[t] == "sentence"]
    gap = sum(sent) / len(sent) - sum(word) / len(word)
    a = gap >= MARGIN * n_layers
    b = min(sent) > max(word)
    return a, b, dict(gap=gap, word_mean=sum(word) / len(word), sentence_mean=sum(sent) / len(sent))


def measure(model, seed: int, **settings) -> Measurement:
    seed = check_seed(seed)
    from circuitlab.probing import depth_profile
    from circuitlab.probing.sentences import labelled_sentences

    if getattr(model, "tokenizer", None) is None:
        raise NotApplicable("the finding reads English sentences, and this model has no tokenizer")
    sentences = labelled_sentences(settings.get("sentences"), settings.get("n_sentences", N_SENTENCES))
    prof = depth_profile(model, sentences, hooks=settings.get("hooks") or profile_hooks(model), split_seed=seed,
                         min_class=settings.get("min_class", 10))
    tasks = prof.expected.labels["task"]
    expected = {t: float(prof.expected.values[i, 0]) for i, t in enumerate(tasks)}
    best = {t: int(prof.expected.values[i, 1]) for i, t in enumerate(tasks)}
    top = {t: float(prof.expected.values[i, 2]) for i, t in enumerate(tasks)}
    n_layers = model.cfg.n_layers
    a, b, extra = judge(expected, prof.level, n_layers)
    figures = ("expected layer (0 = embedding, " + f"{n_layers} = last block): "
               + ", ".join(f"{t} {expected[t]:.2f} (best at depth {best[t]}, {100 * top[t]:.1f}%)" for t in tasks)
               + f"; word-level mean {extra['word_mean']:.2f}, sentence-level mean {extra['sentence_mean']:.2f}; "
               f"{len(sentences)} default sentences")
    why = (f"(a) sentence-level mean - word-level mean = {extra['gap']:+.2f} >= {MARGIN * n_layers:.2f} "
           f"({MARGIN:.0%} of {n_layers} blocks): {'holds' if a else 'fails'}; (b) every sentence-level task above "
           f"every word-level one: {'holds' if b else 'fails'}")
    prof.normalised.title = f"Probe accuracy by layer over each task's maximum ({model_name(model)})"
    values = dict(expected=expected, best=best, max_accuracy=top, level=prof.level, n_test=prof.n, **extra,
                  normalised={t: prof.normalised.values[i].tolist() for i, t in enumerate(tasks)},
                  accuracy={t: prof.accuracy.values[i].tolist() for i, t in enumerate(tasks)},
                  layers=prof.accuracy.labels["layer"],
                  majority={t: float(prof.expected.values[i, 3]) for i, t in enumerate(tasks)})
    return Measurement(figures, verdict(a and b, a or b), why, values, [prof.normalised, prof.expected])


FINDING = register(Finding(
    id="word-syntax-low-sentence-semantics-high",
    citation=Citation("Jawahar et al.", 2019, "What Does BERT Learn about the Structure of Language? (ACL 2019)",
                      "Section 4 and Table 2 (SentEval probing tasks by layer)",
                      "https://aclanthology.org/P19-1356/"),
    also=(Citation("Belinkov et al.", 2017, "What do Neural Machine Translation Models Learn about Morphology? "
                   "(ACL 2017)", "Section 5 (part of speech by layer)", "https://aclanthology.org/P17-1080/"),
          Citation("Peters et al.", 2018, "Dissecting Contextual Word Embeddings: Architecture and Representation "
                   "(EMNLP 2018)", "Section 5", "https://aclanthology.org/D18-1179/")),
    claim="Word-level syntactic information (part of speech, dependency labels) is decoded best from lower layers, "
          "sentence-level information (tense and other semantic properties) from higher layers.",
    published="Qualitative: BERT's phrasal / surface information sits in the lower layers, syntactic features in "
              "the middle and semantic features at the top (Jawahar et al. 2019); POS is best in lower layers of NMT "
              "encoders (Belinkov et al. 2017) and of ELMo-style biLMs (Peters et al. 2018). Layer-wise figures of "
              "the papers are not restated here.",
    published_model="BERT-base (Jawahar et al. 2019); NMT encoders; biLMs",
    models=("minilm-l6", "smollm2-135m"),
    measure=measure,
    rule=f"Linear probes on {N_SENTENCES} default sentences (split by sentence, seeded): the expected layer of UPOS, "
         f"dependency label, tense, voice and sentence type. (a) The sentence-level tasks' mean expected layer "
         f"exceeds the word-level tasks' by at least {MARGIN:.0%} of the model's blocks; (b) every sentence-level "
         "task's expected layer exceeds every word-level task's. Reproduced if both hold, partly if one holds, not "
         "reproduced otherwise.",
    seconds=240.0,
))
