"""Issue 30: the engine runs for any user: a non-root user with no HOME and no passwd entry, posfeat
installed where it cannot write (numba cannot cache beside the sources), started in a folder it
cannot write either.

The tests run as root, so a subprocess becomes uid 54321 (no passwd entry) with ``setpriv``, keeping
only the capability to read and search folders (CAP_DAC_READ_SEARCH, so that it can reach the
interpreter under a private /root as a system-wide install would be reachable) and none to write
anywhere it does not own. Its copy of posfeat's sources is read-only to it."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import posfeat

from helpers import write_planted_folders

SRC = Path(posfeat.__file__).resolve().parents[1]
UID = 54321

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None or sys.platform != "linux",
    reason="needs root and setpriv to run a subprocess as another user",
)


@pytest.fixture
def world():
    """A read-only copy of the sources, a planted model and SAE readable by all, a read-only working
    folder, a writable output folder and a private TMPDIR (world-writable, sticky) for the
    subprocess."""
    root = Path(tempfile.mkdtemp(prefix="posfeat-any-user-"))
    try:
        shutil.copytree(
            SRC / "posfeat",
            root / "src" / "posfeat",
            ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"),
        )
        (root / "data").mkdir()
        write_planted_folders(root / "data")
        for p in [root, *root.rglob("*")]:
            mode = 0o555 if p.is_dir() else 0o444
            os.chmod(p, mode)
        (root / "cwd").mkdir()  # made after the chmod: root's own, 0755, not writable by the user
        os.chmod(root / "cwd", 0o755)
        for name in ("outs", "tmp"):
            (root / name).mkdir()
            os.chmod(root / name, 0o777 | stat.S_ISVTX)
        yield root
    finally:
        for p in [root, *root.rglob("*")]:
            if p.is_dir() and not p.is_symlink():
                os.chmod(p, 0o755)
        shutil.rmtree(root, ignore_errors=True)


def _as_user(world: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(world / "src"),
        "TMPDIR": str(world / "tmp"),
        "OMP_WAIT_POLICY": "PASSIVE",
        "LANG": "C.UTF-8",
    }
    cmd = [
        "setpriv",
        f"--reuid={UID}",
        f"--regid={UID}",
        "--clear-groups",
        "--inh-caps=+dac_read_search",
        "--ambient-caps=+dac_read_search",
        sys.executable,
        "-c",
        "from posfeat.cli.main import run; run()",
        *argv,
    ]
    return subprocess.run(
        cmd, cwd=world / "cwd", env=env, capture_output=True, text=True, timeout=600
    )


def test_engine_commands_run_for_a_user_with_no_home_and_a_read_only_install(world):
    data = world / "data"
    stats = _as_user(
        world,
        "-v",
        "stats",
        "--model",
        str(data / "model"),
        "--sae",
        str(data / "sae"),
        "--out",
        str(world / "outs" / "s.csv"),
    )
    assert stats.returncode == 0 and "Traceback" not in stats.stderr, stats.stderr
    cache = world / "tmp" / f"posfeat-numba-{UID}"
    assert f"numba's compiled kernels are cached in {cache}" in stats.stderr, stats.stderr
    assert cache.is_dir() and cache.stat().st_uid == UID and not cache.stat().st_mode & 0o077
    train = _as_user(
        world,
        "train",
        "--model",
        str(data / "model"),
        "--d-sae",
        "8",
        "--context",
        "8",
        "--steps",
        "4",
        "--batch",
        "8",
        "--out",
        str(world / "outs" / "sae"),
    )
    assert train.returncode == 0 and "Traceback" not in train.stderr, train.stderr
    assert (world / "outs" / "s.csv").is_file() and (world / "outs" / "sae" / "cfg.json").is_file()
    assert sorted(p.name for p in (world / "outs").iterdir()) == ["s.csv", "sae"]
    assert (
        list((world / "cwd").iterdir()) == []
    )  # numba's fallback with no HOME would write a folder named "~" here
    assert not [p for p in (world / "src").rglob("*") if p.suffix in (".nbi", ".nbc")]


def test_a_cache_folder_another_user_could_fill_is_never_used(world):
    planted = world / "tmp" / f"posfeat-numba-{UID}"
    planted.mkdir()
    os.chmod(planted, 0o777)  # root's, writable by anyone: numba would load whatever is put there
    data = world / "data"
    run = _as_user(world, "-v", "stats", "--model", str(data / "model"), "--sae", str(data / "sae"))
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    assert "compiled in each run" in run.stderr and list(planted.iterdir()) == []
