"""Automated circuit discovery recovers a known circuit: ACDC (Conmy et al. 2023) and EAP (Syed et al. 2023).

Conmy et al. (2023) proposed ACDC, which prunes a model's edge graph from the logits backwards, removing each edge
whose removal raises the KL divergence to the clean output by less than a threshold, and judged it by ROC curves
against circuits found by hand: one ACDC run per threshold gives one (false-positive rate, true-positive rate)
point, and the area under the points is the AUC. Syed et al. (2023) scored every edge at once with attribution
patching (EAP: one forward pass on each prompt and one backward pass) and reported ROC AUCs comparable to ACDC's
at a small fraction of its cost.

Measured here on the induction task of :func:`circuitlab.tasks.repeated.induction_task` (repeated random
sequences against fresh random tokens; seeded), against the model's induction circuit
(:func:`circuitlab.circuits.reference.induction_reference`, established with head scores and exact path patching,
not by any of the methods judged here):

- **ACDC** (:func:`circuitlab.circuits.acdc`, exact, the paper's KL divergence to the clean last-position
  predictions, corrupted ablation) at each threshold of :data:`THRESHOLDS`; its ROC AUC is the area under the
  points' upper-left frontier (the points no other point beats on both rates) joined by straight lines from
  ``(0, 0)`` to ``(1, 1)`` (:func:`sweep_auc`; the ACDC paper's code also drops the points below the frontier,
  but joins the rest by steps under the straight lines, so its areas are a little smaller);
- **EAP** (:func:`circuitlab.circuits.eap`, on the task's log-probability metric): its edge ROC AUC ranks every
  edge by ``|score|`` (:func:`circuitlab.circuits.roc`); its time is the median of three runs after a warm-up,
  against the median time of one ACDC run (one threshold) of the sweep.

Everything runs on one thread (restored afterwards): the model is tiny, so one thread is faster, and on a busy
machine two threads slowed both methods several-fold and unevenly, which would blur the comparison of times.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from typing import Sequence

import torch

from circuitlab.core import check_seed, model_name
from circuitlab.circuits import Circuit, Graph, RocCurve, acdc, eap, eap_ig, roc
from circuitlab.circuits.reference import induction_reference
from circuitlab.errors import InputError
from circuitlab.models.identity import weight_fingerprint
from circuitlab.reproduce.registry import Citation, Finding, Measurement, NotApplicable, register, verdict
from circuitlab.tasks.repeated import induction_task

#: ACDC thresholds swept (KL divergence in nats, log-spaced from 1e-4 to 1), fixed before measuring
THRESHOLDS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)
#: the largest graph the measurement runs on (the reference patches every candidate edge exactly)
MAX_EDGES = 2000
#: finding 1: ACDC's swept edge AUC must reach this, and at its best threshold (largest tpr - fpr) it must keep at
#: least RECALL of the reference's edges with a false-positive rate of at most FALSE_POSITIVES
ACDC_AUC = 0.8
RECALL = 0.75
FALSE_POSITIVES = 0.25
#: finding 2: AUC(EAP) >= AUC(ACDC) - AUC_MARGIN, and EAP's seconds <= one ACDC run's seconds / SPEEDUP
AUC_MARGIN = 0.1
SPEEDUP = 5.0


# ---------------------------------------------------------------------------------------------------------------
# ROC points of circuits and the area under a threshold sweep
# ---------------------------------------------------------------------------------------------------------------

def roc_point(circuit: Circuit, reference: Circuit) -> tuple[float, float]:
    """``(fpr, tpr)`` of one circuit against a reference: the share of the graph's other edges it keeps, and the
    share of the reference's edges it keeps."""
    if not circuit.graph.same_shape(reference.graph):
        raise InputError(f"the circuit and the reference belong to different graphs: {circuit.graph.describe()} vs "
                         f"{reference.graph.describe()}.")
    truth = set(reference.edges)
    positives, negatives = len(truth), circuit.graph.n_edges - len(truth)
    if positives == 0 or negatives == 0:
        raise InputError("a ROC point needs reference edges and other edges; the reference has "
                         f"{positives} of {circuit.graph.n_edges}.")
    kept = set(circuit.edges)
    return len(kept - truth) / negatives, len(kept & truth) / positives


