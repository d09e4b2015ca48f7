"""Structural probes (Hewitt & Manning 2019, "A Structural Probe for Finding Syntax in Word Representations").

    from circuitlab.probing import data, structural

    res = structural.sweep("minilm-l6", data.default_sentences(2000))
    res.values        # [layer, measure]: UUAS, DSpr, root accuracy, NSpr; the last row is the linear baseline

**Distance probe**: a rank-``k`` linear map ``B`` (``k x d``) such that the squared distance
``||B (h_i - h_j)||^2`` between two words' representations fits their distance in the dependency tree (the number
of edges between them). Loss per sentence: ``sum_ij |d_T(i, j) - ||B(h_i - h_j)||^2| / n^2``, averaged over
sentences. **Depth probe**: ``||B h_i||^2`` fits the word's depth (edges to the root); loss
``sum_i |depth_i - ||B h_i||^2| / n``. Both are trained with Adam on batches of sentences, early-stopped on the
dev loss, ``B`` initialised uniformly in ``[-0.05, 0.05]`` as in the paper's code. Features are divided by one
number, the training representations' root-mean-square entry, so that learning rates suit every model (a
scalar: it changes no linear structure).

**Metrics** (as in the paper):

- **UUAS**: the minimum spanning tree of the predicted distances (:func:`mst_edges`) over the sentence's words
  *without punctuation* (UPOS ``PUNCT``/``SYM``), scored against the gold edges between those words: correct
  edges / gold edges, over the whole test split;
- **DSpr**: per word, the Spearman correlation of its predicted and gold distances to every other word of the
  sentence; averaged within each sentence length, then over lengths 5 to 50;
- **root accuracy**: the word of least predicted depth (punctuation excluded) is the gold root; share of
  sentences;
- **NSpr**: per sentence, the Spearman correlation of predicted and gold depths; averaged within each length,
  then over lengths 5 to 50.

Spearman correlations rank ties by their average rank; a constant vector has no correlation and is left out.

**Baselines**: the embedding layer (the default hooks start with it), and the *linear structure* baseline: the
left-to-right chain (distance ``|i - j|``, depth = position, root = first word; punctuation excluded as above),
the last row of :func:`sweep`'s result. Published (PTB, BERT-large layer 16): UUAS 82.5, DSpr 0.86; the linear
baseline UUAS 48.9, DSpr 0.58.

**Example tree**: :func:`sweep` keeps one test sentence (the first whose length is within
:data:`EXAMPLE_LENGTHS`, else the nearest to it) with its gold tree and the minimum spanning tree that the first
seed's distance probe predicts at the layer of best mean UUAS, in ``meta["example"]``, for the rendered view.

Sentences whose words could not all be aligned to tokens (see :mod:`circuitlab.probing.align`) have no complete
tree of representations: they are left out and counted in ``meta["sentences_left_out"]``, and listed with the
words that did not align in ``meta["data_split"]["left_out"]``; ``meta["data_split"]`` also gives the indices
and ids of the train, dev and test sentences (:func:`~circuitlab.probing.classifier.split_record`), so a
baseline can be computed on the same test sentences.
"""

from __future__ import annotations

import functools
import time
from collections import defaultdict
from typing import Any, Optional, Sequence, Union

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from circuitlab.core import check_affordable, check_count, check_seed, progress_bar, shorten, spearman
from circuitlab.errors import InputError
from circuitlab.probing.activations import WordActivations, hook_layer_label
from circuitlab.probing.classifier import (EarlyStopping, check_seeds, ci95, sentence_keys, split_record,
                                          split_sentences, word_activations)
from circuitlab.tasks.sentences import PUNCT_UPOS, Sentence
from circuitlab.results import Result

MEASURES = ("uuas", "dspr", "root_acc", "nspr")
#: the preferred length (in words) of the example sentence kept for the rendered tree
EXAMPLE_LENGTHS = (5, 20)
#: the sentence lengths whose Spearman correlations are averaged (as in the paper)
SPEARMAN_LENGTHS = (5, 50)


