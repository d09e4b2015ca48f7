"""SAE feature dashboards (circuitlab.render.features) in headless Chromium: the index and a feature page load
with no console errors and no network requests, sorting by a column orders the rows by its numbers (checked
against the cards), the filters hide what they should, and tokens are coloured on the feature page.

Skips without Chromium and chromedriver, except under CI or CIRCUITLAB_REQUIRE_BROWSER (as tests/test_browser.py).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

import circuitlab as cl
from circuitlab.features.dashboard import feature_dashboards
from circuitlab.render.features import write_dashboards
from chromium import headless_chromium

pytestmark = [pytest.mark.browser]

LATENTS = [3, 5, 17, 40, 300, 1000]
SCORES = {3: 0.5, 5: -0.1, 17: 0.9, 40: 0.0, 300: 0.25, 1000: 0.7}


@pytest.fixture(scope="module")
def site():
    path = Path(cl.__file__).parent / "zoo" / "weights" / "toy-lm" / "heldout.txt"
    texts = [t for t in path.read_text().splitlines() if t.strip()][:30]
    dash = feature_dashboards("zoo/toy-lm", "toy-lm/res-2", texts, LATENTS, n_top=4, per_quantile=2)
    folder = Path(tempfile.mkdtemp(prefix="circuitlab-dash-"))
    index = write_dashboards(dash, folder, {k: (f"explanation of {k}", v) for k, v in SCORES.items()})
    yield dash, index
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def driver():
    with headless_chromium() as d:
        yield d


def _clean(driver):
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    net = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)"
                                ".filter(n => !n.startsWith('data:') && !n.startsWith('file:'));")
    assert not net, net


def _column(driver, i):
    return driver.execute_script(
        f"return Array.from(document.querySelectorAll('#features tbody tr'))"
        f".filter(r => r.style.display !== 'none').map(r => r.cells[{i}].dataset.v);")


def test_index_sorts_and_filters(site, driver):
    dash, index = site
    driver.get(index.resolve().as_uri())
    _clean(driver)
    assert [int(v) for v in _column(driver, 0)] == LATENTS
    headers = driver.find_elements("css selector", "#features th")
    headers[1].click()  # density, ascending
    by_density = sorted(dash.cards, key=lambda c: c.density)
    assert [int(v) for v in _column(driver, 0)] == [c.latent for c in by_density]
    headers[3].click()  # score, ascending
    headers[3].click()  # then descending
    assert [int(v) for v in _column(driver, 0)] == sorted(SCORES, key=lambda k: -SCORES[k])
    box = driver.find_element("id", "score-min")
    box.send_keys("0.4")
    assert sorted(int(v) for v in _column(driver, 0)) == sorted(k for k, v in SCORES.items() if v >= 0.4)
    assert driver.find_element("id", "shown").text == "3"
    _clean(driver)


def test_feature_page_colours_tokens(site, driver):
    dash, index = site
    card = dash.card(17)
    driver.get((index.parent / "feature-17.html").resolve().as_uri())
    _clean(driver)
    assert driver.find_element("id", "score").text == "0.900"
    contexts = driver.find_elements("css selector", "#top .ctx")
    assert len(contexts) == len(card.top)
    coloured = driver.execute_script("return Array.from(document.querySelectorAll('#top .tok'))"
                                     ".filter(s => s.style.background !== 'transparent').length;")
    assert coloured == sum(a > 0 for c in card.top for a in c.activations)
    driver.save_screenshot(str(Path(tempfile.gettempdir()) / "circuitlab-feature-17.png"))
