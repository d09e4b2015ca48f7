"""The logit lens: the rank of the model's final prediction falls with depth, and reaches 1 before the last layer.

nostalgebraist (2020) read GPT-2's residual stream after every block through the final norm and the unembedding,
and found that these distributions converge, layer by layer, to the model's output, often well before the end.

Measured with :func:`circuitlab.attribution.logit_lens` (``answer=None``: the tracked token is the model's own
top prediction; ``norm="own"``, the standard lens) on a fixed set of short prompts: factual and common-sense
sentences for a model of English, and for a zoo model that ships a ``world.json`` beside its weights (``zoo/toy-lm``)
one query per relation for the first people of that world, each asked with the template it never saw in training.
Each prompt runs alone (prompts differ in length); per lens row (``embed``, then after each layer) we take the
median rank over prompts. Nothing here is random, so ``seed`` does not change the result.
"""

from __future__ import annotations

import torch

from circuitlab.core import check_seed, model_name, spearman, token_label
from circuitlab.attribution import logit_lens
from circuitlab.models.loading import ZOO_DIR, ZOO_PREFIX
from circuitlab.reproduce.registry import Citation, Finding, Measurement, NotApplicable, register, verdict
from circuitlab.results import Result
from circuitlab.tasks.toy_world import WORLD_FILE, fact_sentence, load_world

RHO = -0.8  # Spearman correlation of depth with the median rank must be at most this
N_PEOPLE = 4  # toy-lm: the first people of the world, each asked every relation

#: natural prompts for a model of English: facts and common sense, each with one obvious short continuation
PROMPTS = (
    "The Eiffel Tower is located in the city of",
    "The capital of Japan is the city of",
    "Water freezes at a temperature of zero degrees",
    "The opposite of hot is",
    "Monday, Tuesday, Wednesday, Thursday,",
    "One, two, three, four, five,",
    "The sun rises in the east and sets in the",
    "Romeo and Juliet was written by William",
    "The largest planet in our solar system is",
    "There are seven days in a",
    "The chemical symbol for gold is",
    "She unlocked the front door with her",
    "The first president of the United States was George",
    "In the morning I like to drink a hot cup of",
    "Cows eat grass and give us",
    "A triangle has three sides and a square has",
)


def world_dir(model):
    """The folder holding the ``world.json`` of a zoo model trained on the synthetic facts, or ``None``."""
    name = model_name(model)
    if not name.startswith(ZOO_PREFIX):
        return None
    folder = ZOO_DIR / name[len(ZOO_PREFIX):]
    return folder if (folder / WORLD_FILE).is_file() else None


def prompts_for(model) -> list[str]:
    """The fixed prompts the finding is measured on for ``model`` (see the module docstring)."""
    folder = world_dir(model)
    if folder is None:
        return list(PROMPTS)
    world = load_world(folder)
    return [fact_sentence(world, person, rel, world.heldout_template[person][rel])[0]
            for person in world.people[:N_PEOPLE] for rel in world.relations]


