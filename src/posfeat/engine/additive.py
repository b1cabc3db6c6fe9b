"""Exact sums for a block of features from their additive parts ``pre[t, p] = a[t] + b[p]``.

Two formulations of the same sums, held to the brute-force enumeration by the same tests:

* ``"numba"`` (CPU): sort each feature's ``n_pos`` thresholds ``cut - b``, drop every token value
  into its bucket among them (a binary search) while accumulating count, sum and sum of squares
  per bucket; suffix sums over the buckets give every position (:mod:`posfeat.engine.kernel`).
* ``"torch"`` (any device, the GPU path): sort each feature's ``n_tok`` token values once; then a
  position's firing tokens are a suffix of the sorted values, so its count, sum and sum of squares
  are one ``searchsorted`` of its threshold plus float64 prefix sums. No scatter, no atomics.

Both accumulate token values shifted by their mean ``K``: with ``q = count/n_tok``, ``m1, m2`` the
shifted sums over firing tokens divided by ``n_tok`` and ``c = K + b``, the variance over tokens is
``m2 - m1^2 + 2 c m1 (1 - q) + c^2 q (1 - q)``, which does not cancel when activations are large
and nearly constant.
"""

from __future__ import annotations

import torch
from jaxtyping import Float

from ..core.errors import PosfeatError
from .kernel import HAVE_NUMBA, bucket_sums, position_sums

ACC = torch.float64  # accumulation dtype for every sum
BACKENDS = ("auto", "numba", "torch")


def resolve_backend(backend: str, device: torch.device) -> str:
    """``"auto"``: numba for CPU tensors when installed, else torch."""
    if backend not in BACKENDS:
        raise PosfeatError(f"Unknown backend {backend!r}; use 'auto', 'numba' or 'torch'.")
    if backend == "numba" and device.type != "cpu":
        raise PosfeatError(f"The numba backend runs on the CPU only, but the tensors are on {device}; use backend='torch' or 'auto'.")
    if backend == "auto":
        return "numba" if (HAVE_NUMBA and device.type == "cpu") else "torch"
    return backend


def token_summary(tok_mean: Float[torch.Tensor, "F n_tok"], top_k: int) -> dict[str, torch.Tensor]:
    """Variance over tokens, and the top ``max(top_k, 1)`` tokens, of each token's mean activation over positions."""
    top = torch.topk(tok_mean, min(max(top_k, 1), tok_mean.shape[1]), dim=1)
    return {"tok_var": tok_mean.var(dim=1, correction=0), "top_val": top.values, "top_idx": top.indices}


def _variance(count: torch.Tensor, S1: torch.Tensor, S2: torch.Tensor, c: torch.Tensor, n_tok: int) -> torch.Tensor:
    q, m1, m2 = count / n_tok, S1 / n_tok, S2 / n_tok
    return (m2 - m1 * m1 + 2 * c * m1 * (1 - q) + c * c * q * (1 - q)).clamp(min=0)


def _numba_block(a: torch.Tensor, s: torch.Tensor, order: torch.Tensor, bs: torch.Tensor, pb: torch.Tensor, shift: torch.Tensor,
                 top_k: int, want_tok_sum: bool, lim: torch.Tensor | None) -> dict[str, torch.Tensor]:
    k = bucket_sums(a.numpy(), s.numpy(), pb.numpy(), shift.numpy(), max(top_k, 1), want_tok_sum, None if lim is None else lim.numpy())
    count, psum, var = position_sums(k, order.numpy(), bs.numpy(), shift.numpy(), a.shape[1])
    out = {name: torch.from_numpy(v) for name, v in k.items() if name not in ("cnt", "s1", "s2")}
    u_sum = torch.from_numpy(k["s1"].sum(1))
    return {"count": torch.from_numpy(count), "sum": torch.from_numpy(psum), "var": torch.from_numpy(var), "u_sum": u_sum, **out}


