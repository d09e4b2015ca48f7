"""Explanations as rationales (AMPLIFY, Ma et al. 2023): post-hoc attributions of a small proxy classifier turned
into rationales ("the key words ... are important clues") in the few-shot prompts of a language model.

    from circuitlab.concepts.rationales import amplify

    r = amplify("smollm2-135m", seeds=(0, 1, 2))
    r.accuracy.values        # [condition, seed]: no rationale, integrated-gradients rationales, random rationales
    r.prompts["ig"]          # the first seed's few-shot prompt with IG rationales

Ma et al., "Post Hoc Explanations of Language Models Can Improve Language Models" (NeurIPS 2023,
https://arxiv.org/abs/2305.11426), propose AMPLIFY: (1) a small proxy model is trained on the task; (2) few-shot
demonstrations are chosen where the proxy errs most confidently (the misclassification confidence score); (3) a
post-hoc attribution of the proxy (gradient x input, integrated gradients...) gives each demonstration's top-``k``
words; (4) they are written as a rationale, "The key words: 'a', 'b' and 'c' are important clues to predict 'X'
as the correct answer", and the prompt with rationales is given to the large model. They report gains of about
10 to 25% over plain few-shot prompting on BIG-Bench tasks with GPT-3 and GPT-3.5.

**Here** (:func:`amplify`), written for a small instruction-tuned model on CPU:

- **task**: :func:`circuitlab.tasks.mixed_reviews.mixed_reviews`, a review sentence with a neutral aside, labels
  ``"negative"`` / ``"positive"``; test reviews use adjectives the proxy never saw;
- **proxy**: :class:`circuitlab.concepts.debugging.LinearHeadClassifier`, a logistic-regression head on a frozen
  model's mean-pooled residual stream at a third of its depth: the language model itself by default, or a smaller
  ``proxy`` (a ``HookedTransformer``: the classifier's attributions run on its blocks rebuilt in a
  ``HookedTransformer``, where a ``TransformerBridge``'s attention would lose its rotary embeddings; the finding
  uses zoo/toy-lm, a small model trained on the default corpora, as AMPLIFY uses a small proxy);
- **demonstrations**: ``n_shots`` (half per label) from a pool drawn with the seed, those with the lowest proxy
  margin toward their own label (the most confidently misclassified first: AMPLIFY's selection);
- **rationales**: integrated gradients of the proxy's score (``"pad"`` baseline, ``steps`` points;
  :func:`circuitlab.concepts.gradients.integrated_gradients`) toward each demonstration's label, summed per word
  (:func:`word_scores`), the top ``k`` distinct words with positive attribution (:func:`select_rationale`). The
  **control**: as many distinct words of the same demonstration drawn at random (:func:`random_rationale`);
- **prompt** (:func:`few_shot_prompt`): an instruction, then each demonstration as ``Review: ...``,
  ``Answer: positive``, ``Rationale: ...`` and the query's ``Review: ...`` ``Answer:``. The rationale follows the
  answer (AMPLIFY puts it before, and lets the model write its own rationale for the query; reading the answer
  right after ``Answer:`` needs no generation, which a 135M model does poorly and which costs a pass per token);
- **answer**: the label word whose first token has the higher log-probability after the prompt; accuracy and the
  mean log-probability margin (correct minus wrong) per condition and seed. The prompts of one condition share
  their instruction and demonstrations: that common token prefix runs once and its keys and values are reused for
  each query (TransformerLens's key/value cache; a TransformerBridge runs every prompt whole), after a self-check
  against the plain forward pass on the first prompt (``meta["prefix_reuse"]`` says whether it passed; otherwise
  every prompt runs whole).
"""

from __future__ import annotations

import random as _random
import re
import time
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from circuitlab.core import (DEFAULT_MAX_MEMORY, ModelLike, as_model, check_count, check_max_memory, check_seed,
                             check_seeds, check_texts, model_name, progress_bar, row_bytes, row_chunks, shorten,
                             to_tokens)
from circuitlab.errors import InputError
from circuitlab.results import Bundle, Result
from circuitlab.tasks.mixed_reviews import mixed_reviews
from circuitlab.tasks.reviews import Example

