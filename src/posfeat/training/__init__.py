"""Stage 5 beside the outputs, the trainer: SAEs trained on the grid itself, on any device. Imports
only ``posfeat.core`` and ``posfeat.io``: training is independent of the engine, the analyses and
the outputs.

Names are imported on first use (PEP 562), so the CLI's parser reads ``training.config`` without
torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.lazy import lazy_exports

if TYPE_CHECKING:
    from .config import TrainConfig
    from .loop import LOG_COLUMNS, Trainer
    from .model import TrainingSAE
    from .train import TrainResult, train_sae

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "TrainConfig": ".config",
        "TrainingSAE": ".model",
        **dict.fromkeys(["TrainResult", "train_sae"], ".train"),
        **dict.fromkeys(["LOG_COLUMNS", "Trainer"], ".loop"),
    },
)

__all__ = ["LOG_COLUMNS", "TrainConfig", "TrainResult", "Trainer", "TrainingSAE", "train_sae"]
