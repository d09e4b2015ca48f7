"""Reference circuits: edges known to carry a behaviour, established from the model with circuitlab's analyses.

**The induction circuit** (:func:`induction_reference`), for any model the graph supports, by default
``zoo/attn-only-2l``. The task: ``n_seqs`` repeated random sequences ``[BOS] r_1..r_n r_1..r_n`` (clean) against
sequences of the same length whose tokens are all drawn afresh, so nothing repeats (corrupted); the metric is the
mean log-probability of the correct next token over the second copy (``r_2..r_n``), where only in-context copying
helps. It is established in three steps, each with circuitlab's own analyses, nothing written from memory:

1. **Roles** from attention (:func:`circuitlab.induction.head_scores` on the same kind of sequences): *induction
   heads* are the heads whose induction score is at least ``max(0.3, 0.5 x best)`` (the rule of
   :func:`~circuitlab.induction.find_induction_circuit`); *previous-token heads* are the heads in layers below the
   deepest induction head whose previous-token score is at least half the best such score (no absolute floor:
   in a small model the previous-token job is shared by several heads, none attending only one position back).
2. **Candidate edges**: every edge among ``embed``, those heads and ``logits``
   (:meth:`Circuit.from_nodes <circuitlab.circuits.Circuit.from_nodes>`): previous-token heads into induction
   heads' keys (K-composition), induction heads into the logits, the embedding into each head's inputs, and the
   rest of the pairs, for the next step to judge.
3. **Each candidate edge's exact effect**: the clean run with that one edge corrupted (the receiver reads the
   sender's output from the corrupted run; every other reader the clean one), minus the clean run. An edge from
   a head is measured with exact path patching (:func:`circuitlab.patching.path_patch`, ``direction="noising"``,
   the sender as the only sender and the edge's receiver as the only receiver: in a model without MLPs between
   them this is exactly the edge's effect); an edge from the embedding, which path patching does not take as a
   sender, by adding the sender's corrupted-minus-clean output to that one receiver's input (the same operation).
   An edge is kept when ``|effect| >= threshold x |metric(clean) - metric(corrupted)|``, with **threshold = 0.05**
   (5% of the whole behaviour), fixed before looking at the result.

For a model given by name, the result is cached per name, weights (their fingerprint) and settings (a circuit of
the model's graph; its ``meta`` keeps the roles, the head scores, every candidate's effect and the threshold).

**On zoo/attn-only-2l** (2 layers x 4 heads; defaults: 16 sequences of 2 x 12 tokens, seed 0): the four layer-1
heads are induction heads (scores 0.75-0.78), and all four layer-0 heads share the previous-token job (0.26-0.31,
each over half the best), so every component is a candidate and path patching alone decides. The log-prob gap
is 3.07 nats (-1.56 clean, -4.63 corrupted); **44 of the 81 edges** reach 5% of it: each induction head -> logits
(29-54%), the embedding -> every layer-0 head's value (41-61%) and each induction head's query (18-35%) and
value (11-19%) and three of their keys (7-9%), layer-0 heads -> induction heads' keys (14 of 16 pairs, 5-15%)
and queries (7 pairs), the embedding -> L0H0 and L0H3's queries and keys. Out: the direct path embed -> logits
(0.6%), every layer-0 head -> logits and -> induction heads' values (<1%). Against it, EAP's edge ROC AUC is 0.654
and EAP-IG's (5 steps) 0.883 (node level, ACDC's nodes: 0.775 and 0.858).

:func:`reference_from_edges` checks a hand-written reference against a model's graph: a name the model lacks is
an :class:`~circuitlab.errors.InputError` naming it.
"""

from __future__ import annotations

import collections
from typing import Any, Iterable

import torch
from jaxtyping import Int
from torch import Tensor

from circuitlab.circuits.circuit import Circuit
from circuitlab.circuits.graph import Edge, Graph
from circuitlab.core import ModelLike, as_model, check_number, check_seed, head_label, model_name
from circuitlab.errors import InputError
from circuitlab.models.identity import weight_fingerprint
from circuitlab.tasks.repeated import InductionLogProb, induction_task

#: the fraction of the clean-corrupted metric gap an edge's exact effect must reach to be in the reference
INDUCTION_THRESHOLD = 0.05


def induction_reference(model: ModelLike = "zoo/attn-only-2l", *, seq_len: int = 12, n_seqs: int = 16,
                        seed: int = 0, threshold: float = INDUCTION_THRESHOLD) -> Circuit:
    """The induction circuit of ``model``, established as the module docstring says (cached per name and weights).

    Returns an unscored :class:`~circuitlab.circuits.Circuit` (the reference edges) whose ``meta`` holds
    ``previous_token_heads``, ``induction_heads``, ``head_scores``, ``effects`` (every candidate edge's exact
    effect), ``gap`` (clean minus corrupted metric), ``threshold`` and ``how``.
    """
    seed = check_seed(seed)
    check_number(threshold, "threshold", 0, 1, low_open=True, high_open=True,
                 message=f"threshold is a fraction of the clean-corrupted metric gap, in (0, 1); got {threshold!r}.")
    if isinstance(model, str):
        return _cached_reference(as_model(model), seq_len, n_seqs, seed, float(threshold)).copy()
    return _induction_reference(as_model(model), seq_len, n_seqs, seed, float(threshold))


#: references established for a model given by name, keyed by its weights (a name's directory may be saved again)
_REFERENCES: "collections.OrderedDict[tuple, _Frozen]" = collections.OrderedDict()


