"""Name mover heads in indirect object identification (Wang et al. 2022, "Interpretability in the Wild").

On "When Mary and John went to the store, John gave a drink to" the model prefers " Mary", the indirect object
(IO), over " John", the repeated subject (S). Wang et al. traced this in GPT-2 small to a circuit whose last
step is a few late *name mover* heads: they attend from the final position to the IO name and copy it into
the logits (most of the direct effect on ``logit(IO) - logit(S)``), and path patching into their queries shows
earlier heads (S-inhibition heads) steering that attention.

Measured here with circuitlab's own analyses on a fixed, seeded set of IOI prompts:

- prompts (:func:`circuitlab.tasks.ioi.ioi_prompts`) from a few templates of the paper's kind, in both name orders
  (ABBA and BABA), with names, places and objects that are single tokens for the model (checked with its
  tokenizer); for ``zoo/toy-lm`` the prompts come from :func:`circuitlab.tasks.toy_world.ioi_sentence` with the
  world shipped beside its weights (held-out name pairs);
- :class:`~circuitlab.metrics.LogitDiff` ``logit(IO) - logit(S)`` at the last position, per prompt;
- :func:`~circuitlab.attribution.direct_logit_attribution` by head: the top three heads, their share of the
  summed positive head contributions, their layers; their attention from the final position to the IO token
  and to the two S tokens, read from a cache;
- :func:`~circuitlab.patching.path_patch` into the top head's query, senders every earlier head, on the clean
  prompts of one template against the paper's "ABC" corruption (all three names replaced by other names):
  figures only, not part of the verdict.
"""

from __future__ import annotations

from typing import Optional

import torch

from circuitlab.core import check_seed, final_residual, head_label, model_name, readout, shorten
from circuitlab.attribution import DLAResult, direct_logit_attribution
from circuitlab.core import unresolved
from circuitlab.errors import CircuitlabError
from circuitlab.metrics import LogitDiff
from circuitlab.patching import path_patch
from circuitlab.reproduce.registry import Citation, Finding, Measurement, NotApplicable, register, verdict
from circuitlab.results import Result
from circuitlab.tasks.ioi import TOY_LM, ioi_groups, ioi_prompts

N_PROMPTS = 12  # IOI prompts measured (each template gets N_PROMPTS / len(TEMPLATES))
N_TOP = 3  # the candidate name movers: the heads with the largest direct effect
PREFERRED = 0.8  # (a) the share of prompts on which logit(IO) > logit(S)
SHARE = 0.5  # (b) the top heads' share of the summed positive head contributions
# The path-patching sweep runs two forward passes per earlier head; it runs by default only when its arithmetic
# stays under this many FLOP (zoo/toy-lm: ~1e10). On the real models it is ~1e12-1e13: minutes on 2 CPU cores
# (measured: 435 s on gemma-3-270m for 4 prompts), so there it runs only with measure(..., path_patching=True).
PATH_BUDGET_FLOP = 1e11

# ------------------------------------------------------------------------------------------------- measure

