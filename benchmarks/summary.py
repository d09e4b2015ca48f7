"""One table of every benchmark's figures, built from the benchmarks' own JSON (never from a new measurement).

Reads the JSON files the benchmarks write (``benchmarks/results/*.json`` by default, or ``--results DIR``, where
``benchmarks/run_all.py --quick`` puts its quick runs) and writes ``summary.json`` and ``summary.md`` next to them
(or into ``--out DIR``): one row per measured workload with

* ``workload``, ``model``: what was timed, on which model;
* ``circuitlab_s``, ``peer``, ``peer_s``, ``ratio``: circuitlab's seconds, the peer it was timed against in the
  same process (TransformerLens, auto-circuit, SAELens, the paper-style reference loop...), the peer's seconds and
  ``peer_s / circuitlab_s`` as the benchmark recorded it (a peer time the benchmark extrapolated from a subset is
  marked ``extrapolated``);
* ``max_difference``: the largest absolute difference between the two results (``None`` where they are not
  compared number by number);
* ``peak_memory_mib``: circuitlab's peak memory as the benchmark measured it (RSS above the start, MiB);
* ``machine``, ``date``, ``load``: what the JSON says of the machine, the day and the load average (``None``
  where it says nothing); ``source``: the JSON file.

A benchmark file this does not know, or one missing fields, adds no row and is listed under ``skipped`` with the
reason, so the table never invents a figure. ``tests/test_bench_summary.py`` builds the table from the committed
JSON and checks it against the committed ``summary.json``: a benchmark whose JSON changes shape breaks that test,
not the table.

    python benchmarks/summary.py                                   # benchmarks/results/summary.{json,md}
    python benchmarks/summary.py --results benchmarks/results/quick
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
FIELDS = ("benchmark", "workload", "model", "circuitlab_s", "peer", "peer_s", "ratio", "max_difference",
          "peak_memory_mib", "machine", "load", "date", "source")


def _num(x, digits: int = 4):
    """A float rounded to ``digits`` significant figures (``None`` and non-numbers pass through as ``None``)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    if x == 0:
        return 0.0
    return float(f"{x:.{digits}g}")


def _load(x) -> float | None:
    """The 1-minute load average from a number or a ``[1, 5, 15]`` list."""
    if isinstance(x, (list, tuple)) and x:
        x = x[0]
    return _num(x, 3)


def _machine(d: dict) -> str | None:
    m = d.get("machine")
    if isinstance(m, str):
        return m
    if isinstance(m, dict):
        cpus = m.get("cpus", m.get("cpu_count"))
        parts = [m.get("platform"), f"{cpus} CPUs" if cpus else None, f"torch {m['torch']}" if m.get("torch") else None]
        return ", ".join(p for p in parts if p) or None
    if "cpus" in d:
        return f"{d['cpus']} CPUs"
    return None


def _row(benchmark, workload, model, circuitlab_s, peer, peer_s, ratio=None, max_difference=None,
         peak_memory_mib=None, machine=None, load=None, date=None, source=None, extrapolated=False) -> dict:
    if ratio is None and circuitlab_s and peer_s:
        ratio = peer_s / circuitlab_s
    return {"benchmark": benchmark, "workload": workload, "model": model, "circuitlab_s": _num(circuitlab_s),
            "peer": peer + (" (extrapolated)" if extrapolated and peer else ""), "peer_s": _num(peer_s),
            "ratio": _num(ratio, 3), "max_difference": _num(max_difference, 3),
            "peak_memory_mib": _num(peak_memory_mib, 4), "machine": machine, "load": load, "date": date,
            "source": source}


# --- one reader per benchmark JSON: yields rows -------------------------------------------------------------

