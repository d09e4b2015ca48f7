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
# # Editing a fact, toy models of superposition, and sparse autoencoders
#
# 1. **Model editing** (`circuitlab.editing`, docs/editing.md): ROME (Meng et al. 2022) writes a new fact into one
#    MLP layer of `zoo/toy-lm` with a rank-one update; the edit is applied inside a block and undone after it.
# 2. **Toy models of superposition** (`circuitlab.features.toy`, docs/superposition.md): Elhage et al. 2022's small
#    ReLU models, which store more sparse features than they have dimensions.
# 3. **Sparse autoencoders** (`circuitlab.features`, docs/saes.md): the SAEs shipped for `zoo/toy-lm`'s residual
#    stream, their standard metrics, and a latent's top-activating tokens.

# %%
import warnings

import torch

# TransformerLens imports tqdm.auto, which warns "IProgress not found" where ipywidgets is missing
warnings.filterwarnings("ignore", message="IProgress not found")

import circuitlab as cl

torch.manual_seed(0)
model = cl.load_model("zoo/toy-lm")

# %% [markdown]
# ## 1. ROME: a new fact in one MLP layer
#
# `zoo/toy-lm` was trained on a made-up world of people and places. Ask it where Wexmira has a house, then write
# a new answer, `Pellmoor`, at the layer where causal tracing finds the fact (`layer="auto"`). ROME computes the key
# of the subject's last token, optimises the value that makes the new answer likely, and solves for the smallest
# change of the layer's output weights that maps the key to that value.

# %%
from circuitlab.editing import rome

prompt, subject, new = "Wexmira has a house in", "Wexmira", " Pellmoor"


def top_next(prompt: str, k: int = 3) -> str:
    probs = model(prompt)[0, -1].softmax(-1)
    p, idx = probs.topk(k)
    return ", ".join(f"{model.to_string(i)!r} {v:.2f}" for v, i in zip(p.tolist(), idx.tolist()))


with torch.no_grad():
    print("before:", top_next(prompt))
edit = rome(model, prompt, subject, new, layer="auto", seed=0)
with edit.applied(model), torch.no_grad():
    print("after: ", top_next(prompt))
    print("a paraphrase after:", top_next("Wexmira lives in"))
with torch.no_grad():
    print("undone:", top_next(prompt))
print(f"edited layer(s) {edit.layers}, update norm {edit.norm():.3f}")

# %% [markdown]
# ## 2. Toy models of superposition
#
# Five features, two hidden dimensions: `x' = ReLU(W^T W x + b)`. With dense features the model keeps the two most
# important and drops the rest; with sparse ones (each feature zero 90% of the time) it packs all five into the plane,
# as a pentagon. `feature_norms` gives `||W_i||` per feature (1: represented, 0: dropped), `dimensionality` the share
# of a dimension each feature gets.

# %%
from circuitlab.features import toy

toys = toy.train(5, 2, sparsity=[0.0, 0.9], importance=0.9, seed=0)
norms, dims = toy.feature_norms(toys), toy.dimensionality(toys)
for i, s in enumerate((0.0, 0.9)):
    print(f"sparsity {s}: feature norms " + " ".join(f"{v:.2f}" for v in norms.values[i].tolist())
          + "; dimensionalities " + " ".join(f"{v:.2f}" for v in dims.values[i].tolist()))

# %%
import matplotlib.pyplot as plt

fig, axes = plt.subplots(1, 2, figsize=(7, 3.4))
for i, (ax, s) in enumerate(zip(axes, (0.0, 0.9))):
    W = toys.W[i].detach()  # [hidden, feature]
    for j in range(W.shape[1]):
        ax.plot([0, W[0, j]], [0, W[1, j]], color=plt.cm.viridis(j / W.shape[1]), linewidth=2)
    ax.set(title=f"sparsity {s}", xlim=(-1.3, 1.3), ylim=(-1.3, 1.3), aspect="equal", xticks=[], yticks=[])
fig.suptitle("Columns of W: each feature's direction in the 2-d hidden space")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 3. Sparse autoencoders on `zoo/toy-lm`
#
# An SAE reads one hook (here the residual stream after block 2), encodes it into many sparse latents and decodes a
# reconstruction. Its standard metrics on held-out text: L0 (latents active per token), the variance of the
# activations it explains, and the share of the next-token loss it keeps when the reconstruction replaces the
# activations.

# %%
from circuitlab.features import evaluate_sae, load_sae, shipped_saes
from circuitlab.reproduce.attention_as_explanation import text_tokens

print("shipped:", ", ".join(shipped_saes()))
sae = load_sae("toy-lm/res-2")
held_out = [model.to_string(row[1:]) for row in text_tokens(model, seqs=8, seq_len=64)]
ev = evaluate_sae(model, sae, held_out)
for k, v in ev.summary().items():
    print(f"{k:>28}: {v}")

# %% [markdown]
# The latent that fires most often on these texts, and the tokens where it fires hardest:

# %%
from circuitlab.core import str_tokens

tokens = model.to_tokens(held_out)
_, cache = model.run_with_cache(tokens, names_filter=sae.cfg.hook_name)
latents = sae.encode(cache[sae.cfg.hook_name])  # [text, pos, latent]
latent = int((latents > 0).float().sum((0, 1)).argmax())
acts = latents[..., latent]
values, flat = acts.flatten().topk(8)
print(f"latent {latent}: active on {(acts > 0).float().mean():.1%} of tokens; its strongest activations:")
for v, i in zip(values.tolist(), flat.tolist()):
    b, p = divmod(i, acts.shape[1])
    words = str_tokens(model, tokens[b, max(p - 6, 0) : p + 1])
    print(f"  {v:6.2f}  {''.join(words[:-1])!r} [{words[-1]!r}]")
