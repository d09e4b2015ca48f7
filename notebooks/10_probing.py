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
# # Probing: what representations hold, and how much of it the probe supplies
#
# Five probing methods on `zoo/toy-lm` (4 layers, bundled with circuitlab) and sentences from a small English
# grammar whose part-of-speech tags and dependency trees are known by construction:
#
# 1. **Word activations** at every layer in one forward pass per batch (`probing.collect`).
# 2. **Classifier probes with control tasks** (Hewitt & Liang 2019): accuracy means little until it is compared with
#    the same probe on a task that only memorising word types can solve.
# 3. **Structural probes** (Hewitt & Manning 2019): a linear map under which squared distances are tree distances;
#    the minimum spanning tree of the predicted distances against the gold tree.
# 4. **Attention heads as dependency finders** (Clark et al. 2019), against the best fixed offset.
# 5. **Edge probing** (Tenney et al. 2019): labels of spans and span pairs from a learned mix of all layers, against
#    the embedding layer alone.
# 6. **Parameter-free probing**: minimal pairs (BLiMP-style: does the model prefer the grammatical sentence?) and
#    cloze prompts (LAMA-style P@1 / P@10 against a frequency-only baseline).
#
# The real-data versions (default sentences: King James verses and fortunes labelled by spaCy) run the same calls
# with `probing.default_sentences()` and a real model such as `minilm-l6`.

# %%
import os
import warnings
from pathlib import Path

import torch
from IPython.display import HTML, display

warnings.filterwarnings("ignore", message="IProgress not found")

import circuitlab as cl
from circuitlab import probing, render
from circuitlab.probing.structural import predict, tree_edges
from circuitlab.render.probing import head_accuracy_html, tree_html

OUT = Path(os.environ.get("CIRCUITLAB_NOTEBOOK_OUT", "."))
torch.manual_seed(0)
torch.set_num_threads(1)  # small probes on a tiny model: one thread is enough, and keeps a busy machine steady

# %% [markdown]
# ## 1. Sentences and word activations
#
# A `Sentence` carries words and, per word, UPOS, head (1-based, 0 for the root), dependency label and entity type.
# `collect` aligns words to tokens (a word's vector is the mean of its tokens) and returns one row per word at every
# hook: the embedding (`blocks.0.hook_resid_pre`, labelled `emb`) and each block's residual stream.

# %%
model = cl.load_model("zoo/toy-lm")
sents = probing.template_sentences(120, seed=0)
s = sents[0]
print(s.text)
print(list(zip(s.words, s.upos, s.head, s.deprel)))
acts = probing.collect(model, sents, cache=False, progress=False)
print(len(acts), "words;", {h: tuple(x.shape) for h, x in acts.acts.items()})

# %% [markdown]
# ## 2. Classifier probes and control tasks
#
# `probe_sweep` trains a linear probe (logistic regression, L-BFGS) and an MLP-1 probe per layer on UPOS, and the same
# probes on a **control task**: each word *type* gets a label drawn at random from the UPOS distribution, so only
# memorising types solves it. **Selectivity** = task accuracy - control accuracy. Hewitt & Liang's finding: at
# similar accuracy, the linear probe is far more selective (ELMo: linear 97.2 / control 71.2, MLP-1 97.3 / 92.8).
# Template words are few and unambiguous, so here both accuracies are near 1 and selectivity is small for both: the
# grammar's tags follow from the word types.

# %%
pos = probing.probe_sweep(acts, task="upos", seeds=(0,), linear=dict(max_iter=50), mlp=dict(epochs=5, hidden=64),
                          progress=False)
print(pos.labels)
print(pos.values.round(decimals=3))
pos

# %% [markdown]
# On MiniLM-L6 with 2,000 default sentences (after half its blocks): linear 95.3 / control 69.6 (selectivity 25.6),
# MLP-1 95.3 / 85.2 (10.1), the finding `control-tasks-linear-more-selective` reproduced.
#
# ## 3. Structural probes and trees
#
# The distance probe learns `B` (rank 64) so that `||B(h_i - h_j)||^2` approximates the tree distance between words
# `i` and `j`. Its prediction is turned into a tree by the minimum spanning tree, and scored by UUAS (the share of
# gold undirected edges recovered, punctuation left out). The last row is the linear-chain baseline (each word
# linked to its neighbours).

