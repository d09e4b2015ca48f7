"""The benchmark summary (``benchmarks/summary.py``) built from the committed JSON, so the table cannot rot.

Runs no benchmark and asserts no timing: it rebuilds the table from ``benchmarks/results/*.json`` and compares it
with the committed ``summary.json``, and checks every row against the benchmark JSON it was read from by a second,
independent reading of the files' own fields (the ratio each benchmark recorded, not one recomputed here).
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


@pytest.fixture(scope="module")
def summary():
    spec = importlib.util.spec_from_file_location("bench_summary", ROOT / "benchmarks" / "summary.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_committed_summary_is_the_one_built_from_the_committed_json(summary):
    built = summary.build(RESULTS)
    committed = json.loads((RESULTS / "summary.json").read_text())
    assert built == committed, "run `python benchmarks/summary.py` and commit benchmarks/results/summary.*"
    assert (RESULTS / "summary.md").read_text() == summary.markdown(built)
    assert not [k for k, why in built["skipped"].items() if why.startswith("unreadable")], built["skipped"]


def test_every_reader_gives_rows_and_the_ratios_are_the_benchmarks_own(summary):
    rows = summary.build(RESULTS)["rows"]
    sources = {r["source"] for r in rows}
    assert sources == {f for f in summary.READERS if (RESULTS / f).exists()}
    # patching: each row's ratio is the ``speedup`` patching.py wrote, for the same (tokens, site)
    patching = json.loads((RESULTS / "patching.json").read_text())
    speedups = sorted(r["speedup"] for r in patching["results"])
    speedups += sorted(r["speedup"] for s in patching.get("models", {}).values() for r in s["results"])
    ours = [r["ratio"] for r in rows if r["source"] == "patching.json"]
    assert sorted(ours[:len(patching["results"])]) == pytest.approx(speedups[:len(patching["results"])], rel=1e-2)
    for r in rows:
        assert set(r) == set(summary.FIELDS)
        if r["ratio"] is not None and r["peer_s"] and r["circuitlab_s"]:
            # the ratio the benchmark recorded is peer / circuitlab (to the rounding of the recorded seconds)
            assert math.isclose(r["ratio"], r["peer_s"] / r["circuitlab_s"], rel_tol=0.05), r


def test_summary_builds_from_a_folder_of_new_json(summary, tmp_path):
    """A quick run's folder: a known file gives rows, an unknown one is listed, a broken one is named."""
    (tmp_path / "tracing.json").write_text((RESULTS / "tracing.json").read_text())
    (tmp_path / "other.json").write_text("{}")
    (tmp_path / "patching.json").write_text(json.dumps({"results": [{"n_tokens": 16}]}))
    code = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "summary.py"), "--results", str(tmp_path)],
                          capture_output=True, text=True).returncode
    assert code == 0
    built = json.loads((tmp_path / "summary.json").read_text())
    assert {r["source"] for r in built["rows"]} == {"tracing.json"}
    assert "other.json" in built["skipped"] and built["skipped"]["patching.json"].startswith("unreadable")
    assert (tmp_path / "summary.md").read_text().count("| tracing |") == len(built["rows"])
