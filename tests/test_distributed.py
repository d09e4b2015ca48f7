"""circuitlab.distributed: sharded analyses equal the single-process call.

The reference is always the same analysis run in one process (``executor=None``). The sharded path is checked
twice: with :class:`LocalExecutor` (the same shards, one after another, no Ray: cheap, every analysis) and on a
local Ray instance with two workers (``num_cpus=2``), started once for the module and shut down at its end.

In one process the shards of edge patching, causal tracing and activation collection run the very batches of the
single-process call, so they must be equal to the bit (``torch.equal``). An activation-patching pass batches
patches at several layers together; a shard's passes hold fewer of them and round differently (float32, a few
1e-6 on logit differences of about 7), so sweeps are compared within :data:`ATOL`, as is everything on Ray, whose
workers run one torch thread where this process runs two.
"""

from __future__ import annotations

import copy
import sys

import pytest
import torch

import circuitlab as cl
from circuitlab import circuits, distributed, patching, probing, tracing
from circuitlab.errors import CircuitlabError, InputError
from circuitlab.metrics import LogitDiff
from circuitlab.models import identity
from circuitlab.tasks.toy_world import load_world
from circuitlab.tasks.factual import toy_facts
from circuitlab.zoo import toy_lm

TOY = "zoo/toy-lm"
CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPTED = "When Mary and John went to the store, Mary gave a drink to"
LD = LogitDiff(" Mary", " John")
#: float32 rounding of the same arithmetic grouped differently (see the module docstring)
ATOL = 2e-5
#: max_memory for edge patching: a few masks per pass, so the 16 masks take several passes
MASKS_MEMORY = 2**21


@pytest.fixture(scope="module")
def model():
    return cl.load_model(TOY)


@pytest.fixture(scope="module")
def facts():
    return toy_facts(load_world(toy_lm.zoo_dir()))[:3]


@pytest.fixture(scope="module")
def masks(model):
    g = circuits.Graph.from_model(model)
    gen = torch.Generator().manual_seed(0)
    return torch.rand(16, len(g.edges), generator=gen) < 0.3


def _same_result(a, b, atol: float = 0.0) -> None:
    assert a.axes == b.axes and a.labels == b.labels
    assert a.values.isnan().equal(b.values.isnan())
    assert torch.allclose(a.values.nan_to_num(), b.values.nan_to_num(), rtol=0, atol=atol)


# -- the shards, in one process --------------------------------------------------------------------------------

def test_sharded_sweep_equals_one_process(model):
    ex = distributed.LocalExecutor(workers=3)
    for site, by in (("z", ("head", "layer")),):
        one = patching.sweep(model, CLEAN, CORRUPTED, LD, site, by, progress=False)
        sharded = patching.sweep(model, CLEAN, CORRUPTED, LD, site, by, progress=False, executor=ex)
        _same_result(one, sharded, ATOL)
        assert sharded.meta["executor"]["shards"] == 3
    layers = [3, 1]  # an order of the caller's: kept
    one = patching.sweep(model, CLEAN, CORRUPTED, LD, "mlp_out", ("layer",), layers=layers, progress=False)
    sharded = patching.sweep(model, CLEAN, CORRUPTED, LD, "mlp_out", ("layer",), layers=layers, progress=False,
                             executor=distributed.LocalExecutor(workers=2))
    _same_result(one, sharded, ATOL)


def test_sharded_edge_patching_runs_the_same_passes(model, masks):
    # a small max_memory makes many passes, cut differently than an even split of the masks would be
    one = circuits.patch_edges(model, CLEAN, CORRUPTED, masks, max_memory=MASKS_MEMORY)
    sharded = circuits.patch_edges(model, CLEAN, CORRUPTED, masks, max_memory=MASKS_MEMORY,
                                   executor=distributed.LocalExecutor(workers=3))
    assert len(circuits.patch._plan_passes(model, CLEAN, CORRUPTED, masks, max_memory=MASKS_MEMORY)) > 3
    assert torch.equal(one, sharded)


