"""The fused CPU reconstruction kernel (numba): a token sample at a chunk of positions, decoded from
its non-zero activations alone, reduced to the sums the reconstruction metrics need, with nothing of
size ``d_model`` per input ever written to memory.

For a separable SAE (ReLU, JumpReLU) ``pre[t, p, f] = a[t, f] + b[p, f]`` and feature ``f`` fires
iff ``a[t, f] > thr[p, f] = cut[f] - b[p, f]`` (the comparison
:meth:`posfeat.engine.sample.SampleGrid.first_firing` makes, so the counts, hence L0, are the same),
with activation ``a + b``. Each distinct token is computed once (a sample drawn with replacement
repeats tokens: the bundled pair's 2048 draws hold about 1000 distinct tokens), its per-position
sums weighted by how often it was drawn. The threads take interleaved groups of tokens (every group
spans all positions, so the cheap in-context positions and the dense ones past the context are
shared evenly). For one token, the positions go in blocks of :data:`BLOCK`: a block keeps the
features that can fire at any of its positions (``a[t, f] > min_p thr[p, f]``: one pass over the
features, positional ones apart), a sub-block of :data:`SUB_BLOCK` positions narrows that list the
same way, and four positions at a time collect the features firing at any of them (branch-free; an
activation is zero where its feature does not fire). The decode ``sum_f (a + b) W_dec[f]`` then
serves the four positions from each decoder row read (the decode is bound by reading
the rows: on the bundled pair four positions together take 30% more multiply-adds than their own
firing features alone, and the kernel runs 1.4x faster), four rows per pass over four accumulators
of ``d_model`` floats (positional features into a second four), the rows of a block's features
staying in cache from one position to the next. Each input's reconstruction ``x_hat = b_dec +
dec_non + dec_pos`` is then reduced on the spot to ``||x - x_hat||^2``, ``||x||^2``,
``||x_hat||^2``, the squared error inside the span of ``P`` (the top principal components of W_pos),
and ``r = x - x_hat + dec_pos - W_pos[p] = W_E[t] - b_dec - dec_non`` (the add-back test's residual:
its squared norm, and its weighted sum over tokens in the token group's own accumulator), all in
float64.

The work is ``O(n_tok * d_sae * n_pos / BLOCK)`` comparisons plus ``O(nnz * d_model)``
multiply-adds, where the dense product the torch path falls back to costs ``O(n_tok * n_pos * d_sae
* d_model)``. (Why not the quadratic form ``act^T (W_dec W_dec^T) act``, which skips the decode: it
costs ``O(L0^2)`` per input against ``O(L0 d_model)``, a gain only while L0 is well below
``d_model``; past the context the bundled SAE fires about 270 of its features, so it would save
little and cost a ``d_sae^2`` table.)"""

from __future__ import annotations

from typing import no_type_check

import numpy as np
import torch

from ..core.sae import SAE
from ..engine.kernel import HAVE_NUMBA, NUMBA_CACHE

if HAVE_NUMBA:  # numba is a dependency, but the torch paths work without it
    from numba import njit, prange


def fused_cpu(sae: SAE, device: torch.device) -> bool:
    """Whether this module's kernels make the sums: a separable SAE on the CPU, with numba installed
    (else torch does)."""
    return HAVE_NUMBA and device.type == "cpu" and sae.separable


#: Floating-point liberties of the kernel: sums may be reassociated (so they vectorise; they are
# float64 sums of float32 terms) and multiply-adds fused; no assumption about NaN or infinity is
# made.
_FAST = {"reassoc", "contract"}

#: Positions per block: a token's candidate features are found once per block.
BLOCK = 128
#: Positions per sub-block: the block's candidates narrowed to those that can fire in it.
SUB_BLOCK = 16
#: Token groups per thread (the parallel work items; more of them balance the threads better).
GROUPS_PER_THREAD = 4

