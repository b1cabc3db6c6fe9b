"""The output policy and the atomic writes (posfeat.io.policy, .ownership, .output, .writes):
nothing of the user's is replaced, a failure at any point leaves the old output."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from posfeat import PosfeatError
from posfeat.experiments.folder import SWEEP_KINDS
from posfeat.io import policy
from posfeat.io import writes as atomic
from posfeat.io.output import output_file, output_folder
from posfeat.io.ownership import MARKER
from posfeat.io.ownership import written_by_posfeat as _written
from posfeat.io.policy import check_target as _check
from posfeat.io.writes import TEMP_TAG
from posfeat.outputs.write import ANALYZE

KINDS = (ANALYZE, *SWEEP_KINDS)  # the kinds a folder of these tests may be


def check_target(out, **settings):
    return _check(out, kinds=KINDS, **settings)


def written_by_posfeat(folder):
    return _written(folder, KINDS)


def _leftovers(folder: Path) -> list[str]:
    return sorted(
        p.name for p in folder.rglob("*") if TEMP_TAG in p.name or p.name.endswith(".old")
    )


def _posfeat_output(path: Path, text: str = "old") -> Path:
    with output_folder(path, kind=ANALYZE) as tmp:
        (tmp / "summary.json").write_text(text)
    return path


@pytest.mark.parametrize("spec", ["", " ", ".", "..", "./", "sub/..", "~", "/"])
def test_refuses_empty_current_parent_home_and_root(spec, tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub" if spec == ".." else tmp_path)
    monkeypatch.setenv(
        "HOME", str(tmp_path / "sub") if spec == "~" else os.environ.get("HOME", "/root")
    )
    with pytest.raises(
        PosfeatError,
        match=r"empty|current folder|parent of the current|home folder|filesystem root",
    ):
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
    with output_folder(out, kind=ANALYZE, force=True) as tmp:
        assert (
            not (tmp / "summary.json").exists() and (out / "summary.json").read_text() == "old"
        )  # old untouched while writing
        (tmp / "summary.json").write_text("new")
    assert (out / "summary.json").read_text() == "new" and _leftovers(tmp_path) == []


def test_failure_while_writing_leaves_the_old_output(tmp_path):
    out = _posfeat_output(tmp_path / "out", "old")
    with pytest.raises(RuntimeError), output_folder(out, kind=ANALYZE, force=True) as tmp:
        (tmp / "summary.json").write_text("half")
        raise RuntimeError("boom")
    assert (out / "summary.json").read_text() == "old" and _leftovers(tmp_path) == []


@pytest.mark.parametrize("failing_call", [1, 2])
def test_failure_during_the_swap_leaves_old_or_new(failing_call, tmp_path, monkeypatch):
    """A rename failing (the old moved aside, or the new moved in) leaves exactly one whole output
    and no temporaries."""
    out = _posfeat_output(tmp_path / "out", "old")
    real, calls = os.rename, []

    def flaky(a, b):
        calls.append((a, b))
        if len(calls) == failing_call:
            raise OSError(28, "No space left on device", str(b))
        return real(a, b)

    monkeypatch.setattr(atomic.os, "rename", flaky)
    with (
        pytest.raises(
            PosfeatError, match=f"No space left on device while writing output folder {out}"
        ),
        output_folder(out, kind=ANALYZE, force=True) as tmp,
    ):
        (tmp / "summary.json").write_text("new")
    monkeypatch.setattr(atomic.os, "rename", real)
    assert (out / "summary.json").read_text() == "old" and _leftovers(tmp_path) == []


def test_a_read_only_old_output_is_refused_before_any_work(tmp_path, monkeypatch):
    out = _posfeat_output(tmp_path / "out")
    sub = out / "figures"
    sub.mkdir()
    real = os.access
    monkeypatch.setattr(
        atomic.os, "access", lambda p, mode: False if str(p) == str(sub) else real(p, mode)
    )  # root ignores chmod
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
    output_file(
        path, lambda p: p.write_text("position,fvu\n3,4\n"), force=True, header="position,fvu"
    )
    assert path.read_text().endswith("3,4\n")
    (tmp_path / "mine.csv").write_text("my,own,data\n")
    with pytest.raises(PosfeatError, match="not written by this posfeat command"):
        output_file(
            tmp_path / "mine.csv", lambda p: p.write_text("x"), force=True, header="position,fvu"
        )
    assert (tmp_path / "mine.csv").read_text() == "my,own,data\n"
    with pytest.raises(PosfeatError, match="is an existing folder"):
        output_file(tmp_path, lambda p: None, force=True)
    assert _leftovers(tmp_path) == []


# ---------------------------------------------------------------------------- issue 18: ownership
# by content, inputs, parents
def test_ownership_is_by_content_not_by_one_file_name(tmp_path):
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "widths.csv").write_text("a,b\n")
    (thesis / "thesis.tex").write_text("years of work")
    with pytest.raises(
        PosfeatError, match=r"was not written by posfeat \(thesis.tex, widths.csv\)"
    ):
        check_target(thesis, force=True)
    v01 = tmp_path / "v01"  # a complete posfeat 0.1 width sweep: replaceable
    (v01 / "figures").mkdir(parents=True)
    (v01 / "d_sae_8").mkdir()
    for name in (
        "widths.csv",
        "summary.json",
        "section.html",
        "figures/width_counts.png",
        "d_sae_8/cfg.json",
        "d_sae_8/sae_weights.safetensors",
    ):
        (v01 / name).write_text("x")
    assert written_by_posfeat(v01) == "sweep widths" and check_target(v01, force=True) == v01
    (v01 / "d_sae_8" / "notes.md").write_text("mine")
    assert written_by_posfeat(v01) is None
    with pytest.raises(
        PosfeatError,
        match=r"holds files a posfeat sweep widths output does not have \(d_sae_8/notes.md\)",
    ):
        check_target(v01, force=True)
    out = _posfeat_output(tmp_path / "out")
    assert json.loads((out / MARKER).read_text())["files"] == ["summary.json"]
    (out / "figures").mkdir()
    (out / "figures" / "mine.txt").write_text("x")
    with pytest.raises(PosfeatError, match=r"does not have \(figures/mine.txt\)"):
        check_target(out, force=True)
    assert (out / "figures" / "mine.txt").read_text() == "x"


@pytest.mark.parametrize("where", ["same", "inside", "holds"])
def test_an_input_is_never_an_output(where, tmp_path):
    sae = tmp_path / "sweep" / "d_sae_8" / "seed_0"
    sae.mkdir(parents=True)
    (sae / "cfg.json").write_text("{}")
    out = {"same": sae, "inside": sae / "sub", "holds": tmp_path / "sweep"}[where]
    with pytest.raises(PosfeatError, match="posfeat never writes over what it reads"):
        check_target(out, force=True, inputs=[("sae", str(sae))])
    with pytest.raises(PosfeatError, match="posfeat's installed package"):
        check_target(policy.PACKAGE_DIR / "bundled" / "minilm-l0-res-2048", force=True)
    assert (sae / "cfg.json").read_text() == "{}"


def test_folders_made_for_an_output_go_when_it_fails(tmp_path):
    with (
        pytest.raises(RuntimeError),
        output_folder(tmp_path / "a" / "b" / "out", kind=ANALYZE) as tmp,
    ):
        (tmp / "summary.json").write_text("half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
