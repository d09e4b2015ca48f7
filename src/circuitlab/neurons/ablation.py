"""Ablation curves: how much of a property (or of the model's own loss) rides on the top-ranked neurons.

    from circuitlab.neurons.ranking import rank_neurons
    from circuitlab.neurons.ablation import ablation_curves, loss_curves

    acts = circuitlab.probing.collect(model, sents, hooks=[f"blocks.{l}.mlp.hook_post" for l in range(4)])
    r = rank_neurons(acts, task="upos")
    cur = ablation_curves(acts, r, task="upos")
    cur.values          # [protocol, measure, selection, k]: test accuracy, control accuracy, selectivity
    cur.labels["selection"]   # "top keep", "random keep", "bottom keep", "top remove", ...
    lc = loss_curves(model, r, sents)    # [selection, k]: next-token loss with the top-k neurons ablated

**Selections.** For each ``k`` on a log grid (1, 2, 4, ... and all ``N`` neurons): the ``k`` best-ranked
neurons (``top``), the ``k`` worst (``bottom``), and ``k`` drawn at random (one draw per seed in
``random_seeds``; the curve is the mean over draws, the spread is in ``meta``). **Keep** uses only the selected
neurons; **remove** uses every neuron but them.

**Probe protocols** (Dalvi et al. 2019 report both): ``"masked"``: one elastic-net probe
(:func:`~circuitlab.neurons.ranking.elastic_net_probe`, the ranking's probe) is trained on all neurons, and at test
time the unused neurons are set to their training mean (their standardised input to the probe is 0), without
retraining: what the trained probe loses. ``"retrained"``: a fresh L2 linear probe
(:func:`circuitlab.probing.train_probe`) is trained on the used neurons alone: what the neurons themselves
hold. A selection with no neuron left predicts the most frequent training label. Probes train on the training
split and are scored on the test split (the same sentence split as the ranking, so a ranking computed on the
training split is scored on words it never saw).

**Selectivity** (Hewitt & Liang 2019): each accuracy is paired with the accuracy of the same protocol on the
control task (:func:`circuitlab.probing.control_labels`: every word type gets a random label), and selectivity =
accuracy - control. A neuron set that keeps accuracy by memorising word identities keeps control accuracy too,
and its selectivity is low.

**The model's own loss** (:func:`loss_curves`, decoders): the mean next-token cross-entropy on the sentences
with the selected MLP neurons (``blocks.{l}.mlp.hook_post``) removed, zeroed (``"zero"``) or set to their mean
over the same text (``"mean"``), by forward hooks, against random and bottom-ranked neurons.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any, Optional, Sequence

import torch
from jaxtyping import Int
from torch import Tensor

from circuitlab.core import (DEFAULT_MAX_MEMORY, check_count, check_max_memory, check_seed, model_name, progress_bar,
                             row_bytes, row_chunks, shorten)
from circuitlab.errors import InputError
from circuitlab.neurons.ranking import (DEFAULT_L1, DEFAULT_L2, elastic_net_probe, encode, features, layer_labels,
                                        neuron_activations, train_rows, word_labels)
from circuitlab.probing.classifier import check_seeds, control_labels, train_probe
from circuitlab.tasks.sentences import Sentence
from circuitlab.results import Result

PROTOCOLS = ("masked", "retrained")
MODES = ("keep", "remove")
MEASURES = ("accuracy", "control", "selectivity")
WHICH = ("top", "random", "bottom")


def log_grid(n: int) -> list[int]:
    """``1, 2, 4, ...`` below ``n``, then ``n``."""
    out, k = [], 1
    while k < n:
        out.append(k)
        k *= 2
    return out + [n]


def check_ks(ks: Any, n: int) -> list[int]:
    """``ks`` checked against ``n`` neurons: distinct counts from 1 to ``n``, sorted (default :func:`log_grid`)."""
    if ks is None:
        return log_grid(n)
    if isinstance(ks, (list, tuple, range)) and len(ks) > n:  # more counts than neurons: some repeat or exceed n
        raise InputError(f"ks has {len(ks):,} counts for {n} ranked neurons; give distinct counts from 1 to {n}.")
    items = [ks] if isinstance(ks, int) else list(ks) if isinstance(ks, (list, tuple, range)) else None
    if not items:
        raise InputError(f"ks={shorten(ks)}: give neuron counts, e.g. ks=[1, 10, 100].")
    out = [check_count(k, "k") for k in items]
    big = [k for k in out if k > n]
    if big:
        raise InputError(f"k={big[0]} is larger than the {n} ranked neurons; use k <= {n}.")
    return sorted(set(out))


def ranked_columns(ranking: Any, hooks: Sequence[str], widths: Sequence[int]) -> Int[Tensor, " neurons"]:
    """The ranking's order as column indices of the features of ``hooks`` side by side (best first)."""
    if not isinstance(ranking, Result) or not isinstance(ranking.meta.get("order"), Tensor) \
            or "hooks" not in ranking.meta:
        raise InputError("ranking must be a neuron ranking Result (from circuitlab.neurons.ranking.rank_neurons or "
                         "correlation_ranking), whose meta holds the order and the hooks.")
    order, rhooks = ranking.meta["order"], list(ranking.meta["hooks"])
    missing = [h for h in rhooks if h not in hooks]
    if missing:
        raise InputError(f"hooks {missing} of the ranking were not collected in these activations ({list(hooks)}); "
                         "collect the ranking's hooks.")
    offsets = {h: sum(widths[:i]) for i, h in enumerate(hooks)}
    width = dict(zip(hooks, widths))
    if order.ndim != 2 or order.shape[1] != 2 or order.shape[0] == 0:
        raise InputError("ranking.meta['order'] must be a [neurons, 2] tensor of (hook index, neuron).")
    bad = [(int(h), int(j)) for h, j in order.tolist() if not 0 <= h < len(rhooks) or not 0 <= j < width[rhooks[h]]]
    if bad:
        h, j = bad[0]
        raise InputError(f"neuron={j} of hook index {h} is out of range for the collected activations; the ranking "
                         "does not belong to these activations.")
    cols = torch.tensor([offsets[rhooks[h]] + j for h, j in order.tolist()], dtype=torch.long)
    if cols.unique().numel() != cols.numel():
        raise InputError("ranking.meta['order'] lists a neuron twice.")
    return cols


