"""User-facing errors.

Every mistake a user can make (a wrong file, mismatched shapes, an unreachable hub) raises a
:class:`PosfeatError` whose message is one sentence naming the bad thing and what to do. The CLI
prints that sentence and exits with status 2, with no traceback.

A :class:`PosfeatError` is a ``ValueError``; an argument of the wrong type raises
:class:`PosfeatTypeError` (also a ``TypeError``), work refused because it would not fit in memory
:class:`PosfeatMemoryError` (also a ``MemoryError``), a file-system failure :class:`PosfeatOSError`
(also an ``OSError``): catch either name.

A message names the parameters a user can change through :func:`arg`, so that it reads right in
the interface the user is in: ``force=True`` for an API user, ``--force`` for a CLI user.
"""

from __future__ import annotations

import re

_ARG = re.compile("\x1e([^\x1f\x1e]*)\x1f([^\x1e]*)\x1e")


def arg(name: str, value: object = None) -> str:
    """A parameter named inside an error message (see module docstring).

    ``arg("force", True)`` reads ``force=True`` in Python and ``--force`` on the command line;
    ``arg("lr", 0.1)`` reads ``lr=0.1`` and ``--lr 0.1``; ``arg("out")`` reads ``out`` and
    ``--out``."""
    return f"\x1e{name}\x1f{'' if value is None else value!s}\x1e"


def _render(text: str, cli: bool) -> str:
    def one(m: re.Match[str]) -> str:
        name, value = m.group(1), m.group(2)
        if not cli:
            return f"{name}={value}" if value else name
        flag = "--" + name.replace("_", "-")
        return flag if value in ("", "True") else f"{flag} {value}"

    return _ARG.sub(one, text)


class PosfeatError(ValueError):
    """An error the user caused and can fix; the message says how."""

    def __str__(self) -> str:
        return _render(str(self.args[0]) if self.args else "", cli=False)

    def for_cli(self) -> str:
        """The message as a command-line user should read it (parameters as flags)."""
        return _render(str(self.args[0]) if self.args else "", cli=True)


class PosfeatTypeError(PosfeatError, TypeError):
    """An argument of the wrong type: catch it as :class:`PosfeatError` or as ``TypeError``."""


class PosfeatMemoryError(PosfeatError, MemoryError):
    """Work that would not fit in memory, refused before allocating: catch it as
    :class:`PosfeatError` or ``MemoryError``."""


class PosfeatOSError(PosfeatError, OSError):
    """A file-system failure (a full disk, a read-only folder, a name the file system cannot hold),
    named with the path and
    what to do: catch it as :class:`PosfeatError` or ``OSError``."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; ``signum`` says which. Raised by the CLI's signal handlers."""

    def __init__(self, signum: int, note: str = "") -> None:
        super().__init__(note)
        self.signum = signum
        self.note = note


class Stopped(PosfeatError):  # noqa: N818 (a stop, not a failure: the CLI exits with the signal's status)
    """A long run stopped before its end (interrupted, or asked to stop); the message says how to
    resume.

    ``signum`` is the signal that stopped it (SIGINT, SIGTERM), or None.
    """

    def __init__(self, message: str, signum: int | None = None) -> None:
        super().__init__(message)
        self.signum = signum
