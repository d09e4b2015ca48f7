"""The attention-pattern taxonomy of Kovaleva et al. (2019, "Revealing the Dark Secrets of BERT"): every head's
attention map on an input is one of five classes, and the share of each class per layer says how much of a model's
attention is structural (the same whatever the text) rather than content-dependent.

**The classes** (Kovaleva et al., Figure 1): ``vertical`` (mass on a few fixed columns: the first token, the
separators), ``diagonal`` (the previous, the same or the next token), ``vertical+diagonal`` (both), ``block`` (within
the query's own segment of a two-segment input) and ``heterogeneous`` (none of these: content-dependent). The paper
says the first three are "most likely associated with language model pre-training, while the last two potentially
encode semantic and syntactic information".

**Features of a map** (:func:`map_features`, every map ``A[query, key]`` with rows summing to 1; on a causal model
the rows ``query >= 2`` are used, the first two having at most two keys to choose from; on an encoder every row):

- ``vertical``: the mass on the map's two *vertical columns* outside the diagonal band. A column's score is its mean
  attention over the rows that can see it from outside the band (``|query - key| > 1``); columns seen by fewer than a
  quarter of the rows are not candidates (on a causal model the last columns are seen by a few rows only);
- ``diagonal``: the mass in the band ``|query - key| <= 1``; ``previous`` (``key = query - 1``) and ``self``
  (``key = query``) are its parts;
- ``block``: of the queries inside the second segment (on an encoder: inside either segment), the mass outside
  the band that stays on the query's own segment; ``other_segment``: the mass outside the band that goes to the
  other segment (mass on the special tokens counts for neither);
- ``entropy``: the rows' entropy divided by the log of the number of keys each row can see (1 = uniform);
- ``max``: the rows' largest weight.

**The classifier** is a multinomial logistic regression on these features (standardised), trained on synthetic maps
of known class (:func:`synthetic_maps`: each class's structure mixed with Dirichlet noise over the visible keys,
strengths drawn per map) with a fixed seed, one model for causal maps and one for bidirectional ones; Kovaleva et
al. trained a small CNN on 400 hand-labelled BERT maps, which are not available offline. Its accuracy on held-out
synthetic maps (another seed and longer inputs than it was trained on) is :func:`taxonomy_accuracy`.

**On a model** (:func:`pattern_taxonomy`), inputs are two segments, as Kovaleva et al. fed BERT sentence pairs:
``[BOS] s0 SEP s1`` on a decoder (``SEP`` is the token of ``"."``, or the end-of-text token if ``"."`` is not one
token) and ``[CLS] s0 [SEP] s1 [SEP]`` on an encoder; the segments are random tokens (``inputs="random"``: ids
drawn uniformly from the vocabulary minus the special tokens, the paper's control for patterns that do not depend on
the text) or the two sentences of a text pair. The result is the fraction of inputs on which each head's map falls
in each class, ``values[layer, head, class]``; the class proportions per layer are its mean over heads
(``meta["per_layer"]``).

    from circuitlab.attention.patterns import pattern_taxonomy, taxonomy_accuracy

    taxonomy_accuracy().meta["accuracy"]                  # held-out synthetic maps
    tax = pattern_taxonomy("zoo/toy-lm", "random", n=16)  # Result [layer, head, class]
    tax.meta["per_layer"]                                 # [layer, class] proportions
"""

from __future__ import annotations

import functools
import math
import random
from typing import Any, Optional, Sequence, Union

import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuitlab.core import (DEFAULT_MAX_MEMORY, ModelLike, check_count, check_finite, check_max_memory,
                             check_seed, model_name, row_bytes, shorten)
from circuitlab.engine.collect import is_encoder, run_hooks, same_length_runs
from circuitlab.errors import InputError
from circuitlab.models.loading import as_any_model
from circuitlab.results import Result

