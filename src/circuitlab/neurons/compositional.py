"""Compositional explanations of neurons (Mu & Andreas 2020): logical formulas over word-level concepts.

    from circuitlab.neurons.compositional import compositional_explanations
    from circuitlab.probing import default_sentences

    ex = compositional_explanations("minilm-l6", default_sentences(500), hooks=[3], neurons=50, holdout=0.5)
    ex.formulas[0][-1]           # the best formula of the first neuron, e.g. (upos:NOUN AND NOT pos:first)
    ex.iou.values[:, -1]         # its IoU with the neuron's mask, per neuron
    ex.by_length.values          # mean IoU over neurons at formula length 1, 2, 3: how much longer formulas add

Mu & Andreas, "Compositional Explanations of Neurons" (NeurIPS 2020, https://arxiv.org/abs/2006.14032), extend
network dissection: a neuron is explained by the logical formula over annotated concepts whose mask best overlaps
the inputs where the neuron fires.

**The neuron's mask.** Word-level activations (:func:`circuitlab.probing.collect`: a word's row pools its tokens,
``pool="mean"`` by default) of every MLP neuron at ``hooks`` (``blocks.{l}.mlp.hook_post``), binarised: a word
is in the mask when the neuron's activation is among its top ``top`` fraction over the words searched (default
0.5%, the quantile of network dissection and of Mu & Andreas's vision experiments; exactly: at least the
``ceil(top * n)``-th largest value, so ties at the threshold are all in), or, with ``threshold=t``, when the
activation exceeds ``t`` (their NLI experiments used ``> 0`` on ReLU units). A neuron constant over the words has
no mask to explain: its IoUs are NaN and its formulas ``None``.

**Concepts** (:func:`word_concepts`): boolean masks over the same words, by kind: ``upos:NOUN`` (part of speech),
``deprel:nsubj`` (dependency label), ``ent:PERSON`` (entity type, ``"O"`` left out), ``word:the`` (the lower-cased
word, for the ``max_words`` most frequent words), ``list:negation`` (the word lists of
:mod:`circuitlab.tasks.word_lists`, written for this package), and position features ``pos:first``,
``pos:second``, ``pos:last`` and ``shape:capitalized``. A concept true on fewer than ``min_words`` words is left out
(a concept that marks one or two words
fits a sparse mask by chance). Users can pass their own :class:`Concepts`.

**Formulas** (:class:`Formula`) are built left to right as in Mu & Andreas's code: an atom, then ``F AND c``,
``F OR c`` or ``F AND NOT c`` for a concept ``c``; a formula's length is its number of atoms. **Beam search**
(:func:`search_formulas`): the ``beam`` atoms with the best IoU, then at each length every beam formula extended by
every operator and concept, the beam refilled with the best of old and new formulas together (so the best formula
of length at most ``L`` is the head of the beam after step ``L``, and IoU never falls with length on the searched
words). Score: ``IoU = |F & M| / |F | M|`` (0 when both are empty). Ties go to the formula met first: shorter,
then earlier in the beam, then ``AND`` before ``OR`` before ``AND NOT``, then concept order.

**Vectorised.** The counts every candidate needs come from two matrix products per step on 0/1 floats (exact:
counts stay below ``2**24``): ``|F & c|`` and ``|F & M & c|`` for every beam formula ``F`` and concept ``c``, with
``|c|``, ``|c & M|``, ``|F|``, ``|F & M|``; ``AND``, ``OR`` and ``AND NOT`` follow by inclusion-exclusion, e.g.
``|(F OR c) & M| = |F & M| + |c & M| - |F & c & M|``. Neurons are processed in chunks under ``max_memory``.
Two beam formulas with the same mask extend to the same candidates, so the beam keeps one formula per mask (the
first met): with a beam as large as the number of distinct masks the search is exhaustive (the test compares it
with a brute-force enumeration).

**Held-out IoU** (``holdout=f``): a fraction ``f`` of the sentences (seeded) is kept out of the search; the
formulas found on the rest are scored there with the threshold found on the rest. Longer formulas always fit the
searched words at least as well; the held-out IoU says whether they explain more of the neuron or just more of
the sample.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from circuitlab.core import (DEFAULT_MAX_MEMORY, check_affordable, check_count, check_max_memory, check_number,
                             check_seed, progress_bar, row_chunks, shorten)
from circuitlab.errors import InputError
from circuitlab.neurons.ranking import layer_labels, neuron_activations
from circuitlab.probing.activations import WordActivations
from circuitlab.results import Bundle, Result
from circuitlab.tasks.sentences import Sentence
from circuitlab.tasks.word_lists import WORD_LISTS

__all__ = ["CONCEPT_KINDS", "OPS", "CompositionalExplanations", "Concepts", "Formula", "compositional_explanations",
           "formula_iou", "neuron_masks", "search_formulas", "word_concepts"]

#: the kinds of concept :func:`word_concepts` builds, by name
CONCEPT_KINDS = ("upos", "deprel", "ent", "word", "list", "position")
#: the operators that extend a formula by one concept (Mu & Andreas's code: Or, And, And-Not)
OPS = ("AND", "OR", "AND NOT")
#: the longest formula :func:`search_formulas` searches (Mu & Andreas went to 10 in vision, 5 in NLI)
MAX_LENGTH = 10


# ---------------------------------------------------------------------------------------------------------
# Concepts and formulas
# ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Concepts:
    """Boolean concept masks over words.

    Attributes:
        names: one name per concept (``"upos:NOUN"``, ``"pos:first"``...).
        masks: ``[concept, word]``: whether each word has each concept.
    """

    names: tuple[str, ...]
    masks: Bool[Tensor, "concept word"]

    def __post_init__(self) -> None:
        names = tuple(self.names) if not isinstance(self.names, str) else None
        if names is None or not all(isinstance(n, str) and n for n in names):
            raise InputError(f"concepts: names must be a list of non-empty strings; got {shorten(self.names)}.")
        if len(set(names)) != len(names):
            dup = [n for n, c in Counter(names).items() if c > 1]
            raise InputError(f"concepts: the names {shorten(dup)} appear more than once; give each concept once.")
        m = self.masks
        if not isinstance(m, Tensor) or m.ndim != 2 or m.shape[0] != len(names):
            raise InputError(f"concepts: masks must be a [concept, word] tensor with {len(names)} rows (one per "
                             f"name); got {shorten(getattr(m, 'shape', m))}.")
        if not names:
            raise InputError("concepts: no concept left; give at least one (or lower min_words).")
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "masks", m.bool())

    def __len__(self) -> int:
        return len(self.names)

    @property
    def n_words(self) -> int:
        return int(self.masks.shape[1])

    def mask(self, name: str) -> Bool[Tensor, " word"]:
        """The mask of the concept ``name``."""
        if name not in self.names:
            raise InputError(f"concept {shorten(name)} is not among the {len(self.names)} concepts.")
        return self.masks[self.names.index(name)]

    def select(self, words: Int[Tensor, " k"]) -> "Concepts":
        """The same concepts over a subset of the words (by index)."""
        return Concepts(self.names, self.masks[:, words])


@dataclass(frozen=True)
class Formula:
    """A formula built left to right: ``atoms[0] ops[0] atoms[1] ops[1] atoms[2] ...``, each operator applied to
    everything before it (``((a AND b) OR c)``). Its length is its number of atoms."""

    atoms: tuple[str, ...]
    ops: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "atoms", tuple(self.atoms))
        object.__setattr__(self, "ops", tuple(self.ops))
        if not self.atoms or len(self.ops) != len(self.atoms) - 1 or any(o not in OPS for o in self.ops):
            raise InputError(f"a formula needs one or more atoms and one operator ({', '.join(OPS)}) between each "
                             f"two; got atoms {shorten(self.atoms)}, ops {shorten(self.ops)}.")

    def __len__(self) -> int:
        return len(self.atoms)

    def __str__(self) -> str:
        s = self.atoms[0]
        for i, (op, a) in enumerate(zip(self.ops, self.atoms[1:])):
            s = f"{s} {op} {a}" if i == len(self.ops) - 1 else f"({s} {op} {a})"
        return s

    def extend(self, op: str, atom: str) -> "Formula":
        return Formula(self.atoms + (atom,), self.ops + (op,))

    def mask(self, concepts: Concepts) -> Bool[Tensor, " word"]:
        """The words where the formula holds."""
        m = concepts.mask(self.atoms[0]).clone()
        for op, a in zip(self.ops, self.atoms[1:]):
            c = concepts.mask(a)
            m = m & c if op == "AND" else m | c if op == "OR" else m & ~c
        return m


def _check_kinds(concept_kinds: Any) -> tuple[str, ...]:
    items = [concept_kinds] if isinstance(concept_kinds, str) else concept_kinds
    if not isinstance(items, (list, tuple)) or not items or any(k not in CONCEPT_KINDS for k in items) \
            or len(set(items)) != len(items):
        raise InputError(f"concept_kinds={shorten(concept_kinds)}: give distinct concept kinds among "
                         f"{', '.join(CONCEPT_KINDS)}.")
    return tuple(items)


def word_concepts(sentences: Sequence[Sentence], *, sentence: Optional[Int[Tensor, " row"]] = None,
                  word: Optional[Int[Tensor, " row"]] = None, concept_kinds: Sequence[str] = CONCEPT_KINDS,
                  min_words: int = 5, max_words: int = 200,
                  lists: Optional[Mapping[str, Sequence[str]]] = None) -> Concepts:
    """The concepts of the module docstring over the words of ``sentences``: every word in order, or the rows
    ``(sentence[i], word[i])`` (the rows of :class:`~circuitlab.probing.activations.WordActivations`).

    Args:
        concept_kinds: which kinds of concept to build (:data:`CONCEPT_KINDS`); an annotation the sentences lack
            (``ent`` of a CoNLL-U file without entities) is passed over.
        min_words: concepts true on fewer words are left out.
        max_words: how many of the most frequent lower-cased words become ``word:`` concepts (ties by the word).
        lists: word lists (name -> words) instead of :data:`circuitlab.tasks.word_lists.WORD_LISTS`.
    """
    concept_kinds = _check_kinds(concept_kinds)
    min_words = check_count(min_words, "min_words")
    max_words = check_count(max_words, "max_words", minimum=0)
    if isinstance(sentences, (str, Sentence)) or not isinstance(sentences, Sequence) or not sentences \
            or not all(isinstance(s, Sentence) for s in sentences):
        raise InputError(f"sentences must be a non-empty list of Sentence (circuitlab.probing.default_sentences); "
                         f"got {shorten(sentences)}.")
    if (sentence is None) != (word is None):
        raise InputError("sentence and word row indices go together: give both or neither.")
    if sentence is None:
        rows = [(si, wi) for si, s in enumerate(sentences) for wi in range(len(s))]
    else:
        if len(sentence) != len(word):
            raise InputError(f"sentence and word: {len(sentence)} and {len(word)} row indices; give one of each per "
                             "row.")
        rows = list(zip(torch.as_tensor(sentence).tolist(), torch.as_tensor(word).tolist()))
        for si, wi in rows:
            if not 0 <= si < len(sentences) or not 0 <= wi < len(sentences[si]):
                raise InputError(f"row (sentence {si}, word {wi}) is not a word of the {len(sentences)} sentences.")
    if lists is None:
        lists = WORD_LISTS
    elif not isinstance(lists, Mapping) or not all(isinstance(k, str) and k and not isinstance(v, str)
                                                   for k, v in lists.items()):
        raise InputError(f"lists must map list names to lists of words; got {shorten(lists)}.")
    columns: dict[str, list[int]] = {}

    def add(name: str, i: int) -> None:
        columns.setdefault(name, []).append(i)

    lowered = [sentences[si].words[wi].lower() for si, wi in rows]
    for layer in ("upos", "deprel", "ent"):
        if layer in concept_kinds:
            for i, (si, wi) in enumerate(rows):
                labels = getattr(sentences[si], layer)
                if labels is not None and not (layer == "ent" and labels[wi] == "O"):
                    add(f"{layer}:{labels[wi]}", i)
    if "word" in concept_kinds and max_words:
        freq = Counter(lowered)
        keep = set(sorted((w for w in freq if freq[w] >= min_words), key=lambda w: (-freq[w], w))[:max_words])
        for i, w in enumerate(lowered):
            if w in keep:
                add(f"word:{w}", i)
    if "list" in concept_kinds:
        sets = {name: {str(w).lower() for w in words} for name, words in lists.items()}
        for i, w in enumerate(lowered):
            for name, ws in sets.items():
                if w in ws:
                    add(f"list:{name}", i)
    if "position" in concept_kinds:
        for i, (si, wi) in enumerate(rows):
            n = len(sentences[si])
            if wi == 0:
                add("pos:first", i)
            if wi == 1:
                add("pos:second", i)
            if wi == n - 1:
                add("pos:last", i)
            w = sentences[si].words[wi]
            if w[:1].isupper():
                add("shape:capitalized", i)
    names = [n for n in sorted(columns, key=lambda n: (CONCEPT_KINDS.index(_kind(n)), n))
             if len(columns[n]) >= min_words]
    masks = torch.zeros(len(names), len(rows), dtype=torch.bool)
    for j, n in enumerate(names):
        masks[j, columns[n]] = True
    if not names:
        raise InputError(f"no concept is true on at least min_words={min_words} of the {len(rows)} words; use more "
                         "sentences or a lower min_words.")
    return Concepts(tuple(names), masks)


def _kind(name: str) -> str:
    prefix = name.split(":", 1)[0]
    return {"pos": "position", "shape": "position"}.get(prefix, prefix)


# ---------------------------------------------------------------------------------------------------------
# Neuron masks and the beam search
# ---------------------------------------------------------------------------------------------------------

def neuron_masks(acts: Float[Tensor, "word neuron"], top: float = 0.005, threshold: Optional[float] = None,
                 ) -> tuple[Bool[Tensor, "neuron word"], Float[Tensor, " neuron"]]:
    """Each neuron's binary mask over the words, and the threshold used: with ``threshold=None`` a word is in the
    mask when the activation is at least the ``ceil(top * n)``-th largest of the neuron's ``n`` values (top
    quantile); else when it exceeds ``threshold``."""
    if not isinstance(acts, Tensor) or acts.ndim != 2 or acts.shape[0] == 0:
        raise InputError(f"acts must be a [word, neuron] tensor with at least one word; got "
                         f"{shorten(getattr(acts, 'shape', acts))}.")
    acts = acts.float()
    if threshold is not None:
        t = check_number(threshold, "threshold")
        thr = torch.full((acts.shape[1],), t)
        return (acts > t).T.contiguous(), thr
    top = check_number(top, "top", low=0, high=1, low_open=True, high_open=True)
    k = max(1, math.ceil(top * acts.shape[0]))
    thr = torch.topk(acts, k, dim=0).values[-1]
    return (acts >= thr).T.contiguous(), thr


def search_formulas(masks: Bool[Tensor, "neuron word"], concepts: Concepts, *, max_length: int = 3,
                    beam: int = 10, max_memory: int = DEFAULT_MAX_MEMORY, progress: bool = False,
                    ) -> tuple[list[list[Formula]], Float[Tensor, "neuron length"]]:
    """Beam search (module docstring) for each neuron's mask: per neuron, the best formula of length at most
    ``L`` for ``L = 1 .. max_length`` and its IoU (``[neuron, length]``, float64)."""
    max_length = check_count(max_length, "max_length")
    if max_length > MAX_LENGTH:
        raise InputError(f"max_length={max_length}: formulas of more than {MAX_LENGTH} atoms are not searched "
                         f"(Mu & Andreas stopped at 10); use max_length <= {MAX_LENGTH}.")
    beam = check_count(beam, "beam")
    max_memory = check_max_memory(max_memory)
    if not isinstance(concepts, Concepts):
        raise InputError(f"concepts must be Concepts (see word_concepts); got {type(concepts).__name__}.")
    if not isinstance(masks, Tensor) or masks.ndim != 2 or masks.shape[1] != concepts.n_words:
        raise InputError(f"masks must be a [neuron, word] tensor over the concepts' {concepts.n_words} words; got "
                         f"{shorten(getattr(masks, 'shape', masks))}.")
    masks = masks.bool()
    N, n = masks.shape
    k = len(concepts)
    check_affordable(4 * k * n, f"{k} concepts over {n:,} words", "use fewer concepts (max_words) or fewer words")
    # per neuron and chunk: a beam of B masks as bool and two float copies, and 3 B k candidate scores
    per_neuron = beam * n * 9 + beam * 3 * k * 8 * 6 + 8 * n
    C = concepts.masks.float()  # [k, n]
    csize = C.sum(1).double()  # |c|
    formulas: list[list[Optional[Formula]]] = []
    ious = torch.full((N, max_length), float("nan"), dtype=torch.float64)
    for sl in progress_bar(row_chunks(N, per_neuron, max_memory), progress=progress, desc="formulas",
                           unit="chunk"):
        f, v = _search_chunk(masks[sl], C, csize, concepts.names, max_length, beam)
        formulas.extend(f)
        ious[sl] = v
    return formulas, ious


def _search_chunk(M: Tensor, C: Tensor, csize: Tensor, names: tuple[str, ...], max_length: int, beam: int,
                  ) -> tuple[list[list[Formula]], Tensor]:
    N, n = M.shape
    k = C.shape[0]
    Mf = M.float()
    msize = Mf.sum(1).double()  # |M|
    cm = (Mf @ C.T).double()  # [N, k] |c & M|

    def iou(inter: Tensor, union: Tensor) -> Tensor:
        return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))

    # length 1: the atoms
    atom_iou = iou(cm, msize[:, None] + csize[None] - cm)  # [N, k]
    beams: list[list[tuple[Formula, Tensor, float]]] = []
    for i in range(N):
        order = torch.sort(atom_iou[i], descending=True, stable=True).indices.tolist()
        beams.append(_fill(((Formula((names[j],)), C[j].bool(), float(atom_iou[i, j])) for j in order), beam))
    out_f = [[b[0][0]] for b in beams]
    out_v = torch.empty(N, max_length, dtype=torch.float64)
    out_v[:, 0] = torch.tensor([b[0][2] for b in beams], dtype=torch.float64)
    for L in range(1, max_length):
        B = max(len(b) for b in beams)
        F = torch.zeros(N, B, n, dtype=torch.bool)
        valid = torch.zeros(N, B, dtype=torch.bool)
        for i, b in enumerate(beams):
            for j, (_, m, _) in enumerate(b):
                F[i, j] = m
                valid[i, j] = True
        Ff = F.float()
        fc = (Ff @ C.T).double()  # [N, B, k] |F & c|
        fmc = ((F & M[:, None]).float() @ C.T).double()  # |F & M & c|
        fsize = Ff.sum(2).double()[..., None]  # [N, B, 1]
        fm = (F & M[:, None]).sum(2).double()[..., None]  # |F & M|
        ms = msize[:, None, None]
        inter = torch.stack([fmc, fm + cm[:, None] - fmc, fm - fmc], 2)  # [N, B, op, k]
        size = torch.stack([fc, fsize + csize - fc, fsize - fc], 2)
        cand = iou(inter, ms[..., None] + size - inter)
        cand = cand.masked_fill(~valid[:, :, None, None], float("-inf")).reshape(N, -1)
        for i in range(N):
            old = beams[i]
            scores = torch.cat([torch.tensor([s for _, _, s in old], dtype=torch.float64), cand[i]])
            order = torch.sort(scores, descending=True, stable=True).indices.tolist()

            def items(order=order, old=old, i=i):
                for idx in order:
                    if idx < len(old):
                        yield old[idx]
                        continue
                    c = idx - len(old)
                    b, rest = divmod(c, 3 * k)
                    op, j = divmod(rest, k)
                    if b >= len(old):
                        return
                    form, m, _ = old[b]
                    cj = C[j].bool()
                    new = m & cj if op == 0 else m | cj if op == 1 else m & ~cj
                    yield form.extend(OPS[op], names[j]), new, float(scores[idx])

            beams[i] = _fill(items(), beam)
            out_f[i].append(beams[i][0][0])
            out_v[i, L] = beams[i][0][2]
    return out_f, out_v


def _fill(items, beam: int) -> list[tuple[Formula, Tensor, float]]:
    """The first ``beam`` items with distinct masks (items come best first; -inf ends the list)."""
    out, seen = [], set()
    for form, m, s in items:
        if s == float("-inf"):
            break
        key = m.numpy().tobytes()
        if key in seen:
            continue
        seen.add(key)
        out.append((form, m, s))
        if len(out) == beam:
            break
    return out


def formula_iou(formula: Optional[Formula], mask: Bool[Tensor, " word"], concepts: Concepts) -> float:
    """IoU of ``formula``'s mask with ``mask`` over ``concepts``' words (NaN for ``None``; 0 when both are empty)."""
    if formula is None:
        return float("nan")
    f = formula.mask(concepts)
    union = int((f | mask).sum())
    return int((f & mask).sum()) / union if union else 0.0


# ---------------------------------------------------------------------------------------------------------
# The analysis
# ---------------------------------------------------------------------------------------------------------

@dataclass(repr=False)
class CompositionalExplanations(Bundle):
    """The best formula per neuron and length, and how IoU grows with length.

    Attributes:
        iou: ``[neuron, length]``: IoU of the best formula of length at most ``length`` on the searched words.
        heldout: the same formulas' IoU on the held-out sentences (``None`` without ``holdout``).
        by_length: ``[split, length]``: the mean over neurons of ``iou`` (``"search"``) and of ``heldout``
            (``"heldout"``, where there is one); constant neurons left out.
        formulas: per neuron, the best formula at each length (``None`` for a constant neuron).
        concepts: the concept names searched.
    """

    iou: Result
    heldout: Optional[Result]
    by_length: Result
    formulas: list[list[Optional[Formula]]]
    concepts: tuple[str, ...]
    model: str = ""

    def best(self, neuron: int) -> tuple[Optional[Formula], float]:
        """The longest-length best formula of the ``neuron``-th neuron (in ``iou``'s order) and its IoU."""
        return self.formulas[neuron][-1], float(self.iou.values[neuron, -1])

    def table(self, k: int = 10) -> str:
        """The ``k`` neurons with the best IoU at the longest length, one line each."""
        v = self.iou.values[:, -1].nan_to_num(nan=-1.0)
        lines = []
        for i in torch.sort(v, descending=True, stable=True).indices[:k].tolist():
            h = "" if self.heldout is None else f"  held-out {float(self.heldout.values[i, -1]):.3f}"
            lines.append(f"{self.iou.labels['neuron'][i]:>10}  IoU {float(self.iou.values[i, -1]):.3f}{h}  "
                         f"{self.formulas[i][-1]}")
        return "\n".join(lines)


def _pick_neurons(widths: list[int], neurons: Any, seed: int) -> list[list[int]]:
    if neurons is None:
        return [list(range(w)) for w in widths]
    if isinstance(neurons, int) and not isinstance(neurons, bool):
        k = check_count(neurons, "neurons")
        g = torch.Generator().manual_seed(seed)
        return [sorted(torch.randperm(w, generator=g)[:min(k, w)].tolist()) for w in widths]
    items = list(neurons) if isinstance(neurons, (list, tuple, range)) else None
    if not items or not all(isinstance(j, int) and not isinstance(j, bool) for j in items) \
            or len(set(items)) != len(items):
        raise InputError(f"neurons={shorten(neurons)}: give None (every neuron), a count to sample per hook, or a "
                         "list of distinct neuron indices.")
    out = []
    for w in widths:
        bad = [j for j in items if not -w <= j < w]
        if bad:
            raise InputError(f"neurons {shorten(bad)} are out of range for a hook of {w} neurons; use 0..{w - 1}.")
        js = [j % w for j in items]
        if len(set(js)) != len(js):
            raise InputError(f"neurons={shorten(neurons)} names a neuron twice (a negative index counts from the "
                             "end); give each once.")
        out.append(js)
    return out


def compositional_explanations(source: Any, sentences: Optional[Sequence[Sentence]] = None, *, hooks: Any = None,
                               neurons: Any = None, top: float = 0.005, threshold: Optional[float] = None,
                               max_length: int = 3, beam: int = 10, concept_set: Optional[Concepts] = None,
                               concept_kinds: Sequence[str] = CONCEPT_KINDS, min_words: int = 5,
                               max_words: int = 200,
                               holdout: float = 0.0, seed: int = 0, max_memory: int = DEFAULT_MAX_MEMORY,
                               progress: bool = False, **collect_options: Any) -> CompositionalExplanations:
    """Compositional explanations of MLP neurons (module docstring; Mu & Andreas 2020).

    Args:
        source: a model (or name) to collect word activations from on ``sentences``, or
            :class:`~circuitlab.probing.activations.WordActivations` (its sentences are used).
        hooks: neuron hooks (default every block's ``mlp.hook_post``; an int is that block's).
        neurons: ``None`` (every neuron of each hook), a count ``k`` (``k`` neurons per hook drawn with ``seed``),
            or a list of neuron indices (the same in each hook).
        top, threshold: how activations are binarised (top fraction of the searched words, or ``> threshold``).
        max_length, beam: the longest formula and the beam width (Mu & Andreas: beam 10; length 3 to 10 in vision,
            5 in NLI).
        concept_set: concepts over the activations' rows, instead of :func:`word_concepts` with ``concept_kinds``,
            ``min_words`` and ``max_words``.
        holdout: the fraction of sentences kept out of the search and scored apart (0: none).
        seed: draws the neurons (with a count) and the held-out sentences.
        max_memory: bytes for the forward passes and the search's chunks of neurons.
        collect_options: passed to :func:`circuitlab.probing.collect` (``pool``, ``cache``, ``batch_size``...).
    """
    t0 = time.perf_counter()
    seed = check_seed(seed)
    max_memory = check_max_memory(max_memory)
    holdout = check_number(holdout, "holdout", low=0, high=1, high_open=True)
    if threshold is None:
        top = check_number(top, "top", low=0, high=1, low_open=True, high_open=True)
    else:
        threshold = check_number(threshold, "threshold")
    max_length = check_count(max_length, "max_length")
    beam = check_count(beam, "beam")
    concepts = concept_set
    if concepts is None:
        concept_kinds = _check_kinds(concept_kinds)
        min_words = check_count(min_words, "min_words")
        max_words = check_count(max_words, "max_words", minimum=0)
    elif not isinstance(concepts, Concepts):
        raise InputError(f"concept_set must be Concepts (see word_concepts) or None; got {type(concepts).__name__}.")
    if not isinstance(source, WordActivations):
        collect_options["max_memory"] = max_memory
    acts = neuron_activations(source, sentences, hooks, progress=progress, **collect_options)
    if concepts is None:
        concepts = word_concepts(acts.sentences, sentence=acts.sentence, word=acts.word,
                                 concept_kinds=concept_kinds, min_words=min_words, max_words=max_words)
    elif concepts.n_words != len(acts):
        raise InputError(f"concept_set covers {concepts.n_words} words but the activations have {len(acts)} word rows; "
                         "build them over the same rows (word_concepts(sentences, sentence=acts.sentence, "
                         "word=acts.word)).")
    n_sent = len(acts.sentences)
    if holdout > 0:
        n_out = int(round(holdout * n_sent))
        if n_out < 1 or n_out >= n_sent:
            raise InputError(f"holdout={holdout:g} of {n_sent} sentences leaves no sentence on one side; use more "
                             "sentences or another fraction.")
        g = torch.Generator().manual_seed(seed)
        out_sents = torch.zeros(n_sent, dtype=torch.bool)
        out_sents[torch.randperm(n_sent, generator=g)[:n_out]] = True
        is_out = out_sents[acts.sentence]
    else:
        is_out = torch.zeros(len(acts), dtype=torch.bool)
    rows_in, rows_out = (~is_out).nonzero().flatten(), is_out.nonzero().flatten()
    widths = [int(acts.acts[h].shape[1]) for h in acts.hooks]
    picked = _pick_neurons(widths, neurons, seed)
    layers = layer_labels(acts.hooks)
    cols = torch.cat([acts.acts[h][:, js].float() for h, js in zip(acts.hooks, picked)], 1)
    labels = [f"{lab} N{j}" for lab, js in zip(layers, picked) for j in js]
    x_in = cols[rows_in]
    masks, thr = neuron_masks(x_in, top, threshold)
    constant = (x_in.max(0).values == x_in.min(0).values)
    found, ious = search_formulas(masks, concepts.select(rows_in), max_length=max_length, beam=beam,
                                  max_memory=max_memory, progress=progress)
    formulas: list[list[Optional[Formula]]] = [[None] * max_length if constant[i] else list(f)
                                               for i, f in enumerate(found)]
    ious[constant] = float("nan")
    lengths = [str(L) for L in range(1, max_length + 1)]
    heldout = None
    splits, means = ["search"], [ious[~constant].mean(0) if (~constant).any() else ious[0]]
    if holdout > 0:
        c_out = concepts.select(rows_out)
        x_out = cols[rows_out]
        m_out = (x_out > thr) if threshold is not None else (x_out >= thr)
        h = torch.tensor([[formula_iou(f, m_out[:, i], c_out) for f in formulas[i]] for i in range(len(labels))],
                         dtype=torch.float64).reshape(len(labels), max_length)
        heldout = Result(h, ("neuron", "length"), {"neuron": labels, "length": lengths},
                         title="Compositional explanations, held-out IoU", metric="IoU on held-out sentences",
                         model=acts.model, task=f"{int(out_sents.sum())} held-out sentences")
        splits.append("heldout")
        means.append(h[~constant].mean(0) if (~constant).any() else h[0])
    binarised = f"activation > {threshold:g}" if threshold is not None else f"top {100 * top:g}% of words"
    meta = {"hooks": acts.hooks, "top": top, "threshold": threshold, "thresholds": thr.tolist(), "beam": beam,
            "max_length": max_length, "n_concepts": len(concepts), "n_words": {"search": int(len(rows_in)),
                                                                               "heldout": int(len(rows_out))},
            "constant": [labels[i] for i in constant.nonzero().flatten().tolist()], "holdout": holdout,
            "seed": seed, "formulas": [[None if f is None else str(f) for f in fs] for fs in formulas],
            "seconds": time.perf_counter() - t0}
    iou_result = Result(ious, ("neuron", "length"), {"neuron": labels, "length": lengths},
                        title="Compositional explanations (Mu & Andreas 2020)",
                        metric=f"IoU of the best formula of length <= L with the neuron's mask ({binarised})",
                        model=acts.model, task=f"{n_sent} sentences", meta=meta)
    by_length = Result(torch.stack(means), ("split", "length"), {"split": splits, "length": lengths},
                       title="Mean explanation IoU by formula length", metric="mean IoU over neurons",
                       model=acts.model, task=f"{len(labels) - int(constant.sum())} neurons",
                       meta={"n_neurons": len(labels) - int(constant.sum())})
    return CompositionalExplanations(iou_result, heldout, by_length, formulas, concepts.names, acts.model)
