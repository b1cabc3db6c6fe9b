"""Typed values from configuration files (``config.json``, ``cfg.json``), each failure one sentence
naming file, key and value."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..core.errors import PosfeatError

_MISSING = object()


class ConfigFile:
    """A configuration dict read from ``path``; keys are looked up at the top level, then in
    ``metadata``.

    SAELens 6 moved ``hook_name``, ``context_size`` and friends into ``metadata``; older configs
    keep them at the top level (and call the hook ``hook_point``): both are read through
    :meth:`get`."""

    def __init__(self, data: dict[str, Any], path: Path | str) -> None:
        self.data = data
        self.path = Path(path)

    def raw(self, *keys: str, default: Any = None) -> Any:
        """The first of ``keys`` present and not null, at the top level or in ``metadata``."""
        meta = self.data.get("metadata")
        for key in keys:
            if self.data.get(key) is not None:
                return self.data[key]
            if isinstance(meta, dict) and meta.get(key) is not None:
                return meta[key]
        return default

    def _key(self, keys: tuple[str, ...]) -> str:
        for key in keys:
            if self.data.get(key) is not None or (
                isinstance(self.data.get("metadata"), dict)
                and self.data["metadata"].get(key) is not None
            ):
                return key
        return keys[0]

    def _bad(self, keys: tuple[str, ...], value: Any, want: str) -> PosfeatError:
        return PosfeatError(
            f"{self.path}: {self._key(keys)} is {value!r}, not {want}; fix that value in the file."
        )

    def get_int(self, *keys: str, default: Any = _MISSING, minimum: int | None = None) -> Any:
        """An integer (an integral JSON number; not a bool or a string), at least ``minimum``."""
        value = self.raw(*keys)
        if value is None:
            if default is _MISSING:
                raise PosfeatError(f"{self.path} has no {keys[0]}; add it to the file.")
            return default
        ok = isinstance(value, int) and not isinstance(value, bool)
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value, ok = int(value), True
        if not ok:
            raise self._bad(keys, value, "an integer")
        if minimum is not None and value < minimum:
            raise self._bad(keys, value, f"an integer of at least {minimum}")
        return value

    def get_bool(self, *keys: str, default: bool) -> bool:
        """A JSON boolean."""
        value = self.raw(*keys)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self._bad(keys, value, "true or false")
        return value

    def get_str(self, *keys: str, default: Any = None) -> Any:
        """A string (numbers are not accepted where a name is expected)."""
        value = self.raw(*keys)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self._bad(keys, value, "a string")
        return value

    def get_dict(self, *keys: str) -> dict[str, Any]:
        """A JSON object (empty when absent)."""
        value = self.raw(*keys)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self._bad(keys, value, "a JSON object")
        return value
