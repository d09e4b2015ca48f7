"""The thread rule (circuitlab.core.default_threads): usable cores // processes, at most the reserved CPUs, and
CIRCUITLAB_THREADS overriding it; compared with the operating system's own count of the process's cores."""

from __future__ import annotations

import os

import pytest
import torch

from circuitlab import core
from circuitlab.errors import InputError


@pytest.fixture
def env(monkeypatch):
    monkeypatch.delenv("CIRCUITLAB_THREADS", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_WORKER_COUNT", raising=False)
    return monkeypatch


def test_usable_cores_is_the_affinity_at_most():
    assert 1 <= core.usable_cores() <= len(os.sched_getaffinity(0))


def test_rule_divides_the_idle_cores_among_processes(env):
    cores = len(os.sched_getaffinity(0))
    env.setattr(core, "usable_cores", lambda: cores)
    env.setattr(core, "busy_cores", lambda: 0)
    assert core.default_threads() == cores
    for processes in (1, 2, 3, 64):
        assert core.default_threads(processes) == max(1, cores // processes)
        assert core.default_threads(processes) * processes <= max(cores, processes)  # never oversubscribes
    env.setattr(core, "usable_cores", lambda: 16)
    assert core.default_threads(3) == 5 and core.default_threads(cap=4) == 4 and core.default_threads(8, cap=4) == 2
    env.setenv("PYTEST_XDIST_WORKER_COUNT", "4")
    assert core.default_threads() == 4
    env.delenv("PYTEST_XDIST_WORKER_COUNT")
    # other processes' load takes cores away: 16 cores with 5 busy leave 11; a machine busier than its cores, 1
    env.setattr(core, "busy_cores", lambda: 5)
    assert core.default_threads() == 11 and core.default_threads(2) == 5
    env.setattr(core, "busy_cores", lambda: 40)
    assert core.default_threads() == 1 and core.default_threads(4, cap=2) == 1


def test_busy_cores_is_the_load_average_rounded_down():
    assert core.busy_cores() == int(os.getloadavg()[0]) or abs(core.busy_cores() - os.getloadavg()[0]) <= 1


def test_environment_overrides_the_rule_and_bad_values_say_so(env):
    env.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    env.setenv("CIRCUITLAB_THREADS", "3")
    assert core.default_threads() == 3 and core.default_threads(8, cap=1) == 3
    for bad in ("0", "-2", "two", "1.5"):
        env.setenv("CIRCUITLAB_THREADS", bad)
        with pytest.raises(InputError, match="CIRCUITLAB_THREADS"):
            core.default_threads()


def test_apply_sets_torch_threads(env):
    before = torch.get_num_threads()
    try:
        env.setenv("CIRCUITLAB_THREADS", "1")
        assert core.apply_default_threads() == 1 == torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
