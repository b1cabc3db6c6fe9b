"""Reconstruction quality per position (``posfeat eval``), reused by the report.

Definitions, for a stated token sample ``T`` at position ``p`` with input ``x = W_E[t] + W_pos[p]``:

* ``mse``: mean over tokens of ``||x - x_hat||^2 / d_model``;
* ``fvu``: ``sum_t ||x - x_hat||^2 / sum_t ||x - x_bar_p||^2``, ``x_bar_p`` the mean input at ``p``
  over the sample (so the denominator is the token part's spread); "mean FVU over a range" is the
  mean of that over the range's positions;
* ``explained_variance``: SAELens's ``1 - sum ||x - x_hat||^2 / sum ||x - mean x||^2`` over the batch,
  the batch being the sample at ``p`` (so ``1 - fvu``; pooled over a range of positions, where the
  mean also absorbs the positions, see :func:`pooled_explained_variance`);
* ``cosine``: mean cosine similarity of ``x_hat`` and ``x``; ``l0``: mean number of active features;
* baselines: ``random_*`` for a random direction scaled to the input's norm (its cosine with the
  input drawn from the exact distribution of a uniform direction's, seeded per position, so
  ``||x - r||^2 = 2 ||x||^2 (1 - cos)``); ``zero_*`` for reconstructing with zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..core.embeddings import Embeddings
from ..core.sae import SAE, sae_context
from ..core.tensors import to_numpy
from ..engine.grid_stats import GridStats, check_pair, feature_stats, on_device, resolve_index
from ..engine.sample import Chunk, SampleGrid, TokenSample
from ..io.sources import as_pair

EVAL_COLUMNS = ["position", "in_context", "mse", "fvu", "explained_variance", "cosine", "l0", "random_fvu", "random_cosine", "zero_fvu",
                "zero_explained_variance"]


def random_cosines(d_model: int, n_tok: int, positions: np.ndarray, seed: int) -> np.ndarray:
    """``Float64[ndarray, "n_tok n_pos"]``: cosines of uniform random directions with fixed vectors in ``d_model`` dimensions.

    Drawn from their exact law (``2 B - 1``, ``B ~ Beta((d-1)/2, (d-1)/2)``) with a generator seeded
    by ``(seed, position)``, so a position's baseline does not depend on how positions are chunked.
    """
    out = np.empty((n_tok, len(positions)))
    for j, p in enumerate(positions):
        rng = np.random.default_rng([seed, int(p)])
        out[:, j] = rng.choice([-1.0, 1.0], n_tok) if d_model == 1 else 2 * rng.beta((d_model - 1) / 2, (d_model - 1) / 2, n_tok) - 1
    return out


def _sq_norm(v: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(v, dim=-1).double().pow(2)


def chunk_metrics(chunk: Chunk, err: torch.Tensor, denom: float, cos_rand: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-position metrics of one chunk (``Float64[Tensor, "n_chunk"]`` for each column of ``EVAL_COLUMNS`` after
    ``in_context``); ``err = x - x_hat``. The cosine comes from ``x . x_hat = (|x|^2 + |x_hat|^2 - |err|^2) / 2``."""
    ee, xx, hh = _sq_norm(err), _sq_norm(chunk.x), _sq_norm(chunk.x_hat)  # [n_tok, n_chunk]
    fvu = ee.sum(0) / denom
    zero = xx.sum(0) / denom
    cos = ((xx + hh - ee) / (2 * (xx * hh).sqrt().clamp(min=1e-300))).clamp(-1.0, 1.0)
    return {
        "mse": ee.mean(0) / chunk.x.shape[-1], "fvu": fvu, "explained_variance": 1 - fvu, "cosine": cos.mean(0), "l0": chunk.l0,
        "random_fvu": (2 * xx * (1 - cos_rand)).sum(0) / denom, "random_cosine": cos_rand.mean(0),
        "zero_fvu": zero, "zero_explained_variance": 1 - zero,
    }


