"""``circuitlab circuit``: find a task's circuit with EAP, EAP-IG or ACDC, print its top edges, draw it.

    circuitlab circuit -m zoo/attn-only-2l --task induction --method eap-ig --steps 5 --top 20 -o circuit.html
    circuitlab circuit -m zoo/toy-lm --task ioi --method eap --threshold 0.05

Tasks (clean and corrupted prompts of one length, and the metric the scorers differentiate):

- ``induction`` (any model): ``--n-seqs`` repeated random sequences ``[BOS] r_1..r_n r_1..r_n`` (``n = --seq-len``)
  against sequences of fresh random tokens of the same length; metric: mean log-probability of the correct next
  token over the second copy (:func:`circuitlab.tasks.repeated.induction_task`).
- ``ioi`` (models with a tokenizer): the IOI prompts of :mod:`circuitlab.tasks.ioi`, as in ``circuitlab reproduce``'s
  ``ioi-name-movers`` finding (for ``zoo/toy-lm`` its world's templates,
  :func:`circuitlab.tasks.toy_world.ioi_sentence`, with name pairs held out from training; for other models
  name-swap templates with single-token names), corrupted by replacing all
  three names with other names (ABC); the largest group of prompts of one token length is used; metric: logit
  difference between the indirect object and the subject at the last position.

Methods: ``eap`` and ``eap-ig`` (``--steps``, default 5) score every edge; the circuit shown is the ``--top`` edges
(default 20) or, with ``--threshold``, every edge with ``|score| >= T``. ``acdc`` keeps the edges whose removal
changes ACDC's metric (KL divergence to the clean run's last-position predictions, as in the paper) by at least
``--threshold`` (default 0.01) and prints the ``--top`` of them by the change.

On the induction task the scores' ROC AUC against the model's induction reference circuit
(:func:`circuitlab.circuits.reference.induction_reference`, edge level and ACDC's node level) is printed and
drawn in the report, for graphs of up to 2,000 edges.
"""

from __future__ import annotations

import argparse

from circuitlab.cli import (add_model_option, add_out_option, add_quiet_option, command, emit, positive_int, quote,
                            seed_int, write_report)

TASKS = ("induction", "ioi")
METHODS = ("eap", "eap-ig", "acdc")
ACDC_DEFAULT_THRESHOLD = 0.01


def non_negative_float(text: str) -> float:
    """An argparse ``type`` for ``--threshold``: a finite number >= 0."""
    from circuitlab.core import check_number
    from circuitlab.errors import InputError

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {quote(text)}") from None
    try:
        return check_number(value, "--threshold", low=0)
    except InputError:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}") from None


