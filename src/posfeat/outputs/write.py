"""Writing an analysis (or a comparison) into a folder, through the one atomic writer and its output
policy.

Files of an analysis: features.csv, by_position.csv, tokens.csv, spurious_examples.csv,
spurious_by_feature.csv, summary.json, figures/*.png and report.html. They are written into a
temporary folder beside the target and moved into place, so an interrupted run leaves the previous
output untouched and nothing half-written."""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
import signal
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.figure import Figure

from ..core.errors import PosfeatError
from ..core.memory import collector_frozen
from ..core.progress import progress_bar
from ..core.signals import deferred_signals
from ..io.output import Output
from .explorer import logits
from .figures import FIGURES, new_figure, save_figure, torch_inputs
from .interactive import INTERACTIVE
from .kinds import ANALYZE, COMPARE, CSV_FILES, sweep_sections
from .report import compact_png_uri, packed_plotly, plotly_js, render_html, report_parts

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


def summary_json(an: Analysis, command: str | None, timings: dict[str, float] | None = None) -> str:
    """summary.json: the headline numbers, the findings, the device, the timings (``an.timings`` and
    the writer's own ``timings``), the command. ``an`` is left as it is."""
    return dump_json(
        {
            **an.summary,
            "timings": {**an.timings, **(timings or {})},
            "command": command or "analyze(...)",
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        }
    )


def figure_names() -> list[str]:
    return [*FIGURES, *INTERACTIVE]


def make_figure(an: Analysis, name: str) -> Any:
    """The figure called ``name``: a matplotlib Figure, or a plotly figure for the interactive
    ones."""
    if name in FIGURES:
        return FIGURES[name][0](an)
    if name in INTERACTIVE:
        return INTERACTIVE[name][0](an)
    raise PosfeatError(f"There is no figure {name!r}; the figures are {', '.join(figure_names())}.")


#: Drawing time of the heavier figures relative to a typical one (about 0.25 s on the bundled pair,
# on this project's 2-core machine; others 1): the figures are queued costliest first, so the last
# ones taken are the quick ones.
FIGURE_COST = {
    "preactivations": 2.8,
    "token_features": 2.2,
    "length_generalisation": 1.3,
    "semantic_breakage": 1.2,
}
#: At most this many processes draw the figures (the parent and forked children).
MAX_FIGURE_PROCESSES = 4
#: The suffix of a figure a child is still writing (renamed to ``NAME.png`` once whole; removed if
# its child died).
DRAWING_TAG = ".drawing"


def figure_processes() -> int:
    """How many processes draw the figures: one per core this process may run on, at most
    :data:`MAX_FIGURE_PROCESSES`; 1 (the parent alone) where ``os.fork`` is missing or
    ``POSFEAT_FIGURE_PROCESSES`` says so."""
    if not hasattr(os, "fork"):
        return 1
    env = os.environ.get("POSFEAT_FIGURE_PROCESSES", "")
    if env.isdigit() and int(env) >= 1:
        return min(int(env), MAX_FIGURE_PROCESSES)
    cores = (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    )
    return max(1, min(cores, MAX_FIGURE_PROCESSES))


def figure_queue(names: list[str]) -> list[str]:
    """The figures, costliest first (:data:`FIGURE_COST`): any process may draw any of them (what
    they read from the model's tensors is made before the children are forked:
    :func:`~posfeat.outputs.figures.torch_inputs`)."""
    return sorted(names, key=lambda x: -FIGURE_COST.get(x, 1.0))


def _draw(
    an: Analysis, folder: Path, name: str, suffix: str = "", page: Path | None = None
) -> Path:
    """Figure ``name`` written as ``folder/NAME.png`` with ``suffix``, and its page copy into
    ``page`` (:func:`_page_copy`); returns the PNG's path."""
    png = save_figure(FIGURES[name][0](an), folder / f"{name}.png{suffix}")
    _page_copy(png, name, page)
    return png


