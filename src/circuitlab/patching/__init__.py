"""Activation patching: exact sweeps, path patching and attribution patching.

    from circuitlab import patching
    from circuitlab.metrics import LogitDiff

    metric = LogitDiff(correct=" Mary", wrong=" John", model=model)
    res = patching.sweep(model, clean, corrupted, metric, site="resid_pre", by=("layer", "pos"))
    heads = patching.sweep(model, clean, corrupted, metric, site="z", by=("layer", "head"))
    approx = patching.attribution(model, clean, corrupted, metric, site="z", by=("layer", "head"))
    paths = patching.path_patch(model, clean, corrupted, metric, senders="heads", receivers="resid_final")

:func:`sweep` is exact (TransformerLens's numbers, computed in batches); :func:`attribution` is a linear
approximation from one forward and one backward pass; :func:`path_patch` isolates the effect that flows along
chosen sender -> receiver paths. Sites and axes are described in :mod:`circuitlab.patching.sites`.
"""

from circuitlab.patching.approx import attribution
from circuitlab.patching.path import path_patch
from circuitlab.patching.sites import SITES
from circuitlab.patching.exact import sweep

__all__ = ["sweep", "attribution", "path_patch", "SITES"]
