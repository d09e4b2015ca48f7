"""ACDC (Conmy et al. 2023): greedy edge pruning against a threshold, exact, with batched speculation.

**The algorithm** (the paper's Algorithm 1). Start from the full graph ``G``. Visit the receivers from the logits
backwards (reverse topological order: the reverse of the graph's receiver order), and for each receiver its
incoming edges (latest sender first: the reverse of the graph's edge order throughout). For each edge ``e``::

    candidate = G without e
    change    = D(candidate) - D(G)          D = KL(clean output || patched output), the default metric
    if change < threshold:  G = candidate    (the edge is removed; later decisions see it removed)

With any other metric ``m`` the change is ``|m(G) - m(candidate)|``. Every ``D`` is an exact edge-patched run
(:mod:`circuitlab.circuits.patch`): the removed edges carry their sender's ablated output. Each decision is made
against the circuit as it stands after all previous decisions, so the decisions are sequential.

**Why it can still be batched, and why the result does not change.** The candidates of one receiver differ from
the current circuit in one edge each, so many of them fit in one batched forward pass — but the i-th decision
must be made against the circuit *after* the first ``i - 1`` decisions of the same receiver, which a batch
evaluated against the circuit as it was before cannot know. So the batch is *speculative*:

1. Predict every decision of the receiver (initially: the more common decision so far; "removed" at first).
2. Build the chain of circuits those predictions imply: ``S_1`` = the current circuit; ``T_i = S_i`` without
   edge ``i``; ``S_{i+1} = T_i`` if edge ``i`` is predicted removed, else ``S_i``. Evaluate every ``T_i`` of a
   window in one batched pass (``D(S_i)`` is the current value or an earlier ``D(T_j)``).
3. Confirm sequentially: decision ``i`` is taken exactly as the sequential algorithm would take it, from
   ``D(T_i) - D(S_i)`` — valid because ``S_i`` *is* the circuit the sequential algorithm holds at that moment, as
   long as every earlier decision matched its prediction. At the first decision that contradicts its
   prediction, the rest of the window was built on a circuit that did not happen: it is discarded, the
   predictions of the remaining edges are updated from the window's marginal changes (``D(T_j) - D(S_j)``, a
   good guess of each edge's fate), and a new window starts from the true circuit.

A window is not confined to one receiver: it runs on through the next receivers *of the same layer* (their
candidates all start at that layer, so they share a pass), which turns a layer of small receivers into a few
passes rather than one per receiver. Where the chain reaches a receiver whose component is dead (below), its
decisions are taken in the chain without a run.

Every decision therefore uses exactly the two values the sequential algorithm compares (computed in a different
batch composition, so equal up to float rounding), and the final circuit equals the sequential one. A wrong
prediction only costs the discarded part of one window.

One more exact shortcut: when a receiver belongs to a component all of whose outgoing edges are already removed
(every reader of a component is visited before the component's own inputs), nothing downstream reads that
component any more, so removing its inputs changes the metric by exactly 0: those decisions are taken without a
run (removed when ``0 < threshold``; with ``threshold = 0`` such edges are kept, as the rule says).
"""

from __future__ import annotations

import math
import time
from typing import Optional, Sequence

import torch
from torch import Tensor

from circuitlab.circuits.circuit import Circuit
from circuitlab.circuits.patch import setup_patcher
from circuitlab.core import (DEFAULT_MAX_MEMORY, ModelLike, Prompts, check_finite, check_number, metric_name,
                             model_name, progress_bar)
from circuitlab.errors import InputError
from circuitlab.metrics import Metric


