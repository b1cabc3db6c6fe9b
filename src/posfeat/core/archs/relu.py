"""ReLU: ``f = relu(pre)``, sae_lens's ``standard`` architecture (the original SAE, trained with an
L1 penalty)."""

from __future__ import annotations

from typing import ClassVar

from .base import Architecture, Tensor


class ReLU(Architecture):
    """``f = max(pre, 0)``: each feature alone, no parameters, no jump (the engine's closed forms
    hold)."""

    name = "relu"
    title = "ReLU"
    #: ``relu`` as an architecture is what configs before sae_lens 6 sometimes wrote; a cfg.json
    # with no architecture is read as the first pair (see
    # :func:`posfeat.core.archs.architecture_from_cfg`).
    SAELENS: ClassVar[tuple[tuple[str, str | None], ...]] = (("standard", "relu"), ("relu", "relu"))
    continuous = True
    trainable = True
    l1_penalty = True
    resamples_dead = True
    training_note = "L1 penalty"

    def activate(self, pre: Tensor) -> Tensor:
        import torch

        return torch.relu(pre)

    def activate_(self, f: Tensor) -> Tensor:
        return f.clamp_(min=0)
