"""Stage 3, the engine: exact grid statistics (additive fast paths and the enumeration reference),
and the SAE on a token sample at every position. Imports ``posfeat.core`` and ``posfeat.io``.

Names are imported on first use (PEP 562), so the CLI's parser can read this stage's configs without
torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.lazy import lazy_exports

if TYPE_CHECKING:
    from .additive import TokenTop, additive_block, token_summary
    from .grid_stats import (
        GridStats,
        NeverFiring,
        additive_parts,
        brute_force_stats,
        check_pair,
        feature_stats,
        grid_statistics,
        resolve_index,
    )
    from .kernel import set_threads
    from .sample import Chunk, DeviationSums, SampleGrid, TokenSample, sample_tokens

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        **dict.fromkeys(["TokenTop", "additive_block", "token_summary"], ".additive"),
        **dict.fromkeys(
            [
                "GridStats",
                "NeverFiring",
                "additive_parts",
                "brute_force_stats",
                "check_pair",
                "feature_stats",
                "grid_statistics",
                "resolve_index",
            ],
            ".grid_stats",
        ),
        **dict.fromkeys(["set_threads"], ".kernel"),
        **dict.fromkeys(
            ["Chunk", "DeviationSums", "SampleGrid", "TokenSample", "sample_tokens"], ".sample"
        ),
    },
)

__all__ = [
    "Chunk",
    "DeviationSums",
    "GridStats",
    "NeverFiring",
    "SampleGrid",
    "TokenSample",
    "TokenTop",
    "additive_block",
    "additive_parts",
    "brute_force_stats",
    "check_pair",
    "feature_stats",
    "grid_statistics",
    "resolve_index",
    "sample_tokens",
    "set_threads",
    "token_summary",
]
