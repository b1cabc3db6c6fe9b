"""One feature at a glance: :class:`FeatureCard`, what ``posfeat feature N`` prints and a notebook
shows."""

from __future__ import annotations

import html
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..core.embeddings import Embeddings
from ..core.errors import PosfeatError, PosfeatTypeError
from ..core.sae import SAE, sae_context
from ..core.tensors import to_numpy
from ..engine.extremes import extremes, screen_tokens
from ..engine.grid_stats import GridStats, feature_stats, on_device
from ..engine.histogram import TOP_INPUTS, ActivationHistograms, activation_histograms
from ..io.paths import shorten
from ..io.sae_folders import neuronpedia_url
from . import warmup
from .classification import classify, feature_table

BARS = " ▁▂▃▄▅▆▇█"


def sparkline(
    values: Sequence[float] | np.ndarray, width: int = 96, mark: int | None = None
) -> str:
    """A one-line sparkline of ``values`` resampled to ``width`` cells; ``|`` before the cell
    holding position ``mark``."""
    v = np.asarray(values, dtype=float)
    n = len(v)
    edges = np.linspace(0, n, min(width, n) + 1).astype(int)
    cells = np.array([v[a:b].mean() for a, b in itertools.pairwise(edges)])
    hi = cells.max() if cells.max() > 0 else 1.0
    cut = (
        None if mark is None or mark >= n else int(np.searchsorted(edges[:-1], mark))
    )  # first cell at or past mark
    out = []
    for i, c in enumerate(cells):
        if i == cut:
            out.append("|")
        out.append(BARS[int(np.rint(max(c, 0) / hi * (len(BARS) - 1)))])
    return "".join(out)


def svg_sparkline(
    values: Sequence[float] | np.ndarray, context: int, width: int = 360, height: int = 48
) -> str:
    """An inline SVG line of ``values`` with the context end marked (for notebooks)."""
    v = np.asarray(values, dtype=float)
    hi = v.max() if v.max() > 0 else 1.0
    xs = np.linspace(0, width, len(v)) if len(v) > 1 else np.array([0.0])
    pts = " ".join(
        f"{x:.1f},{height - 2 - (height - 4) * max(y, 0) / hi:.1f}" for x, y in zip(xs, v)
    )
    cx = width * min(context, len(v) - 1) / max(1, len(v) - 1)
    return (
        f"<svg width='{width}' height='{height}' xmlns='http://www.w3.org/2000/svg'><line x1='"
        f"{cx:.1f}' x2='{cx:.1f}' y1='0' "
        f"y2='{height}' stroke='#888' stroke-dasharray='3,2'/><polyline fill='none' "
        f"stroke='#d62728' stroke-width='1.2' points='{pts}'/></svg>"
    )


#: model types whose output layer is the token embedding itself (``tie_word_embeddings``, on by
# default there)
TIED_UNEMBEDDING = {"gpt2", "gpt_neo", "opt"}
LOGIT_TOKENS = 10


def unembedding_note(emb: Embeddings) -> str | None:
    """None when ``emb`` has an unembedding posfeat can use (the tied token embedding of GPT-2,
    GPT-Neo, OPT); else why not."""
    mtype = str(emb.info.get("model_type") or "")
    if (
        mtype in TIED_UNEMBEDDING
        and emb.info.get("tie_word_embeddings", True)
        and not emb.info.get("token_type_row_added")
    ):
        return None
    what = f"a {mtype} model" if mtype else "a model of unknown type"
    return (
        f"{emb.name or 'this model'} is {what} without an unembedding posfeat loads (logit effects "
        "need a causal LM whose "
        "output layer is its token embedding: GPT-2, GPT-Neo, OPT)"
    )


