"""The signals that stop a run, held back or deferred while a step must not be cut in half.

:func:`signals_held` blocks them at the OS level for a few system calls (a swap of folders, a
delete); :func:`deferred_signals` records them for a long loop that stops at a clean point of its
own choosing."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator

#: The signals that stop a run cleanly: SIGINT, SIGTERM, and SIGHUP (the terminal closed) and
# SIGQUIT (Ctrl-\\) likewise.
STOP_SIGNALS = frozenset(
    {
        signal.SIGINT,
        signal.SIGTERM,
        *(getattr(signal, n) for n in ("SIGHUP", "SIGQUIT") if hasattr(signal, n)),
    }
)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold the stop signals back for the duration (delivered when it ends)."""
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    except (AttributeError, OSError, ValueError):  # pragma: no cover - platforms without sigmask
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


class Deferred:
    """Signals that arrived under :func:`deferred_signals`: the first one's number (or None), and
    ``taken`` once the loop acted on it."""

    signum: int | None = None
    taken: bool = False


@contextlib.contextmanager
def deferred_signals() -> Iterator[Deferred]:
    """Record the stop signals instead of acting on them, so a long loop stops at a clean point of
    its own choosing.

    The loop marks a signal it acted on with ``state.taken = True``; one it did not act on (it came
    during the last step) is delivered again when the block ends, to whatever handles it there.
    Outside the main thread (where handlers cannot be set) nothing changes.
    """
    state = Deferred()

    def record(signum: int, frame: object) -> None:
        state.signum = state.signum or signum

    try:
        old = {s: signal.signal(s, record) for s in STOP_SIGNALS}
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
