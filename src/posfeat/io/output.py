"""``Output``: a command's target from claim to commit.

    with Output(out, ANALYZE, force=force, command=command) as output:   # policy checked, lock
    taken
        with output.staging() as tmp:                                     # an empty folder beside
        out
            ...write files into tmp...
    # on success tmp became out (marked as posfeat's, atomically); on failure the old out is intact

A long run keeps its work in ``<out>.partial`` (:meth:`Output.work_folder`), kept when the run is
interrupted so that it can resume, and moved into place by :meth:`Output.commit_work`. A caller that
already holds the target (a sweep running a training into its own folder) passes its claim on: a
nested claim of the same target neither takes nor releases the lock. The writer declares its
:class:`~posfeat.io.ownership.OutputKind` when it claims; the marker records it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

from ..core.errors import PosfeatError, arg
from .lock import holds_lock, lock_target, unlock_target
from .ownership import MARKER, PARTIAL, Kinds, OutputKind, foreign_entries, write_marker
from .paths import shorten
from .policy import Inputs, check_file_target, check_target
from .writes import (
    atomic_file,
    clean_leftovers,
    completed,
    make_temp,
    os_error,
    remove,
    swap_in,
    umask_mode,
)

Target = str | os.PathLike[str]


class Output:
    """The target ``out`` of a command that writes an output of ``kind`` (see module docstring).

    Args:
        out: the folder to write.
        kind: what the command writes there (recorded in the marker).
        force: replace an existing ``out`` when posfeat wrote all of it.
        command: the command line recorded in the marker.
        what: the argument's name in messages (``"out"``, ``"--out"``).
        inputs: ``(label, path)`` of the run's inputs: an output never is, holds or lies inside one.
        kinds: further kinds an existing ``out`` may be, besides ``kind`` (for folders of posfeat
            0.1).
    """

    def __init__(
        self,
        out: Target | None,
        kind: OutputKind,
        *,
        force: bool = False,
        command: str | None = None,
        what: str = "out",
        inputs: Inputs = (),
        kinds: Kinds = (),
    ) -> None:
        self.out, self.kind, self.force, self.command, self.what = out, kind, force, command, what
        self.inputs = list(inputs)
        self.kinds = (kind, *kinds)
        self.target: Path | None = None
        self.nested = False

    @classmethod
    def of(cls, out: Output | Target | None, kind: OutputKind, **settings: object) -> Output:
        """``out`` itself when it is an :class:`Output` (of this kind), else a new one for the
        path."""
        if isinstance(out, Output):
            if out.kind.name != kind.name:
                raise PosfeatError(
                    f"The Output given is for a {out.kind.name} output, not {kind.name}; "
                    f"give a path or an Output of kind {kind.name!r}."
                )
            return out
        return cls(out, kind, **settings)  # type: ignore[arg-type]

    def claim(self) -> Path:
        """Apply the output policy and take the target's lock (nothing is written); returns the
        target's path."""
        if self.target is None:
            self.nested = holds_lock(self.out)
            self.target = check_target(
                self.out, force=self.force, what=self.what, inputs=self.inputs, kinds=self.kinds
            )
        return self.target

    def release(self, failed: bool = False) -> None:
        """Give the lock back (with ``failed``, remove the empty folders made for the output);
        nested claims keep it."""
        if self.target is not None and not self.nested:
            unlock_target(self.target, failed=failed)

    def __enter__(self) -> Output:
        self.claim()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release(failed=kind is not None and not self.committed)

    @property
    def committed(self) -> bool:
        """True once a complete output is in place at the target."""
        return self.target is not None and completed(self.target)

    @contextlib.contextmanager
    def staging(self) -> Iterator[Path]:
        """An empty temporary folder beside the target; when the block ends without error it is
        marked and swapped in."""
        target = self.claim()
        try:
            tmp = make_temp(target)
            os.chmod(tmp, umask_mode(directory=True))
        except OSError as err:
            raise PosfeatError(
                f"Cannot write output folder {target} ({err.strerror or err}); "
                f"choose a writable {arg(self.what)}."
            ) from None
        try:
            yield tmp
            write_marker(tmp, self.kind, self.command)
            swap_in(tmp, target)
        except OSError as err:
            raise os_error(err, "writing output folder", target) from None
        finally:
            remove(tmp)

    def work_folder(self, kind: OutputKind, *, fresh: bool = False) -> Path:
        """``<out>.partial``, this run's work folder (see :func:`partial_folder`)."""
        return partial_folder(self.claim(), kind, fresh=fresh, what=self.what)

    def commit_work(self, partial: Path) -> Path:
        """Mark the work folder complete and swap it in as the target."""
        return finish_partial(partial, self.claim(), self.kind, self.command)