#: Kovaleva et al.'s five classes, in the order of the result's ``class`` axis
CLASSES = ("vertical", "diagonal", "vertical+diagonal", "block", "heterogeneous")
#: the features of a map (:func:`map_features`), in the order of their axis
FEATURES = ("vertical", "diagonal", "previous", "self", "block", "other_segment", "entropy", "max")
#: the number of vertical columns a map's ``vertical`` feature counts
VERTICAL_COLUMNS = 2
#: the classes Kovaleva et al. tie to pre-training rather than to the text, first: the taxonomy's pruning order
PRUNE_FIRST = ("vertical", "vertical+diagonal", "diagonal", "block", "heterogeneous")
#: the range of the strength of a synthetic map's structure against its noise
DEFAULT_STRENGTH = (0.5, 0.95)
#: the default number of inputs and their length in tokens (both segments together, special tokens included)
DEFAULT_N = 32
DEFAULT_LENGTH = 32

Pairs = Union[str, Sequence[tuple[str, str]]]


# ---------------------------------------------------------------------------------------------------------
# Features
# ---------------------------------------------------------------------------------------------------------

def map_features(maps: Float[Tensor, "n query key"], segments: Int[Tensor, "n key"], causal: bool
                 ) -> Float[Tensor, "n feature"]:
    """The features of each map (see the module's docstring), ``[map, feature]`` in the order of :data:`FEATURES`.

    ``segments[i, k]`` is the segment of position ``k`` of map ``i`` (0, 1, ...; ``-1`` for a special token that
    belongs to none); ``causal`` says which rows are used.
    """
    maps = maps.double()
    n, t, _ = maps.shape
    if t < 4:
        raise InputError(f"attention maps of {t} positions are too short to classify: use inputs of 4 tokens or more.")
    q = torch.arange(t).view(t, 1)
    k = torch.arange(t).view(1, t)
    visible = (k <= q) if causal else torch.ones(t, t, dtype=torch.bool)
    band = (q - k).abs() <= 1
    rows = (torch.arange(t) >= 2) if causal else torch.ones(t, dtype=torch.bool)
    n_rows = int(rows.sum())
    # vertical columns: mean attention from the rows that see the column from outside the band
    seen = visible & ~band & rows.view(t, 1)                                   # [q, k]
    count = seen.sum(0)                                                        # [k]
    column = (maps * seen).sum(1) / count.clamp_min(1)                         # [n, k]
    column = column.masked_fill(count < max(1, n_rows / 4), -1.0)
    top = column.topk(min(VERTICAL_COLUMNS, t), dim=1).indices                # [n, 2]
    vertical_cols = torch.zeros(n, t, dtype=torch.bool).scatter_(1, top, True)  # [n, k]
    off_band = maps * (~band)
    vertical = (off_band * vertical_cols.view(n, 1, t)).sum(2)                # [n, q]
    diagonal = (maps * band).sum(2)
    previous = torch.cat([torch.zeros(n, 1, dtype=maps.dtype), maps.diagonal(-1, 1, 2)], 1)
    self_ = maps.diagonal(0, 1, 2)
    rest = off_band                                                            # [n, q, k]
    seg_q, seg_k = segments.view(n, t, 1), segments.view(n, 1, t)
    own = (rest * ((seg_q == seg_k) & (seg_k >= 0))).sum(2)
    other = (rest * ((seg_q != seg_k) & (seg_k >= 0) & (seg_q >= 0))).sum(2)
    p = maps.clamp_min(1e-30)
    n_visible = visible.sum(1).double()                                        # [q]
    entropy = -(maps * p.log()).sum(2) / n_visible.clamp_min(2).log()
    peak = maps.max(2).values

    def mean_rows(x: Tensor, where: Tensor) -> Tensor:                        # x [n, q], where [n, q] bool
        w = where.double()
        return (x * w).sum(1) / w.sum(1).clamp_min(1)

    all_rows = rows.view(1, t).expand(n, t)
    if causal:  # queries of the second segment see both segments
        block_rows = all_rows & (segments >= 1)
    else:
        block_rows = all_rows & (segments >= 0)
    feats = [mean_rows(vertical, all_rows), mean_rows(diagonal, all_rows), mean_rows(previous, all_rows),
             mean_rows(self_, all_rows), mean_rows(own, block_rows), mean_rows(other, block_rows),
             mean_rows(entropy, all_rows & (n_visible >= 2).view(1, t)), mean_rows(peak, all_rows)]
    return torch.stack(feats, 1).float()


