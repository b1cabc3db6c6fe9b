"""README's and docs/findings.md's table of verdicts is the bundled pair's run, as summary.json
gives it."""

from __future__ import annotations

import importlib.util
import math

import pytest

from posfeat import analyze, load_pair
from posfeat.analyses.findings import FINDINGS, VERDICTS
from posfeat.outputs.report import glance

from helpers import REPO

pytestmark = [pytest.mark.realmodel, pytest.mark.slow]


def _script():
    spec = importlib.util.spec_from_file_location(
        "findings_table", REPO / "scripts" / "findings_table.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def bundled():
    return analyze(*load_pair(), progress=False)  # README's first command's analysis (the defaults)


def test_readme_and_findings_page_carry_the_bundled_runs_table(bundled):
    script = _script()
    want = script.table({"findings": bundled.findings})
    for page in ("README.md", "docs/findings.md"):
        got = script.block((REPO / page).read_text())
        assert got == want, (
            f"{page}'s table is not the bundled run's; regenerate it with "
            f"scripts/findings_table.py:\n{want}"
        )


def test_the_reports_first_table_and_the_summary_agree(bundled):
    s = bundled.summary
    assert set(s["findings"]) == set(FINDINGS)
    first = glance(s["findings"])
    for key, f in s["findings"].items():
        assert f["verdict"] in VERDICTS and f["verdict"] in first, key
        for stat in (f["null"] or {}).values():  # every drawn null carries its distribution summary
            if isinstance(stat, dict) and "draws" in stat:
                assert set(stat) >= {"median", "percentile", "p_value", "draws"}, key
                if f["verdict"] in ("reproduced", "partly"):
                    assert stat["draws"] > 0 and math.isfinite(stat["p_value"]), key
