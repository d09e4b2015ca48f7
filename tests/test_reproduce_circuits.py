"""The circuit-discovery findings (circuitlab.reproduce.circuit_discovery): ACDC recovers the induction circuit,
and EAP's ROC AUC is close to ACDC's at a fraction of the cost.

Each verdict is recomputed from the returned numbers with the rule written out again here; the ROC points are
recounted from the circuits' edges, the sweep's area from a brute-force frontier (every pair of points compared),
and EAP's AUC from a brute-force pairwise AUC (the chance that a reference edge outranks another edge, ties one
half), none of them with the code under test.
"""

import math

import pytest
import torch

from circuitlab import reproduce
from circuitlab.reproduce.circuit_discovery import frontier, sweep_auc


def pairwise_auc(keys, labels) -> float:
    pos = [k for k, y in zip(keys, labels) if y]
    neg = [k for k, y in zip(keys, labels) if not y]
    return sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg) / (len(pos) * len(neg))


def brute_sweep_auc(points) -> float:
    """Area under the points no other point dominates (fpr <= and tpr >=, not equal), with (0, 0) and (1, 1),
    joined by straight lines in order of fpr."""
    pts = set(map(tuple, points)) | {(0.0, 0.0), (1.0, 1.0)}
    undominated = [p for p in pts if p in ((0.0, 0.0), (1.0, 1.0))
                   or not any(q != p and q[0] <= p[0] and q[1] >= p[1] for q in pts if q != (1.0, 1.0))]
    line = sorted(undominated)
    return sum((b[0] - a[0]) * (a[1] + b[1]) / 2 for a, b in zip(line, line[1:]))


@pytest.fixture(autouse=True, scope="module")
def one_thread():  # the model is tiny: one thread is faster, and steadier on a loaded machine
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def runs():
    return {fid: reproduce.run(fid) for fid in ("acdc-recovers-induction-circuit", "eap-auc-close-to-acdc")}


def test_sweep_area_on_hand_made_points():
    assert sweep_auc([]) == pytest.approx(0.5)  # the chance line
    assert sweep_auc([(0.0, 1.0)]) == pytest.approx(1.0)  # a perfect circuit
    # a dominated point changes nothing; a point with every reference edge extends flat to fpr 1
    assert sweep_auc([(0.2, 0.6), (0.3, 0.5)]) == pytest.approx(sweep_auc([(0.2, 0.6)]))
    assert sweep_auc([(0.5, 1.0)]) == pytest.approx(0.5 * 1.0 / 2 + 0.5 * 1.0)
    assert frontier([(0.5, 1.0)]) == [(0.0, 0.0), (0.5, 1.0), (1.0, 1.0)]
    for pts in ([(0.1, 0.4), (0.2, 0.3), (0.4, 0.9), (0.6, 0.8)], [(0.0, 0.5), (0.25, 0.5), (1.0, 0.9)]):
        assert sweep_auc(pts) == pytest.approx(brute_sweep_auc(pts), abs=1e-12)


def test_acdc_recovers_induction_circuit_verdict_and_numbers(runs):
    r = runs["acdc-recovers-induction-circuit"]
    v = r.measurement.values
    assert r.model == "zoo/attn-only-2l" and r.seconds < 60
    truth = set(v["reference_edges"])
    n, p = v["n_edges"], len(truth)
    assert n == 81 and 0 < p < n
    # every point recounted from the circuit's edges
    points = []
    for edges in v["acdc_edges"]:
        kept = set(edges)
        points.append((len(kept - truth) / (n - p), len(kept & truth) / p))
    assert points == [tuple(x) for x in v["acdc_points"]]
    auc = brute_sweep_auc(points)
    assert abs(auc - v["acdc_auc"]) < 1e-12
    # the rule, written again: AUC >= 0.8; at the threshold of largest tpr - fpr (first on ties), recall >= 0.75
    # and false-positive rate <= 0.25
    j = [t - f for f, t in points]
    best = j.index(max(j))
    fpr, tpr = points[best]
    a, b = auc >= 0.8, tpr >= 0.75 and fpr <= 0.25
    assert r.verdict == ("reproduced" if a and b else "partly" if a or b else "not reproduced")
    assert v["best_threshold"] == v["thresholds"][best]
    # the higher the threshold, the fewer edges ACDC keeps at the two ends of the sweep
    assert len(v["acdc_edges"][0]) >= len(v["acdc_edges"][-1])


def test_eap_auc_close_to_acdc_verdict_and_pairwise_auc(runs):
    r = runs["eap-auc-close-to-acdc"]
    v = r.measurement.values
    truth = set(v["reference_edges"])
    edges = list(v["eap_scores"])
    assert len(edges) == v["n_edges"]
    eap_auc = pairwise_auc([abs(v["eap_scores"][e]) for e in edges], [e in truth for e in edges])
    assert abs(eap_auc - v["eap_auc"]) < 1e-12
    # both findings read one run: the same ACDC sweep
    assert v["acdc_auc"] == runs["acdc-recovers-induction-circuit"].measurement.values["acdc_auc"]
    # the rule, written again: AUC(EAP) >= AUC(ACDC) - 0.1 and EAP's time <= one ACDC run's / 5
    acdc_median = sorted(v["acdc_seconds"])[len(v["acdc_seconds"]) // 2]
    close = eap_auc >= v["acdc_auc"] - 0.1
    cheap = v["eap_seconds"] <= acdc_median / 5
    assert r.verdict == ("reproduced" if close and cheap else "partly" if close or cheap else "not reproduced")
    assert math.isfinite(v["speedup"]) and v["speedup"] > 0


def test_a_model_without_induction_heads_is_not_applicable():
    r = reproduce.run("acdc-recovers-induction-circuit", model="zoo/attn-only-1l")
    assert r.verdict == "not applicable" and "induction" in r.measurement.why
