"""What every analysis needs from a model, written once: the model itself, its inputs, its indices, its readout.

Each analysis module imports its plumbing from here, so that every public function accepts the same things and
rejects bad input with the same words:

- **the model**: :func:`as_model` takes a ``HookedTransformer``, a ``TransformerBridge`` in compatibility mode, or
  anything :func:`circuitlab.load_model` understands (``"zoo/attn-only-2l"``, a saved directory, a pretrained name);
- **prompts and answers**: :func:`to_tokens` (text or ids -> ``[batch, pos]``), :func:`answer_ids` (one rule:
  one answer for every prompt, or one per prompt), token labels (:func:`str_tokens`, :func:`position_labels`);
- **indices**, one rule for the package: an integer index may count from the end, as in Python and
  TransformerLens (``layer=-1`` is the last layer, ``pos=-1`` the last position), and anything outside
  ``[-n, n)`` is a :class:`~circuitlab.errors.InputError` naming the argument and the valid range
  (:func:`check_index`, :func:`check_layer`, :func:`check_layers`, :func:`check_pos`, :func:`check_neurons`);
  heads have one grammar, ``(layer, head)``, ``"L1H2"`` or ``"1.2"`` (:func:`parse_head`, :func:`check_heads`);
- **the readout**: the final norm and unembedding exactly as the model's forward applies them, soft cap
  included (:func:`readout`), and the direction a residual vector reaches a logit along (:func:`readout_directions`);
- **names**: :func:`metric_name`, :func:`model_name`, :func:`head_label`;
- **progress**: every long loop takes ``progress: bool`` and draws its bar with :func:`progress_bar`.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import io
import math
import re
import sys
import weakref
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

import torch
from jaxtyping import Bool, Float, Int, Shaped
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from circuitlab.errors import CircuitlabError, InputError, NonFiniteError

Prompts = Union[str, Sequence[str], Int[Tensor, " pos"], Int[Tensor, "batch pos"], Sequence[int],
                Sequence[Sequence[int]]]
Answer = Union[str, int, Sequence[Union[str, int]], Int[Tensor, "*batch"]]
ModelLike = Union[HookedTransformer, str, Any]  # a model, a TransformerBridge, or a name/path for load_model
Head = tuple[int, int]


# ---------------------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------------------

def as_model(model: ModelLike) -> HookedTransformer:
    """A loaded model from a model, a compatibility-mode bridge, a zoo name, a directory or a pretrained name.

    Its weights are checked to be finite (see :func:`check_weights_finite`): TransformerLens replaces NaN
    attention patterns by zeros, so a NaN weight can otherwise give finite, wrong numbers.
    """
    if not isinstance(model, HookedTransformer):
        from circuitlab.models import load_model

        model = load_model(model)
    check_weights_finite(model)
    return model


def weight_state(model: Any) -> tuple:
    """A cheap key for the current state of ``model``'s weights, for memoising what is computed from them: per
    parameter its name, identity, ``_version`` (PyTorch counts in-place changes), device and the address of its
    storage (which ``p.data = ...`` changes while leaving the parameter and its version counter as they were). It
    changes whenever a parameter is replaced, its data replaced, modified in place or moved; equal keys mean the
    weights were not touched in between (it says nothing about two different models: for that, compare
    :func:`circuitlab.models.identity.weight_fingerprint`). Not seen: writes into ``p.data`` in place
    (``p.data.mul_(2)``, ``p.data[:, [0, 1]] = p.data[:, [1, 0]]``), which PyTorch counts in no version counter;
    change a weight under ``torch.no_grad()`` (``p.mul_(2)``) or replace it instead. What outlives a weight state
    (caches on disk, replicas) hashes every byte again (``weight_fingerprint(model, recheck=True)``)."""
    return tuple((name, id(p), p._version, p.device, p.data_ptr()) for name, p in model.named_parameters())


_FINITE_WEIGHTS: "weakref.WeakKeyDictionary[Any, tuple]" = weakref.WeakKeyDictionary()


def check_weights_finite(model: HookedTransformer) -> None:
    """Raise :class:`~circuitlab.errors.NonFiniteError` naming the first parameter that holds NaN or inf, and a
    :class:`~circuitlab.errors.CircuitlabError` when the parameters live on more than one device.

    Checked once per state of the weights: the check is skipped while no parameter has been replaced or
    modified in place since it last passed (PyTorch counts in-place changes in each tensor's ``_version``).
    """
    params = list(model.named_parameters())
    state = weight_state(model)
    try:
        if _FINITE_WEIGHTS.get(model) == state:
            return
    except TypeError:  # not weak-referenceable: check every time
        pass
    devices = sorted({str(p.device) for _, p in params})
    if len(devices) > 1:
        first = {d: next(name for name, p in params if str(p.device) == d) for d in devices}
        raise CircuitlabError(
            f"the model's parameters live on {len(devices)} devices "
            f"({', '.join(f'{d}: {n}...' for d, n in first.items())}). "
            "circuitlab's engines run a model on one device: move it there with model.to(device) (see the README's "
            "'Scaling up' for models larger than one device).")
    with torch.no_grad():
        bad = [name for name, p in params if p.is_floating_point() and not bool(torch.isfinite(p).all())]
    if bad:
        more = (f" (and {len(bad) - 1} more: {', '.join(bad[1:4])}{'...' if len(bad) > 4 else ''})"
                if len(bad) > 1 else "")
        raise NonFiniteError(
            f"the model's weights hold NaN or infinite values, first in {bad[0]}{more}. Every analysis would "
            "report numbers computed from them (TransformerLens even turns NaN attention into zeros, so some "
            "would look finite). Reload or fix the weights."
        )
    try:
        _FINITE_WEIGHTS[model] = state
    except TypeError:
        pass


def model_name(model: HookedTransformer) -> str:
    """The name results record: ``cfg.model_name`` (``""`` when unset)."""
    return str(getattr(model.cfg, "model_name", "") or "")


# ---------------------------------------------------------------------------------------------------------
# Prompts, answers, token labels
# ---------------------------------------------------------------------------------------------------------

def _need_tokenizer(model: HookedTransformer, what: str) -> None:
    if model.tokenizer is None:
        raise InputError(
            f"{what} was given as text, but this model has no tokenizer. Pass token ids instead "
            "(a LongTensor [batch, pos] for prompts, ints for answers)."
        )


def to_tokens(model: HookedTransformer, prompts: Prompts, prepend_bos: bool | None = None) -> Int[Tensor, "batch pos"]:
    """Prompts as a ``[batch, pos]`` LongTensor on the model's device.

    Text is tokenized with the model's tokenizer (BOS prepended by the model's default unless
    ``prepend_bos`` says otherwise); several texts must tokenize to the same length (patching and attribution
    compare positions across prompts, so silent padding would misalign them). Token ids are used as given.
    """
    device = model.cfg.device
    if isinstance(prompts, Tensor):
        toks = prompts
    elif isinstance(prompts, str) or (isinstance(prompts, Sequence) and prompts and isinstance(prompts[0], str)):
        _need_tokenizer(model, "the prompt")
        texts = [prompts] if isinstance(prompts, str) else list(prompts)
        for i, t in enumerate(texts):
            what = "the prompt" if isinstance(prompts, str) else f"prompt {i}"
            if not isinstance(t, str):
                raise InputError(f"{what} is a {type(t).__name__}; a list of prompts must hold only text.")
            if not t:
                raise InputError(
                    f"{what} is empty (''): the model would see its start token alone, and the analysis would "
                    "measure nothing about your text. Give a non-empty prompt."
                )
            check_known_words(model, t, what)
        # truncate=False: TransformerLens would cut text at n_ctx silently; the length check below says so instead
        rows = [model.to_tokens(t, prepend_bos=prepend_bos, truncate=False)[0] for t in texts]
        for i, (t, r) in enumerate(zip(texts, rows)):
            if len(r) <= 1:
                check_text_tokens(model, t, "the prompt" if isinstance(prompts, str) else f"prompt {i}")
        lengths = {len(r) for r in rows}
        if len(lengths) > 1:
            detail = "; ".join(f"{t!r}: {len(r)} tokens" for t, r in zip(texts, rows))
            raise InputError(
                f"prompts tokenize to different lengths ({detail}). Rephrase them so every prompt has the same "
                "number of tokens (check with model.to_str_tokens), or pass a token tensor."
            )
        toks = torch.stack(rows)
    elif isinstance(prompts, Sequence) and len(prompts) > 0:
        toks = torch.tensor(prompts, dtype=torch.long)
    else:
        raise InputError(f"prompts must be text, a list of texts, or token ids; got {type(prompts).__name__}.")
    if toks.ndim == 1:
        toks = toks[None, :]
    if toks.ndim != 2:
        raise InputError(f"token ids must have shape [batch, pos] (or [pos]); got shape {tuple(toks.shape)}.")
    if toks.shape[0] == 0 or toks.shape[1] == 0:
        raise InputError(f"the prompts are empty: token ids of shape {tuple(toks.shape)}. Give at least one token "
                         "in at least one prompt.")
    if toks.dtype not in (torch.long, torch.int, torch.int32, torch.int64):
        raise InputError(f"token ids must be integers; got dtype {toks.dtype}.")
    if toks.numel() and (int(toks.min()) < 0 or int(toks.max()) >= model.cfg.d_vocab):
        raise InputError(
            f"token ids must lie in [0, {model.cfg.d_vocab}) for this model; got range "
            f"[{int(toks.min())}, {int(toks.max())}]."
        )
    if toks.shape[1] > model.cfg.n_ctx:
        raise InputError(
            f"prompts are {toks.shape[1]} tokens long but the model's context is n_ctx={model.cfg.n_ctx} "
            "tokens (nothing was truncated). Shorten them to at most n_ctx tokens."
        )
    return toks.long().to(device)


def answer_id(model: Optional[HookedTransformer], answer: Union[str, int, Int[Tensor, "..."]],
              what: str = "answer") -> int:
    """One answer as a single token id. A string must be exactly one token (leading space included)."""
    if isinstance(answer, Tensor):
        if answer.numel() != 1:
            raise InputError(f"an {what} tensor must hold one token id, got shape {tuple(answer.shape)}.")
        answer = int(answer.item())
    if isinstance(answer, bool):
        raise InputError(f"the {what} must be a token id or a string, not a bool.")
    if isinstance(answer, int):
        if model is not None and not 0 <= answer < model.cfg.d_vocab_out:
            raise InputError(f"{what} token id {answer} is outside the vocabulary [0, {model.cfg.d_vocab_out}).")
        return answer
    if isinstance(answer, str):
        if model is None:
            raise InputError(
                f"the {what} {shorten(answer)} is text; it needs a model's tokenizer (pass model=..., or give token "
                "ids)."
            )
        _need_tokenizer(model, f"the {what} {answer!r}")
        if not answer:
            raise InputError(f"the {what} is empty (''); give one token, e.g. ' Paris' (mind the leading space).")
        check_known_words(model, answer, f"the {what}")
        ids = model.to_tokens(answer, prepend_bos=False)[0].tolist()
        if len(ids) != 1:
            pieces = str_tokens(model, torch.tensor(ids))  # (TransformerLens's to_str_tokens fails on Gemma)
            raise InputError(
                f"{what} {shorten(answer)} is {len(ids)} tokens ({shorten(pieces)}), but an {what} must be a single "
                "token. Use its first token, a different word, or check the leading space (' Paris' vs 'Paris')."
            )
        return ids[0]
    raise InputError(f"an {what} must be a string or a token id; got {type(answer).__name__}.")


def answer_ids(model: Optional[HookedTransformer], answers: Answer, batch: int,
               what: str = "answer") -> Int[Tensor, " batch"]:
    """Answers for a batch of prompts, by one rule: one answer shared by every prompt, or one per prompt.

    A single answer is a string, an int, a one-element list or a one-element tensor; ``batch`` answers give one
    per prompt; any other count is an error. ``model`` may be ``None`` when every answer is a token id (then
    ids are not checked against a vocabulary). Returns ids on the model's device (CPU without a model).
    """
    if isinstance(answers, Tensor):
        items = answers.detach().flatten().tolist()
    elif isinstance(answers, (list, tuple)):
        items = list(answers)
    else:
        items = [answers]
    if len(items) == 1:
        items = items * batch
    if len(items) != batch:
        raise InputError(f"got {len(items)} {what}s for {batch} prompts; give one {what}, or one per prompt.")
    device = model.cfg.device if model is not None else "cpu"
    return torch.tensor([answer_id(model, a, what) for a in items], dtype=torch.long, device=device)


def check_known_words(model: HookedTransformer, text: str, what: str = "the prompt") -> None:
    """Raise if the tokenizer reads part of ``text`` as its unknown token (``unk_token``) where ``text`` does not
    spell that token itself: word-level tokenizers (the attention-only zoo models') map every word outside their
    vocabulary to it, and an analysis would then quietly measure the unknown token instead of the word."""
    tok = model.tokenizer
    unk_id, unk = getattr(tok, "unk_token_id", None), getattr(tok, "unk_token", None)
    if unk_id is None or not text:
        return
    ids = tok.encode(text, add_special_tokens=False)
    if ids.count(unk_id) <= (text.count(unk) if unk else 0):
        return
    words = [w for w in text.split() if unk_id in tok.encode(w, add_special_tokens=False) and w != unk]
    shown = ", ".join(repr(w) for w in dict.fromkeys(words)) or repr(text)
    examples = ", ".join(repr(t) for t in tok.convert_ids_to_tokens(list(range(1, min(6, len(tok))))))
    raise InputError(
        f"{what} {shorten(text)} has words this model's tokenizer does not know ({shown}): it would read each as its "
        f"unknown token {shorten(unk)}, and the analysis would measure that token instead. Use words from its "
        f"vocabulary (it has {len(tok)} tokens, e.g. {examples}), or pass token ids."
    )


def check_text_tokens(model: HookedTransformer, text: str, what: str = "the prompt") -> None:
    """Raise if ``text`` tokenizes to nothing (no token beyond the start token the model would prepend): a
    whitespace-only text on a word-level tokenizer, say. The analysis would then run on the start token alone
    and measure nothing about the text; a non-empty string is not enough, the rule applies after tokenisation."""
    if len(model.to_tokens(text, prepend_bos=False, truncate=False)[0]) == 0:
        raise InputError(
            f"{what} {shorten(text, 60)} tokenizes to no tokens with this model's tokenizer (only the start token "
            "would remain), so the analysis would measure nothing about the text. Give text with at least one "
            "token (check with model.to_str_tokens), or pass token ids."
        )


def check_distinct_answers(correct: Int[Tensor, " batch"], wrong: Int[Tensor, " batch"],
                           model: Optional[HookedTransformer] = None, what: str = "answer") -> None:
    """Raise if a prompt's correct and wrong answers are the same token: their difference is 0 by construction."""
    same = (correct == wrong).nonzero().flatten().tolist()
    if same:
        i = same[0]
        label = token_label(model, int(correct[i])) if model is not None else f"#{int(correct[i])}"
        where = f" for prompt {i}" if correct.numel() > 1 else ""
        raise InputError(
            f"the {what} and wrong tokens are the same ({shorten(label)}, id {int(correct[i])}){where}: their logit "
            "difference is 0 by construction. Pick a competing token for wrong, or leave wrong out to read the "
            f"{what}'s own logit."
        )


def str_tokens(model: HookedTransformer, tokens: Int[Tensor, " pos"]) -> list[str]:
    """Readable labels for a row of token ids: the tokenizer's strings, or ``"#17"``-style ids without one."""
    ids = torch.as_tensor(tokens).reshape(-1).tolist()
    if model.tokenizer is None:
        return [f"#{i}" for i in ids]
    return [str(s) for s in model.to_str_tokens(torch.tensor(ids), prepend_bos=False)]


def token_label(model: HookedTransformer, token_id: int) -> str:
    """One token id as its string (``"#17"`` without a tokenizer)."""
    return str_tokens(model, torch.tensor([int(token_id)]))[0]


def decode(model: HookedTransformer, ids: Sequence[int]) -> str:
    """Token ids as readable text: the tokenizer's decoding, or the ``#id`` labels joined by spaces."""
    ids = [int(i) for i in ids]
    if model.tokenizer is None:
        return " ".join(f"#{i}" for i in ids)
    return model.tokenizer.decode(ids)


def position_labels(model: HookedTransformer, tokens: Int[Tensor, "batch pos"]) -> list[str]:
    """Labels for the ``pos`` axis: ``"3:' Mary'"``-style, from the first prompt (positions align across prompts)."""
    return [f"{i}:{s}" for i, s in enumerate(str_tokens(model, tokens[0]))]


# ---------------------------------------------------------------------------------------------------------
# Indices: one rule (negative counts from the end), one message
# ---------------------------------------------------------------------------------------------------------

def check_index(value: Any, size: int, what: str, unit: str) -> int:
    """``value`` as an index into ``size`` things; negative counts from the end (``-1`` is the last).

    ``what`` names the argument (``"layer"``), ``unit`` says what there are ``size`` of (``"layers"``), for the
    message: ``layer=7 is out of range: this model has 2 layers (0 to 1, or -2 to -1 from the end).``
    """
    if isinstance(value, Tensor) and value.numel() == 1:
        value = int(value.item())
    if isinstance(value, bool) or not isinstance(value, int) or not -size <= value < size:
        valid = f"0 to {size - 1}, or -{size} to -1 from the end" if size else "none"
        raise InputError(f"{what}={shorten(value)} is out of range: this model has {size} {unit} ({valid}).")
    return value % size


def check_layer(model: HookedTransformer, layer: Any, what: str = "layer") -> int:
    """A layer index of ``model`` (non-negative)."""
    return check_index(layer, model.cfg.n_layers, what, "layers")


def check_layers(model: HookedTransformer, layers: Optional[Union[int, Sequence[int]]],
                 what: str = "layers") -> list[int]:
    """Several layers: all of them for ``None``; each checked, none repeated."""
    if layers is None:
        return list(range(model.cfg.n_layers))
    items = [layers] if isinstance(layers, int) else list(layers)
    out = [check_layer(model, layer, what="layer") for layer in items]
    if len(set(out)) != len(out):
        raise InputError(f"{what}={items} repeats a layer.")
    if not out:
        raise InputError(f"{what} is empty; give at least one layer, or None for all.")
    return out


def check_pos(pos: Any, seq_len: int, what: str = "pos") -> int:
    """A position in prompts of ``seq_len`` tokens (non-negative)."""
    if isinstance(pos, bool) or not isinstance(pos, int):
        raise InputError(f"{what} must be an int position (negative counts from the end); got {shorten(pos)}.")
    if not -seq_len <= pos < seq_len:
        raise InputError(f"{what}={pos} is outside prompts of {seq_len} tokens; use -{seq_len} <= {what} < {seq_len}.")
    return pos % seq_len


def shorten(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to about ``limit`` characters (``...`` and the length said), for quoting a user's value in
    a message: a megabyte-long field must not make a megabyte-long error."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def read_text_file(path: Union[str, Path], what: str) -> str:
    """The text of a UTF-8 file (a byte-order mark at its start is accepted and dropped), for every reader of user
    files. A file in another encoding is an :class:`~circuitlab.errors.InputError` naming ``what`` (e.g.
    ``"CoNLL-U file"``), the file, the line and column of the first byte that is not UTF-8, and the fix; so is a
    path that is missing, a directory or unreadable."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError(f"{what} {shorten(str(path), 300)}: no such file; give the path of a UTF-8 text "
                         "file.") from None
    except IsADirectoryError:
        raise InputError(f"{what} {shorten(str(path), 300)} is a directory; give the path of a UTF-8 text "
                         "file.") from None
    except OSError as exc:
        raise InputError(f"{what} {shorten(str(path), 300)}: cannot read it ({exc.strerror}).") from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise InputError(f"{what} {shorten(str(path), 300)} is not UTF-8: line {line}, column {column} holds byte "
                         f"0x{data[err.start]:02x} ({err.reason}). Save it as UTF-8 (e.g. `iconv -f latin1 -t utf-8 "
                         f"FILE`), or give the text itself.") from None


def read_json_file(path: Union[str, Path], what: str) -> Any:
    """The JSON value of a UTF-8 file (:func:`read_text_file`'s rules); a file that is not valid JSON (a hand edit
    gone wrong, a file cut short) is an :class:`~circuitlab.errors.InputError` naming ``what``, the file, the line
    and column and what the parser expected, not a raw ``JSONDecodeError``."""
    import json

    text = read_text_file(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"{what} {shorten(str(path), 300)} is not valid JSON: line {err.lineno}, column {err.colno}: "
                         f"{err.msg}. Fix the file by hand, or write it again.") from None


def check_count(value: Any, what: str, minimum: int = 1) -> int:
    """A count argument (``k``, ``n_seqs``, ...): an int of at least ``minimum``."""
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_floating_point():
        value = int(value.item())
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{what} must be an integer >= {minimum}; got {shorten(value, 40)}.")
    return value


def check_count_within(value: Any, what: str, bound: int, of: str, minimum: int = 1) -> int:
    """A count with a natural bound (``k`` top tokens of a vocabulary, ``n_tokens`` of ``d_vocab``, ``k`` of the
    ``d_mlp`` sub-updates): :func:`check_count`, and at most ``bound``, where ``of`` says what there are ``bound``
    of (``"tokens in the vocabulary"``). More than there are is an error, not a silent cut to ``bound``."""
    value = check_count(value, what, minimum)
    if value > bound:
        raise InputError(f"{what}={shorten(value, 30)} is more than the {bound:,} {of}; use {what} <= {bound}.")
    return value


#: seeds are integers in [0, SEED_LIMIT): what every random generator the package uses accepts (torch's and NumPy's)
SEED_LIMIT = 2**63


def check_seed(value: Any, what: str = "seed") -> int:
    """A seed for a random generator: an ``int`` in ``[0, 2**63)`` (not a ``bool``, a float or a string). One rule
    for every seed argument, library and command line, so a seed beyond what torch or NumPy accept, or of the
    wrong type, is an :class:`~circuitlab.errors.InputError` naming ``what``, never their raw error."""
    if isinstance(value, Tensor) and value.numel() == 1 and not value.is_floating_point():
        value = int(value.item())
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < SEED_LIMIT:
        raise InputError(f"{what} must be an integer in [0, 2**63); got {shorten(value, 40)}.")
    return value


def check_seeds(seeds: Any, what: str = "seeds") -> list[int]:
    """Several seeds (e.g. one probe per seed): one seed or a list of distinct seeds, each by :func:`check_seed`
    (a string, a float or a repeated seed is an :class:`~circuitlab.errors.InputError` naming ``what``)."""
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, (int, Sequence, Tensor)):
        raise InputError(f"{what} must be a seed or a list of distinct seeds (integers in [0, 2**63)); got "
                         f"{shorten(seeds, 40)}.")
    one = isinstance(seeds, int) or (isinstance(seeds, Tensor) and seeds.ndim == 0)
    seeds = [check_seed(s, what) for s in ([seeds] if one else list(seeds))]
    if not seeds or len(set(seeds)) != len(seeds):
        raise InputError(f"{what}={shorten(seeds, 60)}: give one or more distinct integer seeds.")
    return seeds


def check_texts(value: Any, what: str, *, item: str = "text", allow_empty: bool = False) -> list[str]:
    """A list of strings. A bare string is refused (iterating over it would read it letter by letter) with the
    fix, ``[value]``; so is anything that is not a sequence of ``str``, and an empty list unless ``allow_empty``."""
    if isinstance(value, str):
        raise InputError(f"{what} must be a list of {item}s; got the single string {shorten(value, 60)}, which "
                         f"would be read letter by letter. Wrap it in a list: [{shorten(value, 60)}].")
    if isinstance(value, (bytes, dict)) or not isinstance(value, (Sequence, Iterable)) or isinstance(value, Tensor):
        raise InputError(f"{what} must be a list of {item}s; got {type(value).__name__}.")
    items = list(value)
    for i, v in enumerate(items):
        if not isinstance(v, str):
            raise InputError(f"{what}[{i}] is {shorten(v, 40)} ({type(v).__name__}); {what} must hold {item}s only.")
    if not items and not allow_empty:
        raise InputError(f"{what} is empty; give at least one {item}.")
    return items


def check_distinct(items: Sequence[Any], what: str, *, why: str = "") -> None:
    """Refuse repeated items where a method assumes distinct ones (a control shuffles them, a split holds them
    out): the :class:`~circuitlab.errors.InputError` names the first repeat and where it occurs, and ``why``."""
    seen: dict[Any, int] = {}
    for i, v in enumerate(items):
        key = v if _hashable(v) else repr(v)
        if key in seen:
            reason = f" ({why})" if why else ""
            raise InputError(f"{what} repeats {shorten(v, 60)} (items {seen[key]} and {i}){reason}. Give each item "
                             "once (e.g. list(dict.fromkeys(items))).")
        seen[key] = i


def _hashable(v: Any) -> bool:
    try:
        hash(v)
    except TypeError:
        return False
    return True


def memory_available() -> int:
    """Bytes this process may still allocate, roughly: the smaller of the system's available memory
    (``MemAvailable`` on Linux, else the physical memory) and, where an address-space limit (``ulimit -v``) is
    set, what is left of it beyond what the process has mapped already."""
    import os

    limit = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    limit = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    if limit is None:
        try:
            limit = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            limit = 2**62
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft not in (resource.RLIM_INFINITY, -1) and soft > 0:
            # the limit is on the whole address space: what this process has mapped already does not count as free
            used = 0
            try:
                with open("/proc/self/statm") as f:
                    used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
            except (OSError, ValueError, IndexError):
                pass
            limit = min(limit, max(0, soft - used))
    except (ImportError, ValueError, OSError):
        pass
    return int(limit)


def format_bytes(n: float) -> str:
    """``1.5 GiB``, ``12 MiB``, ``800 B``."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def check_affordable(nbytes: float, what: str, fix: str) -> None:
    """Refuse up front an allocation that cannot be cut into ``max_memory`` chunks and would not fit: an
    :class:`~circuitlab.errors.InputError` saying ``what`` asks for it, how much it needs, how much there is, and
    ``fix`` (e.g. ``"use fewer samples"``). Sizes that stream never call this."""
    available = memory_available()
    if nbytes > available:
        raise InputError(f"{what} would need about {format_bytes(nbytes)} at once, and this process has about "
                         f"{format_bytes(available)}; {fix}.")


def _bound_words(low: Optional[float], high: Optional[float], low_open: bool, high_open: bool,
                 finite: bool) -> str:
    """``"a positive number"``, ``"a finite number >= 0"``, ``"a number in (0, 1)"``: what the bounds ask for."""
    if low is not None and high is not None:
        return f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    # one bound or none: infinity on the open side is excluded only by ``finite``
    kind = "a finite number" if finite else "a number"
    if low is not None:
        if low == 0 and low_open:
            return "a finite positive number" if finite else "a positive number"
        return f"{kind} {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{kind} {'<' if high_open else '<='} {high:g}"
    return kind


def check_number(value: Any, name: str, low: Optional[float] = None, high: Optional[float] = None,
                 finite: bool = True, *, low_open: bool = False, high_open: bool = False,
                 what: Optional[str] = None, message: Optional[str] = None) -> float:
    """A real-number argument (a learning rate, a penalty, a fraction, a tolerance, a noise scale), as a ``float``.

    One rule for the package: the value is an ``int`` or a ``float`` (not a ``bool``, a string, a tensor or
    ``None``) and never NaN; it is at least ``low`` (more than ``low`` with ``low_open``) and at most ``high``
    (less than ``high`` with ``high_open``) where they are given; and with ``finite`` (the default) it is not
    ``+inf`` or ``-inf`` even where the bounds would allow it.

    **What infinity means**, decided once per kind of argument:

    - a scale, a rate or a penalty (a noise's standard deviation, ``sigma``, a learning rate, an ``l1`` / ``l2``
      penalty, a temperature, a timeout or a back-off in seconds, a number of CPUs): **finite**. Infinity there is
      not a setting but a mistake (an infinite penalty or step gives NaN or a zero model), so it is an
      :class:`~circuitlab.errors.InputError` like any other bad value;
    - a threshold that selects (ACDC's tau, a score threshold, a fraction in ``(0, 1)``): **finite** (the bounds
      exclude it for fractions; an infinite threshold selects nothing, which is never what was meant);
    - ``max_memory``: **finite** (:func:`check_max_memory`): it is a number of bytes that batches are cut to, and a
      large finite number already means "one batch";
    - an upper bound where infinity is documented as **"no bound"** (a tolerance that never warns,
      ``tolerance=math.inf``): ``finite=False``, and the site's docstring says so.

    The message names the argument and what it must be: ``"{name} must be {what}; got {value!r}."``, where
    ``what`` defaults to the bounds in words (``"a positive number"``, ``"a finite number >= 0"``, ``"a number in
    [0, 1]"``); give ``what`` to say what the number is (``"a positive number of bytes (e.g. 512 * 2**20)"``).
    ``message`` replaces the whole text, for sites whose wording differs (``f"lr={lr!r}: give a positive learning
    rate, e.g. 1e-3."``).

    >>> check_number(1e-3, "lr", low=0, low_open=True)
    0.001
    >>> check_number(float("inf"), "tolerance", low=0, finite=False)
    inf
    """
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        # an int is always finite (and may be too large for float(); compare it as it is)
        infinite = isinstance(value, float) and math.isinf(value)
        ok = (value == value  # not NaN
              and not (finite and infinite)
              and (low is None or (value > low if low_open else value >= low))
              and (high is None or (value < high if high_open else value <= high)))
    if ok:
        try:
            return float(value)
        except OverflowError:  # an int beyond float's range
            pass
    if message is not None:
        raise InputError(message)
    words = what if what is not None else _bound_words(low, high, low_open, high_open, finite)
    raise InputError(f"{name} must be {words}; got {shorten(value)}.")


def check_mlp_layer(model: HookedTransformer, layer: Any) -> int:
    """A layer index of a model that has one dense MLP per layer."""
    cfg = model.cfg
    if cfg.attn_only:
        raise CircuitlabError(
            f"model {shorten(cfg.model_name)} is attention-only (cfg.attn_only=True): it has no MLP layers. Use a "
            "model "
            "with MLPs (e.g. zoo/toy-lm, or circuitlab.testing.random_model('gpt2') for a random one), or analyse "
            "its attention heads with circuitlab.attribution."
        )
    if getattr(cfg, "num_experts", None):
        raise CircuitlabError(
            f"model {shorten(cfg.model_name)} has mixture-of-experts MLPs; this analysis needs one dense MLP per layer."
        )
    return check_layer(model, layer)


def check_neurons(model: HookedTransformer, neurons: Union[int, Sequence[int], None]) -> list[int]:
    """MLP neuron indices (all ``d_mlp`` of them for ``None``)."""
    d_mlp = model.cfg.d_mlp
    if neurons is None:
        return list(range(d_mlp))
    if isinstance(neurons, Tensor):
        neurons = neurons.flatten().tolist()
    if isinstance(neurons, (str, bytes)) or not isinstance(neurons, (int, Iterable)):
        raise InputError(f"neuron={shorten(neurons)}: give a neuron index (an int) or a list of them.")
    items = [neurons] if isinstance(neurons, int) else list(neurons)
    return [check_index(n, d_mlp, "neuron", "MLP neurons per layer") for n in items]


_HEAD_RE = re.compile(r"\s*L?(-?\d+)\s*(?:\.?H|[.:])\s*(-?\d+)\s*", flags=re.I)


def parse_head(model: HookedTransformer, head: Any, what: str = "head", *, n_heads: Optional[int] = None,
               forms: str = "(layer, head), 'L1H2' or '1.2'", given: Any = None) -> Head:
    """One head as ``(layer, head)``, from ``(1, 2)``, ``"L1H2"``, ``"1.2"`` or ``"L1.H2"``; checked against the model.

    ``n_heads`` is how many heads the index may pick from (default ``cfg.n_heads``; e.g. the key/value heads of
    grouped-query attention). A caller that accepts more spellings than a head (path patching's MLP senders, its
    ``".q"`` receivers) names them in ``forms`` and passes the user's whole argument as ``given``, so that an
    unreadable one is reported as the user wrote it.
    """
    shown = head if given is None else given
    if isinstance(head, str):
        m = _HEAD_RE.fullmatch(head)
        head = (int(m.group(1)), int(m.group(2))) if m else None
    elif isinstance(head, list):
        head = tuple(head)
    if not (isinstance(head, tuple) and len(head) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) for x in head)):
        raise InputError(f"cannot read {what} {shorten(shown)}; write it as {forms}.")
    layer = check_layer(model, head[0], what=f"{what} layer")
    n = model.cfg.n_heads if n_heads is None else n_heads
    return layer, check_index(head[1], n, f"{what} index", "heads per layer")


