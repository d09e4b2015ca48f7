"""``circuitlab ig``, ``circuitlab tcav`` and ``circuitlab rationales``: integrated gradients over a prompt's tokens,
TCAV of the sentiment concepts, and explanations as rationales in few-shot prompts (AMPLIFY), from the shell.

    circuitlab ig -m smollm2-135m --prompt "The film was lovely. Overall, the experience was" \\
        --answer " positive" --wrong " negative" --baseline pad --steps 64 -o ig.html
    circuitlab tcav -m smollm2-135m --hooks 7,15,22 --runs 10 -o tcav.html
    circuitlab rationales -m smollm2-135m --seeds 2 --queries 10 --shots 4 -k 3

``ig`` prints each token's attribution to ``logit(answer) - logit(wrong)`` (or to ``log P(answer)`` without
``--wrong``) and the completeness check; the report colours the tokens. ``tcav`` runs the sentiment experiment
(:func:`circuitlab.concepts.sentiment.sentiment_tcav`: negative held-out reviews, the class score ``" negative"``
minus ``" positive"``, concepts "positive adjectives", "neutral adjectives" and "animals" against random word
lists) and prints each concept's score, p-value and verdict per hook; the report draws the bar charts.
``rationales`` runs :func:`circuitlab.concepts.rationales.amplify` (a linear-head proxy's integrated-gradients
rationales in the model's few-shot prompts, against no and random rationales, on mixed reviews) and prints the
accuracy and answer margin per condition and seed, and the first seed's prompt with IG rationales.
"""

from __future__ import annotations

import argparse

from circuitlab.cli import (add_model_option, add_out_option, add_quiet_option, answer_arg, command, emit, positive_int,
                            prompt_arg, quote, write_report)


# -- ig ------------------------------------------------------------------------------------------------------

def ig_arguments(p: argparse.ArgumentParser) -> None:
    add_model_option(p)
    p.add_argument("--prompt", required=True, help="the prompt (token ids if the model has no tokenizer)")
    p.add_argument("--answer", required=True, help="the next token whose score is attributed, e.g. ' Paris'")
    p.add_argument("--wrong", help="a competing token: attribute logit(answer) - logit(wrong) (default: attribute "
                                   "log P(answer))")
    p.add_argument("--baseline", default="zero",
                   help="zero (the zero embedding), pad (the pad token's), mean (the mean embedding), or a token id "
                        "(default zero)")
    p.add_argument("--steps", type=positive_int, default=50, help="points on the path (default 50)")
    p.add_argument("--hook", default="hook_embed", help="the activation interpolated (default hook_embed: the token "
                                                        "embeddings)")
    p.add_argument("--gxi", action="store_true", help="gradient x input instead of integrated gradients")
    add_out_option(p)
    add_quiet_option(p)


def _baseline(text: str):
    return int(text) if text.lstrip("-").isdigit() else text


def ig_run(args: argparse.Namespace) -> int:
    from circuitlab import load_model
    from circuitlab.concepts.gradients import gradient_x_input, integrated_gradients
    from circuitlab.metrics import LogitDiff, Probability

    model = load_model(args.model)
    prompt = prompt_arg(model, args.prompt)
    answer = answer_arg(model, args.answer)
    metric = LogitDiff(answer, answer_arg(model, args.wrong, "--wrong")) if args.wrong else \
        Probability(answer, log=True)
    if args.gxi:
        res = gradient_x_input(model, prompt, metric, hook=args.hook, baseline=_baseline(args.baseline))
    else:
        res = integrated_gradients(model, prompt, metric, hook=args.hook, baseline=_baseline(args.baseline),
                                   steps=args.steps, progress=not args.quiet)
    m = res.meta
    what = f"logit({args.answer!r}) - logit({args.wrong!r})" if args.wrong else f"log P({args.answer!r})"
    steps = "" if args.gxi else f", {m['steps']} steps"
    print(f"{m['method'].capitalize()} of {what} on {model.cfg.model_name or args.model} ({m['hook']}, baseline "
          f"{m['baseline']}{steps}):")
    for tok, v in res.prompt(0):
        print(f"  {tok!r:<24} {v:+.4f}")
    print(f"completeness: sum {m['sum']:.4f}; metric(input) - metric(baseline) = {m['metric_input']:.4f} - "
          f"{m['metric_baseline']:.4f} = {m['difference']:.4f}; gap {m['gap']:+.4f} ({100 * m['relative_gap']:.2g}%)")
    emit(attributions=res)
    write_report([res], args.out, title=f"Token attributions: {model.cfg.model_name or args.model}",
                 intro=f"Prompt {args.prompt!r}; metric {what}.")
    return 0


ig_run.arguments = ig_arguments
command("ig", "integrated gradients (or gradient x input) of a prompt's tokens for a next-token score",
        json="attributions (Result: one score per prompt token; method, baseline, steps and the completeness "
             "check sum, metric_input, metric_baseline, gap in meta)")(ig_run)


# -- tcav ----------------------------------------------------------------------------------------------------

