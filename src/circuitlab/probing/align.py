"""Words to subword tokens: which token positions of a model's input hold each word of a sentence.

A probe labels *words* (a part of speech, a head) but a model reads *tokens*; a word may be split into several
pieces (``"unbelievable" -> "un", "##believ", "##able"``) or share a token with a neighbour. The alignment works
on characters, so it serves every fast tokenizer alike (BERT's WordPiece, byte-level BPE as in GPT-2 and the zoo's
``toy-lm``, SentencePiece as in Gemma, SmolLM2's BPE):

1. the sentence's text is built from its words and spacing (:attr:`Sentence.text`), each word with its character
   span;
2. the tokenizer splits the text and reports each token's character span (``return_offsets_mapping``);
3. each token belongs to the word its characters overlap most (spaces a token carries in front, as ``"Ġman"``
   or ``"▁man"`` do, are not counted); a token over two words (``"don't"`` read as ``"don"``, ``"'t"`` against
   the words ``do``, ``n't``) goes to the word it covers more of, the first on a tie.

A word representation is then the **mean** of its tokens' activations (as Hewitt & Manning 2019 did) or its
**first** token's (``pool="first"``, as in much of the BERT probing literature).

Special tokens the model expects are added as it expects them: BOS in front for a decoder whose
``cfg.default_prepend_bos`` is set, ``[CLS] ... [SEP]`` for a BERT encoder. They belong to no word.

**Words that cannot be aligned are skipped and counted, never dropped silently**: a word none of whose tokens is
its own (every character it has went to a neighbour's token), a word read as the tokenizer's unknown token
(word-level vocabularies, BERT's ``[UNK]``), and words past the model's context length (``n_ctx``; the tokens
there are cut). :attr:`Alignment.skipped` counts them by reason, and analyses report it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from circuitlab.core import shorten
from circuitlab.engine.collect import is_encoder
from circuitlab.errors import InputError
from circuitlab.tasks.sentences import Sentence

#: how a word's row pools its tokens (the choices of ``pool``; :func:`circuitlab.engine.collect.check_pool`)
POOLS = {"mean": "the mean of a word's tokens, as Hewitt & Manning did", "first": "its first token"}

#: the reasons a word can be skipped, as :attr:`Alignment.skipped` counts them
SKIP_REASONS = {
    "no_token": "all of its characters went to a neighbouring word's tokens",
    "unknown": "the tokenizer reads it as its unknown token",
    "beyond_context": "it lies past the model's context length (n_ctx)",
}


@dataclass
class Alignment:
    """Token ids per sentence and, per word, the token positions it covers (``()`` for a skipped word).

    Attributes:
        tokens: one list of token ids per sentence, special tokens included, at most ``n_ctx`` long.
        pieces: per sentence, per word, the positions in ``tokens`` holding the word (empty: skipped).
        skipped: how many words were skipped, by reason (see :data:`SKIP_REASONS`).
        examples: a few skipped words per reason, ``(sentence index, word index, word)``, for messages.
    """

    tokens: list[list[int]]
    pieces: list[list[tuple[int, ...]]]
    skipped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[tuple[int, int, str]]] = field(default_factory=dict)

    @property
    def n_words(self) -> int:
        return sum(len(p) for p in self.pieces)

    @property
    def n_skipped(self) -> int:
        return sum(self.skipped.values())

    def spans(self, pool: str = "mean") -> list[list[tuple[int, ...]]]:
        """Per sentence, the token positions each aligned word's row pools, for the collector
        (:func:`circuitlab.engine.collect.collect_rows`): all of the word's tokens (``"mean"``) or its first
        (``"first"``); a skipped word has no span (and no row)."""
        return [[p if pool == "mean" else p[:1] for p in pieces if p] for pieces in self.pieces]

    def summary(self) -> str:
        """``"1,234 words, 3 skipped (2 unknown: 'Mowgli', ...; 1 no_token: ...)"``."""
        if not self.n_skipped:
            return f"{self.n_words:,} words, none skipped"
        parts = []
        for reason, count in self.skipped.items():
            shown = ", ".join(repr(w) for _, _, w in self.examples.get(reason, [])[:3])
            parts.append(f"{count} {reason} ({SKIP_REASONS[reason]}; e.g. {shown})")
        return f"{self.n_words:,} words, {self.n_skipped} skipped: " + "; ".join(parts)


def _tokenizer(model: Any):
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        raise InputError("the model has no tokenizer, so its tokens cannot be matched to words. Give a model with a "
                         "tokenizer (HookedTransformer.set_tokenizer), e.g. zoo/toy-lm.")
    if not getattr(tok, "is_fast", False):
        raise InputError(f"the model's tokenizer ({type(tok).__name__}) is not a fast (Rust) tokenizer, so it "
                         "cannot report character offsets. Load the model with a fast tokenizer "
                         "(AutoTokenizer.from_pretrained(..., use_fast=True)).")
    return tok


def _specials(model: Any, tok) -> tuple[list[int], list[int]]:
    """Token ids the model expects before and after a sentence."""
    if is_encoder(model):
        cls, sep = tok.cls_token_id, tok.sep_token_id
        return ([cls] if cls is not None else []), ([sep] if sep is not None else [])
    if getattr(model.cfg, "default_prepend_bos", True) and tok.bos_token_id is not None:
        return [tok.bos_token_id], []
    return [], []


def check_sentences(sentences: Any) -> list[Sentence]:
    """``sentences`` as a list of :class:`Sentence`, or an :class:`InputError` saying what to give."""
    if isinstance(sentences, (Sentence, str, bytes)) or not isinstance(sentences, Sequence) or not sentences:
        raise InputError(f"sentences={shorten(sentences, 60)} must be a non-empty list of Sentence (from read_conllu, "
                         "label_text, template_sentences or default_sentences).")
    for i, s in enumerate(sentences):
        if not isinstance(s, Sentence):
            raise InputError(f"sentences[{i}] is a {type(s).__name__}, not a Sentence: label text with label_text "
                             "or read a CoNLL-U file with read_conllu.")
    return list(sentences)


def align(model: Any, sentences: Sequence[Sentence]) -> Alignment:
    """The token ids of each sentence for ``model`` and the token positions of each word (see the module notes).

    ``model`` is a loaded model (``HookedTransformer``, ``HookedEncoder``, ``TransformerBridge``) with a fast
    tokenizer. Skipped words are counted in the result's ``skipped``; nothing is raised for them.
    """
    sentences = check_sentences(sentences)
    tok = _tokenizer(model)
    before, after = _specials(model, tok)
    n_ctx = int(model.cfg.n_ctx)
    unk = getattr(tok, "unk_token_id", None)
    unk_text = getattr(tok, "unk_token", None)
    texts = [s.text for s in sentences]
    enc = tok(texts, add_special_tokens=False, return_offsets_mapping=True)
    skipped: Counter = Counter()
    examples: dict[str, list] = {}

    def skip(reason: str, si: int, wi: int, word: str) -> None:
        skipped[reason] += 1
        if len(examples.setdefault(reason, [])) < 5:
            examples[reason].append((si, wi, word))

    all_tokens, all_pieces = [], []
    for si, (s, text) in enumerate(zip(sentences, texts)):
        ids, offsets = list(enc["input_ids"][si]), list(enc["offset_mapping"][si])
        spans = s.word_spans()
        owner: list[Optional[int]] = []
        w = 0
        for a, b in offsets:
            while a < b and text[a].isspace():  # a leading space a token carries is not part of a word
                a += 1
            best, best_overlap = None, 0
            while w < len(spans) and spans[w][1] <= a:  # words that end before this token starts
                w += 1
            k = w
            while k < len(spans) and spans[k][0] < b:
                overlap = min(b, spans[k][1]) - max(a, spans[k][0])
                if overlap > best_overlap:
                    best, best_overlap = k, overlap
                k += 1
            owner.append(best)
        room = n_ctx - len(before) - len(after)
        tokens = before + ids[:room] + after
        pieces: list[list[int]] = [[] for _ in s.words]
        for t, o in enumerate(owner[:room]):
            if o is not None:
                pieces[o].append(t + len(before))
        beyond = {o for o in owner[room:] if o is not None}
        out = []
        for wi, (word, p) in enumerate(zip(s.words, pieces)):
            if wi in beyond:  # partly or wholly cut off by the context length
                skip("beyond_context", si, wi, word)
                out.append(())
            elif not p:
                skip("no_token", si, wi, word)
                out.append(())
            elif unk is not None and any(tokens[t] == unk for t in p) and word != unk_text:
                skip("unknown", si, wi, word)
                out.append(())
            else:
                out.append(tuple(p))
        all_tokens.append(tokens)
        all_pieces.append(out)
    return Alignment(all_tokens, all_pieces, dict(skipped), examples)