# ---------------------------------------------------------------------------------------------------------
# Trees
# ---------------------------------------------------------------------------------------------------------

def tree_distances(head: Sequence[int]) -> Int[Tensor, "n n"]:
    """Pairwise path lengths in the undirected dependency tree given by ``head`` (1-based, 0 = root)."""
    n = len(head)
    adj: list[list[int]] = [[] for _ in range(n)]
    for i, h in enumerate(head):
        if h:
            adj[i].append(h - 1)
            adj[h - 1].append(i)
    dist = torch.full((n, n), -1, dtype=torch.long)
    for s in range(n):
        dist[s, s], frontier = 0, [s]
        while frontier:
            nxt = []
            for u in frontier:
                for v in adj[u]:
                    if dist[s, v] < 0:
                        dist[s, v] = dist[s, u] + 1
                        nxt.append(v)
            frontier = nxt
    return dist


@functools.lru_cache(maxsize=2**16)
def _targets(head: tuple[int, ...], kind: str) -> Tensor:
    """Gold distances or depths of a tree, computed once per tree."""
    return tree_distances(head) if kind == "distance" else tree_depths(head)


def tree_depths(head: Sequence[int]) -> Int[Tensor, " n"]:
    """Each word's depth: the number of edges to the root (the root's depth is 0)."""
    depth = []
    for i in range(len(head)):
        d, at = 0, head[i]
        while at:
            d, at = d + 1, head[at - 1]
        depth.append(d)
    return torch.tensor(depth, dtype=torch.long)


def tree_edges(head: Sequence[int], keep: Optional[Sequence[bool]] = None) -> set[tuple[int, int]]:
    """The tree's undirected edges ``(i, j)``, ``i < j``, 0-based; with ``keep``, only edges between kept words."""
    out = set()
    for i, h in enumerate(head):
        if h and (keep is None or (keep[i] and keep[h - 1])):
            out.add((min(i, h - 1), max(i, h - 1)))
    return out


def mst_edges(dist: Float[Tensor, "n n"], keep: Optional[Sequence[bool]] = None) -> set[tuple[int, int]]:
    """The minimum spanning tree of the complete graph with edge weights ``dist`` (symmetric), over the words
    where ``keep`` is true (all by default): Prim's algorithm, ties to the lower index. Edges ``(i, j)``, ``i < j``."""
    n = dist.shape[0]
    nodes = [i for i in range(n) if keep is None or keep[i]]
    if len(nodes) < 2:
        return set()
    d = dist.detach().double()
    in_tree = {nodes[0]}
    best = {v: (float(d[nodes[0], v]), nodes[0]) for v in nodes[1:]}
    edges = set()
    while best:
        v = min(best, key=lambda u: (best[u][0], u))
        _, u = best.pop(v)
        in_tree.add(v)
        edges.add((min(u, v), max(u, v)))
        for w in best:
            if float(d[v, w]) < best[w][0]:
                best[w] = (float(d[v, w]), v)
    return edges


def _length_average(by_length: dict[int, list[float]]) -> float:
    """Mean within each sentence length, then over lengths in :data:`SPEARMAN_LENGTHS` (NaN if none)."""
    lo, hi = SPEARMAN_LENGTHS
    means = [sum(v) / len(v) for n, v in by_length.items() if lo <= n <= hi and v]
    return sum(means) / len(means) if means else float("nan")