def logit_effects(
    emb: Embeddings,
    sae: SAE,
    features: Sequence[int] | np.ndarray,
    k: int = LOGIT_TOKENS,
    chunk: int = 1024,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Each feature's direct effect on the logits, ``W_dec[f] @ W_U`` with ``W_U = W_E^T`` (tied),
    ignoring the final
    LayerNorm's scale (not loaded): ``(top ids [F, k], top values, bottom ids [F, k], bottom
    values)``, strongest first (:mod:`posfeat.engine.extremes`: exact, through a bfloat16 screen
    where the CPU has one). Raises when the model has no usable unembedding
    (:func:`unembedding_note`)."""
    note = unembedding_note(emb)
    if note:
        raise PosfeatError(f"No logit effects: {note}.")
    warmup.wait()  # the first run after an install: its kernels, compiled in a second process
    feats = np.asarray(features, dtype=np.int64).reshape(-1)
    X = emb.W_E.float()
    k = min(k, emb.d_vocab)
    tokens = screen_tokens(X) if len(feats) > 1 else None  # a bfloat16 screen, exact results
    # the screen's bfloat16 products, one chunk at a time in one buffer
    scratch = torch.empty(min(chunk, len(feats)) * len(X), dtype=torch.bfloat16) if tokens else None
    out: list[list[np.ndarray]] = [[], [], [], []]
    for s in range(0, len(feats), chunk):
        idx = torch.as_tensor(feats[s : s + chunk], device=sae.device)
        for j, t in enumerate(extremes(sae.W_dec[idx].float(), X, k, tokens, scratch)):
            out[j].append(to_numpy(t))
    if not len(feats):
        return (
            np.zeros((0, k), np.int64),
            np.zeros((0, k)),
            np.zeros((0, k), np.int64),
            np.zeros((0, k)),
        )
    return (
        np.concatenate(out[0]).astype(np.int64),
        np.concatenate(out[1]).astype(np.float64),
        np.concatenate(out[2]).astype(np.int64),
        np.concatenate(out[3]).astype(np.float64),
    )


def past_context_summary(
    profile: np.ndarray, fire: np.ndarray | None, context: int, spurious_pairs: int | None = None
) -> str:
    """One sentence on the feature past the training context, from its mean activation per position
    (``profile``, positions ``0..n-1``) and firing fraction per position (``fire``)."""
    n = len(profile)
    if n <= context:
        return f"no positions past the context ({context}) were studied"
    inside, past = float(np.mean(profile[:context])), float(np.mean(profile[context:]))
    peak = context + int(np.argmax(profile[context:]))
    text = (
        f"past the context (positions {context}..{n - 1}): mean activation {past:.4g} (inside "
        f"{inside:.4g}), highest at position "
        f"{peak} ({float(profile[peak]):.4g})"
    )
    if fire is not None:
        past, inside = float(np.mean(fire[context:])), float(np.mean(fire[:context]))
        text += f"; fires on {past:.2%} of inputs there (inside {inside:.2%})"
    if spurious_pairs is not None:
        text += f"; {spurious_pairs} (token, position) pairs fire there for tokens that never fire inside"
    return text


@dataclass
class FeatureCard:
    """One feature: kind, variance shares, firing runs, top tokens, its mean activation at every
    position, and what explains it.

    Besides the exact statistics of the grid (shares, firing, profile), the card holds the feature's
    exact activation histogram over the grid of the context (every token x positions
    ``0..context-1``: ``histogram`` counts in equal bins over ``(0, histogram_max]``, ``firing`` of
    ``grid_inputs`` inputs fire), its strongest (token, position) inputs, its mean pre-activation at
    every position (``preactivation``, beside the firing threshold ``threshold``), the W_pos row its
    decoder direction is nearest (cosine), a sentence on its behaviour past the context, and, for a
    model whose output layer is its token embedding, its logit effects (``logit_top``,
    ``logit_bottom``; else ``logit_note`` says why not)."""

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
    histogram: np.ndarray | None = None
    histogram_max: float = float("nan")
    grid_inputs: int = 0
    firing: int = 0
    histogram_note: str | None = None
    top_inputs: list[tuple[str, int, float]] = field(default_factory=list)
    preactivation: np.ndarray | None = None
    threshold: float = 0.0
    nearest_wpos_row: int = -1
    decoder_cos_wpos: float = float("nan")
    past_context: str = ""
    logit_top: list[tuple[str, float]] = field(default_factory=list)
    logit_bottom: list[tuple[str, float]] = field(default_factory=list)
    logit_note: str | None = None

    @property
    def positional(self) -> bool:
        """Positional features lead with position (peak, span, profile), the others with tokens."""
        return self.kind == "positional"

    def _histogram_lines(self) -> list[str]:
        if self.histogram is None:
            return [f"activation histogram: {self.histogram_note or 'not computed'}"]
        share = self.firing / self.grid_inputs if self.grid_inputs else float("nan")
        return [
            f"activation histogram, exact over all {self.grid_inputs} inputs of the context (tokens "
            "x positions "
            f"0..{self.context - 1}): {self.firing} fire ({share:.3%}); {len(self.histogram)} bins "
            f"over (0, {self.histogram_max:.4g}]:",
            sparkline(np.log1p(self.histogram), width=len(self.histogram)) + "  (log count)",
        ]

    def lines(self) -> list[str]:
        """The card as plain text lines (what ``posfeat feature`` prints): positional features lead
        with position, others with tokens."""
        toks = ", ".join(f"{t!r} {m:.3f}" for t, m in self.top_tokens[:10])
        inputs = (
            ", ".join(f"{t!r}@{p} {v:.3f}" for t, p, v in self.top_inputs[:10])
            or "none (never fires)"
        )
        head = [
            f"feature {self.feature} of {self.sae} on {self.model}: {self.kind}",
            f"shares of variance: position {self.position_share:.3f}, token {self.token_share:.3f}, "
            "interaction "
            f"{self.interaction_share:.3f}; fires on {self.fire:.2%} of the grid (context "
            f"{self.context})",
        ]
        position = [
            f"peak position {self.peak_position} (mean {self.peak_mean:.4f}), main span "
            f"{self.span[0]}..{self.span[1]}, "
            f"firing runs: {self.runs or 'none'}",
            f"mean by position 0..{len(self.profile) - 1} (| marks the context end):",
            sparkline(self.profile, mark=self.context),
        ]
        if self.preactivation is not None:
            pre = self.preactivation
            position.append(
                f"mean pre-activation by position (fires above {self.threshold:.4g}; | marks the "
                "context end), "
                f"from {float(pre.min()):.4g} to {float(pre.max()):.4g}:"
            )
            position.append(sparkline(pre - pre.min(), mark=self.context))
        if self.nearest_wpos_row >= 0:
            position.append(
                f"decoder direction nearest W_pos row {self.nearest_wpos_row} (cosine "
                f"{self.decoder_cos_wpos:.3f})"
            )
        tokens = [f"top tokens: {toks}", f"top inputs (token@position activation): {inputs}"]
        logits = (
            [
                "logit effects (W_dec @ W_E^T, tied unembedding), up: "
                + ", ".join(f"{t!r} {v:+.3f}" for t, v in self.logit_top[:10]),
                "  down: " + ", ".join(f"{t!r} {v:+.3f}" for t, v in self.logit_bottom[:10]),
            ]
            if self.logit_top
            else [f"logit effects: none, {self.logit_note or 'not computed'}"]
        )
        body = position + tokens if self.positional else tokens + position
        out = head + body + self._histogram_lines() + logits
        if self.past_context:
            out.append(self.past_context)
        if self.neuronpedia_url:
            out.append(f"Neuronpedia: {self.neuronpedia_url}")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def as_dict(self) -> dict[str, Any]:
        """The card as plain JSON-ready values (``posfeat feature N --json``): every field, arrays
        as lists."""

        def floats(x: np.ndarray | None) -> list[float] | None:
            return None if x is None else [float(v) for v in x]

        return {
            "feature": int(self.feature),
            "kind": self.kind,
            "model": self.model,
            "sae": self.sae,
            "context": int(self.context),
            "position_share": float(self.position_share),
            "token_share": float(self.token_share),
            "interaction_share": float(self.interaction_share),
            "fire": float(self.fire),
            "peak_position": int(self.peak_position),
            "peak_mean": float(self.peak_mean),
            "span": [int(self.span[0]), int(self.span[1])],
            "runs": self.runs,
            "top_tokens": [{"token": t, "mean": float(m)} for t, m in self.top_tokens],
            "profile": [float(v) for v in self.profile],
            "neuronpedia_url": self.neuronpedia_url,
            "histogram": None
            if self.histogram is None
            else {
                "counts": [int(c) for c in self.histogram],
                "edges": floats(np.linspace(0, self.histogram_max, len(self.histogram) + 1)),
                "grid_inputs": int(self.grid_inputs),
                "firing": int(self.firing),
            },
            "histogram_note": self.histogram_note,
            "top_inputs": [
                {"token": t, "position": int(p), "activation": float(v)}
                for t, p, v in self.top_inputs
            ],
            "preactivation": floats(self.preactivation),
            "threshold": float(self.threshold),
            "nearest_wpos_row": int(self.nearest_wpos_row),
            "decoder_cos_wpos": float(self.decoder_cos_wpos),
            "past_context": self.past_context,
            "logit_top": [{"token": t, "logit": float(v)} for t, v in self.logit_top],
            "logit_bottom": [{"token": t, "logit": float(v)} for t, v in self.logit_bottom],
            "logit_note": self.logit_note,
        }

    def __repr__(self) -> str:
        """A line or two (under 1 KB): the profile and the token list are attributes, ``str(card)``
        prints the card."""
        toks = ", ".join(f"{t[:20]!r}" for t, _ in self.top_tokens[:5])
        text = (
            f"<FeatureCard {self.feature} of {self.sae[:80]} on {self.model[:80]}: {self.kind}, "
            f"peak position {self.peak_position} "
            f"(mean {self.peak_mean:.4g}), runs {self.runs[:60] or 'none'}; top tokens {toks}; "
            "nearest W_pos row "
            f"{self.nearest_wpos_row} (cos {self.decoder_cos_wpos:.3f}); .profile: "
            f"{len(self.profile)} positions, .histogram, "
            ".top_inputs, .logit_top; str(card) prints it>"
        )
        return text if len(text) <= 1000 else text[:996] + "...>"

    def _repr_html_(self) -> str:
        esc = html.escape
        link = (
            f" <a href='{esc(self.neuronpedia_url)}'>Neuronpedia</a>"
            if self.neuronpedia_url
            else ""
        )
        toks = ", ".join(esc(f"{t!r} {m:.3f}") for t, m in self.top_tokens[:10])
        inputs = ", ".join(esc(f"{t!r}@{p} {v:.3f}") for t, p, v in self.top_inputs[:10]) or "none"
        position = (
            f"peak {self.peak_position}, runs {esc(self.runs or 'none')}; decoder nearest W_pos row "
            f"{self.nearest_wpos_row} "
            f"(cos {self.decoder_cos_wpos:.3f})<br>{svg_sparkline(self.profile, self.context)}<br>"
        )
        tokens = f"top tokens: {toks}<br>top inputs: {inputs}<br>"
        hist = esc(self._histogram_lines()[0])
        logits = (
            esc(
                "logits up: "
                + ", ".join(f"{t!r} {v:+.3f}" for t, v in self.logit_top[:10])
                + "; down: "
                + ", ".join(f"{t!r} {v:+.3f}" for t, v in self.logit_bottom[:10])
            )
            if self.logit_top
            else esc(f"logit effects: none, {self.logit_note or 'not computed'}")
        )
        body = position + tokens if self.positional else tokens + position
        return (
            f"<div><b>feature {self.feature}</b>: {esc(self.kind)}{link}<br>shares: position "
            f"{self.position_share:.3f}, "
            f"token {self.token_share:.3f}, interaction {self.interaction_share:.3f}<br>{body}"
            f"{hist}<br>{logits}<br>"
            f"{esc(self.past_context)}</div>"
        )


def card_extras(
    emb: Embeddings,
    sae: SAE,
    index: int,
    context: int,
    stats_all: GridStats,
    i: int,
    spurious_pairs: int | None = None,
    hist: ActivationHistograms | None = None,
) -> dict[str, Any]:
    """The card's explaining fields of feature ``index`` (row ``i`` of ``stats_all``, positions
    ``0..n-1``): exact histogram and top inputs over the context's grid, pre-activation curve and
    threshold, past-context sentence, logit effects. ``hist``: every feature's histograms from the
    engine's pass (row ``index``), as the report shows them; computed for this feature when None."""
    out: dict[str, Any] = {
        "preactivation": np.asarray(stats_all.pre_mean_by_position[i], dtype=np.float64),
        "threshold": float(sae.cut(torch.float64)[int(index)]),
        "past_context": past_context_summary(
            stats_all.mean_by_position[i], stats_all.fire_by_position[i], context, spurious_pairs
        ),
    }
    if sae.separable:
        if hist is not None and len(hist.positions) == context:
            out.update(histogram_fields(hist, int(index), emb))
        else:
            hist = activation_histograms(emb, sae, context, features=np.array([int(index)]))
            out.update(histogram_fields(hist, 0, emb))
    else:
        out["histogram_note"] = (
            f"not computed: {sae.name} is a {sae.architecture} SAE, whose activations do not split "
            "into token and "
            "position parts, so an exact histogram would need the whole grid enumerated"
        )
    note = unembedding_note(emb)
    if note is None:
        top_i, top_v, bot_i, bot_v = logit_effects(emb, sae, [int(index)])
        out["logit_top"] = [(emb.token_str(int(t)), float(v)) for t, v in zip(top_i[0], top_v[0])]
        out["logit_bottom"] = [
            (emb.token_str(int(t)), float(v)) for t, v in zip(bot_i[0], bot_v[0])
        ]
    else:
        out["logit_note"] = note
    return out


