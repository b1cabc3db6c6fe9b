"""Print the table of verdicts that README.md and docs/findings.md carry, from a run's summary.json.

    python scripts/findings_table.py posfeat-out/summary.json [--update README.md docs/findings.md]

The pages hold it between ``<!-- findings-table -->`` and ``<!-- /findings-table -->``;
tests/meta/test_findings_table.py checks both against a fresh analyze of the bundled pair.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from posfeat.analyses.findings import markdown_table

START, END = "<!-- findings-table -->", "<!-- /findings-table -->"


def table(summary: dict) -> str:
    return markdown_table(summary["findings"])


def block(text: str) -> str:
    """The table a page holds between the markers (empty when it has none)."""
    if START not in text or END not in text:
        return ""
    return text.split(START, 1)[1].split(END, 1)[0].strip()


def update(page: Path, new: str) -> None:
    """Replace the table between the markers of ``page`` with ``new``."""
    text = page.read_text()
    head, rest = text.split(START, 1)
    page.write_text(f"{head}{START}\n{new}\n{END}{rest.split(END, 1)[1]}")


if __name__ == "__main__":
    args = sys.argv[1:]
    pages = args[args.index("--update") + 1 :] if "--update" in args else []
    src = args[0] if args and args[0] != "--update" else "posfeat-out/summary.json"
    text = table(json.loads(Path(src).read_text()))
    for page in pages:
        update(Path(page), text)
    if not pages:
        print(text)
