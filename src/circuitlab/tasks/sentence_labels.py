"""Sentence-level labels of labelled sentences: tense, voice and sentence type, read from spaCy's tags and parse.

The data of the "word-level syntax low, sentence-level semantics high" profile (:mod:`circuitlab.probing.depth`):
each :class:`~circuitlab.tasks.sentences.Sentence` (the default offline sentences, templates, a CoNLL-U file) is
tagged and parsed again by spaCy's ``en_core_web_sm`` (:func:`~circuitlab.tasks.sentences.spacy_pipeline`) on
its own words (no re-tokenisation, so the labels belong to the very words the model reads), and three labels are
read from the main verb, the root of the parse (:func:`properties_of`, a rule on (word, tag, dependency, head)
rows that tests check on hand-labelled rows):

- ``tense``: ``"past"`` if the root or one of its auxiliaries is tagged ``VBD`` ("took", "was taken", "did
  take"), ``"future"`` if an auxiliary is "will" or "shall", ``"present"`` if the root or an auxiliary is tagged
  ``VBZ`` / ``VBP``; ``None`` otherwise (no finite verb: "Not responsible for typographical errors.").
- ``voice``: ``"passive"`` if the root has a passive subject or auxiliary (``nsubjpass`` / ``auxpass``, spaCy's
  ClearNLP labels; UD's ``nsubj:pass`` / ``aux:pass`` too), ``"active"`` if the root is a verb otherwise;
  ``None`` when the root is not a verb.
- ``type``: ``"question"`` if the sentence ends with "?", ``"imperative"`` if the root is a base-form verb
  (``VB``) with no subject and no auxiliary, ``"declarative"`` otherwise.

These are the SentEval-style sentence properties of Conneau et al. (2018) and Jawahar et al. (2019) (tense, and
here voice and sentence type in place of their subject / object number), labelled by a small parser rather than
by annotators.
"""

from __future__ import annotations

from typing import Optional, Sequence

from circuitlab.errors import InputError

#: the sentence-level tasks, in the order they are reported
SENTENCE_TASKS = ("tense", "voice", "type")

_PASSIVE = {"nsubjpass", "auxpass", "nsubj:pass", "aux:pass", "csubjpass"}
_SUBJECT = {"nsubj", "nsubjpass", "csubj", "csubjpass", "expl", "nsubj:pass"}
_AUX = {"aux", "auxpass", "aux:pass"}


def properties_of(rows: Sequence[tuple[str, str, str, int]]) -> dict[str, Optional[str]]:
    """The tense, voice and type of one parsed sentence given as ``(word, tag, dep, head)`` rows: Penn Treebank
    tag, dependency label, and head as a 0-based row index (the root is its own head, as in spaCy, or ``-1``). See
    the module docstring for the rule."""
    if not rows:
        raise InputError("properties_of got no rows; give one (word, tag, dep, head) row per word.")
    roots = [i for i, (_, _, dep, head) in enumerate(rows) if dep.upper() == "ROOT" or head in (i, -1)]
    out: dict[str, Optional[str]] = {"tense": None, "voice": None,
                                     "type": "question" if rows[-1][0] == "?" else None}
    if not roots:
        out["type"] = out["type"] or "declarative"
        return out
    root = roots[0]
    word, tag, _, _ = rows[root]
    children = [i for i, r in enumerate(rows) if r[3] == root and i != root]
    aux = [i for i in children if rows[i][2] in _AUX]
    group = [rows[i] for i in aux] + [rows[root]]
    tags = [r[1] for r in group]
    if "VBD" in tags:
        out["tense"] = "past"
    elif any(r[0].lower() in ("will", "shall", "'ll") for r in group):
        out["tense"] = "future"
    elif "VBZ" in tags or "VBP" in tags:
        out["tense"] = "present"
    if tag.startswith("VB"):
        out["voice"] = "passive" if any(rows[i][2] in _PASSIVE for i in children) else "active"
    if out["type"] is None:
        subject = any(rows[i][2] in _SUBJECT for i in children)
        out["type"] = "imperative" if tag == "VB" and not subject and not aux else "declarative"
    return out


def sentence_properties(sentences: Sequence, nlp=None, *, progress: bool = False) -> list[dict[str, Optional[str]]]:
    """:func:`properties_of` for each sentence (a :class:`~circuitlab.tasks.sentences.Sentence`), tagged and parsed
    by spaCy on its own words (``nlp``: a loaded pipeline, default
    :func:`~circuitlab.tasks.sentences.spacy_pipeline`)."""
    from spacy.tokens import Doc

    from circuitlab.core import progress_bar
    from circuitlab.tasks.sentences import spacy_pipeline

    nlp = nlp or spacy_pipeline()
    docs = (Doc(nlp.vocab, words=list(s.words)) for s in sentences)
    out = []
    skip = [name for name in nlp.pipe_names if name == "ner"]
    for doc in progress_bar(nlp.pipe(docs, disable=skip), progress=progress, desc="sentence labels",
                            total=len(sentences), unit="sentence"):
        out.append(properties_of([(t.text, t.tag_, t.dep_, t.head.i) for t in doc]))
    return out


__all__ = ["SENTENCE_TASKS", "properties_of", "sentence_properties"]