# %%
tree = probing.structural_sweep(acts, rank=16, options=dict(epochs=5), progress=False)
for name, row in zip(tree.labels["layer"], tree.values.tolist()):
    print(f"{name:>16}  UUAS {row[0]:.3f}  DSpr {row[1]:.3f}")

# %% [markdown]
# **One tree, drawn.** Train the layer-2 distance probe again, predict one held-out sentence's distances, and draw
# the gold tree (above the words) against the probe's minimum spanning tree over the non-punctuation words (below:
# green edges are in the gold tree, red are not). The chain baseline's UUAS is checked by hand on that sentence.

# %%
from circuitlab.probing.structural import sentence_rows, train_structural_probe

rows, _ = sentence_rows(acts)
x = acts["blocks.2.hook_resid_post"]
train_ids = list(range(90))
probe = train_structural_probe(x, [rows[i] for i in train_ids], [sents[i] for i in train_ids], rank=16, epochs=5)
k = 100
dist = predict(probe, x, [rows[k]])[0]
keep = [u != "PUNCT" for u in sents[k].upos]  # UUAS leaves punctuation out, as Hewitt & Manning did
pred = probing.mst_edges(dist, keep)
gold = tree_edges(sents[k].head, keep)
print(f"{len(pred & gold)} of {len(gold)} gold edges recovered")
kept = [i for i in range(len(sents[k])) if keep[i]]
chain = set(zip(kept, kept[1:]))  # the chain links each kept word to the next
by_hand = len(chain & gold) / len(gold)
assert abs(probing.linear_baseline([sents[k]])["uuas"] - by_hand) < 1e-12
print(f"chain baseline on this sentence: {by_hand:.3f} (by hand and by linear_baseline)")
display(HTML(tree_html(sents[k].words, sents[k].head, pred, title=f"sentence {k}: gold vs the layer-2 probe")))

# %% [markdown]
# On MiniLM-L6 (default sentences) UUAS peaks in the middle: 62.3 after block 2, against 47.8 for the embedding and
# 51.2 for the chain (Hewitt & Manning: BERT-large layer 15 82.5 vs chain 48.9).
#
# ## 4. Attention heads as dependency finders
#
# For each dependency relation and head: how often the dependent's most-attended other word is its head. The
# baseline is the best fixed offset (e.g. "the word to the right"). toy-lm is a decoder, so a word can attend only
# to words before it: relations whose head comes later (`det`, `amod`) are out of reach by construction.

# %%
heads = probing.head_sweep(model, sents, min_count=20, progress=False)
for r, b in heads.meta["best"].items():
    print(f"{r:>8}: best L{b['layer']}H{b['head']} {b['accuracy']:.3f}  offset baseline "
          f"{heads.meta['baseline'][r]['accuracy']:.3f}")
display(HTML(head_accuracy_html(heads, ["nsubj", "obj"])))

# %% [markdown]
# ## 5. Edge probing with a scalar mix
#
# Each example is one span (`pos`, `ent`) or two (`deprel`: the dependent word and its head word). The probe mixes
# the layers with learned softmax weights `s_l` and a scale `gamma`, projects, pools each span, and classifies. The
# **center of gravity** `sum_l l * s_l` says where in depth the task is read; the **lexical** baseline is the same
# probe on the embedding layer alone. The mix is checked by hand: its weights are a softmax of the probe's
# parameters.

# %%
edges = probing.edge_probe(acts, task="deprel", epochs=20, lr=3e-3, batch_size=64, progress=False)
print(edges.summary())
w = edges.mix.values
assert abs(float(w.sum()) - 1) < 1e-6
assert abs(edges.center_of_gravity - sum(i * float(v) for i, v in enumerate(w))) < 1e-6
edges

# %% [markdown]
# ## Parameter-free probing: minimal pairs and cloze
#
# No probe is trained: the model's own probabilities are read. A minimal pair is a grammatical and an ungrammatical
# sentence that differ in one place; the model passes if it gives the grammatical one the higher log-probability,
# either of the whole sentence or (the one-prefix method) of the critical word after the shared prefix. The pairs
# here are circuitlab's own templates (six phenomena); `probing.read_blimp(path)` reads BLiMP's JSONL files.

# %%
pairs = probing.template_pairs(n_per=20)
sent = probing.score_pairs(model, pairs, "sentence")
pref = probing.score_pairs(model, pairs, "prefix")
for name, a, b in zip(sent.labels["phenomenon"], sent.values.tolist(), pref.values.tolist()):
    print(f"{name:40s} sentence {a:.2f}   prefix {b:.2f}")
