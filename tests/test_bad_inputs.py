"""The bad-input battery: every public analysis against a table of bad inputs.

For each analysis (:data:`ANALYSES`) and each of its arguments, every bad value of that argument's kind
(:data:`KINDS`) replaces the good one, and the call must either raise a :class:`CircuitlabError` whose message
names the argument (its name, or a word of its kind such as "prompt" or "layer"), or, for inputs that are legal
spellings of something else (``layer=-1`` is the last layer), return exactly what the plain spelling returns.
Any other exception, a silent number, or a message that does not say what was wrong fails the test.

**Adding an analysis** is one line in :data:`ANALYSES`: the function, and for each argument its kind and a good
value; the battery does the rest. A new kind of argument is one entry in :data:`KINDS`. The command line has
its own table (:data:`COMMANDS`) with the same rule: a one-line ``circuitlab: error:`` (or argparse's usage
error), never a traceback.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import io
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

import circuitlab as cl
from circuitlab import attribution, circuits, ffn, induction, patching, tracing
from circuitlab.concepts import gradients, tcav
from circuitlab import probing
from circuitlab.probing import heads as probing_heads
from circuitlab.neurons import examples as neuron_examples, explain as neuron_explain
from circuitlab.neurons import ablation as neuron_ablation, ranking as neuron_ranking
from circuitlab.cli import main
from circuitlab.errors import CircuitlabError, NonFiniteError
from circuitlab.metrics import LogitDiff, Normalized, Probability
from circuitlab.results import Result

TOY = "zoo/toy-lm"  # 4 layers x 4 heads, MLPs, a BPE tokenizer, n_ctx 128
WORDS = "zoo/attn-only-2l"  # attention-only, a word-level tokenizer ('t0' ... 't99')


@functools.lru_cache(maxsize=None)
def toy():
    return cl.load_model(TOY)


@functools.lru_cache(maxsize=None)
def words():
    return cl.load_model(WORDS)


@functools.lru_cache(maxsize=None)
def nan_model():
    model = copy.deepcopy(toy())
    with torch.no_grad():
        model.blocks[2].mlp.W_in[5, 7] = float("nan")
    return model


class Lazy:
    """A value built when the battery runs (models load once, not at import)."""

    def __init__(self, make: Callable[[], Any], name: str):
        self.make, self.name = make, name

    def __repr__(self) -> str:
        return self.name


def real(value):
    return value.make() if isinstance(value, Lazy) else value


@dataclass
class Kind:
    """A kind of argument: words a message about it uses, its bad values, and legal alternative spellings
    (``(value, plain)``: the call with ``value`` must equal the call with ``plain``)."""

    words: tuple[str, ...]
    bad: list = field(default_factory=list)
    same: list = field(default_factory=list)


CLEAN, CORRUPTED = "The cat sat on the mat and the dog", "The dog sat on the mat and the cat"
FACT = "Wexmira has a house in"  # a fact of zoo/toy-lm's world (answer " Brindlecote")

KINDS: dict[str, Kind] = {
    "model": Kind(("model", "weights"),
                  bad=[42, None, "zoo/no-such-model", Lazy(nan_model, "a model with a NaN weight")]),
    "prompt": Kind(("prompt", "token"), bad=[
        "", [], 3.5, ["The cat", ""], ["The cat sat", "The"], "the " * 400, torch.zeros(1, 0, dtype=torch.long),
        torch.tensor([[0.5, 1.5]]), torch.tensor([[1, 10**7]]), torch.tensor([[[1, 2]]]), [[]],
    ]),
    "prompts": Kind(("prompt", "token", "data"), bad=[[], 3.5, None]),
    "answer": Kind(("answer", "token", "wrong"), bad=["", " the cat", 10**7, -1, 2.5, True, []]),
    "layer": Kind(("layer",), bad=[99, -99, "1", 1.5, True, None], same=[(-1, 3), (-4, 0)]),
    "layers": Kind(("layer",), bad=[[], [99], [0, 0], "x", [1.5]], same=[([-1], [3]), ([0, -1], [0, 3])]),
    "heads": Kind(("head",), bad=[5, [], [(99, 0)], [(0, 99)], ["LxHy"], "nonsense"],
                  same=[([(-1, -1)], [(3, 3)]), (["L1H2"], [(1, 2)])]),
    "neuron": Kind(("neuron",), bad=[10**6, -10**6, "a", 1.5], same=[(-1, 511)]),
    "pos": Kind(("pos", "position"), bad=[99, -99, "last", 1.5], same=[(-3, 7)]),
    "count": Kind(("k", "n_seqs", "n_tokens", "batch_size", "seq_len", "count"), bad=[0, -2, 1.5, True, "3"]),
    "metric": Kind(("metric",), bad=["logit_diff", 5, None]),
    "site": Kind(("site",), bad=["blocks.2.hook_z", "nope", 3, "mlp_in"]),
    "by": Kind(("by", "axis", "layer"), bad=[("pos",), ("layer", "layer"), ("layer", "nope"), "layer,nope"]),
    "direction": Kind(("direction",), bad=["sideways", 1]),
    "memory": Kind(("max_memory",), bad=[0, -1, "1GB", float("inf"), float("nan"), True]),
    "choice": Kind(("kind", "method", "by", "norm", "choose", "one of"), bad=["nope", 3, None]),
    "senders": Kind(("sender",), bad=[[(99, 0)], "nope", [], [(0, 99)]]),
    "subject": Kind(("subject",), bad=["Kelmira", "Wex", "", (3, 1), (0, 99), 3.5, None, ("a", "b")]),
    "kinds": Kind(("kinds", "state"), bad=["nope", ["resid", "resid"], [], 3, ["mlp", "x"]]),
    "window": Kind(("window",), bad=[0, -1, 99, 1.5, True, "3"]),
    "noise": Kind(("noise",), bad=[0, -1.0, float("nan"), float("inf"), "3", True, None]),
    "threshold": Kind(("threshold",), bad=[-1.0, float("nan"), float("inf"), "1e-3", None, True]),
    "circuit": Kind(("circuit", "edge"), bad=[None, "L0H0 -> logits", 3, ["nope -> logits"]]),
    "hook": Kind(("hook",), bad=["blocks.99.hook_resid_pre", "nope", 3, None, "blocks.0.attn.hook_pattern"]),
    "concepts": Kind(("concept",), bad=[{}, {"pets": []}, {"pets": ["the cat"]}, ["the cat"], None, {"": ["a", "b"]}]),
    "sentences": Kind(("sentence",), bad=[[], 3, "The cat sat.", [None], ["The cat sat."]]),
    "facts": Kind(("facts",), bad=[[], "Wexmira has a house in", [("Wexmira has a house in", "Kelmira", " x")], 3]),
    "seed": Kind(("seed",), bad=[2**64, -1, 1.5, "3", True]),
}


@dataclass
class Analysis:
    """One public analysis: ``function(**good)`` runs; ``args`` maps each argument to (kind, good value)."""

    name: str
    function: Callable
    args: dict[str, tuple[str, Any]]

    def call(self, **override):
        kwargs = {a: real(v) for a, (_, v) in self.args.items()}
        kwargs.update({a: real(v) for a, v in override.items()})
        return self.function(**kwargs)


M = Lazy(toy, TOY)
LD = LogitDiff(" mat", " cat")
SENTENCES = Lazy(lambda: probing.template_sentences(30), "30 template sentences")


@functools.lru_cache(maxsize=None)
def toy_ranking():
    return neuron_ranking.rank_neurons(toy(), probing.template_sentences(30), method="anova", hooks=[1],
                                       progress=False, cache=False)

PATCH = {"model": ("model", M), "clean_tokens": ("prompt", CLEAN), "corrupted_tokens": ("prompt", CORRUPTED),
         "metric": ("metric", LD)}

#: every public analysis, one line each (see the module docstring)
ANALYSES = [
    Analysis("induction.repeated_sequences", induction.repeated_sequences,
             {"model": ("model", M), "seq_len": ("count", 5), "n_seqs": ("count", 2), "seed": ("seed", 0)}),
    Analysis("induction.head_scores", induction.head_scores,
             {"model": ("model", M), "kind": ("choice", "induction"), "seq_len": ("count", 5), "n_seqs": ("count", 2),
              "tokens": ("prompt", "The cat sat. The cat sat."), "max_memory": ("memory", 2**20),
              "seed": ("seed", 0)}),
    Analysis("induction.composition_scores", induction.composition_scores,
             {"model": ("model", M), "kind": ("choice", "K")}),
    Analysis("induction.ablation_effect", induction.ablation_effect,
             {"model": ("model", M), "heads": ("heads", [(1, 2)]), "method": ("choice", "mean"),
              "seq_len": ("count", 5), "n_seqs": ("count", 2), "max_memory": ("memory", 2**20), "seed": ("seed", 0)}),
    Analysis("induction.find_induction_circuit", induction.find_induction_circuit,
             {"model": ("model", M), "seq_len": ("count", 5), "n_seqs": ("count", 2), "method": ("choice", "zero"),
              "max_memory": ("memory", 2**20), "seed": ("seed", 0)}),
    Analysis("attribution.direct_logit_attribution", attribution.direct_logit_attribution,
             {"model": ("model", M), "tokens": ("prompt", CLEAN), "answer": ("answer", " mat"),
              "wrong": ("answer", " cat"), "by": ("choice", "head"), "pos": ("pos", 7),
              "max_memory": ("memory", 2**20)}),
    Analysis("attribution.direct_logit_attribution(by='neuron')", functools.partial(
        attribution.direct_logit_attribution, by="neuron"),
             {"model": ("model", M), "tokens": ("prompt", CLEAN), "answer": ("answer", " mat"), "layer": ("layer", 3)}),
    Analysis("attribution.logit_lens", attribution.logit_lens,
             {"model": ("model", M), "tokens": ("prompt", CLEAN), "answer": ("answer", " mat"), "pos": ("pos", 7),
              "k": ("count", 3), "norm": ("choice", "own"), "max_memory": ("memory", 2**20)}),
    Analysis("ffn.value_tokens", ffn.value_tokens,
             {"model": ("model", M), "layer": ("layer", 3), "neuron": ("neuron", 511), "k": ("count", 3)}),
    Analysis("ffn.sub_updates", ffn.sub_updates,
             {"model": ("model", M), "tokens": ("prompt", CLEAN), "layer": ("layer", 3), "pos": ("pos", 7),
              "token": ("answer", " mat"), "k": ("count", 3), "n_tokens": ("count", 3)}),
    Analysis("ffn.key_examples", functools.partial(ffn.key_examples, progress=False),
             {"model": ("model", M), "tokens_or_texts": ("prompts", [CLEAN, CORRUPTED]), "layer": ("layer", 3),
              "neuron": ("neuron", 511), "k": ("count", 3), "batch_size": ("count", 1),
              "max_memory": ("memory", 2**20)}),
    Analysis("patching.sweep", functools.partial(patching.sweep, progress=False),
             {**PATCH, "site": ("site", "z"), "by": ("by", ("layer", "head")), "direction": ("direction", "noising"),
              "layers": ("layers", [3]), "max_memory": ("memory", 2**20)}),
    Analysis("patching.attribution", patching.attribution,
             {**PATCH, "site": ("site", "z"), "by": ("by", ("layer", "head")), "direction": ("direction", "noising"),
              "layers": ("layers", [3]), "max_memory": ("memory", 2**20)}),
    Analysis("patching.path_patch", functools.partial(patching.path_patch, progress=False),
             {**PATCH, "senders": ("senders", [(1, 2)]), "direction": ("direction", "noising"),
              "max_memory": ("memory", 2**20)}),
    Analysis("tracing.trace", functools.partial(tracing.trace, progress=False),
             {"model": ("model", M), "prompt": ("prompt", FACT), "subject": ("subject", "Wexmira"),
              "answer": ("answer", " Brindlecote"), "kinds": ("kinds", ["resid", "attn"]), "window": ("window", 2),
              "noise": ("noise", 3.0), "samples": ("count", 2), "max_memory": ("memory", 2**20), "seed": ("seed", 0)}),
    Analysis("tracing.average_indirect_effect", functools.partial(tracing.average_indirect_effect, progress=False),
             {"model": ("model", M), "facts": ("facts", [(FACT, "Wexmira", " Brindlecote")]),
              "kinds": ("kinds", "attn"), "window": ("window", 1), "noise": ("noise", 3.0),
              "samples": ("count", 1), "max_memory": ("memory", 2**20), "seed": ("seed", 0)}),
    Analysis("circuits.eap", circuits.eap, {**PATCH}),
    Analysis("circuits.eap_ig", circuits.eap_ig, {**PATCH, "steps": ("count", 2), "max_memory": ("memory", 2**20)}),
    Analysis("circuits.acdc", circuits.acdc, {**PATCH, "threshold": ("threshold", 0.5),
                                              "ablation": ("choice", "corrupted"), "max_memory": ("memory", 2**20)}),
    Analysis("circuits.patch_edges", circuits.patch_edges, {**PATCH, "removed": ("circuit", [["L0H0 -> logits"]]),
                                                            "ablation": ("choice", "mean")}),
    Analysis("circuits.faithfulness", circuits.faithfulness,
             {**PATCH, "circuit": ("circuit", Lazy(lambda: circuits.Circuit.from_edges(
                 circuits.Graph.from_model(toy()), ["L0H0 -> logits"]), "a one-edge circuit"))}),
    Analysis("concepts.integrated_gradients", gradients.integrated_gradients,
             {"model": ("model", M), "prompts": ("prompt", CLEAN), "metric": ("metric", LD),
              "hook": ("hook", "hook_embed"), "baseline": ("choice", "mean"), "steps": ("count", 4),
              "method": ("choice", "riemann_trapezoid"), "max_memory": ("memory", 2**20)}),
    Analysis("concepts.gradient_x_input", gradients.gradient_x_input,
             {"model": ("model", M), "prompts": ("prompt", CLEAN), "metric": ("metric", LD),
              "hook": ("hook", "blocks.1.hook_resid_pre"), "max_memory": ("memory", 2**20)}),
    Analysis("concepts.tcav", tcav.tcav,
             {"model": ("model", M), "inputs": ("prompts", [CLEAN, CORRUPTED]), "metric": ("metric", LD),
              "concepts": ("concepts", {"pets": ["the cat", "a dog", "my cat", "the dog"]}),
              "random_texts": ("prompts", ["the sea", "a hill", "old bread", "the king", "a door", "the road",
                                           "my coat", "the rain"]),
              "hooks": ("hook", "blocks.1.hook_resid_pre"), "runs": ("count", 2), "set_size": ("count", 3),
              "max_memory": ("memory", 2**20), "seed": ("seed", 0)}),
    Analysis("probing.collect", functools.partial(probing.collect, progress=False, cache=False),
             {"model": ("model", M), "sentences": ("sentences", SENTENCES),
              "hooks": ("hook", ["blocks.1.hook_resid_post"]), "pool": ("choice", "first"),
              "max_memory": ("memory", 2**20)}),
    Analysis("probing.probe_sweep", functools.partial(probing.probe_sweep, progress=False, cache=False, seeds=(0,)),
             {"source": ("model", M), "sentences": ("sentences", SENTENCES), "task": ("choice", "upos"),
              "hooks": ("hook", ["blocks.1.hook_resid_post"]), "probes": ("choice", ("linear",)),
              "seeds": ("seed", (0,)), "split_seed": ("seed", 0)}),
    Analysis("probing.structural_sweep", functools.partial(probing.structural_sweep, progress=False, cache=False),
             {"source": ("model", M), "sentences": ("sentences", SENTENCES),
              "hooks": ("hook", ["blocks.1.hook_resid_post"]), "rank": ("count", 4), "seeds": ("seed", (0,)),
              "split_seed": ("seed", 0)}),
    Analysis("probing.head_sweep", functools.partial(probing_heads.head_sweep, progress=False, min_count=1),
             {"model": ("model", M), "sentences": ("sentences", SENTENCES), "layers": ("layers", [3]),
              "direction": ("choice", "dependent"), "max_memory": ("memory", 2**20)}),
    Analysis("metrics.LogitDiff", lambda correct, wrong: LogitDiff(correct, wrong, model=toy())(toy()(CLEAN)),
             {"correct": ("answer", " mat"), "wrong": ("answer", " cat")}),
    Analysis("metrics.Probability", lambda answer, pos: Probability(answer, pos=pos, model=toy())(toy()(CLEAN)),
             {"answer": ("answer", " mat"), "pos": ("pos", 7)}),
    Analysis("metrics.Normalized.fit", Normalized.fit,
             {"metric": ("metric", LD), "model": ("model", M), "clean_tokens": ("prompt", CLEAN),
              "corrupted_tokens": ("prompt", CORRUPTED)}),
    Analysis("neurons.examples.neuron_page", functools.partial(neuron_examples.neuron_page, progress=False),
             {"model": ("model", M), "texts": ("prompts", [CLEAN, CORRUPTED]), "layer": ("layer", 3),
              "neuron": ("neuron", 511), "k": ("count", 3), "bins": ("count", 4), "batch_size": ("count", 1),
              "max_memory": ("memory", 2**20)}),
    Analysis("neurons.explain.score_explanations", functools.partial(neuron_explain.score_explanations,
                                                                      shuffled=False, progress=False),
             {"model": ("model", M), "texts": ("prompts", [CLEAN, CORRUPTED, FACT, "The king went to the sea."]),
              "layer": ("layer", 3), "neurons": ("neuron", 511), "n_explain": ("count", 2), "n_top": ("count", 2),
              "n_random": ("count", 2), "batch_size": ("count", 1), "max_memory": ("memory", 2**20),
              "seed": ("seed", 0)}),
    Analysis("neurons.ranking.rank_neurons",
             functools.partial(neuron_ranking.rank_neurons, progress=False, cache=False),
             {"source": ("model", M), "sentences": ("sentences", SENTENCES), "task": ("choice", "upos"),
              "method": ("choice", "anova"), "hooks": ("hook", ["blocks.1.mlp.hook_post"]), "bins": ("count", 4),
              "max_memory": ("memory", 2**20), "split_seed": ("seed", 0)}),
    Analysis("neurons.ranking.correlation_ranking", functools.partial(neuron_ranking.correlation_ranking,
                                                                      progress=False, cache=False),
             {"source": ("model", M), "others": ("model", M), "sentences": ("sentences", SENTENCES),
              "hooks": ("hook", ["blocks.1.mlp.hook_post"]), "max_memory": ("memory", 2**20)}),
    Analysis("neurons.ablation.ablation_curves", functools.partial(neuron_ablation.ablation_curves, progress=False,
                                                                   cache=False, random_seeds=(0,)),
             {"source": ("model", M), "ranking": ("choice", Lazy(lambda: toy_ranking(), "an ANOVA ranking")),
              "sentences": ("sentences", SENTENCES), "task": ("choice", "upos"), "ks": ("count", [1, 4]),
              "modes": ("choice", ("keep",)), "protocols": ("choice", ("retrained",)),
              "random_seeds": ("seed", (0,)), "split_seed": ("seed", 0), "control_seed": ("seed", 0)}),
    Analysis("neurons.ablation.loss_curves", functools.partial(neuron_ablation.loss_curves, progress=False,
                                                               random_seeds=(0,)),
             {"model": ("model", M), "ranking": ("choice", Lazy(lambda: toy_ranking(), "an ANOVA ranking")),
              "sentences": ("prompts", [CLEAN, CORRUPTED]), "ks": ("count", [2]), "method": ("choice", "zero"),
              "max_memory": ("memory", 2**20), "random_seeds": ("seed", (0,))}),
    Analysis("probing.edge_probe", functools.partial(probing.edge_probe, progress=False, cache=False, epochs=1),
             {"source": ("model", M), "sentences": ("sentences", SENTENCES), "task": ("choice", "pos"),
              "pool": ("choice", "mean"), "proj": ("count", 8), "seed": ("seed", 0), "split_seed": ("seed", 0)}),
]

# which kinds' bad values do not apply to an argument (e.g. a generated-sequences argument takes no text)
SKIP = {
    ("induction.repeated_sequences", "seq_len"): {None},  # None means "the default length"
    ("induction.head_scores", "seq_len"): {None},
    ("induction.ablation_effect", "seq_len"): {None},
    ("induction.find_induction_circuit", "seq_len"): {None},
    ("attribution.direct_logit_attribution(by='neuron')", "layer"): {None},  # None: every layer's neurons
    ("circuits.acdc", "metric"): {None},  # None: KL divergence from the clean output, as in the ACDC paper
    ("circuits.patch_edges", "metric"): {None},
    ("circuits.faithfulness", "metric"): {None},
    ("concepts.integrated_gradients", "baseline"): {3},  # a token id: the baseline is that token at every position
    ("concepts.tcav", "hooks"): {3, None},
    ("probing.collect", "hooks"): {3, None},  # a layer number (its residual stream output); None: the defaults
    ("probing.probe_sweep", "hooks"): {3, None},
    ("probing.structural_sweep", "hooks"): {3, None},  # a layer number (its residual stream output); None: every layer
    ("neurons.ranking.rank_neurons", "hooks"): {3, None},  # a layer number (its MLP neurons); None: every layer's
    ("neurons.ranking.correlation_ranking", "hooks"): {3, None},
}


def _cases():
    for a in ANALYSES:
        for arg, (kind, _) in a.args.items():
            skip = SKIP.get((a.name, arg), set())
            for value in KINDS[kind].bad:
                if not any(value is s or (type(value) is type(s) and value == s) for s in skip):
                    yield pytest.param(a, arg, value, id=f"{a.name}-{arg}={_short(value)}")


def _same_cases():
    for a in ANALYSES:
        for arg, (kind, _) in a.args.items():
            for value, plain in KINDS[kind].same:
                yield pytest.param(a, arg, value, plain, id=f"{a.name}-{arg}={_short(value)}=={_short(plain)}")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 24 else text[:21] + "..."


@pytest.mark.parametrize("analysis,arg,value", list(_cases()))
def test_bad_input_is_a_circuitlab_error_naming_the_argument(analysis: Analysis, arg: str, value):
    kind = KINDS[analysis.args[arg][0]]
    try:
        out = analysis.call(**{arg: value})
    except CircuitlabError as exc:
        message = str(exc).lower()
        assert any(w.lower() in message for w in (arg, *kind.words)), (
            f"{analysis.name}({arg}={value!r}) raised a message that does not name {arg!r}: {exc}")
        if isinstance(real(value), type(nan_model())) and real(value) is nan_model():
            assert isinstance(exc, NonFiniteError) and "blocks.2.mlp.W_in" in str(exc)
        return
    pytest.fail(f"{analysis.name}({arg}={value!r}) returned {type(out).__name__} instead of a CircuitlabError")


@pytest.mark.parametrize("analysis,arg,value,plain", list(_same_cases()))
def test_legal_alternative_spellings_give_the_same_result(analysis: Analysis, arg: str, value, plain):
    got, want = analysis.call(**{arg: value}), analysis.call(**{arg: plain})
    got_parts, want_parts = _parts(got), _parts(want)
    assert len(got_parts) == len(want_parts)
    for g, w in zip(got_parts, want_parts):
        if isinstance(g, torch.Tensor):
            torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)
        else:
            assert g == w


def _parts(obj, depth: int = 0) -> list:
    """The numbers and labels a result holds, in a fixed order (tensors, label dicts, nested results)."""
    if depth > 4:
        return []
    if isinstance(obj, torch.Tensor):
        return [obj.detach().float()]
    if isinstance(obj, Result):
        return [obj.values.detach().float(), obj.labels]
    if dataclasses.is_dataclass(obj):
        out = []
        for f in dataclasses.fields(obj):
            if f.name not in ("meta", "seconds"):
                out += _parts(getattr(obj, f.name), depth + 1)
        return out
    if isinstance(obj, (list, tuple)):
        return [p for item in obj for p in _parts(item, depth + 1)]
    if isinstance(obj, (int, float, str)):
        return [obj]
    return []


# -- inputs that only some models can get wrong -----------------------------------------------------------------

def test_words_outside_a_word_level_vocabulary_are_named():
    """The attention-only zoo models know 't0' ... 't99' only; any other word used to become '<bos>'."""
    model = words()
    with pytest.raises(CircuitlabError, match=r"does not know \('hello'\)"):
        attribution.direct_logit_attribution(model, "t1 t2 t3 t1 t2", "hello")
    with pytest.raises(CircuitlabError, match=r"does not know \('cat', 'sat'\)"):
        attribution.logit_lens(model, "t1 cat t2 sat")
    with pytest.raises(CircuitlabError, match="does not know"):
        patching.sweep(model, "t1 t2 t3", "t1 t5 zz", LogitDiff("t3", "t4"), progress=False)
    # the unknown token written out is not an unknown word
    assert attribution.direct_logit_attribution(model, "<bos> t1 t2", "t3").values.numel() > 0


def test_non_finite_activations_are_traced_to_where_they_first_appear():
    """Finite weights, but an embedding so large that the first LayerNorm overflows: the error names the hook."""
    model = copy.deepcopy(toy())
    token = model.to_tokens(" mat", prepend_bos=False)[0, 0]
    with torch.no_grad():
        model.embed.W_E[token] = 3e38
    with pytest.raises(NonFiniteError, match=r"first become non-finite at blocks\.0\.") as info:
        attribution.direct_logit_attribution(model, "The cat sat on the mat", " dog", " cat")
    assert "prompt 0" in str(info.value)


def test_a_weight_modified_in_place_is_checked_again():
    model = copy.deepcopy(toy())
    induction.composition_scores(model)  # passes, and the finite weights are remembered
    with torch.no_grad():
        model.blocks[0].attn.W_V[1, 2, 3] = float("inf")
    with pytest.raises(NonFiniteError, match=r"blocks\.0\.attn\.W_V"):
        induction.composition_scores(model)


# -- the command line --------------------------------------------------------------------------------------------

def _bad_files() -> dict[str, str]:
    """Data files in another encoding than UTF-8 (Latin-1: 'Caf\xe9'), written once into a temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix="circuitlab-bad-files-"))
    files = {
        "latin1.txt": "The cat sat on the mat.\nCaf\xe9 au lait, the dog said.\n",
        "latin1.conllu": "# text = Caf\xe9\n1\tCaf\xe9\tcaf\xe9\tNOUN\t_\t_\t0\troot\t_\t_\n\n",
        "latin1.jsonl": '{"sentence_good": "The caf\xe9 is open.", "sentence_bad": "The caf\xe9 are open."}\n',
    }
    for name, text in files.items():
        (folder / name).write_bytes(text.encode("latin-1"))
    return {name: str(folder / name) for name in files}


