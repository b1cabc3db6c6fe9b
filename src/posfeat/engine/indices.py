"""Position and token sets, the same everywhere in the API.

``positions`` and ``tokens`` are ``None`` (all of them), an int ``N`` (a count: ``0..N-1``, as
``--positions N`` and ``analyze(positions=N)``), a ``range``, a ``slice`` or a sequence (list, numpy
array, tensor) of distinct whole numbers in increasing order; anything else raises a
:class:`~posfeat.core.errors.PosfeatError` (a :class:`~posfeat.core.errors.PosfeatTypeError` for a
value of the wrong type)."""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any, TypeAlias

import numpy as np
import torch

from ..core.embeddings import Embeddings
from ..core.errors import PosfeatError, PosfeatTypeError, arg
from ..core.sae import SAE
from ..core.tensors import require_data
from ..io.paths import shorten

IndexSet: TypeAlias = (
    "int | np.integer | Sequence[int] | range | slice | np.ndarray | torch.Tensor | None"
)
"""What ``positions`` and ``tokens`` may be (see module docstring)."""


def resolve_index(values: Any, n: int, what: str) -> torch.Tensor:
    """``values`` (see module docstring) as an int64 tensor of indices into ``range(n)``,
    checked."""
    one = what[:-1] if what.endswith("s") else what
    shown = arg(what, shorten(repr(values)))
    if values is None:
        return torch.arange(n)
    if isinstance(values, (bool, np.bool_, str, bytes)) or (
        isinstance(values, torch.Tensor) and values.dtype == torch.bool
    ):
        raise PosfeatTypeError(
            f"{shown} is not a count or a set of {what}; give an int N (0..N-1), a range or a list "
            "of integers."
        )
    if isinstance(values, torch.Tensor | np.ndarray) and values.ndim == 0:
        values = values.item()
    if isinstance(values, numbers.Real) and not isinstance(values, numbers.Integral):
        raise PosfeatTypeError(
            f"{shown} is not a whole number; give a count N (0..N-1) as an int, a range or a list "
            "of integers."
        )
    if isinstance(values, numbers.Integral):
        count = int(values)
        if not 1 <= count <= n:
            raise PosfeatError(
                f"{shown} is a count outside 1..{n} (an int N means {what} 0..N-1, and the model "
                f"has {n}); "
                f"give a count within it, or a list of {what}."
            )
        return torch.arange(count)
    if isinstance(values, slice):
        values = range(*values.indices(n))
    if isinstance(
        values, range
    ):  # checked by its ends, never listed first: range(10**9) costs nothing to refuse
        if len(values) == 0:
            raise PosfeatError(f"{shown} is empty; give at least one {one}.")
        lo, hi = min(values[0], values[-1]), max(values[0], values[-1])
        if lo < 0 or hi >= n:
            raise PosfeatError(
                f"{shown}: {what} {lo}..{hi} fall outside 0..{n - 1}, the model's {n} {what}; give "
                f"{what} within it."
            )
    try:
        if isinstance(values, torch.Tensor):
            values = values.detach().cpu().numpy()
        arr = np.asarray(list(values) if isinstance(values, range) else values)
    except (TypeError, ValueError, OverflowError, RuntimeError):
        raise PosfeatTypeError(
            f"{shown} is not a set of {what}; give an int N (0..N-1), a range or a list of "
            "integers."
        ) from None
    if arr.size and arr.dtype.kind not in "iu":
        whole = (
            arr.dtype.kind == "f"
            and bool(np.all(np.isfinite(arr)))
            and bool(np.all(arr == np.round(arr)))
        )
        if not whole:
            raise PosfeatTypeError(
                f"{shown} holds values that are not whole numbers; give {what} as integers."
            )
    if arr.ndim != 1:
        raise PosfeatError(f"{shown} has shape {arr.shape}; give one flat list of {what}.")
    if arr.size == 0:
        raise PosfeatError(f"{shown} is empty; give at least one {one}.")
    lo, hi = arr.min(), arr.max()
    if lo < 0 or hi >= n:
        raise PosfeatError(
            f"{shown}: {what} {lo}..{hi} fall outside 0..{n - 1}, the model's {n} {what}; give "
            f"{what} within it."
        )
    idx = torch.as_tensor(arr.astype(np.int64))
    if idx.numel() > 1 and not bool((idx[1:] > idx[:-1]).all()):
        raise PosfeatError(
            f"{shown} is not in increasing order without repeats; give sorted(set({what}))."
        )
    return idx


def check_whole(value: Any, name: str, low: int = 0) -> int:
    """An int argument (``top_k_tokens``, ``feature_chunk``, ...) checked to be a whole number of at
    least ``low``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise PosfeatTypeError(
            f"{arg(name, shorten(repr(value)))} is not a whole number; give an int of at least "
            f"{low}."
        )
    if value < low:
        raise PosfeatError(f"{arg(name, value)} is below {low}; give an int of at least {low}.")
    return int(value)


def check_dtype(dtype: Any, name: str = "dtype") -> torch.dtype:
    """A floating-point torch dtype (``torch.float32``, ``torch.float64``, ...)."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise PosfeatTypeError(
            f"{arg(name, shorten(repr(dtype)))} is not a floating-point torch dtype; give e.g. "
            "torch.float32."
        )
    return dtype


def check_pair(emb: Embeddings, sae: SAE) -> torch.device:
    """The pair's one device; a clear error when the widths or the devices differ."""
    if emb.d_model != sae.d_in:
        raise PosfeatError(
            f"The embeddings have d_model {emb.d_model} (W_E {tuple(emb.W_E.shape)}) but the SAE "
            "reads "
            f"d_in {sae.d_in} (W_enc {tuple(sae.W_enc.shape)}); use an SAE trained on this model."
        )
    if emb.device != sae.device:
        raise PosfeatError(
            f"The embeddings are on {emb.device} but the SAE is on {sae.device}; put both on one "
            "device "
            "(emb.to(device), sae.to(device)) or load them with load_pair(..., device=...)."
        )
    require_data(sae.device, "The embeddings and the SAE")
    return sae.device
