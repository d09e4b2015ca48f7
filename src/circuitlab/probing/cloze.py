"""Cloze probing of a decoder (LAMA-style, Petroni et al. 2019): does the model complete a relation's prompt with
the fact's answer?

Each fact (a subject and a one-token answer, e.g. "France" -> " Paris") is asked through several prompt templates
of its relation ("The capital of {subject} is", "{subject}'s capital city is", ...). The model's next-token
prediction after the prompt is ranked: **P@1** is the share of facts whose answer is the top token, **P@10** the
share with the answer among the top ten. Both are reported per template and per relation (the mean over the
relation's templates, with the standard deviation, minimum and maximum across templates: prompt wording matters,
Jiang et al. 2020, Zhang et al. 2022), beside a **frequency-only baseline** that ignores the subject and always
predicts the relation's most common answers among the facts (P@1: the single most common answer; P@10: the ten most
common), since a probe can score by exploiting such regularities (Zhong et al. 2021).

The facts default to :data:`circuitlab.tasks.factual.FACTS` (written for circuitlab; only their subject, answer
and relation are used here), the templates to :data:`CLOZE_TEMPLATES` (three per relation, also written for
circuitlab). Facts whose answer is not one token for the model are skipped and counted per relation:

    import circuitlab
    from circuitlab.probing import cloze

    res = cloze(circuitlab.load_model("smollm2-135m"))
    print(res.by_relation.to_dataframe())

Prompts are grouped by token length (no padding), run in chunks under ``max_memory``, and only the last position
is unembedded.

**Controls** (:func:`cloze_control`; Zhong et al. 2021, "Factual Probing Is [MASK]: Learning vs. Learning to
Recall"): a prompt can be completed from its surface regularities alone (the relation's words, the answer's prior),
without the fact. Two controls keep the prompt and remove the fact: ``"names"`` replaces each subject by an invented
name (:func:`control_names`, several draws per fact), so the prompt's wording stays and the subject carries no fact;
``"shuffled"`` asks the same prompts of a copy of the model whose transformer blocks have their weights permuted
(:func:`shuffled_model`; the embeddings and unembedding kept, as Zhong et al.'s "Rand M" control keeps BERT's
embeddings). The **gain** over the control is reported beside raw P@k: ``P@k - max(control P@k)``.
"""

from __future__ import annotations

import copy
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional, Sequence

import torch
from jaxtyping import Int
from torch import Tensor

from circuitlab.core import (DEFAULT_MAX_MEMORY, ModelLike, as_model, check_count, check_finite, check_max_memory,
                             check_seed, check_texts, final_residual, model_name, progress_bar, readout, resolution,
                             row_bytes, row_chunks, shorten, to_tokens)
from circuitlab.errors import InputError
from circuitlab.results import Bundle, Result

#: prompt templates per relation of :data:`circuitlab.tasks.factual.FACTS`, written for circuitlab; ``{subject}``
#: marks the subject, and the answer follows the template's last word after a space
CLOZE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "country_capital": ("The capital of {subject} is", "{subject}'s capital city is",
                        "The city that serves as the capital of {subject} is"),
    "country_language": ("The official language of {subject} is", "People in {subject} speak",
                         "In {subject}, the main language is"),
    "country_continent": ("{subject} is located in the continent of", "{subject} is part of the continent of",
                          "The continent where {subject} lies is"),
    "country_currency": ("The currency of {subject} is the", "In {subject}, people pay with the",
                         "{subject}'s official currency is the"),
    "city_country": ("{subject} is a city in the country of", "{subject} is located in",
                     "The city of {subject} lies in the country of"),
    "landmark_city": ("{subject} is located in the city of", "{subject} stands in the city of",
                      "To see {subject}, you travel to the city of"),
    "landmark_country": ("{subject} is located in the country of", "{subject} can be found in",
                         "To see {subject}, you travel to the country of"),
    "company_country": ("{subject} is a company based in", "{subject} has its headquarters in the country of",
                        "The company {subject} comes from"),
    "athlete_sport": ("{subject} plays the sport of", "{subject} is famous for playing",
                      "The sport {subject} is known for is"),
    "musician_instrument": ("{subject} played the", "{subject} was famous for playing the",
                            "The instrument {subject} is known for is the"),
    "scientist_field": ("{subject} was a scientist who worked in the field of", "{subject} is known for work in",
                        "The field of science {subject} worked in is"),
}

