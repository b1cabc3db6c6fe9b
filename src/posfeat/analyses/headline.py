"""The headline numbers of an analysis as one typed object: what ``summary.json`` holds but the
run's command and the time it was written. :func:`posfeat.analyses.analysis.summarize` makes it;
``Analysis.summary`` is its dict view (:meth:`AnalysisSummary.as_dict`), which
:mod:`posfeat.outputs.write` serialises, once, into ``summary.json``."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class AnalysisSummary:
    """The headline numbers of an analysis, in ``summary.json``'s order (docs/findings.md describes
    each).

    The pair (``model`` .. ``device``), the classification (``classification_rule`` ..
    ``knee_vs_rule``), the helix (``pca_*``), the positional features (``position0_features`` ..
    ``high_interaction_features``), the chosen token, reconstruction in and past the context
    (``fvu_*`` .. ``semantic_deviation_past_context``), then what the findings read and say
    (``nulls``, ``geometry``, ``findings``, ``rules``) and the run (``timings``,
    ``posfeat_version``, ``settings``). Numbers that could not be computed are NaN (``null`` in
    ``summary.json``)."""

    model: str
    sae: str
    sae_architecture: str
    d_sae: int
    d_model: int
    d_vocab: int
    n_ctx: int
    positions_studied: int
    centered: bool
    context_size: int
    device: str
    classification_rule: dict[str, str]
    counts: dict[str, int]
    counts_share_of_live: dict[str, float]
    sae_dataset: str | None
    counts_by_threshold: dict[str, Any]
    disjoint_fraction: float
    positional_score_knee: Any
    positional_score_gap: Any
    knee_vs_rule: dict[str, Any]
    pca_top3_variance: float
    pca_spectrum: list[float]
    pca_positions: list[int]
    position0_features: list[int]
    positional_mean_span: float
    multi_run_features: list[int]
    high_interaction_features: list[int]
    token: str
    token_top_features: list[int]
    token_sample: str
    fvu_in_context: float
    fvu_past_context: float
    l0_in_context: float
    l0_past_context: float
    explained_variance_in_context: float
    explained_variance_past_context: float
    random_fvu_in_context: float
    random_fvu_past_context: float
    zero_fvu_in_context: float
    zero_fvu_past_context: float
    addback_fvu_past_context: float
    addback_error_removed: float
    pc_error_share_past_context: float
    spurious_per_token_past_context: float
    spurious_per_token_in_context: float
    spurious_features: int
    semantic_spread_in_context: float
    semantic_spread_past_context: float
    semantic_deviation_in_context: float
    semantic_deviation_past_context: float
    bert_edge: dict[str, Any] | None
    nulls: dict[str, Any]
    geometry: dict[str, Any]
    findings: dict[str, dict[str, Any]]
    rules: dict[str, float]
    timings: dict[str, float]
    posfeat_version: str
    settings: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """``summary.json``'s entries (but ``command`` and ``created``), in order; nested values are
        shared, not copied."""
        return {f.name: getattr(self, f.name) for f in fields(self)}
