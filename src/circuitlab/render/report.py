"""Self-contained HTML reports: one file, every result, works offline.

    from circuitlab.render import report, Section
    report([scores, Section("Patching", [sweep, heads], text="..."), "A closing remark."], "report.html",
           title="Induction in zoo/attn-only-2l")

The page carries circuitsvis's JavaScript once (in ``<head>``) and each view mounts from it; it links to no
external file, font or script, so it opens the same on a laptop on a plane as in CI.
"""

from __future__ import annotations

import datetime as _dt
import html
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from circuitlab.core import shorten
from circuitlab.errors import InputError
from circuitlab.render.bundle import bundle_script, count_bundles, fragment_mode, strip_bundles
from circuitlab.render.style import CSS

PAGE_CSS = """
body { margin: 0; background: #fafafa; color: #111; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 1.5em 2em 4em 2em; background: #fff; }
h1 { font-size: 1.7em; margin: 0.3em 0 0.1em 0; }
h2 { font-size: 1.3em; margin: 1.8em 0 0.4em 0; padding-top: 0.6em; border-top: 1px solid #e5e5e5; }
.cl-sub { color: #555; font-size: 0.9em; margin: 0 0 1em 0; }
nav.cl-contents { background: #f4f6fa; border: 1px solid #e3e7ef; padding: 0.5em 1.2em; display: inline-block; }
nav.cl-contents ol { margin: 0.3em 0; padding-left: 1.4em; }
.cl-prose { max-width: 52em; }
footer { color: #777; font-size: 0.8em; margin-top: 3em; }
"""

#: references that would make a page depend on the network
_EXTERNAL = re.compile(
    r"""(?:\b(?:src|href|action|poster|data)\s*=\s*["']?\s*(?:https?:)?//)"""
    r"""|(?:url\(\s*["']?\s*(?:https?:)?//)|(?:@import\s+(?:url\()?\s*["']?\s*(?:https?:)?//)"""
    r"""|(?:\bimport\s[^;]*?from\s*["'](?:https?:)?//)""",
    re.IGNORECASE,
)


@dataclass
class Section:
    """A headed group of report items with an optional paragraph of text.

    Attributes:
        title: the heading (also listed in the report's contents).
        items: anything :func:`report` accepts, nested sections included.
        text: plain text shown under the heading (blank lines separate paragraphs).
    """

    title: str
    items: Sequence[Any] = field(default_factory=list)
    text: str = ""


@dataclass
class HTML:
    """Raw HTML for a report (use a plain ``str`` for text: it gets escaped)."""

    html: str
    title: str = ""

    def to_html(self) -> str:
        return self.html


@dataclass
class Bullets:
    """A titled list of plain-text lines (escaped), e.g. the headline findings of a run."""

    lines: Sequence[str]
    title: str = ""

    def to_html(self) -> str:
        return "<ul class='cl-prose'>" + "".join(f"<li>{html.escape(line)}</li>" for line in self.lines) + "</ul>"


def _paragraphs(text: str) -> str:
    paras = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    return "\n".join(f"<p>{html.escape(p)}</p>" for p in paras)


