"""Recipe for the attention-only zoo models (``zoo/attn-only-1l``, ``zoo/attn-only-2l``).

Each training sequence is ``<bos>``, then random tokens, with one random segment repeated exactly once
somewhere inside it::

    <bos> x x x [s1 s2 ... sk] [s1 s2 ... sk] x x x

The segment length and the length of the random prefix vary per sequence, so a model can only predict the
repeat by looking back in context (an induction circuit), never by position. After the first
``second_task_from`` steps, half the sequences are *topical*: their first token names a topic ``c`` and every
token comes from topic ``c``'s ten words, which rewards reading position 1 from everywhere. (The recipe also
offers *arithmetic runs* ``a, a+d, a+2d, ... (mod V)``; neither second task, mixed in from the start, left room
for induction to form within the step budget in trials, and neither made a layer-1 head give up induction.)

Positions are "shortformer" style (added to queries and keys, not to the residual stream), which keeps
position information out of the values and makes induction form quickly and reliably.

Training dynamics: ``python -m circuitlab.zoo dynamics zoo/attn-only-2l`` retrains the recipe on one thread,
keeping 30 log-spaced checkpoints, and measures each (:mod:`circuitlab.dynamics`) on :func:`heldout_text`. The
curves ship beside the weights as ``dynamics.json``, with the held-out sequences as ``heldout.txt``. They are
not rewritten by ``build``, so rerun ``dynamics`` after rebuilding.

Olsson et al. (2022): induction needs two attention layers composed (a previous-token head whose output the
induction head's keys read), so the one-layer model trained the same way cannot copy in context.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from circuitlab.zoo.registry import ZooRecipe, register, with_fields
from circuitlab.zoo.tokenizer import word_level_tokenizer
from circuitlab.zoo.training import log_spaced_steps, torch_threads, train_loop, warmup_times_cosine


@dataclass
class AttnOnlyRecipe:
    """Everything that determines an attention-only zoo model."""

    n_layers: int = 2
    n_heads: int = 4
    d_model: int = 64
    d_head: int = 16
    n_ctx: int = 64
    n_words: int = 100  # vocabulary t0..t99, plus <bos> = id 0
    min_segment: int = 6
    max_segment: int = 28
    arithmetic_fraction: float = 0.0
    topic_fraction: float = 0.0
    n_topics: int = 10
    second_task_from: int = 0  # step from which arithmetic/topic sequences are mixed in (a curriculum)
    steps: int = 1500
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup: int = 100
    seed: int = 0
    threads: int = 2

    def config(self, name: str) -> HookedTransformerConfig:
        return HookedTransformerConfig(
            model_name=name,
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            d_model=self.d_model,
            d_head=self.d_head,
            n_ctx=self.n_ctx,
            d_vocab=self.n_words + 1,
            attn_only=True,
            act_fn=None,
            normalization_type="LN",
            positional_embedding_type="shortformer",
            default_prepend_bos=True,
            seed=self.seed,
        )


def training_batch(recipe: AttnOnlyRecipe, batch_size: int, gen: torch.Generator,
                   second_task: bool = True) -> torch.Tensor:
    """One batch of training sequences ``[batch, n_ctx]`` (see the module docstring)."""
    n, V = recipe.n_ctx, recipe.n_words
    body = torch.randint(1, V + 1, (batch_size, n - 1), generator=gen)
    seg = torch.randint(recipe.min_segment, recipe.max_segment + 1, (batch_size,), generator=gen)
    room = (n - 1) - 2 * seg  # free positions outside the two copies
    start = (torch.rand(batch_size, generator=gen) * (room + 1)).long()
    pos = torch.arange(n - 1)[None, :]
    in_copy = (pos >= (start + seg)[:, None]) & (pos < (start + 2 * seg)[:, None])
    src = torch.where(in_copy, pos - seg[:, None], pos)
    # copy sequentially in position order, so the second copy reads the (final) first copy
    body = torch.gather(body, 1, src)
    # arithmetic runs for a fraction of the batch
    arith = torch.rand(batch_size, generator=gen) < recipe.arithmetic_fraction * second_task
    if arith.any():
        a0 = torch.randint(0, V, (batch_size, 1), generator=gen)
        step = torch.randint(1, 8, (batch_size, 1), generator=gen)
        run = (a0 + step * torch.arange(n - 1)[None, :]) % V + 1
        body = torch.where(arith[:, None], run, body)
    # topic sequences: the first token names a topic c, and every token is from topic c's words
    # (t_i with i % n_topics == c): predicting them means reading position 1 from everywhere
    topical = torch.rand(batch_size, generator=gen) < recipe.topic_fraction * second_task
    if topical.any():
        c = torch.randint(0, recipe.n_topics, (batch_size, 1), generator=gen)
        squeezed = ((body - 1) // recipe.n_topics) * recipe.n_topics + c + 1  # same repeat structure
        squeezed = squeezed.clamp(max=V)
        squeezed[:, 0] = c[:, 0] + 1
        body = torch.where(topical[:, None], squeezed, body)
    bos = torch.zeros(batch_size, 1, dtype=torch.long)
    return torch.cat([bos, body], dim=1)


def in_context_losses(model: HookedTransformer, seq_len: int = 20, n_seqs: int = 200, seed: int = 1234) -> dict:
    """Mean next-token loss on the first and second copy of ``<bos> r_1..r_n r_1..r_n`` sequences.

    Each half's loss averages the predictions of its tokens ``r_2..r_n`` (``r_1`` cannot be predicted from the
    left context in either half). A model that copies in context has a second-half loss far below the first;
    chance level is ``ln(vocabulary)``.
    """
    from circuitlab.tasks import repeated_tokens

    rep = repeated_tokens(n_seqs, seq_len, model.cfg.d_vocab, seed=seed, bos_token_id=0,
                          device=model.cfg.device)
    with torch.no_grad():
        first, second = rep.half_losses(model(rep.tokens, return_type="logits"))
    return {"first_half_loss": first, "second_half_loss": second, "drop": first - second,
            "chance_loss": math.log(model.cfg.d_vocab - 1), "seq_len": seq_len, "n_seqs": n_seqs}


def heldout_text(recipe: AttnOnlyRecipe, n_seqs: int = 64, seed: int = 999) -> str:
    """``n_seqs`` sequences of the recipe's first task (random tokens with one repeated segment; no second task)
    from their own seed, without BOS, as one text of words: ``n_ctx - 1`` words per sequence, so
    ``circuitlab.dynamics.text_windows(model, text, stride=n_ctx - 1)`` gives back exactly these sequences."""
    rows = training_batch(recipe, n_seqs, torch.Generator().manual_seed(seed), second_task=False)
    return " ".join(f"t{int(i) - 1}" for i in rows[:, 1:].flatten())


def train(recipe: AttnOnlyRecipe, name: str, verbose: bool = False, progress: bool = False,
          checkpoints: list[tuple[int, dict]] | None = None, n_checkpoints: int = 30,
          losses: list[float] | None = None) -> tuple[HookedTransformer, dict[str, Any]]:
    """Train a model by ``recipe``; returns it and a card of how it was made and what it measures.

    ``verbose`` logs the loss every 250 steps; ``progress`` shows a progress bar. With a list ``checkpoints``,
    the weights at ``n_checkpoints`` log-spaced steps are appended to it as ``(step, state_dict)`` (and with a
    list ``losses``, every step's training loss).
    """
    schedule = log_spaced_steps(recipe.steps, n_checkpoints) if checkpoints is not None else []

    with torch_threads(recipe.threads):
        torch.manual_seed(recipe.seed)
        cfg = recipe.config(name)
        model = HookedTransformer(cfg, tokenizer=word_level_tokenizer(recipe.n_words))
        gen = torch.Generator().manual_seed(recipe.seed + 1)

        def batch(step: int) -> torch.Tensor:
            return training_batch(recipe, recipe.batch_size, gen, second_task=step >= recipe.second_task_from)

        def keep(step: int) -> None:
            checkpoints.append((step, {k: v.detach().clone() for k, v in model.state_dict().items()
                                       if not k.endswith(("mask", "IGNORE"))}))

        run = train_loop(
            model, batch, steps=recipe.steps, lr=recipe.lr, lr_factor=warmup_times_cosine(recipe.steps, recipe.warmup),
            weight_decay=recipe.weight_decay, log_every=250 if verbose else 0, progress=progress, desc=name,
            checkpoints=schedule, on_checkpoint=keep if checkpoints is not None else None,
        )
        if losses is not None:
            losses.extend(run.losses)
    card = {
        "name": name,
        "recipe": {"module": __name__, **asdict(recipe)},
        "train_seconds": round(run.seconds, 1),
        "train_threads": recipe.threads,
        "final_train_loss": round(run.losses[-1], 4),
        "in_context": {k: (round(v, 4) if isinstance(v, float) else v) for k, v in in_context_losses(model).items()},
    }
    return model, card


#: The shipped models: 1500 steps of repeated segments alone (induction forms), then 1000 more with half the
#: sequences topical, which sharpened induction (repeat loss 1.8 -> 0.6 nats in a trial) without breaking it.
#: (Mixing a second task in from the start delayed induction past the step budget in trials, for both tasks.)
RECIPES: dict[str, AttnOnlyRecipe] = {
    f"zoo/attn-only-{n}l": AttnOnlyRecipe(n_layers=n, steps=2500, topic_fraction=0.5, second_task_from=1500)
    for n in (2, 1)
}


def measure(model: HookedTransformer) -> dict[str, Any]:
    """What the card records: in-context losses and each head's previous-token and induction scores."""
    from circuitlab import induction

    out: dict[str, Any] = {"in_context": {k: (round(v, 4) if isinstance(v, float) else v)
                                          for k, v in in_context_losses(model).items()}}
    scores = {}
    for kind in ("previous_token", "induction", "duplicate_token"):
        res = induction.head_scores(model, kind=kind, seed=0)
        scores[kind] = [[round(float(x), 3) for x in row] for row in res.values]
    out["head_scores"] = scores
    return out


def describe(card: dict[str, Any]) -> str:
    """The one-line description ``circuitlab models`` prints."""
    r = card["recipe"]
    ic = card["in_context"]
    line = (f"attention-only, {r['n_layers']} layer{'s' if r['n_layers'] > 1 else ''} x {r['n_heads']} heads, "
            f"d_model {r['d_model']}, shortformer positions, word tokens t0..t{r['n_words'] - 1}; "
            f"repeated-segment loss {ic['first_half_loss']:.2f} -> {ic['second_half_loss']:.2f} nats "
            f"(chance {ic['chance_loss']:.2f})")
    hs = card.get("head_scores")
    if hs:
        ind = hs["induction"][-1]
        best = max(range(len(ind)), key=lambda h: ind[h])
        line += f"; best induction head L{len(hs['induction']) - 1}H{best} {ind[best]:.2f}"
        if len(hs["previous_token"]) > 1:
            prev = hs["previous_token"][0]
            bp = max(range(len(prev)), key=lambda h: prev[h])
            line += f", previous-token head L0H{bp} {prev[bp]:.2f}"
    return line + f"; trained {card['train_seconds']:.0f} s on {card['train_threads']} CPU threads"


def _zoo_recipe(name: str) -> ZooRecipe:
    def train_(progress: bool = True, **fields: Any) -> tuple[HookedTransformer, dict[str, Any], dict[str, str]]:
        return (*train(with_fields(RECIPES[name], fields), name, progress=progress), {})

    def measure_(model: HookedTransformer, path: Path) -> dict[str, Any]:
        return measure(model)

    return ZooRecipe(name=name, train=train_, measure=measure_, describe=describe)


for _name in RECIPES:
    register(_zoo_recipe(_name))
