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

**Coverage** is checked, not hoped for: :func:`test_every_public_analysis_is_in_the_battery` lists the public
analyses of the rooms (:data:`ROOMS`; the rule is in :func:`_public_functions`) and fails on one that is neither a
row of :data:`ANALYSES` nor in :data:`EXEMPT` with its reason; :func:`test_every_command_is_in_the_battery` does
the same for the commands of ``circuitlab --help`` and their subcommands against :data:`COMMANDS`.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib
import inspect
import io
import os
import pkgutil
import re
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

import circuitlab as cl
from circuitlab import attention, attribution, circuits, ffn, induction, patching, tracing
from circuitlab.concepts import gradients, tcav
from circuitlab import probing
from circuitlab.probing import heads as probing_heads
from circuitlab.neurons import examples as neuron_examples, explain as neuron_explain
from circuitlab.neurons import ablation as neuron_ablation, ranking as neuron_ranking
from circuitlab import distributed, dynamics, editing, neurons, reproduce, weights
from circuitlab.concepts import debugging, rationales, sentiment
from circuitlab.neurons import compositional as neuron_compositional
from circuitlab.probing import minimal_pairs
from circuitlab.features import toy as toy_models
from circuitlab import features
from circuitlab.features import evaluation as sae_evaluation
from circuitlab.features import transcoders
from circuitlab import graphs
from circuitlab.cli import main
from circuitlab.errors import CircuitlabError, NonFiniteError
from circuitlab.metrics import LogitDiff, Normalized, Probability
from circuitlab.results import Result

HERE = os.path.dirname(os.path.abspath(__file__))  # a folder that exists (the same path in every worker)
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
    # a list of texts: a bare string would be read letter by letter (or as a corpus of one), so it is refused
    # lists of texts (a bare string would be read letter by letter; not prompts: no token ids)
    "texts": Kind(("text", "prompt", "sentence", "input", "prefix", "word"),
                  bad=[[], 3.5, None, "Wexmira", "the cat", [""], [3], ["the cat", None]]),
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
    "concepts": Kind(("concept",), bad=[{}, {"pets": []}, {"pets": ["the cat"]}, ["the cat"], None, {"": ["a", "b"]},
                                        {"pets": "the cat"}, {3: ["the cat", "a dog", "my cat"]}]),
    "sentences": Kind(("sentence",), bad=[[], 3, "The cat sat.", [None], ["The cat sat."]]),
    "facts": Kind(("facts",), bad=[[], "Wexmira has a house in", [("Wexmira has a house in", "Kelmira", " x")], 3]),
    # a corrupted prompt that does not move the metric: a ratio over the difference would be float noise
    "near-zero denominators": Kind(("corrupt", "resolution", "float noise"), bad=[CLEAN]),
    # repeated items where a method assumes distinct ones (a control, a split); one kind per type of argument
    "repeated neurons": Kind(("neuron", "repeat"), bad=[[511, 511], [511, -1]]),
    "repeated sentences": Kind(("sentence", "distinct"), bad=[
        Lazy(lambda: probing.template_sentences(30)[:1] * 30, "one sentence x 30"),
        Lazy(lambda: probing.template_sentences(2) * 15, "two sentences x 15")]),
    "repeated texts": Kind(("repeat", "random_texts"), bad=[
        ["the sea", "the sea", "a hill", "old bread", "the king", "a door", "the road", "the rain"]]),
    "repeated concept texts": Kind(("concept",), bad=[
        {"pets": ["the cat", "the cat", "a dog", "my cat"]},
        {"pets": ["the sea", "a hill", "old bread", "the king"]}]),  # the concept is drawn from the random pool
    # lists of texts (not prompts: no token ids), one label per sentence, minimal pairs, token rows and their starts
    "labels": Kind(("label",), bad=[[], 3, [0, 1], [None] * 30, [1] * 30]),
    "pairs": Kind(("pair",), bad=[[], 3, None, [None], [("The cat sat.", "The cat sit.")]]),
    "rows": Kind(("row", "token"), bad=[[], 3, None, [torch.zeros(0, dtype=torch.long)], [torch.tensor([1.5, 2.5])],
                                        [torch.tensor([1, 10**7])]]),
    "starts": Kind(("start",), bad=[[], [99], [-99], [1.5], 3, None, [3, 4]]),
    "matrix": Kind(("matri", "tensor", "row", "column"), bad=[Lazy(lambda: torch.randn(5, 3), "5 rows, not 16"),
                                                              torch.zeros(16, 0), "x", None]),
    "examples": Kind(("train", "example", "review"), bad=[[], 3, None, "a good film", [None]]),
    # the distributed layer: executors, the function each shard runs, the shards (keyword dicts)
    "executor": Kind(("executor",), bad=["nope", 3, "", Lazy(lambda: object(), "an object without map")]),
    "callable": Kind(("fn", "function", "callable"), bad=[None, 3, "fn"]),
    "shards": Kind(("shard",), bad=[[], 3, None, "x", [3], [{"y": 1}]]),
    "words": Kind(("word",), bad=[(" good", " good"), " good", (" good",), (" the cat", " bad"), None, ("", " bad")]),
    "templates": Kind(("template",), bad=[{}, {"home": []}, {"home": ["no slot here"]}, "x", 3,
                                          {"home": "{subject} lives in"}, {"home": [""]}]),
    "finding": Kind(("finding",), bad=["no-such-finding", "", 3, None, ["induction-heads-need-two-layers"]]),
    "seed": Kind(("seed",), bad=[2**64, -1, 1.5, "3", True]),
    "sentence pairs": Kind(("input", "pair"), bad=["bogus", [], 3, None, [None], [("only one",)], [("", "a dog")],
                                                   [("the cat", 7)]]),
    # one head (not a list); the same spellings as "heads"
    "head": Kind(("head",), bad=[5, [], (99, 0), (0, 99), "LxHy", None, [(1, 2)]],
                 same=[((-1, -1), (3, 3)), ("L1H2", (1, 2)), ("1.2", (1, 2))]),
    # rows of a vocabulary-sized table: token ids or single-token strings
    "vocabulary tokens": Kind(("token",), bad=[[], 10**7, [10**7], -10**7, 1.5, [1.5], " the cat sat", True]),
    # toy models of superposition (circuitlab.features.toy)
    "toy": Kind(("toy",), bad=[None, 3, "zoo/toy-lm", Lazy(lambda: nan_toy(), "a toy model with a NaN weight")]),
    "sparsity": Kind(("sparsit",), bad=[-0.1, 1.0, float("nan"), "0.5", True, None, [], [0.5, 1.5]]),
    "sparsities": Kind(("sparsit",), bad=[[], "0.5", None, [1.0], [-0.1], [float("nan")], [0.5, 0.5]]),
    "importance": Kind(("importance",), bad=[0.0, -1.0, 1.5, "x", None, [1.0, -1.0, 1.0], [1.0, 1.0],
                                             float("nan"), [[1.0, 1.0, float("inf")]]]),
    "importances": Kind(("importance",), bad=[[], "x", None, [0.0], [-1.0], [float("nan")], [1.0, 1.0]]),
    "lr": Kind(("lr",), bad=[0, -1.0, float("inf"), float("nan"), "1e-3", True, None]),
    "features batch": Kind(("x", "batch"), bad=[None, "x", Lazy(lambda: torch.zeros(4, 1, 3), "[4, 1, 3]"),
                                                Lazy(lambda: torch.zeros(4, 1, 5, dtype=torch.long), "ints")]),
    "angles": Kind(("angle",), bad=[[], "x", None, [float("nan")]]),
    # an SAE: a name or folder that is not one, a cut-short weight file, NaN weights, a d_in the hook lacks
    "transcoders": Kind(("transcoder",), bad=[None, 3, "no-such-set", "toy-lm/tc-9", ["toy-lm/tc-0"],
                                              Lazy(lambda: {0: "toy-lm/tc-0", 1: "toy-lm/tc-0"}, "two for layer 0")]),
    "sae": Kind(("sae",), bad=[None, 3, "no/such/sae", "toy-lm/res-99",
                               Lazy(lambda: _bad_saes()["truncated"], "a truncated sae_weights.safetensors"),
                               Lazy(lambda: _bad_saes()["nan"], "an SAE folder with NaN weights"),
                               Lazy(lambda: _bad_saes()["d_in"], "an SAE with d_in 64 for a 128-wide hook"),
                               Lazy(lambda: _bad_saes()["arch"], "an SAE folder of an unknown architecture")]),
    # model editing (issue 35): the new object (the true answer, " Brindlecote", is refused: nothing to edit),
    # layers to edit ('auto' or MLP layers), key covariances (NaN, wrong shape), requests, edits and cases
    "new": Kind(("new",), bad=["", "   ", 3, None, " Brindlecote"]),
    "edit layer": Kind(("layer",), bad=[99, -99, "1", "nope", 1.5, True, None]),
    "edit layers": Kind(("layer",), bad=[[], [99], [0, 0], "x", [1.5], None]),
    "covariance": Kind(("covariance",), bad=[Lazy(lambda: torch.full((512, 512), float("nan")), "a NaN covariance"),
                                             torch.zeros(3, 3), "x", Lazy(lambda: torch.triu(torch.ones(512, 512)),
                                                                          "an asymmetric matrix")]),
    "covariances": Kind(("covariance",), bad=[{0: torch.zeros(3, 3)}, "x",
                                              Lazy(lambda: {0: torch.full((512, 512), float("nan"))}, "{0: NaN}")]),
    "requests": Kind(("request",), bad=[[], "x", [("a",)], 3, None, [(FACT, "Wexmira", " Pellmoor")] * 2]),
    "edit": Kind(("edit",), bad=[None, 3, "x"]),
    "case": Kind(("case",), bad=[None, 3, (FACT, "Wexmira", " Pellmoor")]),
    "cases": Kind(("case",), bad=[[], None, 3, [None]]),
    "methods": Kind(("method",), bad=[{}, None, 3]),
    # training dynamics: a held-out text, bands of positions (start, stop), checkpoints (step, model)
    "text": Kind(("text",), bad=["", 3, None, ["t1 t2 t3"], "t1 t2 t3"]),
    "curves source": Kind(("source", "curves"), bad=[42, None, "", "zoo/no-such-model", "zoo/toy-lm", HERE,
                                                     Lazy(words, WORDS)]),
    "band": Kind(("early", "late"), bad=[(0, 5), (5, 5), (10, 5), (5, 999), 5, "5-10", (1.5, 3), None]),
    "checkpoints": Kind(("checkpoint", "model"), bad=[[], 3, None, [(1, 2, 3)], [(-1, Lazy(words, WORDS))],
                                                      [(5, Lazy(words, WORDS)), (2, Lazy(words, WORDS))], [(0, 42)]]),
    # SAE latents (issue 31: dashboards, feature explanations, attribution, steering); the toy SAE has 256
    "latents": Kind(("latent",), bad=[256, -1, [3, 3], [], "7", 1.5, True, [0, 999]]),
    "alpha": Kind(("alpha",), bad=[float("nan"), float("inf"), "1", None, True]),
}