def histogram_fields(hist: ActivationHistograms, row: int, emb: Embeddings) -> dict[str, Any]:
    """Row ``row`` of ``hist`` as the card's fields."""
    inputs = [
        (emb.token_str(int(t)), int(p), float(v))
        for t, p, v in zip(hist.top_tokens[row], hist.top_positions[row], hist.top_values[row])
        if t >= 0
    ][:TOP_INPUTS]
    return {
        "histogram": hist.counts[row].copy(),
        "histogram_max": float(hist.max_activation[row]),
        "grid_inputs": hist.grid_size,
        "firing": int(hist.firing[row]),
        "top_inputs": inputs,
    }


def _card(
    stats_ctx: GridStats,
    profile: np.ndarray,
    row: object,
    emb: Embeddings,
    i: int,
    feature: int,
    context: int,
    sae_name: str,
    url: str | None,
    extras: dict[str, Any],
) -> FeatureCard:
    top = [
        (emb.token_str(int(t)), float(m))
        for t, m in zip(stats_ctx.top_tokens[i][:10], stats_ctx.top_token_means[i][:10])
    ]
    return FeatureCard(
        feature=feature,
        kind=str(row.kind),
        model=emb.name,
        sae=sae_name,
        context=context,
        position_share=float(row.position_share),
        token_share=float(row.token_share),
        interaction_share=float(row.interaction_share),
        fire=float(row.fire),
        peak_position=int(row.peak_position),
        peak_mean=float(row.peak_mean),
        span=(int(row.span_start), int(row.span_end)),
        runs=str(row.runs),
        top_tokens=top,
        profile=np.asarray(profile, dtype=np.float64),
        neuronpedia_url=url,
        **extras,
    )


