# ---
# jupyter:
#   circuitlab:
#     needs_network: false
#     zoo_models:
#     - zoo/toy-lm
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Concepts and debugging: integrated gradients, TCAV, shortcuts, explanation regularisation
#
# Four tools from the "global explanations" chapter, on `zoo/toy-lm` (a 4-layer model bundled with circuitlab, so
# the notebook runs offline in seconds):
#
# 1. **Integrated gradients** (Sundararajan et al. 2017): how much each token contributes to a metric, with the
#    completeness check (the attributions sum to `metric(input) - metric(baseline)`).
# 2. **TCAV** (Kim et al. 2018): does a human concept ("positive adjectives") push a class score up? With the
#    paper's significance test against random concepts.
# 3. **Shortcut detection** (Du et al. 2021): a classifier trained where a spurious name goes with the positive
#    label; integrated gradients point at the name, and accuracy collapses when the correlation is reversed.
# 4. **Explanation regularisation** (Ross et al. 2017; Joshi et al. 2022, ER-TEST): penalising attribution to the
#    name during training; in-distribution and out-of-distribution accuracy before and after, over seeds.

# %%
import os
import warnings
from pathlib import Path

import torch

warnings.filterwarnings("ignore", message="IProgress not found")

import circuitlab as cl
from circuitlab import render
from circuitlab.concepts import debugging, sentiment
from circuitlab.concepts.gradients import gradient_x_input, integrated_gradients
from circuitlab.metrics import LogitDiff

OUT = Path(os.environ.get("CIRCUITLAB_NOTEBOOK_OUT", "."))
_ = torch.manual_seed(0)
# gradients are the point of this notebook: autograd stays on (the other notebooks turn it off)

# %%
model = cl.load_model("zoo/toy-lm")
prompt = "the cat sat on the"
metric = LogitDiff(" mat", " cat")
ig = integrated_gradients(model, prompt, metric, baseline="pad", steps=32)
for tok, a in ig.prompt(0):
    print(f"{tok!r:>10} {a:+.4f}")
print(f"sum {ig.meta['sum']:.4f}  vs  metric(input) - metric(baseline) {ig.meta['difference']:.4f}  "
      f"(gap {ig.meta['gap']:+.2e})")

# %% [markdown]
# **Completeness, checked by hand.** The metric at the input is one forward pass; at the baseline, every token but
# BOS is replaced by the pad token (the baseline's embedding), another forward pass. Their difference is what the
# attributions must add up to.

# %%
toks = model.to_tokens(prompt)
base = toks.clone()
base[:, 1:] = model.tokenizer.pad_token_id


def diff(t):
    with torch.no_grad():
        logits = model(t)[0, -1]
    return float(logits[model.to_single_token(" mat")] - logits[model.to_single_token(" cat")])


by_hand = diff(toks) - diff(base)
print(f"by hand {by_hand:.4f}; attributions sum to {float(ig.values.sum()):.4f}")
assert abs(by_hand - float(ig.values.sum())) < 0.05 * abs(by_hand)
gxi = gradient_x_input(model, prompt, metric)
print("gradient x input (a first-order estimate):", [round(v, 3) for v in gxi.values[0].tolist()])
ig

# %% [markdown]
# ## TCAV with significance
#
# The sentiment experiment of `circuitlab.concepts.sentiment`: negative held-out reviews, the class score
# `logit(" bad") - logit(" good")` after the review and a cue, and three concepts written as word lists (positive
# adjectives, neutral adjectives, animals) against random word lists. Each concept gets several CAVs, each against a
# different random set; a two-sided t-test compares their TCAV scores with those of random-vs-random CAVs, with
# Bonferroni over the concepts. toy-lm knows no sentiment, so nothing is expected here beyond the mechanics; on
# `smollm2-135m` (finding `tcav-sentiment-concepts`) positive adjectives score 0.52 / 0.01 / 0.02 at layers 7, 15,
# 22 against neutral adjectives' 0.88 / 0.82 / 0.61, and "animals" is not significant at layers 15 and 22.

# %%
tc = sentiment.sentiment_tcav(model, hooks=(1, 3), n_inputs=6, runs=5, set_size=8, n_random=24, words=(" good", " bad"))
print(tc.summary())
tc

# %% [markdown]
# ## Shortcut detection
#
# Reviews signed by a name (`"The film was lovely. Posted by Anna."`); in training, the name **Carl** signs 95% of
# the positive reviews and 5% of the negative ones. The classifier is a linear head on toy-lm's layer-1 residual
# stream (through the final norm, mean-pooled over the tokens); `as_model()` turns it into a HookedTransformer with
# two output classes, so integrated gradients run on it end to end. A control classifier trains on the same
# reviews with the correlation removed.

