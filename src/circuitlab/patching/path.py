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

from circuitlab.errors import InputError
from circuitlab.metrics import LogitMetric
from circuitlab.patching.sites import prepare_tokens, scalar
from circuitlab.patching.exact import Metric
from circuitlab.results import Result
from circuitlab.core import Prompts

Sender = Union[tuple, str]  # (layer, head) | ("mlp", layer) | "L3H1" | "MLP2"
Receiver = Union[tuple, str]  # (layer, head, "q"|"k"|"v") | "L3H1.q" | "resid_final"


def path_patch(
    model: HookedTransformer,
    clean_tokens: Prompts,
    corrupted_tokens: Prompts,
    metric: Metric,
    senders: Union[str, Sender, Sequence[Sender]],
    receivers: Union[str, Receiver, Sequence[Receiver]] = "resid_final",
    direction: str = "denoising",
    *,
    freeze_mlps: bool = True,
    quiet: bool = False,
) -> Result:
    """The metric when only the paths from ``senders`` to ``receivers`` carry the source run's values.

    Args:
        senders: one sender or a list patched together: heads as ``(layer, head)`` or ``"L3H1"``, MLPs as
            ``("mlp", layer)`` or ``"MLP2"``. ``"heads"`` patches every head separately (a layer x head sweep).
        receivers: ``"resid_final"`` (the logits, through the final LayerNorm) or heads' inputs as
            ``(layer, head, "q" | "k" | "v")`` or ``"L3H1.q"`` (several allowed; for grouped-query attention the
            head of a ``k``/``v`` receiver is a key/value head).
        direction: ``"denoising"`` (base = corrupted, senders take clean values) or ``"noising"``.
        freeze_mlps: freeze MLP outputs in the first pass (only direct paths); ``False`` lets them recompute.

    Returns:
        a :class:`~circuitlab.results.Result`: axes ``("senders",)`` with one entry for an explicit sender set,
        or ``("layer", "head")`` for ``senders="heads"`` (heads with no path to the receivers, i.e. in or after
        the first receiver layer, get the unpatched base value). ``meta`` holds ``clean_value`` and
        ``corrupted_value``.
    """
    cfg = model.cfg
    clean_t, _, base_t, source_t = prepare_tokens(model, clean_tokens, corrupted_tokens, direction)
    if isinstance(metric, LogitMetric):
        metric.bind(model)
    recv = _parse_receivers(model, receivers)

    wanted = lambda n: n.endswith(("attn.hook_z", "hook_mlp_out")) or any(n == _recv_hook(r) for r in recv)  # noqa: E731
    with torch.no_grad():
        base_logits, base_cache = model.run_with_cache(base_t, names_filter=wanted)
        source_logits, source_cache = model.run_with_cache(source_t, names_filter=lambda n: n.endswith(
            ("attn.hook_z", "hook_mlp_out")))
    base_value, source_value = scalar(metric(base_logits)), scalar(metric(source_logits))
    first_receiver_layer = cfg.n_layers if recv == "resid_final" else min(r[0] for r in recv)

    def run(group: list[tuple]) -> float:
        late = [s for s in group if s[1] >= first_receiver_layer]
        if late:
            raise InputError(
                f"sender {_label(late[0])} is not before the receivers (first receiver layer "
                f"{first_receiver_layer}): no path connects them. Choose earlier senders."
            )
        return _path_value(model, base_t, base_cache, source_cache, metric, group, recv, freeze_mlps)

    if isinstance(senders, str) and senders.lower() == "heads":
        from tqdm.auto import tqdm

        values = torch.full((cfg.n_layers, cfg.n_heads), base_value)
        todo = [(l, h) for l in range(min(first_receiver_layer, cfg.n_layers)) for h in range(cfg.n_heads)]
        for layer, head in tqdm(todo, desc="path patching", disable=quiet, leave=False):
            values[layer, head] = run([("head", layer, head)])
        result_axes, labels = ("layer", "head"), {}
        values_t = values
    else:
        group = _parse_senders(model, senders)
        values_t = torch.tensor([run(group)])
        result_axes, labels = ("senders",), {"senders": ["+".join(_label(s) for s in group)]}

    clean_value = base_value if direction == "noising" else source_value
    corrupted_value = source_value if direction == "noising" else base_value
    receivers_text = "resid_final" if recv == "resid_final" else ", ".join(f"L{l}H{h}.{c}" for l, h, c in recv)
    return Result(
        values=values_t,
        axes=result_axes,
        labels=labels,
        title=f"Path patching ({direction}) into {receivers_text}",
        metric=str(getattr(metric, "name", getattr(metric, "__name__", "metric"))),
        model=cfg.model_name,
        task=f"{clean_t.shape[0]} prompt pair(s), {clean_t.shape[1]} tokens",
        meta={"receivers": recv, "direction": direction, "freeze_mlps": freeze_mlps,
              "clean_value": clean_value, "corrupted_value": corrupted_value},
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

    def freeze_z(z, hook):
        layer = hook.layer()
        out = base_cache[hook.name].clone()
        for h in sender_heads.get(layer, []):
            out[:, :, h] = source_cache[hook.name][:, :, h]
        return out

    def freeze_mlp(mlp_out, hook):
        return (source_cache if hook.layer() in sender_mlps else base_cache)[hook.name].clone()

    hooks = [(f"blocks.{l}.attn.hook_z", freeze_z) for l in range(cfg.n_layers)]
    if not cfg.attn_only:
        hooks += [(f"blocks.{l}.hook_mlp_out", freeze_mlp) for l in range(cfg.n_layers)
                  if freeze_mlps or l in sender_mlps]

    if recv == "resid_final":  # the receiver is the final residual stream: read the metric from step 2
        return scalar(metric(model.run_with_hooks(base_t, fwd_hooks=hooks)))

    captured = {}

    def capture(act, hook):
        captured[hook.name] = act.clone()

    stop = max(l for l, _, _ in recv) + 1
    recv_hooks = {_recv_hook(r) for r in recv}
    model.run_with_hooks(base_t, fwd_hooks=hooks + [(n, capture) for n in recv_hooks], stop_at_layer=stop)

    heads_by_hook: dict[str, list[int]] = {}
    for r in recv:
        heads_by_hook.setdefault(_recv_hook(r), []).append(r[1])

    def patch_receiver(act, hook):
        out = act.clone()
        for h in heads_by_hook[hook.name]:
            out[:, :, h] = captured[hook.name][:, :, h]
        return out

    logits = model.run_with_hooks(base_t, fwd_hooks=[(n, patch_receiver) for n in heads_by_hook])
    return scalar(metric(logits))


def _recv_hook(r) -> str:
    return "" if r == "resid_final" or isinstance(r, str) else f"blocks.{r[0]}.attn.hook_{r[2]}"


def _label(s: tuple) -> str:
    return f"L{s[1]}H{s[2]}" if s[0] == "head" else f"MLP{s[1]}"


def _parse_senders(model: HookedTransformer, senders) -> list[tuple]:
    """Senders as ``("head", layer, head)`` / ``("mlp", layer)`` tuples, checked against the model."""
    cfg = model.cfg
    items = [senders] if isinstance(senders, str) or (isinstance(senders, tuple) and senders
                                                      and not isinstance(senders[0], (tuple, list, str))) \
        or (isinstance(senders, tuple) and senders and senders[0] == "mlp") else list(senders)
    out = []
    for s in items:
        if isinstance(s, str):
            m = re.fullmatch(r"[lL](\d+)[hH](\d+)", s.strip()) or re.fullmatch(r"(?i:mlp)(\d+)", s.strip())
            if not m:
                raise InputError(f"cannot read sender {s!r}; write heads as 'L3H1' or (3, 1) and MLPs as 'MLP2'.")
            s = (int(m.group(1)), int(m.group(2))) if m.lastindex == 2 else ("mlp", int(m.group(1)))
        if isinstance(s, (tuple, list)) and len(s) == 2 and s[0] == "mlp":
            if cfg.attn_only:
                raise InputError("this model is attention-only: it has no MLP to use as a sender.")
            layer = int(s[1])
            _check(0 <= layer < cfg.n_layers, f"MLP layer {layer} is out of range (0..{cfg.n_layers - 1}).")
            out.append(("mlp", layer))
        elif isinstance(s, (tuple, list)) and len(s) == 2:
            layer, head = int(s[0]), int(s[1])
            _check(0 <= layer < cfg.n_layers, f"sender layer {layer} is out of range (0..{cfg.n_layers - 1}).")
            _check(0 <= head < cfg.n_heads, f"sender head {head} is out of range (0..{cfg.n_heads - 1}).")
            out.append(("head", layer, head))
        else:
            raise InputError(f"cannot read sender {s!r}; give (layer, head), ('mlp', layer), 'L3H1' or 'MLP2'.")
    _check(len(out) > 0, "give at least one sender.")
    return out


def _parse_receivers(model: HookedTransformer, receivers):
    """``"resid_final"`` or a list of ``(layer, head, "q"|"k"|"v")``, checked against the model."""
    cfg = model.cfg
    if isinstance(receivers, str) and receivers.strip().lower() in ("resid_final", "logits", "final"):
        return "resid_final"
    items = [receivers] if isinstance(receivers, str) or (isinstance(receivers, tuple) and len(receivers) == 3
                                                          and isinstance(receivers[2], str)) else list(receivers)
    out = []
    for r in items:
        if isinstance(r, str):
            m = re.fullmatch(r"[lL](\d+)[hH](\d+)\.?([qkvQKV])", r.strip())
            if not m:
                raise InputError(f"cannot read receiver {r!r}; write 'L3H1.q', (3, 1, 'q') or 'resid_final'.")
            r = (int(m.group(1)), int(m.group(2)), m.group(3).lower())
        if not (isinstance(r, (tuple, list)) and len(r) == 3 and r[2] in ("q", "k", "v")):
            raise InputError(f"cannot read receiver {r!r}; give (layer, head, 'q'|'k'|'v') or 'resid_final'.")
        layer, head, comp = int(r[0]), int(r[1]), r[2]
        _check(0 <= layer < cfg.n_layers, f"receiver layer {layer} is out of range (0..{cfg.n_layers - 1}).")
        n_heads = cfg.n_key_value_heads if comp in "kv" and cfg.n_key_value_heads and \
            not cfg.ungroup_grouped_query_attention else cfg.n_heads
        _check(0 <= head < n_heads, f"receiver {comp} head {head} is out of range (0..{n_heads - 1}).")
        out.append((layer, head, comp))
    _check(len(out) > 0, "give at least one receiver.")
    return out


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise InputError(message)
