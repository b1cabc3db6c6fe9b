"""Stage 1, the data model: Embeddings, SAE and its metadata, errors, tensor helpers. Imports nothing of posfeat."""

from .embeddings import Embeddings
from .errors import Interrupted, PosfeatError, Stopped, arg
from .sae import LAYER0_HOOKS, POSFEAT_HOOK, SAE, SAEMeta, activation, sae_context
from .tensors import as_tensor, resolve_device, same_device, to_numpy
from .version import __version__

__all__ = [
           "LAYER0_HOOKS",
           "POSFEAT_HOOK",
           "SAE",
           "Embeddings",
           "Interrupted",
           "PosfeatError",
           "SAEMeta",
           "Stopped",
           "__version__",
           "activation",
           "arg",
           "as_tensor",
           "resolve_device",
           "sae_context",
           "same_device",
           "to_numpy",
]
