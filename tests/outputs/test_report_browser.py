"""report.html in headless Chromium: loads with no console errors, no request leaves the machine, every figure present."""

from __future__ import annotations

import os
import shutil

import pytest

from posfeat.analyses.analysis import analyze
from posfeat.outputs.figures import FIGURES

from helpers import planted_pair

pytestmark = pytest.mark.browser
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def _need(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing in CI; scripts/test installs it")
    pytest.skip(f"{what} not installed (scripts/test installs it)")


def test_report_opens_offline_with_every_figure(tmp_path):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need("playwright")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        _need("Debian's chromium")
    emb, sae, _ = planted_pair()
    out = analyze(emb, sae, tokens_sample=40).save(tmp_path / "report")
    errors, requests = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto((out / "report.html").as_uri(), wait_until="load")
        page.wait_for_timeout(500)
        for name in FIGURES:
            img = page.locator(f"#fig-{name} img")
            assert img.count() == 1, name
            assert page.evaluate(f"document.querySelector('#fig-{name} img').naturalWidth") > 100, name
        for div in ("helix", "profiles"):  # interactive plots rendered by the inlined plotly.js
            assert page.locator(f"#{div} .main-svg").count() >= 1, div
        title = page.title()
        browser.close()
    assert errors == []
    leaving = [u for u in requests if not u.startswith(("file:", "data:", "blob:", "about:"))]
    assert leaving == []
    assert "posfeat report" in title
