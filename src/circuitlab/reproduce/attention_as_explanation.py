"""Attention as explanation: three findings of the survey's attention section, measured with
:mod:`circuitlab.attention`.

- Abnar & Zuidema (2020): attention rollout and attention flow agree with token importance (input ablation and
  gradients) better than the raw attention of the last layer;
- Michel et al. (2019): a large share of heads can be masked at test time with little loss, and many layers keep
  working with one head;
- Kovaleva et al. (2019): a few attention-pattern classes repeat across heads, and the structural classes
  (vertical, diagonal) appear whatever the input, random tokens included.

Text comes from zoo/toy-lm's held-out file (our own selection of public-domain lines, committed with the zoo
model), tokenised by each model: sequences of a start token and ``n - 1`` tokens of running text.
"""

from __future__ import annotations

from typing import Optional

import torch
from jaxtyping import Int
from torch import Tensor

from circuitlab.attention.flow import METHODS, correlations
from circuitlab.attention.importance import head_importance, masked_loss, prune_curve
from circuitlab.attention.patterns import CLASSES, default_pairs, pattern_taxonomy
from circuitlab.core import as_model, check_seed
from circuitlab.engine.collect import is_encoder
from circuitlab.errors import InputError
from circuitlab.reproduce.registry import Citation, Finding, Measurement, NotApplicable, register, verdict

def text_tokens(model, seqs: int, seq_len: int, skip: int = 0, text: Optional[str] = None
                ) -> Int[Tensor, "batch pos"]:
    """``seqs`` rows of a start token and ``seq_len - 1`` tokens of running text (``text``, by default zoo/toy-lm's
    held-out text: :func:`circuitlab.zoo.toy_lm.load_heldout_text`), after skipping ``skip`` rows' worth (so that
    two calls with different ``skip`` never share text)."""
    if text is None:
        from circuitlab.zoo.toy_lm import load_heldout_text

        text = load_heldout_text()
    ids = model.to_tokens(text, prepend_bos=False, truncate=False)[0]
    body = seq_len - 1
    need = (skip + seqs) * body
    if len(ids) < need:
        raise InputError(f"the text has {len(ids)} tokens under this tokenizer; {need} are needed.")
    chunks = ids[skip * body: need].reshape(seqs, body)
    tok = model.tokenizer
    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    return torch.cat([torch.full((seqs, 1), start, dtype=chunks.dtype, device=chunks.device), chunks], 1)


def _decoder(model, what: str) -> None:
    if is_encoder(model):
        raise NotApplicable(f"{what} needs next-token predictions; this model is an encoder without an LM head")


# ---------------------------------------------------------------------------------------------------------
# Abnar & Zuidema 2020
# ---------------------------------------------------------------------------------------------------------

FLOW_PROMPTS, FLOW_LENGTH, FLOW_MARGIN = 16, 12, 0.1


def measure_flow(model, seed: int) -> Measurement:
    _decoder(model, "token importance by ablation")
    model = as_model(model)
    tokens = text_tokens(model, FLOW_PROMPTS, FLOW_LENGTH)
    means, results = {}, []
    for reference in ("ablation", "gradients"):
        r = correlations(model, tokens, reference=reference, solver="scipy")
        means[reference] = r.meta["mean"]
        results.append(r)
    beats = {(ref, m): means[ref][m] - means[ref]["raw"] >= FLOW_MARGIN
             for ref in means for m in ("rollout", "flow")}
    outcome = verdict(all(beats.values()), any(beats.values()))
    figures = "; ".join(f"vs {'input ablation' if ref == 'ablation' else 'integrated gradients'}: " +
                        ", ".join(f"{m} {means[ref][m]:+.2f}" for m in METHODS) for ref in means)
    figures = (f"mean Spearman over {FLOW_PROMPTS} prompts of {FLOW_LENGTH} tokens (last position, start token "
               f"left out): {figures}")
    why = "; ".join(f"{m} - raw vs {ref} = {means[ref][m] - means[ref]['raw']:+.2f} "
                    f"({'>=' if beats[(ref, m)] else '<'} {FLOW_MARGIN})" for ref in means for m in ("rollout", "flow"))
    return Measurement(figures, outcome, why, {"means": means}, results)


