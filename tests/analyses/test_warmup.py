"""The first run after an install: the reconstruction's numba kernels compiled ahead of use in a
second process (analyses/warmup.py, issue 29 item 2). How long it takes is a benchmark's business
(benchmarks/bench_first_run.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from posfeat.core.progress import STAGE_LINE

CODE = """
from posfeat.analyses import warmup
print(warmup._kernels_cached(), warmup.start())
warmup.wait()
print(warmup._kernels_cached(), warmup.start())
"""


@pytest.mark.slow
def test_a_cold_cache_is_filled_by_a_second_process_once(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    env.pop("POSFEAT_WARMUP", None)
    run = subprocess.run(
        [sys.executable, "-c", CODE], env=env, capture_output=True, text=True, timeout=900
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [
        "False",
        "True",
        "True",
        "False",
    ]  # cold: started; then cached: not started again
    line = "posfeat: compiling numba's kernels, once after an install (2 processes)"
    assert run.stderr.strip() == line and STAGE_LINE.match(
        line
    )  # a stage line: logs and tests set it apart from errors


def test_no_second_process_when_turned_off_or_cached(monkeypatch):
    from posfeat.analyses import warmup

    monkeypatch.setenv("POSFEAT_WARMUP", "0")
    assert warmup.start() is False
    monkeypatch.delenv("POSFEAT_WARMUP")
    monkeypatch.setattr(warmup, "_kernels_cached", lambda: True)
    assert warmup.start() is False
    warmup.wait()  # nothing started: returns at once
