"""The fused GPU kernel of the additive fast path (Triton): the ``"triton"`` backend.

One program per (feature, tile of tokens): the tile's token values are loaded once, each is placed
among the feature's sorted thresholds by a branch-free binary search (``ceil(log2(n_pos + 1))``
gathers from a row that stays in cache), and count, sum and sum of squares of the shifted value
are added into its bucket (float64 atomics; the tokens below every threshold, most of them for a
sparse feature, are first summed over the tile, so bucket 0 takes one atomic per tile). The same
pass writes each token's exact sum over positions, ``j a + pb[j]`` for a token in bucket ``j``.
Suffix sums over the buckets then give every position (as the numba kernel does), and the token
statistics come from the buckets and that row of sums. Nothing else of size ``n_tok`` is written.

Without a CUDA device the kernel runs through Triton's interpreter (``TRITON_INTERPRET=1``, set
here before Triton is imported when no GPU is present): slow, but the same program, which is how
CI holds it to the brute-force enumeration.
"""

from __future__ import annotations

import math
import os
from typing import no_type_check

import torch

if (
    not torch.cuda.is_available()
):  # pragma: no branch - the interpreter runs the kernel on CPU tensors
    os.environ.setdefault("TRITON_INTERPRET", "1")

import triton
import triton.language as tl

#: Tokens per program.
BLOCK_T = 1024


@triton.jit
@no_type_check  # keeps jaxtyping's test-time instrumentation out of the kernel's source
def _bucket_kernel(
    a_ptr, s_ptr, pb_ptr, shift_ptr, acc_ptr, ts_ptr, T, P, BLOCK: tl.constexpr, STEPS: tl.constexpr
):  # pragma: no cover
    f = tl.program_id(0)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = offs < T
    v = tl.load(a_ptr + f.to(tl.int64) * T + offs, mask=m, other=0.0)
    row = s_ptr + f.to(tl.int64) * P
    lo = (offs * 0).to(tl.int32)
    n = lo + P
    for _ in tl.static_range(STEPS):  # thresholds strictly below v: a branch-free binary search
        half = n // 2
        live = n > 0
        probe = tl.load(row + lo + half, mask=m & live, other=0.0)
        go = live & (probe < v)
        lo = tl.where(go, lo + half + 1, lo)
        n = tl.where(go, n - half - 1, tl.where(live, half, n))
    w = v.to(tl.float64)
    u = w - tl.load(shift_ptr + f)
    base = f.to(tl.int64) * (P + 1)
    ts = lo.to(tl.float64) * w + tl.load(pb_ptr + base + lo, mask=m, other=0.0)
    tl.store(ts_ptr + f.to(tl.int64) * T + offs, ts, mask=m)
    fires = m & (lo > 0)
    slot = acc_ptr + (base + lo) * 3
    tl.atomic_add(slot, tl.where(fires, 1.0, 0.0).to(tl.float64), mask=fires)
    tl.atomic_add(slot + 1, u, mask=fires)
    tl.atomic_add(slot + 2, u * u, mask=fires)
    none = m & (
        lo == 0
    )  # fires nowhere: only its count and sum matter (bucket 0), one atomic per tile
    tl.atomic_add(acc_ptr + base * 3, tl.sum(tl.where(none, 1.0, 0.0).to(tl.float64), axis=0))
    tl.atomic_add(acc_ptr + base * 3 + 1, tl.sum(tl.where(none, u, 0.0), axis=0))


def bucket_sums(
    a: torch.Tensor, s: torch.Tensor, pb: torch.Tensor, shift: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``acc`` ``Float64[F, n_pos+1, 3]`` (count, sum, sum of squares of ``a - shift`` per bucket
    among the sorted thresholds ``s``) and ``ts`` ``Float64[F, n_tok]`` (each token's sum of
    activations over positions).

    ``a``: ``[F, n_tok]`` token parts; ``s``: ``[F, n_pos]`` sorted thresholds (same dtype); ``pb``:
    ``Float64[F, n_pos+1]`` prefix sums of the position parts in that order; ``shift``:
    ``Float64[F]``."""
    F, T = a.shape
    P = s.shape[1]
    acc = torch.zeros(F, P + 1, 3, dtype=torch.float64, device=a.device)
    ts = torch.empty(F, T, dtype=torch.float64, device=a.device)
    if F and T:
        block = max(16, min(BLOCK_T, triton.next_power_of_2(T)))
        steps = max(1, math.ceil(math.log2(P + 1)))
        _bucket_kernel[(F, triton.cdiv(T, block))](
            a.contiguous(),
            s.contiguous(),
            pb.contiguous(),
            shift.contiguous(),
            acc,
            ts,
            T,
            P,
            BLOCK=block,
            STEPS=steps,
        )
    return acc, ts
