"""Nulls drawn as distributions, and the geometric statistics that need the weights.

A verdict reads its value against a null drawn many times in the same run (seeded): the null's
median, the value's percentile among the draws and a one-sided p value ``(1 + #draws at least as
extreme) / (1 + draws)`` (:func:`posfeat.analyses.summaries.null_summary`). Every null here is
invariant to what its statistic is invariant to: the helix statistics are basis-free (a rotation of
``d_model`` changes neither them nor their nulls), and the random dictionary draws its directions
from the grid's own covariance, so it keeps the embeddings' geometry.

What is stored in ``summary.json["nulls"]`` is the draws themselves, so a verdict can be recomputed
from the files; :func:`posfeat.analyses.summaries.null_summary` turns draws and a value into what a
finding reports."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, no_type_check

import numpy as np
import torch
from scipy.special import ndtri

from ..core.embeddings import Embeddings
from ..core.sae import SAE
from ..core.tensors import to_numpy
from ..engine.grid_stats import feature_stats
from ..engine.kernel import HAVE_NUMBA, NUMBA_CACHE
from .classification import dependence, largest_gap_ratio

if HAVE_NUMBA:  # numba is a dependency, but the torch path works without it
    from numba import njit

#: Random walks drawn for the helix's low-dimensionality null (fewer for very long contexts, see
# :func:`random_walk_top3`).
HELIX_DRAWS = 100
#: Features in the random dictionary's pool, and how many the dictionary of one draw holds.
POOL_FEATURES = 1024
DICTIONARY_FEATURES = 128
DICTIONARY_DRAWS = 200
#: Draws (of the ``DICTIONARY_DRAWS``) on which the token profiles are computed (the costly
# statistic).
FLAT_DRAWS = 50
#: Tokens (seeded, from the token weights) on which each draw's token profiles are computed.
FLAT_TOKENS = 192
#: Neighbours within this many positions count as "next along the curve" (:func:`curve_order`).
CURVE_REACH = 2


@contextmanager
def one_thread() -> Iterator[None]:
    """torch on one thread for the block: the nulls are many small products, for which a second
    thread's synchronisation costs more than it brings (10x slower on a busy 2-core machine,
    measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------- the helix
def _rows(W_pos: torch.Tensor | np.ndarray, positions: Any) -> np.ndarray:
    W = (
        to_numpy(W_pos, np.float64)
        if isinstance(W_pos, torch.Tensor)
        else np.asarray(W_pos, dtype=np.float64)
    )
    return W[np.asarray(list(positions), dtype=np.int64)]


def top_share(rows: np.ndarray, k: int = 3) -> float:
    """Share of the rows' variance (mean-centred over rows) on their top ``k`` principal
    components."""
    x = rows - rows.mean(0)
    s = np.linalg.svd(x, compute_uv=False) ** 2
    return float(s[:k].sum() / s.sum()) if s.sum() > 0 else float("nan")


def tangent_share(rows: np.ndarray, k: int = 3) -> float:
    """Share of the rows' steps (``rows[i+1] - rows[i]``, summed squares) that lies in the span of
    their top ``k``
    principal components: a curve that lives in those ``k`` dimensions moves within them (about 1),
    diffusion moves in every direction (about ``k / d_model`` for an isotropic walk). Basis-free."""
    x = rows - rows.mean(0)
    steps = np.diff(rows, axis=0)
    if len(rows) < 3 or not (steps**2).sum() > 0:
        return float("nan")
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return float(((steps @ vt[:k].T) ** 2).sum() / (steps**2).sum())