def frontier(points: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """The upper-left frontier of ROC points, from ``(0, 0)`` to ``(1, 1)``, sorted by false-positive rate: the
    points that no other point matches or beats on both rates (a lower or equal fpr with a higher or equal tpr).
    ``(1, 1)`` (keep every edge) always ends it, so the area runs to fpr 1."""
    inner = sorted({(float(f), float(t)) for f, t in points} - {(0.0, 0.0), (1.0, 1.0)}, key=lambda p: (p[0], -p[1]))
    kept = [(0.0, 0.0)]
    for f, t in inner:  # in order of fpr (ties: higher tpr first): keep a point only if it raises the best tpr
        if t > kept[-1][1]:
            kept.append((f, t))
    return kept + [(1.0, 1.0)]


def sweep_auc(points: Sequence[tuple[float, float]]) -> float:
    """The area under the frontier of a threshold sweep's ROC points (:func:`frontier`), joined by straight lines."""
    pts = frontier(points)
    return float(sum((pts[i][0] - pts[i - 1][0]) * (pts[i][1] + pts[i - 1][1]) / 2 for i in range(1, len(pts))))


def sweep_roc(circuits: Sequence[Circuit], reference: Circuit, title: str = "") -> RocCurve:
    """The ROC curve of a threshold sweep (one circuit per threshold, e.g. ACDC's): its frontier as a
    :class:`~circuitlab.circuits.RocCurve` (renders like :func:`~circuitlab.circuits.roc`'s), AUC by
    :func:`sweep_auc`. ``meta["points"]`` keeps every circuit's ``(fpr, tpr)``, frontier or not."""
    if not circuits:
        raise InputError("sweep_roc needs at least one circuit.")
    points = [roc_point(c, reference) for c in circuits]
    front = frontier(points)
    positives = len(reference)
    area = sweep_auc(points)
    return RocCurve(
        values=torch.tensor(front, dtype=torch.float64),
        axes=("point", "rate"),
        labels={"rate": ["fpr", "tpr"], "point": [f"{f:.3f},{t:.3f}" for f, t in front]},
        title=title or f"ROC of a sweep of {len(circuits)} circuits against {reference.title or 'the reference'}: "
                       f"AUC {area:.3f}",
        metric="true-positive rate against false-positive rate",
        model=circuits[0].model or reference.model,
        task=circuits[0].task,
        meta={"auc": area, "level": "edge", "by": "threshold sweep", "nodes": None, "positives": positives,
              "negatives": reference.graph.n_edges - positives, "points": points,
              "thresholds": [c.meta.get("threshold") for c in circuits], "reference": reference.title},
    )


# ---------------------------------------------------------------------------------------------------------------
# The measurement shared by both findings
# ---------------------------------------------------------------------------------------------------------------

_CACHE: dict[tuple, dict] = {}


@contextlib.contextmanager
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def discovery_run(model, seed: int = 0) -> dict:
    """The induction task, the reference circuit, ACDC at every threshold of :data:`THRESHOLDS` and EAP (timed),
    on ``model`` with ``seed``; cached per model weights and seed (both findings read the same run).

    Raises :class:`~circuitlab.reproduce.registry.NotApplicable` when the graph does not support the model, is
    larger than :data:`MAX_EDGES`, or the model has no induction heads (no reference)."""
    seed = check_seed(seed)
    # two models of one name are not mixed; every byte hashed again (recheck): writes into p.data in place are seen
    key = (model_name(model), seed, weight_fingerprint(model, recheck=True))
    if key not in _CACHE:
        with _one_thread():
            _CACHE[key] = _discovery_run(model, seed)
    return _CACHE[key]


def _discovery_run(model, seed: int) -> dict:
    try:
        graph = Graph.from_model(model)
    except InputError as exc:
        raise NotApplicable(str(exc)) from None
    if graph.n_edges > MAX_EDGES:
        raise NotApplicable(f"the model's graph has {graph.n_edges} edges; the induction reference patches each "
                            f"candidate edge exactly, which this finding does for graphs of up to {MAX_EDGES}")
    try:
        reference = induction_reference(model, seed=seed)
    except InputError as exc:
        raise NotApplicable(f"no induction reference circuit for this model: {exc}") from None
    clean, corrupted, metric = induction_task(model, seed=seed)

    eap(model, clean, corrupted, metric)  # warm-up: the first call of a shape runs several times slower
    eap_seconds, scores = [], None
    for _ in range(3):
        started = time.perf_counter()
        scores = eap(model, clean, corrupted, metric)
        eap_seconds.append(time.perf_counter() - started)
    circuits, acdc_seconds = [], []
    for threshold in THRESHOLDS:
        started = time.perf_counter()
        circuits.append(acdc(model, clean, corrupted, threshold=threshold))
        acdc_seconds.append(time.perf_counter() - started)
    sweep = sweep_roc(circuits, reference, title=f"ACDC swept over {len(THRESHOLDS)} thresholds against the "
                                                 "induction reference (edge level)")
    eap_roc = roc(scores, reference)
    ig_roc = roc(eap_ig(model, clean, corrupted, metric, steps=5), reference)  # context only: no rule reads it
    result = {"reference": reference, "scores": scores, "circuits": circuits, "sweep": sweep, "eap_roc": eap_roc,
              "ig_roc": ig_roc,
              "eap_seconds": statistics.median(eap_seconds), "acdc_seconds": acdc_seconds}
    return result


def _values(run: dict) -> dict:
    """The numbers both findings report (for the verdicts, tests and JSON)."""
    reference, sweep = run["reference"], run["sweep"]
    return {
        "thresholds": list(THRESHOLDS),
        "reference_edges": [f"{s} -> {r}" for s, r in reference.edges],
        "n_edges": reference.graph.n_edges,
        "acdc_edges": [[f"{s} -> {r}" for s, r in c.edges] for c in run["circuits"]],
        "acdc_points": [list(p) for p in sweep.meta["points"]],
        "acdc_auc": sweep.auc,
        "acdc_seconds": list(run["acdc_seconds"]),
        "acdc_median_seconds": statistics.median(run["acdc_seconds"]),
        "eap_scores": {f"{s} -> {r}": v for (s, r), v in zip(run["scores"].edges, run["scores"].scores)},
        "eap_auc": run["eap_roc"].auc,
        "eap_ig_auc": run["ig_roc"].auc,
        "eap_seconds": run["eap_seconds"],
    }


def best_threshold(points: Sequence[Sequence[float]]) -> int:
    """The index of the sweep point with the largest ``tpr - fpr`` (Youden's J; ties: the first, i.e. the lowest
    threshold)."""
    return max(range(len(points)), key=lambda i: (points[i][1] - points[i][0], -i))


# ---------------------------------------------------------------------------------------------------------------
# Finding 1: ACDC recovers the induction circuit
# ---------------------------------------------------------------------------------------------------------------

def measure_acdc(model, seed: int) -> Measurement:
    seed = check_seed(seed)
    run = discovery_run(model, seed)
    v = _values(run)
    auc, points = v["acdc_auc"], v["acdc_points"]
    b = best_threshold(points)
    fpr, tpr = points[b]
    kept = len(v["acdc_edges"][b])
    a_ok = auc >= ACDC_AUC
    b_ok = tpr >= RECALL and fpr <= FALSE_POSITIVES
    outcome = verdict(a_ok and b_ok, a_ok or b_ok)
    n_ref = len(v["reference_edges"])
    v.update({"best_index": b, "best_threshold": THRESHOLDS[b], "best_fpr": fpr, "best_tpr": tpr})
    figures = (f"ACDC edge ROC AUC {auc:.3f} over {len(THRESHOLDS)} thresholds against the induction reference "
               f"({n_ref} of {v['n_edges']} edges); at threshold {THRESHOLDS[b]:g} it keeps {kept} edges: "
               f"{tpr:.0%} of the reference's, {fpr:.0%} of the others")
    why = (f"(a) swept AUC {auc:.3f} {'>=' if a_ok else '<'} {ACDC_AUC}: {'holds' if a_ok else 'fails'}; "
           f"(b) at the best threshold ({THRESHOLDS[b]:g}, largest tpr - fpr) recall {tpr:.2f} "
           f"{'>=' if tpr >= RECALL else '<'} {RECALL} and false-positive rate {fpr:.2f} "
           f"{'<=' if fpr <= FALSE_POSITIVES else '>'} {FALSE_POSITIVES}: {'holds' if b_ok else 'fails'}")
    best = run["circuits"][b]
    return Measurement(figures, outcome, why, v, [run["reference"], best, run["sweep"]])


register(Finding(
    id="acdc-recovers-induction-circuit",
    citation=Citation("Conmy et al.", 2023, "Towards Automated Circuit Discovery for Mechanistic Interpretability",
                      "NeurIPS 2023; section 4 (ROC curves of ACDC, SP and HISP against circuits found by hand, one "
                      "point per threshold) and the induction task on a 2-layer attention-only model",
                      "https://arxiv.org/abs/2304.14997"),
    claim="ACDC, swept over its threshold, recovers a circuit known from other evidence: its edge-level ROC "
          "curve against the known circuit lies well above chance.",
    published="Qualitative: ACDC's edge-level ROC AUC against circuits found by hand is high and competitive with "
              "or better than the SP and HISP baselines on most tasks (ROC figure and AUC table). For the induction "
              "task (a 2-layer attention-only model) the paper has no hand-found circuit and compares methods by "
              "KL divergence against the number of edges, so its AUCs are for other tasks and models.",
    published_model="GPT-2 small, tracr-compiled models; a 2-layer attention-only model for induction",
    models=("zoo/attn-only-2l",),
    measure=measure_acdc,
    rule=f"ACDC (KL to the clean last-position predictions, corrupted ablation) at thresholds "
         f"{', '.join(f'{t:g}' for t in THRESHOLDS)} on the induction task, against induction_reference (exact path "
         f"patching, 5% of the gap); reproduced if (a) the edge ROC AUC of the sweep (area under the upper-left "
         f"frontier of the points with (0, 0) and (1, 1), straight lines) is >= {ACDC_AUC} and (b) at the threshold "
         f"with the largest tpr - fpr, ACDC keeps >= {RECALL:.0%} of the reference's edges with a false-positive "
         f"rate <= {FALSE_POSITIVES:.0%}; partly if one of (a), (b) holds",
    seconds=10.0,
))


# ---------------------------------------------------------------------------------------------------------------
# Finding 2: EAP's AUC is close to ACDC's at a fraction of the cost
# ---------------------------------------------------------------------------------------------------------------

def measure_eap(model, seed: int) -> Measurement:
    seed = check_seed(seed)
    run = discovery_run(model, seed)
    v = _values(run)
    eap_auc, acdc_auc = v["eap_auc"], v["acdc_auc"]
    eap_s, acdc_s = v["eap_seconds"], v["acdc_median_seconds"]
    close = eap_auc >= acdc_auc - AUC_MARGIN
    cheap = eap_s <= acdc_s / SPEEDUP
    outcome = verdict(close and cheap, close or cheap)
    ratio = acdc_s / eap_s if eap_s > 0 else math.inf
    v["speedup"] = ratio
    figures = (f"edge ROC AUC: EAP {eap_auc:.3f}, ACDC {acdc_auc:.3f} (swept; EAP-IG, 5 steps, "
               f"{v['eap_ig_auc']:.3f}); one EAP run {eap_s * 1e3:.0f} ms, one ACDC run {acdc_s * 1e3:.0f} ms "
               f"(median over thresholds): {ratio:.1f}x")
    why = (f"(a) AUC(EAP) {eap_auc:.3f} {'>=' if close else '<'} AUC(ACDC) - {AUC_MARGIN} = "
           f"{acdc_auc - AUC_MARGIN:.3f}: {'holds' if close else 'fails'}; (b) EAP {eap_s * 1e3:.1f} ms "
           f"{'<=' if cheap else '>'} ACDC {acdc_s * 1e3:.1f} ms / {SPEEDUP:g}: {'holds' if cheap else 'fails'}")
    evidence = [run["eap_roc"], run["sweep"], run["scores"].top(len(run["reference"]))]
    return Measurement(figures, outcome, why, v, evidence)


register(Finding(
    id="eap-auc-close-to-acdc",
    citation=Citation("Syed et al.", 2023, "Attribution Patching Outperforms Automated Circuit Discovery",
                      "ROC AUC of edge attribution patching against ACDC's on the ACDC paper's tasks, and its cost "
                      "(one forward pass per prompt set and one backward pass)", "https://arxiv.org/abs/2310.10348"),
    also=(Citation("Conmy et al.", 2023, "Towards Automated Circuit Discovery for Mechanistic Interpretability",
                   "the ROC evaluation EAP is compared in", "https://arxiv.org/abs/2304.14997"),),
    claim="Edge attribution patching ranks a known circuit's edges about as well as ACDC (ROC AUC) at a small "
          "fraction of ACDC's cost.",
    published="Qualitative: EAP's edge-level ROC AUC is comparable to or better than ACDC's on most of the ACDC "
              "paper's tasks, from two forward passes and one backward pass instead of ACDC's many forward passes.",
    published_model="GPT-2 small and the ACDC paper's tasks",
    models=("zoo/attn-only-2l",),
    measure=measure_eap,
    rule=f"on the induction task against induction_reference: EAP (log-prob metric, edges ranked by |score|, edge "
         f"ROC AUC) against ACDC swept over thresholds {', '.join(f'{t:g}' for t in THRESHOLDS)} (AUC of the "
         f"sweep's frontier); reproduced if (a) AUC(EAP) >= AUC(ACDC) - {AUC_MARGIN} and (b) EAP's seconds (median "
         f"of 3 after a warm-up) <= one ACDC run's (median over the thresholds) / {SPEEDUP:g}, both timed on one "
         "thread in one process; partly if one holds",
    seconds=10.0,
))


__all__ = ["THRESHOLDS", "best_threshold", "discovery_run", "frontier", "roc_point", "sweep_auc", "sweep_roc"]
