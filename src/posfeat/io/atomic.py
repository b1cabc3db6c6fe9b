"""The one atomic writer and the output policy every command follows ("nothing of yours is lost").

Policy (:func:`check_target`), checked before anything is written:

* an output path must be non-empty and must not be the current folder, one of its parents, the
  home folder or the filesystem root;
* **inputs are never outputs**: an output that equals, holds or lies inside one of the run's
  inputs (resolved with ``realpath``: model folder or hub cache, SAE folder, token weights,
  ``--init``, ``--include-sweep``) or posfeat's own installed package is refused, with or without
  ``force``;
* **ownership by content**: an existing output is replaced only when ``force`` is given *and*
  every entry in it is one posfeat writes for that kind of output (:func:`foreign_entries`): the
  files its marker ``.posfeat-output.json`` lists or its kind's files, or, for folders written by
  posfeat 0.1 (no marker), the full set of 0.1's files and nothing else; an empty folder is fine.
  A CSV posfeat writes starts with posfeat's own header;
* **one writer per target**: the run takes an exclusive lock (``fcntl.flock`` on
  ``.<name>.posfeat-lock`` beside the target, holding its pid, command and start time) and holds it
  until its output is swapped in; a second run to the same target fails at once naming the first;
  a lock left by a dead run is taken over with a one-line note. ``<out>.partial`` work folders
  (:func:`partial_folder`) belong to the lock holder.

Mechanism (:func:`output_folder`, :func:`output_file`, :func:`atomic_file`): the new output is
written to a temporary name beside the target, ``.<name>.<pid>.<random>.posfeat-tmp``; then, with
SIGINT and SIGTERM held back, the old output is moved aside, the new one moved in, and the old one
deleted. Any failure (or signal) before that leaves the old output exactly as it was and removes
the temporary; a signal during the swap is delivered right after it, when either the old or the
new output is in place. Temporaries of dead runs (their pid is in the name) are removed by the
next run for the same target, which says so in one line; folders created for an output are
removed again when the run is refused or fails (:func:`release_all`). New folders and files get
the permissions a plain ``mkdir`` / ``open`` would give (the umask).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import fnmatch
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import signal
import stat
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from ..core.errors import PosfeatError, PosfeatTypeError, arg
from ..core.version import __version__
from .paths import PATH_KEEP, shorten, visible

log = logging.getLogger(__name__)

MARKER = ".posfeat-output.json"
TEMP_TAG = ".posfeat-tmp"
LOCK_TAG = ".posfeat-lock"
PARTIAL = ".partial"
#: posfeat's own installed package (the bundled SAE and the report templates live in it): never an output.
PACKAGE_DIR = Path(__file__).resolve().parents[1]
#: The signals that stop a run cleanly: SIGINT, SIGTERM, and SIGHUP (the terminal closed) and SIGQUIT (Ctrl-\\) likewise.
_SIGNALS = {signal.SIGINT, signal.SIGTERM, *(getattr(signal, n) for n in ("SIGHUP", "SIGQUIT") if hasattr(signal, n))}
STOP_SIGNALS = frozenset(_SIGNALS)

_SAE_FILES = ["cfg.json", "sae_weights.safetensors", "sparsity.safetensors", "training_log.csv", "token_weights.safetensors",
              "positional_by_step.csv"]
_TRAIN_RUNS = [f"{p}/{f}" for p in ("*/seed_*", "*/seed_*.partial") for f in (*_SAE_FILES, "run.json", "checkpoint.*", MARKER)]
_TRAIN_RUNS.append("*/seed_*.worker.json")  # a sweep's run records its worker while it runs (left by a worker that was killed)
#: What posfeat writes for each kind of output (fnmatch patterns on paths relative to the folder), besides its marker.
KIND_FILES: dict[str, list[str]] = {
    "analyze": ["report.html", "features.csv", "by_position.csv", "tokens.csv", "spurious_examples.csv", "spurious_by_feature.csv",
                "summary.json", "figures", "figures/*.png"],
    "compare": ["compare.csv", "status_a.csv", "status_b.csv", "summary.json", "figures", "figures/compare.png"],
    "train": _SAE_FILES,
    "train-checkpoint": ["checkpoint.safetensors", "checkpoint.json", "positional_by_step.csv"],  # a sweep run keeps its curve there too
    "sweep widths": ["widths.csv", "runs.csv", "summary.json", "section.html", "figures", "figures/*.png", "d_sae_*", "d_sae_*/seed_*",
                     "d_sae_*/seed_*.partial", *_TRAIN_RUNS],
    "sweep context": ["contexts.csv", "runs.csv", "summary.json", "section.html", "figures", "figures/*.png", "finetune_ctx_*",
                      "scratch_ctx_*", "*_ctx_*/seed_*", "*_ctx_*/seed_*.partial", *_TRAIN_RUNS],
}
#: Folders written by posfeat 0.1 (no marker): ``kind -> (files that must all be there, files that may be)``.
V01_FILES: dict[str, tuple[list[str], list[str]]] = {
    "analyze": (["summary.json", "features.csv", "by_position.csv", "report.html"],
                ["spurious_examples.csv", "figures", "figures/*.png"]),
    "train": (["cfg.json", "sae_weights.safetensors"], ["training_log.csv", "token_weights.safetensors", "sparsity.safetensors"]),
    "train-checkpoint": (["checkpoint.safetensors", "checkpoint.json"], []),  # <out>.partial of an interrupted 0.1 run
    "sweep widths": (["widths.csv", "summary.json", "section.html"],
                     ["figures", "figures/*.png", "d_sae_*", *(f"d_sae_*/{f}" for f in _SAE_FILES)]),
    "sweep context": (["contexts.csv", "summary.json", "section.html"],
                      ["figures", "figures/*.png", "*_ctx_*", *(f"*_ctx_*/{f}" for f in _SAE_FILES)]),
}


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
    """Signals that arrived under :func:`deferred_signals` (the first one's number, or None); ``taken`` once the loop acted on it."""

    signum: int | None = None
    taken: bool = False


@contextlib.contextmanager
def deferred_signals() -> Iterator[Deferred]:
    """Record SIGINT and SIGTERM instead of acting on them, so a long loop stops at a clean point of its own choosing.

    The loop marks a signal it acted on with ``state.taken = True``; one it did not act on (it came
    during the last step) is delivered again when the block ends, to whatever handles it there.
    Outside the main thread (where handlers cannot be set) nothing changes.
    """
    state = Deferred()

    def record(signum: int, frame: object) -> None:
        state.signum = state.signum or signum

    try:
        old = {s: signal.signal(s, record) for s in _SIGNALS}
    except ValueError:
        old = {}
    failed = False
    try:
        yield state
    except BaseException:
        failed = True
        raise
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if not failed and old and state.signum is not None and not state.taken:
            signal.raise_signal(state.signum)


def remove(path: Path) -> None:
    """Delete a file or folder if it exists (errors ignored: used for temporaries)."""
    with signals_held():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError, IsADirectoryError, PermissionError):
                path.unlink()


