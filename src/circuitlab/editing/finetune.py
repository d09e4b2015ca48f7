"""The fine-tuning baseline of Meng et al. (2022, section 4): gradient descent on the same layer's ``W_out``.

``fine_tune`` learns an additive change ``Delta`` of one MLP layer's output weights by Adam on the negative
log-likelihood of the new objects after their prompts (alone and after the same self-generated prefixes as ROME),
nothing else: no covariance, no KL term. ``norm_constraint=eps`` clamps every entry of ``Delta`` to ``[-eps, eps]``
after each step (the paper's FT-L, "constrained fine-tuning"); ``None`` (default) is plain FT. The paper's settings
for GPT-2 XL: 25 steps, learning rate 5e-4, and eps = 5e-4 for FT-L. Returns an
:class:`~circuitlab.editing.edit.Edit` like ROME's, so the evaluation treats both alike.
"""

from __future__ import annotations

import math
import time
from typing import Any, Optional, Sequence, Union

import torch

from circuitlab.core import ModelLike, as_model, check_count, check_number, check_seed, model_name
from circuitlab.editing.edit import (Edit, Rows, check_editable, check_request, check_requests, context_prefixes,
                                     frozen, pad_id, prefixed, rewrite_rows)
from circuitlab.editing.rome import check_layer_choice
from circuitlab.core import readout
from circuitlab.errors import InputError

__all__ = ["fine_tune"]


def fine_tune(model: ModelLike, requests: Sequence[Any], *, layer: Union[int, str, None] = None, steps: int = 25,
              lr: float = 5e-4, norm_constraint: Optional[float] = None, n_prefixes: int = 5, prefix_length: int = 10,
              seed: int = 0) -> Edit:
    """Fine-tune layer ``layer``'s ``W_out`` on ``requests`` (``(prompt, subject, new)`` triples or Requests).

    ``layer=None`` (or ``"auto"``): the causal-tracing peak of the first request, as ROME's default. Returns an
    Edit with ``meta["optimisation"]`` (loss and mean P(new) per step) and ``seconds``.
    """
    t0 = time.perf_counter()
    model = as_model(model)
    check_editable(model)
    triples = check_requests(requests)
    checked = [check_request(model, *r, what=f"requests[{i}]") for i, r in enumerate(triples)]
    steps = check_count(steps, "steps")
    lr = check_number(lr, "lr", low=0, low_open=True)
    if norm_constraint is not None:
        norm_constraint = check_number(norm_constraint, "norm_constraint", low=0, low_open=True)
    n_prefixes = check_count(n_prefixes, "n_prefixes", minimum=0)
    prefix_length = check_count(prefix_length, "prefix_length")
    seed = check_seed(seed)
    layer = check_layer_choice(model, layer, triples[0][0], triples[0][1], seed)
    prefixes = context_prefixes(model, n_prefixes, prefix_length, seed)
    bos = bool(model.cfg.default_prepend_bos)
    rows = Rows([], [], [], [])
    for _, toks, span, new_ids in checked:
        r = rewrite_rows(prefixed(toks, span, prefixes, bos), new_ids)
        rows.tokens += r.tokens
        rows.subject_last += r.subject_last
        rows.read += r.read
        rows.targets += r.targets
    batch = rows.batch(pad_id(model), model.cfg.device)
    W = model.blocks[layer].mlp.W_out
    delta = torch.zeros_like(W, dtype=torch.float32, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=lr)
    store = {}

    def keep(act, hook=None):
        store["k"] = act

    def add(mod, inputs, output):
        return output + (store["k"].float() @ delta).to(output.dtype)

    history = []
    with frozen(model):
        for step in range(steps):
            opt.zero_grad()
            handle = model.blocks[layer].mlp.register_forward_hook(add)
            try:
                resid = model.run_with_hooks(batch, stop_at_layer=model.cfg.n_layers,
                                             fwd_hooks=[(f"blocks.{layer}.mlp.hook_post", keep)])
            finally:
                handle.remove()
            nll = torch.stack([-torch.log_softmax(readout(model, resid[i, where]).float(), -1)[
                torch.arange(len(t)), torch.tensor(t)].mean() for i, (where, t) in enumerate(zip(rows.read,
                                                                                                  rows.targets))]).mean()
            history.append({"nll": nll.item(), "p_new": math.exp(-nll.item())})
            if not math.isfinite(nll.item()):
                raise InputError("fine-tuning's loss became NaN or infinite: lower lr.")
            nll.backward()
            opt.step()
            if norm_constraint is not None:
                with torch.no_grad():
                    delta.clamp_(-norm_constraint, norm_constraint)
    meta = dict(layer=layer, optimisation=history, model=model_name(model),
                seconds={"total": time.perf_counter() - t0},
                settings=dict(steps=steps, lr=lr, norm_constraint=norm_constraint, n_prefixes=n_prefixes,
                              prefix_length=prefix_length, seed=seed))
    method = "ft" if norm_constraint is None else "ft-l"
    return Edit(method, {layer: delta.detach().double().cpu()}, tuple(c[0] for c in checked), meta)
