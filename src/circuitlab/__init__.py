"""circuitlab: find circuits in transformer language models, on top of TransformerLens.

    import circuitlab as cl
    model = cl.load_model("zoo/attn-only-2l")          # offline; or "gpt2-small" when online
    circuit = cl.induction.find_induction_circuit(model)

Analyses live in submodules (``circuitlab.induction``, ``circuitlab.patching``, ``circuitlab.attribution``,
``circuitlab.ffn``, ``circuitlab.tracing``, ``circuitlab.circuits``) and return labelled
:class:`~circuitlab.results.Result` objects (or bundles of them) that render to HTML; ``circuitlab.core`` holds
what they share (model coercion, index checks, answers, the readout).
"""

import warnings as _warnings

# HookedTransformer is the supported model class in transformer-lens 3.x; its deprecation notice (pointing to
# 4.x's TransformerBridge) is noise for our users.
_warnings.filterwarnings("ignore", message=r".*HookedTransformer.*deprecated.*", category=DeprecationWarning)

from circuitlab.errors import CircuitlabError  # noqa: E402  (no dependencies: cheap)

__version__ = "0.1.0"

__all__ = ["CircuitlabError", "Result", "list_models", "load_encoder", "load_model", "save_model", "zoo_card",
           "__version__"]

# `import circuitlab` stays light (no torch, no TransformerLens: `circuitlab --help` answers at once); the public
# functions and the analysis modules load on first use.
_LAZY = {"Result": "circuitlab.results", "list_models": "circuitlab.models", "load_encoder": "circuitlab.models",
         "load_model": "circuitlab.models", "save_model": "circuitlab.models", "zoo_card": "circuitlab.models"}
_SUBMODULES = {"induction", "patching", "attribution", "ffn", "tracing", "circuits", "concepts", "probing", "metrics",
               "render", "tasks", "dynamics",
               "zoo", "cli", "core", "results", "testing", "models", "reproduce"}


def __getattr__(name: str):
    import importlib

    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # once loaded, a plain attribute
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"circuitlab.{name}")
    raise AttributeError(f"module 'circuitlab' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | _SUBMODULES)
