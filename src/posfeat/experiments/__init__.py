"""Stage 6, experiments (imports every earlier stage): the sweeps that test the note's conjectures,
as a plan of runs, an executor (in-process or Ray) and an aggregation that reads only finished runs.
Ray is imported only when the Ray executor is chosen.

Names are imported on first use (PEP 562), so the CLI's parser can read this stage's configs without
torch."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.lazy import lazy_exports

if TYPE_CHECKING:
    from .aggregate import (
        lack_of_fit,
        local_exponents,
        power_law,
        repair_verdict,
        trend_test,
        width_statistics,
    )
    from .config import SWEEP_DEFAULTS, ContextSweepConfig, ExecutorConfig, WidthSweepConfig
    from .plan import Run, Shared, context_plan, width_plan
    from .probe import plan_table
    from .sweeps import SweepIncompleteError, parse_ints, sweep_context, sweep_widths

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        **dict.fromkeys(
            [
                "lack_of_fit",
                "local_exponents",
                "power_law",
                "repair_verdict",
                "trend_test",
                "width_statistics",
            ],
            ".aggregate",
        ),
        **dict.fromkeys(
            ["SWEEP_DEFAULTS", "ContextSweepConfig", "ExecutorConfig", "WidthSweepConfig"],
            ".config",
        ),
        **dict.fromkeys(["Run", "Shared", "context_plan", "width_plan"], ".plan"),
        **dict.fromkeys(["plan_table"], ".probe"),
        **dict.fromkeys(
            ["SweepIncompleteError", "parse_ints", "sweep_context", "sweep_widths"], ".sweeps"
        ),
    },
)

__all__ = [
    "SWEEP_DEFAULTS",
    "ContextSweepConfig",
    "ExecutorConfig",
    "Run",
    "Shared",
    "SweepIncompleteError",
    "WidthSweepConfig",
    "context_plan",
    "lack_of_fit",
    "local_exponents",
    "parse_ints",
    "plan_table",
    "power_law",
    "repair_verdict",
    "sweep_context",
    "sweep_widths",
    "trend_test",
    "width_plan",
    "width_statistics",
]