def acdc(
    model: ModelLike,
    clean_tokens: Prompts,
    corrupted_tokens: Prompts,
    threshold: float,
    metric: Optional[Metric] = None,
    *,
    ablation: str = "corrupted",
    speculate: bool = True,
    receivers: Optional[Sequence[str]] = None,
    max_memory: int = DEFAULT_MAX_MEMORY,
    progress: bool = False,
) -> Circuit:
    """Automatic circuit discovery: the edges ACDC keeps at ``threshold`` (see the module docstring).

    Args:
        model: a HookedTransformer the circuit graph supports, or a name for :func:`circuitlab.load_model`.
        clean_tokens, corrupted_tokens: prompt pairs of identical shape.
        threshold: ``tau``, a finite number >= 0: an edge is removed when removing it changes the metric by less.
        metric: default :class:`~circuitlab.metrics.KLDivergence` from the clean run's last-position predictions
            (the change is ``KL(candidate) - KL(current)``, as in the paper); any metric of
            :mod:`circuitlab.metrics` or callable on logits (the change is ``|m(current) - m(candidate)|``).
        ablation: what a removed edge carries: ``"corrupted"`` (default), ``"mean"`` or ``"zero"``.
        speculate: evaluate each receiver's candidates in speculative batches (same result, fewer passes);
            ``False`` runs one patched pass per decision, the paper's loop.
        receivers: visit only these receivers (names like ``"logits"``, ``"L1H0.k"``, ``"MLP0"``), in the same
            order; every other receiver keeps all its edges (scored NaN). For timing one step of ACDC or a
            partial search; default: every receiver.
        max_memory: rough bound in bytes on one batched pass's activations.
        progress: show a progress bar over the receivers.

    Returns:
        a :class:`~circuitlab.circuits.circuit.Circuit` of the kept edges; each score is the change its removal
        would have caused (against the circuit at that moment). ``meta``: ``threshold``, ``ablation``,
        ``final_value`` (the metric of the circuit), ``passes`` (batched forward passes), ``runs`` (patched runs,
        i.e. masks evaluated), ``decisions``, ``skipped`` (decisions on dead components, taken without a run),
        ``seconds`` (in all) and ``setup_seconds`` (of which: the clean and corrupted runs cached first).
    """
    started = time.perf_counter()
    check_number(threshold, "threshold", low=0, what="a finite number >= 0 (ACDC's tau, e.g. 1e-3)")
    threshold = float(threshold)
    model, clean_t, patcher = setup_patcher(model, clean_tokens, corrupted_tokens, metric, ablation=ablation,
                                     max_memory=max_memory, what="ACDC")
    graph = patcher.graph
    setup_seconds = time.perf_counter() - started
    signed = metric is None  # KL: the paper's signed increase; any other metric: the absolute change

    def change(current: float, candidate: float) -> float:
        return candidate - current if signed else abs(current - candidate)

    removed = torch.zeros(len(graph.senders), len(graph.receivers), dtype=torch.bool)
    outgoing = graph.mask.sum(1)  # edges out of each sender
    current = float(patcher.run(removed[None])[0, 0])
    scores: dict[tuple[int, int], float] = {}
    skipped = decisions = n_removed = 0
    order = list(reversed(range(len(graph.receivers))))
    if receivers is not None:
        if isinstance(receivers, str):
            receivers = [receivers]
        chosen = {graph.receiver_index[graph.receiver(name).name] for name in receivers}
        if not chosen:  # nothing visited would return the full graph with every score NaN: a plausible wrong answer
            raise InputError("receivers is empty: name the receivers to visit (e.g. ['logits', 'L1H0.q']), or "
                             "leave it out to visit every receiver.")
        order = [r for r in order if r in chosen]

    # the receivers of one layer form one group: a speculative window may run across its receivers (their
    # candidates all start at that layer), so a layer of small receivers costs a few passes, not one per receiver
    groups: list[list[int]] = []
    for r in order:
        if groups and graph.receivers[groups[-1][0]].layer == graph.receivers[r].layer:
            groups[-1].append(r)
        else:
            groups.append([r])
    predicted: dict[tuple[int, int], bool] = {}
    bar = progress_bar(total=len(order), progress=progress, desc="ACDC receivers")

    def is_dead(state: Tensor, r: int) -> bool:
        """Whether receiver ``r``'s component has no outgoing edge left in ``state`` (so its inputs matter not)."""
        c = graph.sender_index.get(graph.receivers[r].component)
        return c is not None and int(state[c].sum()) == int(outgoing[c])

    hits = misses = 0  # predictions confirmed / contradicted so far: how long a speculative chain pays off

    for group in groups:
        fits = patcher.masks_per_pass(graph.receivers[group[0]].layer) if speculate else 1
        # the group's decisions in visiting order: (receiver, its senders latest first), one receiver at a time
        queue = [(r, list(reversed(range(graph.upstream[r])))) for r in group]
        at = (0, 0)  # (receiver in the group, sender in it): the first decision not yet taken
        while at[0] < len(queue):
            # the window: walk the decisions from `at` along the chain of circuits the predictions imply; a
            # receiver whose component is dead in that chain is decided without a run ("dead" steps)
            state, masks, plan = removed.clone(), [], []
            q, i = at
            # a chain of w candidates confirms about (1 - (1 - m)^w) / m decisions when each prediction fails with
            # probability m (measured as it goes): it is cut at ~1/m candidates, beyond which most would be wasted
            window = min(fits, max(2, round((hits + misses + 2) / (misses + 1))))
            while q < len(queue) and len(masks) < window:
                r, senders = queue[q]
                if i == 0 and is_dead(state, r):
                    plan.append(("dead", r, None, None))
                    if 0.0 < threshold:
                        state[senders, r] = True
                    q += 1
                    continue
                s = senders[i]
                if (s, r) not in predicted:  # first guess: the more common decision so far
                    predicted[(s, r)] = n_removed * 2 >= decisions
                candidate = state.clone()
                candidate[s, r] = True
                plan.append(("run", r, s, len(masks)))
                masks.append(candidate)
                if predicted[(s, r)]:
                    state = candidate
                i += 1
                if i == len(senders):
                    q, i = q + 1, 0
            while q < len(queue) and i == 0 and is_dead(state, queue[q][0]):  # dead receivers right after the window
                r, senders = queue[q]
                plan.append(("dead", r, None, None))
                if 0.0 < threshold:
                    state[senders, r] = True
                q += 1
            values = patcher.run(torch.stack(masks))[:, 0].tolist() if masks else []
            if masks:
                check_finite(model, clean_t, "the patched metric values", torch.tensor(values))
            # confirm sequentially: each decision against the circuit the sequential algorithm holds
            before = current  # D(S_j) along the predicted chain (equal to `current` until a prediction fails)
            mismatch = False
            for kind, r, s, j in plan:
                if kind == "dead":
                    if mismatch:
                        break
                    for sender in queue[at[0]][1]:  # every change is exactly 0
                        decisions += 1
                        skipped += 1
                        if 0.0 < threshold:
                            removed[sender, r] = True
                            n_removed += 1
                        else:
                            scores[(sender, r)] = 0.0
                    at = (at[0] + 1, 0)
                    bar.update(1)
                    continue
                value = values[j]
                chained = predicted[(s, r)]
                if mismatch:  # the rest of the window is void; its marginal changes guess the next decisions
                    predicted[(s, r)] = change(before, value) < threshold
                else:
                    decisions += 1
                    delta = change(current, value)
                    remove = delta < threshold
                    if remove:
                        removed[s, r] = True
                        current = value
                        n_removed += 1
                    else:
                        scores[(s, r)] = delta
                    mismatch = remove != chained
                    hits, misses = hits + (not mismatch), misses + mismatch
                    q, i = at
                    at = (q + 1, 0) if i + 1 == len(queue[q][1]) else (q, i + 1)
                    if at[1] == 0:
                        bar.update(1)
                if chained:
                    before = value
    bar.close()

    kept = [(graph.senders[s].name, graph.receivers[r].name) for s, r in zip(*graph.mask.nonzero(as_tuple=True))
            if not removed[s, r]]
    # (edges into receivers left unvisited, with receivers=..., have no decision and score NaN)
    kept_scores = [scores.get((graph.sender_index[s], graph.receiver_index[r]), math.nan) for s, r in kept]
    return Circuit.from_edges(
        graph, kept, kept_scores,
        title=f"ACDC circuit (threshold {threshold:g})",
        metric=metric_name(patcher.metrics[0]),
        model=model_name(model),
        task=f"{clean_t.shape[0]} prompt pair(s), {clean_t.shape[1]} tokens",
        meta={"method": "acdc", "threshold": threshold, "ablation": ablation, "final_value": current,
              "score": "metric change caused by removing the edge (at its decision)",
              "passes": patcher.passes, "runs": patcher.masks_run, "decisions": decisions, "skipped": skipped,
              "setup_seconds": setup_seconds, "speculate": speculate,
              "receivers": None if receivers is None else list(receivers),
              "max_memory": patcher.max_memory, "seconds": time.perf_counter() - started},
    )


__all__ = ["acdc"]