def _plain(text: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", text)).strip()


def _first_heading(fragment: str) -> str:
    m = re.search(r"<h[1-4][^>]*>(.*?)</h[1-4]>", fragment, flags=re.S | re.I)
    return _plain(m.group(1)) if m else ""


def _drop_heading(fragment: str, title: str) -> str:
    """Remove the fragment's first heading when it repeats the section title (the section prints it)."""
    m = re.search(r"<h([1-4])[^>]*>(.*?)</h\1>", fragment, flags=re.S | re.I)
    if m and _plain(m.group(2)) == title:
        return fragment[: m.start()] + fragment[m.end():]
    return fragment


def _item_fragment(item: Any) -> str:
    """One item's HTML, built in fragment mode (no per-item bundle or stylesheet)."""
    if isinstance(item, str):
        return f"<div class='cl-prose'>{_paragraphs(item)}</div>"
    if hasattr(item, "to_html"):
        return str(item.to_html())
    if hasattr(item, "local_src"):  # circuitsvis's RenderedHTML
        return item.local_src
    if hasattr(item, "_repr_html_"):
        return str(item._repr_html_())
    raise InputError(
        f"a report item must be text, a Section, or have a to_html() method; got {type(item).__name__}. "
        "Wrap raw HTML in circuitlab.render.HTML(...)."
    )


def _item_title(item: Any, fragment: str) -> str:
    for attr in ("title", "name"):
        value = getattr(item, attr, None)
        if isinstance(value, str) and value:
            return value
    if _first_heading(fragment):
        return _first_heading(fragment)
    if hasattr(item, "component"):  # an untitled View: name it by its circuitsvis component
        return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", item.component).capitalize()
    if hasattr(item, "local_src"):
        return "circuitsvis view"
    return type(item).__name__


def _meta_line(item: Any, fragment: str) -> str:
    """'model: ... · task: ...' for items that know it but whose HTML doesn't say so."""
    if "cl-meta" in fragment:
        return ""
    facts = [(k, getattr(item, k, None)) for k in ("metric", "model", "task")]
    facts = [f"{k}: {html.escape(str(v))}" for k, v in facts if isinstance(v, str) and v]
    return "<p class='cl-meta'>" + " · ".join(facts) + "</p>" if facts else ""


class _Builder:
    def __init__(self) -> None:
        self.contents: list[tuple[int, str, str]] = []  # (depth, anchor, title)
        self.models: list[str] = []
        self.titles: dict[str, int] = {}  # section title -> how many sections use it so far

    def _unique(self, title: str) -> str:
        """``title``, or ``"title (2)"``, ``"title (3)"``... when an earlier section has it: no two sections (and no
        two entries of the contents) share a title."""
        n = self.titles.get(title, 0) + 1
        self.titles[title] = n
        shown = title if n == 1 else f"{title} ({n})"
        while n > 1 and shown in self.titles:  # "X (2)" written out by someone else already
            n += 1
            shown = f"{title} ({n})"
        if shown != title:
            self.titles[shown] = 1
        return shown

    def _anchor(self, title: str) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:40] or "section"
        return f"s{len(self.contents) + 1}-{slug}"  # the running number keeps anchors unique

    def section(self, item: Any, depth: int) -> str:
        model = getattr(item, "model", None)
        if isinstance(model, str) and model and model not in self.models:
            self.models.append(model)
        if isinstance(item, str):
            return _item_fragment(item)
        level = min(2 + depth, 4)
        if isinstance(item, Section):
            title = self._unique(item.title)
            anchor = self._anchor(title)
            self.contents.append((depth, anchor, title))
            body = [_paragraphs(item.text)] if item.text else []
            body += [self.section(sub, depth + 1) for sub in item.items]
            inner = "\n".join(body)
        else:
            fragment = _item_fragment(item)
            own = _item_title(item, fragment)
            title = self._unique(own)
            anchor = self._anchor(title)
            self.contents.append((depth, anchor, title))
            inner = _meta_line(item, fragment) + _drop_heading(fragment, own)
        return (f"<section class='cl-section' id='{anchor}'>\n<h{level}>{html.escape(title)}</h{level}>\n"
                f"{inner}\n</section>")

    def nav(self) -> str:
        """The contents as nested lists (a sub-list sits inside its parent's item)."""
        if not self.contents:
            return ""
        out, depth = ["<nav class='cl-contents'><strong>Contents</strong><ol>"], 0
        for i, (d, anchor, title) in enumerate(self.contents):
            if i:
                if d > depth:
                    out.append("<ol>" * (d - depth))
                else:
                    out.append("</li>" + "</ol></li>" * (depth - d))
            depth = d
            out.append(f"<li><a href='#{anchor}'>{html.escape(title)}</a>")
        out.append("</li>" + "</ol></li>" * depth + "</ol></nav>")
        return "".join(out)


_HEADING = re.compile(r"<h([2-4])([^>]*)>(.*?)</h\1>", flags=re.S | re.I)
_SECTION_HEADING = re.compile(r"<section class='cl-section' id='[^']*'>\n$")


