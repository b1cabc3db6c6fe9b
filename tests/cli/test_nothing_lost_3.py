"""Issue 30 ("Nothing lost, round 3"): links where posfeat creates a file, work folders given as
outputs, ``--force`` beside a file of the user's, lock files that are not plain files or cannot be
written, lock-file strings on screen."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import posfeat
from posfeat.cli import main
from posfeat.io import lock as atomic
from posfeat.io.lock import LOCK_TAG
from posfeat.io.ownership import MARKER
from posfeat.io.writes import TEMP_TAG

from helpers import write_planted_folders

pytestmark = pytest.mark.usefixtures("stub_figures")

SRC = str(Path(posfeat.__file__).resolve().parents[1])


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def links(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): os.readlink(p) for p in sorted(root.rglob("*")) if p.is_symlink()
    }


def leftovers(root: Path) -> list[str]:
    return sorted(
        str(p.relative_to(root))
        for p in root.rglob("*")
        if TEMP_TAG in p.name or (p.name.endswith(LOCK_TAG) and p.is_file() and not p.is_symlink())
    )


@pytest.fixture
def pair(tmp_path):
    return write_planted_folders(tmp_path)


def _stats(model: Path, sae: Path, out: Path, *extra: str) -> list[str]:
    return ["stats", "--model", str(model), "--sae", str(sae), "--out", str(out), *extra]


def _analyze(model: Path, sae: Path, out: Path, *extra: str) -> list[str]:
    return [
        "analyze",
        "--model",
        str(model),
        "--sae",
        str(sae),
        "--tokens-sample",
        "8",
        "--out",
        str(out),
        *extra,
    ]


def _train(model: Path, out: Path, *extra: str) -> list[str]:
    return [
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
        str(out),
        *extra,
    ]


def _refused(argv: list[str], root: Path, capsys, needle: str) -> str:
    before, before_links, before_left = snapshot(root), links(root), leftovers(root)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and needle in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert (
        snapshot(root) == before and links(root) == before_links and leftovers(root) == before_left
    )
    return err


# ---------------------------------------------------------------------------- 1. never follow a
# link it did not ask for
@pytest.mark.parametrize(
    "where", ["file_lock", "folder_lock", "train_partial", "train_checkpoint", "dangling_lock"]
)
def test_a_symlink_where_posfeat_creates_a_file_is_refused_naming_it(where, pair, tmp_path, capsys):
    model, sae = pair
    precious = tmp_path / "precious.txt"
    precious.write_text("a week of notes\n")
    target = {"dangling_lock": tmp_path / "not-there.txt"}.get(where, precious)
    if where == "file_lock":
        argv, link = _stats(model, sae, tmp_path / "s.csv"), tmp_path / f".s.csv{LOCK_TAG}"
    elif where == "train_partial":  # (refused before issue 30 too: kept as a guard)
        argv, link = _train(model, tmp_path / "sae_out"), tmp_path / "sae_out.partial"
        target = tmp_path / "precious_dir"
        target.mkdir()
        (target / "thesis.tex").write_text("years of work")
    elif where == "train_checkpoint":
        argv, link = (
            _train(model, tmp_path / "sae_out", "--force"),
            tmp_path / "sae_out.partial" / "checkpoint.safetensors",
        )
        link.parent.mkdir()
        (link.parent / MARKER).write_text(
            json.dumps({"tool": "posfeat", "kind": "train-checkpoint", "files": []})
        )
    else:
        argv, link = _analyze(model, sae, tmp_path / "rep"), tmp_path / f".rep{LOCK_TAG}"
    link.symlink_to(target)
    err = _refused(
        argv,
        tmp_path,
        capsys,
        "checkpoint.safetensors (a symbolic link)" if where == "train_checkpoint" else str(link),
    )
    assert (
        "link" in err
        and precious.read_text() == "a week of notes\n"
        and not (tmp_path / "not-there.txt").exists()
    )


def test_a_link_inside_an_old_output_makes_force_refuse(pair, tmp_path, capsys):
    model, sae = pair
    assert main(_analyze(model, sae, tmp_path / "rep")) == 0
    capsys.readouterr()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "data.txt").write_text("mine")
    os.rename(tmp_path / "rep" / "figures", tmp_path / "rep" / "figs_old")
    (tmp_path / "rep" / "figures").symlink_to(tmp_path / "mine")
    _refused(
        _analyze(model, sae, tmp_path / "rep", "--force"),
        tmp_path,
        capsys,
        "figures (a symbolic link)",
    )


def test_a_fifo_at_the_lock_path_is_named(pair, tmp_path, capsys):
    model, sae = pair
    fifo = tmp_path / f".s.csv{LOCK_TAG}"
    os.mkfifo(fifo)
    err = _refused(
        _stats(model, sae, tmp_path / "s.csv"), tmp_path, capsys, f"{fifo} is not a plain file"
    )
    assert "the system named no path" not in err and fifo.exists()


# ---------------------------------------------------------------------------- 2. a work folder is
# never an output
@pytest.fixture
def holder():
    procs = []

    def hold(target: Path) -> subprocess.Popen:
        code = (
            "import sys; from pathlib import Path; from posfeat.io.lock import lock_target, "
            "set_run; "
            "set_run('posfeat train --out X'); lock_target(Path(sys.argv[1])); print('locked', "
            "flush=True); sys.stdin.read()"
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", code, str(target)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": SRC},
        )
        assert proc.stdout.readline().strip() == "locked"
        procs.append(proc)
        return proc

    yield hold
    for proc in procs:
        proc.stdin.close()
        proc.wait(30)


@pytest.mark.parametrize("name", ["X.partial", f".X{LOCK_TAG}", "temporary"])
def test_out_on_a_running_job_s_work_folder_is_refused_even_with_force(
    name, pair, tmp_path, holder, capsys
):
    model, _ = pair
    partial = tmp_path / "X.partial"
    partial.mkdir()
    (partial / "checkpoint.safetensors").write_bytes(b"the running job's checkpoint")
    (partial / MARKER).write_text(
        json.dumps({"tool": "posfeat", "kind": "train-checkpoint", "files": []})
    )
    job = holder((tmp_path / "X").resolve())
    if name == "temporary":
        name = f".X.{job.pid}.abc{TEMP_TAG}"
        (tmp_path / name).mkdir()
        (tmp_path / name / "cfg.json").write_text("{}")
    _refused(
        _train(model, tmp_path / name, "--force"),
        tmp_path,
        capsys,
        "posfeat never writes an output over its own work",
    )


# ---------------------------------------------------------------------------- 3. --force replaces
# only what posfeat wrote
def test_force_beside_a_user_file_named_like_posfeat_s_refuses_naming_it(pair, tmp_path, capsys):
    model, sae = pair
    assert main(_analyze(model, sae, tmp_path / "rep")) == 0
    capsys.readouterr()
    mine = tmp_path / "rep" / "figures" / "my_annotated_plot.png"
    mine.write_text("x\n")
    _refused(
        _analyze(model, sae, tmp_path / "rep", "--force"),
        tmp_path,
        capsys,
        "figures/my_annotated_plot.png",
    )
    assert mine.read_text() == "x\n"


def test_force_over_a_file_changed_since_posfeat_wrote_it_refuses_naming_it(pair, tmp_path, capsys):
    model, sae = pair
    assert main(_analyze(model, sae, tmp_path / "rep")) == 0
    capsys.readouterr()
    assert "features.csv" in json.loads((tmp_path / "rep" / MARKER).read_text())["sha256"]
    with open(tmp_path / "rep" / "features.csv", "a") as fh:
        fh.write("# my annotation\n")
    _refused(
        _analyze(model, sae, tmp_path / "rep", "--force"),
        tmp_path,
        capsys,
        "features.csv (changed since posfeat wrote it)",
    )
    assert (
        main(_analyze(model, sae, tmp_path / "other")) == 0
    )  # an unchanged output is still replaced
    assert main(_analyze(model, sae, tmp_path / "other", "--force")) == 0


# ---------------------------------------------------------------------------- lock files that
# cannot be written, shown raw
def test_a_lock_that_cannot_be_written_leaves_nothing_and_names_the_path(
    pair, tmp_path, capsys, monkeypatch
):
    model, sae = pair

    def full(*a, **k):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.os, "pwrite", full)
    err = _refused(
        _analyze(model, sae, tmp_path / "deep" / "rep"),
        tmp_path,
        capsys,
        f"{tmp_path}/deep/.rep{LOCK_TAG}",
    )
    assert "free some space" in err and not (tmp_path / "deep").exists()


def test_a_taken_over_lock_is_shown_escaped_and_a_live_pid_is_not_called_dead(
    pair, tmp_path, caplog
):
    model, sae = pair
    live = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        lock = tmp_path / f".s.csv{LOCK_TAG}"
        lock.write_text(
            json.dumps(
                {
                    "pid": live.pid,
                    "command": "posfeat \x1b[2J\x1b[31mstats \u202egnp.exe",
                    "started": "\x07now",
                }
            )
        )
        assert main(_stats(model, sae, tmp_path / "s.csv")) == 0
        text = caplog.text
        assert (
            "took over the lock" in text
            and "\x1b" not in text
            and "\u202e" not in text
            and "\x07" not in text
        ), text
        assert (
            "\\u001b[2J" in text
            and "\\u202e" in text
            and "no longer running" not in text
            and "no longer holds it" in text
        )
    finally:
        live.stdin.close()
        live.wait(30)
