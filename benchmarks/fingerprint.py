"""The cost of the weights' fingerprint and of the cache entries' checksum, on Gemma-3-270m.

* **fingerprint uncached**: :func:`circuitlab.models.identity.weight_fingerprint` on a weight state it has not
  seen (every parameter's bytes hashed: the first call, and every call with ``recheck=True``, which the activation
  cache, Ray's replica check and result memos make);
* **fingerprint cached**: a repeat call on the same weight state (the per-parameter memo);
* **one parameter changed**: the call after one MLP's ``W_in`` changed in place (that parameter rehashed only);
* **reference**: one forward pass of 16 tokens on the same model, in the same process (the project's rule:
  benchmarks are ratios against a reference run in the same process);
* **cache entry checksum**: writing and reading back one activation cache entry (``probing.collect`` of one
  hook over real sentences) against computing it; the checksum's share is the SHA-256 of the entry's bytes.

Each timing is the median of ``--repeats`` (default 5). The fingerprint hashes on up to 16 Python threads (one
per CPU) whatever ``--threads`` (torch's threads) is. Prints a table and writes
``benchmarks/results/fingerprint.json`` with the machine (CPU count, load average at start and end).

    python benchmarks/fingerprint.py              # --threads 1 on a shared machine
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "fingerprint.json"


def median_seconds(fn, repeats: int, before=None) -> float:
    times = []
    for _ in range(repeats):
        if before is not None:
            before()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sentences", type=int, default=48, help="sentences for the cache entry measurement")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's); 1 on a machine shared with other jobs, where waiting "
                             "OpenMP threads slow the forward pass by an order of magnitude")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--quick", action="store_true", help="a fast look: zoo/toy-lm, 2 repeats, 8 sentences")
    args = parser.parse_args()
    if args.quick:
        args.model, args.repeats, args.sentences = "zoo/toy-lm", 2, 8
    load_start = os.getloadavg()[0]

    import torch

    if args.threads is not None:
        torch.set_num_threads(args.threads)

    import circuitlab as cl
    from circuitlab import probing
    from circuitlab.core import read_cache_entry, write_cache_entry
    from circuitlab.models import identity
    from circuitlab.models.identity import weight_fingerprint

    model = cl.load_model(args.model)
    n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    tokens = torch.randint(1, 1000, (1, 16))
    with torch.no_grad():
        model(tokens)  # warm up
        forward = median_seconds(lambda: model(tokens), args.repeats)

    forget = lambda: identity._FINGERPRINTS.pop(model, None)  # noqa: E731  (a weight state never seen)
    uncached = median_seconds(lambda: weight_fingerprint(model), args.repeats, before=forget)
    weight_fingerprint(model)
    cached = median_seconds(lambda: weight_fingerprint(model), args.repeats)
    W = model.blocks[0].mlp.W_in

    def change_one():
        with torch.no_grad():
            W.mul_(1.0)  # the same values, a new version: one parameter's state changed

    one_changed = median_seconds(lambda: weight_fingerprint(model), args.repeats, before=change_one)

    # one activation cache entry: probing.collect of one hook, computed; then its checksum, write and read
    sentences = probing.default_sentences(args.sentences, progress=False)
    hook = f"blocks.{model.cfg.n_layers // 2}.hook_resid_post"
    compute = median_seconds(lambda: probing.collect(model, sentences, [hook], cache=False, progress=False),
                             max(1, args.repeats // 2))
    rows = probing.collect(model, sentences, [hook], cache=False, progress=False)[hook]
    buffer = io.BytesIO()
    torch.save(rows, buffer)
    payload = buffer.getvalue()
    checksum = median_seconds(lambda: hashlib.sha256(payload).hexdigest(), args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "entry.pt"
        write = median_seconds(lambda: write_cache_entry(path, payload, count=rows.shape[0]), args.repeats)
        read = median_seconds(lambda: read_cache_entry(path), args.repeats)

    out = {
        "benchmark": "weight_fingerprint (uncached, cached, one parameter changed) against one forward pass of 16 "
                     "tokens, and the cache entries' checksum against computing the entry",
        "machine": {"platform": f"{platform.system()} {platform.machine()}", "python": platform.python_version(),
                    "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                    "load_average_start": round(load_start, 2), "load_average_end": round(os.getloadavg()[0], 2)},
        "note": "medians of --repeats runs in one process; the machine may be shared with other jobs, so compare "
                "the ratios, not the seconds, and only within one run",
        "model": args.model,
        "parameter_bytes": n_bytes,
        "seconds": {"forward_16_tokens": forward, "fingerprint_uncached": uncached, "fingerprint_cached": cached,
                    "fingerprint_one_parameter_changed": one_changed},
        "ratio_to_forward": {"fingerprint_uncached": uncached / forward, "fingerprint_cached": cached / forward,
                             "fingerprint_one_parameter_changed": one_changed / forward},
        "hash_gb_per_second": n_bytes / uncached / 1e9,
        "cache_entry": {"sentences": len(sentences), "rows": rows.shape[0], "hook": hook,
                        "payload_bytes": len(payload), "compute_seconds": compute, "checksum_seconds": checksum,
                        "write_seconds": write, "read_seconds": read,
                        "checksum_share_of_compute": checksum / compute},
    }
    print(f"{args.model}: {n_bytes / 2**30:.2f} GiB of parameters, {os.cpu_count()} CPUs, load average "
          f"{out['machine']['load_average_start']} -> {out['machine']['load_average_end']}")
    print(f"  forward pass, 16 tokens        {forward * 1e3:9.1f} ms   (reference)")
    for key in ("fingerprint_uncached", "fingerprint_cached", "fingerprint_one_parameter_changed"):
        s = out["seconds"][key]
        print(f"  {key:<30} {s * 1e3:9.3f} ms   {s / forward:8.3f} x forward")
    e = out["cache_entry"]
    print(f"  cache entry: {e['rows']} rows, {e['payload_bytes'] / 2**20:.1f} MiB; computing it {compute:.2f} s, "
          f"its checksum {checksum * 1e3:.1f} ms ({100 * checksum / compute:.2f} %), write {write * 1e3:.1f} ms, "
          f"read and check {read * 1e3:.1f} ms")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