def _shown(raw: object) -> str:
    return shorten(raw) if str(raw) else "''"


def os_error(err: OSError, operation: str, path: object | None = None) -> PosfeatError:
    """One sentence for an OS error: what failed, doing what, on which path, and what to do."""
    if isinstance(err, PosfeatError):  # already one sentence (a full disk seen by the safetensors writer)
        return err
    where = shorten(os.fsdecode(path if path is not None else (err.filename or "?")), PATH_KEEP)
    hint = ("free some space or choose another place" if err.errno in (errno.ENOSPC, errno.EDQUOT)
            else "free some space or raise the file-size limit (ulimit -f)" if err.errno == errno.EFBIG
            else "check that path and its permissions")
    return PosfeatError(f"{err.strerror or type(err).__name__} while {operation} {where}; {hint}.")


# ---------------------------------------------------------------------------- runs, pids and temporaries
_RUN = {"command": shlex.join(sys.argv) if sys.argv and sys.argv[0] else "python",
        "started": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}


def set_run(command: str) -> None:
    """Record this process's command line and start time (shown to a second run that finds the lock)."""
    _RUN.update(command=command, started=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"))


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


def _temp_prefix(name: str) -> str:
    return f".{name}.{os.getpid()}."


def make_temp(target: Path, *, directory: bool = True, tag: str = "") -> Path:
    """An empty temporary folder (or file) beside ``target``, named with this process's pid (see module docstring)."""
    prefix = _temp_prefix(target.name) + (f"{tag}." if tag else "")
    if directory:
        return Path(tempfile.mkdtemp(prefix=prefix, suffix=TEMP_TAG, dir=target.parent))
    fd, name = tempfile.mkstemp(prefix=prefix, suffix=TEMP_TAG, dir=target.parent)
    os.close(fd)
    return Path(name)


_TEMP = re.compile(r"^\.(?P<name>.+?)\.(?P<pid>\d+)\.(?:old\.)?[^/]*" + re.escape(TEMP_TAG) + "$")


def clean_leftovers(target: Path) -> list[Path]:
    """Remove the temporaries beside ``target`` (and inside it) that dead runs left; one line says so. Returns what was removed."""
    gone: list[Path] = []
    for folder, name in ((target.parent, target.name), (target, None)):
        if not folder.is_dir() or folder.is_symlink():
            continue
        with contextlib.suppress(OSError):
            for p in folder.iterdir():
                m = _TEMP.match(p.name)
                if m and (name is None or m.group("name") == name) and int(m.group("pid")) != os.getpid() and not pid_alive(int(m.group("pid"))):
                    remove(p)
                    gone.append(p)
    if gone:
        log.warning("removed %d temporar%s left by a run that was killed: %s", len(gone), "y" if len(gone) == 1 else "ies",
                    ", ".join(p.name for p in gone[:3]) + (", ..." if len(gone) > 3 else ""))
    return gone


# ---------------------------------------------------------------------------- one writer per target
class TargetLock:
    """An exclusive lock on an output target, held by this process from the start of a run to the end of its swap."""

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
                    f"Another posfeat run is writing {self.target} (pid {visible(str(info.get('pid', '?')))}, "
                    f"{shorten(info.get('command', '?'))!r}, started {shorten(info.get('started', '?'))}); wait for it to end or "
                    f"choose another {arg(self.what)}.") from None
            try:  # the file we locked may have been unlinked by its previous holder in between: retry then
                same = _same_file(fd, self.path)
            except OSError:
                same = False
            if same:
                break
            os.close(fd)
        old = _read_lock(fd)
        if old.get("pid") and old.get("pid") != os.getpid():
            pid = old.get("pid")
            state = ("which is no longer running" if not isinstance(pid, int) or not pid_alive(pid)
                     else "which no longer holds it")
            log.warning("took over the lock on %s left by pid %s (%s, started %s), %s", self.target, visible(str(pid)),
                        shorten(old.get("command", "?")), shorten(old.get("started", "?")), state)
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
        """The lock file, created or opened without following a symlink; anything but a plain file there is refused."""
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
            raise PosfeatError(f"{visible(str(self.path))} is not a plain file, and posfeat keeps the lock of {visible(str(self.target))} "
                               f"there; move it away or choose another {arg(self.what)}.")
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
                raise PosfeatError(f"Cannot create folder {p} for the output ({err.strerror or err}); choose a writable {arg(self.what)}.") from None
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
                if _same_file(self.fd, self.path):  # never what was put in its place (a link, another file)
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
    """The refusal for a symlink found where posfeat creates ``what`` (it never follows a link it did not ask for)."""
    try:
        to = f" (to {shorten(os.readlink(path))})"
    except OSError:
        to = ""
    return PosfeatError(f"{visible(str(path))} is a symbolic link{to} where posfeat creates {what}; posfeat never writes through a link "
                        "it did not ask for: remove the link and run again.")


