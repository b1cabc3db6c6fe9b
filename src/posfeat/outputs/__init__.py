"""Stage 5, the outputs: figures, report.html with its feature explorer, summary.json, the writers,
and the public :class:`~posfeat.outputs.results.Analysis` that reaches them (``save``, ``figure``).
Imports core, io, analyses (and the engine through them); independent of ``training``.

Names are imported on first use (PEP 562): :mod:`posfeat.outputs.kinds` (what an output folder
holds) is read without matplotlib, which ``posfeat analyze`` imports on a second thread while the
engine runs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core.lazy import lazy_exports

if TYPE_CHECKING:
    from .figures import FIGURES, png_data_uri, save_figure
    from .interactive import INTERACTIVE
    from .kinds import sweep_sections
    from .report import render_html
    from .results import Analysis, analyze
    from .write import (
        dump_json,
        figure_names,
        jsonable,
        make_figure,
        save_analysis,
        save_comparison,
        summary_json,
    )

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        **dict.fromkeys(["FIGURES", "png_data_uri", "save_figure"], ".figures"),
        "INTERACTIVE": ".interactive",
        "sweep_sections": ".kinds",
        "render_html": ".report",
        **dict.fromkeys(["Analysis", "analyze"], ".results"),
        **dict.fromkeys(
            [
                "dump_json",
                "figure_names",
                "jsonable",
                "make_figure",
                "save_analysis",
                "save_comparison",
                "summary_json",
            ],
            ".write",
        ),
    },
)

__all__ = [
    "FIGURES",
    "INTERACTIVE",
    "Analysis",
    "analyze",
    "dump_json",
    "figure_names",
    "jsonable",
    "make_figure",
    "png_data_uri",
    "render_html",
    "save_analysis",
    "save_comparison",
    "save_figure",
    "summary_json",
    "sweep_sections",
]
