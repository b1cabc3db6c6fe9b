"""The output policy every command follows ("nothing of yours is lost"), checked before anything is
written.

* an output path must be non-empty and must not be the current folder, one of its parents, the
  home folder or the filesystem root;
* **inputs are never outputs**: an output that equals, holds or lies inside one of the run's
  inputs (resolved with ``realpath``: model folder or hub cache, SAE folder, token weights,
  ``--init``, ``--include-sweep``) or posfeat's own installed package is refused, with or without
  ``force``;
* **ownership by content**: an existing output is replaced only when ``force`` is given *and*
  every entry in it is posfeat's (:func:`posfeat.io.ownership.foreign_entries`); an empty folder
  is fine. A CSV posfeat writes starts with posfeat's own header;
* **one writer per target**: a run takes the target's lock (:mod:`posfeat.io.lock`) and holds it
  until its output is in place; missing parent folders are created then, and removed again if the
  run fails.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

from ..core.errors import PosfeatError, PosfeatTypeError, arg
from .lock import LOCK_TAG, lock_target, unlock_target
from .ownership import PARTIAL, Kinds, foreign_entries
from .paths import expand, shorten
from .writes import TEMP_TAG, os_error, shown

#: posfeat's own installed package (the bundled SAE and the report templates live in it): never an
# output.
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def resolve_target(out: str | os.PathLike[str] | None, what: str = "out") -> Path:
    """``out`` as an absolute path (``~`` expanded, symlinks followed), refused when empty or a
    folder of the user's own."""
    if out is not None and not isinstance(out, (str, os.PathLike)):
        raise PosfeatTypeError(
            f"{arg(what, shorten(repr(out)))} is not a path (its type is {type(out).__name__}); "
            "give a str or a pathlib.Path."
        )
    raw = "" if out is None else os.fspath(out)
    if not isinstance(raw, str):
        raise PosfeatTypeError(
            f"{arg(what, shorten(repr(out)))} is a path in bytes; give a str or a pathlib.Path."
        )
    if "\x00" in raw:
        raise PosfeatError(
            f"{arg(what, shown(raw))} holds a NUL character, which no file name can; give another "
            "path."
        )
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        raise PosfeatError(
            f"{arg(what, shown(raw))} is not valid UTF-8 (posfeat writes the path into its outputs' "
            "records and reports, which are UTF-8); give a name in UTF-8."
        ) from None
    if not raw.strip():
        raise PosfeatError(
            f"{arg(what)} is empty, which would mean the current folder; give the name of a new "
            "folder for the output."
        )
    try:
        path = expand(raw).resolve()
    except (OSError, RuntimeError) as err:
        raise PosfeatError(
            f"{arg(what, shown(raw))} cannot be resolved ({err}); give another path."
        ) from None
    cwd = Path.cwd().resolve()
    try:
        home: Path | None = Path.home().resolve()
    except (
        OSError,
        RuntimeError,
        KeyError,
    ):  # no HOME and no passwd entry for this uid: there is no home folder to protect
        home = None
    if path == cwd or path in cwd.parents:
        which = "the current folder" if path == cwd else "a parent of the current folder"
        raise PosfeatError(
            f"{arg(what, shown(raw))} is {which}; posfeat writes into a folder of its own and never "
            "replaces yours: "
            "give the name of a new folder."
        )
    if path == home or path == Path(path.anchor):
        raise PosfeatError(
            f"{arg(what, shown(raw))} is the "
            f"{'home folder' if path == home else 'filesystem root'}; "
            "give the name of a new folder for the output."
        )
    for name in {Path(raw).name, path.name}:
        if name.endswith((PARTIAL, LOCK_TAG, TEMP_TAG)):
            which = {PARTIAL: "work folder", LOCK_TAG: "lock file", TEMP_TAG: "temporary"}[
                next(t for t in (PARTIAL, LOCK_TAG, TEMP_TAG) if name.endswith(t))
            ]
            raise PosfeatError(
                f"{arg(what, shown(raw))} is named as posfeat names a run's {which} ("
                f"{shorten(name)}); posfeat never "
                f"writes an output over its own work, with or without {arg('force', True)}: choose "
                f"another {arg(what)}."
            )
    return path


Inputs = Iterable[tuple[str, "str | os.PathLike[str] | Path | None"]]


def check_inputs(target: Path, raw: str, inputs: Inputs = (), what: str = "out") -> None:
    """Refuse an output that is, holds or lies inside an input or posfeat's installed package
    (module docstring)."""
    for label, value in [*inputs, ("posfeat's installed package", PACKAGE_DIR)]:
        if value is None or (isinstance(value, str) and not value):
            continue
        try:
            inp = expand(value).resolve()
        except (OSError, RuntimeError, TypeError):
            continue
        if not inp.exists():
            continue
        rel = (
            "is"
            if inp == target
            else "holds"
            if target in inp.parents
            else "lies inside"
            if inp in target.parents
            else None
        )
        if rel is not None:
            which = label if label.startswith("posfeat") else f"the input {label} {shorten(inp)}"
            raise PosfeatError(
                f"{arg(what, shown(raw))} {rel} {which}; posfeat never writes over what it reads: "
                f"choose another {arg(what)} outside it."
            )


