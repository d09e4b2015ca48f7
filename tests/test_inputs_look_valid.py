"""Inputs that look valid and are not (issue 30, item 5): refused with the argument named, never a number.

- a text that tokenizes to nothing beyond the start token (whitespace on a word-level tokenizer);
- a bare string where a list of strings is expected (it would be read letter by letter);
- a fractional edge mask where a boolean one is expected;
- a circuit built on another model's graph.
"""

from __future__ import annotations

import functools
import importlib

import pytest
import torch

import circuitlab as cl
from circuitlab import attribution, circuits, tracing
from circuitlab.core import to_tokens
from circuitlab.errors import InputError
from circuitlab.metrics import LogitDiff

TOY, WORDS = "zoo/toy-lm", "zoo/attn-only-2l"
CLEAN, CORRUPTED = "The cat sat on the mat and the dog", "The dog sat on the mat and the cat"


GB = (" good", " bad")  # label words that are one token each on zoo/toy-lm


@functools.lru_cache(maxsize=None)
def toy():
    return cl.load_model(TOY)


@functools.lru_cache(maxsize=None)
def words():
    return cl.load_model(WORDS)


def module(name: str):  # circuitlab.probing.cloze is also a function's name in circuitlab.probing
    return importlib.import_module(f"circuitlab.{name}")


# -- texts that tokenize to nothing ------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["   ", "\n", " \t "])
def test_whitespace_prompt_on_a_word_level_model_is_refused(text):
    """The word-level tokenizer has no token for whitespace: the model would run on its start token alone."""
    model = words()
    assert model.to_tokens(text).shape == (1, 1)  # the premise: only the start token
    with pytest.raises(InputError, match="the prompt .* tokenizes to no tokens"):
        to_tokens(model, text)
    with pytest.raises(InputError, match="prompt 1 .* tokenizes to no tokens"):
        to_tokens(model, ["t1", text])
    with pytest.raises(InputError, match="prompt"):
        attribution.direct_logit_attribution(model, text, "t3")


def test_whitespace_is_a_token_of_a_bpe_model_and_stays_accepted():
    """On a byte-level BPE vocabulary whitespace is text with tokens of its own: the rule is about tokens."""
    model = toy()
    assert to_tokens(model, "   ").shape[1] == 1 + len(model.tokenizer.encode("   ", add_special_tokens=False))


def test_a_corpus_text_without_tokens_is_named_by_its_index():
    """An empty text of a corpus (key_examples, neuron pages) used to be scanned as the start token alone."""
    with pytest.raises(InputError, match="text 1 '' tokenizes to no tokens"):
        cl.ffn.key_examples(toy(), [CLEAN, ""], 3, 5, progress=False)


def test_a_whitespace_subject_text_is_refused():
    with pytest.raises(InputError, match="tokenizes to no tokens"):
        tracing.embedding_std(words(), ["t1", "  "])


# -- strings where lists of strings are expected ---------------------------------------------------------------

