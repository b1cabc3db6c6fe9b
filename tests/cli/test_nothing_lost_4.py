"""Issue 30, round 3, items 4 and 5 (what was left) and 8: machine states and odd inputs that used
to end in a traceback or a wrong word end in one sentence, exit 2 and nothing left behind: a full
disk during training or a sweep (ulimit -f), a non-UTF-8 --out, a closed standard output, a path
thousands of characters long, a model with fewer than three principal components, enumeration or an
SAE too big for memory; CSV cells are written exactly as the tokens are."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import posfeat
from posfeat.cli import main
from posfeat.core.errors import PosfeatMemoryError
from posfeat.io.lock import LOCK_TAG
from posfeat.io.writes import TEMP_TAG

from helpers import REPO, random_pair, write_planted_folders

SRC = str(REPO / "src")


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def leftovers(root: Path) -> list[str]:
    return [
        str(p)
        for p in root.rglob("*")
        if TEMP_TAG in p.name or p.name.endswith((LOCK_TAG, ".partial"))
    ]


@pytest.fixture
def pair(tmp_path):
    return write_planted_folders(tmp_path)


def _posfeat(
    argv: list[str], cwd: Path, fsize: int | None = None, shell_suffix: str = ""
) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC, "POSFEAT_NUMBA_CACHE": "0", "PYTHONWARNINGS": "ignore"}

    def limit() -> None:
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    if shell_suffix:
        import shlex

        cmd = (
            " ".join(shlex.quote(a) for a in [sys.executable, "-m", "posfeat.cli.main", *argv])
            + " "
            + shell_suffix
        )
        return subprocess.run(
            ["bash", "-c", cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
        )
    return subprocess.run(
        [sys.executable, "-m", "posfeat.cli.main", *argv],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limit,
    )


def _one_sentence(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("posfeat: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_a_full_disk_during_training_or_a_sweep_is_one_sentence_and_leaves_nothing(
    command, pair, tmp_path
):
    """The safetensors writer reports a full disk (here ``ulimit -f``: EFBIG) as its own
    SafetensorError, which used to end the run with a traceback and status 1."""
    model, _ = pair
    if command == "train":
        argv = [
            "train",
            "--model",
            str(model),
            "--d-sae",
            "256",
            "--context",
            "8",
            "--steps",
            "3",
            "--batch",
            "8",
            "--out",
            "t",
        ]
    else:
        argv = [
            "sweep",
            "widths",
            "--model",
            str(model),
            "--context",
            "8",
            "--d-sae",
            "256,512",
            "--steps",
            "3",
            "--batch",
            "8",
            "--seeds",
            "1",
            "--out",
            "t",
        ]
    before = snapshot(tmp_path)
    run = _posfeat(argv, tmp_path, fsize=12_000)  # the weights alone are 2 x 24 x 256 x 4 = 49 kB
    line = _one_sentence(run.stderr)
    assert (
        run.returncode == 2
        and "File too large" in line
        and "ulimit -f" in line
        and "SafetensorError" not in line
    ), run.stderr
    assert not (tmp_path / "t").exists() and not [
        p for p in tmp_path.rglob("*") if TEMP_TAG in p.name or p.name.endswith(LOCK_TAG)
    ]
    if command == "train":
        assert snapshot(tmp_path) == before and leftovers(tmp_path) == []
    # a sweep keeps what it finished in t.partial to resume (docs/safety.md); no run there is
    # half-written
    else:
        assert "run the same command again" in line
        assert {k for k in snapshot(tmp_path) if k.startswith("t.partial/d_sae")} == set()


@pytest.mark.usefixtures("stub_figures")
def test_a_non_utf8_out_is_refused_before_any_work(pair, tmp_path, capsys, monkeypatch):
    """``--out $'\\xff'`` arrives as a lone surrogate; analyze used to compute everything and then
    fail writing it into its records with UnicodeEncodeError."""
    model, sae = pair
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    code = main(
        [
            "analyze",
            "--model",
            str(model),
            "--sae",
            str(sae),
            "--tokens-sample",
            "8",
            "--out",
            "r\udcff",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "is not valid UTF-8" in _one_sentence(err), err
    assert snapshot(tmp_path) == before and leftovers(tmp_path) == []


def test_a_closed_standard_output_is_one_sentence(pair, tmp_path):
    """``posfeat stats ... >&-`` used to end with AttributeError: 'NoneType' object has no attribute
    ..."""
    model, sae = pair
    run = _posfeat(
        ["stats", "--model", str(model), "--sae", str(sae)], tmp_path, shell_suffix=">&-"
    )
    assert run.returncode == 2 and "the standard output is closed" in _one_sentence(run.stderr), (
        run.stderr
    )


def test_a_long_path_is_shortened_in_the_message(pair, tmp_path, capsys):
    """A path of 4,500 characters used to be printed whole (a 4,549-character line)."""
    model, sae = pair
    code = main(
        [
            "stats",
            "--model",
            str(model),
            "--sae",
            str(sae),
            "--out",
            str(tmp_path / ("a" * 4500) / "s.csv"),
        ]
    )
    err = capsys.readouterr().err
    line = _one_sentence(err)
    assert code == 2 and len(line) < 400 and "characters)" in line, line
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("shape", [{"n_ctx": 2}, {"d_model": 2}])
def test_a_model_with_fewer_than_three_principal_components_draws_its_helix_flat(shape):
    emb, sae = random_pair(**shape)
    an = posfeat.analyze(emb, sae, tokens_sample=8, progress=False)
    assert an.helix.rows.shape[1] == 3 and an.helix.feature_points.shape[1] == 3
    for name in ("helix", "helix_interactive"):
        assert (
            an.figure(name) is not None
        )  # used to raise IndexError (index 2 is out of bounds for axis 1 with size 2)


def test_enumeration_too_big_for_memory_is_refused_with_the_estimate(monkeypatch):
    """``brute_force_stats(..., tokens=range(10**9))`` used to list a billion ids first; a grid that
    cannot fit is refused before allocating, with the estimate and the limit."""
    import posfeat.core.memory as memory

    emb, sae = random_pair()
    with pytest.raises(
        posfeat.PosfeatError,
        match=r"tokens=range\(0, 1000000000\): tokens 0..999999999 fall outside 0..39",
    ):
        posfeat.brute_force_stats(emb, sae, tokens=range(10**9))
    monkeypatch.setattr(
        memory, "memory_limit", lambda device="cpu": (10_000, "the limit set by ulimit -v")
    )
    with pytest.raises(
        PosfeatMemoryError,
        match=r"Enumerating 40 tokens x 12 positions through 16 features needs about .* more than "
        r"the limit set by ulimit -v",
    ) as info:
        posfeat.brute_force_stats(emb, sae)
    assert isinstance(info.value, MemoryError)


def test_an_sae_too_big_for_memory_is_refused_before_it_is_read(tmp_path, monkeypatch):
    import posfeat.core.memory as memory

    _, sae = write_planted_folders(tmp_path)
    monkeypatch.setattr(
        memory, "memory_limit", lambda device="cpu": (1_000, "the limit set by ulimit -v")
    )
    with pytest.raises(
        PosfeatMemoryError, match=r"Reading .* \(4 tensors\) needs about .* more than the limit"
    ):
        posfeat.load_sae(str(sae))


FORMULAS = ["=1+2", "+cmd", "-2", "@SUM(A1)", '=HYPERLINK("x")', "\t=tab", "plain"]


def test_csv_cells_keep_token_text_exactly_even_when_it_looks_like_a_formula(tmp_path):
    """Decided (docs/safety.md): posfeat's CSVs are data for pandas and scripts, so a token that
    begins with = + - @ is written exactly as it is, never prefixed or quoted away; reading the file
    back gives the same strings."""
    emb, sae = random_pair(d_vocab=len(FORMULAS) * 4)
    tokens = [
        FORMULAS[i % len(FORMULAS)] + ("" if i < len(FORMULAS) else f"#{i}")
        for i in range(emb.d_vocab)
    ]
    emb = posfeat.Embeddings(emb.W_E, emb.W_pos, tokens=tokens, name="formulas")
    an = posfeat.analyze(emb, sae, tokens_sample=8, progress=False)
    an.features[["feature", "top_tokens"]].to_csv(
        tmp_path / "f.csv", index=False
    )  # as save_analysis writes it
    back = pd.read_csv(tmp_path / "f.csv", keep_default_na=False)
    assert back.top_tokens.tolist() == an.features.top_tokens.tolist()
    assert any(
        str(t).startswith(("=", "+", "-", "@"))
        for t in np.concatenate([str(x).split() for x in back.top_tokens])
    )


def test_a_keyboard_interrupt_no_signal_sent_is_not_called_sigint(monkeypatch, capsys):
    """Under ``ulimit -v 1G`` OpenBLAS failing to start its threads ended a run with a
    KeyboardInterrupt that no signal sent, reported as "interrupted by SIGINT" (status 130); it is
    an error of its own, saying what happened."""
    import posfeat.cli.commands as commands

    def gives_up(args, invocation):
        raise KeyboardInterrupt

    monkeypatch.setitem(commands.COMMANDS, "stats", gives_up)
    code = main(["stats"])
    err = capsys.readouterr().err
    assert (
        code == 2
        and "SIGINT" not in err
        and "a KeyboardInterrupt that no signal sent" in _one_sentence(err)
    ), err


def _mount_namespace_allowed() -> bool:
    try:
        return (
            subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=30).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(
    not _mount_namespace_allowed(),
    reason="needs a mount namespace (root and unshare) for a real mount",
)
@pytest.mark.parametrize("case", ["read-only target", "mount point as --out"])
def test_a_read_only_target_or_a_mount_point_is_one_sentence_and_leaves_nothing(
    case, pair, tmp_path
):
    """Real mounts in a private mount namespace (root cannot be kept out of a folder by its
    permissions): a read-only bind mount as the target's folder, and a bind mount as --out itself (a
    rename over it fails: EBUSY)."""
    import shlex

    model, sae = pair
    place = tmp_path / "place"
    place.mkdir()
    before = snapshot(tmp_path)
    if case == "read-only target":
        out, mount = (
            place / "o",
            f"mount --bind {place} {place} && mount -o remount,ro,bind {place}",
        )
    else:
        out, mount = place, f"mount --bind {place} {place}"
    argv = [
        "analyze",
        "--model",
        str(model),
        "--sae",
        str(sae),
        "--tokens-sample",
        "8",
        "--out",
        str(out),
        "--force",
    ]
    cmd = " ".join(shlex.quote(a) for a in [sys.executable, "-m", "posfeat.cli.main", *argv])
    env = {**os.environ, "PYTHONPATH": SRC, "POSFEAT_NUMBA_CACHE": "0", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"{mount} && {cmd}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    assert str(place) in _one_sentence(done.stderr)
    assert snapshot(tmp_path) == before and not leftovers(tmp_path)
