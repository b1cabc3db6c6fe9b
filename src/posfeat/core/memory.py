"""Handing freed memory back to the operating system between the stages of a long run, and sparing
the garbage collector passes over what imports and loading make."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc
from collections.abc import Iterator


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        lib = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return lib if lib is not None and hasattr(lib, "malloc_trim") else None


def release_freed() -> bool:
    """Return the C heap's free pages to the system (glibc's ``malloc_trim``), so a stage's freed
    temporaries do not stay in the process's resident size for the next; False where the C library
    has no such call (nothing is done)."""
    lib = _libc()
    if lib is None:
        return False
    lib.malloc_trim(0)
    return True


def memory_limit(device: object = "cpu") -> tuple[int | None, str]:
    """``(bytes, what)``: the most memory this process can have on ``device``: the GPU's memory, or
    the smaller of the machine's physical memory and the address-space and data limits (``ulimit
    -v``, ``ulimit -d``); None when unknown."""
    import os
    import resource

    if str(device).startswith("cuda"):
        try:
            import torch

            return int(
                torch.cuda.get_device_properties(torch.device(str(device))).total_memory
            ), f"the memory of {device}"
        except Exception:
            return None, "unknown"
    found: list[tuple[int, str]] = []
    with contextlib.suppress(OSError, ValueError, AttributeError):
        found.append(
            (os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "the machine's memory")
        )
    for limit, name in (
        (getattr(resource, "RLIMIT_AS", None), "ulimit -v"),
        (getattr(resource, "RLIMIT_DATA", None), "ulimit -d"),
    ):
        if limit is None:
            continue
        try:
            soft, _ = resource.getrlimit(limit)
        except (OSError, ValueError):
            continue
        if soft != resource.RLIM_INFINITY and soft > 0:
            found.append((int(soft), f"the limit set by {name}"))
    return min(found) if found else (None, "unknown")


def gib(n: float) -> str:
    return f"{n / 2**30:.3g} GiB"


def check_fits(estimate: float, what: str, fix: str, device: object = "cpu") -> None:
    """Refuse, before allocating, work whose memory ``estimate`` (bytes) exceeds what the process
    can have (:func:`memory_limit`)."""
    from .errors import PosfeatMemoryError

    limit, name = memory_limit(device)
    if limit is not None and estimate > limit:
        raise PosfeatMemoryError(
            f"{what} needs about {gib(estimate)} of memory, more than {name} ({gib(limit)}); {fix}."
        )


#: Whether each command scope open now (:func:`collector_scope`, innermost last) froze the objects
# made before it: only then do the paused blocks inside it freeze theirs.
_SCOPES: list[bool] = []


@contextlib.contextmanager
def collector_scope() -> Iterator[None]:
    """A command's run: what :func:`collector_paused` blocks inside it made is frozen out of the
    cyclic garbage collector's passes (``gc.freeze``) until the scope ends (``gc.unfreeze``).
    Where the caller froze objects of its own (``gc.get_freeze_count()``), nothing is frozen here
    and the freezing is left to it."""
    ours = gc.get_freeze_count() == 0
    _SCOPES.append(ours)
    try:
        yield
    finally:
        if ours:
            gc.unfreeze()
        _SCOPES.pop()


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off for the block (on again after, if it was on before),
    and inside a :func:`collector_scope` everything made so far frozen at its end: for imports and
    loading, which make many long-lived objects and no garbage, so that the collector's passes over
    them (0.35 s of the GPT-2 stand-in's start-up, on its one busy core) are not made at all."""
    was = gc.isenabled()
    try:
        gc.disable()
        yield
    finally:
        _freeze_if_ours()
        if was:
            gc.enable()


@contextlib.contextmanager
def collector_frozen() -> Iterator[None]:
    """Everything made so far frozen out of the collector's passes for the block (so forked
    children neither walk it nor copy its pages when they collect): inside a
    :func:`collector_scope` that owns the freezing, until that scope ends; outside any scope, until
    the block ends. Where a caller froze objects of its own, nothing is done (unfreezing would give
    the collector back theirs too)."""
    with contextlib.nullcontext() if _SCOPES else collector_scope():
        _freeze_if_ours()
        yield


def _freeze_if_ours() -> None:
    """``gc.freeze()`` inside a :func:`collector_scope` that owns the freezing; else nothing."""
    if _SCOPES and _SCOPES[-1]:
        gc.freeze()
