"""Labelled results: what every analysis returns.

A :class:`Result` is a tensor plus everything needed to read it without the code that made it: the names of
its axes (``("layer", "head")``, ``("layer", "pos")``, ...), the labels along each axis (token strings for
positions), and what was measured, on which model and task. Renderers read these fields; they never guess
what an axis means.

The result contract, for every analysis:

- one array of numbers is a :class:`Result` (or a subclass adding a field or two, e.g. per-prompt values);
- "the top-k tokens of each row" (what a neuron promotes, what the logit lens predicts) is a :class:`TopTokens`:
  scores, token ids and token strings, with the rank as the last axis;
- several of these together is a :class:`Bundle`: a small dataclass whose fields are results (and a little plain
  data), which renders, converts to a DataFrame and prints without code of its own.

Token labels for top-k tokens come from :func:`token_strings`, which shows a byte token by its bytes
(``"<0xE2>"``) where decoding it alone would give U+FFFD.

Nothing here writes HTML: ``to_html()`` hands the object to :func:`circuitlab.render.to_html`, which picks the
renderer for its kind. Anything :class:`Renderable` (a ``to_html()`` method) can go into a report.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from dataclasses import fields
from typing import Any, Callable, Optional, Protocol, Sequence, runtime_checkable

import torch
from jaxtyping import Float, Int, Shaped
from torch import Tensor

from circuitlab.errors import InputError


@runtime_checkable
class Renderable(Protocol):
    """What :func:`circuitlab.render.report` accepts besides text: anything that renders itself as HTML."""

    def to_html(self) -> str: ...


class Rendered:
    """``to_html`` and Jupyter display for results: both go to :func:`circuitlab.render.to_html`; ``to_dict`` and
    ``to_json`` give the library's serialisation (:func:`to_jsonable`)."""

    def to_html(self, **options: Any) -> str:
        """An HTML fragment showing this result (see :mod:`circuitlab.render`)."""
        from circuitlab.render import to_html

        return to_html(self, **options)

    def to_dict(self) -> dict[str, Any]:
        """This result as plain JSON-ready data (:func:`to_jsonable`): ``kind``, values, axes, labels, meta."""
        return to_jsonable(self)

    def to_json(self, indent: int | None = None) -> str:
        """:meth:`to_dict` as a JSON string (strict JSON: no NaN literals, see :func:`to_jsonable`)."""
        import json

        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def _repr_html_(self) -> str:  # Jupyter displays results by itself
        return self.to_html()


def default_labels(axis: str, size: int) -> list[str]:
    """Labels for an axis that has no better ones: ``L0, L1, ...`` for layers, ``H0, ...`` for heads."""
    prefix = {"layer": "L", "head": "H", "pos": "", "neuron": "N", "batch": "b"}.get(axis, "")
    return [f"{prefix}{i}" for i in range(size)]


def _bytes_label(data: bytes) -> str:
    """Bytes as text where they decode as UTF-8, and ``<0xE2>``-style where they don't."""
    out, i = [], 0
    while i < len(data):
        for j in range(min(len(data), i + 4), i, -1):  # the longest piece from i that decodes
            try:
                out.append(data[i:j].decode("utf-8"))
                i = j
                break
            except UnicodeDecodeError:
                continue
        else:
            out.append(f"<0x{data[i]:02X}>")
            i += 1
    return "".join(out)


