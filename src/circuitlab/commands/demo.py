"""``circuitlab demo [--model NAME] --out PATH``: find the induction circuit end to end and write a report.

On the bundled ``zoo/attn-only-2l`` (the default) the demo tells one story in four kinds of evidence:

1. **Attention** — which heads attend like induction heads and previous-token heads on repeated random
   tokens; **weights** — how strongly the induction heads' keys read the previous-token heads (K-composition);
   **ablation** — how much the in-context loss rises when the heads are removed
   (:func:`circuitlab.induction.find_induction_circuit`).
2. **Activation patching** on a copying task: the clean prompt ``[BOS] r_1..r_n r_1..r_k`` should be continued
   with ``r_{k+1}``; the corrupted prompt replaces the first copy's ``r_{k+1}`` by another token ``x``, so the
   model predicts ``x`` instead. Patching clean activations into the corrupted run, one residual-stream slot
   and then one head at a time, shows where the answer travels (:func:`circuitlab.patching.sweep`).
3. **Direct logit attribution** on the clean prompts: which heads write the answer into the logits
   (:func:`circuitlab.attribution.direct_logit_attribution`).
4. **FFN key-value memories** on a model with MLPs (``zoo/toy-lm`` when it is installed): the tokens its MLP
   neurons promote (:func:`circuitlab.ffn.value_tokens`).

The FFN part needs ``zoo/toy-lm``; where it is not installed the part is skipped and said so, never faked.
The copying task is :func:`circuitlab.tasks.copy_task`. The same run is available from Python as
:func:`run_demo`.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from circuitlab.cli import (add_model_option, add_out_option, add_quiet_option, command, emit, json_mode, note,
                            prepare_out, record_report, report_data, seed_int)

if TYPE_CHECKING:  # the library (torch, TransformerLens) loads inside run: `circuitlab --help` stays fast
    from circuitlab.tasks.copying import CopyTask

DEFAULT_MODEL = "zoo/attn-only-2l"
FFN_MODEL = "zoo/toy-lm"


@dataclass
class DemoOutcome:
    """What :func:`run_demo` found and wrote."""

    path: Path
    findings: list[str]
    skipped: list[str]
    seconds: float
    report_bytes: int
    n_views: int
    items: list[Any] = field(default_factory=list)


def _induction(model, seed: int, progress: bool, findings: list[str]):
    from circuitlab.core import head_label
    from circuitlab.induction import find_induction_circuit
    from circuitlab.tasks.repeated import repeated_sequences
    from circuitlab.render import Section, attention_patterns

    circuit = find_induction_circuit(model, seed=seed, progress=progress)
    if circuit.induction_heads:
        best = circuit.induction_heads[0]
        heads = ", ".join(f"{head_label(h)} ({float(circuit.induction_scores.values[h]):.2f})"
                          for h in circuit.induction_heads)
        findings.append(f"induction heads (score = attention to the token after the earlier copy): {heads}")
        if not circuit.previous_token_heads:
            (pl, ph), pv = circuit.previous_token_scores.top(1)[0]
            cut = circuit.thresholds["previous_token"]
            findings.append(f"no head clears the previous-token threshold ({cut:.2f}); "
                            f"the strongest is L{pl}H{ph} ({pv:.2f})")
        if circuit.previous_token_heads:
            prev = ", ".join(f"{head_label(h)} ({float(circuit.previous_token_scores.values[h]):.2f})"
                             for h in circuit.previous_token_heads)
            findings.append(f"previous-token heads: {prev}")
            if best[0] > 0:
                writer, score = circuit.strongest_k_writer(best)
                findings.append(f"{head_label(best)}'s keys read most from {head_label(writer)} "
                                f"(K-composition {score:.2f})")
        if circuit.ablation is not None:
            abl = circuit.ablation
            findings.append(
                f"ablating the induction heads ({abl.meta['method']}-ablation) raises the in-context loss from "
                f"{abl.baseline:.2f} to {float(abl.values[-1]):.2f} nats (chance {abl.meta['chance_loss']:.2f})")
    else:
        findings.append("no induction heads found (no head clears the score threshold)")
    rep = repeated_sequences(model, None, 1, seed)
    text = ("Induction heads complete [A][B] ... [A] -> [B]: on a repeated random sequence they attend to the "
            "token after the earlier copy of the current token. They need previous-token heads in an earlier "
            "layer, whose output their keys read (K-composition). Ablating them should undo in-context copying.")
    views = [attention_patterns(model, rep.tokens, title="Attention patterns of every head on a repeated sequence",
                                task="one repeated random sequence")]
    return Section("Induction circuit", [circuit, *views], text=text), circuit


def _patching(model, task: CopyTask, progress: bool, findings: list[str]):
    import torch

    from circuitlab.core import unresolved
    from circuitlab.metrics import LogitDiff, Normalized
    from circuitlab.patching import sweep
    from circuitlab.render import Section

    metric = LogitDiff(task.answer, task.wrong, model=model)
    with torch.no_grad():
        clean, corrupted = (float(metric(model(t))) for t in (task.clean, task.corrupted))
    findings.append(f"copying task: logit difference (answer - corrupted answer) {clean:+.2f} clean, "
                    f"{corrupted:+.2f} corrupted")
    recovered = not bool(unresolved(clean, corrupted, model.cfg.dtype))  # else the fraction would be noise
    if recovered:
        # the sweeps measure the fraction of the clean logit difference each patch recovers: 0 = corrupted, 1 = clean
        metric = Normalized(metric, clean, corrupted)
    resid = sweep(model, task.clean, task.corrupted, metric, site="resid_pre", by=("layer", "pos"),
                  progress=progress)
    heads = sweep(model, task.clean, task.corrupted, metric, site="z", by=("layer", "head"), progress=progress)
    for res in (resid, heads):
        res.task = task.description
        if recovered:
            res.metric = "fraction of the clean logit_diff recovered (0 = corrupted, 1 = clean)"
    if recovered:
        per_layer = []
        for layer in range(resid.shape[0]):
            p = int(resid.values[layer].argmax())
            per_layer.append(f"{resid.label_of((layer, p))} {float(resid.values[layer, p]):.0%}")
        findings.append("residual-stream patching, the position that recovers most of the clean logit difference "
                        "in each layer: " + ", ".join(per_layer))
        findings.append("head patching (output z at all positions): " + ", ".join(
            f"{heads.label_of(i)} recovers {v:.0%}" for i, v in heads.top(3)))
    text = (f"{task.description}. Each cell patches one activation from the clean run into the corrupted run "
            f"and measures logit(answer) - logit(corrupted answer) ({clean:+.2f} clean, {corrupted:+.2f} "
            "corrupted), shown as the fraction of the difference it recovers: 0 = corrupted, 1 = clean. At layer 0 "
            "only the corrupted position can matter (every other input is the same); later, whatever recovers "
            "the answer has carried it there.")
    return Section("Activation patching", [resid, heads], text=text)


def _attribution(model, task: CopyTask, findings: list[str]):
    from circuitlab.attribution import direct_logit_attribution
    from circuitlab.render import Section

    dla = direct_logit_attribution(model, task.clean, task.answer, wrong=task.wrong, by="head")
    dla.task = task.description + " (clean prompts)"
    (layer, head), v = dla.top(1)[0]
    total = float(dla.values.sum())
    findings.append(f"direct logit attribution: {dla.label_of((layer, head))} writes {v:+.2f} of the heads' "
                    f"{total:+.2f} to the logit difference")
    text = ("How much each head's output, read through the final norm (its scale frozen on each prompt) and the "
            "unembedding, adds to logit(answer) - logit(corrupted answer) on the clean prompts. Direct effects "
            "only: a head that acts through later heads scores little here.")
    return Section("Direct logit attribution", [dla], text=text)


def _ffn(seed: int, findings: list[str]):
    import torch

    from circuitlab import load_model
    from circuitlab.ffn import sub_updates, value_tokens
    from circuitlab.render import Section

    model = load_model(FFN_MODEL)
    layer = model.cfg.n_layers - 1
    top = torch.topk(model.W_out[layer].norm(dim=-1), min(12, model.cfg.d_mlp)).indices.tolist()
    items: list[Any] = []
    fact = _a_fact()
    if fact is not None:
        # the sub-updates that promote a learned fact, and what the strongest one's value vector promotes
        prompt, answer = fact
        subs = sub_updates(model, prompt, layer, token=answer)
        predicted = model.to_string(model(prompt)[0, -1].argmax())
        neuron = int(subs.top_neurons[0, 0])
        effect = float(subs.effect.values[0, neuron])
        promoted = [t for t in value_tokens(model, layer, neuron, k=10).promoted.tokens[0]
                    if t.strip() and t.isprintable() and "\ufffd" not in t][:4]  # readable ones only
        findings.append(f"{FFN_MODEL}: {prompt!r} -> {predicted!r} (the fact: {answer!r}); in MLP layer {layer}, "
                        f"neuron N{neuron}'s sub-update raises it most ({effect:+.2f}); its value vector promotes "
                        + ", ".join(repr(t) for t in promoted))
        items.append(subs)
        top = [neuron] + [n for n in top if n != neuron][:11]
    values = value_tokens(model, layer, top, k=8)
    if fact is None:
        findings.append(f"{FFN_MODEL}: MLP layer {layer} neuron N{values.neurons[0]} (largest value vector) "
                        f"promotes {', '.join(repr(t) for t in values.promoted.tokens[0][:4])}")
    items.insert(0, values)
    text = (f"An MLP layer is a key-value memory: neuron i fires on inputs matching its key (column i of W_in) and "
            f"adds its value (row i of W_out) to the residual stream. Projected on the vocabulary, a value names "
            f"the tokens the neuron promotes. Shown, on {FFN_MODEL}: value vectors of layer {layer} (the neurons "
            f"with the largest ones" + (", after the one that promotes a fact most), and the sub-updates that "
                                        "promote a fact the model learned." if fact is not None else ")."))
    return Section("FFN key-value memories", items, text=text)


def _a_fact() -> tuple[str, str] | None:
    """One (prompt, answer) fact of ``zoo/toy-lm``'s synthetic world, or ``None`` if it ships no world."""
    from circuitlab.models.loading import ZOO_DIR
    from circuitlab.tasks.toy_world import WORLD_FILE, fact_sentence, load_world

    path = ZOO_DIR / FFN_MODEL.removeprefix("zoo/") / WORLD_FILE
    if not path.exists():
        return None
    world = load_world(path)
    return fact_sentence(world, world.people[0], "home", 0)