def measure(model, seed: int, path_patching: Optional[bool] = None) -> Measurement:
    """The finding's measurement (see the module docstring); ``path_patching`` None runs the path-patching
    sweep only when it is cheap (:data:`PATH_BUDGET_FLOP`), True always, False never."""
    seed = check_seed(seed)
    cfg = model.cfg
    if cfg.n_layers < 2:
        raise NotApplicable("name movers are late heads fed by earlier ones; this model has one layer")
    prompts = ioi_prompts(model, seed, n=N_PROMPTS)
    n = len(prompts)
    groups = ioi_groups(model, prompts)
    tok = model.tokenizer
    layers = range(cfg.n_layers)

    # logit difference, per prompt (LogitDiff on one prompt's logits), and attention patterns at the last position
    diffs = torch.zeros(n)
    per_prompt = torch.zeros(n, cfg.n_layers, cfg.n_heads)
    pattern_last = torch.zeros(n, cfg.n_layers, cfg.n_heads, 3)  # attention to IO, S1, S2 from the last position
    dla_parts = []
    for idx, clean, _ in groups:
        io = [prompts[i]["io"] for i in idx]
        s = [prompts[i]["s"] for i in idx]
        with torch.no_grad():  # the logits of the last position only (a real model's vocabulary is large)
            resid, cache = final_residual(model, clean, names=[f"blocks.{l}.attn.hook_pattern" for l in layers])
            logits = readout(model, resid[:, -1:])  # [batch, 1, vocab]
        for j, i in enumerate(idx):
            diffs[i] = LogitDiff(io[j], s[j], model=model)(logits[j : j + 1]).item()
            io_id = tok.encode(io[j], add_special_tokens=False)[0]
            s_id = tok.encode(s[j], add_special_tokens=False)[0]
            io_pos = (clean[j] == io_id).nonzero().flatten().tolist()
            s_pos = (clean[j] == s_id).nonzero().flatten().tolist()
            if len(io_pos) != 1 or len(s_pos) != 2:
                raise CircuitlabError(f"IOI prompt {shorten(prompts[i]['clean'])}: expected the IO token once and "
                                      f"the S token twice, found them at {io_pos} and {s_pos}")
            for layer in range(cfg.n_layers):
                last = cache[f"blocks.{layer}.attn.hook_pattern"][j, :, -1]  # [head, key pos]
                pattern_last[i, layer, :, 0] = last[:, io_pos[0]]
                pattern_last[i, layer, :, 1] = last[:, s_pos[0]]
                pattern_last[i, layer, :, 2] = last[:, s_pos[1]]
        del resid, logits, cache
        dla = direct_logit_attribution(model, clean, io, wrong=s, by="head")
        per_prompt[idx] = dla.per_prompt.float().cpu()
        dla_parts.append(dla)

    first = dla_parts[0]
    dla = DLAResult(values=per_prompt.mean(0), axes=first.axes, labels=first.labels,
                    title="Direct logit attribution per head, IOI prompts", metric="logit(IO) - logit(S)",
                    model=model_name(model), task=f"{n} IOI prompts (clean), prediction at the last position",
                    meta={**first.meta, "answer": "IO per prompt", "wrong": "S per prompt", "seed": seed},
                    per_prompt=per_prompt, model_logit=torch.cat([d.model_logit.cpu() for d in dla_parts]))

    # (a) the behaviour
    mean_diff = float(diffs.mean())
    preferred = float((diffs > 0).float().mean())
    a_ok = mean_diff > 0 and preferred >= PREFERRED

    # (b) the top heads by direct effect: late, and most of the positive head contributions
    top = [(l, h) for (l, h), _ in dla.top(N_TOP)]
    top_values = [float(dla.values[l, h]) for l, h in top]
    positive = float(dla.values.clamp(min=0).sum())
    share = sum(max(v, 0.0) for v in top_values) / positive if positive > 0 else float("nan")
    late = [l >= cfg.n_layers / 2 for l, _ in top]
    b_ok = all(late) and share == share and share >= SHARE

    # (c) their attention from the last position: to IO vs to the two S tokens together
    attn = torch.stack([pattern_last[:, l, h].mean(0) for l, h in top])  # [top head, (IO, S1, S2)]
    to_io = [float(x) for x in attn[:, 0]]
    to_s = [float(x) for x in attn[:, 1] + attn[:, 2]]
    c_ok = all(i > s_ for i, s_ in zip(to_io, to_s))

    outcome = verdict(a_ok and b_ok and c_ok, a_ok and (b_ok or c_ok))

    # path patching into the top head's query (evidence only): ABC-corrupted values of each earlier head's output,
    # reaching the clean run only through that query (noising, as in the paper); MLPs recompute, as in the
    # paper's code. On the prompts of one template (one length), to keep it cheap.
    paths, all_earlier, path_fig = _path_patching(model, prompts, groups, top[0], path_patching)
    values = {"mean_logit_diff": mean_diff, "preferred_fraction": preferred, "per_prompt_logit_diff": diffs.tolist(),
              "top_heads": [head_label(x) for x in top], "top_head_dla": top_values, "top_share": share,
              "top_layers_late": late, "n_layers": cfg.n_layers, "attn_to_io": to_io, "attn_to_s": to_s,
              "n_prompts": n, **path_fig}
    heads_text = ", ".join(f"{head_label(x)} {v:+.2f}" for x, v in zip(top, top_values))
    attn_text = ", ".join(f"{head_label(x)} {i:.2f} vs {s_:.2f}" for x, i, s_ in zip(top, to_io, to_s))
    figures = (f"mean logit diff {mean_diff:.2f} (IO preferred on {preferred:.0%} of {n} prompts); top heads by DLA "
               f"{heads_text} ({share:.0%} of positive head DLA); attention last->IO vs S1+S2: {attn_text}; "
               + path_fig["path_text"])
    layers_text = ", ".join(f"L{l}" for l, _ in top)
    why = (f"(a) mean logit diff {mean_diff:+.2f} and IO preferred on {preferred:.0%} of prompts (need > 0 and >= "
           f"{PREFERRED:.0%}): {'holds' if a_ok else 'fails'}; (b) top-{N_TOP} heads in layers {layers_text} "
           f"(last half: layer >= {cfg.n_layers / 2:g}: {'yes' if all(late) else 'no'}), {share:.0%} of the "
           f"positive head contributions (need >= {SHARE:.0%}): {'holds' if b_ok else 'fails'}; (c) attention "
           f"from the last position to IO > to S1+S2 for each: {'holds' if c_ok else 'fails'} ({attn_text})")
    attn_result = Result(attn, ("head", "target"), {"head": [head_label(x) for x in top], "target": ["IO", "S1", "S2"]},
                         title="Attention of the top DLA heads from the last position", metric="mean attention",
                         model=model_name(model), task=f"{n} IOI prompts (clean)")
    evidence = [dla, attn_result] + [r for r in (paths, all_earlier) if r is not None]
    return Measurement(figures, outcome, why, values, evidence)


