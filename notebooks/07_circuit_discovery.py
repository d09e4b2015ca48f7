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
# # Circuit discovery: the induction circuit of `zoo/attn-only-2l`, found three ways
#
# A model's **computational graph** has one node per component that writes into the residual stream (the
# embedding, each attention head) and one per input that reads it (each head's query, key and value input, the
# logits); an **edge** joins every writer to every later reader. A **circuit** is the set of edges that carry a
# behaviour. Three methods look for it automatically:
#
# - **EAP**, edge attribution patching (Syed et al. 2023): a first-order estimate of every edge's effect from one
#   forward pass on each prompt set and one backward pass;
# - **EAP-IG** (Hanna et al. 2024): the same, with the gradient averaged along a path from the corrupted to the clean
#   input embedding (integrated gradients);
# - **ACDC** (Conmy et al. 2023): exact and greedy: from the logits backwards, remove each edge whose removal changes
#   the output by less than a threshold, keeping the removals already made.
#
# We run the three on the induction task of `zoo/attn-only-2l` (2 layers of 4 heads, no MLPs, 81 edges) and judge
# them as the ACDC paper does: by ROC curves against a reference circuit established by other means, and by
# **faithfulness**, how much of the behaviour a circuit carries when every other edge is removed.

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
from circuitlab.circuits import Graph, acdc, eap, eap_ig, faithfulness, faithfulness_curve, roc
from circuitlab.circuits.reference import induction_reference, induction_task

torch.set_num_threads(1)  # the model is tiny: one thread is enough
model = cl.load_model("zoo/attn-only-2l")
cfg = model.cfg
graph = Graph.from_model(model)
print(graph)
print("senders:  ", ", ".join(n.name for n in graph.senders))
print("receivers:", ", ".join(n.name for n in graph.receivers))

# %% [markdown]
# ## 1. The task
#
# Clean prompts are 16 random sequences repeated once, `[BOS] r_1 … r_12 r_1 … r_12`; corrupted prompts have the same
# length with every token drawn afresh, so nothing repeats. The metric is the mean log-probability of the correct
# next token over the second copy, where only copying from context helps. Removing an edge means: its receiver reads
# the sender's output from the corrupted run instead of the clean one.

# %%
clean, corrupted, metric = induction_task(model, seq_len=12, n_seqs=16, seed=0)
clean_value, corrupted_value = metric(model(clean)).item(), metric(model(corrupted)).item()
print(f"clean {tuple(clean.shape)}, corrupted {tuple(corrupted.shape)}")
print(f"{metric.name}: clean {clean_value:.3f}, corrupted {corrupted_value:.3f} nats")

# %% [markdown]
# ## 2. The reference circuit
#
# `induction_reference` establishes the induction circuit from the model itself, with none of the three methods
# judged here:
#
# 1. **roles from attention**: induction heads are the heads whose induction score is at least
#    `max(0.3, 0.5 × best)`; previous-token heads are the heads below the deepest induction head whose
#    previous-token score is at least half the best such score;
# 2. **candidate edges**: every edge among the embedding, those heads and the logits;
# 3. **each candidate's exact effect**: the clean run with that one edge corrupted, by exact path patching (for an
#    edge from the embedding, by adding the embedding's corrupted-minus-clean output to that one receiver's input);
#    an edge is kept when its effect is at least 5% of the clean-corrupted gap, a threshold fixed before looking.
#
# Edges outside the candidates (from a head that has neither role) are out by construction.

# %%
reference = induction_reference(model)
meta = reference.meta
print(f"induction heads {meta['induction_heads']}, previous-token heads {meta['previous_token_heads']}")
print(f"gap {meta['gap']:.3f} nats; {len(reference)} of {graph.n_edges} edges reach {meta['threshold']:.0%} of it")
reference

