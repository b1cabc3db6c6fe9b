"""Atomic writes and the temporaries they leave: nothing half-written is ever seen under a final
name.

A new file or folder is written to a temporary name beside its target,
``.<name>.<pid>.<random>.posfeat-tmp``; then, with the stop signals held back, the old one is moved
aside, the new one moved in, and the old one deleted (:func:`swap_in`, :func:`atomic_file`). Any
failure (or signal) before that leaves the old one exactly as it was and removes the temporary.
Temporaries of dead runs (their pid is in the name) are removed by the next run for the same
target, which says so in one line (:func:`clean_leftovers`). New folders and files get the
permissions a plain ``mkdir`` / ``open`` would give (the umask).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..core.errors import PosfeatError
from ..core.signals import signals_held
from .paths import PATH_KEEP, shorten

log = logging.getLogger(__name__)

TEMP_TAG = ".posfeat-tmp"
_TEMP = re.compile(r"^\.(?P<name>.+?)\.(?P<pid>\d+)\.(?:old\.)?[^/]*" + re.escape(TEMP_TAG) + "$")
_COMPLETED: set[Path] = set()


def umask_mode(directory: bool) -> int:
    """Permissions a plain ``mkdir`` (``directory``) or ``open`` would give under the current
    umask."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


def remove(path: Path) -> None:
    """Delete a file or folder if it exists (errors ignored: used for temporaries)."""
    with signals_held():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
                path.unlink()


def shown(raw: object) -> str:
    """A value as an error message quotes it (shortened; ``''`` when empty)."""
    return shorten(raw) if str(raw) else "''"


def os_error(err: OSError, operation: str, path: object | None = None) -> PosfeatError:
    """One sentence for an OS error: what failed, doing what, on which path, and what to do."""
    if isinstance(
        err, PosfeatError
    ):  # already one sentence (a full disk seen by the safetensors writer)
        return err
    where = shorten(os.fsdecode(path if path is not None else (err.filename or "?")), PATH_KEEP)
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = "free some space or choose another place"
    elif err.errno == errno.EFBIG:
        hint = "free some space or raise the file-size limit (ulimit -f)"
    else:
        hint = "check that path and its permissions"
    return PosfeatError(f"{err.strerror or type(err).__name__} while {operation} {where}; {hint}.")


def pid_alive(pid: int) -> bool:
    """True when a process with this pid exists (ours or another user's)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def make_temp(target: Path, *, directory: bool = True, tag: str = "") -> Path:
    """An empty temporary folder (or file) beside ``target``, named with this process's pid."""
    prefix = f".{target.name}.{os.getpid()}." + (f"{tag}." if tag else "")
    if directory:
        return Path(tempfile.mkdtemp(prefix=prefix, suffix=TEMP_TAG, dir=target.parent))
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=TEMP_TAG, dir=target.parent)
    os.close(fd)
    return Path(name)


def _left_by_dead_run(entry: Path, name: str | None) -> bool:
    match = _TEMP.match(entry.name)
    if not match or (name is not None and match.group("name") != name):
        return False
    pid = int(match.group("pid"))
    return pid != os.getpid() and not pid_alive(pid)


def clean_leftovers(target: Path) -> list[Path]:
    """Remove the temporaries beside ``target`` (and inside it) that dead runs left; one line says
    so.

    Returns what was removed."""
    gone: list[Path] = []
    for folder, name in ((target.parent, target.name), (target, None)):
        if not folder.is_dir() or folder.is_symlink():
            continue
        with contextlib.suppress(OSError):
            for entry in folder.iterdir():
                if _left_by_dead_run(entry, name):
                    remove(entry)
                    gone.append(entry)
    if gone:
        names = ", ".join(p.name for p in gone[:3]) + (", ..." if len(gone) > 3 else "")
        plural = "y" if len(gone) == 1 else "ies"
        log.warning(
            "removed %d temporar%s left by a run that was killed: %s", len(gone), plural, names
        )
    return gone


def file_digest(path: Path) -> str:
    """The sha256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def completed(target: Path) -> bool:
    """True once this process has moved a complete output into place at ``target``."""
    return target in _COMPLETED


def swap_in(tmp: Path, target: Path) -> None:
    """Move ``tmp`` to ``target``: old aside, new in, old deleted; signals held back throughout."""
    with signals_held():
        if not (target.exists() or target.is_symlink()):
            os.rename(tmp, target)
            _COMPLETED.add(target)
            return
        old = make_temp(target, tag="old")
        os.rmdir(old)
        os.rename(target, old)
        try:
            os.rename(tmp, target)
        except OSError:
            os.rename(old, target)
            raise
        _COMPLETED.add(target)
        shutil.rmtree(
            old,
            onerror=lambda *a: log.warning("could not delete %s while replacing %s", a[1], target),
        )


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path for ``path``; on success it replaces ``path`` (no policy: for files
    inside posfeat's own folders).

    The temporary path lies inside a pid-tagged temporary folder beside ``path``, so whatever a
    writer makes next to it (safetensors >= 0.8 writes through its own ``.tmpXXXXXX`` file and
    renames it) is inside that folder too, and a run killed mid-write leaves only a temporary that
    :func:`clean_leftovers` knows as its own."""
    folder = make_temp(path, directory=True)
    tmp = folder / path.name
    try:
        yield tmp
        os.chmod(tmp, umask_mode(directory=False))
        with signals_held():
            os.replace(tmp, path)
            _COMPLETED.add(path)
    finally:
        remove(folder)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically (inside a folder posfeat owns)."""
    with atomic_file(Path(path)) as tmp:
        tmp.write_text(text)
