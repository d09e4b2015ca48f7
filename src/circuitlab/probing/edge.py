"""Edge probing (Tenney et al. 2019, "What do you learn from context?"): labels of spans and of pairs of spans,
read from a learned mix of every layer.

    from circuitlab.probing import data, edge

    res = edge.edge_probe("minilm-l6", data.default_sentences(2000), task="deprel")
    res.scores.values         # [probe]: test accuracy of the scalar-mix probe and of the lexical baseline
    res.mix.values            # [layer]: the learned softmax weights over the layers
    res.center_of_gravity     # sum_l l * s_l: where in depth the task is read (0 = the embedding)
    res.layers.values         # [layer]: test accuracy of the same probe trained on each layer alone

**Tasks** (:func:`edge_examples`), built from the sentences' annotations; a *span* is a run of words
``[start, end)``:

- ``"pos"``: one span (a word) -> its UPOS tag;
- ``"deprel"``: two spans (the dependent word, its head word) -> the dependency label (dependency arc labelling;
  the root, which has no head word, is left out);
- ``"ent"``: one span (a run of consecutive words with the same entity type, spaCy's ``ent``) -> that type.
  Sentences carry one type per word and no begin/inside marks, so two adjacent entities of one type form one span.

**The probe** (Tenney et al.'s architecture, single-label): the *scalar mix* of ELMo,
``h_w = gamma * sum_l softmax(a)_l * x_{l,w}`` over the hooks ``l`` (by default the embedding and every block's
residual stream), with each hook's activations first divided by their root-mean-square over the training words
(one number per hook, so that the weights compare layers whose scales differ by orders of magnitude); a linear
projection to ``proj`` dimensions; per span a pooled vector (``pool="mean"``: the mean of its words;
``"attention"``: Lee et al.'s self-attentive pooling, a learned score per word softmaxed within the span, one
scorer per span role); the spans' vectors concatenated; an MLP (``hidden`` units, ReLU) to the classes. Trained
with Adam on cross-entropy, early-stopped on dev accuracy (the best epoch is kept). The frozen model is never
trained: only the mix, ``gamma`` and the probe are.

**Reported**: test accuracy (single-label, so it equals micro-averaged F1) of the scalar-mix probe and of the
*lexical* baseline, the same probe on the embedding hook alone (no context: Tenney et al.'s "lexical" baseline),
the majority-class accuracy, the mix weights ``s_l``, ``gamma`` and the *center of gravity* ``sum_l l * s_l``
(Tenney, Das & Pavlick 2019), with the hooks indexed 0 (embedding), 1, ... L. The split is by sentence (as in
:mod:`~circuitlab.probing.classifier`); examples with a word that could not be aligned to tokens are left out and
counted.

**Per layer** (``per_layer=True``, the default): the same probe (pooling, classifier, seed, early stopping) trained
on each hook alone, its test accuracy per layer; the embedding's is the lexical baseline (trained once). It costs
one probe per hook besides the embedding, each about as much as the lexical probe: on MiniLM-L6 (7 hooks) and
2,000 sentences, 8 probes instead of 2, about three times as long (one thread: POS 18 s -> 53 s, dependency
labels 25 s -> 83 s, entity types 4 s -> 11 s).

**Cumulative** (``cumulative=True``; off by default: L - 1 more probes, each mixing up to L hooks): Tenney, Das &
Pavlick's cumulative scoring, the scalar-mix probe over hooks ``0..l`` for each ``l`` (``0``: the first hook alone;
``L``: the full mix), the *differential scores* ``Delta(l) = score(0..l) - score(0..l-1)`` for ``l = 1..L`` and
their *expected layer* ``sum_l l * Delta(l) / sum_l Delta(l)`` (undefined, NaN, when the Deltas do not sum to a
positive number). Hooks are taken in the order given (the default is depth order). Each score is one test-set
accuracy, so a Delta smaller than the test set's sampling error (about ``sqrt(p (1 - p) / n_test)``) is noise.

**Small tasks.** Early stopping reads the dev accuracy after each epoch; with a few hundred dev examples (entity
types on 2,000 sentences: 157 dev and 127 test spans) one example moves it by more than half a point, and a lucky
early epoch can stop a probe while it is still learning. An epoch is also only a few optimizer steps there (5
batches), so the mix weights barely leave their equal start and the center of gravity stays near the middle
hook, ``L / 2``. On MiniLM-L6 (split seed 0, seed 0) the entity-type mix keeps its 5th epoch (test 73.2, dev
78.3) while the lexical probe keeps its 15th (test 78.0, dev 79.6); over 3 splits x 3 seeds the two score
74.2 +- 1.5 and 73.4 +- 3.1 (mix minus lexical +0.8 +- 3.6 points). Compare probes on such tasks over several
seeds and splits, not from one run.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor, nn

from circuitlab.core import check_affordable, check_count, check_number, check_seed, progress_bar, shorten
from circuitlab.errors import InputError
from circuitlab.probing.activations import WordActivations, hook_layer_label
from circuitlab.probing.classifier import EarlyStopping, row_split_record, sentence_keys, split_rows, word_activations
from circuitlab.tasks.sentences import Sentence
from circuitlab.results import Bundle, Result

#: task -> the number of spans per example
TASKS = {"pos": 1, "deprel": 2, "ent": 1}
POOLS = ("mean", "attention")
#: the hook the lexical baseline reads
EMBEDDING_HOOK = "blocks.0.hook_resid_pre"


@dataclass(frozen=True)
class EdgeExample:
    """One labelled example: a sentence index, its spans (``(start, end)`` word ranges) and the label."""

    sentence: int
    spans: tuple[tuple[int, int], ...]
    label: str


def entity_spans(ent: Sequence[str]) -> list[tuple[int, int, str]]:
    """Runs of consecutive words with one entity type other than ``"O"``: ``(start, end, type)``."""
    out, start = [], None
    for i in range(len(ent) + 1):
        if start is not None and (i == len(ent) or ent[i] != ent[start]):
            out.append((start, i, ent[start]))
            start = None
        if i < len(ent) and ent[i] != "O" and start is None:
            start = i
    return out


def edge_examples(sentences: Sequence[Sentence], task: str) -> list[EdgeExample]:
    """The examples of ``task`` (``"pos"``, ``"deprel"``, ``"ent"``; see the module notes), in sentence order."""
    if task not in TASKS:
        raise InputError(f"task={shorten(task)}: edge-probing tasks are {', '.join(map(repr, TASKS))} (part of speech, "
                         "dependency arc labels, entity types).")
    layer = {"pos": "upos", "deprel": "deprel", "ent": "ent"}[task]
    out = []
    for k, s in enumerate(sentences):
        labels = s.labels(layer)
        if task == "pos":
            out.extend(EdgeExample(k, ((i, i + 1),), labels[i]) for i in range(len(s)))
        elif task == "deprel":
            heads = s.labels("head")
            out.extend(EdgeExample(k, ((i, i + 1), (h - 1, h)), labels[i]) for i, h in enumerate(heads) if h)
        else:
            out.extend(EdgeExample(k, ((a, b),), t) for a, b, t in entity_spans(labels))
    return out


# ---------------------------------------------------------------------------------------------------------
# The parts: scalar mix and span pooling
# ---------------------------------------------------------------------------------------------------------

class ScalarMix(nn.Module):
    """ELMo's scalar mix: ``gamma * sum_l softmax(a)_l * x_l``; ``a`` starts at zero (equal weights), ``gamma`` at 1."""

    def __init__(self, n_layers: int) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.zeros(n_layers))
        self.gamma = nn.Parameter(torch.ones(()))

    def weights(self) -> Float[Tensor, " layer"]:
        return torch.softmax(self.a, 0)

    def forward(self, x: Float[Tensor, " layer *rest"]) -> Float[Tensor, "*rest"]:
        s = self.weights()
        return self.gamma * (s.view(-1, *([1] * (x.ndim - 1))) * x).sum(0)


