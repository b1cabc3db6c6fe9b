"""Stage 5, the outputs: figures, report.html with its feature explorer, summary.json, and the writers.

Importing this package registers ``save_analysis``, ``make_figure`` and ``figure_names`` in
``posfeat.core.registry``, which :class:`posfeat.Analysis` looks up (``import posfeat`` does it).
"""

from ..core.registry import register
from .figures import FIGURES, png_data_uri, save_figure
from .interactive import INTERACTIVE
from .prompt_view import prompt_html
from .report import render_html, sweep_sections
from .write import dump_json, figure_names, jsonable, make_figure, save_analysis, save_comparison, summary_json

register("save_analysis", save_analysis)
register("make_figure", make_figure)
register("figure_names", figure_names)
register("prompt_html", prompt_html)

__all__ = ["FIGURES", "INTERACTIVE", "dump_json", "figure_names", "jsonable", "make_figure", "png_data_uri", "prompt_html", "render_html",
           "save_analysis",
           "save_comparison", "save_figure", "summary_json", "sweep_sections"]
