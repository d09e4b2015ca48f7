# ---
# jupyter:
#   circuitlab:
#     needs_network: false
#     zoo_models:
#     - zoo/attn-only-2l
#     - zoo/toy-lm
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Direct logit attribution, the logit lens, and FFN key-value memories
#
# The residual stream is a sum: embeddings plus the output of every head (and MLP). The final logits are a linear
# read-out of that sum — apart from the final LayerNorm's scale, which we freeze at its value on each prompt. So each
# component's **direct** contribution to a logit is exact and additive (*direct logit attribution*, DLA).
#
# Part 1 uses the copying task on `zoo/attn-only-2l`; part 2 looks inside the MLPs of `zoo/toy-lm`, a small language
# model trained on English text.

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
from circuitlab import attribution

from circuitlab.tasks.copying import copy_task

model = cl.load_model("zoo/attn-only-2l")
task = copy_task(model)  # the copying prompts of notebook 02: 8 prompts, n = 20, k = 14, seed 0
clean, answer, wrong, changed = task.clean, task.answer, task.wrong, task.changed_pos

# %% [markdown]
# ## 1. Which heads write the answer?

# %%
dla = attribution.direct_logit_attribution(model, clean, answer, wrong=wrong, by="head")
dla

# %% [markdown]
# **The decomposition is exact.** With `by="component"` the terms (embeddings, every head, biases) add up to the
# model's own logit difference:

# %%
parts = attribution.direct_logit_attribution(model, clean, answer, wrong=wrong, by="component")
logits = model(clean)[:, -1]
actual = (logits.gather(1, answer[:, None]) - logits.gather(1, wrong[:, None])).mean().item()
print(f"sum of components {parts.values.sum().item():+.4f}  model's logit difference {actual:+.4f}")

# %% [markdown]
# **Where does the head read from?** Split each head's output by the source position it attended to: the induction
# head's contribution should come from the position holding `r_{k+1}` in the first copy.

# %%
by_pos = attribution.direct_logit_attribution(model, clean, answer, wrong=wrong, by="position")
(L, H), _ = dla.top(1)[0]
src = by_pos.values[L, H]
print(f"L{L}H{H}: {src[changed].item():+.2f} of its {src.sum().item():+.2f} comes from position {changed}")

# %% [markdown]
# ## 2. The logit lens: when does the answer appear?
#
# Read the residual stream after each layer through the final norm and unembedding, as if the model stopped there.

# %%
lens = attribution.logit_lens(model, clean, answer=answer)
lens

# %% [markdown]
# ## 3. FFN layers as key-value memories
#
# An MLP layer computes `out = Σ_i m_i · W_out[i]`: neuron `i` fires with coefficient `m_i` when its **key** (column `i`
# of `W_in`) matches the input, and adds its **value** (row `i` of `W_out`) to the residual stream (Geva et al. 2021).
# Projected onto the vocabulary, a value vector names the tokens it promotes (Geva et al. 2022).

# %%
from circuitlab import ffn

lm = cl.load_model("zoo/toy-lm")
print(cl.zoo_card("zoo/toy-lm")["description"])
layer = lm.cfg.n_layers - 1
biggest = torch.topk(lm.W_out[layer].norm(dim=-1), 8).indices.tolist()
values = ffn.value_tokens(lm, layer, biggest, k=8)
values

# %% [markdown]
# **Sub-updates on a real prompt.** Besides English text, `zoo/toy-lm` learned facts about invented people (where
# they live, their trade...). Take one fact and rank the last layer's sub-updates `m_i · W_out[i]` by how much each
# raises the answer's logit: a few neurons do most of the work (Geva et al. 2022's "promoting" sub-updates).

# %%
from circuitlab.models.loading import ZOO_DIR
from circuitlab.tasks.toy_world import fact_sentence, load_world

world = load_world(ZOO_DIR / "toy-lm" / "world.json")
prompt, fact = fact_sentence(world, world.people[0], "home", 0)
top = lm(prompt)[0, -1].topk(3).indices
print(f"{prompt!r} -> the model's top tokens {lm.to_str_tokens(top)}; the fact: {fact!r}")
subs = ffn.sub_updates(lm, prompt, layer, token=fact)
subs

# %% [markdown]
# **Keys**: the contexts where one of those neurons fires most, on held-out text.

# %%
# Ruth, Jonah, Titus and Philemon: King James verses the model never trained on (they ship with it)
heldout = (ZOO_DIR / "toy-lm" / "heldout.txt").read_text().splitlines()[:200]
neuron = biggest[0]
keys = ffn.key_examples(lm, heldout, layer, neuron, k=8, progress=False)
keys

# %%
path = render.report([dla, by_pos, lens, values, subs, keys], OUT / "attribution_report.html",
                     title="Logit attribution and FFN memories")
print(f"wrote {path.name}")
