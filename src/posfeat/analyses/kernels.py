"""The fused CPU reconstruction kernel (numba): a token sample at a chunk of positions, decoded from its non-zero
activations alone, reduced to the sums the reconstruction metrics need, with nothing of size ``d_model`` per input
ever written to memory.

For a separable SAE (ReLU, JumpReLU) ``pre[t, p, f] = a[t, f] + b[p, f]`` and feature ``f`` fires iff
``a[t, f] > thr[p, f] = cut[f] - b[p, f]`` (the comparison :meth:`posfeat.engine.sample.SampleGrid.first_firing`
makes, so the counts, hence L0, are the same), with activation ``a + b``. The positions of a chunk go in blocks of
:data:`BLOCK`, one block per thread. For each sample token a block first keeps the features that can fire at any of
its positions (``a[t, f] > min_p thr[p, f]``: one branch-free pass over the features), then, position by position,
adds ``(a + b) W_dec[f]`` for those that do fire into two accumulators of ``d_model`` floats (positional features
apart from the others); the same few decoder rows serve every position of the block, so they stay in cache. Each
input's reconstruction ``x_hat = b_dec + dec_non + dec_pos`` is then reduced on the spot to
``||x - x_hat||^2``, ``||x||^2``, ``||x_hat||^2``, the squared error inside the span of ``P`` (the top principal
components of W_pos), and ``r = x - x_hat + dec_pos - W_pos[p] = W_E[t] - b_dec - dec_non`` (the add-back test's
residual: its sum over tokens and its squared norm), all accumulated in float64.

The work is ``O(n_tok * d_sae * n_pos / BLOCK)`` comparisons plus ``O(nnz * d_model)`` multiply-adds, where the
dense product the torch path falls back to costs ``O(n_tok * n_pos * d_sae * d_model)``.
"""

from __future__ import annotations

from typing import no_type_check

import numpy as np
import torch

from ..core.sae import SAE
from ..engine.kernel import HAVE_NUMBA, NUMBA_CACHE

if HAVE_NUMBA:  # numba is a dependency, but the torch paths work without it
    from numba import njit, prange


def fused_cpu(sae: SAE, device: torch.device) -> bool:
    """Whether this module's kernels make the sums: a separable SAE on the CPU, with numba installed (else torch does)."""
    return HAVE_NUMBA and device.type == "cpu" and sae.separable


#: Floating-point liberties of the kernel: sums may be reassociated (so they vectorise; they are float64 sums of
#: float32 terms) and multiply-adds fused; no assumption about NaN or infinity is made.
_FAST = {"reassoc", "contract"}

#: Positions per block, at most (each thread takes one block at a time; a token's decoder rows serve the whole block).
BLOCK = 128
#: Positions per block, at least (smaller blocks only to give every thread one).
MIN_BLOCK = 16

