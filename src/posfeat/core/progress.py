"""The one progress helper every long stage goes through.

* In a terminal (stderr is a TTY) or a Jupyter kernel: a ``tqdm.auto`` bar (a widget in notebooks
  with ipywidgets, a text bar without).
* Anywhere else (stderr piped into a log, CI): no carriage returns; one line per stage on stderr
  as it starts, e.g. ``posfeat: grid statistics (12 blocks)``, so a log shows what is running (the
  commands print what each stage found, and ``summary.json`` its seconds); then, while the stage
  runs, a line at most every :data:`EVERY` seconds as its count moves, e.g. ``posfeat: train
  d_sae=64 (1200 of 4000 steps, 35 s; fvu 0.125, l0 30.1)``, so a pipe is never silent for long
  (training's steps, the stages' blocks).
* ``enabled=False``: nothing at all.
* ``POSFEAT_PROGRESS=bars`` in the environment: tqdm bars even into a pipe (for a log that should
  show every step count, and for tests that wait for one).

Usage mirrors tqdm's: iterate ``progress_bar(iterable, desc=..., enabled=...)`` or call
``bar = progress_bar(total=n, ...)``, ``bar.update(k)``, ``bar.set_postfix(...)``, ``bar.close()``.
"""

from __future__ import annotations

import os
import re
import sys
import time
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

#: the lines a stage writes to a log: its start, and how far it got (tests set these apart from the
# one-line errors)
STAGE_LINE = re.compile(r"^posfeat: [^:]+ \(((\d+ )?\w+|\d+ of \d+ \w+, \d+ s(; [^()]*)?)\)$")

#: seconds between a piped stage's progress lines (at most; a line is written when the count moves
# after this long)
EVERY = 5.0


def interactive() -> bool:
    """True when progress can be drawn in place: stderr is a terminal, or this runs in a Jupyter
    kernel (or ``POSFEAT_PROGRESS=bars`` asks for bars anyway)."""
    if os.environ.get("POSFEAT_PROGRESS") == "bars":
        return True
    try:
        if sys.stderr is not None and sys.stderr.isatty():
            return True
    except (AttributeError, ValueError):
        pass
    ipython = sys.modules.get("IPython")
    shell = getattr(ipython, "get_ipython", lambda: None)() if ipython is not None else None
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


class LineProgress:
    """A tqdm-like counter for logs: one line when the stage starts, no carriage returns, nothing
    after."""

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        *,
        total: int | None = None,
        desc: str = "",
        unit: str = "it",
        initial: int = 0,
    ):
        self.iterable = iterable
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.postfix = ""
        self.start = self.last = time.monotonic()
        self.announce()

    def announce(self) -> None:
        left = "" if self.total is None else f"{self.total - self.n} "
        print(f"posfeat: {self.desc} ({left}{self.unit}s)", file=sys.stderr, flush=True)

    def tick(self) -> None:
        """A line saying how far the stage got, when :data:`EVERY` seconds have passed since the
        last one."""
        now = time.monotonic()
        if now - self.last < EVERY:
            return
        self.last = now
        of = "" if self.total is None else f" of {self.total}"
        more = f"; {self.postfix}" if self.postfix else ""
        print(
            f"posfeat: {self.desc} ({self.n}{of} {self.unit}s, {now - self.start:.0f} s{more})",
            file=sys.stderr,
            flush=True,
        )

    def __iter__(self) -> Iterator[Any]:
        assert self.iterable is not None
        for item in self.iterable:
            yield item
            self.n += 1
            self.tick()

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        self.tick()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = ", ".join(f"{k} {v}" for k, v in values.items())

    def close(self) -> None:
        pass


class NoProgress(LineProgress):
    """Counts and prints nothing (``progress=False``)."""

    def announce(self) -> None:
        pass

    def tick(self) -> None:
        pass


def progress_bar(
    iterable: Iterable[Any] | None = None,
    *,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    initial: int = 0,
    enabled: bool = True,
) -> Any:
    """A progress bar over ``iterable`` (or a counter of ``total`` steps): see the module docstring
    for what it draws where."""
    if not enabled:
        return NoProgress(iterable, total=total, desc=desc, unit=unit, initial=initial)
    if not interactive():
        return LineProgress(iterable, total=total, desc=desc, unit=unit, initial=initial)
    with (
        warnings.catch_warnings()
    ):  # a notebook without ipywidgets: tqdm.auto falls back to text bars; no warning about it
        warnings.simplefilter("ignore")
        from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, initial=initial)
