"""The notebooks in notebooks/: each is a pair, a jupytext percent-format source ``NN_name.py`` and the committed
``NN_name.ipynb`` with the outputs of one run (``notebooks/run_notebooks.py`` writes them; ``make notebooks-run``).

- **Drift**: a source and its notebook must hold the same cells (kind and text), read with jupytext.
- **Committed with outputs**: every code cell of a notebook this machine can run has its outputs; the file stays
  under ``SIZE_CAP`` (1.6 MB); no output holds an absolute path, a memory address or this checkout's location.
- **Outputs reproduce** (slow): each notebook is executed afresh (nbclient, the running interpreter's ``python3``
  kernel, CPU, one thread, the way ``run_notebooks.py`` does) and its outputs compared with the committed ones:
  text (streams, plain text, HTML, SVG) must be equal after normalising numbers, each number within a relative
  1e-4, an absolute 1e-6, or one unit of its last printed decimal; PNG images must have the same size and a mean
  pixel difference (RGBA in 0..1) of at most 0.01. A cell that writes anything to stderr other than a progress
  bar also fails: a warning there (say, tqdm's "IProgress not found") is what a reader would see first.

Notebooks that need a model download say so in their metadata (``{"circuitlab": {"needs_network": true}}``) and
skip offline; set ``CIRCUITLAB_NETWORK_NOTEBOOKS=1`` (with network access) to run them too. The metadata also lists
the zoo models a notebook loads (``zoo_models``) and the real pretrained models it loads from PyPI packages
(``real_models``, see :mod:`circuitlab.models.real`): a notebook whose real model's package is not installed is
skipped, with the command that installs it (a failure where ``CIRCUITLAB_REQUIRE_REAL`` is set, as ``make test``
does); such notebooks also carry the ``real`` mark."""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
jupytext = pytest.importorskip("jupytext")

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = ROOT / "notebooks"


def _load_runner():
    spec = importlib.util.spec_from_file_location("run_notebooks", NOTEBOOK_DIR / "run_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("run_notebooks", module)
    spec.loader.exec_module(module)
    return module


runner = _load_runner()
SOURCES = runner.sources()
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
stderr_lines = runner.stderr_lines


def _meta(nb) -> dict:
    return nb.metadata.get("circuitlab", {})


def _needs_network(nb) -> bool:
    return bool(_meta(nb).get("needs_network", False))


def _real_models(nb) -> list[str]:
    return list(_meta(nb).get("real_models", []))


# -- the helpers, against hand-made cases ---------------------------------------------------------------------------

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


@pytest.mark.parametrize("old, new, same", [
    ("loss 2.31 nats (chance 4.16)", "loss 2.31 nats (chance 4.16)", True),
    ("loss 2.31 nats", "loss 2.32 nats", True),           # one unit of the last printed decimal: a rounding flip
    ("loss 2.31 nats", "loss 2.33 nats", False),
    ("corr 0.123456789", "corr 0.123460000", True),       # within a relative 1e-4
    ("corr 0.123456789", "corr 0.124456789", False),
    ("diff 1.5e-07", "diff 9.1e-07", True),               # both within the absolute 1e-6
    ("diff 1.5e-07", "diff 3.1e-05", False),
    ("L1H3 -> L0H2", "L1H2 -> L0H2", False),              # digits in names are numbers: 3 vs 2 is no rounding
    ("induction heads [(1, 3)]", "induction heads [(1, 3), (1, 0)]", False),
    ("edges 12", "nodes 12", False),
])
def test_text_comparison(old, new, same):
    assert (runner.text_differs(old, new) is None) is same


def test_output_comparison_of_images_and_kinds():
    import base64
    import io

    from nbformat.v4 import new_output
    from PIL import Image

    def png(colour, size=(20, 10)):
        buf = io.BytesIO()
        Image.new("RGB", size, colour).save(buf, format="PNG")
        return base64.b64encode(buf.getvalue()).decode()

    def image(data):
        return new_output("display_data", data={"image/png": data, "text/plain": "<Figure size 20x10>"})

    assert runner.output_differs(image(png((255, 255, 255))), image(png((254, 255, 255)))) is None
    assert "pixels" in runner.output_differs(image(png((255, 255, 255))), image(png((0, 0, 0))))
    assert "size" in runner.output_differs(image(png((0, 0, 0))), image(png((0, 0, 0), (21, 10))))
    text = new_output("display_data", data={"text/plain": "1.0"})
    assert "kinds" in runner.output_differs(text, image(png((0, 0, 0))))
    assert runner.output_differs(new_output("stream", name="stdout", text="a 1.0\n"),
                                 new_output("stream", name="stderr", text="a 1.0\n"))


def test_comparison_joins_the_pieces_of_a_stream():
    """Two prints may reach the notebook as one stream output or two, depending on timing."""
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    def nb(*texts):
        return new_notebook(cells=[new_code_cell("x", outputs=[new_output("stream", name="stdout", text=t)
                                                               for t in texts])])

    assert runner.compare(nb("before 1.00\n", "after 0.50\n"), nb("before 1.00\nafter 0.50\n")) == []
    assert runner.compare(nb("before 1.00\n", "after 0.50\n"), nb("before 1.00\nafter 0.90\n")) != []


# -- every notebook: a pair, in sync, committed with outputs --------------------------------------------------------

def test_there_are_offline_notebooks():
    offline = [p.name for p in NOTEBOOKS if not _needs_network(nbformat.read(p, as_version=4))]
    assert len(offline) >= 3, offline


def test_every_notebook_has_a_source_and_every_source_a_notebook():
    assert [p.stem for p in NOTEBOOKS] == [p.stem for p in SOURCES]


def _cells(nb) -> list[tuple[str, str]]:
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


@pytest.mark.parametrize("source", SOURCES, ids=[p.stem for p in SOURCES])
def test_source_and_notebook_have_the_same_cells(source):
    """No drift: the committed notebook is the source's cells (edit the .py, then run_notebooks.py)."""
    nb = nbformat.read(runner.paired(source), as_version=4)
    from_source = jupytext.read(source)
    assert _cells(nb) == _cells(from_source), (
        f"{source.name} and {runner.paired(source).name} differ: regenerate with "
        f"`python notebooks/run_notebooks.py {source.name[:2]}`")
    assert _meta(nb) == _meta(from_source)


#: what must not appear in a committed output: a memory address (an object's repr), an absolute path of this
#: machine, the checkout
MACHINE_SPECIFIC = re.compile(r" at 0x[0-9a-fA-F]{6,}|/tmp/|/home/|/Users/|/root/|" + re.escape(str(ROOT)))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_with_outputs(path):
    """Valid nbformat, under the size cap, every code cell executed in order (a notebook that downloads a model
    is committed without outputs), and nothing machine-specific in the outputs."""
    assert path.stat().st_size <= runner.SIZE_CAP, f"{path.name}: {path.stat().st_size:,} bytes"
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    if _needs_network(nb):
        assert all(not c.outputs and c.execution_count is None for c in code), path.name
        return
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), f"{path.name}: not one full run"
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            assert out.output_type != "error", f"{path.name} cell {i}: an error"
            text = nbformat.writes(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(outputs=[out])]))
            found = MACHINE_SPECIFIC.search(text)
            assert not found, f"{path.name} cell {i}: machine-specific output {found.group(0)!r}"


