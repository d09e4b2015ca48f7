"""The attention-pattern taxonomy (circuitlab.attention.patterns) against independent references: the features of
hand-built maps against their values worked out by hand; the classifier on hand-built maps of each class (not drawn
by the generator it was trained on); the features the taxonomy reports for a model against a brute-force loop over
TransformerLens's cached patterns; decoders and an encoder; bad input."""

from __future__ import annotations

import math

import pytest
import torch

import circuitlab
from circuitlab.attention import patterns as pt
from circuitlab.errors import InputError

T = 12


def causal_rows(m: torch.Tensor) -> torch.Tensor:
    m = torch.tril(m)
    return m / m.sum(-1, keepdim=True)


def previous_token_map(t: int = T) -> torch.Tensor:
    m = torch.zeros(t, t)
    m[0, 0] = 1
    for q in range(1, t):
        m[q, q - 1] = 1
    return m


def first_token_map(t: int = T) -> torch.Tensor:
    m = torch.zeros(t, t)
    m[:, 0] = 1
    return m


def block_map(segments: torch.Tensor) -> torch.Tensor:
    """Uniform over the query's own segment beyond its neighbours (specials: uniform over everything visible)."""
    t = len(segments)
    m = torch.zeros(t, t)
    for q in range(t):
        keys = [k for k in range(q + 1) if segments[k] == segments[q] >= 0 and abs(q - k) > 1]
        for k in keys or range(q + 1):
            m[q, k] = 1
    return causal_rows(m)


def features(m: torch.Tensor, causal: bool = True) -> dict[str, float]:
    segs = pt.two_segments(m.shape[0], causal)
    return dict(zip(pt.FEATURES, pt.map_features(m[None], segs[None], causal)[0].tolist()))


def test_features_of_hand_built_maps():
    f = features(previous_token_map())
    assert f["diagonal"] == pytest.approx(1) and f["previous"] == pytest.approx(1)
    assert f["vertical"] == pytest.approx(0) and f["self"] == pytest.approx(0) and f["max"] == pytest.approx(1)
    f = features(first_token_map())
    assert f["vertical"] == pytest.approx(1) and f["diagonal"] == pytest.approx(0)  # rows q >= 2 only
    f = features(causal_rows(torch.ones(T, T)))  # uniform: entropy 1 by definition
    assert f["entropy"] == pytest.approx(1, abs=1e-6)
    # uniform rows: mass in the band is 3/(q+1) for q < T-1... worked out row by row here
    band = [min(q + 1, 2) / (q + 1) for q in range(2, T)]  # keys q-1, q visible of q+1 keys
    assert f["diagonal"] == pytest.approx(sum(band) / len(band), abs=1e-6)
    segs = pt.two_segments(T, False)  # bidirectional: every query has keys of its segment beyond its neighbours
    own = ((segs[:, None] == segs[None]) & (segs[None] >= 0) & ((torch.arange(T)[:, None] - torch.arange(T)).abs() > 1))
    f = features(own.float() / own.float().sum(-1, keepdim=True).clamp_min(1) + (~own.any(-1, keepdim=True)) / T,
                 causal=False)
    assert f["block"] == pytest.approx(1, abs=1e-6) and f["other_segment"] == pytest.approx(0, abs=1e-6)


def test_two_segments_layout():
    assert pt.two_segments(8, True).tolist() == [-1, 0, 0, 0, -1, 1, 1, 1]
    assert pt.two_segments(8, False).tolist() == [-1, 0, 0, 0, -1, 1, 1, -1]
    with pytest.raises(InputError, match="length"):
        pt.two_segments(3, True)


