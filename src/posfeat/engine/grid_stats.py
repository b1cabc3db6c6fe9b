"""Exact feature statistics over the whole layer-0 input grid ``tokens x positions``.

For a separable SAE (ReLU, JumpReLU) the pre-activation of feature ``f`` on token ``t`` at
position ``p`` is additive::

    pre[t, p, f] = a[t, f] + b[p, f]
    a = (W_E - b_dec) @ W_enc + b_enc        # [d_vocab, d_sae]
    b = W_pos @ W_enc                        # [n_ctx, d_sae]

and the feature fires (activation = pre > 0) iff ``a[t, f] > cut[f] - b[p, f]``. Bucketing every
token value among the sorted thresholds (:mod:`posfeat.engine.additive`) gives the exact count,
sum and variance of activations at every position and each token's sum over positions: everything
below is exact over all ``n_tok x n_pos`` inputs at the cost of one GEMM plus O(n_tok log n_pos)
per feature. :func:`brute_force_stats` enumerates the grid through ``sae.encode`` instead; it is
the reference the fast path is tested against, and the path for TopK SAEs.

Everything is computed on the device the SAE and embeddings live on; results are CPU numpy.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int

from ..core.embeddings import Embeddings
from ..core.errors import PosfeatError, arg
from ..core.memory import check_fits
from ..core.progress import progress_bar
from ..core.sae import SAE
from ..core.tensors import to_numpy
from ..io.sources import as_pair
from .additive import ACC, TokenTop, additive_block, additive_blocks, resolve_backend, token_summary
from .histogram import ActivationHistograms, CardHistograms
from .indices import IndexSet, check_dtype, check_pair, check_whole, resolve_index
from .screen import ESTIMATE_FEATURES, MAX_CANDIDATE_SHARE, Screen, bf16_fast, estimate_share

log = logging.getLogger(__name__)

_FLOAT_FIELDS = (
    "mean_by_position",
    "std_by_position",
    "fire_by_position",
    "pre_mean_by_position",
    "mean",
    "fire",
    "variance",
    "positional_score",
    "token_score",
    "position_share",
    "token_share",
    "interaction_share",
    "top_token_means",
)


@dataclass(eq=False)
class GridStats:
    """Exact statistics of every feature over the grid ``tokens x positions`` (CPU numpy, float64).

    Shapes: ``n_pos = len(positions)``, ``n_tok = len(tokens)``, ``k = top_k_tokens``.

    Attributes:
        positions: ``Int[ndarray, "n_pos"]`` positions used.
        tokens: ``Int[ndarray, "n_tok"]`` token ids used.
        mean_by_position: ``Float64[ndarray, "d_sae n_pos"]``: mean of the post-activation over
            tokens at each position.
        std_by_position: ``Float64[ndarray, "d_sae n_pos"]``: its population std (ddof 0) over
            tokens.
        fire_by_position: ``Float64[ndarray, "d_sae n_pos"]``: firing fraction (activation > 0) over
            tokens.
        pre_mean_by_position: ``Float64[ndarray, "d_sae n_pos"]``: mean pre-activation over tokens.
        mean: ``Float64[ndarray, "d_sae"]`` mean activation over the whole grid.
        fire: ``Float64[ndarray, "d_sae"]`` firing fraction over the whole grid.
        variance: ``Float64[ndarray, "d_sae"]`` population variance over the whole grid.
        positional_score: ``[d_sae]`` max over positions of ``mean_by_position``.
        token_score: ``[d_sae]`` max over tokens of the token's mean over positions.
        position_share: ``[d_sae]`` share of ``variance`` explained by the position main effect (the
            three shares sum to 1; NaN for a constant feature).
        token_share: ``[d_sae]`` share explained by the token main effect.
        interaction_share: ``[d_sae]`` the rest: token x position interaction.
        top_tokens: ``Int[ndarray, "d_sae k"]`` token ids with the highest mean over positions.
        top_token_means: ``Float64[ndarray, "d_sae k"]`` those means.
        method: ``"additive"`` (the fast path) or ``"enumeration"`` (both exact).
        token_top: each token's top features by exact mean over these positions (:class:`TokenTop`),
            when :func:`grid_statistics` was asked for them (``token_top_k``) and ran on the numba
            path; else None.
        histograms: the cards' exact activation histograms and top inputs over these positions
            (:class:`~posfeat.engine.histogram.ActivationHistograms`), when :func:`grid_statistics`
            was asked for them (``histograms``) and ran on the numba path; else None.
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
    token_top: TokenTop | None = field(default=None, repr=False)
    histograms: ActivationHistograms | None = field(default=None, repr=False)
    _mean_by_token: Callable[[np.ndarray], np.ndarray] | None = field(default=None, repr=False)

    @property
    def d_sae(self) -> int:
        return int(self.mean.shape[0])

    def __getstate__(self) -> dict[str, Any]:
        """Pickles as its arrays: the per-token means need the model (:meth:`mean_by_token` then
        says so)."""
        state = dict(self.__dict__)
        state["_mean_by_token"] = None
        return state

    def mean_by_token(
        self, features: Sequence[int] | np.ndarray
    ) -> Float[np.ndarray, "n_features n_tok"]:
        """``Float64[ndarray, "n_features n_tok"]``: each token's exact mean activation over the
        positions, for the features asked (``n_tok = d_vocab`` unless a token subset was used)."""
        feats = np.atleast_1d(np.asarray(features, dtype=np.int64))
        if feats.size and (feats.min() < 0 or feats.max() >= self.d_sae):
            raise PosfeatError(
                f"Feature index out of range: features must lie in [0, {self.d_sae})."
            )
        if self._mean_by_token is None:
            raise PosfeatError(
                "These statistics were loaded without their model; recompute them to get per-token "
                "means."
            )
        return self._mean_by_token(feats)