def _read_lock(fd: int) -> dict[str, object]:
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


_LOCKS: dict[Path, TargetLock] = {}


def lock_target(target: Path, what: str = "out") -> TargetLock:
    """Take ``target``'s lock for this process (a no-op when it already holds it); see module docstring."""
    if target not in _LOCKS:
        lock = TargetLock(target, what)
        lock.acquire()
        _LOCKS[target] = lock
        clean_leftovers(target)
    return _LOCKS[target]


def holds_lock(out: str | os.PathLike[str] | None) -> bool:
    """True when this process holds the lock on ``out`` already (then the caller does not release it)."""
    try:
        return out is not None and Path(out).expanduser().resolve() in _LOCKS
    except (OSError, RuntimeError, TypeError, ValueError):
        return False


def unlock_target(target: Path, failed: bool = False) -> None:
    """Release ``target``'s lock; with ``failed``, also remove the (empty) folders made for it."""
    lock = _LOCKS.pop(target, None)
    if lock is not None:
        lock.release(failed)


def release_all(failed: bool = False) -> None:
    """Release every lock this process holds (the CLI calls this at exit; ``failed`` when the run did not succeed)."""
    for target in list(_LOCKS):
        unlock_target(target, failed)


# ---------------------------------------------------------------------------- the policy
def resolve_target(out: str | os.PathLike[str] | None, what: str = "out") -> Path:
    """``out`` as an absolute path (``~`` expanded, symlinks followed), refused when empty or a folder of the user's own."""
    if out is not None and not isinstance(out, (str, os.PathLike)):
        raise PosfeatTypeError(f"{arg(what, shorten(repr(out)))} is not a path (its type is {type(out).__name__}); give a str or a pathlib.Path.")
    raw = "" if out is None else os.fspath(out)
    if not isinstance(raw, str):
        raise PosfeatTypeError(f"{arg(what, shorten(repr(out)))} is a path in bytes; give a str or a pathlib.Path.")
    if "\x00" in raw:
        raise PosfeatError(f"{arg(what, _shown(raw))} holds a NUL character, which no file name can; give another path.")
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        raise PosfeatError(f"{arg(what, _shown(raw))} is not valid UTF-8 (posfeat writes the path into its outputs' "
                           "records and reports, which are UTF-8); give a name in UTF-8.") from None
    if not raw.strip():
        raise PosfeatError(f"{arg(what)} is empty, which would mean the current folder; give the name of a new folder for the output.")
    try:
        path = Path(raw).expanduser().resolve()
    except (OSError, RuntimeError) as err:
        raise PosfeatError(f"{arg(what, _shown(raw))} cannot be resolved ({err}); give another path.") from None
    cwd = Path.cwd().resolve()
    try:
        home: Path | None = Path.home().resolve()
    except (OSError, RuntimeError, KeyError):  # no HOME and no passwd entry for this uid: there is no home folder to protect
        home = None
    if path == cwd or path in cwd.parents:
        which = "the current folder" if path == cwd else "a parent of the current folder"
        raise PosfeatError(f"{arg(what, _shown(raw))} is {which}; posfeat writes into a folder of its own and never replaces yours: "
                           "give the name of a new folder.")
    if path == home or path == Path(path.anchor):
        raise PosfeatError(f"{arg(what, _shown(raw))} is the {'home folder' if path == home else 'filesystem root'}; "
                           "give the name of a new folder for the output.")
    for name in {Path(raw).name, path.name}:
        if name.endswith((PARTIAL, LOCK_TAG, TEMP_TAG)):
            which = {PARTIAL: "work folder", LOCK_TAG: "lock file", TEMP_TAG: "temporary"}[next(
                t for t in (PARTIAL, LOCK_TAG, TEMP_TAG) if name.endswith(t))]
            raise PosfeatError(f"{arg(what, _shown(raw))} is named as posfeat names a run's {which} ({shorten(name)}); posfeat never "
                               f"writes an output over its own work, with or without {arg('force', True)}: choose another {arg(what)}.")
    return path


