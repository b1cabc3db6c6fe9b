"""The helix of the positional embeddings: PCA of W_pos rows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float

from ..core.errors import PosfeatError
from ..engine.indices import IndexSet, resolve_index


@dataclass
class PCA:
    """Principal components of a set of rows.

    Attributes:
        components: ``Float[ndarray, "k d_model"]`` orthonormal directions, largest variance first.
        explained_variance_ratio: ``Float[ndarray, "k"]`` share of the total variance of each.
        mean: ``Float[ndarray, "d_model"]`` the mean row that was subtracted.
        positions: ``Int[ndarray, "n"]`` the rows (positions) used.
    """

    components: np.ndarray
    explained_variance_ratio: np.ndarray
    mean: np.ndarray
    positions: np.ndarray

    def project(
        self,
        x: Float[np.ndarray, "n d_model"] | Float[torch.Tensor, "n d_model"],
        k: int = 3,
        center: bool = True,
    ) -> Float[np.ndarray, "n k"]:
        """``Float[ndarray, "n k"]`` coordinates of rows ``x [n, d_model]`` on the top ``k``
        components."""
        x = np.asarray(
            x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else x,
            dtype=np.float64,
        )
        return ((x - self.mean) if center else x) @ self.components[:k].T

    def top(self, k: int = 3) -> float:
        """Share of variance explained by the top ``k`` components."""
        return float(self.explained_variance_ratio[:k].sum())


def positional_pca(
    W_pos: Float[np.ndarray, "n_ctx d_model"] | Float[torch.Tensor, "n_ctx d_model"],
    positions: IndexSet = None,
) -> PCA:
    """PCA of the rows ``W_pos[positions]`` (default rows 1..n_ctx-1: position 0 is special),
    mean-centred over rows."""
    W = np.asarray(
        W_pos.detach().cpu().double().numpy() if isinstance(W_pos, torch.Tensor) else W_pos,
        dtype=np.float64,
    )
    if W.ndim != 2:
        raise PosfeatError(f"W_pos has shape {W.shape}; expected [n_ctx, d_model].")
    pos = (
        np.arange(1, W.shape[0])
        if positions is None
        else resolve_index(positions, W.shape[0], "positions").numpy()
    )
    if pos.size < 2:
        raise PosfeatError(
            f"positions for the PCA must be at least two rows within 0..{W.shape[0] - 1}."
        )
    rows = W[pos]
    mean = rows.mean(0)
    _, s, vt = np.linalg.svd(rows - mean, full_matrices=False)
    var = s**2
    return PCA(components=vt, explained_variance_ratio=var / var.sum(), mean=mean, positions=pos)
