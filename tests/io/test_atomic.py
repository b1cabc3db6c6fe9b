"""The output policy and the one atomic writer: nothing of the user's is replaced, a failure at any point leaves the old output."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from posfeat import PosfeatError
from posfeat.io import atomic
from posfeat.io.atomic import MARKER, TEMP_TAG, check_target, output_file, output_folder, written_by_posfeat


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if TEMP_TAG in p.name or p.name.endswith(".old"))


def _posfeat_output(path: Path, text: str = "old") -> Path:
    with output_folder(path, kind="analyze") as tmp:
        (tmp / "summary.json").write_text(text)
    return path


@pytest.mark.parametrize("spec", ["", " ", ".", "..", "./", "sub/..", "~", "/"])
def test_refuses_empty_current_parent_home_and_root(spec, tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub" if spec == ".." else tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "sub") if spec == "~" else os.environ.get("HOME", "/root"))
    with pytest.raises(PosfeatError, match=r"empty|current folder|parent of the current|home folder|filesystem root"):
        check_target(spec, force=True)


def test_existing_output_needs_force_and_must_be_posfeat_s(tmp_path):
    mine = _posfeat_output(tmp_path / "mine")
    with pytest.raises(PosfeatError, match="already exists; pass force=True"):
        check_target(mine)
    assert check_target(mine, force=True) == mine.resolve()
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("keep me")
    with pytest.raises(PosfeatError, match="was not written by posfeat"):
        check_target(theirs, force=True)
    assert (theirs / "notes.txt").read_text() == "keep me"
    (tmp_path / "file").write_text("x")
    with pytest.raises(PosfeatError, match="is an existing file"):
        check_target(tmp_path / "file", force=True)


def test_replacement_is_atomic_and_marked(tmp_path):
    out = _posfeat_output(tmp_path / "out", "old")
    assert written_by_posfeat(out) == "analyze" and (out / MARKER).is_file()
    with output_folder(out, kind="analyze", force=True) as tmp:
        assert not (tmp / "summary.json").exists() and (out / "summary.json").read_text() == "old"  # old untouched while writing
        (tmp / "summary.json").write_text("new")
    assert (out / "summary.json").read_text() == "new" and _leftovers(tmp_path) == []


def test_failure_while_writing_leaves_the_old_output(tmp_path):
    out = _posfeat_output(tmp_path / "out", "old")
    with pytest.raises(RuntimeError), output_folder(out, kind="analyze", force=True) as tmp:
        (tmp / "summary.json").write_text("half")
        raise RuntimeError("boom")
    assert (out / "summary.json").read_text() == "old" and _leftovers(tmp_path) == []


@pytest.mark.parametrize("failing_call", [1, 2])
def test_failure_during_the_swap_leaves_old_or_new(failing_call, tmp_path, monkeypatch):
    """A rename failing (the old moved aside, or the new moved in) leaves exactly one whole output and no temporaries."""
    out = _posfeat_output(tmp_path / "out", "old")
    real, calls = os.rename, []

    def flaky(a, b):
        calls.append((a, b))
        if len(calls) == failing_call:
            raise OSError(28, "No space left on device", str(b))
        return real(a, b)

    monkeypatch.setattr(atomic.os, "rename", flaky)
    with pytest.raises(PosfeatError, match=f"No space left on device while writing output folder {out}"), \
            output_folder(out, kind="analyze", force=True) as tmp:
        (tmp / "summary.json").write_text("new")
    monkeypatch.setattr(atomic.os, "rename", real)
    assert (out / "summary.json").read_text() == "old" and _leftovers(tmp_path) == []


def test_a_read_only_old_output_is_refused_before_any_work(tmp_path, monkeypatch):
    out = _posfeat_output(tmp_path / "out")
    sub = out / "figures"
    sub.mkdir()
    real = os.access
    monkeypatch.setattr(atomic.os, "access", lambda p, mode: False if str(p) == str(sub) else real(p, mode))  # root ignores chmod
    with pytest.raises(PosfeatError, match=r"cannot be replaced: .*figures is read-only"):
        check_target(out, force=True)


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o002])
def test_outputs_get_plain_mkdir_permissions(umask, tmp_path):
    old = os.umask(umask)
    try:
        out = _posfeat_output(tmp_path / "out")
        output_file(tmp_path / "f.csv", lambda p: p.write_text("a,b\n"), header="a,b")
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((out / "summary.json").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "f.csv").stat().st_mode) == 0o666 & ~umask


def test_file_outputs_replace_only_posfeat_files(tmp_path):
    path = tmp_path / "eval.csv"
    output_file(path, lambda p: p.write_text("position,fvu\n1,2\n"), header="position,fvu")
    with pytest.raises(PosfeatError, match="already exists; pass force=True"):
        output_file(path, lambda p: p.write_text("x"), header="position,fvu")
    output_file(path, lambda p: p.write_text("position,fvu\n3,4\n"), force=True, header="position,fvu")
    assert path.read_text().endswith("3,4\n")
    (tmp_path / "mine.csv").write_text("my,own,data\n")
    with pytest.raises(PosfeatError, match="not written by this posfeat command"):
        output_file(tmp_path / "mine.csv", lambda p: p.write_text("x"), force=True, header="position,fvu")
    assert (tmp_path / "mine.csv").read_text() == "my,own,data\n"
    with pytest.raises(PosfeatError, match="is an existing folder"):
        output_file(tmp_path, lambda p: None, force=True)
    assert _leftovers(tmp_path) == []
