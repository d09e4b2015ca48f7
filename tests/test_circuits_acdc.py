"""Exact edge patching, ACDC and faithfulness (circuitlab.circuits.patch, circuitlab.circuits.acdc).

The reference is independent of the code under test: plain TransformerLens hooks, one full forward pass per
edge set, full logits. Receivers read their own inputs through TransformerLens's split q/k/v inputs and
``hook_mlp_in``; senders' outputs are TransformerLens's own per-head results (``hook_result``) and
``hook_mlp_out``, captured in the same run (so upstream removals change them, as they must); ACDC's reference is
the paper's loop, one candidate at a time.
"""


import pytest
import torch

from circuitlab.circuits import Circuit, EdgePatcher, Graph, acdc, faithfulness, faithfulness_curve, patch_edges
from circuitlab.errors import InputError
from circuitlab.metrics import KLDivergence, LogitDiff
from circuitlab.tasks import repeated_tokens
from circuitlab.testing import ARCHITECTURES

from circuit_models import attn_only_2l, model_of, sender_outputs


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def prompt_pairs(vocab: int, batch: int = 3, seq: int = 6, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    clean = torch.randint(1, vocab, (batch, seq), generator=gen)
    corrupted = torch.randint(1, vocab, (batch, seq), generator=gen)
    return clean, corrupted


def induction_pairs(model, n: int = 4, half: int = 5, seed: int = 0):
    """Repeated random tokens (clean) and different random tokens of the same length (corrupted)."""
    clean = repeated_tokens(n, half, model.cfg.d_vocab, seed=seed, exclude=(0,)).tokens
    corrupted = torch.randint(1, model.cfg.d_vocab, clean.shape, generator=torch.Generator().manual_seed(seed + 1))
    return clean, corrupted


# ---------------------------------------------------------------------------------------------------------
# The reference: plain hooks, one forward pass per edge set, full logits
# ---------------------------------------------------------------------------------------------------------

def reference_logits(model, clean, corrupted, removed, ablation="corrupted"):
    """Logits of the clean run with the edges in ``removed`` reading their sender's ablated output."""
    graph = Graph.from_model(model)
    ablated = sender_outputs(model, corrupted)
    if ablation == "mean":
        ablated = {k: v.mean(0, keepdim=True) for k, v in ablated.items()}
    elif ablation == "zero":
        ablated = {k: torch.zeros_like(v) for k, v in ablated.items()}
    removed = {graph.check_edge(e) for e in removed}
    current: dict = {}

    def keep(name, head=None):
        def hook(act, hook):
            current[name] = act if head is None else act[:, :, head]
        return hook

    def receive(node):
        senders = [s for s in graph.senders_of(node.name) if (s, node.name) in removed]

        def hook(act, hook):
            if not senders:
                return act
            delta = sum(current[s] - ablated[s] for s in senders)
            act = act.clone()
            if node.head is None:
                return act - delta
            act[:, :, node.head] = act[:, :, node.head] - delta
            return act
        return hook

    hooks = [("blocks.0.hook_resid_pre", keep("embed"))]
    for node in graph.senders[1:]:
        hooks.append((f"blocks.{node.layer}.attn.hook_result", keep(node.name, node.head)) if node.kind == "head"
                     else (node.hook, keep(node.name)))
    hooks += [(node.hook, receive(node)) for node in graph.receivers]
    cfg = model.cfg
    saved = (cfg.use_split_qkv_input, cfg.use_hook_mlp_in, cfg.ungroup_grouped_query_attention, cfg.use_attn_result)
    cfg.use_split_qkv_input = cfg.ungroup_grouped_query_attention = cfg.use_attn_result = True
    cfg.use_hook_mlp_in = not cfg.attn_only
    try:
        with torch.no_grad():
            # the logits' input is the last block's output: patch it there, then unembed
            return model.run_with_hooks(clean, fwd_hooks=hooks)
    finally:
        (cfg.use_split_qkv_input, cfg.use_hook_mlp_in, cfg.ungroup_grouped_query_attention,
         cfg.use_attn_result) = saved


def kl_last(clean_logits, logits):
    ref = clean_logits[:, -1].log_softmax(-1)
    return float((ref.exp() * (ref - logits[:, -1].log_softmax(-1))).sum(-1).mean().detach())


def reference_acdc(model, clean, corrupted, threshold, metric=None, ablation="corrupted"):
    """The paper's loop: receivers from the logits back, each edge tried once against the current circuit."""
    graph = Graph.from_model(model)
    clean_logits = reference_logits(model, clean, corrupted, [])

    def value(removed):
        logits = reference_logits(model, clean, corrupted, removed, ablation)
        return kl_last(clean_logits, logits) if metric is None else float(metric(logits))

    removed: list = []
    current = value(removed)
    for edge in reversed(graph.edges):
        candidate = value(removed + [edge])
        delta = candidate - current if metric is None else abs(current - candidate)
        if delta < threshold:
            removed.append(edge)
            current = candidate
    return [e for e in graph.edges if e not in set(removed)]


# ---------------------------------------------------------------------------------------------------------
# Exact edge patching
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", [*ARCHITECTURES, "norm=LNPre", "norm=RMSPre", "norm=None"])
def test_patch_edges_equals_reference(arch):
    model = model_of(arch)
    clean, corrupted = prompt_pairs(model.cfg.d_vocab)
    graph = Graph.from_model(model)
    gen = torch.Generator().manual_seed(1)
    edges = list(graph.edges)
    one_each = list({graph.receiver(r).kind + graph.sender(s).kind: (s, r) for s, r in edges}.values())
    sets = [[e] for e in one_each] + [[edges[i] for i in torch.randperm(len(edges), generator=gen)[:k].tolist()]
                                      for k in (3, 20, len(edges) // 2)]
    # all but a few: most removed, the state ACDC works in (the engine sums kept senders' outputs instead)
    sets += [[e for e in edges if e not in set(few)] for few in (sets[-3], sets[-2])]
    # every edge out of an MLP and a head, plus a few others: such dead components are not computed
    dying = ([n.name for n in graph.senders if n.kind == "mlp"][:1]
             + [n.name for n in graph.senders if n.kind == "head"][1:2])
    sets.append([e for e in edges if e[0] in dying] + sets[-4])
    clean_logits = reference_logits(model, clean, corrupted, [])
    for ablation in ("corrupted", "mean", "zero"):
        got = patch_edges(model, clean, corrupted, sets, ablation=ablation, max_memory=2**20)
        expected = [kl_last(clean_logits, reference_logits(model, clean, corrupted, s, ablation)) for s in sets]
        torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=1e-8, atol=1e-12)
    # KL reads the last position: the last block runs there alone, where key/value reuse is verified
    patcher = EdgePatcher(model, clean, corrupted, [KLDivergence(clean_logits[:, -1])])
    assert patcher.first_read == (0 if arch == "llama" else clean.shape[1] - 1)
    # a declarative metric reading two columns, through the same engine
    metric = LogitDiff(correct=[2, 3, 4], wrong=[7, 8, 9])
    got = patch_edges(model, clean, corrupted, sets[:4], metric)
    expected = [float(metric(reference_logits(model, clean, corrupted, s))) for s in sets[:4]]
    torch.testing.assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_remove_all_is_corrupted_and_none_is_clean(arch):
    model = model_of(arch)
    clean, corrupted = prompt_pairs(model.cfg.d_vocab)
    graph = Graph.from_model(model)
    corrupted_logits = model(corrupted)
    everything = torch.ones(1, graph.n_edges, dtype=torch.bool)
    nothing = torch.zeros(1, graph.n_edges, dtype=torch.bool)
    kl_to_corrupted = KLDivergence(corrupted_logits[:, -1])
    values = patch_edges(model, clean, corrupted, torch.cat([everything, nothing]), kl_to_corrupted)
    assert values[0] == pytest.approx(0, abs=1e-12)  # everything removed: the corrupted run's output
    assert values[1] == pytest.approx(kl_last(corrupted_logits, model(clean)), rel=1e-10)  # nothing: the clean run
    assert patch_edges(model, clean, corrupted, nothing)[0] == pytest.approx(0, abs=1e-12)
    # and the full logits, through a plain callable metric
    got = []
    patch_edges(model, clean, corrupted, everything, lambda logits: got.append(logits) or logits.sum())
    torch.testing.assert_close(got[-1], corrupted_logits, rtol=1e-9, atol=1e-9)  # (got[0]: the clean run)


# ---------------------------------------------------------------------------------------------------------
# ACDC equals the one-edge-at-a-time reference
# ---------------------------------------------------------------------------------------------------------

def check_acdc(model, clean, corrupted, thresholds, metric=None, window_bytes=None):
    kept = []
    for threshold in thresholds:
        kwargs = {} if window_bytes is None else {"max_memory": window_bytes}
        result = acdc(model, clean, corrupted, threshold, metric, **kwargs)
        expected = reference_acdc(model, clean, corrupted, threshold, metric)
        assert result.edges == expected, (threshold, result.compare(Circuit.from_edges(result.graph, expected)))
        assert result.meta["threshold"] == threshold and result.meta["passes"] >= 1
        kept.append(len(result))
    return kept


def test_acdc_on_attn_only_2l_equals_reference():
    model = attn_only_2l()
    clean, corrupted = induction_pairs(model, n=6, half=5)
    kept = check_acdc(model, clean, corrupted, [1e-2, 0.1])
    assert 0 < kept[1] <= kept[0] < 81


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_acdc_equals_reference(arch):
    model = model_of(arch)
    clean, corrupted = prompt_pairs(model.cfg.d_vocab)
    kept = check_acdc(model, clean, corrupted, [2e-4, 3e-3])
    assert kept[0] > 0 and kept[1] < Graph.from_model(model).n_edges


def test_acdc_small_windows_and_other_metric():
    # tiny windows make many predictions fail mid-window: the confirmation must still give the sequential circuit
    model = model_of("gpt2")
    clean, corrupted = prompt_pairs(model.cfg.d_vocab)
    check_acdc(model, clean, corrupted, [1e-3], window_bytes=1)
    metric = LogitDiff(correct=[2, 3, 4], wrong=[7, 8, 9])
    check_acdc(model, clean, corrupted, [3e-3], metric=metric)
    unbatched = acdc(model, clean, corrupted, 1e-3, speculate=False)
    assert unbatched.edges == acdc(model, clean, corrupted, 1e-3).edges
    assert unbatched.meta["runs"] >= unbatched.meta["decisions"] - unbatched.meta["skipped"]


def test_acdc_one_receiver_is_the_first_step():
    # the logits are visited first: ACDC restricted to them decides their edges as the full run does
    model = model_of("pythia")
    clean, corrupted = prompt_pairs(model.cfg.d_vocab)
    full = acdc(model, clean, corrupted, 3e-3)
    step = acdc(model, clean, corrupted, 3e-3, receivers=["logits"])
    graph = full.graph
    assert [e for e in step.edges if e[1] == "logits"] == [e for e in full.edges if e[1] == "logits"]
    assert [e for e in step.edges if e[1] != "logits"] == [e for e in graph.edges if e[1] != "logits"]
    assert step.meta["decisions"] == len(graph.senders_of("logits"))
    assert all(s != s for e, s in zip(step.edges, step.scores) if e[1] != "logits")  # unvisited: NaN


def test_acdc_bad_inputs():
    model = model_of("attn_only")
    clean, corrupted = prompt_pairs(model.cfg.d_vocab)
    for bad in (-1e-3, float("nan"), float("inf"), "1e-3", True):
        with pytest.raises(InputError, match="threshold"):
            acdc(model, clean, corrupted, bad)
    with pytest.raises(InputError, match="same number of tokens"):
        acdc(model, clean, corrupted[:, :-1], 1e-3)
    with pytest.raises(InputError, match="ablation"):
        acdc(model, clean, corrupted, 1e-3, ablation="resample")
    for empty in ([], ()):  # visiting nothing would return the full graph with every score NaN
        with pytest.raises(InputError, match="receivers is empty"):
            acdc(model, clean, corrupted, 1e-3, receivers=empty)


# ---------------------------------------------------------------------------------------------------------
# Faithfulness
# ---------------------------------------------------------------------------------------------------------

def test_faithfulness_and_curve():
    model = model_of("gpt2")
    clean, corrupted = prompt_pairs(model.cfg.d_vocab)
    graph = Graph.from_model(model)
    metric = LogitDiff(correct=[2, 3, 4], wrong=[7, 8, 9])
    full = faithfulness(model, clean, corrupted, Circuit.full(graph), metric)
    assert (full.axes == ("measure",) and full.values[0] == pytest.approx(1)
            and full.values[1] == pytest.approx(0, abs=1e-12))
    empty = faithfulness(model, clean, corrupted, Circuit(graph, []), metric)
    assert empty.values[0] == pytest.approx(0, abs=1e-12)

    scored = acdc(model, clean, corrupted, 1e-4)
    curve = faithfulness_curve(model, clean, corrupted, scored, [0, 2, len(scored)], metric, ablation="mean")
    assert curve.axes == ("edges", "measure") and curve.labels["edges"] == ["0", "2", str(len(scored))]
    # each point equals a direct hooked computation of that circuit
    for k, row in zip([0, 2, len(scored)], curve.values):
        kept = set(scored.top(k).edges)
        removed = [e for e in graph.edges if e not in kept]
        logits = reference_logits(model, clean, corrupted, removed, "mean")
        everything = reference_logits(model, clean, corrupted, graph.edges, "mean")
        whole = float(metric(model(clean).detach()))
        expected = (float(metric(logits)) - float(metric(everything))) / (whole - float(metric(everything)))
        assert float(row[0]) == pytest.approx(expected, rel=1e-8)
        assert float(row[1]) == pytest.approx(kl_last(model(clean), logits), rel=1e-8, abs=1e-12)
    with pytest.raises(InputError, match="no scores"):
        faithfulness_curve(model, clean, corrupted, Circuit(graph, []), [1])
