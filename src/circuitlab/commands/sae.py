"""``circuitlab sae``: train, evaluate and list sparse autoencoders (:mod:`circuitlab.features`).

    circuitlab sae train -m zoo/toy-lm --hook 1,2 --save saes/ --training-tokens 200000 --checkpoint ckpt/
    circuitlab sae eval -m zoo/toy-lm --sae toy-lm/res-2              # held-out metrics of a shipped SAE
    circuitlab sae eval -m zoo/toy-lm --sae saes/blocks.2.hook_resid_post --data my_texts.txt
    circuitlab sae list                                               # the shipped SAEs
    circuitlab sae dashboard toy-lm/res-2 --features 0-99 -o dash/   # HTML feature dashboards, explained and scored
    circuitlab sae attribute toy-lm/res-1 --prompt "And the LORD said unto" --answer " Moses" --wrong " the" --exact 10
    circuitlab sae steer toy-lm/res-1 --prompt "And the LORD said unto" --feature 7 --alpha 8

``train`` trains one SAE per hook (all from the same forward passes) and writes each in SAELens's format to
``--save/HOOK``; with ``--checkpoint`` a stopped run resumes where it was. ``--data``: ``default`` (the corpus
zoo/toy-lm was trained on: KJV and fortunes, Debian packages) or a text file, one text per line. ``eval`` prints
L0, explained variance, MSE, CE loss recovered (zero and mean ablation), KL with the SAE spliced in (with and
without the error term), dead and dense fractions and the density histogram; ``--data heldout`` (default) is the
held-out text shipped with zoo/toy-lm. ``dashboard`` writes self-contained HTML feature dashboards (an index to sort
and filter, a page per feature) for the chosen ``--features`` of an SAE on ``--data`` (default the held-out text),
each with its n-gram baseline explanation and score (``--no-explain`` leaves them out). ``attribute`` ranks the
latents by attribution patching of the logit difference ``--answer`` - ``--wrong`` at the last position (baseline
zero, or the latents of ``--corrupted``), with the exact ablation of the ``--exact`` strongest beside it. ``steer``
adds ``--alpha`` times a ``--feature``'s decoder direction at the SAE's hook and prints the next-token change.
"""

from __future__ import annotations

import argparse

from circuitlab.cli import add_model_option, add_quiet_option, command, emit, positive_int, quote, seed_int

KINDS = ("train", "eval", "list", "dashboard", "attribute", "steer")


def positive_number(text: str) -> float:
    """An argparse ``type``: a finite number >= 0."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {quote(text)}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {quote(text)}")
    return value


def index_int(text: str) -> int:
    """An argparse ``type``: an integer >= 0 (a latent's index, or a number of latents where 0 means none)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {quote(text)}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {quote(text)}")
    return value


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=KINDS, help="train: train SAEs on hooks; eval: the standard metrics of an SAE; "
                                              "list: the shipped SAEs; dashboard: HTML feature dashboards; attribute: "
                                              "attribution patching to latents; steer: add a decoder direction")
    p.add_argument("name", nargs="?", help="dashboard, attribute, steer: the SAE (a shipped name or a folder; same "
                                           "as --sae)")
    add_model_option(p, default="zoo/toy-lm")
    p.add_argument("--hook", help="train: hook names or layer numbers (their hook_resid_post), comma-separated; "
                                  "eval: the hook (default the SAE's own)")
    p.add_argument("--sae", help="eval: a shipped SAE's name (e.g. toy-lm/res-2) or a folder in SAELens's format")
    p.add_argument("--data", default=None, help="train: 'default' (KJV + fortunes, offline) or a text file, one text "
                                                "per line; eval: 'heldout' (zoo/toy-lm's held-out text) or a file")
    p.add_argument("--save", help="train: folder to write one SAE per hook into (SAELens's format)")
    p.add_argument("--architecture", default="topk", help="topk (default), standard (ReLU + L1) or jumprelu")
    p.add_argument("--d-sae", type=positive_int, help="latents per SAE (default 8 x the hook's width)")
    p.add_argument("--k", type=positive_int, default=32, help="topk: latents kept per token (default 32)")
    p.add_argument("--l1-coefficient", type=positive_number, default=1.0, help="standard: the L1 penalty (default 1)")
    p.add_argument("--l0-coefficient", type=positive_number, default=0.01,
                   help="jumprelu: the L0 penalty (default 0.01)")
    p.add_argument("--training-tokens", type=positive_int, default=200_000, help="tokens per SAE (default 200,000)")
    p.add_argument("--batch-tokens", type=positive_int, default=1024, help="tokens per step (default 1024)")
    p.add_argument("--context-size", type=positive_int, help="tokens per window (default min(n_ctx, 128))")
    p.add_argument("--checkpoint", help="train: folder for checkpoints; a later run with it resumes")
    p.add_argument("--seed", type=seed_int, default=0, help="initialisation and shuffles (default 0)")
    p.add_argument("--features", default="all", help="dashboard: latents, e.g. 0-99 or 3,17,40 (default all)")
    p.add_argument("-o", "--output", dest="output", help="dashboard: the folder for index.html and the feature pages")
    p.add_argument("--no-explain", action="store_true", help="dashboard: no explanations and scores (faster)")
    p.add_argument("--prompt", help="attribute, steer: the prompt")
    p.add_argument("--answer", help="attribute: the token whose logit (minus --wrong's) is attributed")
    p.add_argument("--wrong", help="attribute: the competing token")
    p.add_argument("--corrupted", help="attribute: a prompt of the same length whose latents are the baseline "
                                       "(default zero: latent ablation)")
    p.add_argument("--exact", type=index_int, default=10, help="attribute: ablate the N strongest latents exactly too "
                                                         "(default 10; 0: none)")
    p.add_argument("--top", type=positive_int, default=10, help="attribute, steer: rows to print (default 10)")
    p.add_argument("--feature", type=index_int, help="steer: the latent whose decoder direction is added")
    p.add_argument("--alpha", type=float, default=8.0, help="steer: its multiple (default 8; negative subtracts)")
    add_quiet_option(p)