def random_walk_top3(
    W_pos: torch.Tensor | np.ndarray, positions: Any, draws: int = HELIX_DRAWS, seed: int = 0
) -> np.ndarray:
    """Top-3 variance shares of ``draws`` isotropic random walks with the rows' own step sizes
    (seeded).

    Step ``i`` of a walk has the length of ``W_pos[positions[i+1]] - W_pos[positions[i]]`` and a
    uniformly random
    direction in ``d_model`` dimensions: diffusion with the pair's own step sizes and no preferred
    curve. Its leading principal components are cosines (a Brownian path's Karhunen-Loeve basis), so
    a random walk looks like a helix to the top-3 share alone (about 0.83 expected): beating these
    walks is what makes a low-dimensional curve more than diffusion. Rotation-invariant, as the
    statistics are. Where ``min(n, d_model) > 300`` fewer walks are drawn (50)."""
    rows = _rows(W_pos, positions)
    n, d = rows.shape
    steps = np.linalg.norm(np.diff(rows, axis=0), axis=1)
    if n < 3 or not np.isfinite(steps).all() or steps.sum() <= 0:
        return np.full(0, np.nan)
    draws = draws if min(n, d) <= 300 else min(draws, 50)
    g = torch.Generator().manual_seed(seed)
    size = torch.as_tensor(steps, dtype=torch.float64)[None, :, None]
    with one_thread():
        out = [_walk_shares(g, size, min(25, draws - lo), n, d) for lo in range(0, draws, 25)]
    return np.concatenate(out)


def _walk_shares(g: torch.Generator, size: torch.Tensor, m: int, n: int, d: int) -> np.ndarray:
    """Top-3 shares of ``m`` walks of ``n - 1`` steps of lengths ``size`` in ``d`` dimensions,
    batched."""
    u = torch.randn(m, n - 1, d, generator=g, dtype=torch.float64)
    walk = torch.cat(
        [
            torch.zeros(m, 1, d, dtype=torch.float64),
            (u / u.norm(dim=2, keepdim=True) * size).cumsum(1),
        ],
        1,
    )
    x = walk - walk.mean(1, keepdim=True)
    small = (
        x @ x.transpose(1, 2) if n <= d else x.transpose(1, 2) @ x
    )  # the same non-zero eigenvalues
    ev = torch.linalg.eigvalsh(small)
    return (ev[:, -3:].sum(1) / ev.sum(1)).numpy()


