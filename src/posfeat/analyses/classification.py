"""Feature classes from the exact variance shares, firing runs of positional features, and the
feature table.

The rule (thresholds are parameters of :func:`classify`):

* ``dead``: never fires on the grid within the training context;
* ``positional``: the position main effect explains at least ``positional_share`` (default 0.5)
  of the feature's variance over the grid;
* ``semantic``: the token main effect explains at least ``semantic_share`` (default 0.5);
* ``mixed``: neither (interaction, or both effects, dominate).

The note's own method, the sorted positional score and its drop-off, is kept beside it: the cut
by the largest gap in the sorted scores, and Kneedle's knee within a stated window.

A *run* of a feature is a maximal range of consecutive positions where it fires on at least half
of the tokens; its *main span* is the run holding its peak.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..core.embeddings import Embeddings
from ..core.sae import SAE
from ..core.tensors import to_numpy
from ..engine.additive import TokenTop
from ..engine.grid_stats import GridStats, additive_parts
from .reconstruction_kernel import fused_cpu, token_sums

KINDS = ("positional", "semantic", "mixed", "dead")
SHARE_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
FEATURE_COLUMNS = [
    "feature",
    "kind",
    "positional_score",
    "token_score",
    "position_share",
    "token_share",
    "interaction_share",
    "position_dependence",
    "token_dependence",
    "fire",
    "mean",
    "peak_position",
    "peak_mean",
    "span_start",
    "span_end",
    "span_width",
    "runs",
    "n_runs",
    "outside_span_share",
    "top_tokens",
    "pre_zero_crossings",
    "pre_sine_cycles",
    "pre_sine_r2",
]


def classify(
    stats: GridStats, positional_share: float = 0.5, semantic_share: float = 0.5
) -> np.ndarray:
    """``Str[ndarray, "d_sae"]`` kind of every feature by the rule in the module docstring."""
    kind = np.full(stats.d_sae, "mixed", dtype=object)
    ps = np.nan_to_num(stats.position_share, nan=0.0)
    ts = np.nan_to_num(stats.token_share, nan=0.0)
    kind[ts >= semantic_share] = "semantic"
    kind[ps >= positional_share] = "positional"
    kind[stats.fire <= 0] = "dead"
    return kind


def counts_by_threshold(
    stats: GridStats, thresholds: tuple[float, ...] = SHARE_THRESHOLDS
) -> dict[str, dict[str, int]]:
    """Counts of each kind when both share thresholds are ``t``, for each ``t``: how the classes
    move near their borders."""
    out = {}
    for t in thresholds:
        kinds = classify(stats, t, t)
        out[f"{t:g}"] = {k: int((kinds == k).sum()) for k in KINDS}
    return out


def firing_runs(row: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs ``(i, j)`` (inclusive indices) where the boolean ``row`` is True."""
    padded = np.concatenate([[False], np.asarray(row, dtype=bool), [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2])]


