"""Scriptable commands (issue 29 in part): ``--json`` prints one JSON document on standard output, ``prompt -`` reads
the text from standard input."""

from __future__ import annotations

import io
import json

import pytest

from posfeat.cli import main


def _pair(planted_dirs) -> list[str]:
    model, sae = planted_dirs
    return ["--model", str(model), "--sae", str(sae)]


def test_feature_json_is_one_document(planted_dirs, capsys):
    assert main(["feature", "3", "--json", *_pair(planted_dirs)]) == 0
    doc = json.loads(capsys.readouterr().out)  # the whole of standard output is one document
    assert doc["command"] == "feature" and doc["feature"] == 3 and len(doc["profile"]) == 48
    assert {"kind", "position_share", "top_tokens", "span", "runs"} <= set(doc)


def test_stats_json_is_one_document_with_every_feature(planted_dirs, capsys):
    assert main(["stats", "--json", *_pair(planted_dirs)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["command"] == "stats" and len(doc["features"]) == doc["d_sae"] and doc["positions"] == [0, 31]
    assert {"feature", "kind", "position_dependence"} <= set(doc["features"][0])


@pytest.mark.realmodel
def test_prompt_dash_reads_standard_input(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("the cat sat"))
    assert main(["prompt", "-"]) == 0  # the bundled pair, whose WordPiece tokenizer ships with it
    out = capsys.readouterr().out
    assert "'cat'" in out and "'sat'" in out and "'-'" not in out


def test_verbose_is_taken_before_or_after_the_command():
    from posfeat.cli.main import build_parser

    parser = build_parser()
    assert parser.parse_args(["stats", "-v"]).verbose and parser.parse_args(["-v", "stats"]).verbose
    assert not parser.parse_args(["stats"]).verbose
    assert parser.parse_args(["sweep", "widths", "--d-sae", "8", "--context", "4", "--out", "x", "--verbose"]).verbose
