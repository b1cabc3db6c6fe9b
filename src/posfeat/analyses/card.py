"""One feature at a glance: :class:`FeatureCard`, what ``posfeat feature N`` prints and a notebook shows."""

from __future__ import annotations

import html
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..core.embeddings import Embeddings
from ..core.errors import PosfeatError, PosfeatTypeError
from ..core.sae import SAE, sae_context
from ..engine.grid_stats import GridStats, feature_stats, on_device
from ..io.paths import shorten
from ..io.sae_folders import neuronpedia_url
from .classify import classify, feature_table

BARS = " ▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float] | np.ndarray, width: int = 96, mark: int | None = None) -> str:
    """A one-line sparkline of ``values`` resampled to ``width`` cells; ``|`` before the cell holding position ``mark``."""
    v = np.asarray(values, dtype=float)
    n = len(v)
    edges = np.linspace(0, n, min(width, n) + 1).astype(int)
    cells = np.array([v[a:b].mean() for a, b in itertools.pairwise(edges)])
    hi = cells.max() if cells.max() > 0 else 1.0
    cut = None if mark is None or mark >= n else int(np.searchsorted(edges[:-1], mark))  # first cell at or past mark
    out = []
    for i, c in enumerate(cells):
        if i == cut:
            out.append("|")
        out.append(BARS[int(np.rint(max(c, 0) / hi * (len(BARS) - 1)))])
    return "".join(out)


def svg_sparkline(values: Sequence[float] | np.ndarray, context: int, width: int = 360, height: int = 48) -> str:
    """An inline SVG line of ``values`` with the context end marked (for notebooks)."""
    v = np.asarray(values, dtype=float)
    hi = v.max() if v.max() > 0 else 1.0
    xs = np.linspace(0, width, len(v)) if len(v) > 1 else np.array([0.0])
    pts = " ".join(f"{x:.1f},{height - 2 - (height - 4) * max(y, 0) / hi:.1f}" for x, y in zip(xs, v))
    cx = width * min(context, len(v) - 1) / max(1, len(v) - 1)
    return (f"<svg width='{width}' height='{height}' xmlns='http://www.w3.org/2000/svg'><line x1='{cx:.1f}' x2='{cx:.1f}' y1='0' "
            f"y2='{height}' stroke='#888' stroke-dasharray='3,2'/><polyline fill='none' stroke='#d62728' stroke-width='1.2' points='{pts}'/></svg>")


@dataclass
class FeatureCard:
    """One feature: kind, variance shares, firing runs, top tokens, and its mean activation at every position."""

    feature: int
    kind: str
    model: str
    sae: str
    context: int
    position_share: float
    token_share: float
    interaction_share: float
    fire: float
    peak_position: int
    peak_mean: float
    span: tuple[int, int]
    runs: str
    top_tokens: list[tuple[str, float]]
    profile: np.ndarray
    neuronpedia_url: str | None = None

    def lines(self) -> list[str]:
        """The card as plain text lines (what ``posfeat feature`` prints)."""
        toks = ", ".join(f"{t!r} {m:.3f}" for t, m in self.top_tokens[:10])
        out = [f"feature {self.feature} of {self.sae} on {self.model}: {self.kind}",
               f"shares of variance: position {self.position_share:.3f}, token {self.token_share:.3f}, interaction "
               f"{self.interaction_share:.3f}; fires on {self.fire:.2%} of the grid (context {self.context})",
               f"peak position {self.peak_position} (mean {self.peak_mean:.4f}), main span {self.span[0]}..{self.span[1]}, "
               f"firing runs: {self.runs or 'none'}",
               f"mean by position 0..{len(self.profile) - 1} (| marks the context end):", sparkline(self.profile, mark=self.context),
               f"top tokens: {toks}"]
        if self.neuronpedia_url:
            out.append(f"Neuronpedia: {self.neuronpedia_url}")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def as_dict(self) -> dict[str, Any]:
        """The card as plain JSON-ready values (``posfeat feature N --json``): every field, the profile as a list."""
        return {"feature": int(self.feature), "kind": self.kind, "model": self.model, "sae": self.sae, "context": int(self.context),
                "position_share": float(self.position_share), "token_share": float(self.token_share),
                "interaction_share": float(self.interaction_share), "fire": float(self.fire),
                "peak_position": int(self.peak_position), "peak_mean": float(self.peak_mean),
                "span": [int(self.span[0]), int(self.span[1])], "runs": self.runs,
                "top_tokens": [{"token": t, "mean": float(m)} for t, m in self.top_tokens],
                "profile": [float(v) for v in self.profile], "neuronpedia_url": self.neuronpedia_url}

    def __repr__(self) -> str:
        """A line or two (under 1 KB): the profile and the token list are attributes, ``str(card)`` prints the card."""
        toks = ", ".join(f"{t!r}" for t, _ in self.top_tokens[:5])
        text = (f"<FeatureCard {self.feature} of {self.sae} on {self.model}: {self.kind}, peak position {self.peak_position} "
                f"(mean {self.peak_mean:.4g}), runs {self.runs or 'none'}; top tokens {toks}; .profile: {len(self.profile)} "
                "positions>")
        return text if len(text) <= 1000 else text[:996] + "...>"

    def _repr_html_(self) -> str:
        link = f" <a href='{html.escape(self.neuronpedia_url)}'>Neuronpedia</a>" if self.neuronpedia_url else ""
        toks = ", ".join(html.escape(f"{t!r} {m:.3f}") for t, m in self.top_tokens[:10])
        return (f"<div><b>feature {self.feature}</b>: {html.escape(self.kind)}{link}<br>shares: position {self.position_share:.3f}, "
                f"token {self.token_share:.3f}, interaction {self.interaction_share:.3f}; peak {self.peak_position}, runs "
                f"{html.escape(self.runs or 'none')}<br>{svg_sparkline(self.profile, self.context)}<br>top tokens: {toks}</div>")


