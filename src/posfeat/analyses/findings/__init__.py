"""Verdicts on the note's findings, each computed from numbers posfeat also writes, and each read
against a null.

Each finding is declared once, as a :class:`~posfeat.analyses.findings.base.Finding` in its own
module of this package (its key, the note's number, its title, what the note says, its rule fields,
its compute and headline functions, the report's section and its figures); :data:`REGISTRY` lists
them in the order of ``summary.json``, the report and README's table, and everything that shows a
finding (the report, ``scripts/findings_table.py``, ``summary.json``, the CLI) iterates over it.
docs/design.md shows how to add one.

Every finding's result is an object ``{"verdict", "value", "null", "note_value", "test",
"evidence"}``: ``verdict`` is ``"reproduced"``, ``"partly"``, ``"not reproduced"`` or
``"undetermined"``; ``value`` is posfeat's number for the pair in hand; ``null`` is, per statistic,
a summary of a null distribution drawn in the same run (:func:`posfeat.analyses.nulls.null_summary`:
its median, the value's percentile among the draws, a one-sided p value and the number of draws), or
a closed-form null, or None where no informative null exists (the evidence then says why, and the
verdict follows the rule alone); ``note_value`` is the note's number (its words where it gives no
number); ``test`` states the rule, with its thresholds (the fields of :class:`FindingRules`,
parameters of ``analyze``); ``evidence`` is built from the numbers, stating value, null and rule. A
verdict is "reproduced" or "partly" only when the value beats its null at ``null_alpha`` (where a
null exists); it is "undetermined", with the reason, wherever the value or its null cannot be
computed or the finding does not apply (no positions past the context, no positional feature, no
helix for the decoder to trace, too few features or tokens to test). Docs: docs/findings.md says,
per finding, what a verdict can and cannot tell, and which planted controls reach each outcome.

Each finding reads only ``features.csv``, ``by_position.csv`` and ``tokens.csv`` plus the numbers of
``summary.json`` that need the weights (the PCA spectrum, ``summary["geometry"]`` and the null draws
``summary["nulls"]``), so a verdict can be recomputed from the files.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import pandas as pd

from ...core.errors import PosfeatError
from ..summaries import rankdata, spearman
from .base import (
    FINDING_KEYS,
    TABLE_DRAWS,
    TABLE_SEED,
    VERDICTS,
    CommonRules,
    Finding,
    FindingInputs,
    verdict_of,
)
from .decoder_trace import DECODER_TRACES_HELIX, decoder_traces_helix
from .disjointness import DISJOINT, disjoint
from .early_features import EARLY_POSITIONS, early_positions
from .error_growth import DEGRADES_PAST_CONTEXT, context_split_null, degrades_past_context
from .flat_profiles import TOKEN_BANDS, TOKEN_COLUMNS, TOKEN_PROFILES, token_profiles
from .positional_breakage import (
    BREAK_SEED,
    BREAK_SHUFFLES,
    POSITIONAL_BREAK,
    positional_break,
    shuffled_tracking,
)
from .positional_set import POSITIONAL_COUNT, positional_count
from .random_baseline import WORSE_THAN_RANDOM, worse_than_random
from .semantic_breakage import SEMANTIC_BREAK, semantic_break
from .tiling_runs import TILING, coverage_by_runs, tiling
from .wpos_helix import HELIX, helix

#: Every finding, in the order of ``summary.json["findings"]``, the report and README's table. A
# finding that reads another's verdict (``decoder_traces_helix`` reads the helix's) comes after it.
REGISTRY: tuple[Finding, ...] = (
    HELIX,
    POSITIONAL_COUNT,
    DISJOINT,
    TILING,
    EARLY_POSITIONS,
    DECODER_TRACES_HELIX,
    TOKEN_PROFILES,
    WORSE_THAN_RANDOM,
    DEGRADES_PAST_CONTEXT,
    POSITIONAL_BREAK,
    SEMANTIC_BREAK,
)
#: The findings' keys, in :data:`REGISTRY`'s order.
FINDINGS = tuple(finding.key for finding in REGISTRY)


def _rule_classes() -> tuple[type, ...]:
    """The bases of :class:`FindingRules`: the findings' rule classes, last first, so that the
    fields come out in :data:`REGISTRY`'s order (a dataclass collects its bases' fields from the
    last base to the first), after :class:`CommonRules`'s."""
    unique = list(dict.fromkeys(finding.rules for finding in REGISTRY))
    return (*reversed(unique), CommonRules)


@dataclass(frozen=True)
class FindingRules(*_rule_classes()):  # type: ignore[misc]
    """Thresholds of the verdict rules (docs/findings.md; ``analyze(rules=...)``, ``--rule
    NAME=VALUE``).

    Its fields are :class:`~posfeat.analyses.findings.base.CommonRules`'s (``null_alpha``) and those
    of every finding's rule class (``HelixRules``, ``PositionalCountRules``, ...), each declared,
    with its default, in the finding's own module. Every threshold is finite; shares lie in [0, 1]
    (every field but those declared with :func:`~posfeat.analyses.findings.base.number`, which are
    at least 0); each ``*_partly`` is at most its ``*_reproduced``."""

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise PosfeatError(
                    f"Rule {f.name}={v!r} is not a finite number; give a finite threshold."
                )
            if f.name not in NOT_SHARES and not 0.0 <= v <= 1.0:
                raise PosfeatError(
                    f"Rule {f.name}={v!r} is a share and must lie within [0, 1]; give a "
                    "value in that range."
                )
            if f.name in NOT_SHARES and v < 0:
                raise PosfeatError(f"Rule {f.name}={v!r} is negative; give a value of at least 0.")
            if f.name.endswith("_partly"):
                strict = f.name[: -len("_partly")] + "_reproduced"
                if hasattr(self, strict) and v > getattr(self, strict):
                    raise PosfeatError(
                        f"Rule {f.name}={v!r} is above {strict}={getattr(self, strict)!r}; "
                        "a 'partly' threshold must be at most its 'reproduced' one."
                    )

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