def curve_order(points: np.ndarray, reach: int = CURVE_REACH) -> tuple[float, np.ndarray]:
    """Whether points (rows in order, e.g. on the top 3 PCs) form a curve in their order: the share
    of rows whose nearest other row (Euclidean) lies within ``reach`` positions of it, and that
    nearest row's index for each.

    A curve traced in order scores about 1; a cloud whose rows are in no order about ``2 reach /
    n``. Basis-free (distances only)."""
    n = len(points)
    if n < 3:
        return float("nan"), np.zeros(0, dtype=np.int64)
    d2 = ((points[:, None, :] - points[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    nearest = d2.argmin(1)
    return float((np.abs(nearest - np.arange(n)) <= reach).mean()), nearest


#: Chord lengths (in positions) at which :func:`smoothness` looks for a curve that turns slowly.
CHORD_LAGS = (1, 2, 4, 8, 16)


def smoothness(rows: np.ndarray, lags: tuple[int, ...] = CHORD_LAGS) -> float:
    """How slowly the rows' path turns: the mean cosine between consecutive chords ``x[p+L] - x[p]``
    and ``x[p+2L] - x[p+L]``, at the chord length ``L`` (of :data:`CHORD_LAGS`, ``2L < n``) where it
    is largest.

    A smooth curve traced in order turns little from one chord to the next (a finely sampled helix:
    about 0.95;
    GPT-2 small's rows 1..63: 0.82 at ``L = 4``, where chords average out the rows' noise);
    diffusion's increments are independent (about 0 in any dimension), a cloud in no order doubles
    back (about -0.5). Basis-free."""
    n = len(rows)
    best = float("nan")
    for lag in lags:
        if 2 * lag >= n:
            break
        a = rows[lag : n - lag] - rows[: n - 2 * lag]
        b = rows[2 * lag :] - rows[lag : n - lag]
        den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        ok = den > 0
        if ok.any():
            value = float(((a * b).sum(1)[ok] / den[ok]).mean())
            best = value if not np.isfinite(best) else max(best, value)
    return best


def shuffled_step_smoothness(
    rows: np.ndarray, draws: int = HELIX_DRAWS, seed: int = 0
) -> np.ndarray:
    """:func:`smoothness` of walks made of the rows' own steps in a random order (seeded): the same
    steps, so the same sizes, directions and dimensions, with no order; the structureless look-alike
    for a curve."""
    steps = np.diff(rows, axis=0)
    if len(steps) < 2:
        return np.full(0, np.nan)
    rng = np.random.default_rng(seed)
    zero = np.zeros((1, rows.shape[1]))
    return np.array(
        [
            smoothness(np.vstack([zero, np.cumsum(steps[rng.permutation(len(steps))], 0)]))
            for _ in range(draws)
        ]
    )


def helix_statistics(
    W_pos: torch.Tensor, positions: Any, seed: int = 0
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """The helix finding's weight-side numbers: ``smoothness`` (:func:`smoothness`), ``curve_share``
    (:func:`curve_order` on the top 3 PCs, reported) and ``tangent_share`` (:func:`tangent_share`,
    reported), and the draws: random walks' top-3 shares and the rows' steps shuffled. Returns
    ``(statistics, draws)``."""
    rows = _rows(W_pos, positions)
    x = rows - rows.mean(0)
    empty: dict[str, list[float]] = {"helix_random_walk_top3": [], "helix_shuffled_steps": []}
    nan = {"smoothness": float("nan"), "curve_share": float("nan"), "tangent_share": float("nan")}
    if len(rows) < 4 or not np.isfinite(x).all() or not (x**2).sum() > 0:
        return nan, empty
    with one_thread():
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        share, _ = curve_order(x @ vt[:3].T)
        top3 = random_walk_top3(rows, range(len(rows)), seed=seed)
        shuffled = shuffled_step_smoothness(rows, seed=seed)
        stats = {
            "smoothness": smoothness(rows),
            "curve_share": share,
            "tangent_share": tangent_share(rows),
        }
    return stats, {
        "helix_random_walk_top3": [float(v) for v in top3],
        "helix_shuffled_steps": [float(v) for v in shuffled],
    }


# ---------------------------------------------------------------------------- the embeddings'
# geometry
def embedding_geometry(
    emb: Embeddings,
    context: int,
    level: float = 0.9,
    moments: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> dict[str, float]:
    """How W_E sits against W_pos: ``wpos_dims``, the principal components of
    ``W_pos[0..context-1]`` that reach ``level`` of its variance; ``we_share_in_wpos``, the share of
    W_E's variance (centred over tokens) in their span; ``random_share``, what a random subspace of
    that dimension would hold (``wpos_dims / d_model``); and the two embeddings' total variances. A
    share far below the random one means token and position live in different directions, so some
    disjointness follows from the geometry alone."""
    Wp = to_numpy(emb.W_pos[:context], np.float64)
    Wp = Wp - Wp.mean(0)
    _, cov_t = moments or token_moments(emb.W_E)
    d = emb.d_model
    _, s, vt = np.linalg.svd(Wp, full_matrices=False)
    var = s**2
    total_pos = float(var.sum() / max(1, len(Wp)))
    total_tok = float(torch.trace(cov_t))
    if not var.sum() > 0:
        return {
            "wpos_dims": 0,
            "we_share_in_wpos": float("nan"),
            "random_share": float("nan"),
            "wpos_variance": total_pos,
            "we_variance": total_tok,
        }
    k = int(np.searchsorted(np.cumsum(var) / var.sum(), level) + 1)
    basis = torch.as_tensor(vt[:k], dtype=torch.float64, device=cov_t.device)
    inside = float(torch.trace(basis @ cov_t @ basis.T))
    return {
        "wpos_dims": k,
        "we_share_in_wpos": inside / total_tok if total_tok > 0 else float("nan"),
        "random_share": k / d,
        "wpos_variance": total_pos,
        "we_variance": total_tok,
    }


# ---------------------------------------------------------------------------- the random dictionary
@dataclass
class DictionaryDraws:
    """Per draw of the random dictionary: the statistics its live features give (``draws`` values
    each)."""

    disjoint: np.ndarray
    positional_share: np.ndarray
    gap_ratio: np.ndarray
    token_flat: np.ndarray
    live_share: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "disjoint": [float(v) for v in self.disjoint],
            "positional_share": [float(v) for v in self.positional_share],
            "gap_ratio": [float(v) for v in self.gap_ratio],
            "token_flat": [float(v) for v in self.token_flat],
            "live_share": self.live_share,
        }


def token_moments(W_E: torch.Tensor, rows: int = 8192) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean ``[d_model]`` and covariance ``[d_model, d_model]`` of W_E's rows (float64), summed over
    blocks of ``rows`` token rows so that no float64 copy of W_E is made (a GPT-2-sized one is 300
    MB)."""
    n, d = W_E.shape
    total = torch.zeros(d, dtype=torch.float64, device=W_E.device)
    second = torch.zeros(d, d, dtype=torch.float64, device=W_E.device)
    for lo in range(0, n, rows):
        block = W_E[lo : lo + rows].double()
        total += block.sum(0)
        second += block.T @ block
    mean = total / max(1, n)
    return mean, second / max(1, n) - torch.outer(mean, mean)


def _grid_covariance(
    emb: Embeddings, context: int, moments: tuple[torch.Tensor, torch.Tensor] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance ``[d_model, d_model]`` of the inputs ``W_E[t] + W_pos[p]`` over the
    uniform grid (float64); ``moments``: W_E's (:func:`token_moments`) when the caller has them."""
    mu_t, cov_t = moments or token_moments(emb.W_E)
    Wp = emb.W_pos[:context].double()
    mu_p = Wp.mean(0)
    return mu_t + mu_p, cov_t + (Wp - mu_p).T @ (Wp - mu_p) / Wp.shape[0]


def geometric_dictionary(
    emb: Embeddings,
    sae: SAE,
    context: int,
    fire: np.ndarray,
    seed: int = 0,
    n_pool: int = POOL_FEATURES,
    moments: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[SAE, np.ndarray]:
    """A ReLU dictionary of ``n_pool`` random features that keeps the grid's geometry: each encoder
    direction is drawn from ``N(0, Sigma)``, ``Sigma`` the inputs' covariance over the grid (so
    directions weigh token and position as the embeddings do), and each bias puts its firing share,
    under a Gaussian approximation of its pre-activation over the grid, at that of a live feature of
    the SAE drawn at random (``fire``, exact). Returns the dictionary (on the pair's device) and the
    target firing shares."""
    g = torch.Generator().manual_seed(seed)
    mu, cov = _grid_covariance(emb, context, moments)
    with (
        one_thread()
    ):  # a small eigendecomposition: a second thread costs more than it brings (measured)
        evals, evecs = torch.linalg.eigh(cov.cpu())
    root = evecs * evals.clamp(min=0).sqrt()  # root @ root.T = cov
    z = torch.randn(emb.d_model, n_pool, generator=g, dtype=torch.float64)
    W = root @ z  # [d_model, n_pool]
    W = W / W.norm(dim=0, keepdim=True).clamp(min=1e-300)
    sd = (W * (cov.cpu() @ W)).sum(0).clamp(min=0).sqrt()
    live = fire[np.isfinite(fire) & (fire > 0)]
    pick = (
        torch.randint(len(live), (n_pool,), generator=g).numpy()
        if len(live)
        else np.zeros(n_pool, dtype=np.int64)
    )
    target = np.clip(live[pick] if len(live) else np.full(n_pool, 0.5), 1e-6, 1 - 1e-6)
    z_cut = torch.as_tensor(ndtri(1 - target), dtype=torch.float64)
    bias = -(mu.cpu() @ W) - z_cut * sd  # fires where (pre - mean) / sd > z_cut
    dev = sae.device
    rand = SAE.from_arrays(
        W.float().to(dev),
        W.T.float().contiguous().to(dev),
        bias.float().to(dev),
        torch.zeros(emb.d_model, device=dev),
        apply_b_dec_to_input=False,
        context_size=context,
        name="random dictionary",
    )
    return rand, target


if HAVE_NUMBA:

    @njit(cache=NUMBA_CACHE, boundscheck=False, nogil=True)
    @no_type_check
    def _std_kernel(a, b, out):  # pragma: no cover
        """``out[t, f]``: the population standard deviation over positions ``p`` of ``relu(a[t, f] +
        b[p, f])`` (float32 sums, as torch makes them), in float64 by two passes."""
        T, F = a.shape
        C = b.shape[0]
        # one thread, as the nulls' torch (a parallel kernel also takes longer to compile)
        for t in range(T):
            mu = np.zeros(F)
            for p in range(C):
                for f in range(F):
                    v = a[t, f] + b[p, f]
                    mu[f] += v if v > 0 else np.float32(0.0)
            for f in range(F):
                mu[f] /= C
            m2 = np.zeros(F)
            for p in range(C):
                for f in range(F):
                    v = a[t, f] + b[p, f]
                    d = (v if v > 0 else np.float32(0.0)) - mu[f]
                    m2[f] += d * d
            for f in range(F):
                out[t, f] = np.sqrt(m2[f] / C)


def _profile_std(a: torch.Tensor, b: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """``act.std(1, unbiased=False)`` for ``act = relu(a[:, None] + b[None])``: by
    :func:`_std_kernel` on the CPU (torch's own, Welford's in float64, takes 23 ms on one thread for
    192 x 128 x 128, the kernel 1.4 ms; both round the same float64 value to float32), else torch."""
    if not (HAVE_NUMBA and act.device.type == "cpu" and act.dtype == torch.float32):
        return act.std(1, unbiased=False)
    out = np.empty((a.shape[0], a.shape[1]), np.float32)
    _std_kernel(a.contiguous().numpy(), b.contiguous().numpy(), out)
    return torch.from_numpy(out)


def _token_flat_share(
    a: torch.Tensor,
    b: torch.Tensor,
    positional: np.ndarray,
    weights: np.ndarray,
    k: int,
    flat_cv: float,
    min_features: int,
) -> float:
    """The token-profiles statistic for one draw on the token sample: share (weighted) of tokens
    with at least ``min_features`` non-positional features among their top ``k`` whose profiles are
    all but ``1 - flat_token`` flat. ``a [n_tok, F]``, ``b [C, F]`` are the draw's additive parts;
    the flat-token share is fixed at 0.9 here as in the rule."""
    act = (a[:, None, :] + b[None, :, :]).relu_()  # [n_tok, C, F]
    mean, std = act.mean(1), _profile_std(a, b, act)
    top = torch.argsort(-mean, dim=1, stable=True)[:, :k]
    m_top = mean.gather(1, top)
    s_top = std.gather(1, top)
    pos = torch.as_tensor(positional, device=a.device)[top]
    usable = (m_top > 0) & ~pos
    flat = usable & (s_top <= flat_cv * m_top)
    n_use = usable.sum(1).cpu().numpy()
    n_flat = flat.sum(1).cpu().numpy()
    keep = n_use >= min_features
    if not keep.any():
        return float("nan")
    passes = n_flat[keep] >= 0.9 * n_use[keep]
    w = weights[keep]
    return float((w * passes).sum() / w.sum()) if w.sum() > 0 else float(passes.mean())


def dictionary_draws(
    emb: Embeddings,
    sae: SAE,
    context: int,
    fire: np.ndarray,
    *,
    disjoint_cv: float,
    positional_share: float,
    flat_cv: float,
    flat_min_features: int,
    k: int,
    weights: np.ndarray | None = None,
    seed: int = 0,
    draws: int = DICTIONARY_DRAWS,
    size: int | None = None,
    moments: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> DictionaryDraws:
    """The random dictionary's statistics, ``draws`` times: each draw is ``size`` features (default:
    as many as the SAE has live ones, so statistics that depend on the count, like the largest drop,
    compare like with like) of one pool of :func:`geometric_dictionary` (without replacement within
    a draw while the pool is large enough, else with), exact over the grid (one pass of the engine
    for the pool); the token profiles on the first :data:`FLAT_DRAWS` draws, :data:`FLAT_TOKENS`
    tokens drawn from the token weights, :data:`DICTIONARY_FEATURES` features each.

    Per draw: the share of its live features that depend on one axis only (:func:`dependence` at
    most ``disjoint_cv`` on the other), the share the classification rule calls positional, the
    largest drop of its sorted positional scores (:func:`largest_gap_ratio`), and the token-profiles
    statistic."""
    rand, _ = geometric_dictionary(emb, sae, context, fire, seed=seed, moments=moments)
    st = feature_stats(emb, rand, range(context))
    live = np.asarray(st.fire) > 0
    pos_dep = dependence(st.mean, st.variance, st.token_share)
    tok_dep = dependence(st.mean, st.variance, st.position_share)
    pure = np.fmin(pos_dep, tok_dep) <= disjoint_cv
    is_pos = np.nan_to_num(st.position_share) >= positional_share
    rng = np.random.default_rng(seed)
    n_pool = rand.d_sae
    live_sae = int((np.asarray(fire) > 0).sum())
    size = max(2, live_sae) if size is None else size  # as many features as the SAE has live ones
    g = torch.Generator().manual_seed(seed)
    w_all = np.ones(emb.d_vocab) if weights is None else np.asarray(weights, dtype=np.float64)
    p = w_all / w_all.sum() if w_all.sum() > 0 else None
    toks = torch.as_tensor(
        rng.choice(emb.d_vocab, size=min(FLAT_TOKENS, emb.d_vocab), replace=False, p=p)
        if p is not None and (p > 0).sum() >= min(FLAT_TOKENS, emb.d_vocab)
        else torch.randperm(emb.d_vocab, generator=g)[:FLAT_TOKENS].numpy()
    )
    dev = rand.device
    a = emb.W_E[toks.to(emb.W_E.device)] @ rand.W_enc + rand.b_enc  # [n_tok, pool]
    b = emb.W_pos[:context] @ rand.W_enc  # [C, pool]
    tw = np.ones(len(toks))  # tokens were drawn by their weights: each counts once
    out = {
        key: np.full(draws, np.nan)
        for key in ("disjoint", "positional_share", "gap_ratio", "token_flat")
    }
    with one_thread():
        for i in range(draws):
            _one_draw(
                i,
                out,
                rng,
                n_pool,
                size,
                live,
                pure,
                is_pos,
                st.positional_score,
                a,
                b,
                dev,
                tw,
                k,
                flat_cv,
                flat_min_features,
            )
    return DictionaryDraws(
        out["disjoint"],
        out["positional_share"],
        out["gap_ratio"],
        out["token_flat"],
        float(np.mean(live)),
    )


def _one_draw(
    i: int,
    out: dict[str, np.ndarray],
    rng: np.random.Generator,
    n_pool: int,
    size: int,
    live: np.ndarray,
    pure: np.ndarray,
    is_pos: np.ndarray,
    scores: np.ndarray,
    a: torch.Tensor,
    b: torch.Tensor,
    dev: torch.device,
    tw: np.ndarray,
    k: int,
    flat_cv: float,
    flat_min_features: int,
) -> None:
    """Draw ``i`` of :func:`dictionary_draws`: ``size`` of the pool's live features, their
    statistics into ``out[...][i]``; the token profiles on ``DICTIONARY_FEATURES`` features of the
    pool for the first draws."""
    pool = np.nonzero(live)[0]
    if len(pool):
        lv = rng.choice(pool, size=size, replace=size > len(pool))
        out["disjoint"][i] = float(pure[lv].mean())
        out["positional_share"][i] = float(is_pos[lv].mean())
        out["gap_ratio"][i] = largest_gap_ratio(np.asarray(scores)[lv])
    if i >= FLAT_DRAWS:
        return
    sub = rng.choice(n_pool, size=min(DICTIONARY_FEATURES, n_pool), replace=False)
    cols = torch.as_tensor(sub, device=dev)
    out["token_flat"][i] = _token_flat_share(
        a[:, cols], b[:, cols], is_pos[sub] | ~live[sub], tw, k, flat_cv, flat_min_features
    )