def _sites():
    """Every public parameter that takes a list of strings, called with a bare string (the other arguments good)."""
    m, ld = toy, LogitDiff(" mat", " cat")
    cloze, pairs, classifier = module("probing.cloze"), module("probing.minimal_pairs"), module("probing.classifier")
    examples, explain = module("neurons.examples"), module("neurons.explain")
    sentences, reviews, world = module("tasks.sentences"), module("tasks.reviews"), module("tasks.toy_world")
    sentiment, debugging = module("concepts.sentiment"), module("concepts.debugging")
    graph = lambda: circuits.Graph.from_model(toy())  # noqa: E731
    return {
        "embedding_std(subjects)": ("subjects", lambda: tracing.embedding_std(m(), "Wexmira")),
        "Sentence(words)": ("words", lambda: sentences.Sentence(words="cat")),
        "Sentence(upos)": ("upos", lambda: sentences.Sentence(words=("the", "cat"), upos="DN")),
        "Sentence(deprel)": ("deprel", lambda: sentences.Sentence(words=("a", "b"), deprel="xy")),
        "Sentence(ent)": ("ent", lambda: sentences.Sentence(words=("a", "b"), ent="OO")),
        "sentence_logprob(sentences)": ("sentences", lambda: pairs.sentence_logprob(m(), "The cat sat.")),
        "continuation_logprob(prefixes)": ("prefixes", lambda: pairs.continuation_logprob(m(), "The", [" cat"])),
        "continuation_logprob(words)": ("words", lambda: pairs.continuation_logprob(m(), ["The"], " cat")),
        "control_labels(words)": ("words", lambda: classifier.control_labels("cat", ["N", "N", "N"])),
        "cloze(facts)": ("facts", lambda: cloze.cloze(m(), facts="Wexmira")),
        "cloze(relations)": ("relations", lambda: cloze.cloze(m(), relations="home")),
        "cloze(templates)": ("templates", lambda: cloze.cloze(m(), templates={"home": "{subject} lives in"})),
        "answer_ranks(prompts)": ("prompts", lambda: cloze.answer_ranks(m(), "Wexmira has a house in",
                                                                         torch.tensor([5]))),
        "frequency_baseline(answers)": ("answers", lambda: cloze.frequency_baseline(" Paris", 1)),
        "neuron_page(texts)": ("texts", lambda: examples.neuron_page(m(), CLEAN, 3, 5, progress=False)),
        "activations(texts)": ("texts", lambda: examples.activations(m(), CLEAN, 3, 5, progress=False)),
        "neuron_records(texts)": ("texts", lambda: explain.neuron_records(m(), CLEAN, 3, 5, progress=False)),
        "score_explanations(texts)": ("texts", lambda: explain.score_explanations(m(), CLEAN, 3, 5,
                                                                                 progress=False)),
        "shortcut_reviews(names)": ("names", lambda: reviews.shortcut_reviews(names="Bob")),
        "make_world(ioi_names)": ("ioi_names", lambda: world.make_world(ioi_names="Bob")),
        "sentiment_tcav(concepts)": ("concepts", lambda: sentiment.sentiment_tcav(m(), concepts="animals")),
        "LabelWordClassifier.scores(texts)": ("texts",
                                              lambda: sentiment.LabelWordClassifier(m(), words=GB).scores("good")),
        "LabelWordClassifier.fit(examples)": ("examples",
                                              lambda: sentiment.LabelWordClassifier(m(), words=GB).fit("good")),
        "LinearHeadClassifier.features(texts)": ("texts", lambda: debugging.LinearHeadClassifier(m(), 1)
                                                 .features("good")),
        "Circuit.from_nodes(nodes)": ("nodes", lambda: circuits.Circuit.from_nodes(graph(), "L0H0")),
        "Circuit.from_edges(edges)": ("edges", lambda: circuits.Circuit.from_edges(graph(), "L0H0 -> logits")),
        "tcav(random_texts)": ("random_texts", lambda: cl.concepts.tcav.tcav(
            m(), [CLEAN], ld, {"pets": ["the cat", "a dog"]}, "the sea", hooks="blocks.1.hook_resid_pre")),
        "tcav(concepts[...])": ("concepts", lambda: cl.concepts.tcav.tcav(
            m(), [CLEAN], ld, {"pets": "the cat"}, ["the sea", "a hill"], hooks="blocks.1.hook_resid_pre")),
    }


SITES = _sites()


@pytest.mark.parametrize("site", list(SITES))
def test_a_bare_string_where_a_list_is_expected_is_refused(site):
    arg, call = SITES[site]
    with pytest.raises(InputError) as info:
        call()
    message = str(info.value)
    assert arg in message, message
    assert "list" in message, message


def test_a_bare_string_message_gives_the_fix():
    with pytest.raises(InputError, match=r"single string 'Wexmira', which would be read letter by letter\. "
                                         r"Wrap it in a list: \['Wexmira'\]"):
        tracing.embedding_std(toy(), "Wexmira")


# -- edge masks ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("value", [0.4, float("nan"), 2.0, -1.0])
def test_a_fractional_edge_mask_is_refused(value):
    graph = circuits.Graph.from_model(toy())
    mask = torch.zeros(1, graph.n_edges)
    mask[0, 3] = value
    with pytest.raises(InputError, match="removed must be a boolean mask"):
        circuits.patch_edges(toy(), CLEAN, CORRUPTED, mask, LogitDiff(" mat", " cat"))


def test_a_0_1_edge_mask_equals_the_boolean_one_and_the_edge_list():
    model, ld = toy(), LogitDiff(" mat", " cat")
    graph = circuits.Graph.from_model(model)
    mask = torch.zeros(1, graph.n_edges)
    mask[0, 3] = 1
    as_float = circuits.patch_edges(model, CLEAN, CORRUPTED, mask, ld)
    as_list = circuits.patch_edges(model, CLEAN, CORRUPTED, [[graph.edges[3]]], ld)
    torch.testing.assert_close(as_float, circuits.patch_edges(model, CLEAN, CORRUPTED, mask.bool(), ld))
    torch.testing.assert_close(as_float, as_list)


# -- circuits of another model's graph -------------------------------------------------------------------------

def test_a_circuit_of_another_graph_is_refused_by_patch_edges_and_faithfulness():
    other = circuits.Circuit.from_edges(circuits.Graph.from_model(words()), ["L0H0 -> logits"])
    ld = LogitDiff(" mat", " cat")
    pattern = r"built on a different graph \(zoo/attn-only-2l: 2 layers.*than this model's \(zoo/toy-lm: 4 layers"
    for call in (lambda: circuits.patch_edges(toy(), CLEAN, CORRUPTED, [other], ld),
                 lambda: circuits.patch_edges(toy(), CLEAN, CORRUPTED, other, ld),
                 lambda: circuits.faithfulness(toy(), CLEAN, CORRUPTED, other, ld)):
        with pytest.raises(InputError, match=pattern):
            call()


