"""TopK: keep each input's ``k`` largest pre-activations, ReLU them, zero the rest (sae_lens
``topk``).

Not separable: whether a feature fires depends on the other features' pre-activations, so the engine
enumerates the grid for it, and its firing counts are not monotone in the position part. sae_lens's
``rescale_acts_by_decoder_norm`` is folded into the weights at read (:func:`fold_decoder_norm`)."""

from __future__ import annotations

from typing import Any, ClassVar

from ..errors import PosfeatError, arg
from .base import Architecture, ConfigLike, Tensor


def fold_decoder_norm(t: dict[str, Tensor]) -> dict[str, Tensor]:
    """A TopK SAE with ``rescale_acts_by_decoder_norm``, as the plain TopK SAE it equals.

    sae_lens computes ``pre = ((x - b_dec) @ W_enc + b_enc) * n`` with ``n = ||W_dec[i]||``, keeps
    the k largest and decodes ``(f / n) @ W_dec + b_dec``; with ``W_enc * n``, ``b_enc * n`` and
    ``W_dec / n`` (what sae_lens's own ``fold_W_dec_norm`` does) a plain TopK SAE gives the same
    activations and reconstructions, which keeps the exact additive form ``pre = a[t] + b[p]``."""
    n = t["W_dec"].norm(dim=-1).double()
    return {
        **t,
        "W_enc": (t["W_enc"].double() * n).float(),
        "b_enc": (t["b_enc"].double() * n).float(),
        "W_dec": (t["W_dec"].double() / n.clamp(min=1e-30)[:, None]).float(),
    }


def _valid_k(k: Any, d_sae: int) -> bool:
    return not isinstance(k, bool) and isinstance(k, int) and 1 <= k <= d_sae


class TopK(Architecture):
    """The ``k`` largest pre-activations of each input, ReLU'd; trained without an L1 penalty (``k``
    sets the sparsity)."""

    name = "topk"
    title = "TopK"
    #: before sae_lens 6 a TopK SAE was a ``standard`` one with ``activation_fn`` ``topk`` (its k in
    # ``activation_fn_kwargs``).
    SAELENS: ClassVar[tuple[tuple[str, str | None], ...]] = (("topk", None), ("standard", "topk"))
    PARAMS = ("k",)
    separable = False
    trainable = True

    def __init__(self, k: int) -> None:
        self.k = k

    def checked(self, w_enc_shape: tuple[int, ...]) -> TopK:
        if not _valid_k(self.k, w_enc_shape[1]):
            raise PosfeatError(
                f"k is {self.k!r}; it must be an integer between 1 and d_sae = {w_enc_shape[1]}."
            )
        return self

    def activate(self, pre: Tensor) -> Tensor:
        import torch

        top = torch.topk(pre, k=self.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, top.indices, torch.relu(top.values))

    @classmethod
    def read_cfg(cls, cfg: ConfigLike, where: str) -> dict[str, Any]:
        """``k``, at the top level or (before sae_lens 6) in ``activation_fn_kwargs``."""
        kwargs = cfg.get_dict("activation_fn_kwargs")
        k = cfg.get_int("k", default=kwargs.get("k"), minimum=1)
        if k is None:
            raise PosfeatError(f'{where} is a TopK SAE but its cfg.json gives no k; add "k" to it.')
        return {"k": k}

    @classmethod
    def from_saelens(
        cls, cfg: ConfigLike, t: dict[str, Tensor], params: dict[str, Any], notes: list[str]
    ) -> tuple[Architecture, dict[str, Tensor]]:
        if cfg.get_bool("rescale_acts_by_decoder_norm", default=False):
            t = fold_decoder_norm(t)
            notes.append(
                "rescale_acts_by_decoder_norm folded into the weights (W_enc*n, b_enc*n, W_dec/n)"
            )
        return cls(**params), t

    def cfg_fields(self) -> dict[str, Any]:
        return {"k": self.k}

    @classmethod
    def check_settings(cls, settings: Any) -> None:
        if not _valid_k(settings.k, settings.d_sae):
            raise PosfeatError(
                f"{arg('k', settings.k)} is invalid for a TopK SAE of width {settings.d_sae}; give "
                "1 <= k <= d_sae."
            )
