"""The one progress helper every long stage goes through.

* In a terminal (stderr is a TTY) or a Jupyter kernel: a ``tqdm.auto`` bar (a widget in notebooks).
* Anywhere else (stderr piped into a log, CI): no carriage returns; one line per stage on stderr
  when it ends, e.g. ``posfeat: grid statistics: 12/12 blocks in 3.1 s``.
* ``enabled=False``: nothing at all.

Usage mirrors tqdm's: iterate ``progress_bar(iterable, desc=..., enabled=...)`` or call
``bar = progress_bar(total=n, ...)``, ``bar.update(k)``, ``bar.set_postfix(...)``, ``bar.close()``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any


def interactive() -> bool:
    """True when progress can be drawn in place: stderr is a terminal, or this runs in a Jupyter kernel."""
    try:
        if sys.stderr is not None and sys.stderr.isatty():
            return True
    except (AttributeError, ValueError):
        pass
    ipython = sys.modules.get("IPython")
    shell = getattr(ipython, "get_ipython", lambda: None)() if ipython is not None else None
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


class LineProgress:
    """A tqdm-like counter that writes one line when it closes (for logs: no carriage returns)."""

    def __init__(self, iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str = "", unit: str = "it", initial: int = 0):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.postfix: dict[str, Any] = {}
        self.t0 = time.perf_counter()
        self.closed = False

    def __iter__(self) -> Iterator[Any]:
        assert self.iterable is not None
        try:
            for item in self.iterable:
                yield item
                self.n += 1
        finally:
            self.close()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix(self, **values: Any) -> None:
        self.postfix = values

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        done = f"{self.n}/{self.total}" if self.total is not None else str(self.n)
        extra = "".join(f", {k} {v}" for k, v in self.postfix.items())
        print(f"posfeat: {self.desc}: {done} {self.unit}s in {time.perf_counter() - self.t0:.1f} s{extra}", file=sys.stderr, flush=True)


class NoProgress(LineProgress):
    """Counts and prints nothing (``progress=False``)."""

    def close(self) -> None:
        self.closed = True


def progress_bar(iterable: Iterable[Any] | None = None, *, total: int | None = None, desc: str = "", unit: str = "it", initial: int = 0,
             enabled: bool = True) -> Any:
    """A progress bar over ``iterable`` (or a counter of ``total`` steps): see the module docstring for what it draws where."""
    if not enabled:
        return NoProgress(iterable, total=total, desc=desc, unit=unit, initial=initial)
    if not interactive():
        return LineProgress(iterable, total=total, desc=desc, unit=unit, initial=initial)
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial)
