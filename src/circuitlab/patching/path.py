"""Path patching (Wang et al. 2022, "Interpretability in the Wild"): the effect along sender -> receiver paths.

Activation patching a head changes everything downstream of it. Path patching asks a narrower question: what
is the effect of the senders' output *only through* the receivers? The exact two-pass method:

1. Cache the base run and the source run (``direction="denoising"``: base = corrupted, source = clean).
2. Run the base input with every attention head's output (``hook_z``) and every MLP's output frozen to its base
   value, except the senders, which take their source value. Nothing else can react, so the senders' change
   reaches later layers only directly, through the residual stream. Record the receivers' inputs: the
   queries, keys or values (``hook_q/k/v``) of the receiver heads, which are recomputed from that residual stream
   (their LayerNorm included).
3. Run the base input again with only the receivers' inputs replaced by the values from step 2, everything else
   free, and measure the metric.

With ``receivers="resid_final"`` the receiver is the final residual stream: the metric is read straight from
step 2 (the senders' direct effect on the logits, through the final LayerNorm).

``freeze_mlps=False`` lets MLPs recompute in step 2, treating them as part of every path (as the IOI paper's
code does); the default freezes them, so only direct paths count.

TransformerLens 3.9 has a *linearised* variant (``transformer_lens.tools.analysis.direct_path_patching``): it
adds ``(delta of the sender's output / base LayerNorm scale) @ W_Q`` to the receiver's query, ignoring the
change of the LayerNorm scale and its centring and weights (it warns unless LayerNorm is folded).
``benchmarks/path_patching.py`` compares the two.
"""

from __future__ import annotations

import re
from typing import Sequence, Union

import torch
from transformer_lens import HookedTransformer

from circuitlab.core import (DEFAULT_MAX_MEMORY, ModelLike, Prompts, as_model, check_finite, check_layer,
                             check_max_memory, head_label, metric_name, model_name, parse_head, progress_bar, row_bytes,
                             shorten)
from circuitlab.errors import InputError
from circuitlab.metrics import Metric, bind_metric
from circuitlab.patching.sites import prepare_tokens, scalar, split_prompts
from circuitlab.results import Result

Sender = Union[tuple, str]  # (layer, head) | "L3H1" | "3.1" | ("mlp", layer) | "MLP2"
Receiver = Union[tuple, str]  # (layer, head, "q"|"k"|"v") | "L3H1.q" | "3.1.q" | "resid_final"


