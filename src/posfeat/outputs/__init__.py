"""Stage 5, the outputs: figures, report.html with its feature explorer, summary.json, the writers,
and the public :class:`~posfeat.outputs.results.Analysis` that reaches them (``save``, ``figure``).
Imports core, io, analyses (and the engine through them); independent of ``training``."""

from .figures import FIGURES, png_data_uri, save_figure
from .interactive import INTERACTIVE
from .report import render_html, sweep_sections
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
