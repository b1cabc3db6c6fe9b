"""Interactive figures (plotly), carrying only what they draw (values rounded to 4 significant
digits).

In a notebook each figure gives plotly's own JSON mimetype (drawn offline by Jupyter's plotly
renderer) and also ``text/html`` (the figure as an HTML fragment that loads plotly.js from plotly's
CDN), so it shows in frontends without a plotly renderer (VS Code, nbviewer, a converted page)
instead of a blank."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import numpy as np

from .figures import label, spread_subset

if TYPE_CHECKING:
    from ..analyses.analysis import Analysis

MAX_TRACES = 64
# px above the plot: the title sits below plotly's toolbar (modebar), which takes the top ~30 px
TOP_MARGIN = 100
TITLE_CHARS = 90  # per line; longer titles wrap


def title_clear_of_toolbar(text: str) -> dict[str, Any]:
    """A plotly title wrapped to ``TITLE_CHARS`` per line, anchored below the toolbar (the modebar
    floats at the top right)."""
    import textwrap

    return {
        "text": "<br>".join(textwrap.wrap(text, TITLE_CHARS, break_on_hyphens=False)),
        "x": 0.01,
        "xanchor": "left",
        "y": 1,
        "yref": "container",
        "yanchor": "top",
        "pad": {"t": 36},
        "font": {"size": 13},
    }


def _r(x: np.ndarray) -> list[float]:
    return [float(f"{v:.4g}") for v in np.asarray(x, dtype=float)]


@functools.cache
def figure_class() -> type:
    """A ``plotly.graph_objects.Figure`` whose notebook mimebundle also holds ``text/html``."""
    import plotly.graph_objects as go

    class Figure(go.Figure):
        def _repr_mimebundle_(
            self, include: Any = None, exclude: Any = None, validate: bool = True, **kwargs: Any
        ) -> dict[str, Any]:
            bundle = dict(super()._repr_mimebundle_(include, exclude, validate, **kwargs) or {})
            bundle.setdefault(
                "text/html",
                self.to_html(full_html=False, include_plotlyjs="cdn", include_mathjax=False),
            )
            return bundle

    return Figure


def _three(points: np.ndarray) -> np.ndarray:
    """``[n, 3]`` points: a model with fewer than three PCs (d_model 2, or two positions) drawn with
    the missing axes at 0."""
    points = (
        np.asarray(points, dtype=float).reshape(len(points), -1)
        if np.size(points)
        else np.zeros((len(points), 0))
    )
    return np.pad(points, ((0, 0), (0, max(0, 3 - points.shape[1]))))[:, :3]


def helix_interactive(an: Analysis) -> Any:
    import plotly.graph_objects as go

    h = an.helix
    rows, feature_points = _three(h.rows), _three(h.feature_points)
    fig = figure_class()()
    fig.add_trace(
        go.Scatter3d(
            x=_r(rows[:, 0]),
            y=_r(rows[:, 1]),
            z=_r(rows[:, 2]),
            mode="markers",
            name="W_pos rows",
            text=[f"position {p}" for p in h.positions],
            marker={
                "size": 3,
                "color": h.positions.tolist(),
                "colorscale": "Plasma",
                "colorbar": {"title": "position"},
            },
        )
    )
    if len(h.features):
        fig.add_trace(
            go.Scatter3d(
                x=_r(feature_points[:, 0]),
                y=_r(feature_points[:, 1]),
                z=_r(feature_points[:, 2]),
                mode="markers",
                name="positional features",
                text=[f"feature {f}, peak {p}" for f, p in zip(h.features, h.peaks)],
                marker={
                    "size": 5,
                    "symbol": "diamond",
                    "line": {"width": 1, "color": "black"},
                    "color": h.peaks.tolist(),
                    "colorscale": "Plasma",
                    "cmin": int(h.positions.min()),
                    "cmax": int(h.positions.max()),
                },
            )
        )
    fig.update_layout(
        title=title_clear_of_toolbar(
            f"W_pos rows (dots) and positional features' decoder directions (diamonds) on the "
            f"top 3 PCs: {label(an)}"
        ),
        height=640,
        margin={"l": 0, "r": 0, "t": TOP_MARGIN, "b": 0},
        legend={"orientation": "h", "x": 0.01, "y": 0.0, "yanchor": "bottom"},
        scene={"xaxis_title": "PC1", "yaxis_title": "PC2", "zaxis_title": "PC3"},
    )
    return fig


def profiles_interactive(an: Analysis) -> Any:
    import plotly.graph_objects as go

    feats = an.positional
    pick = feats[spread_subset(feats, MAX_TRACES)]
    st = an.stats_all
    fig = figure_class()()
    for f in pick:
        fig.add_trace(
            go.Scatter(
                x=st.positions.tolist(),
                y=_r(st.mean_by_position[f]),
                mode="lines",
                name=f"#{int(f)}",
                line={"width": 1},
            )
        )
    fig.add_vline(x=an.context - 0.5, line_dash="dash")
    shown = f"{len(pick)} of {len(feats)} positional features" + (
        ", evenly by peak" if len(pick) < len(feats) else ""
    )
    fig.update_layout(
        title=title_clear_of_toolbar(
            f"Positional feature profiles over all positions ({shown}): {label(an)}"
        ),
        height=480,
        margin={"t": TOP_MARGIN},
        xaxis_title="position",
        yaxis_title="mean activation over tokens",
    )
    return fig


#: name -> (function, div id in report.html)
INTERACTIVE = {
    "helix_interactive": (helix_interactive, "helix"),
    "profiles_interactive": (profiles_interactive, "profiles"),
}
