"""The cyclic garbage collector paused for imports and loading, and what they made frozen out of its
passes for the rest of a command only: a caller's own collector state is given back as it was."""

from __future__ import annotations

import contextlib
import gc

import pytest

from posfeat.cli.main import main
from posfeat.core.memory import collector_paused, collector_scope


@pytest.fixture(autouse=True)
def clean_collector():
    was = gc.isenabled()
    gc.unfreeze()
    yield
    gc.unfreeze()
    if was:
        gc.enable()


def same_as(count: int, theirs: int) -> bool:
    """The caller's frozen set, neither given back (the count would fall to the few objects frozen
    since) nor grown by the block's 1000 objects; a few of the caller's may have been freed meanwhile
    (frozen objects still die by reference counting)."""
    return theirs - 500 < count <= theirs + 500


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


def test_a_paused_block_runs_without_collections_and_restores_the_collector():
    gc.enable()
    with collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    with collector_paused():
        pass
    assert not gc.isenabled()  # off before: left off


def test_inside_a_command_what_the_paused_blocks_made_is_frozen_until_it_ends():
    with collector_scope():
        assert gc.get_freeze_count() == 0
        with collector_paused():
            kept = [Node() for _ in range(100)]
        assert gc.get_freeze_count() >= 100  # out of the collector's passes
        before_block = gc.get_freeze_count()
        later = Node()  # made outside a paused block: not frozen
        assert gc.get_freeze_count() == before_block
        del later
    assert gc.get_freeze_count() == 0  # given back to the collector when the command ends
    del kept
    assert gc.collect() >= 100  # and their cycles are collected again


def test_outside_a_command_or_where_the_caller_froze_nothing_more_is_frozen():
    with collector_paused():
        Node()
    assert gc.get_freeze_count() == 0
    gc.freeze()  # the caller's own
    theirs = gc.get_freeze_count()
    with collector_scope(), collector_paused():
        kept = [Node() for _ in range(1000)]
    assert same_as(gc.get_freeze_count(), theirs)  # neither froze more nor unfroze theirs
    del kept


def test_a_command_run_in_process_leaves_the_collector_as_it_found_it(capsys, tmp_path):
    """``posfeat analyze`` imported its modules in paused blocks (so froze them) and then stopped
    at a bad ``--out``: the collector is on and holds nothing frozen once ``main`` returns."""
    gc.enable()
    taken = tmp_path / "a_file.txt"
    taken.write_text("not posfeat's")
    frozen = []
    import posfeat.core.memory as memory

    real = memory.collector_paused

    def noting():
        ctx = real()

        class Noted:
            def __enter__(self):
                return ctx.__enter__()

            def __exit__(self, *exc):
                out = ctx.__exit__(*exc)
                frozen.append(gc.get_freeze_count())
                return out

        return Noted()

    import posfeat.cli.commands as commands
    import posfeat.cli.main as cli_main

    for mod in (cli_main, commands):
        mod.collector_paused = noting
    try:
        assert main(["analyze", "--out", str(taken)]) == 2
    finally:
        for mod in (cli_main, commands):
            mod.collector_paused = real
    assert frozen and max(frozen) > 0  # the imports were frozen while the command ran
    assert gc.isenabled() and gc.get_freeze_count() == 0
    assert "error" in capsys.readouterr().err


def test_a_frozen_block_inside_a_command_keeps_the_commands_freezing_and_a_callers_own():
    """:func:`collector_frozen` (the figures' block): inside a command that owns the freezing, what
    was frozen stays frozen after it (the command unfreezes at its end); where a caller froze
    objects of its own, it neither freezes more nor gives the caller's back to the collector."""
    from posfeat.core.memory import collector_frozen

    with collector_scope():
        with collector_paused():
            kept = [Node() for _ in range(50)]
        before = gc.get_freeze_count()
        with collector_frozen():
            more = [Node() for _ in range(50)]  # made before the block: frozen by it
            assert gc.get_freeze_count() >= before
        assert gc.get_freeze_count() >= before > 0  # still frozen: the command's
    assert gc.get_freeze_count() == 0
    with collector_frozen():  # outside any command: frozen for the block only
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0
    gc.freeze()  # a caller's own
    theirs = gc.get_freeze_count()
    fresh = [Node() for _ in range(1000)]  # what a block that froze more would freeze
    for scope in (collector_scope, contextlib.nullcontext):
        with scope(), collector_frozen():
            pass
        assert same_as(gc.get_freeze_count(), theirs)
    del kept, more, fresh


def test_the_figures_leave_a_callers_frozen_objects_frozen(tmp_path):
    """The review's case: ``write._draw_queue`` used to unfreeze everything when the figures were
    done, the caller's own frozen objects too."""
    import posfeat.outputs.write as write

    gc.freeze()
    theirs = gc.get_freeze_count()
    fresh = [Node() for _ in range(1000)]  # what a block that froze more would freeze
    with collector_scope():
        write._draw_queue(None, tmp_path, [], False, None)
    assert same_as(gc.get_freeze_count(), theirs)
    del fresh
