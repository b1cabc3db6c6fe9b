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


@torch.no_grad()
def reconstruction_by_position(
    emb: Embeddings, sae: SAE, sample: TokenSample, positions: Sequence[int] | range | None = None, *, device: str = "cpu",
    seed: int = 0,
) -> pd.DataFrame:
    """One row per position with the columns of ``EVAL_COLUMNS`` (see module docstring)."""
    pos = _resolve_index(positions, emb.n_ctx, "positions")
    tok = sample.ids
    W_E = emb.W_E[tok].double()
    denom = float((W_E - W_E.mean(0)).pow(2).sum())  # = sum_t ||x - x_bar_p||^2 at every p
    gen = torch.Generator().manual_seed(seed)
    ctx = sae.context_size or emb.n_ctx
    rows = []
    for pc, x, f, x_hat in enumerate_reconstructions(emb, sae, tok, pos, device=device):
        err = (x - x_hat).double().pow(2).sum(-1)  # [n_tok, n_chunk]
        cos = torch.nn.functional.cosine_similarity(x_hat, x, dim=-1).double()
        l0 = (f > 0).double().sum(-1)
        rnd = torch.randn(x.shape, generator=gen).to(x.device)
        rnd = rnd / rnd.norm(dim=-1, keepdim=True) * x.norm(dim=-1, keepdim=True)
        rerr = (x - rnd).double().pow(2).sum(-1)
        rcos = torch.nn.functional.cosine_similarity(rnd, x, dim=-1).double()
        zerr = x.double().pow(2).sum(-1)
        for j, p in enumerate(pc.tolist()):
            rows.append({
                "position": p, "in_context": p < ctx, "mse": float(err[:, j].mean()) / emb.d_model,
                "fvu": float(err[:, j].sum()) / denom, "cosine": float(cos[:, j].mean()), "l0": float(l0[:, j].mean()),
                "random_fvu": float(rerr[:, j].sum()) / denom, "random_cosine": float(rcos[:, j].mean()),
                "zero_fvu": float(zerr[:, j].sum()) / denom,
            })
    return pd.DataFrame(rows, columns=EVAL_COLUMNS)


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
