"""One demo run shared by test_demo.py and test_browser.py (the demo is the slowest thing they need).

On the bundled ``zoo/attn-only-2l`` when it is installed; otherwise on a random attention-only model of the same
shape, so the rendering and browser checks still run (the findings then mean nothing, and the tests that
check findings skip).
"""

from __future__ import annotations

import functools
import io
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import circuitlab
from circuitlab.commands.demo import DEFAULT_MODEL, DemoOutcome, run_demo


@dataclass
class DemoRun:
    outcome: DemoOutcome
    output: str
    seconds: float
    on_zoo: bool
    model: Any  # what run_demo was given: a zoo name or a HookedTransformer


@functools.cache
def demo_run() -> DemoRun:
    out = Path(tempfile.mkdtemp(prefix="circuitlab-demo-")) / "report.html"
    on_zoo = DEFAULT_MODEL in circuitlab.list_models()
    if on_zoo:
        model = DEFAULT_MODEL
    else:
        from circuitlab.testing import random_model

        model = random_model("attn_only", n_ctx=64, d_vocab=101, d_model=64, n_heads=4)
    buf = io.StringIO()
    started = time.perf_counter()
    outcome = run_demo(model, out, progress=False, echo=lambda line: print(line, file=buf))
    return DemoRun(outcome, buf.getvalue(), time.perf_counter() - started, on_zoo, model)
