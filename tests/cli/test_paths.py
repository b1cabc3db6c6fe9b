"""Every path a user can give works relative to the current folder, absolute, with ~, and through a
symlink."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import save_file

from posfeat import read_sae_folder
from posfeat.cli import main

from helpers import write_planted_folders

# Where files go, locks, paths and errors are tested here, not how figures look: each figure is a
# 1x1 PNG (conftest).
pytestmark = pytest.mark.usefixtures("stub_figures")


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A home folder holding the planted model and SAE, token weights, an SAE to fine-tune and a
    sweep section."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    _, sae = write_planted_folders(home)
    save_file({"weights": torch.rand(60) + 0.1}, str(home / "w.safetensors"))
    (home / "sweep").mkdir()
    (home / "sweep" / "section.html").write_text("<section>sweep-marker</section>")
    shutil.copytree(sae, home / "init")
    for name in ("model", "sae", "w.safetensors", "init", "sweep"):
        os.symlink(home / name, home / f"link-{name}")
    work = home / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return home


def _forms(home, name: str, i: int) -> str:
    """The i-th way of naming ``name`` from ``home/work``: relative, absolute, with ~, through a
    symlink."""
    return [f"../{name}", str(home / name), f"~/{name}", str(home / f"link-{name}")][i]


@pytest.mark.parametrize("form", range(4), ids=["relative", "absolute", "tilde", "symlink"])
def test_analyze_paths(form, home):
    out = ["out", str(home / "work" / "out-abs"), "~/out-home", str(home / "link-out")][form]
    if form == 3:
        (home / "real-out").mkdir()
        os.symlink(home / "real-out", home / "link-out")
        out_dir = home / "real-out"
    code = main(
        [
            "analyze",
            "--model",
            _forms(home, "model", form),
            "--sae",
            _forms(home, "sae", form),
            "--tokens-sample",
            "8",
            "--include-sweep",
            _forms(home, "sweep", form),
            "--out",
            out,
            *(["--force"] if form == 3 else []),
        ]
    )
    assert code == 0
    out_dir = {0: home / "work" / "out", 1: home / "work" / "out-abs", 2: home / "out-home"}.get(
        form, home / "real-out"
    )
    assert "sweep-marker" in (out_dir / "report.html").read_text()
    assert json.loads((out_dir / "summary.json").read_text())["counts"]["positional"] == 5


def test_a_symlinked_output_that_is_not_posfeat_s_is_refused(home, capsys):
    (home / "theirs").mkdir()
    (home / "theirs" / "keep.txt").write_text("x")
    os.symlink(home / "theirs", home / "link-theirs")
    assert main(["analyze", "--out", str(home / "link-theirs"), "--force"]) == 2
    assert (
        home / "theirs" / "keep.txt"
    ).read_text() == "x" and "not written by posfeat" in capsys.readouterr().err


@pytest.mark.parametrize("form", range(4), ids=["relative", "absolute", "tilde", "symlink"])
def test_train_paths(form, home):
    out = ["sae-out", str(home / "work" / "sae-abs"), "~/sae-home", "sae-rel"][form]
    code = main(
        [
            "train",
            "--model",
            _forms(home, "model", form),
            "--token-weights",
            _forms(home, "w.safetensors", form),
            "--init",
            _forms(home, "init", form),
            "--context",
            "40",
            "--d-sae",
            "8",
            "--steps",
            "4",
            "--batch",
            "16",
            "--out",
            out,
        ]
    )
    assert code == 0
    out_dir = {
        0: home / "work" / "sae-out",
        1: home / "work" / "sae-abs",
        2: home / "sae-home",
        3: home / "work" / "sae-rel",
    }[form]
    sae = read_sae_folder(out_dir)
    assert (
        sae.d_sae == 8
        and sae.context_size == 40
        and (out_dir / "token_weights.safetensors").is_file()
    )
