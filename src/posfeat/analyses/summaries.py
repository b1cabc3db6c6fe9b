"""Small statistics the verdicts share: ranks, Spearman's rho with its asymptotic p value, a
permutation null of it, and the summary a finding reports of a null drawn many times (numpy and
scipy.special only: cheap to import)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.special import stdtr  # scipy.stats would add about 0.45 s to every analyze's start-up


def _finite(x: Any) -> bool:
    return (
        isinstance(x, (int, float, np.integer, np.floating))
        and not isinstance(x, bool)
        and math.isfinite(float(x))
    )


def null_summary(draws: Any, value: Any, higher: bool = True) -> dict[str, Any]:
    """What a finding reports of a null drawn ``len(draws)`` times, against ``value``.

    Keys: ``median``; ``percentile`` (share of draws below the value, ties counted half, in
    percent); ``p_value``: one-sided, the chance of a draw at least as extreme as the value in the
    claim's direction (``higher``: at least as large), ``(1 + k) / (1 + n)``; ``draws``: how many
    finite draws there were. NaN where there are no draws or the value is not a number (the finding
    is then undetermined)."""
    d = np.asarray([] if draws is None else draws, dtype=np.float64).ravel()
    d = d[np.isfinite(d)]
    out: dict[str, Any] = {
        "median": float(np.median(d)) if len(d) else float("nan"),
        "percentile": float("nan"),
        "p_value": float("nan"),
        "draws": len(d),
    }
    if not len(d) or not _finite(value):
        return out
    v = float(value)
    below, ties = float((d < v).sum()), float((d == v).sum())
    out["percentile"] = 100.0 * (below + 0.5 * ties) / len(d)
    extreme = int((d >= v).sum()) if higher else int((d <= v).sum())
    out["p_value"] = (1 + extreme) / (1 + len(d))
    return out


def rankdata(a: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties given their average rank (``scipy.stats.rankdata``'s default, the same
    algorithm)."""
    a = np.asarray(a)
    order = np.argsort(a, kind="mergesort")
    inv = np.empty(len(a), np.intp)
    inv[order] = np.arange(len(a))
    s = a[order]
    first = np.r_[True, s[1:] != s[:-1]]
    dense = first.cumsum()[inv]
    bounds = np.r_[np.nonzero(first)[0], len(a)]
    return 0.5 * (bounds[dense] + bounds[dense - 1] + 1)


def spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Spearman's rho and its two-sided p value from the t approximation with ``n - 2`` degrees of
    freedom (what ``scipy.stats.spearmanr`` returns for finite data); NaNs for fewer than 3 points
    or a constant side."""
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan")
    rx, ry = rankdata(x) - (len(x) + 1) / 2, rankdata(y) - (len(y) + 1) / 2
    rho = np.clip(np.float64(rx @ ry) / np.sqrt((rx @ rx) * (ry @ ry)), -1.0, 1.0)
    dof = len(x) - 2
    with np.errstate(divide="ignore"):  # rho = +-1: t is infinite, p is 0
        t = rho * np.sqrt(dof / ((1.0 + rho) * (1.0 - rho)))
    return float(rho), float(2 * stdtr(dof, -abs(t)))


def permuted_spearman(x: np.ndarray, y: np.ndarray, draws: int = 1000, seed: int = 0) -> np.ndarray:
    """Spearman's rho of ``x`` with ``y`` permuted, ``draws`` times (seeded)."""
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return np.full(0, np.nan)
    rng = np.random.default_rng(seed)
    rx, ry = rankdata(x) - (len(x) + 1) / 2, rankdata(y) - (len(y) + 1) / 2
    perm = np.stack([ry[rng.permutation(len(ry))] for _ in range(draws)])
    return perm @ rx / np.sqrt((rx @ rx) * (ry @ ry))
