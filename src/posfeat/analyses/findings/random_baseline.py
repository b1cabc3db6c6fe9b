"""Finding 7: past the context, worse than a random vector."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from .base import (
    CommonRules,
    Finding,
    FindingInputs,
    _finding,
    _no_past,
    _num,
    _past,
    _pct,
    _undetermined,
    verdict_of,
)


@dataclass(frozen=True)
class WorseThanRandomRules(CommonRules):
    """The rule fields of :data:`WORSE_THAN_RANDOM` (fields of ``FindingRules``, ``--rule
    NAME=VALUE``)."""

    worse_reproduced: float = (
        0.9  # share of past-context positions where FVU exceeds a random vector's
    )
    worse_partly: float = 0.5


def worse_than_random(
    by_position: pd.DataFrame, context: int, r: WorseThanRandomRules
) -> dict[str, Any]:
    """Finding 7: past the context the SAE reconstructs worse than a random vector of the input's
    norm (the note's claim only).

    The random vector is itself the reference; no further null is informative (inside the context a
    working SAE beats a random vector by construction, so the in-context share is 0 for any usable
    SAE). The in-context share is reported beside it; the verdict follows the rule."""
    test = (
        f"share of past-context positions where FVU exceeds that of a random vector of the input's norm >= "
        f"{r.worse_reproduced} -> reproduced; >= {r.worse_partly} -> partly; else not reproduced "
        "(the random "
        "vector is the reference; no further null)"
    )
    inside, past = _past(by_position, context)
    note = "worse than random past the context"
    if not len(past):
        return _no_past("length generalisation", note, test)
    ok = past.fvu.notna() & past.random_fvu.notna()
    if not ok.any():
        return _undetermined(
            None,
            None,
            note,
            test,
            "the reconstruction error past the context could not be computed.",
        )
    worse = int((past.fvu[ok] > past.random_fvu[ok]).sum())
    share = worse / int(ok.sum())
    inside_share = float((inside.fvu > inside.random_fvu).mean()) if len(inside) else float("nan")
    value = {"share": share, "in_context_share": inside_share}
    evidence = (
        f"Past the context the SAE's FVU exceeds a random vector's (mean "
        f"{_num(float(past.random_fvu.mean()), 3)}) at {worse} of {int(ok.sum())} positions ("
        f"{_pct(share)}); "
        f"inside the context at {_pct(inside_share)} (reported, not a null: a working SAE beats a "
        "random vector "
        f"there by construction; no further null: the random vector is the reference). Rule: >= "
        f"{r.worse_reproduced} reproduced, >= {r.worse_partly} partly."
    )
    return _finding(
        verdict_of(share >= r.worse_reproduced, share >= r.worse_partly),
        value,
        None,
        note,
        test,
        evidence,
    )


def _headline(v: dict[str, Any], n: dict[str, Any]) -> tuple[str, str]:
    return f"{_pct(v.get('share'))} of past positions", "none (the random vector is the reference)"


def _compute(
    x: FindingInputs, r: WorseThanRandomRules, earlier: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    return worse_than_random(x.by_position, x.context, r)


WORSE_THAN_RANDOM = Finding(
    key="worse_than_random",
    number="7",
    title="Past the context, worse than random",
    note_says="worse than random",
    rules=WorseThanRandomRules,
    compute=_compute,
    headline=_headline,
    section=5,
    figures=("length_generalisation",),
)
