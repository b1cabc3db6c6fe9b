"""The sweeps' settings: one dataclass per sweep, the one source of defaults for the API and the
CLI.

A sweep's recipe is :class:`posfeat.training.TrainConfig` with the defaults in ``RECIPE`` changed,
each for a stated reason; :func:`sweep_widths` / :func:`sweep_context` and ``posfeat sweep ...``
both build their runs through :meth:`WidthSweepConfig.recipe` / :meth:`ContextSweepConfig.recipe`,
so they train with identical settings (a test compares the plans they build).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..core.errors import PosfeatError, arg
from ..core.memory import check_fits
from ..engine.constants import SAMPLE_TOKENS
from ..training.config import TrainConfig

EXECUTORS = ("local", "ray")


def _f(default: Any, help: str, **meta: Any) -> Any:
    return field(default=default, metadata={"help": help, **meta})


def _req(help: str, **meta: Any) -> Any:
    return field(metadata={"help": help, "required": True, **meta})


def _positive(cfg: Any, *names: str) -> None:
    for name in names:
        v = getattr(cfg, name)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise PosfeatError(f"{arg(name, v)} must be a positive whole number.")


class _Sweep:
    RECIPE: ClassVar[dict[str, Any]] = {}
    #: why RECIPE differs from ``posfeat train``'s defaults (shown in ``--help`` beside each such
    # default)
    WHY: ClassVar[str] = ""
    #: recipe fields the sweep sets itself (not flags)
    FIXED: ClassVar[tuple[str, ...]] = ("d_sae", "context")

    @classmethod
    def recipe(cls, **given: Any) -> dict[str, Any]:
        """The training recipe: :class:`TrainConfig`'s defaults, then ``RECIPE``, then ``given``;
        unknown names refused."""
        known = {f.name for f in dataclasses.fields(TrainConfig)} - set(cls.FIXED)
        unknown = sorted(set(given) - known)
        if unknown:
            raise PosfeatError(
                f"Unknown training setting(s) {', '.join(unknown)} for this sweep; the settings are "
                f"{', '.join(sorted(known))}."
            )
        base = {
            f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())  # type: ignore[misc]
            for f in dataclasses.fields(TrainConfig)
            if f.name in known
        }
        values = {**base, **cls.RECIPE, **given}
        TrainConfig(d_sae=1, context=1, **values).validate(None)
        return values


#: Memory a plan takes per run (its record, its row of the table, its entry in the executor's
# queue), measured generously.
PLAN_BYTES_PER_RUN = 4096


def _plan_fits(runs: int) -> None:
    """Refuse, before the plan is made, a sweep whose list of runs alone could not fit in memory."""
    check_fits(runs * PLAN_BYTES_PER_RUN, f"A plan of {runs} runs", f"give fewer {arg('seeds')}")


@dataclass(frozen=True)
class WidthSweepConfig(_Sweep):
    """``posfeat sweep widths``: one SAE per width (and seed) on the same grid; positional features
    against width."""

    # the bundled SAE's recipe (calibrated in docs/bundled-sae.md): a stronger learning rate with a
    # weaker L1
    RECIPE: ClassVar[dict[str, Any]] = {"l1": 1.0, "lr": 5e-3}
    WHY: ClassVar[str] = "the bundled SAE's recipe, calibrated in docs/bundled-sae.md"

    context: int = _req("train on positions 0..context-1")
    d_sae: tuple[int, ...] = _req("widths, comma-separated, e.g. 128,256,512", parse="ints")
    seeds: int = _f(3, "seeds per width (counts and FVU as mean +- sd)")
    tokens: int = _f(SAMPLE_TOKENS, "tokens sampled for in-context FVU and L0")
    curve_points: int = _f(
        10,
        "points of the positional-feature count against training steps (widest SAE, first seed; 0: "
        "none)",
    )

    def validate(self) -> None:
        _positive(self, "context", "seeds", "tokens")
        if (
            isinstance(self.curve_points, bool)
            or not isinstance(self.curve_points, int)
            or self.curve_points < 0
        ):
            raise PosfeatError(
                f"{arg('curve_points', self.curve_points)} must be a whole number, 0 or more."
            )
        ws = self.d_sae
        if not ws or any(isinstance(w, bool) or not isinstance(w, int) or w <= 0 for w in ws):
            raise PosfeatError(f"{arg('d_sae', ws)} must list positive integer widths.")
        if len(set(ws)) < 2:
            raise PosfeatError(
                f"{arg('d_sae', ','.join(map(str, ws)))} lists one width; a sweep needs at least "
                "two widths to fit how "
                "the count grows with width."
            )
        _plan_fits(len(ws) * self.seeds)


@dataclass(frozen=True)
class ContextSweepConfig(_Sweep):
    """``posfeat sweep context``: fine-tune an SAE on longer contexts, against a from-scratch
    control."""

    # fine-tuning: a short run at a gentle learning rate; width, architecture and L1 come from the
    # SAE
    RECIPE: ClassVar[dict[str, Any]] = {"steps": 500, "lr": 1e-3}
    WHY: ClassVar[str] = "fine-tuning: a short run at a gentle learning rate"
    FIXED: ClassVar[tuple[str, ...]] = ("d_sae", "context", "arch", "k")

    contexts: tuple[int, ...] = _req(
        "contexts, comma-separated, each longer than the SAE's own, e.g. 192,256,512", parse="ints"
    )
    control_steps: int | None = _f(
        None, "steps of the from-scratch control (default: the SAE's own)"
    )
    seeds: int = _f(3, "seeds per context (FVU as mean +- sd)")
    tokens: int = _f(SAMPLE_TOKENS, "tokens sampled for FVU")
    past_tolerance: float = _f(
        0.10,
        "'repaired' needs FVU past the original context within this fraction above the original "
        "in-context FVU",
    )
    in_context_tolerance: float = _f(
        0.05, "... and in-context FVU after fine-tuning within this fraction above its value before"
    )

    @classmethod
    def recipe(cls, **given: Any) -> dict[str, Any]:
        """As :meth:`_Sweep.recipe`, but ``l1`` only when given: otherwise the plan takes the SAE's
        own."""
        values = super().recipe(**given)
        if "l1" not in given:
            values.pop("l1")
        return values

    def validate(self) -> None:
        _positive(self, "seeds", "tokens", "control_steps")
        _plan_fits((2 + len(self.contexts)) * self.seeds)
        for name in ("past_tolerance", "in_context_tolerance"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
                raise PosfeatError(f"{arg(name, v)} must be a non-negative number.")


#: Where a sweep's recipe differs from :class:`TrainConfig`'s defaults (kept for readers of 0.2).
SWEEP_DEFAULTS: dict[str, dict[str, Any]] = {
    "sweep widths": WidthSweepConfig.RECIPE,
    "sweep context": ContextSweepConfig.RECIPE,
}


@dataclass(frozen=True)
class ExecutorConfig:
    """How a sweep's runs are executed (flags of both sweep commands)."""

    executor: str = _f(
        "local",
        "run the sweep in this process (local) or as Ray tasks (ray; pip install 'posfeat[ray]')",
        choices=EXECUTORS,
    )
    address: str | None = _f(
        None,
        "Ray cluster to join: auto, HOST:PORT or ray://HOST:PORT (default: start a local one); with "
        "--executor ray",
    )
    max_retries: int = _f(
        3, "times Ray retries a run whose worker died (it resumes from its checkpoint)"
    )
    gpu_memory: float | None = _f(
        None,
        "GiB of memory of each cluster GPU, to size each run's GPU share and --plan's placement "
        "(default: from Ray's accelerator type, else this machine's GPU)",
    )

    def validate(self) -> None:
        if self.executor not in EXECUTORS:
            raise PosfeatError(f"{arg('executor', self.executor)} is unknown; use local or ray.")
        if self.address is not None and self.executor != "ray":
            raise PosfeatError(
                f"{arg('address', self.address)} is for the Ray executor; add --executor ray or "
                "drop --address."
            )
        if (
            isinstance(self.max_retries, bool)
            or not isinstance(self.max_retries, int)
            or self.max_retries < 0
        ):
            raise PosfeatError(
                f"{arg('max_retries', self.max_retries)} must be a whole number, 0 or more."
            )
        g = self.gpu_memory
        if g is not None and (
            isinstance(g, bool) or not isinstance(g, (int, float)) or not 0 < g < 1e5
        ):
            raise PosfeatError(f"{arg('gpu_memory', g)} must be a positive number of GiB, e.g. 80.")
