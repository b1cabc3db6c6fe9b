"""BatchTopK (sae_lens ``batchtopk``): a training architecture. sae_lens's ``save_inference_model``
writes the JumpReLU SAE it becomes (read as such); a training checkpoint is refused, naming that way
out."""

from __future__ import annotations

from typing import ClassVar

from .base import Architecture
from .jumprelu import JumpReLU


class BatchTopK(Architecture):
    """The k largest activations over a batch while training; saved for inference as
    :class:`JumpReLU`."""

    name = "batchtopk"
    title = "BatchTopK"
    SAELENS: ClassVar[tuple[tuple[str, str | None], ...]] = (("batchtopk", None),)
    native = False
    saved_as = JumpReLU
