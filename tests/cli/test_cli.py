"""CLI commands not covered elsewhere: eval and stats, on a small saved model."""

from __future__ import annotations

import pandas as pd

from posfeat.analyses.card import sparkline
from posfeat.analyses.evaluation import EVAL_COLUMNS
from posfeat.cli import main


def test_eval_writes_csv_and_prints_table(planted_dirs, tmp_path, capsys):
    model, sae = planted_dirs
    out = tmp_path / "eval.csv"
    assert main(["eval", "--model", str(model), "--sae", str(sae), "--tokens", "20", "--positions", "0:40", "--out", str(out)]) == 0
    df = pd.read_csv(out)
    assert list(df.columns) == EVAL_COLUMNS and list(df.position) == list(range(40))
    text = capsys.readouterr().out
    assert "in context (0..31)" in text and "past context" in text and "dead features" in text


def test_stats_csv(planted_dirs, tmp_path, capsys):
    model, sae = planted_dirs
    assert main(["stats", "--model", str(model), "--sae", str(sae), "--out", str(tmp_path / "s.csv")]) == 0
    df = pd.read_csv(tmp_path / "s.csv")
    assert len(df) == 8 and set(df.kind) == {"positional", "semantic"}


def test_sparkline_marks_context():
    s = sparkline([0, 1, 2, 3, 4, 5, 6, 7], width=8, mark=4)
    assert s.index("|") == 4 and len(s) == 9 and s[-1] == "█"
