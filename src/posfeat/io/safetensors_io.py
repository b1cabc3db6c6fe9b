"""Weight files: safetensors only, validated by their header, never unpickled.

A safetensors file is an 8-byte little-endian header length ``n``, ``n`` bytes of JSON (a map from
tensor name to ``{"dtype", "shape", "data_offsets"}``, plus an optional ``__metadata__``), then the
tensor data. :func:`read_header` checks exactly that, reading only the first ``8 + n`` bytes, so a
pickle, a zip (``torch.save``), a truncated file or an absurd header is named in one sentence
before anything else touches it; tensors are then read one at a time through ``safe_open``.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..core.errors import PosfeatError, PosfeatOSError
from ..core.memory import check_fits
from .paths import shorten
from .writes import atomic_file

MAX_HEADER = 100 * 2**20  # the safetensors library's own limit on the JSON header
_DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}
FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}


def _what_it_is(head: bytes) -> str:
    """A guess for the error message only (validation never depends on it)."""
    if head[:1] == b"\x80" and head[1:2] in {b"\x02", b"\x03", b"\x04", b"\x05"}:
        return "it looks like a pickle (posfeat never unpickles weights: convert it with safetensors.torch.save_file)"
    if head[:4] == b"PK\x03\x04":
        return (
            "it looks like a zip archive such as torch.save writes (posfeat never unpickles weights: "
            "convert it with safetensors.torch.save_file)"
        )
    return "it may be truncated or not a weight file: download or save it again"


def _bad(path: Path, why: str, head: bytes) -> PosfeatError:
    return PosfeatError(f"{path} is not a valid safetensors file ({why}); {_what_it_is(head)}.")


def read_header(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """The validated JSON header of a safetensors file (tensor name -> dtype, shape, offsets),
    ``__metadata__`` dropped."""
    return _validated(Path(path))[0]


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file (string to string; empty when it has none), its
    header validated first."""
    return _validated(Path(path))[1]


def _validated(path: Path) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The header of :func:`read_header` and the metadata of :func:`read_metadata`, from one read of
    the file's head."""
    if not path.exists():
        raise PosfeatError(f"Weight file {path} does not exist; check the path.")
    if path.is_dir():
        raise PosfeatError(f"Weight file {path} is a folder; pass the .safetensors file itself.")
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise _bad(path, f"it has only {size} bytes", head)
            (n,) = struct.unpack("<Q", head)
            if n < 2 or n > MAX_HEADER or n > size - 8:
                raise _bad(
                    path, f"its first 8 bytes give a header of {n} bytes in a file of {size}", head
                )
            raw = fh.read(n)
    except OSError as err:
        raise PosfeatError(
            f"Cannot read weight file {path} ({err.strerror or err}); check its permissions."
        ) from None
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise _bad(path, "its header is not JSON", head) from None
    except RecursionError:
        raise _bad(path, "its header nests JSON deeper than Python can read", head) from None
    if not isinstance(header, dict):
        raise _bad(path, "its header is not a JSON object", head)
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
    ):
        raise _bad(path, "its __metadata__ is not a map of strings to strings", head)
    data_size = size - 8 - n
    for name, info in header.items():
        _check_entry(path, name, info, data_size, head)
    return header, meta


def _check_entry(path: Path, name: str, info: Any, data_size: int, head: bytes) -> None:
    ok = (
        isinstance(info, dict)
        and isinstance(info.get("dtype"), str)
        and info["dtype"] in _DTYPE_BYTES
        and isinstance(info.get("shape"), list)
    )
    offsets = info.get("data_offsets") if isinstance(info, dict) else None
    if not ok or not (
        isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
    ):
        raise _bad(path, f"its header entry for {name!r} is malformed", head)
    if not all(isinstance(d, int) and d >= 0 for d in info["shape"]):
        raise _bad(path, f"tensor {name!r} has shape {info['shape']}", head)
    begin, end = offsets
    numel = 1
    for d in info["shape"]:
        numel *= d
    if not 0 <= begin <= end <= data_size or end - begin != numel * _DTYPE_BYTES[info["dtype"]]:
        raise _bad(
            path,
            f"tensor {name!r} lies outside the file's {data_size} data bytes or does not match its "
            "shape",
            head,
        )


