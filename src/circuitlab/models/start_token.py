"""Which start token a causal language model expects: next-token loss on held-out text under each candidate.

A model pretrained on documents that each begin with one token (Gemma's ``<bos>``, SmolLM2's ``<|endoftext|>``,
which separates its training documents) is off its training distribution when a text starts with another one:
SmolLM2-135M-Instruct's tokenizer declares ``<|im_start|>`` (its chat template's turn marker) as its BOS, and
TransformerLens prefixes every text with the declared BOS. :func:`start_token_loss` measures what each choice
costs: every text is tokenized without a start token, then scored once per candidate (``None`` for no start token,
else the one token put in front of it).

The loss compares like with like: for every candidate it is the mean next-token cross-entropy (nats) over the same
target tokens, the text's tokens 2..n (token 1 cannot be predicted without a start token), pooled over all texts.
The loss of the text's first token predicted from the start token (where there is one) is reported beside it.
The real models' cards (:mod:`circuitlab.models.real`) quote this measurement for their chosen start token.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

from circuitlab.core import (DEFAULT_MAX_MEMORY, ModelLike, as_model, check_max_memory, check_texts, model_name,
                             row_bytes, row_chunks, shorten)
from circuitlab.errors import InputError
from circuitlab.results import Result

Candidate = Union[None, str, int]

#: the two numbers per candidate, in the order of the result's ``measure`` axis
MEASURES = ("loss", "first_token_loss")


def candidate_id(model, candidate: Candidate, what: str = "candidate") -> Optional[int]:
    """The token id of a start-token candidate: ``None`` (no start token) stays ``None``; a token id is checked
    against the vocabulary; a string must be exactly one token of the model's vocabulary (e.g. ``"<bos>"``)."""
    if candidate is None:
        return None
    if isinstance(candidate, bool) or not isinstance(candidate, (int, str)):
        raise InputError(f"{what} is {shorten(candidate, 40)} ({type(candidate).__name__}); give None (no start "
                         "token), a token string such as '<|endoftext|>', or a token id.")
    if isinstance(candidate, int):
        if not 0 <= candidate < model.cfg.d_vocab:
            raise InputError(f"{what} is token id {candidate}, outside this model's vocabulary [0, "
                             f"{model.cfg.d_vocab}). Give an id in range or the token as a string.")
        return candidate
    if model.tokenizer is None:
        raise InputError(f"{what} is the string {shorten(candidate, 40)} but the model has no tokenizer; give a "
                         "token id.")
    ids = model.tokenizer(candidate, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise InputError(f"{what} {shorten(candidate, 40)} is {len(ids)} tokens for this model, not one token of "
                         "its vocabulary. Give a single token (check with model.to_str_tokens) or a token id.")
    return int(ids[0])


def candidate_label(model, candidate: Candidate) -> str:
    """How a candidate is named in results and on model cards: ``"none"`` or the token's string."""
    if candidate is None:
        return "none"
    if isinstance(candidate, str):
        return candidate
    return str(model.tokenizer.convert_ids_to_tokens(int(candidate))) if model.tokenizer is not None \
        else f"#{candidate}"


def default_candidates(model) -> list[Candidate]:
    """No start token, then each special token the tokenizer declares (BOS, EOS, unknown, padding), once each."""
    tok = model.tokenizer
    out: list[Candidate] = [None]
    if tok is None:
        return out
    for name in ("bos_token", "eos_token", "unk_token", "pad_token"):
        value = getattr(tok, name, None)
        if isinstance(value, str) and value not in out:
            out.append(value)
    return out


@torch.no_grad()
def start_token_loss(model: ModelLike, texts: Sequence[str], candidates: Optional[Sequence[Candidate]] = None,
                     max_memory: int = DEFAULT_MAX_MEMORY) -> Result:
    """Mean next-token loss of ``model`` on ``texts`` with each start-token candidate in front of every text.

    Args:
        model: a causal language model with a tokenizer (a name, a HookedTransformer or a compatibility-mode
            TransformerBridge).
        texts: held-out texts (a list of strings), each at least two tokens long without a start token.
        candidates: ``None`` for no start token, a token string (``"<|endoftext|>"``) or a token id; default
            :func:`default_candidates` (none, then the tokenizer's declared BOS, EOS, unknown and padding tokens).
        max_memory: bytes one batched forward pass may hold (texts are scored in batches cut to fit).

    Returns:
        A :class:`~circuitlab.results.Result` of shape ``[candidate, measure]``: ``loss`` is the mean cross-entropy
        (nats) of the text tokens 2..n, the same targets for every candidate, pooled over all texts;
        ``first_token_loss`` that of text token 1 predicted from the start token (NaN for ``None``). ``meta``
        holds ``per_text`` (``[candidate, text]`` mean loss of tokens 2..n of each text, for paired
        comparisons), ``n_texts``, ``n_tokens`` (targets per candidate) and ``token_ids`` (each candidate's id).
    """
    model = as_model(model)
    texts = check_texts(texts, "texts")
    max_memory = check_max_memory(max_memory)
    if model.tokenizer is None:
        raise InputError("start_token_loss needs a model with a tokenizer (texts are tokenized without a start "
                         "token, then each candidate is put in front).")
    if candidates is None:
        candidates = default_candidates(model)
    elif isinstance(candidates, (str, int)):
        raise InputError(f"candidates must be a list (None, token strings or ids); got the single value "
                         f"{shorten(candidates, 40)}. Wrap it in a list: [{shorten(candidates, 40)}].")
    candidates = list(candidates)
    if not candidates:
        raise InputError("candidates is empty; give at least one (None for no start token, or a token).")
    ids = [candidate_id(model, c, f"candidates[{i}]") for i, c in enumerate(candidates)]
    if len(set(ids)) != len(ids):
        names = [candidate_label(model, c) for c in candidates]
        raise InputError(f"candidates name the same start token twice ({names}); give each once.")

    rows = []
    for i, text in enumerate(texts):
        toks = model.to_tokens(text, prepend_bos=False, truncate=False)[0].cpu()
        if toks.numel() < 2:
            raise InputError(f"texts[{i}] {shorten(text, 40)} is {toks.numel()} token(s) without a start token; "
                             "each text needs at least two (the loss is over tokens 2..n).")
        if toks.numel() + 1 > model.cfg.n_ctx:
            raise InputError(f"texts[{i}] is {toks.numel()} tokens; with a start token that exceeds the model's "
                             f"context of {model.cfg.n_ctx}. Shorten it.")
        rows.append(toks)

    device = model.cfg.device
    per_text = torch.empty(len(ids), len(rows), dtype=torch.float64)
    first = torch.empty(len(ids), len(rows), dtype=torch.float64)
    order = sorted(range(len(rows)), key=lambda j: len(rows[j]))  # similar lengths batch together
    longest = max(len(r) for r in rows) + 1
    for sl in row_chunks(len(order), row_bytes(model, longest, logits=model.cfg.d_vocab_out), max_memory):
        batch = [order[j] for j in range(sl.start, sl.stop)]
        for c, cid in enumerate(ids):
            start = [] if cid is None else [cid]
            seqs = [torch.tensor(start + rows[j].tolist(), dtype=torch.long) for j in batch]
            width = max(len(s) for s in seqs)
            toks = torch.zeros(len(seqs), width, dtype=torch.long)  # right padding: causal attention never sees it
            for b, s in enumerate(seqs):
                toks[b, :len(s)] = s
            logp = F.log_softmax(model(toks.to(device)).float(), dim=-1).cpu()
            off = len(start)  # position of the text's first token
            for b, j in enumerate(batch):
                n = len(rows[j])
                targets = rows[j][1:]  # text tokens 2..n, predicted at positions off..off+n-2
                nll = -logp[b, off:off + n - 1].gather(-1, targets[:, None])[:, 0].double()
                per_text[c, j] = nll.mean()
                first[c, j] = -float(logp[b, 0, rows[j][0]]) if cid is not None else math.nan
    counts = torch.tensor([len(r) - 1 for r in rows], dtype=torch.float64)
    loss = (per_text * counts).sum(1) / counts.sum()
    first_loss = first.mean(1)
    labels = [candidate_label(model, c) for c in candidates]
    return Result(
        values=torch.stack([loss, first_loss], dim=1),
        axes=("candidate", "measure"),
        labels={"candidate": labels, "measure": list(MEASURES)},
        title="Next-token loss by start token",
        metric="mean cross-entropy (nats) of text tokens 2..n (loss) and of token 1 (first_token_loss)",
        model=model_name(model),
        task=f"{len(texts)} texts",
        meta={"per_text": per_text, "n_texts": len(texts), "n_tokens": int(counts.sum()), "token_ids": ids},
    )


def set_start_token(model, token: str) -> int:
    """Make ``token`` the start token the model puts in front of every text (its tokenizer's BOS); return its id.

    The tokenizer's ``bos_token`` becomes ``token`` (where the tokenizer adds the BOS itself, its post-processor is
    rebuilt to add this one), TransformerLens's ``cfg.default_prepend_bos`` is set and ``cfg.tokenizer_prepends_bos``
    recomputed, so ``model.to_tokens``, :func:`circuitlab.core.to_tokens` and every analysis that asks the
    tokenizer for its ``bos_token_id`` use it. Checked on a sample text afterwards.
    """
    from circuitlab.errors import CircuitlabError

    tok = model.tokenizer
    token_id = candidate_id(model, token, "the start token")
    tok.bos_token = token
    if getattr(tok, "add_bos_token", False) and hasattr(tok, "update_post_processor"):
        tok.update_post_processor()
    model.cfg.default_prepend_bos = True
    sample = tok.encode("a")
    model.cfg.tokenizer_prepends_bos = len(sample) > 1 and sample[0] == tok.bos_token_id
    got = model.to_tokens("a")[0].tolist()
    if tok.bos_token_id != token_id or got != [token_id] + tok.encode("a", add_special_tokens=False):
        raise CircuitlabError(f"setting the start token to {token!r} (id {token_id}) did not take: 'a' tokenizes to "
                              f"{got}. This is a bug in circuitlab's model loading; please report it.")
    return token_id
