"""Explain, simulate, score: natural-language explanations of neurons, judged by how well they predict activations.

The method of Bills et al. (2023, "Language models can explain neurons in language models"), in three steps:

1. **Explain.** An :class:`Explainer` reads a neuron's top-activating excerpts (token strings with the neuron's
   activation on each) and writes an explanation: ``"fires on ' Lord' after ' the'"``.
2. **Simulate.** A :class:`Simulator` reads only the explanation and a new text, and predicts the neuron's
   activation on each token of it.
3. **Score.** The explanation's score is the correlation between the simulated and the true activations over
   held-out excerpts, never shown to the explainer: top-activating ones (does it say *where* the neuron fires?)
   and random ones (does it say where it does *not*?). As in the paper, the headline score correlates all tokens
   of both kinds "all at once"; the two parts are reported beside it. The correlation does not care about the
   simulator's scale or offset (a simulator predicting on a 0-10 scale scores the same as one predicting raw
   activations), so simulators only have to rank tokens well.

Two explainer/simulator pairs:

- **the n-gram baseline** (offline, no model download; the first step of SASC, Singh et al. 2023):
  :class:`NgramExplainer` lists the n-grams that end on the neuron's most active tokens in the explanation
  excerpts, weighted by how strongly it fires there; :class:`NgramSimulator` predicts, at each token, the largest
  weight of a listed n-gram ending there (0 elsewhere). Its explanations say "n-gram baseline" in their text and
  its results say so in their metric: it is the baseline a language-model explainer has to beat, not one;
- **a language model over HTTP**: :class:`LLMExplainer` and :class:`LLMSimulator` send chat-completion requests to
  any OpenAI-compatible endpoint (:class:`LLMClient`; URL, model and key from arguments or the environment:
  ``CIRCUITLAB_LLM_URL``, ``CIRCUITLAB_LLM_MODEL``, ``CIRCUITLAB_LLM_KEY`` or ``OPENAI_API_KEY``). Nothing is sent
  unless a URL is configured; requests have a timeout and a bounded number of retries.

**Controls.** A score means little alone: :func:`score_explanations` also scores each neuron with *another*
neuron's explanation (the shuffled control: a random derangement of the explanations, seeded) and with random
predictions (chance, whose expected correlation is 0). An explainer that reads something real off the neuron
beats both.

**Undefined scores.** A correlation needs variance on both sides. Where the simulation is constant (an
explanation whose n-grams never occur in the held-out text, a simulator that predicts 0 everywhere) or the true
activations are, the score is **0** (the explanation predicts nothing) and the neuron is flagged in
``ExplanationScores.undefined``; summaries count them.

    from circuitlab.neurons.explain import score_explanations, corpus_lines

    res = score_explanations("zoo/toy-lm", corpus_lines(2000), layer=2, neurons=range(64))
    print(res.summary())       # mean / median / quartiles of the scores, shuffled control and chance beside
    res.scores.values          # [neuron, part]: part = all (the score), top, random

Activations and excerpts come from one streamed pass over the texts for all neurons at once
(:func:`neuron_records`): each text is one excerpt (long texts are cut to ``max_tokens``), the neuron's
top-activating excerpts alternate between the explanation set and the held-out set (ranks 1, 3, 5, ... explain;
2, 4, 6, ... score), and random excerpts are a seeded uniform sample of all texts.
"""

from __future__ import annotations

import json
import math
import random
import re
from dataclasses import dataclass, field
from typing import Iterable, Optional, Protocol, Sequence, Union, runtime_checkable

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformer_lens.utilities import get_act_name

from circuitlab.core import (DEFAULT_MAX_MEMORY, ModelLike, as_model, check_affordable, check_count, check_distinct,
                             check_finite, check_max_memory, check_mlp_layer, check_neurons, check_seed, check_texts,
                             model_name, progress_bar, shorten, str_tokens, unresolved)
from circuitlab.engine.collect import stream_activations
from circuitlab.errors import CircuitlabError, InputError
from circuitlab.neurons.llm import LLMClient, LLMError
from circuitlab.results import Bundle, Result

__all__ = ["Excerpt", "NeuronRecord", "Explainer", "Simulator", "NgramExplainer", "NgramSimulator", "LLMClient",
           "LLMExplainer", "LLMSimulator", "LLMError", "SimulationError", "ExplanationScores", "corpus_lines",
           "neuron_records", "correlation_score", "score_simulation", "score_explanations", "PARTS"]

#: the parts of a score: all held-out tokens at once (the score), the top-activating excerpts, the random ones
PARTS = ("all", "top", "random")


class SimulationError(CircuitlabError):
    """A simulator's output that cannot be scored: the wrong number of values, or values that are not numbers."""


