"""``circuitlab probe``: the common probing experiments from the shell (:mod:`circuitlab.probing`).

    circuitlab probe pos -m minilm-l6 --data templates -n 300          # linear/MLP probes + control tasks
    circuitlab probe structural -m zoo/toy-lm --data default -n 500     # Hewitt & Manning distance/depth probes
    circuitlab probe heads -m minilm-l6                                 # attention heads as dependency parsers
    circuitlab probe pairs -m gemma-3-270m --method prefix              # minimal pairs (template or --blimp FILE)
    circuitlab probe cloze -m smollm2-135m -o cloze.html                # LAMA-style P@1 / P@10 with baseline
    circuitlab probe cloze -m smollm2-135m --control                    # ... beside controls without the facts
    circuitlab probe edges -m minilm-l6 --task deprel --data default   # edge probing: scalar mix, lexical, per layer
    circuitlab probe depth -m minilm-l6 --data default -n 1000          # word-level vs sentence-level tasks by layer
    circuitlab probe gaussian -m minilm-l6 --data default --task pos    # greedy Gaussian neurons vs linear ranking
    circuitlab probe coref -m minilm-l6                                 # pronoun -> antecedent by similarity, per layer

Prints a compact table of the result; ``-o FILE`` also writes the HTML report.
"""

from __future__ import annotations

import argparse

from circuitlab.cli import (add_model_option, add_out_option, add_quiet_option, command, emit, positive_int, seed_int,
                            write_report)

KINDS = ("pos", "structural", "heads", "pairs", "cloze", "edges", "depth", "gaussian", "coref")


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=KINDS, help="pos: part-of-speech classifier probes with control tasks; structural: "
                                              "distance and depth probes; heads: attention-head dependency accuracy; "
                                              "pairs: minimal pairs; cloze: factual cloze P@1/P@10; edges: edge "
                                              "probing (scalar mix over layers vs the lexical baseline); depth: "
                                              "word-level (UPOS, dependency label) and sentence-level (tense, voice, "
                                              "sentence type) linear probes by layer, with expected layers; "
                                              "gaussian: accuracy and selectivity of a Gaussian probe on k neurons, "
                                              "chosen greedily vs by a linear probe's weights; coref: pronouns' "
                                              "antecedents by representation similarity per layer, with baselines")
    add_model_option(p)
    p.add_argument("--data", default=None,
                   help="pos/structural/heads/edges/depth: 'templates' (a small grammar, the default), 'default' (KJV "
                        "and fortunes labelled by spaCy; the default of depth, whose sentence-level tasks need more "
                        "than one tense, and the templates are all past tense) or a CoNLL-U file (multiword tokens "
                        "read as their syntactic words)")
    p.add_argument("-n", "--sentences", type=positive_int, default=300,
                   help="pos/structural/heads/edges/depth: how many sentences (default 300; a CoNLL-U file: its first "
                        "N)")
    p.add_argument("--task", choices=("deprel", "pos", "ent"), default="deprel",
                   help="edges, gaussian: dependency arc labels (default), part of speech, or entity types")
    p.add_argument("--neurons", type=positive_int, default=10, metavar="K",
                   help="gaussian: subsets of 1..K neurons (default 10)")
    p.add_argument("--pool", choices=("mean", "attention"), default="mean",
                   help="edges: span pooling, mean (default) or self-attentive")
    p.add_argument("--cumulative", action="store_true",
                   help="edges: also Tenney et al.'s cumulative scoring (the mix of layers 0..l for each l), its "
                        "differential scores and their expected layer (L - 1 more probes)")
    p.add_argument("--blimp", metavar="FILE", help="pairs: a BLiMP .jsonl file instead of the template pairs")
    p.add_argument("--method", choices=("sentence", "prefix"), default="sentence",
                   help="pairs: whole-sentence log-probability (default) or the one-prefix method")
    p.add_argument("--n-per", type=positive_int, default=40,
                   help="pairs: template pairs per phenomenon; coref: items per kind (default 40)")
    p.add_argument("--relations", help="cloze: comma-separated relations (default: all)")
    p.add_argument("--control", action="store_true",
                   help="cloze: also the controls that keep each prompt and remove the fact (the subject replaced by "
                        "invented names; the blocks' weights shuffled) and the gain over them (Zhong et al. 2021)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of data sampling, and of the edge probe (default 0)")
    p.add_argument("--seeds", type=positive_int, metavar="N",
                   help="pos/structural: train each probe with seeds 0..N-1; the table and report show 95%% intervals "
                        "over them (default 3 for pos, 1 for structural; intervals need 2 or more)")
    add_out_option(p)
    add_quiet_option(p)


