"""The sweeps' figures and their ``section.html`` fragment (``posfeat analyze --include-sweep``),
from tables and dicts only."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .figures import new_figure, png_data_uri, save_figure


def section(
    title: str, table: pd.DataFrame, command: str | None, sentence: str, figs: list[Path]
) -> str:
    """An HTML fragment for report.html, figures embedded."""
    imgs = "".join(f'<img alt="{html.escape(p.stem)}" src="{png_data_uri(p)}">' for p in figs)
    return (
        f"<section><h2>{html.escape(title)}</h2><p>{html.escape(sentence)}</p>"
        f"{table.to_html(index=False, float_format=lambda v: f'{v:.4g}')}"
        f"{imgs}<p class=cap>Command: <code>{html.escape(str(command))}</code></p></section>\n"
    )


def width_figures(
    name: str,
    table: pd.DataFrame,
    runs: pd.DataFrame,
    stats: dict[str, Any],
    split: dict[str, Any],
    curve: pd.DataFrame,
    folder: Path,
    context: int,
) -> list[Path]:
    """``width_counts.png`` (counts, fit, the training context for reference),
    ``width_splitting.png`` and, when recorded, ``width_steps.png`` (:func:`width_figure_objects`)
    into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    return [
        save_figure(fig, folder / f"{n}.png")
        for n, fig in width_figure_objects(name, table, runs, stats, split, curve, context).items()
    ]


def width_figure_objects(
    name: str,
    table: pd.DataFrame,
    runs: pd.DataFrame,
    stats: dict[str, Any],
    split: dict[str, Any],
    curve: pd.DataFrame,
    context: int,
) -> dict[str, Figure]:
    """The width sweep's figures by name, drawn from its tables and dicts only (what
    :func:`width_figures` saves)."""
    fit, trend = stats["power_law"], stats["trend"]
    lab = f"{name} (context {context}; {int(table.n_seeds.max())} seed(s) per width)"
    out: dict[str, Figure] = {}
    fig, ax = new_figure(
        6.6, 4.8, "Positional features against SAE width (mean +- sd over seeds)", lab
    )
    ax.errorbar(
        table.d_sae,
        table.positional,
        yerr=table.positional_sd.fillna(0),
        fmt="o-",
        capsize=3,
        label="positional features",
    )
    ax.scatter(runs.d_sae, runs.positional, s=8, color="k", alpha=0.4, label="each seed")
    if math.isfinite(fit["alpha"]):
        xs = np.geomspace(table.d_sae.min(), table.d_sae.max(), 50)
        lof = stats["lack_of_fit"]
        tail = f"; lack of fit p {lof['p']:.2g}" if math.isfinite(lof["p"]) else ""
        ax.plot(
            xs,
            fit["c"] * xs ** fit["alpha"],
            "--",
            label=f"description: {fit['c']:.2g} * width^{fit['alpha']:.2f} "
            f"(95% CI {fit['alpha_low']:.2f}..{fit['alpha_high']:.2f}{tail})",
        )
    ax.axhline(
        context,
        color="grey",
        ls=":",
        lw=1,
        label=f"training context: {context} positions (a reference, not a bound)",
    )
    p = trend["page"]["p"] if math.isfinite(trend["page"]["p"]) else trend["spearman_p"]
    ax.set(
        xscale="log",
        yscale="log" if (runs.positional > 0).any() else "linear",
        xlabel="SAE width (d_sae)",
        ylabel="positional features",
    )
    ax.set_xticks(list(table.d_sae), [str(int(w)) for w in table.d_sae], rotation=45, fontsize=8)
    ax.minorticks_off()
    ax.legend(
        fontsize=8,
        loc="lower right",
        title=f"trend: {trend['test']}, p = {p:.2g}",
        title_fontsize=8,
    )
    out["width_counts"] = fig
    ws = sorted(split.get("widths", {}))
    fig, axs = new_figure(
        3.3 * max(1, len(ws)),
        3.4,
        f"How feature {split.get('reference')} (d_sae {split.get('reference_width')}, "
        f"peak {split.get('reference_peak')}) splits across widths (first seed; children by decoder "
        "cosine >= "
        f"{split.get('threshold')})",
        name,
        ncols=max(1, len(ws)),
        sharey=True,
        squeeze=False,
    )
    for ax, w in zip(axs[0], ws):
        for m in split["widths"][w]:
            ax.plot(m["profile"], lw=1, label=f"#{m['feature']} (peak {m['peak']})")
        ax.set_title(f"d_sae {w}", fontsize=8)
        ax.set_xlabel("position")
        if split["widths"][w]:
            ax.legend(fontsize=7)
    axs[0][0].set_ylabel("mean activation")
    out["width_splitting"] = fig
    if len(curve):
        fig, ax = new_figure(
            6.2,
            4.2,
            f"Positional features during training (d_sae {int(table.d_sae.max())}, first seed)",
            lab,
        )
        ax.plot(curve.step, curve.positional, "o-")
        ax.set(xlabel="training step", ylabel="positional features (exact)")
        out["width_steps"] = fig
    return out


def context_figure(
    title: str, curves: list[tuple[str, np.ndarray]], base: int, folder: Path
) -> Path:
    """``context_fvu.png`` (:func:`context_figure_object`) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    return save_figure(context_figure_object(title, curves, base), folder / "context_fvu.png")


def context_figure_object(title: str, curves: list[tuple[str, np.ndarray]], base: int) -> Figure:
    """FVU by position of each SAE of the context sweep (first seed), the original context
    marked."""
    fig, ax = new_figure(
        8.5, 4.4, "FVU by position after fine-tuning on longer contexts (first seed)", title
    )
    for label, fvu in curves:
        ax.plot(np.arange(len(fvu)), fvu, lw=1, label=label)
    ax.axvline(base - 0.5, color="k", ls="--", lw=0.8, label=f"original context ({base})")
    ax.set(yscale="log", xlabel="position", ylabel="FVU")
    ax.legend(fontsize=8)
    return fig
