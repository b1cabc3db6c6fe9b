"""A sweep as a plan: a list of runs, each a frozen description of one SAE to train (or measure) and
where it goes.

A :class:`Run` carries everything a worker needs besides the shared inputs (the embeddings, the
SAE being fine-tuned, the token weights: :class:`Shared`): its folder under the sweep, its row
label, its seed and its training settings. Plans are pure: the same settings give the same plan,
whoever builds it (API, CLI, a Ray driver).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..core.embeddings import Embeddings
from ..core.sae import SAE
from ..training.config import TrainConfig
from .config import ContextSweepConfig, WidthSweepConfig


@dataclass(frozen=True)
class Run:
    """One run of a sweep: ``key`` is its folder under the sweep (``d_sae_128/seed_0``)."""

    key: str
    kind: str  # "width" | "original" | "finetune" | "scratch"
    label: str  # the table's row name
    seed: int
    settings: tuple[tuple[str, Any], ...] = ()  # TrainConfig values (empty: measure only)
    init: bool = False  # fine-tune the sweep's SAE
    curve_points: int = 0  # count positional features this many times during training
    tokens: int = 0  # token sample for reconstruction

    @property
    def trains(self) -> bool:
        return bool(self.settings)

    @property
    def config(self) -> TrainConfig:
        return TrainConfig(**dict(self.settings))

    @property
    def d_sae(self) -> int | None:
        return dict(self.settings).get("d_sae")

    def describe(self) -> str:
        s = dict(self.settings)
        return (
            f"{self.label} (seed {self.seed})"
            if self.kind != "width"
            else f"d_sae {s['d_sae']} seed {self.seed}"
        )


@dataclass
class Shared:
    """What every run of a sweep reads: embeddings (CPU), the SAE of a context sweep, token weights,
    and provenance."""

    emb: Embeddings
    token_weights: torch.Tensor | None = None
    sae: SAE | None = None
    base_context: int | None = None
    command: str | None = None
    model_name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _frozen(values: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in values.items()))


def width_plan(cfg: WidthSweepConfig, recipe: dict[str, Any]) -> list[Run]:
    """Widths x seeds (seeds ``recipe['seed'] ..``), narrowest first; the widest first-seed run
    records the count during training."""
    base_seed = int(recipe.get("seed", 0))
    widths = sorted({int(w) for w in cfg.d_sae})
    runs = []
    for w in widths:
        for s in range(base_seed, base_seed + cfg.seeds):
            curve = cfg.curve_points if (w == widths[-1] and s == base_seed) else 0
            runs.append(
                Run(
                    key=f"d_sae_{w}/seed_{s}",
                    kind="width",
                    label=f"d_sae {w}",
                    seed=s,
                    settings=_frozen({**recipe, "d_sae": w, "context": cfg.context, "seed": s}),
                    curve_points=curve,
                    tokens=cfg.tokens,
                )
            )
    return runs


def context_plan(cfg: ContextSweepConfig, recipe: dict[str, Any], sae: SAE) -> list[Run]:
    """Per seed: the original SAE measured, one fine-tune per context, and the from-scratch control
    on the longest context.

    The fine-tunes use ``recipe`` with the SAE's own width, architecture and L1 (``recipe['l1']``
    when given); the control trains the same width with the SAE's recorded budget (steps, lr) unless
    ``control_steps`` is set."""
    rec = sae.cfg.get("posfeat_training", {}).get("config", {})
    recipe = dict(recipe)
    base_seed = int(recipe.pop("seed", 0))
    shape = {
        "d_sae": sae.d_sae,
        "arch": sae.architecture,
        "k": sae.k,
        "l1": float(recipe.pop("l1", rec.get("l1", 1.0))),
    }
    steps = int(recipe.pop("steps"))
    ctl_steps = cfg.control_steps or int(rec.get("steps", 4 * steps))
    cs = sorted({int(c) for c in cfg.contexts})
    runs = []
    for s in range(base_seed, base_seed + cfg.seeds):
        runs.append(
            Run(
                key=f"original/seed_{s}",
                kind="original",
                label="original",
                seed=s,
                tokens=cfg.tokens,
            )
        )
        for c in cs:
            runs.append(
                Run(
                    key=f"finetune_ctx_{c}/seed_{s}",
                    kind="finetune",
                    label=f"fine-tuned to {c}",
                    seed=s,
                    init=True,
                    tokens=cfg.tokens,
                    settings=_frozen({**recipe, **shape, "context": c, "steps": steps, "seed": s}),
                )
            )
        ctl = {
            **recipe,
            **shape,
            "context": cs[-1],
            "steps": ctl_steps,
            "seed": s,
            "lr": float(rec.get("lr", 5e-3)),
        }
        runs.append(
            Run(
                key=f"scratch_ctx_{cs[-1]}/seed_{s}",
                kind="scratch",
                label=f"from scratch on {cs[-1]}",
                seed=s,
                tokens=cfg.tokens,
                settings=_frozen(ctl),
            )
        )
    return runs