def _lines(data: str, default: str):
    from pathlib import Path

    from circuitlab.core import read_text_file
    from circuitlab.errors import InputError

    if data == default:
        return None
    path = Path(data)
    if not path.is_file():
        raise InputError(f"--data {quote(data, 300)} is neither {default!r} nor a text file; give one of them.")
    lines = [line.strip() for line in read_text_file(path, "--data file").splitlines() if line.strip()]
    if not lines:
        raise InputError(f"--data {quote(data, 300)} holds no text; give a file with one text per line.")
    return lines


def _hooks(text: str):
    parts = [h.strip() for h in text.split(",") if h.strip()]
    return [int(h) if h.lstrip("-").isdigit() else h for h in parts]


def run(args: argparse.Namespace) -> int:
    from circuitlab.errors import InputError
    from circuitlab.features.sae import shipped_saes

    if args.kind == "list":
        from circuitlab.features.sae import load_sae

        listed = []
        for name in shipped_saes():
            sae = load_sae(name)
            print(f"{name}: {sae.cfg.architecture}, d_in {sae.cfg.d_in}, d_sae {sae.cfg.d_sae}"
                  f"{f', k {sae.cfg.k}' if sae.cfg.k else ''}, {sae.cfg.model_name} {sae.cfg.hook_name}")
            listed.append({"name": name, "architecture": sae.cfg.architecture, "d_in": sae.cfg.d_in,
                           "d_sae": sae.cfg.d_sae, "k": sae.cfg.k, "model": sae.cfg.model_name,
                           "hook": sae.cfg.hook_name})
        emit(saes=listed)
        return 0
    from circuitlab import load_model

    if args.kind == "dashboard":
        return _dashboard(args)
    if args.kind in ("attribute", "steer"):
        return _feature_level(args)
    if args.kind == "train":
        if not args.hook:
            raise InputError("sae train needs --hook: hook names or layer numbers, e.g. --hook 1,2.")
        if not args.save:
            raise InputError("sae train needs --save: the folder to write the SAEs into.")
        from pathlib import Path

        from circuitlab.features.sae import save_sae
        from circuitlab.features.training import train_sae

        from circuitlab.engine.collect import check_hooks
        from circuitlab.features.sae import check_architecture

        check_architecture(args.architecture)
        data = _lines(args.data or "default", "default")
        model = load_model(args.model)
        check_hooks(model, _hooks(args.hook))  # before the corpus is read
        if data is None:
            from circuitlab.zoo import text_data

            data = text_data.real_documents()[0]
        run_ = train_sae(model, _hooks(args.hook), data, architecture=args.architecture, d_sae=args.d_sae,
                         k=args.k if args.architecture == "topk" else None, l1_coefficient=args.l1_coefficient,
                         l0_coefficient=args.l0_coefficient, training_tokens=args.training_tokens,
                         batch_tokens=args.batch_tokens, buffer_tokens=max(32_768, 2 * args.batch_tokens),
                         context_size=args.context_size, seed=args.seed, checkpoint=args.checkpoint,
                         progress=not args.quiet)
        s = run_.stats
        saved = {}
        print(f"Trained {len(run_.saes)} {args.architecture} SAE(s) on {s['train_tokens']:,} tokens each in "
              f"{s['seconds']:.1f} s ({s['tokens_per_second']:,.0f} tokens/s per SAE)")
        for hook, sae in run_.saes.items():
            folder = save_sae(sae, Path(args.save) / hook)
            saved[hook] = folder
            last = run_.history[hook][-1] if run_.history[hook] else {}
            print(f"  {hook}: {folder}  (last steps: FVU {last.get('fvu', float('nan')):.3f}, L0 "
                  f"{last.get('l0', float('nan')):.1f}, dead {last.get('dead', float('nan')):.1%})")
        emit(stats=s, saved=saved, history=run_.history)
        return 0
    if not args.sae:
        raise InputError("sae eval needs --sae: a shipped SAE's name (e.g. toy-lm/res-2) or an SAE folder.")
    from circuitlab.features.evaluation import evaluate_sae
    from circuitlab.features.sae import load_sae

    sae = load_sae(args.sae)
    texts = _lines(args.data or "heldout", "heldout")
    model = load_model(args.model)
    if texts is None:
        from pathlib import Path

        import circuitlab

        held = Path(circuitlab.__file__).parent / "zoo" / "weights" / "toy-lm" / "heldout.txt"
        texts = [t for t in held.read_text(encoding="utf-8").splitlines() if t.strip()]
    hook = _hooks(args.hook)[0] if args.hook else None
    if isinstance(hook, int):
        hook = f"blocks.{hook}.hook_resid_post"
    ev = evaluate_sae(model, sae, texts, hook_name=hook, progress=not args.quiet)
    emit(summary=ev.summary(), evaluation=ev)
    print(f"SAE {args.sae} on {model.cfg.model_name or args.model}, {ev.tokens:,} tokens:")
    for key, value in ev.summary().items():
        if key == "density_histogram":
            print("  density histogram (latents per firing frequency): "
                  + ", ".join(f"{k} {v}" for k, v in value.items()))
        else:
            print(f"  {key}: {value}")
    return 0


