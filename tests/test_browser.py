"""The demo's report in a real browser: headless Chromium (Debian's ``chromium`` + ``chromium-driver``) via
Selenium. The page must load with no console errors and no network requests, every circuitsvis view must
mount, heatmaps must be there, and a screenshot must show something.

``make test`` installs Chromium when it runs as root; elsewhere this test skips, except under CI (``CI`` or
``CIRCUITLAB_REQUIRE_BROWSER`` set), where a missing browser is a failure.
"""

from __future__ import annotations

import base64
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from chromium import browser_paths, headless_chromium
from demo_output import demo_run

pytestmark = [pytest.mark.browser, pytest.mark.slow]

#: where the screenshot is kept for people to look at (overridable)
SCREENSHOT = Path(os.environ.get("CIRCUITLAB_SCREENSHOT", Path(tempfile.gettempdir()) / "circuitlab-demo-report.png"))


@pytest.fixture(scope="module")
def page():
    browser_paths()  # skip (or fail under CI) before the demo runs
    report = demo_run().outcome.path
    with headless_chromium() as driver:
        driver.get(report.resolve().as_uri())
        yield driver


# a mount point counts as filled when it holds a rendered element with a size (not just its own <script>)
MOUNTS_JS = """
const mounts = Array.from(document.querySelectorAll('.cl-view, [id^="circuits-vis-"]'));
return mounts.map(m => {
  const rendered = Array.from(m.querySelectorAll('*')).filter(e => e.tagName !== 'SCRIPT');
  const box = m.getBoundingClientRect();
  return {id: m.id, component: m.dataset.component || 'circuitsvis', rendered: rendered.length,
          height: box.height, width: box.width};
});
"""


def _mounts(driver):
    return driver.execute_script(MOUNTS_JS)


def test_every_circuitsvis_view_mounts(page):
    from selenium.webdriver.support.ui import WebDriverWait

    expected = demo_run().outcome.n_views
    assert expected >= 1
    WebDriverWait(page, 30).until(
        lambda d: len(_mounts(d)) == expected and all(m["rendered"] > 0 and m["height"] > 20 for m in _mounts(d)),
        message=f"not every view rendered: {_mounts(page)}")


def test_charts_have_a_real_size(page):
    """circuitsvis draws attention patterns on canvases; outside Jupyter its zoomed chart collapses to a few
    pixels unless our stylesheet gives it a width."""
    test_every_circuitsvis_view_mounts(page)
    widths = page.execute_script(
        "return Array.from(document.querySelectorAll('.cl-view canvas, [id^=\"circuits-vis-\"] canvas'))"
        ".map(c => c.getBoundingClientRect().width);")
    assert widths and min(widths) >= 40 and max(widths) >= 300, widths


def test_no_console_errors_and_no_network(page):
    test_every_circuitsvis_view_mounts(page)  # let every script run first
    logs = page.get_log("browser")
    errors = [entry for entry in logs if entry["level"] == "SEVERE"]
    assert not errors, f"console errors: {errors}"
    fetched = page.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith('data:'));")
    assert [u for u in fetched if u.startswith(("http:", "https:"))] == [], fetched


def test_heatmaps_and_sections_are_present(page):
    counts = page.execute_script("""
      return {heatmaps: document.querySelectorAll('.cl-heatmap').length,
              cells: document.querySelectorAll('.cl-heatmap td.cl-cell[title]').length,
              sections: Array.from(document.querySelectorAll('section.cl-section > h2')).map(h => h.textContent),
              links: document.querySelectorAll('nav.cl-contents a').length,
              visible: Array.from(document.querySelectorAll('.cl-heatmap')).every(h => h.offsetWidth > 0)};
    """)
    assert counts["heatmaps"] >= 3 and counts["cells"] >= 20 and counts["visible"]
    assert "Induction circuit" in counts["sections"]
    assert counts["links"] >= len(counts["sections"])