def _page_copy(png: Path, name: str, page: Path | None) -> None:
    """With ``page`` (a folder of the caller's), figure ``name``'s form for the report page
    (:func:`~posfeat.outputs.report.compact_png_uri` of its PNG at ``png``) written there as
    ``NAME.uri`` once whole, by the process that drew it: the page's copies made beside the drawing,
    not after it. A child makes it before its PNG is renamed into place, so a figure written whole
    has its copy (the parent stops waiting for a child once every figure is written)."""
    if page is not None:
        part = page / f"{name}.uri{DRAWING_TAG}"
        part.write_text(compact_png_uri(png))
        os.replace(part, page / f"{name}.uri")


def page_copies(page: Path) -> dict[str, str]:
    """The figures' page forms that :func:`write_figures` left in ``page``, by name."""
    return {p.name[: -len(".uri")]: p.read_text() for p in page.glob("*.uri")}


def _missing(folder: Path, names: list[str]) -> list[str]:
    """The figures of ``names`` not (yet) written whole into ``folder``."""
    return [name for name in names if not (folder / f"{name}.png").is_file()]


def _take(queue: int, names: list[str]) -> str | None:
    """The next figure of the shared queue (a pipe of one byte per figure: a read of one byte takes
    exactly one), or None when it is empty."""
    b = os.read(queue, 1)
    return names[b[0]] if b else None


def _fork_draw(
    an: Analysis, folder: Path, queue: int, names: list[str], page: Path | None = None
) -> int | None:
    """A forked child that draws figures taken from ``queue`` until it is empty, each written as
    ``NAME.png.drawing`` and
    renamed to ``NAME.png`` once whole (None: no fork).

    The child only draws (matplotlib on the analysis' numpy and pandas data: no torch, so no thread
    pool or device is touched after the fork), dies with its parent, and leaves by ``os._exit`` (no
    cleanup of the parent's runs twice)."""
    try:
        with (
            warnings.catch_warnings()
        ):  # Python 3.12+ warns of forking a threaded process; the child runs no thread's code
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
    except OSError:
        return None
    if pid:
        return pid
    code = 1
    try:
        _die_with_parent()
        while (name := _take(queue, names)) is not None:
            os.replace(_draw(an, folder, name, DRAWING_TAG, page), folder / f"{name}.png")
        code = 0
    finally:
        os._exit(code)


