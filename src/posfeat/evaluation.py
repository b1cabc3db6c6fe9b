"""Reconstruction quality per position (``posfeat eval``), reused by the report.

Definitions, for a stated token sample ``T`` at position ``p`` with input ``x = W_E[t] + W_pos[p]``:

* ``mse``: mean over tokens of ``||x - x_hat||^2 / d_model``;
* ``fvu``: ``sum_t ||x - x_hat||^2 / sum_t ||x - x_bar_p||^2``, ``x_bar_p`` the mean input at ``p``
  over the sample (so the denominator is the token part's spread); "mean FVU over a range" is the
  mean of that over the range's positions;
* ``cosine``: mean cosine similarity of ``x_hat`` and ``x``; ``l0``: mean number of active features;
* baselines: ``random_*`` for a random direction scaled to the input's norm (seeded), ``zero_*``
  for reconstructing with zero.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from .embeddings import Embeddings
from .grid_stats import GridStats, _resolve_index, feature_stats
from .reconstruction import TokenSample, enumerate_reconstructions
from .sae import SAE

EVAL_COLUMNS = ["position", "in_context", "mse", "fvu", "cosine", "l0", "random_fvu", "random_cosine", "zero_fvu"]


def position_metrics(x: torch.Tensor, f: torch.Tensor, x_hat: torch.Tensor, denom: float, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Per-position metrics of one chunk (``x, x_hat: [n_tok, n_chunk, d_model]``, ``f: [n_tok, n_chunk, d_sae]``).

    Returns ``Float64[Tensor, "n_chunk"]`` per metric of ``EVAL_COLUMNS`` (see module docstring).
    """
    d_model = x.shape[-1]
    err = (x - x_hat).double().pow(2).sum(-1)  # [n_tok, n_chunk]
    rnd = torch.randn(x.shape, generator=gen).to(x.device)
    rnd = rnd / rnd.norm(dim=-1, keepdim=True) * x.norm(dim=-1, keepdim=True)
    cos = torch.nn.functional.cosine_similarity
    return {
        "mse": err.mean(0) / d_model,
        "fvu": err.sum(0) / denom,
        "cosine": cos(x_hat, x, dim=-1).double().mean(0),
        "l0": (f > 0).double().sum(-1).mean(0),
        "random_fvu": (x - rnd).double().pow(2).sum(-1).sum(0) / denom,
        "random_cosine": cos(rnd, x, dim=-1).double().mean(0),
        "zero_fvu": x.double().pow(2).sum(-1).sum(0) / denom,
    }


def token_spread(sample: TokenSample, emb: Embeddings) -> float:
    """``sum_t ||x - x_bar_p||^2`` over the sample: the FVU denominator, the same at every position."""
    W_E = emb.W_E[sample.ids].double()
    return float((W_E - W_E.mean(0)).pow(2).sum())


@torch.no_grad()
def reconstruction_by_position(
    emb: Embeddings, sae: SAE, sample: TokenSample, positions: Sequence[int] | range | None = None, *, device: str = "cpu",
    seed: int = 0,
) -> pd.DataFrame:
    """One row per position with the columns of ``EVAL_COLUMNS`` (see module docstring)."""
    pos = _resolve_index(positions, emb.n_ctx, "positions")
    denom = token_spread(sample, emb)
    gen = torch.Generator().manual_seed(seed)
    ctx = sae.context_size or emb.n_ctx
    parts = []
    for pc, x, f, x_hat in enumerate_reconstructions(emb, sae, sample.ids, pos, device=device):
        m = position_metrics(x, f, x_hat, denom, gen)
        parts.append(pd.DataFrame({"position": pc.cpu().numpy(), "in_context": (pc < ctx).cpu().numpy(),
                                   **{k: v.cpu().numpy() for k, v in m.items()}}))
    return pd.concat(parts, ignore_index=True)[EVAL_COLUMNS]


def range_means(df: pd.DataFrame, lo: int, hi: int) -> dict[str, float]:
    """Means of the per-position metrics over positions ``lo <= p < hi`` (NaN when empty)."""
    sel = df[(df.position >= lo) & (df.position < hi)]
    return {c: float(sel[c].mean()) if len(sel) else float("nan") for c in ("mse", "fvu", "cosine", "l0", "random_fvu")}


def dead_features(stats: GridStats) -> np.ndarray:
    """``Bool[ndarray, "d_sae"]``: features that never fire anywhere on the grid the stats cover."""
    return stats.fire <= 0


def in_context_stats(emb: Embeddings, sae: SAE, *, device: str = "cpu") -> GridStats:
    """Exact grid statistics over all tokens and the SAE's training context (positions ``0..context-1``)."""
    ctx = min(sae.context_size or emb.n_ctx, emb.n_ctx)
    return feature_stats(emb, sae, range(ctx), device=device, top_k_tokens=20)
