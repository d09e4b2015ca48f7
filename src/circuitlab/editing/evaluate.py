"""CounterFact's metrics for an edit (Meng et al. 2022, section 4.2), on the cases of
:mod:`circuitlab.tasks.counterfact`.

For one :class:`~circuitlab.tasks.counterfact.EditCase` and an :class:`~circuitlab.editing.edit.Edit`:

- **efficacy**: on the edit's own prompt, ``log P(new) > log P(true)`` (each a sum over the object's tokens,
  teacher-forced), 1 or 0 (the paper's efficacy score, ES); ``p_new`` / ``p_true`` before and after;
- **paraphrase**: the share of paraphrase prompts where ``log P(new) > log P(true)`` (PS);
- **neighbourhood**: the share of neighbour prompts (other subjects) where the neighbour's own answer still beats
  the new object (NS);
- **score**: the harmonic mean of the three (S; 0 when any is 0);
- **fluency**: the weighted mean of bi- and tri-gram entropies (weights 2/3 and 4/3, CounterFact's
  ``compute_n_gram_entropy``) of text the edited model writes after the generation prompts (seeded top-5 sampling);
  repetitive text scores low;
- **consistency**: CounterFact compares generated text with reference text about the new object (TF-IDF); with no
  such text here, the stand-in is the share of generated texts that mention the new object;
- **loss change**: the edited model's mean next-token loss on held-out text minus the original's.

An edit that **changed nothing** (zero weight change, or the probabilities of the new object unchanged to within
float rounding on every prompt) is reported with ``status="unchanged"``, never as a success or a failure;
otherwise ``status`` is ``"succeeded"`` (efficacy 1) or ``"failed"``.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from circuitlab.core import ModelLike, as_model, check_count, check_seed, model_name, shorten, to_tokens
from circuitlab.editing.edit import Edit, pad_id
from circuitlab.errors import InputError
from circuitlab.results import Result
from circuitlab.tasks.counterfact import EditCase

__all__ = ["EditScores", "evaluate_edit", "edit_table", "ngram_entropy", "METRICS"]

#: the metrics of a table's columns, in order
METRICS = ("efficacy", "paraphrase", "neighbourhood", "score", "fluency", "consistency", "loss_change",
           "p_new_after", "p_true_after", "seconds")


@dataclass(frozen=True)
class EditScores:
    """The metrics of one edit on one case (see the module docstring)."""

    status: str
    efficacy: float
    paraphrase: float
    neighbourhood: float
    score: float
    fluency: float
    consistency: float
    loss_change: float
    p_new_before: float
    p_true_before: float
    p_new_after: float
    p_true_after: float

    def as_dict(self) -> dict:
        return asdict(self)


def ngram_entropy(text: str, ns: Sequence[int] = (2, 3), weights: Sequence[float] = (2 / 3, 4 / 3)) -> float:
    """CounterFact's fluency of one text: ``sum_n w_n H_n / sum w_n``... as its code computes it, the weighted mean
    ``mean(w_n * H_n)`` of the entropies (bits) of the word n-gram frequency distributions."""
    words = text.split()
    ents = []
    for n, w in zip(ns, weights):
        grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
        total = sum(grams.values())
        h = -sum(c / total * math.log2(c / total) for c in grams.values()) if total else 0.0
        ents.append(w * h)
    return sum(ents) / len(ents)


@torch.no_grad()
def sequence_logprobs(model: HookedTransformer, prompts: Sequence[str], objects: Sequence[str]
                      ) -> Float[Tensor, " n"]:
    """``log P(object | prompt)`` per pair, summed over the object's tokens (teacher-forced), float64."""
    rows, reads, targets = [], [], []
    for p, o in zip(prompts, objects):
        toks = to_tokens(model, p)[0].tolist()
        ids = to_tokens(model, o, prepend_bos=False)[0].tolist()
        rows.append(toks + ids[:-1])
        reads.append([len(toks) - 1 + j for j in range(len(ids))])
        targets.append(ids)
    out = []
    for i in range(0, len(rows), 16):
        chunk = rows[i:i + 16]
        width = max(map(len, chunk))
        batch = torch.tensor([r + [pad_id(model)] * (width - len(r)) for r in chunk], device=model.cfg.device)
        logits = model(batch, return_type="logits").double()
        for j, (where, t) in enumerate(zip(reads[i:i + 16], targets[i:i + 16])):
            lp = logits[j, where].log_softmax(-1)
            out.append(lp[torch.arange(len(t)), torch.tensor(t)].sum())
    return torch.stack(out).cpu()


