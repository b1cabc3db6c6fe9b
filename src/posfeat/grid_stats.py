"""Exact feature statistics over the whole layer-0 input grid ``tokens x positions``.

For a separable SAE (ReLU, JumpReLU) the pre-activation of feature ``f`` on token ``t`` at
position ``p`` is additive::

    pre[t, p, f] = a[t, f] + b[p, f]
    a = (W_E - b_dec) @ W_enc + b_enc        # [d_vocab, d_sae]
    b = W_pos @ W_enc                        # [n_ctx, d_sae]

and the feature fires (activation = pre > 0) iff ``a[t, f] > cut[f] - b[p, f]``. Sorting the
``n_pos`` thresholds ``cut - b[:, f]`` and bucketing every token value among them gives, through
suffix sums over buckets, the exact count, sum and sum of squares of activations at every
position; the bucket index of a token is the number of positions where it fires, and prefix
sums of the sorted ``b`` give its sum and sum of squares over positions. Everything below is
exact over all ``n_tok x n_pos`` inputs at the cost of one GEMM plus O(n_tok log n_pos) per
feature. :func:`brute_force_stats` enumerates the grid through ``sae.encode`` instead; it is the
reference the fast path is tested against, and the path for TopK SAEs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ._bucket_kernel import HAVE_NUMBA, bucket_sums
from .embeddings import Embeddings
from .errors import PosfeatError
from .sae import SAE

log = logging.getLogger(__name__)

ACC = torch.float64  # accumulation dtype for every sum


@dataclass(eq=False)
class GridStats:
    """Exact statistics of every feature over the grid ``tokens x positions``.

    Shapes: ``n_pos = len(positions)``, ``n_tok = len(tokens)``, ``k = top_k_tokens``.

    Attributes:
        positions: ``Int[ndarray, "n_pos"]`` positions used.
        tokens: ``Int[ndarray, "n_tok"]`` token ids used.
        mean_by_position, std_by_position, fire_by_position, pre_mean_by_position:
            ``Float64[ndarray, "d_sae n_pos"]``: mean, population std (ddof 0) and firing
            fraction (activation > 0) of the post-activation over tokens at each position;
            mean pre-activation.
        mean, fire: ``Float64[ndarray, "d_sae"]`` over the whole grid.
        variance: ``Float64[ndarray, "d_sae"]`` population variance over the whole grid.
        positional_score: ``[d_sae]`` max over positions of ``mean_by_position``.
        token_score: ``[d_sae]`` max over tokens of the token's mean over positions.
        position_share, token_share, interaction_share: ``[d_sae]`` two-way decomposition of
            ``variance``; they sum to 1, NaN for a constant feature.
        top_tokens: ``Int[ndarray, "d_sae k"]`` token ids with the highest mean over positions.
        top_token_means: ``Float64[ndarray, "d_sae k"]`` those means.
        exact: True for the additive fast path (and for enumeration, which is exact too);
            the field records ``method`` as "additive" or "enumeration".
    """

    positions: np.ndarray
    tokens: np.ndarray
    mean_by_position: np.ndarray
    std_by_position: np.ndarray
    fire_by_position: np.ndarray
    pre_mean_by_position: np.ndarray
    mean: np.ndarray
    fire: np.ndarray
    variance: np.ndarray
    positional_score: np.ndarray
    token_score: np.ndarray
    position_share: np.ndarray
    token_share: np.ndarray
    interaction_share: np.ndarray
    top_tokens: np.ndarray
    top_token_means: np.ndarray
    method: str = "additive"
    _mean_by_token: Callable[[Sequence[int]], np.ndarray] | None = field(default=None, repr=False)

    @property
    def d_sae(self) -> int:
        return int(self.mean.shape[0])

    def mean_by_token(self, features: Sequence[int] | np.ndarray) -> np.ndarray:
        """``Float64[ndarray, "n_features n_tok"]``: each token's exact mean activation over the
        positions, for the features asked (``n_tok = d_vocab`` unless a token subset was used)."""
        feats = np.atleast_1d(np.asarray(features, dtype=np.int64))
        if feats.size and (feats.min() < 0 or feats.max() >= self.d_sae):
            raise PosfeatError(f"Feature index out of range: features must lie in [0, {self.d_sae}).")
        if self._mean_by_token is None:
            raise PosfeatError("These statistics were loaded without their model; recompute them to get per-token means.")
        return self._mean_by_token(feats)


# ---------------------------------------------------------------------------- inputs
def _resolve_index(values: Any, n: int, what: str) -> torch.Tensor:
    """Validate an index set (``None`` = all of ``range(n)``, a range, a slice or a sequence)."""
    if values is None:
        return torch.arange(n)
    if isinstance(values, slice):
        values = range(*values.indices(n))
    idx = torch.as_tensor(np.asarray(list(values) if isinstance(values, range) else values), dtype=torch.long).reshape(-1)
    if idx.numel() == 0:
        raise PosfeatError(f"The {what} range is empty; give at least one {what[:-1] if what.endswith('s') else what}.")
    if int(idx.min()) < 0 or int(idx.max()) >= n:
        raise PosfeatError(
            f"{what} {int(idx.min())}..{int(idx.max())} fall outside [0, {n}); the model has {n} {what}."
        )
    return idx


def _check_pair(emb: Embeddings, sae: SAE) -> None:
    if emb.d_model != sae.d_in:
        raise PosfeatError(
            f"The embeddings have d_model {emb.d_model} (W_E {tuple(emb.W_E.shape)}) but the SAE reads "
            f"d_in {sae.d_in} (W_enc {tuple(sae.W_enc.shape)}); use an SAE trained on this model."
        )


def _token_part(emb: Embeddings, sae: SAE, tok: torch.Tensor, device: str | torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``[n_tok, d_model]`` token rows with ``b_dec`` subtracted when the SAE does."""
    x = emb.W_E[tok].to(device=device, dtype=dtype)
    if sae.apply_b_dec_to_input:
        x = x - sae.b_dec.to(device=device, dtype=dtype)
    return x


