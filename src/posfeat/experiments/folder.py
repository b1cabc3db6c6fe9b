"""Where a sweep works: ``<out>.partial`` while running, moved to ``out`` when every run has finished.

This is the one place the sweeps' ``.partial`` logic lives (the lead points it at the shared helper of
``posfeat.io.atomic`` at merge). Pointed at a finished sweep of the same kind, a sweep extends it in
place (new widths, contexts or seeds); pointed at ``out`` whose ``.partial`` holds an interrupted
sweep, it continues it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.errors import PosfeatError, arg
from ..io.atomic import check_target, remove, resolve_target, swap_in, write_marker, written_by_posfeat


class SweepFolder:
    """``path`` while running, ``target`` once done."""

    def __init__(self, out: Any, kind: str, force: bool, command: str | None) -> None:
        target = resolve_target(out)
        self.in_place = target.is_dir() and written_by_posfeat(target) == kind
        self.target, self.kind, self.command = (target if self.in_place else check_target(out, force=force)), kind, command
        self.path = self.target if self.in_place else self.target.with_name(self.target.name + ".partial")
        if self.path.exists() and not self.path.is_dir():
            raise PosfeatError(f"{self.path} is a file; move it away, posfeat keeps the sweep's work there.")
        if not self.in_place and self.path.is_dir() and written_by_posfeat(self.path) not in (None, kind) and any(self.path.iterdir()):
            raise PosfeatError(f"{self.path} holds another posfeat output; move it away, posfeat keeps the sweep's work there.")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            if not self.in_place:
                write_marker(self.path, kind, command)
            (self.path / "figures").mkdir(exist_ok=True)
        except OSError as err:
            raise PosfeatError(f"Cannot write sweep folder {self.path} ({err.strerror or err}); choose a writable {arg('out')}.") from None

    def finish(self) -> Path:
        write_marker(self.path, self.kind, self.command)
        if not self.in_place:
            swap_in(self.path, self.target)
            remove(self.path)
        return self.target
