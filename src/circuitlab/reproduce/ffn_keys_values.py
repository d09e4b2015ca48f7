"""FFN layers as key-value memories: in upper layers a value vector predicts the token after its key's trigger.

Geva et al. (2021) read each MLP neuron as a key (its input weights, which fire on input patterns) and a value
(its output weights, a distribution over the vocabulary through the unembedding). For each key they took the
example that activates it most and compared the value's top token with the token that follows that example in
the text: the two agree more and more often towards the upper layers, and hardly ever in the lower ones.

Measured here in one streamed pass over a fixed synthetic corpus (fact and indirect-object sentences about the
invented people of :mod:`circuitlab.tasks.toy_world`: the world shipped beside a zoo model's weights, or a world made
with the finding's seed), for ``N_NEURONS`` neurons per layer drawn with the seed: each neuron's top-activating
position (a running maximum, so memory does not grow with the corpus) and the token after it, and the value
vector's top token through the unembedding (the final norm's weight folded in, :func:`circuitlab.core.unembed_matrix`).
"""

from __future__ import annotations

import random

import torch
from jaxtyping import Int
from transformer_lens.utilities import get_act_name

from circuitlab.core import DEFAULT_MAX_MEMORY, check_seed, row_bytes, row_chunks, to_tokens, unembed_matrix
from circuitlab.ffn import value_vectors
from circuitlab.reproduce.logit_lens import world_dir
from circuitlab.reproduce.registry import Citation, Finding, Measurement, NotApplicable, register, verdict
from circuitlab.results import Result
from circuitlab.tasks.toy_world import load_world, make_world, synthetic_text

N_NEURONS = 256  # neurons sampled per layer (all of them where d_mlp is smaller)
N_LINES = 400  # corpus lines of each kind (facts, indirect objects)


def corpus(model, seed: int) -> list[str]:
    """The fixed synthetic corpus for ``model`` (see the module docstring)."""
    seed = check_seed(seed)
    folder = world_dir(model)
    world = load_world(folder) if folder is not None else make_world(seed=seed)
    rng = random.Random(seed)
    return [line for kind in ("fact", "ioi") for line in synthetic_text(world, kind, rng, N_LINES).splitlines()]


@torch.no_grad()
def top_triggers(model, lines: list[str], neurons: dict[int, Int[torch.Tensor, " neuron"]]
                 ) -> dict[int, Int[torch.Tensor, " neuron"]]:
    """For each layer's chosen neurons, the token that follows the position where the neuron fires most."""
    layers = sorted(neurons)
    best = {l: torch.full((len(neurons[l]),), float("-inf")) for l in layers}
    nxt = {l: torch.zeros(len(neurons[l]), dtype=torch.long) for l in layers}
    rows = [to_tokens(model, line)[0] for line in lines]  # in corpus order: a tie goes to the first occurrence
    longest = max(len(r) for r in rows)
    for sl in row_chunks(len(rows), row_bytes(model, longest), DEFAULT_MAX_MEMORY):
        batch = rows[sl]
        lengths = torch.tensor([len(r) for r in batch])
        toks = torch.zeros(len(batch), int(lengths.max()), dtype=torch.long)
        for i, r in enumerate(batch):
            toks[i, : len(r)] = r.cpu()
        # a position counts if a real next token follows it (and it is not the start token)
        pos = torch.arange(toks.shape[1])
        valid = (pos[None, :] < (lengths[:, None] - 1)) & (pos[None, :] > 0)
        following = torch.roll(toks, -1, dims=1)
        _, cache = model.run_with_cache(toks.to(model.cfg.device), names_filter=lambda n: n.endswith("mlp.hook_post"),
                                        stop_at_layer=max(layers) + 1)
        for l in layers:
            acts = cache[get_act_name("post", l)][..., neurons[l]].float().cpu()  # [batch, pos, n]
            acts = acts.masked_fill(~valid[..., None], float("-inf")).flatten(0, 1)  # [batch * pos, n]
            value, where = acts.max(0)
            better = value > best[l]
            best[l] = torch.where(better, value, best[l])
            nxt[l] = torch.where(better, following.flatten()[where], nxt[l])
    return nxt


