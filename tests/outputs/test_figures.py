"""Figures a researcher would put in a paper: no clipped text, colourbars on colour scales, readable
legends; an.figure(name) for every name."""

from __future__ import annotations

import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text

from posfeat import analyze, compare_saes
from posfeat.outputs.figures import FIGURES, balanced_wrap
from posfeat.outputs.interactive import INTERACTIVE
from posfeat.outputs.write import comparison_figure

from helpers import planted_pair, random_pair


@pytest.fixture(scope="module")
def an():
    emb, sae, _ = planted_pair()
    emb.name = (
        "a model with a rather long name to test that titles wrap instead of running off the figure"
    )
    return analyze(emb, sae, tokens_sample=24)


def drawn_texts(fig: plt.Figure) -> list[Text]:
    """Every text artist the figure draws: titles, labels, legends, annotations, and the tick labels
    inside the axes' view."""
    texts = list(fig.texts)
    for ax in fig.axes:
        if not ax.axison:
            continue
        texts += [ax.title, ax._left_title, ax._right_title, *ax.texts]
        legend = ax.get_legend()
        if legend is not None:
            texts += [*legend.get_texts(), legend.get_title()]
        for axis in [ax.xaxis, ax.yaxis, *([ax.zaxis] if hasattr(ax, "zaxis") else [])]:
            texts.append(axis.label)
            lo, hi = sorted(axis.get_view_interval())
            for tick in axis.get_major_ticks():
                if lo - 1e-9 * abs(hi - lo) <= tick.get_loc() <= hi + 1e-9 * abs(hi - lo):
                    texts += [t for t in (tick.label1, tick.label2) if t.get_visible()]
    return [t for t in texts if t.get_visible() and t.get_text().strip()]


