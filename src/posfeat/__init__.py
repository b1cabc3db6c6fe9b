"""posfeat: exact analysis of positional and semantic features of layer-0 SAEs.

Data flows one way: sources (embeddings, SAEs) -> grid statistics -> analyses -> report -> CLI.

    >>> import posfeat
    >>> emb, sae = posfeat.load_pair("minilm", "minilm")      # or ("gpt2", "gpt2-small-res-jb/blocks.0.hook_resid_pre")
    >>> stats = posfeat.feature_stats(emb, sae, range(128))    # exact, whole grid
    >>> an = posfeat.analyze(emb, sae); an.save("out")         # every finding of the note
"""

from .analysis import Analysis, analyze
from .embeddings import Embeddings
from .errors import PosfeatError
from .evaluation import reconstruction_by_position
from .grid_stats import GridStats, brute_force_stats, feature_stats
from .helix import PCA, positional_pca
from .models import load_embeddings
from .reconstruction import sample_tokens
from .sae import SAE
from .sae_io import read_sae_folder, write_sae_folder
from .sources import load_pair, load_sae
from .train import train_sae

__version__ = "0.1.0"

__all__ = [
    "PCA",
    "SAE",
    "Analysis",
    "Embeddings",
    "GridStats",
    "PosfeatError",
    "__version__",
    "analyze",
    "brute_force_stats",
    "feature_stats",
    "load_embeddings",
    "load_pair",
    "load_sae",
    "positional_pca",
    "read_sae_folder",
    "reconstruction_by_position",
    "sample_tokens",
    "train_sae",
    "write_sae_folder",
]