def _patching(d: dict, src: str) -> Iterator[dict]:
    sections = [(d.get("model", "gpt2-small-shaped"), d)] + list(d.get("models", {}).items())
    for model, s in sections:
        for r in s["results"]:
            yield _row("patching", f"sweep {r['site']} by {'/'.join(r['by'])}, {r['n_tokens']} tokens, batch "
                       f"{s.get('batch', 1)}", "GPT-2-small shape (random)" if model == d.get("model") else model,
                       r["circuitlab_seconds"], "transformer_lens.patching", r["transformer_lens_seconds"],
                       r.get("speedup"), r.get("max_abs_diff"), r.get("peak_rss_delta_mib"), s.get("machine"),
                       _load(s.get("load_average_before_after") or r.get("load_average_before_after")), None, src,
                       r.get("transformer_lens_extrapolated", False))


def _tracing(d: dict, src: str) -> Iterator[dict]:
    for r in d["results"]:
        yield _row("tracing", f"causal tracing grid {'/'.join(r['kinds'])}, {r['tokens']} tokens, "
                   f"{r['samples']} samples", r["model"], r["circuitlab_seconds"], "one pass per restored state",
                   r["reference_seconds"], r.get("speedup"), r.get("max_abs_difference"), r.get("peak_chunk_mib"),
                   _machine(d), _load(d.get("machine", {}).get("load_average")), None, src,
                   r.get("reference_extrapolated", False))


def _circuits(d: dict, src: str) -> Iterator[dict]:
    load = _load(d.get("load_average_at_start"))
    for r in d.get("eap", []):
        yield _row("circuits", f"EAP, {r['edges']} edges, batch {r['batch']} x {r['seq_len']} tokens", r["model"],
                   r["circuitlab_eap_s"], "auto-circuit", r.get("auto_circuit_eap_s"), r.get("speedup"),
                   (r.get("agreement_fast") or {}).get("max_abs_difference"), r.get("circuitlab_eap_peak_mb"),
                   _machine(d), load, None, src)
    for r in d.get("acdc", []) + d.get("acdc_large", []):
        peer_s, extrapolated = r.get("auto_circuit_s"), False
        if peer_s is None and r.get("auto_circuit_estimate_s") is not None:
            peer_s, extrapolated = r["auto_circuit_estimate_s"], True
        same = r.get("same_circuit")
        yield _row("circuits", f"ACDC ({r['metric']}, threshold {r['threshold']})"
                   + ("" if same is None else f", same circuit: {'yes' if same else 'no'}"), r["model"],
                   r["circuitlab_s"], "auto-circuit", peer_s, r.get("speedup"), None, r.get("circuitlab_peak_mb"),
                   _machine(d), _load(r.get("load_average_at_start")) or load, None, src, extrapolated)


def _probing(d: dict, src: str) -> Iterator[dict]:
    c = d["collect"]
    ref = c["reference_loop"]
    # the reference loop is timed on fewer sentences: compare rates, as the benchmark's speedup does
    per = ref["seconds"] / ref["sentences"] * d["sentences"]
    yield _row("probing", f"collect {len(c['hooks'])} hooks over {d['sentences']} sentences", d["model"],
               c["seconds"], "one forward pass per sentence", per, c.get("speedup_vs_reference"),
               c.get("max_diff_vs_reference"), None, None, _load(d.get("load_average_at_start")), None, src, True)


def _attention(d: dict, src: str) -> Iterator[dict]:
    f = d.get("flow")
    if f:
        yield _row("attention", f"attention flow, {f['tokens']} tokens (SciPy solver)", d["model"],
                   f["seconds_circuitlab_scipy"], "networkx maximum_flow per token",
                   f["seconds_reference_networkx_per_token"], f.get("speedup_scipy"), f.get("max_difference_scipy"),
                   None, None, _load(d.get("load_average_at_end")), d.get("date"), src)
    i = d.get("importance")
    if i:
        yield _row("attention", f"head importance, {i['sequences']} x {i['seq_len']} tokens", d["model"],
                   i["seconds_importance"], "mask each head in turn", i["seconds_head_by_head"], i.get("speedup"),
                   None, None, None, _load(d.get("load_average_at_end")), d.get("date"), src)