METRICS = ("P@1", "P@10")
RELATION_METRICS = ("P@1", "P@10", "P@1 sd", "P@10 sd", "P@1 min", "P@1 max", "baseline P@1", "baseline P@10")


@dataclass(repr=False)
class ClozeScores(Bundle):
    """What :func:`cloze` returns.

    ``by_relation``: ``[relation, metric]`` with metrics :data:`RELATION_METRICS` (the mean, standard deviation,
    minimum and maximum over the relation's templates, and the frequency-only baseline); ``by_template``:
    ``[prompt, metric]`` (P@1 and P@10 of each template, labelled ``"relation: template"``); ``ranks``: the rank of
    the answer (0 = top) for every (template, fact), in ``by_template``'s order with the facts of each relation in
    ``facts[relation]``'s order. ``skipped``: facts left out per relation because their answer is not one token.
    """

    by_relation: Result
    by_template: Result
    ranks: dict = field(default_factory=dict)
    facts: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"{'relation':<22} {'n':>4} {'P@1':>6} {'sd':>5} {'P@10':>6} {'sd':>5} {'base@1':>7} {'base@10':>8}"]
        vals = self.by_relation.values
        col = {m: i for i, m in enumerate(RELATION_METRICS)}
        for r, name in enumerate(self.by_relation.labels["relation"]):
            v = vals[r]
            lines.append(f"{name:<22} {len(self.facts.get(name, ())):>4} {v[col['P@1']]:>6.3f} "
                         f"{v[col['P@1 sd']]:>5.3f} {v[col['P@10']]:>6.3f} {v[col['P@10 sd']]:>5.3f} "
                         f"{v[col['baseline P@1']]:>7.3f} {v[col['baseline P@10']]:>8.3f}")
        mean = vals.mean(0)
        lines.append(f"{'mean over relations':<22} {sum(len(f) for f in self.facts.values()):>4} "
                     f"{mean[col['P@1']]:>6.3f} {mean[col['P@1 sd']]:>5.3f} {mean[col['P@10']]:>6.3f} "
                     f"{mean[col['P@10 sd']]:>5.3f} {mean[col['baseline P@1']]:>7.3f} "
                     f"{mean[col['baseline P@10']]:>8.3f}")
        return "\n".join(lines)


def fill(template: str, subject: str) -> str:
    """``template`` with ``{subject}`` replaced; a subject starting with "The " is lower-cased to "the " when it
    does not open the sentence ("To see the Eiffel Tower, ...")."""
    if "{subject}" not in template:
        raise InputError(f"the template {shorten(template)} has no {{subject}} slot; write one, e.g. "
                         "'The capital of {subject} is'.")
    if not template.startswith("{subject}") and subject.startswith("The "):
        subject = "the " + subject[4:]
    text = template.replace("{subject}", subject)
    if text != text.rstrip():
        raise InputError(f"the template {shorten(template)} ends with whitespace; end it at its last word (the answer "
                         "carries the space).")
    return text


def answer_ranks(model: ModelLike, prompts: Sequence[str], answers: Int[Tensor, " n"], *,
                 max_memory: int = DEFAULT_MAX_MEMORY, progress: bool = False) -> Int[Tensor, " n"]:
    """The rank of ``answers[i]`` among the next-token logits after ``prompts[i]``: the number of other tokens whose
    logit is higher, or equal within float noise (:func:`circuitlab.core.resolution` of the answer's logit in the
    model's dtype: a tie is not a win), so 0 = the model's clear top prediction."""
    model = as_model(model)
    max_memory = check_max_memory(max_memory)
    prompts = check_texts(prompts, "prompts", item="prompt")
    answers = torch.as_tensor(answers).long().reshape(-1)
    if len(answers) != len(prompts):
        raise InputError(f"answer_ranks got {len(prompts)} prompts but {len(answers)} answers; give one answer "
                         "token id per prompt.")
    rows = [to_tokens(model, p)[0] for p in prompts]
    groups: dict[int, list[int]] = {}
    for i, r in enumerate(rows):
        groups.setdefault(len(r), []).append(i)
    jobs = [(length, idx[s]) for length, idx in sorted(groups.items())
            for s in row_chunks(len(idx), row_bytes(model, length) + 8 * model.cfg.d_vocab_out, max_memory)]
    out = torch.zeros(len(rows), dtype=torch.long)
    answers = torch.as_tensor(answers).long()
    with torch.inference_mode():
        for _, idx in progress_bar(jobs, progress=progress, desc="cloze prompts", unit="batch"):
            tokens = torch.stack([rows[i] for i in idx]).to(model.cfg.device)
            resid, _ = final_residual(model, tokens)
            logits = readout(model, resid[:, -1]).float()
            check_finite(model, tokens, "the next-token logits", logits)
            target = logits.gather(-1, answers[idx].to(logits.device)[:, None])
            res = resolution(1.0, model.cfg.dtype, floor=0.0) * target.abs().clamp(min=1.0)
            out[torch.tensor(idx)] = ((logits >= target - res).sum(-1) - 1).cpu()  # minus the answer itself
    return out


