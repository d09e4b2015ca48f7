"""Circuit discovery: circuitlab's EAP (and ACDC, when present) against auto-circuit's, in one process.

Same prompts for both libraries: 16 clean/corrupted pairs of 16 random tokens (the corrupted prompt redraws
every other position and the last one), one correct and one wrong answer token per prompt, metric the mean
logit difference at the last position (auto-circuit's ``answer_function="avg_diff"``, ``slice_output="last_seq"``).
Models: ``zoo/attn-only-2l`` (81 edges), a random 2-layer attention-only model of d_model 512 (8 heads,
TransformerLens's attn-only-2l shape: 257 edges) and ``circuitlab.testing.gpt2_small_shaped()`` (32,491 edges).

Measured per model: seconds (the best of ``--repeats`` runs after two warm-up runs; for auto-circuit on the
GPT-2-small shape, one run after one warm-up; auto-circuit's graph wrapping,
``patchable_model``, is done once outside the timing, as its users do), the ratio auto-circuit / circuitlab, peak
memory, and the agreement of the scores: the largest absolute difference between circuitlab's EAP score and
auto-circuit's for the same edge (names mapped as in :mod:`circuitlab.circuits.graph`; auto-circuit's scores have
the opposite sign, ``grad(-metric) . (corrupted - clean)``, so ours are compared with minus theirs; the sign that
matches is measured, not assumed, and recorded). auto-circuit's fast EAP (``mask_gradient_prune_scores`` with
``grad_function="logit"``, ``mask_val=0``) is timed; its slow reference EAP
(``edge_attribution_patching_prune_scores``) is compared too on the small models.

**Peak memory** is the process's resident set size (``/proc/self/statm``, sampled every 2 ms by a thread) during a
call, minus its size when the call began: it sees torch's allocations (``tracemalloc`` is blind to them), but not
memory freed and reused within one sample, so it is a lower bound on the true peak.

auto-circuit is imported only with ``--with-auto-circuit`` and when importable: install it into a separate
virtual environment (it pulls jax and kaleido, ~600 MB), never into circuitlab's::

    python3 -m venv /tmp/acvenv
    /tmp/acvenv/bin/pip install torch==2.13.0+cpu transformer-lens==3.9.0 auto-circuit==1.0.1 attrs
    /tmp/acvenv/bin/pip install --no-deps -e .
    /tmp/acvenv/bin/python benchmarks/circuits.py --with-auto-circuit

On TransformerLens 3.x auto-circuit needs an import shim (``transformer_lens.past_key_value_caching`` is gone;
its cache class is now ``TransformerLensKeyValueCache``): :func:`shim_auto_circuit` installs it before the
import. Without auto-circuit the benchmark times circuitlab alone and says so. Writes
``benchmarks/results/circuits.json``.

The ACDC section times ``circuitlab.circuits.acdc`` (if present) against auto-circuit's ``acdc_prune_scores`` at
threshold 1e-3 (KL divergence, the paper's metric) on ``zoo/attn-only-2l`` (one run after one warm-up run each),
on the EAP prompts and on repeated-token induction prompts, and compares the edges kept. ACDC's greedy result
depends on the order edges are visited in; auto-circuit's order within a layer follows Python's string hashing
(``PYTHONHASHSEED``), so where the circuits differ the benchmark replays auto-circuit's order with circuitlab's exact
edge patching, one edge at a time, and records whether that gives auto-circuit's circuit.
"""

from __future__ import annotations

import os

os.environ.setdefault("TQDM_DISABLE", "1")

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

import circuitlab  # noqa: E402
from circuitlab.circuits import Graph, eap  # noqa: E402
from circuitlab.metrics import LogitDiff  # noqa: E402
from circuitlab.testing import gpt2_small_shaped  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "circuits.json"
BATCH, SEQ = 16, 16


# -- models and prompts --------------------------------------------------------------------------------------