def check_heads(model: HookedTransformer, heads: Any, what: str = "heads") -> list[Head]:
    """Heads as a de-duplicated list of ``(layer, head)``; one head alone is accepted too. Empty is an error."""
    one = isinstance(heads, str) or (isinstance(heads, tuple) and len(heads) == 2
                                     and all(isinstance(x, int) for x in heads))
    if not one and not isinstance(heads, Iterable) or isinstance(heads, Tensor) and heads.ndim != 2:
        raise InputError(
            f"{what}={shorten(heads)} is not a list of heads; write [(layer, head), ...], e.g. [(1, 0)] or ['L1H0']."
        )
    out: list[Head] = []
    for h in ([heads] if one else list(heads)):
        h = parse_head(model, h)
        if h not in out:
            out.append(h)
    if not out:
        raise InputError(f"no {what} were given; pass at least one (layer, head) pair, e.g. [(1, 0)].")
    return out


def head_label(head: Head) -> str:
    """``(1, 2) -> "L1H2"``: how results label heads."""
    return f"L{head[0]}H{head[1]}"


# ---------------------------------------------------------------------------------------------------------
# The readout: final norm + unembedding (+ soft cap), and directions through it
# ---------------------------------------------------------------------------------------------------------

def final_norm_kind(model: HookedTransformer) -> str:
    """``"ln"`` (centers, then scales), ``"rms"`` (scales only) or ``"none"``, read from ``model.ln_final``."""
    ln = getattr(model, "ln_final", None)
    name = type(ln).__name__ if ln is not None and model.cfg.normalization_type is not None else ""
    if name.startswith("LayerNorm"):
        return "ln"
    if name.startswith("RMSNorm"):
        return "rms"
    if name.endswith("NormalizationBridge"):  # a TransformerBridge's norm says which kind it computes
        return "rms" if getattr(ln, "uses_rms_norm", name.startswith("RMS")) else "ln"
    return "none"


