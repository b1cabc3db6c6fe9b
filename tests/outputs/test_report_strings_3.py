"""Issue 30: strings from a vocabulary are data in report.html: the explorer's embedded JSON cannot
open a comment or a script (``<!--`` before ``<script>`` once stopped the explorer from loading),
and control and bidirectional characters in table cells are shown as escapes, not obeyed."""

from __future__ import annotations

import base64
import json
import re
import zlib

import pytest

from posfeat import Embeddings, analyze
from posfeat.outputs.report import esc, report_parts

from helpers import planted_pair

pytestmark = pytest.mark.usefixtures("stub_figures")


def test_comment_and_script_openers_in_tokens_stay_inside_the_explorer_s_json(tmp_path):
    emb, sae, _ = planted_pair()
    tokens = [f"t{i}" for i in range(emb.d_vocab)]
    tokens[1], tokens[2], tokens[3] = "<!--", "<script>", "\u202eevil\x1b[2J\x00"
    emb = Embeddings(emb.W_E, emb.W_pos, tokens=tokens, name="planted")
    an = analyze(emb, sae, tokens_sample=16)
    data = report_parts(an)["explorer_data"]
    assert "<!--" not in data and "<script" not in data.lower() and "</" not in data
    assert json.loads(
        data
    )  # still JSON, which the page's JSON.parse reads back to the same strings
    page = (an.save(tmp_path / "report") / "report.html").read_text()
    script = re.search(r'<script[^>]*id="explorer-data"[^>]*>(.*?)</script>', page, re.S)
    assert script is not None and "<!--" not in script.group(1)


def test_control_and_bidirectional_characters_are_shown_as_escapes():
    assert esc("a\u202eb\x1b[31m\x00<") == "a\\u202eb\\u001b[31m\\u0000&lt;"


def test_the_explorer_shows_control_and_bidirectional_characters_of_tokens_as_escapes():
    """The explorer's token strings (what its search and cards show) carry a right-to-left override
    or an escape sequence as visible escapes, as the report's tables do."""
    from posfeat.outputs.explorer import vocabulary

    emb, sae, _ = planted_pair()
    tokens = [f"t{i}" for i in range(emb.d_vocab)]
    for t in range(emb.d_vocab):
        tokens[t] = f"\u202et{t}\x1b[2J"
    emb = Embeddings(emb.W_E, emb.W_pos, tokens=tokens, name="planted")
    packed = vocabulary(analyze(emb, sae, tokens_sample=16))["strings"]
    strings = json.loads(zlib.decompress(base64.b64decode(packed)))
    assert len(strings) == emb.d_vocab and all(
        "\u202e" not in s and "\x1b" not in s for s in strings
    )
    assert all(s.startswith("\\u202e") for s in strings)


def test_the_past_context_mean_reads_a_run_of_columns_without_the_masks_copy():
    """The explorer's past-context firing: one run of columns (the positions past the context) is
    read as a view, its means those of the masked copy to their rounding; columns that are not one
    run go through the mask, the same values exactly; no rows, no values."""
    import numpy as np

    from posfeat.outputs.explorer import _column_mean

    rng = np.random.default_rng(0)
    m = rng.random((300, 64))
    run = np.arange(64) >= 10
    np.testing.assert_allclose(_column_mean(m, run), m[:, run].mean(1), rtol=1e-14, atol=0)
    scattered = np.zeros(64, bool)
    scattered[[3, 7, 40]] = True
    assert np.array_equal(_column_mean(m, scattered), m[:, scattered].mean(1))
    assert _column_mean(m[:0], run).shape == (0,)
