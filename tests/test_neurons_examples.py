"""Neuron pages: the streamed activations and histogram against a brute-force pass, the top examples and value tokens
equal to the analyses they come from, and the page's HTML."""

from __future__ import annotations

import pytest
import torch

import circuitlab as cl
from circuitlab.errors import InputError
from circuitlab.ffn import value_tokens
from circuitlab.neurons.examples import activations, neuron_page

LAYER, NEURON = 1, 42
TEXTS = ["The cat sat on the mat.", "A king went down to the sea, and the sea was calm.", "Blessed are the meek.",
         "The dog ate the bread by the river.", "And the light was good.", "Wexmira has a house in Brindlecote."]


@pytest.fixture(scope="module")
def model():
    return cl.load_model("zoo/toy-lm")


@pytest.fixture(scope="module")
def brute(model):
    """Each text's activations of the neuron, BOS left out, one forward pass per text."""
    out = []
    for t in TEXTS:
        _, cache = model.run_with_cache(t, names_filter=f"blocks.{LAYER}.mlp.hook_post")
        out.append(cache[f"blocks.{LAYER}.mlp.hook_post"][0, 1:, NEURON])
    return torch.cat(out)


@pytest.fixture(scope="module")
def page(model):
    return neuron_page(model, TEXTS, LAYER, NEURON, k=4, n_tokens=5, bins=12, batch_size=4, progress=False)


def test_activations_stream_in_batches_and_equal_a_brute_force_pass(model, brute):
    got = activations(model, TEXTS, LAYER, NEURON, batch_size=2, progress=False)
    assert got == pytest.approx(brute, abs=1e-5)
    tiny = activations(model, iter(TEXTS), LAYER, NEURON, max_memory=2 ** 12, progress=False)
    assert tiny == pytest.approx(brute, abs=1e-5)


def test_the_histogram_counts_every_token_in_its_bin(model, page, brute):
    h = page.histogram
    edges = torch.tensor(h.meta["edges"], dtype=torch.float64)
    assert float(edges[0]) == pytest.approx(float(brute.min()), abs=1e-5)
    assert float(edges[-1]) == pytest.approx(float(brute.max()), abs=1e-5)
    assert int(h.values.sum()) == page.n_tokens == len(brute)
    # binned by hand from the same batches' values (a different batch may differ in the last float bit at an edge)
    b = activations(model, TEXTS, LAYER, NEURON, batch_size=4, progress=False).double()
    by_hand = [int(((b >= lo) & ((b < hi) if i < 11 else (b <= hi))).sum())
               for i, (lo, hi) in enumerate(zip(edges[:-1].tolist(), edges[1:].tolist()))]
    assert h.values.long().tolist() == by_hand
    assert h.meta["fraction_positive"] == pytest.approx(float((b > 0).double().mean()))


def test_the_page_holds_the_top_examples_and_value_tokens(model, page, brute):
    assert [e.activation for e in page.examples.examples] == pytest.approx(brute.topk(4).values.tolist(), abs=1e-5)
    direct = value_tokens(model, LAYER, NEURON, k=5)
    assert torch.equal(page.values.promoted.token_ids, direct.promoted.token_ids)
    import circuitlab.render.neurons  # noqa: F401  registers the page's renderer

    html = page.to_html()
    assert "cl-histogram" in html and 'data-component="ColoredTokens"' in html
    assert "Top-activating contexts of MLP L1 N42" in html and "Value vectors of MLP layer 1" in html


def test_a_one_shot_iterator_and_bad_indices_are_errors(model):
    with pytest.raises(InputError, match="twice"):
        neuron_page(model, iter(TEXTS), LAYER, NEURON, progress=False)
    with pytest.raises(InputError, match="neuron"):
        neuron_page(model, TEXTS, LAYER, 10 ** 6, progress=False)
    with pytest.raises(InputError, match="layer"):
        activations(model, TEXTS, 99, NEURON, progress=False)
