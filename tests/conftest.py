"""Test-session settings.

``make test`` runs the suite in two processes (pytest-xdist, ``-n 2 --dist loadfile``: a file's tests stay in one
process, so module fixtures are built once). Each process then runs torch on usable cores // workers threads (one
on two cores; ``circuitlab.core.default_threads``), and so do the processes it starts (notebook kernels, command-line
subprocesses): two processes with two threads each on two cores would make OpenMP's threads wait on each other,
which slows small tensor operations by an order of magnitude.
"""

from __future__ import annotations

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    # circuitlab's rule (circuitlab.core.default_threads): usable cores // xdist workers, CIRCUITLAB_THREADS overrides
    from circuitlab.core import apply_default_threads

    _threads = str(apply_default_threads())
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = _threads