# ---------------------------------------------------------------------------- core block
def token_summary(tok_mean: torch.Tensor, top_k: int) -> dict[str, torch.Tensor]:
    """Variance over tokens, and the top ``max(top_k, 1)`` tokens, of ``tok_mean: [F, n_tok]`` (each
    token's mean activation over positions)."""
    top = torch.topk(tok_mean, min(max(top_k, 1), tok_mean.shape[1]), dim=1)
    return {"tok_var": tok_mean.var(dim=1, correction=0), "top_val": top.values, "top_idx": top.indices}


def additive_block(a: torch.Tensor, b: torch.Tensor, cut: torch.Tensor, backend: str = "auto", *, top_k: int = 20,
                   want_tok_sum: bool = False) -> dict[str, torch.Tensor]:
    """Exact sums for a block of ``F`` features from their additive parts.

    Args:
        a: ``Float[Tensor, "F n_tok"]`` token parts of the pre-activation (feature-major).
        b: ``Float[Tensor, "F n_pos"]`` position parts.
        cut: ``Float[Tensor, "F"]`` the feature fires iff ``a + b > cut`` (and then equals a + b).
        backend: ``"numba"`` (fused CPU kernel), ``"torch"`` (any device), or ``"auto"``
            (numba for CPU tensors when it is installed, else torch).
        top_k: how many top tokens (by mean over positions) to return (at least 1 is kept).
        want_tok_sum: also return ``tok_sum``.

    Returns float64 tensors ``[F, n_pos]``: ``count`` (tokens firing), ``sum`` (of activations) and
    ``var`` (population variance of activations over tokens) at each position; ``a_mean`` ``[F]``
    (mean token part); ``tok_var`` ``[F]`` (variance over tokens of each token's mean over
    positions); ``top_val``, ``top_idx`` ``[F, k]``; and ``tok_sum`` ``[F, n_tok]`` (each token's
    activation summed over positions) when asked.

    Variances come from sums of token values shifted by their mean ``K``: with ``q = count/n_tok``,
    ``m1, m2`` the shifted sums over firing tokens divided by ``n_tok`` and ``c = K + b``,
    ``var = m2 - m1^2 + 2 c m1 (1 - q) + c^2 q (1 - q)``, which does not cancel when activations
    are large and nearly constant.
    """
    F, n_pos = b.shape
    n_tok = a.shape[1]
    if backend == "auto":
        backend = "numba" if (HAVE_NUMBA and a.device.type == "cpu") else "torch"
    thr = cut[:, None] - b  # [F, n_pos]
    s, order = thr.sort(dim=1)
    b64 = b.to(ACC)
    bs = b64.gather(1, order)  # position parts in firing order (largest first)
    pb = torch.cat([torch.zeros(F, 1, dtype=ACC, device=a.device), bs.cumsum(1)], dim=1)
    shift = a.sum(1, dtype=ACC) / n_tok  # [F]
    if backend == "numba":
        k = bucket_sums(a.numpy(), s.numpy(), pb.numpy(), shift.numpy(), max(top_k, 1), want_tok_sum)
        out = {name: torch.from_numpy(v) for name, v in k.items()}
        cnt, s1, s2 = out.pop("cnt"), out.pop("s1"), out.pop("s2")
    elif backend == "torch":
        k = torch.searchsorted(s, a.contiguous())  # number of thresholds strictly below a
        a64 = a.to(ACC)
        u = a64 - shift[:, None]
        z = torch.zeros(F, n_pos + 1, dtype=ACC, device=a.device)
        cnt = z.clone().scatter_add_(1, k, torch.ones_like(u))
        s1 = z.clone().scatter_add_(1, k, u)
        s2 = z.clone().scatter_add_(1, k, u * u)
        tok_sum = k.to(ACC) * a64 + pb.gather(1, k)
        out = token_summary(tok_sum / n_pos, top_k)
        if want_tok_sum:
            out["tok_sum"] = tok_sum
    else:
        raise PosfeatError(f"Unknown backend {backend!r}; use 'auto', 'numba' or 'torch'.")

    def above(x: torch.Tensor) -> torch.Tensor:  # [F, n_pos]: sum over buckets k > j, unsorted
        r = x.flip(1).cumsum(1).flip(1)[:, 1:]
        return torch.empty_like(r).scatter_(1, order, r)

    count, S1, S2 = above(cnt), above(s1), above(s2)
    c = shift[:, None] + b64
    q, m1, m2 = count / n_tok, S1 / n_tok, S2 / n_tok
    var = (m2 - m1 * m1 + 2 * c * m1 * (1 - q) + c * c * q * (1 - q)).clamp(min=0)
    return {"count": count, "sum": S1 + c * count, "var": var, "a_mean": shift, **out}


