"""Attribution patching: a first-order estimate of every patch from one forward and one backward pass.

Exact patching asks "what is the metric if this slice of the activation takes its source value?". Attribution
patching answers with a Taylor expansion around the base run::

    metric(patched) ~= metric(base) + sum over the patched slice of  d metric / d act  *  (act_source - act_base)

so one backward pass gives an estimate for every site at once. It is a **linear approximation**: exact when the
metric is linear in the patched activation (e.g. a head's output feeding the unembedding directly, with no final
LayerNorm), and it can be far off where the model is strongly non-linear (attention softmax, LayerNorm scales,
saturated activations, or a large difference between the two runs). ``benchmarks/attribution_patching.py``
reports how well it agrees with the exact :func:`~circuitlab.patching.sweep`; check important sites exactly.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from torch import Tensor

from circuitlab.core import (DEFAULT_MAX_MEMORY, ModelLike, Prompts, as_model, check_finite, check_layers,
                             check_max_memory, metric_name, model_name, position_labels, row_bytes)
from circuitlab.metrics import Metric, bind_metric
from circuitlab.patching.sites import (check_site_exists, get_site, parse_by, patch_spec, prepare_tokens, scalar,
                                       split_prompts)
from circuitlab.results import Result


def attribution(
    model: ModelLike,
    clean_tokens: Prompts,
    corrupted_tokens: Prompts,
    metric: Metric,
    site: str = "resid_pre",
    by: Sequence[str] | str = ("layer", "pos"),
    direction: str = "denoising",
    *,
    layers: Optional[Sequence[int]] = None,
    max_memory: int = DEFAULT_MAX_MEMORY,
) -> Result:
    """Estimate :func:`~circuitlab.patching.sweep`'s result linearly (attribution patching).

    Same arguments and result layout as :func:`~circuitlab.patching.sweep`: ``values[...]`` estimates the
    metric with that slice patched (the base value plus the first-order change), so the two can be compared
    entry by entry. The metric must be differentiable. Costs one forward pass on each input and one backward
    pass, whatever the number of sites. This is a linear approximation, not an exact patch. A batch of prompts
    too large for ``max_memory`` is estimated in parts, averaged by size (exact for circuitlab's metrics).
    """
    model = as_model(model)
    spec = get_site(site)
    by = parse_by(spec, by)
    layer_list = check_layers(model, layers)
    clean_t, _, base_t, source_t = prepare_tokens(model, clean_tokens, corrupted_tokens, direction)
    metric = bind_metric(metric, model)
    names = [spec.hook_name(layer) for layer in layer_list]
    max_memory = check_max_memory(max_memory)
    # a forward pass that keeps its graph, then the backward pass: about three rows' worth of activations
    per_prompt = 3 * row_bytes(model, base_t.shape[1], logits=model.cfg.d_vocab_out)
    parts = split_prompts(base_t.shape[0], per_prompt, metric, max_memory)
    values, base_value, source_value = 0.0, 0.0, 0.0
    for rows in parts:  # the metric is a mean over prompts: the parts' estimates, averaged by size, are exact
        part_metric = metric if len(parts) == 1 else metric.rows(rows, base_t.shape[0])
        v, b, src = _estimate(model, spec, by, names, base_t[rows], source_t[rows], part_metric)
        weight = (rows.stop - rows.start) / base_t.shape[0]
        values, base_value, source_value = values + weight * v, base_value + weight * b, source_value + weight * src
    check_finite(model, base_t, "attribution patching's estimates", values, torch.tensor([source_value]))

    canonical = tuple(a for a in spec.axes if a in by)
    values = values.permute(*[canonical.index(a) for a in by]).detach()
    pos = position_labels(model, clean_t)
    n_heads = values.shape[by.index("head")] if "head" in by else model.cfg.n_heads
    grouped = spec.name in ("k", "v") and n_heads != model.cfg.n_heads
    labels = {"layer": [f"L{layer}" for layer in layer_list], "pos": pos, "dest_pos": pos, "src_pos": pos,
              "head": [f"KV{h}" if grouped else f"H{h}" for h in range(n_heads)]}
    return Result(
        values=values,
        axes=by,
        labels={a: labels[a] for a in by},
        title=f"Attribution patching (linear estimate, {direction}): {spec.name} by {', '.join(by)}",
        metric=metric_name(metric),
        model=model_name(model),
        task=f"{clean_t.shape[0]} prompt pair(s), {clean_t.shape[1]} tokens",
        meta={**patch_spec("attribution patching", spec, by, direction, layer_list), "base_value": base_value,
              "clean_value": source_value if direction == "denoising" else base_value,
              "corrupted_value": base_value if direction == "denoising" else source_value,
              "approximation": "first-order (attribution patching)", "prompt_parts": len(parts)},
    )


def _estimate(model, spec, by, names, base_t, source_t, metric) -> tuple[Tensor, float, float]:
    """The linear estimate for one batch of prompts: ``[layer, *swept axes]``, the base and source values."""
    with torch.no_grad():
        source_logits, source_cache = model.run_with_cache(source_t, names_filter=lambda n: n in names)
        source_value = scalar(metric(source_logits))
    if names[0] not in source_cache:  # the model never computes this site
        check_site_exists(model, spec, set())

    # a zero "probe" added to each activation: its gradient is the gradient with respect to the activation, and
    # the graph still runs through the activation itself (so earlier layers see later layers' influence)
    probes, acts = {}, {}

    def add_probe(name: str):  # bound to its name: a TransformerBridge's hook point may report an alias
        def hook(act, hook=None):
            acts[name] = act.detach()
            probes[name] = torch.zeros_like(act, requires_grad=True)
            return act + probes[name]

        return hook

    with torch.enable_grad():
        logits = model.run_with_hooks(base_t, fwd_hooks=[(n, add_probe(n)) for n in names])
        value = metric(logits)
        base_value = scalar(value)
        grads = torch.autograd.grad(value, [probes[n] for n in names], allow_unused=True)

    keep = [i + 1 for i, d in enumerate(spec.dims) if d is not None and d in by]  # +1: the batch axis
    per_layer = []
    for name, grad in zip(names, grads):
        if grad is None:  # the metric does not depend on this activation at all
            grad = torch.zeros_like(acts[name])
        contrib = grad * (source_cache[name] - acts[name])
        drop = [d for d in range(contrib.ndim) if d not in keep]
        per_layer.append(contrib.sum(dim=drop).cpu() + base_value)
    return torch.stack(per_layer), base_value, source_value
