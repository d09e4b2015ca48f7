"""What ROME, MEMIT and the fine-tuning baseline share: requests, edits, context prefixes, keys and targets.

- :class:`Request`: one fact to write, ``Request("Wexmira has a house in", "Wexmira", " Tarnwick")``: the prompt up
  to the object, the subject as written in it, and the new object (with its leading space; several tokens allowed).
- :class:`Edit`: what an editing method returns: one additive change ``delta[layer]`` of the MLP output weights
  ``W_out`` (``[d_mlp, d_model]``, TransformerLens's orientation ``out = k @ W_out + b_out``) per edited layer.
  Applied in place for a block of code (``with edit.applied(model): ...``; the original weights are copied back
  exactly afterwards, bit for bit) or to a copy (``edit.new_model(model)``).
- the **context prefixes** (ROME's "context templates"): short texts the model writes itself from a few starting
  words, put before the prompt so that the key and the new value hold across contexts (Meng et al. 2022, section
  3.1: ``k*`` is averaged over ``N`` such prefixes, and the value's loss is taken over them);
- the **keys**: the input of ``W_out`` (``blocks.L.mlp.hook_post``) at the last subject token, averaged over the
  prefixed prompts (:func:`subject_keys`);
- the **target** (:func:`optimise_delta`): a vector ``delta`` added at one site (the MLP output for ROME, the
  residual stream for MEMIT) at the last subject token of every prefixed prompt, found by gradient descent (Adam)
  on the paper's loss: the negative log-likelihood of the new object over the prefixed prompts, plus
  ``kl_factor`` times the KL divergence of the next-token distribution after the "essence" prompt
  ``"{subject} is a"`` (edited against original, which keeps what the subject *is*), plus
  ``weight_decay * |delta|^2 / |v0|^2``; ``|delta|`` is clamped to ``clamp * |v0|`` (``v0``: the site's original
  value). The hyperparameters default to ROME's for GPT-2 XL (20 steps, learning rate 0.5, weight decay 0.5,
  clamp 4, KL factor 0.0625).

Only ``delta`` carries gradients; the model's parameters are switched to ``requires_grad=False`` for the
optimisation and switched back afterwards.
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from circuitlab.core import (check_count, check_finite, check_known_words, check_mlp_layer, check_number, readout,
                             shorten, to_tokens)
from circuitlab.engine.collect import run_hooks
from circuitlab.errors import InputError
from circuitlab.tracing import subject_span

#: the words ROME's generated prefixes start with
PREFIX_STARTS = ("The", "Therefore", "Because", "I", "You")
#: the "essence" prompt whose next-token distribution the KL term keeps (Meng et al. 2022, eq. 4)
ESSENCE = "{subject} is a"


@dataclass(frozen=True)
class Request:
    """One fact to write: the ``prompt`` up to the object, the ``subject`` as spelled in the prompt (its first
    occurrence), and the ``new`` object with its leading space (``" Tarnwick"``; several tokens are allowed)."""

    prompt: str
    subject: str
    new: str


def check_request(model: HookedTransformer, prompt: Any, subject: Any, new: Any,
                  what: str = "") -> tuple[Request, list[int], tuple[int, int], list[int]]:
    """``(request, prompt tokens, subject span, new tokens)``, checked: a text prompt, a subject that is a token
    span of it, a non-empty new object that is not what the model already predicts there."""
    at = f"{what}: " if what else ""
    check_editable(model)
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError(f"{at}prompt must be non-empty text, the sentence up to the object (e.g. 'The Eiffel Tower "
                         f"is located in'); got {shorten(prompt)}.")
    if prompt != prompt.rstrip():
        raise InputError(f"{at}prompt {shorten(prompt)} ends with whitespace: end it at its last word and put the "
                         "space on the new object (' Rome').")
    if model.tokenizer is None:
        raise InputError("editing reads text prompts, but this model has no tokenizer. Use a model with one.")
    check_known_words(model, prompt, "the prompt")
    if not isinstance(subject, str):
        raise InputError(f"{at}subject must be text that occurs in the prompt; got {shorten(subject)}.")
    tokens = to_tokens(model, prompt)
    span = subject_span(model, prompt, subject, tokens)
    if not isinstance(new, str) or not new.strip():
        raise InputError(f"{at}new must be the new object as text with its leading space (e.g. ' Rome'); got "
                         f"{shorten(new)}.")
    check_known_words(model, new, "the new object")
    new_ids = to_tokens(model, new, prepend_bos=False)[0].tolist()
    if not new_ids:
        raise InputError(f"{at}new={shorten(new)} has no tokens for this tokenizer; give a word.")
    if tokens.shape[1] + len(new_ids) > model.cfg.n_ctx:
        raise InputError(f"{at}the prompt and the new object are {tokens.shape[1] + len(new_ids)} tokens, more than "
                         f"the model's context of {model.cfg.n_ctx}; shorten the prompt.")
    with torch.no_grad():
        logits = model(tokens, return_type="logits")[0, -1]
    check_finite(model, tokens, "the model's logits on the prompt", logits)
    if int(logits.argmax()) == new_ids[0] and len(new_ids) == 1:
        raise InputError(f"{at}new={shorten(new)} is already the model's prediction after the prompt "
                         f"{shorten(prompt)}: there is nothing to edit. Give a different new object.")
    return Request(prompt, subject, new), tokens[0].tolist(), span, new_ids


def check_requests(requests: Any) -> list[tuple]:
    """Editing requests as ``(prompt, subject, new)`` triples: a non-empty list of Requests or triples, no fact
    twice."""
    if isinstance(requests, (str, bytes, Request)) or not isinstance(requests, Sequence) or not requests:
        raise InputError("requests must be a non-empty list of Request(prompt, subject, new) or (prompt, subject, "
                         f"new) triples; got {shorten(requests)}.")
    out = []
    for i, r in enumerate(requests):
        if isinstance(r, Request):
            r = (r.prompt, r.subject, r.new)
        if not isinstance(r, (tuple, list)) or len(r) != 3:
            raise InputError(f"requests[{i}] is {shorten(r)}: give Request(prompt, subject, new) or a (prompt, "
                             "subject, new) triple.")
        out.append(tuple(r))
    subjects = [r[1] for r in out]
    if len(set(zip(subjects, [r[0] for r in out]))) != len(out):
        raise InputError("requests holds the same prompt and subject twice; give each fact once.")
    return out


def check_editable(model: Any) -> None:
    """Editing writes ``blocks[L].mlp.W_out`` in place: a ``HookedTransformer`` with MLPs. A ``TransformerBridge``'s
    ``W_out`` is a view computed from the wrapped model's weights, so writing it would silently change nothing:
    refused."""
    if not isinstance(model, HookedTransformer):
        raise InputError(f"editing needs a HookedTransformer; got a {type(model).__name__}, whose W_out is computed "
                         "from the wrapped model's weights, so an edit written there would silently change nothing. "
                         "Load the model as a HookedTransformer.")
    check_mlp_layer(model, 0)


def check_edit_layers(model: HookedTransformer, layers: Any, what: str = "layers") -> list[int]:
    """Layer numbers of MLPs to edit: one or a non-empty list of distinct layers (negative counts from the end)."""
    if isinstance(layers, int) and not isinstance(layers, bool):
        layers = [layers]
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence) or not layers:
        raise InputError(f"{what} must be a layer or a non-empty list of layers; got {shorten(layers)}.")
    out = [check_mlp_layer(model, l) for l in layers]
    if len(set(out)) != len(out):
        raise InputError(f"{what} lists a layer twice: {shorten(list(layers))}. Give each layer once.")
    return sorted(out)


def check_covariance(model: HookedTransformer, covariance: Any, what: str = "covariance"
                     ) -> Float[Tensor, "d_mlp d_mlp"]:
    """A ``[d_mlp, d_mlp]`` second-moment matrix of keys: finite and symmetric, as float64."""
    d = model.cfg.d_mlp
    if not isinstance(covariance, Tensor):
        raise InputError(f"{what} must be a [d_mlp, d_mlp] = [{d}, {d}] tensor (editing.key_covariance); got "
                         f"{type(covariance).__name__}.")
    if tuple(covariance.shape) != (d, d):
        raise InputError(f"{what} has shape {tuple(covariance.shape)}; this model's MLP keys need a [{d}, {d}] "
                         "matrix (editing.key_covariance of the same model and layer).")
    c = covariance.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(c).all()):
        raise InputError(f"{what} holds NaN or infinite values: recompute it (editing.key_covariance) from a corpus "
                         "on which the model's activations are finite.")
    if not torch.allclose(c, c.T, rtol=1e-5, atol=1e-8 * float(c.abs().max().clamp_min(1e-30))):
        raise InputError(f"{what} is not symmetric: a second moment E[k k^T] is; recompute it.")
    return c


# ---------------------------------------------------------------------------------------------------------
# Edits
# ---------------------------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Edit:
    """Additive changes of MLP output weights: ``W_out[layer] += deltas[layer]``.

    Attributes:
        method: ``"rome"``, ``"memit"`` or ``"ft"``.
        deltas: ``{layer: [d_mlp, d_model] float64}``.
        requests: the facts written.
        meta: what the method recorded (keys, targets, losses, settings, seconds).
    """

    method: str
    deltas: dict[int, Float[Tensor, "d_mlp d_model"]]
    requests: tuple[Request, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def layers(self) -> list[int]:
        return sorted(self.deltas)

    def norm(self) -> float:
        """The Frobenius norm of all changes together."""
        return math.sqrt(sum(float((d.double() ** 2).sum()) for d in self.deltas.values()))

    def _check(self, model: HookedTransformer) -> None:
        for layer, d in self.deltas.items():
            if layer >= model.cfg.n_layers or model.cfg.attn_only:
                raise InputError(f"this edit changes layer {layer}'s MLP, which the model does not have.")
            if tuple(d.shape) != tuple(model.blocks[layer].mlp.W_out.shape):
                raise InputError(f"this edit's change of layer {layer} has shape {tuple(d.shape)}, the model's "
                                 f"W_out {tuple(model.blocks[layer].mlp.W_out.shape)}: it was made for another "
                                 "model.")

    @contextlib.contextmanager
    def applied(self, model: HookedTransformer) -> Iterator[HookedTransformer]:
        """The edit applied to ``model`` in place for the ``with`` block; the original weights are copied back
        afterwards (exactly: the tensors are restored from copies, not by subtracting the change)."""
        self._check(model)
        saved = {l: model.blocks[l].mlp.W_out.detach().clone() for l in self.deltas}
        try:
            with torch.no_grad():
                for l, d in self.deltas.items():
                    W = model.blocks[l].mlp.W_out
                    W.copy_((W.double() + d.to(W.device, torch.float64)).to(W.dtype))
            yield model
        finally:
            with torch.no_grad():
                for l, W0 in saved.items():
                    model.blocks[l].mlp.W_out.copy_(W0)

    def new_model(self, model: HookedTransformer) -> HookedTransformer:
        """A copy of ``model`` with the edit applied; ``model`` is left as it was."""
        self._check(model)
        out = copy.deepcopy(model)
        with torch.no_grad():
            for l, d in self.deltas.items():
                W = out.blocks[l].mlp.W_out
                W.copy_((W.double() + d.to(W.device, torch.float64)).to(W.dtype))
        return out

    def __repr__(self) -> str:
        facts = "; ".join(f"{r.prompt!r} -> {r.new!r}" for r in self.requests[:3])
        more = f" (+{len(self.requests) - 3} more)" if len(self.requests) > 3 else ""
        return f"Edit({self.method}, layers {self.layers}, |delta| {self.norm():.4g}: {facts}{more})"


def combine(edits: Sequence[Edit]) -> Edit:
    """Several edits as one (their changes summed per layer): sequential edits applied together."""
    deltas: dict[int, Tensor] = {}
    for e in edits:
        for l, d in e.deltas.items():
            deltas[l] = deltas[l] + d if l in deltas else d.clone()
    return Edit("+".join(sorted({e.method for e in edits})), deltas, tuple(r for e in edits for r in e.requests),
                {"edits": len(edits)})


# ---------------------------------------------------------------------------------------------------------
# Prefixes, rows, keys
# ---------------------------------------------------------------------------------------------------------

@torch.no_grad()
def context_prefixes(model: HookedTransformer, n: int, length: int, seed: int) -> list[list[int]]:
    """``n`` token sequences (no BOS) the model writes itself: a start word of :data:`PREFIX_STARTS` and
    ``length - 1`` tokens sampled from its top 5 (seeded), then ``"."`` where that is one token."""
    gen = torch.Generator().manual_seed(seed)
    dot = to_tokens(model, ".", prepend_bos=False)[0].tolist()
    out = []
    for i in range(n):
        start = to_tokens(model, PREFIX_STARTS[i % len(PREFIX_STARTS)])[0].tolist()
        toks = list(start)
        while len(toks) - (len(start) - 1) < length + 1 and len(toks) < model.cfg.n_ctx // 2:
            logits = model(torch.tensor([toks], device=model.cfg.device), return_type="logits")[0, -1].float().cpu()
            top = logits.topk(5)
            pick = torch.multinomial(top.values.softmax(-1), 1, generator=gen)
            toks.append(int(top.indices[pick]))
        bos = 1 if model.cfg.default_prepend_bos else 0
        out.append(toks[bos:] + (dot if len(dot) == 1 else []))
    return out


@dataclass
class Rows:
    """Prompts as token rows for one forward pass: each row's tokens, the position of its last subject token
    (where a key is read and ``delta`` added) and the positions whose next-token log-probabilities are read."""

    tokens: list[list[int]]
    subject_last: list[int]
    read: list[list[int]]
    targets: list[list[int]]

    def batch(self, pad: int, device: Any) -> Int[Tensor, "batch pos"]:
        width = max(map(len, self.tokens))
        return torch.tensor([t + [pad] * (width - len(t)) for t in self.tokens], device=device)


def prefixed(prompt_tokens: list[int], span: tuple[int, int], prefixes: list[list[int]], bos: bool
             ) -> list[tuple[list[int], int]]:
    """The prompt alone and after each prefix: ``(tokens, last subject position)`` each."""
    head, body = (prompt_tokens[:1], prompt_tokens[1:]) if bos else ([], prompt_tokens)
    shift = 1 if bos else 0
    out = [(prompt_tokens, span[1] - 1)]
    for p in prefixes:
        out.append((head + p + body, len(head) + len(p) + span[1] - 1 - shift))
    return out


def rewrite_rows(contexts: list[tuple[list[int], int]], new_ids: list[int]) -> Rows:
    """Rows whose log-probabilities of the new object are read (teacher forcing for a multi-token object)."""
    tokens, last, read, targets = [], [], [], []
    for toks, s in contexts:
        tokens.append(toks + new_ids[:-1])
        last.append(s)
        read.append([len(toks) - 1 + j for j in range(len(new_ids))])
        targets.append(list(new_ids))
    return Rows(tokens, last, read, targets)


def essence_rows(model: HookedTransformer, subject: str) -> Rows:
    """The essence prompt ``"{subject} is a"``: its last position's distribution is what the KL term keeps."""
    text = ESSENCE.format(subject=subject)
    toks = to_tokens(model, text)[0].tolist()
    span = subject_span(model, text, subject)
    return Rows([toks], [span[1] - 1], [[len(toks) - 1]], [[]])