__all__ = ["AmplifyResult", "CONDITIONS", "LABELS", "Shot", "amplify", "few_shot_prompt", "random_rationale",
           "rationale_text", "select_rationale", "word_scores"]

#: the prompt conditions, in the order of the result's axis
CONDITIONS = ("none", "ig", "random")
#: the label words (index = label)
LABELS = ("negative", "positive")
INSTRUCTION = "Decide whether each review is positive or negative."


# ---------------------------------------------------------------------------------------------------------
# Rationales and prompts
# ---------------------------------------------------------------------------------------------------------

def word_scores(tokens: Sequence[str], scores: Float[Tensor, " pos"], start: int = 0) -> list[tuple[str, float]]:
    """Token attributions summed into words: a token that begins with whitespace starts a new word; characters
    other than letters, digits, apostrophes and hyphens are cut from a word's ends, and a word left empty (a
    punctuation mark) is dropped with its score. Tokens before ``start`` (a BOS) are left out. Returns
    ``(word, score)`` in text order."""
    tokens = check_texts(tokens, "tokens", item="token string", allow_empty=True)
    if len(tokens) != len(scores):
        raise InputError(f"tokens and scores: {len(tokens)} tokens but {len(scores)} scores; give one per token.")
    out: list[tuple[str, float]] = []
    text, total = "", 0.0
    for tok, s in zip(tokens[start:], [float(v) for v in scores][start:]):
        if (tok[:1].isspace() or re.fullmatch(r"\W+", tok.strip())) and text:
            out.append((text, total))
            text, total = "", 0.0
        text += tok.strip()
        total += s
        if re.fullmatch(r"\W+", tok.strip() or " "):  # punctuation ends the word it stands in
            out.append((text, total))
            text, total = "", 0.0
    if text:
        out.append((text, total))
    cleaned = [(re.sub(r"^[^\w'-]+|[^\w'-]+$", "", w), s) for w, s in out]
    return [(w, s) for w, s in cleaned if w]


def select_rationale(words: Sequence[tuple[str, float]], k: int = 3) -> list[str]:
    """The ``k`` distinct words (case-insensitive; the first spelling kept) with the largest positive score, best
    first (ties by position). A word's score is its largest over its occurrences; fewer than ``k`` words come back
    where fewer have a positive score."""
    k = check_count(k, "k")
    best: dict[str, list] = {}
    for i, (w, s) in enumerate(words):
        key = w.lower()
        if s <= 0:
            continue
        if key not in best:
            best[key] = [s, i, w]
        elif s > best[key][0]:
            best[key][0] = s
    ranked = sorted(best.values(), key=lambda t: (-t[0], t[1]))
    return [w for _, _, w in ranked[:k]]


def random_rationale(words: Sequence[str], k: int, seed: int = 0) -> list[str]:
    """``k`` distinct words (case-insensitive) of ``words`` drawn at random with ``seed`` (all of them, shuffled,
    where there are fewer): the control rationale."""
    k = check_count(k, "k", minimum=0)
    seed = check_seed(seed)
    distinct = list({w.lower(): w for w in reversed(list(words))}.values())[::-1]
    return _random.Random(seed).sample(distinct, min(k, len(distinct)))


def rationale_text(words: Sequence[str], label: str) -> str:
    """AMPLIFY's rationale: ``The key words: "a", "b" and "c" are important clues to predict "positive" as the
    correct answer.`` (one word: ``The key word: "a" is an important clue ...``; none: the empty string)."""
    words = [str(w) for w in words]
    if not words:
        return ""
    quoted = [f'"{w}"' for w in words]
    listed = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]
    if len(words) == 1:
        return f'The key word: {listed} is an important clue to predict "{label}" as the correct answer.'
    return f'The key words: {listed} are important clues to predict "{label}" as the correct answer.'


@dataclass(frozen=True)
class Shot:
    """One demonstration: the text, its label word, and its rationale (``""``: none)."""

    text: str
    label: str
    rationale: str = ""


