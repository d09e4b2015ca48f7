# ---
# jupyter:
#   circuitlab:
#     needs_network: false
#     zoo_models:
#     - zoo/attn-only-2l
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Activation patching: from the residual stream to heads to paths
#
# Activation patching asks a causal question: *if this one activation had its value from the clean run, would the
# model's answer come back?* We run the model on a **corrupted** prompt, splice in one activation from the **clean**
# prompt, and measure how much of the clean behaviour returns (TransformerLens calls this *denoising*).
#
# The task is copying, the job of the induction circuit in `zoo/attn-only-2l`:
#
# - **clean**: `[BOS] r_1 … r_n r_1 … r_k` — the model should continue with `r_{k+1}`;
# - **corrupted**: the same, with the first copy's `r_{k+1}` replaced by a fresh token `x` — now the model
#   should continue with `x`.
#
# The metric is the logit difference `logit(r_{k+1}) − logit(x)` at the last position: positive on clean,
# negative on corrupted.

# %%
import os
import warnings
from pathlib import Path

import torch

# TransformerLens imports tqdm.auto, which warns "IProgress not found" where ipywidgets is missing and then draws
# plain text progress bars, which is all we need (install ipywidgets for widget bars: `make notebooks` does)
warnings.filterwarnings("ignore", message="IProgress not found")

import circuitlab as cl
from circuitlab import render

# files this notebook writes (reports) go here
OUT = Path(os.environ.get("CIRCUITLAB_NOTEBOOK_OUT", "."))
_ = torch.set_grad_enabled(False)  # a statement, so that the cell shows no output

# %%
from circuitlab import patching
from circuitlab.metrics import LogitDiff

from circuitlab.tasks.copying import copy_task

model = cl.load_model("zoo/attn-only-2l")
task = copy_task(model)  # circuitlab.tasks.copying: 8 prompts, n = 20, k = 14, seed 0
clean, corrupted, answer, wrong, changed = task.clean, task.corrupted, task.answer, task.wrong, task.changed_pos
print(task.description)
metric = LogitDiff(answer, wrong)
clean_value, corrupted_value = metric(model(clean)).item(), metric(model(corrupted)).item()
print(f"prompts of {clean.shape[1]} tokens; corrupted position {changed}")
print(f"logit difference: clean {clean_value:+.2f}, corrupted {corrupted_value:+.2f}")

# %% [markdown]
# ## 1. Residual stream: where does the answer live?
#
# Patch the residual stream entering each layer (`resid_pre`) at one position at a time.

# %%
resid = patching.sweep(model, clean, corrupted, metric, site="resid_pre", by=("layer", "pos"))
resid

# %% [markdown]
# Only the corrupted position matters at layer 0 — every other position has identical inputs in the two prompts,
# so patching it changes nothing (an exact identity worth checking). Patching the last position at a later layer
# restores the answer only if something has already moved it there.
#
# **Check against TransformerLens.** `transformer_lens.patching` computes the same sweep with one full forward pass per
# patch; circuitlab batches the patches and computes only the logits the metric reads. The numbers agree:

# %%
from transformer_lens import patching as tl_patching

_, clean_cache = model.run_with_cache(clean)
reference = tl_patching.get_act_patch_resid_pre(model, corrupted, clean_cache, metric)
print("largest difference from TransformerLens:", (reference - resid.values).abs().max().item())
others = torch.cat([resid.values[0, :changed], resid.values[0, changed + 1 :]])
print("layer 0, unchanged positions:", torch.allclose(others, torch.tensor(corrupted_value), atol=1e-4))

# %% [markdown]
# ## 2. Heads: who moves it?
#
# Patch each head's output (`z`, at every position at once), then its values, keys and queries separately. An
# induction head moves the answer by *attending* to the position after the first `r_k` (its key there must say
# "previous token was `r_k`") and *copying* the token there (its value carries `r_{k+1}`). Our corruption changes the
# token at that position, so it should act through the values.

# %%
heads = patching.sweep(model, clean, corrupted, metric, site="z", by=("layer", "head"))
heads