# %% [markdown]
# ## 3. EAP
#
# One forward pass on each prompt set and one backward pass give every edge a score: the estimated change of the
# metric when the edge is removed (negative: the edge helps the behaviour). Edges rank by `|score|`. The graph below
# draws as many top edges as the reference has, width by `|score|`, red for negative scores.

# %%
scores_eap = eap(model, clean, corrupted, metric)
print(f"EAP: {graph.n_edges} edges scored")
print(scores_eap)
scores_eap.top(len(reference))

# %% [markdown]
# ## 4. EAP-IG
#
# EAP's gradient is taken at the clean run only; a large change (a whole sequence of tokens replaced) can move the
# metric far from that linear estimate. EAP-IG averages the gradient over 5 points between the corrupted and the
# clean input embedding.

# %%
scores_ig = eap_ig(model, clean, corrupted, metric, steps=5)
print(scores_ig)
scores_ig.top(len(reference))

# %% [markdown]
# ## 5. ACDC over a sweep of thresholds
#
# ACDC's metric is, as in the paper, the KL divergence of the circuit's next-token distribution at the last position
# from the clean run's; an edge goes when removing it raises the divergence by less than the threshold. Each
# threshold gives one circuit, so, as in the paper, we sweep it (in nats, log-spaced; the sweep of
# `circuitlab reproduce acdc-recovers-induction-circuit`). Every decision is an exact patched run, many per batched
# forward pass.

# %%
from circuitlab.reproduce.circuit_discovery import THRESHOLDS, best_threshold, roc_point, sweep_roc

circuits = [acdc(model, clean, corrupted, threshold=t) for t in THRESHOLDS]
points = [roc_point(c, reference) for c in circuits]
print(f"{'threshold':>9}  {'edges':>5}  {'KL':>7}  {'runs':>4}  {'passes':>6}   fpr   tpr")
for t, c, (f, tp) in zip(THRESHOLDS, circuits, points):
    m = c.meta
    print(f"{t:>9g}  {len(c):>5}  {m['final_value']:>7.4f}  {m['runs']:>4}  {m['passes']:>6}  "
          f"{f:.2f}  {tp:.2f}")

# %% [markdown]
# `runs` counts the patched runs (one per decision that needed one), `passes` the batched forward passes they took.
# The circuit at the threshold with the largest `tpr − fpr`:

# %%
best = best_threshold(points)
acdc_circuit = circuits[best]
print(acdc_circuit)
acdc_circuit

# %% [markdown]
# ## 6. ROC against the reference
#
# A scorer's ROC curve sweeps a threshold over its scores: the edges at or above it are its circuit, and each
# threshold gives the share of the reference's edges it keeps (true-positive rate) against the share of the other
# edges (false-positive rate). For ACDC each threshold is one run, a point; its area is taken under the points that
# no other point beats on both rates, joined by straight lines from `(0, 0)` to `(1, 1)`. Chance is the diagonal,
# area 0.5.

# %%
from IPython.display import HTML

from circuitlab.render.graph import roc_svg

roc_eap, roc_ig = roc(scores_eap, reference), roc(scores_ig, reference)
roc_acdc = sweep_roc(circuits, reference, title="ACDC threshold sweep against the induction reference (edge level)")
# the package's ROC plot, one per method, side by side
HTML("<div style='display:flex;gap:12px;flex-wrap:wrap'>" + "".join(
    f"<figure style='margin:0'>{roc_svg(c)}<figcaption style='text-align:center'>{name}</figcaption>"
    "</figure>" for name, c in (("EAP", roc_eap), ("EAP-IG", roc_ig), ("ACDC frontier", roc_acdc))) + "</div>")

# %% [markdown]
# The areas in a table, with the node-level AUC of the two scorers (a node enters with its first edge; ACDC's
# split of heads into output, query, key and value nodes). Timings are left out: a notebook's outputs are compared
# with a fresh run's.

# %%
import pandas as pd

