"""Writing an analysis (or a comparison) into a folder, through the one atomic writer and its output policy.

Files of an analysis: features.csv, by_position.csv, tokens.csv, spurious_examples.csv, spurious_by_feature.csv,
summary.json, figures/*.png and report.html. They are written into a temporary folder beside the
target and moved into place, so an interrupted run leaves the previous output untouched and
nothing half-written.
"""

from __future__ import annotations

import datetime as _dt
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure

from ..core.errors import PosfeatError
from ..core.progress import progress_bar
from ..io.atomic import output_folder
from .figures import FIGURES, new_figure, save_figure
from .interactive import INTERACTIVE
from .report import render_html, sweep_sections

if TYPE_CHECKING:
    from ..analyses.analysis import Analysis
    from ..analyses.compare import Comparison

CSV_FLOAT = "%.8g"


def jsonable(x: Any) -> Any:
    """Values made JSON-safe (NaN/inf -> null, numpy scalars -> Python)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if not np.isfinite(x) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def dump_json(data: dict[str, Any]) -> str:
    return json.dumps(jsonable(data), indent=2) + "\n"


def summary_json(an: Analysis, command: str | None) -> str:
    """summary.json: the headline numbers, the findings, the device, the timings, the command."""
    return dump_json({**an.summary, "command": command or "analyze(...)", "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")})


def figure_names() -> list[str]:
    return [*FIGURES, *INTERACTIVE]


def make_figure(an: Analysis, name: str) -> Any:
    """The figure called ``name``: a matplotlib Figure, or a plotly figure for the interactive ones."""
    if name in FIGURES:
        return FIGURES[name][0](an)
    if name in INTERACTIVE:
        return INTERACTIVE[name][0](an)
    raise PosfeatError(f"There is no figure {name!r}; the figures are {', '.join(figure_names())}.")


def write_figures(an: Analysis, folder: Path, progress: bool = False) -> dict[str, Path]:
    folder.mkdir(exist_ok=True)
    bar = progress_bar(FIGURES.items(), desc="figures", unit="figure", enabled=progress)
    return {name: save_figure(fn(an), folder / f"{name}.png") for name, (fn, _) in bar}


def save_analysis(an: Analysis, out: str | Path, *, force: bool = False, command: str | None = None,
                  include_sweeps: list[str | Path] = (), progress: bool = False) -> Path:
    """Write every file of ``an`` into ``out`` (see module docstring); returns the output folder."""
    sections = sweep_sections(list(include_sweeps))
    an.summary["command"] = command or "analyze(...)"
    with output_folder(out, kind="analyze", force=force, command=command) as tmp:
        an.features.to_csv(tmp / "features.csv", index=False, float_format=CSV_FLOAT)
        an.by_position.to_csv(tmp / "by_position.csv", index=False, float_format=CSV_FLOAT)
        an.tokens.to_csv(tmp / "tokens.csv", index=False, float_format=CSV_FLOAT)
        an.spurious_examples.to_csv(tmp / "spurious_examples.csv", index=False, float_format=CSV_FLOAT)
        an.spurious_by_feature.to_csv(tmp / "spurious_by_feature.csv", index=False, float_format=CSV_FLOAT)
        t0 = time.perf_counter()
        pngs = write_figures(an, tmp / "figures", progress)
        t1 = time.perf_counter()
        (tmp / "report.html").write_text(render_html(an, pngs, sections))
        an.timings.update({"figures": t1 - t0, "report": time.perf_counter() - t1})
        an.summary["timings"] = dict(an.timings)
        (tmp / "summary.json").write_text(summary_json(an, command))
        target = Path(out).expanduser().resolve()
    return target


def save_comparison(cmp: Comparison, out: str | Path, *, force: bool = False, command: str | None = None) -> Path:
    """compare.csv, status_a.csv, status_b.csv, summary.json and figures/compare.png into ``out``."""
    with output_folder(out, kind="compare", force=force, command=command) as tmp:
        cmp.pairs.to_csv(tmp / "compare.csv", index=False, float_format=CSV_FLOAT)
        cmp.status_a.to_csv(tmp / "status_a.csv", index=False, float_format=CSV_FLOAT)
        cmp.status_b.to_csv(tmp / "status_b.csv", index=False, float_format=CSV_FLOAT)
        (tmp / "summary.json").write_text(dump_json({**cmp.summary, "command": command}))
        (tmp / "figures").mkdir()
        save_figure(comparison_figure(cmp), tmp / "figures" / "compare.png")
    return Path(out).expanduser().resolve()


def comparison_figure(cmp: Comparison) -> Figure:
    """Positional features of A (top row) and B (bottom row) at their peak positions, linked where they match."""
    a = cmp.status_a[cmp.status_a.kind == "positional"]
    b = cmp.status_b[cmp.status_b.kind == "positional"]
    fig, ax = new_figure(11, 3.8, "Positional features of SAE A (top) and SAE B (bottom) at their peak positions; lines join matches "
                         f"(cosine >= {cmp.summary['threshold']})", f"A: {cmp.summary['sae_a']}  B: {cmp.summary['sae_b']}")
    pa, pb = dict(zip(a.feature, a.peak)), dict(zip(b.feature, b.peak))
    for r in cmp.pairs[cmp.pairs.relation.isin(["match", "split"])].itertuples():
        if r.feature_a in pa and r.feature_b in pb:
            ax.plot([pa[r.feature_a], pb[r.feature_b]], [1, 0], color="#d62728" if r.relation == "split" else "#999", lw=0.8)
    ax.scatter(a.peak, np.ones(len(a)), s=18, c=["#d62728" if s == "split" else "#1f77b4" for s in a.status], zorder=3,
               label=f"A: {len(a)} positional ({int((a.status == 'split').sum())} split, red)")
    ax.scatter(b.peak, np.zeros(len(b)), s=18, c="#2ca02c", zorder=3, label=f"B: {len(b)} positional")
    ax.set(yticks=[0, 1], yticklabels=["B", "A"], xlabel="peak position", ylim=(-0.4, 1.6))
    ax.legend(fontsize=7, loc="upper right")
    return fig
