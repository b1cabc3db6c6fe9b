"""posfeat: exact analysis of positional and semantic features of layer-0 SAEs.

Data flows one way through the stages (each subpackage imports only from those before it):
``core`` -> ``io`` -> ``engine`` -> ``analyses`` -> ``outputs`` -> ``training`` -> ``experiments`` -> ``cli``.

    >>> import posfeat
    >>> emb, sae = posfeat.load_pair("minilm", "minilm")      # or ("gpt2", "gpt2-small-res-jb/blocks.0.hook_resid_pre", device="cuda")
    >>> stats = posfeat.feature_stats(emb, sae, range(128))    # exact, whole grid, where the pair lives
    >>> an = posfeat.analyze(emb, sae); an.save("out")         # every finding of the note, with verdicts
"""

from . import outputs as _outputs  # noqa: F401  (registers the writers and figures that Analysis uses)
from .analyses import (
    PCA,
    Analysis,
    Comparison,
    FeatureCard,
    FindingRules,
    Prompt,
    analyze,
    compare_saes,
    feature_card,
    positional_pca,
    prompt,
    reconstruction_by_position,
)
from .core import SAE, Embeddings, PosfeatError, SAEMeta, __version__
from .engine import GridStats, brute_force_stats, feature_stats, sample_tokens
from .experiments import ContextSweepConfig, WidthSweepConfig, sweep_context, sweep_widths
from .io import load_embeddings, load_pair, load_sae, read_sae_folder, write_sae_folder
from .training import TrainConfig, train_sae

__all__ = [
    "PCA",
    "SAE",
    "Analysis",
    "Comparison",
    "ContextSweepConfig",
    "Embeddings",
    "FeatureCard",
    "FindingRules",
    "GridStats",
    "PosfeatError",
    "Prompt",
    "SAEMeta",
    "TrainConfig",
    "WidthSweepConfig",
    "__version__",
    "analyze",
    "brute_force_stats",
    "compare_saes",
    "feature_card",
    "feature_stats",
    "load_embeddings",
    "load_pair",
    "load_sae",
    "positional_pca",
    "prompt",
    "read_sae_folder",
    "reconstruction_by_position",
    "sample_tokens",
    "sweep_context",
    "sweep_widths",
    "train_sae",
    "write_sae_folder",
]