@dataclass
class NeverFiring:
    """For each feature, the strongest token that never fires inside the context (exact, all
    tokens).

    ``value``: ``Float64[ndarray, "d_sae"]`` its token part ``a`` (``-inf`` when every token fires
    somewhere inside); ``token``: its id (-1 when none). Past the context it fires at ``p`` iff
    ``value + b[p] > cut``, with activation ``value + b[p]``.
    """

    value: np.ndarray
    token: np.ndarray


# ---------------------------------------------------------------------------- inputs
def on_device(
    emb: Embeddings, sae: SAE, device: str | torch.device | None
) -> tuple[Embeddings, SAE]:
    """The pair, moved to ``device`` when one is given (the convenience of older calls); else as it
    is."""
    return (emb, sae) if device is None else (emb.to(device), sae.to(device))


def additive_parts(
    emb: Embeddings,
    sae: SAE,
    tokens: Int[torch.Tensor, " n_tok"],
    positions: Int[torch.Tensor, " n_pos"],
    dtype: torch.dtype = torch.float32,
) -> tuple[Float[torch.Tensor, "n_tok d_sae"], Float[torch.Tensor, "n_pos d_sae"]]:
    """Token and position parts of the pre-activation, ``pre[t, p] = a[t] + b[p]``, on the pair's
    device."""
    dev = check_pair(emb, sae)
    W_enc = sae.W_enc.to(dtype)
    x = emb.W_E[tokens.to(dev)].to(dtype)
    if sae.apply_b_dec_to_input:
        x = x - sae.b_dec.to(dtype)
    return torch.addmm(sae.b_enc.to(dtype), x, W_enc), emb.W_pos[positions.to(dev)].to(
        dtype
    ) @ W_enc