def _single_token(model, answer: str) -> Optional[int]:
    ids = model.to_tokens(answer, prepend_bos=False)[0]
    return int(ids[0]) if len(ids) == 1 else None


def frequency_baseline(answers: Sequence[str], k: int) -> float:
    """P@k of always predicting the ``k`` most common of ``answers`` (the frequency-only baseline)."""
    answers = check_texts(answers, "answers", item="answer", allow_empty=True)
    if not answers:
        return float("nan")
    counts = Counter(answers)
    return sum(c for _, c in counts.most_common(k)) / len(answers)


def cloze(model: ModelLike, facts: Optional[Sequence] = None, templates: Optional[Mapping[str, Sequence[str]]] = None,
          *, relations: Optional[Sequence[str]] = None, max_memory: int = DEFAULT_MAX_MEMORY,
          progress: bool = False) -> ClozeScores:
    """P@1 and P@10 of ``model`` on cloze prompts, per template and per relation, with the spread over templates and
    the frequency-only baseline (see the module docstring).

    ``facts``: objects with ``subject``, ``answer`` (with its leading space) and ``relation`` (default
    :data:`~circuitlab.tasks.factual.FACTS`; a repeated (relation, subject, answer) counts once); ``templates``:
    relation -> templates with a ``{subject}`` slot (default :data:`CLOZE_TEMPLATES`); ``relations``: the relations
    to ask (default: every relation of the facts; those without a fact whose answer is one token for the model
    are then left out, their facts counted in ``skipped``).
    """
    model = as_model(model)
    if model.tokenizer is None:
        raise InputError("cloze needs a model with a tokenizer (prompts are text); load one with a tokenizer.")
    if facts is None:
        from circuitlab.tasks.factual import FACTS

        facts = FACTS
    if isinstance(facts, (str, bytes, dict)) or not isinstance(facts, Iterable):
        raise InputError(f"facts must be a list of facts (e.g. circuitlab.tasks.factual.FACTS); got {shorten(facts)}.")
    facts = list(facts)
    if templates is not None:
        if not isinstance(templates, Mapping):
            raise InputError(f"templates must map each relation to a list of templates with a {{subject}} slot, e.g. "
                             f"{{'home': ['{{subject}} lives in']}}; got {shorten(templates, 60)}.")
        templates = {r: check_texts(t, f"templates[{r!r}]", item="template") for r, t in templates.items()}
    templates = dict(CLOZE_TEMPLATES if templates is None else templates)
    for r, ts in templates.items():
        for t in ts:
            fill(t, "X")  # a template without its slot, or ending in whitespace, is an error naming it
    for i, f in enumerate(facts):
        if not all(isinstance(getattr(f, a, None), str) for a in ("subject", "answer", "relation")):
            raise InputError(f"facts[{i}] ({shorten(f)}) needs text attributes subject, answer and relation (e.g. a "
                             "circuitlab.tasks.factual.Fact).")
    if relations is not None:
        relations = check_texts(relations, "relations", item="relation")
    names = list(dict.fromkeys(f.relation for f in facts)) if relations is None else list(relations)
    if not names:
        raise InputError("cloze got no facts; give facts with subject, answer and relation.")
    missing = [r for r in names if not templates.get(r)]
    if missing:
        raise InputError(f"no templates for relations {missing}; give templates={{relation: ['... {{subject}} ...']}} "
                         f"(templates exist for {sorted(templates)}).")
    by_rel: dict[str, list[tuple[str, str, int]]] = {}
    skipped: dict[str, int] = {}
    for r in names:
        seen, kept, skip = set(), [], 0
        for f in facts:
            if f.relation != r or (f.subject, f.answer) in seen:
                continue
            seen.add((f.subject, f.answer))
            tid = _single_token(model, f.answer)
            if tid is None:
                skip += 1
            else:
                kept.append((f.subject, f.answer, tid))
        skipped[r] = skip
        if kept:
            by_rel[r] = kept
        elif relations is not None:
            raise InputError(f"relation {shorten(r)} has no fact whose answer is one token for this model ({skip} "
                             "skipped); leave it out of relations=[...] or give single-token answers.")
    if not by_rel:
        raise InputError(f"no fact has an answer that is one token for this model (skipped per relation: {skipped}); "
                         "give facts with single-token answers.")
    names = [r for r in names if r in by_rel]  # relations left without a scorable fact: counted in skipped
    prompts, answers, rows = [], [], []
    for r in names:
        for t in templates[r]:
            rows.append((r, t))
            for subject, _, tid in by_rel[r]:
                prompts.append(fill(t, subject))
                answers.append(tid)
    ranks = answer_ranks(model, prompts, torch.tensor(answers), max_memory=max_memory, progress=progress)
    per_template, rank_lists, at = [], {}, 0
    for r, t in rows:
        n = len(by_rel[r])
        rk = ranks[at:at + n]
        at += n
        rank_lists[f"{r}: {t}"] = rk
        per_template.append([float((rk < 1).double().mean()), float((rk < 10).double().mean())])
    tmpl = torch.tensor(per_template)
    rel_rows, at = [], 0
    for r in names:
        m = len(templates[r])
        block = tmpl[at:at + m]
        at += m
        sd = block.std(0, unbiased=False)
        answers_r = [a for _, a, _ in by_rel[r]]
        rel_rows.append([block[:, 0].mean(), block[:, 1].mean(), sd[0], sd[1], block[:, 0].min(), block[:, 0].max(),
                         frequency_baseline(answers_r, 1), frequency_baseline(answers_r, 10)])
    name = model_name(model)
    n_facts = sum(len(v) for v in by_rel.values())
    common = dict(model=name, task=f"cloze: {n_facts} facts, {len(names)} relations, {len(rows)} templates")
    by_relation = Result(values=torch.tensor(rel_rows, dtype=torch.float32), axes=("relation", "metric"),
                         labels={"relation": names, "metric": list(RELATION_METRICS)}, title="Cloze P@k per relation",
                         metric="share of facts with the answer in the top k; mean, sd, min, max over templates; "
                                "frequency-only baseline", meta={"skipped": skipped}, **common)
    by_template = Result(values=tmpl, axes=("prompt", "metric"),
                         labels={"prompt": [f"{r}: {t}" for r, t in rows], "metric": list(METRICS)},
                         title="Cloze P@k per template", metric="share of facts with the answer in the top k",
                         **common)
    return ClozeScores(by_relation=by_relation, by_template=by_template, ranks=rank_lists,
                       facts={r: [(s, a) for s, a, _ in v] for r, v in by_rel.items()}, skipped=skipped)


