"""Recipe for ``zoo/attn-only-1l-text`` and ``zoo/attn-only-2l-text``: attention-only models on natural text,
with checkpoints on a log-spaced schedule, to watch induction heads form (Olsson et al. 2022).

Not in the zoo's registry: within the CPU budget of the session that wrote it (up to 600 steps, 1.2M tokens) no
trial formed a previous-token or induction head (docs/dynamics.md, "Natural text"), so no weights ship. Run it
with ``python -m circuitlab.zoo dynamics zoo/attn-only-2l-text --steps N --out DIR``.

What they learn from
--------------------
Natural text only: random windows of ``n_ctx - 1`` tokens of the King James Bible (minus the held-out books)
and the fortune-cookie collection, both Debian packages (:mod:`circuitlab.zoo.text_data`, as ``zoo/toy-lm``),
each window after a BOS token (``<|endoftext|>``, id 0, which also separates documents). No repeated passages
are planted: whatever copying the models learn, natural text taught them (the Bible repeats its names and
phrases within a chapter, which is what an induction head exploits). The tokenizer is a byte-level BPE of
``vocab_size`` tokens trained on the same training text; the held-out books (Ruth, Jonah, Titus, Philemon)
ship as ``heldout.txt`` and are what :mod:`circuitlab.dynamics` measures on.

What they are
-------------
``HookedTransformer``\\ s without MLPs, with LayerNorm, 1 or 2 layers of 4 heads of 16 dimensions (``d_model``
64), a context of 256 tokens, and "shortformer" positions (added to queries and keys, not to the residual
stream, as ``zoo/attn-only-2l``). The 1-layer and the 2-layer model share everything else (data, seed, steps),
so the difference between them is the second layer: induction needs two layers composed (a previous-token head
whose output an induction head's keys read), so only the 2-layer model can form induction heads.

Checkpoints
-----------
The model is kept at ``n_checkpoints`` steps from 0 to ``steps``, log-spaced (:func:`log_spaced_steps`: 0, 1,
2, 3, ... then about 26% more steps per checkpoint), so early training, where most changes happen, is seen as
finely as late training. :func:`train` returns them in memory (about 0.7 MB each in float32);
``python -m circuitlab.zoo dynamics NAME --checkpoints DIR`` writes them as safetensors. Training is
deterministic by seed on one thread (``threads=1``; see :mod:`circuitlab.zoo.training`).

The curves measured on every checkpoint (:mod:`circuitlab.dynamics`): :func:`measure_run`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from circuitlab.zoo.text_data import real_documents
from circuitlab.zoo.tokenizer import train_tokenizer
from circuitlab.zoo.training import log_spaced_steps, torch_threads, train_loop, warmup_cosine

HELDOUT_FILE = "heldout.txt"
DYNAMICS_FILE = "dynamics.json"


@dataclass
class TextAttnOnlyRecipe:
    """Everything that determines a natural-text attention-only zoo model."""

    n_layers: int = 2
    n_heads: int = 4
    d_model: int = 64
    d_head: int = 16
    n_ctx: int = 256
    vocab_size: int = 1024
    steps: int = 600
    batch_size: int = 8
    lr: float = 3e-3
    min_lr_fraction: float = 0.1
    warmup: int = 30
    weight_decay: float = 0.01
    n_checkpoints: int = 40
    # fraction of training windows holding one passage of real text twice in a row (``x P P y``, P 8 to 96
    # tokens); 0 trains on natural text alone
    repeat_fraction: float = 0.0
    max_chars: int | None = None  # cap on the training text (quick runs, tests); None = all of it
    tie_embeddings: bool = False  # train with W_U = W_E^T (saved as two equal matrices)
    seed: int = 0
    threads: int = 1

    def config(self, name: str) -> HookedTransformerConfig:
        return HookedTransformerConfig(
            model_name=name,
            n_layers=self.n_layers,
            n_heads=self.n_heads,
            d_model=self.d_model,
            d_head=self.d_head,
            n_ctx=self.n_ctx,
            d_vocab=self.vocab_size,
            attn_only=True,
            act_fn=None,
            normalization_type="LN",
            positional_embedding_type="shortformer",
            default_prepend_bos=True,
            seed=self.seed,
        )

    @property
    def tokens_per_step(self) -> int:
        """Training tokens per step (every position of every sequence, BOS included)."""
        return self.batch_size * self.n_ctx


@dataclass
class TrainedText:
    """What :func:`train` returns: the final model, its card, the checkpoints ``[(step, state_dict)]`` and the
    held-out text (to ship beside the weights)."""

    model: HookedTransformer
    card: dict[str, Any]
    checkpoints: list[tuple[int, dict[str, torch.Tensor]]]
    heldout_text: str
    losses: list[float]


def training_batch(recipe: TextAttnOnlyRecipe, train_ids: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One batch ``[batch_size, n_ctx]``: BOS, then a random window of ``n_ctx - 1`` consecutive training tokens;
    in a ``repeat_fraction`` of the rows a passage of 8 to 96 of those tokens, at a random place, is followed by
    itself (``x P P y``), the rest of the window reading on from where it was."""
    body = recipe.n_ctx - 1
    offsets = torch.arange(body)
    starts = torch.randint(0, len(train_ids) - body, (recipe.batch_size,), generator=gen)
    src = starts[:, None] + offsets[None, :]
    repeat = torch.rand(recipe.batch_size, generator=gen) < recipe.repeat_fraction
    length = torch.randint(8, 97, (recipe.batch_size,), generator=gen).clamp(max=body // 2)
    at = (torch.rand(recipe.batch_size, generator=gen) * (body - 2 * length + 1)).long()
    # positions [at + L, at + 2L) read the passage [at, at + L) again
    second = (offsets[None, :] >= (at + length)[:, None]) & (offsets[None, :] < (at + 2 * length)[:, None])
    src = torch.where(repeat[:, None] & second, src - length[:, None], src)
    return torch.cat([torch.zeros(recipe.batch_size, 1, dtype=torch.long), train_ids[src]], dim=1)


class TiedUnembedding(torch.nn.Module):
    """``model`` trained with its unembedding tied to its embedding (``W_U = W_E^T``, as GPT-2): the ``W_U``
    parameter is removed and set from ``W_E`` before every forward pass; :meth:`untie` puts it back as a parameter
    equal to ``W_E^T``, so the trained model is an ordinary ``HookedTransformer``."""

    def __init__(self, model: HookedTransformer):
        super().__init__()
        self.model = model
        del model.unembed._parameters["W_U"]
        model.unembed.W_U = model.embed.W_E.T

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        self.model.unembed.W_U = self.model.embed.W_E.T
        return self.model(tokens)

    def untie(self) -> HookedTransformer:
        del self.model.unembed.W_U
        self.model.unembed.W_U = torch.nn.Parameter(self.model.embed.W_E.detach().T.clone())
        return self.model


def train(recipe: TextAttnOnlyRecipe, name: str, progress: bool = False) -> TrainedText:
    """Train a model by ``recipe`` on natural text, keeping a copy of its weights at every log-spaced checkpoint."""
    with torch_threads(recipe.threads):
        docs, heldout_text, sizes = real_documents(recipe.max_chars)
        tokenizer = train_tokenizer(docs, recipe.vocab_size, name=f"circuitlab-{name.split('/')[-1]}-bpe")
        ids = [tokenizer.encode(d, add_special_tokens=False) + [0] for d in docs]
        train_ids = torch.tensor([i for d in ids for i in d], dtype=torch.long)
        torch.manual_seed(recipe.seed)
        model = HookedTransformer(recipe.config(name), tokenizer=tokenizer)
        gen = torch.Generator().manual_seed(recipe.seed + 1)

        def batch(step: int) -> torch.Tensor:
            return training_batch(recipe, train_ids, gen)

        schedule = log_spaced_steps(recipe.steps, recipe.n_checkpoints)
        checkpoints: list[tuple[int, dict[str, torch.Tensor]]] = []
        trained: torch.nn.Module = TiedUnembedding(model) if recipe.tie_embeddings else model

        def keep(step: int) -> None:
            state = {k: v.detach().clone() for k, v in model.state_dict().items() if not k.endswith(("mask", "IGNORE"))}
            if recipe.tie_embeddings:
                state["unembed.W_U"] = model.embed.W_E.detach().T.clone()
            checkpoints.append((step, state))

        run = train_loop(
            trained, batch, steps=recipe.steps, lr=recipe.lr,
            lr_factor=warmup_cosine(recipe.steps, recipe.warmup, recipe.min_lr_fraction),
            weight_decay=recipe.weight_decay, decay_vectors=False, max_grad_norm=1.0,
            progress=progress, desc=name, checkpoints=schedule, on_checkpoint=keep,
        )
    if recipe.tie_embeddings:
        trained.untie()
    sizes["train_tokens"] = len(train_ids)
    card = {
        "name": name,
        "recipe": {"module": __name__, **asdict(recipe)},
        "train_seconds": round(run.seconds, 1),
        "train_cpu_seconds": round(run.cpu_seconds, 1),
        "train_threads": recipe.threads,
        "train_tokens_seen": recipe.steps * recipe.tokens_per_step,
        "final_train_loss": round(sum(run.losses[-20:]) / len(run.losses[-20:]), 4),
        "n_params": sum(p.numel() for p in model.parameters()),
        "checkpoint_steps": schedule,
        "data": {
            "sources": {
                "kjv": "Debian packages bible-kjv-text + bible-kjv; King James Bible (1611), public domain. Held "
                       "out: Ruth, Jonah, Titus, Philemon (shipped as heldout.txt).",
                "fortunes": "Debian packages fortunes-min + fortunes (minus ASCII-art files); BSD licence.",
            },
            **sizes,
        },
    }
    return TrainedText(model, card, checkpoints, heldout_text, run.losses)


#: the shipped models: the same recipe with one and with two layers
RECIPES: dict[str, TextAttnOnlyRecipe] = {f"zoo/attn-only-{n}l-text": TextAttnOnlyRecipe(n_layers=n) for n in (2, 1)}


def checkpoint_model(recipe_card: dict[str, Any], like: HookedTransformer,
                     state: dict[str, torch.Tensor]) -> HookedTransformer:
    """A ``HookedTransformer`` like ``like`` (config and tokenizer) holding the checkpoint weights ``state``."""
    model = HookedTransformer(like.cfg, tokenizer=like.tokenizer, move_to_device=False)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(k.endswith(("mask", "IGNORE")) for k in missing), (missing, unexpected)
    return model.eval()


def icl_bands(n_ctx: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """The ICL score's early and late bands for a context of ``n_ctx``: tokens 20-29 and 200-249 of 256 (the
    defaults of :mod:`circuitlab.dynamics`), scaled for other contexts (quick runs)."""
    return (n_ctx * 20 // 256, n_ctx * 30 // 256), (n_ctx * 200 // 256, n_ctx * 250 // 256)


#: the held-out text windows start every STRIDE tokens (about 70 windows of 256 tokens of the held-out books)
STRIDE = 128


def measure_run(trained: TrainedText, progress: bool = False) -> dict[str, Any]:
    """The curves over training (:func:`circuitlab.dynamics.training_curves` on every checkpoint) as JSON data."""
    from circuitlab import dynamics

    recipe = trained.card["recipe"]
    tokens_per_step = recipe["batch_size"] * recipe["n_ctx"]
    early, late = icl_bands(recipe["n_ctx"])
    models = [(step, checkpoint_model(recipe, trained.model, state)) for step, state in trained.checkpoints]
    curves = dynamics.training_curves(models, trained.heldout_text, tokens_per_step=tokens_per_step,
                                      train_losses=trained.losses, early=early, late=late, stride=STRIDE,
                                      progress=progress)
    return dynamics.curves_to_json(curves)