def spans(stats: GridStats, min_fire: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Peak position and the main span (the run holding the peak) of every feature.

    Returns ``peak, start, end`` (``Int[ndarray, "d_sae"]``, positions from ``stats.positions``;
    ``start = end = -1`` where the feature fires on fewer than ``min_fire`` of the tokens at its
    peak)."""
    peak_i = stats.mean_by_position.argmax(1)
    start = np.full(stats.d_sae, -1)
    end = np.full(stats.d_sae, -1)
    fire = stats.fire_by_position >= min_fire
    for f in np.nonzero(fire[np.arange(stats.d_sae), peak_i])[0]:
        for i, j in firing_runs(fire[f]):
            if i <= peak_i[f] <= j:
                start[f], end[f] = stats.positions[i], stats.positions[j]
                break
    return stats.positions[peak_i], start, end


def runs_table(
    stats: GridStats, start: np.ndarray, end: np.ndarray, min_fire: float = 0.5
) -> pd.DataFrame:
    """Per feature: ``runs`` (``"a-b;c-d"``, positions), ``n_runs`` and ``outside_span_share``.

    ``outside_span_share``: the share of the feature's summed mean activation over the positions
    of ``stats`` that lies outside its main span (all of it when it has no span; NaN when dead).
    """
    pos = stats.positions
    fire = stats.fire_by_position >= min_fire
    texts, n = [], np.zeros(stats.d_sae, dtype=np.int64)
    for f in range(stats.d_sae):
        runs = firing_runs(fire[f]) if fire[f].any() else []
        texts.append(";".join(f"{pos[i]}-{pos[j]}" for i, j in runs))
        n[f] = len(runs)
    mass = stats.mean_by_position
    total = mass.sum(1)
    inside = np.zeros(stats.d_sae)
    for f in np.nonzero(start >= 0)[0]:
        inside[f] = mass[f, (pos >= start[f]) & (pos <= end[f])].sum()
    outside = np.where(total > 0, 1.0 - inside / np.where(total > 0, total, 1.0), np.nan)
    return pd.DataFrame(
        {"runs": texts, "n_runs": n, "outside_span_share": np.clip(outside, 0.0, 1.0)}
    )


def knee_kneedle(scores: np.ndarray, window: int = 1000) -> int:
    """Count of features above the knee of the sorted scores (Kneedle within the top ``window``
    ranks).

    The knee is the rank farthest below the chord from the top score to the score at ``window``,
    both axes scaled to [0, 1]. The answer depends on ``window``; it is always stated with it.
    """
    s = np.sort(np.asarray(scores, dtype=np.float64))[::-1][: max(3, min(window, len(scores)))]
    if len(s) < 3 or s[0] <= s[-1]:
        return 0
    x = np.linspace(0, 1, len(s))
    y = (s - s[-1]) / (s[0] - s[-1])
    return int(np.argmax((1 - x) - y)) + 1


def gap_window(n: int) -> int:
    """How many top ranks the largest-gap cut looks at: a tenth of the features, at least 100 (or
    all)."""
    return min(n, max(n // 10, 100))


#: Scores under this share of the top score are left out of the largest-gap cut: ratios between
# near-dead features' tiny scores are noise (a random dictionary's rarest features made its largest
# drop heavy-tailed), not a separation.
GAP_FLOOR = 0.01


def _gap_scores(scores: np.ndarray, window: int | None = None) -> np.ndarray:
    """The positive scores the largest-gap cut looks at, sorted descending: the top
    :func:`gap_window` ranks, down to :data:`GAP_FLOOR` of the top score."""
    s = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    s = s[np.isfinite(s) & (s > 0)]
    s = s[: window or gap_window(len(s))]
    return s[s >= GAP_FLOOR * s[0]] if len(s) else s


def knee_largest_gap(scores: np.ndarray, window: int | None = None) -> int:
    """Count of features above the largest drop between consecutive sorted scores, measured as a
    ratio (log scale).

    Looks at the top :func:`gap_window` ranks of the positive scores, down to :data:`GAP_FLOOR` of
    the top one."""
    s = _gap_scores(scores, window)
    if len(s) < 2:
        return len(s)
    return int(np.argmax(np.log(s[:-1]) - np.log(s[1:]))) + 1


def largest_gap_ratio(scores: np.ndarray, window: int | None = None) -> float:
    """The drop at :func:`knee_largest_gap`'s cut, as a ratio of consecutive sorted scores (NaN when
    there is none)."""
    s = _gap_scores(scores, window)
    if len(s) < 2:
        return float("nan")
    return float(np.max(s[:-1] / s[1:]))


def overlap(top: set[int], rule: set[int]) -> dict[str, int | float]:
    """How a score-based set agrees with the rule's set: sizes, intersection, Jaccard."""
    both = len(top & rule)
    return {
        "count": len(top),
        "rule_positional": len(rule),
        "both": both,
        "jaccard": both / max(1, len(top | rule)),
    }