def _finish(
    count: torch.Tensor,
    pos_sum: torch.Tensor,
    var_p: torch.Tensor,
    tok: dict[str, torch.Tensor],
    pre_mean: torch.Tensor,
    n_tok: int,
    top_k: int,
) -> dict[str, torch.Tensor]:
    """Means, spreads, scores and the two-way variance decomposition from exact sums.

    ``count, pos_sum, var_p, pre_mean: [F, n_pos]`` (``var_p``: population variance over tokens at
    each position); ``tok``: ``tok_var [F]``, ``top_val, top_idx [F, >= 1]`` over tokens' means.
    """
    n_pos = pos_sum.shape[1]
    mean_p = pos_sum / n_tok
    e2_p = var_p + mean_p * mean_p
    var_p = torch.where(var_p <= 1e-13 * e2_p, torch.zeros_like(var_p), var_p)  # below float64 resolution: zero
    m = mean_p.mean(1, keepdim=True)
    var_pos = ((mean_p - m) ** 2).mean(1)
    var_tok = tok["tok_var"]
    variance = var_p.mean(1) + var_pos
    scale = e2_p.mean(1).clamp(min=1e-300)
    constant = variance <= 1e-12 * scale
    safe = torch.where(constant, torch.ones_like(variance), variance)
    nan = torch.full_like(variance, float("nan"))
    pos_share = torch.where(constant, nan, var_pos / safe)
    tok_share = torch.where(constant, nan, var_tok / safe)
    inter = torch.where(constant, nan, (1.0 - pos_share - tok_share).clamp(min=0.0))
    k = min(top_k, n_tok)
    return {
        "mean_by_position": mean_p,
        "std_by_position": var_p.sqrt(),
        "fire_by_position": count / n_tok,
        "pre_mean_by_position": pre_mean,
        "mean": m[:, 0],
        "fire": (count.sum(1) / (n_tok * n_pos)),
        "variance": variance,
        "positional_score": mean_p.max(1).values,
        "token_score": tok["top_val"][:, 0].to(ACC),
        "position_share": pos_share,
        "token_share": tok_share,
        "interaction_share": inter,
        "top_tokens": tok["top_idx"][:, :k].long(),
        "top_token_means": tok["top_val"][:, :k].to(ACC),
    }


