"""Reconstruction quality per position (``posfeat eval``), reused by the report.

Definitions, for a stated token sample ``T`` at position ``p`` with input ``x = W_E[t] + W_pos[p]``:

* ``mse``: mean over tokens of ``||x - x_hat||^2 / d_model``;
* ``fvu``: ``sum_t ||x - x_hat||^2 / sum_t ||x - x_bar_p||^2``, ``x_bar_p`` the mean input at ``p``
  over the sample (so the denominator is the token part's spread); "mean FVU over a range" is the
  mean of that over the range's positions;
* ``explained_variance``: SAELens's ``1 - sum ||x - x_hat||^2 / sum ||x - mean x||^2`` over the
  batch, the batch being the sample at ``p`` (so ``1 - fvu``; pooled over a range of positions,
  where the mean also absorbs the positions, see :func:`pooled_explained_variance`);
* ``cosine``: mean cosine similarity of ``x_hat`` and ``x``; ``l0``: mean number of active features;
* baselines: ``random_*`` for a random direction scaled to the input's norm (its cosine with the
  input drawn from the exact distribution of a uniform direction's, seeded per position, so
  ``||x - r||^2 = 2 ||x||^2 (1 - cos)``); ``zero_*`` for reconstructing with zero.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Int

from ..core.embeddings import Embeddings
from ..core.sae import SAE, sae_context
from ..core.tensors import to_numpy
from ..engine.grid_stats import GridStats, check_pair, feature_stats, on_device, resolve_index
from ..engine.indices import IndexSet
from ..engine.sample import Chunk, SampleGrid, TokenSample
from ..io.sources import as_pair
from .reconstruction_kernel import HAVE_NUMBA, fused_cpu, recon_sums

if HAVE_NUMBA:
    import numba

#: Positions per call of the fused kernel (its per-chunk arrays: ``[n_chunk, d_sae]`` position parts
# and thresholds).
CHUNK_POSITIONS = 128

EVAL_COLUMNS = [
    "position",
    "in_context",
    "mse",
    "fvu",
    "explained_variance",
    "cosine",
    "l0",
    "random_fvu",
    "random_cosine",
    "zero_fvu",
    "zero_explained_variance",
]


def random_cosines(d_model: int, n_tok: int, positions: np.ndarray, seed: int) -> np.ndarray:
    """``Float64[ndarray, "n_tok n_pos"]``: cosines of uniform random directions with fixed vectors
    in ``d_model`` dimensions.

    Drawn from their exact law (``2 B - 1``, ``B ~ Beta((d-1)/2, (d-1)/2)``) with a generator seeded
    by ``(seed, position)``, so a position's baseline does not depend on how positions are chunked.
    """
    out = np.empty((n_tok, len(positions)))
    for j, p in enumerate(positions):
        rng = np.random.default_rng([seed, int(p)])
        out[:, j] = (
            rng.choice([-1.0, 1.0], n_tok)
            if d_model == 1
            else 2 * rng.beta((d_model - 1) / 2, (d_model - 1) / 2, n_tok) - 1
        )
    return out


def _sq_norm(v: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(v, dim=-1).double().pow(2)


def chunk_metrics(sums: ChunkSums, denom: float, cos_rand: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-position metrics of one chunk (``Float64[Tensor, "n_chunk"]`` for each column of
    ``EVAL_COLUMNS`` after
    ``in_context``). The cosine comes from ``x . x_hat = (|x|^2 + |x_hat|^2 - |err|^2) / 2``."""
    ee, xx, hh = sums.ee, sums.xx, sums.hh  # [n_tok, n_chunk]
    fvu = ee.sum(0) / denom
    zero = xx.sum(0) / denom
    cos = ((xx + hh - ee) / (2 * (xx * hh).sqrt().clamp(min=1e-300))).clamp(-1.0, 1.0)
    return {
        "mse": ee.mean(0) / sums.d_model,
        "fvu": fvu,
        "explained_variance": 1 - fvu,
        "cosine": cos.mean(0),
        "l0": sums.l0,
        "random_fvu": (2 * xx * (1 - cos_rand)).sum(0) / denom,
        "random_cosine": cos_rand.mean(0),
        "zero_fvu": zero,
        "zero_explained_variance": 1 - zero,
    }


