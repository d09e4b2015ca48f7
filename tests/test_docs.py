"""The documentation site: built once with warnings as errors, offline, every internal link and anchor resolving,
every page loading in headless Chromium without a console error; and the README as its front door.

The site is built into a temporary folder (``mkdocs build --strict``, as ``make docs`` does); a crawler over the
built HTML checks links and anchors (``<a href>``, ``<img src>``, ``<script src>``, ``<link href>``), and a browser
served from a loopback ``http.server`` opens every page. The browser part needs Debian's ``chromium`` and
``chromium-driver`` (as ``tests/test_browser.py``): it skips without them, except under CI (``CI`` or
``CIRCUITLAB_REQUIRE_BROWSER`` set), where a missing browser is a failure.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import resource
import subprocess
import sys
import threading
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import pytest
from chromium import headless_chromium

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
REPRODUCTIONS = ROOT / "docs" / "reproductions.md"
#: the build's CPU time is printed and bounded (about 15 s on one core; its wall time depends on the machine's load)
BUILD_CPU_BUDGET_S = 60


def _needs_mkdocs():
    for module in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python", "mkdocs_jupyter"):
        pytest.importorskip(module, reason="the docs extra is not installed: pip install -e '.[docs]'")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site, built once into a temporary folder with ``--strict``; yields the folder."""
    _needs_mkdocs()
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT / "src")}
    start, cpu = time.perf_counter(), _children_cpu()
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=600)
    seconds, cpu = time.perf_counter() - start, _children_cpu() - cpu
    print(f"docs build: {seconds:.1f} s, {cpu:.1f} s of CPU")
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    assert "WARNING" not in proc.stderr, proc.stderr[-6000:]
    assert cpu < BUILD_CPU_BUDGET_S, f"the docs took {cpu:.0f} s of CPU to build"
    yield out


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _pages(site: Path) -> list[Path]:
    return sorted(p for p in site.rglob("*.html") if "assets" not in p.relative_to(site).parts)


class _Links(HTMLParser):
    """The ids of one page, and the links it makes (tag, attribute, value)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[tuple[str, str]] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("id", "name") if tag == "a" else ("id",):
            if a.get(key):
                self.ids.add(a[key])
        for key in {"a": ("href",), "link": ("href",), "img": ("src",), "script": ("src",), "source": ("src",),
                    "iframe": ("src",)}.get(tag, ()):
            if a.get(key) is not None:
                self.links.append((tag, a[key]))


@functools.lru_cache(maxsize=None)
def _parse(path: Path) -> _Links:
    parser = _Links()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def _target(site: Path, page: Path, link: str) -> tuple[Path, str]:
    """The file a relative link points to, and its fragment."""
    base = "/" + page.relative_to(site).as_posix()
    url = urlsplit(urljoin(base, link))
    path = unquote(url.path)
    target = site / path.lstrip("/")
    if path.endswith("/") or target.is_dir():
        target = target / "index.html"
    return target, unquote(url.fragment)


def test_the_site_has_the_pages_the_issue_asks_for(site):
    pages = {p.relative_to(site).as_posix() for p in _pages(site)}
    for page in ("index.html", "getting-started/index.html", "reproductions/index.html", "architecture/index.html",
                 "api/index.html", "notebooks/index.html", "induction/index.html", "patching/index.html",
                 "attribution/index.html", "ffn/index.html", "circuits/index.html", "tracing/index.html",
                 "probing/index.html", "neurons/index.html", "concepts/index.html", "attention/index.html",
                 "weights/index.html", "editing/index.html", "superposition/index.html", "saes/index.html"):
        assert page in pages, f"{page} was not built"
    # one API page per package or top-level module, and one page per notebook, whatever exists at build time
    rooms = [p.stem for p in (ROOT / "src" / "circuitlab").iterdir()
             if not p.name.startswith(("_", ".")) and p.stem not in {"cli", "commands"}
             and (p.suffix == ".py" or (p / "__init__.py").exists())]
    assert rooms and all(f"api/{r}/index.html" in pages for r in rooms), sorted(rooms)
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert all(f"notebooks/{nb.stem}/index.html" in pages for nb in notebooks)
    if notebooks:  # rendered by mkdocs-jupyter: its cells are there, not the raw JSON
        html = (site / "notebooks" / notebooks[0].stem / "index.html").read_text(encoding="utf-8")
        assert "jp-Cell" in html and '"cell_type"' not in html
    # the API reference is rendered from the docstrings
    api = (site / "api" / "induction" / "index.html").read_text(encoding="utf-8")
    assert "find_induction_circuit" in api and "Olsson" in api


def test_every_internal_link_and_anchor_resolves(site):
    broken = []
    for page in _pages(site):
        for tag, link in _parse(page).links:
            scheme = urlsplit(link).scheme
            if scheme in ("http", "https", "mailto", "data", "javascript"):
                continue
            if tag != "a" and scheme:
                broken.append((page.relative_to(site).as_posix(), link, "scheme"))
                continue
            target, fragment = _target(site, page, link)
            if not target.exists():
                broken.append((page.relative_to(site).as_posix(), link, "no such file"))
            elif fragment and target.suffix == ".html" and fragment not in _parse(target).ids:
                broken.append((page.relative_to(site).as_posix(), link, "no such anchor"))
    assert not broken, f"{len(broken)} broken links, e.g. {broken[:20]}"


def test_the_site_loads_nothing_from_the_network(site):
    """No CDN fonts, scripts, styles or images: every page's resources are files of the site."""
    remote = []
    for page in _pages(site):
        for tag, link in _parse(page).links:
            if tag != "a" and urlsplit(link).scheme in ("http", "https", ""):
                if link.startswith(("http:", "https:", "//")):
                    remote.append((page.relative_to(site).as_posix(), link))
        text = page.read_text(encoding="utf-8")
        imports = re.findall(r"@import url\([\"']?https?:[^)]*\)", text)
        remote += [(page.relative_to(site).as_posix(), m) for m in imports]
    assert not remote, remote[:20]