aucs = pd.DataFrame({
    "edge AUC": [roc_eap.auc, roc_ig.auc, roc_acdc.auc],
    "node AUC": [roc(s, reference, level="node", nodes="acdc").auc for s in (scores_eap, scores_ig)] + [float("nan")],
}, index=["EAP", "EAP-IG", f"ACDC ({len(THRESHOLDS)} thresholds)"])
aucs.round(3)


# %% [markdown]
# Where does EAP go wrong? Take the reference's **K-composition** edges, from the previous-token heads into the
# induction heads' keys. They act through the attention softmax: corrupting one moves where an induction head
# attends, a change far from the linear estimate EAP makes at the clean run. Their ranks among the 81 edges:

# %%
def ranks(scores):
    order = sorted(graph.edges, key=lambda e: -abs(scores.score(e)))
    return {e: i + 1 for i, e in enumerate(order)}

rank_eap, rank_ig = ranks(scores_eap), ranks(scores_ig)
kcomp = [(s, r) for s, r in reference.edges if s != "embed" and r.endswith(".k")]
for s, r in kcomp:
    print(f"  {s} -> {r}: EAP rank {rank_eap[s, r]:>2}, EAP-IG rank {rank_ig[s, r]:>2}")
for name, rank in (("EAP", rank_eap), ("EAP-IG", rank_ig)):
    below = sum(rank[e] > len(reference) for e in kcomp)
    print(f"{name}: {below} of {len(kcomp)} K-composition edges rank below the top {len(reference)}")

# %% [markdown]
# ## 7. Faithfulness
#
# A circuit's faithfulness runs the model with only its edges (every other edge removed, carrying its corrupted
# value) and reports the metric recovered, `(m(circuit) − m(no edge)) / (m(all edges) − m(no edge))`: 0 for the
# corrupted run, 1 for the clean one. A faithfulness curve does this for the top `k` edges of a scorer, for each `k`.

# %%
ks = sorted({0, 1, 2, 4, 8, 16, 24, 32, 48, 64, len(reference), graph.n_edges})
curve_eap = faithfulness_curve(model, clean, corrupted, scores_eap, ks, metric=metric)
curve_ig = faithfulness_curve(model, clean, corrupted, scores_ig, ks, metric=metric)
curves = pd.DataFrame({"EAP": curve_eap.values[:, 0], "EAP-IG": curve_ig.values[:, 0]},
                      index=pd.Index(ks, name="top k"))
curves.round(3).T

# %% [markdown]
# ACDC's circuits and the reference, each alone (the same metric, and the last-position KL to the clean run that
# ACDC thresholds):

# %%
rows = {}
for name, c in [("reference", reference)] + [(f"ACDC {t:g}", c) for t, c in zip(THRESHOLDS, circuits)]:
    f = faithfulness(model, clean, corrupted, c, metric=metric)
    rows[name] = {"edges": len(c), "recovered": f.values[0].item(), "KL to clean": f.values[1].item()}
faithful = pd.DataFrame(rows).T
faithful.round(3)

# %% [markdown]
# Faithfulness judges a circuit as a whole, and ROC AUC a ranking edge by edge, so they can disagree. Induction
# works only if every link of the path is there: the previous-token heads reading the tokens, their output in the
# induction heads' keys, the induction heads' own inputs, and their output to the logits. A top-k circuit that
# leaves out a few such edges (above: EAP's K-composition edges) loses most of the mechanism, however well it
# ranks the rest.

# %% [markdown]
# ## 8. ACDC's circuit against the reference, edge by edge

# %%
cmp = acdc_circuit.compare(reference)
print(cmp)
bar = reference.meta["threshold"] * abs(reference.meta["gap"])
print(f"the reference's bar: {reference.meta['threshold']:.0%} of the gap = {bar:.3f} nats")
print("in ACDC's circuit only:", ", ".join(f"{s} -> {r}" for s, r in cmp.only_self) or "none")
print("in the reference only: ", ", ".join(f"{s} -> {r}" for s, r in cmp.only_other) or "none")
effects = reference.meta["effects"]  # every candidate edge's exact effect when removed alone (nats)
for s, r in cmp.only_self + cmp.only_other:
    if f"{s} -> {r}" in effects:
        print(f"  {s} -> {r}: effect alone {effects[f'{s} -> {r}']:+.3f} nats")

