"""Exact activation histograms and top inputs of features over the whole grid ``tokens x
positions``.

For a separable SAE (ReLU, JumpReLU) feature ``f`` fires on token ``t`` at position ``p`` with
activation ``pre = a[t] + b[p]`` when ``pre > cut`` (:mod:`posfeat.engine.grid_stats`). So the
number of inputs of the grid whose activation exceeds ``e`` is::

    n_gt(e) = sum over positions p of #{t : a[t] > e - b[p]}

one binary search of ``e - b[p]`` in the feature's sorted token values per position. With ``bins``
equal-width bins ``(e_k, e_k+1]`` over ``(0, max]`` (``max = max a + max b``, the largest activation
on the grid), a bin's count is ``n_gt(max(e_k, cut)) - n_gt(e_k+1)``: exact over all ``n_tok x
n_pos`` inputs at the cost of one GEMM, one sort of each feature's ``n_tok`` token values and
``n_pos x (bins + 1)`` searches per feature, never enumerating the grid. The strongest ``k`` inputs
of the grid are among the pairs of the ``k`` largest ``a`` and the ``k`` largest ``b`` (any other
pair is beaten by ``k`` of those), so they come from ``k x k`` sums. Results are CPU numpy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import no_type_check

import numpy as np
import torch

from ..core.embeddings import Embeddings
from ..core.errors import PosfeatError
from ..core.progress import progress_bar
from ..core.sae import SAE
from ..core.tensors import to_numpy
from .indices import check_pair
from .kernel import HAVE_NUMBA, NUMBA_CACHE

if HAVE_NUMBA:
    from numba import njit, prange

#: bins of the activation histogram; strongest inputs kept per feature
HIST_BINS = 20
TOP_INPUTS = 10
_CHUNK_ELEMENTS = 1 << 25  # token values sorted at a time (float32): about 128 MB


@dataclass(eq=False)
class ActivationHistograms:
    """Each feature's exact activation histogram over the grid and its strongest inputs (CPU numpy).

    Attributes:
        positions: ``[n_pos]`` positions of the grid (``0..context-1`` for the card).
        n_tok: tokens of the grid (the whole vocabulary).
        counts: ``int64 [d_sae, bins]``: inputs whose activation lies in bin ``k``, ``(k w, (k+1)
            w]`` with ``w = max_activation / bins``; inputs where the feature does not fire
            (activation 0) are not in any bin.
        max_activation: ``float64 [d_sae]``: the largest activation on the grid (0 where the feature
            never fires).
        firing: ``int64 [d_sae]``: inputs where the feature fires (``counts.sum(1)``).
        top_tokens, top_positions: ``int64 [d_sae, k]``: the ``k`` strongest inputs, strongest
            first.
        top_values: ``float64 [d_sae, k]``: their activations (0 where fewer than ``k`` inputs fire;
            those entries' token and position are -1).
    """

    positions: np.ndarray
    n_tok: int
    counts: np.ndarray
    max_activation: np.ndarray
    firing: np.ndarray
    top_tokens: np.ndarray
    top_positions: np.ndarray
    top_values: np.ndarray

    @property
    def bins(self) -> int:
        return int(self.counts.shape[1])

    @property
    def grid_size(self) -> int:
        return int(self.n_tok * len(self.positions))

    def edges(self, feature: int) -> np.ndarray:
        """``[bins + 1]`` bin edges of one feature's histogram."""
        return np.linspace(0.0, float(self.max_activation[feature]), self.bins + 1)


if HAVE_NUMBA:

    @njit(parallel=True, cache=NUMBA_CACHE, boundscheck=False, nogil=True)
    @no_type_check
    def _pair_counts(a, n, b, lower, out):  # pragma: no cover - compiled
        """``out[f, j] = sum_p #{t < n[f] : a[f, t] > lower[f, j] - b[f, p]}`` (the difference in
        float32, as :func:`_block`'s queries): ``a[f, :n[f]]`` sorted ascending (NaNs last, never
        above a query), ``b[f]`` descending, so each edge's queries ascend with ``p`` and the first
        value above them only moves right: one binary search for the first position, then one
        pointer over ``a`` (the positions stop at the first query at or above the largest value).
        NaN queries count nothing, as ``>`` says."""
        P = b.shape[1]
        J = lower.shape[1]
        for f in prange(a.shape[0]):
            nv = n[f]
            while nv > 0 and a[f, nv - 1] != a[f, nv - 1]:
                nv -= 1
            if nv == 0:  # no value: nothing counts
                out[f, :] = 0
                continue
            for j in range(J):
                e = lower[f, j]
                total = 0
                lo = -1
                for p in range(P):
                    q = e - b[f, p]
                    if q != q:
                        continue
                    if q >= a[f, nv - 1]:
                        break
                    if lo < 0:  # the first query: a binary search for the first value above it
                        lo, hi = 0, nv
                        while lo < hi:
                            mid = (lo + hi) >> 1
                            if a[f, mid] <= q:
                                lo = mid + 1
                            else:
                                hi = mid
                    else:  # below a[nv - 1]: stops there at the latest
                        while a[f, lo] <= q:
                            lo += 1
                    total += nv - lo
                out[f, j] = total

    @njit(parallel=True, cache=NUMBA_CACHE, boundscheck=False, nogil=True)
    @no_type_check
    def _gt_counts(a, q, out):  # pragma: no cover - compiled
        """``out[f, j] = #{t : a[f, t] > q[f, j]}`` for each feature's sorted queries ``q[f]`` (NaNs
        last; they count nothing, as ``>`` says): one compare for a token below every query (nearly
        all, for a sparse feature; a NaN value is above none), a binary search for the others."""
        F, V = a.shape
        Q = q.shape[1]
        for f in prange(F):
            n_q = Q
            while n_q > 0 and q[f, n_q - 1] != q[f, n_q - 1]:
                n_q -= 1
            out[f, n_q:] = 0
            if n_q == 0:
                continue
            hist = np.zeros(n_q + 1, np.int64)
            q0 = q[f, 0]
            for t in range(V):
                v = a[f, t]
                if not v > q0:
                    continue
                lo, hi = 1, n_q
                while lo < hi:  # lo: how many queries lie below v
                    mid = (lo + hi) >> 1
                    if q[f, mid] < v:
                        lo = mid + 1
                    else:
                        hi = mid
                hist[lo] += 1
            total = 0
            for j in range(n_q - 1, -1, -1):
                total += hist[j + 1]
                out[f, j] = total

    @njit(cache=NUMBA_CACHE, boundscheck=False, nogil=True)
    @no_type_check
    def _above(v, w):  # pragma: no cover - compiled
        """``v`` ranks above ``w`` as ``torch.topk`` ranks them: larger, NaN above any number."""
        return v > w or (v != v and w == w)

    @njit(parallel=True, cache=NUMBA_CACHE, boundscheck=False, nogil=True)
    @no_type_check
    def _live_tops(vals, live, k, rows, top_v, top_s):  # pragma: no cover - compiled
        """Each row's live values ``vals[f, :live[f]]`` copied into ``rows[f, :live[f]]`` (the rest
        of ``rows`` is not written) and their ``k`` largest into ``top_v[f]`` with their slots in
        ``top_s[f]``, largest first, equal values by slot (NaN above every number, as
        ``torch.topk``); a row of fewer than ``k`` is filled with -inf at slot -1."""
        for f in prange(live.shape[0]):
            n = live[f]
            tv = top_v[f]
            ts = top_s[f]
            c = 0
            for j in range(n):
                v = vals[f, j]
                rows[f, j] = v
                if c == k and not _above(v, tv[k - 1]):
                    continue
                m = min(c, k - 1)
                while m > 0 and _above(v, tv[m - 1]):
                    tv[m] = tv[m - 1]
                    ts[m] = ts[m - 1]
                    m -= 1
                tv[m] = v
                ts[m] = j
                c = min(c + 1, k)
            for j in range(c, k):
                tv[j] = -np.inf
                ts[j] = -1


def _edge_counts(
    a: torch.Tensor, b: torch.Tensor, lower: torch.Tensor, live: np.ndarray | None = None
) -> torch.Tensor:
    """``[F, E]``: how many inputs ``(t, p)`` of each feature have ``a[f, t] > lower[f, j] - b[f,
    p]`` (the difference in float32): ``a [F, n_tok]`` token values, ``b [F, n_pos]`` position
    values, ``lower [F, E]`` edges; ``live``: where only ``a[f, :live[f]]`` count (the screen's
    candidates; the rest of each row is padding), and ``a`` is the caller's scratch: those values
    are sorted in place.

    On the CPU with numba, for the screen's candidates (``live``) or fewer token values than queries
    (positions x edges): each row's values sorted (numpy; with ``live`` one row at a time, in place:
    the rows' lengths differ up to a hundredfold) and its positions, and each edge's queries walked
    with one pointer (:func:`_pair_counts`; on the GPT-2 stand-in 0.5 s in all, against 2.6 s for
    searching each value among the sorted queries); else each value is searched among the feature's
    sorted queries (:func:`_gt_counts`: nearly every token of a dense block is below them all, one
    compare). Elsewhere (a GPU) each feature's token values are sorted and each query searched.
    Counts are whole numbers: the same on every path."""
    F, n_pos, E = len(a), b.shape[1], lower.shape[1]
    if HAVE_NUMBA and a.device.type == "cpu":
        out = np.empty((F, E), np.int64)
        a_np = a.contiguous().numpy()
        if live is not None or a.shape[1] <= n_pos * E:
            if live is None:
                n, srt = np.full(F, a.shape[1], np.int64), np.sort(a_np, axis=1)
            else:  # the caller's scratch: each row's values sorted in place
                n, srt = np.asarray(live, np.int64), a_np
                for f in range(F):
                    srt[f, : n[f]].sort()
            b_desc = np.ascontiguousarray(np.sort(b.contiguous().numpy(), axis=1)[:, ::-1])
            _pair_counts(srt, n, b_desc, lower.numpy(), out)
            return torch.from_numpy(out)
        q_np = (lower[:, None, :] - b[:, :, None]).reshape(F, -1).numpy()
        order = np.argsort(q_np, axis=1)  # equal queries get equal counts in any order
        per_query = np.empty(q_np.shape, np.int64)
        _gt_counts(a_np, np.take_along_axis(q_np, order, 1), per_query)
        back = np.empty_like(per_query)
        np.put_along_axis(back, order, per_query, 1)
        return torch.from_numpy(back.reshape(F, n_pos, E).sum(1))
    queries = (lower[:, None, :] - b[:, :, None]).reshape(F, -1)  # [F, n_pos * E]
    srt_t = torch.sort(a, dim=1).values
    n_gt = a.shape[1] - torch.searchsorted(srt_t, queries.contiguous(), right=True)
    return n_gt.reshape(F, n_pos, E).sum(1)


def _block(
    a: torch.Tensor,
    b: torch.Tensor,
    cut: torch.Tensor,
    bins: int,
    k: int,
    live: np.ndarray | None = None,
    tops: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, ...]:
    """Histogram and top inputs of a block of features: ``a [F, n_tok]``, ``b [F, n_pos]``, ``cut
    [F]``; ``live``: where only ``a[f, :live[f]]`` are values (the rest -inf padding, or not read
    where ``tops`` is given), and ``a`` is the caller's scratch (its rows are sorted in place once
    the top inputs are taken); ``tops``: each row's ``min(k, n_tok)`` largest values and their
    columns, largest first, where the caller has them (:func:`_live_tops`). The top inputs always
    have ``k`` columns (blocks of any width concatenate)."""
    n_tok, n_pos = a.shape[1], b.shape[1]
    top_a, top_t = tops if tops is not None else torch.topk(a, min(k, n_tok), dim=1)
    top_b, top_p = torch.topk(b, min(k, n_pos), dim=1)
    hi = top_a[:, 0] + top_b[:, 0]
    top = torch.clamp(hi, min=0.0)
    frac = torch.arange(bins + 1, dtype=a.dtype, device=a.device) / bins
    edges = top[:, None] * frac[None, :]  # [F, bins + 1]
    edges[:, -1] = top  # the last edge is the maximum itself, not a rounding of it
    lower = torch.maximum(
        edges, cut[:, None]
    )  # a bin's lower edge never below the firing threshold
    n_gt = _edge_counts(a, b, lower, live)  # [F, bins + 1]: inputs above each lower edge
    counts = n_gt[:, :-1] - n_gt[:, 1:]
    counts[:, -1] += n_gt[:, -1]  # what rounding puts above the maximum belongs to the last bin
    fires = hi > cut
    counts = torch.where(fires[:, None], counts, torch.zeros_like(counts))
    sums = (top_a[:, :, None] + top_b[:, None, :]).reshape(len(a), -1)
    vals, flat = torch.topk(sums, min(k, sums.shape[1]), dim=1)
    toks = torch.gather(top_t, 1, flat // top_b.shape[1])
    poss = torch.gather(top_p, 1, flat % top_b.shape[1])
    pad = k - vals.shape[1]  # fewer inputs than k: -inf values (never firing), ids -1
    if pad > 0:
        vals = torch.nn.functional.pad(vals, (0, pad), value=-torch.inf)
        toks = torch.nn.functional.pad(toks, (0, pad), value=-1)
        poss = torch.nn.functional.pad(poss, (0, pad), value=-1)
    return counts, torch.where(fires, top, torch.zeros_like(top)), vals, toks, poss


def activation_histograms(
    emb: Embeddings,
    sae: SAE,
    positions: int,
    *,
    features: np.ndarray | None = None,
    bins: int = HIST_BINS,
    k: int = TOP_INPUTS,
    progress: bool = False,
) -> ActivationHistograms:
    """Exact histograms and top inputs over tokens x positions ``0..positions-1`` (see module
    docstring).

    ``features``: the features to compute (default all; the result's rows follow this order). Needs
    a separable SAE."""
    dev = check_pair(emb, sae)
    if not sae.separable:
        raise PosfeatError(
            f"{sae.name} is a {sae.architecture} SAE, whose activations do not split into token and "
            "position parts; "
            "its exact histograms would need the whole grid enumerated."
        )
    if not 1 <= positions <= emb.n_ctx:
        raise PosfeatError(f"positions must be 1..{emb.n_ctx}, not {positions}.")
    feats = (
        np.arange(sae.d_sae)
        if features is None
        else np.asarray(features, dtype=np.int64).reshape(-1)
    )
    x = emb.W_E.float()
    if sae.apply_b_dec_to_input:
        x = x - sae.b_dec.float()
    W_enc, b_enc, cut_all = sae.W_enc.float(), sae.b_enc.float(), sae.cut(torch.float32, dev)
    Wp = emb.W_pos[:positions].float()
    n_tok = emb.d_vocab
    chunk = max(1, min(len(feats), _CHUNK_ELEMENTS // max(1, n_tok)))
    parts: list[tuple[torch.Tensor, ...]] = []
    starts = range(0, len(feats), chunk)
    for s in progress_bar(
        starts, desc="card data: exact activation histograms", total=len(starts), enabled=progress
    ):
        idx = torch.as_tensor(feats[s : s + chunk], device=dev)
        W = W_enc[:, idx]
        # feature-major, as the engine's GEMM (the same dot products, bit for bit, with no
        # transposed copy of a block of the size of the vocabulary)
        a = torch.addmm(b_enc[idx][:, None], W.T, x.T)
        b = W.T @ Wp.T  # feature-major, as the engine's position parts
        parts.append(tuple(t.cpu() for t in _block(a, b, cut_all[idx], bins, k)))
        del a, b
    counts, top, vals, toks, poss = (
        torch.cat([p[i] for p in parts]) if parts else torch.zeros(0) for i in range(5)
    )
    return _assemble(
        counts,
        top,
        vals,
        toks,
        poss,
        to_numpy(cut_all[torch.as_tensor(feats, device=dev)]),
        k,
        positions,
        n_tok,
    )


def _assemble(
    counts: torch.Tensor,
    top: torch.Tensor,
    vals: torch.Tensor,
    toks: torch.Tensor,
    poss: torch.Tensor,
    cut: np.ndarray,
    k: int,
    positions: int,
    n_tok: int,
) -> ActivationHistograms:
    """:class:`ActivationHistograms` from the blocks' results (:func:`_block`), concatenated; ``cut``:
    the features' firing thresholds."""
    vals64 = to_numpy(vals, np.float64).reshape(len(cut), k)  # k columns (:func:`_block`)
    keep = vals64 > np.asarray(cut, np.float64)[:, None]
    top_tokens = np.where(keep, to_numpy(toks).reshape(vals64.shape), -1)
    top_positions = np.where(keep, to_numpy(poss).reshape(vals64.shape), -1)
    top_values = np.where(keep, vals64, 0.0)
    counts_np = to_numpy(counts).astype(np.int64)
    return ActivationHistograms(
        positions=np.arange(positions),
        n_tok=n_tok,
        counts=counts_np,
        max_activation=to_numpy(top, np.float64),
        firing=counts_np.sum(1),
        top_tokens=top_tokens.astype(np.int64),
        top_positions=top_positions.astype(np.int64),
        top_values=top_values,
    )


class CardHistograms:
    """The cards' histograms and top inputs (:class:`ActivationHistograms`) collected from the
    engine's pass over the context (:func:`~posfeat.engine.grid_stats.grid_statistics` with
    ``histograms=True``), from the token parts it computes anyway: on the dense path each
    sub-block's exact token parts, on the screened path each feature's candidates (a token that is
    not one provably fires at no position, so it adds to no bin and is no strongest input). What
    :func:`activation_histograms` gives without its own GEMM of the whole vocabulary."""

    def __init__(self, d_sae: int, n_tok: int, positions: int, cut: np.ndarray) -> None:
        self.n_tok, self.positions, self.cut = n_tok, positions, np.asarray(cut)
        self.parts: dict[int, tuple[torch.Tensor, ...]] = {}
        self.d_sae = d_sae
        self._a: np.ndarray | None = None  # the screened blocks' scratch

    def dense(self, g0: int, a: np.ndarray, b: torch.Tensor, cut: torch.Tensor) -> None:
        """Features ``g0..`` from their token parts ``a [F, n_tok]`` (float32, feature-major), their
        context's position parts ``b [F, context]`` and thresholds ``cut [F]``."""
        self.parts[g0] = _block(torch.from_numpy(a), b, cut, HIST_BINS, TOP_INPUTS)

    def screened(
        self,
        g0: int,
        cand_t: np.ndarray,
        cand_n: np.ndarray,
        vals: np.ndarray,
        b: torch.Tensor,
        cut: torch.Tensor,
    ) -> None:
        """Features ``g0..`` from their candidates: tokens ``cand_t[i, :cand_n[i]]`` with exact
        token parts ``vals[i, :cand_n[i]]``."""
        F, m = len(cand_n), max(1, int(cand_n.max(initial=0)))
        # one scratch for every block (fresh pages fault: 10 ms a block on a virtual machine)
        if self._a is None or self._a.dtype != vals.dtype or self._a.size < F * m:
            self._a = np.empty(F * m, vals.dtype)
        a_np = self._a[: F * m].reshape(F, m)
        tops = None
        if HAVE_NUMBA:
            # each row's live values and their top inputs in one parallel pass: the rows' counts
            # differ up to a hundredfold, so a rectangle padded to the longest (as torch.topk
            # needs) is mostly padding (on the GPT-2 stand-in 7x: 12 of 15 ms a block)
            k = min(TOP_INPUTS, m)
            top_v, top_s = np.empty((F, k), vals.dtype), np.empty((F, k), np.int64)
            _live_tops(vals, np.asarray(cand_n, np.int64), k, a_np, top_v, top_s)
            tops = (torch.from_numpy(top_v), torch.from_numpy(top_s))
        else:
            np.copyto(a_np, vals[:F, :m])
            for f in range(F):
                a_np[f, cand_n[f] :] = -np.inf  # the rest of a row never fires
        a = torch.from_numpy(a_np)
        counts, top, v, slot, poss = _block(a, b, cut, HIST_BINS, TOP_INPUTS, cand_n, tops)
        s_np = slot.numpy()
        toks = np.take_along_axis(cand_t[:F, :m], np.clip(s_np, 0, m - 1), 1).astype(np.int64)
        self.parts[g0] = (counts, top, v, torch.from_numpy(np.where(s_np >= 0, toks, -1)), poss)

    def result(self) -> ActivationHistograms | None:
        """Every feature's, or None where the pass did not give every block (another backend)."""
        starts = sorted(self.parts)
        n = sum(len(self.parts[g][1]) for g in starts)
        if n != self.d_sae:
            return None
        counts, top, vals, toks, poss = (
            torch.cat([self.parts[g][i] for g in starts]) for i in range(5)
        )
        return _assemble(
            counts, top, vals, toks, poss, self.cut, TOP_INPUTS, self.positions, self.n_tok
        )
