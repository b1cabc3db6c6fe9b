"""posfeat: exact analysis of positional and semantic features of layer-0 SAEs.

Data flows one way: sources (embeddings, SAEs) -> grid statistics -> analyses -> report -> CLI.
"""

from .embeddings import Embeddings
from .errors import PosfeatError
from .grid_stats import GridStats, brute_force_stats, feature_stats
from .sae import SAE

__version__ = "0.1.0"

__all__ = [
    "SAE",
    "Embeddings",
    "GridStats",
    "PosfeatError",
    "__version__",
    "brute_force_stats",
    "feature_stats",
]
