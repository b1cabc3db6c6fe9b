"""Reading and writing weight files: safetensors only, never pickle."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .errors import PosfeatError

_PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"}


def _refuse_pickle(path: Path) -> None:
    head = path.read_bytes()[:4] if path.is_file() else b""
    if path.suffix in _PICKLE_SUFFIXES or head[:1] == b"\x80" or head[:2] == b"PK":
        raise PosfeatError(
            f"{path} is a pickle/torch.save file; posfeat never unpickles weights: convert it to safetensors "
            "(safetensors.torch.save_file) and pass that instead."
        )


def read_tensors(path: str | Path, names: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
    """Read tensors ``names`` (default all) from a safetensors file, with one-sentence errors."""
    path = Path(path)
    if not path.is_file():
        raise PosfeatError(f"Weight file {path} does not exist; check the path.")
    _refuse_pickle(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
            wanted = keys if names is None else list(names)
            missing = [n for n in wanted if n not in keys]
            if missing:
                raise PosfeatError(f"{path} has no tensor(s) {', '.join(missing)} (it holds {', '.join(keys[:8])}); pass the right file.")
            return {n: f.get_tensor(n) for n in wanted}
    except PosfeatError:
        raise
    except Exception as err:
        raise PosfeatError(
            f"{path} is not a readable safetensors file ({str(err).splitlines()[0][:120]}); it may be truncated: download it again."
        ) from None


def tensor_names(path: str | Path) -> list[str]:
    """Names of the tensors in a safetensors file (reads only its header)."""
    path = Path(path)
    _refuse_pickle(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            return list(f.keys())
    except Exception as err:
        raise PosfeatError(
            f"{path} is not a readable safetensors file ({str(err).splitlines()[0][:120]}); it may be truncated: download it again."
        ) from None


def read_json(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise PosfeatError(f"{path} does not exist; check the folder.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PosfeatError(f"{path} is not valid JSON ({err}); fix or replace it.") from None
    if not isinstance(data, dict):
        raise PosfeatError(f"{path} does not hold a JSON object; fix or replace it.")
    return data


def _umask_mode() -> int:
    """Permissions a plain ``open()`` would give a new file (mkstemp makes files 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_tensors_atomic(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write a safetensors file to a temporary name beside ``path`` and rename it into place."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json_atomic(path: str | Path, data: dict) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".json", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=False, default=str)
        f.write("\n")
    os.chmod(tmp, _umask_mode())
    os.replace(tmp, path)
