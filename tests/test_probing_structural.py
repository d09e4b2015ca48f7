"""Structural probes: tree distances and depths by hand, the MST against brute force over every spanning tree,
UUAS with punctuation excluded, Spearman with ties, averaging over sentence lengths, the linear baseline, and
probes that recover a planted tree geometry."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import circuitlab
from circuitlab.errors import InputError
from circuitlab.probing import data, structural
from circuitlab.probing.activations import WordActivations, collect
from circuitlab.probing.classifier import split_sentences
from circuitlab.probing.data import Sentence


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def test_tree_distances_and_depths_by_hand():
    # words 1..5: 2 is the root; 1 -> 2, 3 -> 2, 4 -> 3, 5 -> 4
    head = (2, 0, 2, 3, 4)
    want = torch.tensor([[0, 1, 2, 3, 4],
                         [1, 0, 1, 2, 3],
                         [2, 1, 0, 1, 2],
                         [3, 2, 1, 0, 1],
                         [4, 3, 2, 1, 0]])
    assert torch.equal(structural.tree_distances(head), want)
    assert structural.tree_depths(head).tolist() == [1, 0, 1, 2, 3]
    assert structural.tree_edges(head) == {(0, 1), (1, 2), (2, 3), (3, 4)}
    assert structural.tree_edges(head, keep=[True, True, True, True, False]) == {(0, 1), (1, 2), (2, 3)}


def prufer_trees(n):
    """Every spanning tree of the complete graph on n nodes, as edge sets (Prüfer decoding)."""
    for seq in itertools.product(range(n), repeat=n - 2):
        degree = [1] * n
        for v in seq:
            degree[v] += 1
        edges = set()
        for v in seq:
            leaf = min(u for u in range(n) if degree[u] == 1)
            edges.add((min(leaf, v), max(leaf, v)))
            degree[leaf] -= 1
            degree[v] -= 1
        u, w = [x for x in range(n) if degree[x] == 1]
        edges.add((u, w))
        yield edges


@pytest.mark.parametrize("n, seed", [(4, 0), (5, 1), (6, 2), (6, 3)])
def test_mst_equals_brute_force_over_all_spanning_trees(n, seed):
    gen = torch.Generator().manual_seed(seed)
    w = torch.rand(n, n, generator=gen, dtype=torch.float64)
    w = w + w.T  # symmetric, distinct weights: a unique minimum spanning tree
    trees = list(prufer_trees(n))
    assert len(trees) == n ** (n - 2)  # Cayley's formula: the enumeration is complete
    best = min(trees, key=lambda t: sum(float(w[i, j]) for i, j in t))
    assert structural.mst_edges(w) == best
    keep = [True] * n
    keep[1] = False  # a word left out (punctuation): the tree spans the others
    sub = [i for i in range(n) if keep[i]]
    sub_trees = [{(sub[i], sub[j]) for i, j in t} for t in prufer_trees(n - 1)]
    best_sub = min(sub_trees, key=lambda t: sum(float(w[i, j]) for i, j in t))
    assert structural.mst_edges(w, keep) == best_sub


def test_spearman_with_ties_and_constants():
    assert structural.spearman(torch.tensor([1.0, 2, 3]), torch.tensor([10.0, 20, 30])) == pytest.approx(1)
    assert structural.spearman(torch.tensor([3.0, 2, 1]), torch.tensor([1.0, 5, 9])) == pytest.approx(-1)
    # ranks (0.5, 0.5, 2) against (0, 1, 2): Pearson = 1.5 / sqrt(1.5 * 2) = sqrt(3) / 2
    assert structural.spearman(torch.tensor([1.0, 1, 2]), torch.tensor([1.0, 2, 3])) == pytest.approx(math.sqrt(3) / 2)
    assert math.isnan(structural.spearman(torch.tensor([1.0, 1, 1]), torch.tensor([1.0, 2, 3])))


def chain(n, punct_last=False):
    """A left-to-right chain sentence (word 1 the root, each word the next one's head)."""
    upos = ["NOUN"] * n
    if punct_last:
        upos[-1] = "PUNCT"
    return Sentence(tuple(f"w{i}" for i in range(n)), upos=tuple(upos), head=tuple(range(n)))


def test_uuas_excludes_punctuation_and_counts_gold_edges():
    # gold: 2 is the root; 1 -> 2, 3 -> 2, 4 -> 3, 5 (punctuation) -> 2
    s = Sentence(("a", "b", "c", "d", "."), upos=("DET", "NOUN", "VERB", "NOUN", "PUNCT"), head=(2, 0, 2, 3, 2))
    pos = torch.arange(5)
    chain_dist = (pos[:, None] - pos[None, :]).abs().double()  # MST: the chain 0-1-2-3 over the kept words
    scores = structural.score_trees([chain_dist], [], [s])
    assert scores["uuas"] == pytest.approx(3 / 3)  # the chain a-b-c-d is exactly the gold tree without "."
    star = torch.full((5, 5), 2.0, dtype=torch.float64)
    star[0, :] = star[:, 0] = 1.0  # everything closest to "a": MST edges a-b, a-c, a-d
    star.fill_diagonal_(0)
    assert structural.score_trees([star], [], [s])["uuas"] == pytest.approx(1 / 3)  # only a-b is gold
    depth = torch.tensor([1.0, 0.5, 0.1, 2.0, 0.0])  # "." has the least depth but punctuation cannot be the root
    assert structural.score_trees([], [depth], [s])["root_acc"] == 0.0  # c is chosen, b is the root
    assert math.isnan(structural.score_trees([], [depth], [s])["uuas"])


def test_spearman_is_averaged_within_lengths_then_over_lengths_5_to_50():
    five = [chain(5) for _ in range(3)]
    six = chain(6)
    four = chain(4)
    gold = [structural.tree_distances(s.head).double() for s in five + [six, four]]
    pred = gold[:3] + [-gold[3], -gold[4]]  # length 5: rho = 1; length 6: rho = -1; length 4: ignored
    scores = structural.score_trees(pred, [], five + [six, four])
    assert scores["dspr"] == pytest.approx(0.0)  # (1 + (-1)) / 2; a mean over words would give 9/21
    assert scores["uuas"] < 1


def test_linear_baseline_is_perfect_on_chains():
    sents = [chain(n, punct_last=True) for n in (5, 7, 9)]
    base = structural.linear_baseline(sents)
    assert base == {"uuas": 1.0, "dspr": pytest.approx(1.0), "root_acc": 1.0, "nspr": pytest.approx(1.0)}


def planted(sentences, noise_dims=4, seed=0):
    """Representations whose geometry is the tree: h_i = sum of one-hot edge vectors on i's path to the root, so
    ||h_i - h_j||^2 is the tree distance and ||h_i||^2 the depth (edges named by their child's position)."""
    gen = torch.Generator().manual_seed(seed)
    width = max(map(len, sentences))
    rows, sent_idx, word_idx = [], [], []
    for k, s in enumerate(sentences):
        for i in range(len(s)):
            v = torch.zeros(width)
            at = i + 1
            while s.head[at - 1]:
                v[at - 1] += 1
                at = s.head[at - 1]
            rows.append(torch.cat([v, 0.05 * torch.randn(noise_dims, generator=gen)]))
            sent_idx.append(k)
            word_idx.append(i)
    noise = torch.randn(len(rows), width + noise_dims, generator=gen)
    return WordActivations({"blocks.0.hook_resid_post": torch.stack(rows), "blocks.1.hook_resid_post": noise},
                           torch.tensor(sent_idx), torch.tensor(word_idx), list(sentences), "planted")


def test_probes_recover_a_planted_tree_geometry():
    sents = data.template_sentences(200, seed=6)
    acts = planted(sents)
    res = structural.sweep(acts, rank=16, options={"lr": 1e-2, "epochs": 30})
    assert res.axes == ("layer", "measure") and res.labels["layer"] == ["L0", "L1", "linear baseline"]
    planted_row, noise_row, base_row = res.values
    assert planted_row[0] > 0.97 and planted_row[1] > 0.9 and planted_row[2] > 0.97 and planted_row[3] > 0.9
    assert noise_row[0] < base_row[0] and noise_row[2] < 0.6
    test = [sents[int(i)] for i in data_split_test(sents)]
    assert base_row.tolist() == pytest.approx(chain_baseline_by_hand(test))
    assert type(res).__name__ == "StructuralSweep"


def _pearson_of_ranks(a, b):
    """Spearman's rho from pandas' average ranks (independent of the module's ranking); None if constant."""
    import pandas as pd

    ra, rb = pd.Series(list(a)).rank(), pd.Series(list(b)).rank()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = math.sqrt(float((ra ** 2).sum() * (rb ** 2).sum()))
    return float((ra * rb).sum()) / den if den else None


def chain_baseline_by_hand(sentences):
    """The linear-chain baseline from its definition: the chain joins each scored word (not PUNCT/SYM) to the next
    scored word; UUAS = chain edges in the gold tree / gold edges between scored words, over all sentences; root
    accuracy: the first scored word is the root; DSpr/NSpr: Spearman of |i - j| (of i) against gold distances
    (depths), per word (sentence), averaged within each length, then over lengths 5 to 50."""
    correct = total = roots = 0
    dspr, nspr = {}, {}
    for s in sentences:
        n = len(s)
        scored = [i for i in range(n) if s.upos[i] not in ("PUNCT", "SYM")]
        gold = {(min(i, s.head[i] - 1), max(i, s.head[i] - 1)) for i in scored
                if s.head[i] and s.head[i] - 1 in scored}
        chain = set(zip(scored, scored[1:]))
        correct += len(chain & gold)
        total += len(gold)
        roots += s.head[scored[0]] == 0
        dist, depth = structural.tree_distances(s.head).tolist(), structural.tree_depths(s.head).tolist()
        rhos = [_pearson_of_ranks([abs(i - j) for j in range(n)], dist[i]) for i in range(n)]
        dspr.setdefault(n, []).extend(r for r in rhos if r is not None)
        rho = _pearson_of_ranks(range(n), depth)
        if rho is not None:
            nspr.setdefault(n, []).append(rho)

    def by_length(d):
        means = [sum(v) / len(v) for n, v in d.items() if 5 <= n <= 50 and v]
        return sum(means) / len(means)

    return [correct / total, by_length(dspr), roots / len(sentences), by_length(nspr)]


def test_chain_baseline_by_hand_on_a_sentence_with_inner_punctuation():
    # "a , b c ." with gold a <- b (root c): a-b is gold between scored words, the chain a-b-c skips the comma
    s = Sentence(("a", ",", "b", "c", "."), upos=("NOUN", "PUNCT", "NOUN", "VERB", "PUNCT"), head=(3, 1, 4, 0, 4))
    t = Sentence(("x", "y", "z", "w", "v"), upos=("NOUN",) * 5, head=(0, 1, 1, 3, 3))
    want = chain_baseline_by_hand([s, t])
    assert want[0] == pytest.approx((2 + 2) / (2 + 4)) and want[2] == pytest.approx(1 / 2)
    base = structural.linear_baseline([s, t])
    assert [base[m] for m in structural.MEASURES] == pytest.approx(want)


def data_split_test(sentences):
    """The test split: identical sentences (by their words) share one split."""
    from circuitlab.probing.classifier import split_sentences

    return split_sentences(len(sentences), (0.8, 0.1, 0.1), 0, keys=[s.words for s in sentences])["test"].tolist()


def test_sweep_on_toy_lm_and_bad_input(tmp_path):
    toy = circuitlab.load_model("zoo/toy-lm")
    sents = data.template_sentences(60, seed=2)
    res = structural.sweep(toy, sents, hooks=[2], rank=8, options={"epochs": 3}, cache=tmp_path)
    assert res.shape == (2, 4) and res.model == "zoo/toy-lm" and res.meta["sentences_left_out"] == 0
    # the sweep's UUAS and example tree are those of a probe trained by hand on the documented split
    acts = collect(toy, sents, hooks=[2], cache=tmp_path, progress=False)
    hook = acts.hooks[0]
    rows, _ = structural.sentence_rows(acts)
    parts = {k: v.tolist() for k, v in split_sentences(len(sents), (0.8, 0.1, 0.1), 0).items()}
    probe = structural.train_structural_probe(acts[hook], [rows[i] for i in parts["train"]],
                                              [sents[i] for i in parts["train"]], "distance",
                                              dev_rows=[rows[i] for i in parts["dev"]],
                                              dev_sentences=[sents[i] for i in parts["dev"]], rank=8, seed=0, epochs=3)
    pred = structural.predict(probe, acts[hook], [rows[i] for i in parts["test"]])
    correct = total = 0
    for k, i in enumerate(parts["test"]):
        keep = [u != "PUNCT" for u in sents[i].upos]
        gold = structural.tree_edges(sents[i].head, keep)
        correct += len(structural.mst_edges(pred[k], keep) & gold)
        total += len(gold)
    assert float(res.values[0, 0]) == pytest.approx(correct / total)
    ex = res.meta["example"]
    k = next(k for k, i in enumerate(parts["test"]) if 5 <= len(sents[i]) <= 20)  # the documented choice
    i = parts["test"][k]
    keep = [u != "PUNCT" for u in sents[i].upos]
    assert ex["sentence"] == i and ex["words"] == list(sents[i].words) and ex["head"] == list(sents[i].head)
    assert ex["layer"] == "L2" and ex["keep"] == keep
    assert set(ex["predicted"]) == structural.mst_edges(pred[k], keep) and len(ex["predicted"]) == sum(keep) - 1
    assert ex["correct"] == len(set(ex["predicted"]) & structural.tree_edges(sents[i].head, keep))
    no_trees = [Sentence(s.words, upos=s.upos) for s in sents]
    with pytest.raises(InputError, match="no dependency tree"):
        structural.sweep(toy, no_trees, hooks=[2], cache=False)
    with pytest.raises(InputError, match="seeds="):
        structural.sweep(toy, sents, seeds=())
    with pytest.raises(InputError, match="rank"):
        structural.train_structural_probe(torch.randn(5, 3), [torch.arange(5)], [chain(5)], rank=0)
