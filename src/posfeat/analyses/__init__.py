"""Stage 4, the analyses: classification and firing runs, the helix, reconstruction by position,
length generalisation, the verdicts on the note's findings, feature cards and SAE comparison.
Imports core, io, engine.

Names are imported on first use (PEP 562), so the CLI's parser can read this stage's configs without
torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.lazy import lazy_exports

if TYPE_CHECKING:
    from .analysis import Analysis, HelixPoints, analyze
    from .card import FeatureCard, feature_card, sparkline
    from .classification import (
        FEATURE_COLUMNS,
        KINDS,
        classify,
        counts_by_threshold,
        feature_table,
        firing_runs,
        knee_kneedle,
        knee_largest_gap,
    )
    from .compare import COMPARE_COLUMNS, Comparison, compare_saes
    from .evaluation import (
        EVAL_COLUMNS,
        dead_features,
        in_context_stats,
        range_means,
        reconstruction_by_position,
    )
    from .findings import FINDINGS, VERDICTS, FindingRules, compute_findings
    from .helix import PCA, positional_pca
    from .prompts import PROMPT_COLUMNS, Prompt, prompt

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        **dict.fromkeys(["Analysis", "HelixPoints", "analyze"], ".analysis"),
        **dict.fromkeys(["FeatureCard", "feature_card", "sparkline"], ".card"),
        **dict.fromkeys(
            [
                "FEATURE_COLUMNS",
                "KINDS",
                "classify",
                "counts_by_threshold",
                "feature_table",
                "firing_runs",
                "knee_kneedle",
                "knee_largest_gap",
            ],
            ".classification",
        ),
        **dict.fromkeys(["COMPARE_COLUMNS", "Comparison", "compare_saes"], ".compare"),
        **dict.fromkeys(
            [
                "EVAL_COLUMNS",
                "dead_features",
                "in_context_stats",
                "range_means",
                "reconstruction_by_position",
            ],
            ".evaluation",
        ),
        **dict.fromkeys(["FINDINGS", "VERDICTS", "FindingRules", "compute_findings"], ".findings"),
        **dict.fromkeys(["PCA", "positional_pca"], ".helix"),
        **dict.fromkeys(["PROMPT_COLUMNS", "Prompt", "prompt"], ".prompts"),
    },
)

__all__ = [
    "COMPARE_COLUMNS",
    "EVAL_COLUMNS",
    "FEATURE_COLUMNS",
    "FINDINGS",
    "KINDS",
    "PCA",
    "PROMPT_COLUMNS",
    "VERDICTS",
    "Analysis",
    "Comparison",
    "FeatureCard",
    "FindingRules",
    "HelixPoints",
    "Prompt",
    "analyze",
    "classify",
    "compare_saes",
    "compute_findings",
    "counts_by_threshold",
    "dead_features",
    "feature_card",
    "feature_table",
    "firing_runs",
    "in_context_stats",
    "knee_kneedle",
    "knee_largest_gap",
    "positional_pca",
    "prompt",
    "range_means",
    "reconstruction_by_position",
    "sparkline",
]
