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
# # Survey methods: cloze with a control, Gaussian and depth probes, coreference, compositional explanations
#
# Five methods from the probing and neuron-explanation literature (docs/probing-survey.md, docs/compositional.md),
# each run small on `zoo/toy-lm` and the package's template sentences (words with gold parts of speech):
#
# 1. **cloze with a control** (Petroni et al. 2019; Zhong et al. 2021): how often the model completes a fact's prompt
#    with the right answer, beside the same prompts with the subject replaced by invented names;
# 2. **Gaussian probes** (Torroba Hennigen et al. 2020): how few neurons suffice to tag parts of speech;
# 3. **depth profile** (Tenney et al. 2019): at which layer a linear probe's accuracy arrives;
# 4. **coreference by similarity**: does a pronoun's representation sit closest to its antecedent's;
# 5. **compositional explanations** (Mu & Andreas 2020): a logical formula over word concepts per MLP neuron.
#
# AMPLIFY rationales (Krishna et al. 2023; docs/rationales.md) need an instruction-following model
# (`smollm2-135m`) and are left to `circuitlab rationales`.

# %%
import warnings

import torch

# TransformerLens imports tqdm.auto, which warns "IProgress not found" where ipywidgets is missing
warnings.filterwarnings("ignore", message="IProgress not found")

import circuitlab as cl
from circuitlab import probing

torch.manual_seed(0)
model = cl.load_model("zoo/toy-lm")
sentences = probing.template_sentences(60, seed=0)
print(f"{len(sentences)} template sentences, e.g. {' '.join(sentences[0].words)!r}")

# %% [markdown]
# ## 1. Cloze precision and its control
#
# P@1 is the share of facts whose answer is the model's top next token. The **names** control asks the same
# prompts about invented people and places: precision reached there does not need the fact.

# Here on 40 facts of the made-up world `zoo/toy-lm` was trained on, each relation with the one template its fact
# sentence uses:

# %%
from circuitlab.models.loading import ZOO_DIR
from circuitlab.probing.cloze import cloze_control
from circuitlab.tasks.factual import toy_facts
from circuitlab.tasks.toy_world import load_world

facts = toy_facts(load_world(ZOO_DIR / "toy-lm"))[:40]
templates = {f.relation: (f.prompt.replace(f.subject, "{subject}", 1),) for f in facts}
facts = [f for f in facts if templates[f.relation][0].replace("{subject}", f.subject) == f.prompt]
cz = cloze_control(model, facts, templates, controls=("names",), n_names=2, seed=0)
print(cz.summary())

# %% [markdown]
# ## 2. Gaussian probes: parts of speech from a few neurons
#
# Greedy neuron selection for a Gaussian classifier, against neurons ranked by a linear probe's weights, at the
# residual stream after block 1; accuracy on held-out words with 1, 2 and 3 neurons, and the control task's.

# %%
from circuitlab.probing.gaussian import gaussian_sweep

gs = gaussian_sweep(model, sentences, "upos", hook="blocks.1.hook_resid_post", k=3, cache=False)
for r, ranking in enumerate(gs.labels["ranking"]):
    accuracy = gs.values[r, :, 0].tolist()  # measure 0: test accuracy (1: the control task's, 2: selectivity)
    print(f"{ranking:>8} ranking, test accuracy: " + "  ".join(f"k={k + 1} {a:.2f}" for k, a in enumerate(accuracy)))

# %% [markdown]
# ## 3. Depth profile
#
# A linear probe for parts of speech and one for dependency relations, at the embedding and after each block; the
# profile is each probe's accuracy over its own maximum, and the expected layer its centre of mass over the
# layers' gains.

# %%
from circuitlab.probing.depth import depth_profile

prof = depth_profile(model, sentences, word_tasks=("upos", "deprel"), sentence_tasks=(), cache=False)
print(prof.summary())
prof.accuracy

# %% [markdown]
# ## 4. Coreference by similarity
#
# For each item, the pronoun's representation is compared by cosine similarity with each candidate antecedent's;
# the accuracy per layer beside the first-candidate and nearest-candidate baselines.

# %%
from circuitlab.probing.coreference import coreference_similarity
from circuitlab.tasks.coreference import coreference_items

coref = coreference_similarity(model, coreference_items(8), cache=False)
base = coref.baselines
for i, kind in enumerate(base.labels["kind"]):
    row = base.values[i].tolist()
    print(f"{kind:>9}: " + ", ".join(f"{name} {v:.3f}" for name, v in zip(base.labels["baseline"], row)))
coref.accuracy

# %% [markdown]
# ## 5. Compositional explanations of MLP neurons
#
# Each neuron's activations are binarised (its top 0.5% of words fire) and a beam search finds the formula over word
# concepts (a word, a part of speech, a position, joined by AND, OR, AND NOT) whose words overlap the firing words
# best, by intersection over union.

# %%
from circuitlab.neurons.compositional import compositional_explanations

ex = compositional_explanations(model, sentences, hooks=[1], neurons=8, top=0.02, max_length=3, seed=0, cache=False)
print(ex.table(k=8))
