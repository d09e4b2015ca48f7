"""Execute the notebooks' sources and write them, with their outputs, to the paired ``.ipynb`` files.

Each notebook is a pair (see ``jupytext.toml``): ``NN_name.py`` in jupytext's percent format is the source to edit
and review; ``NN_name.ipynb`` holds the same cells with the outputs of one run, committed so that a visitor of the
repository sees figures and numbers. This script runs the sources on CPU, one torch thread, progress bars off,
fixed hash seed, and writes the ``.ipynb`` files::

    python notebooks/run_notebooks.py                 # every notebook whose models are installed
    python notebooks/run_notebooks.py 01 07           # those whose names start with 01 or 07
    python notebooks/run_notebooks.py --check         # run, write nothing, exit 1 if any output changed

``make notebooks-run`` runs the first form. ``tests/test_notebooks.py`` imports :func:`execute` and
:func:`compare` from here, so the test and the regeneration run notebooks the same way. Files a notebook writes
(reports) go to a temporary folder (``$CIRCUITLAB_NOTEBOOK_OUT``).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import copy
import io
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Iterator, Optional

HERE = Path(__file__).resolve().parent
#: seconds any one cell may take
CELL_TIMEOUT = 300
#: the largest committed .ipynb, in bytes (outputs included)
SIZE_CAP = 1_600_000
#: numbers in text outputs agree when within this relative tolerance, this absolute tolerance, or one unit of the
#: last decimal place printed (a value printed as 0.124 may print as 0.123 after a change in the 7th digit)
REL_TOL, ABS_TOL = 1e-4, 1e-6
#: PNG images agree when they have the same size and their pixels (0..1, RGBA) differ by at most this on average
PNG_TOL = 0.01

#: the environment of the kernel: CPU, one thread, no progress bars, a fixed hash seed
KERNEL_ENV = {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TQDM_DISABLE": "1",
              "PYTHONHASHSEED": "0", "MPLBACKEND": "module://matplotlib_inline.backend_inline"}


def sources(prefixes: tuple[str, ...] = ()) -> list[Path]:
    """The notebooks' percent-format sources (``notebooks/NN_*.py``), those starting with one of ``prefixes``."""
    found = sorted(p for p in HERE.glob("[0-9][0-9]_*.py"))
    return [p for p in found if not prefixes or p.name.startswith(prefixes)]


def why_not_run(nb) -> Optional[str]:
    """Why this machine cannot run ``nb``, or None: its ``circuitlab`` metadata says it downloads a model
    (``needs_network``; run it with ``CIRCUITLAB_NETWORK_NOTEBOOKS=1``), loads a zoo model not built, or a real
    model whose PyPI package is not installed."""
    import circuitlab
    from circuitlab.models.real import real_models

    meta = nb.metadata.get("circuitlab", {})
    if meta.get("needs_network") and not os.environ.get("CIRCUITLAB_NETWORK_NOTEBOOKS"):
        return "downloads a pretrained model (needs_network); set CIRCUITLAB_NETWORK_NOTEBOOKS=1 to run it"
    missing = [m for m in meta.get("zoo_models", []) if m not in circuitlab.list_models()]
    if missing:
        return f"loads {', '.join(missing)}, which is not built (make zoo)"
    known = real_models()
    for name in meta.get("real_models", []):
        if name not in known:
            return f"lists real model {name!r}, which circuitlab does not know"
        if not known[name].installed:
            return f"loads the real model {name!r}, whose package is not installed ({known[name].install})"
    return None


def paired(source: Path) -> Path:
    """The committed notebook paired with ``source``."""
    return source.with_suffix(".ipynb")