# ---------------------------------------------------------------------------------------------------------
# Excerpts and records: what explainers and simulators see
# ---------------------------------------------------------------------------------------------------------

@dataclass
class Excerpt:
    """A stretch of text and one neuron's activation on each of its tokens.

    ``kind`` is ``"top"`` (chosen because the neuron fires on it) or ``"random"``; ``text`` is the index of the
    corpus item it came from (blank texts are skipped but counted); ``max_activation`` is the largest of
    ``activations``.
    """

    tokens: list[str]
    activations: list[float]
    kind: str = "top"
    text: int = -1

    @property
    def max_activation(self) -> float:
        return max(self.activations) if self.activations else float("-inf")


@dataclass
class NeuronRecord:
    """What a neuron did on a corpus: excerpts for the explainer, and held-out ones for scoring.

    Attributes:
        layer, neuron: which MLP neuron.
        explain: top-activating excerpts shown to the explainer (ranks 1, 3, 5, ... of the corpus), best first.
        top: held-out top-activating excerpts (ranks 2, 4, 6, ...), best first.
        random: held-out random excerpts (the same texts for every neuron of one call).
    """

    layer: int
    neuron: int
    explain: list[Excerpt]
    top: list[Excerpt]
    random: list[Excerpt]

    @property
    def held_out(self) -> list[Excerpt]:
        """The excerpts an explanation is scored on: the held-out top ones, then the random ones."""
        return self.top + self.random