Inputs = Iterable[tuple[str, "str | os.PathLike[str] | Path | None"]]


def check_inputs(target: Path, raw: str, inputs: Inputs = (), what: str = "out") -> None:
    """Refuse an output that is, holds or lies inside an input or posfeat's installed package (module docstring)."""
    for label, value in [*inputs, ("posfeat's installed package", PACKAGE_DIR)]:
        if value is None or (isinstance(value, str) and not value):
            continue
        try:
            inp = Path(value).expanduser().resolve()
        except (OSError, RuntimeError, TypeError):
            continue
        if not inp.exists():
            continue
        rel = ("is" if inp == target else "holds" if target in inp.parents else "lies inside" if inp in target.parents else None)
        if rel is not None:
            shown = label if label.startswith("posfeat") else f"the input {label} {shorten(inp)}"
            raise PosfeatError(f"{arg(what, _shown(raw))} {rel} {shown}; posfeat never writes over what it reads: "
                               f"choose another {arg(what)} outside it.")


#: Kinds whose folders grow while posfeat works in them (runs added to a sweep, checkpoints rewritten): entries matching
#: their kind's patterns are posfeat's even when the marker does not list them. Any other marked folder holds exactly the
#: files its marker lists, each with the digest it had when posfeat wrote it.
_GROWING = {"train-checkpoint": KIND_FILES["train-checkpoint"],
            "sweep widths": ["d_sae_*", "d_sae_*/seed_*", "d_sae_*/seed_*.partial", *_TRAIN_RUNS],
            "sweep context": ["finetune_ctx_*", "scratch_ctx_*", "original", "*_ctx_*/seed_*", "*_ctx_*/seed_*.partial",
                              "original/seed_*", "original/seed_*.partial", *_TRAIN_RUNS]}