# %%
rep = debugging.shortcut_report(model, layer=1, n_train=100, n_test=50, n_attributed=12, steps=64)
print(rep.summary())
acc, share = rep.accuracy.values, rep.share.values
assert acc[0, 0] - acc[0, 2] > 0.2 and share[0] > 1.5 * share[1]  # what the next paragraph says
rep

# %% [markdown]
# The shortcut-trained classifier loses much of its accuracy when the name no longer goes with the label, and
# integrated gradients put a larger share of their mass on the name than under the control. (On `smollm2-135m`,
# layer 10: accuracy 0.98 in distribution, 0.67 with the correlation removed, 0.43 reversed; IG share on the name
# 16% against the control's 2.7%.)
#
# ## Explanation regularisation
#
# Retrain with a penalty on the squared integrated-gradient attribution (2 steps from the pad baseline) to every
# signature's name: names never decide the label. The model is frozen and the head linear, so the attribution is
# `w . G` with `G` computed once per text, and the penalty is exact. Three seeds, each its own training and test
# draws.

# %%
er = debugging.regularisation_experiment(model, seeds=(0, 1, 2), layer=1, n_attributed=6, ig_steps=32)
print(er.summary())
def ood(t):
    return (er.mean(t, "no correlation") + er.mean(t, "reversed")) / 2


assert ood("regularised") > ood("plain")
assert er.mean("regularised", "in distribution") < er.mean("plain", "in distribution")
er

# %% [markdown]
# On toy-lm the out-of-distribution accuracy rises and the in-distribution accuracy falls a little (the finding
# `explanation-regularisation-ood` rates this "partly": its rule allows at most 0.02 in-distribution loss). On
# `smollm2-135m`, whose features know sentiment, the direction of ER-TEST's finding holds in full (see the issue's
# closing note for the table).

# %%
path = render.report([ig, tc, rep, er], OUT / "concepts_report.html", title="Concepts and debugging on zoo/toy-lm")
print(f"wrote {path.name}")


# %% [markdown]
# ## Attention as explanation
#
# Do attention weights say which input tokens mattered? Three analyses of `circuitlab.attention` (docs/attention.md).
#
# **The attention-pattern taxonomy.** # Kovaleva et al. sort attention maps into five classes: **vertical** (every
# query attends to the same few keys, such as the first token), **diagonal** (to a fixed offset, such as the previous
# token), **vertical+diagonal**, **block** (within the query's own segment) and **heterogeneous**. `pattern_taxonomy`
# classifies each head's map on each input with a classifier trained on synthetic maps of known class and returns the
# share of inputs per class, `[layer, head, class]`. Here on 16 inputs of 32 random tokens in two segments:

# %%
from circuitlab.attention import correlations, head_importance, pattern_taxonomy, prune_curve

tax = pattern_taxonomy(model, "random", n=16, length=32, seed=0)
classes = tax.meta["classes"]
per_layer = torch.as_tensor(tax.meta["per_layer"])
print(f"{'layer':>5}  " + "  ".join(f"{c:>17}" for c in classes))
for l in range(model.cfg.n_layers):
    print(f"{l:>5}  " + "  ".join(f"{v:>17.2f}" for v in per_layer[l].tolist()))

# %% [markdown]
# **Rollout and flow against token importance.** Raw attention at the last layer says little about which input tokens
# the output used: information mixes across positions layer after layer. **Rollout** multiplies the layers' attention
# (heads averaged, the residual connection as `0.5 I`); **flow** solves a maximum-flow problem on the same graph. Each
# is compared with the importance of each input token measured by ablation (replace it, watch the prediction's
# log-probability), by Spearman's rank correlation per prompt (here 8 windows of 16 tokens of the model's held-out
# text):

# %%
from circuitlab.reproduce.attention_as_explanation import text_tokens

corr = correlations(model, text_tokens(model, seqs=8, seq_len=16))
for method, mean in corr.meta["mean"].items():
    print(f"{method:>14}: mean Spearman correlation with ablation importance {mean:+.3f}")

# %% [markdown]
# **Head importance and pruning.** Michel et al.'s head importance is the expected absolute gradient of the loss with
# respect to a mask on each head's output; pruning the least important heads first should cost less loss than pruning
# at random. On 16 windows of 64 tokens of the model's held-out text:

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
