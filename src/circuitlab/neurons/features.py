"""SAE features as units: explain, simulate and score the latents of a sparse autoencoder as neurons are.

The method is :mod:`circuitlab.neurons.explain`'s (Bills et al. 2023), unchanged: a feature's record holds
top-activating excerpts for the explainer and held-out top and random excerpts for scoring, built by the same
rule as :func:`~circuitlab.neurons.explain.neuron_records`, and :func:`~circuitlab.neurons.explain.score_explanations`
scores them (correlation of simulated with true activations, with the shuffled and chance controls). Bricken et
al. (2023, "Towards Monosemanticity") and Cunningham et al. (2023) scored SAE features this way to compare them
with neurons; the unit here is latent ``i`` of an SAE at its hook, its activation ``sae.encode(x)[..., i]``.

The records' rule, as for neurons: each text is one excerpt (cut to ``max_tokens`` tokens, BOS dropped); texts
are ranked by the latent's largest activation in the excerpt (ties: the earlier text), ranks 1, 3, 5, ... explain
and 2, 4, 6, ... are held out; the random excerpts are the first ``n_random`` texts of one seeded shuffle of all
texts that are neither. Activations come from one pass over the texts for every latent at once
(:func:`circuitlab.features.dashboard.latent_activations`, the pass the dashboards are made from). Offline, the
explainer and simulator are the n-gram baseline (:class:`~circuitlab.neurons.explain.NgramExplainer`), which
says so in every explanation.
"""

from __future__ import annotations

import dataclasses
import random
import re
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import torch

from circuitlab.core import (DEFAULT_MAX_MEMORY, as_model, check_count, check_seed, str_tokens)
from circuitlab.errors import InputError
from circuitlab.features.dashboard import LatentActivations, check_activations, latent_activations
from circuitlab.features.sae import check_sae
from circuitlab.neurons.explain import (Excerpt, ExplanationScores, Explainer, NeuronRecord, Simulator,
                                        score_explanations)

__all__ = ["FeatureExplanationScores", "feature_records", "explain_features", "hook_layer"]


def hook_layer(hook: str) -> int:
    """The block a hook name sits in (``blocks.2.hook_resid_post`` -> 2; -1 for a hook outside the blocks)."""
    m = re.match(r"blocks\.(\d+)\.", hook)
    return int(m.group(1)) if m else -1


def feature_records(
    model: Any,
    sae: Any,
    texts: Any,
    latents: Union[int, Sequence[int], None] = None,
    *,
    hook_name: Optional[str] = None,
    n_explain: int = 10,
    n_top: int = 10,
    n_random: int = 10,
    max_tokens: int = 64,
    seed: int = 0,
    max_memory: int = DEFAULT_MAX_MEMORY,
    progress: bool = False,
    activations: Optional[LatentActivations] = None,
) -> list[NeuronRecord]:
    """Explanation and held-out excerpts of SAE latents (module notes), as :class:`NeuronRecord` s whose
    ``neuron`` is the latent and ``layer`` the hook's block.

    Args:
        model: a model or a registry name. sae: an SAE, a shipped name (``"toy-lm/res-2"``) or an SAELens folder.
        texts: the corpus (texts; blank ones skipped). latents: one, a list, or None (all ``d_sae``).
        hook_name: the hook (default the SAE's own).
        n_explain, n_top, n_random, max_tokens, seed: as in :func:`~circuitlab.neurons.explain.neuron_records`.
        max_memory: bytes of activations per forward pass.
        activations: the pass already made by :func:`~circuitlab.features.dashboard.latent_activations`.
    """
    seed = check_seed(seed)
    model = as_model(model)
    sae = check_sae(sae)
    n_explain, n_top, n_random = (check_count(n_explain, "n_explain"), check_count(n_top, "n_top"),
                                  check_count(n_random, "n_random"))
    max_tokens = check_count(max_tokens, "max_tokens", 2)
    if activations is None:
        activations = latent_activations(model, sae, texts, latents, hook_name=hook_name, max_memory=max_memory,
                                         progress=progress)
    else:
        check_activations(activations, model, sae)
    la = activations
    n_texts = len(la.rows)
    k = n_explain + n_top
    if n_texts < k:
        raise InputError(f"texts gave {n_texts} excerpts, fewer than n_explain + n_top = {k}: give more texts (a few "
                         "hundred at least), or ask for fewer excerpts.")
    cap = min(max_tokens, model.cfg.n_ctx)
    offs = torch.tensor(la.offsets)
    text_of = torch.searchsorted(offs, la.tok, right=True) - 1 if len(la.tok) else la.tok
    in_cut = (la.tok - offs[text_of]) < cap if len(la.tok) else la.tok.bool()
    order = list(range(n_texts))
    random.Random(seed).shuffle(order)
    strings: dict[int, list[str]] = {}
    layer = hook_layer(la.hook)

    def excerpt(j: int, t: int, kind: str) -> Excerpt:
        a, b = la.starts[t], min(len(la.rows[t]), cap)
        if t not in strings:
            strings[t] = str_tokens(model, la.rows[t][a:b])
        return Excerpt(strings[t], la.text_activations(j, t)[a:b], kind, t)

    records = []
    for j, latent in enumerate(la.latents):
        lo_, hi_ = la.bounds[j], la.bounds[j + 1]
        peaks = torch.zeros(n_texts)
        sel = in_cut[lo_:hi_]
        if bool(sel.any()):
            peaks.scatter_reduce_(0, text_of[lo_:hi_][sel], la.val[lo_:hi_][sel], reduce="amax")
        ranked = torch.argsort(-peaks, stable=True)[:k].tolist()
        explain, top = ranked[0::2][:n_explain], ranked[1::2][:n_top]
        chosen = set(explain) | set(top)
        held = sorted([t for t in order if t not in chosen][:n_random])
        records.append(NeuronRecord(layer=layer, neuron=latent, explain=[excerpt(j, t, "top") for t in explain],
                                    top=[excerpt(j, t, "top") for t in top],
                                    random=[excerpt(j, t, "random") for t in held]))
    return records


