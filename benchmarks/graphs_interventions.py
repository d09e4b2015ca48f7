"""Exactness and intervention agreement of attribution graphs on zoo/toy-lm (figures for docs/graphs.md).

    nice -n 10 python benchmarks/graphs_interventions.py [--out benchmarks/results/graphs_interventions.json]

For each prompt (four held-out KJV verses cut to 24 tokens, and two facts of the toy world): the replacement model's
max |logit - model logit|; the graph's scores (full and pruned at 0.8 / 0.98); and intervention_agreement over the
20 most influential features for ablation (factor 0) and a 10% boost (factor 1.1) in the three settings (frozen,
replacement, model) - see circuitlab.graphs.interventions.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results/graphs_interventions.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    import circuitlab as cl
    from circuitlab.graphs import attribution_graph, intervention_agreement, prune_graph, run_replacement

    model = cl.load_model("zoo/toy-lm")
    text = (Path(cl.__file__).parent / "zoo" / "weights" / "toy-lm" / "heldout.txt").read_text().splitlines()
    prompts = [model.to_tokens(t)[0][:24].tolist() for t in text[:40:10]]
    prompts += ["Wexmira has a house in", "And the LORD said unto"]
    rows = []
    for prompt in prompts:
        g = attribution_graph(model, "toy-lm", prompt)
        with torch.no_grad():
            err = float((run_replacement(g.replacement)[0] - model(g.replacement.tokens[None])[0]).abs().max())
        pr = prune_graph(g)
        row = {"prompt": "".join(g.token_strs), "tokens": g.replacement.n_pos,
               "logit_nodes": len(g.logit_probabilities),
               "replacement_max_abs_logit_error": err, "scores": pr.scores}
        for factor in (0.0, 1.1):
            res = intervention_agreement(g, n_features=20, factor=factor)
            row[f"factor_{factor}"] = {k: {m: v for m, v in res[k].items() if m not in ("predicted", "actual")}
                                       for k in ("frozen", "replacement", "model", "model_vs_direct")}
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "scores"}), flush=True)
    Path(args.out).write_text(json.dumps({"model": "zoo/toy-lm", "transcoders": "toy-lm/tc-0..3",
                                          "command": "nice -n 10 python benchmarks/graphs_interventions.py",
                                          "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