def score_trees(pred_dist: Sequence[Float[Tensor, "n n"]], pred_depth: Sequence[Float[Tensor, " n"]],
                sentences: Sequence[Sentence]) -> dict[str, float]:
    """UUAS, DSpr, root accuracy and NSpr of predicted distance matrices and depths against the sentences' gold
    trees (see the module notes). Either prediction list may be empty (its measures are then NaN)."""
    correct = total = 0
    dspr: dict[int, list[float]] = defaultdict(list)
    nspr: dict[int, list[float]] = defaultdict(list)
    roots_right = roots = 0
    for k, s in enumerate(sentences):
        if s.head is None:
            raise InputError(f"sentence {s.id or k} has no dependency tree (head); structural probes need trees.")
        keep = [u not in PUNCT_UPOS for u in s.upos] if s.upos is not None else [True] * len(s)
        gold = _targets(tuple(s.head), "distance")
        n = len(s)
        if pred_dist:
            gold_edges = tree_edges(s.head, keep)
            correct += len(mst_edges(pred_dist[k], keep) & gold_edges)
            total += len(gold_edges)
            rhos = [spearman(pred_dist[k][i], gold[i]) for i in range(n)] if n > 1 else []
            dspr[n].extend(r for r in rhos if r == r)
        if pred_depth:
            depth = _targets(tuple(s.head), "depth")
            kept = [i for i in range(n) if keep[i]]
            if kept:
                roots += 1
                guess = min(kept, key=lambda i: (float(pred_depth[k][i]), i))
                roots_right += int(s.head[guess] == 0)
            rho = spearman(pred_depth[k], depth) if n > 1 else float("nan")
            if rho == rho:
                nspr[n].append(rho)
    nan = float("nan")
    return {"uuas": correct / total if pred_dist and total else nan,
            "dspr": _length_average(dspr) if pred_dist else nan,
            "root_acc": roots_right / roots if pred_depth and roots else nan,
            "nspr": _length_average(nspr) if pred_depth else nan}


def linear_baseline(sentences: Sequence[Sentence]) -> dict[str, float]:
    """The linear-structure baseline: distance ``|i - j|``, depth = position (root = the first word)."""
    dist = [(torch.arange(len(s))[:, None] - torch.arange(len(s))[None, :]).abs().double() for s in sentences]
    depth = [torch.arange(len(s)).double() for s in sentences]
    return score_trees(dist, depth, sentences)


# ---------------------------------------------------------------------------------------------------------
# Probes
# ---------------------------------------------------------------------------------------------------------

class StructuralProbe(nn.Module):
    """``B`` of shape ``[rank, d]``: squared distances ``||B(h_i - h_j)||^2`` or squared norms ``||B h_i||^2``."""

    def __init__(self, d_in: int, rank: int, kind: str = "distance", scale: float = 1.0) -> None:
        super().__init__()
        if kind not in ("distance", "depth"):
            raise InputError(f"structural probe kind {shorten(kind)}: use 'distance' or 'depth'.")
        self.kind = kind
        self.B = nn.Parameter(torch.empty(rank, d_in).uniform_(-0.05, 0.05))
        self.register_buffer("scale", torch.tensor(float(scale)))

    def forward(self, h: Float[Tensor, "batch n d"]) -> Union[Float[Tensor, "batch n n"], Float[Tensor, "batch n"]]:
        """``[batch, n, n]`` squared distances (distance probe) or ``[batch, n]`` squared norms (depth probe)."""
        z = (h / self.scale) @ self.B.T
        if self.kind == "depth":
            return z.pow(2).sum(-1)
        sq = z.pow(2).sum(-1)
        return (sq[:, :, None] + sq[:, None, :] - 2 * z @ z.transpose(1, 2)).clamp(min=0)


