"""The fused CPU kernel of the additive fast path (numba).

For each feature (in parallel) and each token: one binary search of the token's value among the
feature's sorted thresholds, then three float64 accumulations into that bucket and the token's
sum over the positions where it fires. Everything stays in cache but the token values.
"""

from __future__ import annotations

import numpy as np

try:  # numba is a dependency, but the torch path works without it
    from numba import float64, njit, prange

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only where numba is missing
    HAVE_NUMBA = False


if HAVE_NUMBA:

    @njit(parallel=True, cache=False, boundscheck=False, nogil=True)
    def _bucket_kernel(at, s, pb, shift, cnt, s1, s2, tok_sum):  # pragma: no cover - compiled
        F, T = at.shape
        P = s.shape[1]
        for f in prange(F):
            for t in range(T):
                v = at[f, t]
                lo = 0
                n = P
                while n > 0:  # lo = number of thresholds strictly below v
                    half = n >> 1
                    if s[f, lo + half] < v:
                        lo = lo + half + 1
                        n = n - half - 1
                    else:
                        n = half
                w = float64(v)
                u = w - shift[f]
                cnt[f, lo] += 1.0
                s1[f, lo] += u
                s2[f, lo] += u * u
                tok_sum[f, t] = lo * w + pb[f, lo]


def bucket_sums(
    at: np.ndarray, s: np.ndarray, pb: np.ndarray, shift: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bucket token values among sorted thresholds.

    Args:
        at: ``Float[ndarray, "F n_tok"]`` token parts of the pre-activation.
        s: ``Float[ndarray, "F n_pos"]`` each feature's thresholds, sorted ascending (same dtype).
        pb: ``Float64[ndarray, "F n_pos+1"]`` prefix sums of the position parts in that order.
        shift: ``Float64[ndarray, "F"]`` subtracted from token values before summing (their mean,
            so that sums of squares do not cancel).

    Returns ``cnt, s1, s2`` ``[F, n_pos+1]`` (count, sum, sum of squares of shifted token values per
    bucket) and ``tok_sum`` ``[F, n_tok]`` (each token's activation summed over positions).
    """
    F, T = at.shape
    P = s.shape[1]
    cnt = np.zeros((F, P + 1))
    s1 = np.zeros((F, P + 1))
    s2 = np.zeros((F, P + 1))
    tok_sum = np.empty((F, T))
    _bucket_kernel(np.ascontiguousarray(at), np.ascontiguousarray(s), np.ascontiguousarray(pb), np.ascontiguousarray(shift, dtype=np.float64),
                   cnt, s1, s2, tok_sum)
    return cnt, s1, s2, tok_sum
