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
# # Induction heads, from detection to ablation
#
# An **induction head** completes the pattern `[A][B] … [A] → [B]`: at the second `A` it attends to the token that
# followed the first `A` and copies it into the prediction. It cannot do this alone: its *keys* must know which token
# came *before* each position, and that information is written by a **previous-token head** in an earlier layer.
# The pair is the simplest circuit found in real transformers (Elhage et al. 2021; Olsson et al. 2022).
#
# We find it in `zoo/attn-only-2l`, a 2-layer attention-only transformer bundled with circuitlab (trained offline
# on text with repeats), with three kinds of evidence:
#
# 1. **behaviour** — the model predicts repeated tokens far better than chance;
# 2. **attention** — which heads attend where an induction or previous-token head would;
# 3. **weights** — how strongly the induction head's keys read the previous-token head (K-composition);
# 4. **causation** — removing the heads destroys the behaviour (ablation).

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
model = cl.load_model("zoo/attn-only-2l")
print(cl.zoo_card("zoo/attn-only-2l")["description"])
cfg = model.cfg
print(f"{cfg.n_layers} layers x {cfg.n_heads} heads, d_model {cfg.d_model}, vocabulary {cfg.d_vocab}, "
      f"context {cfg.n_ctx}")

# %% [markdown]
# ## 1. Behaviour: the model copies in context
#
# The test input is a random sequence followed by an exact repeat: `[BOS] r_1 … r_n r_1 … r_n`. Nothing predicts the
# first copy (the loss should sit near chance, `ln(d_vocab)`); a model that copies in context predicts the second
# copy almost perfectly.

# %%
from circuitlab import induction

rep = induction.repeated_sequences(model, seq_len=30, n_seqs=16, seed=0)
loss = model(rep.tokens, return_type="loss", loss_per_token=True)  # [batch, pos - 1]: predicting token i + 1
n, p = rep.seq_len, rep.prefix
first = loss[:, p : p + n - 1].mean().item()           # predicting r_2..r_n of the first copy
second = loss[:, p + n : p + 2 * n - 1].mean().item()  # predicting r_2..r_n of the second copy
chance = torch.log(torch.tensor(float(cfg.d_vocab))).item()
print(f"loss on the first copy {first:.2f}, on the second copy {second:.2f} nats (chance {chance:.2f})")

# %% [markdown]
# The loss of predicting each token of one sequence, by position: high on the first copy, low on the second. (An
# interactive view of the same, each token coloured by its loss, is
# `render.colored_tokens(str_tokens(model, rep.tokens[0])[1:], loss[0])`; this notebook keeps one interactive view,
# the attention patterns below, and draws the rest as images.)

# %%
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(8, 2.4))
ax.bar(range(1, loss.shape[1] + 1), loss[0].tolist(), color="#2563eb")
ax.axvline(p + n - 0.5, color="#9ca3af", linestyle="--")
ax.axhline(chance, color="#dc2626", linewidth=1, label=f"chance, ln {cfg.d_vocab}")
ax.set(xlabel="position of the predicted token", ylabel="loss (nats)", title="Per-token loss, one repeated sequence")
ax.legend(loc="upper right", frameon=False)
plt.show()

# %% [markdown]
# ## 2. Attention: which heads behave like induction and previous-token heads
#
# `induction.head_scores` measures, for every head, the attention each query pays to its *target*: for the induction
# score the token after the earlier occurrence of the query's token, for the previous-token score the position just
# before. A score of 1 means all attention goes to the target; uniform attention over ~60 tokens scores ~0.02.

# %%
ind = induction.head_scores(model, "induction", seed=0)
ind

# %%
prev = induction.head_scores(model, "previous_token", seed=0)
prev

# %% [markdown]
# **Check by hand.** Take sequences whose random half has no repeated token. Then an induction head's only target at
# position `i` of the second copy is position `i - n + 1`, so its score is the mean of one diagonal of the attention
# pattern, which we can read straight from TransformerLens's cache:

# %%
n, batch = 30, 16
g = torch.Generator().manual_seed(0)
segment = torch.stack([torch.randperm(cfg.d_vocab - 1, generator=g)[:n] + 1 for _ in range(batch)])  # no repeats
bos = torch.full((batch, 1), induction.bos_token_id(model))
toks = torch.cat([bos, segment, segment], dim=1)

scores = induction.head_scores(model, "induction", tokens=toks)
_, cache = model.run_with_cache(toks)
q = torch.arange(1 + n, 1 + 2 * n)  # queries in the second copy
by_hand = torch.stack([cache["pattern", l][:, :, q, q - n + 1].mean(dim=(0, 2)) for l in range(cfg.n_layers)])
print("largest difference between head_scores and the diagonal read by hand:",
      (scores.values - by_hand).abs().max().item())

# %% [markdown]
# All heads on one shorter sequence (15 random tokens, repeated), interactive (circuitsvis: hover a thumbnail to
# enlarge it; a page that does not run JavaScript, such as a repository's notebook preview, shows nothing here).
# Look for the off-diagonal stripe `n - 1` below the main diagonal (induction) and the first sub-diagonal
# (previous token).

