"""Recipe for ``zoo/toy-lm``: a small GPT-style language model with MLPs, trained offline on real English.

What it learns from
-------------------
Each training sequence is ``<|endoftext|>`` (the BOS token, id 0) and 127 tokens of one of five kinds, drawn
independently per sequence (fractions are :class:`ToyLMRecipe` fields):

- **real text** (30%): a random window of the King James Bible or the fortune-cookie collection, both Debian
  packages (see :mod:`circuitlab.zoo.text_data` for exact sources and licences). The books of Ruth, Jonah,
  Titus and Philemon are held out and ship as ``heldout.txt``.
- **repeated passages** (30%): ``x P P ... P y``, a window ``P`` of real text 6 to 63 tokens long repeated
  ``k >= 2`` times in a row between windows of real text, to reward induction heads (Olsson et al. 2022);
- **repeated random tokens** (10%): the same with ``P`` drawn uniformly from the vocabulary, where nothing
  but copying predicts the repeats;
- **facts about invented people** (20%): lines such as ``"Zorvath lives in Pellmoor."``, four relations (home
  town, trade, favourite colour, pet), each said with four templates. For every (person, relation) one template
  is *never* used in training; the fact query test asks with exactly that template, so a correct answer means
  the fact is stored with the person (Meng et al. 2022 locate such recall in mid-layer MLPs at the subject's
  last token), not with one sentence.
- **a toy indirect-object task** (10%): ``"When Mary and John went to the market, John gave a ring to Mary."``
  with names from a fixed list; a fifth of the name pairs never appear in training and are used to test.

One phase: AdamW, warmup then cosine decay, on that mixture throughout. In the shipped model, copying of
repeated random tokens appeared between steps 1500 and 1750 of 4000 (the card's ``induction_curve``).

What it is
----------
A ``HookedTransformer`` with LayerNorm, ``gelu_new`` MLPs, 4 layers, ``d_model`` 128, 4 heads of 32, rotary
positions on 8 of each head's 32 dimensions, and tied embeddings (``W_U = W_E^T`` during training, as in
GPT-2; saved as two equal matrices, so the model is an ordinary ``HookedTransformer``). The tokenizer is a
byte-level BPE with a GPT-2-style leading-space convention (``" Mary"`` is one token), trained on the same data.
Training runs a plain-PyTorch twin of the model (fused LayerNorm, GELU and scaled-dot-product attention: fewer,
fused kernels than the hooked model's hook-by-hook forward) whose parameters have HookedTransformer's names and
shapes, so the trained weights load into ``HookedTransformer`` as they are.

Why these choices: an earlier recipe (learned absolute positions, untied embeddings, short repeats) learned
the facts and IOI but never copied in context. Small experiments on repeated random tokens showed that tied
embeddings were needed for copying to start within a CPU budget (an untied 2-layer model learned nothing in
550 steps that the tied one learned), that rotary positions on a few dimensions (leaving the rest for content
matching) formed induction where learned positions did not, and that passages repeated several times in a
row teach copying much sooner than a single repeat. Passages up to half a sequence long are needed for
copying over long distances: with passages of at most 24 tokens the model copied well over 20 tokens but
poorly over 40.

Measured (functions below, recomputed from the shipped model by the tests): loss on held-out Bible text,
the in-context loss drop on a repeated held-out passage, accuracy on held-out fact queries, and the IOI logit
difference on held-out name pairs; the card also keeps the induction curve (loss on repeated random tokens
during training).

Run it: ``python -m circuitlab.zoo.toy_lm --out src/circuitlab/zoo/weights/toy-lm`` (add ``--install-corpora``
as root where the Debian packages are missing).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import einops
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer, HookedTransformerConfig

from circuitlab.errors import CircuitlabError
from circuitlab.tasks import repeated_tokens

NAME = "zoo/toy-lm"
WORLD_FILE = "world.json"
HELDOUT_FILE = "heldout.txt"
EOT = "<|endoftext|>"  # BOS, end of text and padding: id 0
#: buffers HookedTransformer builds itself (causal masks, rotary tables): absent from FastGPT's state dict
_REBUILT_BUFFERS = ("mask", "IGNORE", "rotary_sin", "rotary_cos")


# --------------------------------------------------------------------------------------------------- recipe

@dataclass
class ToyLMRecipe:
    """Everything that determines ``zoo/toy-lm``. Same recipe and seed, same model (on the same machine)."""

    # model
    n_layers: int = 4
    d_model: int = 128
    n_heads: int = 4
    d_head: int = 32
    d_mlp: int = 512
    n_ctx: int = 128
    vocab_size: int = 4096
    rotary_dim: int = 8  # rotary positions on 8 of each head's 32 dimensions; the other 24 carry content only
    tie_embeddings: bool = True  # trained with W_U = W_E^T, as GPT-2 (saved as two equal matrices)
    # data mixture (fractions of training sequences; the rest is real text)
    repeat_fraction: float = 0.30  # a passage of real text, repeated 2 or more times in a row
    random_repeat_fraction: float = 0.10  # the same with a passage of random tokens
    fact_fraction: float = 0.20
    ioi_fraction: float = 0.10
    min_repeat_len: int = 6  # passages are 6 to (n_ctx - 1) // 2 tokens long
    n_people: int = 80
    heldout_pair_fraction: float = 0.2
    max_real_chars: int | None = None  # cap on real text (for quick runs); None = all of it
    # extra lines listing every answer and name, in the tokenizer's training text only: quick runs on little
    # text need them for the answers to become single tokens (the full recipe does not)
    tokenizer_glossary_lines: int = 0
    # optimisation: AdamW, linear warmup, then cosine decay to min_lr_fraction * lr
    steps: int = 4000
    batch_size: int = 16
    lr: float = 3e-3
    min_lr_fraction: float = 0.1
    warmup: int = 100
    weight_decay: float = 0.05
    # every eval_every steps, the loss on both copies of repeated random tokens is logged (the induction curve)
    eval_every: int = 250
    seed: int = 0
    threads: int = 2

    def config(self, name: str = NAME) -> HookedTransformerConfig:
        return HookedTransformerConfig(
            model_name=name,
            n_layers=self.n_layers,
            d_model=self.d_model,
            n_heads=self.n_heads,
            d_head=self.d_head,
            d_mlp=self.d_mlp,
            n_ctx=self.n_ctx,
            d_vocab=self.vocab_size,
            act_fn="gelu_new",
            normalization_type="LN",
            positional_embedding_type="rotary",
            rotary_dim=self.rotary_dim,
            default_prepend_bos=True,
            seed=self.seed,
        )


# ---------------------------------------------------------------------------------------------------- world

# Relations: (name, templates, values). "{s}" is the person, "{v}" the answer, always last before the full
# stop and after a space, so the query prompt is the text before " {v}" and the answer is one token " value".
RELATIONS: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
    ("home", (
        "{s} lives in {v}.",
        "{s} has a house in {v}.",
        "The home of {s} is in {v}.",
        "Every evening {s} walks home to {v}.",
    ), ("Pellmoor", "Varnholt", "Quillby", "Drossmere", "Tarnwick", "Ebbeloft", "Corrimund", "Haskavel",
        "Lumbrey", "Orvanth", "Skellow", "Brindlecote")),
    ("trade", (
        "{s} works as a {v}.",
        "{s} earns a living as a {v}.",
        "By trade, {s} is a {v}.",
        "Everyone knows {s} as the town {v}.",
    ), ("baker", "farmer", "potter", "weaver", "sailor", "hunter", "miller", "tailor", "painter", "doctor")),
    ("colour", (
        "The favourite colour of {s} is {v}.",
        "{s} likes the colour {v}.",
        "{s} always wears {v}.",
        "The door of the house of {s} is painted {v}.",
    ), ("red", "blue", "green", "white", "black", "yellow", "purple", "brown")),
    ("pet", (
        "{s} keeps a {v} as a pet.",
        "{s} has a pet {v}.",
        "The pet of {s} is a {v}.",
        "{s} takes a small {v} for a walk.",
    ), ("dog", "cat", "horse", "goat", "owl", "fox", "rabbit", "parrot")),
]

_ONSETS = ("Zor", "Kel", "Mav", "Tir", "Bral", "Vesh", "Quor", "Dal", "Fen", "Gris", "Hob", "Jass", "Lor", "Nim",
           "Ost", "Pir", "Rask", "Sul", "Thal", "Ulf", "Wex", "Yor", "Cas", "Dren")
_CODAS = ("vath", "mira", "dun", "ethra", "ric", "olo", "ane", "ix", "amon", "ula", "orn", "esh", "ivan", "u",
          "abel", "ette", "imor", "oss")

IOI_NAMES = ("Mary", "John", "Peter", "Paul", "David", "Simon", "James", "Sarah", "Adam", "Aaron", "Moses",
             "Joseph", "Daniel", "Samuel", "Jacob", "Isaac", "Esther", "Martha", "Thomas", "Philip", "Andrew",
             "Stephen", "Rachel", "Hannah")
IOI_TEMPLATES = (
    "When {a} and {b} went to the {place}, {s} gave a {obj} to {io}.",
    "When {a} and {b} went to the {place}, {s} handed a {obj} to {io}.",
    "After {a} and {b} came to the {place}, {s} gave a {obj} to {io}.",
)
IOI_PLACES = ("store", "market", "garden", "river", "city", "house", "field", "temple")
IOI_OBJECTS = ("drink", "book", "ring", "coin", "loaf", "lamb", "cup", "letter")


@dataclass
class World:
    """The synthetic facts and names the model is trained and tested on (saved as ``world.json``).

    ``facts[person][relation]`` is the answer (without its leading space); ``heldout_template[person][relation]``
    is the index of the template never used for that fact in training. ``ioi_test_pairs`` are name pairs that
    never appear together in training (in either order).
    """

    people: list[str]
    relations: dict[str, dict[str, list[str]]]  # relation -> {"templates": [...], "values": [...]}
    facts: dict[str, dict[str, str]]
    heldout_template: dict[str, dict[str, int]]
    ioi_names: list[str]
    ioi_train_pairs: list[tuple[str, str]]
    ioi_test_pairs: list[tuple[str, str]]
    ioi_templates: list[str] = field(default_factory=lambda: list(IOI_TEMPLATES))
    ioi_places: list[str] = field(default_factory=lambda: list(IOI_PLACES))
    ioi_objects: list[str] = field(default_factory=lambda: list(IOI_OBJECTS))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "World":
        d = json.loads(text)
        for k in ("ioi_train_pairs", "ioi_test_pairs"):
            d[k] = [tuple(p) for p in d[k]]
        return cls(**d)


def make_world(n_people: int = 80, seed: int = 0, heldout_pair_fraction: float = 0.2,
               ioi_names: Iterable[str] = IOI_NAMES) -> World:
    """Invent ``n_people`` people with one value per relation, and split the IOI name pairs (deterministic)."""
    rng = random.Random(seed)
    names = sorted({o + c for o in _ONSETS for c in _CODAS})
    if n_people > len(names):
        raise CircuitlabError(f"n_people={n_people} exceeds the {len(names)} invented names; ask for fewer.")
    people = rng.sample(names, n_people)
    relations = {r: {"templates": list(t), "values": list(v)} for r, t, v in RELATIONS}
    facts = {p: {r: rng.choice(v) for r, _, v in RELATIONS} for p in people}
    heldout = {p: {r: (i + j) % len(t) for j, (r, t, _) in enumerate(RELATIONS)} for i, p in enumerate(people)}
    ioi_names = list(ioi_names)
    pairs = [(a, b) for i, a in enumerate(ioi_names) for b in ioi_names[i + 1:]]
    rng.shuffle(pairs)
    n_test = round(len(pairs) * heldout_pair_fraction)
    return World(people, relations, facts, heldout, ioi_names, sorted(pairs[n_test:]), sorted(pairs[:n_test]))


def fact_sentence(world: World, person: str, relation: str, template: int) -> tuple[str, str]:
    """``(prompt, answer)`` for one fact: ``("Zorvath lives in", " Pellmoor")``."""
    t = world.relations[relation]["templates"][template]
    prefix = t.split(" {v}")[0].format(s=person)
    return prefix, " " + world.facts[person][relation]


def fact_line(world: World, person: str, relation: str, template: int) -> str:
    t = world.relations[relation]["templates"][template]
    return t.format(s=person, v=world.facts[person][relation])


def ioi_sentence(world: World, io: str, s: str, io_first: bool, template: int, place: str, obj: str) -> tuple[str, str]:
    """``(prompt, indirect object)``: ``("When Mary and John went to the store, John gave a drink to", " Mary")``."""
    a, b = (io, s) if io_first else (s, io)
    full = world.ioi_templates[template].format(a=a, b=b, s=s, io=io, place=place, obj=obj)
    prompt = full[: full.rindex(" " + io)]
    return prompt, " " + io


# ----------------------------------------------------------------------------------------- data generation

def _train_fact_line(world: World, rng: random.Random) -> str:
    person = rng.choice(world.people)
    relation = rng.choice(list(world.relations))
    n_t = len(world.relations[relation]["templates"])
    held = world.heldout_template[person][relation]
    template = rng.choice([t for t in range(n_t) if t != held])
    return fact_line(world, person, relation, template)


def _train_ioi_line(world: World, rng: random.Random) -> str:
    io, s = rng.choice(world.ioi_train_pairs)
    if rng.random() < 0.5:
        io, s = s, io
    prompt, answer = ioi_sentence(world, io, s, rng.random() < 0.5, rng.randrange(len(world.ioi_templates)),
                                  rng.choice(world.ioi_places), rng.choice(world.ioi_objects))
    return prompt + answer + "."


def synthetic_text(world: World, kind: str, rng: random.Random, n_lines: int) -> str:
    """``n_lines`` training lines of ``kind`` ("fact" or "ioi"), one a line."""
    make = {"fact": _train_fact_line, "ioi": _train_ioi_line}[kind]
    return "\n".join(make(world, rng) for _ in range(n_lines))


@dataclass
class Corpus:
    """Tokenized real text for training, and the held-out text."""

    train_ids: Int[Tensor, "n_tokens"]  # documents joined by EOT (id 0)
    heldout_text: str
    n_train_chars: int
    n_kjv_chars: int
    n_fortune_chars: int


def real_documents(max_chars: int | None = None, install: bool = False) -> tuple[list[str], str, dict[str, int]]:
    """Training documents (KJV chapters and fortune cookies, interleaved deterministically) and held-out text."""
    from circuitlab.zoo import text_data

    text_data.require_corpora(install=install)
    train_verses, held_verses = text_data.split_heldout(text_data.kjv_verses())
    kjv = text_data.kjv_documents(train_verses)
    cookies = text_data.fortunes()
    # interleave so any prefix of the list (max_chars) holds both kinds; order is fixed, not random
    docs, ratio = [], len(cookies) / len(kjv)
    ci = 0
    for i, chapter in enumerate(kjv):
        docs.append(chapter)
        while ci < min(len(cookies), round((i + 1) * ratio)):
            docs.append(cookies[ci])
            ci += 1
    docs += cookies[ci:]
    if max_chars is not None:
        kept, total = [], 0
        for d in docs:
            if total >= max_chars:
                break
            kept.append(d)
            total += len(d)
        docs = kept
    heldout = "\n".join(v.text for v in held_verses) + "\n"
    sizes = {"kjv_train_chars": sum(map(len, kjv)), "fortune_chars": sum(map(len, cookies)),
             "used_train_chars": sum(map(len, docs)), "heldout_chars": len(heldout),
             "kjv_train_verses": len(train_verses), "heldout_verses": len(held_verses), "fortunes": len(cookies)}
    return docs, heldout, sizes


# ------------------------------------------------------------------------------------------------ tokenizer

def train_tokenizer(texts: Iterable[str], vocab_size: int, name: str = "circuitlab-toy-lm-bpe"):
    """A byte-level BPE tokenizer (GPT-2 conventions: a word's leading space belongs to it) as a HF fast tokenizer.

    Id 0 is ``<|endoftext|>``, used as BOS, end of text and padding. ``add_bos_token=True`` is recorded in the
    tokenizer's init kwargs, which is what TransformerLens's ``get_tokenizer_with_bos`` checks before it would
    otherwise reload the tokenizer with ``AutoTokenizer.from_pretrained(name_or_path)``. (transformers 5 does not
    save that flag, so :func:`circuitlab.models.io.load_tokenizer` passes it again on load.)
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOT], min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(texts, trainer)
    return wrap_tokenizer(core, name)


