"""Command-line flags: generated from the settings dataclasses, and the few every command shares.

Every flag value is checked for type here and for range by the dataclass it fills, before any
work starts; a bad value is one sentence naming the flag (the parser's own errors too).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from typing import Any, NoReturn

from ..core.devices import DEVICES
from ..core.errors import PosfeatError
from ..io.names import BUNDLED_MODEL, BUNDLED_SAE
from ..io.paths import shorten


class UsageError(PosfeatError):
    """A command line argparse refused (unknown flag, missing value, ...)."""


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one sentence (raised, and printed by ``main`` on one
    line)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message}; see {self.prog} --help.")


def whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


#: Seeds numpy and torch both take: 0 to 2**32 - 1.
SEED_MAX = 2**32 - 1


def seed_value(text: str) -> int:
    value = whole(text)
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(
            f"{text if len(text) < 40 else text[:30] + '...'} is outside 0..{SEED_MAX}; give a seed "
            "in that range"
        )
    return value


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(sorted({int(x) for x in text.split(",") if x.strip()}))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of integers; give e.g. 256,512,1024"
        ) from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must list positive integers")
    return values


def floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of numbers"
        ) from None
    if not values or not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"{text!r} must list finite numbers")
    return values


_TYPES = {
    "int": whole,
    "int | None": whole,
    "float": number,
    "float | None": number,
    "str": str,
    "str | None": str,
    "tuple[int, ...]": ints,
    "tuple[float, ...]": floats,
}


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def add_dataclass_flags(
    p: argparse.ArgumentParser,
    cls: type,
    *,
    exclude: tuple[str, ...] = (),
    defaults: dict[str, Any] | None = None,
    why: str = "",
) -> None:
    """One flag per field of ``cls`` (``d_sae`` -> ``--d-sae``), with its type, default
    (``defaults`` override, for the reason ``why``, which the help gives beside the field's own
    default) and help."""
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        meta = dict(f.metadata)
        default = (defaults or {}).get(f.name, _default(f))
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        text = meta.get("help", "")
        if why and f.name in (defaults or {}) and default != _default(f):
            shown = f"{shown}: {why}; posfeat train's is {_default(f)}"
        says_default = (
            "(default" in text or meta.get("required") or default is None
        )  # said once, and never "(default None)"
        kwargs: dict[str, Any] = {
            "type": seed_value if f.name == "seed" else _TYPES[str(f.type)],
            "dest": f.name,
            "help": text + ("" if says_default else f" (default {shown})"),
        }
        if meta.get("choices"):
            kwargs["choices"] = meta["choices"]
        if meta.get("required") and f.name not in (defaults or {}):
            kwargs["required"] = True
        else:
            kwargs["default"] = default
        p.add_argument("--" + f.name.replace("_", "-"), **kwargs)


def values_of(args: argparse.Namespace, cls: type, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """The values of ``cls``'s fields from parsed ``args``."""
    return {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(cls)
        if f.name not in exclude and hasattr(args, f.name)
    }


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device",
        default="auto",
        choices=DEVICES,
        help="where to compute: auto (CUDA when available), cpu or cuda (default auto)",
    )


def add_pair(p: argparse.ArgumentParser, sae: bool = True) -> None:
    p.add_argument(
        "--model",
        default=None,
        help=f"model: {BUNDLED_MODEL!r} (bundled, default), a hub id such as gpt2, or a folder",
    )
    if sae:
        p.add_argument(
            "--sae",
            default=None,
            help=f"SAE: {BUNDLED_SAE!r} (bundled, default), "
            "gpt2-small-res-jb/blocks.0.hook_resid_pre, or a "
            "SAELens-format folder",
        )
        p.add_argument(
            "--allow-any-hook",
            action="store_true",
            help="analyse an SAE that does not read the layer-0 embedding sum anyway",
        )
        p.add_argument(
            "--strict",
            action="store_true",
            help="refuse a model centred differently from the SAE's training model "
            "(default: a one-line warning)",
        )
    add_device(p)


def add_output(
    p: argparse.ArgumentParser, default: str | None, what: str, stdout: bool = False
) -> None:
    """``--out`` and ``--force``; ``stdout``: the output is one file, and ``--out -`` prints it on
    standard output."""
    dash = (
        "; - prints it on standard output (the summary then goes to standard error)"
        if stdout
        else ""
    )
    p.add_argument(
        "--out",
        default=default,
        required=default is None,
        help=f"{what}{dash}" + (f" (default {default})" if default else ""),
    )
    p.add_argument(
        "--force", action="store_true", help="replace an existing output that posfeat wrote"
    )


#: ``--out -``: the command's one output file goes to standard output.
STDOUT = "-"


def add_json(p: argparse.ArgumentParser, what: str) -> None:
    """``--json``: the command's results as one JSON document on standard output (schemas:
    docs/usage.md)."""
    p.add_argument(
        "--json",
        action="store_true",
        help=f"print {what} as one JSON document on standard output, nothing else there "
        "(schema: docs/usage.md)",
    )


def positions_arg(spec: str | None, n_ctx: int, single: bool = False) -> range | None:
    """``N`` (positions 0..N-1) or ``A:B`` (``single``: ``N`` only) -> range, checked against
    ``n_ctx``."""
    if spec is None:
        return None
    if single and ":" in spec:
        raise PosfeatError(
            f"--positions {spec!r}: this command studies positions 0..N-1; give a single number N."
        )
    try:
        if ":" in spec:
            a, b = spec.split(":", 1)
            start, stop = int(a or 0), int(b or n_ctx)
        else:
            start, stop = 0, int(spec)
    except ValueError:
        raise PosfeatError(
            f"--positions {shorten(spec)!r} is not N or A:B; give e.g. 128 or 0:512."
        ) from None
    if ":" in spec and not 0 <= start < stop:
        raise PosfeatError(
            f"--positions {shorten(spec)}: the start must be at least 0 and below the end; give "
            f"e.g. 0:{n_ctx}."
        )
    if stop <= start:
        raise PosfeatError(
            f"--positions {shorten(spec)} selects no position; give N of at least 1."
        )
    if stop > n_ctx:
        raise PosfeatError(
            f"--positions {shorten(spec)} goes past the model's {n_ctx} positions; give a range "
            f"within 0:{n_ctx}."
        )
    return range(start, stop)
