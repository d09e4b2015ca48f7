"""Coreference by representation similarity (Sorodoc et al. 2020): does a pronoun's representation lie closer to
its antecedent's than to the other candidate's, layer by layer?

For each item of :mod:`circuitlab.tasks.coreference` (a pronoun and two candidate antecedents before it, one of
them gold), the word representations at every hook (:func:`circuitlab.probing.collect`: the mean of each word's
tokens) give a score per candidate, the cosine similarity of the pronoun's vector with the candidate's, and a
probability per candidate, ``softmax(cos / temperature)`` over the item's candidates. Sorodoc et al. learn a
transformation of the representations before the similarity; here the similarity is taken on the representations
centred by the mean over all words of the items at that hook (the "transformation" is this centring only, which
removes the large shared direction that makes every cosine close to 1 in many models), so nothing is trained.

**Accuracy** per layer and kind: the share of items whose gold candidate scores highest. Two baselines that read
positions only: **first candidate** (the one mentioned first) and **nearest candidate** (the one closest before
the pronoun); the items are built so each scores 50% on every kind (the gold is the first candidate in half of
them), and an accuracy above them is information in the representations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from circuitlab.core import check_number, shorten
from circuitlab.errors import InputError
from circuitlab.probing.activations import check_collect_options, collect, hook_layer_label
from circuitlab.results import Bundle, Result
from circuitlab.tasks.coreference import CorefItem, coreference_items
from circuitlab.tasks.sentences import Sentence

BASELINES = ("first candidate", "nearest candidate")


@dataclass(repr=False)
class CorefScores(Bundle):
    """What :func:`coreference_similarity` returns: ``accuracy`` (``[kind, layer]``, the last kind ``"all"``),
    ``baselines`` (``[kind, baseline]``), and ``probabilities``: ``[layer, item, candidate]``."""

    accuracy: Result
    baselines: Result
    probabilities: Optional[Float[Tensor, "layer item candidate"]] = None


def coreference_similarity(model: Any, items: Optional[Sequence[CorefItem]] = None, *, hooks: Any = None,
                           temperature: float = 0.1, center: bool = True, progress: bool = False,
                           **collect_options: Any) -> CorefScores:
    """Accuracy per layer of picking the gold antecedent by the (centred) cosine similarity of the pronoun's and
    each candidate's representation, per kind of item, beside the first- and nearest-candidate baselines (see the
    module docstring). ``items``: default :func:`~circuitlab.tasks.coreference.coreference_items`; ``hooks``: as
    :func:`~circuitlab.probing.collect` (default: the embedding and every block's output); ``temperature``: of the
    candidate probabilities; ``center``: subtract the mean word vector at each hook first."""
    temperature = check_number(temperature, "temperature", low=0, low_open=True)
    items = coreference_items() if items is None else items
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence) or not items \
            or not all(isinstance(i, CorefItem) for i in items):
        raise InputError(f"items must be a non-empty list of CorefItem (circuitlab.tasks.coreference."
                         f"coreference_items()); got {shorten(items)}.")
    sentences = [Sentence(it.words, id=f"coref{i}") for i, it in enumerate(items)]
    acts = collect(model, sentences, hooks, progress=progress,
                   **check_collect_options(collect_options, "coreference_similarity"))
    row = {(int(s), int(w)): r for r, (s, w) in enumerate(zip(acts.sentence.tolist(), acts.word.tolist()))}
    usable = [i for i, it in enumerate(items) if (i, it.pronoun) in row and all((i, c) in row for c in it.candidates)]
    if not usable:
        raise InputError("no item has its pronoun and candidates aligned to the model's tokens; use text the "
                         "model's tokenizer can read.")
    n_cand = max(len(items[i].candidates) for i in usable)
    probs = torch.full((len(acts.hooks), len(usable), n_cand), float("nan"))
    for h, hook in enumerate(acts.hooks):
        x = acts[hook].float()
        if center:
            x = x - x.mean(0)
        x = torch.nn.functional.normalize(x, dim=-1)
        for j, i in enumerate(usable):
            it = items[i]
            p = x[row[(i, it.pronoun)]]
            sims = torch.stack([x[row[(i, c)]] @ p for c in it.candidates])
            probs[h, j, :len(sims)] = torch.softmax(sims / temperature, 0)
    gold = torch.tensor([items[i].gold for i in usable])
    correct = probs.nan_to_num(-1).argmax(-1) == gold  # [layer, item]
    kinds = list(dict.fromkeys(items[i].kind for i in usable))
    groups = [[j for j, i in enumerate(usable) if items[i].kind == k] for k in kinds] + [list(range(len(usable)))]
    acc = torch.stack([correct[:, g].float().mean(1) for g in groups])
    first = torch.tensor([min(range(len(items[i].candidates)), key=lambda c: items[i].candidates[c]) for i in usable])
    nearest = torch.tensor([max(range(len(items[i].candidates)), key=lambda c: items[i].candidates[c])
                            for i in usable])
    base = torch.stack([torch.stack([(first[g] == gold[g]).float().mean(), (nearest[g] == gold[g]).float().mean()])
                        for g in groups])
    common = dict(model=acts.model, task=f"coreference: {len(usable)} items ({', '.join(kinds)})",
                  meta={"left_out": len(items) - len(usable), "temperature": temperature, "center": center,
                        "n": [len(g) for g in groups], "hooks": acts.hooks})
    accuracy = Result(values=acc, axes=("kind", "layer"),
                      labels={"kind": kinds + ["all"], "layer": [hook_layer_label(h) for h in acts.hooks]},
                      title="Coreference by representation similarity", metric="share of items whose gold "
                      "antecedent is the most similar candidate (centred cosine)" if center else
                      "share of items whose gold antecedent is the most similar candidate (cosine)", **common)
    baselines = Result(values=base, axes=("kind", "baseline"), labels={"kind": kinds + ["all"],
                                                                       "baseline": list(BASELINES)},
                       title="Coreference baselines", metric="share of items whose gold antecedent is that candidate",
                       **common)
    return CorefScores(accuracy=accuracy, baselines=baselines, probabilities=probs)


__all__ = ["BASELINES", "CorefScores", "coreference_similarity"]