# %%
by_input = {s: patching.sweep(model, clean, corrupted, metric, site=s, by=("layer", "head"), progress=False)
            for s in ("q", "k", "v")}
(L, H), _ = heads.top(1)[0]
for s, res in by_input.items():
    print(f"L{L}H{H}: patching its {s} gives logit difference {res.values[L, H].item():+.2f}")

# %% [markdown]
# ## 3. Paths: direct effects, and the previous-token head feeding the induction heads' keys
#
# `path_patch` patches only the paths from *senders* to *receivers*. With `receivers="resid_final"` it measures each
# head's **direct** effect on the logits (everything downstream of it frozen), the causal counterpart of direct
# logit attribution. The layer-1 heads write the answer; the layer-0 heads have no direct effect at all here.

# %%
direct = patching.path_patch(model, clean, corrupted, metric, senders="heads", receivers="resid_final")
direct

# %% [markdown]
# The layer-0 heads matter in a different way. To see it, corrupt the *first copy of `r_k`* instead (the token the
# query matches). The induction head at the last position (`r_k`) looks for the position whose *previous token*
# was `r_k`; a previous-token head writes that fact into position `k + 1`, and the induction head's **keys** read
# it (K-composition). Metric: the log-probability of `r_{k+1}`.

# %%
from circuitlab.metrics import Probability

key_corrupted = clean.clone()
key_corrupted[:, changed - 1] = wrong           # the first copy of r_k becomes a fresh token
log_p = Probability(answer, log=True)
resid_k = patching.sweep(model, clean, key_corrupted, log_p, site="resid_pre", by=("layer", "pos"), progress=False)
window = resid_k.values[:, changed - 2 : changed + 2]
print("log p(answer) patching resid_pre, positions", list(range(changed - 2, changed + 2)))
for layer, row in enumerate(window.tolist()):
    print(f"  layer {layer}: " + "  ".join(f"{v:+.2f}" for v in row))

# %% [markdown]
# At layer 0 the information sits at `r_k`'s own position (`changed - 1`); by layer 1 it has moved one step right,
# to `changed`: a layer-0 head copied it from the previous position. Path patching names the heads and the route —
# from each layer-0 head into the **keys** of the layer-1 heads, against their queries and values as controls:

# %%
layer0 = [(0, h) for h in range(model.cfg.n_heads)]
layer1 = range(model.cfg.n_heads)
for part in ("k", "q", "v"):
    receivers = [(1, h, part) for h in layer1]
    each = patching.path_patch(model, clean, key_corrupted, log_p, senders="heads", receivers=receivers, progress=False)
    together = patching.path_patch(model, clean, key_corrupted, log_p, senders=layer0, receivers=receivers,
                                   progress=False)
    print(f"layer-0 heads -> layer-1 {part}: each " + " ".join(f"{v:+.2f}" for v in each.values[0].tolist())
          + f"; all together {together.values.item():+.2f}"
          f"  (clean {each.meta['clean_value']:+.2f}, corrupted {each.meta['corrupted_value']:+.2f})")

# %%
into_keys = patching.path_patch(model, clean, key_corrupted, log_p, senders="heads",
                                receivers=[(1, h, "k") for h in layer1])
into_keys

# %% [markdown]
# ## 4. Attribution patching: a linear estimate of every patch at once
#
# One forward and one backward pass estimate every entry of a sweep to first order. It is an approximation —
# compare it with the exact sweep before trusting it:

# %%
approx = patching.attribution(model, clean, corrupted, metric, site="z", by=("layer", "head"))
exact = heads.values.flatten()
est = approx.values.flatten()
corr = torch.corrcoef(torch.stack([exact, est]))[0, 1].item()
largest = (exact - est).abs().max().item()
print(f"attribution vs exact head patching: correlation {corr:.3f}, largest error {largest:.2f}")
approx

# %%
path = render.report([resid, heads, direct, resid_k, into_keys, approx], OUT / "patching_report.html",
                     title="Activation patching on zoo/attn-only-2l")
print(f"wrote {path.name}")