@torch.no_grad()
def generate(model: HookedTransformer, prompt: str, n_tokens: int, seed: int) -> str:
    """``n_tokens`` tokens sampled from the top 5 after ``prompt`` (seeded), as text."""
    gen = torch.Generator().manual_seed(seed)
    toks = to_tokens(model, prompt)[0].tolist()
    start = len(toks)
    for _ in range(n_tokens):
        logits = model(torch.tensor([toks[-model.cfg.n_ctx:]], device=model.cfg.device))[0, -1].float().cpu()
        top = logits.topk(5)
        toks.append(int(top.indices[torch.multinomial(top.values.softmax(-1), 1, generator=gen)]))
    return model.to_string(torch.tensor(toks[start:]))


@torch.no_grad()
def heldout_loss(model: HookedTransformer, texts: Sequence[str]) -> float:
    """Mean next-token loss over ``texts`` (each cut to the model's context)."""
    total, count = 0.0, 0
    for t in texts:
        toks = to_tokens(model, t)[:, : model.cfg.n_ctx]
        if toks.shape[1] < 2:
            continue
        loss = model(toks, return_type="loss", loss_per_token=True)
        total += float(loss.double().sum())
        count += loss.numel()
    return total / max(count, 1)


def _probe(model: HookedTransformer, case: EditCase) -> dict:
    f = case.fact
    prompts = [f.prompt] * 2 + [p for p in case.paraphrases for _ in range(2)] + [g.prompt for g in case.neighbours
                                                                                    for _ in range(2)]
    objects = [case.new, f.answer] + [o for _ in case.paraphrases for o in (case.new, f.answer)] + \
        [o for g in case.neighbours for o in (case.new, g.answer)]
    lp = sequence_logprobs(model, prompts, objects).reshape(-1, 2)  # [prompt, (new, own answer)]
    return {"lp": lp}


def evaluate_edit(model: ModelLike, edit: Edit, case: EditCase, *, heldout: Optional[Sequence[str]] = None,
                  generate_tokens: int = 20, seed: int = 0, before: Optional[dict] = None) -> EditScores:
    """CounterFact's metrics of ``edit`` on ``case`` (see the module docstring); ``model`` is the unedited model
    (the edit is applied for the measurement and undone). ``heldout``: texts for the loss change (None: not
    measured, NaN). ``before``: the unedited model's measurements, to reuse across methods
    (:func:`edit_table`)."""
    model = as_model(model)
    if not isinstance(edit, Edit):
        raise InputError(f"edit must be an Edit (editing.rome / memit / fine_tune); got {shorten(edit)}.")
    if not isinstance(case, EditCase):
        raise InputError(f"case must be an EditCase (circuitlab.tasks.counterfact); got {shorten(case)}.")
    generate_tokens = check_count(generate_tokens, "generate_tokens")
    seed = check_seed(seed)
    if before is None:
        before = _before(model, case, heldout)
    with edit.applied(model):
        after = _probe(model, case)
        texts = [generate(model, g, generate_tokens, seed + i) for i, g in enumerate(case.generation)]
        loss = heldout_loss(model, heldout) if heldout else float("nan")
    lp0, lp1 = before["lp"], after["lp"]
    n_par = len(case.paraphrases)
    eff = float(lp1[0, 0] > lp1[0, 1])
    par = float((lp1[1:1 + n_par, 0] > lp1[1:1 + n_par, 1]).double().mean())
    nei = float((lp1[1 + n_par:, 1] > lp1[1 + n_par:, 0]).double().mean())
    parts = [eff, par, nei]
    score = 0.0 if min(parts) <= 0 else len(parts) / sum(1 / x for x in parts)
    fluency = sum(ngram_entropy(t) for t in texts) / len(texts)
    word = case.new.strip().lower()
    consistency = sum(word in t.lower() for t in texts) / len(texts)
    moved = float((lp1[:, 0] - lp0[:, 0]).abs().max())
    scale = float(lp0[:, 0].abs().max()) + 1.0
    unchanged = edit.norm() == 0.0 or moved <= 1e-6 * scale
    status = "unchanged" if unchanged else ("succeeded" if eff == 1.0 else "failed")
    return EditScores(status, eff, par, nei, score, fluency, consistency,
                      loss - before["loss"] if heldout else float("nan"),
                      math.exp(float(lp0[0, 0])), math.exp(float(lp0[0, 1])), math.exp(float(lp1[0, 0])),
                      math.exp(float(lp1[0, 1])))


