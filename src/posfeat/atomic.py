"""Writing outputs atomically: a temporary file or folder beside the target, renamed into place."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import PosfeatError


def write_text_atomic(path: str | Path, text: str) -> None:
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent if str(path.parent) else ".")
    except OSError as err:
        raise PosfeatError(f"Cannot write {path} ({err.strerror}); choose a writable location.") from None
    with os.fdopen(fd, "w") as f:
        f.write(text)
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)
    os.replace(tmp, path)


def _temp_beside(out: Path, force: bool) -> Path:
    if out.exists() and not force:
        raise PosfeatError(f"Output folder {out} already exists; pass --force to replace it or choose another --out.")
    if out.exists() and not out.is_dir():
        raise PosfeatError(f"Output {out} exists and is not a folder; choose another --out.")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except OSError as err:
        raise PosfeatError(f"Cannot write output folder {out} ({err.strerror or err}); choose a writable --out.") from None


def check_output_folder(out: str | Path, *, force: bool = False) -> Path:
    """Fail early, writing nothing, when ``out`` exists (without ``force``) or cannot be written."""
    out = Path(out).expanduser().resolve()
    shutil.rmtree(_temp_beside(out, force))
    return out


@contextlib.contextmanager
def output_folder(out: str | Path, *, force: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; on success it replaces ``out``, on any error it is removed.

    An existing ``out`` is an error unless ``force``; it stays untouched until the new one is complete.
    """
    out = Path(out).expanduser().resolve()
    tmp = _temp_beside(out, force)
    try:
        yield tmp
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
