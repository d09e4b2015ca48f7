"""Beyond one process: the same call, its work cut into shards that Ray actors run, each on its own model replica.

An analysis that takes ``executor=`` splits its work into independent shards, runs each shard with the
single-process code on a replica of the model, and gathers the parts into the Result the single-process call
returns. Each analysis owns its split / run-one-shard / gather (a marked section at the end of its own module) and
always goes through an executor, the in-process one by default; the protocol, the in-process executors and the
helpers live in :mod:`circuitlab.engine.executor`, model identity in :mod:`circuitlab.models.identity`. This
package adds Ray (:class:`RayExecutor`, ``pip install 'circuitlab[distributed]'``) and imports no analysis.

=====================================  =========================================  ================================
analysis                               one shard                                  gathered by
=====================================  =========================================  ================================
``patching.sweep``                     a set of layers (interleaved, for balance)  the layer axis, in order
``circuits.patch_edges``               a block of edge sets (masks)               concatenation
``tracing.average_indirect_effect``    a block of facts                           the per-fact table, then the
                                                                                  same average as one process
``probing.collect``                    whole batches of sentences, cut as one     rows put back by sentence
                                       process cuts them
``circuitlab reproduce --all``         findings (finding i to worker i % n)       the list of reproductions
=====================================  =========================================  ================================

Every shard runs the single-process code. Edge patching, causal tracing and activation collection shards run the
very batches one process would, so in one process their parts are equal to the bit; an activation-patching pass
batches patches at several layers, a shard's passes hold fewer, and float32 rounds them differently (a few 1e-6
on logit differences of about 7 in the tests). A Ray worker runs ``cpus_per_worker`` torch threads, which may
round matrix products differently from the caller's thread count: compare with a float tolerance.

``executor`` is ``None`` (one process, the default: one shard, the plain call), ``"ray"`` (a :class:`RayExecutor`
with its defaults, made for the call and closed after it), ``"local"`` (:class:`LocalExecutor`: the shards one
after another in this process, for checking the sharding), or an executor object you keep across calls (its actors
keep their model replicas)::

    with circuitlab.distributed.RayExecutor(workers=4, address="auto") as ex:
        res = circuitlab.patching.sweep("gemma-3-270m", clean, corrupted, metric, executor=ex)

How a replica is loaded and checked: :mod:`circuitlab.distributed.ray`.
"""

from circuitlab.distributed.adapters import collect
from circuitlab.distributed.ray import RayExecutor
from circuitlab.engine.executor import (Executor, InProcessExecutor, LocalExecutor, ShardError, as_executor,
                                        describe_shard, move_tensors, register_executor, run_shards, shard_count,
                                        split)
from circuitlab.models.identity import ModelSource, device_of, model_source, weight_fingerprint, worker_device

#: the former name of :func:`circuitlab.models.identity.weight_fingerprint`
exact_fingerprint = weight_fingerprint

__all__ = ["Executor", "InProcessExecutor", "LocalExecutor", "ModelSource", "RayExecutor", "ShardError",
           "as_executor", "collect", "describe_shard", "device_of", "exact_fingerprint", "model_source",
           "move_tensors", "register_executor", "run_shards", "shard_count", "split", "weight_fingerprint",
           "worker_device"]