def _toy_sae(d_in: int = 128):
    """A TopK SAE (seeded random weights) on zoo/toy-lm's blocks.1.hook_resid_post."""
    from circuitlab.features import SAE, SAEConfig

    g = torch.Generator().manual_seed(0)
    sae = SAE(SAEConfig("topk", d_in, 256, k=8, hook_name="blocks.1.hook_resid_post", model_name=TOY))
    with torch.no_grad():
        for p in sae.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return sae


@functools.lru_cache(maxsize=None)
def _bad_saes() -> dict:
    """SAE folders (SAELens's format) that must be refused, written once per run."""
    import json

    from circuitlab.features import save_sae

    folder = Path(tempfile.mkdtemp(prefix="circuitlab-bad-saes-"))
    good = save_sae(_toy_sae(), folder / "good")
    out = {"d_in": _toy_sae(64)}
    weights = (good / "sae_weights.safetensors").read_bytes()
    cut = folder / "truncated"
    cut.mkdir()
    (cut / "cfg.json").write_text((good / "cfg.json").read_text())
    (cut / "sae_weights.safetensors").write_bytes(weights[: len(weights) // 3])
    out["truncated"] = str(cut)
    nan = _toy_sae()
    with torch.no_grad():
        nan.W_enc[3, 5] = float("nan")
    out["nan"] = str(save_sae(nan, folder / "nan"))
    arch = save_sae(_toy_sae(), folder / "arch")
    cfg = json.loads((arch / "cfg.json").read_text())
    cfg["architecture"] = "gated"
    (arch / "cfg.json").write_text(json.dumps(cfg))
    out["arch"] = str(arch)
    return out


def _spliced_logits(model, sae, error_term=False):
    """features.splice entered: the model's logits on one prompt with the SAE spliced in."""
    with features.splice(model, sae, error_term=error_term):
        return model(CLEAN)


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
W = Lazy(words, WORDS)
WORD_TEXT = " ".join(f"t{(7 * i) % 13}" for i in range(120))  # 120 words of attn-only-2l's vocabulary, repeating
WORD_TOKENS = Lazy(lambda: cl.dynamics.text_windows(words(), WORD_TEXT, seq_len=24, stride=16), "4 text windows")
NAN = next(v for v in KINDS["model"].bad if isinstance(v, Lazy) and v.make is nan_model)
LD = LogitDiff(" mat", " cat")
SENTENCES = Lazy(lambda: probing.template_sentences(30), "30 template sentences")


@functools.lru_cache(maxsize=None)
def toy_ranking():
    return neuron_ranking.rank_neurons(toy(), probing.template_sentences(30), method="anova", hooks=[1],
                                       progress=False, cache=False)

@functools.lru_cache(maxsize=None)
def toy_eap():
    return circuits.eap(toy(), CLEAN, CORRUPTED, LD)


@functools.lru_cache(maxsize=None)
def long_context():
    """A random-init 2-layer model with zoo/toy-lm's tokenizer and n_ctx 2048: few-shot prompts fit (toy-lm's 128
    do not)."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    tok = toy().tokenizer
    cfg = HookedTransformerConfig(n_layers=2, d_model=64, n_heads=4, d_head=16, d_mlp=128, n_ctx=2048,
                                  d_vocab=len(tok), act_fn="gelu_new", normalization_type="LN", seed=0)
    return HookedTransformer(cfg, tokenizer=tok).eval()


#: sentences that a method splits into train / dev / test (repeats must not leak across the split)
SPLIT = ("sentences", "repeated sentences")




@functools.lru_cache(maxsize=None)
def REVIEWS():
    return debugging.shortcut_reviews(4)


def _shard_fn(model, x):
    return x * 2


W = Lazy(words, WORDS)


@functools.lru_cache(maxsize=None)
def toy5():
    """A toy model of superposition: 5 features in 2 dimensions, a few steps of training (its numbers do not
    matter to the battery)."""
    return toy_models.train(5, 2, 0.9, 1.0, steps=5, restarts=1)


def nan_toy():
    model = toy5()
    W = model.W.clone()
    W[0, 1, 2] = float("nan")
    return dataclasses.replace(model, W=W)


TOY5 = Lazy(toy5, "5 features in 2 dimensions")


@functools.lru_cache(maxsize=None)
def toy_facts():
    """Four facts of zoo/toy-lm's world (where people have a house)."""
    from circuitlab.models.loading import ZOO_DIR
    from circuitlab.tasks.factual import toy_facts as facts_of
    from circuitlab.tasks.toy_world import load_world

    facts = facts_of(load_world(ZOO_DIR / "toy-lm"))
    return [f for f in facts if f.relation == "home"][:4]

@functools.lru_cache(maxsize=None)
def eye():
    """An identity key covariance for zoo/toy-lm (d_mlp 512): a valid matrix that needs no corpus."""
    return torch.eye(512, dtype=torch.float64)


EYE = Lazy(eye, "I")


@functools.lru_cache(maxsize=None)
def edit_cases():
    from circuitlab.models.loading import ZOO_DIR
    from circuitlab.tasks.counterfact import toy_cases
    from circuitlab.tasks.toy_world import load_world

    return toy_cases(toy(), load_world(ZOO_DIR / "toy-lm"), n=1)


def zero_edit():
    case = edit_cases()[0]
    return editing.Edit("rome", {0: torch.zeros(512, 128, dtype=torch.float64)}, (editing.Request(*case.request),))


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
             {**PATCH, "corrupted_tokens": (("prompt", "near-zero denominators"), CORRUPTED),
              "circuit": ("circuit", Lazy(lambda: circuits.Circuit.from_edges(
                 circuits.Graph.from_model(toy()), ["L0H0 -> logits"]), "a one-edge circuit"))}),
    Analysis("concepts.integrated_gradients", gradients.integrated_gradients,
             {"model": ("model", M), "prompts": ("prompt", CLEAN), "metric": ("metric", LD),
              "hook": ("hook", "hook_embed"), "baseline": ("choice", "mean"), "steps": ("count", 4),
              "method": ("choice", "riemann_trapezoid"), "max_memory": ("memory", 2**20)}),
    Analysis("concepts.gradient_x_input", gradients.gradient_x_input,
             {"model": ("model", M), "prompts": ("prompt", CLEAN), "metric": ("metric", LD),
              "hook": ("hook", "blocks.1.hook_resid_pre"), "max_memory": ("memory", 2**20)}),
    Analysis("concepts.tcav", tcav.tcav,
             {"model": ("model", M), "inputs": ("texts", [CLEAN, CORRUPTED]), "metric": ("metric", LD),
              "concepts": (("concepts", "repeated concept texts"), {"pets": ["the cat", "a dog", "my cat", "the dog"]}),
              "random_texts": (("texts", "repeated texts"), ["the sea", "a hill", "old bread", "the king", "a door",
                                                             "the road", "my coat", "the rain"]),
              "hooks": ("hook", "blocks.1.hook_resid_pre"), "runs": ("count", 2), "set_size": ("count", 3),
              "max_memory": ("memory", 2**20), "seed": ("seed", 0)}),
    Analysis("probing.collect", functools.partial(probing.collect, progress=False, cache=False),
             {"model": ("model", M), "sentences": ("sentences", SENTENCES),
              "hooks": ("hook", ["blocks.1.hook_resid_post"]), "pool": ("choice", "first"),
              "max_memory": ("memory", 2**20)}),
    Analysis("probing.probe_sweep", functools.partial(probing.probe_sweep, progress=False, cache=False, seeds=(0,)),
             {"source": ("model", M), "sentences": (SPLIT, SENTENCES), "task": ("choice", "upos"),
              "hooks": ("hook", ["blocks.1.hook_resid_post"]), "probes": ("choice", ("linear",)),
              "seeds": ("seed", (0,)), "split_seed": ("seed", 0)}),
    Analysis("probing.structural_sweep", functools.partial(probing.structural_sweep, progress=False, cache=False),
             {"source": ("model", M), "sentences": (SPLIT, SENTENCES),
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
              "corrupted_tokens": (("prompt", "near-zero denominators"), CORRUPTED)}),
    Analysis("neurons.examples.neuron_page", functools.partial(neuron_examples.neuron_page, progress=False),
             {"model": ("model", M), "texts": ("texts", [CLEAN, CORRUPTED]), "layer": ("layer", 3),
              "neuron": ("neuron", 511), "k": ("count", 3), "bins": ("count", 4), "batch_size": ("count", 1),
              "max_memory": ("memory", 2**20)}),
    Analysis("neurons.explain.score_explanations", functools.partial(neuron_explain.score_explanations,
                                                                      shuffled=False, progress=False),
             {"model": ("model", M), "texts": ("texts", [CLEAN, CORRUPTED, FACT, "The king went to the sea."]),
              "layer": ("layer", 3), "neurons": (("neuron", "repeated neurons"), 511), "n_explain": ("count", 2),
              "n_top": ("count", 2),
              "n_random": ("count", 2), "batch_size": ("count", 1), "max_memory": ("memory", 2**20),
              "seed": ("seed", 0)}),
    Analysis("neurons.ranking.rank_neurons",
             functools.partial(neuron_ranking.rank_neurons, progress=False, cache=False),
             {"source": ("model", M), "sentences": (SPLIT, SENTENCES), "task": ("choice", "upos"),
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
              "sentences": ("texts", [CLEAN, CORRUPTED]), "ks": ("count", [2]), "method": ("choice", "zero"),
              "max_memory": ("memory", 2**20), "random_seeds": ("seed", (0,))}),
    Analysis("probing.edge_probe", functools.partial(probing.edge_probe, progress=False, cache=False, epochs=1),
             {"source": ("model", M), "sentences": (SPLIT, SENTENCES), "task": ("choice", "pos"),
              "pool": ("choice", "mean"), "proj": ("count", 8), "seed": ("seed", 0), "split_seed": ("seed", 0)}),
    # -- issue 30: the rest of the public analyses (see test_every_public_analysis_is_in_the_battery) -----------
    Analysis("circuits.faithfulness_curve", functools.partial(circuits.faithfulness_curve, progress=False),
             {**PATCH, "corrupted_tokens": (("prompt", "near-zero denominators"), CORRUPTED),
              "scores": ("circuit", Lazy(lambda: toy_eap(), "an EAP circuit")), "ks": ("count", [1, 4]),
              "ablation": ("choice", "corrupted"), "max_memory": ("memory", 2**20)}),
    Analysis("circuits.induction_reference", circuits.induction_reference,
             {"model": ("model", W), "seq_len": ("count", 4), "n_seqs": ("count", 2),
              "threshold": ("threshold", 0.05)}),
    Analysis("circuits.reference_from_edges", circuits.reference_from_edges,
             {"model": ("model", M), "edges": ("circuit", ["L0H0 -> logits"])}),
    Analysis("tracing.embedding_std", tracing.embedding_std,
             {"model": ("model", M), "subjects": ("prompts", ["Wexmira", "Kelmira"])}),
    Analysis("probing.default_hooks", probing.default_hooks, {"model": ("model", M)}),
    Analysis("probing.sentence_sweep", functools.partial(probing.sentence_sweep, progress=False, cache=False,
                                                         seeds=(0,)),
             {"source": ("model", M), "labels": ("labels", Lazy(lambda: [i % 2 for i in range(30)], "30 labels")),
              "sentences": ("sentences", SENTENCES), "hooks": ("hook", ["blocks.1.hook_resid_post"]),
              "probes": ("choice", ("linear",))}),
    Analysis("probing.word_attention", functools.partial(probing.word_attention, progress=False),
             {"model": ("model", M), "sentences": ("sentences", Lazy(lambda: probing.template_sentences(8),
                                                                    "8 template sentences")), "layers": ("layers", [3]),
              "max_memory": ("memory", 2**20)}),
    Analysis("probing.score_pairs", probing.score_pairs,
             {"model": ("model", M),
              "pairs": ("pairs", Lazy(lambda: probing.template_pairs(n_per=1), "template pairs")),
              "method": ("choice", "sentence"), "max_memory": ("memory", 2**20)}),
    Analysis("probing.sentence_logprob", probing.sentence_logprob,
             {"model": ("model", M), "sentences": ("texts", [CLEAN, CORRUPTED]), "max_memory": ("memory", 2**20)}),
    Analysis("probing.continuation_logprob", probing.continuation_logprob,
             {"model": ("model", M), "prefixes": ("texts", ["The cat sat on the", "The dog sat on the"]),
              "words": ("texts", ["mat", "mat"]), "max_memory": ("memory", 2**20)}),
    Analysis("probing.sequence_logprob", minimal_pairs.sequence_logprob,
             {"model": ("model", M), "rows": ("rows", Lazy(lambda: [toy().to_tokens(CLEAN)[0]], "one token row")),
              "starts": ("starts", [3]), "max_memory": ("memory", 2**20)}),
    Analysis("probing.cloze", probing.cloze,
             {"model": ("model", M), "facts": ("facts", Lazy(toy_facts, "four toy-world facts")),
              "templates": ("templates", {"home": ["{subject} has a house in", "{subject} lives in"]}),
              "relations": ("choice", None), "max_memory": ("memory", 2**20)}),
    Analysis("probing.cloze_control", functools.partial(probing.cloze_control, controls=("names",)),
             {"model": ("model", M), "facts": ("facts", Lazy(toy_facts, "four toy-world facts")),
              "templates": ("templates", {"home": ["{subject} has a house in"]}), "n_names": ("count", 1),
              "seed": ("seed", 0), "max_memory": ("memory", 2**20)}),
    Analysis("probing.shuffled_model", probing.shuffled_model, {"model": ("model", M), "seed": ("seed", 0)}),
    Analysis("probing.depth_profile", functools.partial(
        probing.depth_profile, word_tasks=("upos",), sentence_tasks=("long",), cache=False,
        sentence_labels={"long": [i % 3 == 0 for i in range(30)]}),
             {"source": ("model", M), "sentences": (SPLIT, SENTENCES), "hooks": ("hook", ["blocks.1.hook_resid_post"]),
              "min_class": ("count", 2), "split_seed": ("seed", 0)}),
    Analysis("probing.gaussian_sweep", functools.partial(probing.gaussian_sweep, cache=False, max_train=200),
             {"source": ("model", M), "sentences": (SPLIT, SENTENCES), "task": ("choice", "upos"),
              "hook": ("hook", "blocks.1.hook_resid_post"), "k": ("count", 1), "seed": ("seed", 0),
              "split_seed": ("seed", 0)}),
    Analysis("probing.coreference_similarity", functools.partial(probing.coreference_similarity, cache=False),
             {"model": ("model", M), "hooks": ("hook", ["blocks.1.hook_resid_post"]),
              "temperature": ("noise", 0.1)}),
    Analysis("neurons.activations", functools.partial(neurons.activations, progress=False),
             {"model": ("model", M), "texts": ("prompts", [CLEAN, CORRUPTED]), "layer": ("layer", 3),
              "neuron": ("neuron", 511), "batch_size": ("count", 1), "max_memory": ("memory", 2**20)}),
    Analysis("neurons.neuron_records", functools.partial(neurons.neuron_records, progress=False),
             {"model": ("model", M), "texts": ("prompts", [CLEAN, CORRUPTED, FACT, "The king went to the sea."]),
              "layer": ("layer", 3), "neurons": ("neuron", 511), "n_explain": ("count", 2), "n_top": ("count", 2),
              "n_random": ("count", 2), "batch_size": ("count", 1), "max_memory": ("memory", 2**20)}),
    Analysis("neurons.max_correlation", neurons.max_correlation,
             {"a": ("matrix", Lazy(lambda: torch.randn(16, 3, generator=torch.Generator().manual_seed(0)), "16x3")),
              "b": ("matrix", Lazy(lambda: torch.randn(16, 5, generator=torch.Generator().manual_seed(1)), "16x5")),
              "max_memory": ("memory", 2**20)}),
    Analysis("concepts.mean_embedding", gradients.mean_embedding, {"model": ("model", M), "chunk": ("count", 64)}),
    Analysis("concepts.pooled_activations", tcav.pooled_activations,
             {"model": ("model", M), "texts": ("prompts", [CLEAN, CORRUPTED]),
              "hooks": ("hook", "blocks.1.hook_resid_pre"), "pool": ("choice", "mean"),
              "max_memory": ("memory", 2**20)}),
    Analysis("concepts.sensitivities", tcav.sensitivities,
             {"model": ("model", M), "inputs": ("prompts", [CLEAN, CORRUPTED]), "metric": ("metric", LD),
              "hooks": ("hook", "blocks.1.hook_resid_pre"), "pool": ("choice", "mean"),
              "max_memory": ("memory", 2**20)}),
    Analysis("concepts.debugging.train_classifier", debugging.train_classifier,
             {"model": ("model", M), "train": ("examples", Lazy(lambda: REVIEWS(), "8 reviews")),
              "layer": ("layer", 1), "method": ("choice", "ig"), "steps": ("count", 2)}),
    Analysis("concepts.debugging.shortcut_report", debugging.shortcut_report,
             {"model": ("model", M), "layer": ("layer", 1), "n_train": ("count", 2), "n_test": ("count", 1),
              "n_attributed": ("count", 1), "steps": ("count", 1), "baseline": ("choice", "pad")}),
    Analysis("concepts.debugging.regularisation_experiment", functools.partial(
        debugging.regularisation_experiment, seeds=(0,)),
             {"model": ("model", M), "layer": ("layer", 1), "n_train": ("count", 2), "n_test": ("count", 1),
              "n_attributed": ("count", 1), "steps": ("count", 1), "ig_steps": ("count", 1),
              "method": ("choice", "ig"), "irrelevant": ("choice", "names")}),
    Analysis("concepts.sentiment.label_word_classifier", sentiment.label_word_classifier,
             {"model": ("model", M), "train": ("examples", [("a good film", 1), ("a bad film", 0)]),
              "words": ("words", (" good", " bad"))}),
    Analysis("concepts.sentiment.sentiment_tcav", sentiment.sentiment_tcav,
             {"model": ("model", M), "words": ("words", (" good", " bad")), "hooks": ("layers", [1]),
              "n_inputs": ("count", 2), "runs": ("count", 2), "set_size": ("count", 2), "n_random": ("count", 4)}),
    Analysis("induction.bos_token_id", induction.bos_token_id, {"model": ("model", M)}),
    Analysis("distributed.weight_fingerprint", distributed.weight_fingerprint, {"model": ("model", M)}),
    Analysis("distributed.model_source", distributed.model_source, {"model": ("model", M)}),
    Analysis("distributed.device_of", distributed.device_of, {"model": ("model", M)}),
    Analysis("distributed.run_shards", distributed.run_shards,
             {"executor": ("executor", "local"), "model": ("model", M), "fn": ("callable", _shard_fn),
              "shards": ("shards", [{"x": 1}, {"x": 2}])}),
    Analysis("distributed.LocalExecutor(workers)", lambda workers: patching.sweep(
        toy(), CLEAN, CORRUPTED, LD, site="z", layers=[3], progress=False,
        executor=distributed.LocalExecutor(workers=workers)), {"workers": ("count", 2)}),
    Analysis("patching.sweep(executor)", functools.partial(patching.sweep, site="z", layers=[3], progress=False),
             {**PATCH, "executor": ("executor", "local")}),
    Analysis("circuits.patch_edges(executor)", circuits.patch_edges,
             {**PATCH, "removed": ("circuit", [["L0H0 -> logits"]]), "executor": ("executor", "local")}),
    Analysis("tracing.average_indirect_effect(executor)", functools.partial(
        tracing.average_indirect_effect, progress=False, kinds="attn", window=1, samples=1),
             {"model": ("model", M), "facts": ("facts", [(FACT, "Wexmira", " Brindlecote")]),
              "executor": ("executor", "local")}),
    Analysis("probing.collect(executor)", functools.partial(probing.collect, progress=False, cache=False),
             {"model": ("model", M), "sentences": ("sentences", SENTENCES),
              "hooks": ("hook", ["blocks.1.hook_resid_post"]), "executor": ("executor", "local")}),
    Analysis("reproduce.run", reproduce.run,
             {"finding": ("finding", "induction-heads-need-two-layers"), "model": ("model", TOY)}),
    # -- issue 34: attention as explanation --------------------------------------------------------------------
    Analysis("attention.attention_maps", attention.attention_maps,
             {"model": ("model", M), "prompts": ("prompt", CLEAN), "max_memory": ("memory", 2**20)}),
    Analysis("attention.rollout", attention.rollout,
             {"model": ("model", M), "prompts": ("prompt", CLEAN), "pos": ("pos", 7), "residual": ("threshold", 0.5),
              "max_memory": ("memory", 2**20)}),
    Analysis("attention.raw_attention", attention.raw_attention,
             {"model": ("model", M), "prompts": ("prompt", CLEAN), "pos": ("pos", 7), "max_memory": ("memory", 2**20)}),
    Analysis("attention.attention_flow", attention.attention_flow,
             {"model": ("model", M), "prompts": ("prompt", CLEAN), "pos": ("pos", 7), "residual": ("threshold", 0.5),
              "solver": ("choice", "networkx"), "max_memory": ("memory", 2**20)}),
    Analysis("attention.ablation_importance", attention.ablation_importance,
             {"model": ("model", M), "prompts": ("prompt", CLEAN), "pos": ("pos", 7), "max_memory": ("memory", 2**20)}),
    Analysis("attention.correlations", attention.correlations,
             {"model": ("model", M), "prompts": ("prompt", CLEAN), "pos": ("pos", 7), "solver": ("choice", "networkx"),
              "max_memory": ("memory", 2**20)}),
    Analysis("attention.head_importance", attention.head_importance,
             {"model": ("model", M), "texts_or_tokens": ("prompt", CLEAN), "metric": ("metric", LD),
              "max_memory": ("memory", 2**20)}),
    Analysis("attention.prune_curve", functools.partial(attention.prune_curve, fractions_pruned=(0.0, 0.5)),
             {"model": ("model", M), "texts_or_tokens": ("prompt", CLEAN), "order": ("choice", "importance"),
              "seed": ("seed", 0), "max_memory": ("memory", 2**20)}),
    Analysis("attention.masked_loss", attention.masked_loss,
             {"model": ("model", M), "texts_or_tokens": ("prompt", CLEAN), "heads": ("heads", [(1, 2)]),
              "max_memory": ("memory", 2**20)}),
    Analysis("attention.gradient_importance", attention.gradient_importance,
             {"model": ("model", M), "prompts": ("prompt", CLEAN), "pos": ("pos", 7), "steps": ("count", 16),
              "max_memory": ("memory", 2**20)}),
    Analysis("attention.correlations(reference='gradients')",
             functools.partial(attention.correlations, reference="gradients"),
             {"model": ("model", M), "prompts": ("prompt", CLEAN), "pos": ("pos", 7)}),
    Analysis("attention.pattern_taxonomy", attention.pattern_taxonomy,
             {"model": ("model", M), "inputs": ("sentence pairs", [("the cat sat on the mat", "a dog ran")]),
              "n": ("count", 2), "length": ("count", 8), "seed": ("seed", 0), "max_memory": ("memory", 2**20)}),
    Analysis("weights.ov_circuit", weights.ov_circuit,
             {"model": ("model", M), "head": ("head", (2, 1)), "tokens": ("vocabulary tokens", [5, 17]),
              "k": ("count", 5), "side": ("choice", "token"), "max_memory": ("memory", 2**20)}),
    Analysis("weights.qk_circuit", weights.qk_circuit,
             {"model": ("model", M), "head": ("head", (2, 1)), "tokens": ("vocabulary tokens", [5, 17]),
              "k": ("count", 5), "query_side": ("choice", "token"), "key_side": ("choice", "token"),
              "max_memory": ("memory", 2**20)}),
    Analysis("weights.bigram_table", weights.bigram_table,
             {"model": ("model", M), "tokens": ("vocabulary tokens", [5, 17]), "k": ("count", 5),
              "max_memory": ("memory", 2**20)}),
    Analysis("weights.circuit_matrix", weights.circuit_matrix,
             {"model": ("model", M), "head": ("head", (2, 1)), "kind": ("choice", "ov"),
              "query_side": ("choice", "token"), "key_side": ("choice", "token"), "max_memory": ("memory", 2**27)}),
    Analysis("weights.copying_scores", weights.copying_scores,
             {"model": ("model", M), "heads": ("heads", [(1, 0)]), "path": ("choice", "ov"),
              "tokens": ("vocabulary tokens", [5, 17]), "max_memory": ("memory", 2**20)}),
    Analysis("weights.skip_trigrams", weights.skip_trigrams,
             {"model": ("model", M), "head": ("head", (2, 1)), "k": ("count", 5),
              "tokens": ("vocabulary tokens", [5, 17, 30, 99]), "max_memory": ("memory", 2**20)}),
    Analysis("weights.path_expansion", weights.path_expansion,
             {"model": ("model", Lazy(lambda: cl.load_model("zoo/attn-only-1l"), "zoo/attn-only-1l")),
              "prompt": ("prompt", "t3 t5 t9 t3 t5"), "k": ("count", 50), "max_memory": ("memory", 2**20)}),
    # toy models of superposition: small and quick (a few steps), the trainings' arguments checked up front
    Analysis("features.toy.train", toy_models.train,
             {"n_features": ("count", 3), "n_hidden": ("count", 2), "sparsity": ("sparsity", 0.5),
              "importance": ("importance", 0.9), "kind": ("choice", "relu"), "steps": ("count", 5),
              "batch_size": ("count", 16), "lr": ("lr", 1e-2), "restarts": ("count", 1), "seed": ("seed", 0),
              "max_memory": ("memory", 2**20)}),
    Analysis("features.toy.phase_diagram", toy_models.phase_diagram,
             {"relative_importance": ("importances", [0.5, 2.0]), "sparsity_grid": ("sparsities", [0.0, 0.9]),
              "threshold": ("threshold", 0.5), "steps": ("count", 5), "batch_size": ("count", 16), "lr": ("lr", 1e-2),
              "restarts": ("count", 1), "seed": ("seed", 0), "max_memory": ("memory", 2**20)}),
    Analysis("features.toy.sparsity_sweep", toy_models.sparsity_sweep,
             {"n_features": ("count", 4), "n_hidden": ("count", 2), "sparsities": ("sparsities", [0.0, 0.9]),
              "importance": ("importance", 0.7), "threshold": ("threshold", 0.5), "kind": ("choice", "relu"),
              "steps": ("count", 5), "batch_size": ("count", 16), "lr": ("lr", 1e-2), "restarts": ("count", 1),
              "seed": ("seed", 0), "max_memory": ("memory", 2**20)}),
    Analysis("features.toy.sample_features", toy_models.sample_features,
             {"n_features": ("count", 3), "sparsity": ("sparsity", 0.5), "batch_size": ("count", 8),
              "seed": ("seed", 0)}),
    Analysis("features.toy.weighted_loss", toy_models.weighted_loss,
             {"toy": ("toy", TOY5), "x": ("features batch", Lazy(lambda: torch.rand(4, 1, 5), "[4, 1, 5]"))}),
    Analysis("features.toy.feature_norms", toy_models.feature_norms, {"toy": ("toy", TOY5)}),
    Analysis("features.toy.superposition", toy_models.superposition, {"toy": ("toy", TOY5)}),
    Analysis("features.toy.dimensionality", toy_models.dimensionality, {"toy": ("toy", TOY5)}),
    Analysis("features.toy.feature_angles", toy_models.feature_angles, {"toy": ("toy", TOY5)}),
    Analysis("features.toy.two_feature_phase", toy_models.two_feature_phase,
             {"toy": ("toy", Lazy(lambda: toy_models.train(2, 1, 0.9, [1.0, 0.5], steps=5, restarts=1), "2 in 1")),
              "threshold": ("threshold", 0.5)}),
    Analysis("features.toy.angle_gaps", toy_models.angle_gaps, {"angles": ("angles", [0.0, 90.0, 200.0])}),
    Analysis("features.train_sae", features.train_sae,
             {"model": ("model", M), "hooks": ("hook", ["blocks.1.hook_resid_post"]), "data": ("texts", [CLEAN] * 4),
              "architecture": ("choice", "topk"), "d_sae": ("count", 64), "k": ("count", 4),
              "training_tokens": ("count", 64), "batch_tokens": ("count", 16), "buffer_tokens": ("count", 64),
              "context_size": ("count", 8), "seed": ("seed", 0), "max_memory": ("memory", 2**20)}),
    Analysis("features.train_sae(standard)", lambda l1_coefficient: features.train_sae(
        toy(), 1, [CLEAN] * 4, architecture="standard", k=None, l1_coefficient=l1_coefficient, training_tokens=64,
        batch_tokens=16, buffer_tokens=64, context_size=8), {"l1_coefficient": ("threshold", 1.0)}),
    Analysis("features.train_sae(jumprelu)", lambda l0_coefficient: features.train_sae(
        toy(), 1, [CLEAN] * 4, architecture="jumprelu", k=None, l0_coefficient=l0_coefficient, training_tokens=64,
        batch_tokens=16, buffer_tokens=64, context_size=8), {"l0_coefficient": ("threshold", 0.01)}),
    Analysis("features.evaluate_sae", sae_evaluation.evaluate_sae,
             {"model": ("model", M), "sae": ("sae", Lazy(_toy_sae, "a toy-lm SAE")), "texts": ("texts", [CLEAN]),
              "hook_name": ("hook", "blocks.1.hook_resid_post"), "max_memory": ("memory", 2**20)}),
    Analysis("features.splice(entered)", _spliced_logits,
             {"model": ("model", M), "sae": ("sae", Lazy(_toy_sae, "a toy-lm SAE"))}),
    Analysis("features.dashboard.latent_activations", features.dashboard.latent_activations,
             {"model": ("model", M), "sae": ("sae", Lazy(_toy_sae, "a toy-lm SAE")), "texts": ("texts", [CLEAN]),
              "latents": ("latents", [0, 5]), "hook_name": ("hook", "blocks.1.hook_resid_post"),
              "max_memory": ("memory", 2**20)}),
    Analysis("features.feature_dashboards", features.feature_dashboards,
             {"model": ("model", M), "sae": ("sae", Lazy(_toy_sae, "a toy-lm SAE")), "texts": ("texts", [CLEAN]),
              "latents": ("latents", [0, 5]), "n_top": ("count", 2), "n_quantiles": ("count", 2),
              "per_quantile": ("count", 1), "bins": ("count", 4), "k": ("count", 3), "seed": ("seed", 0),
              "max_memory": ("memory", 2**20)}),
    Analysis("features.latent_attribution", features.latent_attribution,
             {"model": ("model", M), "sae": ("sae", Lazy(_toy_sae, "a toy-lm SAE")), "prompts": ("prompt", CLEAN),
              "metric": ("metric", LD), "exact": ("latents", [0, 5]), "max_memory": ("memory", 2**20)}),
    Analysis("features.latent_ablation", features.latent_ablation,
             {"model": ("model", M), "sae": ("sae", Lazy(_toy_sae, "a toy-lm SAE")), "prompts": ("prompt", CLEAN),
              "metric": ("metric", LD), "latents": ("latents", [0, 5]), "max_memory": ("memory", 2**20)}),
    Analysis("features.steer", features.steer,
             {"model": ("model", M), "sae": ("sae", Lazy(_toy_sae, "a toy-lm SAE")), "prompts": ("prompt", CLEAN),
              "latent": ("latents", 3), "alpha": ("alpha", 2.0), "k": ("count", 3)}),
    Analysis("neurons.features.feature_records", neurons.features.feature_records,
             {"model": ("model", M), "sae": ("sae", Lazy(_toy_sae, "a toy-lm SAE")),
              "texts": ("texts", [CLEAN, CORRUPTED, FACT]), "latents": ("latents", [0, 5]),
              "n_explain": ("count", 1), "n_top": ("count", 1), "n_random": ("count", 1), "seed": ("seed", 0),
              "max_memory": ("memory", 2**20)}),
    Analysis("neurons.features.explain_features", neurons.features.explain_features,
             {"model": ("model", M), "sae": ("sae", Lazy(_toy_sae, "a toy-lm SAE")),
              "texts": ("texts", [CLEAN, CORRUPTED, FACT]), "latents": ("latents", [0, 5]),
              "n_explain": ("count", 1), "n_top": ("count", 1), "n_random": ("count", 1), "seed": ("seed", 0)}),
    # -- issue 38: transcoders and attribution graphs ------------------------------------------------------------
    Analysis("features.transcoders.train_transcoders", functools.partial(transcoders.train_transcoders, layers=[1]),
             {"model": ("model", M), "data": ("texts", [CLEAN] * 4), "d_sae": ("count", 64), "k": ("count", 4),
              "training_tokens": ("count", 64), "batch_tokens": ("count", 16), "buffer_tokens": ("count", 64),
              "context_size": ("count", 8), "seed": ("seed", 0), "max_memory": ("memory", 2**20)}),
    Analysis("features.transcoders.evaluate_transcoders", transcoders.evaluate_transcoders,
             {"model": ("model", M), "transcoders": ("transcoders", "toy-lm"), "texts": ("texts", [CLEAN]),
              "max_memory": ("memory", 2**20)}),
    Analysis("graphs.local_replacement", graphs.local_replacement,
             {"model": ("model", M), "transcoders": ("transcoders", "toy-lm"), "prompt": ("prompt", FACT)}),
    Analysis("graphs.attribution_graph", graphs.attribution_graph,
             {"model": ("model", M), "transcoders": ("transcoders", "toy-lm"), "prompt": ("prompt", FACT),
              "target": ("answer", " Brindlecote"), "logit_mass": ("threshold", 0.9), "max_logits": ("count", 3),
              "max_memory": ("memory", 2**24)}),
    # -- issue 35: model editing ----------------------------------------------------------------------------------
    Analysis("editing.rome", editing.rome,
             {"model": ("model", M), "prompt": ("prompt", FACT), "subject": ("subject", "Wexmira"),
              "new": ("new", " Pellmoor"), "layer": ("edit layer", 0), "covariance": ("covariance", EYE),
              "steps": ("count", 1), "seed": ("seed", 0)}),
    Analysis("editing.memit", editing.memit,
             {"model": ("model", M), "requests": ("requests", [(FACT, "Wexmira", " Pellmoor")]),
              "layers": ("edit layers", [0]), "covariances": ("covariances", Lazy(lambda: {0: eye()}, "{0: I}")),
              "steps": ("count", 1), "seed": ("seed", 0)}),
    Analysis("editing.fine_tune", editing.fine_tune,
             {"model": ("model", M), "requests": ("requests", [(FACT, "Wexmira", " Pellmoor")]),
              "layer": ("edit layer", 0), "steps": ("count", 1), "seed": ("seed", 0)}),
    Analysis("editing.key_covariance", functools.partial(editing.key_covariance, cache=False),
             {"model": ("model", M), "layer": ("layer", 0), "corpus": ("texts", [FACT, CLEAN]),
              "n_tokens": ("count", 5), "max_memory": ("memory", 2**20)}),
    Analysis("editing.default_layer", functools.partial(editing.default_layer, samples=1),
             {"model": ("model", M), "prompt": ("prompt", FACT), "subject": ("subject", "Wexmira"),
              "seed": ("seed", 0)}),
    Analysis("editing.default_layers", editing.default_layers,
             {"model": ("model", M), "prompt": ("prompt", FACT), "subject": ("subject", "Wexmira"),
              "seed": ("seed", 0)}),
    Analysis("editing.evaluate_edit", editing.evaluate_edit,
             {"model": ("model", M), "edit": ("edit", Lazy(lambda: zero_edit(), "a zero edit")),
              "case": ("case", Lazy(lambda: edit_cases()[0], "a toy case")), "generate_tokens": ("count", 2),
              "seed": ("seed", 0)}),
    Analysis("editing.edit_table", editing.edit_table,
             {"model": ("model", M), "cases": ("cases", Lazy(lambda: edit_cases()[:1], "one toy case")),
              "methods": ("methods", {"zero": lambda case: zero_edit()})}),
    # -- issue 33: training dynamics ----------------------------------------------------------------------------
    Analysis("dynamics.text_windows", dynamics.text_windows,
             {"model": ("model", W), "text": ("text", WORD_TEXT), "seq_len": ("count", 20), "stride": ("count", 8)}),
    Analysis("dynamics.token_losses", dynamics.token_losses,
             {"model": ("model", W), "tokens": ("prompt", WORD_TOKENS), "max_memory": ("memory", 2**20)}),
    Analysis("dynamics.icl_score", dynamics.icl_score,
             {"model": ("model", W), "tokens": ("prompt", WORD_TOKENS), "early": ("band", (2, 5)),
              "late": ("band", (10, 20)), "max_memory": ("memory", 2**20)}),
    Analysis("dynamics.measure_checkpoint", dynamics.measure_checkpoint,
             {"model": ("model", W), "text": ("text", WORD_TEXT), "early": ("band", (2, 5)), "late": ("band", (40, 60)),
              "stride": ("count", 64), "n_seqs": ("count", 2), "seq_len": ("count", 8), "seed": ("seed", 0),
              "max_memory": ("memory", 2**20)}),
    Analysis("dynamics.load_curves", dynamics.load_curves, {"source": ("curves source", "zoo/attn-only-2l")}),
    Analysis("dynamics.training_curves", dynamics.training_curves,
             {"checkpoints": ("checkpoints", Lazy(lambda: [(0, words()), (3, words())], "two checkpoints")),
              "text": ("text", WORD_TEXT), "tokens_per_step": ("count", 10), "early": ("band", (2, 5)),
              "late": ("band", (40, 60)), "stride": ("count", 64), "n_seqs": ("count", 2), "seed": ("seed", 0),
              "max_memory": ("memory", 2**20)}),
    Analysis("neurons.compositional.compositional_explanations",
             functools.partial(neuron_compositional.compositional_explanations, progress=False, cache=False,
                               top=0.05),
             {"source": ("model", M), "sentences": ("sentences", SENTENCES),
              "hooks": ("hook", ["blocks.1.mlp.hook_post"]), "neurons": ("count", 3), "max_length": ("count", 2),
              "beam": ("count", 3), "seed": ("seed", 0), "max_memory": ("memory", 2**20)}),
    Analysis("concepts.rationales.amplify",
             functools.partial(rationales.amplify, n_proxy=3, n_pool=2, n_shots=2, seeds=(0,)),
             {"model": ("model", Lazy(long_context, "a random 2-layer model, n_ctx 2048")),
              "n_queries": ("count", 1), "k": ("count", 1), "steps": ("count", 2), "max_memory": ("memory", 2**20)}),
]