@pytest.mark.parametrize("causal", [True, False])
def test_classifier_on_hand_built_maps(causal):
    """Maps built here by rule, not by synthetic_maps: each lands in its class."""
    t = 24
    segs = pt.two_segments(t, causal)
    vis = torch.tril(torch.ones(t, t)) if causal else torch.ones(t, t)
    norm = lambda m: (m * vis) / (m * vis).sum(-1, keepdim=True)  # noqa: E731
    uniform = norm(torch.ones(t, t))
    sep = int((segs == -1).nonzero()[1])
    vertical = torch.zeros(t, t)
    vertical[:, 0], vertical[:, sep] = 0.6, 0.4
    diagonal = previous_token_map(t) if causal else torch.diag(torch.ones(t - 1), 1) + torch.eye(t)[:, :] * 0
    if not causal:
        diagonal[-1, -2] = 1  # the last row has no next token
    gen = torch.Generator().manual_seed(5)
    perm = torch.randperm(t, generator=gen)
    content = torch.zeros(t, t)
    for q in range(t):  # each query reads one far, input-dependent position (a fixed random permutation)
        keys = [k for k in range(t) if vis[q, k] and abs(q - k) > 3 and k not in (0, sep)]
        content[q, keys[int(perm[q]) % len(keys)] if keys else 0] = 1
    maps = {
        "vertical": 0.85 * norm(vertical) + 0.15 * uniform,
        "diagonal": 0.85 * norm(diagonal) + 0.15 * uniform,
        "vertical+diagonal": 0.45 * norm(vertical) + 0.45 * norm(diagonal) + 0.1 * uniform,
        "block": 0.85 * block_map(segs) + 0.15 * uniform if causal else
        0.85 * norm(((segs[:, None] == segs[None]) & (segs[None] >= 0)).float() + 1e-9) + 0.15 * uniform,
        "heterogeneous": 0.85 * norm(content + 1e-9) + 0.15 * uniform,
    }
    stacked = torch.stack(list(maps.values()))
    pred = pt.classify_features(pt.map_features(stacked, segs.expand(len(maps), t), causal), causal)
    assert [pt.CLASSES[i] for i in pred] == list(maps)


def test_held_out_accuracy_and_confusion():
    acc = pt.taxonomy_accuracy(n_per_class=20, input_lengths=[48])
    assert acc.values.sum() == 100 and acc.values.shape == (5, 5)
    assert acc.meta["accuracy"] >= 0.9  # a chance classifier gets 0.2
    assert acc.meta["accuracy"] == pytest.approx(float(acc.values.diagonal().sum() / 100))


@pytest.fixture(scope="module")
def toy():
    return circuitlab.load_model("zoo/toy-lm")


def brute_force_features(pattern: torch.Tensor, segs: list[int]) -> list[float]:
    """The features of one causal map, by loops over rows and keys (the module docstring's definitions)."""
    t = len(segs)
    rows = range(2, t)
    col = []
    for k in range(t):
        seen = [q for q in rows if q >= k and abs(q - k) > 1]
        col.append(sum(float(pattern[q, k]) for q in seen) / len(seen) if len(seen) >= max(1, len(rows) / 4) else -1)
    vcols = sorted(range(t), key=lambda k: -col[k])[:2]
    vert = diag = prev = self_ = ent = mx = 0.0
    own = other = 0.0
    block_rows = 0
    for q in rows:
        r = [float(x) for x in pattern[q]]
        vert += sum(r[k] for k in vcols if abs(q - k) > 1)
        diag += sum(r[k] for k in range(t) if abs(q - k) <= 1)
        prev += r[q - 1]
        self_ += r[q]
        ent += -sum(p * math.log(max(p, 1e-30)) for p in r) / math.log(q + 1)
        mx += max(r)
        if segs[q] >= 1:
            block_rows += 1
            rest = [k for k in range(t) if abs(q - k) > 1 and segs[k] >= 0]
            own += sum(r[k] for k in rest if segs[k] == segs[q])
            other += sum(r[k] for k in rest if segs[k] != segs[q])
    n = len(rows)
    return [vert / n, diag / n, prev / n, self_ / n, own / block_rows, other / block_rows, ent / n, mx / n]