def median(values: list[float]) -> float:
    """The median; with an even count, the mean of the two middle values."""
    s = sorted(values)
    mid = len(s) // 2
    return float(s[mid]) if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def measure(model, seed: int) -> Measurement:
    seed = check_seed(seed)
    if model.tokenizer is None:
        raise NotApplicable("the finding reads natural-language prompts, and this model has no tokenizer")
    prompts = prompts_for(model)
    first_lens, rank_rows, predictions = None, [], []
    for p in prompts:  # one at a time: the prompts differ in length, and a lens holds every row's logits
        lens = logit_lens(model, p)  # answer=None: the model's own final prediction
        first_lens = first_lens or lens
        rank_rows.append(lens.answer_rank.values)
        predictions.append(token_label(model, int(lens.answer[0])))
    ranks = torch.cat(rank_rows)  # [prompt, row]
    rows = first_lens.answer_rank.labels["layer"]  # "embed", "L0", ..., "L{n-1}"
    last = len(rows) - 1
    med = [median(ranks[:, i].tolist()) for i in range(len(rows))]
    rho = spearman(list(range(len(rows))), med)
    first_top = next((i for i, m in enumerate(med) if m == 1), None)
    steps_down = sum(med[i + 1] <= med[i] for i in range(last)) / last

    falls = rho == rho and rho <= RHO
    early = first_top is not None and first_top < last
    outcome = verdict(falls and early, falls or early)
    depths = sorted({round(f * last) for f in (0, 0.25, 0.5, 0.75, 1)})
    shown = ", ".join(f"{rows[i]} {med[i]:g}" for i in depths)
    first_label = rows[first_top] if first_top is not None else "never"
    figures = (f"median rank of the final prediction over {len(prompts)} prompts: {shown}; median rank 1 first "
               f"after {first_label} (of {rows[0]}..{rows[last]}); Spearman rho(depth, median rank) {rho:.2f}")
    why = (f"(a) Spearman rho(depth, median rank) {rho:.2f} {'<=' if falls else 'not <='} {RHO}: "
           f"{'holds' if falls else 'fails'}; (b) the median rank is 1 first at row {first_label}, "
           f"{'before' if early else 'not before'} the last row {rows[last]}: {'holds' if early else 'fails'}")
    values = {"rows": rows, "median_rank": med, "spearman_rho": rho, "first_top1_row": first_top,
              "first_top1_label": first_label, "non_increasing_steps": steps_down, "prompts": prompts,
              "predictions": predictions, "ranks": ranks.tolist()}
    labels = {"prompt": [f"{p!r} -> {t!r}" for p, t in zip(prompts, predictions)], "layer": rows}
    common = dict(model=model_name(model), task=f"{len(prompts)} fixed prompts, prediction at the last position",
                  metric="rank of the model's final prediction (1 = top)")
    evidence = [
        Result(torch.tensor(med), axes=("layer",), labels={"layer": rows},
               title="Logit lens: median rank of the final prediction after each layer", **common),
        Result(ranks, axes=("prompt", "layer"), labels=labels,
               title="Logit lens: rank of the final prediction, per prompt", **common),
        first_lens,
    ]
    return Measurement(figures, outcome, why, values, evidence)


FINDING = register(Finding(
    id="logit-lens-rank-falls-with-depth",
    citation=Citation("nostalgebraist", 2020, "interpreting GPT: the logit lens (LessWrong)",
                      "sections 'Overview' and 'the logit lens: ranks'",
                      "https://www.lesswrong.com/posts/AcKRB8wDpdaN6v6ru/interpreting-gpt-the-logit-lens"),
    claim="Read through the final norm and the unembedding after each layer, the residual stream ranks the model's "
          "final prediction higher and higher with depth, and ranks it first before the last layer.",
    published="Qualitative, no single figure: \"These distributions gradually converge to the final distribution "
              "over the layers of the network, often getting close to that distribution long before the end.\" "
              "(Overview); on the rank of the model's final top-1 prediction: \"In most cases, network's "
              "uncertainty has drastically reduced by the middle layers.\" (the logit lens: ranks). The post also "
              "shows an exception: a copied rare token ('plasma') whose rank stays low until the very end.",
    published_model="GPT-2 1558M, 48 layers (nostalgebraist 2020)",
    models=("gemma-3-270m", "smollm2-135m", "zoo/toy-lm"),
    measure=measure,
    rule=f"over the fixed prompts, take the median rank of the model's final prediction after each layer (lens rows "
         f"embed, L0 .. last): reproduced if (a) Spearman rho(depth, median rank) <= {RHO} and (b) the median rank "
         "is 1 at some row before the last; partly if exactly one of (a), (b) holds; not reproduced otherwise",
    seconds=25.0,
    uses_seed=False,
))