def _byte_level_decoder() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet (one printable character per byte), inverted: character -> byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + \
        list(range(ord("\xae"), ord("\xff") + 1))
    chars, n = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def token_strings(model: Any, ids: Any) -> list[str]:
    """One readable label per token id: like ``model.to_str_tokens``, but a token that is not text on its own
    (a byte piece of a multi-byte character, which decodes to U+FFFD) shows its bytes instead: ``"<0xE2>"``
    from a SentencePiece vocabulary (Gemma, Llama), ``"<0xE2><0x80>"`` or ``" <0xE2>"`` from a byte-level BPE one
    (GPT-2), or the raw vocabulary entry (``tokenizer.convert_ids_to_tokens``) otherwise.

    ``model`` is a HookedTransformer (or anything with a ``tokenizer``) or a tokenizer; without a tokenizer
    tokens are ``"#17"``-style ids. For labels of top-k tokens (what a neuron promotes), so that no two tokens
    show as the same ``"\ufffd"``.
    """
    tok = getattr(model, "tokenizer", model)
    flat = torch.as_tensor(ids).reshape(-1).tolist()
    if tok is None:
        return [f"#{i}" for i in flat]
    strings = [str(s) for s in tok.batch_decode([[int(i)] for i in flat], clean_up_tokenization_spaces=False)]
    bad = [n for n, s in enumerate(strings) if "\ufffd" in s]
    if bad:
        raw = tok.convert_ids_to_tokens([int(flat[n]) for n in bad])
        byte_of = _byte_level_decoder()
        for n, piece in zip(bad, raw):
            piece = str(piece)
            if re.fullmatch(r"(<0x[0-9A-Fa-f]{2}>)+", piece):  # SentencePiece byte fallback
                strings[n] = piece.upper().replace("<0X", "<0x")
            elif piece and all(c in byte_of for c in piece):  # byte-level BPE
                strings[n] = _bytes_label(bytes(byte_of[c] for c in piece))
            else:
                strings[n] = piece
    return strings


@dataclass(repr=False)
class Result(Rendered):
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

    values: Shaped[Tensor, "*axes"]
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
        """The ``k`` largest (or smallest) entries as ``(index tuple, value)`` pairs, best first. NaN entries
        (padding, or nothing measured there) are never among them."""
        flat = self.values.detach().float().flatten()
        key = flat.abs() if absolute else flat
        key = key.masked_fill(key.isnan(), float("-inf") if largest else float("inf"))
        k = min(k, int((~flat.isnan()).sum()))
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

    def __repr__(self) -> str:
        dims = ", ".join(f"{a}={n}" for a, n in zip(self.axes, self.values.shape))
        head = f"{type(self).__name__}({self.title or self.metric!s}; {dims}"
        if self.model:
            head += f"; model={self.model}"
        return head + ")"