def attn_only_512(seed: int = 0):
    """A random 2-layer attention-only model of TransformerLens's attn-only-2l shape (257 edges)."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(n_layers=2, d_model=512, n_heads=8, d_head=64, d_vocab=48262, n_ctx=2048,
                                  attn_only=True, act_fn="solu_ln", normalization_type="LN",
                                  positional_embedding_type="shortformer", seed=seed, device="cpu",
                                  model_name="random-attn-only-2l-512")
    return HookedTransformer(cfg).eval()


MODELS = {
    "zoo/attn-only-2l": lambda: circuitlab.load_model("zoo/attn-only-2l"),
    "random attn-only 2L d_model 512": attn_only_512,
    "gpt2-small shape (random)": gpt2_small_shaped,
}


def prompts(model, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    vocab = model.cfg.d_vocab
    clean = torch.randint(1, vocab, (BATCH, SEQ), generator=gen)
    corrupted = clean.clone()
    corrupted[:, 1::2] = torch.randint(1, vocab, (BATCH, SEQ // 2), generator=gen)
    corrupted[:, -1] = torch.randint(1, vocab, (BATCH,), generator=gen)
    answers = torch.randint(1, vocab, (BATCH,), generator=gen)
    wrong = (answers + 1 + torch.randint(0, vocab - 2, (BATCH,), generator=gen)) % vocab
    return clean, corrupted, answers, wrong


# -- measuring ------------------------------------------------------------------------------------------------

def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(fn, repeats: int, warmups: int = 2):
    """``(result, best seconds, peak RSS increase in MB)`` of ``fn()`` after ``warmups`` calls (on this machine the
    first two or three calls of a new shape run several times slower than later ones, in both libraries)."""
    for _ in range(warmups):
        fn()
    best, peak_mb, out = float("inf"), 0.0, None
    for _ in range(repeats):
        start_rss, peak, stop = _rss(), [0], threading.Event()

        def sample():
            while not stop.is_set():
                peak[0] = max(peak[0], _rss())
                time.sleep(0.002)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        t0 = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - t0
        stop.set()
        thread.join()
        best = min(best, seconds)
        peak_mb = max(peak_mb, (max(peak[0], _rss()) - start_rss) / 2**20)
    return out, best, peak_mb


# -- auto-circuit -----------------------------------------------------------------------------------------------

def shim_auto_circuit() -> None:
    """Let auto-circuit 1.0.1 import on TransformerLens 3.x: it imports ``HookedTransformerKeyValueCache`` from
    ``transformer_lens`` and ``transformer_lens.past_key_value_caching``, both gone (the class is now
    ``TransformerLensKeyValueCache``; auto-circuit only uses it in annotations and for its optional KV cache)."""
    import transformer_lens

    cache_cls = getattr(transformer_lens, "TransformerLensKeyValueCache", object)
    if not hasattr(transformer_lens, "HookedTransformerKeyValueCache"):
        transformer_lens.HookedTransformerKeyValueCache = cache_cls
    if "transformer_lens.past_key_value_caching" not in sys.modules:
        module = types.ModuleType("transformer_lens.past_key_value_caching")
        module.HookedTransformerKeyValueCache = cache_cls
        sys.modules["transformer_lens.past_key_value_caching"] = module


def auto_circuit_available() -> str:
    """``""`` if auto-circuit imports (with the shim), else why not."""
    try:
        shim_auto_circuit()
        import auto_circuit.prune_algos.mask_gradient  # noqa: F401
        import auto_circuit.utils.graph_utils  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means: run circuitlab alone
        return f"{type(exc).__name__}: {exc}"
    return ""


def ac_setup(model, clean, corrupted, answers, wrong):
    """auto-circuit's patchable copy of ``model`` and a dataloader of the same prompts (one batch)."""
    from auto_circuit.data import PromptDataLoader, PromptDataset
    from auto_circuit.utils.graph_utils import patchable_model

    m = copy.deepcopy(model)
    m.cfg.use_attn_result = True
    m.cfg.use_attn_in = True
    m.cfg.use_split_qkv_input = True
    m.cfg.use_hook_mlp_in = not m.cfg.attn_only
    m.setup()
    for p in m.parameters():
        p.requires_grad = False
    dataset = PromptDataset(clean, corrupted, [a.reshape(1) for a in answers], [w.reshape(1) for w in wrong])
    loader = PromptDataLoader(dataset, seq_len=None, diverge_idx=0, batch_size=len(clean), shuffle=False)
    pm = patchable_model(m, factorized=True, slice_output="last_seq", separate_qkv=True, device=torch.device("cpu"))
    return pm, loader