# ---------------------------------------------------------------------------------------------------------
# Synthetic maps of known class, and the classifier trained on them
# ---------------------------------------------------------------------------------------------------------

def two_segments(length: int, causal: bool) -> Int[Tensor, " pos"]:
    """The segment of each position of a two-segment input of ``length`` tokens: ``[BOS] s0 SEP s1`` on a decoder,
    ``[CLS] s0 [SEP] s1 [SEP]`` on an encoder (special tokens ``-1``); the segments are as equal as they can be."""
    inner = length - (2 if causal else 3)
    if inner < 2:
        raise InputError(f"length={length} leaves no room for two segments: use length >= {4 if causal else 5}.")
    first = (inner + 1) // 2
    seg = [-1] + [0] * first + [-1] + [1] * (inner - first)
    return torch.tensor(seg + ([] if causal else [-1]))


def check_strength(strength: Any) -> tuple[float, float]:
    """``strength`` checked: ``(low, high)`` with ``0 <= low <= high <= 1``."""
    if (isinstance(strength, (str, bytes)) or not isinstance(strength, Sequence) or len(strength) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in strength)
            or not 0 <= strength[0] <= strength[1] <= 1):
        raise InputError(f"strength={shorten(strength)}: give (low, high) with 0 <= low <= high <= 1, "
                         "e.g. (0.5, 0.95).")
    return float(strength[0]), float(strength[1])