def feature_table(
    stats: GridStats, emb: Embeddings, kind: np.ndarray, n_top_tokens: int = 5
) -> pd.DataFrame:
    """One row per feature with the columns ``FEATURE_COLUMNS``."""
    peak, start, end = spans(stats)
    width = np.where(start >= 0, end - start + 1, 0)
    top = [
        " | ".join(emb.token_str(int(t)) for t in row[:n_top_tokens]) for row in stats.top_tokens
    ]
    df = pd.DataFrame(
        {
            "feature": np.arange(stats.d_sae),
            "kind": kind,
            "positional_score": stats.positional_score,
            "token_score": stats.token_score,
            "position_share": stats.position_share,
            "token_share": stats.token_share,
            "interaction_share": stats.interaction_share,
            "position_dependence": dependence(stats.mean, stats.variance, stats.token_share),
            "token_dependence": dependence(stats.mean, stats.variance, stats.position_share),
            "fire": stats.fire,
            "mean": stats.mean,
            "peak_position": peak,
            "peak_mean": stats.mean_by_position.max(1),
            "span_start": start,
            "span_end": end,
            "span_width": width,
            "top_tokens": top,
        }
    )
    df = pd.concat(
        [df, runs_table(stats, start, end), sinusoid_check(stats.pre_mean_by_position)], axis=1
    )
    return df[FEATURE_COLUMNS]


def dependence(mean: np.ndarray, variance: np.ndarray, share: np.ndarray) -> np.ndarray:
    """How much a feature varies along one axis of the grid with the other held fixed, as a share of
    its activation.

    With ``share`` the token share of the two-way decomposition, this is the *position dependence*:
    the RMS of ``f(t, p) - mean_p f(t, p)`` over the grid, over the RMS of ``f``; that is, on the
    tokens where the feature fires, how far it strays across positions, relative to its activation
    (tokens where it never fires add nothing to either). With ``share`` the position share, it is
    the *token dependence* (across tokens, at the positions where it
    fires). From the exact grid moments: the within-token sum of squares is ``N variance (1 -
    token_share)`` and the raw one ``N (variance + mean^2)``, so the value is ``sqrt(variance (1 -
    share) / (variance + mean^2))``, in [0, 1]. ``f = g(token) + h(position)`` with ``h`` constant
    on the firing tokens gives 0 position dependence; a token feature whose activation on its token
    swings from 0.3 to 0.7 with position gives about 0.23. NaN for a feature that never fires."""
    mean, variance, share = (np.asarray(v, dtype=np.float64) for v in (mean, variance, share))
    second = variance + mean**2
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.sqrt(np.clip(variance * (1 - np.nan_to_num(share)), 0, None) / second)
    return np.where(second > 0, out, np.nan)


#: Highest frequency the sinusoid fit tries, in cycles over the profile (positional features rise
# above zero once or a few times: they are slow), and the grid steps below and above 4 cycles (then
# refined around the best).
SINE_MAX_CYCLES = 32.0