def test_screenshot_is_not_blank(page):
    test_every_circuitsvis_view_mounts(page)
    png = page.get_screenshot_as_png()
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    SCREENSHOT.write_bytes(png)
    # let the browser decode its own screenshot and count what is on it
    stats = page.execute_async_script("""
      const done = arguments[arguments.length - 1];
      const img = new Image();
      img.onload = () => {
        const c = document.createElement('canvas');
        c.width = img.width; c.height = img.height;
        const ctx = c.getContext('2d');
        ctx.drawImage(img, 0, 0);
        const d = ctx.getImageData(0, 0, c.width, c.height).data;
        const colours = new Set();
        let ink = 0, coloured = 0;
        for (let i = 0; i < d.length; i += 4) {
          const r = d[i], g = d[i + 1], b = d[i + 2];
          if (r + g + b < 600) ink++;                                  // not white / near-white
          if (Math.max(r, g, b) - Math.min(r, g, b) > 60) coloured++;  // saturated: heatmap or view colours
          if (i % 64 === 0) colours.add((r >> 3) << 10 | (g >> 3) << 5 | (b >> 3));
        }
        done({w: c.width, h: c.height, ink: ink / (d.length / 4), coloured: coloured / (d.length / 4),
              colours: colours.size});
      };
      img.onerror = () => done({error: 'could not decode the screenshot'});
      img.src = 'data:image/png;base64,' + arguments[0];
    """, base64.b64encode(png).decode())
    assert "error" not in stats, stats
    assert stats["w"] >= 800 and stats["h"] >= 800, stats
    assert stats["ink"] > 0.02 and stats["coloured"] > 0.002 and stats["colours"] > 40, stats


# -- legibility: a page of small cases, built here --------------------------------------------------------

@pytest.fixture(scope="module")
def legibility_page():
    """A report with a (layer, pos) patching-sized heatmap, one too big to number, and top-k views on prompts
    shorter than 2 k."""
    import torch

    import circuitlab as cl
    from circuitlab.render import report, topk_tokens

    toks = [f"{i}:' tok{i}'" for i in range(30)]
    small = cl.Result(torch.linspace(-1, 1, 360).reshape(12, 30), ("layer", "pos"), labels={"pos": toks},
                      title="resid_pre by layer, pos", metric="logit_diff")
    big = cl.Result(torch.randn(12, 40, generator=torch.Generator().manual_seed(0)), ("layer", "pos"),
                    title="too big to number", metric="logit_diff")
    views = [topk_tokens([list("abcd")], [torch.randn(2, 4, 3)], k=5, title="four tokens"),
             topk_tokens([["a"]], [torch.randn(2, 1, 3)], k=5, title="one token")]
    folder = Path(tempfile.mkdtemp(prefix="circuitlab-legibility-"))
    path = report([small, big, *views], folder / "legibility.html")
    try:
        with headless_chromium(profile=folder / "profile") as driver:
            driver.get(path.resolve().as_uri())
            yield driver
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_heatmap_cells_are_big_enough_to_read(legibility_page):
    cells = legibility_page.execute_script("""
      return Array.from(document.querySelectorAll('.cl-heatmap')).map(h => {
        const tds = Array.from(h.querySelectorAll('td.cl-cell'));
        return {cells: tds.length,
                minW: Math.min(...tds.map(t => t.getBoundingClientRect().width)),
                minH: Math.min(...tds.map(t => t.getBoundingClientRect().height)),
                numbered: tds.filter(t => t.textContent.trim() !== '').length,
                overflow: tds.filter(t => t.scrollWidth > t.clientWidth + 1).length,
                fontPx: parseFloat(getComputedStyle(tds[0]).fontSize)};
      });
    """)
    small, big = cells
    assert small["cells"] == 360 and small["numbered"] == 360 and small["overflow"] == 0, small
    assert small["minW"] >= 28 and small["minH"] >= 20 and small["fontPx"] >= 10, small
    assert big["cells"] == 480 and big["numbered"] == 0 and big["minW"] >= 16 and big["minH"] >= 16, big


def test_short_prompt_topk_views_mount_without_errors(legibility_page):
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(legibility_page, 30).until(
        lambda d: len(_mounts(d)) == 2 and all(m["rendered"] > 0 and m["height"] > 20 for m in _mounts(d)),
        message=f"not every view rendered: {_mounts(legibility_page)}")
    errors = [e for e in legibility_page.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
