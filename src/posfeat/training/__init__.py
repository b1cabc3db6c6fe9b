"""Stage 6, the drivers that train: the trainer (on the grid itself, any device) and the sweeps that test the note's
conjectures. Imports every earlier stage."""

from .config import SWEEP_DEFAULTS, ContextSweepConfig, TrainConfig, WidthSweepConfig
from .model import TrainingSAE
from .sweeps import parse_ints, power_law, sweep_context, sweep_widths, verdict
from .train import TrainResult, train_sae
from .trainer import LOG_COLUMNS, Trainer

__all__ = ["LOG_COLUMNS", "SWEEP_DEFAULTS", "ContextSweepConfig", "TrainConfig", "TrainResult", "Trainer", "TrainingSAE", "WidthSweepConfig",
           "parse_ints", "power_law", "sweep_context", "sweep_widths", "train_sae", "verdict"]
