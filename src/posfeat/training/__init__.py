"""Stage 6, the drivers that train: the trainer (on the grid itself, any device) and the sweeps that test the note's
conjectures. Imports every earlier stage.

Names are imported on first use (PEP 562), so the CLI's parser reads ``training.config`` without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.lazy import lazy_exports

if TYPE_CHECKING:
    from .config import SWEEP_DEFAULTS, ContextSweepConfig, TrainConfig, WidthSweepConfig
    from .model import TrainingSAE
    from .sweeps import parse_ints, power_law, sweep_context, sweep_widths, verdict
    from .train import TrainResult, train_sae
    from .trainer import LOG_COLUMNS, Trainer

__getattr__, __dir__ = lazy_exports(__name__, {
    **dict.fromkeys(["SWEEP_DEFAULTS", "ContextSweepConfig", "TrainConfig", "WidthSweepConfig"], ".config"),
    "TrainingSAE": ".model",
    **dict.fromkeys(["parse_ints", "power_law", "sweep_context", "sweep_widths", "verdict"], ".sweeps"),
    **dict.fromkeys(["TrainResult", "train_sae"], ".train"),
    **dict.fromkeys(["LOG_COLUMNS", "Trainer"], ".trainer"),
})

__all__ = ["LOG_COLUMNS", "SWEEP_DEFAULTS", "ContextSweepConfig", "TrainConfig", "TrainResult", "Trainer", "TrainingSAE", "WidthSweepConfig",
           "parse_ints", "power_law", "sweep_context", "sweep_widths", "train_sae", "verdict"]