# which kinds' bad values do not apply to an argument (e.g. a generated-sequences argument takes no text)
SKIP = {
    ("dynamics.measure_checkpoint", "seq_len"): {None},
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
    ("neurons.compositional.compositional_explanations", "hooks"): {3, None},  # a layer; None: every layer's
    ("circuits.faithfulness_curve", "metric"): {None},  # None: KL divergence from the clean output
    ("circuits.patch_edges(executor)", "metric"): {None},
    ("circuits.reference_from_edges", "model"): {NAN},  # the graph is the model's shape; no weight is read
    ("tracing.embedding_std", "subjects"): {None},  # None: every token's embedding
    ("probing.sentence_sweep", "hooks"): {3, None},
    ("probing.collect(executor)", "hooks"): {3, None},
    ("probing.continuation_logprob", "prefixes"): {("",)},  # an empty prefix: the word starts the text
    ("probing.cloze", "relations"): {None},  # None: every relation of the facts
    ("probing.depth_profile", "hooks"): {3, None},
    ("probing.coreference_similarity", "hooks"): {3, None},  # a layer number; None: every layer
    ("probing.gaussian_sweep", "hook"): {3, None},  # a layer number (its residual stream output); None: the middle
    ("concepts.pooled_activations", "hooks"): {3, None},
    ("concepts.sensitivities", "hooks"): {3, None},
    ("concepts.debugging.train_classifier", "layer"): {None},  # None: a third of the way up
    ("concepts.debugging.shortcut_report", "layer"): {None},
    ("concepts.debugging.regularisation_experiment", "layer"): {None},
    ("concepts.debugging.shortcut_report", "baseline"): {3},  # a token id, as for integrated gradients
    ("concepts.sentiment.label_word_classifier", "train"): {None},  # None: template reviews
    ("induction.bos_token_id", "model"): {NAN},  # reads the tokenizer and cfg, no weight
    ("distributed.model_source", "model"): {NAN, "zoo/no-such-model"},  # a name is loaded by the workers (the
    # analysis that shards has loaded it first); the weights are the analysis's to check
    ("distributed.device_of", "model"): {NAN},
    ("distributed.run_shards", "model"): {NAN, None},  # None: shards that load their own models (reproduce --all)
    ("distributed.run_shards", "shards"): {()},  # no shards: no parts
    # NAN: a fingerprint of any weights, finite or not
    ("distributed.weight_fingerprint", "model"): {NAN},
    ("reproduce.run", "model"): {None},  # None: the finding's own model
    ("attention.head_importance", "metric"): {None},  # None: the LM loss, as in Michel et al.
    ("attention.masked_loss", "heads"): {()},  # no heads: the plain loss
    ("features.train_sae", "hooks"): {3},  # 3: layer 3's hook_resid_post
    ("features.evaluate_sae", "hook_name"): {3, None},  # 3: layer 3's hook_resid_post (128 wide); None: the SAE's
    ("features.splice(entered)", "model"): {NAN},  # splicing reads no weight; the analyses run inside check them
    ("features.dashboard.latent_activations", "hook_name"): {3, None},  # as evaluate_sae
    ("editing.key_covariance", "corpus"): {None},  # None: the default corpus
    ("editing.rome", "layer"): {None},  # None: the causal-tracing peak
    ("editing.fine_tune", "layer"): {None},
    ("editing.memit", "layers"): {None},
}