@dataclass
class ChunkSums:
    """What the reconstruction metrics need of the sample at a chunk of positions (float64, where
    the pair lives).

    ``ee``, ``xx``, ``hh``: ``[n_tok, n_chunk]`` squared norms of ``x - x_hat``, ``x`` and
    ``x_hat``; ``l0``: mean active features per token; ``pc``: squared error in the span of the
    given directions, summed over tokens; ``r_sq``, ``r_sum``: the add-back residual ``r = x - x_hat
    + dec_pos - W_pos[p]`` (``dec_pos``: the positional features' part of the decode) summed over
    tokens as squared norms and as vectors ``[n_chunk, d_model]`` (these three only when positional
    features and directions were given); ``chunk``: the engine's chunk (``b`` and ``first`` for
    :class:`posfeat.engine.sample.DeviationSums`; its ``x`` and ``x_hat`` are empty, and ``first``
    None, when the fused kernel made the sums)."""

    positions: torch.Tensor
    d_model: int
    ee: torch.Tensor
    xx: torch.Tensor
    hh: torch.Tensor
    l0: torch.Tensor
    chunk: Chunk
    pc: torch.Tensor | None = None
    r_sq: torch.Tensor | None = None
    r_sum: torch.Tensor | None = None


def fused(grid: SampleGrid) -> bool:
    """True when the fused CPU kernel (:mod:`posfeat.analyses.reconstruction_kernel`) makes the sums: a separable
    SAE on the CPU."""
    return fused_cpu(grid.sae, grid.dev)


def chunk_sums(
    grid: SampleGrid,
    positions: Int[torch.Tensor, " n_pos"],
    pos_feats: torch.Tensor | None = None,
    P: torch.Tensor | None = None,
) -> Iterator[ChunkSums]:
    """:class:`ChunkSums` chunk after chunk over ``positions``: from the fused CPU kernel for a
    separable SAE on the CPU (the decode of the non-zero activations alone, reduced where it is
    made), else from the engine's chunks (:meth:`posfeat.engine.sample.SampleGrid.chunks`: a sparse
    or dense decode in torch). ``pos_feats``, ``P``: the positional features and the directions of
    ``pc`` (both or neither)."""
    if fused(grid):
        yield from _fused_sums(grid, positions, pos_feats, P)
        return
    d = grid.emb.d_model
    for chunk in grid.chunks(positions):
        err = grid.buffer("err", *chunk.x.shape)
        torch.sub(chunk.x, chunk.x_hat, out=err)
        sums = ChunkSums(
            chunk.positions,
            d,
            _sq_norm(err),
            _sq_norm(chunk.x),
            _sq_norm(chunk.x_hat),
            chunk.l0,
            chunk,
        )
        if pos_feats is not None and P is not None:
            sums.pc = (err @ P.T).double().pow(2).sum(-1).sum(0)
            r = err.add_(_positional_part(grid, chunk, pos_feats)).sub_(
                grid.emb.W_pos[chunk.positions][None]
            )  # x - x_hat + dec_pos - W_pos[p]
            sums.r_sum = r.sum(0, dtype=torch.float64)
            sums.r_sq = _sq_norm(r).sum(0)
        yield sums


def _fused_sums(
    grid: SampleGrid,
    positions: torch.Tensor,
    pos_feats: torch.Tensor | None,
    P: torch.Tensor | None,
) -> Iterator[ChunkSums]:
    """The fused kernel's sums chunk after chunk: each distinct sample token computed once, weighted
    by its draws."""
    sae, emb = grid.sae, grid.emb
    is_pos = np.zeros(sae.d_sae, dtype=np.bool_)
    if pos_feats is not None:
        is_pos[to_numpy(pos_feats)] = True
    Pn = np.zeros((0, emb.d_model)) if P is None else to_numpy(P, np.float64)
    _, first, inv, draws = np.unique(
        to_numpy(grid.tokens), return_index=True, return_inverse=True, return_counts=True
    )
    distinct = len(first) == grid.n and bool(
        (inv.reshape(-1) == np.arange(grid.n)).all()
    )  # sorted, no repeats: no copies
    inv_t = slice(None) if distinct else torch.from_numpy(inv.reshape(-1))
    a, W_E = (
        to_numpy(t, np.float32)[slice(None) if distinct else first] for t in (grid.a, grid.W_E)
    )
    W_dec, b_dec = (to_numpy(t, np.float32) for t in (sae.W_dec, sae.b_dec))
    threads = numba.get_num_threads()
    empty = torch.empty(0)
    for i in range(0, len(positions), CHUNK_POSITIONS):
        pc = positions[i : i + CHUNK_POSITIONS].to(grid.dev)
        b = grid.position_parts(pc)
        thr = grid.cut[None, :] - b  # the comparison first_firing makes
        out = recon_sums(
            a,
            W_E,
            to_numpy(emb.W_pos[pc], np.float32),
            to_numpy(thr, np.float32),
            to_numpy(b, np.float32),
            W_dec,
            b_dec,
            is_pos,
            Pn,
            threads,
            draws,
        )
        t = {k: torch.from_numpy(v) for k, v in out.items()}
        l0 = t["count"].double() / grid.n
        # no first_firing: what reads the chunk counts the tokens that fire itself (DeviationSums'
        # kernels) or for its features alone (SampleGrid.entries)
        chunk = Chunk(pc, empty, empty, b, None, l0, None)
        sums = ChunkSums(pc, emb.d_model, t["ee"][inv_t], t["xx"][inv_t], t["hh"][inv_t], l0, chunk)
        if pos_feats is not None and P is not None:
            sums.pc, sums.r_sq, sums.r_sum = t["pc"], t["r_sq"], t["r_sum"]
        yield sums