def _attention_importance(d: dict, src: str) -> Iterator[dict]:
    yield _row("attention", f"head importance, {d['sequences']} x {d['seq_len']} tokens", d["model"],
               d["seconds_importance"], "mask each head in turn", d["seconds_head_by_head"], d.get("speedup"),
               None, None, d.get("device"), _load(d.get("load_average_at_end")), None, src)


def _saes(d: dict, src: str) -> Iterator[dict]:
    c, p = d["circuitlab"], d["sae_lens"]
    yield _row("saes", f"train top-k SAE d_sae {d['d_sae']}, {d['training_tokens']} tokens at {d['hook']}",
               d["model"], c["seconds"], f"SAELens {d.get('sae_lens_version', '')}".strip(), p["seconds"],
               None, None, c["peak_rss_increase_bytes"] / 2**20 if c.get("peak_rss_increase_bytes") is not None
               else None, d.get("machine"), None, None, src)


def _fingerprint(d: dict, src: str) -> Iterator[dict]:
    s = d["seconds"]
    yield _row("fingerprint", "weight fingerprint, uncached (peer: one 16-token forward pass)", d["model"],
               s["fingerprint_uncached"], "one forward pass", s["forward_16_tokens"], None, None, None,
               _machine(d), _load(d["machine"].get("load_average_start")), None, src)


def _weights(d: dict, src: str) -> Iterator[dict]:
    c, fm = d["circuitlab"], d["factored_matrix"]
    yield _row("weights", "OV/QK copying eigenvalues + top-k rows, every head", d["model"], c["total_seconds"],
               "FactoredMatrix", fm.get("seconds_extrapolated_all_heads"), None, None,
               c.get("peak_rss_above_model_mib"), f"{d.get('cpus')} CPUs", _load(d.get("load_average_at_start")),
               None, src, True)


def _real_models(d: dict, src: str) -> Iterator[dict]:
    for r in d["results"]:
        fp32 = r["n_params"] * 4 / 2**20
        yield _row("loading", f"cached load (fp32 weights {fp32:.0f} MiB; peak RSS is the whole process)",
                   r["model"], r["cached_load_seconds_min"], "", None, None, None, r["cached_peak_rss_mib_max"],
                   _machine(d), _load(d["machine"].get("load_average_start")), None, src)


def _memory(d: dict, src: str) -> Iterator[dict]:
    worst: dict[str, dict] = {}
    for r in d["rows"]:
        if r["case"] not in worst or r["n"] > worst[r["case"]]["n"]:
            worst[r["case"]] = r
    cap = d.get("max_memory_bytes")
    for case, r in worst.items():
        yield _row("memory", f"{case}, n={r['n']}" + (f", max_memory {cap / 2**20:.0f} MiB" if cap else ""),
                   "zoo/toy-lm", r["seconds"], "", None, None, None, r["peak_delta_mib"], _machine(d),
                   _load(d["machine"].get("load_average")), d.get("when"), src)


def _scale(d: dict, src: str) -> Iterator[dict]:
    for name, w in d["workloads"].items():
        yield _row("scale", f"{name} on 2 Ray workers (peer: one process)", None, w["ray_2"]["work_s"],
                   "one process", w["one_process_s"], None, w["ray_2"].get("max_diff_vs_one_process"), None,
                   _machine(d), _load(d["machine"].get("load_average_at_start")), None, src)


def _loading_ab(d: dict, src: str) -> Iterator[dict]:
    m, runs = d["median"], d.get("runs", {})
    note = "" if len(runs.get("before", [])) > 1 else "; one run each, not interleaved: compare the memory only"
    yield _row("loading", f"cached load after the loader fix (peer: the load before it; fp32 weights "
               f"{d['fp32_weights_mib']:.0f} MiB{note})", d["model"], m["after"]["seconds"],
               "circuitlab before the fix",
               m["before"]["seconds"], None, None, m["after"]["peak_rss_mib"], f"{d.get('cpus')} CPUs",
               _load(d.get("load_average_at_start")), d.get("date"), src)