def center_of_gravity(weights: Float[Tensor, " layer"]) -> float:
    """``sum_l l * s_l``: the expected layer index under the mix weights (0 = the first hook)."""
    w = weights.detach().double()
    return float((torch.arange(len(w), dtype=torch.float64) * w).sum() / w.sum())


def pool_spans(x: Float[Tensor, "n span_len d"], mask: Bool[Tensor, "n span_len"],
               scores: Optional[Float[Tensor, "n span_len"]] = None) -> Float[Tensor, "n d"]:
    """Each span's vector from its words' vectors ``x`` (padded to ``span_len``; ``mask`` marks real words): the
    mean without ``scores``; with them, the softmax of the scores over the span's words as weights."""
    if scores is None:
        m = mask.to(x.dtype)[..., None]
        return (x * m).sum(1) / m.sum(1).clamp(min=1)
    w = torch.softmax(scores.masked_fill(~mask, float("-inf")), 1)
    return (w[..., None] * x).sum(1)


class EdgeProbe(nn.Module):
    """Scalar mix -> projection -> span pooling (per span role) -> concatenation -> MLP (see the module notes)."""

    def __init__(self, n_layers: int, d_in: int, n_spans: int, n_classes: int, pool: str = "mean",
                 proj: int = 256, hidden: int = 256) -> None:
        super().__init__()
        self.mix = ScalarMix(n_layers)
        self.register_buffer("scale", torch.ones(n_layers))
        self.proj = nn.Linear(d_in, proj)
        self.scorers = nn.ModuleList(nn.Linear(proj, 1) for _ in range(n_spans)) if pool == "attention" else None
        self.classifier = nn.Sequential(nn.Linear(n_spans * proj, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))

    def forward(self, x: Float[Tensor, "layer n spans span_len d"], mask: Bool[Tensor, "n spans span_len"]
                ) -> Float[Tensor, "n classes"]:
        h = self.proj(self.mix(x / self.scale.view(-1, 1, 1, 1, 1)))  # [n, spans, span_len, proj]
        pooled = [pool_spans(h[:, j], mask[:, j], None if self.scorers is None else self.scorers[j](h[:, j])[..., 0])
                  for j in range(h.shape[1])]
        return self.classifier(torch.cat(pooled, -1))


