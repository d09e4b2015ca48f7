"""mkdocs hooks for circuitlab's site (mkdocs.yml ``hooks:``): pages generated at build time.

- ``notebooks/*.ipynb`` (the executed notebooks, wherever they are at build time) are added to the site under
  ``notebooks/`` and listed in the nav's "Notebooks" section, so a new notebook needs no edit here; mkdocs-jupyter
  renders them (``execute: false``: their committed outputs are shown).
- ``api/<room>.md``: one API-reference page per package or top-level module of ``src/circuitlab`` (mkdocstrings,
  static analysis with griffe: nothing is imported), listed in the nav's "API reference" section.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "circuitlab"
NOTEBOOKS = ROOT / "notebooks"
#: modules and packages with no page of their own (the CLI's commands are documented by ``circuitlab CMD --help``)
SKIP = {"__init__", "__main__", "cli", "commands"}


def api_modules() -> list[str]:
    """The dotted names that get an API page: each package and each top-level module of circuitlab."""
    names = []
    for p in sorted(PACKAGE.iterdir()):
        name = p.stem
        if name.startswith(("_", ".")) or name in SKIP:
            continue
        if p.is_dir() and (p / "__init__.py").exists() or p.suffix == ".py":
            names.append(name)
    return names


def _submodules(name: str) -> list[str]:
    folder = PACKAGE / name
    if not folder.is_dir():
        return []
    return [f"{name}.{p.stem}" for p in sorted(folder.glob("*.py")) if not p.stem.startswith("_")]


def _summary(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    return doc.strip().split("\n\n")[0].replace("\n", " ")


def api_page(name: str) -> str:
    """The Markdown of one API page: the package's docstring, then each public submodule."""
    lines = [f"# `circuitlab.{name}`", "", f"::: circuitlab.{name}"]
    subs = _submodules(name)
    if subs:
        lines[-1:] = [f"::: circuitlab.{name}", "    options:", "      members: false",
                      "      show_root_heading: false"]
        for sub in subs:
            lines += ["", f"::: circuitlab.{sub}", "    options:", "      heading_level: 2"]
    return "\n".join(lines) + "\n"


def notebooks() -> list[Path]:
    return sorted(NOTEBOOKS.glob("*.ipynb"))


def _title(nb: Path) -> str:
    """The notebook's first Markdown heading (without the ``#``), else its file name."""
    try:
        cells = json.loads(nb.read_text(encoding="utf-8")).get("cells", [])
    except (OSError, ValueError):
        return nb.stem
    for cell in cells:
        if cell.get("cell_type") == "markdown":
            source = "".join(cell.get("source", []))
            for line in source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip().replace("`", "")
            break
    return nb.stem


def on_config(config):
    nav = config["nav"]
    for entry in nav:
        if isinstance(entry, dict) and "Notebooks" in entry:
            entry["Notebooks"] = [entry["Notebooks"][0]] + [{_title(nb): f"notebooks/{nb.name}"} for nb in notebooks()]
        if isinstance(entry, dict) and "API reference" in entry:
            entry["API reference"] = [entry["API reference"][0]] + [
                {f"circuitlab.{n}": f"api/{n}.md"} for n in api_modules()]
    return config


@event_priority(100)  # before mkdocs-jupyter's on_files, so that it renders the notebooks added here
def on_files(files, config):
    for nb in notebooks():
        files.append(File(f"notebooks/{nb.name}", str(ROOT), config["site_dir"], config["use_directory_urls"]))
    for name in api_modules():
        files.append(File.generated(config, f"api/{name}.md", content=api_page(name)))
    return files


def on_page_markdown(markdown, page, config, files):
    """The lists on the Notebooks and API reference pages, from what exists at build time."""
    if "<!-- notebooks -->" in markdown:
        items = [f"- [{_title(nb)}](notebooks/{nb.name}) (`{nb.name}`)" for nb in notebooks()]
        markdown = markdown.replace("<!-- notebooks -->", "\n".join(items) or "(no notebooks)")
    if "<!-- api -->" in markdown:
        items = [f"- [`circuitlab.{n}`](api/{n}.md): {_summary(_source(n))}" for n in api_modules()]
        markdown = markdown.replace("<!-- api -->", "\n".join(items))
    return markdown


_ROLE = re.compile(r":(?:py:)?(?:func|meth|class|mod|attr|data|exc|obj|const):<code>~?([^<]*)</code>")


def on_page_content(html, page, config, files):
    """The docstrings are written for Sphinx as well as for readers of the source: on the API pages a role such as
    ``:func:`sweep``` (rendered ``:func:<code>sweep</code>``) shows as the code alone (``~a.b.c`` as ``c``), and a
    reStructuredText literal-block marker ``::`` ending a paragraph as ``:``."""
    if not page.file.src_uri.startswith("api/"):
        return html

    def code(match):
        name = match[1]
        short = name.rsplit(".", 1)[-1] if match[0].find("~") >= 0 else name
        return f"<code>{short}</code>"

    return _ROLE.sub(code, html).replace("::</p>", ":</p>")


def on_post_page(output, page, config):
    """Two repairs of mkdocs-jupyter's notebook pages.

    - nbconvert's template loads MathJax from ``resources.mathjax_url``; with none configured (the site is
      offline) it writes ``<script src=""></script>``, which the browser would fetch as the page itself.
    - The table of contents is made from the notebook converted to Markdown, where a heading's code span is
      dropped from its id (``#the-circuit-of-found``), while the page's heading keeps it
      (``id="the-circuit-of-zooattn-only-2l-found"``): such a link points to the one heading whose id holds
      the link's words in order.
    """
    if not page.file.src_uri.endswith(".ipynb"):
        return output
    output = output.replace('<script src=""> </script>', "").replace('<script src=""></script>', "")
    ids = set(re.findall(r'<h[1-6][^>]* id="([^"]+)"', output))
    every = set(re.findall(r' id="([^"]+)"', output))

    def repair(match):
        fragment = match[1]
        if fragment in every:
            return match[0]
        words = fragment.split("-")
        found = [i for i in ids if _in_order(words, i.split("-"))]
        return f'href="#{found[0]}"' if len(found) == 1 else match[0]

    return re.sub(r'href="#([^"]+)"', repair, output)


def _in_order(words: list[str], within: list[str]) -> bool:
    it = iter(within)
    return all(w in it for w in words)


def _source(name: str) -> Path:
    folder = PACKAGE / name
    return folder / "__init__.py" if folder.is_dir() else PACKAGE / f"{name}.py"
