"""Stage 1, the data model: Embeddings, SAE and its metadata, the SAE architectures (``archs``),
errors, tensor helpers. Imports nothing of posfeat.

Names are imported on first use (PEP 562), so ``posfeat.core.errors`` and the CLI's parser need no
torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy import lazy_exports
from .version import __version__

if TYPE_CHECKING:
    from .archs import ARCHITECTURES, Architecture
    from .embeddings import Embeddings
    from .errors import Interrupted, PosfeatError, Stopped, arg
    from .sae import LAYER0_HOOKS, POSFEAT_HOOK, SAE, SAEMeta, activation, sae_context
    from .tensors import as_tensor, resolve_device, same_device, to_numpy

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        **dict.fromkeys(["ARCHITECTURES", "Architecture"], ".archs"),
        "Embeddings": ".embeddings",
        **dict.fromkeys(["Interrupted", "PosfeatError", "Stopped", "arg"], ".errors"),
        **dict.fromkeys(
            ["LAYER0_HOOKS", "POSFEAT_HOOK", "SAE", "SAEMeta", "activation", "sae_context"], ".sae"
        ),
        **dict.fromkeys(["as_tensor", "resolve_device", "same_device", "to_numpy"], ".tensors"),
    },
)

__all__ = [
    "ARCHITECTURES",
    "LAYER0_HOOKS",
    "POSFEAT_HOOK",
    "SAE",
    "Architecture",
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
