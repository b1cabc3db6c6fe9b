"""Where a sweep works: ``<out>.partial`` while running, moved to ``out`` when every run has
finished.

The ``.partial`` folder and the lock come from the :class:`~posfeat.io.output.Output` that ``posfeat
train`` uses too. Pointed at a finished sweep of the same kind, a sweep extends it in place (new
widths, contexts or seeds); pointed at ``out`` whose ``.partial`` holds an interrupted sweep, it
continues it. The two kinds of sweep folder, and every file they hold, are declared here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.errors import PosfeatError, arg
from ..io.lock import lock_target
from ..io.output import Output
from ..io.ownership import MARKER, OutputKind, write_marker, written_by_posfeat
from ..io.policy import resolve_target
from ..training.train import TRAIN, TRAIN_CHECKPOINT
from .runner import CURVE_FILE, RUN_FILE, WORKER_SUFFIX

_RUN_FILES = (*TRAIN.files, CURVE_FILE, RUN_FILE, "checkpoint.*", MARKER)
#: What a sweep's runs leave in its folder: each run's SAE folder, its work folder and, while it
# runs, its worker.
_RUNS = (
    *(f"{run}/{name}" for run in ("*/seed_*", "*/seed_*.partial") for name in _RUN_FILES),
    f"*/seed_*{WORKER_SUFFIX}",
)
_SAE_FILES = (*TRAIN.files, CURVE_FILE)
_COMMON = ("runs.csv", "summary.json", "section.html", "figures", "figures/*.png")

SWEEP_WIDTHS = OutputKind(
    "sweep widths",
    ("widths.csv", *_COMMON, "d_sae_*", "d_sae_*/seed_*", "d_sae_*/seed_*.partial", *_RUNS),
    grows=("d_sae_*", "d_sae_*/seed_*", "d_sae_*/seed_*.partial", *_RUNS),
    legacy=(
        ("widths.csv", "summary.json", "section.html"),
        ("figures", "figures/*.png", "d_sae_*", *(f"d_sae_*/{f}" for f in _SAE_FILES)),
        None,
    ),
)
SWEEP_CONTEXT = OutputKind(
    "sweep context",
    (
        "contexts.csv",
        *_COMMON,
        "finetune_ctx_*",
        "scratch_ctx_*",
        "*_ctx_*/seed_*",
        "*_ctx_*/seed_*.partial",
        *_RUNS,
    ),
    grows=(
        "finetune_ctx_*",
        "scratch_ctx_*",
        "original",
        "*_ctx_*/seed_*",
        "*_ctx_*/seed_*.partial",
        "original/seed_*",
        "original/seed_*.partial",
        *_RUNS,
    ),
    legacy=(
        ("contexts.csv", "summary.json", "section.html"),
        ("figures", "figures/*.png", "*_ctx_*", *(f"*_ctx_*/{f}" for f in _SAE_FILES)),
        None,
    ),
)
#: The kinds an existing sweep folder may be (``posfeat train`` folders are never extended by a
# sweep).
SWEEP_KINDS = (SWEEP_WIDTHS, SWEEP_CONTEXT, TRAIN, TRAIN_CHECKPOINT)


class SweepFolder:
    """``path`` while running, ``target`` once done; the sweep holds ``target``'s lock
    throughout."""

    def __init__(self, out: Any, kind: OutputKind, force: bool, command: str | None) -> None:
        self.output = Output.of(out, kind, force=force, command=command, kinds=SWEEP_KINDS)
        target = resolve_target(self.output.out)
        self.in_place = target.is_dir() and written_by_posfeat(target, SWEEP_KINDS) == kind.name
        self.kind, self.command = kind, command
        if self.in_place:
            self.target = lock_target(target).target
            self.path = self.target
        else:
            self.target = self.output.claim()
            self.path = self.output.work_folder(kind)
        self.placement: dict[
            str, Any
        ] = {}  # the nodes and devices the runs took part on (set by the executor's pass)
        try:
            (self.path / "figures").mkdir(exist_ok=True)
        except OSError as err:
            raise PosfeatError(
                f"Cannot write sweep folder {self.path} ({err.strerror or err}); "
                f"choose a writable {arg('out')}."
            ) from None

    def finish(self) -> Path:
        if self.in_place:
            write_marker(self.path, self.kind, self.command)
            return self.target
        return self.output.commit_work(self.path)