def _kinds(spec) -> tuple[str, ...]:
    """An argument's kinds: one name, or a tuple of names (``("prompt", "near-zero denominators")``)."""
    return spec if isinstance(spec, tuple) else (spec,)


def _names(message: str, word: str) -> bool:
    """Whether a (lower-case) message names ``word``: as a word's start (``"matri"`` in ``"matrix"``), and whole
    when it is one or two letters (``"k"`` must not match every message with a k in it)."""
    w = re.escape(word.lower())
    return re.search(rf"(?<![a-z0-9]){w}(?![a-z0-9])" if len(word) <= 2 else rf"(?<![a-z0-9]){w}", message) is not None


def _cases():
    for a in ANALYSES:
        for arg, (spec, _) in a.args.items():
            skip = SKIP.get((a.name, arg), set())
            for value in (v for kind in _kinds(spec) for v in KINDS[kind].bad):
                if not any(_same_value(value, s) for s in skip):
                    yield pytest.param(a, arg, value, id=f"{a.name}-{arg}={_short(value)}")


def _same_value(value, s) -> bool:
    """``value`` is the SKIP entry ``s`` (a list is written as a tuple there: a set holds hashable values)."""
    if isinstance(value, list) and isinstance(s, tuple):
        value = tuple(value)
    return value is s or (type(value) is type(s) and value == s)