def test_a_circuit_of_a_same_shaped_graph_of_another_model_warns():
    graph = circuits.Graph.from_model(toy())
    renamed = circuits.Graph(graph.n_layers, graph.n_heads, model="another-model")
    circuit = circuits.Circuit.from_edges(renamed, ["L0H0 -> logits"])
    with pytest.warns(UserWarning, match="'another-model' and is evaluated on 'zoo/toy-lm'"):
        circuits.patch_edges(toy(), CLEAN, CORRUPTED, [circuit], LogitDiff(" mat", " cat"))


# -- structured inputs and hook names at the boundary (item 8) -----------------------------------------------------

@pytest.mark.parametrize("hook", ["ln_final.hook_normalized", "ln_final.hook_scale"])
def test_the_final_norms_hooks_are_refused_by_gradient_methods_with_the_choices(hook):
    """The metric reads the final residual stream through the final norm itself: no gradient reaches ln_final.*
    (it was a raw RuntimeError from autograd, or a KeyError in TCAV)."""
    from circuitlab.concepts import gradients, tcav

    model, ld = toy(), LogitDiff(" mat", " cat")
    calls = {"hook": [lambda: gradients.integrated_gradients(model, CLEAN, ld, hook=hook, steps=2),
                      lambda: gradients.gradient_x_input(model, CLEAN, ld, hook=hook)],
             "hooks": [lambda: tcav.sensitivities(model, [CLEAN], ld, hook),
                       lambda: tcav.tcav(model, [CLEAN, CORRUPTED], ld, {"pets": ["the cat", "a dog", "my cat"]},
                                         ["the sea", "a hill", "old bread", "the king"], hooks=hook, runs=2,
                                         set_size=2)]}
    for arg, fns in calls.items():
        for call in fns:
            with pytest.raises(InputError, match=rf"{arg}='{hook}' is not on the path .* 'blocks\.3\.hook_resid_post'"):
                call()


def test_the_final_norms_output_is_still_collected_exactly():
    """The collector runs the whole model for hooks after the blocks: ln_final's output is a valid probe site."""
    from circuitlab.engine.collect import collect_rows

    model = toy()
    tokens = model.to_tokens(CLEAN)
    rows = collect_rows(model, [tokens[0].tolist()], [[(2,)]], ["ln_final.hook_normalized"])
    _, cache = model.run_with_cache(tokens)
    torch.testing.assert_close(rows["ln_final.hook_normalized"][0], cache["ln_final.hook_normalized"][0, 2])


@pytest.mark.parametrize("by", [None, {"layer": 1}, ("layer", 3)])
def test_a_by_that_is_not_a_tuple_of_axis_names_is_refused(by):
    from circuitlab import patching

    with pytest.raises(InputError, match=r"by=.* must name the axes to sweep as a tuple of strings"):
        patching.sweep(toy(), CLEAN, CORRUPTED, LogitDiff(" mat", " cat"), site="z", by=by, layers=[3],
                       progress=False)


def test_a_concept_name_that_is_not_text_is_refused():
    from circuitlab.concepts import tcav

    with pytest.raises(InputError, match="concepts: the name 3 of a concept must be non-empty text"):
        tcav.tcav(toy(), [CLEAN], LogitDiff(" mat", " cat"), {3: ["the cat", "a dog"]}, ["the sea", "a hill"],
                  hooks="blocks.1.hook_resid_pre")


def test_answer_ranks_wants_one_answer_per_prompt():
    with pytest.raises(InputError, match="2 prompts but 1 answers"):
        module("probing.cloze").answer_ranks(toy(), [CLEAN, CORRUPTED], torch.tensor([5]))


def test_label_word_classifier_examples_must_be_text_label_pairs():
    sentiment = module("concepts.sentiment")
    with pytest.raises(InputError, match=r"examples\[0\] must be a \(text, label\) pair.*got \('good',\)"):
        sentiment.LabelWordClassifier(toy(), words=(" good", " bad")).fit([("good",)])


@pytest.mark.parametrize("call", ["structural_sweep", "rank_neurons"])
def test_an_unknown_keyword_is_named_not_a_raw_type_error_from_collect(call):
    """Extra keywords go to probing.collect; a training option at the top level (epochs=3) was a raw TypeError."""
    from circuitlab import probing
    from circuitlab.neurons import ranking

    sentences = probing.template_sentences(12)
    fn = {"structural_sweep": lambda: probing.structural_sweep(toy(), sentences, hooks=["blocks.1.hook_resid_post"],
                                                               epochs=3, progress=False, cache=False),
          "rank_neurons": lambda: ranking.rank_neurons(toy(), sentences, hooks=[1], epochs=3, progress=False,
                                                       cache=False)}[call]
    with pytest.raises(InputError, match=r"unknown keyword argument\(s\) epochs: .*collect, which takes pool"):
        fn()