def final_norm_weight(model: HookedTransformer) -> Optional[Float[Tensor, " d_model"]]:
    """The final norm's elementwise weight ``w``, or None where it is folded into ``W_U`` or absent."""
    if final_norm_kind(model) == "none":
        return None
    w = getattr(model.ln_final, "w", None)
    return w.detach() if isinstance(w, Tensor) else None


def final_norm_bias(model: HookedTransformer) -> Optional[Float[Tensor, " d_model"]]:
    """The final LayerNorm's bias ``b`` (added after normalising), or None."""
    if final_norm_kind(model) == "none":
        return None
    b = getattr(model.ln_final, "b", None)
    return b.detach() if isinstance(b, Tensor) else None


def output_norm(model: HookedTransformer, layer: int, sublayer: str) -> Optional[torch.nn.Module]:
    """The norm a sandwich-norm model (Gemma 2 and 3) applies to a sub-layer's output before adding it to the
    residual stream (``ln1_post`` after attention, ``ln2_post`` after the MLP); None for other models.

    Only RMSNorm output norms are supported (the only kind TransformerLens builds): with its scale frozen at the
    value it took on a prompt, ``norm(y) = y / scale * w`` is linear in the sub-layer's raw output ``y``, so a
    head's or a neuron's share of ``y`` reaches the residual stream as ``share / scale * w``.
    """
    if not getattr(model.cfg, "use_normalization_before_and_after", False):
        return None
    if sublayer not in ("attn", "mlp"):
        raise InputError(f"sublayer={shorten(sublayer)}: use 'attn' or 'mlp'.")
    norm = getattr(model.blocks[layer], "ln1_post" if sublayer == "attn" else "ln2_post", None)
    if norm is not None and not type(norm).__name__.startswith("RMSNorm"):
        raise CircuitlabError(
            f"model {shorten(model_name(model))} normalises sub-layer outputs with {type(norm).__name__}; only RMSNorm "
            "output norms are supported by the linear decompositions (direct attribution, sub-updates)."
        )
    return norm