def sweep_flop(model, n_senders: int, batch: int, seq_len: int) -> float:
    """Rough arithmetic of a path-patching sweep: two forward passes (matmuls and full logits) per sender."""
    cfg = model.cfg
    d_mlp = (cfg.d_mlp or 0) * (3 if getattr(cfg, "gated_mlp", False) else 2)
    per_token = 2 * (cfg.n_layers * (4 * cfg.d_model * cfg.n_heads * cfg.d_head + cfg.d_model * d_mlp)
                     + cfg.d_model * cfg.d_vocab_out)
    return 2.0 * n_senders * batch * seq_len * per_token


def _path_patching(model, prompts, groups, receiver_head, run: Optional[bool]):
    """Path patching from every earlier head into ``receiver_head``'s query, alone and all together."""
    layer, head = receiver_head
    receiver = f"L{layer}H{head}.q"
    if layer == 0:
        return None, None, {"path_receiver": receiver, "path_text": f"path patching: {receiver} is in layer 0, "
                                                                    "no earlier head to send to it"}
    idx, clean, corrupted = max(groups, key=lambda g: len(g[0]))  # the largest group of one length
    flop = sweep_flop(model, layer * model.cfg.n_heads, *clean.shape)
    if run is False or (run is None and flop > PATH_BUDGET_FLOP):
        text = (f"path patching into {receiver} not run (a sweep of {layer * model.cfg.n_heads} senders, "
                f"~{flop:.0e} FLOP; run measure(..., path_patching=True))")
        return None, None, {"path_receiver": receiver, "path_skipped_flop": flop, "path_text": text}
    metric = LogitDiff([prompts[i]["io"] for i in idx], [prompts[i]["s"] for i in idx])
    kw = dict(direction="noising", freeze_mlps=False, progress=False)
    paths = path_patch(model, clean, corrupted, metric, senders="heads", receivers=receiver, **kw)
    earlier = [(l, h) for l in range(layer) for h in range(model.cfg.n_heads)]
    together = path_patch(model, clean, corrupted, metric, senders=earlier, receivers=receiver, **kw)
    clean_v, corrupted_v = paths.meta["clean_value"], paths.meta["corrupted_value"]
    effects = paths.values[:layer] - clean_v  # [layer < receiver, head]; negative: the sender's ABC values hurt
    (sl, sh) = divmod(int(effects.flatten().argmin()), model.cfg.n_heads)
    strongest = float(effects[sl, sh])
    total = float(together.values[0]) - clean_v
    # a share of a difference within float noise is no number (core.resolution)
    rel_total = strongest / total if not unresolved(float(together.values[0]), clean_v, model.cfg.dtype) \
        else float("nan")
    rel_gap = strongest / (corrupted_v - clean_v) if not unresolved(corrupted_v, clean_v, model.cfg.dtype) \
        else float("nan")
    text = (f"path patching ABC into {receiver} ({len(idx)} prompts): largest drop from one earlier sender: L{sl}H{sh} "
            f"{strongest:+.2f} ({rel_total:.0%} of all earlier heads together, {total:+.2f}; "
            f"{rel_gap:.0%} of clean - ABC {clean_v - corrupted_v:+.2f})")
    return paths, together, {"path_receiver": receiver, "path_strongest_sender": f"L{sl}H{sh}",
                             "path_strongest_effect": strongest, "path_all_earlier_effect": total,
                             "path_relative_to_all_earlier": rel_total, "path_relative_to_clean_minus_abc": rel_gap,
                             "path_clean_value": clean_v, "path_abc_value": corrupted_v, "path_n_prompts": len(idx),
                             "path_text": text}


FINDING = register(Finding(
    id="ioi-name-movers",
    citation=Citation("Wang et al.", 2022, "Interpretability in the Wild: a Circuit for Indirect Object "
                      "Identification in GPT-2 small", "sections 3.1-3.2 (name mover heads, path patching)",
                      "https://arxiv.org/abs/2211.00593"),
    claim="On IOI prompts the model prefers the indirect object over the repeated subject; a few late heads (name "
          "movers) write most of the logit difference directly and attend from the final position to the "
          "indirect object; path patching into their queries shows earlier heads acting through them.",
    published="mean logit difference logit(IO) - logit(S) 3.56 on IOI prompts; name mover heads 9.9, 9.6, 10.0 "
              "(layer.head) (Wang et al. 2022, arXiv 2211.00593)",
    published_model="gpt2-small",
    models=("gemma-3-270m", "smollm2-135m", TOY_LM),
    measure=measure,
    rule=f"reproduced if (a) the mean logit diff logit(IO) - logit(S) at the last position is > 0 with IO preferred "
         f"on >= {PREFERRED:.0%} of the prompts, (b) the top-{N_TOP} heads by direct logit attribution are all in "
         f"the last half of the layers (layer >= n_layers / 2) and write >= {SHARE:.0%} of the summed positive head "
         f"contributions, and (c) each of them attends more from the final position to the IO token than to the "
         f"two S tokens together (mean over prompts); partly if (a) holds and one of (b), (c) holds; not reproduced "
         f"otherwise. Path patching into the top head's query is reported, not judged.",
    seconds=50.0,  # gemma-3-270m on 2 shared CPU cores, load included: 40-65 s measured
))