def chunk_error(grid: SampleGrid, chunk: Chunk) -> torch.Tensor:
    """``x - x_hat`` in a reused buffer."""
    err = grid.buffer("err", *chunk.x.shape)
    return torch.sub(chunk.x, chunk.x_hat, out=err)


def token_spread(sample: TokenSample, emb: Embeddings) -> float:
    """``sum_t ||x - x_bar_p||^2`` over the sample: the FVU denominator, the same at every position."""
    W_E = emb.W_E[sample.ids.to(emb.device)].double()
    return float((W_E - W_E.mean(0)).pow(2).sum())


def pooled_explained_variance(df: pd.DataFrame, emb: Embeddings, sample: TokenSample, lo: int, hi: int) -> float:
    """SAELens's explained variance of the sample pooled over positions ``lo <= p < hi`` (one batch of all those inputs).

    With ``x = e_t + w_p`` the pooled spread is ``n_pos * sum_t ||e_t - e_bar||^2 + n_tok * sum_p ||w_p - w_bar||^2``.
    """
    sel = df[(df.position >= lo) & (df.position < hi)]
    if not len(sel):
        return float("nan")
    denom = token_spread(sample, emb)
    W = emb.W_pos[torch.tensor(sel.position.to_numpy(dtype=np.int64), device=emb.device)].double()
    spread = len(sel) * denom + len(sample) * float((W - W.mean(0)).pow(2).sum())
    return float(1.0 - (sel.fvu.to_numpy() * denom).sum() / spread)


@torch.no_grad()
def reconstruction_by_position(emb: Any, sae: Any, sample: TokenSample, positions: Sequence[int] | range | None = None, *,
                               device: str | torch.device | None = None, seed: int = 0) -> pd.DataFrame:
    """One row per position with the columns of ``EVAL_COLUMNS`` (see module docstring), computed where the pair lives.

    ``emb`` and ``sae`` may be anything :func:`posfeat.load_embeddings` and :func:`posfeat.load_sae` accept.
    """
    emb, sae = on_device(*as_pair(emb, sae), device)
    check_pair(emb, sae)
    pos = resolve_index(positions, emb.n_ctx, "positions")
    denom = token_spread(sample, emb)
    ctx = sae_context(sae, emb.n_ctx)
    grid = SampleGrid(emb, sae, sample.ids)
    parts = []
    for chunk in grid.chunks(pos):
        pc = to_numpy(chunk.positions)
        cos_rand = torch.as_tensor(random_cosines(emb.d_model, len(sample), pc, seed), device=grid.dev)
        m = chunk_metrics(chunk, chunk_error(grid, chunk), denom, cos_rand)
        parts.append(pd.DataFrame({"position": pc, "in_context": pc < ctx, **{k: to_numpy(v) for k, v in m.items()}}))
    return pd.concat(parts, ignore_index=True)[EVAL_COLUMNS]


def range_means(df: pd.DataFrame, lo: int, hi: int) -> dict[str, float]:
    """Means of the per-position metrics over positions ``lo <= p < hi`` (NaN when empty)."""
    sel = df[(df.position >= lo) & (df.position < hi)]
    cols = ("mse", "fvu", "explained_variance", "cosine", "l0", "random_fvu", "zero_fvu")
    return {c: float(sel[c].mean()) if len(sel) else float("nan") for c in cols}


def dead_features(stats: GridStats) -> np.ndarray:
    """``Bool[ndarray, "d_sae"]``: features that never fire anywhere on the grid the stats cover."""
    return stats.fire <= 0


def in_context_stats(emb: Embeddings, sae: SAE, *, device: str | torch.device | None = None) -> GridStats:
    """Exact grid statistics over all tokens and the SAE's training context (positions ``0..context-1``)."""
    emb, sae = on_device(emb, sae, device)
    return feature_stats(emb, sae, range(sae_context(sae, emb.n_ctx)), top_k_tokens=20)
