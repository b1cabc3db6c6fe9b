"""The code is formatted as pyproject.toml says (ruff format at 100 columns) and at most 2% of the package's lines run
past 100 columns (strings and comments the formatter cannot break)."""

from __future__ import annotations

import subprocess
import sys
import tomllib

from helpers import REPO


def test_ruff_format_leaves_every_file_as_it_is():
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "format",
            "--check",
            "src",
            "tests",
            "benchmarks",
            "scripts",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]


def test_lines_within_100_columns():
    assert (
        tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["ruff"]["line-length"] <= 100
    )
    lines = [line for p in (REPO / "src").rglob("*.py") for line in p.read_text().splitlines()]
    long = [line for line in lines if len(line) > 100]
    assert len(long) <= 0.02 * len(lines), f"{len(long)} of {len(lines)} lines run past 100 columns"