def _distinct_headings(body: str) -> str:
    """``body`` with every heading distinct: a heading inside an item that repeats an earlier one (two results
    titled alike, in one bundle or in two) gets ``" (2)"``, ``" (3)"``... Section headings are distinct already
    (the builder numbers them the same way) and keep their text, so the contents still match them."""
    seen: dict[str, int] = {}
    out, last = [], 0
    for m in _HEADING.finditer(body):
        text = _plain(m.group(3))
        seen[text] = seen.get(text, 0) + 1
        is_section = bool(_SECTION_HEADING.search(body[max(0, m.start() - 200):m.start()]))
        if seen[text] > 1 and not is_section:
            n = seen[text]
            while f"{text} ({n})" in seen:
                n += 1
            seen[f"{text} ({n})"] = 1
            out.append(body[last:m.start()])
            out.append(f"<h{m.group(1)}{m.group(2)}>{m.group(3)} ({n})</h{m.group(1)}>")
            last = m.end()
    out.append(body[last:])
    return "".join(out)


def count_views(page: str) -> int:
    """How many circuitsvis views a page mounts."""
    return len(re.findall(r"CircuitsVis\.render\(", page))


def external_references(page: str) -> list[str]:
    """Places where ``page`` would fetch something from the network (should be empty for a report)."""
    return [page[max(0, m.start() - 20): m.end() + 40] for m in _EXTERNAL.finditer(strip_bundles(page))]


def report_html(items: Sequence[Any], *, title: str = "circuitlab report", intro: str = "") -> str:
    """The report page as a string (see :func:`report`)."""
    if not isinstance(items, (list, tuple)):
        items = [items]
    builder = _Builder()
    with fragment_mode():
        body = "\n".join(builder.section(item, 0) for item in items)
    body = _distinct_headings(strip_bundles(body))
    n_views = count_views(body)

    import circuitlab

    when = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    sub = [f"circuitlab {circuitlab.__version__}", when]
    if builder.models:
        sub.append("model" + ("s" if len(builder.models) > 1 else "") + ": " + ", ".join(builder.models))
    sub.append(f"{n_views} interactive view{'s' if n_views != 1 else ''}")
    head_js = bundle_script() if n_views else ""
    page = "\n".join([
        "<!DOCTYPE html>",
        "<html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{html.escape(title)}</title>",
        f"<style>{PAGE_CSS}{CSS}</style>",
        head_js,
        "</head><body><main>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='cl-sub'>{html.escape(' · '.join(sub))}</p>",
        f"<div class='cl-prose'>{_paragraphs(intro)}</div>" if intro else "",
        builder.nav(),
        body,
        "<footer>A self-contained page: circuitsvis's JavaScript is inlined once and nothing loads from the "
        "network. Hover over heatmap cells for exact values.</footer>",
        "</main></body></html>",
    ])
    return page


def report(items: Sequence[Any], path: str | Path, *, title: str = "circuitlab report", intro: str = "") -> Path:
    """Write one self-contained HTML file showing ``items``, and return its path.

    Args:
        items: in order; each is a :class:`~circuitlab.results.Result` or anything else with ``to_html()``
            (analysis bundles, :class:`~circuitlab.render.views.View`, pandas DataFrames), a :class:`Section`
            grouping items under a heading, :class:`HTML`, or plain text (a ``str``, escaped).
        path: where to write the ``.html`` file (parent folders are created).
        title: the page title and top heading.
        intro: plain text under the title.

    The page lists its sections in a contents box; each section names what was measured on which model and
    task. circuitsvis's JavaScript appears once however many views there are; nothing links to the network.
    """
    page = report_html(items, title=title, intro=intro)
    if count_bundles(page) > 1:  # pragma: no cover - guards the de-duplication
        raise AssertionError("the circuitsvis bundle appears more than once in the report")
    leaks = external_references(page)
    if leaks:
        warnings.warn(f"the report refers to the network in {len(leaks)} place(s), e.g. {shorten(leaks[0])}; "
                      "it will not fully work offline.", stacklevel=2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
