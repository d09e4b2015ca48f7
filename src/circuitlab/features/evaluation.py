"""Evaluating a sparse autoencoder: the standard metrics of SAEBench and SAELens, on held-out text.

Over the tokens of ``texts`` (BOS positions left out of the activation metrics, as in training):

- **L0**: latents firing per token, averaged; **MSE**: ``||x - x_hat||^2 / d_in`` per token, averaged;
- **explained variance**: ``1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2`` (1 - FVU; the mean over the
  evaluated tokens);
- **cross-entropy loss recovered** (next-token loss over every predicted position of each text; BOS kept, below):
  ``(CE_ablated - CE_spliced) / (CE_ablated - CE_clean)`` with the hook's activation replaced by zeros (against
  zero ablation) or by its mean over the evaluated tokens (against mean ablation); 1 is as good as the model, 0
  as bad as the ablation;
- **KL** (nats per token, averaged) of the next-token distribution with the SAE spliced in
  (:func:`~circuitlab.features.sae.splice`), from the clean one; with the error term it is zero up to rounding
  (reported, as a check of the splice);
- **dead** / **dense** fractions: latents that never fire on the evaluated tokens / fire on more than
  ``dense_above`` of them (0.1, SAEBench's rule for "dense"); the **density histogram**: each latent's firing
  frequency, binned by log10 (never-firing latents in their own bin).

**The BOS position** keeps its clean activation in every replacement (SAE, zero, mean): the SAEs are not
trained on it (its residual stream is an outlier, :mod:`~circuitlab.features.training`), and replacing it would
measure that choice rather than the SAE. (SAELens's evaluation replaces every position; where a model has no BOS
every position is replaced here too.)

One pass over the data: each batch runs the model clean (reading the hook), then with the hook replaced four ways
(reconstruction, reconstruction + error, zeros, and the mean, which is measured in a first pass over the hook
alone). Memory: batches of texts under ``max_memory`` (:func:`circuitlab.engine.collect.batches_by_length`);
the logits of one batch at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from jaxtyping import Float
from torch import Tensor

from circuitlab.core import (DEFAULT_MAX_MEMORY, as_model, check_max_memory, check_number, check_texts, model_name,
                             progress_bar, row_bytes)
from circuitlab.errors import InputError
from circuitlab.features.sae import check_sae, sae_hook
from circuitlab.results import Result


@dataclass(frozen=True)
class SAEEvaluation:
    """What :func:`evaluate_sae` measured (module notes for each number). ``density``: per latent, the fraction
    of evaluated tokens it fired on (a :class:`~circuitlab.results.Result` along ``"latent"``); ``histogram``:
    latent counts per log10-density bin (axis ``"bin"``, labels ``"never"``, ``"1e-5..1e-4"``, ...)."""

    l0: float
    mse: float
    explained_variance: float
    ce_clean: float
    ce_spliced: float
    ce_spliced_with_error: float
    ce_zero_ablation: float
    ce_mean_ablation: float
    ce_loss_recovered_zero: float
    ce_loss_recovered_mean: float
    kl_spliced: float
    kl_spliced_with_error: float
    dead_fraction: float
    dense_fraction: float
    tokens: int
    density: Result
    histogram: Result

    def summary(self) -> dict:
        """The scalar metrics as a plain dict (rounded to 4 significant digits), for cards and tables."""
        out = {}
        for k, v in self.__dict__.items():
            if isinstance(v, float):
                out[k] = float(f"{v:.4g}")
            elif isinstance(v, int):
                out[k] = v
        out["density_histogram"] = dict(zip(self.histogram.labels["bin"], [int(c) for c in self.histogram.values]))
        return out


def _recovered(ablated: float, spliced: float, clean: float) -> float:
    gap = ablated - clean
    return float("nan") if abs(gap) < 1e-12 else (ablated - spliced) / gap


def density_histogram(density: Float[Tensor, " latent"], lowest_exponent: int = -6) -> tuple[list[str], list[int]]:
    """Latent counts by log10 of firing frequency: ``"never"``, then ``"<1e-6"``, ``"1e-6..1e-5"``, ...,
    ``"1e-1..1"``."""
    low = lowest_exponent
    labels, counts = ["never", f"<1e{low}"], [int((density == 0).sum()), int(((density > 0) &
                                                                             (density < 10.0 ** low)).sum())]
    for e in range(low, 0):
        lo, hi = 10.0 ** e, 10.0 ** (e + 1)
        labels.append(f"1e{e}..{'1' if e == -1 else f'1e{e + 1}'}")
        counts.append(int(((density >= lo) & (density < hi if e < -1 else density <= hi)).sum()))
    return labels, counts


@torch.no_grad()
def evaluate_sae(model: Any, sae: Any, texts: Any, *, hook_name: Optional[str] = None, dense_above: float = 0.1,
                 max_memory: int = DEFAULT_MAX_MEMORY, progress: bool = False) -> SAEEvaluation:
    """The standard metrics of ``sae`` at its hook of ``model`` over ``texts`` (module notes).

    Args:
        model: a model or a registry name. sae: an :class:`~circuitlab.features.sae.SAE`, a shipped name
            (``"toy-lm/res-2"``) or a folder in SAELens's format.
        texts: held-out texts (each tokenized with BOS, cut to the context length).
        hook_name: the hook (default the SAE's own); its width must be the SAE's ``d_in``.
        dense_above: the firing frequency above which a latent counts as dense.
        max_memory: bytes of activations per forward pass (:func:`circuitlab.core.check_max_memory`).
    """
    from circuitlab.engine.collect import batches_by_length, pad_right, pad_token, run_hooks, stop_layer, token_rows

    model = as_model(model)
    sae = check_sae(sae)
    name = sae_hook(model, sae, hook_name)
    texts = check_texts(texts, "texts")
    dense_above = check_number(dense_above, "dense_above", low=0, high=1, low_open=True)
    max_memory = check_max_memory(max_memory)
    rows = list(token_rows(model, texts, what="evaluate_sae"))
    if sum(len(r) - 1 for r in rows) < 1:
        raise InputError("texts: every text is a single token; give texts of at least two tokens.")
    vocab = model.cfg.d_vocab_out
    per_row = lambda n: row_bytes(model, n, logits=2 * vocab)  # noqa: E731
    batches = batches_by_length([len(r) for r in rows], per_row, max_memory)
    pad = pad_token(model)
    device = model.cfg.device
    has_bos = getattr(getattr(model, "tokenizer", None), "bos_token_id", None) is not None

    def batch_tokens(batch):
        toks = pad_right([rows[i] for i in batch], pad)
        real = torch.arange(toks.shape[1]) < torch.tensor([len(rows[i]) for i in batch])[:, None]
        return toks.to(device), real.to(device)

    # pass 1: the hook's mean activation over the evaluated (non-BOS) tokens
    total, count = None, 0
    for batch in batches:
        toks, real = batch_tokens(batch)
        keep = real.clone()
        if has_bos:
            keep[:, 0] = False
        got = {}

        def grab(act, hook=None):
            got["a"] = act.reshape(*act.shape[:2], -1)

        run_hooks(model, toks, [(name, grab)], stop=stop_layer(model, [name]))
        a = got["a"][keep].double()
        total = a.sum(0) if total is None else total + a.sum(0)
        count += a.shape[0]
    mean = (total / count).float()

    sums = {k: 0.0 for k in ("sq_err", "sq_dev", "l0", "ce_clean", "ce_sae", "ce_err", "ce_zero", "ce_mean",
                             "kl_sae", "kl_err")}
    fired = torch.zeros(sae.cfg.d_sae, dtype=torch.long)
    n_tok, n_pred = 0, 0
    for batch in progress_bar(batches, progress=progress, desc="evaluate sae", unit="batch"):
        toks, real = batch_tokens(batch)
        keep = real.clone()
        if has_bos:
            keep[:, 0] = False
        pred = real[:, 1:] & real[:, :-1]  # positions whose next token is real
        target = toks[:, 1:]
        state: dict[str, Tensor] = {}

        def read(act, hook=None):
            state["x"] = act.reshape(*act.shape[:2], -1).clone()

        def replace(mode):
            def fn(act, hook=None):
                x = act.reshape(*act.shape[:2], -1)
                if mode == "sae":
                    new = sae(x.to(sae.W_enc.dtype))
                elif mode == "err":
                    new = x
                elif mode == "zero":
                    new = torch.zeros_like(x)
                else:
                    new = mean.to(x.dtype).expand_as(x)
                if has_bos:  # the BOS position keeps its activation (module notes)
                    new = torch.cat([x[:, :1], new[:, 1:]], dim=1)
                return new.to(act.dtype).reshape(act.shape)
            return fn

        def ce_and_logp(logits):
            logp = torch.log_softmax(logits.float(), dim=-1)
            nll = -logp[:, :-1].gather(-1, target[..., None])[..., 0]
            return float(nll[pred].sum()), logp[:, :-1][pred]

        clean_logits = model.run_with_hooks(toks, fwd_hooks=[(name, read)])
        ce, logp_clean = ce_and_logp(clean_logits)
        sums["ce_clean"] += ce
        x = state["x"][keep].to(sae.W_enc.dtype)
        f = sae.encode(x)
        recon = sae.decode(f)
        if not torch.isfinite(x).all():
            raise InputError(f"the activations at hook {name!r} hold NaN or infinite values; the SAE cannot be "
                             "evaluated on them. Check the model's weights (circuitlab.core.check_weights_finite).")
        sums["sq_err"] += float((x - recon).double().pow(2).sum())
        sums["sq_dev"] += float((x - mean).double().pow(2).sum())
        sums["l0"] += float((f > 0).sum())
        fired += (f > 0).sum(0)
        n_tok += x.shape[0]
        p_clean = logp_clean.exp()
        for mode, ce_key, kl_key in (("sae", "ce_sae", "kl_sae"), ("err", "ce_err", "kl_err"),
                                     ("zero", "ce_zero", None), ("mean", "ce_mean", None)):
            if mode == "err":  # through splice itself: its error term must restore the clean output
                from circuitlab.features.sae import splice

                with splice(model, sae, name, error_term=True):
                    logits = model(toks)
            else:
                logits = model.run_with_hooks(toks, fwd_hooks=[(name, replace(mode))])
            ce, logp = ce_and_logp(logits)
            sums[ce_key] += ce
            if kl_key:
                sums[kl_key] += float((p_clean * (logp_clean - logp)).sum())
        n_pred += int(pred.sum())
    density = fired.double() / max(1, n_tok)
    labels, counts = density_histogram(density)
    ce = {k: sums[k] / max(1, n_pred) for k in ("ce_clean", "ce_sae", "ce_err", "ce_zero", "ce_mean")}
    meta = {"model": model_name(model), "hook": name, "sae": repr(sae), "tokens": n_tok}
    d_in = sae.cfg.d_in
    return SAEEvaluation(
        l0=sums["l0"] / n_tok, mse=sums["sq_err"] / (n_tok * d_in),
        explained_variance=1 - sums["sq_err"] / max(sums["sq_dev"], 1e-30),
        ce_clean=ce["ce_clean"], ce_spliced=ce["ce_sae"], ce_spliced_with_error=ce["ce_err"],
        ce_zero_ablation=ce["ce_zero"], ce_mean_ablation=ce["ce_mean"],
        ce_loss_recovered_zero=_recovered(ce["ce_zero"], ce["ce_sae"], ce["ce_clean"]),
        ce_loss_recovered_mean=_recovered(ce["ce_mean"], ce["ce_sae"], ce["ce_clean"]),
        kl_spliced=sums["kl_sae"] / max(1, n_pred), kl_spliced_with_error=sums["kl_err"] / max(1, n_pred),
        dead_fraction=float((fired == 0).double().mean()),
        dense_fraction=float((density > dense_above).double().mean()), tokens=n_tok,
        density=Result(density.float(), ("latent",), meta={**meta, "what": "firing frequency per latent"}),
        histogram=Result(torch.tensor(counts, dtype=torch.float32), ("bin",), labels={"bin": labels},
                         meta={**meta, "what": "latents per log10 firing-frequency bin"}))


__all__ = ["SAEEvaluation", "evaluate_sae", "density_histogram"]
