"""Model editing on a real model: the CounterFact-style table, edit success by layer next to causal tracing,
sequential edits, and seconds per edit (covariance cached and uncached, against a straightforward
re-implementation of the value optimisation in the same process).

Stages (each writes the JSON again when done, so a stopped run keeps what it measured):

1. **tracing**: the average indirect effect of the MLP at the last subject token, per layer, over the cases'
   facts (:func:`circuitlab.tracing.average_indirect_effect`, ``kinds="mlp"``); its peak is the edit layer;
2. **timing**: the key covariance at the peak, uncached (a fresh cache folder) and read back; ROME's value
   optimisation and update with the covariance given, against the reference loop (one forward and backward pass
   per prefixed prompt per step, as the reference code does), same settings;
3. **table**: ROME at the peak, MEMIT over the layers ending at the peak, fine-tuning (FT) the peak layer's
   ``W_out``, each on every case from the original weights (:func:`circuitlab.editing.evaluate.edit_table`);
4. **layers**: ROME at every ``--layer-step``-th layer on the first ``--layer-cases`` cases: efficacy and the
   rewrite score ``(p_new_after - p_new_before) / (1 - p_new_before)`` (Hase et al. 2023), with the tracing effect
   per fact and layer for their correlation;
5. **sequential**: ``--sequential`` ROME edits at the peak applied one after another (each computed on the
   already-edited model, the original covariance); after each, the neighbourhood score over every case's
   neighbours and the efficacy of the edits so far.

    python benchmarks/editing.py --model gemma-3-270m --cases 8 --out benchmarks/results/editing.json
"""

from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

torch.set_num_threads(1)

from circuitlab.editing import edit_table, evaluate_edit, fine_tune, key_covariance, memit, rome  # noqa: E402
from circuitlab.core import readout  # noqa: E402
from circuitlab.editing.edit import (check_request, context_prefixes, essence_rows, prefixed,  # noqa: E402
                                     rewrite_rows, subject_keys)