# ---------------------------------------------------------------------------- finishing
def finish(
    count: torch.Tensor,
    pos_sum: torch.Tensor,
    var_p: torch.Tensor,
    tok: dict[str, torch.Tensor],
    pre_mean: torch.Tensor,
    n_tok: int,
    top_k: int,
    out: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """Means, spreads, scores and the two-way variance decomposition from exact sums (float64, ``[F,
    n_pos]`` inputs); ``out``: where to write the ``[F, n_pos]`` ones (:meth:`_Collector.views`),
    else new tensors."""
    n_pos = pos_sum.shape[1]
    out = out or {}
    mean_p = torch.div(pos_sum, n_tok, out=out.get("mean_by_position"))
    e2_p = var_p + mean_p * mean_p
    var_p = torch.where(
        var_p <= 1e-13 * e2_p, torch.zeros_like(var_p), var_p
    )  # below float64 resolution: zero
    m = mean_p.mean(1, keepdim=True)
    var_pos = ((mean_p - m) ** 2).mean(1)
    variance = var_p.mean(1) + var_pos
    constant = variance <= 1e-12 * e2_p.mean(1).clamp(min=1e-300)
    safe = torch.where(constant, torch.ones_like(variance), variance)
    nan = torch.full_like(variance, float("nan"))
    pos_share = torch.where(constant, nan, var_pos / safe)
    tok_share = torch.where(constant, nan, tok["tok_var"] / safe)
    k = min(top_k, n_tok)
    # Firing shares divide by a tensor, not a Python number: CUDA multiplies by the reciprocal of a
    # scalar divisor, one ulp away from the CPU's quotient, and counts must give the same shares on
    # every device.
    n = torch.tensor(float(n_tok), dtype=ACC, device=count.device)
    return {
        "mean_by_position": mean_p,
        "std_by_position": torch.sqrt(var_p, out=out.get("std_by_position")),
        "fire_by_position": torch.div(count.to(ACC), n, out=out.get("fire_by_position")),
        "pre_mean_by_position": pre_mean,
        "mean": m[:, 0],
        "fire": count.sum(1).to(ACC) / (n * n_pos),
        "variance": variance,
        "positional_score": mean_p.max(1).values,
        "token_score": tok["top_val"][:, 0].to(ACC),
        "position_share": pos_share,
        "token_share": tok_share,
        "interaction_share": torch.where(
            constant, nan, (1.0 - pos_share - tok_share).clamp(min=0.0)
        ),
        "top_tokens": tok["top_idx"][:, :k].long(),
        "top_token_means": tok["top_val"][:, :k].to(ACC),
    }


#: The ``[F, n_pos]`` fields of :class:`GridStats`.
POSITION_FIELDS = (
    "mean_by_position",
    "std_by_position",
    "fire_by_position",
    "pre_mean_by_position",
)


class _Collector:
    """Fills preallocated CPU arrays block by block (no concatenation of the whole)."""

    def __init__(self, d_sae: int, n_pos: int, k: int) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.shapes = {
            "mean_by_position": (d_sae, n_pos),
            "std_by_position": (d_sae, n_pos),
            "fire_by_position": (d_sae, n_pos),
            "pre_mean_by_position": (d_sae, n_pos),
            "top_tokens": (d_sae, k),
            "top_token_means": (d_sae, k),
        }
        self.d_sae = d_sae

    def views(self, f0: int, n: int, device: torch.device) -> dict[str, torch.Tensor]:
        """Rows ``f0 .. f0+n`` of the ``[d_sae, n_pos]`` arrays as tensors to compute into (on the
        CPU; else none), so :meth:`add` has nothing to copy for them."""
        if device.type != "cpu":
            return {}
        for key in POSITION_FIELDS:
            if key not in self.arrays:
                # torch allocates in 4 KiB pages: numpy asks for huge pages here, which some
                # virtual machines fault in at a fifth of the speed (0.25 s against 0.04 s per
                # 200 MB measured on the AVX-512 Xeon of issue 31)
                self.arrays[key] = torch.empty(self.shapes[key], dtype=ACC).numpy()
        return {key: torch.from_numpy(self.arrays[key][f0 : f0 + n]) for key in POSITION_FIELDS}

    def add(self, f0: int, part: dict[str, torch.Tensor]) -> None:
        for key, v in part.items():
            arr = self.arrays.get(key)
            if arr is None:
                dtype = np.int64 if not v.is_floating_point() else np.float64
                arr = self.arrays[key] = np.empty(self.shapes.get(key, (self.d_sae,)), dtype=dtype)
            elif v.device.type == "cpu" and v.numel() and v.data_ptr() == arr[f0:].ctypes.data:
                continue  # computed in place (views)
            arr[f0 : f0 + v.shape[0]] = to_numpy(v)

    def stats(
        self,
        pos: torch.Tensor,
        tok: torch.Tensor,
        method: str,
        mbt: Callable[[np.ndarray], np.ndarray] | None,
    ) -> GridStats:
        out = dict(self.arrays)
        out["top_tokens"] = tok.numpy()[out["top_tokens"]]
        return GridStats(
            positions=pos.numpy(), tokens=tok.numpy(), method=method, _mean_by_token=mbt, **out
        )


class _TokenParts:
    """``parts(W_blk, bias, i0, i1)``: the token parts of features ``i0..i1-1`` of a block,
    ``[n_tok, i1 - i0]``.

    On the CPU that is the transposed view of a feature-major buffer (what the kernels read), filled
    by one GEMM in that orientation, ``W_blk[:, i0:i1].T @ x_tok.T`` (the same dot products as the
    token-major GEMM, bit for bit; measured on one core of an AVX-512 Xeon, a GPT-2-sized sub-block
    of 128 features: 82 ms, against 79 ms for token-major GEMMs of 2048 rows alone and 90 ms for
    those and the transposition of each into the buffer, which is what this did before); elsewhere
    one token-major GEMM. The buffer is kept for every call (no fresh pages, and page faults, per
    sub-block)."""

    def __init__(self, x_tok: torch.Tensor) -> None:
        self.x_tok = x_tok
        self.bufs: dict[str, torch.Tensor] = {}

    def _buffer(self, name: str, n: int) -> torch.Tensor:
        buf = self.bufs.get(name)
        if buf is None or buf.numel() < n:
            buf = self.bufs[name] = torch.empty(n, dtype=self.x_tok.dtype, device=self.x_tok.device)
        return buf[:n]

    def __call__(self, W_blk: torch.Tensor, bias: torch.Tensor, i0: int, i1: int) -> torch.Tensor:
        n_tok, n = self.x_tok.shape[0], i1 - i0
        if self.x_tok.device.type != "cpu":
            return torch.addmm(
                bias[i0:i1],
                self.x_tok,
                W_blk[:, i0:i1],
                out=self._buffer("out", n_tok * n).view(n_tok, n),
            )
        out = self._buffer("out", n * n_tok).view(n, n_tok)
        torch.addmm(bias[i0:i1, None], W_blk[:, i0:i1].T, self.x_tok.T, out=out)
        return out.T


def _default_chunk(n_tok: int, n_pos: int, device: torch.device) -> int:
    budget = 48_000_000 if device.type == "cpu" else 128_000_000
    return max(1, budget // max(n_tok, n_pos, 1))


def _never_firing(never: _Collector, tok: torch.Tensor) -> NeverFiring:
    """:class:`NeverFiring` from its collected columns (token positions in ``tok`` made token
    ids)."""
    idx = never.arrays["token"]
    return NeverFiring(
        value=never.arrays["value"],
        token=np.where(idx >= 0, tok.numpy()[np.clip(idx, 0, None)], -1),
    )


def _screen_for(
    screen: bool | None,
    backend: str,
    x_tok: torch.Tensor,
    W_enc: torch.Tensor,
    b_enc: torch.Tensor,
    cut: torch.Tensor,
    x_pos: list[torch.Tensor],
) -> Screen | None:
    """The bfloat16 screen of a :func:`grid_statistics` call (see its ``screen``), or None."""
    if backend != "numba" or screen is False or (screen is None and not bf16_fast()):
        return None
    if (
        screen is None
    ):  # worth it only for a sparse SAE: estimate on features spread over the whole SAE (their order says nothing)
        feats = torch.randperm(W_enc.shape[1], generator=torch.Generator().manual_seed(0))[
            :ESTIMATE_FEATURES
        ]
        W = W_enc[:, feats]
        row0 = (
            torch.stack([(cut[feats][:, None] - W.T @ xp.T).min(1).values for xp in x_pos])
            .min(0)
            .values
        )
        if estimate_share(x_tok, W, b_enc[feats], row0) > MAX_CANDIDATE_SHARE:
            return None
    return Screen(x_tok)


# ---------------------------------------------------------------------------- public API
def _token_rows(
    W_E: torch.Tensor, tok: torch.Tensor | None, b_dec: torch.Tensor | None, dtype: torch.dtype
) -> torch.Tensor:
    """The SAE's input rows of the tokens (``tok``, or all): ``W_E[tok] - b_dec`` where the SAE
    subtracts ``b_dec``, in ``dtype``."""
    x = (W_E if tok is None else W_E[tok]).to(dtype)
    return x if b_dec is None else x - b_dec.to(dtype)


def _mean_by_token(
    W_enc: torch.Tensor,
    b_enc: torch.Tensor,
    x_rows: Callable[[], torch.Tensor],
    xp: torch.Tensor,
    cut: torch.Tensor,
    backend: str,
) -> Callable[[np.ndarray], np.ndarray]:
    """Each token's exact mean activation over the positions ``xp`` for the features asked (the
    top-token lists use it). The token rows are made again at each call (``x_rows``), so the
    statistics do not keep a copy of the embedding (``W_E - b_dec`` at GPT-2's size: 154 MB)."""

    def mean_by_token(features: np.ndarray) -> np.ndarray:
        feats = torch.as_tensor(features, dtype=torch.long, device=W_enc.device)
        W = W_enc[:, feats].T
        a = torch.addmm(b_enc[feats][:, None], W, x_rows().T)
        return to_numpy(
            additive_block(a, W @ xp.T, cut[feats], backend, top_k=1, want_tok_sum=True)["tok_sum"]
            / xp.shape[0]
        )

    return mean_by_token


def _check_args(top_k_tokens: Any, feature_chunk: Any, dtype: Any) -> None:
    check_whole(top_k_tokens, "top_k_tokens", 0)
    if feature_chunk is not None:
        check_whole(feature_chunk, "feature_chunk", 1)
    check_dtype(dtype)


def grid_statistics(
    emb: Embeddings,
    sae: SAE,
    position_sets: Sequence[IndexSet],
    *,
    tokens: IndexSet = None,
    top_k_tokens: int = 20,
    feature_chunk: int | None = None,
    dtype: torch.dtype = torch.float32,
    progress: bool = False,
    backend: str = "auto",
    never_firing_context: int | None = None,
    token_top_k: int = 0,
    screen: bool | None = None,
    histograms: bool = False,
) -> tuple[list[GridStats], NeverFiring | None]:
    """Exact statistics over several position sets at once, computing each block's token parts once.

    Args:
        emb, sae: a separable pair on one device (ReLU, JumpReLU).
        position_sets: e.g. ``[range(context), range(n_ctx)]``; one :class:`GridStats` each.
        never_firing_context: also return :class:`NeverFiring` for the context
            ``0..never_firing_context-1``.
        token_top_k: also give the first set's :class:`GridStats` each token's top ``token_top_k``
            features by exact mean over its positions (``token_top``), from the same pass, on the
            numba path (CPU); elsewhere it stays None.
        screen: on the numba path, compute exact token parts only where a bfloat16 GEMM's bound says
            they may fire (:mod:`posfeat.engine.screen`; the same results). None: where the CPU has
            native bfloat16 and a seeded sample of features and tokens says the SAE is sparse enough
            to gain; True: always (however dense); False: never.
        histograms: also give the first set's :class:`GridStats` the cards' exact activation
            histograms and top inputs (``histograms``, :class:`~posfeat.engine.histogram
            .ActivationHistograms`) from the same pass, on the numba path (CPU) when that set is
            positions ``0..n-1`` and every token is in the grid; elsewhere it stays None.
        Other arguments: see :func:`feature_stats`.
    """
    dev = check_pair(emb, sae)
    _check_args(top_k_tokens, feature_chunk, dtype)
    if not sae.separable:
        raise PosfeatError(
            "grid_statistics needs a separable SAE (ReLU or JumpReLU); use feature_stats, which "
            "enumerates TopK SAEs."
        )
    backend = resolve_backend(backend, dev)
    sets = [resolve_index(p, emb.n_ctx, "positions") for p in position_sets]
    tok = resolve_index(tokens, emb.d_vocab, "tokens")
    chunk = feature_chunk or _default_chunk(len(tok), max(len(p) for p in sets), dev)
    W_enc, b_enc = sae.W_enc.to(dtype), sae.b_enc.to(dtype)
    x_rows = functools.partial(
        _token_rows,
        emb.W_E,
        None if tokens is None else tok.to(dev),
        sae.b_dec if sae.apply_b_dec_to_input else None,
        dtype,
    )
    x_tok = x_rows()
    x_mean = x_tok.mean(0).to(ACC)  # only needs to be near the mean (see additive_blocks)
    x_pos = [emb.W_pos[p.to(dev)].to(dtype) for p in sets]
    x_ctx = None if never_firing_context is None else emb.W_pos[:never_firing_context].to(dtype)
    cut = sae.cut(dtype)
    k = min(top_k_tokens, len(tok))
    cols = [_Collector(sae.d_sae, len(p), k) for p in sets]
    never = _Collector(sae.d_sae, 1, 1) if x_ctx is not None else None
    gemm = _TokenParts(x_tok)
    top = TokenTop.empty(len(tok), token_top_k) if token_top_k > 0 and backend == "numba" else None
    scr = _screen_for(screen, backend, x_tok, W_enc, b_enc, cut, x_pos)
    hist = None
    if (
        histograms
        and backend == "numba"
        and tokens is None
        and torch.equal(sets[0].cpu(), torch.arange(len(sets[0])))
    ):
        hist = CardHistograms(sae.d_sae, len(tok), len(sets[0]), to_numpy(cut))
    for f0 in progress_bar(
        range(0, sae.d_sae, chunk), desc="grid statistics", unit="block", enabled=progress
    ):
        fs = slice(f0, min(f0 + chunk, sae.d_sae))
        W, bias = W_enc[:, fs].T, b_enc[fs]
        token_parts = functools.partial(gemm, W_enc[:, fs].contiguous(), bias)
        if scr is not None:
            scr.set_block(W_enc[:, fs], bias)
        lim = (
            None if x_ctx is None else (cut[fs][:, None] - W @ x_ctx.T).min(1).values
        )  # never fires inside iff a <= lim
        bs = [W @ xp.T for xp in x_pos]  # [F, n_pos] each
        center = x_mean @ W_enc[:, fs].to(ACC) + b_enc[fs].to(
            ACC
        )  # each feature's mean token part (up to rounding)
        parts = additive_blocks(
            token_parts,
            bs,
            cut[fs],
            backend,
            n_tok=len(tok),
            a_center=center,
            top_k=top_k_tokens,
            lims=[None] * (len(bs) - 1) + [lim],
            token_top=None if top is None else (top, f0),
            screen=scr,
            histograms=None if hist is None else (hist, f0),
        )
        for b, s, col in zip(bs, parts, cols):
            v = col.views(f0, b.shape[0], dev)
            pre = torch.add(s["a_mean"][:, None], b.to(ACC), out=v.get("pre_mean_by_position"))
            col.add(f0, finish(s["count"], s["sum"], s["var"], s, pre, len(tok), top_k_tokens, v))
            if never is not None and "below_val" in s:
                never.add(f0, {"value": s["below_val"], "token": s["below_idx"]})

    stats = [
        col.stats(p, tok, "additive", _mean_by_token(W_enc, b_enc, x_rows, xp, cut, backend))
        for p, xp, col in zip(sets, x_pos, cols)
    ]
    stats[0].token_top = top
    stats[0].histograms = None if hist is None else hist.result()
    if scr is not None:
        log.debug("bfloat16 screen: %.4f of the token values were candidates", scr.share())
    return stats, None if never is None else _never_firing(never, tok)


def feature_stats(
    emb: Any,
    sae: Any,
    positions: IndexSet = None,
    *,
    tokens: IndexSet = None,
    top_k_tokens: int = 20,
    device: str | torch.device | None = None,
    feature_chunk: int | None = None,
    dtype: torch.dtype = torch.float32,
    progress: bool = False,
    backend: str = "auto",
    screen: bool | None = None,
) -> GridStats:
    """Exact statistics of every SAE feature over the grid ``tokens x positions``, computed where
    the pair lives.

    Args:
        emb: token and positional embeddings; ``W_E[t] + W_pos[p]`` is the SAE input (or anything
            :func:`posfeat.load_embeddings` accepts: a name, a folder, a model object).
        sae: the SAE (or anything :func:`posfeat.load_sae` accepts), on the same device. ReLU and
            JumpReLU take the additive fast path; TopK is
            enumerated (with a warning: that costs ``n_tok * n_pos`` encoder passes).
        positions: positions to use (default all ``n_ctx``).
        tokens: token ids to use (default the whole vocabulary).
        top_k_tokens: how many top tokens to keep per feature.
        device: move the pair there first (default: compute where it is).
        feature_chunk: features per block (default: sized to keep memory near 1-2 GiB).
        dtype: precision of the GEMMs giving ``a`` and ``b`` (sums are always float64).
        progress: show a progress bar.
        backend: ``"auto"`` (numba on the CPU, Triton on CUDA when installed), ``"numba"``,
            ``"triton"`` or ``"torch"``; see :mod:`posfeat.engine.additive`.
        screen: the numba path's bfloat16 screen (see :func:`grid_statistics`).
    """
    emb, sae = on_device(*as_pair(emb, sae), device)
    check_pair(emb, sae)
    _check_args(top_k_tokens, feature_chunk, dtype)
    if not sae.separable:
        n_tok = emb.d_vocab if tokens is None else len(tokens)
        n_pos = len(resolve_index(positions, emb.n_ctx, "positions"))
        log.warning(
            "SAE %r is %s: its activation is not separable, so statistics are computed by "
            "enumerating "
            "%d x %d inputs through the encoder (slow for large grids).",
            sae.name,
            sae.architecture,
            n_tok,
            n_pos,
        )
        return brute_force_stats(
            emb,
            sae,
            positions,
            tokens=tokens,
            top_k_tokens=top_k_tokens,
            dtype=dtype,
            progress=progress,
        )
    (stats,), _ = grid_statistics(
        emb,
        sae,
        [positions],
        tokens=tokens,
        top_k_tokens=top_k_tokens,
        feature_chunk=feature_chunk,
        dtype=dtype,
        progress=progress,
        backend=backend,
        screen=screen,
    )
    return stats


def brute_force_stats(
    emb: Embeddings,
    sae: SAE,
    positions: IndexSet = None,
    *,
    tokens: IndexSet = None,
    top_k_tokens: int = 20,
    device: str | torch.device | None = None,
    feature_chunk: int | None = None,
    dtype: torch.dtype = torch.float64,
    token_chunk: int | None = None,
    progress: bool = False,
) -> GridStats:
    """The reference: enumerate every input ``W_E[t] + W_pos[p]`` through ``sae.encode``, where the
    pair lives.

    Same arguments and result as :func:`feature_stats`; ``dtype`` defaults to float64 so the
    reference is as exact as the inputs. ``feature_chunk`` is accepted for symmetry and unused
    (TopK needs every feature of an input at once).
    """
    emb, sae = on_device(*as_pair(emb, sae), device)
    dev = check_pair(emb, sae)
    _check_args(top_k_tokens, feature_chunk, dtype)
    if token_chunk is not None:
        check_whole(token_chunk, "token_chunk", 1)
    del feature_chunk
    pos = resolve_index(positions, emb.n_ctx, "positions")
    tok = resolve_index(tokens, emb.d_vocab, "tokens")
    n_pos, n_tok, d_sae = len(pos), len(tok), sae.d_sae
    step = token_chunk or max(1, 8_000_000 // max(1, n_pos * d_sae))
    width = torch.finfo(dtype).bits // 8
    check_fits(
        8 * d_sae * (4 * n_pos + n_tok)
        + 3 * min(step, n_tok) * n_pos * (d_sae * max(width, 8) + emb.d_model * width),
        f"Enumerating {n_tok} tokens x {n_pos} positions through {d_sae} features",
        "give fewer tokens, positions or a smaller "
        f"{arg('token_chunk')}, or use feature_stats (exact, in far less memory, for ReLU and "
        "JumpReLU SAEs)",
        dev,
    )
    x_pos = emb.W_pos[pos.to(dev)].to(dtype)
    count = torch.zeros(d_sae, n_pos, dtype=ACC, device=dev)
    pos_sum, sq_dev, pre_sum = count.clone(), count.clone(), count.clone()
    tok_sum = torch.zeros(d_sae, n_tok, dtype=ACC, device=dev)

    def chunks() -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        for t0 in progress_bar(
            range(0, n_tok, step), desc="enumerating grid", unit="chunk", enabled=progress
        ):
            x = (
                emb.W_E[tok[t0 : t0 + step].to(dev)].to(dtype)[:, None, :] + x_pos[None]
            )  # [tc, n_pos, d]
            pre = sae.encode_pre(x)
            yield t0, pre, sae.activate(pre).to(ACC)

    for t0, pre, f in chunks():  # pass 1: counts and sums
        count += (f > 0).sum(0).T.to(ACC)
        pos_sum += f.sum(0).T
        pre_sum += pre.to(ACC).sum(0).T
        tok_sum[:, t0 : t0 + f.shape[0]] = f.sum(1).T
    mean_p = pos_sum / n_tok
    for _, _, f in chunks():  # pass 2: squared deviations from the position means (no cancellation)
        sq_dev += ((f - mean_p.T[None]) ** 2).sum(0).T
    col = _Collector(d_sae, n_pos, min(top_k_tokens, n_tok))
    col.add(
        0,
        finish(
            count,
            pos_sum,
            sq_dev / n_tok,
            token_summary(tok_sum / n_pos, top_k_tokens),
            pre_sum / n_tok,
            n_tok,
            top_k_tokens,
        ),
    )

    def mean_by_token(features: np.ndarray) -> np.ndarray:
        return to_numpy(tok_sum[torch.as_tensor(features, dtype=torch.long, device=dev)] / n_pos)

    return col.stats(pos, tok, "enumeration", mean_by_token)
