"""Before/after of one engine change, in one process: circuitlab's engines with a fix switched off and on, interleaved.

The fixes measured (each switched off by putting back what ran before, in this process only):

* ``mlp``: the block runner's copy-free gated MLP (:func:`circuitlab.engine.blocks.copy_free_mlp`; off:
  TransformerLens's ``GatedMLP.forward``, which copies its three weight matrices on every call), on a random model
  of Gemma-3-270m's shape (18 layers, d_model 640, 4 query heads and 1 key/value head of 256, gated MLP of 2048,
  sliding-window and global layers, sandwich norms; a ``--vocab``-token vocabulary instead of 262k, so the
  unembedding does not hide the blocks): activation patching of ``resid_pre`` by (layer, pos) and of ``z`` by
  (layer, head), and causal tracing, at ``--tokens`` tokens;
* ``kl``: :class:`circuitlab.metrics.KLDivergence` read as ``sum p log p - sum p x + logsumexp(x)`` (off: the
  log-softmax of the patched logits), on ACDC over the random attention-only model of d_model 512 (48,262-token
  vocabulary, benchmarks/circuits.py's ``attn_only_512`` and prompts).

Each workload runs ``--rounds`` times per setting, alternating (off, on, off, on...); the median of each and their
ratio (off / on: above 1, the fix saves time) and the largest difference between the two settings' results are
written to ``benchmarks/results/engine_ab.json`` (or ``--out``) with the load average. One thread.

    python benchmarks/engine_ab.py --fix mlp
    python benchmarks/engine_ab.py --fix kl --rounds 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

OUT = Path(__file__).resolve().parent / "results" / "engine_ab.json"


def gemma_shaped(vocab: int, seed: int = 0):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    n_layers = 18
    attn_types = ["global" if (layer + 1) % 6 == 0 else "local" for layer in range(n_layers)]
    cfg = HookedTransformerConfig(
        n_layers=n_layers, d_model=640, n_heads=4, d_head=256, d_mlp=2048, d_vocab=vocab, n_ctx=512, seed=seed,
        device="cpu", act_fn="gelu_pytorch_tanh", normalization_type="RMS", final_rms=True, gated_mlp=True,
        positional_embedding_type="rotary", rotary_base=1_000_000, rotary_base_local=10_000, n_key_value_heads=1,
        use_qk_norm=True, use_normalization_before_and_after=True, use_local_attn=True, attn_types=attn_types,
        window_size=512, default_prepend_bos=True, original_architecture="Gemma3ForCausalLM",
        model_name="random-gemma-3-270m-shape")
    model = HookedTransformer(cfg).eval()
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.normal_(0, 0.05, generator=gen)
    return model


def switch(fix: str, on: bool):
    """A context in which ``fix`` is on or off."""
    if fix == "mlp":
        from circuitlab.engine import blocks

        if on:
            return contextlib.nullcontext()
        saved = blocks.copy_free_mlp

        @contextlib.contextmanager
        def off():
            blocks.copy_free_mlp = lambda block: contextlib.nullcontext()
            try:
                yield
            finally:
                blocks.copy_free_mlp = saved
        return off()
    from circuitlab.metrics import KLDivergence

    if on:
        return contextlib.nullcontext()
    saved = KLDivergence.from_selected

    def old(self, selected):
        ref = self._ref_logp.to(selected.device)
        logp = selected.to(ref.dtype).log_softmax(-1)
        kl = (ref.exp() * (ref - logp)).sum(-1)
        return kl.mean((-2, -1)).to(torch.promote_types(selected.dtype, torch.float32))

    @contextlib.contextmanager
    def off():
        KLDivergence.from_selected = old
        try:
            yield
        finally:
            KLDivergence.from_selected = saved
    return off()


def workloads(fix: str, tokens: int, vocab: int) -> dict:
    if fix == "mlp":
        from circuitlab.metrics import LogitDiff
        from circuitlab.patching import sweep
        from circuitlab.tracing import trace

        model = gemma_shaped(vocab)
        g = torch.Generator().manual_seed(0)
        clean = torch.randint(1, vocab, (1, tokens), generator=g)
        corrupted = clean.clone()
        corrupted[0, tokens // 2] = (corrupted[0, tokens // 2] + 1) % vocab
        metric = LogitDiff([int(clean[0, 1])], [(int(clean[0, 1]) + 1) % vocab])
        subject = (tokens // 2 - 1, tokens // 2 + 1)
        return {
            "patching resid_pre by layer/pos": lambda: sweep(model, clean, corrupted, metric).values,
            "patching z by layer/head": lambda: sweep(model, clean, corrupted, metric, "z", ("layer", "head")).values,
            "causal tracing (10 samples)": lambda: trace(model, clean[0], subject, int(clean[0, 1]), seed=0).values,
        }
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import circuits

    from circuitlab.circuits.acdc import acdc

    model = circuits.attn_only_512()
    clean, corrupted, _, _ = circuits.prompts(model)
    return {"ACDC (kl_div, threshold 1e-3), attn-only 2L d_model 512":
            lambda: torch.tensor(sorted(hash(e) for e in acdc(model, clean, corrupted, threshold=1e-3).edges),
                                 dtype=torch.float64)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fix", choices=["mlp", "kl"], default="mlp")
    p.add_argument("--tokens", type=int, default=16)
    p.add_argument("--vocab", type=int, default=16384)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="a fast look: the MLP fix, 8 tokens, 2 rounds")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    if args.quick:
        args.fix, args.tokens, args.rounds = "mlp", 8, 2
    torch.set_num_threads(1)
    out = json.loads(args.out.read_text()) if args.out.exists() else {}
    row = {"fix": args.fix, "tokens": args.tokens, "vocab": args.vocab, "rounds": args.rounds, "threads": 1,
           "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M"), "load_average_at_start": os.getloadavg(),
           "workloads": {}}
    for name, fn in workloads(args.fix, args.tokens, args.vocab).items():
        times, values = {False: [], True: []}, {}
        with torch.no_grad():
            fn()  # warm-up
            for _ in range(args.rounds):
                for on in (False, True):
                    with switch(args.fix, on):
                        t = time.perf_counter()
                        values[on] = fn()
                        times[on].append(time.perf_counter() - t)
        off, on = statistics.median(times[False]), statistics.median(times[True])
        diff = float((values[False].double() - values[True].double()).abs().max())
        row["workloads"][name] = {"seconds_off": off, "seconds_on": on, "ratio_off_over_on": off / on,
                                  "max_abs_difference": diff, "runs_off": times[False], "runs_on": times[True]}
        print(f"{name:<60} off {off:8.3f} s  on {on:8.3f} s  x{off / on:5.2f}  max diff {diff:.2e}", flush=True)
    row["load_average_at_end"] = os.getloadavg()
    out[args.fix] = row
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
