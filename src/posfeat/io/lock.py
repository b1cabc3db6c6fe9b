"""One writer per target: an exclusive lock beside each output, held from the start of a run to the
end of its swap.

The lock is ``fcntl.flock`` on ``.<name>.posfeat-lock`` beside the target, holding the holder's pid,
command and start time; a second run to the same target fails at once naming the first, and a lock
left by a dead run is taken over with a one-line note. The lock file is created without following a
symbolic link, and anything but a plain file at its path is refused. Folders created for an output
are removed again when its run fails (:func:`release_all`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import json
import logging
import os
import shlex
import stat
import sys
from pathlib import Path

from ..core.errors import PosfeatError, arg
from .paths import expand, shorten, visible
from .writes import clean_leftovers, os_error, pid_alive, umask_mode

log = logging.getLogger(__name__)

LOCK_TAG = ".posfeat-lock"
_RUN = {
    "command": shlex.join(sys.argv) if sys.argv and sys.argv[0] else "python",
    "started": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
}


def set_run(command: str) -> None:
    """Record this process's command line and start time (shown to a second run that finds the
    lock)."""
    _RUN.update(command=command, started=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))


class TargetLock:
    """An exclusive lock on an output target, held by this process from the start of a run to the
    end of its swap."""

    def __init__(self, target: Path, what: str = "out") -> None:
        self.target, self.what = target, what
        self.path = target.with_name(f".{target.name}{LOCK_TAG}")
        self.fd: int | None = None
        self.created: list[Path] = []

    def acquire(self) -> None:
        self._make_parents()
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                info = _read_lock(fd)
                os.close(fd)
                raise PosfeatError(
                    f"Another posfeat run is writing {self.target} (pid "
                    f"{visible(str(info.get('pid', '?')))}, "
                    f"{shorten(info.get('command', '?'))!r}, started "
                    f"{shorten(info.get('started', '?'))}); wait for it to end or "
                    f"choose another {arg(self.what)}."
                ) from None
            # the file we locked may have been unlinked by its previous holder in
            # between: retry then
            try:
                same = _same_file(fd, self.path)
            except OSError:
                same = False
            if same:
                break
            os.close(fd)
        old = _read_lock(fd)
        if old.get("pid") and old.get("pid") != os.getpid():
            pid = old.get("pid")
            state = (
                "which is no longer running"
                if not isinstance(pid, int) or not pid_alive(pid)
                else "which no longer holds it"
            )
            log.warning(
                "took over the lock on %s left by pid %s (%s, started %s), %s",
                self.target,
                visible(str(pid)),
                shorten(old.get("command", "?")),
                shorten(old.get("started", "?")),
                state,
            )
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"pid": os.getpid(), **_RUN}).encode(), 0)
        except OSError as err:
            with contextlib.suppress(OSError):
                if _same_file(fd, self.path):
                    os.unlink(self.path)
            os.close(fd)
            self.discard_parents()
            raise os_error(err, "writing the lock file", self.path) from None
        self.fd = fd

    def _open(self) -> int:
        """The lock file, created or opened without following a symlink; anything but a plain file
        there is refused."""
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags, umask_mode(directory=False))
        except OSError as err:
            self.discard_parents()
            if err.errno == errno.ELOOP or self.path.is_symlink():
                raise refuse_link(self.path, "the lock file") from None
            raise os_error(err, "creating the lock file", self.path) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            self.discard_parents()
            raise PosfeatError(
                f"{visible(str(self.path))} is not a plain file, and posfeat keeps the lock of "
                f"{visible(str(self.target))} "
                f"there; move it away or choose another {arg(self.what)}."
            )
        return fd

    def _make_parents(self) -> None:
        missing = [p for p in [self.target.parent, *self.target.parent.parents] if not p.exists()]
        for p in reversed(missing):
            try:
                p.mkdir()
            except FileExistsError:
                continue
            except OSError as err:
                self.discard_parents()
                raise PosfeatError(
                    f"Cannot create folder {p} for the output ({err.strerror or err}); choose a "
                    f"writable {arg(self.what)}."
                ) from None
            self.created.append(p)

    def discard_parents(self) -> None:
        """Remove the folders this run created for its output, if they are still empty."""
        for p in reversed(self.created):
            with contextlib.suppress(OSError):
                p.rmdir()
        self.created = []

    def release(self, failed: bool = False) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                if _same_file(
                    self.fd, self.path
                ):  # never what was put in its place (a link, another file)
                    os.unlink(self.path)
            os.close(self.fd)
            self.fd = None
        if failed:
            self.discard_parents()


def _same_file(fd: int, path: Path) -> bool:
    """True when ``path`` (not followed if a link) is the file open as ``fd``."""
    st, here = os.fstat(fd), os.lstat(path)
    return (st.st_dev, st.st_ino) == (here.st_dev, here.st_ino)


def refuse_link(path: Path, what: str) -> PosfeatError:
    """The refusal for a symlink found where posfeat creates ``what`` (it never follows a link it
    did not ask for)."""
    try:
        to = f" (to {shorten(os.readlink(path))})"
    except OSError:
        to = ""
    return PosfeatError(
        f"{visible(str(path))} is a symbolic link{to} where posfeat creates {what}; posfeat never "
        "writes through a link "
        "it did not ask for: remove the link and run again."
    )


def _read_lock(fd: int) -> dict[str, object]:
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


_LOCKS: dict[Path, TargetLock] = {}


def lock_target(target: Path, what: str = "out") -> TargetLock:
    """Take ``target``'s lock for this process (a no-op when it already holds it); see module
    docstring."""
    if target not in _LOCKS:
        lock = TargetLock(target, what)
        lock.acquire()
        _LOCKS[target] = lock
        clean_leftovers(target)
    return _LOCKS[target]


def holds_lock(out: str | os.PathLike[str] | None) -> bool:
    """True when this process holds the lock on ``out`` already (then the caller does not release
    it)."""
    try:
        return out is not None and expand(out).resolve() in _LOCKS
    except (OSError, RuntimeError, TypeError, ValueError):
        return False


def unlock_target(target: Path, failed: bool = False) -> None:
    """Release ``target``'s lock; with ``failed``, also remove the (empty) folders made for it."""
    lock = _LOCKS.pop(target, None)
    if lock is not None:
        lock.release(failed)


def release_all(failed: bool = False) -> None:
    """Release every lock this process holds (the CLI calls this at exit; ``failed`` when the run
    did not succeed)."""
    for target in list(_LOCKS):
        unlock_target(target, failed)
