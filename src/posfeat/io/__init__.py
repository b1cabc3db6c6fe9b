"""Stage 2, reading and writing: checkpoints, the hub cache, SAE folders, model objects,
safetensors, token weights,
and the output policy: atomic writes (``writes``), locks (``lock``), what is posfeat's
(``ownership``), where it may write (``policy``) and the :class:`Output` that ties them together
(``output``). Imports only ``posfeat.core``.

Names are imported on first use (PEP 562), so light modules (the CLI's parser, the output policy)
load without torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.lazy import lazy_exports

if TYPE_CHECKING:
    from .checkpoints import (
        BUNDLED_MODEL,
        MODEL_ALIASES,
        RESID_PRE_TYPES,
        layer0_hook,
        load_embeddings,
    )
    from .hub import hub_cache_dir, hub_settings, offline
    from .output import Output, output_file, output_folder
    from .ownership import OutputKind
    from .policy import check_file_target, check_target
    from .sae_folders import read_sae_folder, write_sae_folder
    from .safetensors_io import read_header, read_json, read_tensors, tensor_names
    from .sources import (
        BUNDLED_SAE,
        BUNDLED_SAE_DIR,
        RELEASES,
        load_pair,
        load_sae,
        sae_token_weights,
    )
    from .tokens import TOKEN_WEIGHTS_FILE, load_token_weights, token_weights_arg
    from .writes import write_text_atomic

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        **dict.fromkeys(["Output", "output_file", "output_folder"], ".output"),
        **dict.fromkeys(["OutputKind"], ".ownership"),
        **dict.fromkeys(["check_file_target", "check_target"], ".policy"),
        **dict.fromkeys(["write_text_atomic"], ".writes"),
        **dict.fromkeys(
            ["BUNDLED_MODEL", "MODEL_ALIASES", "RESID_PRE_TYPES", "layer0_hook", "load_embeddings"],
            ".checkpoints",
        ),
        **dict.fromkeys(["hub_cache_dir", "hub_settings", "offline"], ".hub"),
        **dict.fromkeys(["read_sae_folder", "write_sae_folder"], ".sae_folders"),
        **dict.fromkeys(
            ["read_header", "read_json", "read_tensors", "tensor_names"], ".safetensors_io"
        ),
        **dict.fromkeys(
            [
                "BUNDLED_SAE",
                "BUNDLED_SAE_DIR",
                "RELEASES",
                "load_pair",
                "load_sae",
                "sae_token_weights",
            ],
            ".sources",
        ),
        **dict.fromkeys(
            ["TOKEN_WEIGHTS_FILE", "load_token_weights", "token_weights_arg"], ".tokens"
        ),
    },
)

__all__ = [
    "BUNDLED_MODEL",
    "BUNDLED_SAE",
    "BUNDLED_SAE_DIR",
    "MODEL_ALIASES",
    "RELEASES",
    "RESID_PRE_TYPES",
    "TOKEN_WEIGHTS_FILE",
    "Output",
    "OutputKind",
    "check_file_target",
    "check_target",
    "hub_cache_dir",
    "hub_settings",
    "layer0_hook",
    "load_embeddings",
    "load_pair",
    "load_sae",
    "load_token_weights",
    "offline",
    "output_file",
    "output_folder",
    "read_header",
    "read_json",
    "read_sae_folder",
    "read_tensors",
    "sae_token_weights",
    "tensor_names",
    "token_weights_arg",
    "write_sae_folder",
    "write_text_atomic",
]
