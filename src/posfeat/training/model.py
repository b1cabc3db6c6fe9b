"""The SAE as it is trained: unit-norm decoder rows, inputs scaled to ``E||x||^2 = d_model``.

:class:`TrainingSAE` reuses its architecture's activation (:mod:`posfeat.core.archs`, one
implementation) and converts to and from :class:`posfeat.SAE` (which reads raw inputs):
:meth:`TrainingSAE.fold` folds the input scale and the decoder norms into the weights;
:meth:`TrainingSAE.load_sae` undoes it."""

from __future__ import annotations

import torch
from jaxtyping import Float

from ..core.archs import Architecture, from_params
from ..core.sae import SAE


class TrainingSAE(torch.nn.Module):
    """Parameters ``W_dec`` (unit rows), ``W_enc`` (initialised as ``W_dec.T``), ``b_enc``,
    ``b_dec``, on scaled inputs."""

    def __init__(
        self, d_in: int, d_sae: int, arch: Architecture | int | None, gen: torch.Generator
    ) -> None:
        """``arch``: the architecture trained (``Architecture.from_settings(cfg)``; an int is TopK's
        ``k``, None ReLU)."""
        super().__init__()
        W_dec = torch.randn(d_sae, d_in, generator=gen)
        W_dec /= W_dec.norm(dim=1, keepdim=True)
        self.W_dec = torch.nn.Parameter(W_dec)
        self.W_enc = torch.nn.Parameter(W_dec.T.clone())
        self.b_enc = torch.nn.Parameter(torch.zeros(d_sae))
        self.b_dec = torch.nn.Parameter(torch.zeros(d_in))
        self.arch = arch if isinstance(arch, Architecture) else from_params(k=arch)

    @property
    def k(self) -> int | None:
        """TopK's ``k``, else None."""
        return self.arch.params().get("k")

    def encode(self, x: Float[torch.Tensor, "batch d_in"]) -> Float[torch.Tensor, "batch d_sae"]:
        return self.arch.activate((x - self.b_dec) @ self.W_enc + self.b_enc)

    def forward(self, x: Float[torch.Tensor, "batch d_in"]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(f, x_hat)``."""
        f = self.encode(x)
        return f, f @ self.W_dec + self.b_dec

    def losses(
        self, x: Float[torch.Tensor, "batch d_in"], l1_coefficient: float
    ) -> dict[str, torch.Tensor]:
        """``loss = mse + l1_coefficient * l1`` for ReLU (L1 of activations weighted by decoder
        norms), ``mse`` for TopK (``arch.l1_penalty``)."""
        f, x_hat = self(x)
        mse = (x - x_hat).pow(2).sum(1).mean()
        if not self.arch.l1_penalty:
            return {"loss": mse, "mse": mse, "l1": torch.zeros(()), "f": f}
        l1 = (f * self.W_dec.norm(dim=1)).sum(1).mean()
        return {"loss": mse + l1_coefficient * l1, "mse": mse, "l1": l1, "f": f}

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True).clamp(min=1e-12))

    @torch.no_grad()
    def fold(self, scale: float) -> dict[str, torch.Tensor]:
        """Weights that read raw inputs ``x = scale * x'`` with unit-norm decoder rows (activations
        ``scale * norms * f'``)."""
        norms = self.W_dec.norm(dim=1).clamp(min=1e-12)
        return {
            "W_enc": (self.W_enc * norms[None, :]).contiguous(),
            "b_enc": self.b_enc * norms * scale,
            "W_dec": (self.W_dec / norms[:, None]).contiguous(),
            "b_dec": self.b_dec * scale,
        }

    @torch.no_grad()
    def load_sae(self, sae: SAE, scale: float) -> None:
        """Start from ``sae`` (the inverse of :meth:`fold`): unit decoder rows, inputs divided by
        ``scale``."""
        n = sae.W_dec.norm(dim=1).clamp(min=1e-12)
        self.W_dec.copy_(sae.W_dec / n[:, None])
        self.W_enc.copy_(sae.W_enc * n[None, :])
        self.b_enc.copy_(sae.b_enc * n / scale)
        self.b_dec.copy_(sae.b_dec / scale)