def _sine_fit(x: np.ndarray, freqs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best ``R^2`` over ``freqs`` (cycles over the profile) of ``c + A cos + B sin`` for each row
    of ``x`` (mean removed) and the frequency that gives it."""
    n = x.shape[1]
    t = np.arange(n) / n
    best = np.full(len(x), -np.inf)
    arg = np.zeros(len(x))
    ss = (x**2).sum(1)
    for lo in range(0, len(freqs), 256):
        f = freqs[lo : lo + 256]
        ang = 2 * np.pi * f[:, None] * t[None, :]  # [G, n]
        basis = np.stack([np.cos(ang), np.sin(ang)], 1)  # [G, 2, n]
        basis = basis - basis.mean(2, keepdims=True)  # orthogonal to the constant
        q, _ = np.linalg.qr(
            np.transpose(basis, (0, 2, 1))
        )  # [G, n, 2]: an orthonormal basis of each pair's span
        # [rows, G * 2], one GEMM: torch's (MKL's, on the CPU: twice as fast as numpy's OpenBLAS
        # on a 2-core AVX-512 Xeon for these shapes)
        coef = (
            torch.from_numpy(np.require(x, np.float64, ["C", "W"]))
            @ torch.from_numpy(
                np.require(np.transpose(q, (1, 0, 2)).reshape(n, -1), np.float64, ["C", "W"])
            )
        ).numpy()
        np.square(coef, out=coef)  # in place: no second [rows, G * 2] array
        r2 = np.add(coef[:, 0::2], coef[:, 1::2])  # [rows, G]: each pair's sum, as .sum over it
        j = r2.argmax(1)
        val = r2[np.arange(len(x)), j]
        better = val > best
        best[better], arg[better] = val[better], f[j[better]]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ss > 0, best / np.where(ss > 0, ss, 1), np.nan), arg


def sinusoid_check(pre: np.ndarray) -> pd.DataFrame:
    """How sinusoid-like each feature's mean pre-activation over the positions is (the note:
    positional features' pre-activations look like sinusoids that rise above zero once within the
    context).

    ``pre_zero_crossings``: sign changes of the mean pre-activation over the positions;
    ``pre_sine_cycles``: the frequency, in cycles over positions 1..n-1 (any real number, not only
    whole cycles), of the best least-squares sinusoid ``c + A cos(2 pi f t) + B sin(2 pi f t)``
    (phase and frequency free); ``pre_sine_r2``: the share of the profile's variance it explains (1
    for any pure sinusoid, about 3/n for noise). Position 0 is left out of the fit (it is special: a
    spike there would hide the curve of the others). Frequencies are searched on a grid up to
    :data:`SINE_MAX_CYCLES` cycles, in steps of 1/64 cycle up to 4 cycles and 1/16 above: a pure
    sinusoid between two grid frequencies still scores above 0.997."""
    pre = np.asarray(pre, dtype=np.float64)
    sign = np.sign(pre)
    crossings = ((sign[:, 1:] * sign[:, :-1]) < 0).sum(1)
    body = pre[:, 1:] if pre.shape[1] > 3 else pre
    n = body.shape[1]
    x = body - body.mean(1, keepdims=True)
    if n < 3:
        return pd.DataFrame(
            {"pre_zero_crossings": crossings, "pre_sine_cycles": np.nan, "pre_sine_r2": np.nan}
        )
    top = min(SINE_MAX_CYCLES, n / 2)
    grid = np.unique(np.r_[np.arange(1, 257) / 64, np.arange(64, top * 16 + 1) / 16])
    r2, freq = _sine_fit(x, grid[(grid > 0) & (grid <= top)])
    return pd.DataFrame(
        {"pre_zero_crossings": crossings, "pre_sine_cycles": freq, "pre_sine_r2": np.clip(r2, 0, 1)}
    )


@torch.no_grad()
def _sorted_position_parts(
    emb: Embeddings, sae: SAE, pos: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each feature's position parts over ``pos`` sorted ascending ``[F, C]``, their suffix sums and
    suffix sums of squares ``[F, C + 1]`` (``suf1[f, i]`` = sum of ``bs[f, i:]``), float64."""
    _, b = additive_parts(emb, sae, torch.arange(1, device=pos.device), pos, dtype=torch.float64)
    bs = torch.sort(b.T, dim=1).values.contiguous()
    zero = torch.zeros(bs.shape[0], 1, dtype=torch.float64, device=pos.device)
    return (
        bs,
        torch.cat([bs.flip(1).cumsum(1).flip(1), zero], 1),
        torch.cat([bs.pow(2).flip(1).cumsum(1).flip(1), zero], 1),
    )


