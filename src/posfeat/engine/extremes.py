"""The exact ``k`` largest and smallest entries of each row of ``W @ X^T`` (a feature's logit
effects, ``W_dec[f] @ W_U``, with ``W_U = W_E^T``), through a bfloat16 screen.

The whole product in float32 is one GEMM the size of the vocabulary per feature (at GPT-2's scale
the size of the engine's own). Where the CPU multiplies bfloat16 natively
(:func:`~posfeat.engine.screen.bf16_fast`), the product from bfloat16 inputs, ``approx``, is within
a bound ``e`` of every float32 evaluation of each entry (:class:`~posfeat.engine.screen
.ScreenInputs`: ``e = dx_t A_f + hx_t B_f + D |approx| + C_f``). So, per row and direction, take
the ``K`` (:data:`SCREEN_K`) most extreme entries of ``approx`` and the few tokens whose rounding
terms are largest (:data:`~posfeat.engine.screen.OUTLIERS`), and recompute them exactly (float32
dot products); every other entry is at most ``approx_K + D |approx_K| + E`` (``E`` the bound's
token terms at their largest over the other tokens). When that is below the ``k``-th largest
recomputed entry, no entry outside can be among the ``k``; a row where it is not (a plateau of
near-equal entries) gets its whole float32 product. Either way the result is exact: the same ``k``
entries as the float32 GEMM gives, to its rounding (a tie closer than one rounding may order
differently). Elsewhere (no native bfloat16, another device, small products) the whole float32
product is used."""

from __future__ import annotations

from typing import no_type_check

import numpy as np
import torch

from ..core.tensors import to_numpy
from .kernel import HAVE_NUMBA, NUMBA_CACHE
from .screen import D_REL, OUTLIERS, ScreenInputs, bf16_fast, tile_of

if HAVE_NUMBA:
    from numba import float32, int64, njit, prange

    from .screen import _bf16, _dots

#: Entries of ``approx`` per row and direction recomputed exactly (a row whose band of uncertainty
# holds more gets its whole product). At 32 no row of the GPT-2 stand-in's 24576 nor of the bundled
# all-MiniLM-L6-v2 SAE's 2048 took it (at 16, 15 of MiniLM's did), and the logit effects took 2.1 s
# against 2.65 s at 64 on the stand-in (2-core AVX-512 Xeon), the same entries.
SCREEN_K = 32
#: The smallest vocabulary screened (a smaller one gets the whole float32 product).
SCREEN_MIN_VOCAB = 1024
#: Rows whose exact dot products are made at once where numba is not installed (``[rows, K, d]`` of
# gathered token rows).
EXACT_ROWS = 128
#: The selection kernel's sample of each row: every ``STRIDE``-th entry; the row's candidates are the
# entries at or beyond the sample's ``3 K / STRIDE``-th most extreme (about ``3 K`` of them; fewer
# than ``K`` in none of 4096 Gaussian rows of 50257 entries), of which the ``K`` most extreme are
# kept. A row with fewer than ``K`` or more than ``CAP`` (a plateau of equal bfloat16 values) goes
# to ``torch.topk``.
STRIDE = 8
CAP = 2048
#: Columns (features) per work item of the selection kernel, at most: each row's read of a work
# item's columns is contiguous; the kernel runs 2.3x faster on 512 columns than on 32 (one cache line)
# on a 2-core AVX-512 Xeon. Fewer where the threads would otherwise idle
# (:func:`~posfeat.engine.screen.tile_of`).
TILE = 512

