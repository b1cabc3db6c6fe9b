"""Lazy package exports (PEP 562): a package's names are imported on first use, so ``posfeat
--help`` and ``import posfeat`` do not pay for torch, scipy or matplotlib until something needs
them."""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package: str, exports: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``exports`` maps each name to the relative module
    defining it.

    A name is imported on first access and cached in the package; an unknown name that is a
    subpackage or module of ``package`` is imported as such. Other names raise ``AttributeError`` as
    usual."""

    def module_getattr(name: str) -> Any:
        module = sys.modules[package]
        if name in exports:
            value = getattr(importlib.import_module(exports[name], package), name)
        elif not name.startswith("_"):
            try:
                value = importlib.import_module(f"{package}.{name}")
            except ModuleNotFoundError as err:
                if err.name != f"{package}.{name}":
                    raise
                raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        else:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        setattr(module, name, value)
        return value

    def module_dir() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports))

    sys.modules[package].__class__ = _package_class(package, exports)
    return module_getattr, module_dir


def _package_class(package: str, exports: dict[str, str]) -> type[types.ModuleType]:
    """A module class for ``package`` that keeps an exported name pointing at the export when a
    submodule of the same name is imported (Python's import sets ``package.<submodule>`` to the
    module: ``posfeat.analyses.prompt`` would otherwise become the module ``analyses/prompt.py``
    instead of the function ``prompt`` it defines, as an eager ``from .prompt import prompt`` in
    ``__init__`` used to make it)."""

    class LazyPackage(types.ModuleType):
        def __setattr__(self, name: str, value: Any) -> None:
            if (
                name in exports
                and isinstance(value, types.ModuleType)
                and value.__name__ == f"{package}.{name}"
                and exports[name] == f".{name}"
                and hasattr(value, name)
            ):
                value = getattr(value, name)
            super().__setattr__(name, value)

    return LazyPackage
