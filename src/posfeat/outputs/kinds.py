"""What each output folder of posfeat holds (its files, as the ownership marker checks them) and the
sweep sections a report includes: read before any work, without matplotlib or plotly."""

from __future__ import annotations

from pathlib import Path

from ..core.errors import PosfeatError
from ..io.ownership import OutputKind
from ..io.paths import expand

#: The CSVs of an analysis folder (``NAME.csv``) with what each holds: what save_analysis writes,
# the report's Files list and the CLI's "wrote" line name.
CSV_FILES = {
    "features": "one row per feature",
    "by_position": "one row per position",
    "tokens": "one row per token: its top features and how flat they are",
    "spurious_examples": "the strongest spurious firings",
    "spurious_by_feature": "spurious firing per feature",
}


#: ``posfeat analyze``'s folder (the report, its CSVs, summary.json and figures).
ANALYZE = OutputKind(
    "analyze",
    (
        "report.html",
        *(f"{name}.csv" for name in CSV_FILES),
        "summary.json",
        "figures",
        "figures/*.png",
    ),
    legacy=(
        ("summary.json", "features.csv", "by_position.csv", "report.html"),
        ("spurious_examples.csv", "figures", "figures/*.png"),
        ("summary.json", "posfeat_version"),
    ),
)
#: ``posfeat compare``'s folder.
COMPARE = OutputKind(
    "compare",
    (
        "compare.csv",
        "status_a.csv",
        "status_b.csv",
        "summary.json",
        "figures",
        "figures/compare.png",
    ),
)


def sweep_sections(folders: list[str | Path]) -> tuple[str, ...]:
    """The ``section.html`` fragments that ``posfeat sweep`` wrote into each folder."""
    out = []
    for folder in folders:
        path = expand(folder) / "section.html"
        if not path.is_file():
            raise PosfeatError(
                f"{folder} has no section.html; pass a folder written by posfeat sweep widths or "
                "posfeat sweep context."
            )
        try:
            out.append(path.read_text())
        except OSError as err:
            raise PosfeatError(
                f"Cannot read {path} ({err.strerror}); check its permissions."
            ) from None
    return tuple(out)
