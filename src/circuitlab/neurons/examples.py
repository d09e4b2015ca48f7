"""Max-activating examples of a neuron, and its page: where it fires, how often, and what it writes.

A neuron page gathers what one MLP neuron does, each part from the analysis that owns it:

- **top examples**: the contexts of a corpus where it fires most, streamed with a running top-k
  (:func:`circuitlab.ffn.key_examples`; the corpus can be a generator larger than memory);
- **value-vector tokens**: what it writes when it fires, ``W_out[neuron]`` projected on the vocabulary
  (:func:`circuitlab.ffn.value_tokens`, Geva et al. 2021);
- **the activation histogram**: its activation on every token of the corpus (BOS left out), binned. A neuron
  that fires on a few tokens shows a long right tail; the top examples are the far end of that tail.

    from circuitlab.neurons.examples import neuron_page
    from circuitlab.neurons.explain import corpus_lines

    page = neuron_page("zoo/toy-lm", corpus_lines(500), layer=2, neuron=17)
    page.examples.examples[0].text       # the best context
    page.histogram.values                # counts per bin; page.histogram.meta["edges"]: the bin edges
    page                                 # in Jupyter: the page (circuitsvis token colouring, chips, histogram)

:func:`activations` is the streamed pass behind the histogram: one neuron's activation on every token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence, Union

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens.utilities import get_act_name

from circuitlab.core import (DEFAULT_MAX_MEMORY, ModelLike, as_model, check_affordable, check_count, check_count_within,
                             check_finite, check_max_memory, check_mlp_layer, check_neurons, check_texts, model_name,
                             progress_bar, shorten)
from circuitlab.errors import InputError
from circuitlab.engine.collect import stream_activations, token_rows
from circuitlab.ffn import KeyExamples, ValueTokens, key_examples, value_tokens
from circuitlab.results import Bundle, Result

__all__ = ["NeuronPage", "activations", "neuron_page"]

Texts = Union[Int[Tensor, " pos"], Int[Tensor, "batch pos"],
              Iterable[Union[str, Sequence[int], Int[Tensor, " pos"]]]]


@torch.no_grad()
def activations(
    model: ModelLike,
    texts: Texts,
    layer: int,
    neuron: int,
    batch_size: int = 32,
    exclude_bos: bool = True,
    progress: bool = False,
    max_memory: int = DEFAULT_MAX_MEMORY,
) -> Float[Tensor, " token"]:
    """Neuron ``neuron`` of MLP layer ``layer`` (``blocks.{layer}.mlp.hook_post[..., neuron]``) on every token of
    ``texts``, in corpus order, as one flat float32 tensor (4 bytes a token; the forward passes are bounded by
    ``max_memory`` as elsewhere).

    Texts are read as :func:`circuitlab.ffn.key_examples` reads them (:func:`circuitlab.engine.collect.token_rows`:
    BOS prepended, cut to ``n_ctx``);
    ``exclude_bos`` leaves out position 0 where it holds the BOS token.
    """
    model = as_model(model)
    if isinstance(texts, str):
        check_texts(texts, "texts")  # a corpus is a list of texts; a bare string is refused, not read as one text
    layer = check_mlp_layer(model, layer)
    (neuron,) = check_neurons(model, neuron)
    batch_size = check_count(batch_size, "batch_size")
    max_memory = check_max_memory(max_memory)
    if texts is None or isinstance(texts, (int, float)):
        raise InputError(f"texts must be texts, token rows or an iterable of them; got {shorten(texts)}.")
    bos = getattr(model.tokenizer, "bos_token_id", None) if model.tokenizer is not None else None
    hook = get_act_name("post", layer)
    out: list[Tensor] = []
    rows = progress_bar(token_rows(model, texts), progress=progress, desc=f"L{layer} N{neuron} activations",
                        unit="text")
    for batch, toks, acts in stream_activations(model, rows, hook, lambda act: act[:, :, neuron].float().cpu(),
                                                batch_size=batch_size, max_memory=max_memory):
        check_finite(model, toks, f"L{layer} N{neuron}'s activations", acts)
        for i, r in enumerate(batch):
            start = 1 if exclude_bos and bos is not None and int(r[0]) == bos else 0
            out.append(acts[i, start: len(r)])
    if not out:
        raise InputError("texts held no data: pass a non-empty list of texts, token rows, or an iterable.")
    return torch.cat(out)


@dataclass(repr=False)
class NeuronPage(Bundle):
    """One MLP neuron on one corpus: top examples, value-vector tokens, activation histogram.

    Attributes:
        layer, neuron: which neuron.
        examples: its top-activating contexts (:class:`circuitlab.ffn.KeyExamples`).
        values: the tokens its value vector promotes and suppresses (:class:`circuitlab.ffn.ValueTokens`).
        histogram: ``[bin]`` how many tokens fall in each activation bin; ``meta["edges"]`` holds the
            ``bins + 1`` edges, ``meta["mean"]``, ``meta["std"]``, ``meta["fraction_positive"]`` the moments.
        n_tokens: tokens scanned.
    """

    layer: int
    neuron: int
    examples: KeyExamples
    values: ValueTokens
    histogram: Result
    n_tokens: int
    model: str = ""

    def results(self) -> dict[str, Result]:
        return {"histogram": self.histogram, **{f"examples.{k}": v for k, v in self.examples.results().items()}}


def neuron_page(
    model: ModelLike,
    texts: Texts,
    layer: int,
    neuron: int,
    k: int = 10,
    n_tokens: int = 10,
    bins: int = 40,
    context: tuple[int, int] = (10, 3),
    batch_size: int = 32,
    progress: bool = False,
    max_memory: int = DEFAULT_MAX_MEMORY,
) -> NeuronPage:
    """The page of neuron ``neuron`` of MLP layer ``layer`` over ``texts`` (see the module docstring).

    Args:
        model: a model with MLPs.
        texts: a list of texts, a ``[batch, pos]`` tensor, or any iterable of texts / token-id rows. It is read
            twice (top examples, then the histogram), so pass a list or a re-iterable, not a one-shot generator.
        layer, neuron: the neuron.
        k: top examples kept.
        n_tokens: value-vector tokens listed per direction.
        bins: histogram bins, equal widths from the lowest to the highest activation.
        context: tokens shown (before, after) each example's firing token.
        batch_size, progress, max_memory: as in :func:`circuitlab.ffn.key_examples`.
    """
    model = as_model(model)
    if isinstance(texts, str):
        check_texts(texts, "texts")  # a corpus is a list of texts; a bare string is refused, not read as one text
    layer = check_mlp_layer(model, layer)
    (neuron,) = check_neurons(model, neuron)
    bins = check_count(bins, "bins")
    n_tokens = check_count_within(n_tokens, "n_tokens", model.cfg.d_vocab_out, "tokens in the vocabulary")
    # the histogram's edges and a label for each bin are made at once
    check_affordable(200 * bins, f"bins={bins:,}", "use fewer bins (40 is the default)")
    if isinstance(texts, Iterable) and iter(texts) is texts:
        raise InputError("texts is a one-shot iterator, but a neuron page reads the texts twice (top examples, "
                         "then the histogram): pass a list (or anything iterable more than once).")
    ex = key_examples(model, texts, layer, neuron, k=k, batch_size=batch_size, context=context, progress=progress,
                      max_memory=max_memory)
    vt = value_tokens(model, layer, neuron, k=n_tokens)
    acts = activations(model, texts, layer, neuron, batch_size=batch_size, progress=progress,
                       max_memory=max_memory).double()
    lo, hi = float(acts.min()), float(acts.max())
    if hi <= lo:
        hi = lo + 1.0
    edges = torch.linspace(lo, hi, bins + 1, dtype=torch.float64)
    counts = torch.histc(acts, bins=bins, min=lo, max=hi)
    labels = [f"[{float(a):.3g}, {float(b):.3g})" for a, b in zip(edges[:-1], edges[1:])]
    hist = Result(counts, ("bin",), {"bin": labels}, title=f"Activations of MLP L{layer} N{neuron}",
                  metric="count of tokens", model=model_name(model), task=f"{len(acts)} tokens",
                  meta={"edges": edges.tolist(), "mean": float(acts.mean()), "std": float(acts.std()) if len(acts) > 1
                        else 0.0, "fraction_positive": float((acts > 0).double().mean()), "scale": "sequential"})
    return NeuronPage(layer=layer, neuron=neuron, examples=ex, values=vt, histogram=hist, n_tokens=len(acts),
                      model=model_name(model))
