"""Activations and reconstructions on a stated token sample at every position, from the additive
parts.

What does not decompose feature by feature (the reconstruction mixes all features) is computed on a
seeded sample of tokens at every position. The encoder is never applied to an input: ``pre[t, p] =
a[t] + b[p]``. For a separable SAE each feature's sample values ``a`` are sorted once, so at
position ``p`` the tokens where a feature fires are a suffix of that order (those with ``a > cut -
b[p]``): counts (hence L0) come from one ``searchsorted`` per chunk, sparse chunks are decoded from
their non-zero entries alone, and dense ones (more than :data:`DENSE_FROM` non-zero) by one GEMM in
a reused buffer. TopK SAEs, whose activation couples features, are enumerated densely.

The tensors of a :class:`Chunk` live in buffers reused by the next chunk: use them before asking
for it (memory stays flat however many positions are studied).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import no_type_check

import numpy as np
import torch
from jaxtyping import Float, Int

from ..core.embeddings import Embeddings
from ..core.errors import PosfeatError, PosfeatTypeError
from ..core.sae import SAE
from .grid_stats import additive_parts, check_pair
from .kernel import HAVE_NUMBA, NUMBA_CACHE

if HAVE_NUMBA:  # numba is a dependency, but the torch paths work without it
    from numba import njit, prange

#: Decode densely when more than this share of activations in a chunk is non-zero.
DENSE_FROM = 0.03

#: Tokens sampled by default for everything measured on a token sample (analyze, eval, the sweeps):
# the one place it is written.
from .constants import SAMPLE_TOKENS  # noqa: E402,F401  (re-exported: the sample size used by default)


@dataclass
class TokenSample:
    """A seeded sample of token ids, and how it was drawn (recorded in every result)."""

    ids: torch.Tensor  # Int[Tensor, "n"] (on the CPU)
    how: str

    def __len__(self) -> int:
        return int(self.ids.numel())


def sample_tokens(
    emb: Embeddings,
    n: int,
    *,
    weights: Float[torch.Tensor, " d_vocab"] | Float[np.ndarray, " d_vocab"] | None = None,
    seed: int = 0,
) -> TokenSample:
    """``n`` token ids: drawn with replacement from ``weights`` when given, else uniformly without
    replacement."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise PosfeatTypeError(
            f"The token sample size is {n!r}; give a positive whole number of tokens."
        )
    if n <= 0:
        raise PosfeatError(
            f"The token sample size is {n!r}; give a positive whole number of tokens."
        )
    gen = torch.Generator().manual_seed(seed)
    if weights is not None:
        from ..io.tokens import check_token_weights

        w = check_token_weights(torch.as_tensor(weights), emb.d_vocab, "Token weights")
        ids = torch.multinomial(w.float() / float(w.sum()), int(n), replacement=True, generator=gen)
        return TokenSample(
            ids, f"{n} tokens drawn with replacement from token weights (seed {seed})"
        )
    if n >= emb.d_vocab:
        return TokenSample(torch.arange(emb.d_vocab), f"all {emb.d_vocab} tokens")
    ids = torch.randperm(emb.d_vocab, generator=gen)[: int(n)].sort().values
    return TokenSample(ids, f"{n} tokens drawn uniformly without replacement (seed {seed})")


@dataclass
class Chunk:
    """The sample at a chunk of positions (views into reused buffers).

    ``x``, ``x_hat``: ``Float[Tensor, "n_tok n_chunk d_model"]`` inputs and reconstructions; ``b``:
    ``[n_chunk, d_sae]`` position parts; ``first``: ``[d_sae, n_chunk]`` sample tokens *not* firing
    each feature (separable SAEs; the firing ones follow in sorted order); ``l0``: ``Float64[Tensor,
    "n_chunk"]`` mean active features per token; ``dense``: the activations ``[n_tok, n_chunk,
    d_sae]`` when the chunk was decoded densely, else None."""

    positions: torch.Tensor
    x: torch.Tensor
    x_hat: torch.Tensor
    b: torch.Tensor
    first: torch.Tensor | None
    l0: torch.Tensor
    dense: torch.Tensor | None


