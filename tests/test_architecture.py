"""The import rule import-linter cannot express: no module imports another module's ``_private`` name.

The layers themselves (errors/results/core below models below tasks and metrics below the engine below the analysis
rooms below reproduce/render/distributed below commands/cli) are the import-linter contract in pyproject.toml,
checked by ``lint-imports`` in ``make lint``. This file parses every module of the package with ``ast`` and fails
on ``from circuitlab.X import _name`` and ``import circuitlab.X._name`` from any other module, lazy (in-function)
imports included, listing every offender. A name several modules need is made public in the module that owns it
(with a docstring) or moves to ``circuitlab.core``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import circuitlab

PACKAGE_DIR = Path(circuitlab.__file__).resolve().parent


def module_name(path: Path, root: Path = PACKAGE_DIR) -> str:
    """``circuitlab.probing.data`` for ``.../circuitlab/probing/data.py``; a package's ``__init__`` is the package."""
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _absolute(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    """The absolute module a ``from ... import`` reads from (relative imports resolved against ``module``)."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def private_imports(source: str, module: str, is_package: bool = False, top: str = "circuitlab") -> list[str]:
    """Every import in ``source`` (the text of ``module``) of another module's private name, as
    ``"module:line imports target._name"``; in-function imports included."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            target = _absolute(module, node, is_package)
            if target != top and not target.startswith(top + "."):
                continue
            private_path = [p for p in target.split(".") if _private(p)]
            for alias in node.names:
                if (private_path or _private(alias.name)) and target != module:
                    found.append(f"{module}:{node.lineno} imports {target}.{alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] != top:
                    continue
                owner = ".".join(parts[:-1])
                if any(_private(p) for p in parts[1:]) and owner != module:
                    found.append(f"{module}:{node.lineno} imports {alias.name}")
    return found


def test_no_module_imports_another_modules_private_name():
    offenders = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        offenders += private_imports(path.read_text(encoding="utf-8"), module_name(path),
                                     is_package=path.name == "__init__.py")
    assert not offenders, ("private names imported across modules (make them public in the module that owns them, "
                           "with a docstring, or move them to circuitlab.core):\n  " + "\n  ".join(offenders))


def test_the_check_finds_private_imports_top_level_lazy_and_relative():
    source = '''
from circuitlab.ffn import _value_vectors, value_tokens
import circuitlab.probing._hidden
from circuitlab.probing._hidden import thing

def f():
    from circuitlab.neurons.ranking import _common_rows
    from .data import _secret
    from . import _sibling
    return _common_rows
'''
    found = private_imports(source, "circuitlab.reproduce.x")
    assert sorted(found) == [
        "circuitlab.reproduce.x:2 imports circuitlab.ffn._value_vectors",
        "circuitlab.reproduce.x:3 imports circuitlab.probing._hidden",
        "circuitlab.reproduce.x:4 imports circuitlab.probing._hidden.thing",
        "circuitlab.reproduce.x:7 imports circuitlab.neurons.ranking._common_rows",
        "circuitlab.reproduce.x:8 imports circuitlab.reproduce.data._secret",
        "circuitlab.reproduce.x:9 imports circuitlab.reproduce._sibling",
    ]


def test_the_check_allows_public_names_dunders_other_packages_and_a_modules_own_names():
    source = '''
from circuitlab.ffn import value_tokens
from circuitlab import __version__
from torch.nn import _reduction
import os._wrap_close
from circuitlab.reproduce.x import _own
'''
    assert private_imports(source, "circuitlab.reproduce.x") == []


def test_module_names():
    assert module_name(PACKAGE_DIR / "probing" / "data.py") == "circuitlab.probing.data"
    assert module_name(PACKAGE_DIR / "probing" / "__init__.py") == "circuitlab.probing"
    assert module_name(PACKAGE_DIR / "core.py") == "circuitlab.core"
