"""CLI commands not covered elsewhere: eval and stats, on a small saved model."""

from __future__ import annotations

import pandas as pd
import pytest

from posfeat.analyses.card import sparkline
from posfeat.analyses.evaluation import EVAL_COLUMNS
from posfeat.cli import main


def test_eval_writes_csv_and_prints_table(planted_dirs, tmp_path, capsys):
    model, sae = planted_dirs
    out = tmp_path / "eval.csv"
    assert (
        main(
            [
                "eval",
                "--model",
                str(model),
                "--sae",
                str(sae),
                "--tokens",
                "20",
                "--positions",
                "0:40",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    df = pd.read_csv(out)
    assert list(df.columns) == EVAL_COLUMNS and list(df.position) == list(range(40))
    text = capsys.readouterr().out
    assert "in context (0..31)" in text and "past context" in text and "dead features" in text


def test_stats_csv(planted_dirs, tmp_path, capsys):
    model, sae = planted_dirs
    assert (
        main(["stats", "--model", str(model), "--sae", str(sae), "--out", str(tmp_path / "s.csv")])
        == 0
    )
    df = pd.read_csv(tmp_path / "s.csv")
    assert len(df) == 8 and set(df.kind) == {"positional", "semantic"}


def test_sparkline_marks_context():
    s = sparkline([0, 1, 2, 3, 4, 5, 6, 7], width=8, mark=4)
    assert s.index("|") == 4 and len(s) == 9 and s[-1] == "█"


def test_the_program_flushes_its_output_and_runs_exit_handlers_before_it_leaves(tmp_path):
    """``run`` (the ``posfeat`` program) ends with ``os._exit``, skipping the interpreter's
    teardown: what it printed and what the exit handlers do must still happen, and its exit status
    is main's."""
    import os
    import subprocess
    import sys

    from posfeat.cli import build_parser

    marker = tmp_path / "atexit-ran"
    code = (
        "import atexit, pathlib, sys\n"
        "marker = pathlib.Path(sys.argv[1]); atexit.register(marker.write_text, 'ran')\n"
        "sys.argv = ['posfeat', *sys.argv[2:]]\n"
        "from posfeat.cli.main import run\n"
        "print('x' * 100000, end='')  # more than any stream buffer\n"
        "run()\n"
    )
    env = {
        k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"
    }  # block-buffered pipes, as usual
    out = subprocess.run(
        [sys.executable, "-c", code, str(marker), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert out.returncode == 0 and marker.read_text() == "ran"
    assert out.stdout == "x" * 100000 + build_parser().format_help()
    bad = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            str(marker),
            "feature",
            "0",
            "--sae",
            str(tmp_path / "missing"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert (
        bad.returncode == 2
        and bad.stderr.startswith("posfeat: error:")
        and len(bad.stderr.strip().splitlines()) == 1
    )
    assert "missing" in bad.stderr  # the SAE it could not find, not a usage error


@pytest.mark.parametrize("unbuffered, size", [(True, 100_000), (False, 100_000), (False, 10)])
def test_a_reader_that_left_ends_the_program_quietly_with_the_sigpipe_status(unbuffered, size):
    """``posfeat ... | head``: when the reader of the standard output has left, the program prints
    nothing more (no error, no traceback) and ends with ``128 + SIGPIPE``, as a program that SIGPIPE
    ends: whether the write failed inside the command (an unbuffered stream, or more than a buffer)
    or at the program's final flush (a few bytes)."""
    import os
    import signal
    import subprocess
    import sys

    code = (
        "import sys, types\n"
        "sys.argv = ['posfeat', 'feature', '0']\n"
        "commands = sys.modules['posfeat.cli.commands'] = types.ModuleType('posfeat.cli.commands')  "
        "# a command, without torch\n"
        f"commands.COMMANDS = {{'feature': lambda args, invocation: print('x' * {size}) or 0}}\n"
        "from posfeat.cli.main import run\n"
        "run()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"} | (
        {"PYTHONUNBUFFERED": "1"} if unbuffered else {}
    )
    r, w = os.pipe()
    os.close(r)  # the reader left before the program wrote
    try:
        out = subprocess.run(
            [sys.executable, "-c", code],
            stdout=w,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            env=env,
        )
    finally:
        os.close(w)
    assert out.returncode == 128 + signal.SIGPIPE and out.stderr == ""


def test_a_broken_pipe_elsewhere_is_still_an_error():
    """Only the standard output's reader leaving is quiet: a broken pipe of the command's own, while
    the standard output is a pipe whose reader is there, is reported in one line with exit 2."""
    import subprocess
    import sys

    code = (
        "import sys, types\n"
        "sys.argv = ['posfeat', 'feature', '0']\n"
        "commands = sys.modules['posfeat.cli.commands'] = "
        "types.ModuleType('posfeat.cli.commands')\n"
        "def broken(args, invocation):\n"
        "    print('partial')\n"
        "    raise BrokenPipeError(32, 'Broken pipe')\n"
        "commands.COMMANDS = {'feature': broken}\n"
        "from posfeat.cli.main import run\n"
        "run()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stdout == "partial\n"
    assert (
        out.stderr.startswith("posfeat: error: Broken pipe")
        and len(out.stderr.strip().splitlines()) == 1
    )


def test_analyze_names_every_csv_it_wrote_in_its_wrote_line_and_the_reports_files(
    planted_dirs, tmp_path, capsys, stub_figures
):
    model, sae = planted_dirs
    out = tmp_path / "o"
    assert (
        main(
            [
                "analyze",
                "--model",
                str(model),
                "--sae",
                str(sae),
                "--out",
                str(out),
                "--tokens-sample",
                "16",
            ]
        )
        == 0
    )
    csvs = sorted(p.name for p in out.glob("*.csv"))
    assert "tokens.csv" in csvs
    wrote = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("wrote "))
    files = (out / "report.html").read_text().split("<h2>Files</h2>", 1)[1].split("</p>", 1)[0]
    for name in csvs:
        assert name in wrote and name in files, name
