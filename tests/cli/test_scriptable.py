"""Scriptable commands (issue 29 in part): ``--json`` prints one JSON document on standard output,
``prompt -`` reads the text from standard input."""

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
    assert (
        doc["command"] == "stats"
        and len(doc["features"]) == doc["d_sae"]
        and doc["positions"] == [0, 31]
    )
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
    assert parser.parse_args(
        ["sweep", "widths", "--d-sae", "8", "--context", "4", "--out", "x", "--verbose"]
    ).verbose


# ---------------------------------------------------------------- every command that prints
# results: --json, --out -


def test_analyze_json_is_one_document_with_every_verdict(
    planted_dirs, tmp_path, capsys, stub_figures
):
    assert (
        main(
            [
                "analyze",
                *_pair(planted_dirs),
                "--tokens-sample",
                "16",
                "--out",
                str(tmp_path / "a"),
                "--json",
            ]
        )
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert doc["command"] == "analyze" and doc["out"] == str((tmp_path / "a").resolve())
    assert (
        set(doc["counts"]) >= {"positional", "semantic", "mixed", "dead"}
        and "report.html" in doc["files"]
    )
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert {k: f["verdict"] for k, f in doc["findings"].items()} == {
        k: f["verdict"] for k, f in summary["findings"].items()
    }


def test_eval_json_and_out_dash(planted_dirs, tmp_path, capsys, monkeypatch):
    from posfeat.analyses.evaluation import EVAL_COLUMNS

    monkeypatch.chdir(tmp_path)
    assert main(["eval", *_pair(planted_dirs), "--tokens", "16", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (
        doc["command"] == "eval" and len(doc["positions"]) == 48 and doc["in_context"]["fvu"] >= 0
    )
    assert (tmp_path / "eval.csv").is_file() and doc["out"] == str(
        (tmp_path / "eval.csv").resolve()
    )
    assert main(["eval", *_pair(planted_dirs), "--tokens", "16", "--out", "-"]) == 0
    got = capsys.readouterr()
    rows = got.out.splitlines()
    assert rows[0] == ",".join(EVAL_COLUMNS) and len(rows) == 49  # the CSV alone on standard output
    assert "in context (0..31)" in got.err and not (tmp_path / "-").exists()


def test_stats_out_dash_prints_the_csv(planted_dirs, tmp_path, capsys, monkeypatch):
    from posfeat.analyses.classification import FEATURE_COLUMNS

    monkeypatch.chdir(tmp_path)
    assert main(["stats", *_pair(planted_dirs), "--out", "-"]) == 0
    got = capsys.readouterr()
    assert got.out.splitlines()[0] == ",".join(FEATURE_COLUMNS) and "exact statistics" in got.err
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "model",
        "sae",
    ]  # the pair's folders, no file named -


@pytest.mark.parametrize(
    "argv",
    [
        ["stats", "--out", "-", "--json"],
        ["eval", "--out", "-", "--json"],
        ["analyze", "--out", "-"],
        ["compare", "--sae", "S", "--sae", "S", "--out", "-"],
    ],
)
def test_out_dash_where_it_cannot_be_is_one_sentence(
    planted_dirs, tmp_path, capsys, monkeypatch, argv
):
    monkeypatch.chdir(tmp_path)
    model, sae = planted_dirs
    argv = [str(sae) if a == "S" else a for a in argv]
    extra = [] if argv[0] == "compare" else ["--sae", str(sae)]
    assert main([*argv, "--model", str(model), *extra]) == 2
    got = capsys.readouterr()
    assert (
        got.out == ""
        and got.err.count("\n") == 1
        and "--out -" in got.err
        and "Traceback" not in got.err
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "sae"]


def test_compare_json(planted_dirs, tmp_path, capsys):
    model, sae = planted_dirs
    assert (
        main(
            [
                "compare",
                "--sae",
                str(sae),
                "--sae",
                str(sae),
                "--model",
                str(model),
                "--out",
                str(tmp_path / "c"),
                "--json",
            ]
        )
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert (
        doc["command"] == "compare"
        and doc["out"] == str((tmp_path / "c").resolve())
        and doc["summary"]["a"]
    )
    assert doc["summary"]["warnings"] == []  # the same SAE twice: same context, same width


def test_train_json(planted_dirs, tmp_path, capsys):
    model, _ = planted_dirs
    argv = [
        "train",
        "--model",
        str(model),
        "--d-sae",
        "8",
        "--context",
        "8",
        "--steps",
        "4",
        "--batch",
        "8",
        "--out",
        str(tmp_path / "t"),
    ]
    assert main([*argv, "--json"]) == 0
    got = capsys.readouterr()
    doc = json.loads(got.out)
    assert (
        doc["command"] == "train"
        and doc["d_sae"] == 8
        and doc["context_size"] == 8
        and "fvu" in doc["final"]
    )
    assert isinstance(doc["warnings"], list) and all(w in got.err for w in doc["warnings"])


def test_sweep_plan_json(planted_dirs, tmp_path, capsys):
    model, _ = planted_dirs
    argv = [
        "sweep",
        "widths",
        "--model",
        str(model),
        "--d-sae",
        "8,16",
        "--context",
        "8",
        "--steps",
        "4",
        "--batch",
        "8",
        "--out",
        str(tmp_path / "w"),
        "--plan",
        "--json",
    ]
    assert main(argv) == 0
    doc = json.loads(capsys.readouterr().out)
    assert (
        doc["command"] == "sweep widths"
        and {r["d_sae"] for r in doc["plan"]} == {8, 16}
        and not (tmp_path / "w").exists()
    )


@pytest.mark.realmodel
def test_prompt_json_through_a_real_pipe():
    """``echo text | posfeat prompt - --json``: the text from standard input, one JSON document on
    standard output."""
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-m", "posfeat.cli.main", "prompt", "-", "--json", "--top", "3"],
        input="the cat sat\n",
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    doc = json.loads(run.stdout)
    assert doc["command"] == "prompt" and [t["token"] for t in doc["tokens"]][:4] == [
        "[CLS]",
        "the",
        "cat",
        "sat",
    ]
    assert (
        all(len(t["features"]) <= 3 for t in doc["tokens"])
        and doc["tokens"][1]["features"][0]["activation"] > 0
    )


# ---------------------------------------------------------------- help: every flag explained, its
# default said once


def _parsers():
    import argparse

    from posfeat.cli.main import build_parser

    todo = [("posfeat", build_parser())]
    while todo:
        name, parser = todo.pop()
        yield name, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo += [(f"{name} {sub}", child) for sub, child in action.choices.items()]


def test_every_flag_has_help_and_says_its_default_once():
    import argparse

    seen = 0
    for name, parser in _parsers():
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
                continue
            seen += 1
            where = f"{name} {'/'.join(action.option_strings) or action.dest}"
            assert (action.help or "").strip(), f"{where} has no help"
            assert action.help.count("(default") <= 1 and "(default None)" not in action.help, (
                f"{where}: {action.help}"
            )
    assert seen > 100


def test_every_command_that_prints_results_takes_json():
    printing = {
        "posfeat analyze",
        "posfeat feature",
        "posfeat prompt",
        "posfeat stats",
        "posfeat eval",
        "posfeat compare",
        "posfeat train",
        "posfeat sweep widths",
        "posfeat sweep context",
    }
    with_json = {
        name
        for name, parser in _parsers()
        if any("--json" in a.option_strings for a in parser._actions)
    }
    assert with_json == printing


@pytest.mark.parametrize("flag", ["--model", "--sae"])
def test_a_tilde_path_of_an_unknown_user_is_one_sentence(flag, capsys):
    assert main(["stats", flag, "~no_such_user_posfeat"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "~no_such_user_posfeat" in err and "Traceback" not in err


def test_sweep_json_is_one_document(planted_dirs, tmp_path, capsys):
    """A sweep's per-run lines go to standard error, so standard output holds the one document."""
    model, _ = planted_dirs
    argv = [
        "sweep",
        "widths",
        "--model",
        str(model),
        "--d-sae",
        "8,16",
        "--seeds",
        "1",
        "--context",
        "8",
        "--steps",
        "20",
        "--batch",
        "16",
        "--tokens",
        "16",
        "--out",
        str(tmp_path / "w"),
        "--json",
    ]
    assert main(argv) == 0
    got = capsys.readouterr()
    doc = json.loads(got.out)
    assert (
        doc["command"] == "sweep widths"
        and [r["d_sae"] for r in doc["runs"]] == [8, 16]
        and doc["summary"]["widths"] == [8, 16]
    )
    assert "d_sae 16 seed 0" in got.err