def tcav_arguments(p: argparse.ArgumentParser) -> None:
    add_model_option(p)
    p.add_argument("--hooks", help="layers (their residual stream output) or hook names, comma-separated "
                                   "(default: a quarter, half and three quarters of the depth)")
    p.add_argument("--runs", type=positive_int, default=10, help="CAVs per concept, each against another random set "
                                                                 "(default 10; at least 2)")
    p.add_argument("--set-size", type=positive_int, default=15, help="texts per concept and random set (default 15)")
    p.add_argument("--inputs", type=positive_int, default=16, help="negative reviews explained (default 16)")
    p.add_argument("--random", type=positive_int, default=60, help="random word lists to draw sets from (default 60)")
    p.add_argument("--words", default=" positive, negative",
                   help="the two label words, positive first, comma-separated (default ' positive, negative'; "
                        "' good, bad' for a small vocabulary)")
    add_out_option(p)
    add_quiet_option(p)


def tcav_run(args: argparse.Namespace) -> int:
    from circuitlab import load_model
    from circuitlab.concepts.sentiment import sentiment_tcav
    from circuitlab.errors import InputError

    model = load_model(args.model)
    L = model.cfg.n_layers
    if args.hooks:
        hooks = [int(h) if h.strip().lstrip("-").isdigit() else h.strip() for h in args.hooks.split(",")]
    else:
        hooks = sorted({max(0, L // 4), L // 2, min(L - 1, 3 * L // 4)})
    words = tuple(args.words.split(","))
    if len(words) != 2:
        raise InputError(f"--words needs two label words separated by a comma, e.g. ' good, bad'; got "
                         f"{quote(args.words)}")
    res = sentiment_tcav(model, hooks=hooks, runs=args.runs, set_size=args.set_size, n_inputs=args.inputs,
                         n_random=args.random, words=words, progress=not args.quiet)
    print(res.summary())
    emit(tcav=res)
    write_report([res], args.out, title=f"TCAV of sentiment concepts: {model.cfg.model_name or args.model}",
                 intro=f"Class score logit({words[1]!r}) - logit({words[0]!r}) on negative held-out reviews.")
    return 0


tcav_run.arguments = tcav_arguments
command("tcav",
        "TCAV of sentiment concepts (positive and neutral adjectives, animals) with significance tests",
        json="tcav (the TCAV bundle: scores per concept and hook over runs, random baselines and p-values)")(tcav_run)


# -- rationales ----------------------------------------------------------------------------------------------

def rationales_arguments(p: argparse.ArgumentParser) -> None:
    add_model_option(p)
    p.add_argument("--proxy", default="zoo/toy-lm", help="the model under the proxy classifier, a HookedTransformer "
                                                         "(default zoo/toy-lm)")
    p.add_argument("--seeds", type=positive_int, default=2, help="runs, seeds 0.. (default 2)")
    p.add_argument("--queries", type=positive_int, default=10, help="test reviews per label (default 10)")
    p.add_argument("--shots", type=positive_int, default=4, help="demonstrations, half per label (default 4)")
    p.add_argument("-k", type=positive_int, default=3, help="words per rationale (default 3)")
    p.add_argument("--steps", type=positive_int, default=32, help="integrated-gradients points (default 32)")
    add_out_option(p)
    add_quiet_option(p)


def rationales_run(args: argparse.Namespace) -> int:
    from circuitlab import load_model
    from circuitlab.concepts.rationales import CONDITIONS, amplify

    model = load_model(args.model)
    proxy = model if args.proxy == args.model else load_model(args.proxy)
    r = amplify(model, proxy=proxy, n_queries=args.queries, n_shots=args.shots, k=args.k, steps=args.steps,
                seeds=tuple(range(args.seeds)), progress=not args.quiet)
    print(f"{r.accuracy.title}: {model.cfg.model_name or args.model}, {r.accuracy.task}; proxy accuracy "
          + ", ".join(f"{100 * a:.0f}%" for a in r.proxy_accuracy))
    for i, c in enumerate(CONDITIONS):
        print(f"  {c:<7} accuracy {100 * float(r.accuracy.values[i].mean()):5.1f}%  margin "
              f"{float(r.margin.values[i].mean()):+.3f}  per seed: "
              + " ".join(f"{100 * float(v):.0f}%" for v in r.accuracy.values[i]))
    print("prompt with IG rationales (seed 0, first query):\n" + r.prompts["ig"])
    emit(rationales=r)
    write_report([r], args.out, title=f"Explanations as rationales (AMPLIFY): {model.cfg.model_name or args.model}",
                 intro="Few-shot accuracy without rationales, with a proxy classifier's integrated-gradients "
                       "rationales, and with random words of the same demonstrations.")
    return 0


rationales_run.arguments = rationales_arguments
command("rationales", "explanations as rationales (AMPLIFY): a proxy's IG rationales in few-shot prompts, against "
                      "none and random",
        json="rationales (the AMPLIFY bundle: accuracy and margin per condition and seed, proxy_accuracy, "
             "the prompts)")(rationales_run)