# by hand, the first pair: a sentence's score is the sum of its tokens' log-probabilities after BOS
def logprob(text):
    toks = model.to_tokens(text)
    with torch.no_grad():
        return float(model(toks).log_softmax(-1)[0, :-1].gather(-1, toks[0, 1:, None]).sum())

p = pairs[0]
assert abs(logprob(p.good) - float(sent.good[0])) < 1e-3 and abs(logprob(p.bad) - float(sent.bad[0])) < 1e-3

# %% [markdown]
# `zoo/toy-lm` read only the King James Bible and fortunes, and is near chance on most phenomena. The real models
# separate them: on the same template pairs (40 per phenomenon, `circuitlab probe pairs -m MODEL`) SmolLM2-135M
# scores 0.850 by sentence and 0.871 by prefix, Gemma-3-270m 0.992 and 0.975.
#
# Cloze prompts ask for a fact's object ("The capital of France is" ... " Paris") in three templates per relation;
# P@1 and P@10 are reported with their spread over templates and beside a frequency-only baseline (always answer
# the relation's most common objects), which a model must beat before its cloze accuracy says anything:

# %%
cz = probing.cloze(model)
print(cz.summary())

# %% [markdown]
# The toy model knows none of these facts and the baseline wins. On SmolLM2-135M (`circuitlab probe cloze -m
# smollm2-135m`) P@1 is .319 (spread over templates .193) against the baseline's .165; on Gemma-3-270m .434 (.278)
# against .149.
#
# The report gathers the results in one page.

# %%
path = render.report([pos, tree, heads, edges, sent, cz], OUT / "probing_report.html", title="Probing on zoo/toy-lm")
print(f"wrote {path.name}")


# %% [markdown]
# ## Survey methods: cloze with a control, Gaussian and depth probes, coreference
#
# **Cloze precision and its control** (Zhong et al. 2021). P@1 is the share of facts whose answer is the model's top
# next token. The **names** control asks the same prompts about invented people and places: precision reached there
# does not need the fact.
#
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
cc = cloze_control(model, facts, templates, controls=("names",), n_names=2, seed=0)
print(cc.summary())

# %% [markdown]
# **Gaussian probes** (Torroba Hennigen et al. 2020): parts of speech from a few neurons. Greedy neuron selection for
# a Gaussian classifier, against neurons ranked by a linear probe's weights, at the residual stream after block 1;
# accuracy on held-out words with 1, 2 and 3 neurons, and the control task's.

# %%
from circuitlab.probing.gaussian import gaussian_sweep

survey_sentences = probing.template_sentences(60, seed=0)
gs = gaussian_sweep(model, survey_sentences, "upos", hook="blocks.1.hook_resid_post", k=3, cache=False)
for r, ranking in enumerate(gs.labels["ranking"]):
    accuracy = gs.values[r, :, 0].tolist()  # measure 0: test accuracy (1: the control task's, 2: selectivity)
    print(f"{ranking:>8} ranking, test accuracy: " + "  ".join(f"k={k + 1} {a:.2f}" for k, a in enumerate(accuracy)))

# %% [markdown]
# **Depth profile** (Tenney et al. 2019). A linear probe for parts of speech and one for dependency relations, at the
# embedding and after each block; the profile is each probe's accuracy over its own maximum, and the expected layer
# its centre of mass over the layers' gains.

# %%
from circuitlab.probing.depth import depth_profile

prof = depth_profile(model, survey_sentences, word_tasks=("upos", "deprel"), sentence_tasks=(), cache=False)
print(prof.summary())
prof.accuracy

# %% [markdown]
# **Coreference by similarity.** For each item, the pronoun's representation is compared by cosine similarity with
# each candidate antecedent's; the accuracy per layer beside the first-candidate and nearest-candidate baselines.

# %%
from circuitlab.probing.coreference import coreference_similarity
from circuitlab.tasks.coreference import coreference_items

coref = coreference_similarity(model, coreference_items(8), cache=False)
base = coref.baselines
for i, kind in enumerate(base.labels["kind"]):
    row = base.values[i].tolist()
    print(f"{kind:>9}: " + ", ".join(f"{name} {v:.3f}" for name, v in zip(base.labels["baseline"], row)))
coref.accuracy
