"""Files stay inside their folder: a name read from a file (an index's shard, a config's file) or a
file of a folder (a model folder, an SAE folder, a hub snapshot) must resolve inside that folder, or
it is refused without being opened.

The one exception is the layout ``huggingface_hub`` writes:
``<cache>/models--org--name/snapshots/<commit>/<path>`` is a symlink to
``<cache>/models--org--name/blobs/<sha256>``, so for a folder inside a snapshot the repository's
``blobs`` folder counts as inside too."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from ..core.errors import PosfeatError


def expand(path: str | os.PathLike[str]) -> Path:
    """``path`` with a leading ``~`` or ``~user`` expanded, as a shell does: a ``~name`` of no known
    user (or ``~`` with no home folder) stays as written, a relative name, instead of raising."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        return Path(path)


def _shown_char(ch: str) -> str:
    code = ord(ch)
    if (
        0xDC80 <= code <= 0xDCFF
    ):  # a byte that was not UTF-8, as Python decodes file names (surrogateescape)
        return f"\\x{code - 0xDC00:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def visible(text: str) -> str:
    """``text`` with control, format (bidirectional overrides, zero-width) and separator characters
    and undecodable bytes written as escapes (``\\u202e``, ``\\x1b``, ``\\xff``), so that a string
    from a file cannot move the cursor, recolour the terminal, reverse what follows it or fail to
    print."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch == " " else _shown_char(ch) for ch in text)


# a path in an operating system's error keeps this much (a file name is at the end): whole in
# practice
PATH_KEEP = 200


def shorten(value: object, keep: int = 60) -> str:
    """``value`` as text for a message: whole when short, else its first ``keep`` characters and its
    length; control and bidirectional characters made visible (:func:`visible`)."""
    text = str(value)
    return visible(text if len(text) <= keep + 20 else f"{text[:keep]}... ({len(text)} characters)")


def allowed_roots(folder: Path) -> list[Path]:
    """``folder`` (resolved) and, for a folder inside a hub snapshot, its repository's ``blobs``
    folder."""
    real = folder.resolve()
    roots = [real]
    for anc in [folder, *folder.parents]:
        if anc.parent.name == "snapshots" and (anc.parent.parent / "blobs").is_dir():
            roots.append((anc.parent.parent / "blobs").resolve())
            break
    return roots


def is_inside(path: Path, roots: list[Path]) -> bool:
    real = path.resolve()
    return any(real == r or r in real.parents for r in roots)


def safe_name(name: object, where: str, what: str = "file") -> str:
    """``name`` checked as a relative path inside a folder (no absolute path, no ``..``), without
    touching the disk."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise PosfeatError(
            f"{where} names the {what} {shorten(repr(name))}, which is not a file name; fix or "
            "re-download it."
        )
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or os.path.isabs(name) or ".." in p.parts:
        raise PosfeatError(
            f"{where} names the {what} {shorten(name)}, which lies outside its folder; posfeat "
            "reads only files inside "
            "the folder it was given: fix or re-download it."
        )
    return name


def inside(folder: Path, name: str, where: str, what: str = "file") -> Path:
    """``folder / name``, refused unless it resolves inside ``folder`` (see module docstring);
    nothing is opened."""
    path = folder / safe_name(name, where, what)
    if (path.exists() or path.is_symlink()) and not is_inside(path, allowed_roots(folder)):
        raise PosfeatError(
            f"{where}: the {what} {shorten(name)} resolves to {shorten(path.resolve())}, outside "
            f"{folder}; posfeat reads "
            "only files inside the folder it was given: copy the file into the folder instead of "
            "linking it."
        )
    return path