def _selection(cols: Tensor, which: str, k: int, seed: int) -> Tensor:
    if which == "top":
        return cols[:k]
    if which == "bottom":
        return cols[-k:]
    perm = torch.randperm(cols.numel(), generator=torch.Generator().manual_seed(seed))
    return cols[perm[:k]]


def ablation_curves(source: Any, ranking: Result, sentences: Optional[Sequence[Sentence]] = None,
                    task: str = "upos", *, labels: Any = None, ks: Any = None, modes: Sequence[str] = MODES,
                    protocols: Sequence[str] = PROTOCOLS, random_seeds: Sequence[int] = (0, 1, 2),
                    control: bool = True, control_seed: int = 0, lowercase: bool = False,
                    split: Sequence[float] = (0.8, 0.1, 0.1), split_seed: int = 0, l1: float = DEFAULT_L1,
                    l2: float = DEFAULT_L2, max_iter: int = 500, weight_decay: Optional[float] = None,
                    progress: bool = False, **collect_options: Any) -> Result:
    """Probe accuracy, control accuracy and selectivity as the top-, random- and bottom-ranked ``k`` neurons are
    kept or removed: a :class:`~circuitlab.results.Result` with axes ``("protocol", "measure", "selection",
    "k")`` on the test split (random selections: the mean over ``random_seeds``).

    Args:
        source: :class:`~circuitlab.probing.activations.WordActivations` holding the ranking's hooks, or a model
            (or name) to collect them from on ``sentences``.
        ranking: a ranking from :func:`~circuitlab.neurons.ranking.rank_neurons` or
            :func:`~circuitlab.neurons.ranking.correlation_ranking` (its ``meta["order"]`` and ``meta["hooks"]``).
        task, labels: the property, as in :func:`~circuitlab.neurons.ranking.rank_neurons`.
        ks: neuron counts (default ``1, 2, 4, ...`` and all).
        modes: ``"keep"`` (only the selected neurons) and/or ``"remove"`` (all but them).
        protocols: ``"masked"`` (the trained elastic-net probe, unused neurons at their mean) and/or
            ``"retrained"`` (a fresh L2 probe on the used neurons).
        random_seeds: one random selection per seed.
        control, control_seed, lowercase: the control task (:func:`circuitlab.probing.control_labels`); without it
            ``control`` and ``selectivity`` are NaN.
        split, split_seed: the sentence split (use the ranking's).
        l1, l2, max_iter: the masked protocol's elastic-net probe; ``weight_decay``: the retrained probes' L2.

    ``meta``: ``random_sd`` and ``random_per_seed`` (random selections' spread), ``full`` (``[protocol,
    measure]`` with every neuron), ``majority_baseline``, ``ks``, ``n_neurons``, ``n_words`` per split, timings.
    """
    control_seed = check_seed(control_seed, "control_seed")
    split_seed = check_seed(split_seed, "split_seed")
    t0 = time.perf_counter()
    modes = _choices(modes, MODES, "modes")
    protocols = _choices(protocols, PROTOCOLS, "protocols")
    seeds = check_seeds(random_seeds, "random_seeds")
    hooks = ranking.meta.get("hooks") if isinstance(ranking, Result) else None
    if not isinstance(hooks, list) or not hooks:
        raise InputError("ranking must be a neuron ranking Result (from rank_neurons or correlation_ranking), whose "
                         "meta holds the order and the hooks.")
    acts = neuron_activations(source, sentences, hooks, progress=progress, **collect_options)
    x, _ = features(acts)
    cols = ranked_columns(ranking, acts.hooks, [acts.acts[h].shape[1] for h in acts.hooks])
    N = cols.numel()
    ks = check_ks(ks, N)
    values = word_labels(acts, task, labels)
    y, classes = encode(values)
    parts = train_rows(acts, split, split_seed)
    tr, te = parts["train"], parts["test"]
    targets = {"accuracy": y}
    if control:
        words = acts.labels("word")
        index = {c: i for i, c in enumerate(classes)}
        targets["control"] = torch.tensor([index[c] for c in control_labels(words, values, control_seed, lowercase)])
    C = len(classes)
    masked = {m: elastic_net_probe(x[tr], t[tr], C, l1=l1, l2=l2, max_iter=max_iter)
              for m, t in targets.items()} if "masked" in protocols else {}
    xs_te = {m: ((x[te] - p.mean) / p.std) for m, p in masked.items()}
    majority = {m: Counter(t[tr].tolist()).most_common(1)[0][0] for m, t in targets.items()}

    def score(protocol: str, measure: str, used: Tensor) -> float:
        t = targets[measure]
        if used.numel() == 0:
            return float((t[te] == majority[measure]).float().mean())
        if protocol == "masked":
            p = masked[measure]
            mask = torch.zeros(x.shape[1])
            mask[used] = 1.0
            pred = p.net(xs_te[measure] * mask).argmax(-1)
            return float((pred == t[te]).float().mean())
        probe = train_probe(x[tr][:, used], t[tr], C, "linear", weight_decay=weight_decay)
        return probe.accuracy(x[te][:, used], t[te])

    selections = [(w, m) for m in modes for w in WHICH]
    measured = [m for m in MEASURES[:2] if m in targets]
    per_seed = torch.full((len(protocols), len(MEASURES), len(selections), len(ks), len(seeds)), float("nan"))
    everything = torch.arange(x.shape[1])
    jobs = [(p, s, j) for p in range(len(protocols)) for s in range(len(selections)) for j in range(len(ks))]
    for p, s, j in progress_bar(jobs, progress=progress, desc="ablation curves", unit="point"):
        which, mode = selections[s]
        for r, seed in enumerate(seeds if which == "random" else seeds[:1]):
            chosen = _selection(cols, which, ks[j], seed)
            if mode == "keep":
                used = chosen.sort().values
            else:
                keep = torch.ones(x.shape[1], dtype=torch.bool)
                keep[chosen] = False
                used = everything[keep]
            for m, measure in enumerate(measured):
                per_seed[p, m, s, j, r] = score(protocols[p], measure, used)
        if which != "random":
            per_seed[p, :, s, j, 1:] = per_seed[p, :, s, j, :1]
    per_seed[:, 2] = per_seed[:, 0] - per_seed[:, 1]
    full = torch.tensor([[score(pr, m, everything) if m in targets else float("nan") for m in MEASURES[:2]]
                         for pr in protocols])
    full = torch.cat([full, (full[:, 0] - full[:, 1])[:, None]], 1)
    meta = {"random_per_seed": per_seed, "random_sd": per_seed.std(-1) if len(seeds) > 1 else
            torch.zeros(per_seed.shape[:-1]), "random_seeds": seeds, "full": full, "ks": ks, "n_neurons": N,
            "majority_baseline": float((y[te] == majority["accuracy"]).float().mean()), "classes": classes,
            "hooks": acts.hooks, "layers": layer_labels(acts.hooks),
            "n_words": {k: int(v.numel()) for k, v in parts.items()}, "split": tuple(split), "split_seed": split_seed,
            "control_seed": control_seed if control else None, "ranking": ranking.title,
            "masked_probe": {m: p.meta for m, p in masked.items()}, "seconds": time.perf_counter() - t0}
    return Result(values=per_seed.mean(-1), axes=("protocol", "measure", "selection", "k"),
                  labels={"protocol": list(protocols), "measure": list(MEASURES),
                          "selection": [f"{w} {m}" for w, m in selections], "k": [str(k) for k in ks]},
                  title=f"Ablation curves ({task if labels is None else 'labels'}; {ranking.title})",
                  metric="test accuracy (control: Hewitt & Liang control task; selectivity = accuracy - control)",
                  model=acts.model, task=task if labels is None else "user labels", meta=meta)


