"""``circuitlab neurons``: what single MLP neurons do, from the shell (:mod:`circuitlab.neurons`).

    circuitlab neurons examples -m zoo/toy-lm --layer 2 --neuron 17,40 -o pages.html  # top contexts, values, histogram
    circuitlab neurons explain -m smollm2-135m --layer 15 --n-neurons 100 -n 3000      # explain, simulate, score
    circuitlab neurons explain -m zoo/toy-lm --layer 2 --llm                           # with an LLM endpoint
    circuitlab neurons rank -m minilm-l6 --layer 3 -n 300                              # probe-weight ranking, UPOS
    circuitlab neurons ablate -m zoo/toy-lm --layer 2 --method anova                   # ablation curves of a ranking
    circuitlab neurons compose -m minilm-l6 --layer 3 --labelled default --max-length 3   # logical formulas (Mu 2020)

``examples`` prints each neuron's top-activating contexts and the tokens its value vector promotes; the report
shows its page (token colouring, value chips, activation histogram). ``explain`` scores the n-gram baseline's
explanations (or, with ``--llm``, a language model's: ``--llm-url``/``--llm-model`` or ``CIRCUITLAB_LLM_URL``,
``CIRCUITLAB_LLM_MODEL``, ``CIRCUITLAB_LLM_KEY``) of ``--n-neurons`` neurons drawn with ``--seed``, and prints the
score distribution beside the shuffled control and chance, and the best-explained neurons; the report adds the
histogram and true-vs-simulated activations of the best neuron.

``rank`` ranks the layer's MLP neurons by how much they carry a per-word property (``--task upos|deprel|ent``) on
``--sentences`` labelled sentences (``--labelled templates|default|FILE.conllu``;
:func:`circuitlab.neurons.ranking.rank_neurons`: ``--method probe``, the elastic-net probe's weight mass, Dalvi et
al. 2019; or ``anova``, ``mi``) and prints the top neurons, overall and per class. ``ablate`` then keeps and
removes the top-, random- and bottom-ranked neurons and prints the probe's accuracy, control accuracy and
selectivity (:func:`circuitlab.neurons.ablation.ablation_curves`; random selections averaged over three seeds).
``compose`` explains ``--n-neurons`` neurons of the layer (drawn with ``--seed``) by logical formulas over word
concepts (:func:`circuitlab.neurons.compositional.compositional_explanations`, Mu & Andreas 2020: masks at the top
``--top`` fraction of words, beam search up to ``--max-length`` atoms, IoU on the searched and ``--holdout``
sentences) and prints the mean IoU per formula length and the best-explained neurons with their formulas.

The corpus (``--data``): ``default`` (King James verses and fortune-cookie lines from Debian packages, offline; the
held-out Bible books shipped with zoo/toy-lm without them), or a text file, one text per line.
"""

from __future__ import annotations

import argparse

from circuitlab.cli import (add_model_option, add_out_option, add_quiet_option, command, emit, positive_int, quote,
                            seed_int, write_report)

KINDS = ("examples", "explain", "rank", "ablate", "compose")


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=KINDS, help="examples: top-activating contexts, value tokens and activation "
                                              "histogram of given neurons; explain: explain, simulate and score "
                                              "neurons (n-gram baseline, or --llm); rank: rank the layer's "
                                              "neurons by part of speech (UPOS); ablate: ablation curves of that "
                                              "ranking; compose: logical formulas over word concepts (Mu & Andreas)")
    add_model_option(p)
    p.add_argument("--layer", type=int, help="the MLP layer (negative counts from the end; default the middle layer)")
    p.add_argument("--neuron", help="examples: neuron indices, comma-separated (required); explain: the neurons to "
                                    "score (default --n-neurons drawn at random)")
    p.add_argument("--n-neurons", type=positive_int, default=32,
                   help="explain, compose: how many neurons of the layer, drawn with --seed (default 32)")
    p.add_argument("--data", default="default", help="'default' (KJV and fortunes, offline) or a text file, one text "
                                                     "per line")
    p.add_argument("-n", "--texts", type=positive_int, default=1000, help="how many texts of the corpus (default 1000)")
    p.add_argument("-k", type=positive_int, default=10, help="examples: top contexts per neuron (default 10)")
    p.add_argument("--excerpts", type=positive_int, default=10,
                   help="explain: excerpts per set (explanation, held-out top, random; default 10)")
    p.add_argument("--llm", action="store_true", help="explain: a language model explains and simulates (an "
                                                      "OpenAI-compatible endpoint; see --llm-url)")
    p.add_argument("--llm-url", help="explain --llm: the API base, e.g. http://127.0.0.1:8000/v1 (default "
                                     "$CIRCUITLAB_LLM_URL)")
    p.add_argument("--llm-model", help="explain --llm: the model name (default $CIRCUITLAB_LLM_MODEL)")
    p.add_argument("--sentences", type=positive_int, default=300,
                   help="rank/ablate/compose: how many labelled sentences (default 300)")
    p.add_argument("--labelled", default="templates",
                   help="rank/ablate/compose: the labelled sentences: 'templates' (a small grammar with gold labels, "
                        "default), 'default' (KJV and fortunes labelled by spaCy) or a CoNLL-U file")
    p.add_argument("--task", choices=("upos", "deprel", "ent"), default="upos",
                   help="rank/ablate: the per-word property (default upos)")
    p.add_argument("--method", choices=("probe", "anova", "mi"), default="probe",
                   help="rank/ablate: probe (elastic-net weight mass, default), anova (F statistic) or mi (binned "
                        "mutual information)")
    p.add_argument("--protocol", choices=("masked", "retrained", "both"), default="both",
                   help="ablate: masked (the trained probe, unused neurons at their mean), retrained (a fresh probe "
                        "per selection) or both (default)")
    p.add_argument("--max-length", type=positive_int, default=3,
                   help="compose: the longest formula, in concepts (default 3)")
    p.add_argument("--top", type=float, default=0.005,
                   help="compose: a neuron's mask is its top fraction of words (default 0.005)")
    p.add_argument("--holdout", type=float, default=0.5,
                   help="compose: the fraction of sentences held out of the search and scored apart (default 0.5)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the corpus order, neuron draw and random excerpts "
                                                       "(default 0)")
    add_out_option(p)
    add_quiet_option(p)