def _marker(folder: Path) -> dict[str, object] | None:
    """The parsed marker of ``folder`` when posfeat wrote one (never read through a link), else None."""
    marker = folder / MARKER
    if marker.is_symlink() or not marker.is_file():
        return None
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) and data.get("tool") == "posfeat" else None


def _patterns_for(folder: Path) -> tuple[str | None, list[str], dict[str, str]]:
    """``(kind, allowed patterns, digests of listed files)`` from the marker (or posfeat 0.1's file sets); kind None when
    posfeat did not write it. A work folder (``<out>.partial``) allows its kind's patterns; a finished output only what its
    marker lists (and, for kinds that grow, their runs)."""
    data = _marker(folder)
    if data is not None:
        kind = str(data.get("kind", "unknown"))
        files = data.get("files")
        listed = [str(f) for f in files] if isinstance(files, list) else []
        digests = data.get("sha256")
        digests = {str(k): str(v) for k, v in digests.items()} if isinstance(digests, dict) else {}
        extra = KIND_FILES.get(kind, []) if folder.name.endswith(PARTIAL) else _GROWING.get(kind, [])
        return kind, [*extra, *(glob_escape(f) for f in listed)], digests
    if (folder / MARKER).exists() or (folder / MARKER).is_symlink():
        return None, [], {}
    for kind, (required, optional) in V01_FILES.items():
        if all((folder / f).exists() for f in required) and _v01_signature(folder, kind):
            return kind, [*required, *optional], {}
    return None, [], {}