def few_shot_prompt(shots: Sequence[Shot], query: str, instruction: str = INSTRUCTION) -> str:
    """The prompt: the instruction, each shot (``Review:``, ``Answer:``, and ``Rationale:`` where it has one), a
    blank line between them, and the query ending in ``Answer:`` (the label word comes next)."""
    if isinstance(shots, Shot) or not isinstance(shots, Sequence) or not all(isinstance(s, Shot) for s in shots):
        raise InputError(f"shots must be a list of Shot; got {shorten(shots)}.")
    check_texts([query], "query")
    parts = [instruction] if instruction else []
    for s in shots:
        block = f"Review: {s.text}\nAnswer: {s.label}"
        if s.rationale:
            block += f"\nRationale: {s.rationale}"
        parts.append(block)
    parts.append(f"Review: {query}\nAnswer:")
    return "\n\n".join(parts)


# ---------------------------------------------------------------------------------------------------------
# The experiment
# ---------------------------------------------------------------------------------------------------------

@dataclass(repr=False)
class AmplifyResult(Bundle):
    """Few-shot accuracy without rationales, with the proxy's IG rationales, and with random rationales.

    Attributes:
        accuracy: ``[condition, seed]``: test accuracy (:data:`CONDITIONS`).
        margin: ``[condition, seed]``: mean log-probability of the right label word minus the wrong one.
        prompts: per condition, the first seed's prompt for the first test review.
        shots: per seed, the demonstrations with their IG and random rationales.
        proxy_accuracy: per seed, the proxy classifier's test accuracy.
    """

    accuracy: Result
    margin: Result
    prompts: dict[str, str] = field(default_factory=dict)
    shots: list = field(default_factory=list)
    proxy_accuracy: list = field(default_factory=list)
    model: str = ""


def _label_ids(model, labels: Sequence[str]) -> list[int]:
    ids = [int(to_tokens(model, " " + w, prepend_bos=False)[0, 0]) for w in labels]
    if len(set(ids)) != len(ids):
        raise InputError(f"the label words {list(labels)} begin with the same token for this model's tokenizer; the "
                         "answer cannot be read from one token.")
    return ids


#: the largest difference of an answer log-probability between the prefix-reusing pass and the plain forward pass
#: that the self-check accepts (float32 on CPU differs by ~1e-5)
PREFIX_CHECK_TOLERANCE = 1e-3


@torch.no_grad()
def _full_logprobs(model, rows: list[Tensor], ids: list[int], max_memory: int,
                   progress: bool) -> Float[Tensor, "prompt label"]:
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    out = torch.empty(len(rows), len(ids), dtype=torch.float64)
    longest = max(len(r) for r in rows)
    chunks = row_chunks(len(rows), row_bytes(model, longest, logits=model.cfg.d_vocab_out), max_memory)
    for sl in progress_bar(chunks, progress=progress, desc="prompts", unit="batch"):
        idx = order[sl]
        n = max(len(rows[i]) for i in idx)
        toks = torch.zeros(len(idx), n, dtype=torch.long)
        for j, i in enumerate(idx):  # right padding: causal attention leaves every real position as it was
            toks[j, :len(rows[i])] = rows[i]
        logits = model(toks.to(next(model.parameters()).device))
        for j, i in enumerate(idx):
            out[i] = torch.log_softmax(logits[j, len(rows[i]) - 1].double(), -1)[ids].cpu()
    return out


@torch.no_grad()
def _prefix_logprobs(model, rows: list[Tensor], ids: list[int], common: int,
                     progress: bool) -> Optional[Float[Tensor, "prompt label"]]:
    """The same numbers with the prompts' common token prefix run once and its keys and values reused (TL's
    key/value cache of a HookedTransformer); ``None`` for other models. (A TransformerBridge's Hugging Face model
    with its own cache gives other numbers than the bridge's forward pass: its attention is the bridge's, which
    does not read that cache; measured on smollm2-135m, a difference of 7 nats. Bridges run every prompt whole.)"""
    device = next(model.parameters()).device
    prefix = rows[0][:common][None].to(device)
    if isinstance(model, HookedTransformer):
        from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

        cache = TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, 1)
        model(prefix, past_kv_cache=cache)
        cache.freeze()

        def last(row: Tensor) -> Tensor:
            return model(row[common:][None].to(device), past_kv_cache=cache)[0, -1]
    else:
        return None
    out = torch.empty(len(rows), len(ids), dtype=torch.float64)
    for i, row in enumerate(progress_bar(rows, progress=progress, desc="prompts", unit="prompt")):
        out[i] = torch.log_softmax(last(row).double(), -1)[ids].cpu()
    return out