def ac_name(node_name: str) -> str:
    """auto-circuit's node name -> circuitlab's (see circuitlab.circuits.graph)."""
    if node_name == "Resid Start":
        return "embed"
    if node_name == "Resid End":
        return "logits"
    if node_name.startswith("MLP "):
        return "MLP" + node_name.split()[1]
    head = node_name[1:].split(".")  # A1.2 or A1.2.Q
    label = f"L{head[0]}H{head[1]}"
    return label + (f".{head[2].lower()}" if len(head) == 3 else "")


def ac_scores(pm, prune_scores) -> dict:
    return {(ac_name(e.src.name), ac_name(e.dest.name)): float(prune_scores[e.dest.module_name][e.patch_idx])
            for e in pm.edges}


def agreement(ours, theirs: dict) -> dict:
    """Largest |ours - sign * theirs| over edges, for the sign that matches better; and the scale."""
    mine = dict(zip(ours.edges, ours.scores))
    assert set(mine) == set(theirs), "the two graphs differ"
    out = {}
    for sign in (-1, 1):
        out[sign] = max(abs(mine[e] - sign * theirs[e]) for e in mine)
    sign = min(out, key=out.get)
    return {"max_abs_difference": out[sign], "sign_of_auto_circuit": sign,
            "max_abs_score": max(abs(v) for v in mine.values()),
            "max_abs_difference_other_sign": out[-sign]}


# -- the benchmark ----------------------------------------------------------------------------------------------

def bench_model(name: str, with_ac: bool, repeats: int) -> dict:
    model = MODELS[name]()
    graph = Graph.from_model(model)
    clean, corrupted, answers, wrong = prompts(model)
    metric = LogitDiff(answers, wrong)
    row = {"model": name, "edges": graph.n_edges, "batch": BATCH, "seq_len": SEQ}
    ours, seconds, mem = measure(lambda: eap(model, clean, corrupted, metric), repeats)
    row["circuitlab_eap_s"], row["circuitlab_eap_peak_mb"] = seconds, mem
    print(f"{name}: {graph.n_edges} edges; circuitlab EAP {seconds:.3f} s, peak +{mem:.0f} MB", flush=True)
    if not with_ac:
        return row
    from auto_circuit.prune_algos.edge_attribution_patching import edge_attribution_patching_prune_scores
    from auto_circuit.prune_algos.mask_gradient import mask_gradient_prune_scores

    pm, loader = ac_setup(model, clean, corrupted, answers, wrong)
    big = graph.n_edges >= 10_000  # auto-circuit takes over a minute a call here: one warm-up, one timed call
    fast, seconds, mem = measure(lambda: mask_gradient_prune_scores(
        pm, loader, None, grad_function="logit", answer_function="avg_diff", mask_val=0.0),
        1 if big else repeats, 1 if big else 2)
    row["auto_circuit_eap_s"], row["auto_circuit_eap_peak_mb"] = seconds, mem
    row["speedup"] = seconds / row["circuitlab_eap_s"]
    row["agreement_fast"] = agreement(ours, ac_scores(pm, fast))
    print(f"  auto-circuit EAP {seconds:.3f} s, peak +{mem:.0f} MB: {row['speedup']:.1f}x; max |difference| "
          f"{row['agreement_fast']['max_abs_difference']:.2e} (scores up to "
          f"{row['agreement_fast']['max_abs_score']:.3g}; auto-circuit sign {row['agreement_fast']['sign_of_auto_circuit']:+d})",
          flush=True)
    if graph.n_edges < 10_000:
        t0 = time.perf_counter()
        slow = edge_attribution_patching_prune_scores(pm, loader, None)
        row["auto_circuit_reference_eap_s"] = time.perf_counter() - t0
        row["agreement_reference"] = agreement(ours, ac_scores(pm, slow))
        print(f"  auto-circuit reference EAP {row['auto_circuit_reference_eap_s']:.2f} s; max |difference| "
              f"{row['agreement_reference']['max_abs_difference']:.2e}", flush=True)
    return row