def read_source(source: Path):
    """The notebook of a percent-format source (jupytext), with stable cell ids ``c00``, ``c01``, ...: a rerun
    changes only what changed."""
    import jupytext

    nb = jupytext.read(source)
    for i, cell in enumerate(nb.cells):
        cell.id = f"c{i:02d}"
    return nb


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def execute(source: Path, out_dir: Optional[Path] = None):
    """Run the notebook of ``source`` in a fresh ``python3`` kernel (this interpreter's), in ``notebooks/`` so that
    relative paths work, and return it with its outputs. Raises ``nbclient.exceptions.CellExecutionError`` when a
    cell fails."""
    import nbclient

    nb = read_source(source)
    with tempfile.TemporaryDirectory() as tmp, \
            _environ({**KERNEL_ENV, "CIRCUITLAB_NOTEBOOK_OUT": str(out_dir or tmp)}):
        client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3", allow_errors=False,
                                         resources={"metadata": {"path": str(HERE)}})
        client.execute()
    return tidy(nb)


VIEW_ID = re.compile(r"cl-view-[0-9a-f]{12}")
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


def coalesce(outputs: list) -> list:
    """``outputs`` with consecutive stream outputs of the same stream joined into one: how a cell's printing is cut
    into messages depends on timing (two prints may arrive as one output or two)."""
    joined: list = []
    for out in outputs:
        if (out.get("output_type") == "stream" and joined and joined[-1].get("output_type") == "stream"
                and joined[-1]["name"] == out["name"]):
            joined[-1]["text"] = _text(joined[-1]["text"]) + _text(out["text"])
        else:
            joined.append(out)
    return joined


def tidy(nb):
    """``nb``'s outputs made reproducible and small: no wall-clock times in the cells' metadata; circuitsvis views
    numbered in order (``cl-view-1``, ...) instead of their random ids; circuitsvis's JavaScript bundle (1.3 MB)
    kept in the first output that carries it and removed from the others (their views render with the bundle the
    first one loaded, as in a report); stderr outputs that hold only progress bars or status lines dropped."""
    import nbformat.v4

    from circuitlab.render.bundle import count_bundles, strip_bundles

    ids: dict[str, str] = {}
    seen_bundle = False
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if cell.cell_type != "code":
            continue
        # stderr that is only progress bars or a real model's one-time conversion notice: not a result
        cell.outputs = coalesce([out for out in cell.outputs if not (
            out.output_type == "stream" and out.name == "stderr"
            and not stderr_lines(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(outputs=[out])])))])
        for out in cell.get("outputs", []):
            html = out.get("data", {}).get("text/html")
            if html is None:
                continue
            html = "".join(html) if isinstance(html, list) else html
            html = VIEW_ID.sub(lambda m: ids.setdefault(m.group(0), f"cl-view-{len(ids) + 1}"), html)
            if count_bundles(html):
                if seen_bundle:
                    html = strip_bundles(html)
                seen_bundle = True
            out["data"]["text/html"] = html
    return nb


def write(nb, path: Path) -> int:
    """Write ``nb`` to ``path`` (validated) and return its size in bytes."""
    import nbformat

    nbformat.validate(nb)
    nbformat.write(nb, path)
    return path.stat().st_size


# -- comparing outputs --------------------------------------------------------------------------------------------

NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def _close(a: str, b: str) -> bool:
    x, y = float(a), float(b)
    if x == y:
        return True
    decimals = max(len(s.split(".")[1]) if "." in s and "e" not in s.lower() else 0 for s in (a, b))
    step = 10.0 ** -decimals if decimals else 0.0
    return abs(x - y) <= max(REL_TOL * max(abs(x), abs(y)), ABS_TOL, step * 1.0001)


def text_differs(old: str, new: str) -> Optional[str]:
    """Why two text outputs differ, or None: the text between numbers must be equal and each number close (see
    :data:`REL_TOL`)."""
    old_parts, new_parts = NUMBER.split(old), NUMBER.split(new)
    if old_parts != new_parts:
        for i, (a, b) in enumerate(zip(old_parts, new_parts)):
            if a != b:
                return f"text differs near {a[:60]!r} / {b[:60]!r}"
        return f"text differs in length ({len(old_parts)} / {len(new_parts)} pieces)"
    for a, b in zip(NUMBER.findall(old), NUMBER.findall(new)):
        if not _close(a, b):
            return f"number {a} became {b}"
    return None