# ---------------------------------------------------------------------------------------------------------
# Data: examples as row indices into the activations
# ---------------------------------------------------------------------------------------------------------

@dataclass
class _Encoded:
    rows: Int[Tensor, "n spans span_len"]  # rows of the activations (0 where padded)
    mask: Bool[Tensor, "n spans span_len"]
    y: Int[Tensor, " n"]
    sentence: Int[Tensor, " n"]


def _encode(acts: WordActivations, examples: list[EdgeExample], index: dict[str, int]) -> tuple[_Encoded, int]:
    where = {(s, w): r for r, (s, w) in enumerate(zip(acts.sentence.tolist(), acts.word.tolist()))}
    kept, dropped = [], 0
    for e in examples:
        spans = [[where.get((e.sentence, w)) for w in range(a, b)] for a, b in e.spans]
        if any(r is None for span in spans for r in span):
            dropped += 1
            continue
        kept.append((spans, e))
    if not kept:
        raise InputError("no example has all its words aligned to tokens; use other sentences or another model.")
    width = max(len(span) for spans, _ in kept for span in spans)
    n_spans = len(kept[0][0])
    rows = torch.zeros(len(kept), n_spans, width, dtype=torch.long)
    mask = torch.zeros(len(kept), n_spans, width, dtype=torch.bool)
    for i, (spans, _) in enumerate(kept):
        for j, span in enumerate(spans):
            rows[i, j, :len(span)] = torch.tensor(span)
            mask[i, j, :len(span)] = True
    y = torch.tensor([index[e.label] for _, e in kept])
    return _Encoded(rows, mask, y, torch.tensor([e.sentence for _, e in kept])), dropped


def _features(layers: list[Tensor], rows: Tensor) -> Tensor:
    """``[layer, *rows.shape, d]``: each hook's activation rows for the examples' words."""
    return torch.stack([x[rows] for x in layers]).float()


# ---------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------

def check_probe_affordable(n_layers: int, d_in: int, data: _Encoded, n_classes: int, n_train: int, *, proj: int,
                           hidden: int, batch_size: int) -> None:
    """Refuse up front a probe whose ``proj`` / ``hidden`` do not fit: its weights (with their gradients, Adam's two
    moments and early stopping's best copy) and one batch's features and projections are held at once."""
    spans, width = data.rows.shape[1], data.rows.shape[2]
    params = d_in * proj + spans * proj * hidden + hidden * n_classes + spans * proj
    rows = min(batch_size, max(n_train, 1)) * spans * width
    need = 4 * (5 * params + rows * (n_layers * d_in + 3 * proj) + min(batch_size, max(n_train, 1)) * 2 * hidden)
    check_affordable(need, f"an edge probe with proj={proj:,} and hidden={hidden:,}",
                     "use a smaller proj / hidden (the paper used 256)")