def bench_acdc(with_ac: bool, task: str = "random", threshold: float = 1e-3) -> dict:
    """ACDC on zoo/attn-only-2l: ``task="random"`` on the EAP prompts, ``"induction"`` on
    :func:`circuitlab.circuits.reference.induction_task`'s repeated sequences (16 x 25 tokens; the answers
    auto-circuit's data loader wants are the next token and the corrupted prompt's, unused by KL)."""
    row: dict = {"model": "zoo/attn-only-2l", "task": task, "threshold": threshold, "metric": "kl_div"}
    try:
        from circuitlab.circuits.acdc import acdc
    except ImportError:
        row["circuitlab"] = "circuitlab.circuits.acdc is not available in this checkout"
        print(f"ACDC: {row['circuitlab']}")
        acdc = None
    model = MODELS["zoo/attn-only-2l"]()
    if task == "induction":
        from circuitlab.circuits.reference import induction_task

        clean, corrupted, _ = induction_task(model)
        answers, wrong = clean[:, -1], corrupted[:, -1]
    else:
        clean, corrupted, answers, wrong = prompts(model)
    ours = None
    if acdc is not None:
        ours, row["circuitlab_s"], row["circuitlab_peak_mb"] = measure(
            lambda: acdc(model, clean, corrupted, threshold=threshold), 1, 1)
        row["circuitlab_edges"] = len(ours)
        print(f"ACDC zoo/attn-only-2l, {task} prompts, threshold {threshold:g}: circuitlab {row['circuitlab_s']:.2f} s, "
              f"{len(ours)} edges kept", flush=True)
    if with_ac:
        from auto_circuit.prune_algos.ACDC import acdc_prune_scores

        pm, loader = ac_setup(model, clean, corrupted, answers, wrong)
        exp = round(__import__("math").log10(threshold))
        scores, row["auto_circuit_s"], row["auto_circuit_peak_mb"] = measure(
            lambda: acdc_prune_scores(pm, loader, None, tao_exps=[exp], tao_bases=[round(threshold / 10 ** exp)]),
            1, 1)
        if task == "random":  # the estimator used for the GPT-2-small shape, checked against a full run
            row["auto_circuit_estimate_s"] = estimate_auto_circuit_acdc(pm, clean, corrupted)["seconds"]
        by_edge = ac_scores(pm, scores)
        # auto-circuit scores an edge pruned at tau with that tau's rank and a kept edge with inf
        kept = {e for e, s in by_edge.items() if s == float("inf")}
        row["auto_circuit_edges"] = len(kept)
        print(f"  auto-circuit {row['auto_circuit_s']:.2f} s, {len(kept)} edges kept", flush=True)
        if ours is not None:
            mine = set(ours.edges)
            row["speedup"] = row["auto_circuit_s"] / row["circuitlab_s"]
            row["same_circuit"] = mine == kept
            row["only_circuitlab"] = sorted(f"{s} -> {r}" for s, r in mine - kept)
            row["only_auto_circuit"] = sorted(f"{s} -> {r}" for s, r in kept - mine)
            print(f"  {row['speedup']:.1f}x; same circuit: {row['same_circuit']} "
                  f"({len(row['only_circuitlab'])} only ours, {len(row['only_auto_circuit'])} only theirs)")
            if not row["same_circuit"]:
                row["replay_in_auto_circuit_order"] = replay_order(model, clean, corrupted, threshold, pm, kept)
                print(f"  replaying auto-circuit's edge order one edge at a time with circuitlab's patch_edges: "
                      f"{row['replay_in_auto_circuit_order']}")
    return row