def _die_with_parent() -> None:
    """Linux: ask for SIGKILL when the parent dies (a killed ``posfeat analyze`` leaves no child
    writing)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass


#: How long the parent waits for the drawing children once the queue is empty (at least; 10x the
# parent's own drawing time when longer) before it kills them and draws what they left itself: a
# child that hangs (a lock some other thread of the parent held at the fork) costs time, never the
# run.
CHILD_PATIENCE_S = 120.0
#: ... or this many times the parent's own drawing time, when that is longer.
CHILD_PATIENCE_FACTOR = 10.0


def _queue_pipe(queue: list[str]) -> int:
    """The read end of a pipe holding ``queue``, one byte per figure (its index)."""
    assert len(queue) < 256, "one byte names a figure of the queue"
    r, w = os.pipe()
    try:
        os.write(w, bytes(range(len(queue))))  # at most a few dozen bytes: never blocks
    finally:
        os.close(w)
    return r


def _exited(pid: int) -> bool:
    """Whether child ``pid`` has exited (reaped if so)."""
    try:
        return os.waitpid(pid, os.WNOHANG)[0] != 0
    except ChildProcessError:
        return True


def _end_child(pid: int) -> None:
    """Kill child ``pid`` and reap it (nothing if it is gone already)."""
    with contextlib.suppress(ProcessLookupError, ChildProcessError):
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def _wait_children(children: list[int], folder: Path, queue: list[str], deadline: float) -> None:
    """Until every child has exited, or every figure of ``queue`` is written (a child still running
    then can only be hung, with nothing left to draw), or ``deadline`` (``time.monotonic``) has
    passed; then the rest are killed."""
    while children and time.monotonic() <= deadline and _missing(folder, queue):
        children[:] = [pid for pid in children if not _exited(pid)]
        time.sleep(0.01)
    while children:
        _end_child(children.pop())


def _draw_queue(
    an: Analysis,
    folder: Path,
    queue: list[str],
    progress: bool,
    meanwhile: Callable[[], Any] | None,
    page: Path | None = None,
) -> None:
    """:func:`write_figures`' processes: forked children and the parent drawing from ``queue``."""
    r = _queue_pipe(queue)
    children: list[int] = []
    drawn = 0
    bar = progress_bar(total=len(queue), desc="figures", unit="figure", enabled=progress)
    # The analysis' objects go to the collector's permanent generation until the figures are done
    # (collector_frozen: or until the command ends, or not at all where the caller froze its own):
    # the children's collections (and the parent's, making the report) no longer walk them, nor
    # touch (and so copy) their pages in a child: 0.6 s of a child's 5 s on the GPT-2 stand-in.
    with collector_frozen():
        try:
            for _ in range(figure_processes() - 1 if queue else 0):
                # A signal inside os.fork would raise in the fork's callbacks, where Python prints
                # and drops it: recorded there, it is delivered again here, once the child is listed
                # to be killed.
                with deferred_signals():
                    pid = _fork_draw(an, folder, r, queue, page)
                    if pid is not None:
                        children.append(pid)
            if meanwhile is not None:
                meanwhile()
            start = time.perf_counter()
            for name in iter(lambda: _take(r, queue), None):
                _draw(an, folder, name, page=page)
                bar.update(1)
                drawn += 1
            patience = max(CHILD_PATIENCE_S, CHILD_PATIENCE_FACTOR * (time.perf_counter() - start))
            _wait_children(children, folder, queue, time.monotonic() + patience)
            # what no child wrote whole (a child that failed or was killed): drawn here, the same
            for name in _missing(folder, queue):
                _draw(an, folder, name, page=page)
            bar.update(len(queue) - drawn)  # the children's
        finally:
            os.close(r)
            for pid in children:  # only when the parent failed or was interrupted
                _end_child(pid)
            for part in folder.glob(f"*{DRAWING_TAG}"):
                part.unlink(missing_ok=True)
            bar.close()


def write_figures(
    an: Analysis,
    folder: Path,
    progress: bool = False,
    meanwhile: Callable[[], Any] | None = None,
    page: Path | None = None,
) -> dict[str, Path]:
    """Every figure of :data:`FIGURES` as ``folder/NAME.png``, drawn by :func:`figure_processes`
    processes at once.

    What the figures read from the model's tensors is made first
    (:func:`~posfeat.outputs.figures.torch_inputs`: a forked child must not start torch's threads).
    Forked children take figures from one queue (costliest first); the parent first calls
    ``meanwhile`` (the rest of the report, made while they draw), then takes from the queue too
    until it is empty, then waits for the children. Whatever a child failed to write, the parent
    draws, so the files are the same either way. With ``page``, each process also leaves there its
    figures' form for the report page (:func:`page_copies` reads them; one a child failed to write
    is missing, and the page makes it)."""
    folder.mkdir(exist_ok=True)
    names = list(FIGURES)
    queue = figure_queue(names)
    for name in queue:  # a figure is on disk only once a process has drawn it whole (below)
        (folder / f"{name}.png").unlink(missing_ok=True)
    with torch_inputs(an, names):
        _draw_queue(an, folder, queue, progress, meanwhile, page)
    return {name: folder / f"{name}.png" for name in names}