def synthetic_maps(n_per_class: int, length: int, *, causal: bool, seed: int = 0,
                   strength: tuple[float, float] = DEFAULT_STRENGTH
                   ) -> tuple[Float[Tensor, "n query key"], Int[Tensor, "n key"], Int[Tensor, " n"]]:
    """``n_per_class`` maps of each class of :data:`CLASSES` on a two-segment input of ``length`` tokens:
    ``(maps, segments, classes)``, in class order.

    Each row is ``p * structure + (1 - p) * noise`` over the keys the row can see, ``noise ~ Dirichlet(1)``:
    ``vertical`` puts its mass on the first token and the separator (shares drawn per map), ``diagonal`` on the
    offsets -1, 0 (and +1 on an encoder) with shares drawn per map, ``vertical+diagonal`` both at half strength
    each, ``block`` spreads it over the query's own segment (Dirichlet(2)), ``heterogeneous`` is noise of a
    concentration drawn per map between 0.1 (a few random peaks) and 2 (nearly uniform). The strength ``p`` is drawn
    per map from ``U(*strength)``, by default ``U(0.5, 0.95)``; :func:`taxonomy_accuracy` also tests weaker
    structure than the classifier saw.
    """
    low, high = check_strength(strength)
    n_per_class = check_count(n_per_class, "n_per_class")
    seed = check_seed(seed)
    segments = two_segments(length, causal)
    t, n = length, n_per_class
    g = torch.Generator().manual_seed(seed)
    q = torch.arange(t).view(t, 1)
    k = torch.arange(t).view(1, t)
    visible = ((k <= q) if causal else torch.ones(t, t, dtype=torch.bool)).double()
    sep = int((segments == -1).nonzero()[1])
    offsets = (-1, 0) if causal else (-1, 0, 1)

    def uniform(lo: float, hi: float, shape: tuple[int, ...] = (n, 1, 1)) -> Tensor:
        return lo + (hi - lo) * torch.rand(shape, generator=g, dtype=torch.float64)

    def gamma(alpha: Union[float, Tensor], shape: tuple[int, ...]) -> Tensor:
        return torch._standard_gamma(torch.ones(shape, dtype=torch.float64) * alpha, generator=g)

    def normalise(rows: Tensor) -> Tensor:
        rows = (rows + 1e-12) * visible
        return rows / rows.sum(-1, keepdim=True)

    def vertical_part() -> Tensor:
        w0 = uniform(0.3, 1.0, (n, 1))
        m = torch.zeros(n, t, t, dtype=torch.float64)
        m[:, :, 0] = w0
        m[:, :, sep] = 1 - w0
        return normalise(m)

    def diagonal_part() -> Tensor:
        shares = gamma(0.5, (n, len(offsets)))
        shares = shares / shares.sum(1, keepdim=True)
        m = torch.zeros(n, t, t, dtype=torch.float64)
        rows = torch.arange(t)
        for j, o in enumerate(offsets):
            m[:, rows, (rows + o).clamp(0, t - 1)] += shares[:, j:j + 1]
        return normalise(m)

    def block_part() -> Tensor:
        same = (segments.view(t, 1) == segments.view(1, t)) & (segments.view(1, t) >= 0)
        m = gamma(2.0, (n, t, t)) * same
        m[:, segments < 0] = 1.0  # the special tokens' rows: spread
        return normalise(m)

    def noise() -> Tensor:
        return normalise(gamma(1.0, (n, t, t)))

    parts = {
        "vertical": lambda p: p * vertical_part() + (1 - p) * noise(),
        "diagonal": lambda p: p * diagonal_part() + (1 - p) * noise(),
        "vertical+diagonal": lambda p: p / 2 * vertical_part() + p / 2 * diagonal_part() + (1 - p) * noise(),
        "block": lambda p: p * block_part() + (1 - p) * noise(),
        "heterogeneous": lambda p: normalise(gamma(uniform(math.log(0.1), math.log(2.0)).exp(), (n, t, t))),
    }
    maps = torch.cat([normalise(parts[name](uniform(low, high))) for name in CLASSES])
    classes = torch.arange(len(CLASSES)).repeat_interleave(n)
    return maps.float(), segments.view(1, t).expand(len(maps), t).clone(), classes


#: the classifier's training data: maps per class and length, the lengths, the seed
TRAIN_PER_CLASS, TRAIN_LENGTHS, TRAIN_SEED = 40, (12, 20, 32, 40), 1234
#: held-out data of :func:`taxonomy_accuracy` by default: another seed, longer inputs
TEST_LENGTHS, TEST_SEED = (48, 64), 4321


