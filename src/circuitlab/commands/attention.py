"""``circuitlab attention``: attention as explanation, from the shell (:mod:`circuitlab.attention`).

    circuitlab attention patterns -m minilm-l6                       # Kovaleva et al.'s classes per layer
    circuitlab attention patterns -m zoo/toy-lm --inputs text -n 64  # on sentence pairs instead of random tokens
    circuitlab attention rollout -m zoo/toy-lm --prompt "The cat sat on the mat because it"   # raw, rollout, flow
    circuitlab attention prune -m gemma-3-270m --order importance -n 16 -o prune.html         # a pruning curve

``patterns`` prints the share of each pattern class per layer (random-token inputs by default, as Kovaleva et al.
controlled for the text) and the classifier's accuracy on held-out synthetic maps. ``rollout`` prints, for the last
position of ``--prompt``, each input token's raw attention (last layer), rollout and flow, beside its importance by
input ablation, with the Spearman correlation of each. ``prune`` prints the held-out LM loss as heads are masked in
``--order`` (importance, greedy, random, taxonomy), on ``-n`` sequences of ``--seq-len`` tokens of the held-out text
shipped with zoo/toy-lm or of ``--data FILE``.
"""

from __future__ import annotations

import argparse

from circuitlab.cli import (add_model_option, add_out_option, add_quiet_option, command, emit, positive_int, prompt_arg,
                            quote, seed_int, write_report)
from circuitlab.errors import InputError

KINDS = ("patterns", "rollout", "prune")
ORDERS = ("importance", "greedy", "random", "taxonomy")


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=KINDS, help="patterns: attention-pattern classes per layer (Kovaleva et al.); "
                                              "rollout: raw attention, rollout and flow for one prompt (Abnar & "
                                              "Zuidema); prune: a head-pruning curve (Michel et al.)")
    add_model_option(p)
    p.add_argument("--prompt", help="rollout: the prompt (its last position is explained)")
    p.add_argument("--inputs", choices=("random", "text"), default="random",
                   help="patterns: random-token inputs (default) or sentence pairs from the package's corpus")
    p.add_argument("-n", type=positive_int, default=32,
                   help="patterns: inputs; prune: sequences of held-out text (default 32)")
    p.add_argument("--seq-len", type=positive_int, default=32,
                   help="patterns: tokens per input; prune: tokens per sequence (default 32)")
    p.add_argument("--order", choices=ORDERS, default="importance", help="prune: the order heads are masked in")
    p.add_argument("--data", metavar="FILE", help="prune: a UTF-8 text file to cut into sequences (default: the "
                                                   "held-out text shipped with zoo/toy-lm)")
    p.add_argument("--seed", type=seed_int, default=0, help="the random inputs or the random order (default 0)")
    add_out_option(p)
    add_quiet_option(p)


def _patterns(model, args) -> list:
    from circuitlab.attention.patterns import CLASSES, pattern_taxonomy, taxonomy_accuracy

    length = min(args.seq_len, model.cfg.n_ctx)
    tax = pattern_taxonomy(model, args.inputs, n=args.n, length=length, seed=args.seed)
    acc = taxonomy_accuracy(causal=tax.meta["causal"])
    print(f"attention-pattern classes on {tax.meta['n']} {tax.meta['inputs']} of {length} tokens "
          f"(classifier accuracy on held-out synthetic maps {acc.meta['accuracy']:.1%})")
    print("layer  " + "  ".join(f"{c:>17}" for c in CLASSES))
    for layer, row in enumerate(tax.meta["per_layer"].tolist()):
        print(f"L{layer:<5} " + "  ".join(f"{v:>17.0%}" for v in row))
    total = tax.values.mean((0, 1)).tolist()
    print("all    " + "  ".join(f"{v:>17.0%}" for v in total))
    from circuitlab.results import Result

    per_layer = Result(values=tax.meta["per_layer"], axes=("layer", "class"), labels={"class": list(CLASSES)},
                       title=f"Attention-pattern classes per layer ({tax.meta['inputs']})", metric="share of heads",
                       model=tax.model, task=tax.task)
    emit(per_layer=per_layer, taxonomy=tax, classifier_accuracy=acc)
    return [per_layer, tax, acc]