def _cell(v: float, c: float | None) -> str:
    """``0.953 ± 0.004`` as the report writes it (:func:`circuitlab.render.probing.plus_minus`), the value alone
    where there is no interval (``c`` None or NaN); a NaN value prints as ``nan``."""
    from circuitlab.render.probing import plus_minus

    return plus_minus(v, float("nan") if c is None else c) if v == v else f"{v:.3f}"


def table(res, max_rows: int = 40, ci=None) -> str:
    """A :class:`~circuitlab.results.Result` as text: its last axis as columns, the other axes joined as rows;
    with ``ci`` (half-widths, the values' shape), each cell as ``mean ± half-width``."""
    vals = res.values.detach().float()
    if vals.ndim == 1:
        vals = vals[:, None]
        cols, rows_axes = [res.metric.split(":")[0] or "value"], [res.axes[0]]
    else:
        cols, rows_axes = res.labels[res.axes[-1]], list(res.axes[:-1])
    flat = vals.reshape(-1, vals.shape[-1])
    half = ci.detach().float().reshape(flat.shape).tolist() if ci is not None else [[None] * flat.shape[1]] * len(flat)
    import itertools

    names = [" ".join(parts) for parts in itertools.product(*[res.labels[a] for a in rows_axes])]
    width = max([len(n) for n in names] + [4])
    cw = 16 if ci is not None else 12
    lines = [" " * width + "".join(f" {c[:cw]:>{cw}}" for c in cols)]
    for name, row, hw in list(zip(names, flat.tolist(), half))[:max_rows]:
        lines.append(f"{name:<{width}}" + "".join(f" {_cell(v, c):>{cw}}" for v, c in zip(row, hw)))
    if len(names) > max_rows:
        lines.append(f"... {len(names) - max_rows} more rows")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from circuitlab import load_model

    progress = not args.quiet
    if args.kind in ("pos", "structural", "heads", "edges", "depth", "gaussian"):
        from circuitlab.probing import depth_profile, edge_probe, gaussian_sweep, head_sweep, probe_sweep, \
            structural_sweep
        from circuitlab.core import check_affordable
        from circuitlab.models.loading import as_any_model
        from circuitlab.probing.sentences import labelled_sentences

        model = as_any_model(args.model)
        data = args.data or ("default" if args.kind == "depth" else "templates")
        sentences = labelled_sentences(data, args.sentences, seed=args.seed, progress=progress)
        if args.seeds is not None:  # the seeds are listed (and each one's probes kept): refuse what cannot fit
            check_affordable(64 * args.seeds, f"--seeds {args.seeds:,}", "use fewer seeds (3 to 10 is usual)")
        seeds = {} if args.seeds is None else {"seeds": tuple(range(args.seeds))}
        if args.kind == "pos":
            res = probe_sweep(model, sentences, "upos", cache=False, progress=progress, **seeds)
        elif args.kind == "structural":
            res = structural_sweep(model, sentences, cache=False, progress=progress, **seeds)
        elif args.kind == "gaussian":
            task = {"pos": "upos"}.get(args.task, args.task)
            res = gaussian_sweep(model, sentences, task, k=args.neurons, seed=args.seed, cache=False,
                                 progress=progress)
        elif args.kind == "depth":
            res = depth_profile(model, sentences, split_seed=args.seed, too_few="skip", cache=False,
                                progress=progress)
        elif args.kind == "edges":
            res = edge_probe(model, sentences, args.task, pool=args.pool, seed=args.seed,
                             cumulative=args.cumulative, cache=False, progress=progress)
        else:
            res = head_sweep(model, sentences, progress=progress)
        main = {"edges": "scores", "depth": "accuracy"}.get(args.kind)
        title, name = (getattr(res, main).title, getattr(res, main).model) if main else (res.title, res.model)
        print(f"{title} on {name or args.model}, {len(sentences)} sentences ({data})")
        if args.kind == "gaussian":
            print(f"hook {res.meta['hook']}; {res.meta['n_train']:,} training words, {res.meta['n_test']:,} test words")
            print(table(res))
        elif args.kind == "depth":
            for task, why in res.accuracy.meta["left_out_tasks"].items():
                print(f"left out the sentence task {task!r}: {why}")
            print(table(res.normalised))
            print(res.summary())
        elif args.kind == "edges":
            print(res.summary())
            print(table(res.scores))
            print(table(res.mix))
            for extra in (res.layers, res.cumulative, res.differential):
                if extra is not None:
                    print(extra.title)
                    print(table(extra))
        elif args.kind == "heads":
            base = res.meta.get("baseline", {})
            print(f"{'relation':<12} {'best head':>10} {'accuracy':>9} {'baseline':>9}")
            for rel, b in res.meta["best"].items():
                bl = base.get(rel)
                bl = bl.get("accuracy") if isinstance(bl, dict) else bl
                print(f"{rel:<12} {'L%d H%d' % (b['layer'], b['head']):>10} {b['accuracy']:>9.3f} "
                      f"{bl if bl is None else format(bl, '9.3f'):>9}")
        else:
            n_seeds = len(res.meta["seeds"])
            print(f"test split; mean ± 95% interval over seeds {', '.join(map(str, res.meta['seeds']))}" if n_seeds > 1
                  else f"test split; one seed ({res.meta['seeds'][0]}), so no intervals (--seeds N for them)")
            ci = res.meta["ci95"]
            if args.kind == "structural":
                ci = ci.clone()
                ci[-1] = float("nan")  # the linear baseline does not depend on the seed
            print(table(res, ci=ci))
            if args.kind == "structural":
                ex = res.meta["example"]
                print(f"best layer by UUAS: {ex['layer']}; its tree of test sentence {ex['id'] or ex['sentence']}: "
                      f"{ex['correct']} of {ex['gold_edges']} gold edges (punctuation left out)")
        items = [res]
        emit(sentences=len(sentences), data=data)
    elif args.kind == "coref":
        from circuitlab.probing import coreference_similarity
        from circuitlab.tasks.coreference import coreference_items

        res = coreference_similarity(args.model, coreference_items(args.n_per, seed=args.seed), cache=False,
                                     progress=progress)
        print(f"{res.accuracy.title} on {res.accuracy.model}: {res.accuracy.task}")
        print(table(res.accuracy))
        print(table(res.baselines))
        items = [res]
    else:
        model = load_model(args.model)
        if args.kind == "pairs":
            from circuitlab.probing import read_blimp, score_pairs, template_pairs

            pairs = read_blimp(args.blimp) if args.blimp else template_pairs(n_per=args.n_per, seed=args.seed)
            res = score_pairs(model, pairs, args.method, progress=progress)
            print(f"{res.title} on {res.model}: {res.task}, overall {res.meta['overall']:.3f}"
                  + (f", {res.meta['skipped']} pairs without a one-prefix split skipped" if res.meta["skipped"]
                     else "")
                  + (f", {sum(res.meta['undefined'])} tied pairs (within float noise) left out"
                     if sum(res.meta["undefined"]) else ""))
            for name, acc, n, u in zip(res.labels["phenomenon"], res.values.tolist(), res.meta["n"],
                                       res.meta["undefined"]):
                print(f"  {name:<40} {acc:.3f}  ({n} pairs{f', {u} tied' if u else ''})")
            items = [res]
        else:
            from circuitlab.probing import cloze, cloze_control

            rels = [r.strip() for r in args.relations.split(",")] if args.relations else None
            if args.control:
                res = cloze_control(model, relations=rels, seed=args.seed, progress=progress)
                print(f"Cloze and its controls on {res.by_relation.model}: {res.by_relation.task}")
            else:
                res = cloze(model, relations=rels, progress=progress)
                print(f"Cloze on {res.by_relation.model}: {res.by_relation.task}")
            print(res.summary())
            skipped = {r: n for r, n in (res.scores if args.control else res).skipped.items() if n}
            if skipped:
                print(f"facts skipped (answer not one token): {skipped}")
            items = [res]
    emit(probe=res)
    write_report(items, args.out, title=f"Probing ({args.kind}): {args.model}")
    return 0


run.arguments = arguments
command("probe", "probing: POS probes with control tasks, structural probes, attention heads, minimal pairs, "
                 "cloze, edge probing",
        json="probe (the kind's Result or bundle, its meta holding the data split where there is one: the test "
             "sentence ids and the sentences left out, with why), and for the sentence probes sentences (how "
             "many) and data (the --data source)")(run)
