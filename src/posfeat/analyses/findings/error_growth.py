"""Finding 7': past the context, the reconstruction error grows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..summaries import null_summary
from .base import (
    CommonRules,
    Finding,
    FindingInputs,
    _beats,
    _drawn,
    _finding,
    _median_of,
    _no_past,
    _null_txt,
    _num,
    _ok,
    _p_txt,
    _past,
    _pct,
    _undetermined,
    number,
    verdict_of,
)


@dataclass(frozen=True)
class DegradesRules(CommonRules):
    """The rule fields of :data:`DEGRADES_PAST_CONTEXT` (fields of ``FindingRules``, ``--rule
    NAME=VALUE``)."""

    degrade_reproduced: float = number(2.0)  # past-context mean FVU over in-context mean FVU
    degrade_partly: float = number(1.25)


def context_split_null(fvu: np.ndarray) -> np.ndarray:
    """Mean FVU of the in-context positions after a split point over that of the positions before
    it, at every split point ``s = 2 .. C-2``: how much later positions of the context already
    differ from earlier ones where nothing is broken (a trend inside the context shows here; random
    halves would hide it)."""
    x = np.asarray(fvu, dtype=np.float64)
    x = x[np.isfinite(x)]
    if len(x) < 4:
        return np.full(0, np.nan)
    out = np.array(
        [x[s:].mean() / x[:s].mean() if x[:s].mean() > 0 else np.nan for s in range(2, len(x) - 1)]
    )
    return out


def degrades_past_context(
    by_position: pd.DataFrame, context: int, r: DegradesRules
) -> dict[str, Any]:
    """Finding 7': past the context the reconstruction error grows (the note's figure, apart from
    the random baseline).

    Value: past-context mean FVU over in-context mean FVU. Null: the same ratio between the later
    and the earlier positions of the context, at every split point (:func:`context_split_null`, ``C
    - 3`` draws). Also reported: the share of positions where the SAE is worse than reconstructing
    with zero, past and inside."""
    test = (
        f"past-context mean FVU / in-context mean FVU >= {r.degrade_reproduced} -> reproduced; >= "
        f"{r.degrade_partly} -> partly; either only when beyond the same ratio between the later "
        "and earlier "
        f"positions of the context at every split point (p < {r.null_alpha}); else not reproduced"
    )
    inside, past = _past(by_position, context)
    note = "the error blows up past the context"
    if not len(past):
        return _no_past("the error past the context", note, test)
    f_in = float(inside.fvu.mean()) if len(inside) else float("nan")
    f_out = float(past.fvu.mean())
    ratio = f_out / f_in if _ok(f_in) and f_in > 0 and _ok(f_out) else float("nan")
    split = null_summary(context_split_null(inside.fvu.to_numpy(float)), ratio)
    zero_past = float((past.fvu > past.zero_fvu).mean())
    zero_in = float((inside.fvu > inside.zero_fvu).mean()) if len(inside) else float("nan")
    value = {
        "fvu_ratio": ratio,
        "worse_than_zero_share": zero_past,
        "worse_than_zero_share_in_context": zero_in,
    }
    null = {"fvu_ratio": split}
    if not _ok(ratio) or not _drawn(split):
        return _undetermined(
            value,
            null,
            note,
            test,
            "the in-context error is zero or could not be computed on at "
            "least 4 positions, so there is no ratio or no null.",
        )
    beat = _beats(split, r)
    evidence = (
        f"Past the context the mean FVU is {_num(f_out)}, {_num(ratio)}x the in-context "
        f"{_num(f_in)}; null, "
        f"later against earlier positions of the context, at every split point: {_null_txt(split)}. "
        "Rule: >= "
        f"{r.degrade_reproduced}x reproduced, >= {r.degrade_partly}x partly, beyond the null. The "
        "SAE is worse "
        f"than reconstructing with zero at {_pct(zero_past)} of past-context positions ("
        f"{_pct(zero_in)} "
        "inside)."
    )
    return _finding(
        verdict_of(ratio >= r.degrade_reproduced and beat, ratio >= r.degrade_partly and beat),
        value,
        null,
        note,
        test,
        evidence,
    )


def _headline(v: dict[str, Any], n: dict[str, Any]) -> tuple[str, str]:
    return (
        f"FVU {_num(v.get('fvu_ratio'))}x in-context",
        f"later/earlier context {_median_of(n.get('fvu_ratio'))}x{_p_txt(n.get('fvu_ratio'))}",
    )


def _compute(
    x: FindingInputs, r: DegradesRules, earlier: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    return degrades_past_context(x.by_position, x.context, r)


DEGRADES_PAST_CONTEXT = Finding(
    key="degrades_past_context",
    number="7'",
    title="Past the context, the error grows",
    note_says="blows up",
    rules=DegradesRules,
    compute=_compute,
    headline=_headline,
    section=5,
    figures=("length_generalisation",),
)
