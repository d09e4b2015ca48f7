"""circuitsvis's JavaScript bundle, loaded once and shared by every view on a page.

circuitsvis ships its React components as one browser bundle (``circuitsvis/dist/cdn/iife.js``, about 1.3 MB)
that defines a global ``CircuitsVis`` object. Its own offline renderer (``circuitsvis.utils.render.render_local``)
pastes the whole bundle into every view it renders, so a report with ten views would carry 13 MB of identical
JavaScript. We split the two halves apart instead:

- :func:`bundle_script` is the bundle as one classic ``<script>`` element, written once per page (a report puts
  it in ``<head>``; a stand-alone fragment for Jupyter carries its own copy);
- each view is a ``<div>`` mount point plus a few lines that call ``CircuitsVis.render(id, component, props)``
  (see :class:`circuitlab.render.views.View`).

:func:`fragment_mode` tells views and heatmaps that a page already provides the bundle and the stylesheet, so
they leave their own copies out; :func:`strip_bundles` removes copies that got in anyway (for instance from
HTML that circuitsvis itself rendered).
"""

from __future__ import annotations

import contextlib
import contextvars
import re
from functools import lru_cache
from pathlib import Path
from typing import Iterator

#: the ``data-`` attribute marking our bundle ``<script>`` element, so pages can find and de-duplicate it
BUNDLE_ATTR = "data-circuitlab-bundle"

# True while a page (a report) provides the bundle and stylesheet itself
_FRAGMENT_MODE: contextvars.ContextVar[bool] = contextvars.ContextVar("circuitlab_fragment_mode", default=False)


def bundle_path() -> Path:
    """Where the installed circuitsvis keeps its browser bundle."""
    import circuitsvis

    return Path(circuitsvis.__file__).resolve().parent / "dist" / "cdn" / "iife.js"


@lru_cache(maxsize=1)
def raw_bundle() -> str:
    """The bundle's JavaScript exactly as circuitsvis ships it."""
    return bundle_path().read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def bundle_js() -> str:
    """The bundle's JavaScript made safe to inline in HTML.

    Two changes: ``</script`` (which would end the inline element early) becomes ``<\\/script`` (the same
    string to JavaScript), and the ``sourceMappingURL`` comment goes (it points to a file the page doesn't have).
    """
    js = raw_bundle().replace("</script", "<\\/script")
    return re.sub(r"^//# sourceMappingURL=.*$", "", js, flags=re.MULTILINE).rstrip() + "\n"


@lru_cache(maxsize=1)
def bundle_script() -> str:
    """The bundle as one ``<script>`` element that defines the global ``CircuitsVis``."""
    return f"<script {BUNDLE_ATTR}>\n{bundle_js()}</script>"


def in_fragment_mode() -> bool:
    """Whether the page being built already provides the bundle and the stylesheet."""
    return _FRAGMENT_MODE.get()


@contextlib.contextmanager
def fragment_mode() -> Iterator[None]:
    """Within this block, views and heatmaps render without their own bundle and stylesheet."""
    token = _FRAGMENT_MODE.set(True)
    try:
        yield
    finally:
        _FRAGMENT_MODE.reset(token)


def strip_bundles(html: str) -> str:
    """``html`` with every inlined copy of the bundle removed (ours, and circuitsvis's own ``render_local``).

    What remains of a circuitsvis view is its mount ``<div>`` and the script calling ``CircuitsVis.render``,
    which works as long as the page loads the bundle once before it.
    """
    html = html.replace(bundle_script(), "")
    # circuitsvis's render_local pastes the bundle with "</script>" deleted rather than escaped
    return html.replace(raw_bundle().replace("</script>", ""), "")


def count_bundles(html: str) -> int:
    """How many copies of the bundle ``html`` carries (a check for reports: it should be exactly one)."""
    # a fragment of the bundle's source long enough to be unique to it
    marker = raw_bundle()[:200]
    return html.count(marker)