def measure(model, seed: int) -> Measurement:
    seed = check_seed(seed)
    cfg = model.cfg
    if cfg.attn_only or not cfg.d_mlp:
        raise NotApplicable("the model has no MLP layers")
    if model.tokenizer is None:
        raise NotApplicable("the corpus is text, and this model has no tokenizer")
    gen = torch.Generator().manual_seed(seed)
    n = min(N_NEURONS, cfg.d_mlp)
    neurons = {l: torch.randperm(cfg.d_mlp, generator=gen)[:n].sort().values for l in range(cfg.n_layers)}
    lines = corpus(model, seed)
    following = top_triggers(model, lines, neurons)
    U = unembed_matrix(model)  # [d_model, d_vocab]
    rates, hits = [], []
    for l in range(cfg.n_layers):
        top = (value_vectors(model, l)[neurons[l]] @ U).argmax(-1).cpu()  # each value's top token
        hits.append(int((top == following[l]).sum()))
        rates.append(hits[-1] / n)
    half = cfg.n_layers // 2
    lower, upper = sum(rates[:half]) / half, sum(rates[half:]) / (cfg.n_layers - half)
    rises = upper > lower
    above_chance = upper >= 10 / cfg.d_vocab_out
    outcome = verdict(rises and above_chance, rises or above_chance)
    figures = (f"value top token = token after the key's top trigger for {lower:.1%} of neurons in the lower half "
               f"({sum(hits[:half])} of {half * n}) vs {upper:.1%} in the upper half ({sum(hits[half:])} of "
               f"{(cfg.n_layers - half) * n}) (by layer " + ", ".join(f"L{l} {r:.1%}" for l, r in enumerate(rates)) +
               f"); {n} neurons per layer, {len(lines)} lines")
    why = (f"(a) upper-half agreement {upper:.1%} {'>' if rises else '<='} lower-half {lower:.1%}; (b) upper half "
           f"{'>=' if above_chance else '<'} 10x chance (10/d_vocab = {10 / cfg.d_vocab_out:.3%})")
    values = {"rates": rates, "hits": hits, "lower": lower, "upper": upper, "n_neurons": n, "n_lines": len(lines),
              "neurons": {l: v.tolist() for l, v in neurons.items()},
              "following": {l: v.tolist() for l, v in following.items()}}
    evidence = [Result(torch.tensor(rates)[None], ("metric", "layer"), {"metric": ["agreement"]},
                       title="Value's top token = token after the key's top trigger", metric="share of sampled neurons",
                       model=cfg.model_name, task=f"{n} neurons per layer, {len(lines)} synthetic lines")]
    return Measurement(figures, outcome, why, values, evidence)


FINDING = register(Finding(
    id="ffn-values-predict-next-token-in-upper-layers",
    citation=Citation("Geva et al.", 2021, "Transformer Feed-Forward Layers Are Key-Value Memories",
                      "section on values as output distributions (agreement of a value's top token with the token "
                      "after its key's trigger example, by layer)", "https://arxiv.org/abs/2012.14913"),
    claim="A value vector's top token agrees with the token that follows its key's top trigger example, and "
          "this agreement rises towards the upper layers.",
    published="Qualitative: the agreement rate is near zero in the lower layers and rises in the upper layers "
              "(Geva et al. 2021, agreement-by-layer figure).",
    published_model="a 16-layer transformer language model trained on WikiText-103 (Geva et al. 2021)",
    models=("zoo/toy-lm", "gemma-3-270m", "smollm2-135m"),
    measure=measure,
    rule="agreement = share of sampled neurons whose value's top token (through the unembedding) equals the token "
         "after the neuron's top-activating position in the corpus; reproduced if (a) the upper half of the layers "
         "agrees more often on average than the lower half and (b) the upper half agrees at >= 10x chance "
         "(10/d_vocab); partly if one holds",
    seconds=3.0,
))
