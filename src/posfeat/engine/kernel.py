"""The fused CPU kernels of the additive fast path (numba), compiled once and cached on disk.

:func:`bucket_sums`: for each feature (in parallel) and each token, one search of the token's
value among the feature's sorted thresholds (a lookup table over the thresholds' range narrows
the binary search to a few of them), three float64 accumulations into that
bucket, the token's mean activation over positions folded straight into the feature's token
statistics (Welford mean and variance, top-k), and, when asked, the largest token value at or
below a limit. Nothing of size ``n_tok`` is written unless asked for.

:func:`position_sums`: suffix sums over the buckets give, for every position, the exact count,
sum and variance of the activations over tokens (in parallel over features).
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

_CACHE = os.environ.get("POSFEAT_NUMBA_CACHE", "1") != "0"

#: Cells of the per-feature lookup table that narrows each binary search to a few thresholds.
TABLE_CELLS = 4096

if HAVE_NUMBA:

    @njit(cache=_CACHE, boundscheck=False, nogil=True)
    @no_type_check
    def _search_table(row):  # pragma: no cover
        """``tab[k]``: thresholds below ``first + k / scale``, for ``k = 0..TABLE_CELLS+1`` (``row`` sorted)."""
        P = row.shape[0]
        first = float64(row[0])
        span = float64(row[P - 1]) - first
        scale = TABLE_CELLS / span if span > 0 else 0.0
        tab = np.empty(TABLE_CELLS + 2, np.int64)
        i = 0
        for k in range(TABLE_CELLS + 2):
            edge = first + k / scale if scale > 0 else first
            while i < P and row[i] < edge:
                i += 1
            tab[k] = i
        return tab, first, scale

    @njit(cache=_CACHE, boundscheck=False, nogil=True)
    @no_type_check
    def _count_below(row, tab, first, scale, v):  # pragma: no cover
        """Thresholds in sorted ``row`` strictly below ``v``: a binary search between the table's bounds for ``v``'s cell."""
        P = row.shape[0]
        if not v > row[0]:
            return 0
        if v > row[P - 1]:
            return P
        k = int64((float64(v) - first) * scale)
        lo = tab[k - 1] if k > 0 else 0
        n = (tab[k + 2] if k + 2 <= TABLE_CELLS + 1 else P) - lo
        while n > 0:
            half = n >> 1
            if row[lo + half] < v:
                lo = lo + half + 1
                n = n - half - 1
            else:
                n = half
        return lo

    @njit(parallel=True, cache=_CACHE, boundscheck=False, nogil=True)
    @no_type_check
    def _bucket_kernel(at, s, pb, shift, lim, cnt, s1, s2, tok_var, topv, topi, tok_sum, want_tok_sum, below_v, below_i):  # pragma: no cover
        F, T = at.shape
        P = s.shape[1]
        K = topv.shape[1]
        for f in prange(F):
            row = s[f]
            tab, first, scale = _search_table(row)
            mean_r = 0.0
            m2 = 0.0
            for t in range(T):
                v = at[f, t]
                lo = _count_below(row, tab, first, scale, v)
                w = float64(v)
                u = w - shift[f]
                cnt[f, lo] += 1.0
                s1[f, lo] += u
                s2[f, lo] += u * u
                ts = lo * w + pb[f, lo]
                if want_tok_sum:
                    tok_sum[f, t] = ts
                if v <= lim[f] and w > below_v[f]:  # largest token value at or below the limit
                    below_v[f] = w
                    below_i[f] = t
                r = ts / P  # the token's mean activation over positions
                delta = r - mean_r
                mean_r += delta / (t + 1)
                m2 += delta * (r - mean_r)
                if K > 0 and r > topv[f, K - 1]:  # keep the top K, earlier tokens first among ties
                    j = K - 1
                    while j > 0 and topv[f, j - 1] < r:
                        topv[f, j] = topv[f, j - 1]
                        topi[f, j] = topi[f, j - 1]
                        j -= 1
                    topv[f, j] = r
                    topi[f, j] = t
            tok_var[f] = m2 / T

    @njit(parallel=True, cache=_CACHE, boundscheck=False, nogil=True)
    @no_type_check
    def _position_kernel(cnt, s1, s2, order, bsorted, shift, n_tok, count, psum, var):  # pragma: no cover
        F, P = order.shape
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


def set_threads(n: int | None) -> None:
    """Use ``n`` threads in the numba kernels (None: numba's default, all cores)."""
    if HAVE_NUMBA:
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS if n is None else max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))