def _run_params():
    """One parameter per notebook; those that load a real model also carry the ``real`` mark."""
    out = []
    for p in SOURCES:
        marks = [pytest.mark.real] if _real_models(jupytext.read(p)) else []
        out.append(pytest.param(p, marks=marks, id=p.stem))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("source", _run_params())
def test_notebook_reproduces_its_outputs(source, tmp_path):
    nb = runner.read_source(source)
    if _needs_network(nb) and not os.environ.get("CIRCUITLAB_NETWORK_NOTEBOOKS"):
        pytest.skip(f"{source.stem} downloads a pretrained model (needs_network in its metadata); skipped offline. "
                    "Set CIRCUITLAB_NETWORK_NOTEBOOKS=1 with network access to run it.")
    import circuitlab

    missing = [m for m in _meta(nb).get("zoo_models", []) if m not in circuitlab.list_models()]
    if missing:
        # the zoo ships with the repository, so this only happens in a checkout whose zoo is still being built
        pytest.skip(f"{source.stem} loads {', '.join(missing)}, which is not installed (build it: make zoo)")
    from circuitlab.models.real import real_models

    known = real_models()
    for name in _real_models(nb):
        if name not in known:
            pytest.fail(f"{source.stem} lists real model {name!r}, which circuitlab does not know ({', '.join(known)})")
        if not known[name].installed:
            why = (f"{source.stem} loads the real model {name!r}, whose PyPI package is not installed; "
                   f"install it with: {known[name].install}")
            if os.environ.get("CIRCUITLAB_REQUIRE_REAL"):
                pytest.fail(why + " (make test installs it; CIRCUITLAB_REQUIRE_REAL is set)")
            pytest.skip(why)
    try:
        fresh = runner.execute(source, out_dir=tmp_path)
    except nbclient.exceptions.CellExecutionError as exc:
        pytest.fail(f"{source.name}: a cell failed:\n{exc}")
    # every code cell ran
    ran = [c for c in fresh.cells if c.cell_type == "code" and c.source.strip()]
    assert all(c.execution_count for c in ran)
    # and wrote no warning (nor anything else but progress bars) to stderr
    written = stderr_lines(fresh)
    assert not written, f"{source.name} writes to stderr:\n" + "\n".join(f"  cell {i}: {line}" for i, line in written)
    committed = nbformat.read(runner.paired(source), as_version=4)
    differences = runner.compare(committed, fresh)
    assert not differences, (f"{source.stem}'s outputs differ from the committed ones (if the change is meant, "
                             f"regenerate: `python notebooks/run_notebooks.py {source.name[:2]}`):\n  "
                             + "\n  ".join(differences[:20]))
