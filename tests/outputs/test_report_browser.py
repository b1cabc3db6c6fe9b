"""report.html in headless Chromium: loads with no console errors, no request leaves the machine,
every figure present, and the feature explorer finds features by id and by token, filters by kind,
sorts, and opens a card with its profile.

The explorer's depth on a wider random SAE (160 features, two pages of rows): token search over each
feature's top tokens over the whole vocabulary, the profile's axes, context edge and hover values,
top tokens with activations, the card beside the table without scrolling, ``report.html#feature-N``,
and strings from the tokenizer shown as text."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import shutil
import zlib

import numpy as np
import pytest
import torch

from posfeat import Embeddings, analyze
from posfeat.engine.histogram import activation_histograms
from posfeat.io.sae_folders import neuronpedia_url
from posfeat.outputs.explorer import TOKEN_INDEX_K, token_index
from posfeat.outputs.figures import FIGURES

from helpers import planted_pair, random_pair

pytestmark = pytest.mark.browser
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


def _need(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing in CI; scripts/test installs it")
    pytest.skip(f"{what} not installed (scripts/test installs it)")


def _chromium() -> str:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _need("playwright")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        _need("Debian's chromium")
    return chromium


def test_report_opens_offline_with_every_figure(tmp_path):
    chromium = _chromium()
    from playwright.sync_api import sync_playwright

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
            assert page.evaluate(f"document.querySelector('#fig-{name} img').naturalWidth") > 100, (
                name
            )
        for div in ("helix", "profiles"):  # interactive plots rendered by the inlined plotly.js
            assert page.locator(f"#{div} .main-svg").count() >= 1, div
        assert page.locator("#feature-rows tr").count() == 8  # every feature, one page
        page.fill("#feature-search", "3")  # an id: the table narrows to it and its card opens
        assert page.locator("#feature-rows tr").count() == 1
        card = page.locator('#feature-card [data-feature="3"]')
        assert card.count() == 1 and "positional" in card.inner_text()
        points = page.evaluate(
            "document.querySelector('#feature-card svg.profile polyline').getAttribute('points')"
        )
        assert len(points.split()) == emb.n_ctx  # the profile over every position
        page.fill(
            "#feature-search", token
        )  # a token: the features whose top tokens hold it (the card-level test is below)
        rows = page.locator("#feature-rows tr")
        assert rows.count() >= 1
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


HOSTILE = "<img src=x onerror=document.title='pwned'>"


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    """A random pair with 160 features (two pages), tokens ' the', 'the' and an HTML-looking one,
    and a Neuronpedia id."""
    emb, sae = random_pair(d_vocab=120, n_ctx=24, d_model=12, d_sae=160, seed=1)
    tokens = [f"tok{i}" for i in range(120)]
    tokens[5], tokens[7], tokens[8] = HOSTILE, " the", "the"
    emb = Embeddings(emb.W_E, emb.W_pos, tokens=tokens, name="random")
    sae.meta = dataclasses.replace(sae.meta, neuronpedia_id="gpt2-small/0-res-jb")
    an = analyze(emb, sae, tokens_sample=40, progress=False)
    return an, an.save(tmp_path_factory.mktemp("wide") / "report") / "report.html"


@pytest.fixture(scope="module")
def browser():
    chromium = _chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _open(browser, url: str, errors: list[str]):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(url, wait_until="load")
    page.wait_for_selector("body[data-explorer=ready]", timeout=15000)
    return page


def _top(an, f: int) -> list[tuple[str, float]]:
    """The feature's top tokens as the page's index holds them (the first ``TOKEN_INDEX_K`` with a
    positive mean)."""
    st = an.stats_context
    pairs = zip(st.top_tokens[f][:TOKEN_INDEX_K], st.top_token_means[f][:TOKEN_INDEX_K])
    return [(an.emb.token_str(int(t)), float(v)) for t, v in pairs if v > 0]


@pytest.mark.parametrize("query", ["the", " the", HOSTILE])
def test_token_search_finds_every_feature_with_the_token_among_its_top_tokens(wide, browser, query):
    an, report = wide
    expected = {
        f
        for f in range(an.sae.d_sae)
        if any(s == query or s.strip() == query.strip() for s, _ in _top(an, f))
    }
    in_top5 = {f for f in expected if any(s.strip() == query.strip() for s, _ in _top(an, f)[:5])}
    assert len(expected) > len(in_top5)  # the old search (top 5 only) would miss some
    errors: list[str] = []
    page = _open(browser, report.as_uri(), errors)
    page.fill("#feature-search", query)
    found = {
        int(r)
        for r in page.eval_on_selector_all(
            "#feature-rows tr", "rows => rows.map(r => r.dataset.row)"
        )
    }
    assert found == expected and len(found) <= 100  # one page
    order = [
        int(r)
        for r in page.eval_on_selector_all(
            "#feature-rows tr", "rows => rows.map(r => r.dataset.row)"
        )
    ]
    best = [max(v for s, v in _top(an, f) if s.strip() == query.strip()) for f in order]
    step = [an.stats_context.top_token_means[f, 0] / 255 for f in order]  # the page's 8-bit codes
    assert all(
        a >= b - sa - sb for a, b, sa, sb in zip(best, best[1:], step, step[1:])
    )  # strongest on the token first
    shown = page.eval_on_selector_all(
        "#feature-rows td.token-activation", "cells => cells.map(c => Number(c.textContent))"
    )
    assert (
        page.locator("#feature-head th.token-activation").count() == 1
    )  # the search shows the token's activation
    assert len(shown) == len(order) and all(
        abs(v - b) <= sb + 6e-3 * b for v, b, sb in zip(shown, best, step)
    )
    page.click(f"#feature-rows tr[data-row='{order[0]}']")  # its card lists the token, as text
    assert (
        json.dumps(query.strip())[1:-1]
        in page.locator("#feature-card table.top-tokens").inner_text()
    )
    assert (
        page.locator("#explorer img").count() == 0
        and page.title().startswith("posfeat report")
        and errors == []
    )
    page.close()


def test_card_profile_axes_context_edge_hover_and_top_tokens(wide, browser):
    an, report = wide
    f = int(an.features.positional_score.idxmax())
    errors: list[str] = []
    page = _open(browser, report.as_uri(), errors)
    page.fill("#feature-search", str(f))
    svg = page.locator("#feature-card svg.profile")
    assert svg.count() == 1
    xticks = page.eval_on_selector_all("#feature-card svg .xtick", "t => t.map(x => x.textContent)")
    yticks = page.eval_on_selector_all("#feature-card svg .ytick", "t => t.map(x => x.textContent)")
    assert "0" in xticks and len(xticks) >= 3 and len(yticks) >= 2
    assert page.locator("#feature-card svg.profile line.context-edge").count() == 1
    assert f"context {an.context}" in svg.text_content()
    svg.scroll_into_view_if_needed()
    box = svg.bounding_box()
    page.mouse.move(
        box["x"] + box["width"] - 12, box["y"] + box["height"] / 2
    )  # over the last position
    tip = page.locator("#feature-card svg .hover-value").text_content()
    last = an.emb.n_ctx - 1
    assert tip.startswith(f"position {last}: ")
    shown, exact = float(tip.split(": ")[1]), an.stats_all.mean_by_position[f, last]
    assert abs(shown - exact) <= an.stats_all.mean_by_position[f].max() / 255 + 1e-3 * abs(exact)
    cells = page.eval_on_selector_all(
        "#feature-card table.top-tokens tr",
        "rows => rows.map(r => [...r.cells].map(c => c.textContent))",
    )
    top = _top(an, f)
    assert len(cells) == len(top) > 5
    for (s, v), (cell_s, cell_v) in zip(top, cells):
        scale = an.stats_context.top_token_means[f, 0]
        assert cell_s == json.dumps(s) and abs(float(cell_v) - v) <= scale / 255 + 6e-3 * abs(
            v
        )  # 8-bit codes, 3 digits shown
    assert errors == []
    page.close()


def test_card_is_visible_beside_the_table_without_scrolling(wide, browser):
    _, report = wide
    errors: list[str] = []
    page = _open(browser, report.as_uri(), errors)
    page.locator("#explorer-title").scroll_into_view_if_needed()
    rows = page.locator("#feature-rows tr")
    assert rows.count() == 100  # a long page of rows
    last = rows.nth(99)
    last.scroll_into_view_if_needed()
    scroll_before = page.evaluate("window.scrollY")
    last.click()
    f = int(last.get_attribute("data-row"))
    card = page.locator(f'#feature-card [data-feature="{f}"]')
    assert (
        card.count() == 1 and page.evaluate("window.scrollY") == scroll_before
    )  # nothing scrolled
    cb, tb = card.bounding_box(), page.locator("#table-wrap").bounding_box()
    assert (
        cb["y"] >= 0 and cb["y"] + 40 <= 800 and cb["x"] >= tb["x"] + tb["width"]
    )  # in view, to the right of the table
    assert page.evaluate("location.hash") == f"#feature-{f}"
    assert errors == []
    page.close()


def test_feature_link_opens_its_card_and_neuronpedia_link_is_encoded(wide, browser):
    _, report = wide
    errors: list[str] = []
    page = _open(browser, report.as_uri() + "#feature-123", errors)
    card = page.locator('#feature-card [data-feature="123"]')
    assert card.count() == 1 and card.locator("h3").inner_text().startswith("Feature 123")
    assert (
        card.locator("a", has_text="Neuronpedia").get_attribute("href")
        == "https://www.neuronpedia.org/gpt2-small/0-res-jb/123"
    )
    page.evaluate("location.hash = '#feature-7'")
    page.wait_for_selector('#feature-card [data-feature="7"]', timeout=5000)
    assert errors == []
    page.close()


def test_neuronpedia_id_is_validated_and_encoded():
    assert (
        neuronpedia_url("gpt2-small/0-res-jb") == "https://www.neuronpedia.org/gpt2-small/0-res-jb/"
    )
    for bad in ("javascript:alert(1)", "a/../b", 'x"><script>', "a b", "", None):
        assert neuronpedia_url(bad) is None


def _unpack(data: str, dtype: str) -> np.ndarray:
    return np.frombuffer(zlib.decompress(base64.b64decode(data)), dtype=dtype)


def test_token_index_is_exact_and_compact(wide):
    an, _ = wide
    idx = token_index(an)
    ids = _unpack(idx["ids"], f"<u{idx['id_bytes']}").reshape(an.sae.d_sae, idx["k"])
    codes = _unpack(idx["values"], "u1").reshape(ids.shape)
    for f in range(an.sae.d_sae):
        got = [
            (an.emb.token_str(int(t)), c / 255 * an.stats_context.top_token_means[f, 0])
            for t, c in zip(ids[f], codes[f])
            if t < an.emb.d_vocab
        ]
        want = _top(an, f)
        assert [s for s, _ in got] == [s for s, _ in want]
        assert np.allclose(
            [v for _, v in got],
            [v for _, v in want],
            rtol=0,
            atol=an.stats_context.top_token_means[f, 0] / 255 / 2 + 1e-12,
        )
    assert idx["id_bytes"] == 2 and idx["k"] == TOKEN_INDEX_K  # 3 bytes an entry before deflation


@pytest.mark.parametrize("width", [1280, 1400])
def test_explorer_table_fits_beside_the_card(wide, browser, width):
    """Every column of the explorer's table is in view (nothing clipped behind a scrollbar at the
    bottom of a long box), with the card beside it."""
    _, report = wide
    errors: list[str] = []
    page = _open(browser, report.as_uri(), errors)
    page.set_viewport_size({"width": width, "height": 900})
    page.locator("#explorer-title").scroll_into_view_if_needed()
    wrap = page.evaluate(
        "(() => { const w = document.querySelector('#table-wrap'); return [w.scrollWidth, "
        "w.clientWidth]; })()"
    )
    assert wrap[0] <= wrap[1] + 1, wrap
    last = page.locator("#feature-head th").last.bounding_box()
    tb, cb = (
        page.locator("#table-wrap").bounding_box(),
        page.locator("#feature-card").bounding_box(),
    )
    assert (
        last["x"] + last["width"] <= tb["x"] + tb["width"] + 1 and cb["x"] >= tb["x"] + tb["width"]
    )
    assert errors == []
    page.close()


def test_feature_link_opens_a_card_with_histogram_top_inputs_and_nearest_wpos_row(wide, browser):
    """The acceptance of issue 29: report.html#feature-N shows the card with its exact histogram,
    top inputs and nearest W_pos row."""
    an, report = wide
    f = int(an.features.fire.idxmax())
    hist = activation_histograms(an.emb, an.sae, an.context, features=np.array([f]))
    errors: list[str] = []
    page = _open(browser, report.as_uri() + f"#feature-{f}", errors)
    card = page.locator(f'#feature-card [data-feature="{f}"]')
    assert card.count() == 1
    bars = page.eval_on_selector_all(
        "#feature-card svg.histogram rect.bar", "b => b.map(r => Number(r.getAttribute('height')))"
    )
    assert len(bars) == hist.bins
    assert [h > 0 for h in bars] == [
        c > 0 for c in hist.counts[0]
    ]  # a bar wherever the exact count is not 0
    text = card.locator(".card-histogram").inner_text()
    assert (
        f"exact over all {an.emb.d_vocab * an.context} inputs" in text
        and f"{hist.firing[0]} fire" in text
    )
    rows = page.eval_on_selector_all(
        "#feature-card table.top-inputs tr",
        "rows => rows.slice(1).map(r => [...r.cells].map(c => c.textContent))",
    )
    want = [
        (json.dumps(an.emb.token_str(int(t))), str(int(p)))
        for t, p in zip(hist.top_tokens[0], hist.top_positions[0])
        if t >= 0
    ][: len(rows)]
    assert (
        len(rows) == min(5, int((hist.top_tokens[0] >= 0).sum()))
        and [(r[0], r[1]) for r in rows] == want
    )
    assert abs(float(rows[0][2]) - hist.top_values[0, 0]) <= 6e-3 * hist.top_values[0, 0]
    row = an.features.iloc[f]
    assert (
        f"nearest W_pos row {int(row.nearest_wpos_row)} (cosine"
        in card.locator(".nearest-wpos").inner_text()
    )
    assert page.locator("#feature-card svg.preactivation line.zero-line").count() == 1
    assert page.locator("#feature-card svg.preactivation line.context-edge").count() == 1
    assert (
        "none: " in card.locator(".card-logits").inner_text()
    )  # a model with no unembedding says so
    assert "past the context" in card.locator(".card-past").inner_text()
    assert errors == []
    page.close()


def test_every_feature_id_in_the_reports_tables_links_to_its_card(planted_report, browser):
    _an, report = planted_report
    errors: list[str] = []
    page = _open(browser, report.as_uri(), errors)
    cells = page.evaluate("""() => {
        const out = [];
        for (const t of document.querySelectorAll('table')) {
            if (t.closest('#explorer')) continue;
            const head = [...t.rows[0].cells].map(c => c.textContent);
            const i = head.indexOf('feature');
            if (i < 0) continue;
            for (const r of [...t.rows].slice(1)) {
                const c = r.cells[i], a = c.querySelector('a');
                out.push([c.textContent, a ? a.getAttribute('href') : null]);
            }
        }
        return out;
    }""")
    assert len(cells) >= 5  # the positional table at least
    assert all(href == f"#feature-{text}" for text, href in cells), cells
    explorer_ids = page.eval_on_selector_all(
        "#feature-rows tr td:first-child",
        "cs => cs.map(c => c.querySelector('a').getAttribute('href'))",
    )
    assert explorer_ids and all(h.startswith("#feature-") for h in explorer_ids)
    text, _ = cells[-1]
    page.click(f"table:not(#feature-table) a[href='#feature-{text}']")
    page.wait_for_selector(f'#feature-card [data-feature="{text}"]', timeout=5000)
    page.wait_for_selector("body[data-figures=ready]", timeout=30000)
    for div in ("helix", "profiles"):  # plotly, inflated in the page, drew both figures
        assert page.locator(f"#{div} .main-svg").count() >= 1
    assert errors == []
    page.close()


@pytest.fixture(scope="module")
def planted_report(tmp_path_factory):
    emb, sae, _ = planted_pair()
    an = analyze(emb, sae, tokens_sample=16, progress=False)
    return an, an.save(tmp_path_factory.mktemp("planted") / "report") / "report.html"


def test_uncased_vocabulary_search_ignores_case_and_no_match_clears_the_card(wide, browser):
    _an, report = wide
    errors: list[str] = []
    page = _open(browser, report.as_uri() + "#feature-5", errors)
    assert page.locator('#feature-card [data-feature="5"]').count() == 1

    def rows():
        return {
            int(r)
            for r in page.eval_on_selector_all(
                "#feature-rows tr", "rows => rows.map(r => r.dataset.row)"
            )
        }

    page.fill("#feature-search", "the")
    lower = rows()
    page.fill("#feature-search", "THE")
    assert rows() == lower and lower  # the wide vocabulary has no capitals: uncased
    assert "case ignored" in page.locator("#explorer-status").inner_text()
    page.fill("#feature-search", "no such token")
    assert rows() == set()
    assert page.locator("#feature-card [data-feature]").count() == 0  # the old card is gone
    assert "No feature matches" in page.locator("#feature-card").inner_text()
    assert errors == []
    page.close()


def test_cased_vocabulary_search_keeps_case_and_logit_effects_show_for_a_gpt2_layout(
    tmp_path, browser
):
    emb, sae = random_pair(d_vocab=60, n_ctx=16, d_model=10, d_sae=40, seed=4)
    tokens = [f"Tok{i}" if i % 2 else f"tok{i}" for i in range(60)]
    tokens[3], tokens[4] = " The", " the"
    emb = Embeddings(emb.W_E, emb.W_pos, tokens=tokens, name="cased", info={"model_type": "gpt2"})
    an = analyze(emb, sae, tokens_sample=16, progress=False)
    report = an.save(tmp_path / "report") / "report.html"
    has = lambda s: {f for f in range(sae.d_sae) if any(t.strip() == s for t, _ in _top(an, f))}  # noqa: E731
    errors: list[str] = []
    page = _open(browser, report.as_uri(), errors)

    def rows():
        return {
            int(r)
            for r in page.eval_on_selector_all(
                "#feature-rows tr", "rows => rows.map(r => r.dataset.row)"
            )
        }

    page.fill("#feature-search", "The")
    assert rows() == has("The") and has("The") != has("the")
    f = int(an.features.fire.idxmax())
    page.fill("#feature-search", str(f))
    logits = (sae.W_dec[f] @ emb.W_E.T).numpy()
    up = page.eval_on_selector_all(
        "#feature-card table.logits-up tr", "rows => rows.slice(1).map(r => r.cells[0].textContent)"
    )
    down = page.eval_on_selector_all(
        "#feature-card table.logits-down tr",
        "rows => rows.slice(1).map(r => r.cells[0].textContent)",
    )
    assert up == [json.dumps(tokens[int(t)]) for t in np.argsort(-logits)[:5]]
    assert down == [json.dumps(tokens[int(t)]) for t in np.argsort(logits)[:5]]
    assert errors == []
    page.close()


PROMPTS = [
    "The cat sat on the mat.",
    "Héllo, WORLD!! naïve café 東京 x2=3  spaces\tand\ttabs",
    "antidisestablishmentarianism's 1234567",
]


def _prompt_ids(browser, report, texts: list[str]) -> list[list[int]]:
    errors: list[str] = []
    page = _open(browser, report.as_uri(), errors)
    out = []
    for text in texts:
        page.fill("#prompt-text", text)
        page.wait_for_function(
            "t => document.querySelector('#prompt-tokens') && "
            "document.querySelector('#prompt-text').value === t",
            arg=text,
        )
        page.wait_for_timeout(200)
        out.append(
            [
                int(r)
                for r in page.eval_on_selector_all(
                    "#prompt-tokens tr[data-token-id]", "rows => rows.map(r => r.dataset.tokenId)"
                )
            ]
        )
    links = page.eval_on_selector_all(
        "#prompt-tokens a.feature-link", "a => a.map(x => x.getAttribute('href'))"
    )
    assert all(h.startswith("#feature-") for h in links) and errors == []
    page.close()
    return out


def test_prompt_box_runs_gpt2_byte_level_bpe_as_the_tokenizer_does(tmp_path, browser):
    """GPT-2's real vocabulary and merges (tests/data): the page's BPE gives the ids the tokenizers
    library gives."""
    from safetensors.torch import save_file

    from posfeat import SAE, load_embeddings
    from posfeat.analyses.prompts import tokenize, tokenizer_for

    from helpers import gpt2_tokenizer_json

    folder = tmp_path / "gpt2-small-vocab"
    folder.mkdir()
    g = torch.Generator().manual_seed(0)
    (folder / "config.json").write_text(
        json.dumps({"model_type": "gpt2", "n_embd": 8, "n_positions": 24, "vocab_size": 50257})
    )
    save_file(
        {
            "wte.weight": torch.randn(50257, 8, generator=g),
            "wpe.weight": torch.randn(24, 8, generator=g),
        },
        str(folder / "model.safetensors"),
    )
    (folder / "tokenizer.json").write_bytes(gpt2_tokenizer_json())
    emb = load_embeddings(str(folder))
    sae = SAE.from_arrays(
        torch.randn(8, 6, generator=g),
        torch.randn(6, 8, generator=g),
        torch.randn(6, generator=g) - 1,
        torch.zeros(8),
        context_size=12,
        hook_name="blocks.0.hook_resid_pre",
        name="tiny",
    )
    an = analyze(emb, sae, tokens_sample=8, progress=False)
    report = an.save(tmp_path / "report") / "report.html"
    tok = tokenizer_for(an.emb)
    assert _prompt_ids(browser, report, PROMPTS) == [tokenize(tok, t) for t in PROMPTS]


@pytest.mark.realmodel
def test_prompt_box_runs_the_bundled_wordpiece_as_the_tokenizer_does(tmp_path, browser):
    """The bundled all-MiniLM-L6-v2: BERT's lower-casing, accent stripping, punctuation and CJK
    splitting, [CLS] and [SEP]."""
    from posfeat import load_pair
    from posfeat.analyses.prompts import tokenize, tokenizer_for

    emb, sae = load_pair()
    an = analyze(emb, sae, tokens_sample=8, progress=False)
    report = an.save(tmp_path / "report") / "report.html"
    tok = tokenizer_for(an.emb)
    assert _prompt_ids(browser, report, PROMPTS) == [tokenize(tok, t) for t in PROMPTS]


def test_prompt_box_says_why_when_the_page_cannot_tokenize(wide, browser):
    _, report = wide
    errors: list[str] = []
    page = _open(browser, report.as_uri(), errors)
    assert page.locator("#prompt-text").is_disabled()
    assert (
        "No prompt box for this model: no tokenizer.json was found"
        in page.locator("#prompt-status").inner_text()
    )
    assert errors == []
    page.close()