def bucket_sums(at: np.ndarray, s: np.ndarray, pb: np.ndarray, shift: np.ndarray, top_k: int, want_tok_sum: bool,
                lim: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Bucket token values among sorted thresholds, and summarise tokens on the way (see module docstring).

    Args:
        at: ``Float[ndarray, "F n_tok"]`` token parts of the pre-activation.
        s: ``Float[ndarray, "F n_pos"]`` each feature's thresholds, sorted ascending (same dtype as ``at``).
        pb: ``Float64[ndarray, "F n_pos+1"]`` prefix sums of the position parts in that order.
        shift: ``Float64[ndarray, "F"]`` subtracted from token values before summing (their mean,
            so that sums of squares do not cancel).
        top_k: how many tokens with the highest mean to keep.
        want_tok_sum: also return each token's sum over positions.
        lim: ``[F]`` (dtype of ``at``): also return ``below_val, below_idx``, the largest token value
            ``<= lim`` and its token (``-inf`` and -1 when none).

    Returns ``cnt, s1, s2`` ``[F, n_pos+1]`` (count, sum, sum of squares of shifted token values per
    bucket); ``tok_var`` ``[F]`` (population variance over tokens of their mean over positions);
    ``top_val, top_idx`` ``[F, min(top_k, n_tok)]``; ``tok_sum`` ``[F, n_tok]`` when asked.
    """
    F, T = at.shape
    P = s.shape[1]
    k = min(top_k, T)
    out = {"cnt": np.zeros((F, P + 1)), "s1": np.zeros((F, P + 1)), "s2": np.zeros((F, P + 1)), "tok_var": np.zeros(F),
           "top_val": np.full((F, k), -np.inf), "top_idx": np.full((F, k), -1, dtype=np.int64),
           "tok_sum": np.empty((F, T) if want_tok_sum else (1, 1)), "below_val": np.full(F, -np.inf), "below_idx": np.full(F, -1, np.int64)}
    lim_arr = np.full(F, -np.inf, dtype=at.dtype) if lim is None else np.ascontiguousarray(lim, dtype=at.dtype)
    _bucket_kernel(np.ascontiguousarray(at), np.ascontiguousarray(s), np.ascontiguousarray(pb), np.ascontiguousarray(shift, dtype=np.float64),
                   lim_arr, out["cnt"], out["s1"], out["s2"], out["tok_var"], out["top_val"], out["top_idx"], out["tok_sum"], want_tok_sum,
                   out["below_val"], out["below_idx"])
    if not want_tok_sum:
        del out["tok_sum"]
    if lim is None:
        del out["below_val"], out["below_idx"]
    return out


def position_sums(sums: dict[str, np.ndarray], order: np.ndarray, bsorted: np.ndarray, shift: np.ndarray,
                  n_tok: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``count, sum, var`` ``Float64[ndarray, "F n_pos"]`` at every position from :func:`bucket_sums`'s buckets.

    ``order[f, j]``: the position of the ``j``-th smallest threshold; ``bsorted``: the position parts in that order.
    """
    F, P = order.shape
    count, psum, var = np.empty((F, P)), np.empty((F, P)), np.empty((F, P))
    _position_kernel(sums["cnt"], sums["s1"], sums["s2"], np.ascontiguousarray(order, dtype=np.int64),
                     np.ascontiguousarray(bsorted, dtype=np.float64), np.ascontiguousarray(shift, dtype=np.float64), float(n_tok),
                     count, psum, var)
    return count, psum, var
