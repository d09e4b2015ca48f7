"""SAE training throughput: circuitlab's trainer against SAELens's, same model, hook, width, k and token budget.

    nice -n 10 python benchmarks/saes.py [--tokens 65536] [--out benchmarks/results/saes.json]

Both train a TopK SAE (1,024 latents, k = 16) on ``zoo/toy-lm``'s ``blocks.2.hook_resid_post`` for the same number
of tokens (activation generation included: each runs the model itself) in this one process, on one thread,
from the same token windows (128 tokens, BOS first; the corpus the model was trained on, Debian's KJV and
fortunes). SAELens gets the already-loaded model (``override_model``) and the windows as a pre-tokenized dataset
(``override_dataset``), so it runs offline; no wandb, no evaluation batches, no checkpoints. Then both SAEs are
evaluated with :func:`circuitlab.features.evaluation.evaluate_sae` on the held-out books (``heldout.txt``): L0 and
explained variance side by side.

    python benchmarks/saes.py --interop toy-lm/res-0 toy-lm/res-1 toy-lm/res-2 toy-lm/res-3 \
        --out benchmarks/results/saes_interop.json

The interop round trip on shipped SAEs: circuitlab -> SAELens (``save_sae``, then ``sae_lens.SAE.load_from_disk``)
and back (SAELens's ``save_model``, then ``load_sae``), the max |difference| of the latents and reconstructions
on 4,096 held-out activations of the SAE's hook.

    python benchmarks/saes.py --dashboards 1000 --out benchmarks/results/saes_dashboards.json

Dashboard generation for 1,000 features of ``toy-lm/res-2`` on the held-out books (``heldout.txt``, 204 verses,
7,347 tokens), in its steps: the one pass (:func:`~circuitlab.features.dashboard.latent_activations`), the cards
(:func:`~circuitlab.features.dashboard.feature_dashboards` from that pass), the n-gram baseline explanations and
scores (:func:`~circuitlab.neurons.features.explain_features`, with the shuffled control) and the HTML
(:func:`~circuitlab.render.features.write_dashboards`), each timed on one thread, with the bytes written.

The throughput run reports tokens/s, seconds, and how much each training raised the process's peak
RSS (``ru_maxrss``, read before evaluation; the second run's figure is a lower bound, as the first's peak
already counts).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import torch


def rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def interop(names: list[str]) -> dict:
    import tempfile

    import sae_lens

    import circuitlab as cl
    from circuitlab.features import load_sae, save_sae
    from circuitlab.features.training import activation_sample

    model = cl.load_model("zoo/toy-lm")
    held = [t for t in (Path(cl.__file__).parent / "zoo" / "weights" / "toy-lm" / "heldout.txt").read_text()
            .splitlines() if t.strip()]
    out = {"sae_lens_version": sae_lens.__version__}
    for name in names:
        ours = load_sae(name)
        x = activation_sample(model, [ours.cfg.hook_name], held, 4096)[ours.cfg.hook_name]
        tmp = Path(tempfile.mkdtemp())
        save_sae(ours, tmp / "a")
        theirs = sae_lens.SAE.load_from_disk(str(tmp / "a"))
        with torch.no_grad():
            to_theirs = float((theirs.encode(x) - ours.encode(x)).abs().max())
            recon = float((theirs(x) - ours(x)).abs().max())
            theirs.save_model(tmp / "b")
            back = load_sae(tmp / "b")
            to_ours = float((back.encode(x) - theirs.encode(x)).abs().max())
            scale = float(ours.encode(x).abs().max())
        out[name] = {"tokens": x.shape[0], "circuitlab_to_saelens_max_abs_diff_latents": to_theirs,
                     "circuitlab_to_saelens_max_abs_diff_reconstruction": recon,
                     "saelens_to_circuitlab_max_abs_diff_latents": to_ours, "largest_latent": scale}
    return out


def dashboards(n: int) -> dict:
    import tempfile

    import circuitlab as cl
    from circuitlab.features.dashboard import feature_dashboards, latent_activations
    from circuitlab.neurons.features import explain_features
    from circuitlab.render.features import write_dashboards

    model = cl.load_model("zoo/toy-lm")
    held = [t for t in (Path(cl.__file__).parent / "zoo" / "weights" / "toy-lm" / "heldout.txt").read_text()
            .splitlines() if t.strip()]
    name = "toy-lm/res-2"
    latents = list(range(n))
    times = {}
    t0 = time.perf_counter()
    acts = latent_activations(model, name, held, latents)
    times["pass_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    dash = feature_dashboards(model, name, held, activations=acts)
    times["cards_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    expl = explain_features(model, name, held, activations=acts)
    times["explain_seconds"] = time.perf_counter() - t0
    folder = Path(tempfile.mkdtemp(prefix="circuitlab-dash-bench-"))
    t0 = time.perf_counter()
    write_dashboards(dash, folder, expl)
    times["html_seconds"] = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in folder.iterdir())
    d = expl.distribution()
    return {"sae": name, "features": n, "texts": len(held), "tokens": dash.tokens, "threads": 1,
            **{k: round(v, 2) for k, v in times.items()}, "total_seconds": round(sum(times.values()), 2),
            "html_bytes": size, "files": len(list(folder.iterdir())), "peak_rss_bytes": rss(),
            "explanation_score_mean": round(d["mean"], 4), "explanation_score_median": round(d["median"], 4),
            "shuffled_mean": round(expl.distribution("shuffled")["mean"], 4),
            "machine": platform.machine(), "python": sys.version.split()[0], "torch": torch.__version__}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--tokens", type=int, default=65_536)
    p.add_argument("--interop", nargs="+", help="shipped SAE names: the round trip with SAELens instead")
    p.add_argument("--dashboards", type=int, help="time dashboard generation for this many features instead")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "saes.json"))
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.dashboards:
        res = dashboards(args.dashboards)
        print(json.dumps(res, indent=1))
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
        return
    if args.interop:
        res = interop(args.interop)
        print(json.dumps(res, indent=1))
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
        return

    import circuitlab as cl
    from circuitlab.features.evaluation import evaluate_sae
    from circuitlab.features.sae import load_sae
    from circuitlab.core import row_bytes
    from circuitlab.features.training import bos_id, token_stream, train_sae, windows
    from circuitlab.zoo import text_data

    model = cl.load_model("zoo/toy-lm")
    hook, d_sae, k, context, batch = "blocks.2.hook_resid_post", 1024, 16, 128, 1024
    docs = text_data.real_documents(max_chars=4 * args.tokens * 2)[0]
    rows = windows(token_stream(model, docs), context, bos_id(model))
    n_rows = -(-args.tokens // (context - 1)) + 8
    rows = rows[:n_rows]
    held = [t for t in (Path(cl.__file__).parent / "zoo" / "weights" / "toy-lm" / "heldout.txt").read_text()
            .splitlines() if t.strip()]
    out = {"model": "zoo/toy-lm", "hook": hook, "d_sae": d_sae, "k": k, "context_size": context,
           "batch_tokens": batch, "training_tokens": args.tokens, "threads": 1, "python": sys.version.split()[0],
           "machine": platform.machine(), "note": "2 CPU cores shared with other jobs: compare the two runs, "
                                                  "not absolute rates"}

    # circuitlab
    base = rss()
    t0 = time.perf_counter()
    ours = train_sae(model, hook, rows, architecture="topk", d_sae=d_sae, k=k, training_tokens=args.tokens,
                     batch_tokens=batch, buffer_tokens=32_768, context_size=context, seed=0,
                     max_memory=32 * row_bytes(model, context))  # 32 windows per forward pass, as SAELens's store
    sec = time.perf_counter() - t0
    grew = rss() - base  # before any evaluation (its logits would dominate the peak)
    ev = evaluate_sae(model, ours.saes[hook], held)
    out["circuitlab"] = {"seconds": round(sec, 2), "tokens": ours.stats["train_tokens"],
                         "tokens_per_second": round(ours.stats["train_tokens"] / sec),
                         "peak_rss_increase_bytes": grew, "heldout_l0": round(ev.l0, 2),
                         "heldout_explained_variance": round(ev.explained_variance, 4),
                         "heldout_ce_loss_recovered_zero": round(ev.ce_loss_recovered_zero, 4)}
    print(json.dumps(out["circuitlab"]), flush=True)

    # SAELens
    try:
        import tempfile

        import sae_lens
        from datasets import Dataset
        from sae_lens import LanguageModelSAERunnerConfig, LanguageModelSAETrainingRunner, LoggingConfig
        from sae_lens import TopKTrainingSAEConfig

        out["sae_lens_version"] = sae_lens.__version__
        ds = Dataset.from_dict({"input_ids": rows.tolist()})
        tmp = tempfile.mkdtemp(prefix="saelens-bench-")
        cfg = LanguageModelSAERunnerConfig(
            sae=TopKTrainingSAEConfig(d_in=model.cfg.d_model, d_sae=d_sae, k=k), model_name="toy-lm",
            hook_name=hook, dataset_path="pretokenized", is_dataset_tokenized=True, streaming=False,
            context_size=context, training_tokens=args.tokens, train_batch_size_tokens=batch,
            n_batches_in_buffer=max(2, 32_768 // (32 * context)), store_batch_size_prompts=32, device="cpu",
            seed=0, lr=2e-4 / (d_sae / 2**14) ** 0.5, logger=LoggingConfig(log_to_wandb=False), n_checkpoints=0,
            checkpoint_path=tmp, output_path=tmp, save_final_checkpoint=False, n_eval_batches=0,
            n_batches_for_norm_estimate=4, verbose=False, exclude_special_tokens=True)
        base = rss()
        t0 = time.perf_counter()
        runner = LanguageModelSAETrainingRunner(cfg, override_dataset=ds, override_model=model)
        sae = runner.run()
        sec = time.perf_counter() - t0
        grew = rss() - base
        folder = Path(tmp) / "final"
        sae.save_model(folder)
        theirs = load_sae(folder)
        ev = evaluate_sae(model, theirs, held)
        out["sae_lens"] = {"seconds": round(sec, 2), "tokens": args.tokens,
                           "tokens_per_second": round(args.tokens / sec), "peak_rss_increase_bytes": grew,
                           "heldout_l0": round(ev.l0, 2), "heldout_explained_variance": round(ev.explained_variance, 4),
                           "heldout_ce_loss_recovered_zero": round(ev.ce_loss_recovered_zero, 4)}
        out["throughput_ratio"] = round(out["circuitlab"]["tokens_per_second"] / out["sae_lens"]["tokens_per_second"],
                                        2)
    except Exception as exc:  # record why SAELens did not run rather than lose the circuitlab figures
        out["sae_lens_error"] = f"{type(exc).__name__}: {str(exc)[:500]}"
    print(json.dumps({k: v for k, v in out.items() if k in ("sae_lens", "sae_lens_error", "throughput_ratio")}))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