# -- the browser ---------------------------------------------------------------------------------------------------

class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # no request log on stderr
        pass


@pytest.fixture(scope="module")
def served(site):
    """The site on a loopback http.server (pages' scripts fetch the search index: file:// would refuse them)."""
    handler = functools.partial(_Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def browser():
    with headless_chromium(window=(1280, 1000)) as driver:
        yield driver


def test_every_page_loads_in_chromium_without_console_errors(site, served, browser):
    errors, remote, empty = [], [], []
    start = time.perf_counter()
    pages = _pages(site)
    for page in pages:
        rel = page.relative_to(site).as_posix()
        browser.get(f"{served}/{rel}")
        errors += [(rel, e["message"]) for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        fetched = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name);")
        remote += [(rel, u) for u in fetched if u.startswith(("http:", "https:")) and not u.startswith(served)]
        if rel != "404.html" and not browser.execute_script(
                "const a = document.querySelector('article'); return a ? a.innerText.trim().length : 0;"):
            empty.append(rel)
    print(f"{len(pages)} pages in Chromium: {time.perf_counter() - start:.1f} s")
    assert not errors, f"console errors: {errors[:20]}"
    assert not remote, f"requests off the loopback server: {remote[:20]}"
    assert not empty, f"pages with no text: {empty}"


def test_search_finds_a_page(site, served, browser):
    """Material's search runs in a web worker on the search index: a query lists the induction page."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{served}/index.html?q=induction")
    WebDriverWait(browser, 30).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, ".md-search-result__item a[href*='induction']"))


# -- the README: the front door ---------------------------------------------------------------------------------------

def _readme_links() -> list[str]:
    text = re.sub(r"```.*?```", "", README.read_text(encoding="utf-8"), flags=re.S)
    return re.findall(r"\]\(([^)\s]+)\)", text)


def test_readme_links_resolve():
    """Every relative link of the README names a file of the repository, and a docs page's anchor exists there
    (mkdocs' and GitHub's heading ids agree for the headings linked: lower case, words joined by hyphens)."""
    broken = []
    for link in _readme_links():
        if urlsplit(link).scheme in ("http", "https", "mailto"):
            continue
        path, _, fragment = link.partition("#")
        if not path:
            continue  # an anchor of the README itself, checked by GitHub's renderer, not here
        target = ROOT / path
        if not target.exists():
            broken.append(link)
        elif fragment and target.suffix == ".md":
            ids = {_slug(h) for h in re.findall(r"^#+ (.+)$", target.read_text(encoding="utf-8"), flags=re.M)}
            if fragment not in ids:
                broken.append(link)
    assert not broken, broken


def _slug(heading: str) -> str:
    return re.sub(r"[\s]+", "-", re.sub(r"[^\w\s-]", "", heading.strip().lower()))


def test_readme_is_a_front_door():
    """About 200-300 lines; the analyses table links a docs page per family; the reproductions table's cells are a
    few words (the published and measured figures are on the reproductions page)."""
    text = README.read_text(encoding="utf-8")
    assert 150 <= len(text.splitlines()) <= 320, len(text.splitlines())
    assert "make demo" in text and "make test" in text
    pages = {Path(link.partition("#")[0]).name for link in _readme_links() if link.startswith("docs/")}
    for page in ("induction.md", "patching.md", "attribution.md", "ffn.md", "circuits.md", "tracing.md",
                 "probing.md", "neurons.md", "concepts.md", "attention.md", "weights.md", "editing.md",
                 "superposition.md", "reproductions.md", "models.md"):
        assert page in pages, f"the README does not link docs/{page}"
    table = text[text.index("<!-- reproduce-table:start -->"):text.index("<!-- reproduce-table:end -->")]
    rows = [r for r in table.splitlines() if r.startswith("| [`")]
    assert rows
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split(" | ")]
        assert len(cells) == 5, row
        assert all(len(c) <= 70 for c in cells[1:]), row


def test_reproductions_page_has_every_finding_and_the_readme_table():
    """Each registered finding has its section (published and measured figures) on the reproductions page, and the
    page's summary table has the README's rows."""
    # the ids, read from the findings' sources (importing the registry would import torch and every analysis;
    # tests/test_reproduce.py checks the registry itself against the README)
    ids = {m for f in (ROOT / "src" / "circuitlab" / "reproduce").glob("*.py")
           for m in re.findall(r'^\s+id="([a-z0-9-]+)",$', f.read_text(encoding="utf-8"), flags=re.M)}
    assert len(ids) >= 30, sorted(ids)
    page = REPRODUCTIONS.read_text(encoding="utf-8")
    for fid in sorted(ids):
        assert f"### `{fid}`" in page, f"docs/reproductions.md lacks {fid}: run make reproduce-table"

    def rows(text):
        table = text[text.index("<!-- reproduce-table:start -->"):text.index("<!-- reproduce-table:end -->")]
        return [re.sub(r"\]\([^)]*\)", "]", r) for r in table.splitlines() if r.startswith("| [`")]

    assert rows(page) == rows(README.read_text(encoding="utf-8"))


def test_reproduce_markdown_goes_into_the_readme_and_the_reproductions_page(tmp_path, capsys, monkeypatch):
    """``circuitlab reproduce --markdown`` prints a five-column summary and one section per run;
    ``docs/_reproduce_table.py`` (``make reproduce-table``) puts the summary in both files, each finding linking to
    its section, and the sections on the page, keeping what is outside the markers."""
    import importlib.util

    from circuitlab.commands.reproduce import _print_table
    from circuitlab.reproduce.registry import Citation, Finding, Measurement, Reproduction

    finding = Finding(id="toy-finding-holds", citation=Citation("Doe et al.", 2020, "A paper", url="https://x.org/p"),
                      claim="A claim | with a bar.", published="a long published figure " * 20,
                      published_model="big-model", models=("zoo/attn-only-2l",), measure=lambda m, s: None,
                      rule="reproduced if it holds.", seconds=1.0)
    runs = [Reproduction(finding, "zoo/attn-only-2l", Measurement("measured 0.9", "reproduced", "it holds"), 1.25, 0),
            Reproduction(finding, "toy ReLU models, 5 features (trained here)", Measurement("0.1", "partly", ""), 3, 0)]
    _print_table(runs, markdown=True)
    out = capsys.readouterr().out
    assert out.count("| `") == 2  # one row per run (tests/test_reproduce.py counts rows this way)
    assert "| `toy-finding-holds` | Doe et al. 2020 | zoo/attn-only-2l | **reproduced** | 1.2 |" in out
    assert "| `toy-finding-holds` | Doe et al. 2020 | toy ReLU models | **partly** | 3.0 |" in out
    assert out.count("### `toy-finding-holds`") == 2 and "[Doe et al. 2020](https://x.org/p)" in out
    assert "a long published figure" not in out.split("### ")[0]  # the figures are in the sections, not the table
    assert "- **Verdict**: reproduced: it holds" in out and "--model toy ReLU" in out

    spec = importlib.util.spec_from_file_location("_reproduce_table", ROOT / "docs" / "_reproduce_table.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    (tmp_path / "docs").mkdir()
    readme, page, output = tmp_path / "README.md", tmp_path / "docs" / "reproductions.md", tmp_path / "out.txt"
    readme.write_text("# x\n<!-- reproduce-table:start -->\nSTALE\n<!-- reproduce-table:end -->\nafter\n")
    page.write_text("intro\n<!-- reproduce-table:start -->\n<!-- reproduce-table:end -->\nmiddle\n"
                    "<!-- reproduce-details:start -->\nSTALE\n<!-- reproduce-details:end -->\nend\n")
    output.write_text("\nthe runs' own lines\n" + out)
    monkeypatch.setattr(script, "ROOT", tmp_path)
    script.main(str(output))
    r, p = readme.read_text(), page.read_text()
    assert "| [`toy-finding-holds`](docs/reproductions.md#toy-finding-holds) | Doe" in r and "STALE" not in r
    assert r.startswith("# x\n") and r.endswith("<!-- reproduce-table:end -->\nafter\n") and "###" not in r
    assert "| [`toy-finding-holds`](#toy-finding-holds) | Doe" in p and p.count("### `toy-finding-holds`") == 2
    assert "STALE" not in p and "the runs' own lines" not in p and p.startswith("intro\n") and p.endswith("end\n")
