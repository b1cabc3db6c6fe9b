"""The figures drawn by several processes at once are the figures drawn by one, and a failed child
costs nothing."""

from __future__ import annotations

import contextlib
import copy
import os
import time

import pytest

import posfeat.outputs.write as write
from posfeat import analyze
from posfeat.outputs.figures import FIGURES

from helpers import planted_pair

pytestmark = pytest.mark.skipif(
    not hasattr(os, "fork"), reason="figures are drawn in forked children only where os.fork exists"
)


#: A few quick figures, the parent's own among them (drawing all fifteen three times would only slow
# the suite).
SOME = (
    "wpos_similarity",
    "disjointness",
    "positional_score",
    "coverage",
    "sinusoid",
    "attribution",
)


@pytest.fixture(scope="module")
def an():
    emb, sae, _ = planted_pair()
    return analyze(emb, sae, tokens_sample=24, progress=False)


@pytest.fixture(autouse=True)
def some_figures(monkeypatch):
    monkeypatch.setattr(write, "FIGURES", {name: FIGURES[name] for name in SOME})


def test_the_queue_holds_every_figure_costliest_first():
    names = list(FIGURES)
    queue = write.figure_queue(names)
    assert sorted(queue) == sorted(names)
    costs = [write.FIGURE_COST.get(x, 1.0) for x in queue]
    assert costs == sorted(costs, reverse=True) and costs[0] > 1.0


def test_what_figures_read_through_torch_is_made_once_before_the_children(an, monkeypatch):
    """Inside torch_inputs the figures read what was made on entry (so a forked child never runs
    torch); outside it, they make it themselves."""
    from posfeat.outputs import figures

    calls = []

    def rows(a):
        calls.append(1)
        return figures._wpos_rows(a)

    monkeypatch.setitem(figures.TORCH_INPUTS, "wpos_similarity", rows)
    with figures.torch_inputs(an, ["wpos_similarity", "coverage"]):
        assert len(calls) == 1
        for _ in range(2):
            figures.wpos_similarity(an)
        assert len(calls) == 1
        other = copy.copy(an)  # another analysis inside the block makes its own
        figures.wpos_similarity(other)
        assert len(calls) == 2
    figures.wpos_similarity(an)
    assert len(calls) == 3 and figures._made == {}


def _draw_all(an, folder, processes, meanwhile=None):
    old = os.environ.get("POSFEAT_FIGURE_PROCESSES")
    os.environ["POSFEAT_FIGURE_PROCESSES"] = str(processes)
    try:
        assert write.figure_processes() == processes
        paths = write.write_figures(an, folder, meanwhile=meanwhile)
    finally:
        if old is None:
            os.environ.pop("POSFEAT_FIGURE_PROCESSES")
        else:
            os.environ["POSFEAT_FIGURE_PROCESSES"] = old
    assert sorted(paths) == sorted(SOME)
    return {name: p.read_bytes() for name, p in paths.items()}


@pytest.fixture
def serial(an, tmp_path):
    return _draw_all(an, tmp_path / "serial", 1)


def test_parallel_figures_equal_serial_ones(an, serial, tmp_path):
    parallel = _draw_all(an, tmp_path / "three", 3)
    assert parallel == serial
    assert sorted(p.name for p in (tmp_path / "three").iterdir()) == sorted(
        f"{n}.png" for n in SOME
    )  # nothing else left there


def test_a_failed_child_has_its_figures_drawn_by_the_parent(an, serial, tmp_path, monkeypatch):
    parent = os.getpid()

    def fail_in_child():
        if os.getpid() != parent:
            raise RuntimeError("child fails before drawing")

    monkeypatch.setattr(write, "_die_with_parent", fail_in_child)
    assert _draw_all(an, tmp_path / "two", 2) == serial


def test_a_hanging_child_is_killed_and_its_figures_drawn_by_the_parent(
    an, serial, tmp_path, monkeypatch
):
    """A child stuck at a lock the fork copied locked (another thread of the parent held it) costs
    time, never the run."""
    parent = os.getpid()

    def hang_in_child():
        if os.getpid() != parent:
            import time

            time.sleep(3600)

    monkeypatch.setattr(write, "_die_with_parent", hang_in_child)
    monkeypatch.setattr(write, "CHILD_PATIENCE_S", 1.0)
    monkeypatch.setattr(write, "CHILD_PATIENCE_FACTOR", 0.0)
    assert _draw_all(an, tmp_path / "two", 2) == serial


def test_children_really_draw_a_share(an, serial, tmp_path, monkeypatch):
    """Not the parent drawing everything after its children failed: with two processes both write
    figures."""
    who = tmp_path / "who"
    who.mkdir()
    save = write.save_figure

    def noted(fig, path, dpi=100):
        out = save(fig, path, dpi)
        (who / f"{os.getpid()}-{path.name}").touch()  # once written
        return out

    # the parent's own work while the children draw: here, waiting for one to finish a figure
    def until_a_child_drew():
        deadline = time.monotonic() + 60
        while (
            not any(not p.name.startswith(f"{os.getpid()}-") for p in who.iterdir())
            and time.monotonic() < deadline
        ):
            time.sleep(0.01)

    monkeypatch.setattr(write, "save_figure", noted)
    assert _draw_all(an, tmp_path / "two", 2, until_a_child_drew) == serial
    drawers = {p.name.split("-")[0] for p in who.iterdir()}
    assert str(os.getpid()) in drawers and len(drawers) == 2, sorted(p.name for p in who.iterdir())


