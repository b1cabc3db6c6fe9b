"""Finding 4: each positional feature fires on one contiguous range; together they cover the
positions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .base import (
    CommonRules,
    Finding,
    FindingInputs,
    _finding,
    _of,
    _pct,
    _undetermined,
    verdict_of,
)


@dataclass(frozen=True)
class TilingRules(CommonRules):
    """The rule fields of :data:`TILING` (fields of ``FindingRules``, ``--rule NAME=VALUE``)."""

    tiling_single_run_reproduced: float = 0.8  # positional features firing on one contiguous run
    tiling_single_run_partly: float = 0.5
    tiling_coverage: float = 0.9  # share of in-context positions covered by some positional run


def _run_lengths(text: Any) -> list[int]:
    out = []
    for run in filter(None, str(text if isinstance(text, str) else "").split(";")):
        a, b = (int(v) for v in run.split("-"))
        out.append(b - a + 1)
    return out


def coverage_by_runs(features: pd.DataFrame, context: int) -> np.ndarray:
    """``Int[ndarray, "context"]``: how many positional features have a firing run over each
    in-context position."""
    cov = np.zeros(context, dtype=np.int64)
    for text in features.runs[features.kind == "positional"].fillna(""):
        for run in filter(None, str(text).split(";")):
            a, b = (int(v) for v in run.split("-"))
            cov[max(0, a) : min(context, b + 1)] += 1
    return cov


def tiling(features: pd.DataFrame, context: int, r: TilingRules) -> dict[str, Any]:
    """Finding 4: each positional feature fires on one contiguous range; together they cover the
    positions.

    Every positional feature that fires (on at least half of the tokens) at some in-context position
    counts; one firing at a single position is a single run, as the note's dedicated early features
    are. No informative null: on a smooth W_pos (a helix) any direction rises above a threshold
    once, so single runs follow from the geometry, and scattering the firing positions at random
    gives a share near 0 that every real SAE beats; the verdict follows the rule, and the evidence
    reports how many features fire at a single position."""
    test = (
        "share of positional features (firing at some in-context position) that fire on one "
        "contiguous run >= "
        f"{r.tiling_single_run_reproduced} and share of in-context positions covered by some run >= "
        f"{r.tiling_coverage} -> reproduced; single-run share >= {r.tiling_single_run_partly} -> "
        "partly; else not "
        "reproduced (no informative null: see docs/findings.md)"
    )
    pos = features[features.kind == "positional"]
    k = np.array([sum(_run_lengths(t)) for t in pos.runs], dtype=np.int64)
    firing = pos[k >= 1]
    n_runs = firing.n_runs.to_numpy()
    single = float((n_runs == 1).mean()) if len(firing) else float("nan")
    cov = float((coverage_by_runs(features, context) > 0).mean()) if context else float("nan")
    value = {
        "single_run_share": single,
        "coverage": cov,
        "features": len(firing),
        "single_position_features": int((k == 1).sum()),
    }
    note = {"single_run_share": 1.0, "coverage": 1.0}
    if not len(firing):
        return _undetermined(
            value,
            None,
            note,
            test,
            f"no positional feature fires (on half of the tokens) at any of "
            f"positions 0..{context - 1}, so there is nothing to tile.",
        )
    multi = int((n_runs >= 2).sum())
    med_out = float(firing.outside_span_share.median())
    good = single >= r.tiling_single_run_reproduced and cov >= r.tiling_coverage
    evidence = (
        f"Of {len(firing)} positional features firing (on at least half of the tokens) inside the "
        "context, "
        f"{int((k == 1).sum())} fire at a single position, "
        f"{_of(multi, len(firing), 'features', 'fires', 'fire')}"
        f" in two or more separate runs: a single-run share of {_pct(single)}; a median "
        f"{_pct(med_out)} of "
        f"their in-context activation lies outside the main span; runs cover {_pct(cov)} of "
        "positions "
        f"0..{context - 1}. No informative null (on a helix any direction fires on one run; "
        "scattered positions "
        f"give a share near 0). Rule: single-run share >= {r.tiling_single_run_reproduced} and "
        "coverage >= "
        f"{r.tiling_coverage} reproduced, single-run share >= {r.tiling_single_run_partly} partly."
    )
    return _finding(
        verdict_of(good, single >= r.tiling_single_run_partly), value, None, note, test, evidence
    )


def _headline(v: dict[str, Any], n: dict[str, Any]) -> tuple[str, str]:
    return (
        f"{_pct(v.get('single_run_share'))} single-run, {_pct(v.get('coverage'))} covered",
        "none (see the evidence)",
    )


def _compute(
    x: FindingInputs, r: TilingRules, earlier: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    return tiling(x.features, x.context, r)


TILING = Finding(
    key="tiling",
    number="4",
    title="Each positional feature covers one contiguous range",
    note_says="one run each, all covered",
    rules=TilingRules,
    compute=_compute,
    headline=_headline,
    section=3,
    figures=("positional_profiles", "coverage"),
)