def _choices(given: Any, allowed: Sequence[str], what: str) -> tuple[str, ...]:
    items = (given,) if isinstance(given, str) else tuple(given) if isinstance(given, (list, tuple)) else None
    if not items or any(i not in allowed for i in items) or len(set(items)) != len(items):
        raise InputError(f"{what}={shorten(given)}: choose one or more of {', '.join(map(repr, allowed))}.")
    return items


# ---------------------------------------------------------------------------------------------------------
# The model's own loss
# ---------------------------------------------------------------------------------------------------------

def _texts(texts: Any) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Sequence) or not texts:
        raise InputError("sentences must be a non-empty list of Sentence objects or strings.")
    out = [" ".join(t.words) if isinstance(t, Sentence) else t for t in texts]
    if not all(isinstance(t, str) and t.strip() for t in out):
        raise InputError("sentences: every item must be a Sentence or a non-empty string.")
    return out


@torch.no_grad()
def loss_curves(model: Any, ranking: Result, sentences: Any, *, ks: Any = None, method: str = "zero",
                random_seeds: Sequence[int] = (0, 1, 2), max_memory: int = DEFAULT_MAX_MEMORY,
                progress: bool = False) -> Result:
    """The model's mean next-token cross-entropy on ``sentences`` with its top-, random- and bottom-ranked ``k``
    MLP neurons ablated: a :class:`~circuitlab.results.Result` with axes ``("selection", "k")`` (selections
    ``"top"``, ``"random"`` (mean over ``random_seeds``), ``"bottom"``).

    Args:
        model: a decoder (or name); the ranking's hooks must be this model's ``blocks.{l}.mlp.hook_post``.
        ranking: a neuron ranking (:func:`~circuitlab.neurons.ranking.rank_neurons`,
            :func:`~circuitlab.neurons.ranking.correlation_ranking`) of this model's MLP neurons.
        sentences: :class:`~circuitlab.probing.data.Sentence` objects (their words joined by spaces) or strings.
        ks: neuron counts (default ``1, 2, 4, ...`` and all).
        method: ``"zero"`` or ``"mean"`` (each neuron's mean over every token of ``sentences``).
        max_memory: bytes one forward pass may hold (batches of sentences are cut to fit).

    ``meta``: ``clean_loss`` (nothing ablated), ``random_sd``, ``random_per_seed``, ``ks``, ``n_tokens``.
    """
    from circuitlab.core import as_model

    t0 = time.perf_counter()
    model = as_model(model)
    if method not in ("zero", "mean"):
        raise InputError(f"method={shorten(method)}: use 'zero' or 'mean'.")
    seeds = check_seeds(random_seeds, "random_seeds")
    max_memory = check_max_memory(max_memory)
    texts = _texts(sentences)
    if not isinstance(ranking, Result) or not isinstance(ranking.meta.get("order"), Tensor):
        raise InputError("ranking must be a neuron ranking Result (from rank_neurons or correlation_ranking).")
    hooks = list(ranking.meta["hooks"])
    bad = [h for h in hooks if h not in model.hook_dict or not h.endswith("mlp.hook_post")]
    if bad:
        raise InputError(f"hooks {bad} of the ranking are not MLP neuron hooks (blocks.{{l}}.mlp.hook_post) of this "
                         "model; rank this model's MLP neurons first.")
    widths = [int(model.cfg.d_mlp)] * len(hooks)
    cols = ranked_columns(ranking, hooks, widths)
    N = cols.numel()
    ks = check_ks(ks, N)
    tokens = [model.to_tokens(t)[0].cpu() for t in texts]
    if any(len(t) < 2 for t in tokens):
        raise InputError("sentences: each needs at least two tokens to have a next-token loss.")
    order = sorted(range(len(tokens)), key=lambda i: -len(tokens[i]))
    longest = len(tokens[order[0]])
    batches = [[order[i] for i in range(sl.start, sl.stop)]
               for sl in row_chunks(len(order), row_bytes(model, longest, logits=model.cfg.d_vocab), max_memory)]
    device = model.cfg.device if getattr(model.cfg, "device", None) is not None else "cpu"
    d = int(model.cfg.d_mlp)

    def padded(batch: list[int]) -> tuple[Tensor, Tensor]:
        width = max(len(tokens[i]) for i in batch)
        toks = torch.zeros((len(batch), width), dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.bool)
        for b, i in enumerate(batch):
            toks[b, :len(tokens[i])] = tokens[i]
            mask[b, :len(tokens[i])] = True
        return toks.to(device), mask.to(device)

    means = torch.zeros(len(hooks), d)
    if method == "mean":
        count = 0
        for batch in batches:
            toks, mask = padded(batch)
            _, cache = model.run_with_cache(toks, names_filter=lambda n: n in hooks, return_type=None)
            for i, h in enumerate(hooks):
                means[i] += cache[h][mask].float().sum(0).cpu()
            count += int(mask.sum())
        means /= count

    def loss(ablate: Tensor) -> float:
        fwd = []
        for i, h in enumerate(hooks):
            idx = ablate[(ablate >= i * d) & (ablate < (i + 1) * d)] - i * d
            if idx.numel():
                value = means[i, idx].to(device)
                idx_d = idx.to(device)

                def hook(act, hook, idx_d=idx_d, value=value):
                    act[..., idx_d] = value.to(act.dtype)
                    return act
                fwd.append((h, hook))
        total, n = 0.0, 0
        for batch in batches:
            toks, mask = padded(batch)
            logits = model.run_with_hooks(toks, fwd_hooks=fwd)
            lp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, toks[:, 1:, None]).squeeze(-1)
            use = mask[:, 1:]
            total += float(-lp[use].sum())
            n += int(use.sum())
        return total / n

    per_seed = torch.full((len(WHICH), len(ks), len(seeds)), float("nan"))
    jobs = [(w, j) for w in range(len(WHICH)) for j in range(len(ks))]
    for w, j in progress_bar(jobs, progress=progress, desc="loss curves", unit="point"):
        for r, seed in enumerate(seeds if WHICH[w] == "random" else seeds[:1]):
            per_seed[w, j, r] = loss(_selection(cols, WHICH[w], ks[j], seed))
        if WHICH[w] != "random":
            per_seed[w, j, 1:] = per_seed[w, j, :1]
    clean = loss(torch.zeros(0, dtype=torch.long))
    meta = {"clean_loss": clean, "random_per_seed": per_seed,
            "random_sd": per_seed.std(-1) if len(seeds) > 1 else torch.zeros(per_seed.shape[:-1]),
            "random_seeds": seeds, "ks": ks, "n_neurons": N, "method": method, "hooks": hooks,
            "n_tokens": sum(len(t) - 1 for t in tokens), "ranking": ranking.title,
            "seconds": time.perf_counter() - t0}
    return Result(values=per_seed.mean(-1), axes=("selection", "k"),
                  labels={"selection": list(WHICH), "k": [str(k) for k in ks]},
                  title=f"Next-token loss with ranked MLP neurons {method}-ablated ({ranking.title})",
                  metric="mean next-token cross-entropy (nats)", model=model_name(model), task="loss ablation",
                  meta=meta)