def nearest_wpos(emb: Embeddings, sae: SAE, index: int, context: int) -> tuple[int, float]:
    """The W_pos row (of positions ``0..context-1``) nearest feature ``index``'s decoder direction,
    and their cosine."""
    d = sae.W_dec[int(index)].double()
    Wp = emb.W_pos[:context].double()
    cos = (Wp @ d) / (Wp.norm(dim=1) * d.norm()).clamp(min=1e-12)
    j = int(torch.argmax(cos))
    return j, float(cos[j])


def feature_card(
    emb: Embeddings,
    sae: SAE,
    index: int,
    *,
    device: str | torch.device | None = None,
    positional_share: float = 0.5,
    semantic_share: float = 0.5,
) -> FeatureCard:
    """The card of feature ``index``: exact statistics of that feature alone (it is independent of
    the others unless TopK)."""
    emb, sae = on_device(emb, sae, device)
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise PosfeatTypeError(
            f"Feature {shorten(repr(index))} is not a feature index; give an int from 0 to "
            f"{sae.d_sae - 1}."
        )
    if not 0 <= index < sae.d_sae:
        raise PosfeatError(
            f"Feature {index} is out of range; {sae.name} has features 0..{sae.d_sae - 1}."
        )
    ctx = sae_context(sae, emb.n_ctx)
    one = sae.subset([int(index)]) if sae.separable else sae
    i = 0 if sae.separable else int(index)
    st_all = feature_stats(emb, one, range(emb.n_ctx))
    st_ctx = feature_stats(emb, one, range(ctx))
    row = feature_table(st_ctx, emb, classify(st_ctx, positional_share, semantic_share)).iloc[i]
    npid = sae.meta.neuronpedia_id
    url = neuronpedia_url(npid, int(index)) if npid else None
    extras = card_extras(emb, sae, int(index), ctx, st_all, i)
    extras["nearest_wpos_row"], extras["decoder_cos_wpos"] = nearest_wpos(emb, sae, int(index), ctx)
    return _card(
        st_ctx, st_all.mean_by_position[i], row, emb, i, int(index), ctx, sae.name, url, extras
    )