from circuitlab.editing.evaluate import sequence_logprobs  # noqa: E402
from circuitlab.editing.memit import PAPER_DEPTH, PAPER_SPAN  # noqa: E402
from circuitlab.models import load_model  # noqa: E402
from circuitlab.tasks.counterfact import counterfact_cases  # noqa: E402
from circuitlab.tracing import POSITION_KINDS, average_indirect_effect  # noqa: E402
from circuitlab.zoo.toy_lm import load_heldout_text  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def reference_value(model, layer, contexts, new_ids, subject, v0, steps, lr, weight_decay, kl_factor, clamp):
    """The value optimisation written plainly: per step, one forward and backward pass per prefixed prompt and one
    for the essence prompt (gradients accumulated), as the reference code loops; returns delta and seconds."""
    rows = rewrite_rows(contexts, new_ids)
    ess = essence_rows(model, subject)
    mlp = model.blocks[layer].mlp
    delta = torch.zeros(model.cfg.d_model, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=lr)
    v0n = float(v0.norm())

    def run(tokens, pos, add):
        def hook(mod, inputs, output):
            if not add:
                return output
            out = output.clone()
            out[0, pos] = out[0, pos] + delta
            return out
        h = mlp.register_forward_hook(hook)
        try:
            return model(torch.tensor([tokens]), stop_at_layer=model.cfg.n_layers)
        finally:
            h.remove()

    t0 = time.perf_counter()
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        ref = torch.log_softmax(readout(model, run(ess.tokens[0], ess.subject_last[0], False)[0, ess.read[0]]), -1)
    for _ in range(steps):
        opt.zero_grad()
        for toks, pos, where, t in zip(rows.tokens, rows.subject_last, rows.read, rows.targets):
            lp = torch.log_softmax(readout(model, run(toks, pos, True)[0, where]).float(), -1)
            (-lp[torch.arange(len(t)), torch.tensor(t)].mean() / len(rows.tokens)).backward()
        lp_e = torch.log_softmax(readout(model, run(ess.tokens[0], ess.subject_last[0], True)[0, ess.read[0]]), -1)
        kl = torch.nn.functional.kl_div(ref, lp_e, log_target=True, reduction="batchmean")
        (kl_factor * kl + weight_decay * delta.norm() ** 2 / v0n ** 2).backward()
        opt.step()
        with torch.no_grad():
            if float(delta.norm()) > clamp * v0n:
                delta.mul_(clamp * v0n / float(delta.norm()))
    for p in model.parameters():
        p.requires_grad_(True)
    return delta.detach(), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="gemma-3-270m")
    ap.add_argument("--cases", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=8000, help="covariance tokens")
    ap.add_argument("--layer-step", type=int, default=2)
    ap.add_argument("--layer-cases", type=int, default=4)
    ap.add_argument("--sequential", type=int, default=8)
    ap.add_argument("--prefixes", type=int, default=5)
    ap.add_argument("--stages", default="tracing,timing,table,layers,sequential")
    ap.add_argument("--layer", type=int, default=None, help="the layer to edit when the tracing stage is skipped")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/editing.json"))
    args = ap.parse_args()
    stages = args.stages.split(",")
    out_path = Path(args.out)
    result = json.loads(out_path.read_text()) if out_path.exists() else {}
    runs = result.setdefault("runs", {})
    run = runs.setdefault(args.model, {})
    run["settings"] = vars(args) | {"threads": torch.get_num_threads()}

    def save():
        out_path.write_text(json.dumps(result, indent=1) + "\n")

    model = load_model(args.model)
    L = model.cfg.n_layers
    if args.model == "zoo/toy-lm":  # a smoke run: the toy world's facts
        from circuitlab.models.loading import ZOO_DIR
        from circuitlab.tasks.counterfact import toy_cases
        from circuitlab.tasks.toy_world import load_world

        cases = toy_cases(model, load_world(ZOO_DIR / "toy-lm"), n=args.cases, seed=0)
    else:
        cases = counterfact_cases(model, n=args.cases, seed=0)
    heldout = [line for line in load_heldout_text().splitlines() if line.strip()][:8]
    run["cases"] = [list(c.request) + [c.fact.answer] for c in cases]
    facts = [c.fact for c in cases]
    last = POSITION_KINDS.index("last subject token")

    if "tracing" in stages:
        t0 = time.perf_counter()
        aie = average_indirect_effect(model, facts, kinds="mlp", samples=3, seed=0)
        curve = aie.values[0, last].tolist()
        per_fact = aie.meta["per_fact"][:, 0, last].tolist()  # [fact, layer]
        peak = int(torch.tensor(curve).argmax())
        run["tracing"] = {"mlp_last_subject_aie": curve, "peak": peak, "per_fact": per_fact,
                          "window": aie.meta["window"], "seconds": time.perf_counter() - t0}
        save()
        print("tracing peak", peak, [round(x, 4) for x in curve], flush=True)
    else:  # a given layer (--layer), e.g. for timing alone
        peak, per_fact = args.layer, None
    span = max(1, round(PAPER_SPAN * L / PAPER_DEPTH))
    memit_layers = list(range(max(0, peak - span + 1), peak + 1))
    covs = {}
    cache_dir = Path(tempfile.mkdtemp(prefix="circuitlab-edit-cov-"))

    def cov(layer):
        if layer not in covs:
            covs[layer] = key_covariance(model, layer, n_tokens=args.tokens, cache=cache_dir)
        return covs[layer].matrix

    if "timing" in stages:
        first = key_covariance(model, peak, n_tokens=args.tokens, cache=cache_dir)
        again = key_covariance(model, peak, n_tokens=args.tokens, cache=cache_dir)
        covs[peak] = again
        c = cases[0]
        e = rome(model, *c.request, layer=peak, covariance=again.matrix, n_prefixes=args.prefixes)
        # the reference loop, same prefixes and settings
        req, toks, sp, new_ids = check_request(model, *c.request)
        contexts = prefixed(toks, sp, context_prefixes(model, args.prefixes, 10, 0), True)
        k = subject_keys(model, peak, contexts)
        W, b = model.blocks[peak].mlp.W_out.detach().double(), model.blocks[peak].mlp.b_out.detach().double()
        v0 = k @ W + b
        hist = e.meta["optimisation"]  # as many steps as ROME took (it stops early, before a step, at NLL < 0.05)
        steps = len(hist) - 1 if hist[-1]["nll"] < 0.05 else len(hist)
        d_ref, ref_seconds = reference_value(model, peak, contexts, new_ids, req.subject, v0.float(), steps, 0.5, 0.5,
                                             0.0625, 4.0)
        run["timing"] = {"covariance_uncached_s": first.seconds, "covariance_cached_s": again.seconds,
                         "covariance_tokens": args.tokens, "rome_value_s": e.meta["seconds"]["value"],
                         "rome_update_s": e.meta["seconds"]["update"],
                         "rome_total_with_cached_cov_s": e.meta["seconds"]["value"] + e.meta["seconds"]["update"]
                         + again.seconds, "reference_value_s": ref_seconds, "value_steps": steps,
                         "delta_agreement": float((d_ref.double() - e.meta["delta"]).norm() / e.meta["delta"].norm()),
                         "peak_rss_mb": _rss_mb()}
        save()
        print("timing", run["timing"], flush=True)

    if "table" in stages:
        for l in memit_layers:
            cov(l)
        methods = {
            "ROME": lambda c: rome(model, *c.request, layer=peak, covariance=cov(peak), n_prefixes=args.prefixes),
            "MEMIT": lambda c: memit(model, [c.request], layers=memit_layers,
                                     covariances={l: cov(l) for l in memit_layers}, n_prefixes=args.prefixes),
            "FT": lambda c: fine_tune(model, [c.request], layer=peak, n_prefixes=args.prefixes),
        }
        t0 = time.perf_counter()
        table = edit_table(model, cases, methods, heldout=heldout, generate_tokens=20)
        run["table"] = {"metrics": table.labels["metric"], "methods": table.labels["method"],
                        "values": table.values.tolist(), "status": table.meta["status"],
                        "fluency_before": table.meta["fluency_before"], "per_case": table.meta["per_case"],
                        "memit_layers": memit_layers, "rome_layer": peak, "seconds": time.perf_counter() - t0}
        save()
        print("table", table.labels["metric"], table.values, table.meta["status"], flush=True)

    if "layers" in stages:
        layers = list(range(0, L, args.layer_step))
        if peak not in layers:
            layers = sorted(layers + [peak])
        rows = []
        for l in layers:
            for i, c in enumerate(cases[: args.layer_cases]):
                e = rome(model, *c.request, layer=l, covariance=cov(l), n_prefixes=args.prefixes)
                s = evaluate_edit(model, e, c, generate_tokens=2)
                rewrite = (s.p_new_after - s.p_new_before) / max(1e-12, 1 - s.p_new_before)
                rows.append({"layer": l, "case": i, "efficacy": s.efficacy, "rewrite": rewrite,
                             "paraphrase": s.paraphrase, "neighbourhood": s.neighbourhood, "status": s.status,
                             "tracing": per_fact[i][l]})
            run["layers"] = rows
            save()
            print("layer", l, [round(r["rewrite"], 3) for r in rows if r["layer"] == l], flush=True)

    if "sequential" in stages:
        seq_cases = cases[: args.sequential]
        neighbours = [(g.prompt, g.answer, c.new) for c in cases for g in c.neighbours]
        curve_rows = []
        with contextlib.ExitStack() as stack:
            for k, c in enumerate(seq_cases):
                e = rome(model, *c.request, layer=peak, covariance=cov(peak), n_prefixes=args.prefixes)
                stack.enter_context(e.applied(model))
                own = sequence_logprobs(model, [n[0] for n in neighbours], [n[1] for n in neighbours])
                new = sequence_logprobs(model, [n[0] for n in neighbours], [n[2] for n in neighbours])
                done = seq_cases[: k + 1]
                a = sequence_logprobs(model, [d.fact.prompt for d in done], [d.new for d in done])
                b = sequence_logprobs(model, [d.fact.prompt for d in done], [d.fact.answer for d in done])
                curve_rows.append({"edits": k + 1, "neighbourhood": float((own > new).double().mean()),
                                   "efficacy_so_far": float((a > b).double().mean())})
                print("sequential", curve_rows[-1], flush=True)
        with torch.no_grad():
            own = sequence_logprobs(model, [n[0] for n in neighbours], [n[1] for n in neighbours])
            new = sequence_logprobs(model, [n[0] for n in neighbours], [n[2] for n in neighbours])
        run["sequential"] = {"before": float((own > new).double().mean()), "curve": curve_rows}
        save()
    run["done"] = True
    save()


def _rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