# ---------------------------------------------------------------------------------------------------------
# Controls (Zhong et al. 2021): the prompt's surface kept, the fact removed
# ---------------------------------------------------------------------------------------------------------

CONTROLS = ("names", "shuffled")
CONTROL_METRICS = ("P@1", "P@10", "names P@1", "names P@10", "shuffled P@1", "shuffled P@10", "gain P@1", "gain P@10")

#: syllables of the invented names (:func:`control_names`), written for circuitlab
_ONSETS = ("Bra", "Cel", "Dor", "Fen", "Gal", "Hes", "Jor", "Kel", "Lum", "Mir", "Nor", "Pel", "Quen", "Rav", "Sel",
           "Tor", "Ulm", "Vel", "Wen", "Zar")
_MIDDLES = ("a", "e", "i", "o", "u", "an", "en", "or", "il", "ar")
_CODAS = ("bury", "dale", "via", "ton", "mere", "wick", "ria", "stad", "ven", "holm")


def control_names(n: int, seed: int = 0, avoid: Sequence[str] = ()) -> list[str]:
    """``n`` invented proper names ("Velorbury", "Kelanmere"; onset + middle + coda from fixed syllable lists,
    2,000 in all), distinct, in a seeded random order, none of them in ``avoid``: the subjects of the
    ``"names"`` control, which look like a place's or a person's name and carry no fact."""
    n, seed = check_count(n, "n"), check_seed(seed)
    avoid = set(avoid)
    pool = [o + m + c for o in _ONSETS for m in _MIDDLES for c in _CODAS if o + m + c not in avoid]
    if n > len(pool):
        raise InputError(f"n={n:,} invented names asked for, but only {len(pool):,} exist; ask for fewer.")
    return random.Random(seed).sample(pool, n)