def test_model_features_match_a_brute_force_loop_over_the_cache(toy):
    tax = pt.pattern_taxonomy(toy, "random", n=3, length=10, seed=3)
    rows = pt._random_inputs(toy, 3, 10, 3)  # the same draw
    _, cache = toy.run_with_cache(torch.tensor(rows))
    segs = pt.two_segments(10, True).tolist()
    for layer in (0, toy.cfg.n_layers - 1):
        for head in range(toy.cfg.n_heads):
            expected = torch.tensor([brute_force_features(cache["pattern", layer][b, head], segs)
                                     for b in range(3)]).mean(0)
            torch.testing.assert_close(tax.meta["features"][layer, head], expected, atol=1e-5, rtol=0)
    assert tax.values.shape == (toy.cfg.n_layers, toy.cfg.n_heads, 5)
    torch.testing.assert_close(tax.values.sum(-1), torch.ones(toy.cfg.n_layers, toy.cfg.n_heads))
    torch.testing.assert_close(tax.meta["per_layer"], tax.values.mean(1))
    # batching by memory does not change anything
    small = pt.pattern_taxonomy(toy, "random", n=3, length=10, seed=3, max_memory=1)
    torch.testing.assert_close(small.values, tax.values)


def test_text_pairs_and_the_pruning_order(toy):
    pairs = [("the cat sat on the mat", "a dog ran"), ("one two three", "four five six seven")]
    tax = pt.pattern_taxonomy(toy, pairs)
    assert tax.meta["n"] == 2 and tax.meta["inputs"] == "text pairs"
    order = pt.taxonomy_order(tax)
    assert sorted(order) == [(layer, head) for layer in range(4) for head in range(4)]
    ranks = [pt.PRUNE_FIRST.index(pt.CLASSES[int(tax.values[layer, head].argmax())]) for layer, head in order]
    assert ranks == sorted(ranks)  # vertical heads first, heterogeneous last


def test_an_encoder_is_classified_with_bidirectional_maps():
    from test_probing import wordpiece_encoder

    enc = wordpiece_encoder(n_ctx=32)
    tax = pt.pattern_taxonomy(enc, [("the cat sat on the mat", "a dog ran on the mat")])
    assert tax.meta["causal"] is False and tax.values.shape == (2, 2, 5)
    rnd = pt.pattern_taxonomy(enc, "random", n=4, length=12)
    assert rnd.values.sum(-1).eq(1).all()


def test_bad_input(toy):
    with pytest.raises(InputError, match="inputs"):
        pt.pattern_taxonomy(toy, "bogus")
    with pytest.raises(InputError, match="inputs"):
        pt.pattern_taxonomy(toy, [("only one",)])
    with pytest.raises(InputError, match="length"):
        pt.pattern_taxonomy(toy, "random", length=3)
    with pytest.raises(InputError, match="length"):
        pt.pattern_taxonomy(toy, "random", length=10_000)
    with pytest.raises(InputError, match="taxonomy"):
        pt.taxonomy_order(torch.zeros(3))


def test_the_command_line(capsys, tmp_path):
    from circuitlab.cli import main

    assert main(["attention", "patterns", "-m", "zoo/attn-only-2l", "-n", "2", "--seq-len", "8", "-q"]) == 0
    out = capsys.readouterr().out
    assert "L0 " in out and "L1 " in out and "heterogeneous" in out and "classifier accuracy" in out
    assert main(["attention", "rollout", "-m", "zoo/toy-lm", "--prompt", "The cat sat on the mat", "-q",
                 "-o", str(tmp_path / "r.html")]) == 0
    out = capsys.readouterr().out
    assert "rollout" in out and "Spearman with ablation" in out and (tmp_path / "r.html").stat().st_size > 1000
    assert main(["attention", "prune", "-m", "zoo/toy-lm", "-n", "2", "--seq-len", "8", "--order", "random",
                 "-q"]) == 0
    assert "heads)" in capsys.readouterr().out