def _positional_part(grid: SampleGrid, chunk: Chunk, pos_feats: torch.Tensor) -> torch.Tensor:
    """``f * positional @ W_dec`` at the chunk: from the dense activations when there, else from the
    positional entries."""
    if chunk.dense is not None:
        return chunk.dense[..., pos_feats] @ grid.sae.W_dec[pos_feats]
    return grid.decode_entries(*grid.entries(chunk.b, pos_feats, chunk.first), len(chunk.positions))


def token_spread(sample: TokenSample, emb: Embeddings) -> float:
    """``sum_t ||x - x_bar_p||^2`` over the sample: the FVU denominator, the same at every
    position."""
    W_E = emb.W_E[sample.ids.to(emb.device)].double()
    return float((W_E - W_E.mean(0)).pow(2).sum())


def pooled_explained_variance(
    df: pd.DataFrame, emb: Embeddings, sample: TokenSample, lo: int, hi: int
) -> float:
    """SAELens's explained variance of the sample pooled over positions ``lo <= p < hi`` (one batch
    of all those inputs).

    With ``x = e_t + w_p`` the pooled spread is ``n_pos * sum_t ||e_t - e_bar||^2 + n_tok * sum_p
    ||w_p - w_bar||^2``."""
    sel = df[(df.position >= lo) & (df.position < hi)]
    if not len(sel):
        return float("nan")
    denom = token_spread(sample, emb)
    W = emb.W_pos[torch.tensor(sel.position.to_numpy(dtype=np.int64), device=emb.device)].double()
    spread = len(sel) * denom + len(sample) * float((W - W.mean(0)).pow(2).sum())
    return float(1.0 - (sel.fvu.to_numpy() * denom).sum() / spread)


@torch.no_grad()
def reconstruction_by_position(
    emb: Any,
    sae: Any,
    sample: TokenSample,
    positions: IndexSet = None,
    *,
    device: str | torch.device | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per position with the columns of ``EVAL_COLUMNS`` (see module docstring), computed
    where the pair lives.

    ``emb`` and ``sae`` may be anything :func:`posfeat.load_embeddings` and :func:`posfeat.load_sae`
    accept."""
    emb, sae = on_device(*as_pair(emb, sae), device)
    check_pair(emb, sae)
    pos = resolve_index(positions, emb.n_ctx, "positions")
    denom = token_spread(sample, emb)
    ctx = sae_context(sae, emb.n_ctx)
    grid = SampleGrid(emb, sae, sample.ids)
    parts = []
    for sums in chunk_sums(grid, pos):
        pc = to_numpy(sums.positions)
        cos_rand = torch.as_tensor(
            random_cosines(emb.d_model, len(sample), pc, seed), device=grid.dev
        )
        m = chunk_metrics(sums, denom, cos_rand)
        parts.append(
            pd.DataFrame(
                {"position": pc, "in_context": pc < ctx, **{k: to_numpy(v) for k, v in m.items()}}
            )
        )
    return pd.concat(parts, ignore_index=True)[EVAL_COLUMNS]


def range_means(df: pd.DataFrame, lo: int, hi: int) -> dict[str, float]:
    """Means of the per-position metrics over positions ``lo <= p < hi`` (NaN when empty)."""
    sel = df[(df.position >= lo) & (df.position < hi)]
    cols = ("mse", "fvu", "explained_variance", "cosine", "l0", "random_fvu", "zero_fvu")
    return {c: float(sel[c].mean()) if len(sel) else float("nan") for c in cols}


def dead_features(stats: GridStats) -> np.ndarray:
    """``Bool[ndarray, "d_sae"]``: features that never fire anywhere on the grid the stats cover."""
    return stats.fire <= 0


def in_context_stats(
    emb: Embeddings, sae: SAE, *, device: str | torch.device | None = None
) -> GridStats:
    """Exact grid statistics over all tokens and the SAE's training context (positions
    ``0..context-1``)."""
    emb, sae = on_device(emb, sae, device)
    return feature_stats(emb, sae, range(sae_context(sae, emb.n_ctx)), top_k_tokens=20)
