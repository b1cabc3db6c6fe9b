"""The one atomic writer and the output policy every command follows.

Policy (:func:`check_target`): an output path must be non-empty and must not be the current
folder, one of its parents, the home folder or the filesystem root. An existing output is
replaced only when ``force`` is given *and* posfeat wrote it (or it is an empty folder): every
folder posfeat writes holds a marker file, ``.posfeat-output.json`` (folders written by posfeat
0.1 are recognised by their ``summary.json`` / ``cfg.json``), and a CSV posfeat writes starts
with posfeat's own header.

Mechanism (:func:`output_folder`, :func:`output_file`, :func:`atomic_file`): the new output is
written to a temporary name beside the target; then, with SIGINT and SIGTERM held back, the old
output is moved aside, the new one moved in, and the old one deleted. Any failure (or signal)
before that leaves the old output exactly as it was and removes the temporary; a signal during
the swap is delivered right after it, when either the old or the new output is in place.
New folders and files get the permissions a plain ``mkdir`` / ``open`` would give (the umask).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from ..core.errors import PosfeatError, arg
from ..core.version import __version__

log = logging.getLogger(__name__)

MARKER = ".posfeat-output.json"
TEMP_TAG = ".posfeat-tmp"
_SIGNALS = {signal.SIGINT, signal.SIGTERM}


# ---------------------------------------------------------------------------- small helpers
def umask_mode(directory: bool) -> int:
    """Permissions a plain ``mkdir`` (``directory``) or ``open`` would give under the current umask."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back for the duration (delivered when it ends)."""
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    except (AttributeError, OSError, ValueError):  # pragma: no cover - platforms without sigmask
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class Deferred:
    """Signals that arrived under :func:`deferred_signals` (the first one's number, or None)."""

    signum: int | None = None


@contextlib.contextmanager
def deferred_signals() -> Iterator[Deferred]:
    """Record SIGINT and SIGTERM instead of acting on them, so a long loop stops at a clean point of its own choosing.

    Outside the main thread (where handlers cannot be set) nothing changes.
    """
    state = Deferred()

    def record(signum: int, frame: object) -> None:
        state.signum = state.signum or signum

    try:
        old = {s: signal.signal(s, record) for s in _SIGNALS}
    except ValueError:
        old = {}
    try:
        yield state
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def remove(path: Path) -> None:
    """Delete a file or folder if it exists (errors ignored: used for temporaries)."""
    with signals_held():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
                path.unlink()


def _shown(raw: object) -> str:
    return str(raw) if str(raw) else "''"


# ---------------------------------------------------------------------------- the policy
def resolve_target(out: str | os.PathLike[str] | None, what: str = "out") -> Path:
    """``out`` as an absolute path (``~`` expanded, symlinks followed), refused when empty or a folder of the user's own."""
    raw = "" if out is None else os.fspath(out)
    if not raw.strip():
        raise PosfeatError(f"{arg(what)} is empty, which would mean the current folder; give the name of a new folder for the output.")
    path = Path(raw).expanduser().resolve()
    cwd, home = Path.cwd().resolve(), Path.home().resolve()
    if path == cwd or path in cwd.parents:
        which = "the current folder" if path == cwd else "a parent of the current folder"
        raise PosfeatError(f"{arg(what, _shown(raw))} is {which}; posfeat writes into a folder of its own and never replaces yours: "
                           "give the name of a new folder.")
    if path == home or path == Path(path.anchor):
        raise PosfeatError(f"{arg(what, _shown(raw))} is the {'home folder' if path == home else 'filesystem root'}; "
                           "give the name of a new folder for the output.")
    return path


def written_by_posfeat(folder: Path) -> str | None:
    """The kind of posfeat output ``folder`` holds (``"analyze"``, ``"train"``, ...), or None if posfeat did not write it."""
    marker = folder / MARKER
    if marker.is_file():
        try:
            data = json.loads(marker.read_text())
            return str(data.get("kind", "unknown")) if data.get("tool") == "posfeat" else None
        except (OSError, ValueError, AttributeError):
            return None
    for name, key, kind in (("summary.json", "posfeat_version", "analyze"), ("cfg.json", "posfeat_training", "train")):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            if key in json.loads((folder / name).read_text()):
                return kind
    if (folder / "widths.csv").is_file() or (folder / "contexts.csv").is_file():
        return "sweep"
    return None


def _check_replaceable(path: Path, raw: str, force: bool, what: str) -> None:
    if not path.is_dir():
        raise PosfeatError(f"{arg(what, raw)} is an existing file, not a folder; choose another {arg(what)}.")
    if not force:
        raise PosfeatError(f"Output folder {path} already exists; pass {arg('force', True)} to replace it or choose another {arg(what)}.")
    if written_by_posfeat(path) is None and any(path.iterdir()):
        raise PosfeatError(f"Output folder {path} already exists and was not written by posfeat (it has no {MARKER}); "
                           f"posfeat replaces only its own outputs: choose another {arg(what)}.")
    for root, dirs, _ in os.walk(path):
        for d in [root, *(os.path.join(root, x) for x in dirs)]:
            if not os.access(d, os.W_OK | os.X_OK):
                raise PosfeatError(f"Output folder {path} cannot be replaced: {d} is read-only; make it writable or choose another {arg(what)}.")