register(Finding(
    id="rollout-and-flow-beat-raw-attention",
    citation=Citation("Abnar & Zuidema", 2020, "Quantifying Attention Flow in Transformers", "Abstract; Section 4",
                      "https://aclanthology.org/2020.acl-main.385"),
    claim="Attention rollout and attention flow correlate with token importance from input ablation and from "
          "gradients better than the raw attention weights do.",
    published="Qualitative: \"compared to raw attention, both yield higher correlations with importance scores of "
              "input tokens obtained using an ablation method and input gradients\" (Abstract; per-layer Spearman "
              "correlations in the paper's tables are not quoted here: they could not be checked offline).",
    published_model="a 6-layer Transformer encoder trained on subject-verb agreement; pretrained BERT",
    models=("zoo/toy-lm", "gemma-3-270m", "smollm2-135m"),
    measure=measure_flow,
    rule=f"reproduced if rollout and flow each beat raw attention's mean Spearman by >= {FLOW_MARGIN} against both "
         "input ablation and integrated gradients; partly if at least one of the four comparisons does",
    seconds=20.0, uses_seed=False,
))


# ---------------------------------------------------------------------------------------------------------
# Michel et al. 2019
# ---------------------------------------------------------------------------------------------------------

PRUNE_SEQS, PRUNE_LENGTH, PRUNE_RISE = 16, 32, 0.05
PRUNE_SHARE, LAYER_SHARE = 0.2, 0.5
FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)


