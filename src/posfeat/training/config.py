"""The one source of training and sweep settings: dataclasses whose fields carry their default and
help.

The CLI's flags are generated from these fields (``posfeat.cli``), so README, CLI and API cannot
disagree. The sweeps' settings (and where their recipe differs from these defaults) are in
``posfeat.experiments.config``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from ..core.archs import ARCHITECTURES, either, trainable
from ..core.errors import PosfeatError, PosfeatTypeError, arg
from ..io.paths import shorten

#: The architectures the trainer trains (those of :data:`posfeat.core.archs.ARCHITECTURES` marked
# trainable); the first is the default.
ARCHS = trainable()
PRECISIONS = ("fp32", "bf16")


def _f(default: Any, help: str, **meta: Any) -> Any:
    if isinstance(default, tuple):
        return field(default_factory=lambda: default, metadata={"help": help, **meta})
    return field(default=default, metadata={"help": help, **meta})


def _req(help: str, **meta: Any) -> Any:
    return field(metadata={"help": help, "required": True, **meta})


def _arch_help() -> str:
    """``relu (L1 penalty) or topk``: each trainable architecture, with what its loss adds."""
    notes = {name: ARCHITECTURES[name].training_note for name in ARCHS}
    return either([f"{name} ({note})" if note else name for name, note in notes.items()])


@dataclass
class TrainConfig:
    """Hyper-parameters of one training run (recorded in ``cfg.json``). See
    ``posfeat.training.loop`` for the recipe."""

    d_sae: int = _req("SAE width (number of features)")
    context: int = _req("train on positions 0..context-1")
    arch: str = _f(ARCHS[0], f"activation: {_arch_help()}", choices=ARCHS)
    l1: float = _f(5.0, "L1 coefficient (ReLU), on inputs scaled to E||x||^2 = d_model")
    k: int | None = _f(None, "active features per input (TopK)")
    steps: int = _f(2000, "optimisation steps")
    batch: int = _f(2048, "(token, position) inputs per step")
    lr: float = _f(1e-3, "peak learning rate (Adam)")
    warmup: int = _f(100, "steps of linear learning-rate warm-up")
    l1_warmup: float = _f(0.2, "fraction of the steps over which the L1 coefficient is warmed up")
    seed: int = _f(0, "random seed (batches, initialisation, resampling)")
    dead_window: int = _f(400, "a feature silent for this many steps is dead (resampled)")
    resample_at: tuple[float, ...] = _f(
        (0.25, 0.5), "fractions of training at which dead features are resampled"
    )
    log_every: int = _f(20, "steps between rows of training_log.csv")
    checkpoint_seconds: float = _f(180.0, "seconds between checkpoints (and on interruption)")
    precision: str = _f(
        "fp32",
        "forward pass precision: fp32, or bf16 (autocast; weights, gradients and Adam stay fp32)",
        choices=PRECISIONS,
    )

    def validate(self, n_ctx: int | None, model: str = "the model") -> None:
        """Types and ranges of every field, each failure one sentence naming the parameter (the
        context against ``n_ctx`` positions, when given)."""
        for name in (
            "d_sae",
            "context",
            "steps",
            "batch",
            "warmup",
            "seed",
            "dead_window",
            "log_every",
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise PosfeatTypeError(
                    f"{arg(name)} is {shorten(repr(v))}, not a whole number; give an integer."
                )
        for name in ("d_sae", "steps", "batch", "dead_window", "log_every"):
            if getattr(self, name) <= 0:
                raise PosfeatError(f"{arg(name)} is {getattr(self, name)}; it must be positive.")
        if self.warmup < 0:
            raise PosfeatError(f"{arg('warmup', self.warmup)} must not be negative.")
        if (
            isinstance(self.seed, bool)
            or not isinstance(self.seed, int)
            or not 0 <= self.seed < 2**32
        ):
            raise PosfeatError(
                f"{arg('seed', shorten(self.seed))} is outside 0..{2**32 - 1}, the seeds numpy and "
                "torch take; "
                "give a seed in that range."
            )
        if self.context < 1 or (n_ctx is not None and self.context > n_ctx):
            raise PosfeatError(
                f"{arg('context', self.context)} is outside 1..{n_ctx or 'n_ctx'}, the positions of "
                f"{model}; "
                "pick a context within it."
            )
        if self.precision not in PRECISIONS:
            raise PosfeatError(f"{arg('precision', self.precision)} is unknown; use fp32 or bf16.")
        if self.arch not in ARCHS:
            raise PosfeatError(f"{arg('arch', self.arch)} is unknown; use {either(ARCHS)}.")
        ARCHITECTURES[self.arch].check_settings(self)
        for name in ("l1", "lr", "l1_warmup", "checkpoint_seconds"):
            v = getattr(self, name)
            if (
                isinstance(v, bool)
                or not isinstance(v, (int, float))
                or not math.isfinite(v)
                or v < 0
            ):
                raise PosfeatError(f"{arg(name)} is {v}; it must be a finite, non-negative number.")
        if not all(isinstance(f, (int, float)) and 0 < f < 1 for f in self.resample_at):
            raise PosfeatError(
                f"{arg('resample_at', ','.join(map(str, self.resample_at)))} must list fractions "
                "strictly between 0 and 1."
            )

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def recipe_fields() -> list[dataclasses.Field]:
    """The fields of :class:`TrainConfig` that make the recipe (all but the SAE's shape)."""
    return [f for f in dataclasses.fields(TrainConfig) if f.name not in ("d_sae", "context")]


def train_config(**values: Any) -> TrainConfig:
    """A :class:`TrainConfig` from keyword values, refusing unknown names with the list of known
    ones."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise PosfeatError(
            f"Unknown training setting(s) {', '.join(unknown)}; the settings are "
            f"{', '.join(sorted(known))}."
        )
    missing = [n for n in ("d_sae", "context") if n not in values]
    if missing:
        raise PosfeatError(f"Training needs {' and '.join(arg(n) for n in missing)}.")
    return TrainConfig(**values)
