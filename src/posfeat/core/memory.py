"""Handing freed memory back to the operating system between the stages of a long run."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        lib = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return lib if lib is not None and hasattr(lib, "malloc_trim") else None


def release_freed() -> bool:
    """Return the C heap's free pages to the system (glibc's ``malloc_trim``), so a stage's freed temporaries do not stay
    in the process's resident size for the next; False where the C library has no such call (nothing is done)."""
    lib = _libc()
    if lib is None:
        return False
    lib.malloc_trim(0)
    return True
