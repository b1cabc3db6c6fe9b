"""One progress helper: bars in terminals and notebooks, one line per stage in logs, nothing with
progress=False."""

from __future__ import annotations

import io
import sys

import pytest

from posfeat import analyze, feature_stats
from posfeat.core import progress as progress_mod
from posfeat.core.progress import STAGE_LINE, LineProgress, NoProgress, progress_bar

from helpers import planted_pair, random_pair


class _FakeStream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_piped_stderr_gets_one_line_per_stage_without_carriage_returns(monkeypatch):
    err = _FakeStream(tty=False)
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.delenv("POSFEAT_PROGRESS", raising=False)
    assert not progress_mod.interactive()
    total = sum(progress_bar(range(7), desc="grid statistics", unit="block"))
    bar = progress_bar(total=5, initial=2, desc="train d_sae=64", unit="step")
    bar.update(3)
    bar.set_postfix(fvu="0.125")
    bar.close()
    assert total == 21
    assert (
        err.getvalue() == "posfeat: grid statistics (7 blocks)\nposfeat: train d_sae=64 (3 steps)\n"
    )
    assert all(STAGE_LINE.match(line) for line in err.getvalue().splitlines())
    assert not STAGE_LINE.match(
        "posfeat: error: No space left on device: report.html; check that path."
    )


def test_piped_stage_says_how_far_it_got_every_few_seconds(monkeypatch):
    """A long stage in a pipe (a training run) is never silent for more than EVERY seconds while its
    count moves."""
    err = _FakeStream(tty=False)
    monkeypatch.setattr(sys, "stderr", err)
    monkeypatch.delenv("POSFEAT_PROGRESS", raising=False)
    now = [100.0]
    monkeypatch.setattr(progress_mod, "time", type(sys)("fake_time"))
    progress_mod.time.monotonic = lambda: now[0]
    bar = progress_bar(total=4000, desc="train d_sae=64", unit="step")
    for step in range(1, 31):
        now[0] += 1.0  # one second a step
        bar.update(1)
        if step == 3:
            bar.set_postfix(fvu="0.125", l0="30.1")
    bar.close()
    lines = err.getvalue().splitlines()
    assert lines[0] == "posfeat: train d_sae=64 (4000 steps)"
    assert lines[1] == "posfeat: train d_sae=64 (5 of 4000 steps, 5 s; fvu 0.125, l0 30.1)"
    assert len(lines) == 1 + 30 // int(progress_mod.EVERY) and progress_mod.EVERY <= 10
    assert all(STAGE_LINE.match(line) for line in lines)


def test_terminal_gets_a_tqdm_bar_and_disabled_gets_nothing(monkeypatch):
    from tqdm.auto import tqdm

    monkeypatch.setattr(sys, "stderr", _FakeStream(tty=True))
    assert isinstance(progress_bar(range(3), desc="x"), tqdm)
    monkeypatch.setattr(sys, "stderr", _FakeStream(tty=False))
    assert isinstance(progress_bar(range(3), desc="x"), LineProgress)
    monkeypatch.setattr(sys, "stderr", _FakeStream(tty=False))
    quiet = progress_bar(range(3), desc="x", enabled=False)
    assert isinstance(quiet, NoProgress) and list(quiet) == [0, 1, 2]
    assert sys.stderr.getvalue() == ""


def test_bars_into_a_pipe_when_asked(monkeypatch):
    from tqdm.auto import tqdm

    monkeypatch.setattr(sys, "stderr", _FakeStream(tty=False))
    monkeypatch.setenv("POSFEAT_PROGRESS", "bars")
    assert isinstance(progress_bar(range(3), desc="x"), tqdm)
    monkeypatch.setenv("POSFEAT_PROGRESS", "lines")
    assert isinstance(progress_bar(range(3), desc="x"), LineProgress)


def test_notebook_kernel_counts_as_interactive(monkeypatch):
    class ZMQInteractiveShell:  # what ipykernel's shell is called
        pass

    fake = type(sys)("IPython")
    fake.get_ipython = lambda: ZMQInteractiveShell()
    monkeypatch.setattr(sys, "stderr", _FakeStream(tty=False))
    monkeypatch.setitem(sys.modules, "IPython", fake)
    assert progress_mod.interactive()


@pytest.mark.parametrize("enabled", [False, True])
def test_topk_enumeration_obeys_progress(enabled, capfd):
    emb, sae = random_pair(k=3)
    feature_stats(emb, sae, range(6), progress=enabled)
    err = capfd.readouterr().err
    assert ("enumerating grid" in err) == enabled


def test_analyze_reports_each_stage_in_logs_and_is_silent_when_asked(capfd):
    emb, sae, _ = planted_pair()
    analyze(emb, sae, tokens_sample=20)
    err = capfd.readouterr().err
    assert (
        "posfeat: grid statistics (" in err
        and "posfeat: reconstruction (" in err
        and "\r" not in err
    )
    analyze(emb, sae, tokens_sample=20, progress=False)
    assert "posfeat:" not in capfd.readouterr().err