def _assemble(parts: list[dict[str, torch.Tensor]], pos: torch.Tensor, tok: torch.Tensor, method: str,
              mbt: Callable[[Sequence[int]], np.ndarray]) -> GridStats:
    cat = {key: torch.cat([p[key].cpu() for p in parts], dim=0) for key in parts[0]}
    out = {key: v.numpy().astype(np.float64) if v.is_floating_point() else v.numpy() for key, v in cat.items()}
    out["top_tokens"] = tok.numpy()[out["top_tokens"]]
    return GridStats(positions=pos.numpy(), tokens=tok.numpy(), method=method, _mean_by_token=mbt, **out)


def _default_chunk(n_tok: int, n_pos: int, device: str | torch.device) -> int:
    budget = 48_000_000 if torch.device(device).type == "cpu" else 256_000_000
    return max(1, budget // max(n_tok, n_pos, 1))


# ---------------------------------------------------------------------------- public API
def feature_stats(
    emb: Embeddings,
    sae: SAE,
    positions: Sequence[int] | range | slice | None = None,
    *,
    tokens: Sequence[int] | None = None,
    top_k_tokens: int = 20,
    device: str | torch.device = "cpu",
    feature_chunk: int | None = None,
    dtype: torch.dtype = torch.float32,
    progress: bool = False,
    backend: str = "auto",
) -> GridStats:
    """Exact statistics of every SAE feature over the grid ``tokens x positions``.

    Args:
        emb: token and positional embeddings; ``W_E[t] + W_pos[p]`` is the SAE input.
        sae: the SAE. ReLU and JumpReLU take the additive fast path; TopK is enumerated
            (with a warning: that costs ``n_tok * n_pos`` encoder passes).
        positions: positions to use (default all ``n_ctx``).
        tokens: token ids to use (default the whole vocabulary).
        top_k_tokens: how many top tokens to keep per feature.
        device: ``"cpu"`` or ``"cuda"``.
        feature_chunk: features per block (default: sized to keep memory near 1-2 GiB).
        dtype: precision of the GEMMs giving ``a`` and ``b`` (sums are always float64).
        progress: show a progress bar.
        backend: kernel for the bucket sums, see :func:`additive_block`.
    """
    _check_pair(emb, sae)
    pos = _resolve_index(positions, emb.n_ctx, "positions")
    tok = _resolve_index(tokens, emb.d_vocab, "tokens")
    if not sae.separable:
        log.warning(
            "SAE %r is %s: its activation is not separable, so statistics are computed by enumerating "
            "%d x %d inputs through the encoder (slow for large grids).",
            sae.name, sae.architecture, len(tok), len(pos),
        )
        return brute_force_stats(emb, sae, pos, tokens=tok, top_k_tokens=top_k_tokens, device=device,
                                 dtype=dtype, progress=True)
    chunk = feature_chunk or _default_chunk(len(tok), len(pos), device)
    x_tok = _token_part(emb, sae, tok, device, dtype)  # [n_tok, d_model]
    x_pos = emb.W_pos[pos].to(device=device, dtype=dtype)  # [n_pos, d_model]
    W_enc = sae.W_enc.to(device=device, dtype=dtype)
    b_enc = sae.b_enc.to(device=device, dtype=dtype)
    cut = sae.cut(dtype, device)

    def parts_of(feats: slice | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Feature-major additive parts ``a [F, n_tok]`` and ``b [F, n_pos]``."""
        W = W_enc[:, feats].T
        return torch.addmm(b_enc[feats][:, None], W, x_tok.T), W @ x_pos.T

    parts = []
    starts = range(0, sae.d_sae, chunk)
    for f0 in tqdm(starts, desc="grid statistics", unit="chunk", disable=not progress):
        f1 = min(f0 + chunk, sae.d_sae)
        a, b = parts_of(slice(f0, f1))
        s = additive_block(a, b, cut[f0:f1], backend, top_k=top_k_tokens)
        pre_mean = s["a_mean"][:, None] + b.to(ACC)
        parts.append(_finish(s["count"], s["sum"], s["var"], s, pre_mean, len(tok), top_k_tokens))

    def mean_by_token(features: Sequence[int]) -> np.ndarray:
        feats = torch.as_tensor(np.asarray(features), dtype=torch.long, device=device)
        a, b = parts_of(feats)
        return (additive_block(a, b, cut[feats], backend, top_k=1, want_tok_sum=True)["tok_sum"] / len(pos)).cpu().numpy()

    return _assemble(parts, pos, tok, "additive", mean_by_token)


def brute_force_stats(
    emb: Embeddings,
    sae: SAE,
    positions: Sequence[int] | range | slice | None = None,
    *,
    tokens: Sequence[int] | None = None,
    top_k_tokens: int = 20,
    device: str | torch.device = "cpu",
    feature_chunk: int | None = None,
    dtype: torch.dtype = torch.float64,
    token_chunk: int | None = None,
    progress: bool = False,
) -> GridStats:
    """The reference: enumerate every input ``W_E[t] + W_pos[p]`` through ``sae.encode``.

    Same arguments and result as :func:`feature_stats`; ``dtype`` defaults to float64 so the
    reference is as exact as the inputs. ``feature_chunk`` is accepted for symmetry and unused
    (TopK needs every feature of an input at once).
    """
    del feature_chunk
    _check_pair(emb, sae)
    pos = _resolve_index(positions, emb.n_ctx, "positions")
    tok = _resolve_index(tokens, emb.d_vocab, "tokens")
    n_pos, d_sae = len(pos), sae.d_sae
    step = token_chunk or max(1, 8_000_000 // max(1, n_pos * d_sae))
    x_pos = emb.W_pos[pos].to(device=device, dtype=dtype)
    count = torch.zeros(d_sae, n_pos, dtype=ACC, device=device)
    pos_sum, sq_dev, pre_sum = count.clone(), count.clone(), count.clone()
    tok_sum = torch.zeros(d_sae, len(tok), dtype=ACC, device=device)
    n_tok = len(tok)

    def chunks() -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        for t0 in tqdm(range(0, n_tok, step), desc="enumerating grid", unit="chunk", disable=not progress):
            t_idx = tok[t0:t0 + step]
            x = emb.W_E[t_idx].to(device=device, dtype=dtype)[:, None, :] + x_pos[None]  # [tc, n_pos, d]
            pre = sae.encode_pre(x)
            yield t0, pre, sae.activate(pre).to(ACC)

    for t0, pre, f in chunks():  # pass 1: counts and sums
        count += (f > 0).sum(0).T.to(ACC)
        pos_sum += f.sum(0).T
        pre_sum += pre.to(ACC).sum(0).T
        tok_sum[:, t0:t0 + f.shape[0]] = f.sum(1).T
    mean_p = pos_sum / n_tok
    for _, _, f in chunks():  # pass 2: squared deviations from the position means (no cancellation)
        sq_dev += ((f - mean_p.T[None]) ** 2).sum(0).T
    part = _finish(count, pos_sum, sq_dev / n_tok, token_summary(tok_sum / n_pos, top_k_tokens), pre_sum / n_tok, n_tok, top_k_tokens)

    def mean_by_token(features: Sequence[int]) -> np.ndarray:
        return (tok_sum[torch.as_tensor(np.asarray(features), dtype=torch.long)] / n_pos).cpu().numpy()

    return _assemble([part], pos, tok, "enumeration", mean_by_token)


__all__ = ["GridStats", "additive_block", "additive_parts", "brute_force_stats", "feature_stats", "token_summary"]


def additive_parts(
    emb: Embeddings, sae: SAE, tokens: torch.Tensor, positions: torch.Tensor, device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token and position parts of the pre-activation: ``pre[t, p] = a[t] + b[p]``.

    Returns ``a: Float[Tensor, "n_tok d_sae"]`` and ``b: Float[Tensor, "n_pos d_sae"]``.
    """
    _check_pair(emb, sae)
    W_enc = sae.W_enc.to(device=device, dtype=dtype)
    a = _token_part(emb, sae, tokens, device, dtype) @ W_enc + sae.b_enc.to(device=device, dtype=dtype)
    b = emb.W_pos[positions].to(device=device, dtype=dtype) @ W_enc
    return a, b