@pytest.mark.parametrize("how", ["dies", "hangs"])
def test_a_child_that_stops_inside_a_figure_leaves_it_to_the_parent(
    an, serial, tmp_path, monkeypatch, how
):
    """A child that took a figure and died (or hung) while writing it: the parent draws that figure,
    the half-written file goes, and the figures are the serial ones."""
    parent = os.getpid()
    marker = tmp_path / "stopped"
    save = write.save_figure

    def stopping(fig, path, dpi=100):
        if os.getpid() != parent and path.name.endswith(write.DRAWING_TAG):
            path.write_bytes(b"half a PNG")
            marker.touch()
            if how == "dies":
                os._exit(3)
            time.sleep(3600)
        return save(fig, path, dpi)

    def until_a_child_stopped():
        deadline = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.01)

    monkeypatch.setattr(write, "save_figure", stopping)
    monkeypatch.setattr(write, "CHILD_PATIENCE_S", 1.0)
    monkeypatch.setattr(write, "CHILD_PATIENCE_FACTOR", 0.0)
    folder = tmp_path / "two"
    assert _draw_all(an, folder, 2, until_a_child_stopped) == serial
    assert marker.exists()
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        f"{n}.png" for n in SOME
    )  # the half-written file is gone


def test_a_signal_inside_the_fork_still_interrupts_and_the_child_is_killed(
    an, tmp_path, monkeypatch
):
    """SIGINT while ``os.fork`` runs its callbacks, where Python prints an exception and drops it:
    the CLI's handler holds the signal until the fork is done, then the run stops with Interrupted
    and the child just forked is killed."""
    import signal

    from posfeat.cli.main import _Signals
    from posfeat.core.errors import Interrupted

    real_fork = os.fork
    forked = []

    def fork_with_a_signal():
        pid = real_fork()
        if pid:
            forked.append(pid)
            with contextlib.suppress(
                BaseException
            ):  # what the fork's callbacks do with an exception in them: print it, go on
                signal.raise_signal(signal.SIGINT)
        return pid

    monkeypatch.setattr(os, "fork", fork_with_a_signal)
    monkeypatch.setenv("POSFEAT_FIGURE_PROCESSES", "2")
    handlers = _Signals().install()
    try:
        with pytest.raises(Interrupted):
            write.write_figures(an, tmp_path / "figures")
    finally:
        handlers.restore()
    assert len(forked) == 1
    with pytest.raises(ChildProcessError):  # killed and reaped by the parent
        os.waitpid(forked[0], os.WNOHANG)
    assert not list((tmp_path / "figures").glob(f"*{write.DRAWING_TAG}"))


def test_the_analysis_is_frozen_for_the_collector_while_the_figures_are_drawn(an, tmp_path):
    """The report made meanwhile, and the children, run with the analysis' objects in the
    collector's permanent generation; afterwards (or after a failure) nothing stays frozen."""
    import gc

    seen = []
    _draw_all(an, tmp_path / "two", 2, meanwhile=lambda: seen.append(gc.get_freeze_count()))
    assert seen and seen[0] > 0 and gc.get_freeze_count() == 0

    def fail():
        raise RuntimeError("the report fails")

    with pytest.raises(RuntimeError):
        _draw_all(an, tmp_path / "failed", 2, meanwhile=fail)
    assert gc.get_freeze_count() == 0


@pytest.mark.parametrize("processes", [1, 3])
def test_the_page_copies_are_made_by_whoever_drew_each_figure(an, tmp_path, processes):
    """With ``page``, every figure's form for report.html is left there by the process that drew
    it, the same as the page would make from the written PNG, and nothing half-written is left."""
    from posfeat.outputs.report import compact_png_uri

    page = tmp_path / "page"
    page.mkdir()
    old = os.environ.get("POSFEAT_FIGURE_PROCESSES")
    os.environ["POSFEAT_FIGURE_PROCESSES"] = str(processes)
    try:
        paths = write.write_figures(an, tmp_path / "figs", page=page)
    finally:
        if old is None:
            os.environ.pop("POSFEAT_FIGURE_PROCESSES")
        else:
            os.environ["POSFEAT_FIGURE_PROCESSES"] = old
    copies = write.page_copies(page)
    assert sorted(copies) == sorted(SOME)
    for name, path in paths.items():
        assert copies[name] == compact_png_uri(path)
    assert sorted(p.name for p in page.iterdir()) == sorted(f"{n}.uri" for n in SOME)


def test_save_analysis_embeds_the_page_copies_and_leaves_no_work_folder(an, tmp_path, monkeypatch):
    from posfeat.outputs.report import compact_png_uri

    monkeypatch.setattr(write, "FIGURES", FIGURES)  # the page shows every figure
    out = write.save_analysis(an, tmp_path / "out")
    html = (out / "report.html").read_text()
    for name in FIGURES:
        assert compact_png_uri(out / "figures" / f"{name}.png") in html
    assert not (out / ".page").exists()
