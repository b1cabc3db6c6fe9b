"""User-facing errors.

Every mistake a user can make (a wrong file, mismatched shapes, an unreachable hub) raises a
:class:`PosfeatError` whose message is one sentence naming the bad thing and what to do. The CLI
prints that sentence and exits non-zero, with no traceback.
"""

from __future__ import annotations


class PosfeatError(ValueError):
    """An error the user caused and can fix; the message says how."""
