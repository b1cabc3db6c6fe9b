"""Finding 7b: semantic features break past the context."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
class SemanticBreakRules(CommonRules):
    """The rule fields of :data:`SEMANTIC_BREAK` (fields of ``FindingRules``, ``--rule
    NAME=VALUE``)."""

    spurious_min: float = number(0.5)  # spurious features per token per position past the context
    spurious_factor: float = number(
        2.0
    )  # ... and this many times the in-context leave-one-out level
    spread_increase: float = (
        0.1  # firing pairs' deviation past minus inside, in their own activation
    )


def semantic_break(
    by_position: pd.DataFrame, features: pd.DataFrame, context: int, r: SemanticBreakRules
) -> dict[str, Any]:
    """Finding 7b: semantic features break past the context: they get noisy on the tokens they fire
    on, and features fire on tokens they never fire on inside (spurious firing). Both halves ->
    reproduced; one -> partly.

    Noise: ``semantic_deviation`` (by_position.csv): over the (token, semantic feature) pairs of the
    token sample that fire inside the context, ``sum |f(t, p) - m(t)| / sum m(t)``, ``m`` the pair's
    in-context mean: a share of their own in-context activation, whatever the vocabulary's size or
    the firing rate. Its null: the same deviation at the in-context positions (one draw per
    position); the past mean must exceed the in-context mean by ``spread_increase`` and beat the
    in-context positions at ``null_alpha``. Spurious firing (exact, all tokens): its null is its
    leave-one-position-out value inside the context (``spurious_null_per_token``)."""
    test = (
        "noise: the firing pairs' deviation from their in-context activation, past minus inside, "
        ">= "
        f"{r.spread_increase} of that activation and beyond every in-context position's deviation "
        "(p < "
        f"{r.null_alpha}); spurious: features per token past the context >= {r.spurious_min} and >= "
        f"{r.spurious_factor}x its in-context leave-one-position-out null; both -> reproduced; one "
        "-> partly; "
        "neither -> not reproduced"
    )
    note = "token features get noisy and spurious features fire"
    inside, past = _past(by_position, context)
    if not len(past):
        return _no_past("semantic breakage", note, test)
    if not (features.kind == "semantic").any():
        return _undetermined(
            None, None, note, test, "the SAE has no semantic feature, so none can break."
        )
    col = "semantic_deviation"
    dev_in = float(inside[col].mean()) if col in inside and len(inside) else float("nan")
    dev_past = float(past[col].mean()) if col in past else float("nan")
    inc = dev_past - dev_in if _ok(dev_past) and _ok(dev_in) else float("nan")
    noise_null = null_summary(inside[col].to_numpy(float) if col in inside else None, dev_past)
    spur = float(past.spurious_per_token.mean()) if "spurious_per_token" in past else float("nan")
    spur_null = (
        float(inside.spurious_null_per_token.mean())
        if "spurious_null_per_token" in inside and len(inside)
        else float("nan")
    )
    value = {
        "spurious_per_token": spur,
        "deviation_past": dev_past,
        "deviation_in_context": dev_in,
        "deviation_increase": inc,
    }
    null = {
        "spurious_per_token": {"leave_one_position_out": spur_null},
        "deviation_past": noise_null,
    }
    noise_ok = _ok(inc) and _drawn(noise_null)
    spur_ok = _ok(spur) and _ok(spur_null)
    if not noise_ok and not spur_ok:
        return _undetermined(
            value,
            null,
            note,
            test,
            "no semantic feature fires on the token sample inside the "
            "context and spurious firing was not computed, so neither half could be tested.",
        )
    noisy = noise_ok and inc >= r.spread_increase and _beats(noise_null, r)
    spurious = spur_ok and spur >= r.spurious_min and spur >= r.spurious_factor * spur_null
    missing = (
        ""
        if noise_ok and spur_ok
        else " Only one half could be tested ("
        + ("spurious firing" if not spur_ok else "the deviation")
        + " was not computed), so the verdict is at most partly."
    )
    evidence = (
        f"Past the context each token fires {_num(spur)} features per position that it fires "
        "nowhere inside it "
        f"(exact, all tokens); null, leave one position out inside the context: {_num(spur_null)}. "
        "On the token "
        "sample, semantic features that fire on a token inside the context stray from their "
        "in-context "
        f"activation by {_pct(dev_past)} of it past the context against {_pct(dev_in)} inside (an "
        "increase of "
        f"{_num(inc, 2)}); null, the in-context positions' deviations: {_null_txt(noise_null)}. "
        "Rule: spurious "
        f">= {r.spurious_min} and >= {r.spurious_factor}x the null; deviation up by >= "
        f"{r.spread_increase} and "
        f"beyond the null; both reproduced, one partly.{missing}"
    )
    verdict = verdict_of(noisy and spurious, noisy or spurious)
    return _finding(verdict, value, null, note, test, evidence)


def _headline(v: dict[str, Any], n: dict[str, Any]) -> tuple[str, str]:
    spur = n.get("spurious_per_token", {})
    return (
        f"{_num(v.get('spurious_per_token'))} spurious features per token; deviation "
        f"{_pct(v.get('deviation_past'))}",
        f"{_num(spur.get('leave_one_position_out') if isinstance(spur, dict) else None)}; inside "
        f"{_median_of(n.get('deviation_past'), 'pct')}{_p_txt(n.get('deviation_past'))}",
    )


def _compute(
    x: FindingInputs, r: SemanticBreakRules, earlier: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    return semantic_break(x.by_position, x.features, x.context, r)


SEMANTIC_BREAK = Finding(
    key="semantic_break",
    number="7b",
    title="Semantic features break past the context",
    note_says="noisy, and spurious firing",
    rules=SemanticBreakRules,
    compute=_compute,
    headline=_headline,
    section=5,
    figures=("semantic_breakage", "semantic_profiles"),
)