def path_patch(
    model: ModelLike,
    clean_tokens: Prompts,
    corrupted_tokens: Prompts,
    metric: Metric,
    senders: Union[str, Sender, Sequence[Sender]],
    receivers: Union[str, Receiver, Sequence[Receiver]] = "resid_final",
    direction: str = "denoising",
    *,
    freeze_mlps: bool = True,
    progress: bool = False,
    max_memory: int = DEFAULT_MAX_MEMORY,
) -> Result:
    """The metric when only the paths from ``senders`` to ``receivers`` carry the source run's values.

    Args:
        model: a HookedTransformer, a TransformerBridge in compatibility mode, or a name for
            :func:`circuitlab.load_model`.
        senders: one sender or a list patched together: heads in the package's head grammar (``(layer, head)``,
            ``"L3H1"`` or ``"3.1"``), MLPs as ``("mlp", layer)`` or ``"MLP2"``. ``"heads"`` patches every head
            separately (a layer x head sweep).
        receivers: ``"resid_final"`` (the logits, through the final LayerNorm) or heads' inputs as
            ``(layer, head, "q" | "k" | "v")``, ``"L3H1.q"`` or ``"3.1.q"`` (several allowed; for grouped-query
            attention the head of a ``k``/``v`` receiver is a key/value head).
        direction: ``"denoising"`` (base = corrupted, senders take clean values) or ``"noising"``.
        freeze_mlps: freeze MLP outputs in the first pass (only direct paths); ``False`` lets them recompute.
        progress: show a progress bar (for ``senders="heads"``).
        max_memory: rough bound in bytes on the activations held at once; a larger batch of prompts runs in
            parts, averaged by size (exact for circuitlab's metrics, which are means over prompts).

    Returns:
        a :class:`~circuitlab.results.Result`: axes ``("senders",)`` with one entry for an explicit sender set,
        or ``("layer", "head")`` for ``senders="heads"`` (heads with no path to the receivers, i.e. in or after
        the first receiver layer, get the unpatched base value). ``meta`` holds the patch spec (``senders``,
        ``receivers``, ``by``, ``direction``, ``layers``, ``freeze_mlps``), ``clean_value`` and
        ``corrupted_value``.
    """
    model = as_model(model)
    cfg = model.cfg
    clean_t, _, base_t, source_t = prepare_tokens(model, clean_tokens, corrupted_tokens, direction)
    metric = bind_metric(metric, model)
    recv = _parse_receivers(model, receivers)
    sweep_heads = isinstance(senders, str) and senders.strip().lower() == "heads"
    group = None if sweep_heads else _parse_senders(model, senders)

    first_receiver_layer = cfg.n_layers if recv == "resid_final" else min(r[0] for r in recv)
    if sweep_heads:
        todo = [(l, h) for l in range(min(first_receiver_layer, cfg.n_layers)) for h in range(cfg.n_heads)]
        groups = [[("head", layer, head)] for layer, head in todo]
    else:
        late = [s for s in group if s[1] >= first_receiver_layer]
        if late:
            raise InputError(
                f"sender {_label(late[0])} is not before the receivers (first receiver layer "
                f"{first_receiver_layer}): no path connects them. Choose earlier senders."
            )
        groups = [group]

    # prompts in parts that fit max_memory (the caches of both runs and two forward passes per part); the
    # metric is a mean over prompts, so the parts' values averaged by size are exact
    max_memory = check_max_memory(max_memory)
    batch, seq_len = base_t.shape
    per_prompt = (2 * row_bytes(model, seq_len, logits=cfg.d_vocab_out)
                  + 4 * 3 * seq_len * cfg.n_layers * (cfg.n_heads * cfg.d_head + cfg.d_model))
    parts = split_prompts(batch, per_prompt, metric, max_memory)
    wanted = lambda n: n.endswith(("attn.hook_z", "hook_mlp_out")) or any(n == _recv_hook(r) for r in recv)  # noqa: E731
    group_values = torch.zeros(len(groups), dtype=torch.float64)
    base_value = source_value = 0.0
    bar = progress_bar(total=len(groups) * len(parts), progress=progress and sweep_heads, desc="path patching")
    for rows in parts:
        part_metric = metric if len(parts) == 1 else metric.rows(rows, batch)
        weight = (rows.stop - rows.start) / batch
        with torch.no_grad():
            base_logits, base_cache = model.run_with_cache(base_t[rows], names_filter=wanted)
            source_logits, source_cache = model.run_with_cache(source_t[rows], names_filter=lambda n: n.endswith(
                ("attn.hook_z", "hook_mlp_out")))
        base_value += weight * scalar(part_metric(base_logits))
        source_value += weight * scalar(part_metric(source_logits))
        del base_logits, source_logits
        for i, g in enumerate(groups):
            group_values[i] += weight * _path_value(model, base_t[rows], base_cache, source_cache, part_metric, g,
                                                    recv, freeze_mlps)
            bar.update(1)
    bar.close()

    if sweep_heads:
        values_t = torch.full((cfg.n_layers, cfg.n_heads), base_value)
        for (layer, head), value in zip(todo, group_values.tolist()):
            values_t[layer, head] = value
        result_axes, labels = ("layer", "head"), {}
        sender_layers = sorted({layer for layer, _ in todo})
    else:
        values_t = group_values.float()
        result_axes, labels = ("senders",), {"senders": ["+".join(_label(s) for s in group)]}
        sender_layers = sorted({s[1] for s in group})

    check_finite(model, base_t, "the path-patched metric values", values_t, torch.tensor([base_value, source_value]))
    clean_value = base_value if direction == "noising" else source_value
    corrupted_value = source_value if direction == "noising" else base_value
    receivers_text = "resid_final" if recv == "resid_final" else ", ".join(f"L{l}H{h}.{c}" for l, h, c in recv)
    return Result(
        values=values_t,
        axes=result_axes,
        labels=labels,
        title=f"Path patching ({direction}) into {receivers_text}",
        metric=metric_name(metric),
        model=model_name(model),
        task=f"{clean_t.shape[0]} prompt pair(s), {clean_t.shape[1]} tokens",
        meta={"method": "path patching", "senders": "heads" if sweep_heads else [_label(s) for s in group],
              "receivers": recv, "by": result_axes, "direction": direction, "layers": sender_layers,
              "freeze_mlps": freeze_mlps, "clean_value": clean_value, "corrupted_value": corrupted_value,
              "prompt_parts": len(parts)},
    )


