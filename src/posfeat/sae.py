"""The sparse autoencoder data model: ReLU, JumpReLU and TopK, with SAELens semantics.

Shapes follow SAELens: ``W_enc [d_in, d_sae]``, ``W_dec [d_sae, d_in]``, ``b_enc [d_sae]``,
``b_dec [d_in]``. The forward pass is

    pre  = (x - b_dec) @ W_enc + b_enc        (``- b_dec`` only when apply_b_dec_to_input)
    f    = act(pre)
    x̂    = f @ W_dec + b_dec

with ``act`` = ReLU (SAELens "standard"), JumpReLU ``relu(pre) * (pre > threshold)``, or TopK
(keep the k largest pre-activations, ReLU them, zero the rest).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ._tensors import as_tensor
from .errors import PosfeatError

ARCHITECTURES = ("relu", "jumprelu", "topk")


@dataclass(eq=False)
class SAE:
    """A sparse autoencoder on the layer-0 residual stream.

    Attributes:
        W_enc: ``Float[Tensor, "d_model d_sae"]``
        W_dec: ``Float[Tensor, "d_sae d_model"]``
        b_enc: ``Float[Tensor, "d_sae"]``
        b_dec: ``Float[Tensor, "d_model"]``
        threshold: ``Float[Tensor, "d_sae"]`` for JumpReLU, else None.
        k: number of active features for TopK, else None.
        apply_b_dec_to_input: subtract ``b_dec`` before encoding (SAELens default True).
        context_size: the context length the SAE was trained on, when known.
        hook_name: the hook point it reads (``blocks.0.hook_resid_pre`` for layer 0).
        name: a label used in every result (release/id or folder).
        cfg: the raw configuration it was loaded from, kept for the record.
    """

    W_enc: torch.Tensor
    W_dec: torch.Tensor
    b_enc: torch.Tensor
    b_dec: torch.Tensor
    threshold: torch.Tensor | None = None
    k: int | None = None
    apply_b_dec_to_input: bool = True
    context_size: int | None = None
    hook_name: str | None = None
    name: str = ""
    cfg: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_arrays(
        cls,
        W_enc: Any,
        W_dec: Any,
        b_enc: Any,
        b_dec: Any,
        *,
        threshold: Any = None,
        k: int | None = None,
        apply_b_dec_to_input: bool = True,
        context_size: int | None = None,
        hook_name: str | None = None,
        name: str = "",
        cfg: dict[str, Any] | None = None,
    ) -> SAE:
        """Build and validate an SAE from numpy arrays or torch tensors (stored as float32)."""
        W_enc = as_tensor(W_enc, "W_enc", 2)
        W_dec = as_tensor(W_dec, "W_dec", 2)
        b_enc = as_tensor(b_enc, "b_enc", 1)
        b_dec = as_tensor(b_dec, "b_dec", 1)
        d_in, d_sae = W_enc.shape
        if d_sae == 0 or d_in == 0:
            raise PosfeatError(f"W_enc has shape {tuple(W_enc.shape)}; d_model and d_sae must be positive.")
        if tuple(W_dec.shape) != (d_sae, d_in):
            raise PosfeatError(
                f"W_dec has shape {tuple(W_dec.shape)} but W_enc {tuple(W_enc.shape)} needs W_dec of shape {(d_sae, d_in)}."
            )
        if b_enc.shape[0] != d_sae:
            raise PosfeatError(f"b_enc has shape {tuple(b_enc.shape)}; expected ({d_sae},) to match W_enc {tuple(W_enc.shape)}.")
        if b_dec.shape[0] != d_in:
            raise PosfeatError(f"b_dec has shape {tuple(b_dec.shape)}; expected ({d_in},) to match W_enc {tuple(W_enc.shape)}.")
        if threshold is not None and k is not None:
            raise PosfeatError("Pass either threshold (JumpReLU) or k (TopK), not both.")
        if threshold is not None:
            threshold = as_tensor(threshold, "threshold", 1)
            if threshold.shape[0] != d_sae:
                raise PosfeatError(
                    f"threshold has shape {tuple(threshold.shape)}; expected ({d_sae},), one per feature of W_enc {tuple(W_enc.shape)}."
                )
        if k is not None:
            k = int(k)
            if not 1 <= k <= d_sae:
                raise PosfeatError(f"k is {k}; it must be between 1 and d_sae = {d_sae}.")
        if context_size is not None and int(context_size) <= 0:
            raise PosfeatError(f"context_size is {context_size}; it must be positive.")
        return cls(
            W_enc=W_enc,
            W_dec=W_dec,
            b_enc=b_enc,
            b_dec=b_dec,
            threshold=threshold,
            k=k,
            apply_b_dec_to_input=bool(apply_b_dec_to_input),
            context_size=None if context_size is None else int(context_size),
            hook_name=hook_name,
            name=name,
            cfg=dict(cfg or {}),
        )

    # ------------------------------------------------------------------ properties
    @property
    def d_sae(self) -> int:
        return int(self.W_enc.shape[1])

    @property
    def d_in(self) -> int:
        return int(self.W_enc.shape[0])

    @property
    def architecture(self) -> str:
        """``"relu"``, ``"jumprelu"`` or ``"topk"``."""
        if self.k is not None:
            return "topk"
        if self.threshold is not None:
            return "jumprelu"
        return "relu"

    @property
    def separable(self) -> bool:
        """True when the activation acts on each feature separately (ReLU, JumpReLU)."""
        return self.k is None

    def cut(self, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> torch.Tensor:
        """``Float[Tensor, "d_sae"]``: a feature fires (activation > 0) iff ``pre > cut``.

        ReLU: 0; JumpReLU: ``max(threshold, 0)``; when firing, the activation equals ``pre``.
        """
        if self.threshold is None:
            return torch.zeros(self.d_sae, dtype=dtype, device=device)
        return self.threshold.to(device=device, dtype=dtype).clamp(min=0)

    # ------------------------------------------------------------------ forward pass
    def _w(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return t.to(device=like.device, dtype=like.dtype)

    def encode_pre(self, x: torch.Tensor) -> torch.Tensor:
        """``Float[Tensor, "... d_sae"]`` pre-activations of ``x: Float[Tensor, "... d_model"]``."""
        if self.apply_b_dec_to_input:
            x = x - self._w(self.b_dec, x)
        return x @ self._w(self.W_enc, x) + self._w(self.b_enc, x)

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        """Apply the architecture's activation to pre-activations ``[..., d_sae]``."""
        if self.k is not None:
            top = torch.topk(pre, k=self.k, dim=-1)
            return torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))
        if self.threshold is not None:
            return torch.relu(pre) * (pre > self._w(self.threshold, pre))
        return torch.relu(pre)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``Float[Tensor, "... d_sae"]`` feature activations (post-activation)."""
        return self.activate(self.encode_pre(x))

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """``Float[Tensor, "... d_model"]`` reconstruction of activations ``f: [..., d_sae]``."""
        return f @ self._w(self.W_dec, f) + self._w(self.b_dec, f)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``Float[Tensor, "... d_model"]`` the SAE's reconstruction of ``x``."""
        return self.decode(self.encode(x))

    __call__ = forward

    def subset(self, features: slice | torch.Tensor | list[int]) -> SAE:
        """An SAE of only ``features`` (same activations for them: ReLU and JumpReLU act per feature).

        Refused for TopK, whose activation couples features.
        """
        if not self.separable:
            raise PosfeatError("A TopK SAE cannot be restricted to a subset of features: its activation couples them.")
        idx = features if isinstance(features, slice) else torch.as_tensor(features, dtype=torch.long)
        return SAE(self.W_enc[:, idx], self.W_dec[idx], self.b_enc[idx], self.b_dec, None if self.threshold is None else self.threshold[idx],
                   None, self.apply_b_dec_to_input, self.context_size, self.hook_name, self.name, dict(self.cfg))

    def to(self, device: str | torch.device) -> SAE:
        """A copy on ``device``."""
        mv = lambda t: None if t is None else t.to(device)  # noqa: E731
        return SAE(
            mv(self.W_enc), mv(self.W_dec), mv(self.b_enc), mv(self.b_dec), mv(self.threshold), self.k,
            self.apply_b_dec_to_input, self.context_size, self.hook_name, self.name, dict(self.cfg),
        )

    def __repr__(self) -> str:
        return (
            f"SAE(name={self.name!r}, architecture={self.architecture!r}, d_in={self.d_in}, d_sae={self.d_sae}, "
            f"context_size={self.context_size}, hook_name={self.hook_name!r})"
        )