def shuffled_model(model: ModelLike, seed: int = 0):
    """A copy of ``model`` whose transformer blocks carry their own weights in a random order: every parameter
    under ``blocks.`` has its entries permuted within itself (each tensor keeps its distribution of values, loses
    its structure); the embeddings, the final norm and the unembedding are the model's. The control model of
    :func:`cloze_control` (Zhong et al.'s "Rand M" re-initialised everything but the embeddings)."""
    model, seed = as_model(model), check_seed(seed)
    out = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    # the blocks' parameters by module, not by name: a TransformerBridge names them as its Hugging Face model does
    params = list({id(p): p for block in out.blocks for p in block.parameters()}.values())
    if not params:
        raise InputError("shuffled_model found no parameter in the model's blocks; give a model with blocks.")
    with torch.no_grad():
        for p in params:
            flat = p.detach().reshape(-1)
            perm = torch.randperm(flat.numel(), generator=g).to(flat.device)
            p.copy_(flat[perm].reshape(p.shape))
    return out


@dataclass(repr=False)
class ClozeControl(Bundle):
    """What :func:`cloze_control` returns.

    ``by_relation``: ``[relation, metric]`` with metrics :data:`CONTROL_METRICS`: raw P@1 / P@10 (means over the
    relation's templates, as :func:`cloze`), each control's P@k (``NaN`` for a control not run), and the gain
    ``P@k - max(control P@k)``. ``scores``: the plain :func:`cloze` result; ``names``: the invented names asked per
    relation (``[fact][draw]``, in ``scores.facts[relation]``'s order).
    """

    by_relation: Result
    scores: Optional[ClozeScores] = None
    names: dict = field(default_factory=dict)

    def summary(self) -> str:
        cols = ("P@1", "names P@1", "shuffled P@1", "gain P@1", "P@10", "gain P@10")
        idx = [CONTROL_METRICS.index(c) for c in cols]
        lines = [f"{'relation':<22} {'n':>4} " + " ".join(f"{c:>13}" for c in cols)]
        vals = self.by_relation.values
        facts = self.scores.facts if self.scores is not None else {}
        for r, name in enumerate(self.by_relation.labels["relation"]):
            lines.append(f"{name:<22} {len(facts.get(name, ())):>4} "
                         + " ".join(f"{float(vals[r, i]):>13.3f}" for i in idx))
        mean = vals.mean(0)
        lines.append(f"{'mean over relations':<22} {sum(len(f) for f in facts.values()):>4} "
                     + " ".join(f"{float(mean[i]):>13.3f}" for i in idx))
        return "\n".join(lines)


