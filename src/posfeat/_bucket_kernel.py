"""The fused CPU kernel of the additive fast path (numba).

For each feature (in parallel) and each token: one binary search of the token's value among the
feature's sorted thresholds, three float64 accumulations into that bucket, and the token's mean
activation over positions folded straight into that feature's token statistics (Welford mean and
variance, maximum, top-k). Nothing of size ``n_tok`` is written unless asked for.
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
    def _bucket_kernel(at, s, pb, shift, cnt, s1, s2, tok_var, topv, topi, tok_sum, want_tok_sum):  # pragma: no cover
        F, T = at.shape
        P = s.shape[1]
        K = topv.shape[1]
        for f in prange(F):
            mean_r = 0.0
            m2 = 0.0
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
                ts = lo * w + pb[f, lo]
                if want_tok_sum:
                    tok_sum[f, t] = ts
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


def bucket_sums(
    at: np.ndarray, s: np.ndarray, pb: np.ndarray, shift: np.ndarray, top_k: int, want_tok_sum: bool
) -> dict[str, np.ndarray]:
    """Bucket token values among sorted thresholds, and summarise tokens on the way.

    Args:
        at: ``Float[ndarray, "F n_tok"]`` token parts of the pre-activation.
        s: ``Float[ndarray, "F n_pos"]`` each feature's thresholds, sorted ascending (same dtype).
        pb: ``Float64[ndarray, "F n_pos+1"]`` prefix sums of the position parts in that order.
        shift: ``Float64[ndarray, "F"]`` subtracted from token values before summing (their mean,
            so that sums of squares do not cancel).
        top_k: how many tokens with the highest mean to keep.
        want_tok_sum: also return each token's sum over positions.

    Returns ``cnt, s1, s2`` ``[F, n_pos+1]`` (count, sum, sum of squares of shifted token values per
    bucket); ``tok_var`` ``[F]`` (population variance over tokens of their mean over positions);
    ``top_val, top_idx`` ``[F, min(top_k, n_tok)]``; and ``tok_sum`` ``[F, n_tok]`` when asked.
    """
    F, T = at.shape
    P = s.shape[1]
    k = min(top_k, T)
    out = {"cnt": np.zeros((F, P + 1)), "s1": np.zeros((F, P + 1)), "s2": np.zeros((F, P + 1)), "tok_var": np.zeros(F),
           "top_val": np.full((F, k), -np.inf), "top_idx": np.full((F, k), -1, dtype=np.int64),
           "tok_sum": np.empty((F, T) if want_tok_sum else (1, 1))}
    _bucket_kernel(np.ascontiguousarray(at), np.ascontiguousarray(s), np.ascontiguousarray(pb), np.ascontiguousarray(shift, dtype=np.float64),
                   out["cnt"], out["s1"], out["s2"], out["tok_var"], out["top_val"], out["top_idx"], out["tok_sum"], want_tok_sum)
    if not want_tok_sum:
        del out["tok_sum"]
    return out
