"""Benchmark: how long ``posfeat --help`` takes to start, against the bound of issue 19 (under 1 s).

Runs, each in a fresh process and best of ``--repeat`` (default 5),

    python -c "import posfeat.cli"                       the parser's imports alone
    python -c "from posfeat.cli import main; main(['--help'])"   what the posfeat script does
    python -c "import posfeat"                           the package (lazy: no torch)

and prints a table of seconds against the bound, and which heavy modules each imported. The sources
come from this checkout (PYTHONPATH=src), not from an installed posfeat. Exits 0 whatever it
measures (a benchmark prints, the tests assert behaviour); ``--check`` exits 1 when ``posfeat
--help`` is over the bound.

    python benchmarks/bench_cli_import.py [--repeat N] [--check]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

BOUND_S = 1.0
SRC = Path(__file__).resolve().parents[1] / "src"
HEAVY = ("torch", "scipy", "matplotlib", "pandas", "plotly")
CASES = {
    "import posfeat.cli": "import posfeat.cli",
    "posfeat --help": "from posfeat.cli import main\ntry:\n    main(['--help'])\nexcept "
    "SystemExit:\n    pass",
    "import posfeat": "import posfeat",
}


def run(code: str) -> tuple[float, list[str]]:
    probe = f"{code}\nimport sys\nprint('HEAVY', *[m for m in {HEAVY!r} if m in sys.modules], file=sys.stderr)"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        ),
    }
    t0 = time.perf_counter()
    res = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True
    )
    dt = time.perf_counter() - t0
    heavy = next(
        (line.split()[1:] for line in res.stderr.splitlines() if line.startswith("HEAVY")), []
    )
    return dt, heavy


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument(
        "--check", action="store_true", help="exit 1 when posfeat --help is over the bound"
    )
    args = ap.parse_args()
    base, _ = min(run("pass") for _ in range(args.repeat))
    print(
        f"start-up time, best of {args.repeat} fresh processes (bare python -c pass: {base:.3f} s); "
        f"bound {BOUND_S:.1f} s"
    )
    print(f"{'what':<20} {'seconds':>8} {'bound':>6}  {'within':<6} heavy modules imported")
    over = False
    for name, code in CASES.items():
        dt, heavy = min(run(code) for _ in range(args.repeat))
        within = dt < BOUND_S
        over |= name == "posfeat --help" and not within
        print(
            f"{name:<20} {dt:8.3f} {BOUND_S:6.1f}  {'yes' if within else 'NO':<6} "
            f"{', '.join(heavy) or 'none'}"
        )
    return 1 if args.check and over else 0


if __name__ == "__main__":
    sys.exit(main())