def corpus_lines(n: int = 2000, seed: int = 0) -> list[str]:
    """``n`` lines of plain English for neuron records, offline: half King James verses, half fortune-cookie lines
    (the Debian corpora :func:`circuitlab.probing.default_sentences` uses), shuffled with ``seed``. Without those
    packages, the held-out Bible books shipped beside ``zoo/toy-lm`` (Ruth, Jonah, Titus, Philemon), a verse a
    line."""
    seed = check_seed(seed)
    n = check_count(n, "n")
    from circuitlab.tasks.sentences import debian_corpus_lines

    try:
        kjv, cookies = debian_corpus_lines(seed)
    except CircuitlabError:
        from circuitlab.zoo.toy_lm import load_heldout_text

        lines = [" ".join(line.split()) for line in load_heldout_text().splitlines() if line.strip()]
        random.Random(seed).shuffle(lines)
        return lines[:n]
    half = min(n // 2, len(cookies))
    lines = cookies[:half] + kjv[: n - half]
    random.Random(seed + 1).shuffle(lines)
    return lines


def _rows(model, texts: Iterable[Union[str, Sequence[int], Tensor]], max_tokens: int) -> Iterable[tuple[int, Tensor]]:
    """``(index, row)``: each non-empty text as a 1-D row of token ids (BOS prepended by the model's default), cut to
    ``max_tokens``, with its index in ``texts``."""
    if isinstance(texts, str):
        check_texts(texts, "texts")  # a corpus is a list of texts; a bare string is refused, not read as one text
    if isinstance(texts, Tensor):
        texts = list(texts if texts.ndim == 2 else texts[None])
    cap = min(max_tokens, model.cfg.n_ctx)
    for i, item in enumerate(texts):
        if isinstance(item, str):
            if not item.strip():
                continue
            if model.tokenizer is None:
                raise InputError(f"texts[{i}] is text, but this model has no tokenizer; pass token-id rows instead.")
            row = model.to_tokens(item, truncate=False)[0]
        else:
            try:
                row = torch.as_tensor(item, dtype=torch.long).reshape(-1)
            except (TypeError, ValueError, RuntimeError):
                raise InputError(f"texts[{i}] is a {type(item).__name__}; give texts or rows of token ids.") from None
            if row.numel() and (int(row.min()) < 0 or int(row.max()) >= model.cfg.d_vocab):
                raise InputError(f"texts[{i}] holds token ids outside [0, {model.cfg.d_vocab}).")
        if row.numel():
            yield i, row[:cap].to(model.cfg.device)


@torch.no_grad()
def neuron_records(
    model: ModelLike,
    texts: Union[Int[Tensor, " pos"], Int[Tensor, "batch pos"],
                 Iterable[Union[str, Sequence[int], Int[Tensor, " pos"]]]],
    layer: int,
    neurons: Union[int, Sequence[int], None] = None,
    n_explain: int = 10,
    n_top: int = 10,
    n_random: int = 10,
    max_tokens: int = 64,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = False,
    max_memory: int = DEFAULT_MAX_MEMORY,
) -> list[NeuronRecord]:
    """Explanation and held-out excerpts of MLP neurons over a stream of texts, all neurons in one pass.

    The activation of neuron ``n`` of layer ``layer`` is ``blocks.{layer}.mlp.hook_post[..., n]``. Each text is
    one excerpt (cut to ``max_tokens`` tokens; a prepended BOS token is dropped from it, as it says nothing
    about the text). The texts are streamed in batches; per neuron only a running top ``n_explain + n_top``
    (by the excerpt's largest activation) is kept, and a seeded reservoir of ``n_random + n_explain + n_top``
    texts for all of them, so memory does not grow with the corpus. A neuron's random excerpts are held out
    like its top ones: the first ``n_random`` of the (shuffled) reservoir that are neither among its
    explanation excerpts nor among its held-out top excerpts (fewer only where the corpus has too few texts).

    Args:
        model: a model with MLPs.
        texts: any iterable of texts or token-id rows (a generator over a large corpus is fine).
        layer, neurons: which neurons (one, a list, or None for all ``d_mlp``).
        n_explain, n_top: top excerpts for the explainer, and held-out top excerpts for scoring; they alternate
            in the ranking (1, 3, 5, ... explain; 2, 4, 6, ... score).
        n_random: held-out random excerpts (a uniform sample of the texts, drawn with ``seed``, that the
            neuron's explanation did not see and that are not also its held-out top excerpts).
        max_tokens: longest excerpt, in tokens.
        batch_size: texts per forward pass (fewer where ``max_memory`` needs it).
        progress: show a progress bar over the texts.
        max_memory: rough bound in bytes on one forward pass's activations (the package's one meaning).
    """
    seed = check_seed(seed)
    model = as_model(model)
    layer = check_mlp_layer(model, layer)
    neurons = check_neurons(model, neurons)
    n_explain, n_top, n_random = (check_count(n_explain, "n_explain"), check_count(n_top, "n_top"),
                                  check_count(n_random, "n_random"))
    max_tokens, batch_size = check_count(max_tokens, "max_tokens", 2), check_count(batch_size, "batch_size")
    max_memory = check_max_memory(max_memory)
    if texts is None or isinstance(texts, (int, float)):
        raise InputError(f"texts must be an iterable of texts or token-id rows; got {shorten(texts)}.")
    k = n_explain + n_top
    n_reservoir = n_random + k  # enough for each neuron to leave out its own top texts
    N = len(neurons)
    # the running top-k (values and text ids, and their concatenation with a batch) per neuron, and the reservoir
    check_affordable(3 * 16 * N * k + 64 * n_reservoir,
                     f"n_explain + n_top = {k:,} excerpts per neuron and n_random={n_random:,}",
                     "ask for fewer excerpts (10 to 50 is usual)")
    idx = torch.tensor(neurons, device=model.cfg.device)
    bos = getattr(model.tokenizer, "bos_token_id", None) if model.tokenizer is not None else None
    hook = get_act_name("post", layer)
    rng = random.Random(seed)

    best = torch.full((N, k), float("-inf"))  # running top-k of excerpt maxima, per neuron
    best_text = torch.full((N, k), -1, dtype=torch.long)
    kept: dict[int, tuple[list[int], Tensor]] = {}  # text -> (token ids, activations [pos, N]) of kept excerpts
    reservoir: list[int] = []
    seen = 0

    def fold(ids: list[int], rows: list[Tensor], toks: Tensor, acts: Tensor) -> None:
        """One batch's activations ``[batch, pos, N]`` into the running top-k and the kept excerpts."""
        nonlocal best, best_text
        lengths = [len(r) for r in rows]
        check_finite(model, toks, f"MLP L{layer} activations", acts)
        excerpts = []
        for i, r in enumerate(rows):
            start = 1 if bos is not None and len(r) > 1 and int(r[0]) == bos else 0
            excerpts.append((r[start:].tolist(), acts[i, start: lengths[i]]))
        peaks = torch.stack([a.max(0).values for _, a in excerpts])  # [batch, N]
        cand = torch.cat([best, peaks.T], dim=1)
        cand_text = torch.cat([best_text, torch.tensor(ids).expand(N, -1)], dim=1)
        top = cand.topk(k, dim=1)
        best, best_text = top.values, cand_text.gather(1, top.indices)
        for t, (token_ids, a) in zip(ids, excerpts):
            if bool((best_text == t).any()) or t in reservoir:
                kept[t] = (token_ids, a)
        alive = set(best_text.flatten().tolist()) | set(reservoir)
        for t in [t for t in kept if t not in alive]:
            del kept[t]

    def sampled(items: Iterable[tuple[int, Tensor]]) -> Iterable[tuple[int, Tensor]]:
        """The texts as they arrive, each offered to the reservoir first."""
        nonlocal seen
        for i, row in items:
            # reservoir sampling (Algorithm R): after m texts, each is in the sample with probability n_reservoir / m
            if len(reservoir) < n_reservoir:
                reservoir.append(i)
            else:
                j = rng.randrange(seen + 1)
                if j < n_reservoir:
                    reservoir[j] = i  # the text it replaces leaves `kept` at the next batch
            seen += 1
            yield i, row

    items = sampled(progress_bar(_rows(model, texts, max_tokens), progress=progress, desc=f"L{layer} neuron records",
                                 unit="text"))
    for batch, toks, acts in stream_activations(model, items, hook, lambda act: act[..., idx].float().cpu(),
                                                row=lambda item: item[1], batch_size=batch_size,
                                                max_memory=max_memory):
        fold([i for i, _ in batch], [r for _, r in batch], toks, acts)
    if seen < k:
        raise InputError(f"texts gave {seen} excerpts, fewer than n_explain + n_top = {k}: give more texts (a few "
                         "hundred at least, so that top-activating excerpts are rare), or ask for fewer excerpts.")
    strings = {t: str_tokens(model, torch.tensor(token_ids)) for t, (token_ids, _) in kept.items()}

    def excerpt(t: int, col: int, kind: str) -> Excerpt:
        return Excerpt(strings[t], kept[t][1][:, col].tolist(), kind, t)

    order = sorted(reservoir)
    rng.shuffle(order)
    records = []
    for col, n in enumerate(neurons):
        ranked = [t for t in best_text[col].tolist() if t >= 0]
        explain, top = ranked[0::2][:n_explain], ranked[1::2][:n_top]
        held_out = [t for t in order if t not in explain and t not in top][:n_random]
        records.append(NeuronRecord(
            layer=layer, neuron=n, explain=[excerpt(t, col, "top") for t in explain],
            top=[excerpt(t, col, "top") for t in top],
            random=[excerpt(t, col, "random") for t in sorted(held_out)]))
    return records


# ---------------------------------------------------------------------------------------------------------
# The protocols
# ---------------------------------------------------------------------------------------------------------

@runtime_checkable
class Explainer(Protocol):
    """Writes an explanation of a neuron from its top-activating excerpts.

    ``name`` says what wrote it (shown in results). ``explain`` gets the excerpts (token strings and the neuron's
    activation on each, best first) and returns the explanation as text.
    """

    name: str

    def explain(self, excerpts: Sequence[Excerpt]) -> str: ...


@runtime_checkable
class Simulator(Protocol):
    """Predicts a neuron's activation on each token of a text from an explanation alone.

    ``simulate(explanation, tokens)`` returns one number per token (any scale: the score is a correlation).
    """

    name: str

    def simulate(self, explanation: str, tokens: Sequence[str]) -> Sequence[float]: ...


# ---------------------------------------------------------------------------------------------------------
# The n-gram baseline
# ---------------------------------------------------------------------------------------------------------

#: what opens an n-gram explanation; the JSON list of ``[tokens, weight]`` pairs follows it
NGRAM_MARK = "n-gram baseline:"
#: what precedes the exact n-grams (token strings) in an n-gram explanation
NGRAM_JSON = "| n-grams:"


def _norm(token: str, normalize: bool) -> str:
    return token.strip().lower() if normalize else token


@dataclass
class NgramExplainer:
    """The n-gram baseline explainer (SASC's first step): the n-grams that end where the neuron fires most.

    In each explanation excerpt, every token whose activation reaches ``threshold`` times the largest activation
    over all excerpts is a firing token; the n-grams of length 1 to ``max_n`` that end on it collect its
    normalised activation (activation / largest). The ``n_terms`` n-grams with the largest total are the
    explanation, each with its weight (its total over the largest total), as text: first readable, then exactly
    (token strings as the tokenizer shows them, so a simulator can match them)::

        n-gram baseline: fires on ' Lord' (1.00), ' the Lord' (0.83), ... | n-grams: [[[" Lord"], 1.0],
        [[" the", " Lord"], 0.83], ...]
 A longer n-gram can only
    be matched where its last token is, so it refines a unigram rather than adding new places.
    """

    max_n: int = 2
    n_terms: int = 8
    threshold: float = 0.5
    name: str = "n-gram baseline"

    def explain(self, excerpts: Sequence[Excerpt]) -> str:
        if not excerpts:
            raise InputError("the n-gram explainer got no excerpts; give at least one top-activating excerpt.")
        peak = max(e.max_activation for e in excerpts)
        totals: dict[tuple[str, ...], float] = {}
        if peak > 0:
            for e in excerpts:
                for i, a in enumerate(e.activations):
                    if a >= self.threshold * peak:
                        for n in range(1, self.max_n + 1):
                            if i - n + 1 >= 0:
                                gram = tuple(e.tokens[i - n + 1: i + 1])
                                totals[gram] = totals.get(gram, 0.0) + a / peak
        ranked = sorted(totals.items(), key=lambda kv: (-kv[1], len(kv[0]), kv[0]))[: self.n_terms]
        top = ranked[0][1] if ranked else 1.0
        words = ", ".join(f"{''.join(g)!r} ({w / top:.2f})" for g, w in ranked) or "nothing (the neuron never fires)"
        grams = json.dumps([[list(g), round(w / top, 4)] for g, w in ranked], ensure_ascii=False)
        return f"{NGRAM_MARK} fires on {words} {NGRAM_JSON} {grams}"


def parse_ngrams(explanation: str) -> list[tuple[tuple[str, ...], float]]:
    """The ``(n-gram, weight)`` pairs of an :class:`NgramExplainer` explanation."""
    if not isinstance(explanation, str) or NGRAM_MARK not in explanation:
        raise InputError(
            f"the n-gram simulator reads explanations written by NgramExplainer (they start {shorten(NGRAM_MARK)}); "
            f"got {shorten(explanation, 80)}. Simulate free-text explanations with an LLMSimulator.")
    try:
        rest = explanation.split(NGRAM_MARK, 1)[1]
        items = json.loads(rest.rsplit(NGRAM_JSON, 1)[1] if NGRAM_JSON in rest else rest)
        return [(tuple(str(t) for t in g), float(w)) for g, w in items]
    except (ValueError, TypeError):
        raise InputError(f"cannot read the n-grams of the explanation {shorten(explanation, 80)}: after "
                         f"{shorten(NGRAM_MARK)} it must hold a JSON list of [tokens, weight] pairs.") from None


@dataclass
class NgramSimulator:
    """The n-gram baseline simulator: at each token, the largest weight of an explanation n-gram ending there.

    ``normalize`` compares tokens without surrounding whitespace and case (``" Lord"`` matches ``"lord"``), so
    that an n-gram seen at a sentence start is found mid-sentence too.
    """

    normalize: bool = True
    name: str = "n-gram baseline"

    def simulate(self, explanation: str, tokens: Sequence[str]) -> list[float]:
        grams = [(tuple(_norm(t, self.normalize) for t in g), w) for g, w in parse_ngrams(explanation)]
        toks = [_norm(t, self.normalize) for t in tokens]
        out = []
        for i in range(len(toks)):
            out.append(max([w for g, w in grams if len(g) <= i + 1 and tuple(toks[i - len(g) + 1: i + 1]) == g],
                           default=0.0))
        return out


# ---------------------------------------------------------------------------------------------------------
# Explainers and simulators over a language model (the client: circuitlab.neurons.llm)
# ---------------------------------------------------------------------------------------------------------

def _scale_0_10(activations: Sequence[float], peak: float) -> list[int]:
    """Activations on the paper's 0-10 integer scale: negative -> 0, ``peak`` -> 10."""
    if peak <= 0:
        return [0 for _ in activations]
    return [max(0, min(10, int(round(10 * a / peak)))) for a in activations]


EXPLAIN_SYSTEM = ("You study a neuron in a language model. You see text excerpts as (token, activation) lines, with "
                  "activations from 0 (none) to 10 (strongest). Say in one short phrase what the neuron fires on "
                  "(the tokens or contexts it responds to). Answer with the phrase only.")
SIMULATE_SYSTEM = ("You predict a language-model neuron's activation on each token of a text, from an explanation of "
                   "what the neuron fires on. Answer with a JSON list of integers from 0 to 10, one per token, in "
                   "order, and nothing else.")


@dataclass
class LLMExplainer:
    """A language model explains the neuron from its excerpts (activations on the paper's 0-10 scale)."""

    client: LLMClient = field(default_factory=LLMClient)
    max_excerpts: int = 10
    name: str = "LLM"

    def explain(self, excerpts: Sequence[Excerpt]) -> str:
        if not excerpts:
            raise InputError("the LLM explainer got no excerpts; give at least one top-activating excerpt.")
        shown = list(excerpts)[: self.max_excerpts]
        peak = max(e.max_activation for e in shown)
        blocks = []
        for i, e in enumerate(shown):
            lines = "\n".join(f"{t!r}\t{a}" for t, a in zip(e.tokens, _scale_0_10(e.activations, peak)))
            blocks.append(f"Excerpt {i + 1}:\n{lines}")
        reply = self.client.chat([{"role": "system", "content": EXPLAIN_SYSTEM},
                                  {"role": "user", "content": "\n\n".join(blocks)}])
        return reply.strip()


def parse_simulation(reply: str, n: int) -> list[float]:
    """The first JSON list of numbers in a simulator's reply, which must hold ``n`` of them."""
    m = re.search(r"\[[^\[\]]*\]", reply)
    try:
        values = json.loads(m.group(0)) if m else None
        values = [float(v) for v in values] if isinstance(values, list) else None
    except (ValueError, TypeError):
        values = None
    if values is None:
        raise SimulationError(f"the simulator's reply holds no JSON list of numbers: {shorten(reply[:200])}.")
    if len(values) != n:
        raise SimulationError(f"the simulator returned {len(values)} values for a text of {n} tokens; it must give one "
                              "per token.")
    return values


@dataclass
class LLMSimulator:
    """A language model predicts each token's activation (0-10) from the explanation, as a JSON list."""

    client: LLMClient = field(default_factory=LLMClient)
    name: str = "LLM"

    def simulate(self, explanation: str, tokens: Sequence[str]) -> list[float]:
        numbered = "\n".join(f"{i}\t{t!r}" for i, t in enumerate(tokens))
        reply = self.client.chat([
            {"role": "system", "content": SIMULATE_SYSTEM},
            {"role": "user", "content": f"Explanation: {explanation}\n\nTokens ({len(tokens)}):\n{numbered}"}])
        return parse_simulation(reply, len(tokens))


# ---------------------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------------------

def correlation_score(true: Float[Tensor, " token"], simulated: Float[Tensor, " token"]) -> float:
    """Pearson correlation of simulated with true activations; ``nan`` where either side has no variance
    (see the module docstring: :func:`score_simulation` reports those as 0 and flags them)."""
    x = torch.as_tensor(true, dtype=torch.float64).flatten()
    y = torch.as_tensor(simulated, dtype=torch.float64).flatten()
    if x.shape != y.shape:
        raise SimulationError(f"{len(y)} simulated values for {len(x)} true ones; give one per token.")
    # a side constant within float noise (core.resolution) has no variance to correlate: the model's activations
    # carry float32 errors of the scale of its states (floor 1); a simulation is on any scale (floor 0)
    if x.numel() == 0 or bool(unresolved(x.max(), x.min())) or bool(unresolved(y.max(), y.min(), floor=0.0)):
        return float("nan")
    x, y = x - x.mean(), y - y.mean()
    den = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    if den == 0.0 or not math.isfinite(den):
        return float("nan")
    return float((x * y).sum()) / den


def score_simulation(excerpts: Sequence[Excerpt], simulated: Sequence[Sequence[float]]) -> dict[str, float]:
    """The explanation score and its parts from held-out excerpts and a simulation of each.

    ``{"all": ..., "top": ..., "random": ...}``: the correlation over every token of every excerpt at once (the
    score), and over the top-activating and the random excerpts alone. An undefined correlation (no variance) is
    ``nan`` here.
    """
    if len(simulated) != len(excerpts):
        raise SimulationError(f"{len(simulated)} simulations for {len(excerpts)} excerpts; give one per excerpt.")
    out = {}
    for part in PARTS:
        pairs = [(e, s) for e, s in zip(excerpts, simulated) if part == "all" or e.kind == part]
        true = [a for e, _ in pairs for a in e.activations]
        sim = [float(v) for _, s in pairs for v in s]
        out[part] = correlation_score(torch.tensor(true), torch.tensor(sim)) if true else float("nan")
    return out


def _simulate(simulator: Simulator, explanation: str, excerpts: Sequence[Excerpt]) -> list[list[float]]:
    sims = []
    who = getattr(simulator, "name", type(simulator).__name__)
    for e in excerpts:
        out = simulator.simulate(explanation, e.tokens)
        if isinstance(out, (str, bytes)) or not isinstance(out, Iterable):
            raise SimulationError(f"simulator {shorten(who)} returned {type(out).__name__}, not a sequence of "
                                  "numbers (one per token).")
        s = list(out)
        if len(s) != len(e.tokens):
            raise SimulationError(f"simulator {shorten(who)} returned {len(s)} values for an excerpt of "
                                  f"{len(e.tokens)} "
                                  "tokens; it must give one per token.")
        try:
            s = [float(v) for v in s]
        except (TypeError, ValueError):
            raise SimulationError(f"simulator {shorten(who)} returned values that are not numbers.") from None
        if not all(math.isfinite(v) for v in s):
            raise SimulationError(f"simulator {shorten(who)} returned NaN or infinite values; it must predict a finite "
                                  "activation for every token.")
        sims.append(s)
    return sims


@dataclass(repr=False)
class ExplanationScores(Bundle):
    """Explanation scores of many neurons, with their controls.

    Attributes:
        scores: ``[neuron, part]`` the explanation scores (part ``all``: the score; ``top``, ``random``: its parts).
        shuffled: ``[neuron, part]`` each neuron scored with another neuron's explanation (None if not asked for).
        chance: ``[neuron, part]`` each neuron scored with random predictions (expected 0).
        explanations: one per neuron.
        undefined: ``[neuron]`` True where the score's correlation was undefined (reported as 0).
        records: the excerpts behind each score; simulations: the simulated activations of each held-out excerpt.
        layer, neurons, explainer, simulator: what was scored, and by what (the n-gram baseline says so).
    """

    scores: Result
    shuffled: Optional[Result]
    chance: Result
    explanations: list[str]
    undefined: Bool[Tensor, " neuron"]
    records: list[NeuronRecord]
    simulations: list[list[list[float]]]
    layer: int
    neurons: list[int]
    explainer: str
    simulator: str
    model: str = ""
    title: str = ""

    def distribution(self, which: str = "scores", part: str = "all") -> dict[str, float]:
        """Mean, median, quartiles, min and max over neurons of ``which`` (``scores``, ``shuffled``, ``chance``)."""
        res = getattr(self, which)
        if res is None:
            raise InputError(f"{which} was not computed (score_explanations(..., shuffled=False)).")
        if part not in PARTS:
            raise InputError(f"part={shorten(part)}: use one of {PARTS}.")
        v = res.values[:, PARTS.index(part)].double()
        q = torch.quantile(v, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
        return {"mean": float(v.mean()), "median": float(q[1]), "q1": float(q[0]), "q3": float(q[2]),
                "min": float(v.min()), "max": float(v.max()), "n": int(v.numel())}

    def summary(self) -> str:
        """The score distribution of the explanations beside the controls', one line each."""
        lines = [f"Explanation scores of {len(self.neurons)} neurons of MLP layer {self.layer}"
                 f"{' of ' + self.model if self.model else ''} (explainer: {self.explainer}; simulator: "
                 f"{self.simulator}):", "  correlation of simulated with true activations over held-out excerpts:"]
        rows = [("explanations", "scores"), ("shuffled control", "shuffled"), ("chance (random)", "chance")]
        for label, which in rows:
            if getattr(self, which) is None:
                continue
            d = self.distribution(which)
            parts = ", ".join(f"{p} {self.distribution(which, p)['mean']:+.3f}" for p in PARTS[1:])
            lines.append(f"  {label:<17} mean {d['mean']:+.3f}  median {d['median']:+.3f}  quartiles "
                         f"[{d['q1']:+.3f}, {d['q3']:+.3f}]   (means by part: {parts})")
        n_undef = int(self.undefined.sum())
        if n_undef:
            lines.append(f"  {n_undef} neuron(s) had an undefined correlation (a constant simulation), scored 0.")
        return "\n".join(lines)


def _derangement(n: int, rng: random.Random) -> list[int]:
    """A seeded permutation with no fixed point: ``out[i] != i`` (a random cycle through all ``n``)."""
    order = list(range(n))
    rng.shuffle(order)
    out = [0] * n
    for j, i in enumerate(order):
        out[i] = order[(j + 1) % n]
    return out


#: why score_explanations refuses a neuron twice
_REPEATS = ("a repeated neuron's shuffled control can be its own explanation, so the control equals the real "
            "score, and the summaries count it twice")


def score_explanations(
    model: ModelLike,
    texts: Union[Int[Tensor, " pos"], Int[Tensor, "batch pos"],
                 Iterable[Union[str, Sequence[int], Int[Tensor, " pos"]]], Sequence[NeuronRecord]],
    layer: Optional[int] = None,
    neurons: Union[int, Sequence[int], None] = None,
    *,
    explainer: Optional[Explainer] = None,
    simulator: Optional[Simulator] = None,
    n_explain: int = 10,
    n_top: int = 10,
    n_random: int = 10,
    max_tokens: int = 64,
    shuffled: bool = True,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool = False,
    max_memory: int = DEFAULT_MAX_MEMORY,
) -> ExplanationScores:
    """Explain, simulate and score MLP neurons (Bills et al. 2023), with the shuffled and chance controls.

    Args:
        model: a model with MLPs (only read for the records; may be None when ``texts`` are records).
        texts: the corpus (any iterable of texts or token-id rows, see :func:`neuron_records`), or records
            already made by :func:`neuron_records` (then ``layer``/``neurons`` are theirs).
        layer, neurons: which MLP neurons (None: all of the layer's).
        explainer, simulator: default the n-gram baseline (:class:`NgramExplainer`, :class:`NgramSimulator`).
        n_explain, n_top, n_random, max_tokens, batch_size, max_memory: see :func:`neuron_records`.
        shuffled: also score each neuron with another neuron's explanation (needs two neurons or more).
        seed: draws the random excerpts, the shuffle and the chance predictions.
        progress: show progress bars (records, then neurons).
    """
    seed = check_seed(seed)
    explainer = NgramExplainer() if explainer is None else explainer
    simulator = NgramSimulator() if simulator is None else simulator
    for what, obj, proto, method in (("explainer", explainer, Explainer, "explain(excerpts)"),
                                     ("simulator", simulator, Simulator, "simulate(explanation, tokens)")):
        if not isinstance(obj, proto):
            raise InputError(f"{what}={shorten(obj)} is not {proto.__name__}: give an object with a name and a "
                             f"{method} "
                             "method (e.g. the n-gram baseline's).")
    if isinstance(texts, Sequence) and texts and all(isinstance(r, NeuronRecord) for r in texts):
        records = list(texts)
        name = model_name(as_model(model)) if model is not None else ""
        layers = sorted({r.layer for r in records})
        if len(layers) > 1:
            raise InputError(f"texts: records of layers {layers}; one call scores the neurons of one layer (the "
                             "result is labelled by it): score each layer's records separately.")
        check_distinct([r.neuron for r in records], "the records' neurons", why=_REPEATS)
    else:
        m = as_model(model)
        if layer is None:
            raise InputError("layer is needed to score neurons from texts: give the MLP layer, e.g. layer=2.")
        if neurons is not None:
            check_distinct(check_neurons(m, neurons), "neurons", why=_REPEATS)
        records = neuron_records(m, texts, layer, neurons, n_explain=n_explain, n_top=n_top, n_random=n_random,
                                 max_tokens=max_tokens, seed=seed, batch_size=batch_size, progress=progress,
                                 max_memory=max_memory)
        name = model_name(m)
    if shuffled and len(records) < 2:
        raise InputError("the shuffled control scores each neuron with another neuron's explanation: give two "
                         "neurons or more, or shuffled=False.")
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    explanations, sims, rows, shuf, chance, undefined = [], [], [], [], [], []
    for r in progress_bar(records, progress=progress, desc="explain and simulate", unit="neuron"):
        explanations.append(explainer.explain(r.explain))
    partner = _derangement(len(records), rng) if shuffled else None
    for i, r in enumerate(progress_bar(records, progress=progress, desc="score", unit="neuron")):
        s = _simulate(simulator, explanations[i], r.held_out)
        sims.append(s)
        got = score_simulation(r.held_out, s)
        undefined.append(math.isnan(got["all"]))
        rows.append([0.0 if math.isnan(got[p]) else got[p] for p in PARTS])
        if partner is not None:
            other = score_simulation(r.held_out, _simulate(simulator, explanations[partner[i]], r.held_out))
            shuf.append([0.0 if math.isnan(other[p]) else other[p] for p in PARTS])
        noise = [torch.rand(len(e.tokens), generator=gen).tolist() for e in r.held_out]
        c = score_simulation(r.held_out, noise)
        chance.append([0.0 if math.isnan(c[p]) else c[p] for p in PARTS])
    layer_ = records[0].layer
    neuron_ids = [r.neuron for r in records]
    task = (f"{len(records[0].explain)} explanation, {len(records[0].top)} held-out top and "
            f"{len(records[0].random)} random excerpts per neuron")
    common = dict(axes=("neuron", "part"), labels={"neuron": [f"L{layer_}N{n}" for n in neuron_ids],
                                                   "part": list(PARTS)},
                  model=name, task=task, meta={"layer": layer_, "explainer": explainer.name,
                                               "simulator": simulator.name, "seed": seed, "scale": "diverging"})
    metric = f"explanation score (correlation; explainer: {explainer.name}; simulator: {simulator.name})"
    return ExplanationScores(
        scores=Result(torch.tensor(rows, dtype=torch.float64), title=f"Explanation scores, MLP L{layer_}",
                      metric=metric, **common),
        shuffled=Result(torch.tensor(shuf, dtype=torch.float64), title="Shuffled control: another neuron's "
                        "explanation", metric=metric, **common) if partner is not None else None,
        chance=Result(torch.tensor(chance, dtype=torch.float64), title="Chance: random predictions",
                      metric="correlation of random predictions with true activations", **common),
        explanations=explanations, undefined=torch.tensor(undefined, dtype=torch.bool), records=records,
        simulations=sims, layer=layer_, neurons=neuron_ids, explainer=explainer.name, simulator=simulator.name,
        model=name, title=f"Explain, simulate, score: MLP layer {layer_}")