#: analyses whose good call takes seconds (several trainings each): their legal alternative spellings (a negative
#: layer) go through the same check_layer(s) that cheaper rows exercise, so the battery does not run them twice
NO_SAME = {"concepts.debugging.shortcut_report", "concepts.debugging.regularisation_experiment",
           "concepts.sentiment.sentiment_tcav"}


def _same_cases():
    for a in ANALYSES:
        if a.name in NO_SAME:
            continue
        for arg, (spec, _) in a.args.items():
            for value, plain in (p for kind in _kinds(spec) for p in KINDS[kind].same):
                yield pytest.param(a, arg, value, plain, id=f"{a.name}-{arg}={_short(value)}=={_short(plain)}")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 24 else text[:21] + "..."


@pytest.mark.parametrize("analysis,arg,value", list(_cases()))
def test_bad_input_is_a_circuitlab_error_naming_the_argument(analysis: Analysis, arg: str, value):
    words = [w for kind in _kinds(analysis.args[arg][0]) for w in KINDS[kind].words]
    try:
        out = analysis.call(**{arg: value})
    except CircuitlabError as exc:
        message = str(exc).lower()
        assert any(_names(message, w) for w in (arg, *words)), (
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


#: texts with no token of their own on a word-level vocabulary (on a byte-level BPE one, whitespace is tokens)
WHITESPACE = ["   ", "\n"]


def _whitespace_cases():
    for a in ANALYSES:
        models = [arg for arg, (kind, _) in a.args.items() if "model" in _kinds(kind)]
        for arg, (kind, _) in a.args.items():
            if "prompt" in _kinds(kind) and models:
                for value in WHITESPACE:
                    yield pytest.param(a, models[0], arg, value, id=f"{a.name}-{arg}={value!r}")


@pytest.mark.parametrize("analysis,model_arg,arg,value", list(_whitespace_cases()))
def test_whitespace_prompts_on_a_word_level_model_are_refused(analysis: Analysis, model_arg: str, arg: str, value):
    """The "prompt" kind on zoo/attn-only-2l: whitespace tokenizes to nothing there, and the analysis used to run on
    the start token alone. Other prompts of the row are replaced by one the model knows."""
    other = {a: "t1 t2 t3 t4" for a, (kind, _) in analysis.args.items() if "prompt" in _kinds(kind) and a != arg}
    try:
        out = analysis.call(**{model_arg: words(), **other, arg: value})
    except CircuitlabError as exc:
        if "tokenizes to no tokens" not in str(exc):
            pytest.skip(f"another argument of this row does not fit the word-level model: {exc}")
        assert arg in str(exc) or "prompt" in str(exc)
        return
    pytest.fail(f"{analysis.name}({arg}={value!r}) on {WORDS} returned {type(out).__name__}")


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


# -- caches: damaged files, weights changed after caching ----------------------------------------------------------

FEW = Lazy(lambda: probing.template_sentences(12, seed=1), "12 template sentences")

#: the analyses that cache activations on disk, ``(model, cache) -> result``; the reference is ``cache=False``
CACHED = {
    "probing.collect": lambda m, cache: probing.collect(
        m, real(FEW), ["blocks.1.mlp.hook_post"], progress=False, cache=cache),
    "probing.probe_sweep": lambda m, cache: probing.probe_sweep(
        m, real(FEW), "upos", hooks=["blocks.1.hook_resid_post"], probes=("linear",), seeds=(0,),
        progress=False, cache=cache),
    "neurons.ranking.rank_neurons": lambda m, cache: neuron_ranking.rank_neurons(
        m, real(FEW), "upos", method="anova", hooks=["blocks.1.mlp.hook_post"], progress=False, cache=cache),
}


def _flip_middle(path):  # same size, bytes changed
    data = bytearray(path.read_bytes())
    for i in range(len(data) // 2, len(data) // 2 + 8):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


#: damage done to every cached file between two calls
DAMAGED_FILES = {
    "flip middle bytes": _flip_middle,
    "truncate": lambda path: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2]),
    "append junk": lambda path: path.write_bytes(path.read_bytes() + b"junk" * 8),
    "empty file": lambda path: path.write_bytes(b""),
}