def clipped_texts(fig: plt.Figure) -> list[str]:
    """Drawn text artists whose box leaves the figure (1 px tolerance)."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    box = fig.bbox
    out = []
    for t in drawn_texts(fig):
        bb = t.get_window_extent(renderer)
        if bb.x0 < box.x0 - 1 or bb.y0 < box.y0 - 1 or bb.x1 > box.x1 + 1 or bb.y1 > box.y1 + 1:
            out.append(repr(t.get_text()[:60]))
    return out


@pytest.mark.parametrize("name", list(FIGURES))
def test_no_text_is_clipped(name, an):
    fig = an.figure(name)
    try:
        assert clipped_texts(fig) == []
    finally:
        plt.close(fig)


@pytest.mark.parametrize("name", ["positional_profiles", "extended_profiles", "coverage", "helix"])
def test_colour_scales_have_colourbars(name, an):
    fig = an.figure(name)
    labels = [ax.get_ylabel() for ax in fig.axes]
    assert len(fig.axes) >= 2 and any(
        ("activation" in lab or "position" in lab) for lab in labels[1:]
    ), labels
    plt.close(fig)


def test_token_figure_gives_each_non_positional_feature_its_own_entry_and_the_positional_ones_one(
    an,
):
    fig = an.figure("token_features")
    main, zoom = fig.axes[0], fig.axes[1]
    kinds = an.features.kind.to_numpy()[an.token_features]
    own = [ln for ln in main.get_lines() if not ln.get_label().startswith(("_", "end of", "child"))]
    styles = {
        (ln.get_color(), ln.get_linestyle()) for ln in own if "positional" not in ln.get_label()
    }
    assert len(styles) == int((kinds != "positional").sum())  # told apart by colour and style
    legend = zoom.get_legend()
    texts = [t.get_text() for t in legend.get_texts()]
    assert all(t.get_fontsize() >= 8 for t in legend.get_texts())
    for f, k in zip(an.token_features, kinds):
        if k != "positional":
            assert any(t.startswith(f"#{int(f)} ") for t in texts), (f, texts)
    n_pos = int((kinds == "positional").sum())
    assert sum("positional feature" in t for t in texts) == (1 if n_pos else 0)
    assert len(main.get_lines()) >= len(
        an.token_features
    )  # every feature drawn, positional ones included
    assert zoom.get_xlim()[1] < main.get_xlim()[1]  # the zoom shows the first positions only
    plt.close(fig)


@pytest.mark.parametrize("name", list(FIGURES))
def test_legends_are_readable(name, an):
    fig = an.figure(name)
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None] + list(
        fig.legends
    )
    for legend in legends:
        assert all(t.get_fontsize() >= 7 for t in legend.get_texts()), name
    plt.close(fig)


@pytest.mark.parametrize("name", list(FIGURES))
def test_titles_wrap_without_leaving_a_word_alone(name, an):
    lines = an.figure(name)._suptitle.get_text().split("\n")
    assert all(len(line.split()) >= 2 for line in lines), lines


def test_balanced_wrap_keeps_the_line_count_and_evens_the_lines():
    text = "Sorted positional scores (max over positions of the mean activation), with the Kneedle window"
    assert [len(line) for line in textwrap.wrap(text, 88)][-1] == len("window")
    lines = balanced_wrap(text, 88)
    assert len(lines) == 2 and " ".join(lines) == text and abs(len(lines[0]) - len(lines[1])) <= 12
    assert balanced_wrap("short", 88) == ["short"]


def test_disjointness_keeps_its_legend_off_every_point(an):
    """The legend (which carries the numbers and the null) lies wholly below the axes, where it
    hides no point, and no other text sits inside the axes."""
    fig = an.figure("disjointness")
    ax = fig.axes[0]
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    legend = ax.get_legend().get_window_extent(canvas.get_renderer())
    assert legend.y1 <= ax.get_window_extent(canvas.get_renderer()).y0, (
        legend,
        ax.get_window_extent(),
    )
    assert len(ax.texts) == 0
    assert "random dictionary" in ax.get_legend().get_title().get_text()
    plt.close(fig)


def _luminance(rgb):
    c = np.asarray(matplotlib.colors.to_rgb(rgb))
    c = np.where(c <= 0.03928, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return float(c @ [0.2126, 0.7152, 0.0722])


def _contrast(a, b):
    la, lb = sorted([_luminance(a), _luminance(b)])
    return (lb + 0.05) / (la + 0.05)


def test_extended_profiles_context_line_stands_out_on_the_heatmap(an):
    """On viridis the context line must be seen against its darkest colour and its brightest: white
    (contrast with the purple) drawn over a black outline (contrast with the yellow)."""
    fig = an.figure("extended_profiles")
    heat = fig.axes[0]
    cmap = heat.images[0].get_cmap()
    line = next(ln for ln in heat.get_lines() if ln.get_linestyle() == "--")
    assert _contrast(line.get_color(), cmap(0.0)) >= 4.5
    strokes = [e for e in line.get_path_effects() if hasattr(e, "_gc")]
    assert any(_contrast(e._gc.get("foreground", "k"), cmap(1.0)) >= 4.5 for e in strokes)
    plt.close(fig)


def test_figure_names_cover_static_and_interactive(an):
    assert an.figure_names == [*FIGURES, *INTERACTIVE]
    for name in INTERACTIVE:
        assert an.figure(name).to_dict()["data"], name
    with pytest.raises(ValueError, match="no figure 'bogus'"):
        an.figure("bogus")


@pytest.mark.parametrize("name", list(INTERACTIVE))
def test_interactive_titles_clear_the_toolbar_and_fit(name, an):
    """Plotly draws its toolbar over the top ~30 px at the right: the title sits below it, wrapped,
    inside the top margin."""
    from posfeat.outputs.interactive import TITLE_CHARS

    layout = an.figure(name).to_dict()["layout"]
    title = layout["title"]
    lines = title["text"].split("<br>")
    assert title["yref"] == "container" and title["yanchor"] == "top" and title["pad"]["t"] >= 30
    assert all(len(line) <= TITLE_CHARS for line in lines)
    needed = title["pad"]["t"] + 1.4 * title["font"]["size"] * len(lines)
    assert layout["margin"]["t"] >= needed, (layout["margin"], needed)


def test_helix_crosses_use_a_symbol_that_renders(an):
    data = an.figure("helix_interactive").to_dict()["data"]
    symbols = {d["marker"].get("symbol") for d in data if d.get("marker")}
    assert "x" not in symbols and symbols <= {None, "circle", "diamond", "square", "cross"}


def test_length_generalisation_keeps_the_random_baseline_and_a_robust_range(an):
    fig = an.figure("length_generalisation")
    ev = fig.axes[1]
    labels = [ln.get_label() for ln in ev.get_lines()]
    assert "random vector of the input's norm" in labels
    bp = an.by_position
    lo, hi = ev.get_ylim()
    assert lo <= float(np.percentile(bp.explained_variance[1:], 1)) and hi >= float(
        np.percentile(bp.explained_variance[1:], 99)
    )
    plt.close(fig)


def test_comparison_figure_is_not_clipped(an):
    emb, sae, _ = planted_pair()
    fig = comparison_figure(compare_saes(sae, sae, emb))
    assert clipped_texts(fig) == []
    plt.close(fig)


def test_apparent_position_figure_draws_what_the_verdict_uses(an):
    fig = an.figure("apparent_position")
    lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}
    bp = an.by_position
    app, near = (
        lines["apparent position (activation-weighted peak)"],
        lines["nearest in-context W_pos row (cosine)"],
    )
    np.testing.assert_array_equal(app.get_ydata(), bp.apparent_position.to_numpy())
    np.testing.assert_array_equal(near.get_ydata(), bp.nearest_context_row.to_numpy())
    plt.close(fig)


def test_sinusoid_colour_scale_fits_the_data(an):
    fig = an.figure("sinusoid")
    r2 = an.features.pre_sine_r2[an.features.kind == "positional"].dropna()
    lo, hi = fig.axes[1].collections[0].get_clim()
    assert lo == pytest.approx(r2.min()) and hi == pytest.approx(r2.max())
    plt.close(fig)


def test_positional_score_figure_shows_the_kneedle_window(an):
    fig = an.figure("positional_score")
    window = an.summary["knee_vs_rule"]["kneedle"]["window"]
    assert fig.axes[0].get_xlim()[1] >= min(window, len(an.features))
    plt.close(fig)


def test_titles_do_not_claim_what_the_verdicts_deny_and_disjointness_shows_its_null(an):
    fig = an.figure("positional_profiles")
    assert "tile" not in fig._suptitle.get_text().lower()
    plt.close(fig)
    fig = an.figure("disjointness")
    text = fig.axes[0].get_legend().get_title().get_text()
    null = an.findings["disjoint"]["null"]["share"]
    assert (
        "random dictionary" in text
        and f"{100 * null['median']:.1f}%" in text
        and an.findings["disjoint"]["verdict"] in text
    )
    plt.close(fig)


def test_semantic_profiles_draw_own_tokens_apart_from_spurious_firing():
    """Left: each feature on its own tokens (those firing it inside the context), relative to
    inside; right: its spurious firing (tokens firing it nowhere inside), in % of the vocabulary;
    the legend outside the axes, off the context line."""
    from posfeat.analyses.length import own_and_spurious

    emb, sae = random_pair(d_vocab=40, n_ctx=16, d_sae=24, seed=3)
    an = analyze(emb, sae, tokens_sample=24, progress=False)
    fig = an.figure("semantic_profiles")
    ax0, ax1 = fig.axes[:2]
    own = [ln for ln in ax0.get_lines() if ln.get_label().startswith("#")]
    feats = np.array([int(ln.get_label().split()[0][1:]) for ln in own])
    assert len(feats) and set(an.features.kind.to_numpy()[feats]) == {"semantic"}
    split = own_and_spurious(an.emb, an.sae, an.stats_all, feats, an.context)
    spur = [ln for ln in ax1.get_lines() if ln.get_linestyle() == "-"]
    assert len(spur) == len(feats) and split.spurious_share.any()
    for i, (lo, ls) in enumerate(zip(own, spur)):
        np.testing.assert_allclose(lo.get_ydata(), split.own_mean[i] / split.own_inside[i])
        np.testing.assert_allclose(ls.get_ydata(), 100 * split.spurious_share[i])
    title = fig._suptitle.get_text().replace("\n", " ")
    assert "own tokens" in title and "spurious" in title
    assert ax0.get_legend() is None and ax1.get_legend() is None and len(fig.legends) == 1
    plt.close(fig)


@pytest.mark.parametrize("name", ["positional_profiles", "extended_profiles"])
def test_profile_legend_sits_beside_the_curves(name, an):
    """Over the axes the legend hid the peak of the last feature (at the context's last
    position)."""
    fig = an.figure(name)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    ax = (
        fig.axes[-1]
        if fig.axes[-1].get_legend() is not None
        else next(a for a in fig.axes if a.get_legend() is not None)
    )
    legend = ax.get_legend().get_window_extent(canvas.get_renderer())
    assert legend.x0 >= ax.get_window_extent(canvas.get_renderer()).x1
    plt.close(fig)