def file_digest(path: Path) -> str:
    """The sha256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _v01_signature(folder: Path, kind: str) -> bool:
    key = {"analyze": ("summary.json", "posfeat_version"), "train": ("cfg.json", "posfeat_training")}.get(kind)
    if key is None:
        return True
    with contextlib.suppress(OSError, ValueError, TypeError):
        return key[1] in json.loads((folder / key[0]).read_text())
    return False


def _matches(rel: str, pattern: str) -> bool:
    """``fnmatch`` part by part: a ``*`` never crosses a ``/``."""
    a, b = rel.split("/"), pattern.split("/")
    return len(a) == len(b) and all(fnmatch.fnmatchcase(x, y) for x, y in zip(a, b))


def _ignored(name: str) -> bool:
    return name == MARKER or name.endswith((TEMP_TAG, LOCK_TAG))


def foreign_entries(folder: Path, limit: int = 3) -> tuple[str | None, list[str]]:
    """``(kind, first entries posfeat does not write for that kind)`` of an existing folder (see module docstring).

    ``kind`` is None when the folder has no posfeat marker and is not a complete posfeat 0.1 output;
    then every entry is foreign. A symbolic link is always foreign (posfeat never writes one), and so is a file its marker
    lists with a digest the file no longer has (shown as ``name (changed since posfeat wrote it)``).
    """
    kind, patterns, digests = _patterns_for(folder)
    unknown: list[str] = []
    known = lambda rel: any(_matches(rel, p) for p in patterns)  # noqa: E731
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        rel_root = Path(root).relative_to(folder)
        links = [d for d in dirs if os.path.islink(os.path.join(root, d))]
        dirs[:] = [d for d in dirs if d not in links]  # a link is an entry of its own, never followed
        for name in sorted([*files, *links]):
            rel = (rel_root / name).as_posix()
            full = os.path.join(root, name)
            if os.path.islink(full) and not _ignored(name):
                unknown.append(rel + " (a symbolic link)")
            elif not _ignored(name) and not known(rel):
                unknown.append(rel)
            elif rel in digests and not _digest_matches(Path(full), digests[rel]):
                unknown.append(rel + " (changed since posfeat wrote it)")
        for d in dirs:  # an empty folder holds nothing to lose: its kind's folders are posfeat's even when not listed
            rel = (rel_root / d).as_posix()
            if not os.listdir(os.path.join(root, d)) and not known(rel) and not any(_matches(rel, q) for q in KIND_FILES.get(kind or "", [])):
                unknown.append(rel + "/")
        if len(unknown) >= limit:
            break
    return kind, unknown[:limit]


def _digest_matches(path: Path, digest: str) -> bool:
    try:
        return file_digest(path) == digest
    except OSError:
        return False


def written_by_posfeat(folder: Path) -> str | None:
    """The kind of posfeat output ``folder`` holds (``"analyze"``, ``"train"``, ...), or None if posfeat did not write all of it."""
    kind, unknown = foreign_entries(folder, limit=1)
    return None if unknown else kind


def _check_replaceable(path: Path, raw: str, force: bool, what: str) -> None:
    if not path.is_dir():
        raise PosfeatError(f"{arg(what, _shown(raw))} is an existing file, not a folder; choose another {arg(what)}.")
    if not force:
        raise PosfeatError(f"Output folder {path} already exists; pass {arg('force', True)} to replace it or choose another {arg(what)}.")
    kind, unknown = foreign_entries(path)
    if unknown:
        whose = "was not written by posfeat" if kind is None else f"holds files a posfeat {kind} output does not have"
        raise PosfeatError(f"Output folder {path} {whose} ({', '.join(shorten(u) for u in unknown)}"
                           f"{', ...' if len(unknown) >= 3 else ''}); posfeat replaces only its own outputs: choose another {arg(what)}.")
    for root, dirs, _ in os.walk(path):
        for d in [root, *(os.path.join(root, x) for x in dirs)]:
            if not os.access(d, os.W_OK | os.X_OK):
                raise PosfeatError(f"Output folder {path} cannot be replaced: {d} is read-only; make it writable or choose another {arg(what)}.")


def _check_writable(path: Path, what: str) -> None:
    """The nearest existing ancestor is a writable folder and every name still to create is legal (nothing is created)."""
    anc = path.parent
    while not anc.exists():
        anc = anc.parent
    if not anc.is_dir() or not os.access(anc, os.W_OK | os.X_OK):
        why = "not a folder" if not anc.is_dir() else "not writable"
        raise PosfeatError(f"Cannot write output folder {shorten(path)} ({shorten(anc)} is {why}); "
                           f"choose a writable {arg(what)}.")
    with contextlib.suppress(OSError, ValueError):
        limit = os.pathconf(anc, "PC_NAME_MAX")
        for part in path.relative_to(anc).parts:
            if len(part.encode()) > limit - 40:  # room for the temporaries' and the lock's longer names
                raise PosfeatError(f"Cannot write output folder {shorten(path)}: the name {shorten(part)} is too long "
                                   f"({len(part.encode())} bytes; {limit - 40} at most); choose a shorter {arg(what)}.")


def check_target(out: str | os.PathLike[str] | None, *, force: bool = False, what: str = "out", inputs: Inputs = ()) -> Path:
    """Apply the output policy (module docstring) to a folder target and take its lock; returns its absolute path.

    Nothing is written when the target is refused. Once it is accepted the run holds the target's
    lock (until :func:`output_folder` swaps the output in, :func:`unlock_target` or :func:`release_all`);
    missing parent folders are created then, and removed again if the run fails.
    """
    path = resolve_target(out, what)
    raw = os.fspath(out or "")
    check_inputs(path, raw, inputs, what)
    _check_writable(path, what)
    lock_target(path, what)
    try:
        if path.exists() or path.is_symlink():
            _check_replaceable(path, raw, force, what)
    except BaseException:
        unlock_target(path, failed=True)
        raise
    return path


# ---------------------------------------------------------------------------- the mechanism
_COMPLETED: set[Path] = set()


def completed(target: Path) -> bool:
    """True once this process has moved a complete output into place at ``target``."""
    return target in _COMPLETED


def _listing(folder: Path) -> list[str]:
    out = []
    for root, dirs, files in os.walk(folder):
        rel = Path(root).relative_to(folder)
        out.extend((rel / n).as_posix() for n in [*dirs, *files] if not _ignored(n))
    return sorted(out)


def write_marker(folder: Path, kind: str, command: str | None = None) -> None:
    """Mark ``folder`` as written by posfeat, listing every entry it holds now and each file's sha256 (the policy replaces
    only what the marker covers, and only while each file is as posfeat wrote it)."""
    listing = _listing(folder)
    digests = {rel: file_digest(folder / rel) for rel in listing if (folder / rel).is_file() and not (folder / rel).is_symlink()}
    data = {"tool": "posfeat", "kind": kind, "version": __version__, "command": command,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"), "files": listing, "sha256": digests}
    with atomic_file(folder / MARKER) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


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
        shutil.rmtree(old, onerror=lambda *a: log.warning("could not delete %s while replacing %s", a[1], target))


@contextlib.contextmanager
def output_folder(out: str | os.PathLike[str] | None, *, kind: str, force: bool = False, command: str | None = None,
                  what: str = "out", inputs: Inputs = ()) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``out``; on success it becomes ``out`` (see module docstring).

    ``kind`` names what posfeat writes (``"analyze"``, ``"train"``, ...), recorded in the marker
    with the list of entries written. The target's lock is taken here unless the run already holds
    it, and then released after the swap.
    """
    held = holds_lock(out)
    target = check_target(out, force=force, what=what, inputs=inputs)
    ok = False
    try:
        try:
            tmp = make_temp(target)
            os.chmod(tmp, umask_mode(directory=True))
        except OSError as err:
            raise PosfeatError(f"Cannot write output folder {target} ({err.strerror or err}); choose a writable {arg(what)}.") from None
        try:
            yield tmp
            write_marker(tmp, kind, command)
            swap_in(tmp, target)
            ok = True
        except OSError as err:
            raise os_error(err, "writing output folder", target) from None
        finally:
            remove(tmp)
    finally:
        if not held:
            unlock_target(target, failed=not ok)


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path for ``path``; on success it replaces ``path`` (no policy: for files inside posfeat's own folders).

    The temporary path lies inside a pid-tagged temporary folder beside ``path``, so whatever a writer makes next to it
    (safetensors >= 0.8 writes through its own ``.tmpXXXXXX`` file and renames it) is inside that folder too, and a run
    killed mid-write leaves only a temporary that :func:`clean_leftovers` knows as its own.
    """
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


def check_file_target(out: str | os.PathLike[str] | None, *, force: bool = False, header: str | None = None, what: str = "out",
                      inputs: Inputs = ()) -> Path:
    """Apply the output policy to a single-file target (a CSV whose first line posfeat knows) and take its lock; writes nothing."""
    path = resolve_target(out, what)
    raw = os.fspath(out or "")
    check_inputs(path, raw, inputs, what)
    if path.is_dir():
        raise PosfeatError(f"{arg(what, _shown(raw))} is an existing folder; give the name of a file such as eval.csv.")
    if not path.parent.is_dir():
        raise PosfeatError(f"Folder {path.parent} for {arg(what, _shown(raw))} does not exist; create it or choose another {arg(what)}.")
    if path.exists():
        if not force:
            raise PosfeatError(f"{path} already exists; pass {arg('force', True)} to replace it or choose another {arg(what)}.")
        try:
            with open(path, errors="replace") as fh:
                first = fh.readline().rstrip("\r\n")
        except OSError as err:
            raise os_error(err, "reading", path) from None
        if header is not None and first != header:
            raise PosfeatError(f"{path} exists and was not written by this posfeat command (its first line differs); "
                               f"posfeat replaces only its own outputs: choose another {arg(what)}.")
    lock_target(path, what)
    return path


def output_file(out: str | os.PathLike[str] | None, write: Callable[[Path], None], *, force: bool = False,
                header: str | None = None, what: str = "out", inputs: Inputs = ()) -> Path:
    """Write a single file through ``write(tmp_path)`` under the output policy; returns the final path."""
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


# ---------------------------------------------------------------------------- <out>.partial work folders
def partial_folder(target: Path, kind: str, *, fresh: bool = False, what: str = "out") -> Path:
    """``<target>.partial``, the work folder of a long run (training, a sweep) that holds ``target``'s lock.

    Made (with a marker of ``kind``) when absent; an existing one is reused if posfeat wrote it for
    this ``kind`` and holds nothing else (emptied first with ``fresh=True``), refused otherwise. Kept
    when the run is interrupted so that it can resume; :func:`finish_partial` moves it into place.
    """
    lock_target(target, what)
    partial = target.with_name(target.name + PARTIAL)
    if partial.is_symlink() or (partial.exists() and not partial.is_dir()):
        raise PosfeatError(f"{partial} is not a folder; move it away, posfeat keeps the run's work there.")
    if partial.is_dir():
        clean_leftovers(partial)
        found, unknown = foreign_entries(partial)
        if unknown and any(partial.iterdir()):
            whose = "was not made by posfeat" if found is None else f"holds files a posfeat {found} run does not write"
            raise PosfeatError(f"{partial} {whose} ({', '.join(shorten(u) for u in unknown)}); move it away, posfeat keeps the run's work there.")
        if found not in (None, kind) and any(partial.iterdir()):
            raise PosfeatError(f"{partial} holds the work of a posfeat {found} run, not {kind}; move it away or choose another {arg(what)}.")
        if fresh:
            remove(partial)
    made = not partial.exists()
    try:
        partial.mkdir(exist_ok=True)
        if not (partial / MARKER).is_file() or fresh:
            write_marker(partial, kind)
    except OSError as err:
        if made:  # a full disk while making it: the folder goes again, as anything a failed run made
            with contextlib.suppress(OSError):
                remove(partial)
        raise os_error(err, "creating the work folder", partial) from None
    return partial


def finish_partial(partial: Path, target: Path, kind: str, command: str | None = None) -> Path:
    """Mark ``partial`` complete and swap it in as ``target`` (the old ``target``, if any, is replaced atomically)."""
    write_marker(partial, kind, command)
    swap_in(partial, target)
    remove(partial)
    return target
