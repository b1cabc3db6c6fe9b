"""Where a sweep works: ``<out>.partial`` while running, moved to ``out`` when every run has finished.

The ``.partial`` folder and the lock come from the helpers that ``posfeat train`` uses too
(:func:`posfeat.io.atomic.partial_folder`, :func:`posfeat.io.atomic.finish_partial`). Pointed at a
finished sweep of the same kind, a sweep extends it in place (new widths, contexts or seeds);
pointed at ``out`` whose ``.partial`` holds an interrupted sweep, it continues it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.errors import PosfeatError, arg
from ..io.atomic import check_target, finish_partial, lock_target, partial_folder, resolve_target, write_marker, written_by_posfeat


class SweepFolder:
    """``path`` while running, ``target`` once done; the sweep holds ``target``'s lock throughout."""

    def __init__(self, out: Any, kind: str, force: bool, command: str | None) -> None:
        target = resolve_target(out)
        self.in_place = target.is_dir() and written_by_posfeat(target) == kind
        self.target, self.kind, self.command = (lock_target(target).target if self.in_place else check_target(out, force=force)), kind, command
        self.path = self.target if self.in_place else partial_folder(self.target, kind)
        self.placement: dict[str, Any] = {}  # the nodes and devices the runs took part on (set by the executor's pass)
        try:
            (self.path / "figures").mkdir(exist_ok=True)
        except OSError as err:
            raise PosfeatError(f"Cannot write sweep folder {self.path} ({err.strerror or err}); choose a writable {arg('out')}.") from None

    def finish(self) -> Path:
        if self.in_place:
            write_marker(self.path, self.kind, self.command)
            return self.target
        return finish_partial(self.path, self.target, self.kind, self.command)