def train_edge_probe(layers: Sequence[Float[Tensor, "n_words d"]], data: _Encoded, n_classes: int,
                     train: Int[Tensor, " n_train"], dev: Int[Tensor, " n_dev"], *,
                     pool: str = "mean", proj: int = 256, hidden: int = 256,
                     seed: int = 0, lr: float = 1e-3, epochs: int = 20, batch_size: int = 256,
                     patience: int = 3, mix_lr: float = 10.0) -> EdgeProbe:
    """An :class:`EdgeProbe` over ``layers`` (one ``[n_words, d]`` matrix per hook), trained on the examples
    ``train`` (indices into ``data``) and early-stopped on the accuracy of ``dev``. The mix's weights and
    ``gamma`` learn ``mix_lr`` times faster than the rest (a handful of numbers that otherwise barely leave their
    start in the few epochs a probe trains)."""
    seed = check_seed(seed)
    check_probe_affordable(len(layers), layers[0].shape[1], data, n_classes, len(train), proj=proj, hidden=hidden,
                           batch_size=batch_size)
    torch.manual_seed(seed)
    probe = EdgeProbe(len(layers), layers[0].shape[1], data.rows.shape[1], n_classes, pool, proj, hidden)
    train_words = data.rows[train][data.mask[train]].unique()
    with torch.no_grad():
        probe.scale.copy_(torch.stack([x[train_words].float().pow(2).mean().sqrt().clamp(min=1e-12)
                                       for x in layers]))
    mix = list(probe.mix.parameters())
    rest = [p for n, p in probe.named_parameters() if not n.startswith("mix.")]
    opt = torch.optim.Adam([{"params": rest, "lr": lr}, {"params": mix, "lr": mix_lr * lr}])
    gen = torch.Generator().manual_seed(seed)
    stopping = EarlyStopping(probe, patience)
    for _ in range(epochs):
        probe.train()
        for idx in train[torch.randperm(len(train), generator=gen)].split(batch_size):
            opt.zero_grad()
            logits = probe(_features(layers, data.rows[idx]), data.mask[idx])
            nn.functional.cross_entropy(logits, data.y[idx]).backward()
            opt.step()
        if stopping.update(accuracy(probe, layers, data, dev)):
            break
    stopping.restore()
    return probe


@torch.no_grad()
def accuracy(probe: EdgeProbe, layers: Sequence[Float[Tensor, "n_words d"]], data: _Encoded, idx: Int[Tensor, " k"],
             batch_size: int = 1024) -> float:
    """The share of examples ``idx`` whose argmax class is the label."""
    probe.eval()
    right = 0
    for part in idx.split(batch_size):
        right += int((probe(_features(layers, data.rows[part]), data.mask[part]).argmax(-1) == data.y[part]).sum())
    return right / max(1, len(idx))


# ---------------------------------------------------------------------------------------------------------
# The analysis
# ---------------------------------------------------------------------------------------------------------

@dataclass(repr=False)
class EdgeScores(Bundle):
    """What :func:`edge_probe` measured.

    Attributes:
        scores: ``[probe]``: test accuracy of ``"scalar mix"`` and ``"lexical"`` (the embedding hook alone).
        mix: ``[layer]``: the scalar mix's softmax weights ``s_l`` (the hooks in order; ``"emb"`` first).
        center_of_gravity: ``sum_l l * s_l`` over the hooks indexed 0, 1, ...
        gamma: the scalar mix's overall scale.
        layers: ``[layer]``: test accuracy of the probe on each hook alone (``None`` without ``per_layer``).
        cumulative: ``[layer]``: test accuracy of the scalar mix over hooks ``0..l`` (``None`` without
            ``cumulative``).
        differential: ``[layer]``: ``Delta(l)`` for the hooks ``1..L`` (``None`` without ``cumulative``).
        expected_layer: ``sum_l l * Delta(l) / sum_l Delta(l)`` (NaN if the Deltas' sum is not positive;
            ``None`` without ``cumulative``).
    """

    scores: Result
    mix: Result
    center_of_gravity: float
    gamma: float
    layers: Optional[Result] = None
    cumulative: Optional[Result] = None
    differential: Optional[Result] = None
    expected_layer: Optional[float] = None

    def summary(self) -> str:
        s = dict(zip(self.scores.labels["probe"], self.scores.values.tolist()))
        lexical = f", lexical {s['lexical']:.3f}" if "lexical" in s else ""
        best = ""
        if self.layers is not None:
            k = int(self.layers.values.argmax())
            best = f", best single layer {self.layers.labels['layer'][k]} {float(self.layers.values[k]):.3f}"
        expected = "" if self.expected_layer is None else f"; expected layer (differential) {self.expected_layer:.2f}"
        return (f"{self.scores.task}: scalar mix {s['scalar mix']:.3f}{lexical}{best}, majority "
                f"{self.scores.meta['majority_baseline']:.3f}; center of gravity {self.center_of_gravity:.2f}"
                f"{expected} (0 = {self.mix.labels['layer'][0]}, {len(self.mix.labels['layer']) - 1} = "
                f"{self.mix.labels['layer'][-1]})")


