"""Labelled results: what every analysis returns.

A :class:`Result` is a tensor plus everything needed to read it without the code that made it: the names of
its axes (``("layer", "head")``, ``("layer", "pos")``, ...), the labels along each axis (token strings for
positions), and what was measured, on which model and task. Renderers read these fields; they never guess
what an axis means.

Analyses with richer output subclass :class:`Result` (adding fields) or bundle several results in a
dataclass of their own; anything with a ``to_html()`` method can go into a report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import Tensor

from circuitlab.errors import InputError


def default_labels(axis: str, size: int) -> list[str]:
    """Labels for an axis that has no better ones: ``L0, L1, ...`` for layers, ``H0, ...`` for heads."""
    prefix = {"layer": "L", "head": "H", "pos": "", "neuron": "N", "batch": "b"}.get(axis, "")
    return [f"{prefix}{i}" for i in range(size)]


@dataclass
class Result:
    """A tensor with named, labelled axes and a record of what was measured.

    Attributes:
        values: the numbers, one tensor axis per entry of ``axes``.
        axes: the name of each axis of ``values``, e.g. ``("layer", "head")``.
        labels: for each axis name, one string per index (token strings for ``pos``).
        title: a short human heading, e.g. ``"Induction score"``.
        metric: what each number is, e.g. ``"mean attention to the induction target"`` or ``"logit_diff"``.
        model: the model's name.
        task: the prompts or task it was measured on.
        meta: anything else worth keeping (seeds, settings, per-prompt values...).
    """

    values: Tensor
    axes: tuple[str, ...]
    labels: dict[str, list[str]] = field(default_factory=dict)
    title: str = ""
    metric: str = ""
    model: str = ""
    task: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.axes = tuple(self.axes)
        if self.values.ndim != len(self.axes):
            raise InputError(
                f"Result values have {self.values.ndim} dimensions (shape {tuple(self.values.shape)}) "
                f"but {len(self.axes)} axis names were given: {self.axes}. Give one name per dimension."
            )
        labels = dict(self.labels)
        for axis, size in zip(self.axes, self.values.shape):
            if axis not in labels or labels[axis] is None:
                labels[axis] = default_labels(axis, size)
            elif len(labels[axis]) != size:
                raise InputError(
                    f"axis {axis!r} has {size} entries but {len(labels[axis])} labels were given."
                )
            labels[axis] = [str(x) for x in labels[axis]]
        self.labels = labels

    # -- access -----------------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.values.shape)

    def axis_labels(self, axis: str) -> list[str]:
        return self.labels[axis]

    def top(self, k: int = 5, largest: bool = True, absolute: bool = False) -> list[tuple[tuple[int, ...], float]]:
        """The ``k`` largest (or smallest) entries as ``(index tuple, value)`` pairs, best first."""
        flat = self.values.detach().float().flatten()
        key = flat.abs() if absolute else flat
        k = min(k, flat.numel())
        idx = torch.topk(key, k, largest=largest).indices
        out = []
        for i in idx.tolist():
            index = tuple(int(j) for j in torch.unravel_index(torch.tensor(i), self.values.shape))
            out.append((index, float(flat[i])))
        return out

    def label_of(self, index: Sequence[int]) -> str:
        """A readable name for one entry, e.g. ``"L1 H3"`` or ``"L0 pos 4:t7"``."""
        parts = []
        for axis, i in zip(self.axes, index):
            lab = self.labels[axis][i]
            if axis == "pos":  # position labels already carry their index ("4:t1"), or are just the index
                parts.append(f"pos {lab}" if lab == str(i) or lab.startswith(f"{i}:") else f"pos {i} {lab!r}")
            elif lab == default_labels(axis, i + 1)[-1]:
                parts.append(lab)
            else:
                parts.append(f"{axis} {lab}")
        return " ".join(parts)

    # -- conversions -----------------------------------------------------------------------------------
    def to_dataframe(self):
        """A long-format pandas DataFrame: one row per entry, one column per axis plus ``value``."""
        import pandas as pd

        vals = self.values.detach().float().cpu()
        grids = torch.meshgrid(*[torch.arange(n) for n in vals.shape], indexing="ij") if vals.ndim else []
        data: dict[str, Any] = {}
        for axis, grid in zip(self.axes, grids):
            flat = grid.flatten().tolist()
            data[axis] = flat
            if self.labels[axis] != default_labels(axis, vals.shape[self.axes.index(axis)]):
                data[f"{axis}_label"] = [self.labels[axis][i] for i in flat]
        data["value"] = vals.flatten().tolist()
        return pd.DataFrame(data)

    def to_html(self) -> str:
        """An HTML fragment showing this result (a heatmap for 1-D and 2-D results)."""
        from circuitlab.render import result_html

        return result_html(self)

    def _repr_html_(self) -> str:  # Jupyter displays results by itself
        return self.to_html()

    def __repr__(self) -> str:
        dims = ", ".join(f"{a}={n}" for a, n in zip(self.axes, self.values.shape))
        head = f"{type(self).__name__}({self.title or self.metric!s}; {dims}"
        if self.model:
            head += f"; model={self.model}"
        return head + ")"