def tensor_names(path: str | os.PathLike[str]) -> list[str]:
    """Names of the tensors in a safetensors file (reads only its header)."""
    return list(read_header(path))


_ITEM_BYTES = {
    "F64": 8,
    "I64": 8,
    "U64": 8,
    "F32": 4,
    "I32": 4,
    "U32": 4,
    "F16": 2,
    "BF16": 2,
    "I16": 2,
    "U16": 2,
}


def read_tensors(
    path: str | os.PathLike[str], names: Iterable[str] | None = None, *, floating: bool = False
) -> dict[str, torch.Tensor]:
    """Read tensors ``names`` (default all) from a safetensors file, one at a time, after validating
    its header.

    ``floating``: refuse tensors that are not floating point (a weight stored as bool or int).
    """
    path = Path(path)
    header = read_header(path)
    wanted = list(header) if names is None else list(names)
    missing = [n for n in wanted if n not in header]
    if missing:
        raise PosfeatError(
            f"{path} has no tensor(s) {', '.join(missing)} (it holds "
            f"{', '.join(list(header)[:8])}); pass the right file."
        )
    if floating:
        bad = [
            f"{n} ({header[n]['dtype']})" for n in wanted if header[n]["dtype"] not in FLOAT_DTYPES
        ]
        if bad:
            raise PosfeatError(
                f"{path} stores {', '.join(bad)} as non-floating-point data; weights must be "
                "float16, bfloat16, float32 or float64."
            )
    sizes = [
        math.prod(header[n]["shape"]) * max(4, _ITEM_BYTES.get(header[n]["dtype"], 4))
        for n in wanted
    ]
    check_fits(
        sum(sizes) + max(sizes, default=0),
        f"Reading {shorten(path)} ({len(sizes)} tensors)",
        "run on a machine with more memory (or a higher ulimit), or use a smaller SAE",
    )
    out = {}
    try:
        with safe_open(str(path), framework="pt") as f:
            for n in wanted:
                out[n] = f.get_tensor(n)
    except OSError as err:
        raise PosfeatError(
            f"Cannot read weight file {path} ({err.strerror or err}); check its permissions."
        ) from None
    except Exception as err:  # the library's own errors on data it cannot read
        raise PosfeatError(
            f"{path} could not be read ({str(err).splitlines()[0][:120]}); it may be damaged: save "
            "or download it again."
        ) from None
    return out


def read_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A JSON object from ``path``, with one-sentence errors."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise PosfeatError(f"{path} does not exist; check the folder.") from None
    except IsADirectoryError:
        raise PosfeatError(f"{path} is a folder, not a JSON file; check the folder.") from None
    except OSError as err:
        raise PosfeatError(
            f"Cannot read {path} ({err.strerror or err}); check its permissions."
        ) from None
    except (UnicodeDecodeError, ValueError) as err:
        raise PosfeatError(
            f"{path} is not valid JSON ({str(err)[:100]}); fix or replace it."
        ) from None
    except RecursionError:
        raise PosfeatError(
            f"{path} nests JSON deeper than Python can read; fix or replace it."
        ) from None
    if not isinstance(data, dict):
        raise PosfeatError(f"{path} does not hold a JSON object; fix or replace it.")
    return data


def write_tensors(
    path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    """Write a safetensors file atomically (CPU copies of the tensors)."""
    with atomic_file(path) as tmp:
        try:
            save_file(
                {k: v.detach().contiguous().cpu() for k, v in tensors.items()},
                str(tmp),
                metadata=metadata,
            )
        except (
            SafetensorError
        ) as err:  # the Rust writer's io::Error (a full disk, ulimit -f), not an OSError
            raise PosfeatOSError(
                f"Writing {shorten(path)} failed "
                f"({_os_reason(str(err))}); free space on that disk or raise its size limit (ulimit "
                "-f), "
                "then run the command again."
            ) from None


def _os_code(text: str) -> int:
    found = re.search(r"(?:code: |os error )(\d+)", text)
    return int(found.group(1)) if found else 0


def _os_reason(text: str) -> str:
    code = _os_code(text)
    return (
        os.strerror(code)
        if code
        else shorten(text.splitlines()[0] if text else "an unknown error", 120)
    )


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write a JSON object atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