def run_demo(model: Any = DEFAULT_MODEL, out: str | Path = "report.html", seed: int = 0, progress: bool = True,
             ffn: bool = True, echo: Callable[[str], None] = print) -> DemoOutcome:
    """Run the analyses on ``model``, print the headline findings, and write the report.

    Args:
        model: a zoo name, model directory, pretrained name or ``HookedTransformer``.
        out: the report's path.
        seed: seed of every random prompt.
        progress: show progress bars.
        ffn: also analyse the MLPs of ``zoo/toy-lm`` when it is installed.
        echo: where lines of output go.
    """
    from circuitlab import list_models, load_model
    from circuitlab.core import check_seed, progress_bar
    from circuitlab.render import Bullets, count_views, report
    from circuitlab.tasks.copying import copy_task

    seed = check_seed(seed)
    started = time.perf_counter()
    loaded = load_model(model)
    name = model if isinstance(model, str) else loaded.cfg.model_name
    findings: list[str] = []
    skipped: list[str] = []
    items: list[Any] = []
    task = copy_task(loaded, seed=seed)
    want_ffn = ffn and FFN_MODEL in list_models()
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("induction circuit", lambda: items.append(_induction(loaded, seed, progress, findings)[0])),
        ("activation patching", lambda: items.append(_patching(loaded, task, progress, findings))),
        ("direct logit attribution", lambda: items.append(_attribution(loaded, task, findings))),
    ]
    if want_ffn:
        steps.append(("FFN key-value memories", lambda: items.append(_ffn(seed, findings))))
    elif ffn:
        skipped.append(f"FFN key-value memories: {FFN_MODEL} is not installed")
    bar = progress_bar(steps, progress=progress, desc="demo", unit="analysis")
    for label, step in bar:
        bar.set_postfix_str(label)
        step()
    bar.close()

    echo(f"Headline findings on {name}:")
    for line in findings:
        echo(f"  - {line}")
    for line in skipped:
        echo(f"  (skipped {line})")
    intro = (f"What circuitlab finds in {name}, end to end: the induction circuit from attention, weights and "
             f"ablations; activation patching on a copying task; direct logit attribution"
             f"{'; FFN key-value memories on ' + FFN_MODEL if want_ffn else ''}."
             + (f"\n\nSkipped: {'; '.join(skipped)}." if skipped else ""))
    headline = Bullets(findings, title="Headline findings")
    path = report([headline, *items], out, title=f"circuitlab demo: {name}", intro=intro)
    page = path.read_text(encoding="utf-8")
    seconds = time.perf_counter() - started
    outcome = DemoOutcome(path, findings, skipped, seconds, path.stat().st_size, count_views(page), items)
    echo(f"wrote {path} ({outcome.report_bytes / 1e6:.2f} MB, {outcome.n_views} interactive views) "
         f"in {seconds:.1f} s")
    return outcome


