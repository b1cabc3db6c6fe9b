"""JumpReLU: ``f = relu(pre) * (pre > threshold)``, one threshold per feature (sae_lens
``jumprelu``).

sae_lens saves the threshold as ``threshold`` (or, in older folders, ``log_threshold``); BatchTopK
and gated SAEs are read as the JumpReLU SAEs they equal (:mod:`.batchtopk`, :mod:`.gated`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from ..errors import PosfeatError
from .base import BASE_TENSORS, Architecture, ConfigLike, DType, Tensor


class JumpReLU(Architecture):
    """Each feature alone, but its activation jumps from 0 to ``threshold`` (when positive) where it
    starts to fire."""

    name = "jumprelu"
    title = "JumpReLU"
    SAELENS: ClassVar[tuple[tuple[str, str | None], ...]] = (("jumprelu", None),)
    SAELENS_TENSORS = ("threshold", "log_threshold")
    PARAMS = ("threshold",)
    PER_FEATURE = ("threshold",)

    def __init__(self, threshold: Any) -> None:
        self.threshold = threshold

    def checked(self, w_enc_shape: tuple[int, ...]) -> JumpReLU:
        from ..tensors import as_tensor

        threshold = as_tensor(self.threshold, "threshold", 1)
        if threshold.shape[0] != w_enc_shape[1]:
            raise PosfeatError(
                f"threshold has shape {tuple(threshold.shape)}; expected ({w_enc_shape[1]},), one "
                "per feature of "
                f"W_enc {w_enc_shape}."
            )
        return JumpReLU(threshold)

    def activate(self, pre: Tensor) -> Tensor:
        import torch

        return torch.relu(pre) * (pre > self.threshold.to(device=pre.device, dtype=pre.dtype))

    def cut(self, d_sae: int, dtype: DType, device: Any) -> Tensor:
        return self.threshold.to(device=device, dtype=dtype).clamp(min=0)

    @classmethod
    def needed_tensors(cls, names: Sequence[str], where: str) -> list[str]:
        """``threshold``, or ``log_threshold`` where a folder holds only that."""
        thr = (
            "threshold"
            if "threshold" in names
            else ("log_threshold" if "log_threshold" in names else None)
        )
        if thr is None:
            raise PosfeatError(
                f"{where} is a JumpReLU SAE without a threshold tensor; it must hold 'threshold'."
            )
        return [*BASE_TENSORS, thr] + (["scaling_factor"] if "scaling_factor" in names else [])

    @classmethod
    def from_saelens(
        cls, cfg: ConfigLike, t: dict[str, Tensor], params: dict[str, Any], notes: list[str]
    ) -> tuple[Architecture, dict[str, Tensor]]:
        return cls(t["threshold"] if "threshold" in t else t["log_threshold"].exp()), t
