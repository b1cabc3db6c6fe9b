"""What every finding is made of: its declaration (:class:`Finding`), the inputs it reads
(:class:`FindingInputs`), the rule fields every finding shares (:class:`CommonRules`) and the
helpers that build a verdict object and its evidence sentence.

A finding's module declares one :class:`Finding` and its rule fields as a small frozen dataclass
that inherits :class:`CommonRules`; ``posfeat.analyses.findings`` lists the findings in order and
builds :class:`~posfeat.analyses.findings.FindingRules` from their rule classes."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

VERDICTS = ("reproduced", "partly", "not reproduced", "undetermined")
FINDING_KEYS = ("verdict", "value", "null", "note_value", "test", "evidence")
#: Draws of the nulls computed here from the tables (seeded): splits of the context, permutations of
# peaks.
TABLE_DRAWS = 1000
TABLE_SEED = 0


def number(default: float) -> Any:
    """A rule field that is not a share in [0, 1] (only finite and at least 0); every other rule
    field is a share."""
    return field(default=default, metadata={"share": False})


@dataclass(frozen=True)
class CommonRules:
    """The rule field every finding with a null reads; each finding's rule class inherits it."""

    null_alpha: float = (
        0.05  # a value beats its null when the null's one-sided p value is below this
    )


@dataclass(frozen=True)
class FindingInputs:
    """What the findings read: the three tables, the W_pos PCA spectrum and the rows it spans, the
    chosen token, and ``summary.json``'s null draws (``nulls``) and weight-side statistics
    (``geometry``)."""

    features: pd.DataFrame
    by_position: pd.DataFrame
    context: int
    spectrum: np.ndarray
    pca_rows: tuple[int, int]
    token: str
    tokens: pd.DataFrame
    nulls: dict[str, Any] | None = None
    geometry: dict[str, Any] | None = None


#: ``compute(inputs, rules, earlier)``: the verdict object; ``earlier`` holds the verdict objects of
# the findings declared before this one (keyed by their keys).
Compute = Callable[[FindingInputs, Any, dict[str, dict[str, Any]]], dict[str, Any]]
#: ``headline(value, null)``: the value and the null in a few words (README's table, the report, the
# CLI).
Headline = Callable[[dict[str, Any], dict[str, Any]], tuple[str, str]]


@dataclass(frozen=True)
class Finding:
    """One finding of the note, declared once in its own module; everything that shows a finding
    reads this.

    Attributes:
        key: its key in ``summary.json["findings"]`` and ``Analysis.findings``.
        number: the note's numbering of it ("1", "4b", "7'").
        title: the report's and README's name for it.
        note_says: what the note says, in a few words (the last column of README's table).
        rules: the frozen dataclass of its rule fields (inheriting :class:`CommonRules`);
            ``FindingRules`` holds them all.
        compute: the verdict object from the inputs, the rules and the earlier findings
            (:data:`Compute`).
        headline: the value and the null in a few words (:data:`Headline`).
        section: the report's section that shows it (1-based, in the report's order).
        figures: the names of the figures that show it (``figures/NAME.png`` or an interactive
            figure).
    """

    key: str
    number: str
    title: str
    note_says: str
    rules: type
    compute: Compute
    headline: Headline
    section: int
    figures: tuple[str, ...] = ()


def verdict_of(reproduced: bool, partly: bool) -> str:
    return "reproduced" if reproduced else ("partly" if partly else "not reproduced")


def _finding(
    verdict: str, value: Any, null: Any, note_value: Any, test: str, evidence: str
) -> dict[str, Any]:
    return {
        "verdict": verdict,
        "value": value,
        "null": null,
        "note_value": note_value,
        "test": test,
        "evidence": evidence,
    }


def _undetermined(value: Any, null: Any, note_value: Any, test: str, reason: str) -> dict[str, Any]:
    return _finding("undetermined", value, null, note_value, test, f"Undetermined: {reason}")


def _ok(x: Any) -> bool:
    return (
        x is not None
        and not isinstance(x, bool)
        and isinstance(x, (int, float, np.floating, np.integer))
        and math.isfinite(float(x))
    )


def _pct(x: float | None) -> str:
    return f"{100 * x:.1f}%" if _ok(x) else "n/a"


def _num(x: float | None, nd: int = 3) -> str:
    return f"{x:.{nd}g}" if _ok(x) else "n/a"


def _p(x: float | None) -> str:
    return f"{x:.2g}" if _ok(x) else "n/a"


def _of(k: int, n: int, noun: str, verb_one: str, verb_many: str) -> str:
    """'1 of 3 features is', '2 of 3 features are': grammar that follows the count."""
    return f"{k} of {n} {noun} {verb_one if k == 1 else verb_many}"


def _beats(summary: dict[str, Any], r: CommonRules) -> bool:
    """The value beats its drawn null: the null's one-sided p value is below ``null_alpha``."""
    return _ok(summary.get("p_value")) and float(summary["p_value"]) < r.null_alpha


def _drawn(summary: dict[str, Any]) -> bool:
    return int(summary.get("draws") or 0) > 0 and _ok(summary.get("median"))


def _null_txt(summary: dict[str, Any], seed_note: str = "") -> str:
    """'median 0.83 over 200 draws; the value at percentile 99.5, p = 0.005'."""
    return (
        f"median {_num(summary.get('median'))} over {summary.get('draws', 0)} draws{seed_note}; the "
        "value at "
        f"percentile {_num(summary.get('percentile'), 3)}, p = {_p(summary.get('p_value'))}"
    )


def _median(column: pd.Series) -> float:
    return float(column.median()) if len(column) else float("nan")


def _nulls(nulls: dict[str, Any] | None, key: str) -> Any:
    return (nulls or {}).get(key)


def _past(by_position: pd.DataFrame, context: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    return by_position[by_position.position < context], by_position[by_position.position >= context]


def _no_past(what: str, note_value: Any, test: str) -> dict[str, Any]:
    return _undetermined(
        None,
        None,
        note_value,
        test,
        f"no positions past the context were studied, so {what} could not be tested.",
    )


def _p_txt(summary: Any) -> str:
    return (
        f" (p {_p(summary.get('p_value'))})"
        if isinstance(summary, dict) and _ok(summary.get("p_value"))
        else ""
    )


def _median_of(summary: Any, fmt: str = "num") -> str:
    if not isinstance(summary, dict) or not _ok(summary.get("median")):
        return "n/a"
    m = float(summary["median"])
    if fmt == "rho":
        return f"{0.0 if abs(m) < 0.005 else m:.2f}"
    return _pct(m) if fmt == "pct" else _num(m)
