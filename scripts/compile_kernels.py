"""Compile posfeat's numba kernels into their on-disk cache (``cache=True``) with a tiny random pair, so that later
processes load them instead of compiling them.

``scripts/test`` runs it in the background while ruff, import-linter and the docs build run, so that the two test workers
of a fresh clone do not both spend the first seconds compiling the same kernels. Nothing else is written.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from posfeat import SAE, Embeddings, analyze, feature_stats


def main() -> None:
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    emb = Embeddings(rng.normal(size=(40, 8)).astype(np.float32), rng.normal(size=(24, 8)).astype(np.float32))
    sae = SAE.from_arrays(rng.normal(size=(8, 16)), rng.normal(size=(16, 8)), rng.normal(size=16) * 0.5, np.zeros(8))
    for dtype in (torch.float32, torch.float64):  # the engine's two precisions
        feature_stats(emb, sae, dtype=dtype).mean_by_token([0, 1])
    analyze(emb, sae, positions=12, tokens_sample=8, progress=False)  # reconstruction and token kernels
    print(f"numba kernels compiled and cached in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
