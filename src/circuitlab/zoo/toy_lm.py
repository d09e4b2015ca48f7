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

The synthetic world (people, facts, templates, IOI names and their splits) is a task,
:mod:`circuitlab.tasks.toy_world`; it ships beside the weights as ``world.json``, and measuring a model reads that
file. The fast twin is :mod:`circuitlab.zoo.fastgpt`, the training loop :mod:`circuitlab.zoo.training`, the BPE
tokenizer :mod:`circuitlab.zoo.tokenizer` and the corpora :mod:`circuitlab.zoo.text_data`.

Build it: ``python -m circuitlab.zoo build zoo/toy-lm`` (add ``--install-corpora`` as root where the Debian
packages are missing).
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer, HookedTransformerConfig

from circuitlab.errors import CircuitlabError
from circuitlab.tasks import repeated_tokens
from circuitlab.tasks.toy_world import (
    WORLD_FILE, World, fact_sentence, ioi_sentence, load_world, make_world, synthetic_text,
)
from circuitlab.zoo.fastgpt import FastGPT
from circuitlab.zoo.registry import ZooRecipe, register, with_fields
from circuitlab.zoo.text_data import real_documents
from circuitlab.zoo.tokenizer import single_token_id, train_tokenizer
from circuitlab.zoo.training import torch_threads, train_loop, warmup_cosine

NAME = "zoo/toy-lm"
HELDOUT_FILE = "heldout.txt"


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
    return {"loss": loss, "unigram_entropy": unigram, "n_tokens": n * body,
            "bytes_per_token": len(text.encode()) / len(ids)}


def repeated_passage_losses(model: HookedTransformer, text: str, passage_len: int = 40,
                            n_passages: int = 64) -> dict[str, float]:
    """Loss on the first vs the second occurrence of ``BOS P P``, for passages ``P`` of held-out ``text``.

    Each occurrence's loss averages the predictions of its tokens 2..L (its first token follows BOS or the end
    of the first copy, and cannot be predicted by copying). The drop is first minus second.
    """
    if 2 * passage_len + 1 > model.cfg.n_ctx:
        raise CircuitlabError(
            f"passage_len={passage_len} does not fit twice in n_ctx={model.cfg.n_ctx}; use a shorter one.")
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
    return {"accuracy": correct.float().mean().item(), "by_relation": by_rel, "chance": chance,
            "n_queries": len(prompts)}


def ioi_logit_diff(model: HookedTransformer, world: World,
                   pairs: list[tuple[str, str]] | None = None) -> dict[str, Any]:
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
    return {"mean": diff.mean().item(), "median": diff.median().item(),
            "fraction_positive": (diff > 0).float().mean().item(), "top1_accuracy": top1.float().mean().item(),
            "n_prompts": len(prompts)}


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

def train(recipe: ToyLMRecipe, install_corpora: bool = False, progress: bool = True, log_every: int = 250,
          ) -> tuple[HookedTransformer, dict[str, Any], World, str]:
    """Train ``zoo/toy-lm`` by ``recipe``; returns ``(model, card, world, heldout_text)``.

    ``recipe.steps`` AdamW steps (warmup, then cosine to ``min_lr_fraction``) of the fast twin; the card's
    induction curve is the loss on both copies of repeated random tokens every ``recipe.eval_every`` steps (and
    after the last). Deterministic given the recipe, on the same machine with the same thread count.
    """
    with torch_threads(recipe.threads):
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
        probe = repeated_tokens(32, 20, recipe.vocab_size, seed=0, bos_token_id=0)
        run = train_loop(
            fast, lambda step: sampler.batch(), steps=recipe.steps, lr=recipe.lr,
            lr_factor=warmup_cosine(recipe.steps, recipe.warmup, recipe.min_lr_fraction),
            weight_decay=recipe.weight_decay, decay_vectors=False, max_grad_norm=1.0,
            probe=lambda: [round(x, 4) for x in probe.half_losses(fast(probe.tokens))],
            probe_every=recipe.eval_every, probe_label="repeated random tokens",
            log_every=log_every, progress=progress, desc="toy-lm",
        )
        fast.load_into(model)
        model.eval()
        measured = measure(model, world, heldout_text)
    times = {"train_seconds": run.seconds, "train_cpu_seconds": run.cpu_seconds}
    card = make_card(recipe, model, measured, sizes, times, prep_s, run.losses, run.curve)
    return model, card, world, heldout_text


# ---------------------------------------------------------------------------------------- card and files

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


def load_heldout_text(path: str | Path | None = None) -> str:
    """The held-out Bible text: ``heldout.txt`` beside the model (default: the zoo's), else from the corpora."""
    f = Path(path if path is not None else zoo_dir()) / HELDOUT_FILE
    if f.is_file():
        return f.read_text()
    from circuitlab.zoo import text_data

    _, held = text_data.split_heldout(text_data.kjv_verses())
    return "\n".join(v.text for v in held) + "\n"


def world_for(model: HookedTransformer, recipe: ToyLMRecipe | None = None) -> World:
    """The :class:`World` the recipe makes for a toy-lm model (from the recipe's defaults and the model's seed).

    Measuring reads the ``world.json`` shipped beside the weights (:func:`measure_model`), never this; it is
    here to check that the two agree.
    """
    recipe = recipe or ToyLMRecipe()
    seed = model.cfg.seed if model.cfg.seed is not None else recipe.seed
    return make_world(recipe.n_people, seed, recipe.heldout_pair_fraction)


# ------------------------------------------------------------------------------------------- the zoo's entry

def measure_model(model: HookedTransformer, path: str | Path) -> dict[str, Any]:
    """``{"behaviours": ...}`` for a toy-lm model in directory ``path``: :func:`measure` with the world and the
    held-out text shipped beside its weights (``world.json``, ``heldout.txt``)."""
    return {"behaviours": measure(model, load_world(path), load_heldout_text(path))}


def _zoo_train(progress: bool = True, **fields: Any) -> tuple[HookedTransformer, dict[str, Any], dict[str, str]]:
    model, card, world, heldout_text = train(with_fields(ToyLMRecipe(), fields), progress=progress)
    return model, card, shipped_files(world, heldout_text)


#: the zoo builder's entry (``python -m circuitlab.zoo build zoo/toy-lm``): config, weights, tokenizer and card,
#: with :func:`shipped_files` beside them
register(ZooRecipe(name=NAME, train=_zoo_train, measure=measure_model, describe=describe))


def zoo_dir() -> Path:
    """Where ``zoo/toy-lm`` lives in the installed package."""
    from circuitlab.models.loading import ZOO_DIR

    return ZOO_DIR / "toy-lm"
