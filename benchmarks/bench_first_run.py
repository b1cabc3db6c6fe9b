"""Benchmark: the first ``posfeat analyze`` after an install against the runs after it (issue 29: at
most 2x).

A fresh install has no compiled numba kernels and no bytecode of its own (the packages it depends
on were byte-compiled by pip when they were installed). Each case runs ``posfeat analyze --out TMP
--force`` (the bundled pair) in a new process, on a copy of this checkout's ``src/posfeat`` in a
temporary folder (``PYTHONPATH``):

* ``first``: the copy as a fresh clone has it, with no ``__pycache__``: Python writes the package's
  bytecode and numba compiles every kernel into its cache there (``NUMBA_CACHE_DIR`` unset,
  ``PYTHONDONTWRITEBYTECODE`` unset, as on a user's machine);
* ``again`` (``--repeats`` times): the same copy, now holding what the first run wrote.

It prints, per run, the wall time, the CPU time of the process and its children (user + system,
which the other jobs of a shared machine change less than the wall time), the stage timings from
summary.json, and the ratio of the first run to the median of the others, with the machine and its
load average. The user's own numba cache and the checkout are never touched. Exits 0 whatever it
measures.

    python benchmarks/bench_first_run.py [--repeats 2] [--args "--tokens-sample 2048"]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from machine import cpu_identity

SRC = Path(__file__).resolve().parents[1] / "src"
STAGES = ("load", "grid_statistics", "reconstruction", "nulls", "figures", "report")


def run_once(env: dict[str, str], out: Path, extra: list[str]) -> dict[str, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-m", "posfeat.cli.main", "analyze", "--out", str(out), "--force", *extra],
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        sys.exit(f"posfeat analyze failed ({res.returncode}): {res.stderr.strip()[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    timings = json.loads((out / "summary.json").read_text()).get("timings", {})
    return {"wall": wall, "cpu": cpu, **{k: float(timings.get(k, float("nan"))) for k in STAGES}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2, help="runs after the first (default 2)")
    ap.add_argument(
        "--args", default="", help="more flags for posfeat analyze (default none: the bundled pair)"
    )
    args = ap.parse_args()
    extra = shlex.split(args.args)
    with tempfile.TemporaryDirectory(prefix="posfeat-first-run-") as tmp:
        base = Path(tmp)
        shutil.copytree(
            SRC / "posfeat", base / "src" / "posfeat", ignore=shutil.ignore_patterns("__pycache__")
        )
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                [str(base / "src"), os.environ.get("PYTHONPATH", "")]
            ).rstrip(os.pathsep),
        }
        for var in ("NUMBA_CACHE_DIR", "POSFEAT_NUMBA_CACHE", "PYTHONDONTWRITEBYTECODE"):
            env.pop(var, None)
        load = os.getloadavg()[0]
        rows = [("first", run_once(env, base / "out", extra))]
        rows += [
            (f"again {i + 1}", run_once(env, base / "out", extra)) for i in range(args.repeats)
        ]
        load = max(load, os.getloadavg()[0])
    for key, value in cpu_identity():
        print(f"{key:<18} {value}")
    print(f"{'load average':<18} {load:.1f} (1 min, highest seen at a run's start or end)")
    print()
    print(f"{'run':<9} {'wall s':>8} {'CPU s':>8} " + " ".join(f"{k:>15}" for k in STAGES))
    for name, r in rows:
        print(
            f"{name:<9} {r['wall']:>8.1f} {r['cpu']:>8.1f} "
            + " ".join(f"{r[k]:>15.1f}" for k in STAGES)
        )
    later = [r for _, r in rows[1:]]
    if later:
        first = rows[0][1]
        wall = statistics.median(r["wall"] for r in later)
        cpu = statistics.median(r["cpu"] for r in later)
        print(
            f"\nfirst / later (median): wall {first['wall'] / wall:.2f}x, CPU "
            f"{first['cpu'] / cpu:.2f}x (issue 29's bound: 2x)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
