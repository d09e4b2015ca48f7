"""Head importance (Michel et al. 2019) against masking each head in turn, and pruning curves.

On held-out text of a model (zoo/toy-lm's ``heldout.txt`` by default: ``seqs`` sequences of ``seq_len`` tokens,
BOS first), measures in one process: :func:`circuitlab.attention.importance.head_importance` (one forward and one
backward pass per batch) and head-by-head masking (the LM loss with each head's ``hook_z`` zeroed alone, one
forward pass per head over the same data); their Spearman rank agreement (importance vs the loss increase when a
head is masked alone), the time of each (best of ``repeats``), and pruning curves by importance, greedily and at
random (loss at 0, 20, 40, 60% of heads pruned). Writes ``benchmarks/results/attention_importance.json``.

    python benchmarks/attention_importance.py [--model zoo/toy-lm] [--seqs 64] [--seq-len 32]
    python benchmarks/attention_importance.py --model gemma-3-270m --seqs 8 --repeats 1 \\
        --out benchmarks/results/attention_importance_gemma.json
"""

from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

torch.set_num_threads(2)

from circuitlab.attention.importance import head_importance, masked_loss, prune_curve  # noqa: E402
from circuitlab.core import spearman  # noqa: E402
from circuitlab.models import load_model  # noqa: E402
from circuitlab.reproduce.attention_as_explanation import text_tokens  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def heldout_tokens(model, seqs: int, seq_len: int) -> torch.Tensor:
    """``seqs`` rows of a start token and ``seq_len - 1`` tokens of zoo/toy-lm's held-out text."""
    return text_tokens(model, seqs, seq_len)


def best_time(fn, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return out, best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="zoo/toy-lm")
    parser.add_argument("--seqs", type=int, default=64)
    parser.add_argument("--seq-len", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-memory", type=int, default=2 * 2**30)
    parser.add_argument("--out", default="benchmarks/results/attention_importance.json")
    parser.add_argument("--quick", action="store_true", help="a fast look: 8 sequences, one repeat")
    args = parser.parse_args()
    if args.quick:
        args.seqs, args.repeats = 8, 1
    model = load_model(args.model)
    mem = args.max_memory
    tokens = heldout_tokens(model, args.seqs, args.seq_len)
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    heads = [(layer, head) for layer in range(n_layers) for head in range(n_heads)]

    imp, t_imp = best_time(lambda: head_importance(model, tokens, normalise=False, max_memory=mem), args.repeats)

    def one_by_one():
        base = masked_loss(model, tokens, max_memory=mem)
        losses = [masked_loss(model, tokens, [h], max_memory=mem) - base for h in heads]
        return torch.tensor(losses).reshape(n_layers, n_heads)

    increase, t_mask = best_time(one_by_one, args.repeats)
    raw = imp.values
    normalised = raw / raw.norm(dim=1, keepdim=True)
    curves = {kind: prune_curve(model, tokens, kind, fractions_pruned=(0, 0.2, 0.4, 0.6), seed=0,
                               max_memory=mem)
              for kind in ("importance", "greedy", "random")}
    result = {
        "model": args.model, "sequences": args.seqs, "seq_len": args.seq_len, "threads": torch.get_num_threads(),
        "load_average_at_end": os.getloadavg()[0],
        "device": str(tokens.device),
        "spearman_raw_importance_vs_masking": spearman(raw.flatten(), increase.flatten()),
        "spearman_normalised_importance_vs_masking": spearman(normalised.flatten(), increase.flatten()),
        "spearman_raw_importance_vs_abs_masking": spearman(raw.flatten(), increase.abs().flatten()),
        "seconds_importance": t_imp, "seconds_head_by_head": t_mask, "speedup": t_mask / t_imp,
        "base_loss": imp.meta["loss"],
        "importance_raw": raw.tolist(), "loss_increase_masked_alone": increase.tolist(),
        "prune_curves": {k: {"fractions": c.meta["fractions"], "loss": c.values.tolist(),
                             "order": c.meta["order"]} for k, c in curves.items()},
    }
    out = ROOT / args.out
    out.write_text(json.dumps(result, indent=1) + "\n")
    for key in ("spearman_raw_importance_vs_masking", "spearman_normalised_importance_vs_masking",
                "spearman_raw_importance_vs_abs_masking", "seconds_importance", "seconds_head_by_head", "speedup"):
        print(f"{key}: {result[key]:.3f}")
    for k, c in curves.items():
        print(k, [round(v, 3) for v in c.values.tolist()])


if __name__ == "__main__":
    main()