def parse_features(text: str):
    """``--features``: ``all``, or comma-separated latents and ranges (``0-99,200``)."""
    from circuitlab.errors import InputError

    if text.strip().lower() == "all":
        return None
    out = []
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        lo, sep, hi = part.partition("-")
        try:
            out.extend(range(int(lo), int(hi) + 1) if sep else [int(part)])
        except ValueError:
            raise InputError(f"--features {quote(text)}: use 'all' or latents and ranges such as 0-99,200.") from None
    if not out:
        raise InputError(f"--features {quote(text)}: name at least one latent, e.g. 0-99.")
    return out


def _heldout():
    """zoo/toy-lm's held-out verses, one text per line."""
    from circuitlab.zoo.toy_lm import load_heldout_text

    return [t for t in load_heldout_text().splitlines() if t.strip()]


def _dashboard(args: argparse.Namespace) -> int:
    from circuitlab.errors import InputError

    name = args.name or args.sae
    if not name:
        raise InputError("sae dashboard needs the SAE: a shipped name (e.g. toy-lm/res-2) or a folder.")
    if not args.output:
        raise InputError("sae dashboard needs -o/--output: the folder to write the dashboards into.")
    from circuitlab import load_model
    from circuitlab.features.dashboard import feature_dashboards, latent_activations
    from circuitlab.features.sae import load_sae
    from circuitlab.render.features import write_dashboards

    latents = parse_features(args.features)
    texts = _lines(args.data or "heldout", "heldout")
    sae = load_sae(name)
    model = load_model(args.model)
    texts = _heldout() if texts is None else texts
    hook = _hooks(args.hook)[0] if args.hook else None
    if isinstance(hook, int):
        hook = f"blocks.{hook}.hook_resid_post"
    acts = latent_activations(model, sae, texts, latents, hook_name=hook, progress=not args.quiet)
    dash = feature_dashboards(model, sae, texts, seed=args.seed, activations=acts)
    explained = None
    if not args.no_explain:
        from circuitlab.neurons.features import explain_features

        n = max(1, min(10, len(acts.rows) // 4))
        explained = explain_features(model, sae, texts, n_explain=n, n_top=n, n_random=n, seed=args.seed,
                                     shuffled=len(acts.latents) > 1, activations=acts, progress=not args.quiet)
    index = write_dashboards(dash, args.output, explained)
    emit(dashboards=dash, explained=explained, index=str(index))
    print(f"Wrote {len(dash.cards):,} feature dashboards of {name} ({dash.hook}, {dash.tokens:,} tokens) to {index}")
    if explained is not None:
        print(explained.summary())
    return 0


def _feature_level(args: argparse.Namespace) -> int:
    from circuitlab import load_model
    from circuitlab.errors import InputError
    from circuitlab.features.sae import load_sae

    name = args.name or args.sae
    if not name:
        raise InputError(f"sae {args.kind} needs the SAE: a shipped name (e.g. toy-lm/res-1) or a folder.")
    if not args.prompt:
        raise InputError(f"sae {args.kind} needs --prompt.")
    hook = _hooks(args.hook)[0] if args.hook else None
    if isinstance(hook, int):
        hook = f"blocks.{hook}.hook_resid_post"
    if args.kind == "steer":
        if args.feature is None:
            raise InputError("sae steer needs --feature: the latent whose decoder direction is added, e.g. 7.")
        from circuitlab.features.attribution import steer

        sae = load_sae(name)
        model = load_model(args.model)
        s = steer(model, sae, args.prompt, args.feature, args.alpha, hook_name=hook, k=args.top)
        emit(steering=s)
        print(f"Steering {quote(args.prompt)} with {args.alpha:g} x W_dec[{s.latent}] of {name} at {s.hook}: "
              f"KL(clean || steered) = {float(s.kl.values[0]):.4f} nats")
        rows = zip(s.clean_top.tokens[0], s.clean_top.values[0].tolist(), s.steered_top.tokens[0],
                   s.steered_top.values[0].tolist(), s.rises.tokens[0], s.rises.values[0].tolist(),
                   s.falls.tokens[0], s.falls.values[0].tolist())
        print(f"  {'clean':<20}{'steered':<20}{'rises (log p)':<24}falls (log p)")
        for ct, cp, st, sp, rt, rv, ft, fv in rows:
            print(f"  {ct!r:<12}{cp:6.3f}  {st!r:<12}{sp:6.3f}  {rt!r:<14}{rv:+8.3f}  {ft!r:<14}{fv:+8.3f}")
        return 0
    if not args.answer or not args.wrong:
        raise InputError("sae attribute needs --answer and --wrong: the tokens whose logit difference is attributed.")
    from circuitlab.features.attribution import latent_attribution
    from circuitlab.metrics import LogitDiff

    sae = load_sae(name)
    model = load_model(args.model)
    metric = LogitDiff(correct=args.answer, wrong=args.wrong, model=model)
    res = latent_attribution(model, sae, args.prompt, metric, corrupted=args.corrupted, hook_name=hook)
    top = res.top(max(args.top, args.exact))
    exact = {}
    if args.exact:
        ids = [i for i, _ in top[: args.exact]]
        ex = latent_attribution(model, sae, args.prompt, metric, corrupted=args.corrupted, hook_name=hook,
                                exact=ids).exact
        exact = dict(zip(ids, ex.values.tolist()))
    emit(attribution=res, exact=exact)
    print(f"Attribution of logit({args.answer!r}) - logit({args.wrong!r}) = {res.clean_metric:.4f} on "
          f"{quote(args.prompt)} to the latents of {name} (baseline: {res.baseline}):")
    print(f"  {'latent':>7} {'attribution':>12} {'exact':>10}")
    for i, v in top[: args.top]:
        e = f"{exact[i]:+10.4f}" if i in exact else ""
        print(f"  {i:>7} {v:+12.4f} {e}")
    return 0


run.arguments = arguments
command("sae", "sparse autoencoders: train on hooks, evaluate (L0, explained variance, CE loss recovered, KL), list "
               "the shipped ones, feature dashboards, attribution to latents, steering",
        json="list: saes (name, architecture, d_in, d_sae, k, model, hook); train: stats, saved (hook -> folder), "
             "history (per hook, the logged steps); eval: summary (the printed metrics), evaluation "
             "(SAEEvaluation: every metric as a Result); dashboard: dashboards (FeatureDashboards), explained "
             "(the explanations and scores, or null), index (the index page); attribute: attribution (Result per "
             "latent), exact (latent -> exact ablation effect); steer: steering (the Steering bundle)")(run)
