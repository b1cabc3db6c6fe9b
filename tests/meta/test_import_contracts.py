"""The import-linter contracts in pyproject.toml encode the stages' real graph, and fail when a
stage reaches upward
or sideways: checked by planting such an import in a copy of the package."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO

LINT = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))


def lint(src: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(src)}  # the copy comes before the installed posfeat
    return subprocess.run(
        [LINT, "--config", str(REPO / "pyproject.toml"), "--no-cache"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def package_copy(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    shutil.copytree(
        REPO / "src" / "posfeat", src / "posfeat", ignore=shutil.ignore_patterns("__pycache__")
    )
    return src


def plant(src: Path, module: str, line: str) -> None:
    path = src / "posfeat" / module
    path.write_text(path.read_text() + f"\n{line}\n")


def test_the_contracts_hold_on_the_package():
    run = lint(REPO / "src")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "2 kept, 0 broken" in run.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        (
            "training/config.py",
            "from ..analyses import classify  # noqa",
            "Training reads only core and io",
        ),
        (
            "training/config.py",
            "from ..engine import grid_stats  # noqa",
            "Training reads only core and io",
        ),
        (
            "outputs/figures.py",
            "from ..training import train  # noqa",
            "Stages import only from earlier stages",
        ),
        (
            "training/config.py",
            "from ..outputs import write  # noqa",
            "Stages import only from earlier stages",
        ),
        (
            "analyses/classification.py",
            "from ..outputs import write  # noqa",
            "Stages import only from earlier stages",
        ),
        (
            "io/hub.py",
            "from ..engine import kernel  # noqa",
            "Stages import only from earlier stages",
        ),
        (
            "core/errors.py",
            "from ..io import paths  # noqa",
            "Stages import only from earlier stages",
        ),
    ],
)
def test_a_planted_import_breaks_a_contract(package_copy, tmp_path, module, line, broken):
    src = tmp_path / "src"
    shutil.copytree(package_copy, src)
    plant(src, module, line)
    run = lint(src)
    assert run.returncode != 0, (
        f"planting {line!r} in {module} broke no contract:\n{run.stdout[-2000:]}"
    )
    assert broken in run.stdout and "BROKEN" in run.stdout, run.stdout[-3000:]
