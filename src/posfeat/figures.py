"""Figures of an analysis: static PNGs (matplotlib) and interactive plots (plotly), each labelled with model and SAE."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

if TYPE_CHECKING:
    from .analysis import Analysis

KIND_COLORS = {"positional": "#d62728", "semantic": "#1f77b4", "mixed": "#9467bd", "dead": "#7f7f7f"}


def _label(an: Analysis) -> str:
    return f"{an.emb.name}  x  {an.sae.name}  (context {an.context})"


def save_figure(fig: plt.Figure, title: str, label: str, path: Path) -> Path:
    """Title a figure with what it shows and the model/SAE it came from, write it as PNG and close it."""
    fig.suptitle(f"{title}\n{label}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _finish(fig: plt.Figure, an: Analysis, title: str, path: Path) -> Path:
    return save_figure(fig, title, _label(an), path)


def _by_position_axes(an: Analysis, axes: tuple[plt.Axes, ...]) -> None:
    """Position on x, the training context marked, a legend: the frame of every by-position panel."""
    for ax in axes:
        ax.set_xlabel("position")
        _ctx_line(ax, an)
        ax.legend(fontsize=7)


def _ctx_line(ax: plt.Axes, an: Analysis) -> None:
    ax.axvline(an.context - 0.5, color="k", ls="--", lw=0.8, label=f"training context ({an.context})")


def disjointness(an: Analysis, path: Path) -> Path:
    f = an.features[an.features.kind != "dead"]
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for kind, g in f.groupby("kind"):
        ax.scatter(g.token_share, g.position_share, s=6, alpha=0.6, c=KIND_COLORS[kind], label=f"{kind} ({len(g)})")
    ax.set_xlabel("token share of variance")
    ax.set_ylabel("position share of variance")
    ax.plot([0, 1], [1, 0], color="k", lw=0.5, alpha=0.4)
    ax.legend(fontsize=7)
    frac = an.summary.get("disjoint_fraction", float("nan"))
    ax.set_title(f"{frac:.1%} of live features have max share >= 0.9", fontsize=8)
    return _finish(fig, an, "Positional and semantic features are (almost) disjoint", path)


def positional_scores(an: Analysis, path: Path) -> Path:
    s = np.sort(an.features.positional_score.to_numpy())[::-1]
    knee = an.summary.get("positional_score_knee", 0)
    fig, ax = plt.subplots(figsize=(6, 4))
    n = min(len(s), max(200, 4 * knee))
    ax.plot(np.arange(1, n + 1), s[:n], lw=1)
    if knee:
        ax.axvline(knee, color="r", ls=":", label=f"knee: {knee} features")
    ax.set_xlabel("rank")
    ax.set_ylabel("positional score (max over positions of mean activation)")
    ax.legend(fontsize=8)
    return _finish(fig, an, "Sorted positional score drops off fast (the note's method)", path)


def positional_profiles(an: Analysis, path: Path, *, extended: bool = False) -> Path:
    feats = an.positional
    st = an.stats_all if extended else an.stats_context
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [1, 1.3]})
    if len(feats):
        ax0.imshow(st.mean_by_position[feats], aspect="auto", cmap="viridis", interpolation="nearest")
        ax0.set_ylabel("positional feature (sorted by peak)")
        ax0.set_xlabel("position")
        cmap = plt.get_cmap("plasma")
        peaks = an.features.peak_position.to_numpy()[feats]
        for i, f in enumerate(feats):
            m = st.mean_by_position[f]
            sd = st.std_by_position[f]
            c = cmap(peaks[i] / max(1, an.context - 1))
            ax1.plot(st.positions, m, color=c, lw=0.9)
            ax1.fill_between(st.positions, m - sd, m + sd, color=c, alpha=0.08)
        ax1.set_xlabel("position")
        ax1.set_ylabel("mean activation over tokens (band: +/- std)")
        if extended:
            _ctx_line(ax0, an)
            _ctx_line(ax1, an)
            ax1.legend(fontsize=7)
    title = ("Positional features extended past the training context (note's Fig. 7)" if extended
             else "Positional features tile the positions (note's Figs. 2 and 4)")
    return _finish(fig, an, title, path)


def preactivations(an: Analysis, path: Path) -> Path:
    feats = an.positional
    fig, ax = plt.subplots(figsize=(7, 4))
    cmap = plt.get_cmap("plasma")
    peaks = an.features.peak_position.to_numpy()
    for f in feats:
        ax.plot(an.stats_all.positions, an.stats_all.pre_mean_by_position[f], color=cmap(peaks[f] / max(1, an.context - 1)), lw=0.8)
    ax.axhline(0, color="k", lw=0.5)
    _ctx_line(ax, an)
    ax.set_xlabel("position")
    ax.set_ylabel("mean pre-activation")
    return _finish(fig, an, "Pre-activations of positional features are close to sinusoids", path)


def coverage(an: Analysis, path: Path) -> Path:
    f = an.features[(an.features.kind == "positional") & (an.features.span_width > 0)]
    per_pos = np.zeros(an.context)
    for s, e in zip(f.span_start, f.span_end):
        per_pos[int(s): int(e) + 1] += 1
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4))
    ax0.bar(np.arange(an.context), per_pos, width=1.0)
    ax0.set_xlabel("position")
    ax0.set_ylabel("positional features whose span covers it")
    ax1.scatter(f.peak_position, f.span_width, s=12, c=f.peak_mean, cmap="viridis")
    ax1.set_xlabel("peak position")
    ax1.set_ylabel("span width (positions firing on >= 50% of tokens)")
    ax1.set_title("colour: mean activation at peak", fontsize=8)
    return _finish(fig, an, "Early positions get dedicated features, later ones share", path)


def helix_static(an: Analysis, path: Path) -> Path:
    pts, feats, fpts, peaks = helix_points(an)
    fig = plt.figure(figsize=(8.5, 7))
    ax = fig.add_subplot(projection="3d")
    ax.scatter(pts[:, 0], pts[:, 1], pts[:, 2], c=an.pca.positions, cmap="plasma", s=8, label="W_pos rows")
    if len(feats):
        ax.scatter(fpts[:, 0], fpts[:, 1], fpts[:, 2], c=peaks, cmap="plasma", marker="x", s=40, label="positional features")
    ax.set_xlabel("PC1")
    ax.set_ylabel("PC2")
    ax.set_zlabel("PC3")
    ax.legend(fontsize=7)
    ax.set_title(f"top 3 PCs explain {an.pca.top(3):.1%} of W_pos rows {an.pca.positions.min()}..{an.pca.positions.max()}", fontsize=8)
    return _finish(fig, an, "Decoder directions of positional features trace the helix (note's Fig. 1)", path)


def helix_points(an: Analysis) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """W_pos rows on the top 3 PCs, and positional features' decoder directions (scaled to the helix radius).

    Position-0 features are left out (reported separately), as in the note.
    """
    pts = an.pca.project(an.emb.W_pos[an.pca.positions].numpy())
    f = an.features
    sel = f[(f.kind == "positional") & (f.peak_position > 0)]
    feats = sel.feature.to_numpy()
    W = an.sae.W_dec[torch.as_tensor(np.array(feats, dtype=np.int64))].double().numpy()
    proj = an.pca.project(W, center=False)
    radius = np.linalg.norm(pts, axis=1).mean()
    norm = np.linalg.norm(proj, axis=1, keepdims=True)
    fpts = proj / np.where(norm > 0, norm, 1) * radius
    return pts, feats, fpts, sel.peak_position.to_numpy()


def token_features(an: Analysis, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 4))
    pos = an.stats_all.positions
    for j, f in enumerate(an.token_features):
        kind = an.features.kind.iat[int(f)]
        ax.plot(pos, an.token_profile[:, j], lw=1, color=KIND_COLORS[kind], alpha=0.85,
                label=f"#{int(f)} ({kind})" if j < 10 else None)
    _ctx_line(ax, an)
    ax.set_xlabel("position")
    ax.set_ylabel("activation")
    ax.legend(fontsize=6, ncol=2)
    return _finish(fig, an, f"Top features of token {an.emb.token_str(an.token)!r}: flat lines and bumps (note's Fig. 5)", path)


def length_generalisation(an: Analysis, path: Path) -> Path:
    bp = an.by_position
    fig, axs = plt.subplots(1, 3, figsize=(14, 4))
    axs[0].plot(bp.position, bp.fvu, label="SAE")
    axs[0].plot(bp.position, bp.random_fvu, label="random vector of the input's norm", alpha=0.8)
    axs[0].plot(bp.position, bp.zero_fvu, label="zero reconstruction", alpha=0.8)
    axs[0].set_yscale("log")
    axs[0].set_ylabel("FVU")
    axs[1].plot(bp.position, bp.cosine, label="SAE")
    axs[1].plot(bp.position, bp.random_cosine, label="random", alpha=0.8)
    axs[1].set_ylabel("cosine(x_hat, x)")
    axs[2].plot(bp.position, bp.l0)
    axs[2].set_ylabel("L0")
    for ax in axs:
        ax.set_xlabel("position")
        _ctx_line(ax, an)
        ax.legend(fontsize=7)
    return _finish(fig, an, f"Length generalisation: reconstruction by position ({an.sample.how}) (note's Fig. 6)", path)


def apparent(an: Analysis, path: Path) -> Path:
    bp = an.by_position
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.plot(bp.position, bp.position, color="k", lw=0.6, label="true position")
    ax.scatter(bp.position, bp.apparent_position, s=5, c=np.where(bp.in_context, "#1f77b4", "#d62728"), label="apparent position")
    _ctx_line(ax, an)
    ax.set_xlabel("true position")
    ax.set_ylabel("apparent position (peak of positional features firing)")
    ax.legend(fontsize=7)
    return _finish(fig, an, "Past the context the SAE thinks it is at an earlier position", path)


def semantic_breakage(an: Analysis, path: Path) -> Path:
    bp = an.by_position
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4))
    ax0.plot(bp.position, bp.spurious_per_token)
    ax0.set_ylabel("spurious features per token (exact, all tokens)")
    ax1.plot(bp.position, bp.semantic_spread)
    ax1.set_ylabel("|activation - in-context mean|, semantic features")
    _by_position_axes(an, (ax0, ax1))
    return _finish(fig, an, "Semantic features break past the context: noise and spurious firing", path)


def attribution(an: Analysis, path: Path) -> Path:
    bp = an.by_position
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(12, 4))
    ax0.plot(bp.position, bp.pc_error_share)
    ax0.set_ylabel("share of squared error in top-3 W_pos PCs")
    ax1.plot(bp.position, bp.fvu, label="SAE")
    ax1.plot(bp.position, bp.addback_fvu, label="non-positional features + true W_pos row")
    ax1.set_yscale("log")
    ax1.set_ylabel("FVU")
    _by_position_axes(an, (ax0, ax1))
    return _finish(fig, an, "Where the error past the context comes from", path)


#: name -> (function, caption); one PNG each in figures/.
FIGURES = {
    "disjointness": (disjointness, "Position share against token share of variance, every live feature."),
    "positional_score": (positional_scores, "Sorted positional scores (the note's method) with the knee."),
    "positional_profiles": (positional_profiles, "Mean activation by position (band: spread over tokens), positional features by peak."),
    "preactivations": (preactivations, "Mean pre-activation of positional features over all positions."),
    "coverage": (coverage, "Features per position, and span width against peak position."),
    "helix": (helix_static, "W_pos rows (dots) and positional features' decoder directions (crosses) on the top 3 PCs."),
    "token_features": (token_features, "Top features of one token by position."),
    "length_generalisation": (length_generalisation, "FVU, cosine and L0 by position, with baselines."),
    "extended_profiles": (lambda an, p: positional_profiles(an, p, extended=True), "Positional features past the context."),
    "apparent_position": (apparent, "Apparent against true position."),
    "semantic_breakage": (semantic_breakage, "Spurious firing and noise of semantic features by position."),
    "attribution": (attribution, "Error share in the W_pos principal subspace; the add-back test."),
}


def interactive_helix(an: Analysis, include_js: bool) -> str:
    import plotly.graph_objects as go

    pts, feats, fpts, peaks = helix_points(an)
    fig = go.Figure()
    fig.add_trace(go.Scatter3d(x=pts[:, 0], y=pts[:, 1], z=pts[:, 2], mode="markers", name="W_pos rows",
                               text=[f"position {p}" for p in an.pca.positions],
                               marker={"size": 3, "color": an.pca.positions, "colorscale": "Plasma"}))
    if len(feats):
        fig.add_trace(go.Scatter3d(x=fpts[:, 0], y=fpts[:, 1], z=fpts[:, 2], mode="markers", name="positional features",
                                   text=[f"feature {f}, peak {p}" for f, p in zip(feats, peaks)],
                                   marker={"size": 5, "symbol": "x", "color": peaks, "colorscale": "Plasma"}))
    fig.update_layout(title=f"Helix: {_label(an)}", height=600, margin={"l": 0, "r": 0, "t": 40, "b": 0})
    return fig.to_html(full_html=False, include_plotlyjs=include_js, include_mathjax=False, div_id="helix")


def interactive_profiles(an: Analysis, include_js: bool) -> str:
    import plotly.graph_objects as go

    fig = go.Figure()
    st = an.stats_all
    for f in an.positional:
        fig.add_trace(go.Scatter(x=st.positions, y=st.mean_by_position[f], mode="lines", name=f"#{int(f)}", line={"width": 1}))
    fig.add_vline(x=an.context - 0.5, line_dash="dash")
    fig.update_layout(title=f"Positional feature profiles over all positions: {_label(an)}", height=450,
                      xaxis_title="position", yaxis_title="mean activation over tokens")
    return fig.to_html(full_html=False, include_plotlyjs=include_js, include_mathjax=False, div_id="profiles")
