"""Figures of an analysis: static matplotlib figures and interactive plotly ones, drawn from
numpy/pandas only.

Figures are plain ``matplotlib.figure.Figure`` objects, not pyplot's: nothing global changes (no
backend is forced, notebooks show them inline) and nothing accumulates. Every figure is titled with
what it shows and the model/SAE it came from, uses a constrained
layout (no clipped text), puts a colourbar on every colour scale, and shows at most a readable
number of curves (small multiples or an evenly spread subset instead of dozens overlaid).
:func:`make_figure` returns the figure for a name in :data:`FIGURES` or :data:`INTERACTIVE`.
"""

from __future__ import annotations

import base64
import textwrap
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib
import numpy as np
from matplotlib import patheffects
from matplotlib.figure import Figure

if TYPE_CHECKING:
    from ..analyses.analysis import Analysis

KIND_COLORS = {
    "positional": "#d62728",
    "semantic": "#1f77b4",
    "mixed": "#9467bd",
    "dead": "#7f7f7f",
}
KIND_STYLES = {"positional": "--", "semantic": "-", "mixed": ":", "dead": "-."}
MAX_CURVES = 8
MAX_PANELS = 16


def label(an: Analysis) -> str:
    return f"{an.emb.name} x {an.sae.name} (context {an.context})"


def new_figure(
    width: float, height: float, title: str, subtitle: str, **kw: Any
) -> tuple[Figure, Any]:
    """A figure with a constrained layout and a title wrapped to its width; returns ``(fig,
    axes)``."""
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(**kw)
    chars = max(40, int(width * 13))
    fig.suptitle(
        "\n".join([*balanced_wrap(title, chars), *balanced_wrap(subtitle, int(chars * 1.15))]),
        fontsize=9,
    )
    return fig, axes


