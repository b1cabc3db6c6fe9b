"""Gated (sae_lens ``gated``): read as the JumpReLU SAE it equals, so no posfeat SAE is of this
architecture."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from .base import Architecture, ConfigLike, Tensor
from .jumprelu import JumpReLU


def gated_as_jumprelu(t: dict[str, Tensor]) -> dict[str, Tensor]:
    """A gated SAE as the JumpReLU SAE it equals.

    sae_lens: ``s = (x - b_dec) @ W_enc``; ``f = [s + b_gate > 0] * relu(s * exp(r_mag) + b_mag)``.
    With ``W_enc' = W_enc * exp(r_mag)`` (computed as sae_lens computes it), ``b_enc' = b_mag`` and
    ``threshold = b_mag - exp(r_mag) * b_gate``, the gate ``s > -b_gate`` is ``pre' > threshold``
    and ``f = relu(pre') * [pre' > threshold]``: a JumpReLU SAE, with the same activations."""
    e = t["r_mag"].exp()
    thr = (t["b_mag"].double() - e.double() * t["b_gate"].double()).float()
    return {
        "W_enc": t["W_enc"] * e,
        "W_dec": t["W_dec"],
        "b_enc": t["b_mag"],
        "b_dec": t["b_dec"],
        "threshold": thr,
    }


class Gated(Architecture):
    """sae_lens's gated SAE: a magnitude path and a gate that share ``W_enc``; read as
    :class:`JumpReLU`."""

    name = "gated"
    title = "gated"
    SAELENS: ClassVar[tuple[tuple[str, str | None], ...]] = (("gated", None),)
    SAELENS_TENSORS = ("b_gate", "r_mag", "b_mag")
    native = False

    @classmethod
    def needed_tensors(cls, names: Sequence[str], where: str) -> list[str]:
        """No ``b_enc``: the gate and the magnitude path have biases of their own."""
        return ["W_enc", "W_dec", "b_dec", "b_gate", "r_mag", "b_mag"]

    @classmethod
    def from_saelens(
        cls, cfg: ConfigLike, t: dict[str, Tensor], params: dict[str, Any], notes: list[str]
    ) -> tuple[Architecture, dict[str, Tensor]]:
        t = gated_as_jumprelu(t)
        notes.append(
            "gated SAE read as the JumpReLU SAE it equals (W_enc*exp(r_mag), b_enc=b_mag, "
            "threshold=b_mag-exp(r_mag)*b_gate)"
        )
        return JumpReLU(t["threshold"]), t
