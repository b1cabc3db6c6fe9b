"""``AnalyzeConfig``: the one source of ``posfeat analyze``'s sampling defaults, for :func:`posfeat.analyze` and its CLI flags."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..engine.constants import SAMPLE_TOKENS


@dataclass(frozen=True)
class AnalyzeConfig:
    """Settings of ``posfeat analyze`` that have a default (the CLI's flags are generated from these fields)."""

    tokens_sample: int = field(default=SAMPLE_TOKENS, metadata={"help": "tokens sampled for reconstruction analyses"})
    token: str | None = field(default=None, metadata={"help": "token for the per-token figure (default a common one: ' the')"})
    seed: int = field(default=0, metadata={"help": "seed of the token sample"})
