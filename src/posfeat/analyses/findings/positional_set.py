"""Finding 2: a small set of features is positional."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..classification import knee_largest_gap, largest_gap_ratio, overlap
from ..summaries import null_summary
from .base import (
    CommonRules,
    Finding,
    FindingInputs,
    _beats,
    _drawn,
    _finding,
    _median_of,
    _null_txt,
    _nulls,
    _num,
    _ok,
    _p_txt,
    _pct,
    _undetermined,
    verdict_of,
)


@dataclass(frozen=True)
class PositionalCountRules(CommonRules):
    """The rule fields of :data:`POSITIONAL_COUNT` (fields of ``FindingRules``, ``--rule
    NAME=VALUE``)."""

    positional_max_fraction: float = 0.05  # positional features are at most this share of live ones
    gap_jaccard_reproduced: float = 0.8  # the sorted positional score's largest-gap cut agrees
    gap_jaccard_partly: float = 0.5


def positional_count(
    features: pd.DataFrame, r: PositionalCountRules, nulls: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Finding 2: a small set of features is positional, separated by a drop in the sorted
    positional score.

    Null: the random dictionary (:func:`posfeat.analyses.nulls.dictionary_draws`: random directions
    drawn from the grid's own covariance, firing shares matched to the SAE's), 200 draws of as many
    live features as the SAE has: the largest drop between its consecutive sorted positional scores,
    and the share of its live features the rule calls positional (reported)."""
    test = (
        f"1 <= positional features <= {r.positional_max_fraction} of live features and the "
        "largest-gap cut of "
        "the sorted positional score agrees with the rule's set (Jaccard >= "
        f"{r.gap_jaccard_reproduced}) -> "
        f"reproduced; some positional features and Jaccard >= {r.gap_jaccard_partly} -> partly; "
        "either only when "
        f"the drop at the cut beats the random dictionary's largest drop (p < {r.null_alpha}); else "
        "not reproduced"
    )
    live = features[features.kind != "dead"]
    rule = set(features.feature[features.kind == "positional"])
    scores = features.positional_score.to_numpy(float)
    gap = knee_largest_gap(scores)
    ratio = largest_gap_ratio(scores)
    top = set(
        features.sort_values(["positional_score", "feature"], ascending=[False, True]).feature.head(
            gap
        )
    )
    ov = overlap(top, rule)
    n_live = len(live)
    share = len(rule) / n_live if n_live else float("nan")
    draws = _nulls(nulls, "random_dictionary") or {}
    gap_null = null_summary(draws.get("gap_ratio"), ratio)
    share_null = null_summary(draws.get("positional_share"), share)
    value = {"count": len(rule), "share_of_live": share, "gap_ratio": ratio}
    null = {"gap_ratio": gap_null, "share_of_live": share_null}
    note_share = 50 / 24576
    note = {"count": 50, "share_of_live": note_share}
    if not n_live or not _ok(ratio):
        return _undetermined(
            value,
            null,
            note,
            test,
            f"{n_live} live features and no drop between sorted positional "
            "scores to measure, so there is no set to find.",
        )
    if not _drawn(gap_null):
        return _undetermined(
            value,
            null,
            note,
            test,
            "the random dictionary had no live features (or none with two "
            "positive positional scores), so the drop has no null to beat.",
        )
    beat = _beats(gap_null, r)
    small = 1 <= len(rule) <= r.positional_max_fraction * n_live
    verdict = verdict_of(
        small and ov["jaccard"] >= r.gap_jaccard_reproduced and beat,
        len(rule) >= 1 and ov["jaccard"] >= r.gap_jaccard_partly and beat,
    )
    evidence = (
        f"{len(rule)} of {n_live} live features ({_pct(share)}) are positional by the variance "
        "rule; the note "
        f"found about 50 of 24576 ({_pct(note_share)}) in GPT-2's res-jb SAE (counts are not "
        "comparable "
        f"across widths). The largest gap in the sorted positional scores cuts at {gap} (Jaccard "
        f"{ov['jaccard']:.2f} with the rule's set), a drop of {_num(ratio)}x; the random "
        "dictionary's largest "
        f"drop: {_null_txt(gap_null)}; the rule calls a median {_pct(share_null.get('median'))} of "
        "its live "
        f"features positional. Rule: at most {_pct(r.positional_max_fraction)} of live, Jaccard >= "
        f"{r.gap_jaccard_reproduced}, drop beyond the null."
    )
    return _finding(verdict, value, null, note, test, evidence)


def _headline(v: dict[str, Any], n: dict[str, Any]) -> tuple[str, str]:
    return (
        f"{v.get('count')} features ({_pct(v.get('share_of_live'))} of live); drop "
        f"{_num(v.get('gap_ratio'))}x",
        f"random dictionary's drop {_median_of(n.get('gap_ratio'))}x{_p_txt(n.get('gap_ratio'))}",
    )


def _compute(
    x: FindingInputs, r: PositionalCountRules, earlier: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    return positional_count(x.features, r, x.nulls)


POSITIONAL_COUNT = Finding(
    key="positional_count",
    number="2",
    title="A small set of positional features",
    note_says="about 50 of 24576 (0.20%)",
    rules=PositionalCountRules,
    compute=_compute,
    headline=_headline,
    section=2,
    figures=("positional_score",),
)
