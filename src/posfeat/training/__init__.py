"""Stage 6, the trainer: SAEs trained on the grid itself, on any device. Imports every earlier stage but ``outputs``."""

from .config import TrainConfig
from .model import TrainingSAE
from .train import TrainResult, train_sae
from .trainer import LOG_COLUMNS, Trainer

__all__ = ["LOG_COLUMNS", "TrainConfig", "TrainResult", "Trainer", "TrainingSAE", "train_sae"]
