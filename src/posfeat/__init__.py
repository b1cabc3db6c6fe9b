"""posfeat: exact analysis of positional and semantic features of layer-0 SAEs.

Data flows one way through the stages (each subpackage imports only from those before it): ``core``
-> ``io`` -> ``engine`` -> ``analyses`` -> ``outputs`` -> ``training`` -> ``experiments`` ->
``cli``.

    >>> import posfeat
    >>> emb, sae = posfeat.load_pair("minilm", "minilm")  # or "gpt2", "gpt2-small-res-jb/..."
    >>> stats = posfeat.feature_stats(emb, sae, range(128))  # exact, whole grid, where the pair lives
    >>> an = posfeat.analyze(emb, sae); an.save("out")  # every finding of the note, with verdicts

``import posfeat`` is light: each name below is imported on first use (PEP 562), so torch, scipy and
matplotlib load only when something needs them. :class:`Analysis` and :func:`analyze` come from
``posfeat.outputs`` (the stage whose writers and figures ``Analysis.save`` and ``.figure`` reach).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .core.lazy import lazy_exports
from .core.version import __version__

if TYPE_CHECKING:
    from .analyses import (
        PCA,
        Comparison,
        FeatureCard,
        FindingRules,
        Prompt,
        compare_saes,
        feature_card,
        positional_pca,
        prompt,
        reconstruction_by_position,
    )
    from .core import SAE, Embeddings, PosfeatError, SAEMeta
    from .engine import GridStats, brute_force_stats, feature_stats, sample_tokens
    from .experiments import ContextSweepConfig, WidthSweepConfig, sweep_context, sweep_widths
    from .io import load_embeddings, load_pair, load_sae, read_sae_folder, write_sae_folder
    from .outputs.results import Analysis, analyze
    from .training import TrainConfig, train_sae

_EXPORTS = {
    **dict.fromkeys(["Analysis", "analyze"], ".outputs.results"),
    **dict.fromkeys(
        [
            "PCA",
            "Comparison",
            "FeatureCard",
            "FindingRules",
            "Prompt",
            "compare_saes",
            "feature_card",
            "positional_pca",
            "prompt",
            "reconstruction_by_position",
        ],
        ".analyses",
    ),
    **dict.fromkeys(["SAE", "Embeddings", "SAEMeta"], ".core"),
    "PosfeatError": ".core.errors",
    **dict.fromkeys(
        ["GridStats", "brute_force_stats", "feature_stats", "sample_tokens"], ".engine"
    ),
    **dict.fromkeys(
        ["ContextSweepConfig", "WidthSweepConfig", "sweep_context", "sweep_widths"], ".experiments"
    ),
    **dict.fromkeys(
        ["load_embeddings", "load_pair", "load_sae", "read_sae_folder", "write_sae_folder"], ".io"
    ),
    **dict.fromkeys(["TrainConfig", "train_sae"], ".training"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

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
