# ---
# jupyter:
#   circuitlab:
#     needs_network: false
#     zoo_models:
#     - zoo/toy-lm
#     - zoo/attn-only-2l
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Attention as explanation, weights-based circuits and training dynamics
#
# Three families of analyses that read a model without patching it:
#
# 1. **attention as explanation** (`circuitlab.attention`, docs/attention.md): what kinds of attention maps the heads
#    make (Kovaleva et al. 2019), whether attention rollout and flow track token importance better than raw attention
#    (Abnar & Zuidema 2020), and which heads a model can lose (Michel et al. 2019);
# 2. **weights** (`circuitlab.weights`, docs/weights.md): a head's OV and QK circuits read from the weights alone
#    (Elhage et al. 2021), on `zoo/attn-only-2l`;
# 3. **training dynamics** (`circuitlab.dynamics`, docs/dynamics.md): the induction bump of Olsson et al. 2022 in the
#    training curves shipped with `zoo/attn-only-2l`.
#
# Everything here runs on the bundled zoo models in seconds, on CPU.

# %%
import warnings

import torch

# TransformerLens imports tqdm.auto, which warns "IProgress not found" where ipywidgets is missing
warnings.filterwarnings("ignore", message="IProgress not found")

import circuitlab as cl

torch.manual_seed(0)
model = cl.load_model("zoo/toy-lm")
cfg = model.cfg
print(f"zoo/toy-lm: {cfg.n_layers} layers x {cfg.n_heads} heads, d_model {cfg.d_model}, vocabulary {cfg.d_vocab}")

# %% [markdown]
# ## 1. The attention-pattern taxonomy
#
# Kovaleva et al. sort attention maps into five classes: **vertical** (every query attends to the same few keys,
# such as the first token), **diagonal** (to a fixed offset, such as the previous token), **vertical+diagonal**,
# **block** (within the query's own segment) and **heterogeneous**. `pattern_taxonomy` classifies each head's map on
# each input with a classifier trained on synthetic maps of known class and returns the share of inputs per class,
# `[layer, head, class]`. Here on 16 inputs of 32 random tokens in two segments:

# %%
from circuitlab.attention import correlations, head_importance, pattern_taxonomy, prune_curve

tax = pattern_taxonomy(model, "random", n=16, length=32, seed=0)
classes = tax.meta["classes"]
per_layer = torch.as_tensor(tax.meta["per_layer"])
print(f"{'layer':>5}  " + "  ".join(f"{c:>17}" for c in classes))
for l in range(cfg.n_layers):
    print(f"{l:>5}  " + "  ".join(f"{v:>17.2f}" for v in per_layer[l].tolist()))

# %% [markdown]
# ## 2. Rollout and flow against token importance
#
# Raw attention at the last layer says little about which input tokens the output used: information mixes across
# positions layer after layer. **Rollout** multiplies the layers' attention (heads averaged, the residual connection
# as `0.5 I`); **flow** solves a maximum-flow problem on the same graph. Each is compared with the importance of each
# input token measured by ablation (replace it, watch the prediction's log-probability), by Spearman's rank
# correlation per prompt (here 8 windows of 16 tokens of the model's held-out text):

# %%
from circuitlab.reproduce.attention_as_explanation import text_tokens

corr = correlations(model, text_tokens(model, seqs=8, seq_len=16))
for method, mean in corr.meta["mean"].items():
    print(f"{method:>14}: mean Spearman correlation with ablation importance {mean:+.3f}")

# %% [markdown]
# ## 3. Head importance and pruning
#
# Michel et al.'s head importance is the expected absolute gradient of the loss with respect to a mask on each
# head's output; pruning the least important heads first should cost less loss than pruning at random. On 16
# windows of 64 tokens of the model's held-out text:

# %%
tokens = text_tokens(model, seqs=16, seq_len=64, skip=8)
imp = head_importance(model, tokens)
imp

# %%
fractions = (0.0, 0.25, 0.5, 0.75, 1.0)
by_importance = prune_curve(model, tokens, "importance", fractions_pruned=fractions)
at_random = prune_curve(model, tokens, "random", fractions_pruned=fractions, seed=0)
print(f"{'pruned':>6}  {'by importance':>13}  {'at random':>9}   (loss, nats)")
for f, a, b in zip(fractions, by_importance.values.tolist(), at_random.values.tolist()):
    print(f"{f:>6.0%}  {a:>13.3f}  {b:>9.3f}")

# %% [markdown]
# ## 4. Weights: a head's OV and QK circuits
#
# On `zoo/attn-only-2l` (two layers of four heads, no MLPs) an induction head's **OV circuit** `W_E W_V W_O W_U`
# should copy: each token's row ranks that same token first. `copying_scores` sums the eigenvalues of the circuit
# (positive: copying); `ov_circuit` lists each source token's top outputs.

# %%
from circuitlab import induction
from circuitlab.weights import copying_scores, ov_circuit

two = cl.load_model("zoo/attn-only-2l")
copying = copying_scores(two, path="ov")
(L, H), best = induction.head_scores(two, "induction", seed=0).top(1)[0]
for head, score in zip(copying.heads, copying.copying.values.tolist()):
    print(f"{str(head):>8}: OV copying score {score:+.3f}")
print(f"the best induction head is L{L}H{H}")

# %%
ov = ov_circuit(two, (L, H), tokens=["t5", "t17", "t42", "t99"], k=5)  # the model's word-level tokens
ov

# %% [markdown]
# ## 5. Training dynamics: the induction bump
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
