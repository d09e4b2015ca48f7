"""Attribution graphs of facts: subject -> MLP features at the last subject token -> the answer.

Lindsey et al. (2025) read attribution graphs of factual recall ("the Michael Jordan ... basketball" graph,
section "Multi-step reasoning" and the entity-recognition discussion) and find features at the subject's tokens
that carry the subject's attributes, which reach the answer logit at the final position through attention; this is
the transcoder-level picture of Meng et al.'s (2022) causal-tracing "early site" (MLP outputs at the last subject
token). Here: on ``zoo/toy-lm`` with its shipped transcoders (``toy-lm/tc-0..3``), for known facts of its synthetic
world (asked with the template each never saw in training, as the causal-tracing finding does), the graph of the
answer logit (``target`` = the answer), pruned with circuit-tracer's default thresholds (0.8 nodes, 0.98 edges).
The rule is fixed before measuring (see ``rule``).
"""

from __future__ import annotations

import torch

from circuitlab.core import check_seed, model_name
from circuitlab.reproduce.causal_tracing import facts_for
from circuitlab.reproduce.registry import Citation, Finding, Measurement, NotApplicable, register, verdict

N_FACTS = 12
KEEP = 0.6  # (a): in at least this fraction of facts, the pruned graph keeps a feature at the last subject token
SECOND = 0.5  # (b): in at least this fraction, the last subject token is the most influential position after the last


def measure(model, seed: int, n_facts: int | None = None) -> Measurement:
    from circuitlab.features.transcoders import shipped_transcoders
    from circuitlab.graphs import attribution_graph, prune_graph
    from circuitlab.tracing import subject_span

    seed = check_seed(seed)
    if model.cfg.attn_only:
        raise NotApplicable("the finding is about MLP (transcoder) features, and this model has no MLPs")
    name = model_name(model).removeprefix("zoo/")
    if not any(n.startswith(name + "/") for n in shipped_transcoders()):
        raise NotApplicable(f"no transcoders ship for {model_name(model)!r}")
    facts, n_known, known_text = facts_for(model, seed, n_facts or N_FACTS)
    kept, second, layers, shares = [], [], [], []
    for fact in facts:
        g = attribution_graph(model, name, fact.prompt, target=fact.answer)
        pr = prune_graph(g)
        start, end = subject_span(model, fact.prompt, fact.subject)
        last_subj, last = end - 1, g.replacement.n_pos - 1
        sl = g.slices()["feature"]
        at_subj = (g.pos[sl] == last_subj) & pr.node_mask[sl]
        kept.append(bool(at_subj.any()))
        layers += g.layer[sl][at_subj].tolist()
        infl = pr.influence.clone()
        infl[g.slices()["logit"]] = 0
        by_pos = torch.zeros(g.replacement.n_pos).index_add(0, g.pos.clamp(min=0), infl.float())
        others = [p for p in range(g.replacement.n_pos) if p != last]
        second.append(bool(others) and max(others, key=lambda p: float(by_pos[p])) == last_subj)
        shares.append(float(by_pos[last_subj] / by_pos.sum().clamp_min(1e-30)))
    a, b = sum(kept) / len(facts), sum(second) / len(facts)
    hist = torch.bincount(torch.tensor(layers, dtype=torch.long), minlength=model.cfg.n_layers).tolist() \
        if layers else [0] * model.cfg.n_layers
    outcome = verdict(a >= KEEP and b >= SECOND, a >= KEEP or b >= SECOND)
    mean_share = sum(shares) / len(shares)
    figures = (f"{len(facts)} facts ({known_text}): the pruned graph keeps a feature at the last subject token in "
               f"{a:.0%} of them (kept features there by layer {hist}); the last subject token is the most "
               f"influential position after the last in {b:.0%} (its mean share of the influence {mean_share:.2f})")
    why = (f"(a) {a:.0%} {'>=' if a >= KEEP else '<'} {KEEP:.0%}: {'holds' if a >= KEEP else 'fails'}; "
           f"(b) {b:.0%} {'>=' if b >= SECOND else '<'} {SECOND:.0%}: {'holds' if b >= SECOND else 'fails'}")
    values = {"n_facts": len(facts), "n_known": n_known, "kept_fraction": a, "second_fraction": b,
              "subject_layers": hist, "subject_share": shares, "facts": [f.prompt for f in facts]}
    return Measurement(figures, outcome, why, values)


FINDING = register(Finding(
    id="attribution-graph-fact-subject-features",
    citation=Citation("Lindsey et al.", 2025, "On the Biology of a Large Language Model (Transformer Circuits)",
                      "attribution graphs of factual recall; method in Ameisen et al. 2025, Circuit Tracing",
                      "https://transformer-circuits.pub/2025/attribution-graphs/biology.html"),
    also=(Citation("Meng et al.", 2022, "Locating and Editing Factual Associations in GPT", "Figure 2 (the early "
                   "site: MLPs at the last subject token)", "https://arxiv.org/abs/2202.05262"),),
    claim="In the attribution graph of a recalled fact, features at the subject's (last) token carry the subject's "
          "information to the answer logit at the final position: the transcoder-level counterpart of causal "
          "tracing's MLP site at the last subject token.",
    published="Qualitative (Lindsey et al. 2025, Claude 3.5 Haiku with cross-layer transcoders): graphs of "
              "factual recall show subject features (e.g. 'Michael Jordan') at the subject's tokens feeding the "
              "answer ('basketball') through attention. Meng et al. 2022 (GPT-2 XL): the MLP outputs at the last "
              "subject token in middle layers carry the largest indirect effect.",
    published_model="Claude 3.5 Haiku (Lindsey et al.); GPT-2 XL (Meng et al.)",
    models=("zoo/toy-lm",),
    measure=measure,
    rule=f"Over {N_FACTS} known facts of the toy world (the seeded shuffle of causal tracing's finding), the answer "
         f"logit's graph pruned at (0.8, 0.98): (a) in at least {KEEP:.0%} of the facts the pruned graph keeps a "
         f"transcoder feature at the last subject token; (b) in at least {SECOND:.0%} of them, summing every node's "
         "influence on the answer by position, the last subject token is the most influential position other than "
         "the last. Reproduced if both hold, partly if one.",
    seconds=60.0,
))
