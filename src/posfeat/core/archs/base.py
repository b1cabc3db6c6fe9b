"""What an SAE architecture is to posfeat: :class:`Architecture`, the base of the one-module-each
architectures.

An architecture is the activation ``f = act(pre)`` that turns pre-activations into feature
activations, with what each part of posfeat needs to know about it:

* the engine: the activation itself (:meth:`Architecture.activate`), whether it acts on each
  feature alone (``separable``), whether it is ``max(pre, 0)`` with no jump (``continuous``), and
  the cut that a feature's pre-activation must pass to fire (:meth:`Architecture.cut`);
* the SAE folders: which ``cfg.json`` spellings it reads (``SAELENS``), its fields there
  (:meth:`Architecture.read_cfg`, :meth:`Architecture.cfg_fields`), the tensors it needs and how
  sae_lens's tensors become posfeat's (:meth:`Architecture.needed_tensors`,
  :meth:`Architecture.from_saelens`);
* the trainer: whether it trains it (``trainable``), with an L1 penalty or not, resampling dead
  features or not.

A class holds what is true of every SAE of the architecture; an instance (``sae.arch``) also holds
the SAE's own parameters (``TopK(k=8)``, ``JumpReLU(threshold)``), named as :class:`posfeat.SAE`'s
constructor names them. Importing this package loads no torch (the CLI's parser reads the table):
the methods that compute import it when first called.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from ..errors import PosfeatError

if TYPE_CHECKING:
    from torch import Tensor
    from torch import dtype as DType  # noqa: N812
else:
    Tensor = DType = Any  # torch loads when an SAE computes, not when the table is read

#: The tensors every SAELens SAE folder holds, whatever its architecture.
BASE_TENSORS = ("W_enc", "W_dec", "b_enc", "b_dec")


@runtime_checkable
class ConfigLike(Protocol):
    """Typed reads of a ``cfg.json`` (:class:`posfeat.io.config_values.ConfigFile`; ``core`` cannot import
    ``io``)."""

    def raw(self, *keys: str, default: Any = None) -> Any: ...

    def get_int(self, *keys: str, default: Any = ..., minimum: int | None = None) -> Any: ...

    def get_bool(self, *keys: str, default: bool) -> bool: ...

    def get_str(self, *keys: str, default: Any = None) -> Any: ...

    def get_dict(self, *keys: str) -> dict[str, Any]: ...


def either(words: Sequence[str], last: str = "or") -> str:
    """``a, b or c``."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} {last} {words[-1]}"


