"""``circuitlab graph``: the attribution graph of one prompt over transcoder features (Ameisen et al. 2025).

    circuitlab graph -m zoo/toy-lm --prompt "And the LORD said unto" -o graph.html
    circuitlab graph -m zoo/toy-lm --prompt "And the LORD said unto" --target " Moses" --json-out graph.json

Builds the graph in batched backward passes with the model's shipped transcoders (``--transcoders``: a shipped
set's name or folders, one per MLP layer), prunes it by indirect influence, prints the logit nodes, the scores and
the strongest features feeding the top logit, and writes the interactive page (``-o``) and the graph JSON in
circuit-tracer / Neuronpedia's schema (``--json-out``).
"""

from __future__ import annotations

import argparse

from circuitlab.cli import (add_model_option, add_out_option, add_quiet_option, emit, note, positive_int, prepare_out,
                            record_report)


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return v


def arguments(p: argparse.ArgumentParser) -> None:
    add_model_option(p)
    p.add_argument("--prompt", required=True, help="the prompt; the graph explains its next token")
    p.add_argument("--target", default=None, help="the logit to explain, e.g. ' Moses' (default: the most probable "
                                                  "tokens covering --logit-mass)")
    p.add_argument("--transcoders", default=None, help="a shipped transcoder set (default: the model's own, e.g. "
                                                       "toy-lm) or comma-separated folders, one per MLP layer")
    p.add_argument("--logit-mass", type=_fraction, default=0.95, help="probability covered by the logit nodes "
                                                                      "(default 0.95)")
    p.add_argument("--max-logits", type=positive_int, default=10, help="at most this many logit nodes (default 10)")
    p.add_argument("--node-threshold", type=_fraction, default=0.8, help="pruning: cumulative node influence kept "
                                                                         "(default 0.8)")
    p.add_argument("--edge-threshold", type=_fraction, default=0.98, help="pruning: cumulative edge score kept "
                                                                          "(default 0.98)")
    p.add_argument("--top", type=positive_int, default=5, help="features to list (default 5)")
    p.add_argument("--json-out", metavar="FILE", default=None, help="write the graph JSON (Neuronpedia schema)")
    add_out_option(p)
    add_quiet_option(p)


def run(args: argparse.Namespace) -> int:
    import json

    from circuitlab import load_model
    from circuitlab.core import token_label
    from circuitlab.errors import InputError
    from circuitlab.features.transcoders import shipped_transcoders
    from circuitlab.graphs import attribution_graph, prune_graph
    from circuitlab.graphs.export import graph_json
    from circuitlab.render.graphs import graph_page

    out = prepare_out(args.out)
    json_out = prepare_out(args.json_out, "--json-out")
    model = load_model(args.model)
    if args.transcoders is None:
        prefix = args.model.removeprefix("zoo/")
        if not any(n.startswith(prefix + "/") for n in shipped_transcoders()):
            raise InputError(f"--transcoders: no transcoders ship for {args.model!r} (shipped: "
                             f"{', '.join(shipped_transcoders()) or 'none'}); pass folders, one per MLP layer.")
        tcs = prefix
    else:
        tcs = args.transcoders if "," not in args.transcoders else [t.strip() for t in args.transcoders.split(",")]
    g = attribution_graph(model, tcs, args.prompt, target=args.target, logit_mass=args.logit_mass,
                          max_logits=args.max_logits, progress=not args.quiet)
    pr = prune_graph(g, node_threshold=args.node_threshold, edge_threshold=args.edge_threshold)
    sl = g.slices()
    print(f"Attribution graph of {args.prompt!r} on {args.model}: {g.n_nodes} nodes ({sl['feature'].stop} active "
          f"features) in {g.meta['backward_passes']} batched backward passes, {g.meta['seconds']:.2f} s")
    for j, i in enumerate(range(sl["logit"].start, sl["logit"].stop)):
        print(f"  logit {token_label(model, int(g.index[i]))!r}  p={float(g.logit_probabilities[j]):.3f}")
    s = pr.scores
    print(f"pruned: {s['nodes_kept']} nodes ({s['features_kept']} features), {s['edges_kept']} edges; replacement "
          f"score {s['pruned']['replacement_score']:.3f} (full {s['full']['replacement_score']:.3f}), completeness "
          f"{s['pruned']['completeness_score']:.3f} (full {s['full']['completeness_score']:.3f})")
    top = sl["logit"].start
    row = g.adjacency[top, : sl["embedding"].stop]
    print(f"strongest direct inputs to {g.label(top)}:")
    for i in row.abs().argsort(descending=True)[: args.top].tolist():
        print(f"  {g.label(i):<40} {float(row[i]):+.4f}")
    data = graph_json(pr, slug="circuitlab-" + args.model.replace("/", "-"))
    emit(scores=s, graph=data)
    if json_out is not None:
        json_out.write_text(json.dumps(data))
        note(f"wrote {json_out}")
        record_report(json_out)
    if out is not None:
        out.write_text(graph_page(data), encoding="utf-8")
        note(f"wrote {out}")
        record_report(out)
    return 0


run.arguments = arguments
from circuitlab.cli import command  # noqa: E402

command("graph", "attribution graph of a prompt over transcoder features: edges, pruning, interactive page",
        json="scores (nodes and edges kept, replacement and completeness scores of the full and pruned graph), graph "
             "(the pruned graph in circuit-tracer's JSON schema, as --json-out writes it)")(run)