def _answer_logprobs(model, prompts: list[str], ids: list[int], max_memory: int,
                     progress: bool) -> tuple[Float[Tensor, "prompt label"], bool]:
    """Each prompt's log-probability of each label word's first token after it, and whether the prompts' common
    prefix was computed once. Prompts of one condition share the instruction and the demonstrations: their common
    token prefix (of the prompts as tokenized whole) runs once, each prompt's rest after it, and a self-check
    against the plain forward pass on the first prompt decides (within :data:`PREFIX_CHECK_TOLERANCE`), else every
    prompt runs whole."""
    rows = [to_tokens(model, p)[0] for p in prompts]
    common = min(len(r) for r in rows) - 1
    for r in rows[1:]:
        same = (r[:common] == rows[0][:common]).long()
        common = int(same.cumprod(0).sum())
    if len(rows) > 1 and common >= 8:
        fast = _prefix_logprobs(model, rows, ids, common, progress)
        if fast is not None:
            check = _full_logprobs(model, rows[:1], ids, max_memory, False)
            if float((fast[0] - check[0]).abs().max()) <= PREFIX_CHECK_TOLERANCE:
                return fast, True
    return _full_logprobs(model, rows, ids, max_memory, progress), False


def amplify(model: ModelLike, *, proxy: Optional[ModelLike] = None, proxy_layer: Optional[int] = None,
            n_proxy: int = 40, n_pool: int = 20, n_queries: int = 20, n_shots: int = 4, k: int = 3,
            seeds: Sequence[int] = (0, 1, 2), steps: int = 32, max_memory: int = DEFAULT_MAX_MEMORY,
            progress: bool = False) -> AmplifyResult:
    """AMPLIFY on the mixed-review task (module docstring).

    Args:
        model: the language model prompted (an instruction-tuned decoder; ``"smollm2-135m"``).
        proxy: the model under the proxy classifier, a ``HookedTransformer`` (default ``model`` itself);
            ``proxy_layer`` the block it reads (default a third of the depth).
        n_proxy: training reviews per label for the proxy (drawn with each seed).
        n_pool: candidate demonstrations per label (drawn with each seed); ``n_shots`` are chosen (half per label).
        n_queries: test reviews per label (held-out adjectives; the same for every seed).
        k: words per rationale.
        seeds: one run per seed: the proxy's training reviews, the pool, the random rationales.
        steps: integrated-gradients points.
        max_memory: bytes for the prompts' forward passes.
    """
    t0 = time.perf_counter()
    model = as_model(model)
    proxy_model = model if proxy is None else as_model(proxy)
    if not isinstance(proxy_model, HookedTransformer):
        raise InputError(f"proxy: {model_name(proxy_model) or 'the model'} is a {type(proxy_model).__name__}; the "
                         "proxy's attributions run on LinearHeadClassifier.as_model, which rebuilds its first blocks "
                         "in a HookedTransformer, where a bridge's attention does not get its rotary embeddings. Give "
                         "proxy= a HookedTransformer (e.g. proxy='zoo/toy-lm' or 'gemma-3-270m').")
    n_proxy, n_pool, n_queries = (check_count(v, name) for v, name in ((n_proxy, "n_proxy"), (n_pool, "n_pool"),
                                                                    (n_queries, "n_queries")))
    n_shots = check_count(n_shots, "n_shots", minimum=2)
    if n_shots % 2 or n_shots // 2 > n_pool:
        raise InputError(f"n_shots={n_shots}: give an even number of demonstrations (half per label), at most "
                         f"2 * n_pool = {2 * n_pool}.")
    k = check_count(k, "k")
    seeds = check_seeds(seeds)
    steps = check_count(steps, "steps")
    max_memory = check_max_memory(max_memory)
    from circuitlab.concepts.debugging import train_classifier  # the proxy: a linear head on a frozen model

    ids = _label_ids(model, LABELS)
    test = mixed_reviews(n_queries, "test", seed=0)
    y = torch.tensor([lab for _, lab in test])
    acc = torch.zeros(len(CONDITIONS), len(seeds), dtype=torch.float64)
    margin = torch.zeros_like(acc)
    prompts: dict[str, str] = {}
    all_shots, proxy_acc, prefix_reuse = [], [], []
    for si, seed in enumerate(progress_bar(seeds, progress=progress, desc="seeds", unit="seed")):
        train = [Example(t, lab, False, t) for t, lab in mixed_reviews(n_proxy, "train", seed=seed)]
        clf = train_classifier(proxy_model, train, layer=proxy_layer)
        proxy_acc.append(clf.accuracy([Example(t, lab, False, t) for t, lab in test]))
        pool = mixed_reviews(n_pool, "train", seed=seed + 10_000 if seed < 2**62 else seed - 10_000)
        scores = clf.scores([t for t, _ in pool])
        toward = torch.where(torch.tensor([lab for _, lab in pool]) == 1, scores, -scores)  # margin toward the label
        chosen = []
        for label in (0, 1):
            members = [i for i, (_, lab) in enumerate(pool) if lab == label]
            members.sort(key=lambda i: (float(toward[i]), i))  # most confidently wrong first
            chosen += members[: n_shots // 2]
        _random.Random(f"order/{seed}").shuffle(chosen)
        shots: dict[str, list[Shot]] = {c: [] for c in CONDITIONS}
        detail = []
        for i in chosen:
            text, label = pool[i]
            ig = clf.attribute(text, steps=steps, baseline="pad")
            toks = ig.tokens[0]
            sign = 1.0 if label == 1 else -1.0
            words = word_scores(toks, sign * ig.values[0], start=clf.first_pooled(to_tokens(proxy_model, text)))
            chosen_words = select_rationale(words, k)
            random_words = random_rationale([w for w, _ in words], len(chosen_words) or k, seed=seed * 1000 + i
                                            if seed < 2**52 else i)
            shots["none"].append(Shot(text, LABELS[label]))
            shots["ig"].append(Shot(text, LABELS[label], rationale_text(chosen_words, LABELS[label])))
            shots["random"].append(Shot(text, LABELS[label], rationale_text(random_words, LABELS[label])))
            detail.append(dict(text=text, label=LABELS[label], proxy_margin=float(toward[i]), ig=chosen_words,
                               random=random_words, words=words))
        all_shots.append(detail)
        for ci, cond in enumerate(CONDITIONS):
            ps = [few_shot_prompt(shots[cond], q) for q, _ in test]
            if si == 0:
                prompts[cond] = ps[0]
            lp, reused = _answer_logprobs(model, ps, ids, max_memory, progress)
            prefix_reuse.append(reused)
            right = lp.gather(1, y[:, None])[:, 0]
            wrong = lp.gather(1, (1 - y)[:, None])[:, 0]
            acc[ci, si] = float((lp.argmax(1) == y).double().mean())
            margin[ci, si] = float((right - wrong).mean())
    labels = {"condition": list(CONDITIONS), "seed": [str(s) for s in seeds]}
    meta = dict(n_shots=n_shots, k=k, steps=steps, n_queries=2 * n_queries, n_proxy=2 * n_proxy, n_pool=2 * n_pool,
                proxy=model_name(proxy_model), proxy_layer=proxy_layer, labels=list(LABELS),
                prefix_reuse=all(prefix_reuse),
                seconds=time.perf_counter() - t0)
    task = f"mixed reviews, {2 * n_queries} test, {n_shots} shots"
    return AmplifyResult(
        accuracy=Result(acc, ("condition", "seed"), labels, title="Few-shot accuracy with rationales (AMPLIFY)",
                        metric="test accuracy", model=model_name(model), task=task, meta=meta),
        margin=Result(margin, ("condition", "seed"), labels, title="Answer margin with rationales (AMPLIFY)",
                      metric="mean log p(right label word) - log p(wrong)", model=model_name(model), task=task,
                      meta=meta),
        prompts=prompts, shots=all_shots, proxy_accuracy=proxy_acc, model=model_name(model))