def _before(model: HookedTransformer, case: EditCase, heldout: Optional[Sequence[str]]) -> dict:
    out = _probe(model, case)
    out["loss"] = heldout_loss(model, heldout) if heldout else float("nan")
    return out


def edit_table(model: ModelLike, cases: Sequence[EditCase], methods: dict[str, Callable[[EditCase], Edit]], *,
               heldout: Optional[Sequence[str]] = None, generate_tokens: int = 20, seed: int = 0,
               progress: bool = False) -> Result:
    """The CounterFact-style table: each method (``{name: case -> Edit}``, e.g. ROME, MEMIT and fine-tuning with
    their settings bound) edits each case alone, from the original weights; the metrics are averaged over cases.

    Returns a Result ``[method, metric]`` (:data:`METRICS`; ``seconds``: per edit), ``meta["per_case"]``:
    ``{method: [scores as dicts]}``, ``meta["status"]``: ``{method: {status: count}}`` (unchanged edits are
    counted there and left out of no average: their efficacy is 0), ``meta["fluency_before"]``: the unedited
    model's fluency on the same prompts.
    """
    from circuitlab.core import progress_bar

    model = as_model(model)
    if not isinstance(cases, Sequence) or isinstance(cases, str) or not cases \
            or not all(isinstance(c, EditCase) for c in cases):
        raise InputError("cases must be a non-empty list of EditCase (circuitlab.tasks.counterfact).")
    if not isinstance(methods, dict) or not methods:
        raise InputError("methods must be a dict {name: function(case) -> Edit}.")
    per: dict[str, list[dict]] = {m: [] for m in methods}
    fluency0 = []
    for case in progress_bar(cases, progress=progress, desc="editing cases"):
        before = _before(model, case, heldout)
        fluency0.append(sum(ngram_entropy(generate(model, g, generate_tokens, seed + i))
                            for i, g in enumerate(case.generation)) / len(case.generation))
        for name, make in methods.items():
            t0 = time.perf_counter()
            edit = make(case)
            seconds = time.perf_counter() - t0
            s = evaluate_edit(model, edit, case, heldout=heldout, generate_tokens=generate_tokens, seed=seed,
                              before=before).as_dict()
            s["seconds"] = seconds
            per[name].append(s)
    values = torch.tensor([[sum(r[k] for r in per[m]) / len(per[m]) for k in METRICS] for m in methods],
                          dtype=torch.float64)
    status = {m: dict(Counter(r["status"] for r in per[m])) for m in methods}
    return Result(values, ("method", "metric"), {"method": list(methods), "metric": list(METRICS)},
                  title=f"CounterFact-style edit evaluation over {len(cases)} facts", metric="mean over cases",
                  model=model_name(model), task=f"{len(cases)} counterfactual edits",
                  meta={"per_case": per, "status": status, "fluency_before": sum(fluency0) / len(fluency0),
                        "cases": [c.request for c in cases]})
