"""The computational graph of a transformer, at the granularity of ACDC and auto-circuit.

The residual stream is a sum: the embedding, plus each attention head's output, plus each MLP's output (plus
constants). Every component reads that sum. So the model is a graph whose **senders** write into the stream
and whose **receivers** read from it, with one edge per (sender, receiver) pair where the sender comes first::

    senders (what writes)                          receivers (what reads)
    ----------------------------------------       ---------------------------------------------------------
    embed    blocks.0.hook_resid_pre               L{l}H{h}.q / .k / .v   head h's query / key / value input:
             (token + positional embedding)                 the residual stream at blocks.{l}.hook_q_input etc.
    L{l}H{h} head h's own output z_h @ W_O[h]                (before the head's LayerNorm)
             (from blocks.{l}.attn.hook_z)         MLP{l}   blocks.{l}.hook_mlp_in (before ln2)
    MLP{l}   blocks.{l}.hook_mlp_out               logits   the final residual stream (before ln_final)

Heads are spelled as everywhere in circuitlab (:func:`circuitlab.core.head_label`): ``L1H3``; a head's inputs
add ``.q``, ``.k`` or ``.v``. An MLP's output and input share the name ``MLP0`` (one is a sender, one a
receiver; an edge says which). Edges go from earlier to later layers: the heads of layer ``l`` read the
embedding and every head and MLP of layers ``< l``; MLP ``l`` also reads the heads of its own layer, except in
models with parallel attention and MLP (``cfg.parallel_attn_mlp``, GPT-J and Pythia), where both read the same
``resid_pre``; the logits read everything. Attention-only models have no MLP nodes.

**What is not a node, and why that is exact.** The attention output bias ``b_O`` is added once per layer, after
the heads' outputs are summed: it belongs to no head. It is a constant (the same on every input), so patching
it from one run into another changes nothing, and it needs no edge: like auto-circuit (whose head senders are
TransformerLens's ``hook_result``, which excludes ``b_O``), we leave it in the residual stream as a constant.
The same holds for a shortformer model's positional embedding (added to queries and keys, not to the residual
stream, so ``embed`` there is the token embedding alone) and, for a prompt pair of equal length, for the
positional embedding of other models (inside ``embed``, and identical in both runs). An MLP's output bias is
inside the MLP's output, as in ``hook_mlp_out``.

**Grouped-query attention** (several query heads sharing one key/value head): each query head still has its
own ``.k`` and ``.v`` receivers, the inputs it would read with its key and value weights ungrouped
(``cfg.ungroup_grouped_query_attention``, which TransformerLens computes identically). This keeps one graph
shape for every model, as in auto-circuit.

Edge counts match auto-circuit's: 81 for ``zoo/attn-only-2l`` (2 layers of 4 heads), 32,491 for GPT-2 small. Its
node names map one to one: ``Resid Start`` = ``embed``, ``A1.2`` = ``L1H2``, ``A1.2.Q`` = ``L1H2.q``, ``MLP 0`` =
``MLP0``, ``Resid End`` = ``logits``.

Supported: any ``HookedTransformer`` whose blocks are TransformerLens's ``TransformerBlock`` with standard or
grouped-query attention and causal masking, where each sub-layer's output is added to the residual stream as
it is (so one head's share of it is exactly its own ``z_h @ W_O[h]``). Anything else is refused by
:meth:`Graph.from_model` with the reason.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence

import torch
from jaxtyping import Bool
from torch import Tensor

from circuitlab.core import head_label, shorten
from circuitlab.errors import InputError

Edge = tuple[str, str]  # (sender name, receiver name)

#: the classes of TransformerLens whose per-head split the graph knows to be exact
SUPPORTED_BLOCKS = ("TransformerBlock",)
SUPPORTED_ATTENTION = ("Attention", "GroupedQueryAttention")


@dataclass(frozen=True)
class Node:
    """One sender or receiver of the graph.

    Attributes:
        name: ``"embed"``, ``"L1H3"``, ``"MLP0"`` (senders); ``"L1H3.q"``, ``"MLP0"``, ``"logits"`` (receivers).
        kind: ``"embed" | "head" | "mlp"`` for senders; ``"q" | "k" | "v" | "mlp" | "logits"`` for receivers.
        layer: the block it belongs to; ``-1`` for the embedding, ``n_layers`` for the logits.
        head: the head index, for heads and their inputs; else ``None``.
        hook: the TransformerLens hook where it is written (senders) or read (receivers).
    """

    name: str
    kind: str
    layer: int
    head: Optional[int]
    hook: str

    @property
    def component(self) -> str:
        """The model component this node belongs to: ``"L1H3"`` for ``"L1H3.q"``, else its own name."""
        return self.name.split(".")[0]


class Graph:
    """Senders, receivers and edges of a model's residual-stream graph (see the module docstring).

    Depends only on four numbers of the model's config, so a graph can be rebuilt from a saved circuit without
    the model: ``Graph(n_layers, n_heads, attn_only=..., parallel_attn_mlp=...)``. From a model, use
    :meth:`from_model`, which also checks that the model's architecture is one the graph describes exactly.

    Senders are ordered as the forward pass computes them (embed, then per layer its heads and its MLP), and so
    are receivers (per layer each head's q, k, v, then the MLP; the logits last). Because of that order, the
    senders feeding a receiver are always the first ``upstream[r]`` senders.

    Attributes:
        senders, receivers: the nodes, in forward order.
        edges: every ``(sender, receiver)`` pair, receiver by receiver (each receiver's senders in order).
        mask: ``[n_senders, n_receivers]``, true where an edge exists.
    """

    def __init__(self, n_layers: int, n_heads: int, *, attn_only: bool = False, parallel_attn_mlp: bool = False,
                 model: str = ""):
        for name, value in (("n_layers", n_layers), ("n_heads", n_heads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"a graph needs {name} >= 1 (an int); got {shorten(value)}.")
        self.n_layers, self.n_heads = n_layers, n_heads
        self.attn_only, self.parallel_attn_mlp = bool(attn_only), bool(parallel_attn_mlp)
        self.model = model

        senders = [Node("embed", "embed", -1, None, "blocks.0.hook_resid_pre")]
        receivers: list[Node] = []
        upstream: list[int] = []
        for layer in range(n_layers):
            before_layer = len(senders)  # the heads of this layer read everything written so far
            for head in range(n_heads):
                for letter in "qkv":
                    receivers.append(Node(f"{head_label((layer, head))}.{letter}", letter, layer, head,
                                          f"blocks.{layer}.hook_{letter}_input"))
                    upstream.append(before_layer)
            for head in range(n_heads):
                senders.append(Node(head_label((layer, head)), "head", layer, head, f"blocks.{layer}.attn.hook_z"))
            if not self.attn_only:
                receivers.append(Node(f"MLP{layer}", "mlp", layer, None, f"blocks.{layer}.hook_mlp_in"))
                upstream.append(before_layer if self.parallel_attn_mlp else len(senders))
                senders.append(Node(f"MLP{layer}", "mlp", layer, None, f"blocks.{layer}.hook_mlp_out"))
        receivers.append(Node("logits", "logits", n_layers, None, f"blocks.{n_layers - 1}.hook_resid_post"))
        upstream.append(len(senders))

        self.senders: tuple[Node, ...] = tuple(senders)
        self.receivers: tuple[Node, ...] = tuple(receivers)
        self.upstream: tuple[int, ...] = tuple(upstream)
        self.sender_index = {n.name: i for i, n in enumerate(self.senders)}
        self.receiver_index = {n.name: i for i, n in enumerate(self.receivers)}
        self.edges: tuple[Edge, ...] = tuple((self.senders[s].name, r.name)
                                             for r, n_up in zip(self.receivers, self.upstream) for s in range(n_up))
        self.edge_index = {e: i for i, e in enumerate(self.edges)}

    # -- construction from a model ------------------------------------------------------------------------------
    @classmethod
    def from_model(cls, model: Any) -> "Graph":
        """The graph of ``model`` (a ``HookedTransformer``, or a name :func:`circuitlab.load_model` knows).

        Raises :class:`~circuitlab.errors.InputError` naming what is unsupported when the graph cannot describe the
        model exactly (see :func:`unsupported`).
        """
        from circuitlab.core import as_model, model_name

        if isinstance(model, str):
            model = as_model(model)
        why = unsupported(model)
        if why:
            raise InputError(f"the circuit graph does not support this model: {why}")
        cfg = model.cfg
        return cls(cfg.n_layers, cfg.n_heads, attn_only=cfg.attn_only, parallel_attn_mlp=cfg.parallel_attn_mlp,
                   model=model_name(model))

    # -- sizes and lookups --------------------------------------------------------------------------------------
    @property
    def n_edges(self) -> int:
        return len(self.edges)

    def __len__(self) -> int:
        return len(self.edges)

    def __iter__(self) -> Iterator[Edge]:
        return iter(self.edges)

    def __contains__(self, edge: object) -> bool:
        return edge in self.edge_index

    @property
    def mask(self) -> Bool[Tensor, "sender receiver"]:
        return torch.arange(len(self.senders))[:, None] < torch.tensor(self.upstream)[None, :]

    @property
    def components(self) -> list[str]:
        """Every component's name, in forward order: ``embed``, the heads and MLPs, ``logits``."""
        return [n.name for n in self.senders] + ["logits"]

    def sender(self, name: str) -> Node:
        if name not in self.sender_index:
            raise InputError(f"{shorten(name)} is not a sender of this graph ({self.describe()}); senders are 'embed', "
                             f"heads like "
                             f"{shorten(head_label((0, 0)))}{' and MLPs like MLP0' if not self.attn_only else ''}.")
        return self.senders[self.sender_index[name]]

    def receiver(self, name: str) -> Node:
        if name not in self.receiver_index:
            raise InputError(f"{shorten(name)} is not a receiver of this graph ({self.describe()}); receivers are head "
                             f"inputs like {head_label((0, 0))}.q / .k / .v"
                             f"{', MLPs like MLP0' if not self.attn_only else ''} and 'logits'.")
        return self.receivers[self.receiver_index[name]]

    def senders_of(self, receiver: str) -> list[str]:
        """The senders ``receiver`` reads, in forward order (its incoming edges' senders)."""
        r = self.receiver_index[self.receiver(receiver).name]
        return [n.name for n in self.senders[:self.upstream[r]]]

    def inputs_of(self, component: str) -> list[str]:
        """A component's receivers: a head's ``.q``, ``.k``, ``.v``; an MLP's input; ``logits``; none for ``embed``."""
        if component not in self.components:
            raise InputError(f"{shorten(component)} is not a component of this graph ({self.describe()}).")
        return [n.name for n in self.receivers if n.component == component]

    def check_edge(self, edge: Edge) -> Edge:
        """``edge`` as a ``(sender, receiver)`` pair of this graph, or an error saying why it is not one."""
        sender, receiver = parse_edge(edge)
        s, r = self.sender(sender), self.receiver(receiver)
        if (sender, receiver) not in self.edge_index:
            raise InputError(
                f"there is no edge {sender} -> {receiver}: {receiver} reads only what is written before it "
                f"(sender layer {s.layer} is not before receiver layer {r.layer}"
                f"{' in a model with parallel attention and MLP' if self.parallel_attn_mlp and r.kind == 'mlp' else ''}"
                ")."
            )
        return sender, receiver

    # -- identity -----------------------------------------------------------------------------------------------
    def spec(self) -> dict:
        """What determines this graph (enough to rebuild it), plus its size: for saving circuits."""
        return {"n_layers": self.n_layers, "n_heads": self.n_heads, "attn_only": self.attn_only,
                "parallel_attn_mlp": self.parallel_attn_mlp, "n_edges": self.n_edges}

    def same_shape(self, other: "Graph") -> bool:
        return self.spec() == other.spec()

    def check_same(self, other: Any, what: str = "the circuit") -> None:
        """Raise an :class:`~circuitlab.errors.InputError` describing both graphs unless ``other`` (the graph of
        ``what``, e.g. a circuit to evaluate on this graph's model) has this graph's shape, so the same nodes and
        edges: an edge of a circuit found on another model would otherwise be read as whichever edge of this model
        carries its name. Same shape but another model's name: a warning (a circuit may be transferred on purpose,
        e.g. to a fine-tuned copy)."""
        if not isinstance(other, Graph):
            raise InputError(f"{what} has no circuit graph (got {type(other).__name__}); build it with "
                             "Graph.from_model(model).")
        if not self.same_shape(other):
            raise InputError(f"{what} was built on a different graph ({other.describe()}) than this model's "
                             f"({self.describe()}). Find or build the circuit on this model's graph "
                             "(Graph.from_model(model)).")
        if self.model and other.model and self.model != other.model:
            warnings.warn(f"{what} was built on the graph of {other.model!r} and is evaluated on {self.model!r}; the "
                          "graphs have the same shape, so its edges are read as this model's edges of those names.",
                          stacklevel=3)

    def __eq__(self, other: object) -> bool:  # two graphs of the same shape have the same nodes and edges
        return isinstance(other, Graph) and self.same_shape(other)

    def __hash__(self) -> int:
        return hash(tuple(self.spec().items()))

    def describe(self) -> str:
        kind = "attention-only" if self.attn_only else ("parallel attention+MLP" if self.parallel_attn_mlp else
                                                        "attention then MLP")
        name = f"{self.model}: " if self.model else ""
        return f"{name}{self.n_layers} layers x {self.n_heads} heads, {kind}, {self.n_edges} edges"

    def __repr__(self) -> str:
        return (f"Graph({self.describe()}; {len(self.senders)} senders, {len(self.receivers)} receivers)")


def parse_edge(edge: Any) -> Edge:
    """An edge from ``("L0H1", "L1H2.k")`` or the string ``"L0H1 -> L1H2.k"``."""
    if isinstance(edge, str):
        parts = [p.strip() for p in edge.split("->")]
        if len(parts) == 2 and all(parts):
            return parts[0], parts[1]
    elif isinstance(edge, Sequence) and len(edge) == 2 and all(isinstance(x, str) for x in edge):
        return edge[0], edge[1]
    raise InputError(f"cannot read edge {shorten(edge)}; write it as ('L0H1', 'L1H2.k') or 'L0H1 -> L1H2.k'.")


def unsupported(model: Any) -> str:
    """Why the graph cannot describe ``model`` exactly, or ``""`` when it can."""
    from transformer_lens import HookedTransformer
    from transformer_lens.utilities.architectures import POST_NORM_ARCHITECTURES

    if not isinstance(model, HookedTransformer):
        return (f"it is a {type(model).__name__}, and the graph is built on a HookedTransformer's hooks "
                "(hook_z, hook_q_input, hook_mlp_in...). Load the model as a HookedTransformer (circuitlab.load_model "
                "or HookedTransformer.from_pretrained).")
    cfg = model.cfg
    if cfg.attention_dir != "causal":
        return (f"its attention is {cfg.attention_dir!r}, not causal; the graph (and the exact edge patching built on "
                "it) assumes causal attention. Use a decoder (causal) model.")
    if getattr(cfg, "use_normalization_before_and_after", False):
        return ("it normalises each sub-layer's output before adding it to the residual stream (sandwich norms, "
                "as in Gemma 2 and 3), so a head's share of the stream is not its own output: the per-head split "
                "would not be exact.")
    if cfg.original_architecture in POST_NORM_ARCHITECTURES:
        return (f"its architecture {cfg.original_architecture} normalises sub-layer outputs (post-norm), so a "
                "head's share of the residual stream is not its own output: the per-head split would not be exact.")
    for layer, block in enumerate(model.blocks):
        if type(block).__name__ not in SUPPORTED_BLOCKS:
            return (f"block {layer} is a {type(block).__name__}; the graph knows TransformerLens's "
                    f"{', '.join(SUPPORTED_BLOCKS)} only.")
        if type(block.attn).__name__ not in SUPPORTED_ATTENTION:
            return (f"block {layer}'s attention is a {type(block.attn).__name__}; the graph knows "
                    f"{' and '.join(SUPPORTED_ATTENTION)} only.")
    return ""


__all__ = ["Edge", "Graph", "Node", "parse_edge", "unsupported"]