def bench_acdc_large(name: str, with_ac: bool, threshold: float = 1e-3) -> dict:
    """ACDC on a larger model, on the EAP prompts: circuitlab's full run (one run, no warm-up), and auto-circuit's.

    auto-circuit's ACDC runs one patched forward pass per edge, from the receiver's layer on, every edge of the
    graph (it does not skip pruned components). On the d_model-512 model it is run in full. On the GPT-2-small
    shape (about 11 hours) it is *estimated* from its own parts, measured here: the time of auto-circuit's patched
    forward pass from each layer (``model(resid_pre[l], start_at_layer=l, ...)`` in its ``patch_mode``, exactly the
    call its ACDC loop makes per edge, plus the KL), times the number of edges whose receiver is in that layer."""
    from circuitlab.circuits.acdc import acdc

    model = MODELS[name]()
    clean, corrupted, answers, wrong = prompts(model)
    row: dict = {"model": name, "task": "random", "threshold": threshold, "metric": "kl_div",
                 "edges": Graph.from_model(model).n_edges, "load_average_at_start": os.getloadavg()}
    ours, row["circuitlab_s"], row["circuitlab_peak_mb"] = measure(
        lambda: acdc(model, clean, corrupted, threshold=threshold), 1, 0)
    row["circuitlab_edges"] = len(ours)
    row.update({k: ours.meta[k] for k in ("passes", "runs", "decisions", "skipped")})
    row["load_average_at_end"] = os.getloadavg()
    print(f"ACDC {name}, threshold {threshold:g}: circuitlab {row['circuitlab_s']:.1f} s, {len(ours)} edges kept; "
          f"{ours.meta['runs']} patched runs in {ours.meta['passes']} passes, {ours.meta['skipped']} of "
          f"{ours.meta['decisions']} decisions on dead components", flush=True)
    if not with_ac:
        return row
    pm, loader = ac_setup(model, clean, corrupted, answers, wrong)
    if row["edges"] < 10_000:
        from auto_circuit.prune_algos.ACDC import acdc_prune_scores

        exp = round(__import__("math").log10(threshold))
        scores, row["auto_circuit_s"], row["auto_circuit_peak_mb"] = measure(
            lambda: acdc_prune_scores(pm, loader, None, tao_exps=[exp], tao_bases=[round(threshold / 10 ** exp)]),
            1, 0)
        kept = {e for e, v in ac_scores(pm, scores).items() if v == float("inf")}
        row["auto_circuit_edges"] = len(kept)
        row["same_circuit"] = set(ours.edges) == kept
        if not row["same_circuit"]:
            row["only_circuitlab"] = sorted(f"{s} -> {r}" for s, r in set(ours.edges) - kept)
            row["only_auto_circuit"] = sorted(f"{s} -> {r}" for s, r in kept - set(ours.edges))
    else:
        row["auto_circuit_estimate"] = estimate_auto_circuit_acdc(pm, clean, corrupted)
        row["auto_circuit_s"] = row["auto_circuit_estimate"]["seconds"]
        row["auto_circuit_is_estimate"] = True
    row["speedup"] = row["auto_circuit_s"] / row["circuitlab_s"]
    print(f"  auto-circuit {row['auto_circuit_s']:.0f} s{' (estimated)' if row.get('auto_circuit_is_estimate') else ''}"
          f": {row['speedup']:.1f}x" + (f"; same circuit: {row['same_circuit']}" if "same_circuit" in row else ""),
          flush=True)
    return row


def estimate_auto_circuit_acdc(pm, clean, corrupted, repeats: int = 3) -> dict:
    """auto-circuit's ACDC time on this graph: its per-edge call (a patched forward from the receiver's layer and the
    KL), timed per layer (best of ``repeats``), times the edges whose receiver is in that layer."""
    from collections import Counter

    from auto_circuit.utils.ablation_activations import src_ablations
    from auto_circuit.utils.graph_utils import patch_mode, set_all_masks
    from auto_circuit.utils.tensor_ops import multibatch_kl_div

    model = pm
    patch_outs, src_outs = src_ablations(model, corrupted), src_ablations(model, clean)
    with torch.inference_mode():
        clean_logprobs = torch.log_softmax(model(clean)[model.out_slice], dim=-1)
        _, toks, short_embd, attn_mask = model.input_to_embed(clean)
        _, cache = model.run_with_cache(clean)
        resids = [cache[f"blocks.{i}.hook_resid_pre"].clone() for i in range(model.cfg.n_layers)]
        del cache
    per_layer = Counter(int(e.dest.module_name.split(".")[1]) for e in model.edges)
    seconds_per_edge = {}
    set_all_masks(model, val=0.0)
    with patch_mode(model, patch_outs, curr_src_outs=src_outs), torch.inference_mode():
        for layer in sorted(per_layer):
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                out = model(resids[layer], start_at_layer=layer, tokens=toks, shortformer_pos_embed=short_embd,
                            attention_mask=attn_mask)[model.out_slice]
                multibatch_kl_div(torch.log_softmax(out, dim=-1), clean_logprobs).item()
                best = min(best, time.perf_counter() - t0)
            seconds_per_edge[layer] = best
    total = sum(per_layer[layer] * seconds_per_edge[layer] for layer in per_layer)
    print("  auto-circuit per-edge seconds by receiver layer: "
          + ", ".join(f"{layer}: {seconds_per_edge[layer]:.3f}" for layer in sorted(per_layer)), flush=True)
    return {"seconds": total, "seconds_per_edge_by_layer": seconds_per_edge,
            "edges_by_layer": dict(per_layer), "method": estimate_auto_circuit_acdc.__doc__.split("\n\n")[0]}