def _texts(args) -> list[str]:
    from pathlib import Path

    from circuitlab.core import read_text_file
    from circuitlab.errors import InputError
    from circuitlab.neurons.explain import corpus_lines

    if args.data == "default":
        return corpus_lines(args.texts, seed=args.seed)
    path = Path(args.data)
    if not path.is_file():
        raise InputError(f"--data {quote(args.data, 300)} is neither 'default' nor a text file; give one of them.")
    lines = [line.strip() for line in read_text_file(path, "--data file").splitlines() if line.strip()]
    if not lines:
        raise InputError(f"--data {quote(args.data, 300)} holds no text; give a file with one text per line.")
    return lines[: args.texts]


def _neurons(text: str, what: str = "--neuron") -> list[int]:
    from circuitlab.errors import InputError

    try:
        return [int(n) for n in text.split(",") if n.strip()]
    except ValueError:
        raise InputError(f"{what} {quote(text)}: give neuron indices separated by commas, e.g. 17,40.") from None


def run(args: argparse.Namespace) -> int:
    import os

    from circuitlab import load_model
    from circuitlab.core import check_mlp_layer
    from circuitlab.errors import InputError

    if args.llm and not (args.llm_url or os.environ.get("CIRCUITLAB_LLM_URL")):
        raise InputError("--llm needs a language-model endpoint: give --llm-url (an OpenAI-compatible API base, e.g. "
                         "http://127.0.0.1:8000/v1) or set CIRCUITLAB_LLM_URL. Nothing was sent. Without --llm the "
                         "offline default explains: the n-gram baseline (NgramExplainer, NgramSimulator).")
    if args.kind == "examples" and not args.neuron:
        raise InputError("neurons examples needs --neuron: the neuron indices, e.g. --neuron 17,40.")
    chosen = _neurons(args.neuron) if args.neuron else None
    model = load_model(args.model)
    layer = check_mlp_layer(model, model.cfg.n_layers // 2 if args.layer is None else args.layer)
    progress = not args.quiet
    name = model.cfg.model_name or args.model
    if args.kind in ("rank", "ablate"):
        return _rank(args, model, layer, name)
    if args.kind == "compose":
        return _compose(args, model, layer, name)
    if args.kind == "examples":
        import circuitlab.render.neurons  # noqa: F401  the page's renderer
        from circuitlab.neurons.examples import neuron_page

        texts = _texts(args)
        pages = []
        for n in chosen:
            page = neuron_page(model, texts, layer, n, k=args.k, progress=progress)
            pages.append(page)
            promoted = ", ".join(repr(t) for t in page.values.promoted.row_tokens([0])[:8])
            print(f"L{layer} N{page.neuron} on {len(texts)} texts ({page.n_tokens} tokens): positive on "
                  f"{100 * page.histogram.meta['fraction_positive']:.1f}% of tokens; value promotes {promoted}")
            for i, e in enumerate(page.examples.examples):
                print(f"  #{i + 1:<2} {e.activation:8.3f}  {e.token!r:<14} {' '.join(e.text.split())[:90]}")
        emit(pages=pages)
        write_report(pages, args.out, title=f"Neurons of MLP layer {layer}: {name}",
                     intro=f"Top-activating contexts over {len(texts)} texts ({args.data}).")
        return 0

    import random

    from circuitlab.neurons.explain import LLMClient, LLMExplainer, LLMSimulator, score_explanations
    from circuitlab.render.neurons import true_vs_simulated

    if chosen:
        neurons = chosen
    else:
        d_mlp = model.cfg.d_mlp
        neurons = sorted(random.Random(args.seed).sample(range(d_mlp), min(args.n_neurons, d_mlp)))
    explainer = simulator = None
    if args.llm:
        client = LLMClient(url=args.llm_url, model=args.llm_model)
        explainer, simulator = LLMExplainer(client), LLMSimulator(client)
    texts = _texts(args)
    e = args.excerpts
    res = score_explanations(model, texts, layer, neurons, explainer=explainer, simulator=simulator, n_explain=e,
                             n_top=e, n_random=e, shuffled=len(neurons) > 1, seed=args.seed, progress=progress)
    print(res.summary())
    s = res.scores.values[:, 0]
    order = s.argsort(descending=True).tolist()
    print("best explained:")
    for i in order[:5]:
        print(f"  L{layer} N{res.neurons[i]:<6} {float(s[i]):+.3f}  {res.explanations[i][:100]}")
    emit(explanations=res)
    write_report([res, true_vs_simulated(res, order[0])], args.out, title=f"Neuron explanations, MLP layer {layer}: "
                 f"{name}", intro=f"{len(neurons)} neurons, {len(texts)} texts ({args.data}), seed {args.seed}.")
    return 0


def _rank(args: argparse.Namespace, model, layer: int, name: str) -> int:
    from circuitlab.commands.probe import table
    from circuitlab.neurons.ranking import neuron_activations, rank_neurons
    from circuitlab.probing.sentences import labelled_sentences

    progress = not args.quiet
    sentences = labelled_sentences(args.labelled, args.sentences, seed=args.seed, progress=progress,
                                   option="--labelled")
    acts = neuron_activations(model, sentences, [layer], progress=progress, cache=False)
    ranking = rank_neurons(acts, task=args.task, method=args.method, progress=progress)
    m = ranking.meta
    top = ", ".join(f"{lab} ({float(ranking.values[0, int(o[1])]):.3g})" for lab, o in zip(m["ranking"][:10],
                                                                                           m["order"][:10]))
    print(f"{ranking.title} of MLP layer {layer} of {name}, {m['n_train']} training words of {len(sentences)} "
          f"sentences ({args.labelled}), {args.task}:\n  top: {top}")
    for cls, labels in list(m.get("per_class", {}).items())[:12]:
        print(f"  {cls:<6} {', '.join(labels[:5])}")
    items = [ranking]
    emit(ranking=ranking)
    if args.kind == "ablate":
        from circuitlab.neurons.ablation import PROTOCOLS, ablation_curves

        protocols = PROTOCOLS if args.protocol == "both" else (args.protocol,)
        curves = ablation_curves(acts, ranking, task=args.task, protocols=protocols,
                                 random_seeds=tuple(args.seed + i for i in range(3)), progress=progress)
        print(f"{curves.title or 'Ablation curves'} (test split; columns: k neurons)")
        print(table(curves, max_rows=60))
        items.append(curves)
        emit(ablation_curves=curves)
    write_report(items, args.out, title=f"Neurons of MLP layer {layer} ({args.kind}): {name}",
                 intro=f"{len(sentences)} sentences ({args.labelled}), {args.task}, method {args.method}, seed "
                       f"{args.seed}; random selections: the mean of seeds {args.seed}..{args.seed + 2}.")
    return 0


def _compose(args: argparse.Namespace, model, layer: int, name: str) -> int:
    from circuitlab.neurons.compositional import compositional_explanations
    from circuitlab.probing.sentences import labelled_sentences

    progress = not args.quiet
    sentences = labelled_sentences(args.labelled, args.sentences, seed=args.seed, progress=progress,
                                   option="--labelled")
    n = args.n_neurons if args.neuron is None else _neurons(args.neuron)
    ex = compositional_explanations(model, sentences, hooks=[layer], neurons=n, top=args.top,
                                    max_length=args.max_length, holdout=args.holdout, seed=args.seed,
                                    progress=progress, cache=False)
    v = ex.by_length.values
    print(f"Compositional explanations of {ex.by_length.meta['n_neurons']} neurons of MLP layer {layer} of {name}, "
          f"{len(sentences)} sentences ({args.labelled}), {len(ex.concepts)} concepts; mean IoU by formula length:")
    for i, split in enumerate(ex.by_length.labels["split"]):
        print(f"  {split:<8} " + "  ".join(f"L<={lab}: {float(v[i, j]):.3f}"
                                           for j, lab in enumerate(ex.by_length.labels["length"])))
    print("best explained:")
    print(ex.table(10))
    emit(compositional=ex)
    write_report([ex], args.out, title=f"Compositional explanations, MLP layer {layer}: {name}",
                 intro=f"{len(sentences)} sentences ({args.labelled}), top {args.top:g} of words, formulas up to "
                       f"{args.max_length} concepts, {args.holdout:g} of the sentences held out, seed {args.seed}.")
    return 0


run.arguments = arguments
command("neurons", "neurons: top-activating examples and pages; explain, simulate and score (n-gram baseline or "
                   "an LLM)",
        json="examples: pages (a list of NeuronPage: top examples, activation histogram, value tokens); explain: "
             "explanations (ExplanationScores: each neuron's explanation and scores); rank: ranking (Result: "
             "the score of each neuron, the order, the train/test split in meta); ablate: also ablation_curves; "
             "compose: compositional (the formulas and IoU by length, per split)")(run)