def check_target(out: str | os.PathLike[str] | None, *, force: bool = False, what: str = "out") -> Path:
    """Apply the output policy (module docstring) to a folder target, writing nothing; returns its absolute path."""
    path = resolve_target(out, what)
    if path.exists() or path.is_symlink():
        _check_replaceable(path, os.fspath(out or ""), force, what)
    try:  # probe: the parent can be made and written, the name is legal
        path.parent.mkdir(parents=True, exist_ok=True)
        remove(Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=TEMP_TAG, dir=path.parent)))
    except OSError as err:
        raise PosfeatError(f"Cannot write output folder {path} ({err.strerror or err}); choose a writable {arg(what)}.") from None
    return path


# ---------------------------------------------------------------------------- the mechanism
def write_marker(folder: Path, kind: str, command: str | None = None) -> None:
    """Mark ``folder`` as written by posfeat (the policy replaces only marked folders)."""
    data = {"tool": "posfeat", "kind": kind, "version": __version__, "command": command,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
    with atomic_file(folder / MARKER) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def swap_in(tmp: Path, target: Path) -> None:
    """Move ``tmp`` to ``target``: old aside, new in, old deleted; signals held back throughout."""
    with signals_held():
        if not (target.exists() or target.is_symlink()):
            os.rename(tmp, target)
            return
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", suffix=TEMP_TAG, dir=target.parent))
        os.rmdir(old)
        os.rename(target, old)
        try:
            os.rename(tmp, target)
        except OSError:
            os.rename(old, target)
            raise
        shutil.rmtree(old, onerror=lambda *a: log.warning("could not delete %s while replacing %s", a[1], target))


@contextlib.contextmanager
def output_folder(out: str | os.PathLike[str] | None, *, kind: str, force: bool = False, command: str | None = None,
                  what: str = "out") -> Iterator[Path]:
    """Yield an empty temporary folder beside ``out``; on success it becomes ``out`` (see module docstring).

    ``kind`` names what posfeat writes (``"analyze"``, ``"train"``, ...), recorded in the marker.
    """
    target = check_target(out, force=force, what=what)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=TEMP_TAG, dir=target.parent))
        os.chmod(tmp, umask_mode(directory=True))
    except OSError as err:
        raise PosfeatError(f"Cannot write output folder {target} ({err.strerror or err}); choose a writable {arg(what)}.") from None
    try:
        yield tmp
        write_marker(tmp, kind, command)
        swap_in(tmp, target)
    finally:
        remove(tmp)


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` (no policy: for files inside posfeat's own folders)."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_TAG, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, umask_mode(directory=False))
        with signals_held():
            os.replace(tmp, path)
    finally:
        remove(tmp)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` atomically (inside a folder posfeat owns)."""
    with atomic_file(Path(path)) as tmp:
        tmp.write_text(text)


def check_file_target(out: str | os.PathLike[str] | None, *, force: bool = False, header: str | None = None, what: str = "out") -> Path:
    """Apply the output policy to a single-file target (a CSV whose first line posfeat knows), writing nothing."""
    path = resolve_target(out, what)
    raw = os.fspath(out or "")
    if path.is_dir():
        raise PosfeatError(f"{arg(what, raw)} is an existing folder; give the name of a file such as eval.csv.")
    if not path.parent.is_dir():
        raise PosfeatError(f"Folder {path.parent} for {arg(what, raw)} does not exist; create it or choose another {arg(what)}.")
    if path.exists():
        if not force:
            raise PosfeatError(f"{path} already exists; pass {arg('force', True)} to replace it or choose another {arg(what)}.")
        try:
            with open(path, errors="replace") as fh:
                first = fh.readline().rstrip("\r\n")
        except OSError as err:
            raise PosfeatError(f"Cannot read {path} ({err.strerror}); choose another {arg(what)}.") from None
        if header is not None and first != header:
            raise PosfeatError(f"{path} exists and was not written by this posfeat command (its first line differs); "
                               f"posfeat replaces only its own outputs: choose another {arg(what)}.")
    return path


def output_file(out: str | os.PathLike[str] | None, write: Callable[[Path], None], *, force: bool = False,
                header: str | None = None, what: str = "out") -> Path:
    """Write a single file through ``write(tmp_path)`` under the output policy; returns the final path."""
    path = check_file_target(out, force=force, header=header, what=what)
    try:
        with atomic_file(path) as tmp:
            write(tmp)
    except OSError as err:
        raise PosfeatError(f"Cannot write {path} ({err.strerror or err}); choose a writable {arg(what)}.") from None
    return path
