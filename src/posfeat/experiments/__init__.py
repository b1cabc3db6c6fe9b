"""Stage 7, experiments: the sweeps that test the note's conjectures, as a plan of runs, an executor (in-process or Ray)
and an aggregation that reads only finished runs. Ray is imported only when the Ray executor is chosen."""

from .aggregate import lack_of_fit, local_exponents, power_law, repair_verdict, trend_test, width_statistics
from .config import SWEEP_DEFAULTS, ContextSweepConfig, ExecutorConfig, WidthSweepConfig
from .plan import Run, Shared, context_plan, width_plan
from .probe import plan_table
from .sweeps import SweepIncompleteError, parse_ints, sweep_context, sweep_widths

__all__ = ["SWEEP_DEFAULTS", "ContextSweepConfig", "ExecutorConfig", "Run", "Shared", "SweepIncompleteError", "WidthSweepConfig", "context_plan",
           "lack_of_fit", "local_exponents", "parse_ints", "plan_table", "power_law", "repair_verdict", "sweep_context", "sweep_widths",
           "trend_test", "width_plan", "width_statistics"]
