"""``circuitlab weights``: circuits read from the weights (Elhage et al. 2021), from the shell.

    circuitlab weights -m zoo/attn-only-2l                          # copying scores of every head (OV, K-composed)
    circuitlab weights -m zoo/attn-only-2l --head 1.2 --token t5 --token t17    # its OV and QK top tokens
    circuitlab weights -m zoo/attn-only-1l --head 0.0 --skip-trigrams -k 15
    circuitlab weights -m zoo/attn-only-1l --prompt "t3 t5 t9 t3 t5" -o weights.html   # path expansion

Without ``--head``: the copying score (``sum(lambda) / sum(|lambda|)`` of the eigenvalues) of every head's OV circuit
and, for models of two layers or more, of its K-composed QK circuit, with the fraction of tokens whose top entry is
themselves (for vocabularies up to 50,000 tokens). With ``--head``: the top ``k`` outputs of its OV circuit and the
top keys of its QK circuit for each ``--token`` (default: eight tokens spread over the vocabulary).
"""

from __future__ import annotations

import argparse

from circuitlab.cli import (add_model_option, add_out_option, add_quiet_option, command, emit, positive_int, prompt_arg,
                            requires, write_report)
from circuitlab.errors import InputError

#: largest vocabulary for which the command computes the top-1 fractions over every token
TOP1_VOCAB = 50_000


def arguments(p: argparse.ArgumentParser) -> None:
    add_model_option(p)
    p.add_argument("--head", help="one head, 'L1H2' or '1.2': its OV and QK top tokens")
    p.add_argument("--token", action="append", metavar="TOKEN",
                   help="with --head: a row to show (a single-token string, or an id for a model without a "
                        "tokenizer); repeat it for more (default: eight tokens spread over the vocabulary)")
    p.add_argument("--skip-trigrams", action="store_true", help="with --head: its top k skip-trigrams")
    p.add_argument("--prompt", help="path expansion of a one-layer attention-only model on this prompt")
    p.add_argument("-k", type=positive_int, default=10, help="tokens per row / skip-trigrams (default 10)")
    add_out_option(p)
    add_quiet_option(p)
    requires(p, "--token", "--head", "it picks the rows of that head's circuits")
    requires(p, "--skip-trigrams", "--head", "they are a head's")


def _token(model, text: str):
    if model.tokenizer is None:
        try:
            return int(text)
        except ValueError:
            raise InputError(f"--token {text!r}: this model has no tokenizer; give a token id.") from None
    return text


def run(args: argparse.Namespace) -> int:
    from circuitlab import load_model
    from circuitlab.core import head_label, parse_head
    from circuitlab.weights import copying_scores, ov_circuit, path_expansion, qk_circuit, skip_trigrams

    model = load_model(args.model)
    cfg = model.cfg
    items: list = []
    if args.prompt is not None:
        pe = path_expansion(model, prompt_arg(model, args.prompt), k=1000)
        print(f"path expansion ({len(pe.terms.labels['term'])} terms): max |sum of terms - logits| = "
              f"{pe.max_error:.2e}")
        for name, v in zip(pe.explained.labels["approximation"], pe.explained.values.tolist()):
            print(f"  share of the centred logits explained by {name}: {v:.3f}")
        items.append(pe)
        emit(path_expansion=pe)
    if args.head is not None:
        hd = parse_head(model, args.head, "--head")
        if args.token:
            rows = [_token(model, t) for t in args.token]
        else:
            rows = sorted({int(i * (cfg.d_vocab - 1) / 7) for i in range(8)})
        ov = ov_circuit(model, hd, tokens=rows, k=args.k)
        qk = qk_circuit(model, hd, tokens=rows, k=args.k)
        print(f"{head_label(hd)} OV circuit: tokens raised most when attending to each source token")
        for label, toks in zip(ov.labels["source"], ov.tokens):
            print(f"  {label!r:>14} -> {toks}")
        print(f"{head_label(hd)} QK circuit: keys each query token scores highest")
        for label, toks in zip(qk.labels["query"], qk.tokens):
            print(f"  {label!r:>14} -> {toks}")
        items += [ov, qk]
        emit(ov=ov, qk=qk)
        if args.skip_trigrams:
            tri = skip_trigrams(model, hd, k=args.k)
            print(f"{head_label(hd)} skip-trigrams (source ... destination -> output):")
            for label, v in zip(tri.scores.labels["rank"], tri.scores.values.tolist()):
                print(f"  {v:9.3f}  {label}")
            items.append(tri)
            emit(skip_trigrams=tri)
    elif args.prompt is None:
        top1 = cfg.d_vocab <= TOP1_VOCAB
        ov = copying_scores(model, path="ov", self_top1=top1)
        kc = copying_scores(model, path="k_composed", self_top1=top1) if cfg.n_layers > 1 else None
        extra = "" if top1 else f" (top-1 fractions skipped: d_vocab > {TOP1_VOCAB:,})"
        print(f"copying scores sum(lambda)/sum(|lambda|){extra}:")
        print(f"  {'head':>6}  {'OV':>7}  {'OV top-1':>8}" + (f"  {'K-comp':>7}  {'K top-1':>8}" if kc else ""))
        for i, hd in enumerate(ov.heads):
            line = f"  {head_label(hd):>6}  {float(ov.copying.values[i]):+7.3f}"
            line += f"  {float(ov.self_top1.values[i]):8.3f}" if top1 else f"  {'':>8}"
            if kc is not None:
                if hd in kc.heads:
                    j = kc.heads.index(hd)
                    line += f"  {float(kc.copying.values[j]):+7.3f}"
                    line += f"  {float(kc.self_top1.values[j]):8.3f}" if top1 else ""
            print(line)
        items += [ov] + ([kc] if kc else [])
        emit(copying_ov=ov, **({"copying_k_composed": kc} if kc else {}))
    write_report(items, args.out, title=f"Circuits from the weights: {cfg.model_name or args.model}")
    return 0


run.arguments = arguments
command("weights", "circuits from the weights: OV/QK top tokens, copying scores, skip-trigrams, path expansion",
        json="path_expansion (with --prompt: the terms, max_error, the share each approximation explains); ov, qk "
             "(TopTokens per source / query token, with --head), skip_trigrams (with --skip-trigrams); with "
             "neither: copying_ov and copying_k_composed (copying scores per head)")(run)