BAD_FILES = _bad_files()

#: each subcommand with bad arguments; every row must end in a one-line error, never a traceback
COMMANDS = [
    ["induction", "-m", "zoo/no-such-model"],
    ["induction", "-m", WORDS, "--n-seqs", "0"],
    ["patch", "-m", TOY, "--clean", "", "--corrupted", "", "--answer", " mat", "--wrong", " cat"],
    ["patch", "-m", TOY, "--clean", CLEAN, "--corrupted", CORRUPTED, "--answer", " mat", "--wrong", " mat"],
    ["patch", "-m", TOY, "--clean", CLEAN, "--corrupted", CORRUPTED, "--answer", " mat", "--wrong", " cat",
     "--site", "blocks.2.hook_z"],
    ["patch", "-m", TOY, "--clean", CLEAN, "--corrupted", "The dog", "--answer", " mat", "--wrong", " cat"],
    ["attribute", "-m", TOY, "--prompt", "", "--answer", " mat"],
    ["attribute", "-m", TOY, "--prompt", CLEAN, "--answer", " mat", "--top", "-2"],
    ["attribute", "-m", TOY, "--prompt", CLEAN, "--answer", " mat", "--pos", "99"],
    ["attribute", "-m", WORDS, "--prompt", "t1 t2", "--answer", "hello"],
    ["ffn", "-m", TOY, "--layer", "99"],
    ["ffn", "-m", TOY, "--layer", "1", "--token", " mat"],
    ["ffn", "-m", TOY, "--layer", "1", "--neuron", "3", "--data", "no/such/file.txt"],
    ["ffn", "-m", WORDS, "--layer", "0"],
    ["trace", "-m", TOY, "--prompt", FACT, "--subject", "Zorv", "--answer", " Brindlecote"],
    ["trace", "-m", TOY, "--prompt", FACT, "--subject", "Wexmira", "--answer", " Brindlecote", "--window", "9"],
    ["trace", "-m", TOY, "--prompt", FACT, "--subject", "Wexmira", "--answer", " Brindlecote", "--noise", "0"],
    ["trace", "-m", TOY, "--prompt", FACT, "--subject", "Wexmira", "--answer", " Brindlecote", "--kinds", "mlp,x"],
    ["trace", "-m", WORDS, "--prompt", "t1 t2 t3", "--subject", "t2", "--answer", " t4", "--kinds", "mlp"],
    ["circuit", "-m", "zoo/no-such-model"],
    ["circuit", "-m", WORDS, "--task", "ioi"],
    ["circuit", "-m", WORDS, "--method", "eap", "--steps", "3"],
    ["circuit", "-m", WORDS, "--threshold", "-1"],
    ["circuit", "-m", WORDS, "--top", "0"],
    ["circuit", "-m", WORDS, "--seq-len", "40"],
    ["models", "--nope"],
    ["reproduce"],
    ["reproduce", "no-such-finding"],
    ["reproduce", "--all", "--model", TOY],
    ["reproduce", "induction-heads-need-two-layers", "--model", "zoo/no-such-model"],
    ["neurons", "explain", "-m", TOY, "--llm"],
    ["neurons", "examples", "-m", TOY],
    ["neurons", "examples", "-m", TOY, "--neuron", "3", "--data", "no/such/file.txt"],
    ["neurons", "explain", "-m", TOY, "--layer", "9"],
    ["neurons", "explain", "-m", WORDS],
    ["neurons", "rank", "-m", WORDS],
    # seeds beyond what the random generators take, negative, or not whole numbers: usage errors naming --seed
    ["induction", "-m", WORDS, "--seed", str(2**64)],
    ["trace", "-m", TOY, "--prompt", FACT, "--subject", "Wexmira", "--answer", " Brindlecote", "--seed", "-1"],
    ["circuit", "-m", WORDS, "--seed", "1.5"],
    ["neurons", "explain", "-m", TOY, "--seed", "3x"],
    ["probe", "pos", "-m", TOY, "--seed", str(2**63)],
    ["demo", "--seed", "9" * 100_000],
    ["reproduce", "induction-heads-need-two-layers", "--seed", str(2**64)],
    # data files that are not UTF-8: an error naming the file, the line and the column
    ["ffn", "-m", TOY, "--layer", "1", "--neuron", "3", "--data", BAD_FILES["latin1.txt"]],
    ["neurons", "examples", "-m", TOY, "--neuron", "3", "--data", BAD_FILES["latin1.txt"]],
    ["probe", "pos", "-m", TOY, "--data", BAD_FILES["latin1.conllu"]],
    ["probe", "pairs", "-m", TOY, "--blimp", BAD_FILES["latin1.jsonl"]],
]


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(a)[:60] for a in COMMANDS])
def test_bad_command_lines_end_in_one_line_errors(argv: list[str]):
    err, out = io.StringIO(), io.StringIO()
    with redirect_stderr(err), redirect_stdout(out):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's own usage errors
            code = exc.code
    text = err.getvalue()
    assert code not in (0, None), f"{argv} succeeded: {out.getvalue()[-300:]}"
    assert "Traceback" not in text
    assert "circuitlab: error:" in text or "error:" in text.splitlines()[-1], text
    assert len(text.splitlines()[-1]) < 1000, f"{argv}: an error line of {len(text.splitlines()[-1]):,} characters"
    if "--seed" in argv:
        assert "--seed" in text.splitlines()[-1], text
    if any(a in BAD_FILES.values() for a in argv):
        assert "not UTF-8: line 2" in text or "not UTF-8: line 1" in text, text
