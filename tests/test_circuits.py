"""circuitlab.circuits: the graph, circuits, and edge attribution patching (EAP, EAP-IG).

The references are independent of the code under test: auto-circuit's published edge counts; a brute-force
linearisation that patches one edge at a time (TransformerLens's own per-head outputs, ``hook_result``, added with
a scale ``alpha`` to one receiver's input only) and differentiates the metric of the full forward pass in
``alpha`` at 0; and an algebraic identity with attribution patching of the final residual stream.
"""

import json
import re

import pytest
import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

import circuitlab
from circuitlab.circuits import Circuit, Graph, eap, eap_ig, receiver_inputs
from circuitlab.circuits.eap import RECEIVER_FLAGS
from circuitlab.errors import InputError
from circuitlab.metrics import LogitDiff, Normalized, Probability
from circuitlab.patching import attribution
from circuitlab.testing import ARCHITECTURES, random_model

from circuit_models import attn_only_2l, model_of, sender_outputs

REL = 1e-5


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # the models here are tiny: one thread is faster than two, and leaves the other core to other work
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


#: norms the random architectures lack: TransformerLens's folded norms (what from_pretrained gives by default) and none
NORM_VARIANTS = ("LNPre", "RMSPre", None)


def prompt_pairs(vocab: int, batch: int = 3, seq: int = 7, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    clean = torch.randint(1, vocab, (batch, seq), generator=gen)
    corrupted = clean.clone()
    corrupted[:, 1::2] = torch.randint(1, vocab, (batch, len(range(1, seq, 2))), generator=gen)
    corrupted[:, -1] = torch.randint(1, vocab, (batch,), generator=gen)  # the read position too: no edge is 0
    return clean, corrupted


def metric_for(vocab: int, batch: int = 3) -> LogitDiff:
    return LogitDiff(correct=list(range(2, 2 + batch)), wrong=[vocab - 1 - i for i in range(batch)])


# ---------------------------------------------------------------------------------------------------------
# The graph
# ---------------------------------------------------------------------------------------------------------

def test_edge_counts_match_auto_circuit():
    assert Graph.from_model(circuitlab.load_model("zoo/attn-only-2l")).n_edges == 81
    gpt2_small = HookedTransformerConfig(n_layers=12, d_model=768, n_heads=12, d_head=64, d_mlp=3072, d_vocab=50257,
                                         n_ctx=1024, act_fn="gelu_new", normalization_type="LN", device="cpu")
    # the config alone decides the graph; the model is built on meta tensors so that no weights are allocated
    with torch.device("meta"):
        model = HookedTransformer(gpt2_small, move_to_device=False)
    assert Graph.from_model(model).n_edges == 32491
    assert Graph(12, 12).n_edges == 32491


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_graph_structure(arch):
    model = model_of(arch)
    graph = Graph.from_model(model)
    cfg = model.cfg
    H, L = cfg.n_heads, cfg.n_layers
    mlp = not cfg.attn_only
    assert len(graph.senders) == 1 + L * (H + mlp)
    assert len(graph.receivers) == L * (3 * H + mlp) + 1
    assert graph.mask.sum() == graph.n_edges == len(set(graph.edges))
    # every node's hook exists in the model (receivers' with their inputs exposed)
    with receiver_inputs(model):
        model.setup()
        hooks = set(model.hook_dict)
        assert {n.hook for n in graph.senders + graph.receivers} <= hooks
    model.setup()
    # edges go forward only; MLP l reads layer l's heads unless attention and MLP run in parallel
    layer_of = {n.name: n.layer for n in graph.senders}
    for s, r in graph.edges:
        assert layer_of[s] <= graph.receiver(r).layer
    if mlp:
        same_layer = ("L0H0", "MLP0") in graph
        assert same_layer == (not cfg.parallel_attn_mlp)
        assert ("MLP0", "L0H0.q") not in graph and ("MLP0", "L1H0.q") in graph and ("MLP0", "MLP0") not in graph
    else:
        assert not any(n.kind == "mlp" for n in graph.senders + graph.receivers)
    assert ("L0H0", "L0H1.q") not in graph and ("L0H0", "L1H1.k") in graph
    assert all(("embed", r.name) in graph for r in graph.receivers)
    assert graph.inputs_of("L1H2") == ["L1H2.q", "L1H2.k", "L1H2.v"] and graph.inputs_of("embed") == []
    assert graph.senders_of("L1H0.k") == ["embed", *[f"L0H{h}" for h in range(H)], *(["MLP0"] if mlp else [])]
    assert graph.senders_of("logits") == [n.name for n in graph.senders]
    assert (graph.receivers[-1].name == "logits"
            and sum(1 for _, r in graph.edges if r == "logits") == len(graph.senders))


def test_unsupported_models_are_named():
    with pytest.raises(InputError, match="Linear"):
        Graph.from_model(torch.nn.Linear(2, 2))
    cfg = HookedTransformerConfig(n_layers=1, d_model=16, n_heads=2, d_head=8, d_vocab=10, n_ctx=8, act_fn="gelu",
                                  attention_dir="bidirectional", device="cpu")
    with pytest.raises(InputError, match="bidirectional.*causal"):
        Graph.from_model(HookedTransformer(cfg))
    cfg = HookedTransformerConfig(n_layers=1, d_model=16, n_heads=2, d_head=8, d_vocab=10, n_ctx=8, act_fn="gelu",
                                  normalization_type="RMS", use_normalization_before_and_after=True, device="cpu")
    with pytest.raises(InputError, match="sandwich"):
        Graph.from_model(HookedTransformer(cfg))


# ---------------------------------------------------------------------------------------------------------
# Circuits
# ---------------------------------------------------------------------------------------------------------

def test_circuit_json_compare_top_and_names():
    graph = Graph(2, 4, attn_only=True, model="zoo/attn-only-2l")
    scores = [((i * 37) % 81 - 40) / 10 for i in range(graph.n_edges)]
    full = Circuit.full(graph, scores=scores, metric="logit_diff", meta={"steps": None, "sizes": [1, 2]})
    assert len(full) == 81 and list(full) == list(graph.edges)

    top = full.top(5)
    assert len(top) == 5
    assert sorted(abs(s) for s in top.scores) == sorted(abs(s) for s in scores)[-5:]
    assert all(top.score(e) == full.score(e) for e in top)

    back = Circuit.from_json(top.to_json())
    assert back == top
    assert back.edges == top.edges and back.scores == top.scores and back.model == "zoo/attn-only-2l"
    assert back.graph.spec() == graph.spec() and back.metric == "logit_diff"
    assert json.loads(top.to_json())["graph"]["n_edges"] == 81
    assert Circuit.from_json(Circuit(graph, []).to_json()).scores is None
    assert Circuit.from_json(full.top(0).to_json()).scores == []
    with pytest.raises(InputError, match="not a circuit's JSON"):
        Circuit.from_json('{"edges": []}')
    # hand-edited files: every broken structure is an InputError naming the field, never a KeyError / TypeError
    good = json.loads(top.to_json())
    broken = {
        "edges": {**good, "edges": None},
        "edges[0]": {**good, "edges": [{"sender": "L0H1"}]},
        "edges[1]": {**good, "edges": [good["edges"][0], ["L0H1", "logits"]]},
        "edges[0].score": {**good, "edges": [{**good["edges"][0], "score": "high"}]},
    }
    for field, data in broken.items():
        with pytest.raises(InputError, match=re.escape(f"field '{field}'")):
            Circuit.from_json(json.dumps(data))
    for data in ({**good, "graph": None}, {**good, "graph": {**good["graph"], "n_layerz": 2}}):
        with pytest.raises(InputError, match="field 'graph'"):
            Circuit.from_json(json.dumps(data))

    induction = Circuit.from_edges(graph, ["L0H2 -> L1H1.k", ("L1H1", "logits"), "embed -> L1H1.q"])
    assert induction.nodes == ["embed", "L0H2", "L1H1", "logits"] and induction.scores is None
    nodes = Circuit.from_nodes(graph, ["embed", "L0H2", "L1H1", "logits"])
    # embed -> L0H2 q/k/v, embed -> L1H1 q/k/v, L0H2 -> L1H1 q/k/v, and three senders -> logits
    assert len(nodes) == 3 + 3 + 3 + 3
    cmp = induction.compare(nodes)
    assert set(cmp.shared) == set(induction.edges) and cmp.only_self == []
    assert len(cmp.only_other) == 12 - 3 and cmp.jaccard == pytest.approx(3 / 12)

    df = top.to_dataframe()
    assert list(df.columns) == ["sender", "receiver", "score"] and len(df) == 5

    with pytest.raises(InputError, match="L7H0.*not in this model's graph"):
        Circuit.from_nodes(graph, ["embed", "L7H0"])
    with pytest.raises(InputError, match="MLP0"):
        Circuit.from_nodes(graph, ["MLP0"])  # attention-only: no MLPs
    with pytest.raises(InputError, match="no edge L1H0 -> L0H1.q"):
        Circuit.from_edges(graph, ["L1H0 -> L0H1.q"])
    with pytest.raises(InputError, match="not a receiver"):
        Circuit.from_edges(graph, ["L0H0 -> L1H9.k"])
    with pytest.raises(InputError, match="different graphs"):
        induction.compare(Circuit.full(Graph(3, 4, attn_only=True)))
    with pytest.raises(InputError, match="needs scores"):
        induction.top(2)


# ---------------------------------------------------------------------------------------------------------
# EAP against a brute-force linearisation, one edge at a time
# ---------------------------------------------------------------------------------------------------------

def brute_force_scores(model, clean, corrupted, metric, edges, embed_alpha: float = 1.0):
    """d metric / d alpha at alpha = 0, with alpha * (a_u(corrupted) - a_u(clean)) added to receiver v's input.

    With ``embed_alpha < 1`` the clean run's embedding is replaced by the point ``embed_alpha`` of the way from the
    corrupted embedding to the clean one (one point of EAP-IG's path)."""
    graph = Graph.from_model(model)
    clean_out, corrupted_out = sender_outputs(model, clean), sender_outputs(model, corrupted)
    embed = torch.lerp(corrupted_out["embed"], clean_out["embed"], embed_alpha)
    cfg = model.cfg
    saved = (cfg.use_split_qkv_input, cfg.use_hook_mlp_in, cfg.ungroup_grouped_query_attention)
    cfg.use_split_qkv_input, cfg.ungroup_grouped_query_attention = True, True
    cfg.use_hook_mlp_in = not cfg.attn_only
    scores = []
    try:
        for sender, receiver in edges:
            node = graph.receiver(receiver)
            alpha = torch.zeros((), dtype=torch.float64, requires_grad=True)
            delta = corrupted_out[sender] - clean_out[sender]

            def patch(act, hook, node=node, delta=delta, alpha=alpha):
                if node.head is None:
                    return act + alpha * delta
                act = act.clone()
                act[:, :, node.head] = act[:, :, node.head] + alpha * delta
                return act

            hooks = [(node.hook, patch)]
            if embed_alpha != 1.0:
                hooks.insert(0, ("blocks.0.hook_resid_pre", lambda act, hook: embed))
            logits = model.run_with_hooks(clean, fwd_hooks=hooks)
            (grad,) = torch.autograd.grad(metric(logits), alpha)
            scores.append(float(grad))
    finally:
        cfg.use_split_qkv_input, cfg.use_hook_mlp_in, cfg.ungroup_grouped_query_attention = saved
    return scores


def edge_sample(graph: Graph, n: int = 10, seed: int = 0) -> list:
    """One edge into each kind of receiver, then random edges."""
    gen = torch.Generator().manual_seed(seed)
    picked = {}
    for s, r in graph.edges:
        picked.setdefault((graph.sender(s).kind, graph.receiver(r).kind), (s, r))
    rest = torch.randperm(graph.n_edges, generator=gen)[:n].tolist()
    return list(dict.fromkeys([*picked.values(), *[graph.edges[i] for i in rest]]))


def assert_close(actual, expected, rel=REL):
    actual, expected = torch.tensor(actual, dtype=torch.float64), torch.tensor(expected, dtype=torch.float64)
    scale = expected.abs().max().clamp_min(1e-12)
    assert ((actual - expected).abs() <= rel * scale).all(), (actual - expected).abs().max() / scale


@pytest.mark.parametrize("arch", [*ARCHITECTURES, *(f"norm={n}" for n in NORM_VARIANTS)])
def test_eap_equals_brute_force_linearisation(arch):
    model = model_of(arch)
    clean, corrupted = prompt_pairs(model.cfg.d_vocab)
    metric = metric_for(model.cfg.d_vocab)
    result = eap(model, clean, corrupted, metric)
    edges = edge_sample(result.graph)
    assert_close([result.score(e) for e in edges], brute_force_scores(model, clean, corrupted, metric, edges))
    assert not model.cfg.use_split_qkv_input and not model.cfg.use_hook_mlp_in  # flags restored


def test_eap_on_attn_only_2l_equals_brute_force():
    model = attn_only_2l()
    seq = torch.randint(1, model.cfg.d_vocab, (2, 6), generator=torch.Generator().manual_seed(1))
    clean = torch.cat([seq, seq], dim=1)  # repeated random tokens: the induction task
    corrupted = torch.cat([torch.randint(1, model.cfg.d_vocab, (2, 6), generator=torch.Generator().manual_seed(2)),
                           seq], dim=1)
    metric = LogitDiff(correct=seq[:, 0].tolist(), wrong=seq[:, 1].tolist(), pos=5 + 6)
    result = eap(model, clean, corrupted, metric)
    assert len(result) == 81
    edges = edge_sample(result.graph, n=20)
    assert_close([result.score(e) for e in edges], brute_force_scores(model, clean, corrupted, metric, edges))


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_eap_ig_equals_brute_force_average(arch):
    model = model_of(arch)
    clean, corrupted = prompt_pairs(model.cfg.d_vocab)
    metric = Probability(answer=[3, 4, 5], log=True)  # reads the whole vocabulary: the other readout path
    steps = 3
    result = eap_ig(model, clean, corrupted, metric, steps=steps)
    edges = edge_sample(result.graph, n=6)
    per_step = [brute_force_scores(model, clean, corrupted, metric, edges, embed_alpha=k / steps)
                for k in range(1, steps + 1)]
    expected = torch.tensor(per_step).mean(0).tolist()
    assert_close([result.score(e) for e in edges], expected)
    # steps=1 is the clean run itself: EAP
    assert_close(eap_ig(model, clean, corrupted, metric, steps=1).scores, eap(model, clean, corrupted, metric).scores,
                 rel=1e-12)


@pytest.mark.parametrize("arch", ["pythia", "attn_only"])
def test_logit_edges_sum_to_attribution_of_final_residual(arch):
    # The logits read the final residual stream, which is the sum of every sender's output plus constants (b_O,
    # and a shortformer's positions, which never enter it): so the logits' edge scores sum to the change of the
    # final residual stream times the gradient there, which is attribution patching of that site (noising).
    model = model_of(arch)
    clean, corrupted = prompt_pairs(model.cfg.d_vocab)
    metric = metric_for(model.cfg.d_vocab)
    scores = eap(model, clean, corrupted, metric)
    logit_sum = sum(s for (_, r), s in zip(scores.edges, scores.scores) if r == "logits")
    final = attribution(model, clean, corrupted, metric, site="resid_post", by=("layer",), layers=[-1],
                        direction="noising")
    assert logit_sum == pytest.approx(float(final.values[0]) - final.meta["base_value"], rel=1e-9, abs=1e-12)
    assert scores.meta["clean_value"] == pytest.approx(final.meta["base_value"], rel=1e-12)


def test_chunked_equals_whole_batch():
    model = model_of("gpt2")
    clean, corrupted = prompt_pairs(model.cfg.d_vocab, batch=5)
    metric = metric_for(model.cfg.d_vocab, batch=5)
    whole = eap(model, clean, corrupted, metric)
    parts = eap(model, clean, corrupted, metric, max_memory=1)  # one prompt pair per part
    assert whole.meta["prompt_parts"] == 1 and parts.meta["prompt_parts"] == 5
    assert_close(parts.scores, whole.scores, rel=1e-10)
    assert parts.meta["clean_value"] == pytest.approx(whole.meta["clean_value"], rel=1e-12)
    ig_parts = eap_ig(model, clean, corrupted, metric, steps=2, max_memory=1)
    assert_close(ig_parts.scores, eap_ig(model, clean, corrupted, metric, steps=2).scores, rel=1e-10)


def test_plain_callable_metric_and_float32():
    model = random_model("gpt2", seed=4)  # float32, any callable metric: the full-logits path
    clean, corrupted = prompt_pairs(model.cfg.d_vocab)
    declarative = eap(model, clean, corrupted, metric_for(model.cfg.d_vocab))
    plain = eap(model, clean, corrupted, lambda logits: metric_for(model.cfg.d_vocab)(logits))
    assert_close(plain.scores, declarative.scores, rel=1e-4)
    assert plain.metric == "<lambda>" and declarative.metric == "logit_diff"
    with pytest.warns(UserWarning, match="cannot be split"):  # a plain callable must see the whole batch
        whole = eap(model, clean, corrupted, lambda logits: metric_for(model.cfg.d_vocab)(logits), max_memory=1)
    assert whole.meta["prompt_parts"] == 1 and whole.scores == plain.scores
    # a normalised metric is an affine function of the metric: scores scale by 1 / (clean - corrupted)
    normalized = Normalized.fit(metric_for(model.cfg.d_vocab), model, clean, corrupted)
    scaled = eap(model, clean, corrupted, normalized)
    assert_close(scaled.scores, [s / (normalized.clean - normalized.corrupted) for s in declarative.scores], rel=1e-4)


def test_bad_inputs_and_flags_restored():
    model = model_of("llama")
    clean, corrupted = prompt_pairs(model.cfg.d_vocab)
    metric = metric_for(model.cfg.d_vocab)
    with pytest.raises(InputError, match="same number of tokens"):
        eap(model, clean, corrupted[:, :-1], metric)
    with pytest.raises(InputError, match="steps"):
        eap_ig(model, clean, corrupted, metric, steps=0)
    with pytest.raises(InputError, match="not differentiable"):
        eap(model, clean, corrupted, lambda logits: logits.detach()[:, -1, 0].mean())
    model = model_of("gpt2")  # (grouped-query attention cannot use attn_in)
    reference = eap(model, clean, corrupted, metric)
    model.cfg.use_attn_in = True  # a user's own setting: used inside (as off), restored after
    flags = {f: getattr(model.cfg, f) for f in RECEIVER_FLAGS}

    def failing(logits):
        raise RuntimeError("metric failed")

    try:
        with pytest.raises(RuntimeError, match="metric failed"):
            eap(model, clean, corrupted, failing)
        assert_close(eap(model, clean, corrupted, metric).scores, reference.scores, rel=1e-12)
        assert {f: getattr(model.cfg, f) for f in RECEIVER_FLAGS} == flags
    finally:
        model.cfg.use_attn_in = False
