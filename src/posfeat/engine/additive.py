"""Exact sums for a block of features from their additive parts ``pre[t, p] = a[t] + b[p]``.

Two formulations of the same sums, held to the brute-force enumeration by the same tests:

* ``"numba"`` (CPU): sort each feature's ``n_pos`` thresholds ``cut - b``, drop every token value
  into its bucket among them (a binary search) while accumulating count, sum and sum of squares
  per bucket; suffix sums over the buckets give every position (:mod:`posfeat.engine.kernel`).
* ``"triton"`` (CUDA; on a CPU through Triton's interpreter): the numba kernel's buckets, fused into
  one GPU pass per block (:mod:`posfeat.engine.triton_kernel`), then the same suffix sums in torch.
* ``"torch"`` (any device, the plain-torch GPU path): sort each feature's ``n_tok`` token values
  once; then a position's firing tokens are a suffix of the sorted values, so its count, sum and sum
  of squares are one ``searchsorted`` of its threshold plus float64 prefix sums. No scatter, no
  atomics.

Both accumulate token values shifted by their mean ``K``: with ``q = count/n_tok``, ``m1, m2`` the
shifted sums over firing tokens divided by ``n_tok`` and ``c = K + b``, the variance over tokens is
``m2 - m1^2 + 2 c m1 (1 - q) + c^2 q (1 - q)``, which does not cancel when activations are large
and nearly constant.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Float

from ..core.errors import PosfeatError
from .kernel import HAVE_NUMBA, bucket_sums, position_sums, token_top_merge
from .screen import Screen, screened_sums

ACC = torch.float64  # accumulation dtype for every sum
BACKENDS = ("auto", "numba", "torch", "triton")


def have_triton() -> bool:
    """Whether Triton is installed (the fused GPU kernel; on a CPU it runs through Triton's
    interpreter)."""
    return importlib.util.find_spec("triton") is not None


def resolve_backend(backend: str, device: torch.device) -> str:
    """``"auto"``: numba for CPU tensors when installed; on CUDA the Triton kernel when Triton is
    installed; else torch."""
    if backend not in BACKENDS:
        raise PosfeatError(
            f"Unknown backend {backend!r}; use 'auto', 'numba', 'torch' or 'triton'."
        )
    if backend == "numba" and device.type != "cpu":
        raise PosfeatError(
            f"The numba backend runs on the CPU only, but the tensors are on {device}; use "
            "backend='torch' or 'auto'."
        )
    if backend == "triton":
        if not have_triton():
            raise PosfeatError(
                "The triton backend needs Triton (pip install triton); use backend='auto' or "
                "'torch'."
            )
        if device.type not in ("cuda", "cpu"):
            raise PosfeatError(
                "The triton backend runs on CUDA (or on the CPU through Triton's interpreter), not "
                f"on {device}; use 'torch'."
            )
    if backend == "auto":
        if device.type == "cpu":
            return "numba" if HAVE_NUMBA else "torch"
        return "triton" if (device.type == "cuda" and have_triton()) else "torch"
    return backend


@dataclass(eq=False)
class TokenTop:
    """Each token's top ``k`` features by exact mean activation over one position set (CPU numpy,
    float64), among the features it activates there; filled block by block by the numba path of
    :func:`additive_blocks`.

    ``feature``: ``Int[ndarray, "n_tok k"]`` largest mean first, the lower feature first among ties,
    -1 where the token activates fewer than ``k`` features; ``mean``: those means (``-inf`` at the
    -1s); ``var``: the population variance of the activation over the positions (every position of
    the set, firing or not)."""

    feature: np.ndarray
    mean: np.ndarray
    var: np.ndarray

    @classmethod
    def empty(cls, n_tok: int, k: int) -> TokenTop:
        return cls(
            feature=np.full((n_tok, k), -1, np.int64),
            mean=np.full((n_tok, k), -np.inf),
            var=np.zeros((n_tok, k)),
        )


def token_summary(tok_mean: Float[torch.Tensor, "F n_tok"], top_k: int) -> dict[str, torch.Tensor]:
    """Variance over tokens, and the top ``max(top_k, 1)`` tokens, of each token's mean activation
    over positions."""
    top = torch.topk(tok_mean, min(max(top_k, 1), tok_mean.shape[1]), dim=1)
    return {
        "tok_var": tok_mean.var(dim=1, correction=0),
        "top_val": top.values,
        "top_idx": top.indices,
    }


def _variance(
    count: torch.Tensor, S1: torch.Tensor, S2: torch.Tensor, c: torch.Tensor, n_tok: int
) -> torch.Tensor:
    q, m1, m2 = count / n_tok, S1 / n_tok, S2 / n_tok
    return (m2 - m1 * m1 + 2 * c * m1 * (1 - q) + c * c * q * (1 - q)).clamp(min=0)


#: Token parts per sub-block of the fused CPU path (512 features of GPT-2's vocabulary, 103 MB in
# float32): each sub-block is made feature-major by the GEMM of ``grid_stats._TokenParts`` and
# bucketed at once, while much of it is still in cache. Measured on one core of the AVX-512 Xeon,
# the feature-major GEMM per feature against the whole fp32 GEMM: 64 features 1.45x, 128 1.16x, 256
# 1.01x, 512 0.99x. On both cores (each GEMM split between them) narrow sub-blocks cost more: the
# dense GPT-2-sized engine took 12.2 s with 256 features (GEMM 6.9 s, buckets 3.1 s), 11.8 s with
# 384, 11.3 s with 512 (6.0 s, 2.9 s) and 11.9 s with 1024 (5.6 s, but buckets 4.0 s: out of
# cache); the same results bit for bit.
SUB_ELEMS = 512 * 50257
#: Token parts per sub-block of the screened path (256 features of GPT-2's vocabulary: its buffers
# take 18 bytes per token value, so larger ones cost memory, which the GPT-2-sized analyze has
# little of to spare; its GEMM is bfloat16, a quarter of the dense path's time).
SCREEN_ELEMS = 256 * 50257


def _numba_blocks(
    a: torch.Tensor | Callable[[int, int], torch.Tensor],
    shift: np.ndarray,
    n_tok: int,
    preps: list[dict[str, torch.Tensor]],
    top_k: int,
    want_tok_sum: bool,
    lims: list[torch.Tensor | None],
    token_top: tuple[TokenTop, int] | None,
    screen: Screen | None,
    hist: tuple[Any, int, torch.Tensor, torch.Tensor] | None = None,
) -> list[dict[str, torch.Tensor]]:
    F = shift.shape[0]
    outs: list[dict[str, np.ndarray] | None] = [None] * len(preps)
    sub = max(1, SUB_ELEMS // max(n_tok, 1))
    buf: torch.Tensor | None = (
        # one feature-major buffer for every sub-block: no fresh pages (and faults) per
        # sub-block
        None
    )
    lo = (
        None if token_top is None else np.empty((min(sub, F), n_tok), np.int32)
    )  # each token's bucket in the first set
    f1 = 0
    while f1 < F:
        f0 = f1
        if screen is not None:  # a sparse SAE: exact token parts only where they can fire
            f1 = min(F, f0 + max(1, SCREEN_ELEMS // max(n_tok, 1)))
            screened_sums(screen, f0, f1, preps, lims, shift, outs, top_k, token_top, hist)
            continue
        f1 = min(F, f0 + sub)
        at = (
            a[f0:f1].T if isinstance(a, torch.Tensor) else a(f0, f1)
        )  # [n_tok, f1 - f0]: this sub-block's GEMM
        if (
            at.stride(0) == 1
        ):  # feature-major already (the engine's token parts on the CPU, a transposed view)
            at_np = at.T.numpy()
        else:  # token-major (another caller's function): transposed here
            if buf is None or buf.dtype != at.dtype:
                buf = torch.empty(sub * n_tok, dtype=at.dtype)
            at_np = buf[: (f1 - f0) * n_tok].view(f1 - f0, n_tok).copy_(at.T).numpy()
        if hist is not None:  # the cards' histograms from the same token parts
            col, g0, b0, c0 = hist
            col.dense(g0 + f0, at_np, b0[f0:f1], c0[f0:f1])
        for i, (prep, lim) in enumerate(zip(preps, lims)):
            lo_i = None if (lo is None or i > 0) else lo[: f1 - f0]
            outs[i] = bucket_sums(
                at_np,
                prep["s"].numpy(),
                prep["pb"].numpy(),
                shift,
                max(top_k, 1),
                want_tok_sum,
                None if lim is None else lim.numpy(),
                out=outs[i],
                f0=f0,
                lo_out=lo_i,
            )
            if lo_i is not None and token_top is not None:
                top, g0 = token_top
                token_top_merge(
                    at_np,
                    lo_i,
                    g0 + f0,
                    prep["pb"].numpy()[f0:f1],
                    prep["pb2"].numpy()[f0:f1],
                    top.mean,
                    top.feature,
                    top.var,
                )
    results = []
    for prep, k, lim in zip(preps, outs, lims):
        n_pos = prep["s"].shape[1]
        count, psum, var, tok_var = position_sums(
            k, prep["order"].numpy(), prep["bs"].numpy(), shift, prep["pb"].numpy(), n_tok
        )
        out = {
            "count": torch.from_numpy(count),
            "sum": torch.from_numpy(psum),
            "var": torch.from_numpy(var),
            "tok_var": torch.from_numpy(tok_var),
            "top_val": torch.from_numpy(k["top_val"] / n_pos),
            "top_idx": torch.from_numpy(k["top_idx"]),
            "a_mean": torch.from_numpy(shift + k["acc"][:, :, 1].sum(1) / n_tok),
        }
        if want_tok_sum:
            out["tok_sum"] = torch.from_numpy(k["tok_sum"])
        if lim is not None:
            out["below_val"], out["below_idx"] = (
                torch.from_numpy(k["below_val"]),
                torch.from_numpy(k["below_idx"]),
            )
        results.append(out)
    return results


def _torch_block(
    a: torch.Tensor,
    s: torch.Tensor,
    b64: torch.Tensor,
    pb: torch.Tensor,
    shift: torch.Tensor,
    cut: torch.Tensor,
    b: torch.Tensor,
    top_k: int,
    want_tok_sum: bool,
    lim: torch.Tensor | None,
) -> dict[str, torch.Tensor]:
    n_tok, n_pos = a.shape[1], b.shape[1]
    a_sorted, a_order = a.sort(dim=1)
    u = a_sorted.to(ACC) - shift[:, None]
    zero = torch.zeros(a.shape[0], 1, dtype=ACC, device=a.device)
    P1, P2 = torch.cat([zero, u.cumsum(1)], 1), torch.cat([zero, (u * u).cumsum(1)], 1)
    idx = torch.searchsorted(
        a_sorted, (cut[:, None] - b).contiguous(), right=True
    )  # tokens not firing at each position
    count = (n_tok - idx).to(ACC)
    S1, S2 = P1[:, -1:] - P1.gather(1, idx), P2[:, -1:] - P2.gather(1, idx)
    c = shift[:, None] + b64
    kk = torch.searchsorted(s, a.contiguous())  # per token: thresholds strictly below its value
    tok_sum = kk.to(ACC) * a.to(ACC) + pb.gather(1, kk)
    out = {
        "count": count,
        "sum": S1 + c * count,
        "var": _variance(count, S1, S2, c, n_tok),
        "u_sum": P1[:, -1],
        **token_summary(tok_sum / n_pos, top_k),
    }
    if want_tok_sum:
        out["tok_sum"] = tok_sum
    if lim is not None:
        j = torch.searchsorted(a_sorted, lim[:, None].contiguous(), right=True)[
            :, 0
        ]  # values <= lim: the first j
        has = j > 0
        pick = (j - 1).clamp(min=0)[:, None]
        out["below_val"] = torch.where(
            has, a_sorted.gather(1, pick)[:, 0].to(ACC), torch.full_like(shift, float("-inf"))
        )
        out["below_idx"] = torch.where(has, a_order.gather(1, pick)[:, 0], torch.full_like(j, -1))
    return out


def _triton_block(
    a: torch.Tensor,
    prep: dict[str, torch.Tensor],
    shift: torch.Tensor,
    top_k: int,
    want_tok_sum: bool,
    lim: torch.Tensor | None,
) -> dict[str, torch.Tensor]:
    from . import (
        triton_kernel,
    )  # imported only when asked for: without CUDA it switches Triton to its interpreter

    if a.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise PosfeatError(
            f"The triton backend needs CUDA tensors here, but these are on {a.device} (on a machine "
            "without CUDA it "
            "runs through Triton's interpreter); move the pair to cuda or use backend='auto'."
        )
    n_tok, n_pos = a.shape[1], prep["s"].shape[1]
    acc, ts = triton_kernel.bucket_sums(a, prep["s"], prep["pb"], shift)
    suffix = (
        acc[:, 1:].flip(1).cumsum(1).flip(1)
    )  # [F, n_pos, 3]: tokens above the j-th threshold in firing order
    count, S1, S2 = suffix.unbind(2)
    c = shift[:, None] + prep["bs"]
    order = prep["order"]
    sorted_stats = {
        "count": count,
        "sum": S1 + c * count,
        "var": _variance(count, S1, S2, c, n_tok),
    }
    out = {k: torch.empty_like(v).scatter_(1, order, v) for k, v in sorted_stats.items()}
    out.update(token_summary(ts / n_pos, top_k))
    out["u_sum"] = acc[:, :, 1].sum(1)
    if want_tok_sum:
        out["tok_sum"] = ts
    if lim is not None:
        below = a <= lim[:, None]
        val, idx = torch.where(below, a, torch.full_like(a, float("-inf"))).max(1)
        has = below.any(1)
        out["below_val"] = torch.where(has, val.to(ACC), torch.full_like(shift, float("-inf")))
        out["below_idx"] = torch.where(has, idx, torch.full_like(idx, -1))
    return out


def _prepare(b: torch.Tensor, cut: torch.Tensor, squares: bool = False) -> dict[str, torch.Tensor]:
    """Each feature's thresholds ``cut - b`` sorted, the position parts in that order and their
    prefix sums (and of their squares, ``pb2``, when asked)."""
    thr = cut[:, None] - b  # [F, n_pos]
    s, order = thr.sort(dim=1)
    b64 = b.to(ACC)
    bs = b64.gather(1, order)  # position parts in firing order (largest first)
    zero = torch.zeros(b.shape[0], 1, dtype=ACC, device=b.device)
    out = {
        "s": s,
        "order": order,
        "bs": bs,
        "pb": torch.cat([zero, bs.cumsum(1)], dim=1),
        "b64": b64,
    }
    if squares:
        out["pb2"] = torch.cat([zero, (bs * bs).cumsum(1)], dim=1)
    return out


def additive_blocks(
    a: Float[torch.Tensor, "F n_tok"] | Callable[[int, int], torch.Tensor],
    bs: Sequence[Float[torch.Tensor, "F _"]],
    cut: Float[torch.Tensor, " F"],
    backend: str = "auto",
    *,
    n_tok: int | None = None,
    a_center: Float[torch.Tensor, " F"] | None = None,
    top_k: int = 20,
    want_tok_sum: bool = False,
    lims: Sequence[torch.Tensor | None] | None = None,
    token_top: tuple[TokenTop, int] | None = None,
    screen: Screen | None = None,
    histograms: tuple[Any, int] | None = None,
) -> list[dict[str, torch.Tensor]]:
    """:func:`additive_block` for several position parts ``bs`` of one block of features, reading
    ``a`` once.

    ``token_top``: ``(top, g0)``: update ``top`` (:class:`TokenTop`) with this block's features over
    the first position set, numbered from ``g0`` (numba path only; the other backends leave it as it
    is). ``screen``: a :class:`~posfeat.engine.screen.Screen` whose ``set_block`` was given this
    block (numba path, without ``want_tok_sum``): token values that provably fire nowhere are only
    counted (:mod:`posfeat.engine.screen`). ``histograms``: ``(collector, g0)``: give a
    :class:`~posfeat.engine.histogram.CardHistograms` this block's token parts over the first
    position set (numba path only).

    ``a`` may be a function ``a(f0, f1)`` giving the token parts of features ``f0..f1-1`` of the
    block as ``[n_tok, f1 - f0]`` (token-major, or the transposed view of a feature-major array, as
    the engine gives on the CPU; then ``n_tok`` and ``a_center``, a value near each feature's mean
    token part, are required): the CPU path asks for it in cache-sized sub-blocks and buckets each
    one at once, so the GEMM's output is consumed while still in cache instead of written to memory
    and read back."""
    if isinstance(a, torch.Tensor):
        n_tok = int(a.shape[1])
        device = a.device
        if a_center is None:
            a_center = a.mean(1)
    elif n_tok is None or a_center is None:
        raise ValueError(
            "n_tok and a_center are required when the token parts come from a function"
        )
    else:
        device = cut.device
    backend = resolve_backend(backend, device)
    lims = list(lims) if lims is not None else [None] * len(bs)
    want_top = token_top is not None and backend == "numba"
    preps = [_prepare(b, cut, squares=want_top and i == 0) for i, b in enumerate(bs)]
    shift = a_center.to(
        ACC
    )  # near the mean is enough to keep sums of squares from cancelling; the exact mean follows
    if backend == "numba":
        return _numba_blocks(
            a,
            shift.numpy(),
            n_tok,
            preps,
            top_k,
            want_tok_sum,
            lims,
            token_top,
            None if want_tok_sum else screen,
            None if histograms is None else (*histograms, bs[0], cut),
        )
    full = a if isinstance(a, torch.Tensor) else a(0, int(cut.shape[0])).T.contiguous()
    results = []
    for b, prep, lim in zip(bs, preps, lims):
        if backend == "triton":
            out = _triton_block(full, prep, shift, top_k, want_tok_sum, lim)
        else:
            out = _torch_block(
                full, prep["s"], prep["b64"], prep["pb"], shift, cut, b, top_k, want_tok_sum, lim
            )
        results.append({"a_mean": shift + out.pop("u_sum") / n_tok, **out})
    return results


def additive_block(
    a: Float[torch.Tensor, "F n_tok"],
    b: Float[torch.Tensor, "F n_pos"],
    cut: Float[torch.Tensor, " F"],
    backend: str = "auto",
    *,
    top_k: int = 20,
    want_tok_sum: bool = False,
    lim: Float[torch.Tensor, " F"] | None = None,
) -> dict[str, torch.Tensor]:
    """Exact sums for a block of ``F`` features from their additive parts (see module docstring).

    Args:
        a: token parts of the pre-activation (feature-major).
        b: position parts.
        cut: the feature fires iff ``a + b > cut`` (and then equals ``a + b``).
        backend: ``"numba"``, ``"torch"`` or ``"auto"`` (see :func:`resolve_backend`).
        top_k: how many top tokens (by mean over positions) to return (at least 1 is kept).
        want_tok_sum: also return ``tok_sum``.
        lim: also return ``below_val``, ``below_idx`` ``[F]``: the largest token value ``<= lim``
            and its token.

    Returns float64 tensors on the device of ``a``: ``count`` (tokens firing), ``sum`` (of
    activations) and ``var`` (population variance over tokens) ``[F, n_pos]``; ``a_mean`` ``[F]``;
    ``tok_var`` ``[F]`` (variance over tokens of each token's mean over positions); ``top_val``,
    ``top_idx`` ``[F, k]``; ``tok_sum`` ``[F, n_tok]`` (each token's activation summed over
    positions) when asked."""
    return additive_blocks(
        a, [b], cut, backend, top_k=top_k, want_tok_sum=want_tok_sum, lims=[lim]
    )[0]