def balanced_wrap(text: str, chars: int) -> list[str]:
    """``text`` in as few lines of at most ``chars`` characters as :func:`textwrap.wrap` needs, each
    as short as that number
    of lines allows: the lines come out of even length, so no word is left alone on the last one."""
    lines = textwrap.wrap(text, chars)
    if len(lines) < 2:
        return lines
    for width in range(len(text) // len(lines), chars):
        even = textwrap.wrap(text, width)
        if len(even) == len(lines):
            return even
    return lines


#: zlib's level for the PNGs: the GPT-2 stand-in's 15 figures take 0.3 s less to write at 1 than at
# zlib's default 6 (4.1 -> 3.8 s of drawing on a 2-core AVX-512 Xeon) for 6% more bytes (1.42 ->
# 1.51 MB); Pillow's ``optimize`` saves about 2% of the bytes for a third more time.
PNG_COMPRESS_LEVEL = 1


def save_figure(fig: Figure, path: Path, dpi: int = 100) -> Path:
    """Write ``fig`` as PNG at zlib's fastest level (:data:`PNG_COMPRESS_LEVEL`)."""
    fig.savefig(path, dpi=dpi, format="png", pil_kwargs={"compress_level": PNG_COMPRESS_LEVEL})
    return path


def png_data_uri(path: Path) -> str:
    """A PNG file as a ``data:`` URI (how report.html and sweep sections embed figures)."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode()


def spread_subset(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of up to ``k`` entries of sorted ``values`` spread evenly over them."""
    if len(values) <= k:
        return np.arange(len(values))
    return np.unique(np.linspace(0, len(values) - 1, k).round().astype(int))


def context_line(ax: Any, an: Analysis, legend: bool = True, on_dark: bool = False) -> None:
    """The end of the training context, dashed: black on a light background; ``on_dark`` (a
    heatmap), white with a black outline, which stands out from every colour of viridis, its darkest
    purple and its brightest yellow alike."""
    label = f"end of training context ({an.context})" if legend else None
    if on_dark:
        ax.axvline(
            an.context - 0.5,
            color="white",
            ls="--",
            lw=1.2,
            label=label,
            path_effects=[
                patheffects.Stroke(linewidth=2.6, foreground="black"),
                patheffects.Normal(),
            ],
        )
    else:
        ax.axvline(an.context - 0.5, color="k", ls="--", lw=0.8, label=label)


# ---------------------------------------------------------------------------- the figures
def disjointness(an: Analysis) -> Figure:
    """Each live feature's token dependence against its position dependence (features.csv): a
    feature that depends on one axis only sits near an axis, inside the dotted band of the rule; the
    numbers (value, per kind, the random dictionary's null) are in the legend, outside the axes,
    where they hide no point."""
    from ..analyses.findings import DISJOINT, headline

    f = an.features[an.features.kind != "dead"]
    fig, ax = new_figure(
        6.4, 6.2, "How far each feature strays along each axis of the grid", label(an)
    )
    cut = an.rules.disjoint_cv
    ax.axvspan(0, cut, color="#999999", alpha=0.12, lw=0)
    ax.axhspan(0, cut, color="#999999", alpha=0.12, lw=0)
    ax.axvline(cut, color="k", ls=":", lw=0.7)
    ax.axhline(cut, color="k", ls=":", lw=0.7)
    for kind, g in f.groupby("kind"):
        ax.scatter(
            g.token_dependence,
            g.position_dependence,
            s=7,
            alpha=0.6,
            c=KIND_COLORS[kind],
            label=f"{kind} ({len(g)})",
        )
    d = an.findings.get(DISJOINT.key, {})
    value, null = headline(DISJOINT.key, d) if d else ("n/a", "n/a")
    ax.set(
        xlabel="token dependence (RMS variation across tokens at fixed position / RMS activation)",
        ylabel="position dependence (across positions at fixed token / RMS)",
        xlim=(-0.02, 1.02),
        ylim=(-0.02, 1.02),
    )
    ax.legend(
        fontsize=8,
        loc="upper left",
        bbox_to_anchor=(0.0, -0.13),
        ncol=3,
        frameon=False,
        title=f"one axis only (grey bands, <= {cut}): {value}\nnull: {null} ("
        f"{d.get('verdict', 'no verdict')})",
        title_fontsize=8,
    )
    return fig


def positional_scores(an: Analysis) -> Figure:
    s = np.sort(an.features.positional_score.to_numpy())[::-1]
    kv = an.summary.get("knee_vs_rule", {})
    knee, gap = kv.get("kneedle", {}).get("count", 0), kv.get("largest_gap", {}).get("count", 0)
    window = int(kv.get("kneedle", {}).get("window") or 0)
    fig, ax = new_figure(
        6.8,
        4.6,
        "Sorted positional scores (max over positions of the mean activation), with the Kneedle "
        "window",
        label(an),
    )
    n = min(len(s), max(200, 4 * max(knee, gap), window))
    ax.plot(np.arange(1, n + 1), s[:n], lw=1, color="k", label="positional score")
    if gap:
        ax.axvline(
            gap + 0.5, color="#d62728", ls="-", lw=1, label=f"largest gap (ratio): {gap} features"
        )
    if knee:
        ax.axvline(
            knee + 0.5,
            color="#1f77b4",
            ls=":",
            lw=1.2,
            label=f"Kneedle knee (top {kv['kneedle'].get('window')}): {knee}",
        )
    if window and window <= len(s):
        ax.axvspan(
            1, window, color="#1f77b4", alpha=0.06, lw=0, label=f"Kneedle window (top {window})"
        )
    ax.set(xlabel="rank (log scale)", ylabel="positional score", xscale="log")
    ax.legend(fontsize=7)
    return fig


def _heatmap(fig: Figure, ax: Any, data: np.ndarray, xlabel: str, ylabel: str, cbar: str) -> None:
    im = ax.imshow(data, aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set(xlabel=xlabel, ylabel=ylabel)
    fig.colorbar(im, ax=ax, label=cbar, shrink=0.9)


def positional_profiles(an: Analysis, extended: bool = False) -> Figure:
    feats = an.positional
    st = an.stats_all if extended else an.stats_context
    title = (
        "Positional features extended past the training context (note's Fig. 7)"
        if extended
        else "Mean activation by position of the positional features (note's Figs. 2 and 4)"
    )
    fig, (ax0, ax1) = new_figure(
        12.5, 4.8, title, label(an), ncols=2, gridspec_kw={"width_ratios": [1, 1.2]}
    )
    if not len(feats):
        ax0.text(0.5, 0.5, "no positional features", ha="center", transform=ax0.transAxes)
        return fig
    prof = st.mean_by_position[feats]
    _heatmap(
        fig,
        ax0,
        prof / np.maximum(prof.max(1, keepdims=True), 1e-12),
        "position",
        f"{len(feats)} positional features, by peak",
        "mean activation / the feature's maximum",
    )
    pick = feats[spread_subset(feats, MAX_CURVES)]
    colors = matplotlib.colormaps["tab10"]
    for i, f in enumerate(pick):
        m, sd = st.mean_by_position[f], st.std_by_position[f]
        ax1.plot(
            st.positions,
            m,
            color=colors(i % 10),
            lw=1.1,
            label=f"#{int(f)} (peak {int(an.features.peak_position.iat[int(f)])})",
        )
        ax1.fill_between(
            st.positions, np.maximum(m - sd, 0), m + sd, color=colors(i % 10), alpha=0.22, lw=0
        )
    ax1.set(xlabel="position", ylabel="mean activation over tokens (band: +/- 1 std)")
    if extended:
        context_line(ax0, an, legend=False, on_dark=True)
        context_line(ax1, an)
    ax1.legend(
        fontsize=8,
        title=f"{len(pick)} of {len(feats)},\nevenly by peak",
        title_fontsize=8,
        loc="upper left",
        alignment="left",
        bbox_to_anchor=(1.01, 1.0),
    )  # beside the axes: over them it hid the last feature's peak
    return fig


def preactivations(an: Analysis) -> Figure:
    feats = an.positional
    pick = feats[spread_subset(feats, MAX_PANELS)]
    cols = 4
    rows = max(1, int(np.ceil(len(pick) / cols)))
    fig, axs = new_figure(
        12.5,
        2.2 * rows + 0.8,
        "Mean pre-activation of positional features over all studied positions "
        f"({len(pick)} of {len(feats)}, evenly by peak)",
        label(an),
        nrows=rows,
        ncols=cols,
        sharex=True,
        squeeze=False,
    )
    st = an.stats_all
    for ax, f in zip(axs.flat, pick):
        ax.plot(st.positions, st.pre_mean_by_position[f], color="#d62728", lw=1)
        ax.axhline(0, color="k", lw=0.5)
        context_line(ax, an, legend=False)
        ax.set_title(f"#{int(f)}, peak {int(an.features.peak_position.iat[int(f)])}", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.locator_params(
            nbins=4
        )  # a few ticks per panel: readable at this size, and far less text to lay out
    for ax in list(axs.flat)[len(pick) :]:
        ax.axis("off")
    for col in range(cols):  # the lowest panel in use of each column carries the axis label
        used = [r for r in range(rows) if r * cols + col < len(pick)]
        if used:
            axs[used[-1], col].set_xlabel("position", fontsize=8)
            axs[used[-1], col].xaxis.set_tick_params(labelbottom=True)
    return fig


def coverage(an: Analysis) -> Figure:
    from ..analyses.findings import coverage_by_runs

    f = an.features[(an.features.kind == "positional") & (an.features.span_width > 0)]
    fig, (ax0, ax1) = new_figure(
        12,
        4.4,
        "Positional features over the positions: how many fire at each, and how wide and strong "
        "they are",
        label(an),
        ncols=2,
    )
    ax0.bar(
        np.arange(an.context), coverage_by_runs(an.features, an.context), width=1.0, color="#d62728"
    )
    ax0.set(xlabel="position", ylabel="positional features firing there (all runs)")
    sc = ax1.scatter(f.peak_position, f.span_width, s=14, c=f.peak_mean, cmap="viridis")
    fig.colorbar(sc, ax=ax1, label="mean activation at the peak")
    ax1.set(xlabel="peak position", ylabel="main span width (positions)")
    return fig


def helix_static(an: Analysis) -> Figure:
    h = an.helix
    fig = Figure(figsize=(8.5, 7.2), layout="constrained")
    fig.suptitle(
        "\n".join(
            [
                "W_pos rows (dots) and positional features' decoder directions (crosses) on the top 3 PCs "
                "(note's Fig. 1); "
                f"top 3 PCs explain {an.pca.top(3):.1%}",
                label(an),
            ]
        ),
        fontsize=9,
    )
    ax = fig.add_subplot(projection="3d")
    sc = ax.scatter(
        h.rows[:, 0],
        h.rows[:, 1],
        h.rows[:, 2],
        c=h.positions,
        cmap="plasma",
        s=8,
        label="W_pos rows",
    )
    if len(h.features):
        ax.scatter(
            h.feature_points[:, 0],
            h.feature_points[:, 1],
            h.feature_points[:, 2],
            c=h.peaks,
            cmap="plasma",
            marker="x",
            s=40,
            vmin=h.positions.min(),
            vmax=h.positions.max(),
            label="positional features (at their peak's colour)",
        )
    ax.set(xlabel="PC1", ylabel="PC2", zlabel="PC3")
    fig.colorbar(sc, ax=ax, label="position", shrink=0.6)
    ax.legend(fontsize=7, loc="upper left")
    return fig


def token_features(an: Analysis) -> Figure:
    """Top features of a few tokens by position (note's Fig. 5): the chosen token on top, over every
    position and again over the first few (its features' fine structure, e.g. two interaction
    features alternating every few positions, is a solid band at full range), the frequent and the
    most bent ones below. Each non-positional feature is a line of its own colour with its own
    legend entry; the token's positional features are thin lines of one colour under one entry
    (their bumps, not their identities, are the point)."""
    panels = an.token_panels or [(an.token, "chosen", an.token_features, an.token_profile)]
    rest = panels[1:]
    fig = Figure(figsize=(12.5, 4.0 + (4.1 if rest else 0)), layout="constrained")
    title = (
        "Top features of tokens by position (note's Fig. 5): non-positional features in colour, "
        "positional ones thin red; "
        "rings: interaction share of at least 0.3"
    )
    fig.suptitle(
        "\n".join([*balanced_wrap(title, 160), *balanced_wrap(label(an), 180)]), fontsize=9
    )
    grid = fig.add_gridspec(2 if rest else 1, 1, height_ratios=[1, 1.05] if rest else None)
    top = grid[0].subgridspec(1, 2, width_ratios=[2.3, 1])
    main, zoom = fig.add_subplot(top[0]), fig.add_subplot(top[1])
    below = [fig.add_subplot(cell) for cell in grid[1].subgridspec(1, len(rest))] if rest else []
    pos = an.stats_all.positions
    first = pos < min(48, an.context)
    tid, why, feats, prof = panels[0]
    _token_panel(
        an,
        main,
        pos,
        feats,
        prof,
        f"{an.emb.token_str(int(tid))!r} ({why}): its top {len(feats)} features",
        legend=True,
    )
    _token_panel(
        an,
        zoom,
        pos[first],
        feats,
        prof[first],
        f"the same, positions 0..{int(pos[first].max())}",
        legend=False,
    )
    handles, labels = main.get_legend_handles_labels()
    zoom.legend(handles, labels, fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    for ax, (tid, why, feats, prof) in zip(below, rest):
        _token_panel(
            an,
            ax,
            pos,
            feats,
            prof,
            f"{an.emb.token_str(int(tid))!r} ({why}): its top {len(feats)} features",
            legend=False,
        )
        ax.legend(
            *ax.get_legend_handles_labels(),
            fontsize=8,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.2),
            ncol=1 if len(rest) > 2 else 2,
        )
    return fig


def _token_panel(
    an: Analysis,
    ax: Any,
    pos: np.ndarray,
    feats: np.ndarray,
    prof: np.ndarray,
    title: str,
    legend: bool,
) -> None:
    """One token's top features on ``ax``: non-positional ones first in the legend, then one entry
    for the positional ones."""
    colors = [
        c for i, c in enumerate(matplotlib.colormaps["tab10"].colors) if i != 3
    ]  # tab10 without its red, the positional colour
    rows = [(j, an.features.iloc[int(f)]) for j, f in enumerate(feats)]
    positional = [j for j, row in rows if row.kind == "positional"]
    for c, (j, row) in enumerate([(j, row) for j, row in rows if row.kind != "positional"]):
        flag = np.nan_to_num(row.interaction_share) >= 0.3
        ax.plot(
            pos,
            prof[:, j],
            lw=1.2,
            color=colors[c % len(colors)],
            ls=KIND_STYLES[row.kind],
            marker="o" if flag else None,
            markevery=max(1, len(an.stats_all.positions) // 12),
            mfc="none",  # rings as far apart in the zoom as at full range
            label=f"#{int(feats[j])} {row.kind}" + (" (interaction)" if flag else ""),
        )
    for i, j in enumerate(positional):
        ax.plot(
            pos,
            prof[:, j],
            lw=0.7,
            color=KIND_COLORS["positional"],
            alpha=0.55,
            label=None
            if i
            else f"{len(positional)} positional feature{'s' if len(positional) > 1 else ''} (thin)",
        )
    if pos.max() >= an.context:
        context_line(ax, an, legend=legend)
    ax.set_title(title, fontsize=9)
    ax.set(xlabel="position", ylabel="activation")


def _wpos_rows(an: Analysis) -> np.ndarray:
    """W_pos's studied rows, float64 (from the model's tensor)."""
    n = int(an.by_position.position.max()) + 1
    return np.asarray(an.emb.W_pos[:n].detach().cpu().double().numpy())


def _semantic_split(an: Analysis) -> tuple[np.ndarray, Any] | None:
    """The features :func:`semantic_profiles` draws (the semantic ones firing spuriously most often,
    else those of the highest token score) and their behaviour on their own tokens and spurious
    firing (:func:`~posfeat.analyses.length.own_and_spurious`, from the SAE's tensors); None for a
    non-separable SAE (drawn from the grid statistics alone)."""
    from ..analyses.length import own_and_spurious

    if not an.sae.separable:
        return None
    byf = an.spurious_by_feature
    sem = (
        byf[byf.kind == "semantic"].feature.to_numpy()[:6] if len(byf) else np.array([], dtype=int)
    )
    if not len(sem):
        sem = (
            an.features[an.features.kind == "semantic"]
            .sort_values("token_score", ascending=False)
            .feature.to_numpy()[:6]
        )
    return sem, own_and_spurious(an.emb, an.sae, an.stats_all, sem, an.context)


#: The part of a figure read from the model's tensors through torch, by figure: made by
# :func:`torch_inputs` in the process that owns the tensors before it forks the processes that draw
# (a forked child must not start torch's threads), so any of them may draw the figure.
TORCH_INPUTS: dict[str, Callable[[Analysis], Any]] = {
    "wpos_similarity": _wpos_rows,
    "semantic_profiles": _semantic_split,
}
_made: dict[str, tuple[Analysis, Any]] = {}


@contextmanager
def torch_inputs(an: Analysis, names: Iterable[str]) -> Iterator[None]:
    """Make the :data:`TORCH_INPUTS` of ``an`` for the figures ``names`` now, for their drawing
    inside the block (and in the processes forked there) to read; forgotten after it."""
    made = {name: (an, TORCH_INPUTS[name](an)) for name in names if name in TORCH_INPUTS}
    _made.update(made)
    try:
        yield
    finally:
        for name, held in made.items():
            if _made.get(name) is held:
                del _made[name]


def torch_input(an: Analysis, name: str) -> Any:
    """Figure ``name``'s torch-side input: made by :func:`torch_inputs` for this very analysis
    where inside it, else now."""
    held = _made.get(name)
    return held[1] if held is not None and held[0] is an else TORCH_INPUTS[name](an)


def wpos_similarity(an: Analysis) -> Figure:
    """Cosine of every pair of W_pos rows (the note's discussion of W_pos), the context's edge
    marked."""
    W = torch_input(an, "wpos_similarity")
    n = len(W)
    Wn = W / np.maximum(np.linalg.norm(W, axis=1, keepdims=True), 1e-12)
    fig, ax = new_figure(
        7.2,
        6.2,
        f"Cosine similarity of W_pos rows 0..{n - 1}; dashed: the end of the training context ("
        f"{an.context})",
        label(an),
    )
    im = ax.imshow(
        Wn @ Wn.T, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest", origin="upper"
    )
    if an.context < n:
        for f in (ax.axvline, ax.axhline):
            f(an.context - 0.5, color="k", ls="--", lw=0.8)
    ax.set(xlabel="position", ylabel="position")
    fig.colorbar(im, ax=ax, label="cosine of the two rows", shrink=0.85)
    return fig


def sinusoid(an: Analysis) -> Figure:
    """How sinusoid-like the positional features' mean pre-activations are (features.csv:
    pre_sine_r2, pre_sine_cycles, pre_zero_crossings)."""
    f = an.features[an.features.kind != "dead"]
    pos = f[f.kind == "positional"]
    fig, (ax0, ax1) = new_figure(
        12,
        4.2,
        "Are positional pre-activations sinusoid-like? Share of each feature's in-context mean "
        "pre-activation variance explained by one sinusoid, and its frequency",
        label(an),
        ncols=2,
    )
    bins = np.linspace(0, 1, 26)
    for kind, g in f.groupby("kind"):
        ax0.hist(
            g.pre_sine_r2.dropna(),
            bins=bins,
            density=True,
            histtype="step",
            lw=1.3,
            color=KIND_COLORS[kind],
            label=f"{kind} ({len(g)})",
        )
    ax0.set(xlabel="variance explained by the best sinusoid (pre_sine_r2)", ylabel="density")
    ax0.legend(fontsize=7)
    if len(pos):
        r2 = pos.pre_sine_r2.to_numpy(float)
        lo, hi = (
            (float(np.nanmin(r2)), float(np.nanmax(r2))) if np.isfinite(r2).any() else (0.0, 1.0)
        )
        sc = ax1.scatter(
            pos.peak_position,
            pos.pre_sine_cycles,
            c=r2,
            cmap="viridis",
            vmin=lo,
            vmax=hi if hi > lo else lo + 1e-9,
            s=16,
        )
        fig.colorbar(sc, ax=ax1, label="pre_sine_r2")
    ax1.set(xlabel="peak position", ylabel=f"cycles over positions 0..{an.context - 1}")
    return fig


def semantic_profiles(an: Analysis) -> Figure:
    """A handful of semantic features across and past the context (the note's Fig. 8), chosen by
    their break (those firing spuriously most often), with their two behaviours apart, exact over
    the whole grid: on their own tokens (those firing them at some in-context position), relative to
    inside the context; and their spurious firing (tokens that fire them nowhere inside the
    context), as a share of the vocabulary. The title says where each starts to depart from inside
    the context."""
    if not an.sae.separable:
        return _semantic_profiles_all_tokens(an)
    sem, split = torch_input(an, "semantic_profiles")
    pos = split.positions
    rel = split.own_mean / np.where(split.own_inside > 0, split.own_inside, np.nan)[:, None]
    own_from, spur_from = departures(rel, split.spurious_share, pos, an.context)
    when = (
        f"on their own tokens they stay within their in-context range until position {own_from}"
        if own_from is not None
        else "on their own tokens they stay within their in-context range throughout"
    )
    when += (
        f"; spurious firing reaches 1% of the vocabulary at position {spur_from}"
        if spur_from is not None
        else "; spurious firing stays below 1% of the vocabulary"
    )
    fig, (ax0, ax1) = new_figure(
        12.5,
        4.9,
        f"Semantic features across and past the context (note's Fig. 8), the {len(sem)} firing "
        "spuriously "
        f"most often, exact over all tokens: {when} (training context {an.context})",
        label(an),
        ncols=2,
    )
    colors = matplotlib.colormaps["tab10"]
    for i, f in enumerate(split.features):
        lab = f"#{int(f)} ({int(split.own_tokens[i])} own tokens)"
        ax0.plot(pos, rel[i], color=colors(i % 10), lw=1, label=lab)
        ax1.plot(pos, 100 * split.spurious_share[i], color=colors(i % 10), lw=1)
    ax0.axhline(1, color="grey", lw=0.6)
    ax0.set(
        xlabel="position",
        ylabel="mean activation on its own tokens / inside the context",
        title="on its own tokens (those firing it at some in-context position)",
    )
    ax1.set(
        xlabel="position",
        ylabel="% of all tokens firing it spuriously",
        title="spurious: tokens firing it nowhere inside the context",
    )
    for ax, start in ((ax0, own_from), (ax1, spur_from)):
        ax.title.set_fontsize(8)
        context_line(ax, an, legend=ax is ax0)
        if start is not None:
            ax.axvline(
                start,
                color="#555555",
                ls=":",
                lw=1,
                label="departs from inside the context" if ax is ax0 else None,
            )
    fig.legend(*ax0.get_legend_handles_labels(), loc="outside lower center", ncol=4, fontsize=8)
    return fig


def departures(
    relative: np.ndarray,
    spurious_share: np.ndarray,
    positions: np.ndarray,
    context: int,
    share: float = 0.01,
) -> tuple[int | None, int | None]:
    """Where the features of :func:`semantic_profiles` start to behave differently from inside the
    context: the first position past it from which their mean relative activation on their own
    tokens stays outside its in-context range for 8 positions in a row, and the first where their
    mean spurious share reaches ``share`` of the vocabulary; None where neither happens."""
    mean_rel = np.nanmean(relative, axis=0) if len(relative) else np.zeros(len(positions))
    inside = positions < context
    own = None
    if inside.any() and (~inside).any():
        lo, hi = np.nanmin(mean_rel[inside]), np.nanmax(mean_rel[inside])
        out = ((mean_rel < lo) | (mean_rel > hi)) & ~inside
        run = np.convolve(out.astype(int), np.ones(8, dtype=int), mode="valid") == 8
        hits = np.nonzero(run)[0]
        own = int(positions[hits[0]]) if len(hits) else None
    mean_spur = spurious_share.mean(0) if len(spurious_share) else np.zeros(len(positions))
    hits = np.nonzero((mean_spur >= share) & ~inside)[0]
    return own, (int(positions[hits[0]]) if len(hits) else None)


def _semantic_profiles_all_tokens(an: Analysis) -> Figure:
    """Semantic profiles of a non-separable (TopK) SAE: its own tokens cannot be told from the rest
    without enumerating the grid, so this draws the mean over all tokens and the share firing, which
    mixes the two (the title says so)."""
    sem = (
        an.features[an.features.kind == "semantic"]
        .sort_values("token_score", ascending=False)
        .feature.to_numpy()[:6]
    )
    fig, (ax0, ax1) = new_figure(
        12.5,
        4.6,
        f"Semantic features across and past the context (note's Fig. 8): the {len(sem)} strongest, "
        "over all "
        "tokens (own tokens and spurious firing mixed: this SAE is not separable)",
        label(an),
        ncols=2,
    )
    st = an.stats_all
    colors = matplotlib.colormaps["tab10"]
    for i, f in enumerate(sem):
        ax0.plot(
            st.positions,
            st.mean_by_position[int(f)],
            color=colors(i % 10),
            lw=1,
            label=f"#{int(f)}",
        )
        ax1.plot(st.positions, st.fire_by_position[int(f)], color=colors(i % 10), lw=1)
    ax0.set(xlabel="position", ylabel="mean activation over all tokens")
    ax1.set(xlabel="position", ylabel="share of tokens on which it fires")
    for ax in (ax0, ax1):
        context_line(ax, an, legend=ax is ax0)
    fig.legend(*ax0.get_legend_handles_labels(), loc="outside lower center", ncol=7, fontsize=8)
    return fig


def robust_ylim(ax: Any, *series: Any, skip: int = 1) -> None:
    """A y-range from the 1st to the 99th percentile of the series (after the first ``skip``
    positions), padded: one outlier (position 0) does not flatten the rest."""
    vals = np.concatenate([np.asarray(v, dtype=float)[skip:] for v in series])
    vals = vals[np.isfinite(vals)]
    if len(vals):
        lo, hi = np.percentile(vals, [1, 99])
        pad = 0.08 * max(hi - lo, 1e-6)
        ax.set_ylim(lo - pad, hi + pad)


def length_generalisation(an: Analysis) -> Figure:
    bp = an.by_position
    fig, axs = new_figure(
        14,
        4.4,
        f"Reconstruction by position, with baselines (note's Fig. 6); {an.sample.how}",
        label(an),
        ncols=3,
    )
    axs[0].plot(bp.position, bp.fvu, label="SAE: FVU (posfeat, per position)")
    axs[0].plot(bp.position, bp.random_fvu, label="random vector of the input's norm", alpha=0.8)
    axs[0].plot(bp.position, bp.zero_fvu, label="zero reconstruction", alpha=0.8)
    axs[0].set(yscale="log", ylabel="FVU: squared error / token spread")
    axs[1].plot(bp.position, bp.explained_variance, label="SAE")
    axs[1].plot(
        bp.position, 1 - bp.random_fvu, label="random vector of the input's norm", alpha=0.8
    )
    axs[1].plot(bp.position, bp.zero_explained_variance, label="zero reconstruction", alpha=0.8)
    axs[1].set(ylabel="explained variance (SAELens formula)")
    robust_ylim(axs[1], bp.explained_variance, 1 - bp.random_fvu, bp.zero_explained_variance)
    axs[1].set_title(
        "y-range: 1st-99th percentile of positions 1..; position 0 may lie outside", fontsize=7
    )
    axs[2].plot(bp.position, bp.l0, color="k", label="SAE")
    axs[2].set(ylabel="L0 (active features per token)")
    for ax in axs:
        ax.set_xlabel("position")
        context_line(ax, an)
        ax.legend(
            fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2
        )  # below the axes, off the curves
    return fig


def apparent(an: Analysis) -> Figure:
    """What positional_break uses: the apparent position (activation-weighted peak of the firing
    positional features) and the nearest in-context W_pos row, against the true position; the peaks'
    10-90% band and how many fire behind them."""
    bp = an.by_position
    fig, ax = new_figure(
        7.5,
        5,
        "Apparent position and the nearest in-context W_pos row, against the true position",
        label(an),
    )
    ax.plot(bp.position, bp.position, color="k", lw=0.6, label="true position")
    ax.fill_between(
        bp.position,
        bp.peak_q10,
        bp.peak_q90,
        color="#1f77b4",
        alpha=0.15,
        lw=0,
        label="10-90% of the firing features' peaks",
    )
    ax.plot(
        bp.position,
        bp.nearest_context_row,
        color="#ff7f0e",
        lw=0,
        marker=".",
        ms=2.5,
        label="nearest in-context W_pos row (cosine)",
    )
    ax.plot(
        bp.position,
        bp.apparent_position,
        color="#1f77b4",
        lw=1,
        label="apparent position (activation-weighted peak)",
    )
    context_line(ax, an)
    ax.set(xlabel="true position", ylabel="position")
    ax2 = ax.twinx()
    ax2.plot(bp.position, bp.n_positional_firing, color="#d62728", lw=0.8, alpha=0.5)
    ax2.set_ylabel("positional features firing (red)", color="#d62728")
    ax.legend(fontsize=7, loc="upper left")
    return fig


def semantic_breakage(an: Analysis) -> Figure:
    bp = an.by_position
    fig, axs = new_figure(
        15,
        4.4,
        "Semantic features past the context: spurious firing (exact, all tokens) by position and by "
        "feature, "
        "and deviation from their in-context value",
        label(an),
        ncols=3,
        gridspec_kw={"width_ratios": [1.2, 1.2, 1]},
    )
    axs[0].plot(bp.position, bp.spurious_per_token, color="#9467bd")
    axs[0].set(ylabel="spurious features per token")
    edge = an.summary.get("bert_edge")
    if edge:
        axs[0].axvspan(
            edge["positions"][0] - 0.5,
            edge["positions"][1] + 0.5,
            color="orange",
            alpha=0.3,
            label="last 8 positions (BERT edge)",
        )
    axs[1].plot(bp.position, bp.semantic_spread, color="#1f77b4")
    axs[1].set(yscale="log", ylabel="mean |activation - in-context mean|")
    for ax in axs[:2]:
        ax.set_xlabel("position")
        context_line(ax, an)
        ax.legend(fontsize=7)
    top = an.spurious_by_feature.head(12)
    axs[2].barh(
        np.arange(len(top))[::-1],
        top.spurious_per_position,
        color=[KIND_COLORS.get(k, "#7f7f7f") for k in top.kind],
    )
    axs[2].set_yticks(
        np.arange(len(top))[::-1],
        [f"#{int(f)} {k}" for f, k in zip(top.feature, top.kind)],
        fontsize=7,
    )
    axs[2].set(
        xlabel="spurious (token, position) pairs per position",
        title="features firing most spuriously",
    )
    axs[2].title.set_fontsize(8)
    return fig


def attribution(an: Analysis) -> Figure:
    bp = an.by_position
    fig, (ax0, ax1) = new_figure(
        12.5, 4.4, "Where the error past the context comes from", label(an), ncols=2
    )
    ax0.plot(bp.position, bp.pc_error_share)
    ax0.set(ylabel="share of squared error in the top-3 W_pos PCs")
    ax1.plot(bp.position, bp.fvu, label="SAE")
    ax1.plot(bp.position, bp.addback_fvu, label="non-positional features + true W_pos row")
    ax1.set(yscale="log", ylabel="FVU")
    for ax in (ax0, ax1):
        ax.set_xlabel("position")
        context_line(ax, an)
        ax.legend(fontsize=7)
    return fig


#: name -> (function, caption); one PNG each in figures/.
FIGURES: dict[str, tuple[Callable[[Analysis], Figure], str]] = {
    "disjointness": (
        disjointness,
        "Position share against token share of variance, every live feature.",
    ),
    "positional_score": (
        positional_scores,
        "Sorted positional scores (the note's method) with the largest-gap cut and Kneedle's knee.",
    ),
    "positional_profiles": (
        positional_profiles,
        "Mean activation by position of the positional features (heatmap), and an evenly "
        "spread subset with +/- 1 std bands.",
    ),
    "preactivations": (
        preactivations,
        "Mean pre-activation of positional features over all studied positions (small multiples).",
    ),
    "coverage": (
        coverage,
        "Positional features firing at each position (all runs), and span width against peak "
        "position.",
    ),
    "helix": (
        helix_static,
        "W_pos rows (dots) and positional features' decoder directions (crosses) on the top 3 PCs.",
    ),
    "wpos_similarity": (
        wpos_similarity,
        "Cosine similarity of every pair of W_pos rows, with the end of the training context "
        "marked.",
    ),
    "sinusoid": (
        sinusoid,
        "How much of each feature's mean pre-activation one sinusoid explains, and its frequency "
        "(features.csv).",
    ),
    "token_features": (
        token_features,
        "Top features of a few tokens by position: the chosen one (over all positions and over the "
        "first few), frequent ones, the most bent one; positional features as thin red lines.",
    ),
    "length_generalisation": (
        length_generalisation,
        "FVU, explained variance and L0 by position, with baselines.",
    ),
    "extended_profiles": (
        lambda an: positional_profiles(an, extended=True),
        "Positional features past the context.",
    ),
    "apparent_position": (
        apparent,
        "Apparent position (activation-weighted peak of the firing positional features) and the "
        "nearest "
        "in-context W_pos row, against the true position.",
    ),
    "semantic_breakage": (
        semantic_breakage,
        "Spurious firing by position and by feature, and the noise of semantic features.",
    ),
    "semantic_profiles": (
        semantic_profiles,
        "Semantic features firing spuriously most often, across and past the context: on their own "
        "tokens (those firing them inside the context), relative to inside, apart from their "
        "spurious firing (tokens "
        "firing them nowhere inside), and the positions where each departs from inside the context.",
    ),
    "attribution": (attribution, "Error share in the W_pos principal subspace; the add-back test."),
}