def pad_id(model: HookedTransformer) -> int:
    pad = getattr(model.tokenizer, "pad_token_id", None)
    return 0 if pad is None else int(pad)


@torch.no_grad()
def subject_keys(model: HookedTransformer, layer: int, contexts: list[tuple[list[int], int]]
                 ) -> Float[Tensor, " d_mlp"]:
    """The MLP key ``k*`` of ``layer`` (``blocks.L.mlp.hook_post``, the input of ``W_out``) at the last subject
    token, averaged over ``contexts`` (the prefixed prompts), in float64."""
    rows = Rows([t for t, _ in contexts], [s for _, s in contexts], [], [])
    got = {}

    def keep(act: Tensor, hook=None) -> None:
        got["k"] = act[torch.arange(act.shape[0]), torch.tensor(rows.subject_last)].double()

    run_hooks(model, rows.batch(pad_id(model), model.cfg.device), [(f"blocks.{layer}.mlp.hook_post", keep)],
              stop=layer + 1)
    check_finite(model, None, f"the MLP keys of layer {layer}", got["k"])
    return got["k"].mean(0).cpu()


# ---------------------------------------------------------------------------------------------------------
# Targets: delta by gradient descent
# ---------------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def frozen(model: HookedTransformer) -> Iterator[None]:
    """Parameters switched to ``requires_grad=False`` for the block, then back as they were."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, f in flags:
            p.requires_grad_(f)


def site_module(model: HookedTransformer, site: str, layer: int) -> torch.nn.Module:
    """The module whose output ``delta`` is added to: the MLP (its output ``k @ W_out + b_out``, before any
    post-MLP norm) or the whole block (the residual stream after it)."""
    return model.blocks[layer].mlp if site == "mlp" else model.blocks[layer]


def add_at(module: torch.nn.Module, positions: list[int], delta_of: Any):
    """A forward hook on ``module`` adding ``delta_of(row)`` at ``positions[row]`` of each row of its output."""
    def hook(mod, inputs, output):
        rows = torch.arange(len(positions), device=output.device)
        pos = torch.tensor(positions, device=output.device)
        add = torch.zeros_like(output)
        add[rows, pos] = delta_of(len(positions)).to(output.dtype)
        return output + add
    return module.register_forward_hook(hook)


def _log_probs(model: HookedTransformer, batch: Tensor, rows: Rows, module: torch.nn.Module,
               delta_of: Any) -> list[Tensor]:
    """Per row, the log-softmax at its read positions, with ``delta`` added at its last subject token."""
    handle = add_at(module, rows.subject_last, delta_of) if delta_of is not None else None
    try:
        resid = model(batch, stop_at_layer=model.cfg.n_layers)
    finally:
        if handle is not None:
            handle.remove()
    out = []
    for i, where in enumerate(rows.read):
        logits = readout(model, resid[i, where]).float()
        out.append(torch.log_softmax(logits, -1))
    return out


def check_hyper(steps: Any, lr: Any, weight_decay: Any, kl_factor: Any, clamp: Any) -> tuple:
    return (check_count(steps, "steps"), check_number(lr, "lr", low=0, low_open=True),
            check_number(weight_decay, "v_weight_decay", low=0), check_number(kl_factor, "kl_factor", low=0),
            check_number(clamp, "clamp", low=0, low_open=True))


def optimise_delta(model: HookedTransformer, site: str, layer: int, rewrite: Rows, essence: Rows,
                   v0: Float[Tensor, " d_model"], *, steps: int, lr: float, weight_decay: float, kl_factor: float,
                   clamp: float, stop_nll: float = 0.05) -> tuple[Float[Tensor, " d_model"], dict]:
    """``delta`` minimising the paper's loss (see the module docstring) at ``site`` (``"mlp"`` or ``"resid"``) of
    ``layer``; returns it (float64) and a record of the optimisation (loss and P(new) per step)."""
    device = model.cfg.device
    module = site_module(model, site, layer)
    pad = pad_id(model)
    batch = rewrite.batch(pad, device)
    ess = essence.batch(pad, device)
    delta = torch.zeros(model.cfg.d_model, device=device, dtype=torch.float32, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=lr)
    v0n = float(v0.norm()) or 1.0
    with torch.no_grad():
        kl_ref = _log_probs(model, ess, essence, module, None)[0].detach()
    history = []
    with frozen(model):
        for step in range(steps):
            opt.zero_grad()
            lps = _log_probs(model, batch, rewrite, module, lambda n: delta.expand(n, -1))
            nll = torch.stack([-lp[torch.arange(len(t)), torch.tensor(t)].mean()
                               for lp, t in zip(lps, rewrite.targets)]).mean()
            loss = nll
            kl = torch.zeros(())
            if kl_factor > 0:
                lp_e = _log_probs(model, ess, essence, module, lambda n: delta.expand(n, -1))[0]
                kl = torch.nn.functional.kl_div(kl_ref, lp_e, log_target=True, reduction="batchmean")
                loss = loss + kl_factor * kl
            wd = weight_decay * (delta.norm() ** 2) / v0n ** 2
            loss = loss + wd
            history.append({"loss": loss.item(), "nll": nll.item(), "kl": kl.item(), "p_new": math.exp(-nll.item())})
            if not math.isfinite(loss.item()):
                raise InputError("the editing loss became NaN or infinite: lower lr, or check the model's weights.")
            if nll.item() < stop_nll:
                break
            loss.backward()
            opt.step()
            with torch.no_grad():
                top = clamp * v0n
                if float(delta.norm()) > top:
                    delta.mul_(top / float(delta.norm()))
    return delta.detach().double().cpu(), {"steps": history}