@dataclass(repr=False)
class FeatureExplanationScores(ExplanationScores):
    """:class:`~circuitlab.neurons.explain.ExplanationScores` of SAE latents: ``neurons`` holds the latents,
    labelled ``F{latent}``; ``sae`` and ``hook`` say which SAE."""

    sae: str = ""
    hook: str = ""

    def summary(self) -> str:
        lines = super().summary().split("\n")
        lines[0] = (f"Explanation scores of {len(self.neurons)} latents of SAE {self.sae} at {self.hook}"
                    f"{' of ' + self.model if self.model else ''} (explainer: {self.explainer}; simulator: "
                    f"{self.simulator}):")
        return "\n".join(line.replace("neuron(s)", "latent(s)") for line in lines)


def explain_features(
    model: Any,
    sae: Any,
    texts: Any,
    latents: Union[int, Sequence[int], None] = None,
    *,
    hook_name: Optional[str] = None,
    explainer: Optional[Explainer] = None,
    simulator: Optional[Simulator] = None,
    n_explain: int = 10,
    n_top: int = 10,
    n_random: int = 10,
    max_tokens: int = 64,
    shuffled: bool = True,
    seed: int = 0,
    max_memory: int = DEFAULT_MAX_MEMORY,
    progress: bool = False,
    activations: Optional[LatentActivations] = None,
) -> FeatureExplanationScores:
    """Explain, simulate and score SAE latents (module notes), with the shuffled and chance controls.

    Args: as :func:`feature_records`, plus ``explainer`` / ``simulator`` (default the n-gram baseline) and
    ``shuffled`` (also score each latent with another latent's explanation; needs two latents or more), as in
    :func:`~circuitlab.neurons.explain.score_explanations`.
    """
    m = as_model(model)
    sae = check_sae(sae)
    records = feature_records(m, sae, texts, latents, hook_name=hook_name, n_explain=n_explain, n_top=n_top,
                              n_random=n_random, max_tokens=max_tokens, seed=seed, max_memory=max_memory,
                              progress=progress, activations=activations)
    res = score_explanations(m, records, explainer=explainer, simulator=simulator, shuffled=shuffled, seed=seed,
                             progress=progress)
    hook = sae_hook_of(records, activations, sae, hook_name)
    labels = {"neuron": [f"F{r.neuron}" for r in records], "part": res.scores.labels["part"]}
    what = f"SAE {sae.cfg.model_name or ''}{'/' if sae.cfg.model_name else ''}{hook}"

    def relabel(r, title):
        return None if r is None else dataclasses.replace(r, labels=labels, title=title,
                                                          meta={**r.meta, "sae": repr(sae), "hook": hook})

    fields = {f.name: getattr(res, f.name) for f in dataclasses.fields(ExplanationScores)}
    fields.update(scores=relabel(res.scores, f"Explanation scores, {what}"),
                  shuffled=relabel(res.shuffled, "Shuffled control: another latent's explanation"),
                  chance=relabel(res.chance, "Chance: random predictions"),
                  title=f"Explain, simulate, score: latents of {what}")
    return FeatureExplanationScores(**fields, sae=repr(sae), hook=hook)


def sae_hook_of(records: Sequence[NeuronRecord], activations: Optional[LatentActivations], sae: Any,
                hook_name: Optional[str]) -> str:
    """The hook the records were read at (the pass's, else ``hook_name``, else the SAE's own)."""
    if activations is not None:
        return activations.hook
    return hook_name or sae.cfg.hook_name or ""