def token_flatness(
    emb: Embeddings,
    sae: SAE,
    kinds: np.ndarray,
    context: int,
    k: int,
    flat_cv: float,
    weights: np.ndarray | None = None,
    chunk: int = 2048,
    top: TokenTop | None = None,
) -> pd.DataFrame:
    """Per token, exact over positions ``0..context-1``: how many of its top ``k`` features (by mean
    activation, among those it activates) are flat (``std / mean <= flat_cv`` over the positions),
    non-positional and positional apart (the columns of
    ``posfeat.analyses.findings.TOKEN_COLUMNS``).

    ``top``: each token's top features over that context from the grid statistics' own pass
    (``grid_statistics(..., token_top_k=k)``, :class:`posfeat.engine.additive.TokenTop`), when there
    is one: then nothing is recomputed (unless ``kinds`` calls a feature dead that a token
    activates: dead features rank last, which the lists do not know). Else, for a separable SAE a
    token's activation on feature ``f`` at ``p`` is ``act(a_t + b_p)``; with the ``b_p`` sorted per
    feature and their suffix sums, the count, sum and sum of squares over the positions where it
    fires (``b_p > cut - a_t``) come from one binary search per (token, feature): ``n a + S1`` and
    ``n a^2 + 2 a S1 + S2``. A TopK SAE is enumerated token by token over the context."""
    if top is not None and top.feature.shape != (emb.d_vocab, k):
        raise ValueError(
            f"top lists {top.feature.shape} do not match {emb.d_vocab} tokens and k={k}"
        )
    if top is not None and (kinds[top.feature[top.mean > 0]] == "dead").any():
        # a feature called dead that a token activates ranks last here: the lists do not
        # know it, so recompute
        top = None
    if top is not None:
        rows = [
            _top_rows(
                torch.arange(emb.d_vocab),
                torch.from_numpy(top.mean),
                torch.from_numpy(top.feature).clamp(min=0),
                torch.from_numpy(top.var),
                torch.as_tensor(kinds == "positional"),
                flat_cv,
            )
        ]
    else:
        rows = _flatness_chunks(emb, sae, kinds, context, k, flat_cv, chunk)
    df = pd.concat(rows, ignore_index=True)
    n_vocab = emb.d_vocab
    w = np.ones(n_vocab) if weights is None else np.asarray(weights, dtype=np.float64)
    df.insert(1, "token", [emb.token_str(int(t)) for t in df.token_id])
    df.insert(2, "weight", w / w.sum() if w.sum() > 0 else np.full(n_vocab, 1 / n_vocab))
    return df