if HAVE_NUMBA:

    @njit(cache=NUMBA_CACHE, boundscheck=False, fastmath=_FAST)
    @no_type_check
    def _block_min(thr, p0, p1):  # pragma: no cover
        """Each feature's smallest threshold over positions ``p0 .. p1-1``."""
        thrmin = thr[p0].copy()
        for p in range(p0 + 1, p1):
            for f in range(thr.shape[1]):
                thrmin[f] = min(thrmin[f], thr[p, f])
        return thrmin

    @njit(cache=NUMBA_CACHE, boundscheck=False, fastmath=_FAST)
    @no_type_check
    def _candidates(a, t, thrmin, cand):  # pragma: no cover
        """Branch-free: the features token ``t`` can fire somewhere in the block, into ``cand``; returns how many."""
        nc = 0
        for f in range(a.shape[1]):
            cand[nc] = f
            nc += a[t, f] > thrmin[f]
        return nc

    @njit(cache=NUMBA_CACHE, boundscheck=False, fastmath=_FAST)
    @no_type_check
    def _firing(a, b, thr, t, p, cand, nc, fire_f, fire_v):  # pragma: no cover
        """Branch-free: the candidates firing at ``p``, and their activations, into ``fire_f``/``fire_v``; returns how many."""
        m = 0
        for k in range(nc):
            f = cand[k]
            av = a[t, f]
            fire_f[m] = f
            fire_v[m] = av + b[p, f]
            m += av > thr[p, f]
        return m

    @njit(parallel=True, cache=NUMBA_CACHE, boundscheck=False, fastmath=_FAST)
    @no_type_check
    def _recon_kernel(a, W_E, W_pos, thr, b, W_dec, b_dec, is_pos, P, block, ee, xx, hh, count, pc, rsq, rsum):  # pragma: no cover
        n_tok, d_sae = a.shape
        n_chunk = thr.shape[0]
        d = W_dec.shape[1]
        n_pc = P.shape[0]
        n_blocks = (n_chunk + block - 1) // block
        for bi in prange(n_blocks):
            p0 = bi * block
            p1 = min(n_chunk, p0 + block)
            thrmin = _block_min(thr, p0, p1)
            cand = np.empty(d_sae, np.int64)
            fire_f = np.empty(d_sae, np.int64)
            fire_v = np.empty(d_sae, np.float32)
            acc_n = np.empty(d, np.float32)
            acc_p = np.empty(d, np.float32)
            errv = np.empty(d, np.float64)
            for t in range(n_tok):
                nc = _candidates(a, t, thrmin, cand)
                for p in range(p0, p1):
                    m = _firing(a, b, thr, t, p, cand, nc, fire_f, fire_v)
                    acc_n[:] = 0.0
                    acc_p[:] = 0.0
                    for k in range(m):
                        f = fire_f[k]
                        v = fire_v[k]
                        if is_pos[f]:
                            for j in range(d):
                                acc_p[j] += v * W_dec[f, j]
                        else:
                            for j in range(d):
                                acc_n[j] += v * W_dec[f, j]
                    s_ee = 0.0
                    s_xx = 0.0
                    s_hh = 0.0
                    s_rr = 0.0
                    for j in range(d):
                        e = W_E[t, j]
                        x = np.float64(e + W_pos[p, j])
                        non = acc_n[j] + b_dec[j]
                        xh = np.float64(non + acc_p[j])
                        err = x - xh
                        r = np.float64(e) - np.float64(non)
                        errv[j] = err
                        s_ee += err * err
                        s_xx += x * x
                        s_hh += xh * xh
                        s_rr += r * r
                        rsum[p, j] += r
                    s_pc = 0.0
                    for k in range(n_pc):
                        q = 0.0
                        for j in range(d):
                            q += errv[j] * P[k, j]
                        s_pc += q * q
                    ee[t, p] = s_ee
                    xx[t, p] = s_xx
                    hh[t, p] = s_hh
                    count[p] += m
                    rsq[p] += s_rr
                    pc[p] += s_pc


