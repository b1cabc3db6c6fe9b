"""Finding 4b: early positions get dedicated, stronger features."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..summaries import spearman
from .base import (
    CommonRules,
    Finding,
    FindingInputs,
    _finding,
    _num,
    _ok,
    _p,
    _undetermined,
    verdict_of,
)
from .tiling_runs import coverage_by_runs


@dataclass(frozen=True)
class EarlyPositionsRules(CommonRules):
    """The rule fields of :data:`EARLY_POSITIONS` (fields of ``FindingRules``, ``--rule
    NAME=VALUE``)."""

    early_alpha: float = 0.05  # significance of the Spearman correlations with peak position


def early_positions(features: pd.DataFrame, context: int, r: EarlyPositionsRules) -> dict[str, Any]:
    """Finding 4b: early positions get dedicated (narrow) features that fire more strongly; later
    ones share wider features.

    Position-0 features are set aside (as in the note) and reported separately. Null: no association
    (Spearman 0),
    in closed form: scipy's asymptotic test of Spearman's rho (t approximation)."""
    test = (
        "Spearman correlation, over positional features peaking after position 0, of span width "
        "with peak "
        "position > 0 and of peak activation with peak position < 0, each different from the null "
        "of no "
        f"association at p < {r.early_alpha} (scipy's asymptotic test) -> reproduced; one of the "
        "two -> partly; "
        "else not reproduced"
    )
    allpos = features[(features.kind == "positional") & (features.span_width > 0)]
    zero = allpos[allpos.peak_position == 0]
    pos = allpos[allpos.peak_position > 0]
    w_rho, w_p = spearman(pos.peak_position.to_numpy(float), pos.span_width.to_numpy(float))
    s_rho, s_p = spearman(pos.peak_position.to_numpy(float), pos.peak_mean.to_numpy(float))
    cov = coverage_by_runs(features, context)
    early = float(cov[: min(16, context)].mean()) if context else float("nan")
    rest = float(cov[16:].mean()) if context > 16 else float("nan")
    value = {
        "width_vs_peak_rho": w_rho,
        "width_vs_peak_p": w_p,
        "strength_vs_peak_rho": s_rho,
        "strength_vs_peak_p": s_p,
        "features_per_position_0_15": early,
        "features_per_position_16_on": rest,
        "position0_features": len(zero),
    }
    null = {
        "width_vs_peak_rho": 0.0,
        "strength_vs_peak_rho": 0.0,
        "method": "asymptotic t test of Spearman's rho",
    }
    note = "span width grows and peak strength falls with peak position"
    if not _ok(w_p) and not _ok(s_p):
        return _undetermined(
            value,
            null,
            note,
            test,
            f"{len(pos)} positional features peak after position 0 (at "
            "least 3 with differing widths or strengths are needed), so no correlation could be "
            "tested.",
        )
    wider = w_rho > 0 and _ok(w_p) and w_p < r.early_alpha
    weaker = s_rho < 0 and _ok(s_p) and s_p < r.early_alpha

    def said(rho: float, p: float, sign: str) -> str:
        if p < r.early_alpha:
            side = "in the note" if (rho > 0) == (sign == "+") else "against the note"
            return f"significant at p < {r.early_alpha}, {side}'s direction"
        return f"not significant at p < {r.early_alpha}: no evidence either way"

    zero_txt = (
        f"; set aside, {len(zero)} position-0 feature{'s' if len(zero) != 1 else ''} ("
        + ", ".join(
            f"#{int(f)} peak activation {_num(float(m), 3)}"
            for f, m in zip(zero.feature, zero.peak_mean)
        )
        + ")"
        if len(zero)
        else ""
    )

    def stat(rho: float, p: float, sign: str) -> str:
        if not _ok(p):
            return "not testable (the values do not vary)"
        return f"Spearman {_num(rho, 2)} (asymptotic p = {_num(p, 2)}, {said(rho, p, sign)})"

    evidence = (
        f"Over {len(pos)} positional features peaking after position 0, span width against peak "
        "position: "
        f"{stat(w_rho, w_p, '+')}; peak activation against peak position: {stat(s_rho, s_p, '-')}; "
        "null: 0 for "
        f"both; rule: width rising and strength falling, each at p < {r.early_alpha}{zero_txt}; "
        "positions 0-15 "
        f"are covered by {_num(early, 3)} features on average, later ones by {_num(rest, 3)}."
    )
    return _finding(
        verdict_of(wider and weaker, wider or weaker), value, null, note, test, evidence
    )


def _headline(v: dict[str, Any], n: dict[str, Any]) -> tuple[str, str]:
    return (
        f"Spearman {_num(v.get('width_vs_peak_rho'), 2)} (p {_p(v.get('width_vs_peak_p'))}), "
        f"{_num(v.get('strength_vs_peak_rho'), 2)} (p {_p(v.get('strength_vs_peak_p'))})",
        "0 (no association)",
    )


def _compute(
    x: FindingInputs, r: EarlyPositionsRules, earlier: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    return early_positions(x.features, x.context, r)


EARLY_POSITIONS = Finding(
    key="early_positions",
    number="4b",
    title="Early positions get dedicated, stronger features",
    note_says="width grows, strength falls with position",
    rules=EarlyPositionsRules,
    compute=_compute,
    headline=_headline,
    section=3,
    figures=("coverage", "positional_profiles"),
)
