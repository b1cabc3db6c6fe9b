"""Stage 3, the engine: exact grid statistics (additive fast paths and the enumeration reference), and the
SAE on a token sample at every position. Imports ``posfeat.core`` and ``posfeat.io``."""

from .additive import additive_block, token_summary
from .grid_stats import GridStats, NeverFiring, additive_parts, brute_force_stats, check_pair, feature_stats, grid_statistics, resolve_index
from .kernel import set_threads
from .sample import Chunk, DeviationSums, SampleGrid, TokenSample, sample_tokens

__all__ = ["Chunk", "DeviationSums", "GridStats", "NeverFiring", "SampleGrid", "TokenSample", "additive_block", "additive_parts", "brute_force_stats",
           "check_pair", "feature_stats", "grid_statistics", "resolve_index", "sample_tokens", "set_threads", "token_summary"]
