"""The cyclic garbage collector paused for imports and loading, and what they made frozen out of its
passes for the rest of a command only: a caller's own collector state is given back as it was."""

from __future__ import annotations

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
        kept = [Node() for _ in range(10)]
    assert gc.get_freeze_count() == theirs  # neither froze more nor unfroze the caller's
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
