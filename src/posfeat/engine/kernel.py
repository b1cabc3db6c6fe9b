"""The fused CPU kernels of the additive fast path (numba), compiled once and cached on disk.

:func:`bucket_sums`: for each feature (in parallel) and each token, the token's bucket among the
feature's sorted thresholds (a lookup table of about 16 cells per threshold: one load, and a compare
or two in the token's own cell), three float64 accumulations into that bucket (one cache line per
bucket) and a check against the feature's top-k; tokens below every threshold (most, for a sparse
feature) only count. It takes the token parts of a few features at a time, right after the GEMM
that made them, so they are read while still in cache. Nothing of size ``n_tok`` is written unless
asked for.

:func:`position_sums`: suffix sums over the buckets give, for every position, the exact count,
sum and variance of the activations over tokens, and the variance over tokens of each token's mean
over positions (a token in bucket ``j`` sums to ``j a + pb[j]`` over positions), in parallel over features.
"""

from __future__ import annotations

import os
from typing import no_type_check

import numpy as np

try:  # numba is a dependency, but the torch path works without it
    import numba
    from numba import float64, int64, njit, prange

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only where numba is missing
    HAVE_NUMBA = False

#: Whether numba's kernels are cached on disk (``POSFEAT_NUMBA_CACHE=0`` turns it off).
NUMBA_CACHE = os.environ.get("POSFEAT_NUMBA_CACHE", "1") != "0"

#: Tokens per run of the token-top merge (a few KB of each feature's row; the run's top lists fit in L2).
TOP_RUN = 2048

#: Cells per threshold of the per-feature lookup table that finds each token's bucket (most cells hold no threshold).
CELLS_PER_THRESHOLD = 16