def _snake(title: str) -> str:
    import re

    return re.sub(r"\W+", "_", title.lower()).strip("_")


def arguments(p: argparse.ArgumentParser) -> None:
    add_model_option(p, default=DEFAULT_MODEL)
    add_out_option(p, default="report.html")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the random prompts (default 0)")
    p.add_argument("--no-ffn", action="store_true", help=f"skip the FFN analysis on {FFN_MODEL}")
    add_quiet_option(p)


def run(args: argparse.Namespace) -> int:
    prepare_out(args.out)  # an unusable --out is an error before the demo runs; missing folders are made
    outcome = run_demo(args.model, args.out, seed=args.seed, progress=not args.quiet, ffn=not args.no_ffn)
    if json_mode():  # what the demo found and wrote, named (the text summary is dropped under --json)
        emit(findings=outcome.findings, skipped=outcome.skipped, seconds=outcome.seconds,
             report_bytes=outcome.report_bytes, n_views=outcome.n_views,
             **{_snake(section.title): data[0] if len(data) == 1 else data
                for section in outcome.items for data in [report_data([section])]})
        note(f"wrote {outcome.path}")
        record_report(outcome.path)
    return 0


run.arguments = arguments
command("demo", "run the induction circuit, patching and attribution on a zoo model and write an HTML report",
        json="findings (the headline lines), skipped, seconds, report_bytes, n_views, and each report section's "
             "results: induction_circuit, activation_patching ([residual sweep, head sweep]), "
             "direct_logit_attribution, ffn_key_value_memories")(run)
