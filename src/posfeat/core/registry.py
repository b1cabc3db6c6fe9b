"""A registry of implementations that a lower stage calls but a later stage provides.

:class:`posfeat.analyses.Analysis` has ``save`` and ``figure`` methods, but writing files and
drawing figures belong to ``posfeat.outputs``, a later stage that the analyses must not import.
``posfeat.outputs`` registers its functions here when it is imported (``import posfeat`` imports
it), and the analyses look them up here: no upward import, no cycle (as SAELens's registry does
for its SAE classes).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .errors import PosfeatError

_REGISTRY: dict[str, Callable[..., Any]] = {}


def register(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """Register ``fn`` under ``name`` (the later one wins) and return it."""
    _REGISTRY[name] = fn
    return fn


def lookup(name: str) -> Callable[..., Any]:
    """The implementation registered under ``name``."""
    if name not in _REGISTRY:
        raise PosfeatError(f"Nothing provides {name!r}; import posfeat (which loads posfeat.outputs) before using it.")
    return _REGISTRY[name]
