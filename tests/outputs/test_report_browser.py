"""report.html in headless Chromium: loads with no console errors, no request leaves the machine, every figure present,
and the feature explorer finds features by id and by token, filters by kind, sorts, and opens a card with its profile."""

from __future__ import annotations

import os
import shutil

import pytest

from posfeat import analyze
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
    an = analyze(emb, sae, tokens_sample=40)
    out = an.save(tmp_path / "report")
    token = an.features.top_tokens.iloc[6].split(" | ")[0]  # the top token of a semantic feature
    errors, requests = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto((out / "report.html").as_uri(), wait_until="load")
        page.wait_for_selector("body[data-explorer=ready]", timeout=15000)
        for name in FIGURES:
            img = page.locator(f"#fig-{name} img")
            assert img.count() == 1, name
            assert page.evaluate(f"document.querySelector('#fig-{name} img').naturalWidth") > 100, name
        for div in ("helix", "profiles"):  # interactive plots rendered by the inlined plotly.js
            assert page.locator(f"#{div} .main-svg").count() >= 1, div
        assert page.locator("#feature-rows tr").count() == 8  # every feature, one page
        page.fill("#feature-search", "3")  # an id: the table narrows to it and its card opens
        assert page.locator("#feature-rows tr").count() == 1
        card = page.locator('#feature-card [data-feature="3"]')
        assert card.count() == 1 and "positional" in card.inner_text()
        points = page.evaluate("document.querySelector('#feature-card svg.profile polyline').getAttribute('points')")
        assert len(points.split()) == emb.n_ctx  # the profile over every position
        page.fill("#feature-search", token)  # a token: the features whose top tokens hold it
        rows = page.locator("#feature-rows tr")
        assert rows.count() >= 1 and all(token in rows.nth(i).inner_text() for i in range(rows.count()))
        page.fill("#feature-search", "")
        page.select_option("#kind-filter", "semantic")
        assert page.locator("#feature-rows tr").count() == 3
        page.select_option("#kind-filter", "all")
        page.click("button[data-sort=positional_score]")  # sort: highest positional score first
        first = int(page.locator("#feature-rows tr").first.get_attribute("data-row"))
        rows.first.click()
        assert page.locator(f'#feature-card [data-feature="{first}"]').count() == 1
        title = page.title()
        browser.close()
    assert first == int(an.features.positional_score.idxmax())
    assert errors == []
    leaving = [u for u in requests if not u.startswith(("file:", "data:", "blob:", "about:"))]
    assert leaving == []
    assert "posfeat report" in title
