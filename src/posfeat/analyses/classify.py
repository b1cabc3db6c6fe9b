"""Feature classes from the exact variance shares, firing runs of positional features, and the feature table.

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

from ..core.embeddings import Embeddings
from ..engine.grid_stats import GridStats

KINDS = ("positional", "semantic", "mixed", "dead")
SHARE_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
FEATURE_COLUMNS = [
    "feature", "kind", "positional_score", "token_score", "position_share", "token_share", "interaction_share", "fire",
    "mean", "peak_position", "peak_mean", "span_start", "span_end", "span_width", "runs", "n_runs", "outside_span_share", "top_tokens",
]


def classify(stats: GridStats, positional_share: float = 0.5, semantic_share: float = 0.5) -> np.ndarray:
    """``Str[ndarray, "d_sae"]`` kind of every feature by the rule in the module docstring."""
    kind = np.full(stats.d_sae, "mixed", dtype=object)
    ps = np.nan_to_num(stats.position_share, nan=0.0)
    ts = np.nan_to_num(stats.token_share, nan=0.0)
    kind[ts >= semantic_share] = "semantic"
    kind[ps >= positional_share] = "positional"
    kind[stats.fire <= 0] = "dead"
    return kind


def counts_by_threshold(stats: GridStats, thresholds: tuple[float, ...] = SHARE_THRESHOLDS) -> dict[str, dict[str, int]]:
    """Counts of each kind when both share thresholds are ``t``, for each ``t``: how the classes move near their borders."""
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

    Returns ``peak, start, end`` (``Int[ndarray, "d_sae"]``, positions from ``stats.positions``; ``start =
    end = -1`` where the feature fires on fewer than ``min_fire`` of the tokens at its peak).
    """
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


def runs_table(stats: GridStats, start: np.ndarray, end: np.ndarray, min_fire: float = 0.5) -> pd.DataFrame:
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
    return pd.DataFrame({"runs": texts, "n_runs": n, "outside_span_share": np.clip(outside, 0.0, 1.0)})


def knee_kneedle(scores: np.ndarray, window: int = 1000) -> int:
    """Count of features above the knee of the sorted scores (Kneedle within the top ``window`` ranks).

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
    """How many top ranks the largest-gap cut looks at: a tenth of the features, at least 100 (or all)."""
    return min(n, max(n // 10, 100))


def knee_largest_gap(scores: np.ndarray, window: int | None = None) -> int:
    """Count of features above the largest drop between consecutive sorted scores, measured as a ratio (log scale).

    Looks at the top :func:`gap_window` ranks of the positive scores; no other parameter to tune.
    """
    s = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    s = s[np.isfinite(s) & (s > 0)]
    s = s[: window or gap_window(len(s))]
    if len(s) < 2:
        return len(s)
    return int(np.argmax(np.log(s[:-1]) - np.log(s[1:]))) + 1


def overlap(top: set[int], rule: set[int]) -> dict[str, int | float]:
    """How a score-based set agrees with the rule's set: sizes, intersection, Jaccard."""
    both = len(top & rule)
    return {"count": len(top), "rule_positional": len(rule), "both": both, "jaccard": both / max(1, len(top | rule))}


def feature_table(stats: GridStats, emb: Embeddings, kind: np.ndarray, n_top_tokens: int = 5) -> pd.DataFrame:
    """One row per feature with the columns ``FEATURE_COLUMNS``."""
    peak, start, end = spans(stats)
    width = np.where(start >= 0, end - start + 1, 0)
    top = [" | ".join(emb.token_str(int(t)) for t in row[:n_top_tokens]) for row in stats.top_tokens]
    df = pd.DataFrame({
        "feature": np.arange(stats.d_sae), "kind": kind, "positional_score": stats.positional_score, "token_score": stats.token_score,
        "position_share": stats.position_share, "token_share": stats.token_share, "interaction_share": stats.interaction_share,
        "fire": stats.fire, "mean": stats.mean, "peak_position": peak, "peak_mean": stats.mean_by_position.max(1),
        "span_start": start, "span_end": end, "span_width": width, "top_tokens": top,
    })
    df = pd.concat([df, runs_table(stats, start, end)], axis=1)
    return df[FEATURE_COLUMNS]