class Architecture:
    """One SAE architecture (see module docstring); subclasses set the class attributes and override
    what differs."""

    #: posfeat's name: ``sae.architecture``, ``TrainConfig.arch``, ``summary.json``'s
    # ``sae_architecture``.
    name: ClassVar[str]
    #: how a sentence names it ("a TopK SAE").
    title: ClassVar[str]
    #: the ``(architecture, activation_fn)`` pairs of a sae_lens ``cfg.json`` read as this
    # architecture (None: any activation_fn); the first pair's architecture is what posfeat writes.
    SAELENS: ClassVar[tuple[tuple[str, str | None], ...]]
    #: tensors of a sae_lens folder or object it may read, beyond :data:`BASE_TENSORS`.
    SAELENS_TENSORS: ClassVar[tuple[str, ...]] = ()
    #: the SAE constructor's arguments that hold its parameters (``("k",)``), and those of them that
    # are per-feature tensors.
    PARAMS: ClassVar[tuple[str, ...]] = ()
    PER_FEATURE: ClassVar[tuple[str, ...]] = ()
    #: a posfeat SAE can be of this architecture (False: it is only read from cfg.json, as another
    # one, or refused).
    native: ClassVar[bool] = True
    #: a sae_lens training architecture whose saved inference SAE is of this other one: refused,
    # naming it.
    saved_as: ClassVar[type[Architecture] | None] = None
    #: the activation acts on each feature alone (a feature's activation depends on its own
    # pre-activation only).
    separable: ClassVar[bool] = True
    #: the activation is ``max(pre, 0)``: continuous, with no jump at the cut (the engine's closed
    # forms).
    continuous: ClassVar[bool] = False
    #: posfeat's trainer trains it; with an L1 penalty on activations; resampling dead features
    # during training.
    trainable: ClassVar[bool] = False
    l1_penalty: ClassVar[bool] = False
    resamples_dead: ClassVar[bool] = False
    #: what ``--arch``'s help says of its loss, when trainable ("L1 penalty").
    training_note: ClassVar[str] = ""

    # ------------------------------------------------------------------ parameters
    def params(self) -> dict[str, Any]:
        """The SAE constructor's arguments for this architecture (``{"k": 8}``; ``{}`` for ReLU)."""
        return {name: getattr(self, name) for name in self.PARAMS}

    def tensors(self) -> dict[str, Tensor]:
        """Its per-feature tensors (``{"threshold": ...}`` for JumpReLU), as a folder saves them."""
        return {name: getattr(self, name) for name in self.PER_FEATURE}

    def checked(self, w_enc_shape: tuple[int, ...]) -> Architecture:
        """This architecture with its parameters validated for an encoder of shape ``(d_in, d_sae)``
        (tensors as float32); one sentence naming the parameter if not."""
        return self

    def subset(self, index: Any) -> Architecture:
        """The architecture of the SAE restricted to features ``index`` (for a separable one: the
        SAE refuses the others)."""
        return type(self)(**{**self.params(), **{n: t[index] for n, t in self.tensors().items()}})

    def to(self, device: Any) -> Architecture:
        """The same parameters, with its tensors on ``device``."""
        return type(self)(
            **{**self.params(), **{n: t.to(device) for n, t in self.tensors().items()}}
        )

    def __repr__(self) -> str:
        shown = {
            n: (f"<{tuple(v.shape)}>" if n in self.PER_FEATURE else repr(v))
            for n, v in self.params().items()
        }
        return f"{type(self).__name__}({', '.join(f'{n}={v}' for n, v in shown.items())})"

    # ------------------------------------------------------------------ the activation
    def activate(self, pre: Tensor) -> Tensor:
        """Feature activations ``[..., d_sae]`` from pre-activations ``[..., d_sae]``."""
        raise NotImplementedError(f"{type(self).__name__} has no activation of its own")

    def activate_(self, f: Tensor) -> Tensor:
        """:meth:`activate` written into ``f`` (pre-activations in, activations out) and
        returned."""
        return f.copy_(self.activate(f))

    def cut(self, d_sae: int, dtype: DType, device: Any) -> Tensor:
        """``[d_sae]``: a feature can fire (activation > 0) only where ``pre > cut``, and firing,
        its activation is ``pre``."""
        import torch

        return torch.zeros(d_sae, dtype=dtype, device=device)

    # ------------------------------------------------------------------ sae_lens cfg.json and
    # tensors
    @classmethod
    def read_cfg(cls, cfg: ConfigLike, where: str) -> dict[str, Any]:
        """Its parameters that ``cfg.json`` gives (``{"k": 8}`` for TopK), checked; one sentence
        naming what is wrong."""
        if cls.saved_as is not None:
            raise PosfeatError(
                f"{where} has architecture {cls.SAELENS[0][0]!r}, a sae_lens training checkpoint; "
                "save it with "
                f"sae_lens's save_inference_model (which writes the {cls.saved_as.title} SAE it "
                "becomes) and load that "
                "folder."
            )
        return {}

    @classmethod
    def needed_tensors(cls, names: Sequence[str], where: str) -> list[str]:
        """The tensors a folder of this architecture must hold, given the ``names`` it holds
        (``scaling_factor`` when there)."""
        return [*BASE_TENSORS, *cls.PER_FEATURE] + (
            ["scaling_factor"] if "scaling_factor" in names else []
        )

    @classmethod
    def from_saelens(
        cls, cfg: ConfigLike, t: dict[str, Tensor], params: dict[str, Any], notes: list[str]
    ) -> tuple[Architecture, dict[str, Tensor]]:
        """The posfeat architecture (with its parameters) and the tensors ``W_enc``, ``W_dec``,
        ``b_enc``, ``b_dec`` that give exactly sae_lens's activations and reconstructions, from
        sae_lens's tensors ``t`` (float32) and :meth:`read_cfg`'s ``params``; what was changed on
        the way is appended to ``notes``."""
        return cls(**params, **{n: t[n] for n in cls.PER_FEATURE}), t

    def cfg_fields(self) -> dict[str, Any]:
        """What ``cfg.json`` records of this architecture beyond its name (``{"k": 8}`` for
        TopK)."""
        return {}

    @property
    def saelens_name(self) -> str:
        """The ``architecture`` that posfeat writes in ``cfg.json`` (``standard`` for ReLU)."""
        return self.SAELENS[0][0]

    # ------------------------------------------------------------------ training
    @classmethod
    def from_settings(cls, settings: Any) -> Architecture:
        """The architecture that training ``settings`` (a :class:`posfeat.TrainConfig`) ask for, its
        parameters from theirs."""
        return cls(**{name: getattr(settings, name) for name in cls.PARAMS})

    @classmethod
    def check_settings(cls, settings: Any) -> None:
        """Refuse training ``settings`` whose parameters do not fit this architecture (one sentence
        naming the setting)."""