def _png_differs(old: str, new: str) -> Optional[str]:
    import numpy as np
    from PIL import Image

    a, b = (np.asarray(Image.open(io.BytesIO(base64.b64decode(s))).convert("RGBA"), dtype=float) / 255
            for s in (old, new))
    if a.shape != b.shape:
        return f"image size {a.shape[:2]} became {b.shape[:2]}"
    mean = float(np.abs(a - b).mean())
    return None if mean <= PNG_TOL else f"image pixels differ by {mean:.4f} on average (> {PNG_TOL})"


def _text(value) -> str:
    return "".join(value) if isinstance(value, list) else str(value)


def output_differs(old: dict, new: dict) -> Optional[str]:
    """Why two outputs of a cell differ, or None. Streams, plain text, HTML, SVG, markdown and LaTeX are compared as
    text with tolerant numbers (:func:`text_differs`); PNG images by size and mean pixel difference. (:func:`compare`
    joins consecutive pieces of one stream first.)"""
    if old.get("output_type") != new.get("output_type"):
        return f"output type {old.get('output_type')} became {new.get('output_type')}"
    if old["output_type"] == "stream":
        if old["name"] != new["name"]:
            return f"stream {old['name']} became {new['name']}"
        return text_differs(_text(old["text"]), _text(new["text"]))
    if old["output_type"] == "error":
        return text_differs(old.get("evalue", ""), new.get("evalue", ""))
    a, b = old.get("data", {}), new.get("data", {})
    if sorted(a) != sorted(b):
        return f"output kinds {sorted(a)} became {sorted(b)}"
    for kind in sorted(a):
        why = (_png_differs(_text(a[kind]), _text(b[kind])) if kind == "image/png"
               else text_differs(_text(a[kind]), _text(b[kind])))
        if why:
            return f"{kind}: {why}"
    return None


def compare(old_nb, new_nb) -> list[str]:
    """Every difference between the outputs of two runs of the same notebook, as ``cell N: why``."""
    found = []
    if len(old_nb.cells) != len(new_nb.cells):
        return [f"{len(old_nb.cells)} cells became {len(new_nb.cells)}"]
    for i, (a, b) in enumerate(zip(old_nb.cells, new_nb.cells)):
        if a.cell_type != "code":
            continue
        old, new = coalesce(copy.deepcopy(a.outputs)), coalesce(copy.deepcopy(b.outputs))
        if len(old) != len(new):
            found.append(f"cell {i}: {len(old)} outputs became {len(new)}")
            continue
        for x, y in zip(old, new):
            why = output_differs(x, y)
            if why:
                found.append(f"cell {i}: {why}")
    return found


def main(argv: Optional[list[str]] = None) -> int:
    import nbclient
    import nbformat

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("prefixes", nargs="*", help="run only the notebooks whose names start with these")
    parser.add_argument("--check", action="store_true", help="compare with the committed outputs, write nothing")
    args = parser.parse_args(argv)
    failed = 0
    for source in sources(tuple(args.prefixes)):
        nb = read_source(source)
        why = why_not_run(nb)
        if why:
            if nb.metadata.get("circuitlab", {}).get("needs_network") and not args.check:
                # never run here: committed without outputs, its cells kept in step with the source
                write(nb, paired(source))
                why += "; written without outputs"
            print(f"skipped {source.stem}: it {why}")
            continue
        try:
            nb = execute(source)
        except nbclient.exceptions.CellExecutionError as exc:
            failed += 1
            print(f"{source.stem}: a cell failed; nothing written\n{exc}")
            continue
        target = paired(source)
        if args.check:
            problems = compare(nbformat.read(target, as_version=4), nb)
            failed += bool(problems)
            print(f"{target.name}: " + ("; ".join(problems) if problems else "outputs unchanged"))
            continue
        size = write(nb, target)
        flag = "" if size <= SIZE_CAP else f" - over the cap of {SIZE_CAP:,} bytes"
        failed += size > SIZE_CAP
        print(f"wrote {target.name} ({size / 1e3:,.0f} kB){flag}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