#: Rule fields that are not shares in [0, 1] (every other field is).
NOT_SHARES = frozenset(f.name for f in fields(FindingRules) if not f.metadata.get("share", True))


def compute_findings(
    features: pd.DataFrame,
    by_position: pd.DataFrame,
    context: int,
    spectrum: np.ndarray,
    pca_rows: tuple[int, int],
    token: str,
    rules: FindingRules | None = None,
    tokens: pd.DataFrame | None = None,
    nulls: dict[str, Any] | None = None,
    geometry: dict[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """All findings, keyed as in :data:`FINDINGS`, from the three tables, the W_pos PCA spectrum,
    the null draws (``summary["nulls"]``: ``helix_random_walk_top3``, ``helix_shuffled_steps``,
    ``random_dictionary``) and the weight-side statistics (``summary["geometry"]``: the helix's
    ``smoothness``, ``curve_share`` and ``tangent_share``, and the embeddings' geometry)."""
    r = rules or FindingRules()
    toks = tokens if tokens is not None else pd.DataFrame(columns=TOKEN_COLUMNS)
    inputs = FindingInputs(
        features=features,
        by_position=by_position,
        context=context,
        spectrum=spectrum,
        pca_rows=pca_rows,
        token=token,
        tokens=toks,
        nulls=nulls,
        geometry=geometry,
    )
    out: dict[str, dict[str, Any]] = {}
    for finding in REGISTRY:
        out[finding.key] = finding.compute(inputs, r, out)
    return out


def headline(key: str, f: dict[str, Any]) -> tuple[str, str]:
    """The finding's value and null in a few words (README's table, the report's first table, the
    CLI): the numbers the verdict reads first, each null as its median with the value's p value. One
    place for every reader: each finding's own ``headline``."""
    v, n = f.get("value"), f.get("null")
    v = v if isinstance(v, dict) else {}
    n = n if isinstance(n, dict) else {}
    if f.get("verdict") == "undetermined" and not v:
        return "n/a (undetermined)", "n/a"
    finding = declared(key)
    return finding.headline(v, n) if finding else ("n/a", "n/a")


def declared(key: str) -> Finding | None:
    """The finding declared with ``key`` in :data:`REGISTRY` (None where none is)."""
    return next((finding for finding in REGISTRY if finding.key == key), None)


def title(key: str) -> str:
    """The finding's title (its key where no finding has that key)."""
    finding = declared(key)
    return finding.title if finding else key


def markdown_table(
    findings: dict[str, dict[str, Any]], titles: dict[str, str] | None = None
) -> str:
    """README's and docs/findings.md's table of verdicts, from ``summary.json["findings"]``
    (``scripts/findings_table.py`` prints it; a test holds both pages to the bundled pair's run).
    ``titles``: names other than the findings' own."""
    rows = [
        "| finding of the note | verdict | posfeat's number | null (same run) | GPT-2 small + "
        "res-jb (note) |",
        "|---|---|---|---|---|",
    ]
    for key, f in findings.items():
        value, null = headline(key, f)
        finding = declared(key)
        note = finding.note_says if finding else ""
        cells = [(titles or {}).get(key, title(key)), f"**{f['verdict']}**", value, null, note]
        rows.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(rows)


__all__ = [
    "BREAK_SEED",
    "BREAK_SHUFFLES",
    "DECODER_TRACES_HELIX",
    "DEGRADES_PAST_CONTEXT",
    "DISJOINT",
    "EARLY_POSITIONS",
    "FINDINGS",
    "FINDING_KEYS",
    "HELIX",
    "NOT_SHARES",
    "POSITIONAL_BREAK",
    "POSITIONAL_COUNT",
    "REGISTRY",
    "SEMANTIC_BREAK",
    "TABLE_DRAWS",
    "TABLE_SEED",
    "TILING",
    "TOKEN_BANDS",
    "TOKEN_COLUMNS",
    "TOKEN_PROFILES",
    "VERDICTS",
    "WORSE_THAN_RANDOM",
    "Finding",
    "FindingInputs",
    "FindingRules",
    "compute_findings",
    "context_split_null",
    "coverage_by_runs",
    "declared",
    "decoder_traces_helix",
    "degrades_past_context",
    "disjoint",
    "early_positions",
    "headline",
    "helix",
    "markdown_table",
    "positional_break",
    "positional_count",
    "rankdata",
    "semantic_break",
    "shuffled_tracking",
    "spearman",
    "tiling",
    "title",
    "token_profiles",
    "verdict_of",
    "worse_than_random",
]