def _flatness_chunks(
    emb: Embeddings, sae: SAE, kinds: np.ndarray, context: int, k: int, flat_cv: float, chunk: int
) -> list[pd.DataFrame]:
    """:func:`token_flatness`'s rows, computed chunk of tokens by chunk (when the grid statistics
    gave no top lists)."""
    dev = sae.device
    pos = torch.arange(context, device=dev)
    positional = torch.as_tensor(kinds == "positional", device=dev)
    dead = torch.as_tensor(kinds == "dead", device=dev)
    cut = sae.cut(torch.float64)
    if sae.separable:
        bs, suf1, suf2 = _sorted_position_parts(emb, sae, pos)
    else:
        chunk = max(1, min(chunk, 8_000_000 // max(1, context * sae.d_sae)))
    rows = []
    fused = fused_cpu(sae, dev)
    for t0 in range(0, emb.d_vocab, chunk):
        toks = torch.arange(t0, min(emb.d_vocab, t0 + chunk), device=dev)
        if fused:  # the same arithmetic in one pass per token (posfeat.analyses.reconstruction_kernel.token_sums)
            a, _ = additive_parts(emb, sae, toks, pos[:1], dtype=torch.float64)
            sums = token_sums(
                to_numpy(a),
                to_numpy(cut),
                to_numpy(bs),
                to_numpy(suf1),
                to_numpy(suf2),
                to_numpy(dead),
                to_numpy(positional),
                k,
                flat_cv,
            )
            r = {name: torch.from_numpy(v) for name, v in sums.items()}
            rows.append(
                _token_rows(
                    toks,
                    r["n_non"],
                    r["n_flat"],
                    r["max_cv"],
                    r["bent"],
                    r["n_pos"],
                    r["n_pos_flat"],
                )
            )
            continue
        if sae.separable:
            a, _ = additive_parts(emb, sae, toks, pos[:1], dtype=torch.float64)  # [T, F]
            idx = torch.searchsorted(
                bs, (cut[None, :] - a).T.contiguous(), right=True
            ).T  # [T, F]: positions with b <= cut - a
            mean = ((context - idx) * a + torch.gather(suf1, 1, idx.T.contiguous()).T) / context
        else:
            x = emb.inputs(toks[:, None].expand(-1, context).reshape(-1), pos.repeat(len(toks)))
            act = sae.encode(x).double().reshape(len(toks), context, -1)
            mean = act.mean(1)
        m = mean.masked_fill(dead[None, :], -1.0)
        top = torch.topk(m, min(k, m.shape[1]), dim=1)
        if sae.separable:  # the second moment only for the top entries
            at = torch.gather(a, 1, top.indices)
            it = torch.gather(idx, 1, top.indices)
            n = (context - it).double()
            s1, s2 = suf1[top.indices, it], suf2[top.indices, it]
            var = ((n * at * at + 2 * at * s1 + s2) / context - top.values.pow(2)).clamp(min=0)
        else:
            var = torch.gather(act.var(1, unbiased=False), 1, top.indices)
        rows.append(_top_rows(toks, top.values, top.indices, var, positional, flat_cv))
    return rows


def _top_rows(
    toks: torch.Tensor,
    values: torch.Tensor,
    indices: torch.Tensor,
    var: torch.Tensor,
    positional: torch.Tensor,
    flat_cv: float,
) -> pd.DataFrame:
    """Rows of :func:`token_flatness` from each token's top features (their means, indices and
    variances over the positions; entries with a mean of 0 or less are not activated and do not
    count)."""
    top_cv = var.clamp(min=0).sqrt() / values.clamp(min=1e-300)
    active = values > 0
    top_pos = positional[indices] & active
    top_non = ~positional[indices] & active
    flat = top_cv <= flat_cv
    n_non = top_non.sum(1)
    n_flat = (flat & top_non).sum(1)
    bent_cv = top_cv.masked_fill(~top_non, -1.0)
    worst = bent_cv.argmax(1)
    n_pos = top_pos.sum(1)
    return _token_rows(
        toks,
        n_non,
        n_flat,
        torch.where(n_non > 0, bent_cv.max(1).values, torch.nan),
        torch.where(n_non > 0, torch.gather(indices, 1, worst[:, None])[:, 0], -1),
        n_pos,
        (flat & top_pos).sum(1),
    )


def _token_rows(
    toks: torch.Tensor,
    n_non: torch.Tensor,
    n_flat: torch.Tensor,
    max_cv: torch.Tensor,
    bent: torch.Tensor,
    n_pos: torch.Tensor,
    n_pos_flat: torch.Tensor,
) -> pd.DataFrame:
    """A chunk of :func:`token_flatness`'s table from its per-token counts (shares divided as
    integer tensors, as ever)."""
    return pd.DataFrame(
        {
            "token_id": to_numpy(toks),
            "n_nonpositional": to_numpy(n_non),
            "n_flat": to_numpy(n_flat),
            "flat_share": to_numpy(torch.where(n_non > 0, n_flat / n_non.clamp(min=1), torch.nan)),
            "max_cv": to_numpy(max_cv),
            "most_bent_feature": to_numpy(bent),
            "n_positional": to_numpy(n_pos),
            "positional_flat_share": to_numpy(
                torch.where(n_pos > 0, n_pos_flat / n_pos.clamp(min=1), torch.nan)
            ),
        }
    )
