"""Print the table of verdicts that README.md and docs/findings.md carry, from a run's summary.json.

    python scripts/findings_table.py posfeat-out/summary.json

The pages hold it between ``<!-- findings-table -->`` and ``<!-- /findings-table -->``;
tests/meta/test_findings_table.py checks both against a fresh analyze of the bundled pair.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from posfeat.analyses.findings import markdown_table
from posfeat.outputs.report import TITLES

START, END = "<!-- findings-table -->", "<!-- /findings-table -->"


def table(summary: dict) -> str:
    return markdown_table(summary["findings"], TITLES)


def block(text: str) -> str:
    """The table a page holds between the markers (empty when it has none)."""
    if START not in text or END not in text:
        return ""
    return text.split(START, 1)[1].split(END, 1)[0].strip()


if __name__ == "__main__":
    print(table(json.loads(Path(sys.argv[1] if len(sys.argv) > 1 else "posfeat-out/summary.json").read_text())))