def _cached_reference(model: Any, seq_len: int, n_seqs: int, seed: int, threshold: float) -> "_Frozen":
    key = (model_name(model), weight_fingerprint(model, recheck=True), seq_len, n_seqs, seed, threshold)
    if key not in _REFERENCES:
        _REFERENCES[key] = _Frozen(_induction_reference(model, seq_len, n_seqs, seed, threshold))
        while len(_REFERENCES) > 8:
            _REFERENCES.popitem(last=False)
    return _REFERENCES[key]


class _Frozen:
    """A cached circuit handed out as copies (a caller editing ``meta`` changes nothing for the next one)."""

    def __init__(self, circuit: Circuit):
        self.json = circuit.to_json()

    def copy(self) -> Circuit:
        return Circuit.from_json(self.json)


def _induction_reference(model, seq_len: int, n_seqs: int, seed: int, threshold: float) -> Circuit:
    from circuitlab.induction import head_scores, heads_above
    from circuitlab.patching import path_patch
    from circuitlab.results import Result

    graph = Graph.from_model(model)
    induction = head_scores(model, "induction", seq_len=seq_len, n_seqs=n_seqs, seed=seed)
    previous = head_scores(model, "previous_token", seq_len=seq_len, n_seqs=n_seqs, seed=seed)
    induction_heads = heads_above(induction, 0.3, 0.5)
    if not induction_heads:
        raise InputError(f"no head of {model_name(model) or 'the model'} has an induction score >= 0.3 (best "
                         f"{float(induction.values.max()):.3f}); the model has no induction circuit to reference.")
    top_layer = max(layer for layer, _ in induction_heads)
    below = previous.values.clone()
    below[top_layer:] = 0
    previous_heads = heads_above(Result(below, ("layer", "head")), 0.0, 0.5) if top_layer > 0 else []

    names = ["embed", *[head_label(h) for h in previous_heads + induction_heads], "logits"]
    candidates = Circuit.from_nodes(graph, dict.fromkeys(names)).edges
    clean, corrupted, metric = induction_task(model, seq_len, n_seqs, seed)
    with torch.no_grad():
        clean_value = float(metric(model(clean)))
        corrupted_value = float(metric(model(corrupted)))
    gap = clean_value - corrupted_value
    effects: dict[str, float] = {}
    for sender, receiver in candidates:
        if sender == "embed":
            value = edge_patched_value(model, graph, clean, corrupted, metric, (sender, receiver))
        else:
            value = float(path_patch(model, clean, corrupted, metric, senders=sender,
                                     receivers="resid_final" if receiver == "logits" else receiver,
                                     direction="noising", progress=False).values[0])
        effects[f"{sender} -> {receiver}"] = value - clean_value
    kept = [e for e in candidates if abs(effects[f"{e[0]} -> {e[1]}"]) >= threshold * abs(gap)]
    return Circuit(
        graph, kept, title=f"induction circuit of {model_name(model) or 'the model'} (reference)",
        metric=metric.name, model=model_name(model),
        task=f"{n_seqs} repeated random sequences of 2 x {seq_len} tokens vs fresh random tokens",
        meta={"previous_token_heads": [head_label(h) for h in previous_heads],
              "induction_heads": [head_label(h) for h in induction_heads],
              "head_scores": {"induction": induction.values.tolist(), "previous_token": previous.values.tolist()},
              "effects": effects, "clean_value": clean_value, "corrupted_value": corrupted_value, "gap": gap,
              "threshold": threshold,
              "how": "roles from head_scores; candidate edges among embed, those heads and logits; kept when the "
                     "exact edge effect (path_patch noising for head senders, one-edge patch for embed) is at "
                     f"least {threshold:g} of the clean-corrupted gap"},
    )


@torch.no_grad()
def edge_patched_value(model, graph: Graph, clean: Int[Tensor, "batch pos"], corrupted: Int[Tensor, "batch pos"],
                       metric, edge: Edge) -> float:
    """The metric on ``clean`` with one edge corrupted: receiver ``edge[1]`` reads sender ``edge[0]``'s output from
    the ``corrupted`` run, every other reader the clean one (exact, one forward pass per run)."""
    from circuitlab.circuits.eap import capture_senders as _capture_senders
    from circuitlab.circuits.eap import receiver_inputs, stack_senders as _stack_senders

    sender, receiver = graph.check_edge(edge)
    outputs: dict[str, Tensor] = {}
    with receiver_inputs(model):
        model.run_with_hooks(clean, fwd_hooks=_capture_senders(model, graph, outputs))
        clean_out = _stack_senders(model, graph, outputs)
        outputs.clear()
        model.run_with_hooks(corrupted, fwd_hooks=_capture_senders(model, graph, outputs))
        delta = (_stack_senders(model, graph, outputs) - clean_out)[graph.sender_index[sender]]
        node = graph.receiver(receiver)

        def add(act: Tensor, hook=None) -> Tensor:
            act = act.clone()
            if node.kind in ("q", "k", "v"):
                act[:, :, node.head] += delta.to(act.dtype)
            else:
                act += delta.to(act.dtype)
            return act

        return float(metric(model.run_with_hooks(clean, fwd_hooks=[(node.hook, add)])))


def reference_from_edges(model: ModelLike | Graph, edges: Iterable[Any], **fields: Any) -> Circuit:
    """A hand-written reference circuit, checked against ``model``'s graph (a model, a name, or a Graph): an edge
    naming a node the model lacks is an :class:`~circuitlab.errors.InputError` that names it."""
    graph = model if isinstance(model, Graph) else Graph.from_model(model)
    return Circuit.from_edges(graph, edges, **fields)


__all__ = ["INDUCTION_THRESHOLD", "InductionLogProb", "edge_patched_value", "induction_reference",
           "induction_task", "reference_from_edges"]