def _engine_ab(d: dict, src: str) -> Iterator[dict]:
    for fix, row in d.items():
        for name, w in row["workloads"].items():
            yield _row("engine fix", f"{name}, {fix} fix on (peer: the same engine with it off)",
                       "Gemma-3-270m shape (random)" if fix == "mlp" else "random attn-only 2L d_model 512",
                       w["seconds_on"], f"circuitlab without the {fix} fix", w["seconds_off"], None,
                       w["max_abs_difference"], None, f"{row.get('cpus')} CPUs",
                       _load(row.get("load_average_at_start")), row.get("date"), src)


def _threads(d: dict, src: str) -> Iterator[dict]:
    for r in d["rows"]:
        yield _row("threads", f"{d['workload']}: 1 thread (peer: 2 threads), {r['scenario']}", d["model"],
                   r["seconds_1_thread"], "2 torch threads", r["seconds_2_threads"], None, None, None,
                   f"{d.get('usable_cores')} usable cores", _load(d.get("load_average_at_start")), d.get("date"), src)


READERS: dict[str, Callable[[dict, str], Iterator[dict]]] = {
    "loading_ab.json": _loading_ab, "engine_ab.json": _engine_ab, "threads.json": _threads,
    "threads_low_load.json": _threads,
    "patching.json": _patching, "tracing.json": _tracing, "circuits.json": _circuits, "probing.json": _probing,
    "attention.json": _attention, "attention_gemma.json": _attention,
    "attention_importance.json": _attention_importance, "attention_importance_gemma.json": _attention_importance,
    "saes.json": _saes, "fingerprint.json": _fingerprint, "weights.json": _weights, "weights_toy.json": _weights,
    "real_models.json": _real_models, "memory.json": _memory, "scale.json": _scale,
}


def build(results: Path = RESULTS) -> dict:
    """The summary of every known benchmark JSON in ``results``: ``{"rows": [...], "skipped": {file: why}}``."""
    rows, skipped = [], {}
    for path in sorted(Path(results).glob("*.json")):
        if path.name.startswith("summary"):
            continue
        reader = READERS.get(path.name)
        if reader is None:
            skipped[path.name] = "no reader in benchmarks/summary.py (not a peer comparison)"
            continue
        try:
            rows.extend(reader(json.loads(path.read_text()), path.name))
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as e:
            skipped[path.name] = f"unreadable: {type(e).__name__} {e}"
    return {"fields": list(FIELDS), "rows": rows, "skipped": skipped}


def _cell(x) -> str:
    if x is None or x == "":
        return "-"
    if isinstance(x, float):
        return f"{x:.3g}" if abs(x) < 1e-2 or abs(x) >= 1e5 else f"{x:,.3g}" if abs(x) < 100 else f"{x:,.0f}"
    return str(x).replace("|", "/")


def markdown(summary: dict) -> str:
    """The summary as a Markdown table (ratio = peer seconds / circuitlab seconds; > 1 means circuitlab is faster)."""
    cols = ("benchmark", "workload", "model", "circuitlab_s", "peer", "peer_s", "ratio", "max_difference",
            "peak_memory_mib", "machine", "load", "date")
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in summary["rows"]:
        lines.append("| " + " | ".join(_cell(r[c]) for c in cols) + " |")
    out = ["# Benchmark summary", "",
           "Built by `python benchmarks/summary.py` from the JSON in `benchmarks/results/` (each benchmark's own "
           "figures). ratio = peer seconds / circuitlab seconds, measured in the same process; load = the 1-minute "
           "load average the benchmark recorded (2-core machine shared with other jobs: compare ratios, not "
           "absolute seconds).", "", *lines, ""]
    if summary["skipped"]:
        out += ["Files not in the table: " + ", ".join(f"`{k}` ({v})" for k, v in summary["skipped"].items()), ""]
    return "\n".join(out)


def write(summary: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (out / "summary.md").write_text(markdown(summary))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=RESULTS, help="folder of benchmark JSON (default: results/)")
    p.add_argument("--out", type=Path, default=None, help="where to write summary.{json,md} (default: --results)")
    args = p.parse_args(argv)
    summary = build(args.results)
    write(summary, args.out or args.results)
    print(markdown(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
