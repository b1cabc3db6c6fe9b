"""Tensors in, numpy out: validation of array-likes, devices, and the one conversion at the public
boundary."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .devices import DEVICES  # noqa: F401  (re-exported)
from .errors import PosfeatError, arg


def as_tensor(x: Any, name: str, ndim: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Convert ``x`` (numpy array or torch tensor) to a float tensor of ``ndim`` dimensions.

    A torch tensor keeps its device. Raises a :class:`PosfeatError` naming ``name`` when the array
    has the wrong number of dimensions, a non-numeric or boolean dtype, or non-finite values.
    """
    if isinstance(x, np.ndarray):
        if x.dtype == np.bool_ or not (
            np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)
        ):
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
            raise PosfeatError(
                f"{name} is not an array ({type(x).__name__}); pass a numpy array or torch tensor."
            ) from err
    if t.ndim != ndim:
        raise PosfeatError(f"{name} has shape {tuple(t.shape)}; expected {ndim} dimension(s).")
    t = t.to(dtype)
    if t.numel() and t.device.type != "meta" and not all_finite(t):
        bad = int((~torch.isfinite(t)).sum())
        raise PosfeatError(
            f"{name} (shape {tuple(t.shape)}) has {bad} NaN or infinite value(s); fix the weights."
        )
    return t.contiguous()


def all_finite(t: torch.Tensor) -> bool:
    """Whether every value of ``t`` is finite: first by its sum (one pass, nothing allocated), which
    is finite only then (an infinity or a NaN makes it infinite or NaN), then, where the sum is not
    (those, or finite values whose sum overflows), value by value."""
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (CUDA when PyTorch sees a GPU, else CPU), ``"cpu"`` or ``"cuda[:i]"``, checked to
    exist."""
    spec = (
        str(device)
        if isinstance(device, torch.device)
        else ("auto" if device is None else str(device).strip().lower())
    )
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise PosfeatError(
                f"{arg('device', spec)} was asked for but PyTorch sees no CUDA GPU on this machine; "
                f"use {arg('device', 'cpu')} or {arg('device', 'auto')}."
            )
        try:
            dev = torch.device(spec)
        except RuntimeError:
            raise PosfeatError(
                f"{arg('device', spec)} is not a device name; use cuda or cuda:0."
            ) from None
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise PosfeatError(
                f"{arg('device', spec)} does not exist: PyTorch sees {torch.cuda.device_count()} "
                "GPU(s)."
            )
        return dev
    if spec == "meta":  # shape-only tensors; used by tests of device handling
        return torch.device("meta")
    raise PosfeatError(f"{arg('device', spec)} is not a device; use auto, cpu or cuda.")


def require_data(device: torch.device, what: str) -> None:
    """Refuse tensors on PyTorch's ``meta`` device (shapes without values), which nothing can
    compute with."""
    if device.type == "meta":
        raise PosfeatError(
            f"{what} are on the meta device (shapes without values), so there is nothing to compute "
            "with; "
            f"load the real weights, or move them with .to('cpu') after loading them."
        )


def same_device(*tensors: torch.Tensor | None) -> torch.device:
    """The one device all ``tensors`` live on; a clear error when they are spread over several."""
    devices = {t.device for t in tensors if t is not None}
    if len(devices) > 1:
        names = ", ".join(sorted(str(d) for d in devices))
        raise PosfeatError(
            f"The tensors are on different devices ({names}); move them to one device with "
            ".to(device) first."
        )
    return next(iter(devices)) if devices else torch.device("cpu")


def to_numpy(t: torch.Tensor, dtype: Any = None) -> np.ndarray:
    """A CPU numpy copy of ``t`` (the conversion at the public boundary: results are always
    numpy)."""
    out = t.detach().cpu().numpy()
    return out if dtype is None else out.astype(dtype, copy=False)
