"""The public :class:`Analysis`: the analyses' result with the writers and figures of this stage.

``posfeat.analyze`` returns it. Writing files and drawing figures belong to this stage, which the
analyses must not import, so the methods that reach them live on this subclass (no new state: an
Analysis of the analyses stage becomes one with :meth:`Analysis.of`).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from ..analyses import analysis as _analysis
from ..io.output import Output
from .write import figure_names, make_figure, save_analysis


class Analysis(_analysis.Analysis):
    __doc__ = _analysis.Analysis.__doc__

    @classmethod
    def of(cls, base: _analysis.Analysis) -> Analysis:
        """``base`` as an :class:`Analysis` of this stage (the same tables and summary, not
        copies)."""
        if isinstance(base, cls):
            return base
        made = object.__new__(cls)
        made.__dict__.update(vars(base))
        return made

    @property
    def figure_names(self) -> list[str]:
        """Names accepted by :meth:`figure` (static figures, then the interactive ones)."""
        return list(figure_names())

    def figure(self, name: str) -> Any:
        """The matplotlib ``Figure`` (or plotly figure, for the interactive ones) called
        ``name``."""
        return make_figure(self, name)

    def save(
        self,
        out: str | Path | Output,
        *,
        force: bool = False,
        command: str | None = None,
        include_sweeps: list[str | Path] = (),
    ) -> Path:
        """Write features.csv, by_position.csv, spurious_*.csv, summary.json, figures/*.png and
        report.html (with the sections of the given ``posfeat sweep`` folders) under posfeat's
        output policy."""
        return save_analysis(
            self, out, force=force, command=command, include_sweeps=list(include_sweeps)
        )


@functools.wraps(_analysis.analyze)
def analyze(emb: Any, sae: Any, **settings: Any) -> Analysis:
    return Analysis.of(_analysis.analyze(emb, sae, **settings))