@dataclass(repr=False)
class TopTokens(Result):
    """The top-``k`` tokens of each row: scores in ``values`` (last axis ``"rank"``), their ids and strings.

    What a neuron's value vector promotes (rows: neurons), what the logit lens predicts after each layer (rows:
    layer x prompt), what each sub-update promotes. ``token_ids`` has the shape of ``values``; ``tokens`` holds
    the same tokens as strings, nested like ``values.tolist()``.
    """

    token_ids: Optional[Int[Tensor, "*axes"]] = None
    tokens: list = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.axes or self.axes[-1] != "rank":
            raise InputError(f"TopTokens needs 'rank' as its last axis; got axes {tuple(self.axes)}.")
        if self.token_ids is None or tuple(self.token_ids.shape) != tuple(self.values.shape):
            got = None if self.token_ids is None else tuple(self.token_ids.shape)
            raise InputError(
                f"TopTokens.token_ids must have the shape of values {tuple(self.values.shape)}; got {got}.")
        if self.labels.get("rank") is None:
            self.labels = {**self.labels, "rank": [f"#{i + 1}" for i in range(self.values.shape[-1])]}
        super().__post_init__()

    @classmethod
    def from_scores(cls, scores: Float[Tensor, "... vocab"], k: int,
                    strings: Callable[[Int[Tensor, " n"]], list[str]], *,
                    axes: Sequence[str], largest: bool = True, **fields: Any) -> "TopTokens":
        """The ``k`` best columns of ``scores [..., vocab]`` (lowest first with ``largest=False``).

        ``strings`` turns a 1-D tensor of token ids into their strings (e.g. ``lambda ids: str_tokens(model, ids)``);
        ``axes`` names the leading axes of ``scores`` plus ``"rank"``; other fields go to the :class:`Result`.
        """
        kk = min(int(k), scores.shape[-1])
        top = scores.detach().topk(kk, dim=-1, largest=largest)
        ids = top.indices
        flat = strings(ids.reshape(-1)) if ids.numel() else []
        nested: list = [flat[i:i + kk] for i in range(0, len(flat), kk)]
        for size in reversed(ids.shape[1:-1]):
            nested = [nested[i:i + size] for i in range(0, len(nested), size)]
        return cls(values=top.values, axes=tuple(axes), token_ids=ids, tokens=nested, **fields)

    def row_tokens(self, index: Sequence[int]) -> list[str]:
        """The token strings of one row (an index into every axis but ``rank``)."""
        out: Any = self.tokens
        for i in index:
            out = out[i]
        return list(out)

    def to_dataframe(self):
        """Long format, one row per (row, rank): the axes, the score (``value``), ``token_id`` and ``token``."""
        df = super().to_dataframe()
        df["token_id"] = self.token_ids.flatten().tolist()
        flat: list = self.tokens
        for _ in range(self.values.ndim - 1):
            flat = [t for row in flat for t in row]
        df["token"] = flat
        return df

    def __repr__(self) -> str:
        lead = self.values.shape[:-1]
        lines = [super().__repr__()]
        if not lead:
            return lines[0] + f": {self.row_tokens(())}"
        rows = torch.cartesian_prod(*[torch.arange(n) for n in lead]).reshape(-1, len(lead)).tolist()
        for index in rows[:8]:
            lines.append(f"  {self.label_of(index)}: {self.row_tokens(index)}")
        if len(rows) > 8:
            lines.append(f"  ... {len(rows) - 8} more rows")
        return "\n".join(lines)


class Bundle(Rendered):
    """Base of analysis results that hold several results: a dataclass whose fields are :class:`Result`\\ s.

    Subclasses are ``@dataclass(repr=False)`` classes; they get rendering, DataFrames and a printout from here.
    A bundle may add plain fields (a layer number, a list of heads) and methods that read its results.
    """

    def results(self) -> dict[str, Result]:
        """The fields that hold results, in field order (``None`` fields left out)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Result):
                out[f.name] = value
        return out

    def to_dataframe(self):
        """Every result's long-format DataFrame stacked, with a ``result`` column naming the field."""
        import pandas as pd

        frames = [r.to_dataframe().assign(result=name) for name, r in self.results().items()]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def __repr__(self) -> str:
        inner = ",\n  ".join(f"{name}={r!r}".replace("\n", "\n  ") for name, r in self.results().items())
        return f"{type(self).__name__}(\n  {inner})"


# -- serialisation ------------------------------------------------------------------------------------------
_FLOAT_WORDS = {"Infinity": float("inf"), "-Infinity": float("-inf")}


def _number(x: Any) -> Any:
    """A float for strict JSON: NaN becomes ``None``, infinities the strings ``"Infinity"`` / ``"-Infinity"``."""
    if isinstance(x, float):
        if x != x:
            return None
        if x in (float("inf"), float("-inf")):
            return "Infinity" if x > 0 else "-Infinity"
    return x


def _nested(values: list) -> list:
    return [_nested(v) if isinstance(v, list) else _number(v) for v in values]


def _tensor(t: Tensor) -> dict[str, Any]:
    data = t.detach().cpu()
    if data.dtype in (torch.bfloat16, torch.float16):
        data = data.float()
    return {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape),
            "data": _nested(data.tolist()) if data.ndim else _number(data.item())}