def recon_sums(a: np.ndarray, W_E: np.ndarray, W_pos: np.ndarray, thr: np.ndarray, b: np.ndarray, W_dec: np.ndarray, b_dec: np.ndarray,
               is_pos: np.ndarray, P: np.ndarray, threads: int = 1) -> dict[str, np.ndarray]:
    """The sums of the module docstring for ``n_tok`` sample tokens at ``n_chunk`` positions (float32 inputs, CPU).

    Args:
        a: ``[n_tok, d_sae]`` token parts; W_E: ``[n_tok, d_model]`` the tokens' embedding rows.
        W_pos: ``[n_chunk, d_model]`` the positions' rows; thr, b: ``[n_chunk, d_sae]`` ``cut - b`` and ``b``.
        W_dec: ``[d_sae, d_model]``; b_dec: ``[d_model]``; is_pos: ``[d_sae]`` positional features (bool);
        P: ``[k, d_model]`` orthonormal directions (the top principal components of W_pos).
        threads: the kernel's threads: blocks of :data:`BLOCK` positions, smaller (down to :data:`MIN_BLOCK`) when that
            gives every thread one.

    Returns float64 arrays: ``ee``, ``xx``, ``hh`` ``[n_tok, n_chunk]`` (squared norms of ``x - x_hat``, ``x``,
    ``x_hat``); per position ``count`` (non-zero activations over the tokens, int64), ``pc`` (squared error in the span
    of ``P``, summed over tokens), ``r_sq`` and ``r_sum`` ``[n_chunk, d_model]`` (the residual ``r``'s squared norm and
    its sum over tokens).
    """
    n_tok, n_chunk, d = a.shape[0], thr.shape[0], W_dec.shape[1]
    f32 = np.float32
    out = {"ee": np.empty((n_tok, n_chunk)), "xx": np.empty((n_tok, n_chunk)), "hh": np.empty((n_tok, n_chunk)),
           "count": np.zeros(n_chunk, np.int64), "pc": np.zeros(n_chunk), "r_sq": np.zeros(n_chunk), "r_sum": np.zeros((n_chunk, d))}
    c = np.ascontiguousarray
    block = max(MIN_BLOCK, min(BLOCK, -(-n_chunk // max(1, threads))))
    _recon_kernel(c(a, f32), c(W_E, f32), c(W_pos, f32), c(thr, f32), c(b, f32), c(W_dec, f32), c(b_dec, f32),
                  c(is_pos, np.bool_), c(P, np.float64), block, out["ee"], out["xx"], out["hh"], out["count"], out["pc"], out["r_sq"],
                  out["r_sum"])
    return out


if HAVE_NUMBA:

    @njit(cache=NUMBA_CACHE, boundscheck=False)
    @no_type_check
    def _insert_top(tv, ti, tn, m_k, mean, f, lo):  # pragma: no cover
        """Insert feature ``f`` (mean ``mean``, ``lo`` positions not firing) into one token's top ``k``, largest first (ties:
        the lower feature first); returns how many are held."""
        k = tv.shape[0]
        if m_k < k or mean > tv[m_k - 1]:
            j = m_k if m_k < k else k - 1
            while j > 0 and mean > tv[j - 1]:
                tv[j] = tv[j - 1]
                ti[j] = ti[j - 1]
                tn[j] = tn[j - 1]
                j -= 1
            tv[j] = mean
            ti[j] = f
            tn[j] = lo
            if m_k < k:
                m_k += 1
        return m_k

    @njit(parallel=True, cache=NUMBA_CACHE, boundscheck=False)
    @no_type_check
    def _token_kernel(a, cut, bs, suf1, suf2, dead, positional, k, flat_cv, n_non, n_flat, max_cv, bent, n_pos, n_pos_flat):  # pragma: no cover
        n_tok, d_sae = a.shape
        C = bs.shape[1]
        for t in prange(n_tok):
            tv = np.empty(k, np.float64)  # the top k means, largest first (ties: the lower feature first)
            ti = np.empty(k, np.int64)
            tn = np.empty(k, np.int64)
            m_k = 0
            for f in range(d_sae):
                av = a[t, f]
                thr = cut[f] - av
                lo = 0
                hi = C
                while lo < hi:  # positions with b <= cut - a (not firing), as searchsorted(right=True)
                    mid = (lo + hi) // 2
                    if bs[f, mid] <= thr:
                        lo = mid + 1
                    else:
                        hi = mid
                mean = -1.0 if dead[f] else (np.float64(C - lo) * av + suf1[f, lo]) / C
                m_k = _insert_top(tv, ti, tn, m_k, mean, f, lo)
            nn = 0
            nf = 0
            npos = 0
            npf = 0
            worst = -1.0
            wf = -1
            for j in range(m_k):
                v = tv[j]
                if not v > 0:
                    continue
                f = ti[j]
                av = a[t, f]
                n = np.float64(C - tn[j])
                var = (n * av * av + 2 * av * suf1[f, tn[j]] + suf2[f, tn[j]]) / C - v * v
                cv = np.sqrt(max(var, 0.0)) / max(v, 1e-300)
                flat = cv <= flat_cv
                if positional[f]:
                    npos += 1
                    npf += flat
                else:
                    nn += 1
                    nf += flat
                    if cv > worst:
                        worst = cv
                        wf = f
            n_non[t] = nn
            n_flat[t] = nf
            max_cv[t] = worst if nn > 0 else np.nan
            bent[t] = wf
            n_pos[t] = npos
            n_pos_flat[t] = npf


def token_sums(a: np.ndarray, cut: np.ndarray, bs: np.ndarray, suf1: np.ndarray, suf2: np.ndarray, dead: np.ndarray, positional: np.ndarray,
               k: int, flat_cv: float) -> dict[str, np.ndarray]:
    """Per token (float64 ``a [n_tok, d_sae]``): its top ``k`` features by exact mean over the context (``bs [d_sae, C]``
    each feature's sorted position parts, ``suf1``/``suf2`` their suffix sums and sums of squares, ``[d_sae, C + 1]``;
    dead features rank last), and among those it activates how many are non-positional (``n_non``) and flat
    (``n_flat``: ``std / mean <= flat_cv``), the largest non-positional ``std / mean`` (``max_cv``, NaN when none) and its
    feature (``bent``, -1), and the same counts for positional ones (``n_pos``, ``n_pos_flat``). The arithmetic is
    :func:`posfeat.analyses.classify.token_flatness`'s, operation for operation (no fused multiply-add)."""
    n = a.shape[0]
    out = {"n_non": np.empty(n, np.int64), "n_flat": np.empty(n, np.int64), "max_cv": np.empty(n), "bent": np.empty(n, np.int64),
           "n_pos": np.empty(n, np.int64), "n_pos_flat": np.empty(n, np.int64)}
    c = np.ascontiguousarray
    _token_kernel(c(a, np.float64), c(cut, np.float64), c(bs, np.float64), c(suf1, np.float64), c(suf2, np.float64), c(dead, np.bool_),
                  c(positional, np.bool_), int(k), float(flat_cv), out["n_non"], out["n_flat"], out["max_cv"], out["bent"], out["n_pos"],
                  out["n_pos_flat"])
    return out