def output_norm_scale_hook(layer: int, sublayer: str) -> str:
    """The hook holding the scale of layer ``layer``'s output norm (see :func:`output_norm`)."""
    return f"blocks.{layer}.{'ln1_post' if sublayer == 'attn' else 'ln2_post'}.hook_scale"


def through_output_norm(model: HookedTransformer, layer: int, sublayer: str,
                        directions: Float[Tensor, "batch d_model"],
                        scale: Optional[Float[Tensor, "batch 1"]]) -> Float[Tensor, "batch d_model"]:
    """Residual-stream readout ``directions`` pulled back through a sub-layer's output norm, its scale frozen:
    ``norm(y) @ d == y @ (w * d / scale)``. Returns ``directions`` unchanged for a model without output norms."""
    norm = output_norm(model, layer, sublayer)
    if norm is None:
        return directions
    w = getattr(norm, "w", None)
    out = directions * w.detach() if isinstance(w, Tensor) else directions
    return out / scale if scale is not None else out


def final_norm(model: HookedTransformer, resid: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
    """The model's own final norm (identity for a model without one)."""
    return model.ln_final(resid) if model.cfg.normalization_type is not None else resid


def final_residual(model: HookedTransformer, tokens: Int[Tensor, "batch pos"], names: Iterable[str] = (),
                   fwd_hooks: Sequence = ()
                   ) -> tuple[Float[Tensor, "batch pos d_model"], dict[str, Float[Tensor, "..."]]]:
    """Run ``model`` to the residual stream after its last block (before the final norm), without unembedding.

    Returns that residual stream and the activations named in ``names``; ``fwd_hooks`` run as usual (e.g. an
    ablation). A ``HookedTransformer`` stops before the unembedding (``stop_at_layer``); a ``TransformerBridge``
    ignores ``stop_at_layer=n_layers``, so there the last block's ``hook_resid_post`` is captured instead.
    """
    final = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    captured: dict[str, Tensor] = {}

    def keep(name: str):
        def hook(act: Tensor, hook=None) -> None:  # by closure: a bridge's hook points may report alias names
            captured[name] = act

        return hook

    wanted = set(names)
    if isinstance(model, HookedTransformer):
        resid = model.run_with_hooks(tokens, fwd_hooks=[*fwd_hooks, *[(n, keep(n)) for n in wanted]],
                                     stop_at_layer=model.cfg.n_layers)
        return resid, captured
    model.run_with_hooks(tokens, fwd_hooks=[*fwd_hooks, *[(n, keep(n)) for n in wanted | {final}]], return_type=None)
    return captured[final], captured


def softcap(logits: Float[Tensor, "..."], cap: Optional[float]) -> Float[Tensor, "..."]:
    """Gemma-style output soft cap ``cap * tanh(x / cap)``, as TransformerLens applies it (off when cap <= 0)."""
    if cap is None or cap <= 0:
        return logits
    return cap * torch.tanh(logits / cap)


def readout(model: HookedTransformer, resid: Float[Tensor, "... d_model"],
            columns: Optional[Int[Tensor, "... c"]] = None) -> Float[Tensor, "... vocab"]:
    """Logits from a slice of the final residual stream, exactly as the model's forward computes them.

    Final norm, unembedding and output soft cap. With ``columns`` only those vocabulary columns are computed:
    ``resid [..., d_model]`` and ``columns [c]`` give ``[..., c]``.
    """
    x = final_norm(model, resid)
    if columns is None:
        logits = x @ model.W_U + model.b_U
    else:
        logits = x @ model.W_U[:, columns] + model.b_U[columns]
    return softcap(logits, model.cfg.output_logits_soft_cap)


def readout_directions(model: HookedTransformer,
                       directions: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
    """Pull unembedding directions back through the final norm's weight (and its centering, for LayerNorm).

    For any residual vector ``c``: ``(center(c) * w) @ d == c @ center(w * d)``; this returns
    ``center(w * d)`` (without the division by the scale, which depends on the prompt).
    """
    w = final_norm_weight(model)
    if w is not None:
        directions = directions * w
    if final_norm_kind(model) == "ln":
        directions = directions - directions.mean(-1, keepdim=True)
    return directions


def unembed_matrix(model: HookedTransformer, through_norm: bool = True) -> Float[Tensor, "d_model d_vocab"]:
    """``W_U``, or (``through_norm``) the directions that reach the logits through the final norm's weight."""
    W_U = model.W_U.detach()
    return readout_directions(model, W_U.T).T if through_norm else W_U


# ---------------------------------------------------------------------------------------------------------
# Memory: one meaning of max_memory, and batches cut to fit it
# ---------------------------------------------------------------------------------------------------------

#: the default of every analysis's ``max_memory``
DEFAULT_MAX_MEMORY = 512 * 2**20


def check_max_memory(max_memory: Any) -> int:
    """``max_memory`` checked: a positive, finite number of bytes (an :class:`~circuitlab.errors.InputError`
    otherwise, ``inf`` included: a bound of infinite bytes is not a size to cut batches to, and a large finite
    number, e.g. ``2**40``, already means "everything in one batch").

    One meaning everywhere: a rough bound on the activations that one batched forward (or backward) pass holds
    at once. Every analysis that loops over data cuts its batches to fit it, so its peak memory does not grow
    with the amount of data (only the results do: one number per sequence, patch or example).
    """
    check_number(max_memory, "max_memory", low=0, low_open=True,
                 what="a positive number of bytes (e.g. 512 * 2**20)")
    return int(max_memory)


def row_bytes(model: HookedTransformer, seq_len: int, logits: int = 0) -> int:
    """Rough bytes of activations one batch row of ``seq_len`` tokens holds during a forward pass.

    Counts the widest activations alive in a block (residual stream and norms, MLP hidden, q/k/v/z, the
    attention scores and pattern) and, with ``logits=c``, ``c`` logits per position (``d_vocab_out`` for full
    logits), at the parameters' element size.
    """
    cfg = model.cfg
    d_mlp = (getattr(cfg, "d_mlp", None) or 0) * (2 if getattr(cfg, "gated_mlp", False) else 1)
    per_token = 8 * cfg.d_model + 3 * d_mlp + 6 * cfg.n_heads * cfg.d_head + 3 * cfg.n_heads * seq_len + 2 * logits
    size = next(model.parameters()).element_size() if any(True for _ in model.parameters()) else 4
    return size * seq_len * per_token


def row_chunks(n_rows: int, bytes_per_row: int, max_memory: int) -> list[slice]:
    """``range(n_rows)`` cut into slices of as many rows as fit ``max_memory`` (at least one row each)."""
    step = max(1, int(max_memory) // max(1, int(bytes_per_row)))
    return [slice(lo, min(lo + step, n_rows)) for lo in range(0, n_rows, step)]


# ---------------------------------------------------------------------------------------------------------
# Threads: never more torch threads than the cores a process may use
# ---------------------------------------------------------------------------------------------------------

#: the environment variable that overrides the thread rule (a positive integer)
THREADS_ENV = "CIRCUITLAB_THREADS"


def usable_cores() -> int:
    """The CPU cores this process may run on: its CPU affinity (``os.sched_getaffinity``; ``os.cpu_count`` where
    that does not exist), capped by a cgroup CPU quota where one is set (a container limited to 2 CPUs on a
    16-core host sees 16 cores through ``os.cpu_count`` but gets the time of 2)."""
    import os

    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    try:  # cgroup v2: "max 100000" (no limit) or "200000 100000" (2 CPUs)
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def busy_cores() -> int:
    """Cores other processes keep busy now: the 1-minute load average (runnable processes, machine-wide), rounded
    down; 0 where the system does not report one."""
    import os

    try:
        return max(0, int(os.getloadavg()[0]))
    except (AttributeError, OSError):  # pragma: no cover - no load average (Windows)
        return 0


def default_threads(processes: Optional[int] = None, cap: Optional[int] = None) -> int:
    """The torch thread count circuitlab uses: ``max(1, (usable_cores() - busy_cores()) // processes)``, at most
    ``cap``: the cores nobody else is using, shared among the job's processes.

    ``processes`` is the number of processes sharing the cores for the same job: by default pytest-xdist's worker
    count where this runs in one of its workers (``PYTEST_XDIST_WORKER_COUNT``), else 1. ``cap``: the CPUs
    reserved for this process where something reserves them (a Ray worker's ``cpus_per_worker``). The
    environment variable ``CIRCUITLAB_THREADS`` (a positive integer) overrides the rule.

    Why: on two cores shared with other busy processes, torch's OpenMP threads wait on each other, and a second
    thread slows tensor work several times over instead of speeding it up (on a loaded 2-core machine, exact
    activation patching ran 15x slower with 2 threads than with 1: docs/performance.md, ``benchmarks/threads.py``).
    Threads per process times processes never exceeds the idle cores (at least one thread each). The load is read
    when this is called: a long job decides once, at its start.
    """
    import os

    env = os.environ.get(THREADS_ENV)
    if env not in (None, ""):
        try:
            n = int(env)
        except ValueError:
            n = 0
        if n < 1:
            raise InputError(f"{THREADS_ENV}={shorten(env)}: set it to a positive integer (the torch threads to use), "
                             "or unset it for the default rule (idle cores / processes).")
        return n
    if processes is None:
        try:
            processes = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
        except ValueError:
            processes = 1
    n = max(1, (usable_cores() - busy_cores()) // max(1, int(processes)))
    return n if cap is None else max(1, min(n, int(cap)))


def apply_default_threads(processes: Optional[int] = None) -> int:
    """Set torch's thread count to :func:`default_threads` (``processes`` as there) and return it. The command line,
    the test session and Ray's workers call it once at start; a library user may call it, or set
    ``torch.set_num_threads`` as usual (circuitlab's analyses never change the count behind the user's back)."""
    n = default_threads(processes)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n


# ---------------------------------------------------------------------------------------------------------
# Non-finite values: say where they come from
# ---------------------------------------------------------------------------------------------------------

def check_finite(model: HookedTransformer, tokens: Optional[Int[Tensor, "batch pos"]], what: str,
                 *tensors: Optional[Shaped[Tensor, "..."]]) -> None:
    """Raise :class:`~circuitlab.errors.NonFiniteError` if any of ``tensors`` holds NaN or inf, naming where the
    non-finite values first appear in ``model`` on ``tokens`` (a weight, or the first hook in forward order).

    Analyses call this on the model outputs they read, so that a NaN never becomes a plausible number (a rank, a
    top-k token, a shifted mean). Costs one ``isfinite`` per tensor; the search runs only when something is wrong.
    """
    if all(t is None or not t.is_floating_point() or bool(torch.isfinite(t).all()) for t in tensors):
        return
    raise NonFiniteError(
        f"{what} holds NaN or infinite values: {where_nonfinite(model, tokens)}. No analysis of this model can "
        "give meaningful numbers until that is fixed (reload the weights, or run in float32 if it overflowed)."
    )


def where_nonfinite(model: HookedTransformer, tokens: Optional[Int[Tensor, "batch pos"]]) -> str:
    """Where NaN or inf first appear: a parameter's name, else the first hook (and prompt) on ``tokens``."""
    params = [name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
    if params:
        more = f" (and {len(params) - 1} more parameters)" if len(params) > 1 else ""
        return f"the model's weights are non-finite, first in {params[0]}{more}"
    if tokens is None:
        return "the weights are finite, so they arise in the computation"
    found: list[str] = []

    def spot(offset: int):
        def hook(act: Tensor, hook) -> None:
            if (not found and isinstance(act, Tensor) and act.is_floating_point()
                    and not bool(torch.isfinite(act).all())):
                rows = (~torch.isfinite(act)).flatten(1).any(1).nonzero().flatten().tolist()
                found.append(f"at {hook.name} (prompt {offset + rows[0]})" if rows else f"at {hook.name}")
        return hook

    with torch.no_grad():
        for sl in row_chunks(tokens.shape[0], row_bytes(model, tokens.shape[1]), DEFAULT_MAX_MEMORY):
            model.run_with_hooks(tokens[sl], fwd_hooks=[(lambda name: True, spot(sl.start))], return_type=None)
            if found:
                return f"the weights are finite; the activations first become non-finite {found[0]}"
    return "the weights and the model's own activations on these prompts are finite, so the analysis's inputs " \
           "(answers, metric, hooks) produced them"


# ---------------------------------------------------------------------------------------------------------
# Names and progress
# ---------------------------------------------------------------------------------------------------------

def metric_name(metric: Any) -> str:
    """How results name a metric: its ``name`` (circuitlab metrics), a function's ``__name__``, else ``"metric"``."""
    return str(getattr(metric, "name", None) or getattr(metric, "__name__", None) or "metric")


def progress_bar(iterable: Optional[Iterable] = None, *, progress: bool, desc: str, total: Optional[int] = None,
                 unit: str = "it"):
    """The package's one progress bar: tqdm on stderr, cleared when done; drawn when ``progress`` is true and
    :func:`progress_visible` (stderr is a terminal, or this runs in a notebook), so output piped or captured to a
    file never holds bars or their escape codes, and stdout carries only the findings.

    Inside :func:`progress_sink` (a server's job, say) a bar with ``progress`` true draws nothing and reports to the
    sink instead, whether or not stderr is a terminal.
    """
    sink = _PROGRESS_SINK.get()
    if sink is not None and progress:
        return _sink_bar()(iterable, total=total, desc=desc, unit=unit, leave=False, sink=sink)
    show = progress and progress_visible()
    return _tqdm()(iterable, total=total, desc=desc, unit=unit, disable=not show, leave=False, file=sys.stderr)


def progress_visible() -> bool:
    """Whether a progress bar can be seen: stderr is a terminal, or the code runs in a Jupyter kernel (where
    tqdm draws a widget, or a text bar that the notebook redraws in place)."""
    try:
        if sys.stderr is not None and sys.stderr.isatty():
            return True
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        pass
    ipython = sys.modules.get("IPython")
    shell = getattr(ipython, "get_ipython", lambda: None)() if ipython is not None else None
    return type(shell).__name__ == "ZMQInteractiveShell"


#: the callback that receives progress (see :func:`progress_sink`) in this thread or task, if any
_PROGRESS_SINK: "contextvars.ContextVar[Optional[Any]]" = contextvars.ContextVar("circuitlab_progress_sink",
                                                                                  default=None)


@contextlib.contextmanager
def progress_sink(callback: Any):
    """Within this block (this thread or task only), every :func:`progress_bar` an analysis shows calls
    ``callback(desc, n, total)`` at each step (``total`` may be None) instead of drawing on stderr.

    A callback may raise to stop the analysis at its next step (``circuitlab serve`` cancels jobs this way); the
    exception comes out of the analysis' call.
    """
    token = _PROGRESS_SINK.set(callback)
    try:
        yield
    finally:
        _PROGRESS_SINK.reset(token)


@functools.lru_cache(maxsize=None)
def _sink_bar():
    """A tqdm that draws nothing and hands every step to a :func:`progress_sink` callback."""
    from tqdm.std import tqdm as plain

    class SinkBar(plain):
        def __init__(self, *args: Any, sink: Any, **kwargs: Any) -> None:
            self._sink = sink
            super().__init__(*args, file=io.StringIO(), mininterval=0, miniters=1, **kwargs)

        def update(self, n: float = 1) -> Optional[bool]:
            out = super().update(n)
            self._sink(self.desc, self.n, self.total)
            return out

        def __iter__(self):
            for item in self.iterable:
                yield item
                self.update(1)
            self.close()

    return SinkBar


@functools.lru_cache(maxsize=None)
def _tqdm():
    """tqdm's notebook widget where ipywidgets is installed, else its plain text bar (tqdm.auto would warn
    "IProgress not found" in a notebook without widget support)."""
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        from tqdm.std import tqdm as plain

        return plain
    return tqdm


# ---------------------------------------------------------------------------------------------------------
# Statistics and fitting that several rooms share
# ---------------------------------------------------------------------------------------------------------

def average_ranks(v: Union[Shaped[Tensor, "..."], Sequence[float]]) -> Float[Tensor, " n"]:
    """Ranks from 0 (float64) with ties given their average rank, as Spearman's rho needs: ``[10, 20, 20, 5]``
    -> ``[1, 2.5, 2.5, 0]``."""
    v = torch.as_tensor(v).detach().double().flatten()
    sorted_v, order = torch.sort(v, stable=True)
    _, inverse, counts = torch.unique_consecutive(sorted_v, return_inverse=True, return_counts=True)
    start = torch.cumsum(counts, 0) - counts
    average = start.double() + (counts.double() - 1) / 2
    ranks = torch.empty(len(v), dtype=torch.float64)
    ranks[order] = average[inverse]
    return ranks


def spearman(a: Union[Shaped[Tensor, "..."], Sequence[float]], b: Union[Shaped[Tensor, "..."], Sequence[float]]
             ) -> float:
    """Spearman's rank correlation of two vectors (tensors or lists of numbers; average ranks for ties): Pearson's
    correlation of :func:`average_ranks`, in float64. NaN if either is constant."""
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = float(ra.norm() * rb.norm())
    return float((ra * rb).sum()) / den if den > 0 else float("nan")


def minimise_lbfgs(params: Sequence[Float[Tensor, "..."]], loss: Any, *, max_iter: int, tolerance_grad: float,
                   tolerance_change: float, history_size: int = 20) -> None:
    """Minimise ``loss()`` (a function of no arguments returning a scalar tensor built from ``params``) over
    ``params`` in place, with full-batch L-BFGS (``lr=1``, strong Wolfe line search, at most ``max_iter``
    iterations): the solver behind the package's convex fits (the linear probe of
    :func:`circuitlab.probing.train_probe`, the logistic regression of TCAV and explanation regularisation,
    :func:`circuitlab.concepts.tcav.logistic_regression`). Gradients are on inside, whatever the caller's mode."""
    opt = torch.optim.LBFGS(list(params), lr=1, max_iter=max_iter, history_size=history_size,
                            tolerance_grad=tolerance_grad, tolerance_change=tolerance_change,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        value = loss()
        value.backward()
        return value

    with torch.enable_grad():
        opt.step(closure)


#: How many units in the last place (``eps`` of the values' dtype, times their magnitude) a difference must exceed
#: to mean something: the one rule behind every ratio of a difference and every decision by a comparison
#: (:func:`resolution`). The same metric computed by two code paths that should agree (the plain forward pass and
#: the edge patcher with nothing patched) differs by about 16 ulps on ``zoo/toy-lm`` (1.9e-6 for a logit difference,
#: logits up to 11); 1024 leaves room for deeper models with larger logits. In float32 a logit-scale difference
#: under 1.2e-4 is noise: a ratio over it is not reported as a number.
RESOLUTION_ULPS = 1024


def resolution(scale: float, dtype: Any = torch.float32, *, floor: float = 1.0) -> float:
    """The smallest difference between two values of magnitude ``scale`` (their larger ``|value|``) computed in
    ``dtype`` that means something: ``RESOLUTION_ULPS * eps(dtype) * max(scale, floor)``. ``floor`` (default 1, the
    magnitude of logits and log-probabilities, whose rounding errors a metric of them inherits) is 0 for values
    whose errors are relative to themselves (probabilities)."""
    eps = torch.finfo(dtype).eps if isinstance(dtype, torch.dtype) and dtype.is_floating_point else \
        torch.finfo(torch.float32).eps
    return RESOLUTION_ULPS * eps * max(abs(float(scale)), float(floor))


def unresolved(a: Union[Float[Tensor, "*shape"], Sequence[float]], b: Union[Float[Tensor, "*shape"], Sequence[float]],
               dtype: Any = torch.float32, *, floor: float = 1.0) -> Bool[Tensor, "*shape"]:
    """Elementwise: True where ``a`` and ``b`` differ by no more than their :func:`resolution` (ties and float
    noise); a per-item score decided or divided by such a difference is undefined (NaN, counted and warned)."""
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    scale = torch.maximum(a.abs(), b.abs()).clamp(min=float(floor))
    return (a - b).abs() <= resolution(1.0, dtype, floor=0.0) * scale


def check_difference(a: float, b: float, what: str, fix: str, *, dtype: Any = torch.float32,
                     floor: float = 1.0) -> float:
    """``a - b``, or an :class:`~circuitlab.errors.InputError` when the difference is within :func:`resolution`
    (the user's inputs do not move the quantity: a ratio over it, or a decision by it, would be float noise).
    ``what`` names the two values (e.g. "the metric on the clean and corrupted runs"); ``fix`` says what to do."""
    a, b = float(a), float(b)
    res = resolution(max(abs(a), abs(b)), dtype, floor=floor)
    if not abs(a - b) > res:  # also NaN
        raise InputError(f"{what} are {a:.6g} and {b:.6g}: they differ by {abs(a - b):.2g}, within the resolution "
                         f"of {str(dtype).replace('torch.', '')} values of that size ({res:.2g}), so a ratio or a "
                         f"decision by their difference would be float noise. {fix}")
    return a - b


# ---------------------------------------------------------------------------------------------------------
# Cache entries on disk: a checksum of the payload and the count it promised, checked on every read
# ---------------------------------------------------------------------------------------------------------

#: the first line of every cache entry circuitlab writes; a JSON header line follows, then the payload
CACHE_ENTRY_MAGIC = b"circuitlab cache entry"
#: the header's format: an entry of any other format (or none: written before entries had a checksum) is not used
CACHE_ENTRY_FORMAT = 1


def _payload_checksum(payload: bytes) -> str:
    import hashlib

    return "sha256:" + hashlib.sha256(payload).hexdigest()


def write_cache_entry(path: Union[str, Path], payload: bytes, count: int, key: Any = None) -> None:
    """Write a cache entry to ``path``: a header line holding the checksum of ``payload`` (SHA-256), its length,
    ``count`` (what the entry holds: rows, sentences...) and ``key`` (what decides it, JSON), then ``payload``.
    Written to a temporary name and renamed, so a reader never sees half an entry. Read it back with
    :func:`read_cache_entry`."""
    import json
    import os
    import threading

    path = Path(path)
    header = {"format": CACHE_ENTRY_FORMAT, "checksum": _payload_checksum(payload), "bytes": len(payload),
              "count": int(count), "key": key}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        with open(tmp, "wb") as f:
            f.write(CACHE_ENTRY_MAGIC + b"\n" + json.dumps(header, sort_keys=True).encode() + b"\n")
            f.write(payload)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_cache_entry(path: Union[str, Path], key: Any = None) -> Optional[tuple[bytes, int]]:
    """``(payload, count)`` of the cache entry at ``path`` (:func:`write_cache_entry`), or ``None``: no file
    (silently), or a file that is not an intact entry of ``key`` (with a warning naming the file and what is
    wrong: cut short, longer than promised, bytes changed, no header, another format or key). The caller
    recomputes the entry and writes it again; it checks the decoded payload against ``count`` itself
    (:func:`warn_cache_entry` when they differ)."""
    import json

    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        warn_cache_entry(path, f"cannot be read ({type(exc).__name__}: {shorten(exc)})")
        return None
    if not data:
        warn_cache_entry(path, "is empty")
        return None
    first, _, rest = data.partition(b"\n")
    if first != CACHE_ENTRY_MAGIC:
        warn_cache_entry(path, "has no circuitlab cache header (written by an older version without a checksum, "
                               "or not a cache entry)")
        return None
    line, newline, payload = rest.partition(b"\n")
    try:
        header = json.loads(line) if newline else None
        promised, checksum, count = int(header["bytes"]), str(header["checksum"]), int(header["count"])
        fmt = header["format"]
    except (ValueError, TypeError, KeyError):
        warn_cache_entry(path, "has a damaged header")
        return None
    if fmt != CACHE_ENTRY_FORMAT:
        warn_cache_entry(path, f"is of format {shorten(fmt)}, not {CACHE_ENTRY_FORMAT}")
        return None
    if len(payload) < promised:
        warn_cache_entry(path, f"is cut short ({len(payload)} of the {promised} bytes its header promised)")
        return None
    if len(payload) > promised:
        warn_cache_entry(path, f"holds {len(payload) - promised} bytes more than the {promised} its header "
                               "promised")
        return None
    if _payload_checksum(payload) != checksum:
        warn_cache_entry(path, "does not match its checksum (bytes were changed)")
        return None
    if key is not None and header.get("key") != json.loads(json.dumps(key)):
        warn_cache_entry(path, "was written for another key")
        return None
    return payload, count


def warn_cache_entry(path: Union[str, Path], problem: str) -> None:
    """The one warning for a cache entry that is not used: ``cache entry PATH PROBLEM; not used, recomputed``."""
    import warnings

    warnings.warn(f"cache entry {path} {problem}; not used, recomputed.", stacklevel=3)