if HAVE_NUMBA:

    @njit(cache=NUMBA_CACHE, boundscheck=False, nogil=True)
    @no_type_check
    def _keep(vals, idx, n, K, v, j, sign):  # pragma: no cover
        """Offer entry ``j`` of value ``v`` to the ``n`` kept (``K`` at most, most extreme first in
        direction ``sign``); returns the new count."""
        if n == K and not sign * v > sign * vals[K - 1]:
            return n
        m = min(n, K - 1)
        while m > 0 and sign * vals[m - 1] < sign * v:
            vals[m] = vals[m - 1]
            idx[m] = idx[m - 1]
            m -= 1
        vals[m] = v
        idx[m] = j
        return min(n + 1, K)

    @njit(cache=NUMBA_CACHE, boundscheck=False, nogil=True)
    @no_type_check
    def _bar_offer(sv, ns, bar, full, c, r, v, sign):  # pragma: no cover
        """Offer value ``v`` to column ``c``'s ``r`` most extreme values of the sample in direction
        ``sign`` (``sv[c * r : c * r + ns[c]]``, most extreme first; :func:`_keep`'s order and ties,
        without rows): once ``r`` are kept, ``full[c]`` is set and ``bar[c]`` is the ``r``-th. The
        caller has made ``_keep``'s first test."""
        base = c * r
        m = min(ns[c], r - 1)
        while m > 0 and sign * sv[base + m - 1] < sign * v:
            sv[base + m] = sv[base + m - 1]
            m -= 1
        sv[base + m] = v
        ns[c] = min(ns[c] + 1, r)
        if ns[c] == r:
            full[c] = 1
            bar[c] = sv[base + r - 1]

    @njit(cache=NUMBA_CACHE, boundscheck=False, nogil=True)
    @no_type_check
    def _bars(bits, f0, nf, r, flags, words):  # pragma: no cover
        """The bars of columns ``f0..f0+nf-1``: the ``r``-th largest and ``r``-th smallest of each
        one's sample (every ``STRIDE``-th row; -inf and inf where it holds fewer than ``r``), each
        row's first test made for all columns at once into ``flags`` (read as ``words``)."""
        sh = np.empty(nf * r, np.float32)
        sl = np.empty(nf * r, np.float32)
        sn_h = np.zeros(nf, np.int64)
        sn_l = np.zeros(nf, np.int64)
        bh = np.zeros(nf, np.float32)
        bl = np.zeros(nf, np.float32)
        fh = np.zeros(nf, np.uint8)
        fl = np.zeros(nf, np.uint8)
        for j in range(0, bits.shape[0], STRIDE):
            row = bits[j, f0 : f0 + nf]
            for c in range(nf):
                v = _bf16(row[c])
                flags[c] = ((fh[c] == 0) | (v > bh[c])) | (((fl[c] == 0) | (v < bl[c])) << 1)
            for q in range((nf + 7) // 8):
                if words[q] != 0:
                    for c in range(8 * q, min(8 * q + 8, nf)):
                        if flags[c] & 1:
                            _bar_offer(sh, sn_h, bh, fh, c, r, _bf16(row[c]), float32(1.0))
                        if flags[c] & 2:
                            _bar_offer(sl, sn_l, bl, fl, c, r, _bf16(row[c]), float32(-1.0))
        hi = np.empty(nf, np.float32)
        lo = np.empty(nf, np.float32)
        for c in range(nf):
            hi[c] = bh[c] if fh[c] else -np.inf
            lo[c] = bl[c] if fl[c] else np.inf
        return hi, lo

    @njit(parallel=True, cache=NUMBA_CACHE, boundscheck=False, nogil=True)
    @no_type_check
    def _select_kernel(bits, K, tile, idx_hi, kth_hi, idx_lo, kth_lo, ok):  # pragma: no cover
        """Each column's ``K`` largest and ``K`` smallest entries of ``bits`` (bfloat16 as
        ``uint16`` ``[V, F]``, token-major: a feature per column): their rows (most extreme first)
        and the ``K``-th value of each direction; ``ok[f]`` False where the column's sample did not
        settle it (:data:`CAP`). The threads take ``tile`` columns at a time. Each row's first test
        is made for all its columns at once (vectorised, into one byte per column) and only the
        columns whose byte is set, found eight bytes at a time, are handled (about 1% of them): 3x
        faster than a branch per value."""
        V, F = bits.shape
        r = max(1, (3 * K) // STRIDE)
        for w in prange((F + tile - 1) // tile):
            f0 = w * tile
            nf = min(tile, F - f0)
            flags = np.zeros(tile + 8, np.uint8)  # a whole number of words: the tail stays 0
            words = flags.view(np.uint64)
            hi, lo = _bars(bits, f0, nf, r, flags, words)
            # one pass: every entry at or beyond a bar is a candidate, offered at once to the
            # column's K most extreme (in row order, as a list of them would be)
            kh = np.empty((tile, K), np.float32)
            kl = np.empty((tile, K), np.float32)
            mh = np.zeros(tile, np.int64)
            ml = np.zeros(tile, np.int64)
            nh = np.zeros(tile, np.int64)
            nl = np.zeros(tile, np.int64)
            for j in range(V):
                row = bits[j, f0 : f0 + nf]
                for c in range(nf):
                    v = _bf16(row[c])
                    flags[c] = (v >= hi[c]) | ((v <= lo[c]) << 1)
                for q in range((nf + 7) // 8):
                    if words[q] == 0:
                        continue
                    for c in range(8 * q, min(8 * q + 8, nf)):
                        if flags[c] & 1:
                            nh[c] += 1
                            mh[c] = _keep(
                                kh[c], idx_hi[f0 + c], mh[c], K, _bf16(row[c]), int64(j),
                                float32(1.0),
                            )  # fmt: skip
                        if flags[c] & 2:
                            nl[c] += 1
                            ml[c] = _keep(
                                kl[c], idx_lo[f0 + c], ml[c], K, _bf16(row[c]), int64(j),
                                float32(-1.0),
                            )  # fmt: skip
            for c in range(nf):
                f = f0 + c
                ok[f] = K <= nh[c] <= CAP and K <= nl[c] <= CAP
                kth_hi[f] = kh[c, K - 1]
                kth_lo[f] = kl[c, K - 1]


if HAVE_NUMBA:

    @njit(parallel=True, cache=NUMBA_CACHE, boundscheck=False, nogil=True)
    @no_type_check
    def _exact_kernel(x, wt, idx, bias, vals):  # pragma: no cover
        """``vals[i, j]``: the float32 dot product of token ``idx[i, j]``'s row of ``x`` with row
        ``i`` of ``wt`` (the screen's own :func:`~posfeat.engine.screen._dots`, four tokens per
        read of the row), read from ``x`` in place: no gathered copy of the rows."""
        F, K = idx.shape
        for i in prange(F):
            cand = idx[i]
            for j in range(0, K, 4):
                _dots(x, wt, np.int64(i), cand, j, min(4, K - j), bias, vals)  # prange: uint64


def _exact(X: torch.Tensor, W: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``[F, K]``: ``X[idx[i, j]] . W[i]`` in float32 (in any order of summation, which the
    screen's bound allows)."""
    if HAVE_NUMBA and X.dtype == torch.float32 and W.dtype == torch.float32:
        out = np.empty(tuple(idx.shape), np.float32)
        _exact_kernel(
            X.contiguous().numpy(),
            W.contiguous().numpy(),
            idx.to(torch.int32).contiguous().numpy(),
            np.zeros(len(W)),
            out,
        )
        return torch.from_numpy(out)
    out = torch.empty(tuple(idx.shape), dtype=W.dtype)
    for r0 in range(0, len(W), EXACT_ROWS):
        r1 = min(len(W), r0 + EXACT_ROWS)
        out[r0:r1] = torch.einsum("rkd,rd->rk", X[idx[r0:r1]], W[r0:r1])
    return out


def _most_extreme(approx: torch.Tensor, K: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``[(largest K's rows, the K-th largest value), (smallest ..., the K-th smallest)]`` of each
    column of ``approx`` (bfloat16 ``[V, F]``, token-major), as ``[F, K]`` and ``[F]``:
    :func:`_select_kernel` (one pass over each column for both directions), ``torch.topk`` for the
    columns it leaves and where numba is not installed."""
    if not HAVE_NUMBA:
        return _topk(approx.T, K)
    F = approx.shape[1]
    idx_hi, idx_lo = np.empty((F, K), np.int32), np.empty((F, K), np.int32)
    kth_hi, kth_lo = np.empty(F, np.float32), np.empty(F, np.float32)
    ok = np.empty(F, np.bool_)
    _select_kernel(
        approx.view(torch.int16).numpy().view(np.uint16),
        K,
        tile_of(F, TILE),
        idx_hi,
        kth_hi,
        idx_lo,
        kth_lo,
        ok,
    )
    out = [
        (torch.from_numpy(idx_hi), torch.from_numpy(kth_hi)),
        (torch.from_numpy(idx_lo), torch.from_numpy(kth_lo)),
    ]
    cols = torch.from_numpy(np.nonzero(~ok)[0])
    if len(cols):
        for (idx, kth), (i, v) in zip(out, _topk(approx[:, cols].T, K)):
            idx[cols], kth[cols] = i.to(idx.dtype), v
    return out


def _topk(approx: torch.Tensor, K: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """:func:`_most_extreme` by ``torch.topk``, one pass per direction."""
    out = []
    for largest in (True, False):
        sv, idx = torch.topk(approx, K, dim=1, largest=largest)
        out.append((idx, sv[:, -1].float()))
    return out


def _full(W: torch.Tensor, X: torch.Tensor, k: int) -> list[torch.Tensor]:
    """The whole float32 product: ``(top ids, top values, bottom ids, bottom values)``."""
    prod = W @ X.T
    hi, lo = torch.topk(prod, k, dim=1), torch.topk(prod, k, dim=1, largest=False)
    return [hi.indices, hi.values, lo.indices, lo.values]


def screened(
    W: torch.Tensor,
    X: torch.Tensor,
    k: int,
    tokens: dict[str, object] | None = None,
    scratch: torch.Tensor | None = None,
) -> tuple[list[torch.Tensor], int]:
    """``(top ids, top values, bottom ids, bottom values)`` ``[F, k]`` of ``W [F, d] @ X [V, d]^T``
    (float32, CPU), strongest first, through the screen (module docstring); and how many rows took
    the whole product. ``tokens``: ``ScreenInputs.tokens(X)``, made once by a caller with many
    blocks; ``scratch``: a bfloat16 buffer of at least ``V * F`` elements for ``approx``, reused by
    such a caller (a fresh one each call costs its page faults, about as much as the product)."""
    F, V = W.shape[0], X.shape[0]
    K = max(SCREEN_K, 2 * k)
    if K + 2 * OUTLIERS >= V:
        return _full(W, X, k), F
    tok = tokens if tokens is not None else ScreenInputs.tokens(X, x_sum=False)
    blk = ScreenInputs.block(tok, W.T, torch.zeros(F, dtype=W.dtype))
    # [V, F] bfloat16, token-major (its top k in bfloat16: no float32 copy): twice as fast as the
    # feature-major product on AMX, into a reused buffer
    if scratch is None or scratch.numel() < V * F:
        scratch = torch.empty(V * F, dtype=torch.bfloat16)
    approx = torch.mm(blk.x_bf, blk.wt_bf.T, out=scratch[: V * F].view(V, F))
    # the tokens whose rounding terms are largest are recomputed in every row; every other token's
    # terms are at most the largest of the rest
    far = blk.far
    E = blk.token_terms(0, F)  # [F]
    far_t = torch.from_numpy(far)
    X_far = X[far_t]
    out: list[torch.Tensor] = []
    bad = np.zeros(F, dtype=bool)
    for sign, (idx, kth) in zip((1.0, -1.0), _most_extreme(approx, K)):
        idx = idx.long()
        cand = torch.cat([idx, far_t.expand(F, -1)], 1)  # [F, K + len(far)]
        exact = torch.cat(
            [_exact(X, W, idx), W @ X_far.T], 1
        )  # the same tokens in every row: one small product
        ranked = -exact if sign < 0 else exact  # the ranking's direction, largest first
        ranked[:, K:][(idx[:, :, None] == far_t[None, None, :]).any(1)] = -torch.inf  # twice
        best, j = torch.topk(ranked, k, dim=1)
        # no entry outside the candidates can reach the k-th largest candidate: each is at most
        # its approx (no more than the K-th's) plus the bound
        s_K = sign * to_numpy(kth, np.float64)
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
    at least :data:`SCREEN_MIN_VOCAB`), else None."""
    if X.device.type == "cpu" and bf16_fast() and X.shape[0] >= SCREEN_MIN_VOCAB:
        return ScreenInputs.tokens(X, x_sum=False)
    return None


def extremes(
    W: torch.Tensor,
    X: torch.Tensor,
    k: int,
    tokens: dict[str, object] | None,
    scratch: torch.Tensor | None = None,
) -> list[torch.Tensor]:
    """``(top ids, top values, bottom ids, bottom values)`` ``[F, k]`` of ``W @ X^T``:
    :func:`screened` with ``tokens`` (:func:`screen_tokens`) and ``scratch``, the whole float32
    product without."""
    return screened(W, X, k, tokens, scratch)[0] if tokens is not None else _full(W, X, k)