def _sorted_columns(a: torch.Tensor, step: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    """Each column of ``a`` ``[n, F]`` sorted, as rows ``[F, n]``, and the row order of the sorted
    values in the smallest integer type that holds ``n`` (int16 for the default 2048 tokens: 100 MB
    at GPT-2 width where int64 takes 400; torch indexing widens them on use), made ``step`` columns
    at a time (no whole-size temporaries besides the results). Ties go by row, on every device (a
    stable sort): on the CPU as one sort of 64-bit keys (:func:`_key_sort`, twice as fast as torch's
    sort on the 2-core AVX-512 Xeon), blocks on as many threads as torch has. Small blocks keep the
    temporaries small (at GPT-2's width, 15 MB above the results with 128 columns, 120 MB with
    1024), and sort no slower."""
    n, F = a.shape
    values = torch.empty(F, n, dtype=a.dtype, device=a.device)
    index = next(t for t in (torch.int16, torch.int32, torch.int64) if n <= torch.iinfo(t).max)
    order = torch.empty(F, n, dtype=index, device=a.device)
    if a.device.type == "cpu" and a.dtype == torch.float32 and n < 2**31:
        a_np, v_np, o_np = a.numpy(), values.numpy(), order.numpy()

        def block(f0: int) -> None:
            v_np[f0 : f0 + step], o_np[f0 : f0 + step] = _key_sort(
                np.ascontiguousarray(a_np[:, f0 : f0 + step].T)
            )

        with ThreadPoolExecutor(max(1, torch.get_num_threads())) as pool:
            list(pool.map(block, range(0, F, step)))  # numpy's sorts release the GIL
        return values, order
    for f0 in range(0, F, step):
        # a contiguous copy first: torch sorts it twice as fast as the transposed view
        v, o = a[:, f0 : f0 + step].T.contiguous().sort(dim=1, stable=True)
        values[f0 : f0 + step], order[f0 : f0 + step] = v, o
    return values, order


def _key_sort(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row of ``x`` (float32 ``[F, n]``, ``n < 2**31``) sorted, and the order, ties by
    position, as torch's stable sort: one sort of 64-bit keys, the value's bits mapped to an
    unsigned integer of the same order (``-0.0`` taken as ``0.0``, as comparisons do; every NaN as
    one positive NaN, above infinity) above the position (numpy sorts integers with vector
    instructions, where a stable argsort of floats is 4x slower)."""
    F, n = x.shape
    keys = np.empty((F, n), np.uint64)
    halves = keys.view(np.uint32).reshape(F, n, 2)  # each key's two 32-bit halves in memory
    lo, hi = (0, 1) if sys.byteorder == "little" else (1, 0)
    i = (x + np.float32(0.0)).view(np.int32)  # -0.0 + 0.0 is 0.0
    # negative values: all bits flipped; others: the sign bit set; NaNs: the largest key
    np.bitwise_xor(i, (i >> 31) | np.int32(-(2**31)), out=halves[..., hi].view(np.int32))
    halves[..., hi][np.isnan(x)] = np.uint32(0xFFFFFFFF)
    halves[..., lo] = np.arange(n, dtype=np.uint32)
    keys.sort(axis=1)
    idx = halves[..., lo].astype(np.intp)
    return np.take_along_axis(x, idx, 1), idx


class SampleGrid:
    """The SAE on a token sample at any position, computed where the pair lives (see module
    docstring)."""

    def __init__(self, emb: Embeddings, sae: SAE, tokens: Int[torch.Tensor, " n_tok"]) -> None:
        self.dev = check_pair(emb, sae)
        self.emb, self.sae = emb, sae
        self.tokens = tokens.to(self.dev)
        self.n = len(self.tokens)
        self.a, _ = additive_parts(emb, sae, tokens, torch.arange(1))  # [n_tok, d_sae]
        self.W_E = emb.W_E[self.tokens]
        self.cut = sae.cut()
        self._buffers: dict[str, torch.Tensor] = {}
        if sae.separable:
            self.a_sorted, self.order = _sorted_columns(self.a)

    def buffer(self, name: str, *shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """A reused buffer of at least this size, viewed with ``shape`` (contents undefined)."""
        numel = int(np.prod(shape))
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < numel or buf.dtype != dtype:
            buf = self._buffers[name] = torch.empty(numel, dtype=dtype, device=self.dev)
        return buf[:numel].view(*shape)

    def position_parts(self, positions: torch.Tensor) -> Float[torch.Tensor, "n_pos d_sae"]:
        """``b = W_pos[positions] @ W_enc``."""
        return self.emb.W_pos[positions.to(self.dev)] @ self.sae.W_enc

    def first_firing(
        self, b: Float[torch.Tensor, "n_chunk d_sae"], features: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``[F, n_chunk]``: per feature and position, how many sample tokens do *not* fire (the
        firing ones follow in sorted order)."""
        a_sorted = self.a_sorted if features is None else self.a_sorted[features]
        cut = self.cut if features is None else self.cut[features]
        bb = b if features is None else b[:, features]
        return torch.searchsorted(a_sorted, (cut[None, :] - bb).T.contiguous(), right=True)

    def entries(
        self,
        b: Float[torch.Tensor, "n_chunk d_sae"],
        features: torch.Tensor | None = None,
        first: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """Non-zero activations at a chunk of positions as ``(tok, pos, feat, val)``, for all
        features or only ``features`` (``first``: the chunk's :meth:`first_firing` of all features,
        when already computed)."""
        feats = torch.arange(self.sae.d_sae, device=self.dev) if features is None else features
        n_chunk = b.shape[0]
        if first is None:
            first = self.first_firing(b, features)
        elif features is not None:
            first = first[features]
        counts = (self.n - first).reshape(-1)
        seg = torch.repeat_interleave(torch.arange(counts.numel(), device=self.dev), counts)
        offset = torch.arange(seg.numel(), device=self.dev) - (counts.cumsum(0) - counts)[seg]
        fi, pos = seg // n_chunk, seg % n_chunk
        j = first.reshape(-1)[seg] + offset
        feat = feats[fi]
        return self.order[feats[fi], j].long(), pos, feat, self.a_sorted[feat, j] + b[pos, feat]

    def decode_entries(
        self,
        tok: torch.Tensor,
        pos: torch.Tensor,
        feat: torch.Tensor,
        val: torch.Tensor,
        n_chunk: int,
    ) -> Float[torch.Tensor, "n_tok n_chunk d_model"]:
        """``f @ W_dec`` (no ``b_dec``) of activations given as entries, by a sparse product."""
        rows = self.n * n_chunk
        row = tok * n_chunk + pos
        order = torch.argsort(row, stable=True)
        crow = torch.zeros(rows + 1, dtype=torch.long, device=self.dev)
        crow[1:] = torch.bincount(row, minlength=rows).cumsum(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
            out = (
                torch.sparse_csr_tensor(crow, feat[order], val[order], (rows, self.sae.d_sae))
                @ self.sae.W_dec
            )
        return out.reshape(self.n, n_chunk, -1)

    def _dense_activations(self, b: torch.Tensor) -> torch.Tensor:
        f = self.buffer("f", self.n, b.shape[0], self.sae.d_sae)
        torch.add(self.a[:, None, :], b[None], out=f)
        return self.sae.arch.activate_(f)

    def chunk_size(self, max_elems: int = 8_000_000) -> int:
        """Positions per chunk, keeping the dense inputs (and dense activations, when used) near
        ``max_elems``."""
        per_pos = self.n * max(self.emb.d_model, self.sae.d_sae if not self.sae.separable else 1)
        return max(1, max_elems // per_pos)

    def chunks(
        self, positions: Int[torch.Tensor, " n_pos"], step: int | None = None
    ) -> Iterator[Chunk]:
        """:class:`Chunk` after chunk over ``positions``."""
        step = step or self.chunk_size()
        for i in range(0, len(positions), step):
            pc = positions[i : i + step].to(self.dev)
            x = self.buffer("x", self.n, len(pc), self.emb.d_model)
            torch.add(self.W_E[:, None, :], self.emb.W_pos[pc][None], out=x)
            b = self.position_parts(pc)
            first = self.first_firing(b) if self.sae.separable else None
            counts = None if first is None else self.n - first
            dense = None
            if (
                counts is None
                or float(counts.sum()) > DENSE_FROM * self.n * len(pc) * self.sae.d_sae
            ):
                dense = self._dense_activations(b)
                x_hat = self.buffer("x_hat", self.n * len(pc), self.emb.d_model)
                torch.addmm(
                    self.sae.b_dec, dense.view(-1, self.sae.d_sae), self.sae.W_dec, out=x_hat
                )
                x_hat = x_hat.view(self.n, len(pc), -1)
                l0 = (
                    (dense > 0).sum((0, 2)).double() / self.n
                    if counts is None
                    else counts.sum(0).double() / self.n
                )
            else:
                x_hat = self.decode_entries(*self.entries(b, first=first), len(pc)) + self.sae.b_dec
                l0 = counts.sum(0).double() / self.n
            yield Chunk(pc, x, x_hat, b, first, l0, dense)

    def token_means(
        self, positions: Int[torch.Tensor, " n_pos"], features: torch.Tensor
    ) -> Float[torch.Tensor, "n_tok n_feat"]:
        """Each sample token's exact mean activation over ``positions``, for ``features`` (separable
        SAEs; float64, a transposed view of a ``[n_feat, n_tok]`` tensor). On the CPU with numba one
        fused pass per feature (no ``[n_feat, n_tok]`` temporaries), else torch, with the same
        arithmetic."""
        if not self.sae.separable:
            raise PosfeatError(
                "Per-token means from the additive parts need a separable SAE (ReLU or JumpReLU)."
            )
        b = self.position_parts(positions)[:, features].T.contiguous().double()  # [F, n_pos]
        cut = self.cut[features, None].double()
        if HAVE_NUMBA and self.dev.type == "cpu":
            # Each feature's thresholds in ascending order, stable (as numpy's mergesort), sorted
            # here by torch in blocks of features: an argsort in the kernel costs seconds of
            # compiling on the first run.
            out = np.empty((len(features), self.a_sorted.shape[1]))
            for lo in range(0, len(features), SORT_BLOCK):
                hi = min(len(features), lo + SORT_BLOCK)
                by = torch.sort(cut[lo:hi] - b[lo:hi], dim=1, stable=True).indices
                _token_means_kernel(
                    self.a_sorted.numpy(),
                    self.order.numpy(),
                    features[lo:hi].numpy(),
                    cut[lo:hi, 0].numpy(),
                    b[lo:hi].numpy(),
                    by.numpy(),
                    out[lo:hi],
                )
            return torch.from_numpy(out).T
        thr, order = (cut - b).sort(dim=1)
        pb = torch.cat(
            [
                torch.zeros(len(features), 1, dtype=torch.float64, device=self.dev),
                b.gather(1, order).cumsum(1),
            ],
            1,
        )
        a = self.a[:, features].T.contiguous().double()  # [F, n_tok]
        k = torch.searchsorted(thr, a)  # positions where each token fires
        return ((k * a + pb.gather(1, k)) / len(positions)).T


if HAVE_NUMBA:

    @njit(cache=NUMBA_CACHE, boundscheck=False)
    @no_type_check
    def _search_left(v, x, lo, hi):  # pragma: no cover
        """The first index in ``lo .. hi`` with ``v[i] >= x`` (``v`` sorted; ``hi`` when none), as
        ``searchsorted``."""
        while lo < hi:
            mid = (lo + hi) // 2
            if v[mid] < x:
                lo = mid + 1
            else:
                hi = mid
        return lo

    @njit(parallel=True, cache=NUMBA_CACHE, boundscheck=False)
    @no_type_check
    def _token_means_kernel(a_sorted, order, feats, cut, b, by, out):  # pragma: no cover
        """``out [F, n_tok]``: :meth:`SampleGrid.token_means` from each feature's sorted sample
        values (``a_sorted``, ``order``: ``[d_sae, n_tok]``), ``feats [F]``, ``cut [F]``, ``b [F,
        n_pos]`` (float64) and ``by [F, n_pos]``, the order of ``cut - b`` (stable): the tokens in
        ascending order meet the sorted thresholds in one merge (the count below is
        ``searchsorted``'s)."""
        F = feats.shape[0]
        n_tok = a_sorted.shape[1]
        n_pos = b.shape[1]
        for i in prange(F):
            f = feats[i]
            ts = np.empty(n_pos)
            pb = np.zeros(n_pos + 1)
            for j in range(n_pos):
                ts[j] = cut[i] - b[i, by[i, j]]
                pb[j + 1] = pb[j] + b[i, by[i, j]]
            k = 0
            for j in range(n_tok):
                av = np.float64(a_sorted[f, j])
                while k < n_pos and ts[k] < av:
                    k += 1
                out[i, order[f, j]] = (k * av + pb[k]) / n_pos

    @njit(cache=NUMBA_CACHE, boundscheck=False)
    @no_type_check
    def _search_right(v, x, lo, hi):  # pragma: no cover
        """The first index in ``lo .. hi`` with ``v[i] > x`` (``v`` sorted; ``hi`` when none), as
        ``searchsorted(right=True)``."""
        while lo < hi:
            mid = (lo + hi) // 2
            if v[mid] <= x:
                lo = mid + 1
            else:
                hi = mid
        return lo

    @njit(parallel=True, cache=NUMBA_CACHE, boundscheck=False)
    @no_type_check
    def _deviation_kernel(a_sorted, order, m, feats, cut, bT, n_groups):  # pragma: no cover
        """:class:`DeviationSums`'s closed form (ReLU) at a set of positions, one feature at a time:
        its ``d = a - m`` in sorted order and the prefix sums of ``d`` and ``m`` made on the spot,
        and at each position the tokens that do not fire (:meth:`SampleGrid.first_firing`'s count,
        on the float32 ``cut - b``) found by a search. ``a_sorted``, ``order``: ``[d_sae, n]``;
        ``m``: ``[F, n]`` by token; ``feats [F]``; ``cut [d_sae]``, ``bT [F, n_pos]`` (row ``i``:
        feature ``feats[i]``) float32. Returns ``[n_groups, n_pos]`` float64."""
        n = a_sorted.shape[1]
        n_pos = bT.shape[1]
        F = feats.shape[0]
        parts = np.zeros((n_groups, n_pos))
        for g in prange(n_groups):
            d_s = np.empty(n)
            PM = np.zeros(n + 1)
            PD = np.zeros(n + 1)
            for i in range(g, F, n_groups):
                f = feats[i]
                for j in range(n):
                    mv = m[i, order[f, j]]
                    d_s[j] = np.float64(a_sorted[f, j]) - mv
                    PM[j + 1] = PM[j] + mv
                    PD[j + 1] = PD[j] + d_s[j]
                for p in range(n_pos):
                    b32 = bT[i, p]
                    fi = _search_right(a_sorted[f], cut[f] - b32, 0, n)
                    bb = np.float64(b32)
                    lo = max(fi, _search_left(d_s, -bb, 0, n))
                    above = PD[n] - PD[lo] + bb * (n - lo)
                    below = PD[lo] - PD[fi] + bb * (lo - fi)
                    parts[g, p] += PM[fi] + above - below
        return parts  # summed by the caller (a sum over an axis costs a second of compiling)

    @njit(parallel=True, cache=NUMBA_CACHE, boundscheck=False)
    @no_type_check
    def _pair_kernel(a, bT, tok, feat, col, m, cut, n_groups):  # pragma: no cover
        """:meth:`DeviationSums.firing_pairs` at a set of positions without temporaries: ``sum |f -
        m|`` over the pairs ``(tok[i], feat[i])`` (in-context mean ``m[i]``) at each position, ``f =
        pre`` where ``pre = a + b > cut`` (float64, as the torch path computes it), else 0. ``a
        [n_tok, d_sae]`` float32; ``bT [F, n_pos]`` float32, the pair's row ``col[i]``; ``cut
        [d_sae]`` float64. Returns ``[n_groups, n_pos]``: each group's pairs summed in order
        (:data:`PAIR_GROUPS`, whatever the threads), in a row of its own (no write shared with
        another thread's, and one the compiler may keep in registers)."""
        n_pairs = tok.shape[0]
        n_pos = bT.shape[1]
        parts = np.zeros((n_groups, n_pos))
        step = (n_pairs + n_groups - 1) // n_groups
        for g in prange(n_groups):
            acc = np.zeros(n_pos)
            for i in range(g * step, min(n_pairs, (g + 1) * step)):
                f = feat[i]
                row = bT[col[i]]
                av = np.float64(a[tok[i], f])
                c = cut[f]
                mi = m[i]
                for p in range(n_pos):
                    pre = av + np.float64(row[p])
                    fv = pre if pre > c else 0.0
                    acc[p] += abs(fv - mi)
            for p in range(n_pos):
                parts[g, p] = acc[p]
        return parts


#: Features whose thresholds are sorted at once by :meth:`SampleGrid.token_means`.
SORT_BLOCK = 2048
#: Firing (token, feature) pairs of the sample whose deviation is followed past the context (drawn
# when more).
FIRING_PAIRS = 200_000
#: Pairs handled at once by :meth:`DeviationSums.firing_pairs` (its torch path).
PAIR_BLOCK = 16_384
#: Groups of pairs summed separately by its numba path (fixed: the sums do not depend on the
# threads).
PAIR_GROUPS = 16


def _groups_in_order(parts: np.ndarray) -> torch.Tensor:
    """The sum of a numba kernel's per-group rows ``[n_groups, n]``, the groups added in order (so
    the sums do not depend on the threads; a sum over an axis inside the kernel costs a second of
    compiling)."""
    out = np.zeros(parts.shape[1])
    for row in parts:
        out += row
    return torch.from_numpy(out)


class DeviationSums:
    """``sum_t |f(t, p) - m(t)|`` for each position ``p``, summed over ``features``, where ``m(t)``
    is token ``t``'s mean activation over the context: how far the features stray from their
    in-context value.

    ReLU: exact in ``O(log n_tok)`` per feature and position. ``m`` depends on ``t`` only through
    ``a[t]``,
    with slope ``k/context <= 1`` (``k`` in-context positions firing), so ``d = a - m`` is
    non-decreasing
    in ``a``: over the firing suffix ``f - m = d + b[p]`` changes sign once, found by a search, and
    prefix
    sums of ``m`` (tokens not firing: ``|0 - m| = m``) and of ``d`` give the sum. On the CPU with
    numba
    those prefix sums are made per feature on the spot (:func:`_deviation_kernel`; nothing of size
    ``[n_feat, n_tok]`` but ``m`` is kept), else once, in torch. JumpReLU (whose ``m`` jumps) and
    TopK go
    through the non-zero activations: ``sum m + sum over f > 0 of (|f - m| - m)``.
    """

    def __init__(self, grid: SampleGrid, context: int, features: torch.Tensor) -> None:
        self.grid, self.features = grid, features.to(grid.dev)
        self.closed = grid.sae.arch.continuous  # ReLU
        if grid.sae.separable:
            self.m = grid.token_means(torch.arange(context), self.features)  # [n_tok, F]
        else:
            self.m = torch.zeros(grid.n, len(self.features), dtype=torch.float64, device=grid.dev)
            for chunk in grid.chunks(torch.arange(context)):
                self.m += chunk.dense[..., self.features].double().sum(1)
            self.m /= context
        self.total = float(self.m.sum())
        self.col = torch.full(
            (grid.sae.d_sae,), -1, dtype=torch.long, device=grid.dev
        )  # feature -> column of m
        self.col[self.features] = torch.arange(len(self.features), device=grid.dev)
        self.fused = self.closed and HAVE_NUMBA and grid.dev.type == "cpu"
        if self.closed and not self.fused:
            ords = grid.order[self.features].long()
            m_s = self.m.T.gather(1, ords)
            d_s = grid.a_sorted[self.features].double() - m_s
            zero = torch.zeros(len(self.features), 1, dtype=torch.float64, device=grid.dev)
            self.d_s, self.PM, self.PD = (
                d_s,
                torch.cat([zero, m_s.cumsum(1)], 1),
                torch.cat([zero, d_s.cumsum(1)], 1),
            )

    def __call__(self, chunk: Chunk) -> Float[torch.Tensor, " n_chunk"]:
        """The sums at the chunk's positions (float64)."""
        g, n = self.grid, self.grid.n
        if not len(self.features):
            return torch.zeros(len(chunk.positions), dtype=torch.float64, device=g.dev)
        if self.fused:
            return self.spread_at(self.rows(chunk.b))
        if self.closed:
            b = chunk.b[:, self.features].T.double()  # [F, n_chunk]
            first = (  # a chunk of the fused reconstruction leaves the counts undone
                g.first_firing(chunk.b, self.features)
                if chunk.first is None
                else chunk.first[self.features]
            )
            lo = torch.maximum(first, torch.searchsorted(self.d_s, (-b).contiguous()))

            def seg(P: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
                return P.gather(1, j) - P.gather(1, i)

            top = torch.full_like(lo, n)
            above = seg(self.PD, lo, top) + b * (n - lo)
            below = seg(self.PD, first, lo) + b * (lo - first)
            return (self.PM.gather(1, first) + above - below).sum(0)
        if chunk.dense is not None:
            f = chunk.dense[..., self.features].double()
            return (f - self.m[:, None, :]).abs().sum((0, 2))
        tok, pos, feat, val = g.entries(chunk.b, self.features, chunk.first)
        mm = self.m[tok, self.col[feat]]
        return self.total + torch.bincount(
            pos, weights=(val.double() - mm).abs() - mm, minlength=len(chunk.positions)
        )

    def rows(self, b: Float[torch.Tensor, "n_pos d_sae"]) -> np.ndarray:
        """The position parts of :attr:`features` as float32 rows ``[F, n_pos]`` (CPU): what
        :meth:`spread_at` and :meth:`pairs_at` read."""
        return b[:, self.features].T.contiguous().numpy()

    def spread_at(self, rows: np.ndarray) -> torch.Tensor:
        """:meth:`__call__` (numba's closed form, :attr:`fused`) at the positions whose position
        parts :meth:`rows` gave, any number of them at once: each feature's prefix sums are made
        once for all of them (the reconstruction passes all its positions together)."""
        g = self.grid
        if not len(self.features):
            return torch.zeros(rows.shape[1], dtype=torch.float64)
        parts = _deviation_kernel(
            g.a_sorted.numpy(),
            g.order.numpy(),
            self.m.T.contiguous().numpy(),  # a view: token_means makes m feature-major
            self.features.numpy(),
            g.cut.numpy(),
            rows,
            max(1, min(len(self.features), 4 * torch.get_num_threads())),
        )
        return _groups_in_order(parts)

    def pairs_at(
        self, rows: np.ndarray, max_pairs: int = FIRING_PAIRS, seed: int = 0
    ) -> tuple[torch.Tensor, float]:
        """:meth:`firing_pairs` (numba, a separable SAE on the CPU) at the positions whose position
        parts :meth:`rows` gave, any number of them at once."""
        tok, col, m = self._pairs(max_pairs, seed)
        if not len(self.features) or not len(tok):
            return torch.zeros(rows.shape[1], dtype=torch.float64), float(m.sum())
        parts = _pair_kernel(
            self.grid.a.numpy(),
            rows,
            tok.numpy(),
            self.features[col].numpy(),
            col.numpy(),
            m.numpy(),
            self.grid.cut.double().numpy(),
            np.int64(PAIR_GROUPS),
        )
        return _groups_in_order(parts), float(m.sum())

    def _pairs(self, max_pairs: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The (token, feature) pairs of the sample that fire inside the context (``m > 0``): token
        rows, columns of ``features`` and their in-context means; at most ``max_pairs`` of them,
        drawn at random (seeded) when more."""
        if not hasattr(self, "_pair_cache"):
            tok, col = torch.nonzero(self.m > 0, as_tuple=True)
            if len(tok) > max_pairs:
                keep = torch.randperm(len(tok), generator=torch.Generator().manual_seed(seed))[
                    :max_pairs
                ].to(tok.device)
                tok, col = tok[keep], col[keep]
            self._pair_cache = (tok, col, self.m[tok, col])
        return self._pair_cache

    def firing_pairs(
        self, chunk: Chunk, max_pairs: int = FIRING_PAIRS, seed: int = 0
    ) -> tuple[torch.Tensor, float]:
        """``sum |f(t, p) - m(t)|`` at the chunk's positions over the pairs that fire inside the
        context (``m > 0``), and ``sum m`` over the same pairs (float64): the deviation of features
        on the tokens they fire on, as a share of their own in-context activation when divided.
        Separable SAEs: ``f = act(a_t + b_p)`` for each pair (at most ``max_pairs`` pairs, drawn at
        random when there are more, stated in the docs); TopK: the chunk's activations, every
        pair."""
        g = self.grid
        if not len(self.features):
            return torch.zeros(len(chunk.positions), dtype=torch.float64, device=g.dev), 0.0
        if g.sae.separable:
            if HAVE_NUMBA and g.dev.type == "cpu":
                return self.pairs_at(self.rows(chunk.b), max_pairs, seed)
            tok, col, m = self._pairs(max_pairs, seed)
            out = torch.zeros(len(chunk.positions), dtype=torch.float64, device=g.dev)
            zero = torch.zeros((), dtype=torch.float64, device=g.dev)
            for lo in range(
                0, len(tok), PAIR_BLOCK
            ):  # blocks of pairs: a few [block, n_chunk] temporaries at a time
                feat = self.features[col[lo : lo + PAIR_BLOCK]]
                pre = (
                    g.a[tok[lo : lo + PAIR_BLOCK], feat].double()[:, None]
                    + chunk.b[:, feat].T.double()
                )
                f = torch.where(pre > g.cut[feat].double()[:, None], pre, zero)
                out += (f - m[lo : lo + PAIR_BLOCK, None]).abs().sum(0)
            return out, float(m.sum())
        fires = self.m > 0
        m = self.m * fires
        if chunk.dense is not None:
            f = chunk.dense[..., self.features].double()
            return ((f - m[:, None, :]).abs() * fires[:, None, :]).sum((0, 2)), float(m.sum())
        tok, pos, feat, val = g.entries(chunk.b, self.features, chunk.first)
        mm = m[tok, self.col[feat]]
        on = fires[tok, self.col[feat]].double()
        dev = torch.bincount(
            pos, weights=((val.double() - mm).abs() - mm) * on, minlength=len(chunk.positions)
        )
        return float(m.sum()) + dev, float(m.sum())
