"""The exact ``k`` largest and smallest entries of each row of ``W @ X^T`` (a feature's logit
effects, ``W_dec[f] @ W_U``, with ``W_U = W_E^T``), through a bfloat16 screen.

The whole product in float32 is one GEMM the size of the vocabulary per feature (at GPT-2's scale
the size of the engine's own). Where the CPU multiplies bfloat16 natively
(:func:`~posfeat.engine.screen.bf16_fast`), the product from bfloat16 inputs, ``approx``, is within
a bound ``e`` of every float32 evaluation of each entry (:class:`~posfeat.engine.screen
.ScreenInputs`: ``e = dx_t A_f + hx_t B_f + D |approx| + C_f``). So, per row and direction, take
the ``K`` (:data:`SCREEN_K`) most extreme entries of ``approx`` and the few tokens whose rounding
terms are largest (:data:`OUTLIERS`), and recompute them exactly (float32 dot products); every
other entry is at most ``approx_K + D |approx_K| + E`` (``E`` the bound's token terms at their
largest over those tokens). When that is below the ``k``-th largest recomputed entry, no entry
outside can be among the ``k``; a row where it is not (a plateau of near-equal entries) gets its
whole float32 product. Either way the result is exact: the same ``k`` entries as the float32 GEMM gives,
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
#: Tokens with the largest rounding terms (for each of the two), recomputed in every row: one token
# of unusual norm would otherwise widen every row's band of uncertainty.
OUTLIERS = 16
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
    K = max(SCREEN_K, 2 * k)
    if K + 2 * OUTLIERS >= V:
        return _full(W, X, k), F
    tok = tokens if tokens is not None else ScreenInputs.tokens(X)
    blk = ScreenInputs.block(tok, W.T, torch.zeros(F, dtype=W.dtype))
    dx, hx, A, B, C = blk.bound(0, F)
    approx = blk.wt_bf @ blk.x_bf.T  # [F, V] bfloat16 (its top k in bfloat16: no float32 copy)
    # the tokens whose rounding terms are largest are recomputed in every row; every other token's
    # terms are at most the largest of the rest
    far = np.union1d(np.argsort(-dx)[:OUTLIERS], np.argsort(-hx)[:OUTLIERS])
    rest = np.ones(V, dtype=bool)
    rest[far] = False
    E = float(dx[rest].max()) * A + float(hx[rest].max()) * B + C  # [F]
    far_t = torch.from_numpy(far)
    X_far = X[far_t]
    out: list[torch.Tensor] = []
    bad = np.zeros(F, dtype=bool)
    for sign in (1.0, -1.0):
        sv, idx = torch.topk(approx, K, dim=1, largest=sign > 0)
        cand = torch.cat([idx, far_t.expand(F, -1)], 1)  # [F, K + len(far)]
        exact = torch.empty(cand.shape, dtype=W.dtype)
        for r0 in range(0, F, EXACT_ROWS):
            r1 = min(F, r0 + EXACT_ROWS)
            exact[r0:r1, :K] = torch.einsum("rkd,rd->rk", X[idx[r0:r1]], W[r0:r1])
        exact[:, K:] = W @ X_far.T  # the same tokens in every row: one small product
        ranked = -exact if sign < 0 else exact  # the ranking's direction, largest first
        ranked[:, K:][(idx[:, :, None] == far_t[None, None, :]).any(1)] = -torch.inf  # twice
        best, j = torch.topk(ranked, k, dim=1)
        # no entry outside the candidates can reach the k-th largest candidate: each is at most
        # its approx (no more than the K-th's) plus the bound
        s_K = sign * to_numpy(sv[:, -1].float(), np.float64)
        bad |= ~(s_K + D_REL * np.abs(s_K) + E < to_numpy(best[:, -1], np.float64))
        out += [cand.gather(1, j), -best if sign < 0 else best]
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