def _rollout(model, args) -> list:
    import torch

    from circuitlab.attention.flow import correlations
    from circuitlab.core import position_labels, str_tokens, to_tokens
    from circuitlab.results import Result

    if args.prompt is None:
        raise InputError("attention rollout needs --prompt: the text whose last position is explained.")
    tokens = to_tokens(model, prompt_arg(model, args.prompt))
    if tokens.shape[1] < 3:
        raise InputError(f"--prompt {quote(args.prompt)} has {tokens.shape[1]} tokens; give a prompt of 3 or more.")
    corr = correlations(model, tokens)  # raw, rollout, flow and ablation, each computed once
    scores = corr.meta["scores"]
    print(f"{'token':>16}  " + "  ".join(f"{k:>9}" for k in scores))
    for j, s in enumerate(str_tokens(model, tokens[0])):
        print(f"{s!r:>16}  " + "  ".join(f"{float(v[0, j]):9.3f}" for v in scores.values()))
    print("Spearman with ablation (start token left out): " +
          ", ".join(f"{m} {v:+.2f}" for m, v in corr.meta["mean"].items()))
    table = Result(values=torch.stack([v[0].float() for v in scores.values()]), axes=("score", "key"),
                   labels={"score": list(scores), "key": position_labels(model, tokens)},
                   title="Token scores for the last position", metric="score", model=corr.model, task=corr.task)
    emit(token_scores=table, correlations=corr)
    return [table, corr]


def _prune(model, args) -> list:
    from circuitlab.attention.importance import prune_curve
    from circuitlab.core import read_text_file
    from circuitlab.reproduce.attention_as_explanation import text_tokens

    text = read_text_file(args.data, "--data file") if args.data else None
    if args.seq_len < 2:
        raise InputError(f"--seq-len {args.seq_len} leaves no token to predict after the start token: use 2 or more.")
    try:
        tokens = text_tokens(model, args.n, args.seq_len, text=text)
    except InputError as err:
        raise InputError(f"{err} -n {args.n} sequences of --seq-len {args.seq_len}: give a longer --data file or "
                         "smaller -n / --seq-len.") from None
    curve = prune_curve(model, tokens, args.order, fractions_pruned=(0, .1, .2, .3, .4, .5, .6, .7, .8),
                        seed=args.seed)
    base = curve.meta["base_loss"]
    print(f"LM loss with heads masked in {args.order} order ({args.n} sequences of {args.seq_len} tokens):")
    for f, count, loss in zip(curve.meta["fractions"], curve.meta["counts"], curve.values.tolist()):
        print(f"  {f:4.0%} ({count:3d} heads)  {loss:8.4f}  ({(loss - base) / base:+.1%})")
    emit(prune_curve=curve)
    return [curve]


def run(args: argparse.Namespace) -> int:
    from circuitlab.models.loading import as_any_model

    if args.kind != "rollout" and args.prompt is not None:
        raise InputError(f"--prompt is for 'attention rollout', not 'attention {args.kind}'.")
    if args.data is not None and args.kind != "prune":
        raise InputError(f"--data is for 'attention prune', not 'attention {args.kind}'.")
    if args.data is not None:
        from circuitlab.core import read_text_file

        read_text_file(args.data, "--data file")  # a bad file is reported before the model loads
    model = as_any_model(args.model)
    if args.kind != "patterns":
        from circuitlab.core import as_model

        model = as_model(model)  # rollout and pruning read next-token predictions: a decoder
    items = {"patterns": _patterns, "rollout": _rollout, "prune": _prune}[args.kind](model, args)
    write_report(items, args.out, title=f"Attention ({args.kind}): {model.cfg.model_name or args.model}")
    return 0


run.arguments = arguments
command("attention", "attention as explanation: pattern classes, rollout and flow, head pruning",
        json="patterns: per_layer (Result: share of heads per layer and class), taxonomy (Result: each head's "
             "class per input), classifier_accuracy (Result); rollout: token_scores (Result: raw, rollout, flow, "
             "ablation per key), correlations (Result: Spearman with ablation; the scores in meta); prune: "
             "prune_curve (Result: LM loss per fraction of heads masked, base_loss, counts and order in meta)")(run)
