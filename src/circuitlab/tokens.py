"""Tokens in, tokens out: prompts, answers and position labels, with or without a tokenizer.

Every analysis accepts prompts as text (when the model has a tokenizer) or as token ids (always), and answers
as strings or ids. These helpers do the conversion once, with errors that say what went wrong.
"""

from __future__ import annotations

from typing import Sequence, Union

import torch
from jaxtyping import Int
from torch import Tensor
from transformer_lens import HookedTransformer

from circuitlab.errors import InputError

Prompts = Union[str, Sequence[str], Tensor, Sequence[int], Sequence[Sequence[int]]]
Answer = Union[str, int, Sequence[Union[str, int]], Tensor]


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
        rows = [model.to_tokens(t, prepend_bos=prepend_bos)[0] for t in texts]
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
    if toks.dtype not in (torch.long, torch.int, torch.int32, torch.int64):
        raise InputError(f"token ids must be integers; got dtype {toks.dtype}.")
    if toks.numel() and (int(toks.min()) < 0 or int(toks.max()) >= model.cfg.d_vocab):
        raise InputError(
            f"token ids must lie in [0, {model.cfg.d_vocab}) for this model; got range "
            f"[{int(toks.min())}, {int(toks.max())}]."
        )
    if toks.shape[1] > model.cfg.n_ctx:
        raise InputError(
            f"prompts are {toks.shape[1]} tokens long but the model's context is n_ctx={model.cfg.n_ctx}. "
            "Shorten them."
        )
    return toks.long().to(device)


def answer_id(model: HookedTransformer, answer: Union[str, int, Tensor]) -> int:
    """One answer as a single token id. A string must be exactly one token (leading space included)."""
    if isinstance(answer, Tensor):
        if answer.numel() != 1:
            raise InputError(f"an answer tensor must hold one token id, got shape {tuple(answer.shape)}.")
        answer = int(answer.item())
    if isinstance(answer, bool):
        raise InputError("an answer must be a token id or a string, not a bool.")
    if isinstance(answer, int):
        if not 0 <= answer < model.cfg.d_vocab_out:
            raise InputError(f"answer token id {answer} is outside the vocabulary [0, {model.cfg.d_vocab_out}).")
        return answer
    if isinstance(answer, str):
        _need_tokenizer(model, f"the answer {answer!r}")
        ids = model.to_tokens(answer, prepend_bos=False)[0].tolist()
        if len(ids) != 1:
            pieces = model.to_str_tokens(answer, prepend_bos=False)
            raise InputError(
                f"answer {answer!r} is {len(ids)} tokens ({pieces!r}), but an answer must be a single token. "
                "Use its first token, a different word, or check the leading space (' Paris' vs 'Paris')."
            )
        return ids[0]
    raise InputError(f"an answer must be a string or a token id; got {type(answer).__name__}.")


def answer_ids(model: HookedTransformer, answers: Answer, batch: int) -> Int[Tensor, "batch"]:
    """Answers for a batch: one answer for all prompts, or one per prompt."""
    if isinstance(answers, Tensor) and answers.ndim == 1 and answers.numel() > 1:
        items = answers.tolist()
    elif isinstance(answers, (list, tuple)):
        items = list(answers)
    else:
        items = [answers] * batch
    if len(items) != batch:
        raise InputError(f"got {len(items)} answers for {batch} prompts; give one answer, or one per prompt.")
    return torch.tensor([answer_id(model, a) for a in items], dtype=torch.long, device=model.cfg.device)


def str_tokens(model: HookedTransformer, tokens: Int[Tensor, "pos"]) -> list[str]:
    """Readable labels for a row of token ids: the tokenizer's strings, or ``"#17"``-style ids without one."""
    ids = tokens.tolist()
    if model.tokenizer is None:
        return [f"#{i}" for i in ids]
    return [str(s) for s in model.to_str_tokens(torch.tensor(ids), prepend_bos=False)]


def position_labels(model: HookedTransformer, tokens: Int[Tensor, "batch pos"]) -> list[str]:
    """Labels for the ``pos`` axis: ``"3:' Mary'"``-style, from the first prompt (positions align across prompts)."""
    return [f"{i}:{s}" for i, s in enumerate(str_tokens(model, tokens[0]))]