def arguments(p: argparse.ArgumentParser) -> None:
    add_model_option(p)
    p.add_argument("--task", choices=TASKS, default="induction", help="prompts and metric (default induction)")
    p.add_argument("--method", choices=METHODS, default="eap", help="edge scorer or search (default eap)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="integration steps of eap-ig (default 5; only with --method eap-ig)")
    p.add_argument("--threshold", type=non_negative_float, default=None,
                   help="eap/eap-ig: keep edges with |score| >= T instead of the top K; acdc: its threshold on the "
                        f"metric change (default {ACDC_DEFAULT_THRESHOLD})")
    p.add_argument("--top", type=positive_int, default=20, help="edges to print and draw (default 20)")
    p.add_argument("--n-seqs", type=positive_int, default=16, help="prompt pairs (default 16)")
    p.add_argument("--seq-len", type=positive_int, default=12,
                   help="induction: length of each repeated half (default 12)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the prompts (default 0)")
    add_out_option(p)
    add_quiet_option(p)


def task_prompts(model, task: str, n: int, seq_len: int, seed: int):
    """``(clean, corrupted, metric, description)`` for ``task`` on ``model`` (see the module docstring)."""
    from circuitlab.core import check_seed

    seed = check_seed(seed)
    from circuitlab.errors import InputError

    if task == "induction":
        from circuitlab.tasks.repeated import induction_task

        if seq_len < 2:
            raise InputError("--seq-len must be at least 2 for the induction task (a repeat needs two tokens).")
        clean, corrupted, metric = induction_task(model, seq_len=seq_len, n_seqs=n, seed=seed)
        return clean, corrupted, metric, (f"{n} repeated random sequences of 2 x {seq_len} tokens vs fresh random "
                                          "tokens; metric: mean log-prob of the next token on the second copy")
    from circuitlab.metrics import LogitDiff
    from circuitlab.errors import NotApplicable
    from circuitlab.tasks.ioi import ioi_groups, ioi_prompts

    try:
        prompts = ioi_prompts(model, seed, n=n)
        idx, clean, corrupted = max(ioi_groups(model, prompts), key=lambda g: len(g[0]))
    except (NotApplicable, InputError) as exc:  # no tokenizer, too few one-token names, words it does not know
        raise InputError(f"the ioi task does not apply to this model: {str(exc).rstrip('.')}. Use --task "
                         "induction.") from None
    chosen = [prompts[i] for i in idx]
    metric = LogitDiff([p["io"] for p in chosen], [p["s"] for p in chosen], model=model)
    return clean, corrupted, metric, (f"{len(idx)} IOI prompts of {clean.shape[1]} tokens (of {n} drawn; one length) "
                                      "vs ABC name swaps; metric: logit(IO) - logit(S) at the last position")


def run(args: argparse.Namespace) -> int:
    from circuitlab import load_model
    from circuitlab.errors import InputError

    if args.steps is not None and args.method != "eap-ig":
        raise InputError(f"--steps is the number of integration steps of eap-ig; --method {args.method} has none. "
                         "Drop --steps or use --method eap-ig.")
    if args.method == "acdc":
        try:
            from circuitlab.circuits.acdc import acdc
        except ImportError:
            raise InputError("--method acdc is not available in this version of circuitlab (circuitlab.circuits.acdc "
                             "is missing); use --method eap or eap-ig.") from None
    from circuitlab.circuits import Graph, eap, eap_ig

    model = load_model(args.model)
    Graph.from_model(model)  # an unsupported architecture fails here, before any prompt is built
    clean, corrupted, metric, described = task_prompts(model, args.task, args.n_seqs, args.seq_len, args.seed)
    if args.method == "acdc":
        described += "; ACDC decides by its own metric, KL divergence to the clean last-position predictions"
    progress = not args.quiet
    if args.method == "eap":
        scores = eap(model, clean, corrupted, metric, progress=progress)
    elif args.method == "eap-ig":
        scores = eap_ig(model, clean, corrupted, metric, steps=args.steps or 5, progress=progress)
    else:
        threshold = ACDC_DEFAULT_THRESHOLD if args.threshold is None else args.threshold
        scores = acdc(model, clean, corrupted, threshold=threshold, progress=progress)

    if args.method == "acdc":
        circuit = scores
        how = f"ACDC at threshold {threshold:g}: {len(circuit)} of {circuit.graph.n_edges} edges kept"
    elif args.threshold is not None:
        circuit = scores.threshold(args.threshold)
        how = f"{len(circuit)} of {scores.graph.n_edges} edges with |score| >= {args.threshold:g}"
    else:
        circuit = scores.top(args.top)
        how = f"the top {len(circuit)} of {scores.graph.n_edges} edges by |score|"
    name = model.cfg.model_name or args.model
    print(f"{args.method} on {args.task}  [{name}]")
    print(f"task: {described}")
    clean_v, corrupted_v = scores.meta.get("clean_value"), scores.meta.get("corrupted_value")
    if clean_v is not None and corrupted_v is not None:
        print(f"metric: clean {clean_v:+.4f}, corrupted {corrupted_v:+.4f}")
    print(f"circuit: {how}")
    shown = circuit.top(args.top) if circuit.scores is not None else circuit
    ranked = sorted(zip(shown.edges, shown.scores or [None] * len(shown)),
                    key=lambda es: -abs(es[1]) if es[1] is not None else 0)[:args.top]
    width = max([len(f"{s} -> {r}") for (s, r), _ in ranked] + [4])
    print(f"  {'#':>3}  {'edge':<{width}}  {'score':>11}")
    for rank, ((s, r), score) in enumerate(ranked, 1):
        print(f"  {rank:>3}  {f'{s} -> {r}':<{width}}  {'' if score is None else f'{score:+11.5f}'}")
    if len(circuit) > len(ranked):
        print(f"  ... {len(circuit) - len(ranked)} more edges in the circuit (the report draws up to 300)")
    circuit.title = f"{args.method} circuit ({args.task}): {how}"
    intro = f"Model {name}; task: {described}. Method {args.method}: {how}."
    items = [circuit] + (reference_rocs(model, scores) if args.task == "induction" else [])
    emit(circuit=circuit_data(circuit), method=args.method, task=described, graph_edges=scores.graph.n_edges,
         clean_value=clean_v, corrupted_value=corrupted_v, **{f"roc_{c.meta['level']}": c for c in items[1:]})
    write_report(items, args.out, title=f"Circuit: {args.task} in {name} ({args.method})", intro=intro)
    return 0


def circuit_data(circuit) -> dict:
    """A circuit as plain data for ``--json``: its edges as ``\"sender -> receiver\"``, their scores (or None),
    and the title, metric, model, task and meta of the circuit."""
    return {"kind": "Circuit", "edges": [f"{s} -> {r}" for s, r in circuit.edges], "scores": circuit.scores,
            "title": circuit.title, "metric": circuit.metric, "model": circuit.model, "task": circuit.task,
            "meta": circuit.meta}


#: the largest graph whose induction reference the command establishes (one exact patch per candidate edge)
MAX_REFERENCE_EDGES = 2000


def reference_rocs(model, scores) -> list:
    """ROC curves of ``scores`` against the model's induction reference circuit
    (:func:`circuitlab.circuits.reference.induction_reference`), printed as AUCs; none for a big graph or a model
    without induction heads (said why)."""
    from circuitlab.circuits import induction_reference, roc
    from circuitlab.errors import InputError

    if scores.graph.n_edges > MAX_REFERENCE_EDGES:
        print(f"ROC: skipped (the induction reference patches each candidate edge exactly; this graph has "
              f"{scores.graph.n_edges} edges, more than {MAX_REFERENCE_EDGES})")
        return []
    try:
        reference = induction_reference(model)
    except InputError as exc:
        print(f"ROC: no induction reference for this model ({exc})")
        return []
    curves = []
    for level, nodes in (("edge", "component"), ("node", "acdc")):
        try:
            curves.append(roc(scores, reference, level=level, nodes=nodes))
        except InputError:  # e.g. every node in the reference: the rates are undefined
            continue
    aucs = ", ".join(f"{c.meta['level']} level {c.auc:.3f}" for c in curves) or "undefined"
    print(f"ROC AUC against the induction reference ({len(reference)} of {reference.graph.n_edges} edges, "
          f"established by exact path patching): {aucs}")
    return curves


run.arguments = arguments
command("circuit", "find a task's circuit (EAP, EAP-IG or ACDC): top edges and an SVG graph of the circuit",
        json="circuit ({kind: Circuit, edges: [\"sender -> receiver\"], scores, title, metric, model, task, meta}), "
             "method, task, graph_edges, clean_value, corrupted_value; roc_edge and roc_node (RocCurve against "
             "the induction reference, for --task induction)")(run)
