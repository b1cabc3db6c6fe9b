"""Compile the numba kernels of ``posfeat analyze`` into numba's on-disk cache (``__pycache__``
beside each module).

A fresh clone has no cache, and every process of the test suite that analyses something first (each
pytest worker, and the signal tests' subprocesses) compiled the same kernels at once, each on its
own: about 20 s of every such process. scripts/test runs this in the background from its first line,
while pip and the checks run on one core, and waits for it before pytest. It analyses the tests'
planted pair once and keeps nothing. Whatever it does not compile (all of it, if it fails, say on a
machine still without numba), the tests compile as before.

    PYTHONPATH=src python scripts/warm_kernels.py
"""

from __future__ import annotations

import sys
from pathlib import Path


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from posfeat import analyze

    from helpers import planted_pair

    emb, sae, _ = planted_pair()
    analyze(emb, sae, tokens_sample=24, progress=False)


if __name__ == "__main__":
    main()
