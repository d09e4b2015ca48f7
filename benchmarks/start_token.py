"""Which start token each real causal model expects: next-token loss on held-out text under each candidate.

For ``gemma-3-270m`` and ``smollm2-135m``, :func:`circuitlab.models.start_token.start_token_loss` scores the same
texts with no start token and with each candidate token in front (SmolLM2: its tokenizer's declared BOS
``<|im_start|>``, ``<|endoftext|>``, ``<|im_end|>``; Gemma: its declared BOS ``<bos>``, ``<eos>``, and
``<|endoftext|>`` where it is one token). The loss is the mean next-token cross-entropy (nats) of each text's
tokens 2..n, the same targets for every candidate; ``first`` is the loss of token 1 predicted from the start token.

Held-out text, three sources scored separately (none is a benchmark the models were tuned on; the Debian corpora
are what the project already uses offline):

* ``fortune``: one-line fortune cookies (Debian ``fortunes``), ``--n`` of them (single plain sentences, 5-40 words);
* ``kjv``: King James verses (Debian ``bible-kjv``), ``--n`` of them: widely copied text a model may half remember;
* ``templates``: ``--n`` sentences from the package's own grammar (``tasks.template_sentences``), never published.

The texts are drawn with ``--seed`` by ``tasks.sentences.debian_corpus_lines``. Prints a table and writes
``benchmarks/results/start_token.json`` (per model, per source, per candidate: loss, first-token loss, the number
of target tokens, and the paired difference to the best candidate with its standard error over texts).

``--pairs`` also scores minimal pairs (``probing.score_pairs``, whole-sentence log-probability) with each start
token set as the model's BOS (``set_start_token``): the template pairs (``template_pairs``, 40 per phenomenon), and
BLiMP files given with ``--blimp FILE ...`` (BLiMP is not shipped; bring its JSONL files).

    python benchmarks/start_token.py                       # both models, 100 texts per source (a few minutes)
    python benchmarks/start_token.py --models smollm2-135m --n 50 --pairs --blimp blimp/*.jsonl
"""

from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from circuitlab.models import load_model  # noqa: E402
from circuitlab.models.start_token import candidate_id, start_token_loss  # noqa: E402
from circuitlab.tasks.sentences import debian_corpus_lines, template_sentences  # noqa: E402

OUT = Path(__file__).resolve().parent / "results" / "start_token.json"

CANDIDATES = {
    "smollm2-135m": [None, "<|im_start|>", "<|endoftext|>", "<|im_end|>"],
    "gemma-3-270m": [None, "<bos>", "<eos>", "<|endoftext|>"],
}


def texts_by_source(n: int, seed: int) -> dict[str, list[str]]:
    kjv, cookies = debian_corpus_lines(seed)
    templates = list(dict.fromkeys(s.text for s in template_sentences(4 * n, seed=seed)))[:n]
    return {"fortune": cookies[:n], "kjv": kjv[:n], "templates": templates}


def pair_accuracy(model, tokens: list, blimp: list) -> dict:
    """Minimal-pair accuracy (whole sentence) with each start token as the model's BOS; the original restored."""
    from circuitlab.models.start_token import set_start_token
    from circuitlab.probing import read_blimp, score_pairs, template_pairs

    sets = {"templates": template_pairs()}
    if blimp:
        sets["blimp"] = [p for f in blimp for p in read_blimp(f)]
    original, out = model.tokenizer.bos_token, {}
    for token in tokens:
        set_start_token(model, token)
        for what, pairs in sets.items():
            t0 = time.perf_counter()
            res = score_pairs(model, pairs, progress=False)
            row = {"overall": round(100 * float(res.meta["overall"]), 1), "n": len(pairs),
                   "by_phenomenon": {k: round(100 * float(v), 1) for k, v in
                                     zip(res.labels["phenomenon"], res.values.tolist())}}
            out.setdefault(what, {})[token] = row
            print(f"{model.cfg.model_name} pairs / {what} / {token}: {row['overall']} on {len(pairs)} pairs "
                  f"({time.perf_counter() - t0:.0f} s) {row['by_phenomenon']}", flush=True)
    set_start_token(model, original)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(CANDIDATES))
    p.add_argument("--n", type=int, default=100, help="texts per source")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--pairs", action="store_true", help="also minimal-pair accuracy with each start token")
    p.add_argument("--blimp", nargs="*", default=[], help="BLiMP .jsonl files for --pairs")
    p.add_argument("--skip-loss", action="store_true", help="only the minimal pairs")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    sources = texts_by_source(args.n, args.seed)
    out = {"n_per_source": args.n, "seed": args.seed, "models": {}}
    for name in args.models:
        model = load_model(name)
        cands = []
        for c in CANDIDATES[name]:
            try:
                candidate_id(model, c)
                cands.append(c)
            except Exception as e:  # e.g. <|endoftext|> is several tokens in Gemma's vocabulary
                print(f"{name}: skipping candidate {c!r}: {e}")
        out["models"][name] = {"n_per_source": args.n, "candidates": [c or "none" for c in cands], "sources": {}}
        if args.pairs:
            out["models"][name]["pairs"] = pair_accuracy(model, [c for c in cands if c is not None], args.blimp)
        for source, texts in ({} if args.skip_loss else sources).items():
            t0 = time.perf_counter()
            res = start_token_loss(model, texts, cands)
            per_text = res.meta["per_text"]
            best = int(res.values[:, 0].argmin())
            rows = {}
            for i, label in enumerate(res.labels["candidate"]):
                diff = per_text[i] - per_text[best]
                rows[label] = {
                    "loss": round(float(res.values[i, 0]), 4),
                    "first_token_loss": None if res.values[i, 1].isnan() else round(float(res.values[i, 1]), 3),
                    "minus_best_mean_per_text": round(float(diff.mean()), 4),
                    "stderr": round(float(diff.std() / len(diff) ** 0.5), 4),
                }
            out["models"][name]["sources"][source] = {"n_texts": res.meta["n_texts"], "n_tokens": res.meta["n_tokens"],
                                                      "seconds": round(time.perf_counter() - t0, 1), "candidates": rows}
            print(f"{name} / {source}: {res.meta['n_texts']} texts, {res.meta['n_tokens']} target tokens, "
                  f"{time.perf_counter() - t0:.0f} s", flush=True)
            for label, r in rows.items():
                print(f"    {label:<16} loss {r['loss']:.4f}  first {r['first_token_loss']}  "
                      f"vs best {r['minus_best_mean_per_text']:+.4f} +- {r['stderr']:.4f}", flush=True)
        del model
    OUT.parent.mkdir(parents=True, exist_ok=True)
    if OUT.is_file():  # models measured in an earlier run (with --models) stay, each with its own settings
        earlier = json.loads(OUT.read_text())
        for name, entry in earlier.get("models", {}).items():
            if name not in out["models"]:
                out["models"][name] = {"n_per_source": earlier.get("n_per_source"), **entry}
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
