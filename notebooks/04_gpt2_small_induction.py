# ---
# jupyter:
#   circuitlab:
#     needs_network: true
#     zoo_models: []
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Reproduction: induction heads in GPT-2 small
#
# **Needs a network connection** (downloads GPT-2 small, ~500 MB, from the Hugging Face hub). The test suite skips
# this notebook offline.
#
# Published (TransformerLens demos, ARENA): induction heads 5.1, 5.5, 6.9, 7.2, 7.10; previous-token head 4.11.

# %%
import os
import warnings
from pathlib import Path

import torch

# TransformerLens imports tqdm.auto, which warns "IProgress not found" where ipywidgets is missing and then draws
# plain text progress bars, which is all we need (install ipywidgets for widget bars: `make notebooks` does)
warnings.filterwarnings("ignore", message="IProgress not found")

import circuitlab as cl

# files this notebook writes (reports) go here
OUT = Path(os.environ.get("CIRCUITLAB_NOTEBOOK_OUT", "."))
_ = torch.set_grad_enabled(False)  # a statement, so that the cell shows no output

# %%
from circuitlab.reproduce.induction_gpt2 import check_gpt2_reference

model = cl.load_model("gpt2-small")
check = check_gpt2_reference(model, seed=0)
print(check)
assert check.passed

# %%
check.circuit