if HAVE_NUMBA:

    @njit(cache=NUMBA_CACHE, boundscheck=False, fastmath=_FAST)
    @no_type_check
    def _block_min(thr, step):  # pragma: no cover
        """``[n_blocks, d_sae]``: each feature's smallest threshold over each block of ``step``
        positions."""
        n, d_sae = thr.shape
        nb = (n + step - 1) // step
        out = np.empty((nb, d_sae), np.float32)
        for s in range(nb):
            for f in range(d_sae):  # a loop, not a slice copy (whose error message costs seconds
                out[s, f] = thr[s * step, f]  # of compiling)
            for p in range(s * step + 1, min(n, s * step + step)):
                for f in range(d_sae):
                    out[s, f] = min(out[s, f], thr[p, f])
        return out

    @njit(cache=NUMBA_CACHE, boundscheck=False, fastmath=_FAST)
    @no_type_check
    def _candidates(a, t, thrmin, is_pos, cand):  # pragma: no cover
        """The features token ``t`` can fire somewhere in the block: non-positional ones into
        ``cand[:nn]``, positional ones into ``cand[npp:]``; returns ``(nn, npp)``."""
        nn = 0
        npp = cand.shape[0]
        for f in range(a.shape[1]):
            if a[t, f] > thrmin[f]:
                if is_pos[f]:
                    npp -= 1
                    cand[npp] = f
                else:
                    cand[nn] = f
                    nn += 1
        return nn, npp

    @njit(cache=NUMBA_CACHE, boundscheck=False, fastmath=_FAST)
    @no_type_check
    def _narrow(a, t, thr, cand, lo, hi, out, m):  # pragma: no cover
        """Branch-free: append to ``out`` (from ``m``) the features of ``cand[lo:hi]`` with ``a[t,
        f] > thr[f]``; returns the new length."""
        for k in range(lo, hi):
            f = cand[k]
            out[m] = f
            m += a[t, f] > thr[f]
        return m

    @njit(cache=NUMBA_CACHE, boundscheck=False, fastmath=_FAST)
    @no_type_check
    def _firing4(a, b, thr, t, p0, p1, p2, p3, sub, lo, hi, fire_f, V, m, cnt):  # pragma: no cover
        """Branch-free: append the features of ``sub[lo:hi]`` firing at any of the four positions,
        with their activations there (``V[i]``; zero where one does not fire), counting each
        position's firing in ``cnt``; returns the new length."""
        for k in range(lo, hi):
            f = sub[k]
            av = a[t, f]
            x0 = av > thr[p0, f]
            x1 = av > thr[p1, f]
            x2 = av > thr[p2, f]
            x3 = av > thr[p3, f]
            fire_f[m] = f
            V[0, m] = (av + b[p0, f]) * np.float32(x0)
            V[1, m] = (av + b[p1, f]) * np.float32(x1)
            V[2, m] = (av + b[p2, f]) * np.float32(x2)
            V[3, m] = (av + b[p3, f]) * np.float32(x3)
            cnt[0] += x0
            cnt[1] += x1
            cnt[2] += x2
            cnt[3] += x3
            m += x0 | x1 | x2 | x3
        return m

    @njit(cache=NUMBA_CACHE, boundscheck=False, fastmath=_FAST)
    @no_type_check
    def _decode4(acc, W, fire_f, V, k0, k1):  # pragma: no cover
        """``acc[i] = sum over k0 <= k < k1 of V[i, k] W[fire_f[k]]`` for four positions at once:
        each decoder row read serves the four (four rows per pass, then one by one)."""
        d = acc.shape[1]
        acc[:] = 0.0
        k = k0
        while k + 4 <= k1:
            f0, f1, f2, f3 = fire_f[k], fire_f[k + 1], fire_f[k + 2], fire_f[k + 3]
            a0, a1, a2, a3 = V[0, k], V[0, k + 1], V[0, k + 2], V[0, k + 3]
            b0, b1, b2, b3 = V[1, k], V[1, k + 1], V[1, k + 2], V[1, k + 3]
            c0, c1, c2, c3 = V[2, k], V[2, k + 1], V[2, k + 2], V[2, k + 3]
            e0, e1, e2, e3 = V[3, k], V[3, k + 1], V[3, k + 2], V[3, k + 3]
            for j in range(d):
                w0, w1, w2, w3 = W[f0, j], W[f1, j], W[f2, j], W[f3, j]
                acc[0, j] += a0 * w0 + a1 * w1 + a2 * w2 + a3 * w3
                acc[1, j] += b0 * w0 + b1 * w1 + b2 * w2 + b3 * w3
                acc[2, j] += c0 * w0 + c1 * w1 + c2 * w2 + c3 * w3
                acc[3, j] += e0 * w0 + e1 * w1 + e2 * w2 + e3 * w3
            k += 4
        while k < k1:
            f0 = fire_f[k]
            a0, b0, c0, e0 = V[0, k], V[1, k], V[2, k], V[3, k]
            for j in range(d):
                w0 = W[f0, j]
                acc[0, j] += a0 * w0
                acc[1, j] += b0 * w0
                acc[2, j] += c0 * w0
                acc[3, j] += e0 * w0
            k += 1

    @njit(cache=NUMBA_CACHE, boundscheck=False, fastmath=_FAST)
    @no_type_check
    def _reduce(e_t, w_p, acc_n, acc_p, b_dec, P, wt, rsum):  # pragma: no cover
        """One input's sums from its decode: ``(||x - x_hat||^2, ||x||^2, ||x_hat||^2, ||r||^2, ||P
        err||^2)``; adds ``wt * r`` to ``rsum``. ``P`` has at least 3 rows (zero rows add nothing).
        The first loop writes nothing, so it vectorises without run-time checks of overlapping
        arrays."""
        s_ee = 0.0
        s_xx = 0.0
        s_hh = 0.0
        s_rr = 0.0
        q0 = 0.0
        q1 = 0.0
        q2 = 0.0
        d = acc_n.shape[0]
        for j in range(d):
            e = e_t[j]
            x = np.float64(e + w_p[j])
            non = acc_n[j] + b_dec[j]
            xh = np.float64(non + acc_p[j])
            err = x - xh
            r = np.float64(e) - np.float64(non)
            s_ee += err * err
            s_xx += x * x
            s_hh += xh * xh
            s_rr += r * r
            q0 += err * P[0, j]
            q1 += err * P[1, j]
            q2 += err * P[2, j]
        s_pc = q0 * q0 + q1 * q1 + q2 * q2
        for k in range(3, P.shape[0]):
            q = 0.0
            for j in range(d):
                q += (np.float64(e_t[j] + w_p[j]) - np.float64(acc_n[j] + b_dec[j] + acc_p[j])) * P[
                    k, j
                ]
            s_pc += q * q
        for j in range(d):
            rsum[j] += wt * (np.float64(e_t[j]) - np.float64(acc_n[j] + b_dec[j]))
        return s_ee, s_xx, s_hh, s_rr, s_pc

    @njit(parallel=True, cache=NUMBA_CACHE, boundscheck=False, fastmath=_FAST)
    @no_type_check
    def _recon_kernel(
        a, wt, W_E, W_pos, thr, b, W_dec, b_dec, is_pos, P, out, count, rsum
    ):  # pragma: no cover
        n_tok, d_sae = a.shape
        n_chunk, d = W_pos.shape
        n_groups = rsum.shape[0]
        # int64 zeros and steps, not literals: a literal argument is a second compiled signature
        zero = np.int64(0)
        tb = _block_min(thr, np.int64(BLOCK))
        ts = _block_min(thr, np.int64(SUB_BLOCK))
        for g in prange(n_groups):
            cand = np.empty(d_sae, np.int64)
            sub = np.empty(d_sae, np.int64)
            fire_f = np.empty(d_sae, np.int64)
            V = np.empty((4, d_sae), np.float32)
            acc_n = np.empty((4, d), np.float32)
            acc_p = np.empty((4, d), np.float32)
            cnt = np.empty(4, np.int64)
            for t in range(g, n_tok, n_groups):
                for s0 in range(0, n_chunk, SUB_BLOCK):
                    if s0 % BLOCK == 0:
                        nn, npp = _candidates(a, t, tb[s0 // BLOCK], is_pos, cand)
                    ts_s = ts[s0 // SUB_BLOCK]
                    nsn = _narrow(a, t, ts_s, cand, zero, nn, sub, zero)
                    ns = _narrow(a, t, ts_s, cand, npp, d_sae, sub, nsn)
                    for q in range(s0, min(n_chunk, s0 + SUB_BLOCK), 4):
                        last = (
                            n_chunk - 1
                        )  # past it, a quad repeats its last position (and drops the copies)
                        p0, p1, p2, p3 = q, min(q + 1, last), min(q + 2, last), min(q + 3, last)
                        cnt[:] = 0
                        mn = _firing4(
                            a, b, thr, t, p0, p1, p2, p3, sub, zero, nsn, fire_f, V, zero, cnt
                        )
                        m = _firing4(a, b, thr, t, p0, p1, p2, p3, sub, nsn, ns, fire_f, V, mn, cnt)
                        _decode4(acc_n, W_dec, fire_f, V, zero, mn)
                        _decode4(acc_p, W_dec, fire_f, V, mn, m)
                        for i in range(min(4, n_chunk - q)):
                            sums = _reduce(
                                W_E[t],
                                W_pos[q + i],
                                acc_n[i],
                                acc_p[i],
                                b_dec,
                                P,
                                wt[t],
                                rsum[g, q + i],
                            )
                            for k in range(5):
                                out[k, t, q + i] = sums[k]
                            count[t, q + i] = cnt[i]


def recon_sums(
    a: np.ndarray,
    W_E: np.ndarray,
    W_pos: np.ndarray,
    thr: np.ndarray,
    b: np.ndarray,
    W_dec: np.ndarray,
    b_dec: np.ndarray,
    is_pos: np.ndarray,
    P: np.ndarray,
    threads: int = 1,
    weights: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """The sums of the module docstring for ``n_tok`` sample tokens at ``n_chunk`` positions
    (float32 inputs, CPU).

    Args:
        a: ``[n_tok, d_sae]`` token parts; W_E: ``[n_tok, d_model]`` the tokens' embedding rows.
        W_pos: ``[n_chunk, d_model]`` the positions' rows; thr, b: ``[n_chunk, d_sae]`` ``cut - b``
            and ``b``.
        W_dec: ``[d_sae, d_model]``; b_dec: ``[d_model]``; is_pos: ``[d_sae]`` positional features
            (bool);
        P: ``[k, d_model]`` orthonormal directions (the top principal components of W_pos).
        threads: the kernel's threads (it makes :data:`GROUPS_PER_THREAD` token groups per thread).
        weights: ``[n_tok]`` how many times each token counts in the per-position sums (whole
            numbers; default once).

    Returns float64 arrays: ``ee``, ``xx``, ``hh`` ``[n_tok, n_chunk]`` (squared norms of ``x -
    x_hat``, ``x``, ``x_hat``, each token once); per position, weighted over the tokens: ``count``
    (non-zero activations, int64), ``pc`` (squared error in the span of ``P``), ``r_sq`` and
    ``r_sum`` ``[n_chunk, d_model]`` (the residual ``r``'s squared norm and its sum)."""
    n_tok, n_chunk, d = a.shape[0], thr.shape[0], W_dec.shape[1]
    w = np.ones(n_tok, np.int64) if weights is None else np.asarray(weights, np.int64)
    f32, c = np.float32, np.ascontiguousarray
    groups = max(1, min(n_tok, GROUPS_PER_THREAD * max(1, threads)))
    out, count, rsum = (
        np.empty((5, n_tok, n_chunk)),
        np.empty((n_tok, n_chunk), np.int64),
        np.zeros((groups, n_chunk, d)),
    )
    P3 = np.zeros((max(3, P.shape[0]), d))  # at least 3 rows for the kernel's unrolled projection
    P3[: P.shape[0]] = P
    _recon_kernel(
        c(a, f32),
        w.astype(np.float64),
        c(W_E, f32),
        c(W_pos, f32),
        c(thr, f32),
        c(b, f32),
        c(W_dec, f32),
        c(b_dec, f32),
        c(is_pos, np.bool_),
        P3,
        out,
        count,
        rsum,
    )
    return {
        "ee": out[0],
        "xx": out[1],
        "hh": out[2],
        "count": w @ count,
        "pc": w @ out[4],
        "r_sq": w @ out[3],
        "r_sum": rsum.sum(0),
    }


if HAVE_NUMBA:

    @njit(cache=NUMBA_CACHE, boundscheck=False)
    @no_type_check
    def _insert_top(tv, ti, tn, m_k, mean, f, lo):  # pragma: no cover
        """Insert feature ``f`` (mean ``mean``, ``lo`` positions not firing) into one token's top
        ``k``, largest first (ties: the lower feature first); returns how many are held."""
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
    def _token_kernel(
        a,
        cut,
        bs,
        suf1,
        suf2,
        dead,
        positional,
        k,
        flat_cv,
        n_non,
        n_flat,
        max_cv,
        bent,
        n_pos,
        n_pos_flat,
    ):  # pragma: no cover
        n_tok, d_sae = a.shape
        C = bs.shape[1]
        for t in prange(n_tok):
            tv = np.empty(
                k, np.float64
            )  # the top k means, largest first (ties: the lower feature first)
            ti = np.empty(k, np.int64)
            tn = np.empty(k, np.int64)
            m_k = 0
            for f in range(d_sae):
                av = a[t, f]
                thr = cut[f] - av
                lo = 0
                hi = C
                while (
                    lo < hi
                ):  # positions with b <= cut - a (not firing), as searchsorted(right=True)
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


def token_sums(
    a: np.ndarray,
    cut: np.ndarray,
    bs: np.ndarray,
    suf1: np.ndarray,
    suf2: np.ndarray,
    dead: np.ndarray,
    positional: np.ndarray,
    k: int,
    flat_cv: float,
) -> dict[str, np.ndarray]:
    """Per token (float64 ``a [n_tok, d_sae]``): its top ``k`` features by exact mean over the
    context (``bs [d_sae, C]`` each feature's sorted position parts, ``suf1``/``suf2`` their suffix
    sums and sums of squares, ``[d_sae, C + 1]``; dead features rank last), and among those it
    activates how many are non-positional (``n_non``) and flat (``n_flat``: ``std / mean <=
    flat_cv``), the largest non-positional ``std / mean`` (``max_cv``, NaN when none) and its
    feature (``bent``, -1), and the same counts for positional ones (``n_pos``, ``n_pos_flat``). The
    arithmetic is :func:`posfeat.analyses.classification.token_flatness`'s, operation for operation (no
    fused multiply-add)."""
    n = a.shape[0]
    out = {
        "n_non": np.empty(n, np.int64),
        "n_flat": np.empty(n, np.int64),
        "max_cv": np.empty(n),
        "bent": np.empty(n, np.int64),
        "n_pos": np.empty(n, np.int64),
        "n_pos_flat": np.empty(n, np.int64),
    }
    c = np.ascontiguousarray
    _token_kernel(
        c(a, np.float64),
        c(cut, np.float64),
        c(bs, np.float64),
        c(suf1, np.float64),
        c(suf2, np.float64),
        c(dead, np.bool_),
        c(positional, np.bool_),
        int(k),
        float(flat_cv),
        out["n_non"],
        out["n_flat"],
        out["max_cv"],
        out["bent"],
        out["n_pos"],
        out["n_pos_flat"],
    )
    return out