def _torch_block(a: torch.Tensor, s: torch.Tensor, b64: torch.Tensor, pb: torch.Tensor, shift: torch.Tensor, cut: torch.Tensor,
                 b: torch.Tensor, top_k: int, want_tok_sum: bool, lim: torch.Tensor | None) -> dict[str, torch.Tensor]:
    n_tok, n_pos = a.shape[1], b.shape[1]
    a_sorted, a_order = a.sort(dim=1)
    u = a_sorted.to(ACC) - shift[:, None]
    zero = torch.zeros(a.shape[0], 1, dtype=ACC, device=a.device)
    P1, P2 = torch.cat([zero, u.cumsum(1)], 1), torch.cat([zero, (u * u).cumsum(1)], 1)
    idx = torch.searchsorted(a_sorted, (cut[:, None] - b).contiguous(), right=True)  # tokens not firing at each position
    count = (n_tok - idx).to(ACC)
    S1, S2 = P1[:, -1:] - P1.gather(1, idx), P2[:, -1:] - P2.gather(1, idx)
    c = shift[:, None] + b64
    kk = torch.searchsorted(s, a.contiguous())  # per token: thresholds strictly below its value
    tok_sum = kk.to(ACC) * a.to(ACC) + pb.gather(1, kk)
    out = {"count": count, "sum": S1 + c * count, "var": _variance(count, S1, S2, c, n_tok), "u_sum": P1[:, -1],
           **token_summary(tok_sum / n_pos, top_k)}
    if want_tok_sum:
        out["tok_sum"] = tok_sum
    if lim is not None:
        j = torch.searchsorted(a_sorted, lim[:, None].contiguous(), right=True)[:, 0]  # values <= lim: the first j
        has = j > 0
        pick = (j - 1).clamp(min=0)[:, None]
        out["below_val"] = torch.where(has, a_sorted.gather(1, pick)[:, 0].to(ACC), torch.full_like(shift, float("-inf")))
        out["below_idx"] = torch.where(has, a_order.gather(1, pick)[:, 0], torch.full_like(j, -1))
    return out


def additive_block(a: Float[torch.Tensor, "F n_tok"], b: Float[torch.Tensor, "F n_pos"], cut: Float[torch.Tensor, " F"],
                   backend: str = "auto", *, top_k: int = 20, want_tok_sum: bool = False,
                   lim: Float[torch.Tensor, " F"] | None = None) -> dict[str, torch.Tensor]:
    """Exact sums for a block of ``F`` features from their additive parts (see module docstring).

    Args:
        a: token parts of the pre-activation (feature-major).
        b: position parts.
        cut: the feature fires iff ``a + b > cut`` (and then equals ``a + b``).
        backend: ``"numba"``, ``"torch"`` or ``"auto"`` (see :func:`resolve_backend`).
        top_k: how many top tokens (by mean over positions) to return (at least 1 is kept).
        want_tok_sum: also return ``tok_sum``.
        lim: also return ``below_val``, ``below_idx`` ``[F]``: the largest token value ``<= lim`` and its token.

    Returns float64 tensors on the device of ``a``: ``count`` (tokens firing), ``sum`` (of activations)
    and ``var`` (population variance over tokens) ``[F, n_pos]``; ``a_mean`` ``[F]``; ``tok_var`` ``[F]``
    (variance over tokens of each token's mean over positions); ``top_val``, ``top_idx`` ``[F, k]``;
    ``tok_sum`` ``[F, n_tok]`` (each token's activation summed over positions) when asked.
    """
    backend = resolve_backend(backend, a.device)
    thr = cut[:, None] - b  # [F, n_pos]
    s, order = thr.sort(dim=1)
    b64 = b.to(ACC)
    bs = b64.gather(1, order)  # position parts in firing order (largest first)
    pb = torch.cat([torch.zeros(b.shape[0], 1, dtype=ACC, device=a.device), bs.cumsum(1)], dim=1)
    shift = a.mean(1).to(ACC)  # near the mean is enough to keep sums of squares from cancelling; the exact mean follows
    if backend == "numba":
        out = _numba_block(a, s, order, bs, pb, shift, top_k, want_tok_sum, lim)
    else:
        out = _torch_block(a, s, b64, pb, shift, cut, b, top_k, want_tok_sum, lim)
    return {"a_mean": shift + out.pop("u_sum") / a.shape[1], **out}