def _padded(acts: Tensor, rows: list[Tensor], targets: list[Tensor], kind: str
            ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Sentences padded into ``[s, n_max, d]`` features, targets, a ``[s, n_max]`` mask and lengths."""
    n_max = max(len(r) for r in rows)
    h = torch.zeros(len(rows), n_max, acts.shape[1])
    mask = torch.zeros(len(rows), n_max, dtype=torch.bool)
    shape = (len(rows), n_max, n_max) if kind == "distance" else (len(rows), n_max)
    y = torch.zeros(shape)
    for k, (r, t) in enumerate(zip(rows, targets)):
        n = len(r)
        h[k, :n] = acts[r].float()
        mask[k, :n] = True
        if kind == "distance":
            y[k, :n, :n] = t.float()
        else:
            y[k, :n] = t.float()
    return h, y, mask, mask.sum(1)


def _loss(probe: StructuralProbe, h: Tensor, y: Tensor, mask: Tensor, lengths: Tensor) -> Tensor:
    pred = probe(h)
    if probe.kind == "distance":
        m = mask[:, :, None] & mask[:, None, :]
        per = ((pred - y).abs() * m).sum((1, 2)) / lengths.float().pow(2)
    else:
        per = ((pred - y).abs() * mask).sum(1) / lengths.float()
    return per.mean()


def train_structural_probe(acts: Float[Tensor, "rows d"], rows: list[Int[Tensor, " n"]], sentences: list[Sentence],
                           kind: str = "distance", *, dev_rows: Optional[list[Int[Tensor, " n"]]] = None,
                           dev_sentences: Optional[list[Sentence]] = None,
                           rank: int = 64, seed: int = 0, lr: float = 1e-3, epochs: int = 40, batch_size: int = 20,
                           patience: int = 4) -> StructuralProbe:
    """Train a distance or depth probe on sentences (each ``rows[k]``: the rows of ``acts`` holding sentence
    ``k``'s words in order); early-stopped on the dev loss when dev data are given (the best epoch is kept)."""
    rank, seed = check_count(rank, "rank"), check_seed(seed)
    # the probe's weights (with gradients, Adam's moments and early stopping's copy) and one batch's projections
    # (with their squares and gradients)
    check_affordable(4 * (5 * rank * acts.shape[1] + 4 * min(check_count(batch_size, "batch_size"), max(len(rows), 1))
                          * max((len(r) for r in rows), default=1) * rank),
                     f"a structural probe of rank={rank:,} on {acts.shape[1]}-dimensional activations",
                     "use a smaller rank (the paper's probes have rank 64 to 1024)")
    if kind not in ("distance", "depth"):
        raise InputError(f"structural probe kind {shorten(kind)}: use 'distance' or 'depth'.")
    if not rows:
        raise InputError("no training sentences with complete trees; use more sentences.")
    h, y, mask, lengths = _padded(acts, rows, [_targets(tuple(s.head), kind) for s in sentences], kind)
    scale = float(h[mask].pow(2).mean().sqrt().clamp(min=1e-12))
    torch.manual_seed(seed)
    probe = StructuralProbe(acts.shape[1], rank, kind, scale)
    opt = torch.optim.Adam(probe.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    dev = None
    if dev_rows:
        dev = _padded(acts, dev_rows, [_targets(tuple(s.head), kind) for s in dev_sentences], kind)
    stopping = EarlyStopping(probe, patience, higher=False, min_delta=1e-6)
    for _ in range(epochs):
        for idx in torch.randperm(len(rows), generator=gen).split(batch_size):
            n = int(lengths[idx].max())
            yb = y[idx, :n, :n] if kind == "distance" else y[idx, :n]
            opt.zero_grad()
            _loss(probe, h[idx, :n], yb, mask[idx, :n], lengths[idx]).backward()
            opt.step()
        if dev is not None:
            with torch.no_grad():
                if stopping.update(float(_loss(probe, *dev))):
                    break
    stopping.restore()
    return probe


@torch.no_grad()
def predict(probe: StructuralProbe, acts: Float[Tensor, "rows d"], rows: list[Int[Tensor, " n"]]
            ) -> list[Union[Float[Tensor, "n n"], Float[Tensor, " n"]]]:
    """Per sentence, the probe's predicted squared distances ``[n, n]`` or depths ``[n]``."""
    out = []
    for r in rows:
        pred = probe(acts[r].float()[None])[0]
        out.append(pred)
    return out


# ---------------------------------------------------------------------------------------------------------
# The sweep
# ---------------------------------------------------------------------------------------------------------

class StructuralSweep(Result):
    """:func:`sweep`'s result (axes ``("layer", "measure")``, the linear baseline as the last layer row):
    renders as layer curves with the baseline and the intervals over seeds, and the example sentence's gold and
    predicted trees."""


def example_index(sentences: Sequence[Sentence], lengths: tuple[int, int] = EXAMPLE_LENGTHS) -> int:
    """The first sentence whose length lies within ``lengths`` (inclusive), else the first of those nearest to it."""
    lo, hi = lengths
    return min(range(len(sentences)), key=lambda k: (max(0, lo - len(sentences[k]), len(sentences[k]) - hi), k))


def sentence_rows(acts: WordActivations) -> tuple[dict[int, Int[Tensor, " n"]], int]:
    """Rows of each sentence whose every word has a row (in word order), and how many sentences were left out."""
    rows: dict[int, list[int]] = defaultdict(list)
    for r, (s, w) in enumerate(zip(acts.sentence.tolist(), acts.word.tolist())):
        rows[s].append(r)
    complete = {s: torch.tensor(r) for s, r in rows.items() if len(r) == len(acts.sentences[s])}
    return complete, len(acts.sentences) - len(complete)


def left_out_reasons(acts: WordActivations, complete: dict[int, Any]) -> dict[int, str]:
    """Why each sentence that :func:`sentence_rows` left out was left out: the words of it that no token
    covers (the alignment skipped them), which leave its tree without their nodes."""
    words: dict[int, set[int]] = defaultdict(set)
    for s, w in zip(acts.sentence.tolist(), acts.word.tolist()):
        words[s].add(w)
    why = {}
    for k, sent in enumerate(acts.sentences):
        if k not in complete:
            missing = [sent.words[i] for i in range(len(sent)) if i not in words[k]]
            why[k] = (f"{len(missing)} of {len(sent)} words aligned to no token ({', '.join(map(repr, missing[:3]))}"
                      f"{', ...' if len(missing) > 3 else ''}): a tree probe needs every word's vector")
    return why


def sweep(source: Any, sentences: Optional[Sequence[Sentence]] = None, *, hooks: Any = None, rank: int = 64,
          seeds: Sequence[int] = (0,), split: Sequence[float] = (0.8, 0.1, 0.1), split_seed: int = 0,
          options: Optional[dict] = None, progress: bool = False, **collect_options: Any) -> StructuralSweep:
    """UUAS and DSpr (distance probe), root accuracy and NSpr (depth probe) at every hook, on the test split,
    plus the linear-structure baseline as a last row: a :class:`StructuralSweep` (a
    :class:`~circuitlab.results.Result`) with axes ``("layer", "measure")`` (seed means; ``meta["per_seed"]``
    ``[layer, measure, seed]`` and ``meta["ci95"]``). ``meta["example"]``: one test sentence's words, UPOS, gold
    heads, the words scored (``keep``: not punctuation), and the tree the first seed's distance probe predicts at
    the layer of best mean UUAS (``predicted``: 0-based word pairs; ``correct`` of its ``gold_edges``).

    ``source``: :class:`~circuitlab.probing.activations.WordActivations`, or a model (or name) to collect them
    from on ``sentences`` (``collect_options`` go to :func:`~circuitlab.probing.activations.collect`).
    ``options`` go to :func:`train_structural_probe` (``lr``, ``epochs``, ``batch_size``, ``patience``).
    """
    t0 = time.perf_counter()
    seeds, split_seed, rank = check_seeds(seeds), check_seed(split_seed, "split_seed"), check_count(rank, "rank")
    acts = word_activations(source, sentences, hooks, progress, collect_options)
    for k, s in enumerate(acts.sentences):
        if s.head is None:
            raise InputError(f"sentence {s.id or k} has no dependency tree (head); structural probes need trees "
                             "(CoNLL-U with HEAD, or text labelled by spaCy).")
    complete, left_out = sentence_rows(acts)
    parts = split_sentences(len(acts.sentences), split, split_seed, keys=sentence_keys(acts))
    use = {name: [int(i) for i in idx.tolist() if int(i) in complete] for name, idx in parts.items()}
    for name, ids in use.items():
        if not ids:
            raise InputError(f"the {name} split has no sentence whose words all align to tokens; use more sentences.")
    rows = {name: [complete[i] for i in ids] for name, ids in use.items()}
    sents = {name: [acts.sentences[i] for i in ids] for name, ids in use.items()}
    opts = dict(options or {})
    hooks_used = acts.hooks
    per_seed = torch.full((len(hooks_used) + 1, len(MEASURES), len(seeds)), float("nan"))
    jobs = [(h, s) for h in range(len(hooks_used)) for s in range(len(seeds))]
    ex = example_index(sents["test"])
    ex_sent = sents["test"][ex]
    ex_keep = [u not in PUNCT_UPOS for u in ex_sent.upos] if ex_sent.upos is not None else [True] * len(ex_sent)
    ex_edges: dict[int, set[tuple[int, int]]] = {}  # the first seed's predicted tree of the example, per hook
    for h, s in progress_bar(jobs, progress=progress, desc="structural probes", unit="layer"):
        x = acts.acts[hooks_used[h]]
        preds = {}
        for kind in ("distance", "depth"):
            probe = train_structural_probe(x, rows["train"], sents["train"], kind, dev_rows=rows["dev"],
                                           dev_sentences=sents["dev"], rank=rank, seed=seeds[s], **opts)
            preds[kind] = predict(probe, x, rows["test"])
        scores = score_trees(preds["distance"], preds["depth"], sents["test"])
        per_seed[h, :, s] = torch.tensor([scores[m] for m in MEASURES])
        if s == 0:
            ex_edges[h] = mst_edges(preds["distance"][ex], ex_keep)
    base = linear_baseline(sents["test"])
    per_seed[-1] = torch.tensor([base[m] for m in MEASURES])[:, None]
    uuas = per_seed[:-1, 0].mean(-1)
    best = int(uuas.nan_to_num(float("-inf")).argmax())
    gold_edges = tree_edges(ex_sent.head, ex_keep)
    example = {"sentence": use["test"][ex], "id": ex_sent.id, "words": list(ex_sent.words),
               "upos": list(ex_sent.upos) if ex_sent.upos is not None else None, "head": list(ex_sent.head),
               "keep": ex_keep, "layer": hook_layer_label(hooks_used[best]), "hook": hooks_used[best],
               "seed": seeds[0], "predicted": sorted(ex_edges[best]),
               "correct": len(ex_edges[best] & gold_edges), "gold_edges": len(gold_edges)}
    meta = {"per_seed": per_seed, "ci95": ci95(per_seed), "seeds": seeds, "rank": rank, "hooks": hooks_used,
            "n_sentences": {k: len(v) for k, v in use.items()}, "sentences_left_out": left_out,
            "data_split": split_record(acts.sentences, use, left_out_reasons(acts, complete)),
            "skipped": dict(acts.skipped), "split": tuple(split), "split_seed": split_seed, "pool": acts.pool,
            "spearman_lengths": SPEARMAN_LENGTHS, "options": opts, "example": example,
            "seconds": time.perf_counter() - t0}
    return StructuralSweep(values=per_seed.mean(-1), axes=("layer", "measure"),
                  labels={"layer": [hook_layer_label(h) for h in hooks_used] + ["linear baseline"],
                          "measure": list(MEASURES)},
                  title="Structural probes (Hewitt & Manning 2019)",
                  metric="UUAS, distance Spearman, root accuracy, depth Spearman (test split)",
                  model=acts.model, task="dependency trees", meta=meta)
