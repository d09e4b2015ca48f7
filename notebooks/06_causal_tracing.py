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
# # Causal tracing: where does a model recall a fact?
#
# Meng et al. (2022, "Locating and Editing Factual Associations in GPT") asked where a language model looks up a fact
# such as *The Eiffel Tower is located in the city of → Paris*. Their method, **causal tracing**, runs the prompt
# three ways:
#
# 1. **clean**: as it is; the answer has probability `P_clean`;
# 2. **corrupted**: Gaussian noise (3 standard deviations of the token embeddings) on the embeddings of the
#    subject's tokens, so the model no longer knows what the sentence is about: `P_corrupted`;
# 3. **restored**: the corrupted run with one clean state put back: the residual stream after one layer at one
#    token, or the MLP or attention output at one token over a window of layers.
#
# A state whose restoration brings the answer back carries the fact. We trace `zoo/toy-lm`, a 4-layer model
# circuitlab trained on a synthetic world of invented people (`circuitlab.tasks.toy_world`); its facts are asked with
# the one template per fact it never saw in training, so a correct answer means the fact is stored with the person.
# `circuitlab trace` and `circuitlab reproduce causal-tracing-mlp-early-attention-late` do the same on Gemma-3-270m.

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
from circuitlab import tracing
from circuitlab.tasks.factual import known_facts_report, toy_facts
from circuitlab.tasks.toy_world import load_world
from circuitlab.models.loading import ZOO_DIR

model = cl.load_model("zoo/toy-lm")
report = known_facts_report(model, toy_facts(load_world(ZOO_DIR / "toy-lm")))
print(report.summary())
fact = report.known[4]
fact

# %% [markdown]
# ## One fact
#
# `trace` returns the answer's probability with each state restored, `[kind, token, layer]`; subject tokens are
# marked `*`. The toy model is shallow (4 layers), so the window for MLP and attention is 1 layer (the paper's 10,
# scaled to depth: `tracing.default_window`).

# %%
res = tracing.trace(model, fact.prompt, fact.subject, fact.answer, samples=10, progress=False)
print(f"P({fact.answer!r}): clean {res.clean_prob:.3f}, subject corrupted {res.corrupted_prob:.3f}")
print(res.meta["engine"])
res

# %% [markdown]
# Each number is one restored run. Check one against a plain reference that restores that single state in one
# hooked forward pass (as the paper's code does), with the same noise:

# %%
from circuitlab.testing import reference_restoration

tokens = model.to_tokens(fact.prompt)
span, answer = res.meta["subject"], res.meta["answer"]
noise = tracing.subject_noise(model, span[1] - span[0], 10, res.meta["noise_std"], seed=0)
_, clean = model.run_with_cache(tokens)
for k, kind in enumerate(res.labels["kind"]):
    pos, layer = span[1] - 1, 1
    ref = reference_restoration(model, tokens, span, answer, noise, clean, kind, layer, pos, window=1)
    print(f"{kind:>5} at the last subject token, layer {layer}: trace {res.values[k, pos, layer]:.6f}, "
          f"reference {ref:.6f}")
    assert abs(ref - float(res.values[k, pos, layer])) < 1e-5

# %% [markdown]
# ## Average indirect effect over many facts
#
# The indirect effect of a state is `P_restored − P_corrupted`. Averaged over facts at the paper's kinds of
# position (first / middle / last subject token, first subsequent token, further tokens, last token), it shows
# where facts are recalled in general (the paper's Figure 2).

# %%
facts = report.known[:24]
aie = tracing.average_indirect_effect(model, facts, samples=5, progress=False)
aie

# %%
L = model.cfg.n_layers
for k, kind in enumerate(aie.labels["kind"]):
    for where in ("last subject token", "last token"):
        row = aie.values[k, tracing.POSITION_KINDS.index(where)]
        print(f"{kind:>5} at the {where:<18}: " + "  ".join(f"L{l} {row[l]:+.3f}" for l in range(L))
              + f"   peak at layer {int(row.argmax())}")

# %% [markdown]
# In the paper (GPT-2 XL, GPT-J), MLPs matter at the last subject token in middle layers and attention at the last
# token in later layers. What does this small model do? `circuitlab reproduce causal-tracing-mlp-early-attention-late
# --model zoo/toy-lm` applies the finding's fixed rule to it (and to Gemma-3-270m by default).
#
# A report with the trace and the average:

# %%
path = render.report([res, res.indirect_effect(normalized=True), aie], OUT / "causal_tracing.html",
                     title="Causal tracing on zoo/toy-lm")
print("wrote", path.name)


# %% [markdown]
# ## Editing the fact: ROME
#
# `zoo/toy-lm` was trained on a made-up world of people and places. Ask it where Wexmira has a house, then write a new
# answer, `Pellmoor`, at the layer where causal tracing finds the fact (`layer="auto"`). ROME computes the key of the
# subject's last token (the position whose MLP states the tracing above restores), optimises the value that makes the
# new answer likely, and solves for the smallest change of the layer's output weights that maps the key to that value.

# %%
from circuitlab.editing import rome

prompt, subject, new = "Wexmira has a house in", "Wexmira", " Pellmoor"


def top_next(prompt: str, k: int = 3) -> str:
    probs = model(prompt)[0, -1].softmax(-1)
    p, idx = probs.topk(k)
    return ", ".join(f"{model.to_string(i)!r} {v:.2f}" for v, i in zip(p.tolist(), idx.tolist()))


with torch.no_grad():
    print("before:", top_next(prompt))
with torch.enable_grad():  # the value is optimised by gradient descent
    edit = rome(model, prompt, subject, new, layer="auto", seed=0)
with edit.applied(model), torch.no_grad():
    print("after: ", top_next(prompt))
    print("a paraphrase after:", top_next("Wexmira lives in"))
with torch.no_grad():
    print("undone:", top_next(prompt))
print(f"edited layer(s) {edit.layers}, update norm {edit.norm():.3f}")