def card_from_analysis(an: object, index: int) -> FeatureCard:
    """The card of feature ``index`` from an :class:`posfeat.Analysis` (its statistics; the
    histogram, top inputs and logit effects of this one feature are computed here, exactly)."""
    d_sae = an.sae.d_sae
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise PosfeatTypeError(
            f"Feature {shorten(repr(index))} is not a feature index; give an int from 0 to "
            f"{d_sae - 1}."
        )
    if not 0 <= index < d_sae:
        raise PosfeatError(
            f"Feature {index} is out of range; {an.sae.name} has features 0..{d_sae - 1}."
        )
    row = an.features.iloc[int(index)]
    spur = an.spurious_by_feature
    hit = spur[spur.feature == int(index)] if len(spur) else spur
    pairs = int(hit.spurious_pairs.iloc[0]) if len(hit) else (0 if an.sae.separable else None)
    extras = card_extras(
        an.emb,
        an.sae,
        int(index),
        an.context,
        an.stats_all,
        int(index),
        pairs,
        an.stats_context.histograms,  # the report's, from the engine's pass
    )
    extras["nearest_wpos_row"], extras["decoder_cos_wpos"] = (
        int(row.nearest_wpos_row),
        float(row.decoder_cos_wpos),
    )
    return _card(
        an.stats_context,
        an.stats_all.mean_by_position[int(index)],
        row,
        an.emb,
        int(index),
        int(index),
        an.context,
        an.sae.name,
        an.neuronpedia_url(int(index)),
        extras,
    )
