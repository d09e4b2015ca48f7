"""The recipe of the shipped SAEs: ``python -m circuitlab.features.ship toy-lm [--checkpoint DIR]``.

``toy-lm``: one TopK SAE (k = 16, 1,024 latents = 8 x d_model) per residual layer of ``zoo/toy-lm``
(``blocks.{0..3}.hook_resid_post``, shipped as ``toy-lm/res-0`` ... ``res-3``), all four from the same forward
passes, on the corpus the model itself was trained on (:func:`circuitlab.zoo.text_data.real_documents`: the King
James Bible less four held-out books and the BSD fortune cookies, Debian packages ``bible-kjv`` and ``fortunes``),
600,000 training tokens per SAE (a third of the corpus, one pass: the budget two shared CPU cores allowed). Each
card (``card.json``) gives the recipe, the tokens, time and peak memory
of the run, and the metrics of :func:`circuitlab.features.evaluation.evaluate_sae` on the held-out books
(``heldout.txt``, shipped with the model, never trained on). Checkpointed: a run that stops resumes where it was.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

RECIPES = {
    "toy-lm": {"model": "zoo/toy-lm", "hooks": [f"blocks.{l}.hook_resid_post" for l in range(4)],
               "names": [f"res-{l}" for l in range(4)],
               "train": {"architecture": "topk", "d_sae": 1024, "k": 16, "training_tokens": 600_000,
                         "batch_tokens": 1024,
                         "buffer_tokens": 65_536, "context_size": 128, "seed": 0}},
}


def peak_rss() -> int:
    """This process's peak resident memory in bytes (Linux: ``ru_maxrss`` is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def ship(which: str, out: Path, checkpoint: Path | None, progress: bool = False) -> dict:
    import torch

    from circuitlab.core import as_model
    from circuitlab.features.sae import save_sae
    from circuitlab.features.training import train_sae
    from circuitlab.zoo import text_data

    torch.set_num_threads(1)
    recipe = RECIPES[which]
    model = as_model(recipe["model"])
    docs, heldout, sizes = text_data.real_documents()
    t0 = time.perf_counter()
    run = train_sae(model, recipe["hooks"], docs, checkpoint=checkpoint, checkpoint_every=200, progress=progress,
                    **recipe["train"])
    train_seconds = time.perf_counter() - t0
    from circuitlab.features.evaluation import evaluate_sae  # after the long part: a fix there needs no retraining

    held = [line for line in heldout.splitlines() if line.strip()]
    cards = {}
    for hook, name in zip(recipe["hooks"], recipe["names"]):
        sae = run.saes[hook]
        ev = evaluate_sae(model, sae, held)
        card = {"name": f"{which}/{name}", "model": recipe["model"], "hook": hook, "recipe": recipe["train"],
                "corpus": {"what": "KJV (less Ruth, Jonah, Titus, Philemon) + BSD fortunes, Debian packages "
                                   "bible-kjv, bible-kjv-text, fortunes-min, fortunes",
                           "chars": sizes["used_train_chars"],
                           "windows": run.stats["settings"]["rows"]},
                "training": {"train_tokens": run.stats["train_tokens"], "model_tokens": run.stats["model_tokens"],
                             "seconds_total_run": round(run.stats["seconds"], 1),
                             "tokens_per_second_all_hooks": round(len(recipe["hooks"]) * run.stats["train_tokens"]
                                                                  / max(run.stats["seconds"], 1e-9)),
                             "peak_rss_bytes": peak_rss(), "threads": 1,
                             "final_history": run.history[hook][-1]},
                "heldout": {"what": "heldout.txt of zoo/toy-lm (Ruth, Jonah, Titus, Philemon), never trained on",
                            **ev.summary()}}
        folder = out / which / name
        save_sae(sae, folder, extra={"context_size": recipe["train"]["context_size"], "prepend_bos": True,
                                     "dataset_path": "circuitlab.zoo.text_data.real_documents"})
        (folder / "card.json").write_text(json.dumps(card, indent=1) + "\n")
        cards[name] = card
    return {"cards": cards, "train_seconds": train_seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("which", choices=sorted(RECIPES))
    p.add_argument("--out", default=str(Path(__file__).parent / "saes"))
    p.add_argument("--checkpoint", default=None)
    args = p.parse_args()
    res = ship(args.which, Path(args.out), Path(args.checkpoint) if args.checkpoint else None, progress=True)
    print(json.dumps({k: v["heldout"] for k, v in res["cards"].items()}, indent=1))


if __name__ == "__main__":
    main()
