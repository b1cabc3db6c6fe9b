"""examples/quickstart.ipynb runs top to bottom (bundled pair: load, analyse, two figures, a feature
card, a prompt's coloured view)."""

from __future__ import annotations

import pytest

from helpers import REPO

pytestmark = [pytest.mark.realmodel, pytest.mark.slow]


def test_quickstart_notebook_runs(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(REPO / "examples" / "quickstart.ipynb", as_version=4)
    nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    html = [
        o["data"].get("text/html", "")
        for o in outputs
        if o.output_type in ("execute_result", "display_data")
    ]
    assert any("verdict" in h for h in html)  # Analysis._repr_html_
    assert any(
        "data-feature" not in h and "<svg" in h and "feature" in h for h in html
    )  # FeatureCard with its sparkline
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 2  # two figures
    assert any(
        "cat" in h and "mat" in h and "background" in h for h in html
    )  # the prompt's coloured view