def save_analysis(
    an: Analysis,
    out: str | Path | Output,
    *,
    force: bool = False,
    command: str | None = None,
    include_sweeps: list[str | Path] = (),
    progress: bool = False,
) -> Path:
    """Write every file of ``an`` into ``out`` (see module docstring); returns the output folder."""
    sections = sweep_sections(list(include_sweeps))
    output = Output.of(out, ANALYZE, force=force, command=command)
    with output, output.staging() as tmp:
        parts: dict[str, Any] = {}
        t_logits = time.perf_counter()
        # The explorer's logit effects (a product as large as the engine's, on all of torch's
        # threads) before any child is forked: alone on the cores, not beside a drawing child
        # (the GPT-2 stand-in's report and figures: 7.4 -> 5.x s on two cores).
        logit_part = logits(an)
        before = time.perf_counter() - t_logits
        own = 0.0  # seconds of the report's own work while the children draw

        def meanwhile() -> None:
            nonlocal own
            t = time.perf_counter()
            for name in CSV_FILES:
                getattr(an, name).to_csv(tmp / f"{name}.csv", index=False, float_format=CSV_FLOAT)
            parts.update(report_parts(an, logit_part))
            parts["plotly_packed"] = packed_plotly(plotly_js())  # the page's, made meanwhile too
            own = time.perf_counter() - t

        t0 = time.perf_counter()
        page = tmp / ".page"  # the figures' forms for the page, made as they are drawn
        page.mkdir()
        pngs = write_figures(an, tmp / "figures", progress, meanwhile, page)
        parts["figure_uris"] = page_copies(page)
        shutil.rmtree(page)
        t1 = time.perf_counter()
        (tmp / "report.html").write_text(
            render_html(an, pngs, sections, parts, command=command or "analyze(...)")
        )
        # Stages that add up to the wall time: the report's own work (the logit effects, the CSVs
        # and the parts made while the children drew, then the page), and the time the figures
        # took beyond it.
        own_timings = {
            "figures": t1 - t0 - own,
            "report": before + own + time.perf_counter() - t1,
        }
        (tmp / "summary.json").write_text(summary_json(an, command, own_timings))
    return output.claim()


def save_comparison(
    cmp: Comparison, out: str | Path | Output, *, force: bool = False, command: str | None = None
) -> Path:
    """compare.csv, status_a.csv, status_b.csv, summary.json and figures/compare.png into
    ``out``."""
    output = Output.of(out, COMPARE, force=force, command=command)
    with output, output.staging() as tmp:
        cmp.pairs.to_csv(tmp / "compare.csv", index=False, float_format=CSV_FLOAT)
        cmp.status_a.to_csv(tmp / "status_a.csv", index=False, float_format=CSV_FLOAT)
        cmp.status_b.to_csv(tmp / "status_b.csv", index=False, float_format=CSV_FLOAT)
        (tmp / "summary.json").write_text(dump_json({**cmp.summary, "command": command}))
        (tmp / "figures").mkdir()
        save_figure(comparison_figure(cmp), tmp / "figures" / "compare.png")
    return output.claim()


def comparison_figure(cmp: Comparison) -> Figure:
    """Positional features of A (top row) and B (bottom row) at their peak positions, linked where
    they match."""
    a = cmp.status_a[cmp.status_a.kind == "positional"]
    b = cmp.status_b[cmp.status_b.kind == "positional"]
    fig, ax = new_figure(
        11,
        3.8,
        "Positional features of SAE A (top) and SAE B (bottom) at their peak positions; lines join "
        "matches "
        f"(cosine >= {cmp.summary['threshold']})",
        f"A: {cmp.summary['sae_a']}  B: {cmp.summary['sae_b']}",
    )
    pa, pb = dict(zip(a.feature, a.peak)), dict(zip(b.feature, b.peak))
    for r in cmp.pairs[cmp.pairs.relation.isin(["match", "split"])].itertuples():
        if r.feature_a in pa and r.feature_b in pb:
            ax.plot(
                [pa[r.feature_a], pb[r.feature_b]],
                [1, 0],
                color="#d62728" if r.relation == "split" else "#999",
                lw=0.8,
            )
    ax.scatter(
        a.peak,
        np.ones(len(a)),
        s=18,
        c=["#d62728" if s == "split" else "#1f77b4" for s in a.status],
        zorder=3,
        label=f"A: {len(a)} positional ({int((a.status == 'split').sum())} split, red)",
    )
    ax.scatter(
        b.peak, np.zeros(len(b)), s=18, c="#2ca02c", zorder=3, label=f"B: {len(b)} positional"
    )
    ax.set(yticks=[0, 1], yticklabels=["B", "A"], xlabel="peak position", ylim=(-0.4, 1.6))
    ax.legend(fontsize=7, loc="upper right")
    return fig