def _swap_w_in_columns(m):  # through .data, in place: no version counter moves
    W = m.blocks[0].mlp.W_in
    W.data[:, [0, 1]] = W.data[:, [1, 0]]


def _scale_under_no_grad(m):
    with torch.no_grad():
        m.blocks[0].mlp.W_in.mul_(1.5)


#: weight changes made between two calls
WEIGHT_CHANGES = {
    "p.data = ...": lambda m: setattr(m.blocks[0].mlp.W_in, "data", m.blocks[0].mlp.W_in.data * 1.5),
    "swap two W_in columns": _swap_w_in_columns,
    "in place under no_grad": _scale_under_no_grad,
}


def _same(got, want) -> None:
    got_parts, want_parts = _parts(got), _parts(want)
    assert len(got_parts) == len(want_parts)
    for g, w in zip(got_parts, want_parts):
        if isinstance(g, torch.Tensor):
            assert g.shape == w.shape and bool(((g == w) | (g.isnan() & w.isnan())).all())
        else:
            assert g == w


@pytest.mark.parametrize("damage", list(DAMAGED_FILES))
@pytest.mark.parametrize("name", list(CACHED))
def test_damaged_cache_files_are_recomputed(name: str, damage: str, tmp_path):
    run = CACHED[name]
    run(toy(), tmp_path)
    files = sorted(tmp_path.rglob("*.pt"))
    assert files
    for f in files:
        DAMAGED_FILES[damage](f)
    with pytest.warns(UserWarning, match="cache entry .*recomputed"):
        got = run(toy(), tmp_path)
    _same(got, run(toy(), False))


