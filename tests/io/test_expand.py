"""A leading ``~name`` of no known user stays as written (as a shell leaves it) instead of raising
RuntimeError."""

from __future__ import annotations

from pathlib import Path

from posfeat.cli import main
from posfeat.io.paths import expand


def test_unknown_user_stays_literal(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert expand("~0nosuchuser/x") == Path("~0nosuchuser/x")
    assert expand("~/x") == tmp_path / "x"


def test_cli_names_a_model_folder_of_an_unknown_user(capsys):
    assert main(["stats", "--model", "~0nosuchuser", "--sae", "minilm"]) == 2
    err = capsys.readouterr().err
    assert "~0nosuchuser does not exist" in err and "Traceback" not in err