if HAVE_NUMBA:

    @njit(cache=NUMBA_CACHE, boundscheck=False, nogil=True)
    @no_type_check
    def _cell_starts(row, C):  # pragma: no cover
        """``start[c]``: thresholds of sorted ``row`` whose cell ``int((x - first) * scale)`` is below ``c`` (``c = 0..C+1``).

        The cell of a value is a monotone function of it, computed the same way for thresholds and token values, so a
        value's bucket is ``start[c]`` plus the thresholds of its own cell below it: exact, with no rounding slack.
        """
        P = row.shape[0]
        first = float64(row[0])
        span = float64(row[P - 1]) - first
        scale = C / span if span > 0 else 0.0
        if not scale < 1e300:  # a span too small to divide: one cell (a linear scan, still exact)
            scale = 0.0
        start = np.zeros(C + 2, np.int32)
        for i in range(P):
            start[int64((float64(row[i]) - first) * scale) + 1] += 1
        for c in range(C + 1):
            start[c + 1] += start[c]
        return start, first, scale

    @njit(cache=NUMBA_CACHE, boundscheck=False, nogil=True)
    @no_type_check
    def _push_top(topv, topi, ts, t):  # pragma: no cover
        """Insert token ``t`` with sum ``ts`` into one feature's top K (sums descending, earlier tokens first among ties);
        returns the new K-th sum."""
        K = topv.shape[0]
        j = K - 1
        while j > 0 and topv[j - 1] < ts:
            topv[j] = topv[j - 1]
            topi[j] = topi[j - 1]
            j -= 1
        topv[j] = ts
        topi[j] = t
        return topv[K - 1]

    @njit(cache=NUMBA_CACHE, boundscheck=False, nogil=True)
    @no_type_check
    def _bucket_of(row, start, first, scale, v):  # pragma: no cover
        """The bucket of a token value ``v`` that fires somewhere (``v > row[0]``): how many of the sorted thresholds ``row``
        lie below it, found through the feature's cell table (:func:`_cell_starts`)."""
        P = row.shape[0]
        if v > row[P - 1]:
            return P
        c = int64((float64(v) - first) * scale)
        lo = start[c]
        end = start[c + 1]
        while lo < end and row[lo] < v:
            lo += 1
        return lo

    @njit(cache=NUMBA_CACHE, boundscheck=False, nogil=True)
    @no_type_check
    def _accumulate(acc, f, lo, u):  # pragma: no cover
        """Count, sum and sum of squares of the shifted token value ``u`` into bucket ``lo`` of feature ``f``."""
        acc[f, lo, 0] += 1.0
        acc[f, lo, 1] += u
        acc[f, lo, 2] += u * u

    @njit(cache=NUMBA_CACHE, boundscheck=False, nogil=True)
    @no_type_check
    def _merge_token(topv, topi, topvar, t, feat, n, w, pbn, pb2n, P):  # pragma: no cover
        """Token ``t``'s top list (means largest first, the lower feature first among ties) offered feature ``feat``, where
        the token fires at ``n`` of the ``P`` positions with token part ``w`` (``pbn``, ``pb2n``: the sums of those
        positions' parts and of their squares); features it does not activate are not offered."""
        K = topv.shape[1]
        mean = (n * w + pbn) / P
        if n == 0 or not (mean > topv[t, K - 1] and mean > 0.0):
            return
        j = K - 1
        while j > 0 and topv[t, j - 1] < mean:
            topv[t, j] = topv[t, j - 1]
            topi[t, j] = topi[t, j - 1]
            topvar[t, j] = topvar[t, j - 1]
            j -= 1
        topv[t, j] = mean
        topi[t, j] = feat
        topvar[t, j] = (n * w * w + 2.0 * w * pbn + pb2n) / P - mean * mean

    @njit(parallel=True, cache=NUMBA_CACHE, boundscheck=False, nogil=True)
    @no_type_check
    def _bucket_kernel(at, f0, s, pb, shift, lim, acc, topv, topi, tok_sum, want_tok_sum, want_lim, below_v, below_i, lo_out,
                       want_lo):  # pragma: no cover
        """Rows ``f0 ..`` of the outputs from the token parts ``at`` ``[F, T]`` of those features (a block small enough to be in cache);
        with ``want_lo``, each token's bucket into ``lo_out[i, t]`` (0: fires nowhere)."""
        F, T = at.shape
        P = s.shape[1]
        K = topv.shape[1]
        C = CELLS_PER_THRESHOLD * P
        for i in prange(F):
            f = f0 + i
            row = s[f]
            start, first, scale = _cell_starts(row, C)
            sh = shift[f]
            limf = lim[f]
            best = below_v[f]
            besti = below_i[f]
            tmin = topv[f, K - 1]  # a token enters the top K when its sum over positions beats this
            n0 = 0.0  # tokens in bucket 0 (below every threshold: they fire nowhere, their sum over positions is 0)
            u0 = 0.0
            for t in range(T):
                v = at[i, t]
                w = float64(v)
                if want_lim and v <= limf and w > best:  # largest token value at or below the limit
                    best = w
                    besti = t
                if not v > row[0]:  # fires at no position
                    n0 += 1.0
                    u0 += w - sh
                    if want_lo:
                        lo_out[i, t] = 0
                    if want_tok_sum:
                        tok_sum[f, t] = 0.0
                    if tmin >= 0.0:  # 0 does not beat the top K
                        continue
                    lo = 0
                    ts = 0.0
                else:
                    lo = _bucket_of(row, start, first, scale, v)
                    if want_lo:
                        lo_out[i, t] = lo
                    _accumulate(acc, f, lo, w - sh)
                    ts = lo * w + pb[f, lo]
                    if want_tok_sum:
                        tok_sum[f, t] = ts
                    if not ts > tmin:
                        continue
                tmin = _push_top(topv[f], topi[f], ts, t)
            acc[f, 0, 0] += n0
            acc[f, 0, 1] += u0
            below_v[f] = best
            below_i[f] = besti

    @njit(parallel=True, cache=NUMBA_CACHE, boundscheck=False, nogil=True)
    @no_type_check
    def _position_kernel(acc, order, bsorted, shift, pb, n_tok, count, psum, var, tok_var):  # pragma: no cover
        F, P = order.shape
        cnt = acc[:, :, 0]
        s1 = acc[:, :, 1]
        s2 = acc[:, :, 2]
        for f in prange(F):
            c = 0.0
            a1 = 0.0
            a2 = 0.0
            for j in range(P - 1, -1, -1):  # tokens in buckets above j fire at the j-th position in firing order
                c += cnt[f, j + 1]
                a1 += s1[f, j + 1]
                a2 += s2[f, j + 1]
                p = order[f, j]
                k = shift[f] + bsorted[f, j]
                q = c / n_tok
                m1 = a1 / n_tok
                v = a2 / n_tok - m1 * m1 + 2.0 * k * m1 * (1.0 - q) + k * k * q * (1.0 - q)
                count[f, p] = c
                psum[f, p] = a1 + k * c
                var[f, p] = v if v > 0.0 else 0.0
            # each token's sum over positions is ts = j u + c_j in bucket j (u: shifted token value, c_j = j shift + pb[j]);
            # its variance over tokens from the buckets' sums, around the mean (no per-token work, no cancellation)
            tot = 0.0
            for j in range(P + 1):
                tot += j * s1[f, j] + cnt[f, j] * (j * shift[f] + pb[f, j])
            mean = tot / n_tok
            sq = 0.0
            for j in range(P + 1):
                d = j * shift[f] + pb[f, j] - mean
                sq += j * j * s2[f, j] + 2.0 * j * d * s1[f, j] + cnt[f, j] * d * d
            tv = sq / n_tok / (P * P)
            tok_var[f] = tv if tv > 0.0 else 0.0