# %%
short = induction.repeated_sequences(model, seq_len=15, n_seqs=1, seed=1)
render.attention_patterns(model, short.tokens, task="one repeated random sequence of 15 tokens")

# %% [markdown]
# The same patterns as an image, for the best induction head and the best previous-token head:

# %%
import matplotlib.pyplot as plt

_, short_cache = model.run_with_cache(short.tokens)
(li, hi), _ = ind.top(1)[0]
(lp, hp), _ = prev.top(1)[0]
fig, axes = plt.subplots(1, 2, figsize=(8, 3.8))
for ax, (l, h, kind) in zip(axes, [(li, hi, "induction"), (lp, hp, "previous-token")]):
    ax.imshow(short_cache["pattern", l][0, h].numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set(title=f"L{l}H{h}, the best {kind} head", xlabel="key position", ylabel="query position")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 3. Weights: K-composition
#
# A previous-token head in layer 0 writes "the token before me was `A`" into each position; the induction head's
# keys must read it. The **K-composition score** `|W_QK(reader)ᵀ W_OV(writer)|_F / (|W_QK| |W_OV|)` measures how much
# of a writer head's output space a reader's keys use — from the weights alone, no data.

# %%
(L, H), _ = ind.top(1)[0]                        # the best induction head
kc = induction.composition_scores(model, "K")   # [writer layer, writer head, reader layer, reader head]
into_best = cl.Result(kc.values[:, :, L, H], ("layer", "head"), title=f"K-composition into L{L}H{H}",
                      metric=kc.metric, model="zoo/attn-only-2l", task="weights")
into_best

# %% [markdown]
# ## 4. Causation: ablate the heads
#
# Detection and weights are correlational. The test that counts is causal: replace a head's output by its mean
# (mean-ablation) and measure the in-context loss on the second copy. If the heads we found *are* the mechanism,
# the loss should jump towards chance; ablating an unremarkable head should do little.

# %%
induction_heads = [idx for idx, v in ind.top(ind.values.numel()) if v > 0.3]
abl = induction.ablation_effect(model, induction_heads, method="mean", seed=0)
print(f"induction heads {induction_heads}:")
for label, v in zip(abl.labels["ablated"], abl.values.tolist()):
    print(f"  ablate {label:<24} in-context loss {v:.2f}")

# control: the head that looks least like either an induction or a previous-token head
neither = (ind.values + prev.values).flatten().argmin().item()
control = (neither // cfg.n_heads, neither % cfg.n_heads)
ctrl = induction.ablation_effect(model, [control], method="mean", seed=0)
print(f"control: ablate L{control[0]}H{control[1]} -> {ctrl.values[-1].item():.2f} (unablated {ctrl.baseline:.2f})")

# %% [markdown]
# ## Everything at once
#
# `find_induction_circuit` runs all of the above with thresholds, and renders as one section of a report.

# %%
circuit = induction.find_induction_circuit(model, seed=0)
print(circuit)

# %%
path = render.report([circuit, into_best], OUT / "induction_report.html", title="Induction circuit of zoo/attn-only-2l")
print(f"wrote {path.name}")


# %% [markdown]
# ## Weights, continued: the heads' OV circuits
#
# K-composition read the weights to find how the heads connect; the weights also say what each head writes. An
# induction head's **OV circuit** `W_E W_V W_O W_U`
# should copy: each token's row ranks that same token first. `copying_scores` sums the eigenvalues of the circuit
# (positive: copying); `ov_circuit` lists each source token's top outputs.

# %%
from circuitlab.weights import copying_scores, ov_circuit

copying = copying_scores(model, path="ov")
(L, H), _ = ind.top(1)[0]  # the best induction head
for head, score in zip(copying.heads, copying.copying.values.tolist()):
    print(f"{str(head):>8}: OV copying score {score:+.3f}")
print(f"the best induction head is L{L}H{H}")

# %%
ov = ov_circuit(model, (L, H), tokens=["t5", "t17", "t42", "t99"], k=5)  # the model's word-level tokens
ov

# %% [markdown]
# ## Training dynamics: the induction bump
#
# `zoo/attn-only-2l` ships with measurements at checkpoints of its training: the loss, the in-context-learning score
# (loss late in a context minus loss early in it) and each head's prefix-matching score. Olsson et al. saw induction
# heads form in a short window of training in which the ICL score also drops; `phase_changes` looks for that window
# in each curve and says whether the two coincide.

# %%
from circuitlab.dynamics import load_curves, phase_changes

curves = load_curves("zoo/attn-only-2l")
phase = phase_changes(curves)
for name, change in (("best prefix-matching score", phase.induction), ("ICL score", phase.icl)):
    print(f"{name}: " + (f"changes between {change.start:,.0f} and {change.end:,.0f} training tokens "
                         f"(a change of {change.jump:.2f})" if change.found else "no phase change"))
print("the two windows coincide:", phase.coincide)

# %%
from IPython.display import HTML

from circuitlab.render.dynamics import curves_svg

HTML(curves_svg(curves, phase))