def replay_order(model, clean, corrupted, threshold: float, pm, kept: set) -> dict:
    """ACDC one edge at a time in auto-circuit's own visiting order, with circuitlab's exact edge patching.

    auto-circuit sorts its edges by receiver layer only (a stable sort of ``model.edges``, a Python ``set`` of
    edges hashed by their names), so the order within a layer, and with it the greedy result, changes with
    ``PYTHONHASHSEED``. This replays that order: when the replay keeps auto-circuit's edges, the two circuits differ
    by the visiting order alone, not by the numbers."""
    from circuitlab.circuits import patch_edges

    order = [(ac_name(e.src.name), ac_name(e.dest.name)) for e in sorted(pm.edges, key=lambda x: x.dest.layer,
                                                                         reverse=True)]
    removed: list = []
    current = float(patch_edges(model, clean, corrupted, [removed])[0])
    for edge in order:
        value = float(patch_edges(model, clean, corrupted, [removed + [edge]])[0])
        if value - current < threshold:
            removed.append(edge)
            current = value
    replayed = set(order) - set(removed)
    return {"python_hash_seed": os.environ.get("PYTHONHASHSEED", "random"), "same_as_auto_circuit": replayed == kept,
            "edges_kept": len(replayed)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--with-auto-circuit", action="store_true", help="compare with auto-circuit (if importable)")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of: " + ", ".join(MODELS))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sections", default="eap,acdc",
                   help="comma-separated: eap, acdc (zoo/attn-only-2l), acdc-large (ACDC on the d_model-512 model "
                        "and the GPT-2-small shape: tens of minutes); sections not run keep their rows in --out")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--quick", action="store_true",
                   help="a fast look: zoo/attn-only-2l only (EAP and ACDC), one repeat")
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.repeats, args.sections = "zoo/attn-only-2l", 1, "eap,acdc"
    torch.set_num_threads(args.threads)
    why = auto_circuit_available() if args.with_auto_circuit else "not asked for (--with-auto-circuit)"
    with_ac = not why
    if not with_ac:
        print(f"auto-circuit not used: {why}; timing circuitlab alone.")
    import transformer_lens

    out = {"batch": BATCH, "seq_len": SEQ, "threads": args.threads, "torch": torch.__version__,
           "transformer_lens": getattr(transformer_lens, "__version__", None) or _version("transformer-lens"),
           "auto_circuit": _version("auto-circuit") if with_ac else None, "auto_circuit_note": why or None,
           "memory": "peak resident set size during the call minus at its start (sampled every 2 ms)",
           "load_average_at_start": os.getloadavg(), "cpus": os.cpu_count()}
    sections = {x.strip() for x in args.sections.split(",")}
    previous = json.loads(Path(args.out).read_text()) if Path(args.out).exists() else {}
    for key in ("eap", "acdc", "acdc_large"):  # rows of the sections not run this time
        if key in previous:
            out[key] = previous[key]
    if "eap" in sections:
        out["eap"] = [bench_model(name.strip(), with_ac, args.repeats) for name in args.models.split(",")]
    if "acdc" in sections:
        out["acdc"] = [bench_acdc(with_ac, task) for task in ("random", "induction")]
    if "acdc-large" in sections:
        out["acdc_large"] = [bench_acdc_large(name, with_ac)
                             for name in ("random attn-only 2L d_model 512", "gpt2-small shape (random)")]
    out["sections_run"] = sorted(sections)
    out["load_average_at_end"] = os.getloadavg()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")
    return 0


def _version(dist: str):
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    sys.exit(main())