def measure_pruning(model, seed: int) -> Measurement:
    _decoder(model, "the language-model loss")
    model = as_model(model)
    scoring = text_tokens(model, PRUNE_SEQS, PRUNE_LENGTH)               # importance measured here
    heldout = text_tokens(model, PRUNE_SEQS, PRUNE_LENGTH, skip=PRUNE_SEQS)  # losses measured here
    imp = head_importance(model, scoring)
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    flat = imp.values.flatten()
    order = [(i // n_heads, i % n_heads) for i in sorted(range(len(flat)), key=lambda i: (float(flat[i]), i))]
    curve = prune_curve(model, heldout, order, fractions_pruned=FRACTIONS)
    base = curve.meta["base_loss"]
    ok = [f for f, loss in zip(FRACTIONS, curve.values.tolist()) if loss <= base * (1 + PRUNE_RISE)]
    prunable = max(ok) if ok else 0.0
    one_head = []
    for layer in range(n_layers):  # keep the layer's most important head only
        best = int(imp.values[layer].argmax())
        loss = masked_loss(model, heldout, [(layer, h) for h in range(n_heads) if h != best])
        one_head.append(loss <= base * (1 + PRUNE_RISE))
    layers_ok = sum(one_head) / n_layers
    a, b = prunable >= PRUNE_SHARE, layers_ok >= LAYER_SHARE
    outcome = verdict(a and b, a or b)
    points = ", ".join(f"{f:.0%} {loss:.3f}" for f, loss in zip(FRACTIONS, curve.values.tolist()))
    figures = (f"held-out LM loss {base:.3f} nats; pruned by importance: {points}; up to {prunable:.0%} of "
               f"{n_layers * n_heads} heads within +{PRUNE_RISE:.0%}; {sum(one_head)} of {n_layers} layers keep "
               f"the loss within +{PRUNE_RISE:.0%} with one head")
    why = (f"(a) {prunable:.0%} of heads prunable {'>=' if a else '<'} {PRUNE_SHARE:.0%}: {'holds' if a else 'fails'}; "
           f"(b) {layers_ok:.0%} of layers work with one head {'>=' if b else '<'} {LAYER_SHARE:.0%}: "
           f"{'holds' if b else 'fails'}")
    values = {"base_loss": base, "curve": dict(zip(FRACTIONS, curve.values.tolist())), "prunable": prunable,
              "one_head_layers": one_head}
    return Measurement(figures, outcome, why, values, [imp, curve])


register(Finding(
    id="many-heads-can-be-pruned",
    citation=Citation("Michel et al.", 2019, "Are Sixteen Heads Really Better than One?", "Abstract; Sections 3-4",
                      "https://arxiv.org/abs/1905.10650"),
    claim="A large share of attention heads can be masked at test time without much loss, and many layers keep "
          "working with a single head.",
    published="\"a large percentage of attention heads can be removed at test time without significantly impacting "
              "performance. In fact, some layers can even be reduced to a single head.\" (Abstract); pruning by "
              "importance, about 20% of heads (WMT) and 40% (BERT on MNLI) go without a noticeable drop (Section 4).",
    published_model="Transformer-large on WMT14 En-Fr; BERT-base fine-tuned on MNLI",
    models=("zoo/toy-lm", "gemma-3-270m", "smollm2-135m"),
    measure=measure_pruning,
    rule=f"on held-out text (importance measured on other text): reproduced if (a) >= {PRUNE_SHARE:.0%} of heads "
         f"can be masked by ascending importance with the LM loss within +{PRUNE_RISE:.0%} of the full model's and "
         f"(b) >= {LAYER_SHARE:.0%} of layers stay within +{PRUNE_RISE:.0%} keeping only their most important head; "
         "partly if one holds",
    seconds=30.0, uses_seed=False,
))


# ---------------------------------------------------------------------------------------------------------
# Kovaleva et al. 2019
# ---------------------------------------------------------------------------------------------------------

PATTERN_INPUTS, PATTERN_LENGTH = 32, 32
MAX_DISTANCE, STRUCTURAL_SHARE = 0.2, 0.3
STRUCTURAL = ("vertical", "diagonal", "vertical+diagonal")


def measure_patterns(model, seed: int) -> Measurement:
    seed = check_seed(seed)
    from circuitlab.models.loading import as_any_model

    model = as_any_model(model)
    length = min(PATTERN_LENGTH, model.cfg.n_ctx)
    rnd = pattern_taxonomy(model, "random", n=PATTERN_INPUTS, length=length, seed=seed)
    txt = pattern_taxonomy(model, default_pairs(PATTERN_INPUTS, seed), length=length)
    p_rnd, p_txt = rnd.values.mean((0, 1)), txt.values.mean((0, 1))
    distance = float((p_rnd - p_txt).abs().sum() / 2)
    structural = float(sum(p_txt[CLASSES.index(c)] for c in STRUCTURAL))
    a, b = distance <= MAX_DISTANCE, structural >= STRUCTURAL_SHARE
    outcome = verdict(a and b, a or b)

    def shares(p: torch.Tensor) -> str:
        return ", ".join(f"{c} {float(v):.0%}" for c, v in zip(CLASSES, p))

    figures = (f"class shares over all heads, on {PATTERN_INPUTS} text pairs: {shares(p_txt)}; on random tokens: "
               f"{shares(p_rnd)}; total variation distance {distance:.2f}")
    why = (f"(a) distance between random-token and text shares {distance:.2f} {'<=' if a else '>'} {MAX_DISTANCE}: "
           f"{'holds' if a else 'fails'}; (b) structural classes on text {structural:.0%} {'>=' if b else '<'} "
           f"{STRUCTURAL_SHARE:.0%}: {'holds' if b else 'fails'}")
    values = {"text": dict(zip(CLASSES, p_txt.tolist())), "random": dict(zip(CLASSES, p_rnd.tolist())),
              "distance": distance, "per_layer_text": txt.meta["per_layer"].tolist(),
              "per_layer_random": rnd.meta["per_layer"].tolist()}
    return Measurement(figures, outcome, why, values, [txt, rnd])


register(Finding(
    id="attention-patterns-repeat-across-heads",
    citation=Citation("Kovaleva et al.", 2019, "Revealing the Dark Secrets of BERT", "Section 3, Figures 1-2",
                      "https://aclanthology.org/D19-1445"),
    claim="A few attention-pattern classes repeat across heads, and the structural ones (vertical, diagonal) appear "
          "whatever the input, so they say little about the text.",
    published="\"there is a limited set of attention patterns that are repeated across different heads\" (Abstract); "
              "of the five classes, \"the first three types are most likely associated with language model "
              "pre-training, while the last two potentially encode semantic and syntactic information\" (Figure 1); "
              "per-task class shares in Figure 2 (not quoted: could not be checked offline).",
    published_model="BERT-base, pre-trained and fine-tuned on GLUE tasks",
    models=("minilm-l6", "zoo/toy-lm", "gemma-3-270m", "smollm2-135m"),
    measure=measure_patterns,
    rule=f"reproduced if (a) the model-wide class shares on random-token inputs and on text pairs are within a total "
         f"variation distance of {MAX_DISTANCE} and (b) the structural classes (vertical, diagonal, vertical+diagonal) "
         f"hold >= {STRUCTURAL_SHARE:.0%} of head maps on text; partly if one holds",
    seconds=15.0,
))
