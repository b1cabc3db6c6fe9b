"""SAE architectures: one module each (:mod:`.relu`, :mod:`.topk`, :mod:`.jumprelu`, :mod:`.gated`,
:mod:`.batchtopk`), registered in one table, :data:`ARCHITECTURES`. Everything else in posfeat asks
the table or an architecture object (``sae.arch``) and never compares architecture names.

To add an architecture: write its module (a subclass of :class:`Architecture`) and add it to the
table below; ``docs/design.md`` walks through an example."""

from __future__ import annotations

from typing import Any

from ..errors import PosfeatError
from .base import BASE_TENSORS, Architecture, ConfigLike, either
from .batchtopk import BatchTopK
from .gated import Gated
from .jumprelu import JumpReLU
from .relu import ReLU
from .topk import TopK

#: Every architecture posfeat knows, by posfeat's name, in the order messages list them.
ARCHITECTURES: dict[str, type[Architecture]] = {
    cls.name: cls for cls in (ReLU, TopK, JumpReLU, Gated, BatchTopK)
}

#: The ``(architecture, activation_fn)`` a cfg.json means when it names neither (configs before
# sae_lens 6).
SAELENS_DEFAULT = ReLU.SAELENS[0]

__all__ = [
    "ARCHITECTURES",
    "BASE_TENSORS",
    "SAELENS_DEFAULT",
    "Architecture",
    "BatchTopK",
    "ConfigLike",
    "Gated",
    "JumpReLU",
    "ReLU",
    "TopK",
    "architecture",
    "architecture_from_cfg",
    "either",
    "from_params",
    "saelens_read",
    "saelens_tensor_names",
    "trainable",
]


def architecture(name: str) -> type[Architecture]:
    """The architecture posfeat calls ``name``; an unknown name is one sentence naming it and
    listing the known ones."""
    if name not in ARCHITECTURES:
        raise PosfeatError(
            f"SAE architecture {name!r} is unknown; posfeat knows "
            f"{either(list(ARCHITECTURES), 'and')}."
        )
    return ARCHITECTURES[name]


def trainable() -> tuple[str, ...]:
    """The names of the architectures posfeat's trainer trains, in the table's order (the first is
    the default)."""
    return tuple(name for name, cls in ARCHITECTURES.items() if cls.trainable)


def from_params(**params: Any) -> Architecture:
    """The SAE architecture whose parameters are the non-None ``params`` (the SAE constructor's
    ``threshold``, ``k``): ReLU for none, JumpReLU for ``threshold``, TopK for ``k``. Unchecked: see
    :meth:`Architecture.checked`."""
    given = {n: v for n, v in params.items() if v is not None}
    for cls in ARCHITECTURES.values():
        if cls.native and set(cls.PARAMS) == set(given):
            return cls(**given)
    options = [
        f"{cls.PARAMS[0]} ({cls.title})"
        for cls in ARCHITECTURES.values()
        if cls.native and len(cls.PARAMS) == 1
    ]
    raise PosfeatError(f"Pass either {either(options)}, not both.")


def saelens_tensor_names() -> tuple[str, ...]:
    """Every tensor a sae_lens SAE of an architecture posfeat reads may hold, the common ones
    first."""
    return tuple(
        dict.fromkeys(
            [*BASE_TENSORS, *(n for cls in ARCHITECTURES.values() for n in cls.SAELENS_TENSORS)]
        )
    )


def saelens_read(last: str = "or") -> str:
    """The sae_lens architectures whose folders posfeat reads, as a sentence lists them ("standard,
    topk, ... or gated")."""
    return either(
        [cls.SAELENS[0][0] for cls in ARCHITECTURES.values() if cls.saved_as is None], last
    )


def _listing() -> str:
    saved = [cls.SAELENS[0][0] for cls in ARCHITECTURES.values() if cls.saved_as is not None]
    return f"{saelens_read('and')} SAEs" + (
        f", and {either(saved, 'and')} ones as saved" if saved else ""
    )


def architecture_from_cfg(cfg: ConfigLike, where: str) -> tuple[type[Architecture], dict[str, Any]]:
    """The architecture a sae_lens ``cfg.json`` of any vintage names (``architecture``, and before
    sae_lens 6 ``activation_fn_str``) and its parameters there, or one sentence naming what is
    refused: sae_lens's architectures that posfeat does not read (abstopk, transcoders, temporal,
    matching_pursuit, ...) by name."""
    arch = (cfg.get_str("architecture", default=SAELENS_DEFAULT[0]) or SAELENS_DEFAULT[0]).lower()
    act = (
        cfg.get_str("activation_fn_str", "activation_fn", default=SAELENS_DEFAULT[1])
        or SAELENS_DEFAULT[1]
    ).lower()
    for cls in ARCHITECTURES.values():
        if (arch, act) in cls.SAELENS or (arch, None) in cls.SAELENS:
            return cls, cls.read_cfg(cfg, where)
    owners = [cls for cls in ARCHITECTURES.values() if any(a == arch for a, _ in cls.SAELENS)]
    if owners:
        titles = [cls.title for cls in ARCHITECTURES.values() if cls.saved_as is None]
        raise PosfeatError(
            f"{where} has activation_fn {act!r}, which neither posfeat nor sae_lens 6 reads as a "
            f"{owners[0].SAELENS[0][0]} SAE; use a {either(titles)} SAE."
        )
    raise PosfeatError(
        f"{where} has architecture {arch!r}, which posfeat does not read (it reads sae_lens's "
        f"{_listing()}); "
        "convert it to one of those."
    )