def _card(stats_ctx: GridStats, profile: np.ndarray, row: object, emb: Embeddings, i: int, feature: int, context: int,
          sae_name: str, url: str | None) -> FeatureCard:
    top = [(emb.token_str(int(t)), float(m)) for t, m in zip(stats_ctx.top_tokens[i][:10], stats_ctx.top_token_means[i][:10])]
    return FeatureCard(feature=feature, kind=str(row.kind), model=emb.name, sae=sae_name, context=context,
                       position_share=float(row.position_share), token_share=float(row.token_share),
                       interaction_share=float(row.interaction_share), fire=float(row.fire), peak_position=int(row.peak_position),
                       peak_mean=float(row.peak_mean), span=(int(row.span_start), int(row.span_end)), runs=str(row.runs), top_tokens=top,
                       profile=np.asarray(profile, dtype=np.float64), neuronpedia_url=url)


def feature_card(emb: Embeddings, sae: SAE, index: int, *, device: str | torch.device | None = None,
                 positional_share: float = 0.5, semantic_share: float = 0.5) -> FeatureCard:
    """The card of feature ``index``: exact statistics of that feature alone (it is independent of the others unless TopK)."""
    emb, sae = on_device(emb, sae, device)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise PosfeatTypeError(f"Feature {shorten(repr(index))} is not a feature index; give an int from 0 to {sae.d_sae - 1}.")
    if not 0 <= index < sae.d_sae:
        raise PosfeatError(f"Feature {index} is out of range; {sae.name} has features 0..{sae.d_sae - 1}.")
    ctx = sae_context(sae, emb.n_ctx)
    one = sae.subset([int(index)]) if sae.separable else sae
    i = 0 if sae.separable else int(index)
    st_all = feature_stats(emb, one, range(emb.n_ctx))
    st_ctx = feature_stats(emb, one, range(ctx))
    row = feature_table(st_ctx, emb, classify(st_ctx, positional_share, semantic_share)).iloc[i]
    npid = sae.meta.neuronpedia_id
    url = neuronpedia_url(npid, int(index)) if npid else None
    return _card(st_ctx, st_all.mean_by_position[i], row, emb, i, int(index), ctx, sae.name, url)


def card_from_analysis(an: object, index: int) -> FeatureCard:
    """The card of feature ``index`` from an :class:`posfeat.Analysis` (no recomputation)."""
    d_sae = an.sae.d_sae
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise PosfeatTypeError(f"Feature {shorten(repr(index))} is not a feature index; give an int from 0 to {d_sae - 1}.")
    if not 0 <= index < d_sae:
        raise PosfeatError(f"Feature {index} is out of range; {an.sae.name} has features 0..{d_sae - 1}.")
    row = an.features.iloc[int(index)]
    return _card(an.stats_context, an.stats_all.mean_by_position[int(index)], row, an.emb, int(index), int(index), an.context,
                 an.sae.name, an.neuronpedia_url(int(index)))