@torch.no_grad()
def _path_value(model, base_t, base_cache, source_cache, metric, senders, recv, freeze_mlps) -> float:
    """Steps 2 and 3 of the module docstring for one set of senders."""
    cfg = model.cfg
    sender_heads: dict[int, list[int]] = {}
    sender_mlps = set()
    for s in senders:
        if s[0] == "head":
            sender_heads.setdefault(s[1], []).append(s[2])
        else:
            sender_mlps.add(s[1])

    def freeze_z(layer: int):
        name = f"blocks.{layer}.attn.hook_z"

        def hook(z, hook=None):
            out = base_cache[name].clone()
            for h in sender_heads.get(layer, []):
                out[:, :, h] = source_cache[name][:, :, h]
            return out

        return hook

    def freeze_mlp(layer: int):
        name = f"blocks.{layer}.hook_mlp_out"

        def hook(mlp_out, hook=None):
            return (source_cache if layer in sender_mlps else base_cache)[name].clone()

        return hook

    hooks = [(f"blocks.{l}.attn.hook_z", freeze_z(l)) for l in range(cfg.n_layers)]
    if not cfg.attn_only:
        hooks += [(f"blocks.{l}.hook_mlp_out", freeze_mlp(l)) for l in range(cfg.n_layers)
                  if freeze_mlps or l in sender_mlps]

    if recv == "resid_final":  # the receiver is the final residual stream: read the metric from step 2
        return scalar(metric(model.run_with_hooks(base_t, fwd_hooks=hooks)))

    captured = {}

    def capture(name: str):
        def hook(act, hook=None):
            captured[name] = act.clone()

        return hook

    stop = max(l for l, _, _ in recv) + 1
    recv_hooks = {_recv_hook(r) for r in recv}
    model.run_with_hooks(base_t, fwd_hooks=hooks + [(n, capture(n)) for n in recv_hooks], stop_at_layer=stop)

    heads_by_hook: dict[str, list[int]] = {}
    for r in recv:
        heads_by_hook.setdefault(_recv_hook(r), []).append(r[1])

    def patch_receiver(name: str):
        def hook(act, hook=None):
            out = act.clone()
            for h in heads_by_hook[name]:
                out[:, :, h] = captured[name][:, :, h]
            return out

        return hook

    logits = model.run_with_hooks(base_t, fwd_hooks=[(n, patch_receiver(n)) for n in heads_by_hook])
    return scalar(metric(logits))


def _recv_hook(r) -> str:
    return "" if r == "resid_final" or isinstance(r, str) else f"blocks.{r[0]}.attn.hook_{r[2]}"


def _label(s: tuple) -> str:
    return head_label((s[1], s[2])) if s[0] == "head" else f"MLP{s[1]}"


_MLP_RE = re.compile(r"\s*mlp\s*(-?\d+)\s*", flags=re.I)
_RECEIVER_RE = re.compile(r"\s*(.+?)\s*\.?\s*([qkv])\s*", flags=re.I)


def _parse_senders(model: HookedTransformer, senders) -> list[tuple]:
    """Senders as ``("head", layer, head)`` / ``("mlp", layer)`` tuples, checked against the model."""
    one = isinstance(senders, str) or (isinstance(senders, tuple) and len(senders) > 0
                                       and (not isinstance(senders[0], (tuple, list, str)) or senders[0] == "mlp"))
    out = []
    for s in ([senders] if one else list(senders)):
        m = _MLP_RE.fullmatch(s) if isinstance(s, str) else None
        if m or (isinstance(s, (tuple, list)) and len(s) == 2 and s[0] == "mlp"):
            if model.cfg.attn_only:
                raise InputError("this model is attention-only: it has no MLP to use as a sender.")
            layer = check_layer(model, int(m.group(1)) if m else s[1], what="sender MLP layer")
            out.append(("mlp", layer))
            continue
        layer, head = parse_head(model, s, what="sender",
                                 forms="(3, 1), 'L3H1' or '3.1' for a head, ('mlp', 2) or 'MLP2' for an MLP")
        out.append(("head", layer, head))
    if not out:
        raise InputError("give at least one sender.")
    return out


def _parse_receivers(model: HookedTransformer, receivers):
    """``"resid_final"`` or a list of ``(layer, head, "q"|"k"|"v")``, checked against the model."""
    cfg = model.cfg
    if isinstance(receivers, str) and receivers.strip().lower() in ("resid_final", "logits", "final"):
        return "resid_final"
    one = isinstance(receivers, str) or (isinstance(receivers, tuple) and len(receivers) == 3
                                         and isinstance(receivers[2], str))
    # key/value receivers of grouped-query attention index the key/value heads
    n_kv = cfg.n_key_value_heads if getattr(cfg, "n_key_value_heads", None) and \
        not getattr(cfg, "ungroup_grouped_query_attention", False) else cfg.n_heads
    forms = "'L3H1.q', '3.1.q', (3, 1, 'q') or 'resid_final'"
    out = []
    for r in ([receivers] if one else list(receivers)):
        if isinstance(r, str):
            m = _RECEIVER_RE.fullmatch(r)
            if not m:
                raise InputError(f"cannot read receiver {shorten(r)}; write it as {forms}.")
            head, comp = m.group(1), m.group(2).lower()
        elif isinstance(r, (tuple, list)) and len(r) == 3 and isinstance(r[2], str) and r[2] in ("q", "k", "v"):
            head, comp = (r[0], r[1]), r[2]
        else:
            raise InputError(f"cannot read receiver {shorten(r)}; write it as {forms}.")
        grouped = comp in "kv" and n_kv != cfg.n_heads
        layer, h = parse_head(model, head, what="receiver" if not grouped else f"{comp} receiver (key/value head)",
                              n_heads=n_kv if grouped else None, forms=forms, given=r)
        out.append((layer, h, comp))
    if not out:
        raise InputError("give at least one receiver.")
    return out