def expected_layer(differential: Sequence[float]) -> float:
    """Tenney, Das & Pavlick's expected layer ``sum_l l * Delta(l) / sum_l Delta(l)``, with ``differential`` the
    Deltas of layers ``1, 2, ...`` in order; NaN when they do not sum to a positive number."""
    d = torch.tensor([float(v) for v in differential], dtype=torch.float64)
    total = float(d.sum())
    if not total > 0:
        return float("nan")
    return float((torch.arange(1, len(d) + 1, dtype=torch.float64) * d).sum()) / total


def edge_probe(source: Any, sentences: Optional[Sequence[Sentence]] = None, task: str = "deprel", *,
               hooks: Any = None, pool: str = "mean", baseline: bool = True, per_layer: bool = True,
               cumulative: bool = False, split: Sequence[float] = (0.8, 0.1, 0.1), split_seed: int = 0,
               seed: int = 0, proj: int = 256, hidden: int = 256, epochs: int = 20, batch_size: int = 256,
               patience: int = 3, lr: float = 1e-3, progress: bool = False, **collect_options: Any) -> EdgeScores:
    """Edge probing with a learned scalar mix over ``hooks``, and the lexical baseline (see the module notes).

    Args:
        source: :class:`~circuitlab.probing.activations.WordActivations`, or a model (or name) to collect them
            from on ``sentences`` (``collect_options`` go to :func:`~circuitlab.probing.activations.collect`:
            ``pool`` of tokens into words, ``max_memory``, ``cache``...).
        task: ``"pos"``, ``"deprel"`` (two spans: dependent, head) or ``"ent"``.
        hooks: the hooks to mix (default: the embedding and every block's residual stream).
        pool: how a span's words become one vector: ``"mean"`` or ``"attention"`` (self-attentive).
        baseline: also train the lexical probe on ``blocks.0.hook_resid_pre`` (it must then be among the hooks).
        per_layer: also train the probe on each hook alone (``layers``; one more probe per hook).
        cumulative: also train the mix over hooks ``0..l`` for each ``l`` and report the differential scores and
            their expected layer (``cumulative``, ``differential``, ``expected_layer``; L - 1 more probes).
        split, split_seed: train/dev/test fractions of the sentences and the shuffle's seed.
        seed: the probe's initialisation and batch order.
        proj, hidden, epochs, batch_size, patience, lr: the probe's size and training (Adam).

    Returns:
        :class:`EdgeScores`; ``scores.meta`` holds the majority baseline, example counts per split, the examples
        left out (unaligned words), classes, settings and timings.
    """
    t0 = time.perf_counter()
    if task not in TASKS:
        raise InputError(f"task={shorten(task)}: edge-probing tasks are {', '.join(map(repr, TASKS))} (part of speech, "
                         "dependency arc labels, entity types).")
    if pool not in POOLS:
        raise InputError(f"pool={shorten(pool)}: span pooling is one of {POOLS}.")
    sizes = {name: check_count(v, name) for name, v in
             dict(proj=proj, hidden=hidden, epochs=epochs, batch_size=batch_size, patience=patience).items()}
    seed, split_seed = check_seed(seed), check_seed(split_seed, "split_seed")
    check_number(lr, "lr", low=0, low_open=True, message=f"lr={lr!r}: give a positive learning rate, e.g. 1e-3.")
    for name, flag in dict(baseline=baseline, per_layer=per_layer, cumulative=cumulative).items():
        if not isinstance(flag, bool):
            raise InputError(f"{name}={shorten(flag)}: give True or False.")
    acts = word_activations(source, sentences, hooks, progress, collect_options)
    if baseline and EMBEDDING_HOOK not in acts.hooks:
        raise InputError(f"baseline=True reads {shorten(EMBEDDING_HOOK)}, which hooks do not include; add it to "
                         "hooks or pass baseline=False.")
    if cumulative and len(acts.hooks) < 2:
        raise InputError(f"cumulative=True compares mixes of the hooks 0..l, and hooks has {len(acts.hooks)}; give "
                         "two hooks or more, or pass cumulative=False.")
    examples = edge_examples(acts.sentences, task)
    classes = sorted({e.label for e in examples}, key=str)
    if len(classes) < 2:
        raise InputError(f"task {shorten(task)}: {'no example' if not classes else 'every example has one label'} in "
                         "these sentences; a probe needs two labels or more (use more or other sentences).")
    data, dropped = _encode(acts, examples, {c: i for i, c in enumerate(classes)})
    idx, by_sentence = split_rows(data.sentence, len(acts.sentences), split, split_seed, f"{task} example",
                                  keys=sentence_keys(acts))
    opts = dict(pool=pool, seed=seed, lr=float(lr), **sizes)
    hooks_used = list(acts.hooks)
    layer_labels = [hook_layer_label(h) for h in hooks_used]
    # every probe to train, named by the hooks it mixes; one that several results share is trained once
    wanted = {"scalar mix": tuple(hooks_used)}
    if baseline:
        wanted["lexical"] = (EMBEDDING_HOOK,)
    if per_layer:
        wanted.update({("layer", h): (h,) for h in hooks_used})
    if cumulative:
        wanted.update({("cumulative", l): tuple(hooks_used[:l + 1]) for l in range(len(hooks_used))})
    todo = list(dict.fromkeys(wanted.values()))
    trained, acc = {}, {}
    for key in progress_bar(todo, progress=progress, desc=f"edge probes ({task})", unit="probe"):
        layers = [acts.acts[h] for h in key]
        trained[key] = train_edge_probe(layers, data, len(classes), idx["train"], idx["dev"], **opts)
        acc[key] = accuracy(trained[key], layers, data, idx["test"])
    names = [n for n in ("scalar mix", "lexical") if n in wanted]
    mixed = trained[wanted["scalar mix"]].mix
    weights = mixed.weights().detach()
    gamma = float(mixed.gamma.detach())
    majority = Counter(data.y[idx["train"]].tolist()).most_common(1)[0][0]
    meta = {"majority_baseline": float((data.y[idx["test"]] == majority).float().mean()), "classes": classes,
            "n_examples": {k: int(v.numel()) for k, v in idx.items()}, "examples_left_out": dropped,
            "hooks": hooks_used, "split": tuple(split), "split_seed": split_seed, "options": opts,
            "data_split": row_split_record(acts, by_sentence, data.sentence, f"no {task} example aligned to tokens"),
            "word_pool": acts.pool, "probes_trained": len(todo), "seconds": time.perf_counter() - t0}
    metric = "test accuracy (single label: = micro F1)"
    score = Result(values=torch.tensor([acc[wanted[n]] for n in names]), axes=("probe",), labels={"probe": names},
                   title=f"Edge probing ({task})", metric=metric, model=acts.model, task=task, meta=meta)
    cog = center_of_gravity(weights)
    mix = Result(values=weights, axes=("layer",), labels={"layer": layer_labels},
                 title=f"Scalar mix weights ({task}; center of gravity {cog:.2f})",
                 metric="softmax weight of each layer in the learned mix", model=acts.model, task=task,
                 meta={"gamma": gamma, "center_of_gravity": cog})
    per = None
    if per_layer:
        per = Result(values=torch.tensor([acc[wanted["layer", h]] for h in hooks_used]), axes=("layer",),
                     labels={"layer": layer_labels}, title=f"Edge probing ({task}), each layer alone",
                     metric=metric, model=acts.model, task=task,
                     meta={"hooks": hooks_used, "n_test": meta["n_examples"]["test"]})
    cum = diff = expected = None
    if cumulative:
        cum_acc = [acc[wanted["cumulative", l]] for l in range(len(hooks_used))]
        deltas = [b - a for a, b in zip(cum_acc, cum_acc[1:])]
        expected = expected_layer(deltas)
        cum = Result(values=torch.tensor(cum_acc), axes=("layer",), labels={"layer": layer_labels},
                     title=f"Edge probing ({task}), scalar mix of the layers up to each",
                     metric=metric, model=acts.model, task=task, meta={"hooks": hooks_used})
        diff = Result(values=torch.tensor(deltas), axes=("layer",), labels={"layer": layer_labels[1:]},
                      title=f"Differential scores ({task}; expected layer {expected:.2f})",
                      metric="Delta(l) = accuracy of the mix 0..l - accuracy of the mix 0..l-1", model=acts.model,
                      task=task, meta={"expected_layer": expected, "n_test": meta["n_examples"]["test"]})
    return EdgeScores(score, mix, cog, gamma, per, cum, diff, expected)