if HAVE_NUMBA:

    @njit(parallel=True, cache=NUMBA_CACHE, boundscheck=False, nogil=True)
    @no_type_check
    def _token_top_kernel(at, lo, g0, pb, pb2, topv, topi, topvar):  # pragma: no cover
        """Each token's top features so far by exact mean over the set's ``P`` positions (largest first, the lower feature
        first among ties; only features it activates), updated with features ``g0 ..`` (rows of ``at``, ``lo``, ``pb``, ``pb2``).
        Tokens go in runs of :data:`TOP_RUN`, one run per thread at a time, each run read row by row (contiguous, so
        prefetched) while its tokens' lists stay in cache."""
        F, T = at.shape
        P = pb.shape[1] - 1
        for run in prange((T + TOP_RUN - 1) // TOP_RUN):
            for i in range(F):
                for t in range(run * TOP_RUN, min(T, run * TOP_RUN + TOP_RUN)):
                    n = lo[i, t]
                    if n > 0:  # fires at some of the positions
                        _merge_token(topv, topi, topvar, t, g0 + i, n, float64(at[i, t]), pb[i, n], pb2[i, n], P)


def token_top_merge(at: np.ndarray, lo: np.ndarray, g0: int, pb: np.ndarray, pb2: np.ndarray, mean: np.ndarray, feature: np.ndarray,
                    var: np.ndarray) -> None:
    """Update each token's top features (``mean``, ``feature``, ``var`` ``[n_tok, k]``, in place) with the features
    ``g0 .. g0 + len(at)``: ``at`` their token parts ``[F, n_tok]``, ``lo`` each token's bucket from :func:`bucket_sums`
    (``want_lo``), ``pb``/``pb2`` prefix sums of their position parts and of their squares in firing order ``[F, n_pos + 1]``."""
    _token_top_kernel(at, lo, int(g0), np.ascontiguousarray(pb), np.ascontiguousarray(pb2), mean, feature, var)


def set_threads(n: int | None) -> None:
    """Use ``n`` threads in the numba kernels (None: numba's default, all cores)."""
    if HAVE_NUMBA:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS if n is None else max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))


_NO_LO = np.zeros((1, 1), np.int32)


def new_sums(FB: int, P: int, T: int, top_k: int, want_tok_sum: bool) -> dict[str, np.ndarray]:
    """The outputs :func:`bucket_sums` fills for a block of ``FB`` features, ``P`` positions and ``T`` tokens, empty."""
    k = min(top_k, T)
    return {"acc": np.zeros((FB, P + 1, 4)), "top_val": np.full((FB, k), -np.inf), "top_idx": np.full((FB, k), -1, dtype=np.int64),
            "tok_sum": np.empty((FB, T) if want_tok_sum else (1, 1)), "below_val": np.full(FB, -np.inf), "below_idx": np.full(FB, -1, np.int64)}


