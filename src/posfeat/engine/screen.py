"""Screening: most token values of a sparse SAE fire at no position, and a bfloat16 GEMM proves it
for them.

For a feature ``f`` and token ``t`` the numba path needs the exact token part ``a = x_t . w_f +
b_f`` only when it can fire at some position (``a > row0_f``, the feature's lowest threshold ``cut -
b`` over every position set), or when it may be the feature's largest token value that never fires
inside the context (:class:`~posfeat.engine.grid_stats.NeverFiring`). A token part computed from
bfloat16 inputs, ``approx`` (a GEMM at about 2.5 times the fp32 GEMM's speed where the CPU
multiplies bfloat16 natively), is within a bound ``e`` of every float32 evaluation of ``a``
(:class:`ScreenInputs`: the inputs' rounding errors are known, so Cauchy-Schwarz on them gives a
bound a few times the typical error, not hundreds), so a token with ``approx + e < row0 - b_f``
provably fires nowhere: it only counts. The others (candidates: about 5% on a GPT-2-shaped SAE with
an L0 of about 50) get their exact token part, a dot product in the working precision, and go
through the same buckets as in the dense path. What needs every token: the count of those that fire
nowhere (the rest), the mean token part (from the sum of the token inputs, ``sum_t x_t . w + n b``),
the top tokens' zero-sum tail (filled in token order, as the dense path does) and the largest value
that never fires inside the context (from the candidates, and when that is not enough, from the
screened tokens not surely below it).

The result is the dense path's, to the rounding of the token parts (one dot product's rounding
rather than one GEMM's); the same tests hold both to the enumeration. By default a call screens only
when a seeded sample of features and tokens says at most :data:`MAX_CANDIDATE_SHARE` of the token
values are candidates (a dense SAE is cheaper through the fp32 GEMM)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, no_type_check

import numpy as np
import torch

from .kernel import CELLS_PER_THRESHOLD, HAVE_NUMBA, NUMBA_CACHE, RUN, SPARE, TOP_RUN, new_sums

if HAVE_NUMBA:
    from llvmlite import ir
    from numba import float32, float64, njit, prange, types, uint64
    from numba.extending import intrinsic

    from .kernel import _add_buckets, _buckets_of, _merge_token, _padded_table, _push_top, _tally

#: ``screen=None`` screens when at most this share of the token values are candidates, estimated on
# a seeded sample of features and tokens: the exact dot products cost about 7 fp32 GEMMs per unit of
# share (measured on this project's CPU, as the GEMM they replace is 1), the bfloat16 GEMM and the
# screen about 0.5, so above about 0.1 the dense path is cheaper (the bundled SAE: 0.27;
# GPT-2-shaped stand-in and a res-jb-like random SAE: about 0.05).
MAX_CANDIDATE_SHARE = 0.12
#: Features and tokens of that estimate (seeded, spread over the whole SAE and vocabulary: feature
# order says nothing).
ESTIMATE_FEATURES, ESTIMATE_TOKENS = 256, 4096

#: Tokens with the largest rounding terms (for each of ``dx`` and ``hx``) that the screen kernel
# always tests in full: every other token's terms are bounded by the largest of the rest, so one
# token of unusual norm does not weaken the kernel's cheap first test (:func:`_v_floor`) for all.
OUTLIERS = 16
#: Features per work item of the screen kernel, at most (a row's read of them is contiguous); fewer
# where the threads would otherwise idle (:func:`tile_of`).
SCREEN_TILE = 512

#: Token rows per step of the exact dot products: every feature of the sub-block takes its
# candidates among them while they are fresh, so each encoder row is read once per step for about 5%
# of them (on the stand-in: 512 rows, 3.6 s of dot products; 64 rows, 4.6 s).
EXACT_RUN = 512


def _norms(
    m: torch.Tensor, rows: int = 4096, kernel: bool = True
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Rows of ``m`` in bfloat16, and in float64 (rounded up by 1e-6) the norms of their rounding
    errors and of the rounded rows. Values that round to a subnormal are set to zero here, as the
    CPU's bfloat16 GEMM treats them (it flushes subnormal inputs), so the error norm counts what it
    loses. With numba (and ``kernel``) one pass over the rows (:func:`_norms_kernel`: 0.04 s for
    GPT-2's embedding matrix against 0.3 s in torch); else torch, ``rows`` at a time (no float64
    copy of the whole)."""
    h = m.to(torch.bfloat16)
    err, norm = np.empty(m.shape[0]), np.empty(m.shape[0])
    if kernel and HAVE_NUMBA and m.device.type == "cpu" and m.shape[0]:
        _norms_kernel(
            m.contiguous().numpy(), h.view(torch.int16).numpy().view(np.uint16), err, norm
        )
        return h, err, norm
    h = torch.where(h.abs() < torch.finfo(torch.float32).tiny, torch.zeros_like(h), h)
    for r0 in range(0, m.shape[0], rows):
        hd = h[r0 : r0 + rows].double()
        err[r0 : r0 + rows] = (m[r0 : r0 + rows].double() - hd).norm(dim=1).numpy()
        norm[r0 : r0 + rows] = hd.norm(dim=1).numpy()
    return h, err * (1 + 1e-6), norm * (1 + 1e-6)