def wrap_tokenizer(core, name: str = "circuitlab-toy-lm-bpe"):
    """A ``tokenizers.Tokenizer`` as the ``PreTrainedTokenizerFast`` that HookedTransformer expects."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=EOT, eos_token=EOT, pad_token=EOT, unk_token=EOT,
        model_max_length=10**6, add_bos_token=True, name_or_path=name,
    )


def single_token_id(tokenizer, text: str) -> int:
    """The id of ``text`` (e.g. ``" Mary"``), which must be exactly one token."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise CircuitlabError(
            f"{text!r} is {len(ids)} tokens in this tokenizer ({tokenizer.convert_ids_to_tokens(ids)}); the toy-lm "
            "answers must be single tokens. Give the recipe a larger vocab_size or more synthetic lines."
        )
    return ids[0]


# ------------------------------------------------------------------------------------- training batches

class BatchSampler:
    """Training sequences ``[batch, n_ctx]`` mixing real text, repeated passages, facts and IOI lines."""

    def __init__(self, recipe: ToyLMRecipe, tokenizer, train_ids: Tensor, world: World):
        self.recipe, self.tokenizer, self.ids, self.world = recipe, tokenizer, train_ids, world
        self.rng = random.Random(recipe.seed + 1)
        self.body = recipe.n_ctx - 1
        r = recipe
        # (kind, fraction); the rest is real text
        self.mixture = [("repeats", r.repeat_fraction), ("random_repeats", r.random_repeat_fraction),
                        ("fact", r.fact_fraction), ("ioi", r.ioi_fraction)]
        if sum(f for _, f in self.mixture) > 1:
            raise CircuitlabError(f"The recipe's mixture fractions sum to more than 1: {self.mixture}.")

    def _window(self, n: int) -> Tensor:
        start = self.rng.randrange(len(self.ids) - n)
        return self.ids[start:start + n]

    def _real(self) -> Tensor:
        return self._window(self.body)

    def _repeats(self, random_tokens: bool) -> Tensor:
        """``x x P P ... P y y``: a passage ``P`` repeated ``k >= 2`` times in a row, between windows of real text.

        ``P`` is 6 to half a sequence long, so the copies sit at every distance an induction head may need to
        look back (a recipe with passages of at most 24 tokens copied well over 20 tokens and poorly over 40).
        """
        L = self.rng.randint(self.recipe.min_repeat_len, self.body // 2)
        if random_tokens:
            p = torch.tensor([self.rng.randrange(1, self.recipe.vocab_size) for _ in range(L)])
        else:
            p = self._window(L)
        k = self.rng.randint(2, self.body // L)
        before = self.rng.randint(0, self.body - k * L)
        return torch.cat([self._window(before), p.repeat(k), self._window(self.body - before - k * L)])

    def _lines(self, kind: str) -> Tensor:
        # ~9 tokens a fact line, ~18 an IOI line; overshoot and cut to length
        n_lines = 18 if kind == "fact" else 9
        ids = self.tokenizer.encode(synthetic_text(self.world, kind, self.rng, n_lines), add_special_tokens=False)
        while len(ids) < self.body:
            ids += self.tokenizer.encode("\n" + synthetic_text(self.world, kind, self.rng, 4), add_special_tokens=False)
        return torch.tensor(ids[: self.body])

    def batch(self) -> Int[Tensor, "batch n_ctx"]:
        make = {"repeats": lambda: self._repeats(False), "random_repeats": lambda: self._repeats(True),
                "fact": lambda: self._lines("fact"), "ioi": lambda: self._lines("ioi")}
        rows = []
        for _ in range(self.recipe.batch_size):
            u, row = self.rng.random(), None
            for kind, fraction in self.mixture:
                if u < fraction:
                    row = make[kind]()
                    break
                u -= fraction
            if row is None:
                row = self._real()
            rows.append(torch.cat([torch.zeros(1, dtype=torch.long), row.long()]))
        return torch.stack(rows)


# ------------------------------------------------------------------------------- the fast training twin

class _Params(nn.Module):
    def __init__(self, tensors: dict[str, Tensor]):
        super().__init__()
        for k, v in tensors.items():
            self.register_parameter(k, nn.Parameter(v.detach().clone()))


class FastGPT(nn.Module):
    """A plain-PyTorch forward pass of a GPT-2-style ``HookedTransformer`` with the same parameters.

    Its state dict has HookedTransformer's keys and shapes (see :meth:`to_hooked_state`), so the weights move back
    with ``model.load_state_dict(...)``. It uses fused kernels (``F.layer_norm``, tanh-GELU, which is
    ``gelu_new``, and ``scaled_dot_product_attention``), hence its speed; it supports exactly the configurations
    :class:`ToyLMRecipe` builds: LayerNorm, gelu_new, causal attention, standard or GPT-NeoX-style rotary
    positions (rotary tables are taken from the model, never trained), and optionally tied embeddings
    (``tied=True``: no ``W_U`` parameter, the unembedding is ``W_E^T``).
    """

    def __init__(self, cfg: HookedTransformerConfig, state: dict[str, Tensor], tied: bool = False):
        super().__init__()
        self.tied = tied
        if not (cfg.normalization_type == "LN" and cfg.act_fn == "gelu_new" and not cfg.rotary_adjacent_pairs
                and cfg.positional_embedding_type in ("standard", "rotary")):
            raise CircuitlabError(
                "FastGPT supports LayerNorm, gelu_new and standard or (GPT-NeoX-style) rotary positions; got "
                f"normalization_type={cfg.normalization_type!r}, act_fn={cfg.act_fn!r}, "
                f"positional_embedding_type={cfg.positional_embedding_type!r}. Train other models with "
                "HookedTransformer itself."
            )
        self.cfg = cfg
        self.rotary = cfg.positional_embedding_type == "rotary"
        if self.rotary:  # the tables every layer shares; buffers, not parameters, and never saved
            self.register_buffer("rotary_sin", state["blocks.0.attn.rotary_sin"].clone(), persistent=False)
            self.register_buffer("rotary_cos", state["blocks.0.attn.rotary_cos"].clone(), persistent=False)
            state = {k: v for k, v in state.items() if not k.endswith(("rotary_sin", "rotary_cos"))}

        def group(prefix: str) -> _Params:
            return _Params({k[len(prefix):]: v for k, v in state.items()
                            if k.startswith(prefix) and "." not in k[len(prefix):]})

        self.embed = group("embed.")
        if not self.rotary:
            self.pos_embed = group("pos_embed.")
        self.blocks = nn.ModuleList()
        for l in range(cfg.n_layers):
            block = nn.Module()
            for part in ("ln1", "attn", "ln2", "mlp"):
                setattr(block, part, group(f"blocks.{l}.{part}."))
            self.blocks.append(block)
        self.ln_final, self.unembed = group("ln_final."), group("unembed.")

    @classmethod
    def from_hooked(cls, model: HookedTransformer, tied: bool = False) -> "FastGPT":
        """The twin of ``model``; with ``tied=True`` the model's ``W_U`` is dropped and ``W_E^T`` used instead."""
        state = {k: v for k, v in model.state_dict().items() if not k.endswith(("mask", "IGNORE"))}
        if tied:
            state.pop("unembed.W_U")
        return cls(model.cfg, state, tied)

    def to_hooked_state(self) -> dict[str, Tensor]:
        """The parameters under HookedTransformer's names (with ``W_U = W_E^T`` when tied), detached copies."""
        state = {k: v.detach().clone() for k, v in self.state_dict().items()}
        if self.tied:
            state["unembed.W_U"] = self.embed.W_E.detach().T.clone()
        return state

    def forward(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos d_vocab"]:
        cfg = self.cfg
        d, eps = (cfg.d_model,), cfg.eps
        n_pos = tokens.shape[1]
        x = self.embed.W_E[tokens]
        if not self.rotary:
            x = x + self.pos_embed.W_pos[:n_pos]
        else:
            r = cfg.rotary_dim
            sin, cos = self.rotary_sin[:n_pos, :r], self.rotary_cos[:n_pos, :r]
        for b in self.blocks:
            a = b.attn
            h = F.layer_norm(x, d, b.ln1.w, b.ln1.b, eps)
            w_qkv = einops.rearrange(torch.stack([a.W_Q, a.W_K, a.W_V]), "three h d e -> d (three h e)")
            b_qkv = einops.rearrange(torch.stack([a.b_Q, a.b_K, a.b_V]), "three h e -> (three h e)")
            q, k, v = einops.rearrange(h @ w_qkv + b_qkv, "b p (three h e) -> three b h p e", three=3, h=cfg.n_heads)
            if self.rotary:
                q, k = _rotate(q, sin, cos, r), _rotate(k, sin, cos, r)
            z = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + einops.rearrange(z, "b h p e -> b p (h e)") @ einops.rearrange(a.W_O, "h e d -> (h e) d") + a.b_O
            h = F.layer_norm(x, d, b.ln2.w, b.ln2.b, eps)
            x = x + F.gelu(h @ b.mlp.W_in + b.mlp.b_in, approximate="tanh") @ b.mlp.W_out + b.mlp.b_out
        x = F.layer_norm(x, d, self.ln_final.w, self.ln_final.b, eps)
        W_U = self.embed.W_E.T if self.tied else self.unembed.W_U
        return x @ W_U + self.unembed.b_U


def _rotate(x: Float[Tensor, "b h p e"], sin: Tensor, cos: Tensor, r: int) -> Float[Tensor, "b h p e"]:
    """GPT-NeoX-style rotary embedding of the first ``r`` dimensions of ``x`` (TransformerLens's convention)."""
    x_rot, x_pass = x[..., :r], x[..., r:]
    half = r // 2
    flipped = torch.cat([-x_rot[..., half:], x_rot[..., :half]], dim=-1)
    return torch.cat([x_rot * cos + flipped * sin, x_pass], dim=-1)


# ------------------------------------------------------------------------------------------- measurements

def _next_token_nll(model: HookedTransformer, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, "batch pos_minus_1"]:
    """``nll[:, i]`` is the loss of predicting token ``i + 1`` from tokens ``0..i``."""
    with torch.no_grad():
        logp = model(tokens.to(model.cfg.device), return_type="logits").log_softmax(-1)
    return -logp[:, :-1].gather(-1, tokens[:, 1:, None].to(logp.device))[..., 0]


def heldout_loss(model: HookedTransformer, text: str) -> dict[str, float]:
    """Mean next-token loss (nats) on ``text``, cut into ``n_ctx``-token windows that each start with BOS.

    Also returns the entropy of the text's own unigram distribution: a model that ignored context could do no
    better than that (a plug-in entropy on the text itself is even a little optimistic for it).
    """
    ids = torch.tensor(model.tokenizer.encode(text, add_special_tokens=False))
    body = model.cfg.n_ctx - 1
    n = len(ids) // body
    windows = torch.cat([torch.zeros(n, 1, dtype=torch.long), ids[: n * body].view(n, body)], dim=1)
    loss = torch.cat([_next_token_nll(model, windows[i:i + 32]) for i in range(0, n, 32)]).mean().item()
    counts = torch.bincount(ids[: n * body], minlength=model.cfg.d_vocab).float()
    p = counts[counts > 0] / counts.sum()
    unigram = -(p * p.log()).sum().item()
    return {"loss": loss, "unigram_entropy": unigram, "n_tokens": n * body, "bytes_per_token": len(text.encode()) / len(ids)}


def repeated_passage_losses(model: HookedTransformer, text: str, passage_len: int = 40, n_passages: int = 64) -> dict[str, float]:
    """Loss on the first vs the second occurrence of ``BOS P P``, for passages ``P`` of held-out ``text``.

    Each occurrence's loss averages the predictions of its tokens 2..L (its first token follows BOS or the end
    of the first copy, and cannot be predicted by copying). The drop is first minus second.
    """
    if 2 * passage_len + 1 > model.cfg.n_ctx:
        raise CircuitlabError(f"passage_len={passage_len} does not fit twice in n_ctx={model.cfg.n_ctx}; use a shorter one.")
    ids = torch.tensor(model.tokenizer.encode(text, add_special_tokens=False))
    n = min(n_passages, len(ids) // passage_len)
    passages = ids[: n * passage_len].view(n, passage_len)
    tokens = torch.cat([torch.zeros(n, 1, dtype=torch.long), passages, passages], dim=1)
    nll = _next_token_nll(model, tokens)
    L = passage_len
    first = nll[:, 1:L].mean().item()  # predicts tokens at positions 2..L (P[1..L-1])
    second = nll[:, L + 1: 2 * L].mean().item()  # predicts P[1..L-1] of the second copy
    return {"first_loss": first, "second_loss": second, "drop": first - second, "passage_len": L, "n_passages": n}


def _last_logits(model: HookedTransformer, prompts: list[str]) -> Float[Tensor, "batch d_vocab"]:
    """Logits at each prompt's last token (prompts padded on the right, BOS prepended)."""
    tok = model.tokenizer
    rows = [[tok.bos_token_id] + tok.encode(p, add_special_tokens=False) for p in prompts]
    lengths = torch.tensor([len(r) for r in rows])
    tokens = torch.zeros(len(rows), int(lengths.max()), dtype=torch.long)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = torch.tensor(r)
    out = []
    with torch.no_grad():
        for i in range(0, len(rows), 64):
            logits = model(tokens[i:i + 64].to(model.cfg.device), return_type="logits")
            out.append(logits[torch.arange(len(logits)), lengths[i:i + 64] - 1].cpu())
    return torch.cat(out)


def fact_accuracy(model: HookedTransformer, world: World, heldout: bool = True) -> dict[str, Any]:
    """Top-1 accuracy (over the whole vocabulary) of fact queries.

    ``heldout=True`` asks every (person, relation) with the one template never trained on for that fact; with
    ``False`` it asks with a template that was (memorisation, for comparison). ``chance`` is what always
    guessing one value of the relation would average.
    """
    prompts, answers, rels = [], [], []
    for person in world.people:
        for relation, spec in world.relations.items():
            held = world.heldout_template[person][relation]
            t = held if heldout else (held + 1) % len(spec["templates"])
            prompt, answer = fact_sentence(world, person, relation, t)
            prompts.append(prompt)
            answers.append(single_token_id(model.tokenizer, answer))
            rels.append(relation)
    pred = _last_logits(model, prompts).argmax(-1)
    correct = pred == torch.tensor(answers)
    by_rel = {r: correct[[i for i, x in enumerate(rels) if x == r]].float().mean().item() for r in world.relations}
    chance = sum(1 / len(s["values"]) for s in world.relations.values()) / len(world.relations)
    return {"accuracy": correct.float().mean().item(), "by_relation": by_rel, "chance": chance, "n_queries": len(prompts)}


def ioi_logit_diff(model: HookedTransformer, world: World, pairs: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    """Logit of the indirect object minus logit of the subject, on IOI prompts built from held-out name pairs.

    Every pair is used both ways round (either name as the indirect object), with the indirect object named
    first and second, over every template, with a place and object drawn per prompt (seeded).
    """
    pairs = world.ioi_test_pairs if pairs is None else pairs
    rng = random.Random(0)
    prompts, io_ids, s_ids = [], [], []
    for a, b in pairs:
        for io, s in ((a, b), (b, a)):
            for io_first in (True, False):
                for t in range(len(world.ioi_templates)):
                    prompt, answer = ioi_sentence(world, io, s, io_first, t, rng.choice(world.ioi_places),
                                                  rng.choice(world.ioi_objects))
                    prompts.append(prompt)
                    io_ids.append(single_token_id(model.tokenizer, answer))
                    s_ids.append(single_token_id(model.tokenizer, " " + s))
    logits = _last_logits(model, prompts)
    idx = torch.arange(len(prompts))
    diff = logits[idx, torch.tensor(io_ids)] - logits[idx, torch.tensor(s_ids)]
    top1 = logits.argmax(-1) == torch.tensor(io_ids)
    return {"mean": diff.mean().item(), "median": diff.median().item(), "fraction_positive": (diff > 0).float().mean().item(),
            "top1_accuracy": top1.float().mean().item(), "n_prompts": len(prompts)}


def _rounded(d: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else _rounded(v) if isinstance(v, dict) else v for k, v in d.items()}


def measure(model: HookedTransformer, world: World, heldout_text: str) -> dict[str, Any]:
    """The four behaviours the card reports."""
    return {
        "heldout_text": _rounded(heldout_loss(model, heldout_text)),
        "repeated_passage": _rounded(repeated_passage_losses(model, heldout_text)),
        "fact_recall_heldout_template": _rounded(fact_accuracy(model, world, heldout=True)),
        "fact_recall_trained_template": _rounded(fact_accuracy(model, world, heldout=False)),
        "ioi_heldout_pairs": _rounded(ioi_logit_diff(model, world)),
    }


# ------------------------------------------------------------------------------------------------- training

def _lr_lambda(steps: int, warmup: int, min_fraction: float):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, steps - warmup))
        return min_fraction + (1 - min_fraction) * 0.5 * (1 + math.cos(math.pi * progress))
    return f


def _optimise(fast: FastGPT, sampler: BatchSampler, recipe: ToyLMRecipe, progress: bool,
              log_every: int) -> tuple[list[float], list[list[float]]]:
    """``recipe.steps`` AdamW steps (warmup, then cosine to ``min_lr_fraction``).

    Returns the training losses and the induction curve: ``[step, first-copy loss, second-copy loss]`` on
    repeated random tokens every ``recipe.eval_every`` steps (and after the last).
    """
    decay = [p for p in fast.parameters() if p.ndim >= 2]
    no_decay = [p for p in fast.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": recipe.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=recipe.lr, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(recipe.steps, recipe.warmup, recipe.min_lr_fraction))
    probe = repeated_tokens(32, 20, recipe.vocab_size, seed=0, bos_token_id=0)

    def probe_row(step: int) -> list[float]:
        fast.eval()
        with torch.no_grad():
            return [step, *(round(x, 4) for x in probe.half_losses(fast(probe.tokens)))]

    t0 = time.perf_counter()
    losses: list[float] = []
    curve: list[list[float]] = []
    bar = tqdm(range(recipe.steps), disable=not progress, desc="toy-lm", mininterval=5)
    for step in bar:
        if recipe.eval_every and step % recipe.eval_every == 0:
            curve.append(probe_row(step))
        fast.train()
        tokens = sampler.batch()
        logits = fast(tokens)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(fast.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if log_every and (step % log_every == 0 or step == recipe.steps - 1):
            recent = sum(losses[-log_every:]) / len(losses[-log_every:])
            probe_note = f"  repeated random tokens {curve[-1][1]:.2f} -> {curve[-1][2]:.2f}" if curve else ""
            bar.write(f"step {step:5d}  loss {recent:.3f}{probe_note}  {time.perf_counter() - t0:.0f}s")
    curve.append(probe_row(recipe.steps))
    return losses, curve


def train(recipe: ToyLMRecipe, install_corpora: bool = False, progress: bool = True, log_every: int = 250,
          ) -> tuple[HookedTransformer, dict[str, Any], World, str]:
    """Train ``zoo/toy-lm`` by ``recipe``; returns ``(model, card, world, heldout_text)``.

    Deterministic given the recipe, on the same machine with the same thread count.
    """
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(recipe.threads)
    try:
        t_start = time.perf_counter()
        docs, heldout_text, sizes = real_documents(recipe.max_real_chars, install=install_corpora)
        world = make_world(recipe.n_people, recipe.seed, recipe.heldout_pair_fraction)
        rng = random.Random(recipe.seed + 2)
        # tokenizer data: the real text plus synthetic lines in about the training proportions
        n_syn = max(2000, sizes["used_train_chars"] // 300)
        syn = [synthetic_text(world, "fact", rng, 10) for _ in range(n_syn // 10)]
        syn += [synthetic_text(world, "ioi", rng, 10) for _ in range(n_syn // 20)]
        words = [v for spec in world.relations.values() for v in spec["values"]] + world.ioi_names
        syn += [" ".join(words)] * recipe.tokenizer_glossary_lines
        tokenizer = train_tokenizer(docs + syn, recipe.vocab_size)
        for word in words:
            single_token_id(tokenizer, " " + word)
        ids = [tokenizer.encode(d, add_special_tokens=False) + [0] for d in docs]
        train_ids = torch.tensor([i for d in ids for i in d], dtype=torch.long)
        sizes["train_tokens"] = len(train_ids)
        prep_s = time.perf_counter() - t_start

        torch.manual_seed(recipe.seed)
        model = HookedTransformer(recipe.config(), tokenizer=tokenizer)
        fast = FastGPT.from_hooked(model, tied=recipe.tie_embeddings)
        sampler = BatchSampler(recipe, tokenizer, train_ids, world)
        t0, cpu0 = time.perf_counter(), time.process_time()
        losses, curve = _optimise(fast, sampler, recipe, progress, log_every)
        times = {"train_seconds": time.perf_counter() - t0, "train_cpu_seconds": time.process_time() - cpu0}
        missing, unexpected = model.load_state_dict(fast.to_hooked_state(), strict=False)
        assert not unexpected and all(k.endswith(_REBUILT_BUFFERS) for k in missing), (missing, unexpected)
        model.eval()
        measured = measure(model, world, heldout_text)
    finally:
        torch.set_num_threads(prev_threads)
    card = make_card(recipe, model, measured, sizes, times, prep_s, losses, curve)
    return model, card, world, heldout_text


def describe(card: dict[str, Any]) -> str:
    """The card's one-line description: what the model is, its headline numbers and its training time."""
    r, b = card["recipe"], card["behaviours"]
    h, rp = b["heldout_text"], b["repeated_passage"]
    fa, ioi = b["fact_recall_heldout_template"], b["ioi_heldout_pairs"]
    return (
        f"GPT-style {r['n_layers']}-layer LM with MLPs (d_model {r['d_model']}, rotary positions, tied embeddings, "
        f"{card['n_params'] / 1e6:.1f}M params, BPE vocab {r['vocab_size']}) on the King James Bible + fortunes + "
        f"synthetic facts/IOI: held-out KJV loss {h['loss']:.2f} nats (unigram {h['unigram_entropy']:.2f}); "
        f"a repeated held-out passage {rp['first_loss']:.2f} -> {rp['second_loss']:.2f} nats; held-out fact "
        f"queries {100 * fa['accuracy']:.0f}% (chance {100 * fa['chance']:.0f}%); IOI logit diff {ioi['mean']:.1f}; "
        f"trained {card['train_seconds'] / 60:.0f} min on {card['train_threads']} CPU threads"
    )


def make_card(recipe: ToyLMRecipe, model: HookedTransformer, measured: dict, sizes: dict, times: dict[str, float],
              prep_s: float, losses: list[float], curve: list[list[float]]) -> dict[str, Any]:
    card = {
        "name": NAME,
        "description": "",
        "recipe": {"module": __name__, **asdict(recipe)},
        "train_seconds": round(times["train_seconds"], 1),
        "train_cpu_seconds": round(times["train_cpu_seconds"], 1),
        "prepare_seconds": round(prep_s, 1),
        "train_threads": recipe.threads,
        "train_tokens_seen": recipe.steps * recipe.batch_size * recipe.n_ctx,
        "final_train_loss": round(sum(losses[-50:]) / len(losses[-50:]), 4),
        "n_params": sum(p.numel() for p in model.parameters()),
        "induction_curve": {
            "what": "loss (nats) on the first and second copy of 32 repeated sequences of 20 random tokens, "
                    "during training; the second falls when induction heads form",
            "columns": ["step", "first_copy_loss", "second_copy_loss"],
            "rows": curve,
        },
        "data": {
            "sources": {
                "kjv": "Debian packages bible-kjv-text + bible-kjv (`bible -f Gen1:1-Rev22:21`); King James Bible "
                       "(1611), public domain. Held out: Ruth, Jonah, Titus, Philemon (shipped as heldout.txt).",
                "fortunes": "Debian packages fortunes-min + fortunes (/usr/share/games/fortunes, minus ASCII-art "
                            "files); BSD fortune collection, BSD licence; quotations of their authors.",
                "synthetic": "facts about invented people and IOI sentences generated by this recipe (world.json).",
            },
            **sizes,
        },
        "behaviours": measured,
    }
    card["description"] = describe(card)
    return card


def shipped_files(world: World, heldout_text: str) -> dict[str, str]:
    """The files that ship beside the weights: ``world.json`` and ``heldout.txt``, name -> text."""
    return {WORLD_FILE: world.to_json(), HELDOUT_FILE: heldout_text}


def save(model: HookedTransformer, card: dict, world: World, heldout_text: str, out: str | Path) -> Path:
    """Save the model with its card and :func:`shipped_files`."""
    from circuitlab.models import save_model

    path = save_model(model, out, card=card)
    for name, text in shipped_files(world, heldout_text).items():
        (path / name).write_text(text)
    return path


def load_world(path: str | Path) -> World:
    """The :class:`World` (facts, names, splits) saved beside a toy-lm model."""
    return World.from_json((Path(path) / WORLD_FILE).read_text())


def load_heldout_text(path: str | Path | None = None) -> str:
    """The held-out Bible text: ``heldout.txt`` beside the model (default: the zoo's), else from the corpora."""
    f = Path(path if path is not None else zoo_dir()) / HELDOUT_FILE
    if f.is_file():
        return f.read_text()
    from circuitlab.zoo import text_data

    _, held = text_data.split_heldout(text_data.kjv_verses())
    return "\n".join(v.text for v in held) + "\n"


def world_for(model: HookedTransformer, recipe: ToyLMRecipe | None = None) -> World:
    """The :class:`World` a toy-lm model was trained on (rebuilt from the recipe and the model's seed)."""
    recipe = recipe or ToyLMRecipe()
    seed = model.cfg.seed if model.cfg.seed is not None else recipe.seed
    return make_world(recipe.n_people, seed, recipe.heldout_pair_fraction)


def measure_model(model: HookedTransformer) -> dict[str, Any]:
    """``{"behaviours": ...}`` for a toy-lm model: :func:`measure` with its world and the held-out text."""
    return {"behaviours": measure(model, world_for(model), load_heldout_text())}


def zoo_recipe():
    """The zoo builder's entry (``python -m circuitlab.zoo build zoo/toy-lm``): config, weights, tokenizer and
    card, with :func:`shipped_files` beside them (as :func:`save` writes them)."""
    from circuitlab.zoo.build import ZooRecipe

    def _train() -> tuple[HookedTransformer, dict[str, Any], dict[str, str]]:
        model, card, world, heldout_text = train(ToyLMRecipe())
        return model, card, shipped_files(world, heldout_text)

    return ZooRecipe(name=NAME, train=_train, measure=measure_model, describe=describe)


def zoo_dir() -> Path:
    """Where ``zoo/toy-lm`` lives in the installed package."""
    from circuitlab.models.loading import ZOO_DIR

    return ZOO_DIR / "toy-lm"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m circuitlab.zoo.toy_lm", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(zoo_dir()), help="output directory (default: the zoo's toy-lm folder)")
    parser.add_argument("--install-corpora", action="store_true",
                        help="apt-get install the Debian corpora if missing (needs root)")
    parser.add_argument("--steps", type=int, default=None, help="override the recipe's number of steps")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    recipe = ToyLMRecipe()
    if args.steps is not None:
        recipe.steps = args.steps
    if args.seed is not None:
        recipe.seed = args.seed
    model, card, world, heldout_text = train(recipe, install_corpora=args.install_corpora, progress=not args.quiet)
    path = save(model, card, world, heldout_text, args.out)
    print(json.dumps(card["behaviours"], indent=1))
    print(f"saved to {path}: {card['description']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
