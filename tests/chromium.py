"""Headless Chromium for the browser tests (selenium): where it is installed, and one driver at a time.

Chromium and chromedriver come from Debian (``apt-get install chromium chromium-driver``, which ``make test`` does
when run as root). A test that needs them skips without them, except under CI (``CI`` or
``CIRCUITLAB_REQUIRE_BROWSER`` set), where it fails: CI must run the browser tests.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Optional

import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking")


def browser_paths() -> tuple[str, str]:
    """Chromium's and chromedriver's paths; skip the test (fail it under CI) when either is missing."""
    chromium = next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)
    driver = shutil.which("chromedriver")
    if chromium and driver:
        return chromium, driver
    why = ("headless Chromium is not installed (need `chromium` and `chromedriver` on PATH: "
           "`apt-get install chromium chromium-driver` on Debian, which `make test` does when run as root)")
    if os.environ.get("CI") or os.environ.get("CIRCUITLAB_REQUIRE_BROWSER"):
        pytest.fail(why + "; CI must run the browser test")
    pytest.skip(why)


@contextlib.contextmanager
def headless_chromium(window: tuple[int, int] = (1280, 2000), profile: Optional[Path] = None) -> Iterator:
    """A selenium driver of headless Chromium with the browser console logged (``driver.get_log("browser")``) and a
    60 s page-load limit, quit on exit. Its profile goes in ``profile`` (a fresh temporary folder by default, removed
    on exit)."""
    chromium, driver_path = browser_paths()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--window-size={window[0]},{window[1]}")
    folder = None if profile is not None else tempfile.mkdtemp(prefix="circuitlab-chromium-")
    opts.add_argument(f"--user-data-dir={profile if profile is not None else folder}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=opts)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
