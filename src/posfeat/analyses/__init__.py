"""Stage 4, the analyses: classification and firing runs, the helix, reconstruction by position, length
generalisation, the verdicts on the note's findings, feature cards and SAE comparison. Imports core, io, engine."""

from .analysis import Analysis, HelixPoints, analyze
from .card import FeatureCard, feature_card, sparkline
from .classify import FEATURE_COLUMNS, KINDS, classify, counts_by_threshold, feature_table, firing_runs, knee_kneedle, knee_largest_gap
from .compare import COMPARE_COLUMNS, Comparison, compare_saes
from .evaluation import EVAL_COLUMNS, dead_features, in_context_stats, range_means, reconstruction_by_position
from .findings import FINDINGS, VERDICTS, FindingRules, compute_findings
from .helix import PCA, positional_pca
from .prompt import PROMPT_COLUMNS, Prompt, prompt

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
