"""Real pretrained language models have induction heads, and copy repeated random text in context.

Olsson et al. (2022) found induction heads, and the abrupt gain in in-context learning that comes with them, in
every model with more than one layer that they trained, from small attention-only models to large language
models. Here the claim is checked on a pretrained model circuitlab loads offline.

Measured on ``N_SEQS`` repeated random sequences ``[BOS] r_1..r_n r_1..r_n`` (seeded by ``seed``; ``n`` is
:func:`circuitlab.tasks.repeated.repeated_sequences`'s default, 50 or a third of the context):

- every head's induction score (:func:`circuitlab.induction.head_scores`): its attention, from each query in the
  repeated copy, to the token after the earlier occurrence of the query's token;
- the mean next-token loss predicting ``r_2..r_n`` in the first copy (nothing to copy from) and in the repeated
  copy (:func:`half_losses`), both from the same forward passes.
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float
from torch import Tensor

from circuitlab.core import (DEFAULT_MAX_MEMORY, check_seed, final_residual, head_label, model_name, readout, row_bytes,
                             row_chunks)
from circuitlab.induction import head_scores
from circuitlab.reproduce.registry import Citation, Finding, Measurement, NotApplicable, register, verdict
from circuitlab.results import Result
from circuitlab.tasks.repeated import RepeatedTokens, repeated_sequences

THRESHOLD = 0.3  # find_induction_circuit's absolute floor for an induction head
DROP = 1.0  # nats: how much lower the repeated-copy loss must be than the first-copy loss
N_SEQS = 10
TOP = 3  # heads shown in the figures


def half_nll(model, rep: RepeatedTokens,
             max_memory: int = DEFAULT_MAX_MEMORY) -> Float[Tensor, "copy seq token"]:
    """Next-token loss (nats) predicting ``r_2..r_n`` in the first copy (``[0]``) and the repeated copy (``[1]``).

    ``[copy, sequence, k]`` is the loss of ``r_{k+2}``. Only the scored positions are unembedded, and the
    sequences run in batches that fit ``max_memory`` (a real model's vocabulary is large).
    """
    toks = rep.tokens.to(model.cfg.device)
    p, n = rep.prefix, rep.seq_len
    # the prediction at position i reads token i + 1: r_2..r_n of copy 1 are read at p .. p+n-2, of copy 2 at
    # p+n .. p+2n-2
    pred = torch.cat([torch.arange(p, p + n - 1), torch.arange(p + n, p + 2 * n - 1)]).to(toks.device)
    per_row = row_bytes(model, toks.shape[1]) + 3 * 4 * len(pred) * model.cfg.d_vocab_out
    parts = []
    for rows in row_chunks(toks.shape[0], per_row, max_memory):
        with torch.inference_mode():
            resid, _ = final_residual(model, toks[rows])
            logp = readout(model, resid[:, pred]).float().log_softmax(-1)
            parts.append(-logp.gather(-1, toks[rows][:, pred + 1, None])[..., 0].cpu())
    nll = torch.cat(parts)  # [seq, 2 (n - 1)]
    return torch.stack([nll[:, : n - 1], nll[:, n - 1:]])


def measure(model, seed: int) -> Measurement:
    seed = check_seed(seed)
    if model.cfg.n_layers < 2:
        raise NotApplicable(f"the claim is about models with more than one layer; this model has {model.cfg.n_layers}")
    rep = repeated_sequences(model, n_seqs=N_SEQS, seed=seed)
    scores = head_scores(model, "induction", n_seqs=N_SEQS, seed=seed)
    nll = half_nll(model, rep)
    first, second = float(nll[0].double().mean()), float(nll[1].double().mean())
    drop = first - second
    top = scores.top(TOP)
    best = top[0][1]
    n_heads = int((scores.values >= THRESHOLD).sum())
    chance = math.log(model.cfg.d_vocab_out)

    heads_ok = best >= THRESHOLD
    loss_ok = drop >= DROP
    outcome = verdict(heads_ok and loss_ok, heads_ok or loss_ok)
    names = ", ".join(f"{head_label(h)} {v:.2f}" for h, v in top)
    figures = (f"best induction heads {names} ({n_heads} of {scores.values.numel()} heads >= {THRESHOLD}); loss on "
               f"r_2..r_n {first:.2f} nats in the first copy -> {second:.2f} in the repeated copy (drop {drop:.2f}; "
               f"uniform {chance:.2f})")
    why = (f"(a) best induction score {best:.2f} {'>=' if heads_ok else '<'} {THRESHOLD}: "
           f"{'holds' if heads_ok else 'fails'}; (b) repeated-copy loss {second:.2f} is {drop:.2f} nats below the "
           f"first-copy loss {first:.2f} ({'>=' if loss_ok else '<'} {DROP:g}): {'holds' if loss_ok else 'fails'}")
    values = {"best_induction": best, "top_heads": [(head_label(h), v) for h, v in top],
              "n_heads_above_threshold": n_heads, "first_half_loss": first, "repeated_half_loss": second,
              "loss_drop": drop, "uniform_loss": chance, "seq_len": rep.seq_len, "n_seqs": N_SEQS, "seed": seed}
    losses = Result(nll.double().mean(1).float(), axes=("copy", "token"),
                    labels={"copy": ["first copy", "repeated copy"],
                            "token": [f"r{k + 2}" for k in range(rep.seq_len - 1)]},
                    title="Next-token loss on the first and the repeated copy", metric="cross-entropy (nats)",
                    model=model_name(model), task=scores.task, meta={"seed": seed})
    return Measurement(figures, outcome, why, values, [scores, losses])


FINDING = register(Finding(
    id="induction-heads-in-real-lms",
    citation=Citation("Olsson et al.", 2022, "In-context Learning and Induction Heads",
                      "Abstract; Argument 1 (Figures 3 and 5, and the Model Analysis Table)",
                      "https://transformer-circuits.pub/2022/in-context-learning-and-induction-heads/index.html"),
    claim="A pretrained language model with more than one layer has induction heads, and predicts the repeated "
          "half of a repeated random sequence far better than the first half.",
    published="Qualitative, no single figure: \"We find that induction heads develop at precisely the same point "
              "as a sudden sharp increase in in-context learning ability, visible as a bump in the training "
              "loss.\" (Abstract); Argument 1, Figure 3: \"Models with more than one layer have an abrupt "
              "improvement in in-context learning\", and Figure 5: \"Induction heads form in phase change\" "
              "(none in the one-layer model); the Model Analysis Table shows this across the models studied.",
    published_model="small attention-only and small/large models with MLPs, up to 13B parameters, trained by "
                    "the authors (Olsson et al. 2022)",
    models=("gemma-3-270m", "smollm2-135m", "zoo/toy-lm"),
    measure=measure,
    rule=f"on {N_SEQS} seeded repeated random sequences: reproduced if (a) the best head's induction score is "
         f">= {THRESHOLD} (find_induction_circuit's absolute floor) and (b) the mean loss predicting r_2..r_n in "
         f"the repeated copy is at least {DROP:g} nat below that in the first copy; partly if exactly one of (a), "
         "(b) holds; not reproduced otherwise",
    seconds=45.0,
))
