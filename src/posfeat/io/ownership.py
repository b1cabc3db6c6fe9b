"""Which files are posfeat's: the marker every output carries, and the kinds of output that declare
their files.

Every folder posfeat writes holds ``.posfeat-output.json``, its marker: the kind of output, every
entry the folder held when posfeat wrote it with each file's sha256, and the patterns the kind
declared (what its writer may add later, and what a work folder ``<out>.partial`` may hold). A
folder's entries are posfeat's when the marker covers them and each listed file still has its
digest (:func:`foreign_entries`). Folders written by posfeat 0.1 (no marker) are recognised by the
file sets their kind declares as ``legacy``.

The kinds themselves (:class:`OutputKind`) are declared by the stages that write them
(``posfeat.outputs.write``, ``posfeat.training.train``, ``posfeat.experiments.folder``): this module
names no file of theirs.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fnmatch
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..core.version import __version__
from .lock import LOCK_TAG
from .writes import TEMP_TAG, atomic_file, file_digest

MARKER = ".posfeat-output.json"
PARTIAL = ".partial"


@dataclass(frozen=True)
class OutputKind:
    """A kind of output posfeat writes, declared by its writer.

    Attributes:
        name: the kind's name in the marker (``"analyze"``, ``"train"``, ...).
        files: fnmatch patterns (relative to the folder; a ``*`` never crosses a ``/``) of
            everything it writes; a work folder ``<out>.partial`` of this kind may hold any of them.
        grows: patterns a finished output gains after its marker was written (runs added to a
            sweep).
        legacy: for folders of posfeat 0.1 (no marker): ``(files that must all be there, files that
            may be, (a JSON file, a key it holds) or None)``.
    """

    name: str
    files: tuple[str, ...]
    grows: tuple[str, ...] = ()
    legacy: tuple[tuple[str, ...], tuple[str, ...], tuple[str, str] | None] | None = None


Kinds = Iterable[OutputKind]


def read_marker(folder: Path) -> dict[str, object] | None:
    """The parsed marker of ``folder`` when posfeat wrote one (never read through a link), else
    None."""
    marker = folder / MARKER
    if marker.is_symlink() or not marker.is_file():
        return None
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) and data.get("tool") == "posfeat" else None


def _strings(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _patterns_for(
    folder: Path, kinds: Kinds
) -> tuple[str | None, list[str], dict[str, str], list[str]]:
    """``(kind, allowed patterns, digests of listed files, the kind's own patterns)``; kind None
    when posfeat did not write the folder. A work folder allows its kind's patterns; a finished
    output what its marker lists and what its kind grows."""
    known = {k.name: k for k in kinds}
    data = read_marker(folder)
    if data is not None:
        kind = str(data.get("kind", "unknown"))
        declared = known.get(kind)
        own = (
            _strings(data["patterns"])
            if "patterns" in data
            else list(declared.files if declared else ())
        )
        grows = (
            _strings(data["grows"]) if "grows" in data else list(declared.grows if declared else ())
        )
        digests = data.get("sha256")
        digests = {str(k): str(v) for k, v in digests.items()} if isinstance(digests, dict) else {}
        extra = own if folder.name.endswith(PARTIAL) else grows
        return kind, [*extra, *(glob_escape(f) for f in _strings(data.get("files")))], digests, own
    if (folder / MARKER).exists() or (folder / MARKER).is_symlink():
        return None, [], {}, []
    for kind in known.values():
        if kind.legacy is not None and _is_legacy(folder, kind):
            required, optional, _ = kind.legacy
            return kind.name, [*required, *optional], {}, list(kind.files)
    return None, [], {}, []


def _is_legacy(folder: Path, kind: OutputKind) -> bool:
    assert kind.legacy is not None
    required, _, signature = kind.legacy
    if not all((folder / f).exists() for f in required):
        return False
    if signature is None:
        return True
    with contextlib.suppress(OSError, ValueError, TypeError):
        return signature[1] in json.loads((folder / signature[0]).read_text())
    return False


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _matches(rel: str, pattern: str) -> bool:
    """``fnmatch`` part by part: a ``*`` never crosses a ``/``."""
    parts, wanted = rel.split("/"), pattern.split("/")
    return len(parts) == len(wanted) and all(
        fnmatch.fnmatchcase(x, y) for x, y in zip(parts, wanted)
    )


def ignored(name: str) -> bool:
    """posfeat's own bookkeeping inside a folder: its marker, temporaries and locks."""
    return name == MARKER or name.endswith((TEMP_TAG, LOCK_TAG))


def _digest_matches(path: Path, digest: str) -> bool:
    try:
        return file_digest(path) == digest
    except OSError:
        return False


def foreign_entries(
    folder: Path, kinds: Kinds = (), limit: int = 3
) -> tuple[str | None, list[str]]:
    """``(kind, first entries posfeat does not write for that kind)`` of an existing folder.

    ``kinds`` are the kinds the caller knows (for folders of posfeat 0.1 and markers that do not
    record their patterns). ``kind`` is None when the folder has no posfeat marker and is not a
    complete posfeat 0.1 output; then every entry is foreign. A symbolic link is always foreign
    (posfeat never writes one), and so is a file its marker lists with a digest the file no longer
    has (shown as ``name (changed since posfeat wrote it)``).
    """
    kind, patterns, digests, own = _patterns_for(folder, kinds)
    unknown: list[str] = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        rel_root = Path(root).relative_to(folder)
        links = [d for d in dirs if os.path.islink(os.path.join(root, d))]
        dirs[:] = [
            d for d in dirs if d not in links
        ]  # a link is an entry of its own, never followed
        for name in sorted([*files, *links]):
            rel = (rel_root / name).as_posix()
            full = os.path.join(root, name)
            if os.path.islink(full) and not ignored(name):
                unknown.append(rel + " (a symbolic link)")
            elif not ignored(name) and not any(_matches(rel, p) for p in patterns):
                unknown.append(rel)
            elif rel in digests and not _digest_matches(Path(full), digests[rel]):
                unknown.append(rel + " (changed since posfeat wrote it)")
        for (
            folder_name
        ) in dirs:  # an empty folder holds nothing to lose: its kind's folders are posfeat's
            rel = (rel_root / folder_name).as_posix()
            empty = not os.listdir(os.path.join(root, folder_name))
            if empty and not any(_matches(rel, p) for p in [*patterns, *own]):
                unknown.append(rel + "/")
        if len(unknown) >= limit:
            break
    return kind, unknown[:limit]


def written_by_posfeat(folder: Path, kinds: Kinds = ()) -> str | None:
    """The kind of posfeat output ``folder`` holds (``"analyze"``, ``"train"``, ...), or None if
    posfeat did not write all of it."""
    kind, unknown = foreign_entries(folder, kinds, limit=1)
    return None if unknown else kind


def _listing(folder: Path) -> list[str]:
    out = []
    for root, dirs, files in os.walk(folder):
        rel = Path(root).relative_to(folder)
        out.extend((rel / n).as_posix() for n in [*dirs, *files] if not ignored(n))
    return sorted(out)


def write_marker(folder: Path, kind: OutputKind, command: str | None = None) -> None:
    """Mark ``folder`` as written by posfeat: its kind with the patterns it declares, every entry it
    holds now and each file's sha256 (the policy replaces only what the marker covers, and only
    while each file is as posfeat wrote it)."""
    listing = _listing(folder)
    digests = {
        rel: file_digest(folder / rel)
        for rel in listing
        if (folder / rel).is_file() and not (folder / rel).is_symlink()
    }
    data = {
        "tool": "posfeat",
        "kind": kind.name,
        "version": __version__,
        "command": command,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "files": listing,
        "sha256": digests,
        "patterns": list(kind.files),
        "grows": list(kind.grows),
    }
    with atomic_file(folder / MARKER) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