def to_jsonable(obj: Any) -> Any:
    """Plain JSON-ready data for a result and anything it holds: the library's one serialisation.

    - a :class:`Result` (or subclass): ``{"kind": class name, "values": {dtype, shape, data}, "axes", "labels",
      "title", "metric", "model", "task", "meta"}`` plus the subclass's own fields (``token_ids``, ``tokens`` of
      :class:`TopTokens`, per-prompt values, ...);
    - a :class:`Bundle` or any other dataclass: ``{"kind": class name, "fields": {name: value, ...}}``;
    - a tensor or NumPy array: ``{"dtype", "shape", "data"}`` (nested lists; bfloat16/float16 as float32 numbers);
    - floats: NaN as ``null``, infinities as ``"Infinity"`` / ``"-Infinity"`` (strict JSON has neither);
    - dicts (keys as strings), lists, tuples and sets as lists; paths as strings; anything else as ``repr``.

    :func:`from_jsonable` turns a :class:`Result` / :class:`TopTokens` back into the object (values to the last bit
    for float32 and float64: JSON numbers are written with Python's shortest round-trip ``repr``).
    """
    import dataclasses
    import enum
    import pathlib

    if isinstance(obj, Result):
        out: dict[str, Any] = {"kind": type(obj).__name__}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            out[f.name] = list(value) if f.name == "axes" else to_jsonable(value)
        return out
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {"kind": type(obj).__name__,
                "fields": {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}}
    if isinstance(obj, Tensor):
        return _tensor(obj)
    if isinstance(obj, (bool, int, str)) or obj is None:
        return obj
    if isinstance(obj, float):
        return _number(obj)
    if isinstance(obj, enum.Enum):
        return to_jsonable(obj.value)
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted((to_jsonable(v) for v in obj), key=repr)
    if isinstance(obj, pathlib.PurePath):
        return str(obj)
    module = type(obj).__module__
    if module == "numpy":  # NumPy scalars and arrays, without importing NumPy here
        return _tensor(torch.as_tensor(obj)) if hasattr(obj, "shape") and obj.shape else to_jsonable(obj.item())
    return repr(obj)


def _unnumber(x: Any) -> Any:
    if x is None:
        return float("nan")
    if isinstance(x, str):
        return _FLOAT_WORDS[x]
    return x


def _untensor(d: dict[str, Any]) -> Tensor:
    data = d["data"]
    dtype = getattr(torch, d["dtype"])
    if dtype.is_floating_point:
        data = _nested_back(data) if isinstance(data, list) else _unnumber(data)
    return torch.tensor(data, dtype=dtype).reshape(d["shape"])


def _nested_back(values: list) -> list:
    return [_nested_back(v) if isinstance(v, list) else _unnumber(v) for v in values]


def _is_tensor(d: Any) -> bool:
    return isinstance(d, dict) and set(d) == {"dtype", "shape", "data"}


def from_jsonable(data: dict[str, Any]) -> "Result":
    """The :class:`Result` or :class:`TopTokens` that :func:`to_jsonable` wrote (tensors in ``meta`` come back as
    tensors). Other kinds (bundles, subclasses with fields of their own) are not rebuilt: read their dicts."""
    if not isinstance(data, dict) or data.get("kind") not in ("Result", "TopTokens"):
        kind = data.get("kind") if isinstance(data, dict) else type(data).__name__
        raise InputError(f"from_jsonable rebuilds a Result or TopTokens; got kind {kind!r}. Read other kinds "
                         f"as the dictionaries they are.")

    def back(v: Any) -> Any:
        if _is_tensor(v):
            return _untensor(v)
        if isinstance(v, dict):
            return {k: back(x) for k, x in v.items()}
        if isinstance(v, list):
            return [back(x) for x in v]
        return v

    common = dict(values=_untensor(data["values"]), axes=tuple(data["axes"]), labels=data["labels"],
                  title=data["title"], metric=data["metric"], model=data["model"], task=data["task"],
                  meta=back(data["meta"]))
    if data["kind"] == "TopTokens":
        return TopTokens(**common, token_ids=_untensor(data["token_ids"]), tokens=data["tokens"])
    return Result(**common)
