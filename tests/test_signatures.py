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


# -- one default per meaning (issue 30, item 11) ------------------------------------------------------------------

#: parameter names whose defaults differ between public functions on purpose: the name means a different thing in
#: each (or the value is a documented choice of the method), with the reason. Any other name must have one default
#: across the package (``keep_bos``, ``progress``, ``max_memory``, ``prepend_bos``, ``cache``, ``pool`` ...).
DIFFERENT_MEANINGS = {
    "baseline": "IG baseline of gradients ('zero', the classic) vs the shortcut experiments' 'pad' (the experiment's "
                "own setting); edge_probe's baseline is a flag (also train the lexical baseline)",
    "batch_size": "forward-pass texts per batch (32 over corpora; None in engine helpers: max_memory decides) vs each "
                  "trainer's optimiser minibatch vs spaCy's batch",
    "bins": "histogram bins of a neuron page vs the mutual-information binning of rankings vs a figure's bins",
    "by": "axes of a patching sweep vs what DLA splits by vs how ROC ranks edges",
    "hook": "the input hook gradients are taken at (the embedding) vs the one hook gaussian_sweep probes (None: the "
            "residual stream after the middle block)",
    "device": "None: the model's / the default device; repeated_tokens builds a tensor on the CPU",
    "direction": "patching direction (denoising / noising) vs a dependency head's direction (dependent / head)",
    "patience": "each probe trainer's own early stopping (the structural probe's schedule is its own)",
    "epochs": "each probe trainer's own schedule (classifier, edge, structural probes as in their papers)",
    "facts": "cloze: None = the package's facts; known_facts: the facts themselves",
    "fmt": "number format of each figure",
    "heads": "heads to analyse (None: every head, weights.copying_scores) vs heads masked (none: (), masked_loss)",
    "height": "each figure's own size",
    "width": "each figure's own size",
    "hooks": "sentiment_tcav's layers of its seed experiment; None = each analysis's default hooks; () = none",
    "k": "top-k of each list: logit lens / top tokens 5 per row, FFN value tokens and examples 10 (Geva et al.)",
    "kind": "a different choice per function (score kind, composition, probe, scale)",
    "l2": "each estimator's regularisation (TCAV's CAV, ranking's elastic net, the debugging head)",
    "lam": "the explanation penalty: 0 trains without it, the regularisation experiment's own strength",
    "lr": "each probe trainer's own learning rate",
    "max_iter": "each optimiser's own iteration budget",
    "meta": "render helpers: a heading's note vs a scale's metadata",
    "method": "a different choice per function (ablation, quadrature, ranking, scoring, attribution)",
    "model": "None = no model / a default; a named model of a fixed experiment; '' = unnamed in views",
    "n": "how many items each task generator makes",
    "n_attributed": "each shortcut experiment's own setting",
    "n_random": "random counterexample sets of TCAV vs random excerpts of neuron records",
    "n_seqs": "fixed reference tasks (the reference induction circuit must not move) vs the analyses' default",
    "n_tokens": "tokens per sub-update (ffn.sub_updates) vs value tokens per direction of a neuron page",
    "name": "each loader's or explainer's own name",
    "names": "hook names to keep (final_residual) vs signature names of reviews",
    "neuron": "value_tokens: None = every neuron's; a figure's neuron index",
    "receivers": "ACDC's receivers to visit (None: all) vs path patching's receiver site",
    "runs": "TCAV's runs vs the sentiment seed experiment's",
    "samples": "noise samples of causal tracing vs a reproduction's None (the finding's own)",
    "scale": "a structural probe's init scale vs a figure's colour scale",
    "seed": "None in reproduce: each finding's own seed",
    "seeds": "classifier sweeps report a 95% interval over three seeds; the structural sweep one run (its cost)",
    "seq_len": "None = the analyses' default length; fixed reference and copy tasks",
    "set_size": "TCAV's None (all texts) vs the sentiment seed experiment's",
    "split": "train/dev/test fractions vs a review set's split name",
    "steps": "each method's own: EAP-IG 5 (its paper), integrated gradients 50, the shortcut experiments' settings",
    "task": "a probing task per function ('upos', 'deprel'); '' = untitled in views",
    "threshold": "each method's own decision threshold",
    "title": "each figure's or report's own title",
    "unit": "a progress bar's unit vs a figure's axis label",
    "what": "the words a check's message uses",
}


def public_defaults(modules: list[str]) -> dict[str, dict[str, list[str]]]:
    """``{parameter name: {repr(default): [functions]}}`` over public functions and methods (a dataclass's generated
    ``__init__`` aside: its fields are data, not options)."""
    found: dict[str, dict[str, list[str]]] = {}
    for modname in modules:
        module = importlib.import_module(modname)
        for attr, obj in vars(module).items():
            if attr.startswith("_") or getattr(obj, "__module__", None) != modname:
                continue
            functions = [(f"{modname}.{attr}", obj)] if inspect.isfunction(obj) else []
            if inspect.isclass(obj):
                functions += [(f"{modname}.{attr}.{name}", fn) for name, fn in _callables(obj)
                              if not (name == "__init__" and dataclasses.is_dataclass(obj))]
            for label, fn in functions:
                for p in inspect.signature(fn).parameters.values():
                    if p.default is not inspect.Parameter.empty and p.name not in ("self", "cls"):
                        found.setdefault(p.name, {}).setdefault(repr(p.default), []).append(label)
    return found


def test_a_parameter_name_has_one_default_across_the_package():
    """``keep_bos`` was True in integrated_gradients and False in gradient_x_input; ``progress`` True in 22 functions
    and False in 27. One meaning, one default; a name that means different things is listed above with why."""
    found = public_defaults(_modules())
    clashes = {name: d for name, d in found.items() if len(d) > 1 and name not in DIFFERENT_MEANINGS}
    listing = "\n".join(f"  {name}: " + "; ".join(f"{value} in {', '.join(fns[:3])}{' ...' if len(fns) > 3 else ''}"
                                                  for value, fns in d.items()) for name, d in sorted(clashes.items()))
    assert not clashes, (f"{len(clashes)} parameter names have different defaults in different public functions; "
                         f"give each one default, or list the name in DIFFERENT_MEANINGS with the reason:\n{listing}")
    assert set(found["keep_bos"]) == {"True"}  # BOS stays in the baseline: it gets no attribution, by default
    stale = [name for name in DIFFERENT_MEANINGS if len(found.get(name, {})) < 2]
    assert not stale, f"DIFFERENT_MEANINGS lists names whose defaults now agree (remove them): {stale}"
