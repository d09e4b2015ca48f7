"""Every public signature that takes or returns a tensor says its shape with jaxtyping (DESIGN: shapes in signatures).

The test imports each module of the package (the command line, ``zoo`` and ``testing`` aside: tooling, not
analyses), reads the type hints of its public functions, of the public methods of its public classes and of their
annotated fields (``typing.get_type_hints``, so an alias such as ``core.Prompts`` is seen through), and lists every
one whose hint holds a bare ``torch.Tensor``: one that is not inside ``Float[Tensor, "..."]``, ``Int[...]``,
``Bool[...]`` or another jaxtyping array type. An annotation that cannot be evaluated at run time (a name imported
only for type checkers) is read as text instead. There are no exceptions: every module is checked.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import re
import typing
from typing import Sequence

import jaxtyping
from torch import Tensor

import circuitlab

NOT_ANALYSES = ("circuitlab.zoo", "circuitlab.commands", "circuitlab.cli", "circuitlab.testing", "circuitlab.__main__")

_SHAPED = re.compile(r"\b(?:Float|Int|Bool|Shaped|Num|Real|Integer|UInt|Inexact|Complex)"
                     r"\[\s*(?:torch\.)?Tensor\s*,[^\]]*\]")  # a jaxtyping array type, written out


def _modules() -> list[str]:
    names = ["circuitlab"] + [m.name for m in pkgutil.walk_packages(circuitlab.__path__, "circuitlab.")]
    return [n for n in names if not n.startswith(NOT_ANALYSES)]


def has_bare_tensor(hint) -> bool:
    """Whether ``hint`` holds ``torch.Tensor`` outside a jaxtyping array type."""
    if isinstance(hint, str):  # an annotation that could not be evaluated: read the text
        return re.search(r"\bTensor\b", _SHAPED.sub("", hint)) is not None
    if hint is Tensor:
        return True
    if isinstance(hint, (list, tuple)):  # the parameter list of a Callable
        return any(has_bare_tensor(arg) for arg in hint)
    if isinstance(hint, type) and issubclass(hint, jaxtyping.AbstractArray):
        return False
    return any(has_bare_tensor(arg) for arg in typing.get_args(hint)
               if not isinstance(arg, (str, int, float, bool, type(...), type(None))))


def _hints(obj, annotations: dict, globalns: dict, localns: dict | None = None) -> dict:
    """The evaluated hints of ``annotations``; one that cannot be evaluated stays text."""
    try:
        return typing.get_type_hints(obj, globalns=globalns, localns=localns, include_extras=True)
    except Exception:
        out = {}
        for name, ann in annotations.items():
            try:
                out[name] = eval(ann, globalns, dict(localns or {})) if isinstance(ann, str) else ann
            except Exception:
                out[name] = ann if isinstance(ann, str) else repr(ann)
        return out


def _own_fields(cls) -> dict:
    """Hints of the public fields ``cls`` annotates itself (inherited ones are checked on the class that owns them)."""
    own = {k: v for k, v in cls.__dict__.get("__annotations__", {}).items() if not k.startswith("_")}
    if not own:
        return {}
    hints = _hints(cls, own, vars(importlib.import_module(cls.__module__)), dict(vars(cls)))
    return {k: hints.get(k, own[k]) for k in own}


def _callables(cls):
    """The public methods of ``cls``, ``__call__`` and ``__init__`` included (unless a dataclass writes ``__init__``
    from its fields, which are checked as fields)."""
    for name, member in cls.__dict__.items():
        dunder_checked = name == "__call__" or (name == "__init__" and not dataclasses.is_dataclass(cls))
        if name.startswith("_") and not dunder_checked:
            continue
        if isinstance(member, (classmethod, staticmethod)):
            member = member.__func__
        elif isinstance(member, property):
            member = member.fget
        if inspect.isfunction(member):
            yield name, member


def unshaped_signatures(modules: list[str]) -> dict[str, list[str]]:
    """``{"module.function": [parameters (and "return") whose hint holds a bare Tensor]}``."""
    found: dict[str, list[str]] = {}

    def check(label: str, hints: dict) -> None:
        bad = [name for name, hint in hints.items() if has_bare_tensor(hint)]
        if bad:
            found[label] = bad

    for modname in modules:
        module = importlib.import_module(modname)
        for attr, obj in vars(module).items():
            if attr.startswith("_") or getattr(obj, "__module__", None) != modname:
                continue
            if inspect.isfunction(obj):
                check(f"{modname}.{attr}", _hints(obj, obj.__annotations__, obj.__globals__))
            elif inspect.isclass(obj):
                check(f"{modname}.{attr} (fields)", _own_fields(obj))
                for name, fn in _callables(obj):
                    check(f"{modname}.{attr}.{name}", _hints(fn, fn.__annotations__, fn.__globals__, dict(vars(obj))))
    return found


def test_public_signatures_say_tensor_shapes():
    found = unshaped_signatures(_modules())
    listing = "\n".join(f"  {label}: {', '.join(names)}" for label, names in sorted(found.items()))
    assert not found, (
        f"{len(found)} public signatures hold a bare torch.Tensor; say each one's shape with jaxtyping "
        f"(Float[Tensor, \"batch pos d_model\"], Int[Tensor, \"batch pos\"], ...):\n{listing}"
    )


def test_the_check_sees_bare_tensors():
    from typing import Callable, Optional, Union

    from jaxtyping import Float, Int

    assert has_bare_tensor(Tensor)
    assert has_bare_tensor(Optional[Tensor])
    assert has_bare_tensor(Union[str, Sequence[int], Tensor])
    assert has_bare_tensor(dict[str, list[Tensor]])
    assert has_bare_tensor(Callable[[Tensor], float])
    assert has_bare_tensor("Optional[Tensor]")
    assert has_bare_tensor('tuple[Float[Tensor, " batch"], Tensor]')
    assert not has_bare_tensor(Float[Tensor, "batch pos d_model"])
    assert not has_bare_tensor(Optional[Union[str, Int[Tensor, "batch pos"]]])
    assert not has_bare_tensor(Callable[[Float[Tensor, "batch pos d_vocab"]], Float[Tensor, ""]])
    assert not has_bare_tensor('Optional[Float[Tensor, "layer head"]]')
    assert not has_bare_tensor(int)
