"""Execute every notebook in notebooks/ (nbclient, the running interpreter's ``python3`` kernel) and fail on
any cell error. Notebooks that need a model download say so in their metadata
(``{"circuitlab": {"needs_network": true}}``) and skip offline; set ``CIRCUITLAB_NETWORK_NOTEBOOKS=1`` (with
network access) to run them too. The metadata also lists the zoo models a notebook loads (``zoo_models``) and the
real pretrained models it loads from PyPI packages (``real_models``, see :mod:`circuitlab.models.real`): a
notebook whose real model's package is not installed is skipped, with the command that installs it (a failure
where ``CIRCUITLAB_REQUIRE_REAL`` is set, as ``make test`` does); such notebooks also carry the ``real`` mark.
A notebook also fails if a cell writes anything to stderr other than a progress bar: a warning there (say, tqdm's
"IProgress not found") is what a reader of the notebook would see first."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
#: seconds any one cell may take
CELL_TIMEOUT = 300


def _needs_network(nb) -> bool:
    return bool(nb.metadata.get("circuitlab", {}).get("needs_network", False))


def _real_models(nb) -> list[str]:
    return list(nb.metadata.get("circuitlab", {}).get("real_models", []))


#: a tqdm progress bar as it reaches a notebook's stderr: "desc:  40%|####      | 4/10 [00:01<00:02, 3.1it/s]"
PROGRESS_BAR = re.compile(r"^.*\d+%\|.*\| *\d+/\d+ \[.*\]\s*$")
#: circuitlab's own one-time status lines: a real model converted into an empty cache (as on a fresh CI machine)
STATUS = re.compile(r"^circuitlab: (converting \S+ from its PyPI package|converted \S+ in )")


def stderr_lines(nb) -> list[tuple[int, str]]:
    """What the executed notebook's cells wrote to stderr, as (cell number, line), less progress bars (tqdm
    redraws with carriage returns and clears itself with blanks: every piece counts as a line) and the status
    lines of a first conversion of a real model."""
    found = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if out.output_type == "stream" and out.name == "stderr":
                found += [(i, line) for line in re.split(r"[\r\n]", out.text)
                          if line.strip() and not PROGRESS_BAR.match(line) and not STATUS.match(line)]
    return found


def test_stderr_lines_keeps_warnings_and_drops_progress_bars():
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    bar = ("patching z:  50%|#####     | 4/8 [00:00<00:00, 12.25it/s]\r"
           "patching z: 100%|##########| 8/8 [00:00<00:00]\r  \n")
    warning = "/x/tqdm/auto.py:21: TqdmWarning: IProgress not found. Please update jupyter and ipywidgets."
    nb = new_notebook(cells=[
        new_code_cell("a", outputs=[new_output("stream", name="stderr", text=bar),
                                    new_output("stream", name="stdout", text="Warning: printed, not stderr\n")]),
        new_code_cell("b", outputs=[new_output("stream", name="stderr", text=bar + warning + "\n  import x\n")]),
        new_code_cell("c", outputs=[new_output("stream", name="stderr", text=(
            "circuitlab: converting gemma-3-270m from its PyPI package to fp32, once; "
            "cached in cache (about a minute)\n"
            "circuitlab: converted gemma-3-270m in 55 s\ncircuitlab: something else\n"))]),
    ])
    assert stderr_lines(nb) == [(1, warning), (1, "  import x"), (2, "circuitlab: something else")]


def _run_params():
    """One parameter per notebook; those that load a real model also carry the ``real`` mark."""
    out = []
    for p in NOTEBOOKS:
        marks = [pytest.mark.real] if _real_models(nbformat.read(p, as_version=4)) else []
        out.append(pytest.param(p, marks=marks, id=p.stem))
    return out


def test_there_are_offline_notebooks():
    offline = [p.name for p in NOTEBOOKS if not _needs_network(nbformat.read(p, as_version=4))]
    assert len(offline) >= 3, offline


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_clean(path):
    """Valid nbformat, no outputs or execution counts in the repository (outputs come from running it)."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name} has outputs; clear them"


@pytest.mark.slow
@pytest.mark.parametrize("path", _run_params())
def test_notebook_runs(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    if _needs_network(nb) and not os.environ.get("CIRCUITLAB_NETWORK_NOTEBOOKS"):
        pytest.skip(f"{path.name} downloads a pretrained model (needs_network in its metadata); skipped offline. "
                    "Set CIRCUITLAB_NETWORK_NOTEBOOKS=1 with network access to run it.")
    import circuitlab

    missing = [m for m in nb.metadata.get("circuitlab", {}).get("zoo_models", []) if m not in circuitlab.list_models()]
    if missing:
        # the zoo ships with the repository, so this only happens in a checkout whose zoo is still being built
        pytest.skip(f"{path.name} loads {', '.join(missing)}, which is not installed (build it: make zoo)")
    from circuitlab.models.real import real_models

    known = real_models()
    for name in _real_models(nb):
        if name not in known:
            pytest.fail(f"{path.name} lists real model {name!r}, which circuitlab does not know ({', '.join(known)})")
        if not known[name].installed:
            why = (f"{path.name} loads the real model {name!r}, whose PyPI package is not installed; "
                   f"install it with: {known[name].install}")
            if os.environ.get("CIRCUITLAB_REQUIRE_REAL"):
                pytest.fail(why + " (make test installs it; CIRCUITLAB_REQUIRE_REAL is set)")
            pytest.skip(why)
    client = nbclient.NotebookClient(
        nb, timeout=CELL_TIMEOUT, kernel_name="python3", allow_errors=False,
        # run where the notebook lives, so relative paths in it work; files it writes go to tmp_path
        resources={"metadata": {"path": str(path.parent)}},
    )
    env = {"CIRCUITLAB_NOTEBOOK_OUT": str(tmp_path), "TQDM_DISABLE": "1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as exc:
        pytest.fail(f"{path.name}: a cell failed:\n{exc}")
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    # every code cell ran
    ran = [c for c in nb.cells if c.cell_type == "code" and c.source.strip()]
    assert all(c.execution_count for c in ran)
    # and wrote no warning (nor anything else but progress bars) to stderr
    written = stderr_lines(nb)
    assert not written, f"{path.name} writes to stderr:\n" + "\n".join(f"  cell {i}: {line}" for i, line in written)
