"""The sparse autoencoder data model: ReLU, JumpReLU and TopK, with SAELens semantics.

Shapes follow SAELens: ``W_enc [d_in, d_sae]``, ``W_dec [d_sae, d_in]``, ``b_enc [d_sae]``,
``b_dec [d_in]``. The forward pass is

    pre  = (x - b_dec) @ W_enc + b_enc        (``- b_dec`` only when apply_b_dec_to_input)
    f    = act(pre)
    x̂    = f @ W_dec + b_dec

with ``act`` = ReLU (SAELens "standard"), JumpReLU ``relu(pre) * (pre > threshold)``, or TopK
(keep the k largest pre-activations, ReLU them, zero the rest): the SAE's architecture object,
``sae.arch``, one of :data:`posfeat.core.archs.ARCHITECTURES` (its module holds the activation, the
one implementation, shared by the trainer).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float

from .archs import Architecture, from_params
from .errors import PosfeatError
from .tensors import as_tensor, resolve_device, same_device

#: posfeat's own hook name for the plain embedding sum before any LayerNorm (BERT-style models).
POSFEAT_HOOK = "hook_embed+hook_pos_embed"
#: Hook names that read the layer-0 embedding sum.
LAYER0_HOOKS = frozenset(
    {"blocks.0.hook_resid_pre", POSFEAT_HOOK, "hook_embed + hook_pos_embed", "embed+pos"}
)


@dataclass(frozen=True)
class SAEMeta:
    """What an SAE was trained on, normalised once at load from whatever config format it came in.

    Attributes:
        hook_name: the hook it reads (``blocks.0.hook_resid_pre`` at layer 0), or None if unknown.
        context_size: the context length it was trained on, or None if unknown.
        model_name: the model it was trained on, as its config names it.
        dataset: the training data, as its config names it.
        neuronpedia_id: Neuronpedia's id for it (``gpt2-small/0-res-jb``), or None.
        centered: True when it was trained on centred writing weights (SAELens
            ``center_writing_weights``).
        release: the SAELens release it was loaded as, or None.
        sae_id: the SAELens id it was loaded as, or None.
        folder: the folder it was loaded from, or None.
    """

    hook_name: str | None = None
    context_size: int | None = None
    model_name: str | None = None
    dataset: str | None = None
    neuronpedia_id: str | None = None
    centered: bool = False
    release: str | None = None
    sae_id: str | None = None
    folder: str | None = None


def activation(
    pre: Float[torch.Tensor, "... d_sae"],
    k: int | None = None,
    threshold: Float[torch.Tensor, " d_sae"] | None = None,
) -> Float[torch.Tensor, "... d_sae"]:
    """ReLU; JumpReLU when ``threshold`` is given; TopK when ``k`` is given (see module
    docstring)."""
    return from_params(threshold=threshold, k=k).activate(pre)


class SAE:
    """A sparse autoencoder on the layer-0 residual stream, on one device.

    Attributes:
        W_enc: ``Float[Tensor, "d_model d_sae"]``
        W_dec: ``Float[Tensor, "d_sae d_model"]``
        b_enc: ``Float[Tensor, "d_sae"]``
        b_dec: ``Float[Tensor, "d_model"]``
        arch: the architecture (:class:`posfeat.core.archs.Architecture`) with its parameters:
            ``ReLU()``, ``JumpReLU(threshold)`` or ``TopK(k)``; the engine, the folders and the
            trainer ask it what they need.
        threshold: ``Float[Tensor, "d_sae"]`` for JumpReLU, else None (``arch``'s).
        k: number of active features for TopK, else None (``arch``'s).
        apply_b_dec_to_input: subtract ``b_dec`` before encoding (SAELens default True).
        meta: :class:`SAEMeta` (hook, context, model, dataset, Neuronpedia id, ...).
        name: a label used in every result (release/id or folder).
        cfg: the raw configuration it was loaded from, kept for the record.
    """

    def __init__(
        self,
        W_enc: Float[torch.Tensor, "d_in d_sae"],
        W_dec: Float[torch.Tensor, "d_sae d_in"],
        b_enc: Float[torch.Tensor, " d_sae"],
        b_dec: Float[torch.Tensor, " d_in"],
        threshold: Float[torch.Tensor, " d_sae"] | None = None,
        k: int | None = None,
        apply_b_dec_to_input: bool = True,
        meta: SAEMeta | None = None,
        name: str = "",
        cfg: dict[str, Any] | None = None,
    ) -> None:
        """Unchecked construction from tensors already validated; use :meth:`from_arrays`."""
        self.W_enc, self.W_dec, self.b_enc, self.b_dec = W_enc, W_dec, b_enc, b_dec
        self.arch: Architecture = from_params(threshold=threshold, k=k)
        self.apply_b_dec_to_input = bool(apply_b_dec_to_input)
        self.meta = meta or SAEMeta()
        self.name = name
        self.cfg: dict[str, Any] = dict(cfg or {})

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
        meta: SAEMeta | None = None,
    ) -> SAE:
        """Build and validate an SAE from numpy arrays or torch tensors (stored as float32, on their
        device)."""
        W_enc, W_dec = as_tensor(W_enc, "W_enc", 2), as_tensor(W_dec, "W_dec", 2)
        b_enc, b_dec = as_tensor(b_enc, "b_enc", 1), as_tensor(b_dec, "b_dec", 1)
        d_in, d_sae = W_enc.shape
        if d_sae == 0 or d_in == 0:
            raise PosfeatError(
                f"W_enc has shape {tuple(W_enc.shape)}; d_model and d_sae must be positive."
            )
        if tuple(W_dec.shape) != (d_sae, d_in):
            raise PosfeatError(
                f"W_dec has shape {tuple(W_dec.shape)} but W_enc {tuple(W_enc.shape)} needs W_dec "
                f"of shape {(d_sae, d_in)}."
            )
        if b_enc.shape[0] != d_sae:
            raise PosfeatError(
                f"b_enc has shape {tuple(b_enc.shape)}; expected ({d_sae},) to match W_enc "
                f"{tuple(W_enc.shape)}."
            )
        if b_dec.shape[0] != d_in:
            raise PosfeatError(
                f"b_dec has shape {tuple(b_dec.shape)}; expected ({d_in},) to match W_enc "
                f"{tuple(W_enc.shape)}."
            )
        arch = from_params(threshold=threshold, k=k).checked(tuple(W_enc.shape))
        if context_size is not None and (
            isinstance(context_size, bool) or not isinstance(context_size, int) or context_size <= 0
        ):
            raise PosfeatError(f"context_size is {context_size!r}; it must be a positive integer.")
        same_device(W_enc, W_dec, b_enc, b_dec, *arch.tensors().values())
        base = meta or SAEMeta()
        meta = dataclasses.replace(
            base,
            context_size=base.context_size if context_size is None else context_size,
            hook_name=base.hook_name if hook_name is None else hook_name,
        )
        return cls(
            W_enc,
            W_dec,
            b_enc,
            b_dec,
            **arch.params(),
            apply_b_dec_to_input=apply_b_dec_to_input,
            meta=meta,
            name=name,
            cfg=cfg,
        )

    # ------------------------------------------------------------------ properties
    @property
    def d_sae(self) -> int:
        return int(self.W_enc.shape[1])

    @property
    def d_in(self) -> int:
        return int(self.W_enc.shape[0])

    @property
    def device(self) -> torch.device:
        """Where the tensors live; engine and analyses compute there."""
        return self.W_enc.device

    @property
    def context_size(self) -> int | None:
        """The context length it was trained on (``meta.context_size``)."""
        return self.meta.context_size

    @context_size.setter
    def context_size(self, value: int | None) -> None:
        self.meta = dataclasses.replace(self.meta, context_size=value)

    @property
    def hook_name(self) -> str | None:
        """The hook it reads (``meta.hook_name``)."""
        return self.meta.hook_name

    @hook_name.setter
    def hook_name(self, value: str | None) -> None:
        self.meta = dataclasses.replace(self.meta, hook_name=value)

    @property
    def threshold(self) -> Float[torch.Tensor, " d_sae"] | None:
        """The per-feature thresholds of a JumpReLU SAE, else None."""
        return self.arch.params().get("threshold")

    @property
    def k(self) -> int | None:
        """The number of active features of a TopK SAE, else None."""
        return self.arch.params().get("k")

    @property
    def architecture(self) -> str:
        """``"relu"``, ``"jumprelu"`` or ``"topk"`` (``arch.name``)."""
        return self.arch.name

    @property
    def separable(self) -> bool:
        """True when the activation acts on each feature separately (ReLU, JumpReLU)."""
        return self.arch.separable

    def cut(
        self, dtype: torch.dtype = torch.float32, device: str | torch.device | None = None
    ) -> Float[torch.Tensor, " d_sae"]:
        """A feature fires (activation > 0) iff ``pre > cut``: ReLU 0, JumpReLU ``max(threshold,
        0)``; firing, it equals ``pre``."""
        return self.arch.cut(self.d_sae, dtype, self.device if device is None else device)

    # ------------------------------------------------------------------ forward pass
    def _w(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return t.to(device=like.device, dtype=like.dtype)

    def encode_pre(self, x: Float[torch.Tensor, "... d_in"]) -> Float[torch.Tensor, "... d_sae"]:
        """Pre-activations of inputs ``x``."""
        if self.apply_b_dec_to_input:
            x = x - self._w(self.b_dec, x)
        return x @ self._w(self.W_enc, x) + self._w(self.b_enc, x)

    def activate(self, pre: Float[torch.Tensor, "... d_sae"]) -> Float[torch.Tensor, "... d_sae"]:
        """Apply the architecture's activation to pre-activations."""
        return self.arch.activate(pre)

    def encode(self, x: Float[torch.Tensor, "... d_in"]) -> Float[torch.Tensor, "... d_sae"]:
        """Feature activations (post-activation) of inputs ``x``."""
        return self.activate(self.encode_pre(x))

    def decode(self, f: Float[torch.Tensor, "... d_sae"]) -> Float[torch.Tensor, "... d_in"]:
        """Reconstruction of activations ``f``."""
        return f @ self._w(self.W_dec, f) + self._w(self.b_dec, f)

    def forward(self, x: Float[torch.Tensor, "... d_in"]) -> Float[torch.Tensor, "... d_in"]:
        """The SAE's reconstruction of ``x``."""
        return self.decode(self.encode(x))

    __call__ = forward

    def _replace(self, arch: Architecture | None = None, **changes: Any) -> SAE:
        arch = self.arch if arch is None else arch
        fields = {
            "W_enc": self.W_enc,
            "W_dec": self.W_dec,
            "b_enc": self.b_enc,
            "b_dec": self.b_dec,
            **arch.params(),
            "apply_b_dec_to_input": self.apply_b_dec_to_input,
            "meta": self.meta,
            "name": self.name,
            "cfg": self.cfg,
        }
        return SAE(**{**fields, **changes})

    def subset(self, features: slice | torch.Tensor | list[int]) -> SAE:
        """An SAE of only ``features`` (same activations for them: ReLU and JumpReLU act per
        feature).

        Refused for TopK, whose activation couples features.
        """
        if not self.separable:
            raise PosfeatError(
                f"A {self.arch.title} SAE cannot be restricted to a subset of features: its "
                "activation couples them."
            )
        idx = (
            features
            if isinstance(features, slice)
            else torch.as_tensor(features, dtype=torch.long, device=self.device)
        )
        return self._replace(
            self.arch.subset(idx),
            W_enc=self.W_enc[:, idx],
            W_dec=self.W_dec[idx],
            b_enc=self.b_enc[idx],
            cfg=dict(self.cfg),
        )

    def to(self, device: str | torch.device) -> SAE:
        """A copy on ``device`` (``"auto"``, ``"cpu"``, ``"cuda"``); ``self`` when already there."""
        dev = resolve_device(device)
        if dev == self.device:
            return self
        return self._replace(
            self.arch.to(dev),
            W_enc=self.W_enc.to(dev),
            W_dec=self.W_dec.to(dev),
            b_enc=self.b_enc.to(dev),
            b_dec=self.b_dec.to(dev),
            cfg=dict(self.cfg),
        )

    def __repr__(self) -> str:
        return (
            f"SAE(name={self.name!r}, architecture={self.architecture!r}, d_in={self.d_in}, d_sae="
            f"{self.d_sae}, "
            f"context_size={self.context_size}, hook_name={self.hook_name!r}, device="
            f"{str(self.device)!r})"
        )


def sae_context(sae: SAE, n_ctx: int) -> int:
    """The SAE's training context within a model of ``n_ctx`` positions: ``min(context_size or
    n_ctx, n_ctx)``.

    The one place this is worked out; every analysis and command asks here.
    """
    return min(sae.context_size or n_ctx, n_ctx)