@pytest.mark.parametrize("change", list(WEIGHT_CHANGES))
@pytest.mark.parametrize("name", list(CACHED))
def test_weights_changed_after_caching_are_not_served_from_the_cache(name: str, change: str, tmp_path):
    run = CACHED[name]
    model = copy.deepcopy(toy())
    run(model, tmp_path)
    WEIGHT_CHANGES[change](model)
    _same(run(model, tmp_path), run(model, False))


def test_a_baseline_token_id_is_checked_against_the_input_vocabulary():
    """A classifier made of a model has two outputs and the model's whole vocabulary as input: a baseline token id
    is an input token (it was checked against the two outputs: token 3 was 'outside the vocabulary [0, 2)')."""
    clf = debugging.train_classifier(toy(), REVIEWS(), layer=1)
    cm = clf.as_model()
    tokens = cm.to_tokens("a fine day")
    base, name = gradients.baseline_activation(cm, tokens, "hook_embed", 3, keep_bos=False)
    torch.testing.assert_close(base, toy().embed(torch.full_like(tokens, 3)))  # the embedding of token 3 everywhere
    assert name == "pad token 3"
    with pytest.raises(CircuitlabError, match=r"baseline token id 4096 is outside the vocabulary \[0, 4096\)"):
        gradients.baseline_activation(cm, tokens, "hook_embed", 4096)


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
    ["dynamics", "-m", "zoo/no-such-model"],
    ["dynamics", "-m", TOY],
    ["dynamics", "-m", HERE],
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
    # issue 30: every command and subcommand (see test_every_command_is_in_the_battery)
    ["neurons", "ablate", "-m", TOY, "--labelled", "no/such/file.conllu"],
    ["neurons", "ablate", "-m", TOY, "--sentences", "0"],
    ["neurons", "ablate", "-m", WORDS],
    ["neurons", "nope", "-m", TOY],
    ["attention", "patterns", "-m", TOY, "-n", "0"],
    ["attention", "patterns", "-m", TOY, "--seq-len", "3"],
    ["attention", "patterns", "-m", TOY, "--prompt", CLEAN],
    ["attention", "rollout", "-m", TOY],
    ["attention", "rollout", "-m", TOY, "--prompt", ""],
    ["attention", "rollout", "-m", TOY, "--prompt", "The"],
    ["attention", "prune", "-m", TOY, "--order", "best"],
    ["attention", "prune", "-m", TOY, "--data", "no/such/file.txt"],
    ["attention", "prune", "-m", TOY, "-n", "100000"],
    ["attention", "prune", "-m", "minilm-l6-not-loaded", "-n", "2"],
    ["ig", "-m", "zoo/no-such-model", "--prompt", CLEAN, "--answer", " mat"],
    ["ig", "-m", TOY, "--prompt", "", "--answer", " mat"],
    ["ig", "-m", TOY, "--prompt", CLEAN, "--answer", " mat", "--steps", "0"],
    ["ig", "-m", TOY, "--prompt", CLEAN, "--answer", " mat", "--hook", "nope"],
    ["ig", "-m", TOY, "--prompt", CLEAN, "--answer", " mat", "--baseline", "nope"],
    ["ig", "-m", TOY, "--prompt", CLEAN, "--answer", " mat", "--wrong", " mat"],
    ["tcav", "-m", "zoo/no-such-model"],
    ["tcav", "-m", TOY],  # the default label words (' positive', ' negative') are several tokens each here
    ["tcav", "-m", TOY, "--words", " good, bad", "--runs", "1"],
    ["tcav", "-m", TOY, "--words", " good, bad", "--hooks", "99"],
    ["tcav", "-m", TOY, "--words", " positive"],
    ["tcav", "-m", TOY, "--set-size", "0"],
    ["demo", "-m", "zoo/no-such-model", "--no-ffn"],
    ["demo", "-m", WORDS, "-o", HERE],  # a folder, not a file
    ["demo", "--seed", "x"],
    ["probe", "nope", "-m", TOY],
    ["probe", "pos", "-m", TOY, "--data", "no/such/file.conllu"],
    ["probe", "pos", "-m", TOY, "-n", "0"],
    ["probe", "structural", "-m", TOY, "--seeds", "0"],
    ["probe", "structural", "-m", "zoo/no-such-model"],
    ["probe", "heads", "-m", "zoo/no-such-model"],
    ["probe", "heads", "-m", TOY, "--data", "no/such/file.conllu"],
    ["probe", "pairs", "-m", TOY, "--blimp", "no/such/file.jsonl"],
    ["probe", "pairs", "-m", TOY, "--n-per", "0"],
    ["probe", "cloze", "-m", TOY, "--relations", "nope"],
    ["probe", "cloze", "-m", WORDS],
    ["probe", "cloze", "-m", WORDS, "--control"],
    ["probe", "depth", "-m", TOY, "--data", "no/such/file.conllu"],
    ["probe", "depth", "-m", "zoo/no-such-model"],
    ["probe", "gaussian", "-m", TOY, "--neurons", "0"],
    ["probe", "coref", "-m", "zoo/no-such-model"],
    ["probe", "gaussian", "-m", TOY, "--neurons", "100000"],
    ["probe", "edges", "-m", TOY, "--data", "no/such/file.conllu"],
    ["probe", "edges", "-m", TOY, "-n", "-3"],
    ["models", "-v", "extra"],
    # seeds beyond what the random generators take, negative, or not whole numbers: usage errors naming --seed
    ["induction", "-m", WORDS, "--seed", str(2**64)],
    ["trace", "-m", TOY, "--prompt", FACT, "--subject", "Wexmira", "--answer", " Brindlecote", "--seed", "-1"],
    ["circuit", "-m", WORDS, "--seed", "1.5"],
    ["neurons", "explain", "-m", TOY, "--seed", "3x"],
    ["probe", "pos", "-m", TOY, "--seed", str(2**63)],
    ["demo", "--seed", "9" * 100_000],
    ["reproduce", "induction-heads-need-two-layers", "--seed", str(2**64)],
    ["superposition", "nope"],
    ["superposition", "phase", "--sparsities", "0,1", "--steps", "5"],
    ["superposition", "phase", "--importances", "x"],
    ["superposition", "phase", "--importances", "0,2"],
    ["superposition", "geometry", "--hidden", "0"],
    ["superposition", "geometry", "--sparsity", "1.5", "--steps", "5"],
    ["superposition", "train", "--importance", "2", "--steps", "5"],
    ["superposition", "train", "--seed", "-1"],
    # data files that are not UTF-8: an error naming the file, the line and the column
    ["ffn", "-m", TOY, "--layer", "1", "--neuron", "3", "--data", BAD_FILES["latin1.txt"]],
    ["neurons", "examples", "-m", TOY, "--neuron", "3", "--data", BAD_FILES["latin1.txt"]],
    ["probe", "pos", "-m", TOY, "--data", BAD_FILES["latin1.conllu"]],
    ["probe", "pairs", "-m", TOY, "--blimp", BAD_FILES["latin1.jsonl"]],
    ["weights", "-m", "zoo/no-such-model"],
    ["weights", "-m", WORDS, "--head", "9.9"],
    ["weights", "-m", WORDS, "--token", "t5"],
    ["weights", "-m", WORDS, "--head", "1.0", "--token", "hello"],
    ["weights", "-m", WORDS, "--prompt", "t1 t2"],
    ["weights", "-m", WORDS, "--head", "1.0", "-k", "0"],
    ["sae", "train", "-m", TOY, "--hook", "blocks.1.attn.hook_pattern", "--save", HERE],
    ["sae", "train", "-m", TOY, "--hook", "1", "--save", HERE, "--k", "0"],
    ["sae", "train", "-m", TOY, "--hook", "1"],
    ["sae", "train", "-m", TOY, "--hook", "1", "--save", HERE, "--architecture", "gated"],
    ["sae", "train", "-m", TOY, "--hook", "1", "--save", HERE, "--data", BAD_FILES["latin1.txt"]],
    ["sae", "eval", "-m", TOY, "--sae", "no/such/sae"],
    ["sae", "eval", "-m", TOY],
    ["sae", "list", "--k", "x"],
    ["sae", "dashboard", "-m", TOY, "-o", HERE + "/no-such-folder"],
    ["sae", "dashboard", "toy-lm/res-2", "-m", TOY],
    ["sae", "dashboard", "toy-lm/res-2", "-m", TOY, "-o", HERE + "/no-such-folder", "--features", "2000"],
    ["sae", "dashboard", "toy-lm/res-2", "-m", TOY, "-o", HERE + "/no-such-folder", "--features", "a-b"],
    ["sae", "attribute", "toy-lm/res-1", "-m", TOY, "--prompt", CLEAN],
    ["sae", "attribute", "toy-lm/res-1", "-m", TOY, "--prompt", CLEAN, "--answer", " mat", "--wrong", " mat"],
    ["sae", "attribute", "toy-lm/res-1", "-m", TOY, "--prompt", CLEAN, "--answer", " mat", "--wrong", " cat",
     "--corrupted", "The dog"],
    ["sae", "steer", "toy-lm/res-1", "-m", TOY, "--prompt", CLEAN],
    ["sae", "steer", "toy-lm/res-1", "-m", TOY, "--prompt", CLEAN, "--feature", "5000"],
    ["sae", "steer", "toy-lm/res-1", "-m", TOY, "--prompt", "", "--feature", "5"],
    # issue 35: editing (subject not in the prompt, the true answer as the new object, a layer without an MLP, a
    # layer the model does not have, several layers for ROME)
    ["edit", "-m", TOY, "--prompt", FACT, "--subject", "Zorv", "--new", " Pellmoor"],
    ["edit", "-m", TOY, "--prompt", FACT, "--subject", "Wexmira", "--new", " Brindlecote", "--layer", "0"],
    ["edit", "-m", WORDS, "--prompt", "t1 t2 t3", "--subject", "t2", "--new", " t4", "--layer", "0"],
    ["edit", "-m", TOY, "--prompt", FACT, "--subject", "Wexmira", "--new", " Pellmoor", "--layer", "9"],
    ["edit", "-m", TOY, "--prompt", FACT, "--subject", "Wexmira", "--new", " Pellmoor", "--layer", "0,1"],
    ["edit", "-m", TOY, "--prompt", FACT, "--subject", "Wexmira", "--new", " Pellmoor", "--prefixes", "-1"],
    # issue 37: compositional explanations and rationales
    ["neurons", "compose", "-m", WORDS],
    ["neurons", "compose", "-m", TOY, "--top", "2"],
    ["neurons", "compose", "-m", TOY, "--max-length", "11"],
    ["rationales", "-m", "zoo/no-such-model"],
    ["rationales", "-m", TOY],  # few-shot prompts are longer than toy-lm's 128 positions
    ["rationales", "-m", TOY, "--seeds", "0"],
    # issue 36: the explorer (a host that is no host, a token too short to guard it, a port out of range, a model
    # directory that does not exist: each refused before anything is loaded or listened on)
    ["serve", "--host", "exa mple/x"],
    ["serve", "--host", "0.0.0.0", "--token", "short"],
    ["serve", "--port", "70000"],
    ["serve", "-m", os.path.join(HERE, "no-such-model-dir"), "--port", "1"],
    # issue 38: attribution graphs (empty prompt, a model without shipped transcoders, a bad mass, a multi-token
    # target, an unwritable JSON path)
    ["graph", "-m", TOY, "--prompt", ""],
    ["graph", "-m", WORDS, "--prompt", "t1 t2"],
    ["graph", "-m", TOY, "--prompt", FACT, "--logit-mass", "2"],
    ["graph", "-m", TOY, "--prompt", FACT, "--target", " the cat"],
    ["graph", "-m", TOY, "--prompt", FACT, "--json-out", HERE],
]


