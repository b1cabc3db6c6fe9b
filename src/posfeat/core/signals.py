"""Holding a signal back across a stretch of code where the exception it raises could be lost.

The CLI turns SIGINT and SIGTERM into :class:`~posfeat.core.errors.Interrupted`, raised wherever the main thread is.
Inside ``os.fork`` that is in the callbacks the fork runs (``os.register_at_fork``: logging's, for one), where Python
prints an exception and drops it: the run would go on to the end as if no signal had come. Code that forks runs
inside :func:`signals_deferred`: a signal that arrives there is recorded by the handler (:func:`defer`) and raised when
the stretch ends, in the parent, at a point where it is not lost.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from .errors import Interrupted

_state: dict[str, int | None] = {"depth": 0, "pending": None}


def deferring() -> bool:
    """Whether a signal handler should record its signal (:func:`defer`) instead of raising now."""
    return bool(_state["depth"])


def defer(signum: int) -> None:
    """Record ``signum``, to be raised as :class:`~posfeat.core.errors.Interrupted` when :func:`signals_deferred` ends."""
    _state["pending"] = _state["pending"] or signum


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Signals the CLI's handler meets inside are raised as ``Interrupted`` once the block is left (see module docstring)."""
    _state["depth"] = int(_state["depth"] or 0) + 1
    try:
        yield
    finally:
        _state["depth"] = int(_state["depth"] or 0) - 1
        pending = _state["pending"]
        if not _state["depth"] and pending is not None:
            _state["pending"] = None
            raise Interrupted(pending)