# %% [markdown]
# The two need not agree edge by edge: the reference judges each edge alone, in the full model, by the
# log-probability; ACDC judges each against the circuit as it stands, with many edges already removed, by the KL
# divergence at the last position.

# %% [markdown]
# ## 9. Checks by hand
#
# **ACDC's first step.** ACDC visits the logits first, while every other edge is still in place. Then removing
# edges into the logits only subtracts those senders' corrupted-minus-clean outputs from the clean final residual
# stream, so the paper's loop (latest sender first, each decision against the removals so far) can be written with
# the cache alone: each head's output `z_h W_O[h]` and the embedding, the final norm and the unembedding. It must
# keep the same senders as `acdc(..., receivers=["logits"])`.

# %%
threshold = THRESHOLDS[best]
first_step = acdc(model, clean, corrupted, threshold=threshold, receivers=["logits"])
_, clean_cache = model.run_with_cache(clean)
_, corrupted_cache = model.run_with_cache(corrupted)

def outputs(cache):
    out = {"embed": cache["blocks.0.hook_resid_pre"]}
    for l in range(cfg.n_layers):
        for h in range(cfg.n_heads):
            out[f"L{l}H{h}"] = cache["z", l][:, :, h] @ model.W_O[l, h]
    return out

clean_out, corrupted_out = outputs(clean_cache), outputs(corrupted_cache)
diff = {k: clean_out[k] - corrupted_out[k] for k in clean_out}  # what removing an edge from k subtracts
final = clean_cache[f"blocks.{cfg.n_layers - 1}.hook_resid_post"]
ref_logp = model(clean)[:, -1].double().log_softmax(-1)

def kl_without(senders):
    resid = final - sum((diff[s] for s in senders), torch.zeros_like(final))
    logp = model.unembed(model.ln_final(resid))[:, -1].double().log_softmax(-1)
    return (ref_logp.exp() * (ref_logp - logp)).sum(-1).mean().item()

removed, current = [], kl_without([])
for s in reversed(graph.senders_of("logits")):  # latest sender first
    value = kl_without(removed + [s])
    if value - current < threshold:
        removed.append(s)
        current = value
by_hand = sorted(set(graph.senders_of("logits")) - set(removed))
by_acdc = sorted(s for s, r in first_step.edges if r == "logits")
print(f"threshold {threshold:g}: senders kept into the logits by hand {by_hand}, by acdc {by_acdc}")
assert by_hand == by_acdc

# %% [markdown]
# **Faithfulness's two ends.** With every edge kept the model is the clean run; with every edge removed (corrupted
# ablation) it is the corrupted run. The normalisation's two ends must be the metric of two plain forward passes:

# %%
ends = curve_eap.meta
print(f"all edges {ends['full_value']:.5f} vs clean run {clean_value:.5f}; "
      f"no edge {ends['empty_value']:.5f} vs corrupted run {corrupted_value:.5f}")
assert abs(ends["full_value"] - clean_value) < 1e-4 and abs(ends["empty_value"] - corrupted_value) < 1e-4

# %% [markdown]
# ## Report
#
# The three circuits, the reference, the ROC curves and the faithfulness curves in one self-contained HTML file
# (`circuitlab circuit -m zoo/attn-only-2l --method acdc -o circuit.html` makes a similar one from the shell):

# %%
path = render.report([reference, scores_eap.top(len(reference)), scores_ig.top(len(reference)), acdc_circuit,
                      roc_eap, roc_ig, roc_acdc, curve_eap, curve_ig],
                     OUT / "circuit_discovery.html", title="Circuit discovery on zoo/attn-only-2l")
print(f"wrote {path.name}")