@functools.lru_cache(maxsize=2)
def _classifier(causal: bool) -> tuple[Tensor, Tensor, Tensor]:
    """``(weights [feature + 1, class], mean, std)`` of the logistic regression for causal or bidirectional maps."""
    feats, labels = [], []
    for i, length in enumerate(TRAIN_LENGTHS):
        maps, segs, classes = synthetic_maps(TRAIN_PER_CLASS, length, causal=causal, seed=TRAIN_SEED + i)
        feats.append(map_features(maps, segs, causal))
        labels.append(classes)
    x, y = torch.cat(feats).double(), torch.cat(labels)
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    x = torch.cat([(x - mean) / std, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    w = torch.zeros(x.shape[1], len(CLASSES), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=500, tolerance_grad=1e-10, tolerance_change=1e-12,
                            line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ w, y) + 1e-3 * (w[:-1] ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), mean, std


def classify_features(features: Float[Tensor, "n feature"], causal: bool) -> Int[Tensor, " n"]:
    """The class (an index into :data:`CLASSES`) of each map from its :func:`map_features`."""
    w, mean, std = _classifier(bool(causal))
    x = (features.double() - mean) / std
    x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    return (x @ w).argmax(1)


def taxonomy_accuracy(n_per_class: int = 100, input_lengths: Sequence[int] = TEST_LENGTHS, *, causal: bool = True,
                      seed: int = TEST_SEED, strength: tuple[float, float] = DEFAULT_STRENGTH) -> Result:
    """The classifier's confusion matrix on held-out synthetic maps, ``values[true, predicted]`` (counts).

    The defaults draw maps with another seed and longer inputs than the classifier was trained on (it saw lengths
    :data:`TRAIN_LENGTHS`); ``strength=(0.3, 0.5)`` tests maps whose structure is weaker than any it was trained
    on. ``meta``: ``accuracy`` and ``per_class`` (recall of each true class).
    """
    n_per_class = check_count(n_per_class, "n_per_class")
    seed = check_seed(seed)
    if not isinstance(causal, bool):
        raise InputError(f"causal must be True or False; got {shorten(causal, 30)}.")
    if isinstance(input_lengths, (str, bytes)) or not isinstance(input_lengths, Sequence) or not input_lengths:
        raise InputError(f"input_lengths={shorten(input_lengths)}: give a list of input lengths in tokens, e.g. "
                         "[48, 64].")
    confusion = torch.zeros(len(CLASSES), len(CLASSES))
    for i, length in enumerate(input_lengths):
        if isinstance(length, bool) or not isinstance(length, int) or length < 5:
            raise InputError(f"input_lengths: {shorten(length)} is not a length of 5 tokens or more.")
        maps, segs, classes = synthetic_maps(n_per_class, length, causal=causal, seed=seed + i, strength=strength)
        pred = classify_features(map_features(maps, segs, causal), causal)
        for a, b in zip(classes.tolist(), pred.tolist()):
            confusion[a, b] += 1
    accuracy = float(confusion.diagonal().sum() / confusion.sum())
    recall = (confusion.diagonal() / confusion.sum(1)).tolist()
    return Result(values=confusion, axes=("true", "predicted"), labels={"true": list(CLASSES),
                                                                         "predicted": list(CLASSES)},
                  title="Attention-pattern classifier on held-out synthetic maps "
                        f"({'causal' if causal else 'bidirectional'})",
                  metric="maps", model="synthetic", task=f"{n_per_class} maps per class, lengths {list(input_lengths)}",
                  meta={"accuracy": accuracy, "per_class": dict(zip(CLASSES, recall)), "seed": seed})


# ---------------------------------------------------------------------------------------------------------
# Inputs, and the taxonomy of a model's heads
# ---------------------------------------------------------------------------------------------------------

def _specials(model: Any) -> tuple[set[int], int, Optional[int]]:
    """``(special ids, separator id, start id)`` of the model's tokenizer."""
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        raise InputError("pattern_taxonomy needs the model's tokenizer (for the separator and start tokens); "
                         "load the model with its tokenizer.")
    specials = set(int(i) for i in (getattr(tok, "all_special_ids", None) or []))
    if is_encoder(model):
        if tok.cls_token_id is None or tok.sep_token_id is None:
            raise InputError("this encoder's tokenizer has no [CLS]/[SEP] tokens; pattern_taxonomy needs both.")
        return specials, int(tok.sep_token_id), int(tok.cls_token_id)
    ids = tok.encode(".", add_special_tokens=False)
    sep = int(ids[0]) if len(ids) == 1 else tok.eos_token_id
    if sep is None:
        raise InputError("the tokenizer has neither a one-token '.' nor an end-of-text token to separate segments.")
    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    return specials, int(sep), None if start is None else int(start)


def _random_inputs(model: Any, n: int, length: int, seed: int) -> list[list[int]]:
    specials, sep, start = _specials(model)
    encoder = is_encoder(model)
    segments = two_segments(length, causal=not encoder)
    pool = [i for i in range(model.cfg.d_vocab) if i not in specials and i != sep]
    if len(pool) < 2:
        raise InputError("the vocabulary has fewer than two ordinary tokens to draw random inputs from.")
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        row = [rng.choice(pool) if s >= 0 else sep for s in segments.tolist()]
        if start is not None:
            row[0] = start
        rows.append(row)
    return rows


def _text_inputs(model: Any, pairs: Sequence[tuple[str, str]], max_length: int
                 ) -> tuple[list[list[int]], list[list[int]]]:
    specials, sep, start = _specials(model)
    tok = model.tokenizer
    rows, segs = [], []
    for a, b in pairs:
        ta = tok.encode(a, add_special_tokens=False)
        tb = tok.encode(" " + b if not is_encoder(model) else b, add_special_tokens=False)
        if not ta or not tb:
            raise InputError(f"text pair {shorten((a, b))} has an empty sentence; give two non-empty sentences.")
        row = [start if start is not None else sep] + ta + [sep] + tb + ([sep] if is_encoder(model) else [])
        seg = [-1] + [0] * len(ta) + [-1] + [1] * len(tb) + ([-1] if is_encoder(model) else [])
        rows.append(row[:max_length])
        segs.append(seg[:max_length])
    return rows, segs


def check_pairs(pairs: Any) -> list[tuple[str, str]]:
    """Text pairs checked: a list of ``(first sentence, second sentence)``, both non-empty strings."""
    if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence) or not pairs:
        raise InputError(f"inputs={shorten(pairs)}: use 'random' (random tokens) or 'text' (sentence pairs from the "
                         "default corpus), or give a list of (first sentence, second sentence) pairs.")
    out = []
    for p in pairs:
        if (not isinstance(p, (tuple, list)) or len(p) != 2 or not all(isinstance(s, str) and s.strip() for s in p)):
            raise InputError(f"inputs: {shorten(p)} is not a (first sentence, second sentence) pair of non-empty "
                             "texts.")
        out.append((p[0], p[1]))
    return out


def default_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` pairs of consecutive plain sentences from the package's Debian corpus (fortune cookies and King James
    verses, :func:`circuitlab.tasks.sentences.debian_corpus_lines`), shuffled with ``seed``."""
    from circuitlab.tasks.sentences import debian_corpus_lines

    kjv, cookies = debian_corpus_lines(seed)
    lines = [s for pair in zip(kjv, cookies) for s in pair]
    if len(lines) < 2 * n:
        raise InputError(f"n={n}: the corpus has {len(lines)} sentences, enough for {len(lines) // 2} pairs.")
    return [(lines[2 * i], lines[2 * i + 1]) for i in range(n)]


def pattern_taxonomy(model: ModelLike, inputs: Pairs = "random", *, n: int = DEFAULT_N, length: int = DEFAULT_LENGTH,
                     seed: int = 0, max_memory: int = DEFAULT_MAX_MEMORY) -> Result:
    """The share of inputs on which each head's attention map falls in each of Kovaleva et al.'s classes,
    ``values[layer, head, class]`` (see the module's docstring).

    Args:
        model: a decoder or an encoder (a model or a name: :func:`circuitlab.core.as_model`).
        inputs: ``"random"`` (``n`` inputs of ``length`` random tokens in two segments), ``"text"`` (``n`` pairs of
            sentences from the package's corpus, cut to ``length`` tokens), or a list of ``(first, second)``
            sentence pairs.
        n: inputs drawn for ``"random"`` and ``"text"``.
        length: tokens per random input (both segments and the special tokens); the cut for text inputs.
        seed: the draw of random tokens or of sentence pairs.
        max_memory: bytes one forward pass may hold (inputs are batched by length).

    ``meta``: ``per_layer`` (``[layer, class]``: the mean over heads), ``features`` (``[layer, head, feature]``: the
    mean of :func:`map_features` over inputs), ``inputs``, ``n``, ``causal``, ``classes``, ``features_axis``.
    """
    model = as_any_model(model)
    n = check_count(n, "n")
    seed = check_seed(seed)
    max_memory = check_max_memory(max_memory)
    causal = not is_encoder(model)
    length = check_count(length, "length", minimum=4 if causal else 5)
    if length > model.cfg.n_ctx:
        raise InputError(f"length={length} is longer than the model's context ({model.cfg.n_ctx} tokens).")
    if isinstance(inputs, str) and inputs == "random":
        rows = _random_inputs(model, n, length, seed)
        segs = [two_segments(length, causal).tolist()] * n
        kind = "random tokens"
    else:
        pairs = default_pairs(n, seed) if isinstance(inputs, str) and inputs == "text" else check_pairs(inputs)
        rows, segs = _text_inputs(model, pairs, min(length, model.cfg.n_ctx))
        kind = "text pairs"
        short = [i for i, r in enumerate(rows) if len(r) < 4]
        if short:
            raise InputError(f"inputs: pair {short[0]} has {len(rows[short[0]])} tokens; pairs need 4 or more.")
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    counts = torch.zeros(n_layers, n_heads, len(CLASSES))
    feature_sum = torch.zeros(n_layers, n_heads, len(FEATURES))
    lengths = [len(r) for r in rows]
    for batch in same_length_runs(lengths, lambda t: row_bytes(model, t), max_memory):
        tokens = torch.tensor([rows[i] for i in batch], device=model.cfg.device)
        seg = torch.tensor([segs[i] for i in batch])
        b, t = tokens.shape

        def keep(pattern: Tensor, hook: Any, seg: Tensor = seg, b: int = b, t: int = t) -> None:
            layer = int(hook.name.split(".")[1])
            maps = pattern.detach().float().cpu().reshape(b * n_heads, t, t)
            check_finite(model, None, f"the attention pattern of layer {layer}", maps)
            feats = map_features(maps, seg.repeat_interleave(n_heads, 0), causal)
            classes = classify_features(feats, causal).view(b, n_heads)
            counts[layer] += torch.nn.functional.one_hot(classes, len(CLASSES)).sum(0).float()
            feature_sum[layer] += feats.view(b, n_heads, -1).sum(0)

        with torch.no_grad():
            run_hooks(model, tokens, [(lambda name: name.endswith("attn.hook_pattern"), keep)],
                      stop=None if not causal else n_layers)
    values = counts / len(rows)
    return Result(values=values, axes=("layer", "head", "class"), labels={"class": list(CLASSES)},
                  title=f"Attention-pattern classes (Kovaleva et al. 2019) on {kind}", metric="share of inputs",
                  model=model_name(model), task=f"{len(rows)} {kind}",
                  meta={"per_layer": values.mean(1), "features": feature_sum / len(rows),
                        "features_axis": list(FEATURES), "inputs": kind, "n": len(rows), "causal": causal,
                        "classes": list(CLASSES), "seed": seed})


def taxonomy_order(taxonomy: Result) -> list[tuple[int, int]]:
    """Every head in the pruning order of the taxonomy: heads whose most frequent class comes first in
    :data:`PRUNE_FIRST` (vertical, vertical+diagonal, diagonal, block, heterogeneous) are pruned first; within a
    class, the head most often in that class first; ties by (layer, head)."""
    if not isinstance(taxonomy, Result) or taxonomy.axes != ("layer", "head", "class"):
        raise InputError("taxonomy must be the Result of pattern_taxonomy (axes layer, head, class).")
    values = taxonomy.values
    rank = {CLASSES.index(c): i for i, c in enumerate(PRUNE_FIRST)}
    heads = []
    for layer in range(values.shape[0]):
        for head in range(values.shape[1]):
            share, cls = values[layer, head].max(0)
            heads.append((rank[int(cls)], -float(share), layer, head))
    return [(layer, head) for _, _, layer, head in sorted(heads)]


__all__ = ["CLASSES", "FEATURES", "PRUNE_FIRST", "map_features", "synthetic_maps", "classify_features",
           "taxonomy_accuracy", "pattern_taxonomy", "taxonomy_order", "two_segments", "default_pairs"]