@contextlib.contextmanager
def output_folder(
    out: Output | Target | None,
    *,
    kind: OutputKind,
    force: bool = False,
    command: str | None = None,
    what: str = "out",
    inputs: Inputs = (),
) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``out``; on success it becomes ``out`` (see
    :class:`Output`)."""
    output = Output.of(out, kind, force=force, command=command, what=what, inputs=inputs)
    with output, output.staging() as tmp:
        yield tmp


def output_file(
    out: Target | None,
    write: Callable[[Path], None],
    *,
    force: bool = False,
    header: str | None = None,
    what: str = "out",
    inputs: Inputs = (),
) -> Path:
    """Write a single file through ``write(tmp_path)`` under the output policy; returns the final
    path."""
    held = holds_lock(out)
    path = check_file_target(out, force=force, header=header, what=what, inputs=inputs)
    try:
        with atomic_file(path) as tmp:
            write(tmp)
    except OSError as err:
        raise os_error(err, "writing", path) from None
    finally:
        if not held:
            unlock_target(path)
    return path


def partial_folder(
    target: Path, kind: OutputKind, *, fresh: bool = False, what: str = "out"
) -> Path:
    """``<target>.partial``, the work folder of a long run (training, a sweep) that holds
    ``target``'s lock.

    Made (with a marker of ``kind``) when absent; an existing one is reused if posfeat wrote it for
    this ``kind`` and holds nothing else (emptied first with ``fresh=True``), refused otherwise.
    Kept when the run is interrupted so that it can resume; :func:`finish_partial` moves it into
    place."""
    lock_target(target, what)
    partial = target.with_name(target.name + PARTIAL)
    if partial.is_symlink() or (partial.exists() and not partial.is_dir()):
        raise PosfeatError(
            f"{partial} is not a folder; move it away, posfeat keeps the run's work there."
        )
    if partial.is_dir():
        _check_work_folder(partial, kind, what)
        if fresh:
            remove(partial)
    made = not partial.exists()
    try:
        partial.mkdir(exist_ok=True)
        if not (partial / MARKER).is_file() or fresh:
            write_marker(partial, kind)
    except OSError as err:
        if (
            made
        ):  # a full disk while making it: the folder goes again, as anything a failed run made
            with contextlib.suppress(OSError):
                remove(partial)
        raise os_error(err, "creating the work folder", partial) from None
    return partial


def _check_work_folder(partial: Path, kind: OutputKind, what: str) -> None:
    clean_leftovers(partial)
    found, unknown = foreign_entries(partial, [kind])
    if unknown and any(partial.iterdir()):
        whose = (
            "was not made by posfeat"
            if found is None
            else f"holds files a posfeat {found} run does not write"
        )
        raise PosfeatError(
            f"{partial} {whose} ({', '.join(shorten(u) for u in unknown)}); "
            "move it away, posfeat keeps the run's work there."
        )
    if found not in (None, kind.name) and any(partial.iterdir()):
        raise PosfeatError(
            f"{partial} holds the work of a posfeat {found} run, not {kind.name}; "
            f"move it away or choose another {arg(what)}."
        )


def finish_partial(
    partial: Path, target: Path, kind: OutputKind, command: str | None = None
) -> Path:
    """Mark ``partial`` complete and swap it in as ``target`` (the old ``target``, if any, is
    replaced atomically)."""
    write_marker(partial, kind, command)
    swap_in(partial, target)
    remove(partial)
    return target
