"""Run every benchmark, then build the one summary table (``benchmarks/summary.py``) from their JSON.

Every ``benchmarks/*.py`` that takes ``--quick`` and ``--out`` is a benchmark here; each runs in its own process
(so one model at a time, and no benchmark's threads or memory leak into the next), one after another, with its
output, its exit status and its wall time logged. A benchmark that fails does not stop the others; the run's exit
status is non-zero if any failed. Scripts without ``--quick`` (the findings' measurement scripts, which run real
models for tens of minutes) are listed as skipped with the reason.

* ``--quick`` (``make bench``): each benchmark's quick mode (a run of a few minutes at most: small workloads, the
  peer timed on a subset), written to ``benchmarks/results/quick/`` (ignored by git), with its
  ``summary.json`` / ``summary.md``;
* without it (``make bench-full``): the full runs, written over the committed ``benchmarks/results/*.json``, then
  ``benchmarks/results/summary.{json,md}`` rebuilt. Hours on a shared 2-core machine; run benchmarks one by one.

``--only NAME ...`` runs some of them; ``--list`` prints which would run. Nothing here asserts a timing: the
figures are measurements to read, not tests (CI runs none of this; ``tests/test_bench_summary.py`` checks only
that the summary can be built from the committed JSON).

    python benchmarks/run_all.py --quick
    python benchmarks/run_all.py --quick --only patching tracing
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
NOT_BENCHMARKS = {"run_all.py", "summary.py"}
sys.path.insert(0, str(HERE))

import summary  # noqa: E402


def benchmarks() -> tuple[dict[str, Path], dict[str, str]]:
    """``({name: script}, {name: why skipped})`` over ``benchmarks/*.py``."""
    run, skipped = {}, {}
    for path in sorted(HERE.glob("*.py")):
        if path.name in NOT_BENCHMARKS or path.name.startswith("_"):
            continue
        src = path.read_text()
        if '"--quick"' not in src or '"--out"' not in src:
            skipped[path.stem] = "no --quick / --out options"
        else:
            run[path.stem] = path
    return run, skipped


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="each benchmark's quick mode, into results/quick/")
    p.add_argument("--only", nargs="+", default=None, help="benchmark names (file stems) to run")
    p.add_argument("--list", action="store_true", help="print the benchmarks that would run, and exit")
    p.add_argument("--timeout", type=float, default=None, help="seconds per benchmark (default: none)")
    args = p.parse_args(argv)
    run, skipped = benchmarks()
    if args.only:
        unknown = sorted(set(args.only) - set(run))
        if unknown:
            p.error(f"not benchmarks with --quick/--out: {', '.join(unknown)} (choose from {', '.join(run)})")
        run = {k: v for k, v in run.items() if k in args.only}
    if args.list:
        print("\n".join(run))
        for k, why in skipped.items():
            print(f"# skipped {k}: {why}")
        return 0
    out_dir = HERE / "results" / ("quick" if args.quick else "")
    out_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    src = str(HERE.parent / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    log = {"quick": args.quick, "date": time.strftime("%Y-%m-%d %H:%M:%S"), "load_average_at_start": os.getloadavg(),
           "runs": {}, "skipped": skipped}
    failed = []
    for name, script in run.items():
        cmd = [sys.executable, str(script), "--out", str(out_dir / f"{name}.json")]
        cmd += ["--quick"] if args.quick else []
        print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
        t = time.perf_counter()
        try:
            rc = subprocess.run(cmd, cwd=HERE.parent, env=env, timeout=args.timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        secs = round(time.perf_counter() - t, 1)
        log["runs"][name] = {"returncode": rc, "seconds": secs}
        print(f"== {name}: {'ok' if rc == 0 else f'FAILED ({rc})'} in {secs} s", flush=True)
        if rc != 0:
            failed.append(name)
    log["load_average_at_end"] = os.getloadavg()
    (out_dir / "run_all.log.json").write_text(json.dumps(log, indent=1) + "\n")
    table = summary.build(out_dir)
    summary.write(table, out_dir)
    print(summary.markdown(table))
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
