"""Small helpers to turn array-likes into validated torch tensors."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .errors import PosfeatError


def as_tensor(x: Any, name: str, ndim: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Convert ``x`` (numpy array or torch tensor) to a float tensor of ``ndim`` dimensions.

    Raises a :class:`PosfeatError` naming ``name`` when the array has the wrong number of
    dimensions, a non-numeric dtype, or non-finite values.
    """
    if isinstance(x, np.ndarray):
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise PosfeatError(f"{name} has dtype {x.dtype}; pass a floating-point array.")
        t = torch.from_numpy(np.ascontiguousarray(x))
    elif isinstance(x, torch.Tensor):
        if x.dtype.is_complex or x.dtype == torch.bool:
            raise PosfeatError(f"{name} has dtype {x.dtype}; pass a floating-point tensor.")
        t = x.detach()
    else:
        try:
            t = torch.as_tensor(np.asarray(x, dtype=np.float64))
        except (TypeError, ValueError) as err:
            raise PosfeatError(f"{name} is not an array ({type(x).__name__}); pass a numpy array or torch tensor.") from err
    if t.ndim != ndim:
        raise PosfeatError(f"{name} has shape {tuple(t.shape)}; expected {ndim} dimension(s).")
    t = t.to(dtype)
    if t.numel() and not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise PosfeatError(f"{name} (shape {tuple(t.shape)}) has {bad} NaN or infinite value(s); fix the weights.")
    return t.contiguous()