def test_sharded_edge_patching_equals_one_edge_at_a_time_by_hooks(model):
    # the reference: each edge patched alone with plain TransformerLens hooks, one forward pass per edge set
    from circuitlab.circuits.reference import edge_patched_value
    from circuitlab.core import to_tokens
    from circuitlab.metrics import bind_metric

    graph = circuits.Graph.from_model(model)
    edges = list(graph.edges)
    chosen = edges[::max(1, len(edges) // 7)][:7]  # edges into heads' q/k/v, MLPs and the logits
    clean, corrupted = to_tokens(model, CLEAN), to_tokens(model, CORRUPTED)
    metric = bind_metric(LD, model)
    with torch.no_grad():
        expected = torch.tensor([edge_patched_value(model, graph, clean, corrupted, metric, e) for e in chosen],
                                dtype=torch.float64)
        clean_value = float(metric(model(clean)))
    sharded = circuits.patch_edges(model, CLEAN, CORRUPTED, [[e] for e in chosen], LD, max_memory=MASKS_MEMORY,
                                   executor=distributed.LocalExecutor(workers=3))
    assert sharded.shape == (len(chosen),) and sharded.dtype == torch.float64
    torch.testing.assert_close(sharded, expected, rtol=0, atol=1e-4)  # float32 arithmetic grouped differently
    assert (expected - clean_value).abs().max() > 1e-3  # the edges matter: not the clean value everywhere


def test_no_edge_sets_give_no_values(model):
    n_edges = len(circuits.Graph.from_model(model).edges)
    for removed in ([], torch.zeros(0, n_edges, dtype=torch.bool)):
        for executor in (None, distributed.LocalExecutor(workers=2)):
            values = circuits.patch_edges(model, CLEAN, CORRUPTED, removed, executor=executor)
            assert values.shape == (0,) and values.dtype == torch.float64


def test_sharded_causal_tracing_averages_the_same_table(model, facts):
    kw = dict(samples=2, window=1, progress=False)
    one = tracing.average_indirect_effect(model, facts, **kw)
    sharded = tracing.average_indirect_effect(model, facts, executor=distributed.LocalExecutor(workers=2), **kw)
    _same_result(one, sharded)
    assert torch.equal(one.meta["per_fact"].nan_to_num(-7.0), sharded.meta["per_fact"].nan_to_num(-7.0))
    assert one.meta["facts"] == sharded.meta["facts"]


def test_sharded_collection_puts_rows_back_by_sentence(model):
    sentences = probing.template_sentences(30, seed=3)
    one = probing.collect(model, sentences, cache=False, progress=False, batch_size=4)
    sharded = probing.collect(model, sentences, cache=False, progress=False, batch_size=4,
                              executor=distributed.LocalExecutor(workers=3))
    assert one.hooks == sharded.hooks
    for h in one.hooks:
        assert torch.equal(one[h], sharded[h])
    assert torch.equal(one.sentence, sharded.sentence) and torch.equal(one.word, sharded.word)


# -- the in-process default: one shard, the plain call ---------------------------------------------------------

def test_the_default_executor_is_the_plain_call(model, masks, facts):
    from circuitlab.circuits.patch import EdgePatcher
    from circuitlab.core import to_tokens
    from circuitlab.patching.exact import _sweep_shard
    from circuitlab.tracing import _trace_facts, as_fact

    # the default runs every shard on the caller's very model and tensors: nothing loaded, nothing copied
    tokens = torch.tensor([[1, 2, 3]])
    seen = distributed.run_shards(None, model, lambda m, t: (m, t), [dict(t=tokens)])[0][0]
    assert seen[0] is model and seen[1] is tokens
    by_name = distributed.model_source(TOY, loaded=model)
    assert distributed.InProcessExecutor().map(by_name, lambda m: m, [{}])[0] is model
    assert distributed.InProcessExecutor().workers == 1 and distributed.shard_count(None, 12) == 1

    # sweep: equal to the bit to the unsharded code, the same labels and meta, no executor record
    kw = dict(site="z", by=("layer", "head"), layers=[-1, 0], progress=False)
    default = patching.sweep(model, CLEAN, CORRUPTED, LD, **kw)
    plain = _sweep_shard(model, CLEAN, CORRUPTED, LD, **kw)
    assert torch.equal(default.values, plain.values) and default.labels == plain.labels
    assert {k: v for k, v in default.meta.items() if k != "seconds"} == \
           {k: v for k, v in plain.meta.items() if k != "seconds"}
    assert "executor" not in default.meta and default.meta["layers"] == [3, 0]

    # edge patching: equal to the bit to the engine's own batched passes
    clean, corrupted = to_tokens(model, CLEAN), to_tokens(model, CORRUPTED)
    patcher = EdgePatcher(model, clean, corrupted, [LD], max_memory=MASKS_MEMORY)
    assert torch.equal(circuits.patch_edges(model, CLEAN, CORRUPTED, masks, LD, max_memory=MASKS_MEMORY),
                       patcher.run(patcher.as_masks(masks))[:, 0])

    # causal tracing: the per-fact table of every fact traced in order, the same average and no executor record
    kw = dict(samples=2, window=1, progress=False)
    default = tracing.average_indirect_effect(model, facts, **kw)
    triples = [as_fact(f, i) for i, f in enumerate(facts)]
    per_fact, rows, _ = _trace_facts(model, triples, kinds=default.labels["kind"], window=1, noise=3.0,
                                     sigma=default.meta["sigma"], samples=2, seed=0,
                                     max_memory=cl.core.DEFAULT_MAX_MEMORY, progress=False)
    assert torch.equal(default.meta["per_fact"].nan_to_num(-7.0), per_fact.nan_to_num(-7.0))
    assert default.meta["facts"] == rows and "executor" not in default.meta
    assert torch.equal(default.values.nan_to_num(-7.0), per_fact.nanmean(0).nan_to_num(-7.0))


def test_the_execution_layer_imports_no_analysis():
    import subprocess

    code = ("import sys, circuitlab.distributed, circuitlab.engine.executor; "
            "print(' '.join(sorted(m for m in sys.modules if m == 'ray' or m.startswith('circuitlab.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert "circuitlab.distributed.ray" in out and "circuitlab.engine.executor" in out
    rooms = ("induction", "patching", "circuits", "tracing", "attribution", "ffn", "probing", "neurons", "concepts",
             "reproduce", "render", "commands", "cli")
    assert [m for m in out if m.split(".")[-1 if m.count(".") == 1 else 1] in rooms] == []
    assert "ray" not in out  # Ray itself is imported when a RayExecutor starts


def test_split_covers_every_item_once():
    for n_items in (1, 5, 12):
        for n in (1, 2, 5, 20):
            for interleave in (False, True):
                parts = distributed.split(range(n_items), n, interleave)
                assert sorted(x for p in parts for x in p) == list(range(n_items))
                assert all(parts) and len(parts) == min(n, n_items)


# -- errors ----------------------------------------------------------------------------------------------------

def test_missing_ray_names_the_extra(monkeypatch, model):
    monkeypatch.setitem(sys.modules, "ray", None)  # "import ray" raises ImportError
    with pytest.raises(CircuitlabError, match=r"circuitlab\[distributed\]"):
        patching.sweep(model, CLEAN, CORRUPTED, LD, "resid_pre", progress=False, executor="ray")


def test_a_bad_executor_is_named(model):
    for bad in ("dask", 3):
        with pytest.raises(InputError, match="executor"):
            patching.sweep(model, CLEAN, CORRUPTED, LD, "resid_pre", progress=False, executor=bad)


def test_a_changed_model_must_be_saved_first(model, tmp_path):
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.blocks[1].mlp.W_in[3, 4] += 1.0  # one weight: a sum or a sample might miss it, the hash does not
    source = distributed.model_source(changed)
    assert source.spec == TOY
    with pytest.raises(CircuitlabError, match="save_model"):
        source.load()
    cl.save_model(changed, tmp_path)
    again = distributed.ModelSource(str(tmp_path), distributed.exact_fingerprint(changed)).load()
    assert distributed.exact_fingerprint(again) == source.fingerprint


def test_a_model_built_in_memory_must_be_saved_first(model):
    from transformer_lens import HookedTransformer

    from circuitlab.testing import architecture_config

    cfg = architecture_config("gpt2")
    cfg.model_name = "custom"  # TransformerLens's name for a model built from a config
    built = HookedTransformer(cfg)
    for name in ("custom", "random-gpt2", "zoo/no-such-model"):
        built.cfg.model_name = name
        with pytest.raises(InputError, match=rf"model: a model named '{name}'.*save_model\(model, DIR\)"):
            distributed.model_source(built)
    # before any Ray instance starts (with or without Ray installed)
    with pytest.raises(InputError, match="save_model"):
        distributed.run_shards(distributed.RayExecutor(workers=1), built, _divide, [dict(x=1)])
    # names a worker can load: a zoo name (the fixture), and a TransformerLens pretrained name (resolved offline)
    assert distributed.model_source(model).spec == TOY
    built.cfg.model_name = "gpt2"
    assert distributed.model_source(built).spec == "gpt2"


def test_a_model_given_by_name_carries_its_loaded_device(model):
    source = distributed.model_source(TOY, loaded=model)
    assert (source.spec, source.device, source.fingerprint) == (TOY, "cpu", None)
    # an executor that keeps replicas compares them with the loaded model's weights
    assert identity.replica_source(source).fingerprint == distributed.weight_fingerprint(model)
    assert distributed.model_source(model).device == "cpu"
    on_meta = copy.deepcopy(model).to("meta")  # a device other than "cpu" that exists on every machine
    assert distributed.device_of(on_meta) == "meta"
    # a worker sees its GPUs numbered from 0: a caller's cuda:1 is a worker's "cuda"
    assert [distributed.worker_device(d) for d in ("cuda:1", "cuda:0", "cuda", "cpu", None)] == \
           ["cuda", "cuda", "cuda", "cpu", None]


def test_tensors_are_moved_inside_nested_arguments_and_metrics(model):
    from collections import namedtuple

    from circuitlab.metrics import KLDivergence, Normalized
    from circuitlab.results import Result

    Pair = namedtuple("Pair", "clean corrupted")
    tokens = torch.tensor([[1, 2, 3]])
    metric = LogitDiff(torch.tensor([5]), torch.tensor([6]), model=model)
    args = {"tokens": tokens, "nested": [tokens, (tokens, "text", 3)], "pair": Pair(tokens, tokens),
            "metric": metric, "normalized": Normalized(metric, 1.0, 0.0), "kl": KLDivergence(torch.randn(1, 10)),
            "result": Result(torch.zeros(2), ("layer",), meta={"per_prompt": torch.ones(3)}), "dtype": torch.float32}

    def tensors(x):
        if isinstance(x, torch.Tensor):
            return [x]
        if isinstance(x, dict):
            return [t for v in x.values() for t in tensors(v)]
        if isinstance(x, (list, tuple)):
            return [t for v in x for t in tensors(v)]
        if hasattr(x, "__dict__") and not isinstance(x, torch.nn.Module):
            return tensors(vars(x))
        return []

    n = len(tensors(args))
    assert n == 16  # KLDivergence keeps its reference and four float64 reads of it (log p, p, sum p log p, sum p)
    # "meta" stands in for a GPU: every tensor moves, however deep, and the arguments themselves are unchanged
    moved = distributed.move_tensors(args, "meta", drop_models=True)
    assert len(tensors(moved)) == n and all(t.device.type == "meta" for t in tensors(moved))
    assert all(t.device.type == "cpu" for t in tensors(args))
    assert moved["nested"][1][1:] == ("text", 3) and isinstance(moved["pair"], Pair)
    assert moved["dtype"] is torch.float32 and moved["result"].axes == ("layer",)
    # the metric's copies hold no model (an analysis binds the metric to the replica); the caller's keeps its own
    assert moved["metric"].model is None and moved["normalized"].metric.model is None and metric.model is model
    assert moved["normalized"].clean == 1.0
    # nothing to move: the very same object comes back (nothing is copied)
    assert distributed.move_tensors(args, "cpu") is args


def test_a_failing_shard_is_named(model):
    with pytest.raises(distributed.ShardError, match=r"shard 1 of 2 \(x=2\).*ZeroDivisionError"):
        distributed.run_shards(distributed.LocalExecutor(), model, _divide, [dict(x=1), dict(x=2)])


def _divide(model, x):
    if x == 2:
        return 1 / 0
    return x


# -- Ray: two workers on a local instance ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def ray_executor():
    pytest.importorskip("ray", reason="Ray is the optional extra circuitlab[distributed]")
    ex = distributed.RayExecutor(workers=2, init={"num_cpus": 2})
    yield ex
    ex.close()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ray_workers_give_the_single_process_numbers(model, facts, masks, ray_executor):
    one = patching.sweep(model, CLEAN, CORRUPTED, LD, "z", ("layer", "head"), progress=False)
    on_ray = patching.sweep(model, CLEAN, CORRUPTED, LD, "z", ("layer", "head"), progress=False,
                            executor=ray_executor)
    _same_result(one, on_ray, ATOL)
    rec = on_ray.meta["executor"]
    assert rec["kind"] == "RayExecutor" and rec["workers"] == 2 and rec["shards"] == 2

    # the same replicas serve the model given by name, and every other sharded analysis
    assert torch.allclose(circuits.patch_edges(model, CLEAN, CORRUPTED, masks, max_memory=MASKS_MEMORY),
                          circuits.patch_edges(TOY, CLEAN, CORRUPTED, masks, max_memory=MASKS_MEMORY,
                                               executor=ray_executor),
                          rtol=0, atol=ATOL)
    kw = dict(samples=2, window=1, progress=False)
    _same_result(tracing.average_indirect_effect(model, facts, **kw),
                 tracing.average_indirect_effect(model, facts, executor=ray_executor, **kw), ATOL)
    sentences = probing.template_sentences(30, seed=3)
    one = probing.collect(model, sentences, cache=False, progress=False, batch_size=4)
    on_ray = probing.collect(model, sentences, cache=False, progress=False, batch_size=4, executor=ray_executor)
    assert all(torch.allclose(one[h], on_ray[h], rtol=0, atol=ATOL) for h in one.hooks)
    from circuitlab.reproduce.registry import run_many

    local = run_many(CHEAP[:1])[0]
    remote = run_many(CHEAP[:1], executor=ray_executor)[0]  # a task with no model runs on the same actors
    assert (remote.verdict, remote.measurement.figures) == (local.verdict, local.measurement.figures)
    startups = ray_executor.startup_seconds

    # a worker's error comes back naming its shard
    def divide(model, x):  # defined here, so that Ray sends it by value (workers cannot import the tests)
        return x if x == 1 else 1 / 0

    with pytest.raises(distributed.ShardError, match=r"shard 1 of 2 \(x=2\).*ZeroDivisionError"):
        distributed.run_shards(ray_executor, model, divide, [dict(x=1), dict(x=2)])
    assert ray_executor.startup_seconds == startups  # no replica was reloaded along the way


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_ray_workers_that_do_not_fit_are_refused_and_a_stuck_start_ends(ray_executor):
    def echo(model, x):  # defined here, so that Ray sends it by value
        return x

    # the fixture's two workers hold the local instance's 2 CPUs
    assert distributed.run_shards(ray_executor, None, echo, [dict(x=1), dict(x=2)])[0] == [1, 2]
    # more than the cluster has: refused before any actor starts (Ray would wait for them forever)
    with pytest.raises(InputError, match=r"RayExecutor\(workers=3, cpus_per_worker=1, gpus_per_worker=0\) asks for "
                                         r"3 CPUs and 0 GPUs, but the Ray cluster has 2 CPUs and 0 GPUs on 1 node: "
                                         r"room for 2 such workers"):
        distributed.run_shards(distributed.RayExecutor(workers=3), None, echo, [dict(x=1)])
    with pytest.raises(InputError, match=r"gpus_per_worker=1\).*has 2 CPUs and 0 GPUs.*room for 0 such workers"):
        distributed.run_shards(distributed.RayExecutor(workers=1, gpus_per_worker=1), None, echo, [dict(x=1)])
    # a worker that fits the cluster but not what is free now: a bounded wait, then its name
    stuck = distributed.RayExecutor(workers=1, start_timeout=1)
    with pytest.raises(distributed.ShardError, match=r"worker 0 of 1 \(no model; 1 CPU and 0 GPU each\) did not "
                                                     r"start within start_timeout=1 s.*0 CPUs and 0 GPUs free now"):
        distributed.run_shards(stuck, None, echo, [dict(x=1)])
    stuck.close()
    assert distributed.run_shards(ray_executor, None, echo, [dict(x=3)])[0] == [3]  # the fixture's workers serve


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ray_replicas_follow_the_callers_weights(model, masks, ray_executor, tmp_path):
    """Replicas loaded for one version of the weights must not go on computing on them: after a directory is
    saved again with other weights, edge patching on the workers equals one process on the new weights; a model
    object changed through ``.data`` in place (no version counter moves) is compared byte for byte, and refused
    (its name loads other weights)."""
    changed = copy.deepcopy(model)
    with torch.no_grad():
        for b in changed.blocks:
            b.mlp.W_in.mul_(-1.0)
    cl.save_model(model, tmp_path)
    circuits.patch_edges(str(tmp_path), CLEAN, CORRUPTED, masks[:4], executor=ray_executor)
    cl.save_model(changed, tmp_path)
    on_ray = circuits.patch_edges(str(tmp_path), CLEAN, CORRUPTED, masks[:4], executor=ray_executor)
    assert torch.allclose(on_ray, circuits.patch_edges(changed, CLEAN, CORRUPTED, masks[:4]), rtol=0, atol=ATOL)
    loaded = cl.load_model(tmp_path)
    circuits.patch_edges(loaded, CLEAN, CORRUPTED, masks[:4], executor=ray_executor)
    W = loaded.blocks[0].mlp.W_in
    W.data[:, [0, 1]] = W.data[:, [1, 0]]
    with pytest.raises(CircuitlabError, match="save_model"):
        circuits.patch_edges(loaded, CLEAN, CORRUPTED, masks[:4], executor=ray_executor)


# -- bfloat16 --------------------------------------------------------------------------------------------------

#: bf16 sweep vs float32, largest |difference| over largest |value|: measured 0.041 (z by layer and head, toy-lm,
#: 1 and 2 threads); the bound leaves 2x headroom for other thread counts and CPUs
BF16_REL_TOL = 0.08


def test_a_bfloat16_sweep_is_close_to_float32(model):
    half = copy.deepcopy(model).to(torch.bfloat16)
    assert half.cfg.dtype == torch.bfloat16 and half.W_Q.dtype == torch.bfloat16
    full = patching.sweep(model, CLEAN, CORRUPTED, LD, "z", ("layer", "head"), progress=False)
    low = patching.sweep(half, CLEAN, CORRUPTED, LD, "z", ("layer", "head"), progress=False)
    assert low.axes == full.axes and low.labels == full.labels and low.values.isfinite().all()
    rel = float((low.values.float() - full.values).abs().max() / full.values.abs().max())
    # bf16 rounds (8 significant bits), so the values differ; they stay within the stated tolerance
    assert 1e-4 < rel < BF16_REL_TOL, rel


# -- reproduce --all -------------------------------------------------------------------------------------------

CHEAP = ["induction-heads-need-two-layers", "induction-reads-previous-token-heads"]


def test_findings_as_shards_give_the_same_reproductions():
    from circuitlab.reproduce.registry import run_many

    one = run_many(CHEAP)
    sharded = run_many(CHEAP, executor=distributed.LocalExecutor(workers=2))
    assert [r.finding.id for r in sharded] == CHEAP
    assert [(r.verdict, r.measurement.figures, r.model) for r in one] == \
           [(r.verdict, r.measurement.figures, r.model) for r in sharded]


def test_the_reproduce_command_shares_out_only_all(capsys):
    from circuitlab.cli import main

    assert main(["reproduce", CHEAP[0], "--executor", "local"]) != 0
    assert "--executor shares out the findings of --all" in capsys.readouterr().err


# -- one model over several devices ----------------------------------------------------------------------------

def test_transformer_lens_block_split_on_cpu_gives_the_same_numbers(model):
    # What this checks, and no more: cfg.n_devices=2 on a machine without GPUs runs through the engines and gives
    # the same numbers. On CPU, TransformerLens puts every block on "cpu" whatever n_devices says, so the model is
    # not split at all: no test here runs blocks on two devices (that needs two GPUs)
    split_model = copy.deepcopy(model)
    split_model.cfg.n_devices = 2
    one = patching.sweep(model, CLEAN, CORRUPTED, LD, "resid_pre", progress=False)
    _same_result(one, patching.sweep(split_model, CLEAN, CORRUPTED, LD, "resid_pre", progress=False))
    a, b = circuits.eap(model, CLEAN, CORRUPTED, LD), circuits.eap(split_model, CLEAN, CORRUPTED, LD)
    assert a.edges == b.edges and a.scores == b.scores


def test_parameters_on_two_devices_are_named(model):
    split_model = copy.deepcopy(model)
    split_model.blocks[2].to("meta")  # a second device that exists on every machine
    with pytest.raises(CircuitlabError, match=r"2 devices \(cpu: .*meta: blocks\.2\..*model\.to\(device\)"):
        patching.sweep(split_model, CLEAN, CORRUPTED, LD, "resid_pre", progress=False)


def test_a_model_loaded_from_a_directory_is_reloaded_from_it(model, tmp_path):
    cl.save_model(model, tmp_path / "saved")
    loaded = cl.load_model(tmp_path / "saved")
    source = distributed.model_source(loaded)
    assert source.spec == str((tmp_path / "saved").resolve())
    assert distributed.exact_fingerprint(source.load()) == source.fingerprint