def bucket_sums(at: np.ndarray, s: np.ndarray, pb: np.ndarray, shift: np.ndarray, top_k: int, want_tok_sum: bool,
                lim: np.ndarray | None = None, *, out: dict[str, np.ndarray] | None = None, f0: int = 0,
                lo_out: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Bucket token values among sorted thresholds, and keep each feature's top tokens on the way (see module docstring).

    Args:
        at: ``Float[ndarray, "F n_tok"]`` token parts of the pre-activation of features ``f0 .. f0+F`` of the block.
        s: ``Float[ndarray, "F_block n_pos"]`` each feature's thresholds, sorted ascending (same dtype as ``at``).
        pb: ``Float64[ndarray, "F_block n_pos+1"]`` prefix sums of the position parts in that order.
        shift: ``Float64[ndarray, "F_block"]`` subtracted from token values before summing (near their mean,
            so that sums of squares do not cancel).
        top_k: how many tokens with the highest mean to keep.
        want_tok_sum: also return each token's sum over positions.
        lim: ``[F_block]`` (dtype of ``at``): also return ``below_val, below_idx``, the largest token value
            ``<= lim`` and its token (``-inf`` and -1 when none).
        out: the block's outputs from an earlier call (``f0 > 0``), filled further; None: new ones.
        f0: the first feature of ``at`` in the block.
        lo_out: ``Int32[ndarray, "F n_tok"]``: also write each token's bucket there (0: it fires at no position).

    Returns ``acc`` ``[F_block, n_pos+1, 4]`` (count, sum, sum of squares of shifted token values per
    bucket, and a pad: one cache line's half per bucket); ``top_val, top_idx`` ``[F_block, min(top_k, n_tok)]`` (top values are sums over positions);
    ``tok_sum`` ``[F_block, n_tok]`` when asked. Call it with consecutive slices of the block's features
    (each feature's whole row of token values at once), then :func:`position_sums`.
    """
    T = at.shape[1]
    FB, P = s.shape
    if out is None:
        out = new_sums(FB, P, T, top_k, want_tok_sum)
    lim_arr = np.full(FB, -np.inf, dtype=at.dtype) if lim is None else np.ascontiguousarray(lim, dtype=at.dtype)
    _bucket_kernel(at, f0, np.ascontiguousarray(s), np.ascontiguousarray(pb), np.ascontiguousarray(shift, dtype=np.float64),
                   lim_arr, out["acc"], out["top_val"], out["top_idx"], out["tok_sum"], want_tok_sum, lim is not None,
                   out["below_val"], out["below_idx"], _NO_LO if lo_out is None else lo_out, lo_out is not None)
    return out


def position_sums(sums: dict[str, np.ndarray], order: np.ndarray, bsorted: np.ndarray, shift: np.ndarray, pb: np.ndarray,
                  n_tok: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``count, sum, var`` ``Float64[ndarray, "F n_pos"]`` at every position, and ``tok_var`` ``[F]`` (population
    variance over tokens of their mean over positions), from :func:`bucket_sums`'s buckets.

    ``order[f, j]``: the position of the ``j``-th smallest threshold; ``bsorted``: the position parts in that order;
    ``pb``: their prefix sums.
    """
    F, P = order.shape
    count, psum, var, tok_var = np.empty((F, P)), np.empty((F, P)), np.empty((F, P)), np.empty(F)
    _position_kernel(sums["acc"], np.ascontiguousarray(order, dtype=np.int64),
                     np.ascontiguousarray(bsorted, dtype=np.float64), np.ascontiguousarray(shift, dtype=np.float64),
                     np.ascontiguousarray(pb, dtype=np.float64), float(n_tok), count, psum, var, tok_var)
    return count, psum, var, tok_var