def cloze_control(model: ModelLike, facts: Optional[Sequence] = None,
                  templates: Optional[Mapping[str, Sequence[str]]] = None, *,
                  relations: Optional[Sequence[str]] = None, controls: Sequence[str] = CONTROLS, n_names: int = 3,
                  seed: int = 0, max_memory: int = DEFAULT_MAX_MEMORY, progress: bool = False) -> ClozeControl:
    """Cloze P@1 / P@10 beside controls that keep the prompt's surface and remove the fact, and the gain over them
    (Zhong et al. 2021; see the module docstring).

    ``facts``, ``templates``, ``relations``: as in :func:`cloze` (the same facts are scored under every control).
    ``controls``: any of ``"names"`` (each subject replaced by ``n_names`` invented names drawn with ``seed``, every
    draw scored; a control rank counts the fact's own answer) and ``"shuffled"`` (the same prompts on
    :func:`shuffled_model` with ``seed``; the copy costs one model's memory). The gain is raw P@k minus the
    higher control's P@k, per relation; a gain near zero says the prompts' precision is within reach without the
    facts.
    """
    model = as_model(model)
    if isinstance(controls, str) or not isinstance(controls, Iterable):
        raise InputError(f"controls={shorten(controls)}: give a list of controls from {CONTROLS}, e.g. "
                         "controls=('names',).")
    controls = tuple(controls)
    if not controls or any(c not in CONTROLS for c in controls) or len(set(controls)) != len(controls):
        raise InputError(f"controls={shorten(controls)}: give distinct controls from {CONTROLS}.")
    n_names, seed = check_count(n_names, "n_names"), check_seed(seed)
    max_memory = check_max_memory(max_memory)
    real = cloze(model, facts, templates, relations=relations, max_memory=max_memory, progress=progress)
    names = real.by_relation.labels["relation"]
    used = dict(CLOZE_TEMPLATES if templates is None else templates)
    n_facts = {r: len(real.facts[r]) for r in names}
    col = {m: i for i, m in enumerate(RELATION_METRICS)}
    out = torch.full((len(names), len(CONTROL_METRICS)), float("nan"))
    out[:, 0] = real.by_relation.values[:, col["P@1"]]
    out[:, 1] = real.by_relation.values[:, col["P@10"]]
    drawn: dict[str, list[list[str]]] = {}
    if "names" in controls:
        subjects = {s for r in names for s, _ in real.facts[r]}
        pool = control_names(sum(n_facts.values()) * n_names, seed, avoid=subjects)
        prompts, answers, at = [], [], 0
        for r in names:
            drawn[r] = [pool[at + i * n_names: at + (i + 1) * n_names] for i in range(n_facts[r])]
            at += n_facts[r] * n_names
            for t in used[r]:
                for (_, a), fake in zip(real.facts[r], drawn[r]):
                    tid = _single_token(model, a)
                    for name in fake:
                        prompts.append(fill(t, name))
                        answers.append(tid)
        ranks = answer_ranks(model, prompts, torch.tensor(answers), max_memory=max_memory, progress=progress)
        at = 0
        for i, r in enumerate(names):
            n = len(used[r]) * n_facts[r] * n_names
            rk = ranks[at:at + n].reshape(len(used[r]), -1)  # [template, fact x draw]
            at += n
            out[i, 2] = (rk < 1).double().mean(1).mean()  # the mean over templates of each template's P@k
            out[i, 3] = (rk < 10).double().mean(1).mean()
    if "shuffled" in controls:
        shuffled = shuffled_model(model, seed)
        kept = [_Kept(s, a, r) for r in names for s, a in real.facts[r]]
        ctrl = cloze(shuffled, kept, {r: used[r] for r in names}, relations=names, max_memory=max_memory,
                     progress=progress)
        del shuffled
        out[:, 4] = ctrl.by_relation.values[:, col["P@1"]]
        out[:, 5] = ctrl.by_relation.values[:, col["P@10"]]
    out[:, 6] = out[:, 0] - torch.stack([out[:, 2], out[:, 4]], 1).nan_to_num(float("-inf")).amax(1)
    out[:, 7] = out[:, 1] - torch.stack([out[:, 3], out[:, 5]], 1).nan_to_num(float("-inf")).amax(1)
    res = Result(values=out.float(), axes=("relation", "metric"),
                 labels={"relation": list(names), "metric": list(CONTROL_METRICS)},
                 title="Cloze P@k, its controls and the gain over them",
                 metric="share of facts with the answer in the top k (mean over templates); control: subject "
                        "replaced by an invented name / blocks' weights shuffled; gain = P@k - max control P@k",
                 model=model_name(model), task=real.by_relation.task,
                 meta={"controls": controls, "n_names": n_names, "seed": seed})
    return ClozeControl(by_relation=res, scores=real, names=drawn)


@dataclass(frozen=True)
class _Kept:
    """A fact already checked by :func:`cloze` (subject, answer, relation), for the shuffled model's run."""

    subject: str
    answer: str
    relation: str