@dataclass
class ScreenInputs:
    """A block's inputs to the screen: token inputs ``x`` ``[n_tok, d]`` (working dtype), in
    bfloat16 ``x_bf``, the norms of their rounding errors ``dx`` and of the rounded rows ``hx``,
    their float64 sum ``x_sum`` (None where not asked for), the tokens of outlying ``dx`` or ``hx``
    ``far`` and the others' largest ``rest`` (:meth:`tokens`); the block's encoder rows ``wt``
    ``[F, d]``, in bfloat16 ``wt_bf``,
    and per feature the bound's coefficients ``A``, ``B``, ``C`` (below); float64 biases ``bias``.

    The bound on ``|approx - a|`` for token ``t`` and feature ``i``, ``approx`` the bfloat16 GEMM's
    value (``xh . wh`` rounded to bfloat16) and ``a`` any float32 evaluation of ``x . w + b``::

        |x.w - xh.wh| <= |dx . w| + |xh . dw| <= dx_t ||w|| + hx_t ||dw||
            (Cauchy-Schwarz, rounding errors known; inputs that would be subnormal in bfloat16 are
            zero in xh, wh, as the GEMM flushes them, and in dx, dw at their full value)
        float32 sums, in any order, of xh.wh and of x.w + b:
            gamma (||xh|| ||wh|| + ||x|| ||w||) <= gamma (hx_t ||wh|| + (hx_t + dx_t) ||w||),
            gamma = 1.01 d 2^-24
        the bfloat16 output: 2^-8 / (1 - 2^-8) |approx|;
        adding the bias in float32: 2^-23 (|approx| + |b|); products flushed below the smallest
        normal float32, at most d 2^-126 in all: under the 1e-30 of ``C``

    so ``e = dx_t A_i + hx_t B_i + D |approx| + C_i`` with ``A = (1 + gamma) ||w||``, ``B = ||dw||
    + gamma (||wh|| + ||w||)``, ``D = 2^-8 / (1 - 2^-8) + 2^-23`` and ``C = 2^-23 |b| + 1e-30``.
    """

    x: torch.Tensor
    x_bf: torch.Tensor
    dx: np.ndarray
    hx: np.ndarray
    x_sum: torch.Tensor | None
    far: np.ndarray
    rest: tuple[float, float]
    wt: torch.Tensor
    wt_bf: torch.Tensor
    A: np.ndarray
    B: np.ndarray
    C: np.ndarray
    bias: np.ndarray

    @classmethod
    def tokens(cls, x: torch.Tensor, kernel: bool = True, x_sum: bool = True) -> dict[str, object]:
        """The token half, computed once for every block; ``far``: the :data:`OUTLIERS` tokens of
        largest ``dx`` and of largest ``hx`` (sorted ids), ``rest``: the largest ``dx`` and ``hx``
        of the others. ``kernel``: :func:`_norms` by numba (False: torch, which compiles
        nothing); ``x_sum``: whether to sum the inputs (only :meth:`totals` reads it; None
        without)."""
        x_bf, dx, hx = _norms(x, kernel=kernel)
        far = np.union1d(np.argsort(-dx)[:OUTLIERS], np.argsort(-hx)[:OUTLIERS])
        others = np.ones(len(dx), dtype=bool)
        others[far] = False
        rest = (float(dx[others].max()), float(hx[others].max())) if others.any() else (0.0, 0.0)
        return {
            "x": x,
            "x_bf": x_bf,
            "dx": dx,
            "hx": hx,
            "x_sum": x.sum(0, dtype=torch.float64) if x_sum else None,
            "far": far,
            "rest": rest,
        }

    @classmethod
    def block(
        cls, tok: dict[str, object], W_blk: torch.Tensor, bias: torch.Tensor, kernel: bool = True
    ) -> ScreenInputs:
        """``W_blk`` ``[d, F]``: the block's encoder columns; ``bias`` ``[F]``."""
        wt = W_blk.T.contiguous()
        wt_bf, dw, hw = _norms(wt, kernel=kernel)
        gamma = 1.01 * W_blk.shape[0] * 2.0**-24
        norm_w = wt.double().norm(dim=1).numpy() * (1 + 1e-6)
        b = bias.double().numpy()
        return cls(
            **tok,
            wt=wt,
            wt_bf=wt_bf,
            A=(1 + gamma) * norm_w,
            B=dw + gamma * (hw + norm_w),  # type: ignore[arg-type]
            C=2.0**-23 * np.abs(b) + 1e-30,
            bias=b,
        )

    def totals(self, f0: int, f1: int) -> np.ndarray:
        """``sum_t a[t, f]`` for features ``f0..f1-1`` of the block, in float64 from the token
        inputs' sum."""
        assert self.x_sum is not None, "made with x_sum=False"
        return (self.wt[f0:f1].double() @ self.x_sum).numpy() + self.x.shape[0] * self.bias[f0:f1]

    def bound(
        self, f0: int, f1: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The bound's arrays for features ``f0..f1-1``: ``dx, hx, A, B, C``."""
        return self.dx, self.hx, self.A[f0:f1], self.B[f0:f1], self.C[f0:f1]

    def token_terms(self, f0: int, f1: int) -> np.ndarray:
        """Per feature ``f0..f1-1``, at least the bound's token terms ``dx_t A + hx_t B + C`` of
        every token not in ``far`` (their largest ``dx`` and ``hx``; raised by 1e-12 for the float64
        rounding of this sum), so ``e <= that + D |approx|`` for each of those tokens."""
        dx_max, hx_max = self.rest
        return (dx_max * self.A[f0:f1] + hx_max * self.B[f0:f1] + self.C[f0:f1]) * (1 + 1e-12)


#: Floating-point liberties of sums whose bound allows any order (they may be reassociated, so they
# vectorise, and multiply-adds fused); no assumption about NaN or infinity.
_SUMS = {"reassoc", "contract"}

#: The bound's coefficient of ``|approx|`` (see :class:`ScreenInputs`).
D_REL = 2.0**-8 / (1 - 2.0**-8) + 2.0**-23


@no_type_check
def _bound(v, dx, hx, a, b, c):  # type: ignore[no-untyped-def]
    """The bound on ``|approx - a|`` at bfloat16 value ``v`` (see :class:`ScreenInputs`): scalars in
    the screen kernel (compiled, ``_err``), broadcast tensors in :func:`estimate_share`."""
    return dx * a + hx * b + D_REL * abs(v) + c


if HAVE_NUMBA:

    @intrinsic
    def _bf16(typingctx, bits):  # pragma: no cover - compiled
        """The float32 value of bfloat16 ``bits`` (a uint16): its bits shifted into a float32's
        upper half."""

        def codegen(context, builder, signature, args):
            wide = builder.shl(
                builder.zext(args[0], ir.IntType(32)), ir.Constant(ir.IntType(32), 16)
            )
            return builder.bitcast(wide, ir.FloatType())

        return types.float32(types.uint16), codegen

    _err = njit(cache=NUMBA_CACHE, boundscheck=False, nogil=True)(_bound)

    @njit(parallel=True, cache=NUMBA_CACHE, boundscheck=False, nogil=True, fastmath=_SUMS)
    @no_type_check
    def _norms_kernel(m, h, err, norm):  # pragma: no cover - compiled
        """:func:`_norms` for rows of ``m`` and their bfloat16 bits ``h`` (the subnormal ones set
        to +0 in place): float64 sums, in any order (the 1e-6 allows for it)."""
        tiny = np.float32(np.finfo(np.float32).tiny)
        for r in prange(m.shape[0]):
            se = 0.0
            sn = 0.0
            for k in range(m.shape[1]):
                v32 = _bf16(h[r, k])
                if abs(v32) < tiny:
                    v32 = np.float32(0.0)
                    h[r, k] = 0
                v = float64(v32)
                e = float64(m[r, k]) - v
                se += e * e
                sn += v * v
            err[r] = np.sqrt(se) * (1 + 1e-6)
            norm[r] = np.sqrt(sn) * (1 + 1e-6)

    @njit(cache=NUMBA_CACHE, boundscheck=False, nogil=True)
    @no_type_check
    def _v_floor(low, terms):  # pragma: no cover - compiled
        """A float32 ``v0`` such that every bfloat16 value ``v < v0`` has ``v + e < low`` for
        every token whose terms of the bound are at most ``terms`` (``e <= terms + D |v|``;
        ``v + D |v|`` increases with ``v``), with room for the float64 rounding of ``e`` and of the
        sum (a relative 1e-9 of ``low`` and ``terms``, and 2^-22 of ``v0`` for its own rounding to
        float32); -inf where ``low`` or ``terms`` is not a number (every value tested in full)."""
        y = low - 1e-9 * (abs(low) + terms) - terms
        v = y / (1.0 + D_REL) if y >= 0.0 else y / (1.0 - D_REL)
        r = float32(v - abs(v) * 2.0**-22 - 1e-37)
        if r != r:
            return float32(-np.inf)
        return r

    @njit(parallel=True, cache=NUMBA_CACHE, boundscheck=False, nogil=True)
    @no_type_check
    def _screen_kernel(
        approx, dx, hx, A, B, C, floor, terms, far, tile, cand_t, cand_n, sure, band_t, band_n
    ):  # pragma: no cover
        """Candidates of each feature ``i`` (a column of ``approx``, bfloat16 bits ``[T, F]``,
        token-major): tokens with ``approx + e >= floor[i]`` (``floor = row0 - bias``), in token
        order; ``sure[i]``: the largest lower bound ``approx - e`` among the others;
        ``band_t[i, :band_n[i]]``: the others whose upper bound reached the largest lower bound met
        so far (a superset, in token order, of those that may be the largest screened value: the
        running bound only grows).

        A value does none of these when ``approx + e`` is below both ``floor`` and the running
        lower bound; for a token not in ``far`` (a bool per token) that holds below ``_v_floor`` of
        their minimum and ``terms[i]`` (:meth:`ScreenInputs.token_terms`): one float32 compare for
        each value of a row (vectorised), the values that pass it gathered with no branch, and
        only those tested in float64, as written above (on the GPT-2 stand-in about 9% of them; 1.2
        s for its whole screen against 2.0 s testing every value in float64). The threads take
        ``tile`` features at a time, each reading them row by row."""
        T, F = approx.shape
        for w in prange((F + tile - 1) // tile):
            f0 = w * tile
            nf = min(tile, F - f0)
            n = np.zeros(nf, np.int64)
            m = np.zeros(nf, np.int64)
            lower = np.full(nf, -np.inf)
            v0 = np.full(nf, -np.inf, np.float32)
            hit = np.zeros(nf, np.uint8)
            idx = np.zeros(nf, np.int64)
            for t in range(T):
                full = far[t]
                dxt = dx[t]
                hxt = hx[t]
                row = approx[t, f0 : f0 + nf]
                for c in range(nf):  # the first test: no branch (vectorised)
                    hit[c] = _bf16(row[c]) >= v0[c]
                k = 0
                for c in range(nf):  # the values to test in full, with no branch on the data
                    idx[k] = c
                    k += hit[c] | full
                for q in range(k):
                    c = idx[q]
                    i = f0 + c
                    v = float64(_bf16(row[c]))
                    e = _err(v, dxt, hxt, A[i], B[i], C[i])
                    if v + e >= floor[i]:
                        cand_t[i, n[c]] = t
                        n[c] += 1
                        continue
                    if v - e > lower[c]:
                        lower[c] = v - e
                        v0[c] = _v_floor(min(floor[i], lower[c]), terms[i])
                    if v + e >= lower[c]:
                        band_t[i, m[c]] = t
                        m[c] += 1
            for c in range(nf):
                cand_n[f0 + c] = n[c]
                sure[f0 + c] = lower[c]
                band_n[f0 + c] = m[c]

    @njit(cache=NUMBA_CACHE, boundscheck=False, nogil=True, fastmath=_SUMS)
    @no_type_check
    def _dots(x, wt, i, cand, j, n, bias, vals):  # pragma: no cover
        """``vals[i, j..j+n-1]``: ``x[cand[j..]] . wt[i] + bias[i]`` (``n`` at most 4: one load of
        ``wt[i]`` serves them all), summed in the working precision as a GEMM would (in any order:
        the screen's bound allows for it). The zero is of the input's type: ``x * 0`` (an integer)
        is float64 in numba, which summed float32 products in float64, 1.7x as long; and no element
        of ``x`` enters it (an infinite one made the other three sums NaN)."""
        t0 = cand[j]
        t1 = cand[j + min(1, n - 1)]
        t2 = cand[j + min(2, n - 1)]
        t3 = cand[j + min(3, n - 1)]
        z = x.dtype.type(0)
        s0, s1, s2, s3 = z, z, z, z
        for k in range(x.shape[1]):
            w = wt[i, k]
            s0 += x[t0, k] * w
            s1 += x[t1, k] * w
            s2 += x[t2, k] * w
            s3 += x[t3, k] * w
        b = bias[i]
        vals[i, j] = s0 + b
        if n > 1:
            vals[i, j + 1] = s1 + b
        if n > 2:
            vals[i, j + 2] = s2 + b
        if n > 3:
            vals[i, j + 3] = s3 + b

    @njit(parallel=True, cache=NUMBA_CACHE, boundscheck=False, nogil=True)
    @no_type_check
    def _exact_kernel(x, wt, bias, cand_t, cand_n, vals):  # pragma: no cover
        """``vals[i, j]``: the exact token part of candidate ``j`` of feature ``i``. Tokens go in
        runs of TOP_RUN per thread, each run in steps of EXACT_RUN rows read by every feature while
        they are in cache."""
        F = cand_t.shape[0]
        T = x.shape[0]
        for run in prange((T + TOP_RUN - 1) // TOP_RUN):
            r0 = run * TOP_RUN
            cur = np.empty(F, np.int64)
            for i in range(F):
                cur[i] = np.searchsorted(cand_t[i, : cand_n[i]], r0)
            for s0 in range(r0, min(T, r0 + TOP_RUN), EXACT_RUN):
                s1 = min(T, s0 + EXACT_RUN)
                for i in range(F):
                    j = cur[i]
                    e = j
                    while e < cand_n[i] and cand_t[i, e] < s1:
                        e += 1
                    while j < e:
                        _dots(x, wt, i, cand_t[i], j, min(4, e - j), bias, vals)
                        j += 4
                    cur[i] = e

    @njit(cache=NUMBA_CACHE, boundscheck=False, nogil=True)
    @no_type_check
    def _fill_zeros(topv, topi, tmin, nxt, stop):  # pragma: no cover
        """Push tokens ``nxt .. stop-1`` (none of them a candidate: each sums to 0) into a top list
        that is not full (``tmin < 0``), in token order, as the dense path meets them; returns the
        new ``tmin``."""
        while tmin < 0.0 and nxt < stop:
            tmin = _push_top(topv, topi, 0.0, nxt)
            nxt += 1
        return tmin

    @njit(parallel=True, cache=NUMBA_CACHE, boundscheck=False, nogil=True)
    @no_type_check
    def _sparse_bucket_kernel(
        f0, T, cand_t, cand_n, vals, s, pb, shift, acc, topv, topi, lo_c
    ):  # pragma: no cover
        """The dense kernel's buckets and top tokens over the candidates alone (every other token
        fires nowhere), in runs with no branch on the data, as the dense kernel's busy runs (many
        candidates fire, at random)."""
        F = cand_t.shape[0]
        P = s.shape[1]
        for i in prange(F):
            f = f0 + i
            tab = _padded_table(s[f], CELLS_PER_THRESHOLD * P)
            loc = np.zeros(
                (P + 1 + SPARE) * 4
            )  # as in the dense kernel: the spare rows take the stores of candidates that do not fire
            lob = np.empty(RUN, np.int32)
            pbf, sh = pb[f], shift[f]
            tmin = topv[f, topv.shape[1] - 1]
            # the first token not yet met (for the zero-sum tail of the top list); int64 tokens, not
            # a literal or int32: each would compile the callees again
            nxt = np.int64(0)
            fired = 0.0
            for j0 in range(0, cand_n[i], RUN):
                m = min(RUN, cand_n[i] - j0)
                _buckets_of(vals[i, j0 : j0 + m], m, tab, lob)
                for k in range(m):
                    t = np.int64(cand_t[i, j0 + k])
                    if tmin < 0.0:
                        tmin = _fill_zeros(topv[f], topi[f], tmin, nxt, t)
                    nxt = t + 1
                    lo = uint64(lob[k])
                    w = float64(vals[i, j0 + k])
                    u = w - sh
                    z = lo == 0
                    fired += 0.0 if z else 1.0
                    _tally(loc, uint64(P + 1 + (k & (SPARE - 1))) if z else lo, u)
                    lo_c[i, j0 + k] = lo
                    ts = pbf[lo] + (0.0 if z else float64(lo) * w)
                    if ts > tmin:
                        tmin = _push_top(topv[f], topi[f], ts, t)
            if tmin < 0.0:
                tmin = _fill_zeros(topv[f], topi[f], tmin, nxt, T)
            _add_buckets(acc, f, loc)
            acc[f, 0, 0] += T - fired

    @njit(parallel=True, cache=NUMBA_CACHE, boundscheck=False, nogil=True)
    @no_type_check
    def _below_candidates(
        approx,
        dx,
        hx,
        A,
        B,
        C,
        bias,
        lim,
        floor,
        sure,
        f0,
        cand_t,
        cand_n,
        vals,
        band_t,
        band_n,
        below_v,
        below_i,
    ):  # pragma: no cover
        """Each feature's largest token part at or below ``lim`` among its candidates (exact values
        known; the first token among ties) into ``below_v``/``below_i``. Every other token lies
        below ``floor`` (``row0 - bias``), so when that value reaches it, it is the answer
        (``band_n`` set to 0); else the answer may be a screened token, and the screen's band is cut
        to those that may be it (not surely below the larger of that value and ``sure``), in
        place."""
        for i in prange(cand_t.shape[0]):
            f = f0 + i
            best = below_v[f]
            besti = below_i[f]
            for j in range(cand_n[i]):
                w = vals[i, j]
                if w <= lim[f] and w > best:
                    best = w
                    besti = cand_t[i, j]
            below_v[f] = best
            below_i[f] = besti
            n = 0
            if float64(best) - bias[i] < floor[i]:
                low = max(sure[i], float64(best) - bias[i])
                for j in range(band_n[i]):
                    t = band_t[i, j]
                    v = float64(_bf16(approx[t, i]))
                    if v + _err(v, dx[t], hx[t], A[i], B[i], C[i]) >= low:
                        band_t[i, n] = t
                        n += 1
            band_n[i] = n

    @njit(parallel=True, cache=NUMBA_CACHE, boundscheck=False, nogil=True)
    @no_type_check
    def _below_pick(band_t, band_n, vals, lim, f0, below_v, below_i):  # pragma: no cover
        """Fold the band's exact values into each feature's largest value at or below ``lim`` (the
        first token among ties)."""
        for i in prange(band_t.shape[0]):
            best = below_v[f0 + i]
            besti = below_i[f0 + i]
            for j in range(band_n[i]):
                w = vals[i, j]
                t = band_t[i, j]
                if w <= lim[f0 + i] and (w > best or (w == best and t < besti)):
                    best = w
                    besti = t
            below_v[f0 + i] = best
            below_i[f0 + i] = besti

    @njit(parallel=True, cache=NUMBA_CACHE, boundscheck=False, nogil=True)
    @no_type_check
    def _sparse_top_kernel(
        cand_t, cand_n, vals, lo_c, T, g0, pb, pb2, topv, topi, topvar
    ):  # pragma: no cover
        """:func:`posfeat.engine.kernel.token_top_merge` over the candidates (the others fire
        nowhere)."""
        F = cand_t.shape[0]
        P = pb.shape[1] - 1
        for run in prange((T + TOP_RUN - 1) // TOP_RUN):
            r0 = run * TOP_RUN
            for i in range(F):
                j = np.searchsorted(cand_t[i, : cand_n[i]], r0)
                while j < cand_n[i] and cand_t[i, j] < r0 + TOP_RUN:
                    n = lo_c[i, j]
                    _merge_token(
                        topv,
                        topi,
                        topvar,
                        cand_t[i, j],
                        g0 + i,
                        n,
                        float64(vals[i, j]),
                        pb[i, n],
                        pb2[i, n],
                        P,
                    )
                    j += 1


def tile_of(F: int, most: int = SCREEN_TILE) -> int:
    """Features (columns of a token-major bfloat16 product) per work item of a kernel that reads
    them row by row: ``most``, or fewer (a multiple of 32, one cache line of bfloat16, at least one
    line) so that every thread has one where ``F`` allows."""
    from numba import get_num_threads

    per_thread = -(-F // get_num_threads())
    return max(32, min(most, 32 * -(-per_thread // 32)))


@dataclass
class Screened:
    """One sub-block through the screen: the bfloat16 token parts (``uint16`` bits ``[T, F]``), the
    candidates ``cand_t`` (tokens in order, ``cand_n`` per feature) and their exact values ``vals``;
    per feature the largest lower bound among the screened tokens ``sure``, and the band of screened
    tokens that may be the largest (``band_t``, ``band_n``)."""

    bits: np.ndarray
    cand_t: np.ndarray
    cand_n: np.ndarray
    vals: np.ndarray
    sure: np.ndarray
    band_t: np.ndarray
    band_n: np.ndarray


class Screen:
    """The screen of one :func:`~posfeat.engine.grid_stats.grid_statistics` call: the token half of
    its inputs, buffers kept for every sub-block, and the share of candidates so far."""

    def __init__(self, x: torch.Tensor) -> None:
        self.tok = ScreenInputs.tokens(x)
        self.far = np.zeros(x.shape[0], dtype=np.bool_)  # the screen kernel's tokens tested in full
        self.far[self.tok["far"]] = True
        self.seen = 0
        self.candidates = 0
        self.block: ScreenInputs | None = None
        self._bufs: dict[str, np.ndarray] = {}

    def share(self) -> float:
        """Candidates per token value screened so far."""
        return self.candidates / self.seen if self.seen else float("nan")

    def set_block(self, W_blk: torch.Tensor, bias: torch.Tensor) -> None:
        self.block = ScreenInputs.block(self.tok, W_blk, bias)

    def _buf(self, name: str, shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
        b = self._bufs.get(name)
        if b is None or b.dtype != dtype or b.size < shape[0] * shape[1]:
            b = self._bufs[name] = np.empty(shape[0] * shape[1], dtype)
        return b[: shape[0] * shape[1]].reshape(shape)

    def candidates_of(self, f0: int, f1: int, row0: np.ndarray) -> Screened:
        """Screen features ``f0..f1-1`` of the block (``row0``: their lowest thresholds)
        (:class:`Screened`). The bfloat16 product is token-major (``[T, F]``): on AMX twice as fast
        as the feature-major one (0.9 s against 2.0 s on the GPT-2 stand-in)."""
        blk = self.block
        assert blk is not None
        T, F = blk.x.shape[0], f1 - f0
        approx = torch.from_numpy(self._buf("approx", (T, F), np.dtype(np.int16))).view(
            torch.bfloat16
        )
        torch.mm(blk.x_bf, blk.wt_bf[f0:f1].T, out=approx)
        bits = approx.view(torch.int16).numpy().view(np.uint16)
        cand_t, cand_n = self._buf("cand_t", (F, T), np.dtype(np.int32)), np.empty(F, np.int64)
        sure, band_t, band_n = (
            np.empty(F),
            self._buf("band_t", (F, T), np.dtype(np.int32)),
            np.empty(F, np.int64),
        )
        _screen_kernel(
            bits,
            *blk.bound(f0, f1),
            np.asarray(row0, np.float64) - blk.bias[f0:f1],
            blk.token_terms(f0, f1),
            self.far,
            tile_of(F),
            cand_t,
            cand_n,
            sure,
            band_t,
            band_n,
        )
        self.seen += F * T
        self.candidates += int(cand_n.sum())
        vals = self._buf("vals", (F, T), np.dtype(blk.x.numpy().dtype))
        _exact_kernel(blk.x.numpy(), blk.wt.numpy()[f0:f1], blk.bias[f0:f1], cand_t, cand_n, vals)
        return Screened(bits, cand_t, cand_n, vals, sure, band_t, band_n)

    def below(
        self,
        f0: int,
        f1: int,
        found: Screened,
        floor: np.ndarray,
        lim: np.ndarray,
        out: dict[str, np.ndarray],
    ) -> None:
        """Each feature's largest token part at or below ``lim`` (``out["below_val"]``,
        ``out["below_idx"]``), from the
        candidates' exact values (``found``: :meth:`candidates_of`'s result) and exact values of the
        screened tokens that may be it."""
        blk = self.block
        assert blk is not None
        F, T = f1 - f0, blk.x.shape[0]
        band_t, band_n = found.band_t, found.band_n
        _below_candidates(
            found.bits,
            *blk.bound(f0, f1),
            blk.bias[f0:f1],
            lim,
            floor,
            found.sure,
            f0,
            found.cand_t,
            found.cand_n,
            found.vals,
            band_t,
            band_n,
            out["below_val"],
            out["below_idx"],
        )
        if band_n.any():
            band_v = self._buf("band_v", (F, T), found.vals.dtype)
            _exact_kernel(
                blk.x.numpy(), blk.wt.numpy()[f0:f1], blk.bias[f0:f1], band_t, band_n, band_v
            )
            _below_pick(band_t, band_n, band_v, lim, f0, out["below_val"], out["below_idx"])

    def lo_buffer(self, F: int, T: int) -> np.ndarray:
        return self._buf("lo", (F, T), np.dtype(np.int32))


def screened_sums(
    screen: Screen,
    f0: int,
    f1: int,
    preps: list[dict[str, torch.Tensor]],
    lims: list[torch.Tensor | None],
    shift: np.ndarray,
    outs: list[dict[str, np.ndarray] | None],
    top_k: int,
    token_top: tuple[Any, int] | None,
    hist: tuple[Any, int, torch.Tensor, torch.Tensor] | None = None,
) -> None:
    """Features ``f0..f1-1`` of the block through the screen into ``outs`` (one per position set,
    made when None), as :func:`posfeat.engine.kernel.bucket_sums` would fill them from the dense
    token parts; updates ``token_top``; gives ``hist`` (``(collector, g0, b, cut)``, see
    :func:`~posfeat.engine.additive.additive_blocks`) the candidates."""
    blk = screen.block
    assert blk is not None
    T = blk.x.shape[0]
    row0 = np.min([p["s"][f0:f1, 0].double().numpy() for p in preps], axis=0)
    found = screen.candidates_of(f0, f1, row0)
    cand_t, cand_n, vals = found.cand_t, found.cand_n, found.vals
    if hist is not None:
        col, g0, b0, c0 = hist
        col.screened(g0 + f0, cand_t, cand_n, vals, b0[f0:f1], c0[f0:f1])
    lo_c = screen.lo_buffer(f1 - f0, T)
    totals = blk.totals(f0, f1)
    for i, (prep, lim) in enumerate(zip(preps, lims)):
        FB, P = prep["s"].shape
        out = outs[i] = outs[i] if outs[i] is not None else new_sums(FB, P, T, max(top_k, 1), False)
        pb = prep["pb"].numpy()
        _sparse_bucket_kernel(
            f0,
            T,
            cand_t,
            cand_n,
            vals,
            prep["s"].numpy(),
            pb,
            shift,
            out["acc"],
            out["top_val"],
            out["top_idx"],
            lo_c,
        )
        acc = out["acc"][f0:f1]
        acc[:, 0, 1] = (
            totals - T * shift[f0:f1] - acc[:, 1:, 1].sum(1)
        )  # every token's shifted value, through the sum of the inputs
        if lim is not None:
            screen.below(f0, f1, found, row0 - blk.bias[f0:f1], lim.numpy(), out)
        if i == 0 and token_top is not None:
            top, g0 = token_top
            _sparse_top_kernel(
                cand_t,
                cand_n,
                vals,
                lo_c,
                T,
                g0 + f0,
                pb[f0:f1],
                prep["pb2"].numpy()[f0:f1],
                top.mean,
                top.feature,
                top.var,
            )


@functools.cache
def bf16_fast() -> bool:
    """Whether this CPU multiplies bfloat16 natively (``avx512_bf16`` or ``amx_bf16`` in
    ``/proc/cpuinfo``): where it does not, a bfloat16 GEMM is no faster than the fp32 one and the
    screen is not used unless asked for."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def estimate_share(
    x: torch.Tensor, W: torch.Tensor, bias: torch.Tensor, row0: torch.Tensor, seed: int = 0
) -> float:
    """The share of candidates among a seeded sample of :data:`ESTIMATE_TOKENS` of the token inputs
    ``x`` ``[n_tok, d]``, for the features whose encoder columns are ``W`` ``[d, F]`` (biases
    ``bias``, lowest thresholds ``row0``)."""
    idx = (
        torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:ESTIMATE_TOKENS]
        .sort()
        .values
    )
    tok = ScreenInputs.tokens(x[idx], kernel=False)  # torch: a dense SAE compiles no kernel
    blk = ScreenInputs.block(tok, W, bias, kernel=False)
    approx = torch.mm(blk.x_bf, blk.wt_bf.T).T.double()  # [F, n], the kernel's product, in float64
    F, n = approx.shape
    dx, hx, A, B, C = (torch.from_numpy(np.asarray(v, np.float64)) for v in blk.bound(0, F))
    # the screen kernel's test through its own bound, in torch (the same float64 operations in
    # the same order): a dense SAE's first run after an install then compiles no screen kernel
    e = _bound(approx, dx[None, :], hx[None, :], A[:, None], B[:, None], C[:, None])
    floor = torch.from_numpy(row0.double().numpy() - blk.bias)
    return float((approx + e >= floor[:, None]).sum()) / (F * n)
