"""Feature dashboards, the data: what each chosen latent of an SAE does on a text, from one pass over it.

Per latent (the layout of sae_vis and Neuronpedia's feature pages; Bricken et al. 2023, "Towards
Monosemanticity", whose feature browser they follow):

- **density**: the fraction of the text's tokens it fires on (activation > 0), and its largest and mean
  (non-zero) activation;
- **top-activating contexts**: the texts where it fires most, at most one context per text (the text's
  strongest token), each as the tokens around that token with the latent's activation on every one of them;
- **samples from activation quantiles**: the non-zero activations cut by rank into ``n_quantiles`` groups of
  equal count (the lowest fifth, ..., the highest fifth), and ``per_quantile`` tokens drawn from each, seeded,
  each shown in its context: what the latent does when it fires weakly, not only at its peak;
- **the activation histogram**: counts of its non-zero activations in equal-width bins from 0 to its largest;
- **the logit effect**: the decoder direction ``W_dec[latent]`` read through the unembedding with the final
  norm's rule used everywhere in the package (:func:`circuitlab.core.unembed_matrix`: ``W_dec[i] @ center(w *
  W_U)``, as :func:`circuitlab.ffn.value_tokens` reads MLP value vectors): the ``k`` tokens it promotes most and
  suppresses most. This is the direct effect of the latent's write on the logits; it ignores every layer after
  the SAE's hook.

**One pass.** The texts are tokenized once (with BOS, cut to the context length) and run through the model in
batches under ``max_memory`` (:func:`circuitlab.engine.collect.stream_activations`, stopping after the hook's
block); each batch's activations are encoded by the SAE, and only the non-zero activations of the chosen latents
are kept (sparse: token, latent, value). Everything above is computed from those afterwards. The BOS position
is left out everywhere (its residual stream is an outlier the SAEs are not trained on; ``evaluate_sae`` leaves
it out too), so densities here count the same tokens as the SAE cards'. Memory: the kept activations are at most
``tokens x min(latents, k)`` triples (``k`` for a TopK SAE), checked before the pass
(:func:`circuitlab.core.check_affordable`).
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuitlab.core import (DEFAULT_MAX_MEMORY, as_model, check_affordable, check_count, check_count_within,
                             check_max_memory, check_seed, model_name, shorten, unembed_matrix)
from circuitlab.errors import InputError
from circuitlab.features.sae import SAE, check_sae, sae_hook
from circuitlab.results import Result, TopTokens, token_strings


@dataclass(frozen=True)
class Context:
    """A stretch of one text around one token: ``tokens`` (strings), the latent's ``activations`` on each,
    ``text`` (the index of the text among the non-empty ones given) and ``pos`` (the token within the text, BOS
    counted as 0), ``focus`` (its index in ``tokens``) and ``value`` (the latent's activation there)."""

    tokens: list
    activations: list
    text: int
    pos: int
    focus: int
    value: float


@dataclass(frozen=True)
class FeatureCard:
    """One latent's dashboard (module notes): ``density`` (fraction of tokens it fires on), ``max_activation``,
    ``mean_activation`` (over the tokens it fires on), ``top`` contexts (best first), ``quantiles``: ``(label,
    low, high, contexts)`` per quantile group (lowest first), ``histogram``: ``(edges, counts)`` of its non-zero
    activations, ``promoted`` / ``suppressed``: ``(token, logit effect)`` pairs."""

    latent: int
    density: float
    fired: int
    max_activation: float
    mean_activation: float
    top: list
    quantiles: list
    histogram: tuple
    promoted: list
    suppressed: list


@dataclass(frozen=True)
class FeatureDashboards:
    """Dashboards of the chosen latents of one SAE (:func:`feature_dashboards`): ``cards`` (one per latent, in
    the order asked), ``density`` and ``max_activation`` (Results along ``"latent"``), ``promoted`` /
    ``suppressed`` (:class:`~circuitlab.results.TopTokens` ``[latent, rank]``), ``tokens`` (tokens read, BOS
    left out), ``model``, ``hook``, ``sae`` (its repr) and ``meta`` (the settings)."""

    cards: list
    density: Result
    max_activation: Result
    promoted: TopTokens
    suppressed: TopTokens
    tokens: int
    model: str
    hook: str
    sae: str
    meta: dict

    def card(self, latent: int) -> FeatureCard:
        """The card of ``latent`` (an SAE latent index, not a position in ``cards``)."""
        for c in self.cards:
            if c.latent == latent:
                return c
        raise InputError(f"latent {shorten(latent)} has no card here; the cards are of latents "
                         f"{shorten([c.latent for c in self.cards])}.")


def check_latents(sae: SAE, latents: Any) -> list[int]:
    """``latents``: None (every latent), one index or a sequence of distinct indices in ``[0, d_sae)``."""
    d = sae.cfg.d_sae
    if latents is None:
        return list(range(d))
    if isinstance(latents, bool):
        raise InputError(f"latents={latents!r}: give latent indices in [0, {d}), e.g. [3, 17].")
    if isinstance(latents, int):
        latents = [latents]
    if isinstance(latents, Tensor):
        latents = latents.reshape(-1).tolist()
    if isinstance(latents, range):
        latents = list(latents)
    if not isinstance(latents, Sequence) or isinstance(latents, (str, bytes)) or not latents:
        raise InputError(f"latents={shorten(latents)}: give one latent index or a non-empty list of them in "
                         f"[0, {d}).")
    out = []
    for v in latents:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < d:
            raise InputError(f"latents holds {shorten(v)}; every latent must be an integer in [0, {d}) (this SAE "
                             f"has d_sae={d}).")
        out.append(int(v))
    if len(set(out)) != len(out):
        raise InputError(f"latents={shorten(out)} repeats a latent; give each once.")
    return out


def _rows(model: Any, texts: Any) -> list[Tensor]:
    from circuitlab.core import check_texts
    from circuitlab.engine.collect import token_rows

    if isinstance(texts, (list, tuple)) and texts and all(isinstance(t, str) for t in texts):
        texts = [t for t in texts if t.strip()]
        if not texts:
            raise InputError("texts are all blank; give texts with words in them.")
    else:
        texts = check_texts(texts, "texts")
    return [r.cpu() for r in token_rows(model, texts, what="feature_dashboards")]


def logit_effect(model: Any, sae: SAE, latents: Sequence[int]) -> Float[Tensor, "latent vocab"]:
    """``W_dec[latents] @ unembed_matrix(model)``: each decoder direction through the final norm's weight (and
    centering, for LayerNorm) and the unembedding (module notes)."""
    W = sae.W_dec.detach()[list(latents)].float()
    return W @ unembed_matrix(model, through_norm=True).float()


@dataclass(frozen=True)
class LatentActivations:
    """The non-zero activations of chosen latents over tokenized texts, from one pass (:func:`latent_activations`).

    ``rows``: the token ids of each non-empty text (BOS first where the model has one); ``starts``: the first
    position read in each (1 after a BOS, else 0); ``offsets``: where each row begins in the flat token index;
    ``latents``: the SAE latents, in the order asked; ``tok``, ``col``, ``val``: the non-zero activations as
    (flat token index, position in ``latents``, value), sorted by latent, then token; ``bounds``: where each
    latent's entries begin and end in them; ``tokens``: the tokens read (BOS left out).
    """

    rows: list
    starts: list
    offsets: list
    latents: list
    tok: Int[Tensor, " nonzero"]
    col: Int[Tensor, " nonzero"]
    val: Float[Tensor, " nonzero"]
    bounds: list
    tokens: int
    hook: str
    model: str
    sae: str

    def text_activations(self, j: int, text: int) -> list:
        """Latent ``latents[j]``'s activation on every token of text ``text`` (BOS included, as 0)."""
        lo_, hi_ = self.bounds[j], self.bounds[j + 1]
        a, b = self.offsets[text], self.offsets[text + 1]
        seg = self.tok[lo_:hi_]
        s0 = lo_ + int(torch.searchsorted(seg, torch.tensor(a)))
        s1 = lo_ + int(torch.searchsorted(seg, torch.tensor(b)))
        out = [0.0] * (b - a)
        for g, v in zip(self.tok[s0:s1].tolist(), self.val[s0:s1].tolist()):
            out[g - a] = v
        return out


def check_activations(activations: Any, model: Any, sae: SAE) -> None:
    """``activations`` is a :class:`LatentActivations` of this model and SAE (what :func:`latent_activations`
    returned for them)."""
    if not isinstance(activations, LatentActivations):
        raise InputError(f"activations={shorten(activations, 40)}: give what latent_activations returned, or None.")
    if activations.sae != repr(sae) or activations.model != model_name(model):
        raise InputError(f"activations were read with {activations.sae} on {activations.model}, not with {sae!r} on "
                         f"{model_name(model)}; pass the same model and SAE, or activations=None.")


@torch.no_grad()
def latent_activations(model: Any, sae: Any, texts: Any, latents: Union[int, Sequence[int], None] = None, *,
                       hook_name: Optional[str] = None, max_memory: int = DEFAULT_MAX_MEMORY,
                       progress: bool = False) -> LatentActivations:
    """The non-zero activations of SAE ``latents`` on ``texts``, from one streamed pass (module notes): what
    :func:`feature_dashboards` and the feature explanations (:mod:`circuitlab.neurons.features`) are made from.

    Args:
        model: a model or a registry name. sae: an SAE, a shipped name or an SAELens folder.
        texts: the texts (each tokenized with BOS, cut to the context length; blank ones skipped).
        latents: one latent, a list, or None (all ``d_sae``). hook_name: the hook (default the SAE's own).
        max_memory: bytes of activations per forward pass (the package's one meaning).
    """
    from circuitlab.core import progress_bar
    from circuitlab.engine.collect import stream_activations

    model = as_model(model)
    sae = check_sae(sae)
    name = sae_hook(model, sae, hook_name)
    chosen = check_latents(sae, latents)
    max_memory = check_max_memory(max_memory)
    rows = _rows(model, texts)
    bos = getattr(getattr(model, "tokenizer", None), "bos_token_id", None)
    starts = [1 if bos is not None and len(r) > 1 and int(r[0]) == bos else 0 for r in rows]
    n_tokens = sum(len(r) - s for r, s in zip(rows, starts))
    if n_tokens < 1:
        raise InputError("texts: every text is only a BOS token; give texts with words in them.")
    N = len(chosen)
    per_token = min(N, sae.cfg.k) if sae.cfg.architecture == "topk" else N
    check_affordable(16 * n_tokens * per_token, f"the non-zero activations of {N:,} latents over {n_tokens:,} "
                     "tokens", "choose fewer latents or give less text")
    idx = torch.tensor(chosen)
    offsets = [0]
    for r in rows:
        offsets.append(offsets[-1] + len(r))
    keep_tok, keep_col, keep_val = [], [], []

    def read(act: Tensor) -> Tensor:
        f = sae.encode(act.reshape(*act.shape[:2], -1).to(sae.W_enc.dtype))
        if not torch.isfinite(f).all():
            raise InputError(f"the latents at hook {name!r} hold NaN or infinite values (the activations or the SAE's "
                             "weights are not finite); check the model (circuitlab.core.check_weights_finite).")
        return f[..., idx.to(f.device)].float().cpu()

    items = list(enumerate(rows))
    for batch, toks, acts in progress_bar(
            stream_activations(model, items, name, read, row=lambda item: item[1].to(model.cfg.device),
                               max_memory=max_memory), progress=progress, desc="latent activations", unit="batch"):
        real = torch.zeros(acts.shape[:2], dtype=torch.bool)
        base = torch.zeros(acts.shape[0], dtype=torch.long)
        for b, (i, r) in enumerate(batch):
            real[b, starts[i]: len(r)] = True
            base[b] = offsets[i]
        b_i, p_i, c_i = torch.nonzero((acts > 0) & real[..., None], as_tuple=True)
        keep_tok.append(base[b_i] + p_i)
        keep_col.append(c_i)
        keep_val.append(acts[b_i, p_i, c_i])
    tok = torch.cat(keep_tok) if keep_tok else torch.zeros(0, dtype=torch.long)
    col = torch.cat(keep_col) if keep_col else torch.zeros(0, dtype=torch.long)
    val = torch.cat(keep_val) if keep_val else torch.zeros(0)
    order = torch.argsort(col * (offsets[-1] + 1) + tok)  # by latent, then by token
    tok, col, val = tok[order], col[order], val[order]
    bounds = torch.searchsorted(col, torch.arange(N + 1)).tolist()
    return LatentActivations(rows=rows, starts=starts, offsets=offsets, latents=chosen, tok=tok, col=col, val=val,
                             bounds=bounds, tokens=n_tokens, hook=name, model=model_name(model), sae=repr(sae))


@torch.no_grad()
def feature_dashboards(
    model: Any,
    sae: Any,
    texts: Any,
    latents: Union[int, Sequence[int], None] = None,
    *,
    hook_name: Optional[str] = None,
    n_top: int = 10,
    n_quantiles: int = 5,
    per_quantile: int = 3,
    left: int = 12,
    right: int = 4,
    bins: int = 24,
    k: int = 10,
    seed: int = 0,
    max_memory: int = DEFAULT_MAX_MEMORY,
    progress: bool = False,
    activations: Optional[LatentActivations] = None,
) -> FeatureDashboards:
    """Dashboard data of SAE latents on ``texts`` from one pass (module notes).

    Args:
        model: a model or a registry name. sae: an SAE, a shipped name (``"toy-lm/res-2"``) or an SAELens folder.
        texts: the texts to read (held-out text: e.g. zoo/toy-lm's ``heldout.txt``, a verse a line).
        latents: one latent, a list, or None (all ``d_sae``).
        hook_name: the hook (default the SAE's own).
        n_top: top-activating contexts per latent (at most one per text).
        n_quantiles, per_quantile: quantile groups of the non-zero activations, and tokens drawn from each.
        left, right: tokens shown before and after a context's token.
        bins: bins of the activation histogram. k: tokens promoted and suppressed.
        seed: draws the quantile samples.
        max_memory: bytes of activations per forward pass (the package's one meaning).
        activations: the pass already made by :func:`latent_activations` on these texts, latents and hook (then
            ``texts``, ``latents``, ``hook_name`` and ``max_memory`` are not read again).
    """
    model = as_model(model)
    sae = check_sae(sae)
    n_top, n_quantiles, per_quantile = (check_count(n_top, "n_top"), check_count(n_quantiles, "n_quantiles"),
                                        check_count(per_quantile, "per_quantile"))
    left, right = check_count(left, "left", 0), check_count(right, "right", 0)
    bins = check_count(bins, "bins")
    k = check_count_within(k, "k", model.cfg.d_vocab_out, "tokens in the vocabulary")
    seed = check_seed(seed)
    if activations is None:
        activations = latent_activations(model, sae, texts, latents, hook_name=hook_name, max_memory=max_memory,
                                         progress=progress)
    else:
        check_activations(activations, model, sae)
    la = activations
    rows, starts, offsets, chosen, n_tokens, name = la.rows, la.starts, la.offsets, la.latents, la.tokens, la.hook
    tok, val, bounds = la.tok, la.val, la.bounds
    offs = torch.tensor(offsets)
    text_of = torch.searchsorted(offs, tok, right=True) - 1 if len(tok) else tok

    labels: dict[int, list[str]] = {}

    def strings(t: int) -> list[str]:
        if t not in labels:
            labels[t] = token_strings(model, rows[t])
        return labels[t]

    def context(t: int, pos: int, gl: list, vl: list) -> Context:
        """Text ``t`` around position ``pos``; ``gl``/``vl``: one latent's flat token indices (sorted) and values."""
        a, b = max(starts[t], pos - left), min(len(rows[t]), pos + right + 1)
        acts = [0.0] * (b - a)
        base = offsets[t] + a
        for e in range(bisect.bisect_left(gl, base), bisect.bisect_left(gl, offsets[t] + b)):
            acts[gl[e] - base] = vl[e]
        return Context(tokens=strings(t)[a:b], activations=acts, text=t, pos=pos, focus=pos - a,
                       value=acts[pos - a])

    effect = logit_effect(model, sae, chosen)
    tt = dict(k=k, strings=lambda ids: token_strings(model, ids), axes=("latent", "rank"),
              labels={"latent": [f"F{c}" for c in chosen]}, model=model_name(model),
              metric="W_dec[latent] @ center(w_ln * W_U)", task=f"SAE {sae!r} decoder directions",
              meta={"hook": name})
    promoted = TopTokens.from_scores(effect, title="Tokens the latents promote (logit effect)", **tt)
    suppressed = TopTokens.from_scores(effect, largest=False, title="Tokens the latents suppress (logit effect)", **tt)
    rng = random.Random(seed)
    cards = []
    densities, maxima = [], []
    for j, latent in enumerate(chosen):
        lo_, hi_ = bounds[j], bounds[j + 1]
        v, g, tx = val[lo_:hi_], tok[lo_:hi_], text_of[lo_:hi_]
        gl, vl, tl = g.tolist(), v.tolist(), tx.tolist()
        fired = int(v.numel())
        vmax = float(v.max()) if fired else 0.0
        densities.append(fired / n_tokens)
        maxima.append(vmax)
        top: list[Context] = []
        quant: list = []
        edges = torch.linspace(0.0, vmax if vmax > 0 else 1.0, bins + 1)
        counts = [0] * bins
        if fired:
            # one context per text: the text's strongest token (the earliest on a tie)
            by_val = torch.argsort(-v, stable=True).tolist()
            seen_texts: set = set()
            for e in by_val:
                t = tl[e]
                if t in seen_texts:
                    continue
                seen_texts.add(t)
                top.append(context(t, gl[e] - offsets[t], gl, vl))
                if len(top) == n_top:
                    break
            ranked = torch.argsort(v, stable=True).tolist()  # lowest first
            for qi in range(n_quantiles):
                a, b = qi * fired // n_quantiles, (qi + 1) * fired // n_quantiles
                members = ranked[a:b]
                label = f"{100 * qi // n_quantiles}-{100 * (qi + 1) // n_quantiles}%"
                if not members:
                    quant.append((label, float("nan"), float("nan"), []))
                    continue
                picks = sorted(rng.sample(members, min(per_quantile, len(members))), key=lambda e: -vl[e])
                ctxs = [context(tl[e], gl[e] - offsets[tl[e]], gl, vl) for e in picks]
                quant.append((label, vl[members[0]], vl[members[-1]], ctxs))
            counts = torch.histc(v, bins=bins, min=0.0, max=float(edges[-1])).long().tolist()
        cards.append(FeatureCard(
            latent=latent, density=fired / n_tokens, fired=fired, max_activation=vmax,
            mean_activation=float(v.mean()) if fired else 0.0, top=top, quantiles=quant,
            histogram=(edges.tolist(), counts),
            promoted=list(zip(promoted.tokens[j], promoted.values[j].tolist())),
            suppressed=list(zip(suppressed.tokens[j], suppressed.values[j].tolist()))))
    meta = {"model": model_name(model), "hook": name, "sae": repr(sae), "tokens": n_tokens, "texts": len(rows)}
    lab = {"latent": [f"F{c}" for c in chosen]}
    settings = dict(n_top=n_top, n_quantiles=n_quantiles, per_quantile=per_quantile, left=left, right=right,
                    bins=bins, k=k, seed=seed, texts=len(rows), latents=chosen,
                    sae_name=getattr(sae, "name", None) or sae.cfg.metadata.get("name"))
    return FeatureDashboards(
        cards=cards,
        density=Result(torch.tensor(densities), ("latent",), labels=lab, title="Feature density",
                       metric="fraction of tokens the latent fires on", model=model_name(model), meta=meta),
        max_activation=Result(torch.tensor(maxima), ("latent",), labels=lab, title="Largest activation",
                              metric="largest latent activation", model=model_name(model), meta=meta),
        promoted=promoted, suppressed=suppressed, tokens=n_tokens, model=model_name(model), hook=name,
        sae=repr(sae), meta=settings)


__all__ = ["Context", "FeatureCard", "FeatureDashboards", "LatentActivations", "latent_activations",
           "feature_dashboards", "check_latents"]
