"""``AnalyzeConfig``: the one source of ``posfeat analyze``'s defaults, for :func:`posfeat.analyze`
(its keyword defaults are these fields) and the CLI's flags (generated from them). The verdicts'
thresholds are :class:`posfeat.FindingRules` (``--rule NAME=VALUE``); where to compute is
``--device``."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..engine.constants import SAMPLE_TOKENS


@dataclass(frozen=True)
class AnalyzeConfig:
    """Settings of ``posfeat analyze`` that have a default (the CLI's flags are generated from these
    fields)."""

    tokens_sample: int = field(
        default=SAMPLE_TOKENS, metadata={"help": "tokens sampled for reconstruction analyses"}
    )
    token: str | None = field(
        default=None,
        metadata={"help": "token for the per-token figure (default a common one: ' the')"},
    )
    seed: int = field(default=0, metadata={"help": "seed of the token sample"})
    positional_share: float = field(
        default=0.5,
        metadata={
            "help": "a feature is positional when position explains at least this share of its "
            "activation's variance "
            "over the in-context grid"
        },
    )
    semantic_share: float = field(
        default=0.5,
        metadata={
            "help": "a feature is semantic when tokens explain at least this share of its "
            "activation's variance "
            "over the in-context grid"
        },
    )
    n_token_features: int = field(
        default=10, metadata={"help": "features shown per token (top features, flatness)"}
    )