def _command_id(argv: list[str]) -> str:
    """A test id that is the same in every pytest-xdist worker (a temporary file's path is not: its name is)."""
    names = {path: name for name, path in BAD_FILES.items()}
    return " ".join(names.get(a, a) for a in argv)[:60]


@pytest.mark.parametrize("argv", COMMANDS, ids=[_command_id(a) for a in COMMANDS])
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


# -- the battery's coverage ----------------------------------------------------------------------------------------

#: the rooms whose public analyses the battery must cover (packages: their submodules too)
ROOMS = ("circuitlab.induction", "circuitlab.attribution", "circuitlab.ffn", "circuitlab.patching",
         "circuitlab.circuits", "circuitlab.tracing", "circuitlab.probing", "circuitlab.neurons", "circuitlab.concepts",
         "circuitlab.distributed", "circuitlab.reproduce", "circuitlab.attention", "circuitlab.weights",
         "circuitlab.features", "circuitlab.editing", "circuitlab.dynamics", "circuitlab.graphs")

#: public functions that take a model but are not analyses a user calls with data, each with the reason
EXEMPT = {
    "circuitlab.circuits.eap.receiver_inputs": "a context manager that switches a model's per-receiver input hooks "
                                               "on for EAP; takes no data",
    "circuitlab.tracing.check_kinds": "a check of trace's kinds=, run by trace and average_indirect_effect (rows)",
    "circuitlab.tracing.check_window": "a check of trace's window=, run by trace (row)",
    "circuitlab.tracing.check_samples_affordable": "a check of trace's samples=, run by trace and "
                                                   "average_indirect_effect (rows)",
    "circuitlab.tracing.subject_span": "a step of trace on a prompt and subject trace has checked (row)",
    "circuitlab.tracing.subject_noise": "a step of trace: the noise for a checked span, samples and seed (row)",
    "circuitlab.concepts.gradients.baseline_activation": "a step of integrated_gradients / gradient_x_input on token "
                                                         "ids and a hook they have checked (rows)",
    "circuitlab.concepts.tcav.pooled_positions": "a step of tcav's pooling on one token row tcav has made (row)",
    "circuitlab.circuits.graph.unsupported": "a predicate (why a model's graph cannot be built, or None) that "
                                             "Graph.from_model and every circuits row run",
    "circuitlab.circuits.reference.edge_patched_value": "the brute-force reference that the tests of edge patching "
                                                        "compare with; not an analysis",
    "circuitlab.engine.blocks.kv_reuse_blockers": "the block runner's own check of a model (engine), run by every "
                                                  "analysis that uses the runner",
    "circuitlab.engine.collect.check_hooks": "the collector's check of hooks=, run by every probing and neurons row",
    "circuitlab.features.sae.splice": "a context manager; the battery enters it in the features.splice(entered) row",
    "circuitlab.features.transcoders.check_transcoders": "the check of transcoders= that every transcoders and "
                                                          "graphs row runs",
    "circuitlab.graphs.attribution.attribution_graph_reference": "the one-backward-per-node reference the tests and "
                                                                 "benchmarks compare attribution_graph with; same "
                                                                 "checks (attribution_graph's row)",
    "circuitlab.probing.activations.collect_shard": "one shard of collect (the executor runs it; collect's rows)",
    "circuitlab.probing.activations.plan_batches": "a step of collect on sentences it has aligned (rows)",
    "circuitlab.probing.activations.word_rows": "a step of collect on sentences it has aligned (rows)",
    "circuitlab.neurons.compositional.search_formulas": "the beam search of compositional_explanations on the masks "
                                                        "and concepts it has built (rows); tested against brute force",
    "circuitlab.reproduce.circuit_discovery.discovery_run": "a step of a finding's measurement, run by reproduce.run",
    "circuitlab.reproduce.induction_gpt2.check_gpt2_reference": "a step of a finding's measurement, run by "
                                                                "reproduce.run",
}


def _public_functions() -> dict[str, Callable]:
    """The public analyses of :data:`ROOMS`, by this rule: a room and each of its submodules export the names in
    their ``__all__`` (a submodule without one is spoken for by its package's ``__all__``; a module with neither
    exports its names without a leading underscore); of those, the functions defined in circuitlab that take a
    ``model``, ``source`` or ``models`` argument or a ``max_memory``, except those of ``circuitlab.tasks`` that a
    room re-exports (data readers and generators: the data layer, with its own tests and file rows)."""
    out: dict[str, Callable] = {}
    for room in ROOMS:
        package = importlib.import_module(room)
        modules = [package] + [importlib.import_module(f"{room}.{m.name}")
                               for m in pkgutil.iter_modules(getattr(package, "__path__", []))]
        for module in modules:
            names = getattr(module, "__all__", None)
            if names is None:
                if module is not package and getattr(package, "__all__", None) is not None:
                    continue
                names = [n for n, v in vars(module).items() if not n.startswith("_")
                         and getattr(v, "__module__", None) == module.__name__]
            for name in names:
                f = getattr(module, name, None)
                if not inspect.isfunction(f) or not f.__module__.startswith("circuitlab.") \
                        or f.__module__.startswith("circuitlab.tasks."):
                    continue
                params = inspect.signature(f).parameters
                if {"model", "source", "models", "max_memory"} & set(params):
                    out.setdefault(f"{f.__module__}.{f.__name__}", f)
    return out


def _battery_functions() -> set:
    out = set()
    for a in ANALYSES:
        f = a.function
        while isinstance(f, functools.partial):
            f = f.func
        out.add(f)
    return out


def test_every_public_analysis_is_in_the_battery():
    """A new public analysis joins the battery (a row of ANALYSES) or says in EXEMPT why it need not."""
    public = _public_functions()
    assert len(public) > 60, sorted(public)  # the rule still finds the rooms' analyses
    covered = _battery_functions()
    missing = sorted(name for name, f in public.items() if f not in covered and name not in EXEMPT)
    assert not missing, f"public analyses neither in ANALYSES nor in EXEMPT: {missing}"
    stale = sorted(name for name in EXEMPT if name not in public or public[name] in covered)
    assert not stale, f"EXEMPT entries that are no longer public analyses, or are in ANALYSES: {stale}"


def test_every_command_is_in_the_battery():
    """Every command of `circuitlab --help`, and every choice of a command's positional subcommand (`probe pos`,
    `neurons ablate`), has a row in COMMANDS."""
    from circuitlab import cli

    # the command modules register themselves when imported (as main does)
    for m in pkgutil.iter_modules(importlib.import_module("circuitlab.commands").__path__):
        importlib.import_module(f"circuitlab.commands.{m.name}")
    parser = cli.build_parser()
    assert len(parser.commands) >= 13
    rows = {tuple(argv[:2]) for argv in COMMANDS} | {(argv[0],) for argv in COMMANDS}
    missing = []
    for name, sub in parser.commands.items():
        if (name,) not in rows:
            missing.append(name)
        for action in sub._actions:
            if not action.option_strings and action.choices:
                missing += [f"{name} {c}" for c in action.choices if (name, c) not in rows]
    assert not missing, f"commands without a row in COMMANDS: {missing}"
