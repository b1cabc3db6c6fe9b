"""Feature classes from the exact variance shares, spans of positional features, and the feature table.

The rule (thresholds are parameters of :func:`classify`):

* ``dead``: never fires on the grid within the training context;
* ``positional``: the position main effect explains at least ``positional_share`` (default 0.5)
  of the feature's variance over the grid;
* ``semantic``: the token main effect explains at least ``semantic_share`` (default 0.5);
* ``mixed``: neither (interaction, or both effects, dominate).

The note's own method, the sorted positional score and its drop-off, is kept beside it: the knee
of the sorted scores gives a count that the summary compares with the rule.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .embeddings import Embeddings
from .grid_stats import GridStats

KINDS = ("positional", "semantic", "mixed", "dead")
FEATURE_COLUMNS = [
    "feature", "kind", "positional_score", "token_score", "position_share", "token_share", "interaction_share", "fire",
    "mean", "peak_position", "peak_mean", "span_start", "span_end", "span_width", "top_tokens",
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


def spans(stats: GridStats, min_fire: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Peak position and the contiguous span around it where the feature fires on at least ``min_fire`` of tokens.

    Returns ``peak, start, end`` (``Int[ndarray, "d_sae"]``, positions from ``stats.positions``; ``start =
    end = -1`` where the feature fires on fewer than ``min_fire`` of the tokens at its peak).
    """
    peak_i = stats.mean_by_position.argmax(1)
    fire = stats.fire_by_position
    start = np.full(stats.d_sae, -1)
    end = np.full(stats.d_sae, -1)
    ok = fire[np.arange(stats.d_sae), peak_i] >= min_fire
    n = fire.shape[1]
    for f in np.nonzero(ok)[0]:
        row = fire[f] >= min_fire
        i = j = peak_i[f]
        while i > 0 and row[i - 1]:
            i -= 1
        while j < n - 1 and row[j + 1]:
            j += 1
        start[f], end[f] = stats.positions[i], stats.positions[j]
    return stats.positions[peak_i], start, end


def score_knee(scores: np.ndarray, max_rank: int = 1000) -> int:
    """Count of features above the knee of the sorted positional scores (the note's drop-off).

    The knee is the rank farthest below the chord from the top score to the score at ``max_rank``
    (Kneedle on the sorted curve, both axes scaled to [0, 1]).
    """
    s = np.sort(np.asarray(scores, dtype=np.float64))[::-1][: max(3, min(max_rank, len(scores)))]
    if len(s) < 3 or s[0] <= s[-1]:
        return 0
    x = np.linspace(0, 1, len(s))
    y = (s - s[-1]) / (s[0] - s[-1])
    return int(np.argmax((1 - x) - y)) + 1


def feature_table(stats: GridStats, emb: Embeddings, kind: np.ndarray, n_top_tokens: int = 5) -> pd.DataFrame:
    """One row per feature with the columns ``FEATURE_COLUMNS``."""
    peak, start, end = spans(stats)
    width = np.where(start >= 0, end - start + 1, 0)
    top = [" | ".join(emb.token_str(int(t)) for t in row[:n_top_tokens]) for row in stats.top_tokens]
    df = pd.DataFrame({
        "feature": np.arange(stats.d_sae),
        "kind": kind,
        "positional_score": stats.positional_score,
        "token_score": stats.token_score,
        "position_share": stats.position_share,
        "token_share": stats.token_share,
        "interaction_share": stats.interaction_share,
        "fire": stats.fire,
        "mean": stats.mean,
        "peak_position": peak,
        "peak_mean": stats.mean_by_position.max(1),
        "span_start": start,
        "span_end": end,
        "span_width": width,
        "top_tokens": top,
    })
    return df[FEATURE_COLUMNS]
