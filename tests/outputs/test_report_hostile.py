"""report.html runs nothing it was given (issue 18, item 6): hostile strings planted in every field
that reaches the page (token strings, model and SAE names, the SAE config's Neuronpedia id, the
command line, an included sweep section) run nothing in headless Chromium, and the page's
Content-Security-Policy blocks a script added to the file after the fact while the page's own
scripts (the explorer, plotly) still run."""

from __future__ import annotations

import dataclasses
import shutil

import pytest

from posfeat import Embeddings, analyze

from helpers import planted_pair

# What runs in the page is tested, not how figures look (embedded PNGs run nothing): each is a 1x1
# PNG (conftest).
pytestmark = [pytest.mark.browser, pytest.mark.usefixtures("stub_figures")]
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
RUN = "window.__pwned=(window.__pwned||0)+1"
HOSTILE = [
    f'"><img src=x onerror="{RUN}">',
    f"</script><script>{RUN}</script>",
    f"'><svg onload={RUN}>",
    f"javascript:{RUN}",
    f"<iframe srcdoc='<script>parent.{RUN}</script>'></iframe>",
    "{{constructor.constructor('" + RUN + "')()}}",
]


def _chromium():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright not installed (scripts/test installs it)")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Debian's chromium not installed (scripts/test installs it)")
    return sync_playwright, chromium


def test_hostile_strings_in_every_field_run_nothing(tmp_path):
    sync_playwright, chromium = _chromium()
    emb, sae, _ = planted_pair()
    tokens = [f"t{i}{HOSTILE[i % len(HOSTILE)]}" for i in range(emb.d_vocab)]
    emb = Embeddings(emb.W_E, emb.W_pos, tokens=tokens, name="model" + HOSTILE[0])
    sae.name = "sae" + HOSTILE[1]
    sae.meta = dataclasses.replace(
        sae.meta,
        neuronpedia_id='x"><img src=x onerror=' + RUN + ">",
        model_name=HOSTILE[2],
        hook_name="blocks.0.hook_resid_pre",
    )
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "section.html").write_text(
        f'<section><h2>a sweep</h2><script>{RUN}</script><img src=x onerror="{RUN}"></section>'
    )
    an = analyze(emb, sae, tokens_sample=40, token=tokens[3])
    out = an.save(
        tmp_path / "report",
        command="posfeat analyze --token " + " ".join(HOSTILE),
        include_sweeps=[sweep],
    )
    html = (out / "report.html").read_text()
    assert "Content-Security-Policy" in html
    violations, requests, dialogs = [], [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.on(
            "console",
            lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None,
        )
        page.on("request", lambda r: requests.append(r.url))
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto((out / "report.html").as_uri(), wait_until="load")
        page.wait_for_selector(
            "body[data-explorer=ready]", timeout=15000
        )  # the page's own scripts run
        assert page.locator("#helix .main-svg").count() >= 1  # plotly too
        for f in range(
            min(8, page.locator("#feature-rows tr").count())
        ):  # every card opened: tokens, runs, the link
            page.fill("#feature-search", str(f))
            assert page.locator(f'#feature-card [data-feature="{f}"]').count() == 1
        page.fill("#feature-search", "t3")
        page.fill("#feature-search", "")
        pwned = page.evaluate("window.__pwned")
        links = page.evaluate(
            "[...document.querySelectorAll('a[href]')].map(a => a.getAttribute('href'))"
        )
        browser.close()
    assert pwned is None and dialogs == []
    assert not [u for u in links if u.lower().startswith("javascript:")]
    assert not [u for u in requests if not u.startswith(("file:", "data:", "about:"))]
    assert (
        violations
    )  # the sweep section's script was blocked by the policy, not merely never reached


def test_a_script_added_to_the_file_afterwards_is_blocked(tmp_path):
    sync_playwright, chromium = _chromium()
    emb, sae, _ = planted_pair()
    out = analyze(emb, sae, tokens_sample=16).save(tmp_path / "report")
    page_file = out / "report.html"
    page_file.write_text(
        page_file.read_text().replace(
            "</body>", f'<script>{RUN}</script><img src=x onerror="{RUN}"></body>'
        )
    )
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page()
        page.goto(page_file.as_uri(), wait_until="load")
        page.wait_for_selector("body[data-explorer=ready]", timeout=15000)
        pwned = page.evaluate("window.__pwned")
        browser.close()
    assert pwned is None