def _check_replaceable(path: Path, raw: str, force: bool, what: str, kinds: Kinds) -> None:
    if not path.is_dir():
        raise PosfeatError(
            f"{arg(what, shown(raw))} is an existing file, not a folder; choose another "
            f"{arg(what)}."
        )
    if not force:
        raise PosfeatError(
            f"Output folder {path} already exists; pass {arg('force', True)} to replace it or "
            f"choose another {arg(what)}."
        )
    kind, unknown = foreign_entries(path, kinds)
    if unknown:
        whose = (
            "was not written by posfeat"
            if kind is None
            else f"holds files a posfeat {kind} output does not have"
        )
        raise PosfeatError(
            f"Output folder {path} {whose} ({', '.join(shorten(u) for u in unknown)}"
            f"{', ...' if len(unknown) >= 3 else ''}); posfeat replaces only its own outputs: "
            f"choose another {arg(what)}."
        )
    for root, dirs, _ in os.walk(path):
        for d in [root, *(os.path.join(root, x) for x in dirs)]:
            if not os.access(d, os.W_OK | os.X_OK):
                raise PosfeatError(
                    f"Output folder {path} cannot be replaced: {d} is read-only; make it writable "
                    f"or choose another {arg(what)}."
                )


def _check_writable(path: Path, what: str) -> None:
    """The nearest existing ancestor is a writable folder and every name still to create is legal
    (nothing is created)."""
    anc = path.parent
    while not anc.exists():
        anc = anc.parent
    if not anc.is_dir() or not os.access(anc, os.W_OK | os.X_OK):
        why = "not a folder" if not anc.is_dir() else "not writable"
        raise PosfeatError(
            f"Cannot write output folder {shorten(path)} ({shorten(anc)} is {why}); "
            f"choose a writable {arg(what)}."
        )
    with contextlib.suppress(OSError, ValueError):
        limit = os.pathconf(anc, "PC_NAME_MAX")
        for part in path.relative_to(anc).parts:
            if (
                len(part.encode()) > limit - 40
            ):  # room for the temporaries' and the lock's longer names
                raise PosfeatError(
                    f"Cannot write output folder {shorten(path)}: the name {shorten(part)} is too "
                    "long "
                    f"({len(part.encode())} bytes; {limit - 40} at most); choose a shorter "
                    f"{arg(what)}."
                )


def check_target(
    out: str | os.PathLike[str] | None,
    *,
    force: bool = False,
    what: str = "out",
    inputs: Inputs = (),
    kinds: Kinds = (),
) -> Path:
    """Apply the output policy (module docstring) to a folder target and take its lock; returns its
    absolute path.

    Nothing is written when the target is refused. Once it is accepted the run holds the target's
    lock (until its :class:`posfeat.io.output.Output` commits, :func:`unlock_target` or
    :func:`release_all`); missing parent folders are created then, and removed again if the run
    fails."""
    path = resolve_target(out, what)
    raw = os.fspath(out or "")
    check_inputs(path, raw, inputs, what)
    _check_writable(path, what)
    lock_target(path, what)
    try:
        if path.exists() or path.is_symlink():
            _check_replaceable(path, raw, force, what, kinds)
    except BaseException:
        unlock_target(path, failed=True)
        raise
    return path


def check_file_target(
    out: str | os.PathLike[str] | None,
    *,
    force: bool = False,
    header: str | None = None,
    what: str = "out",
    inputs: Inputs = (),
) -> Path:
    """Apply the output policy to a single-file target (a CSV whose first line posfeat knows) and
    take its lock; writes nothing."""
    path = resolve_target(out, what)
    raw = os.fspath(out or "")
    check_inputs(path, raw, inputs, what)
    if path.is_dir():
        raise PosfeatError(
            f"{arg(what, shown(raw))} is an existing folder; give the name of a file such as "
            "eval.csv."
        )
    if not path.parent.is_dir():
        raise PosfeatError(
            f"Folder {path.parent} for {arg(what, shown(raw))} does not exist; create it or choose "
            f"another {arg(what)}."
        )
    if path.exists():
        if not force:
            raise PosfeatError(
                f"{path} already exists; pass {arg('force', True)} to replace it or choose another "
                f"{arg(what)}."
            )
        try:
            with open(path, errors="replace") as fh:
                first = fh.readline().rstrip("\r\n")
        except OSError as err:
            raise os_error(err, "reading", path) from None
        if header is not None and first != header:
            raise PosfeatError(
                f"{path} exists and was not written by this posfeat command (its first line "
                "differs); "
                f"posfeat replaces only its own outputs: choose another {arg(what)}."
            )
    lock_target(path, what)
    return path
