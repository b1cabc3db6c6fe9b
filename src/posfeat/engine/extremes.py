"""The exact ``k`` largest and smallest entries of each row of ``W @ X^T`` (a feature's logit
effects, ``W_dec[f] @ W_U``, with ``W_U = W_E^T``), through a bfloat16 screen.

The whole product in float32 is one GEMM the size of the vocabulary per feature (at GPT-2's scale
the size of the engine's own). Where the CPU multiplies bfloat16 natively
(:func:`~posfeat.engine.screen.bf16_fast`), the product from bfloat16 inputs, ``approx``, is within
a bound ``e`` of every float32 evaluation of each entry (:class:`~posfeat.engine.screen
.ScreenInputs`: ``e = dx_t A_f + hx_t B_f + D |approx| + C_f``). So, per row and direction, take
the ``K`` (:data:`SCREEN_K`) most extreme entries of ``approx``; their exact lower bounds give
``L``, below which the row's ``k``-th exact value cannot lie; every entry outside them is at most
``approx_K + D |approx_K| + E`` (``E`` the bound's token terms at their largest). When that is
below ``L`` no entry outside can be among the ``k``, and the ``K`` are recomputed exactly (float32
dot products); a row where it is not (a row with a plateau of near-equal entries) gets its whole
float32 product. Either way the result is exact: the same ``k`` entries as the float32 GEMM gives,
to its rounding (a tie closer than one rounding may order differently). Elsewhere (no native
bfloat16, another device, small products) the whole float32 product is used."""

from __future__ import annotations

import numpy as np
import torch

from ..core.tensors import to_numpy
from .screen import D_REL, ScreenInputs, bf16_fast

#: Entries of ``approx`` per row and direction recomputed exactly (at GPT-2's scale nearly every
# row's band of uncertainty holds fewer; a row whose does not gets its whole product).
SCREEN_K = 64
#: Rows whose exact dot products are made at once (``[rows, K, d]`` of gathered token rows).
EXACT_ROWS = 128


def _full(W: torch.Tensor, X: torch.Tensor, k: int) -> list[torch.Tensor]:
    """The whole float32 product: ``(top ids, top values, bottom ids, bottom values)``."""
    prod = W @ X.T
    hi, lo = torch.topk(prod, k, dim=1), torch.topk(prod, k, dim=1, largest=False)
    return [hi.indices, hi.values, lo.indices, lo.values]


def screened(
    W: torch.Tensor, X: torch.Tensor, k: int, tokens: dict[str, object] | None = None
) -> tuple[list[torch.Tensor], int]:
    """``(top ids, top values, bottom ids, bottom values)`` ``[F, k]`` of ``W [F, d] @ X [V, d]^T``
    (float32, CPU), strongest first, through the screen (module docstring); and how many rows took
    the whole product. ``tokens``: ``ScreenInputs.tokens(X)``, made once by a caller with many
    blocks."""
    F, V = W.shape[0], X.shape[0]
    K = min(V, max(SCREEN_K, 2 * k))
    if K >= V:
        return _full(W, X, k), F
    tok = tokens if tokens is not None else ScreenInputs.tokens(X)
    blk = ScreenInputs.block(tok, W.T, torch.zeros(F, dtype=W.dtype))
    dx, hx, A, B, C = blk.bound(0, F)
    approx = blk.wt_bf @ blk.x_bf.T  # [F, V] bfloat16 (its top k in bfloat16: no float32 copy)
    E = float(dx.max()) * A + float(hx.max()) * B + C  # [F]: the token terms at their largest
    out: list[torch.Tensor] = []
    bad = np.zeros(F, dtype=bool)
    for sign in (1.0, -1.0):
        sv, idx = torch.topk(approx, K, dim=1, largest=sign > 0)
        s = sign * to_numpy(sv.float(), np.float64)  # the ranking's direction, largest first
        i = to_numpy(idx)
        lower = s - D_REL * np.abs(s) - (dx[i] * A[:, None] + hx[i] * B[:, None] + C[:, None])
        L = -np.sort(-lower, axis=1)[:, k - 1]  # the k-th largest lower bound
        tail = s[:, -1] + D_REL * np.abs(s[:, -1]) + E  # any entry outside the K
        bad |= ~(tail < L)
        exact = torch.empty(F, K, dtype=W.dtype)
        for r0 in range(0, F, EXACT_ROWS):
            r1 = min(F, r0 + EXACT_ROWS)
            exact[r0:r1] = torch.einsum("rkd,rd->rk", X[idx[r0:r1]], W[r0:r1])
        best, j = torch.topk(-exact if sign < 0 else exact, k, dim=1)
        out += [idx.gather(1, j), -best if sign < 0 else best]
    rows = np.nonzero(bad)[0]
    if len(rows):
        full = _full(W[torch.from_numpy(rows)], X, k)
        for o, f in zip(out, full):
            o[torch.from_numpy(rows)] = f
    return out, len(rows)


def screen_tokens(X: torch.Tensor) -> dict[str, object] | None:
    """``ScreenInputs.tokens(X)`` where the screen pays (CPU with native bfloat16, a vocabulary of
    many times :data:`SCREEN_K`), else None."""
    if X.device.type == "cpu" and bf16_fast() and X.shape[0] >= 16 * SCREEN_K:
        return ScreenInputs.tokens(X)
    return None


def extremes(
    W: torch.Tensor, X: torch.Tensor, k: int, tokens: dict[str, object] | None
) -> list[torch.Tensor]:
    """``(top ids, top values, bottom ids, bottom values)`` ``[F, k]`` of ``W @ X^T``:
    :func:`screened` with ``tokens`` (:func:`screen_tokens`), the whole float32 product without."""
    return screened(W, X, k, tokens)[0] if tokens is not None else _full(W, X, k)
