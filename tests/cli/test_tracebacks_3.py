"""Issue 30's tracebacks: inputs and machine states that used to end in a Python traceback end in
one sentence and exit 2 (or run through): deep JSON in config.json, cfg.json or a safetensors
header; a clock stepped back during training."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest

from posfeat import load_embeddings, train_sae
from posfeat.cli import main
from posfeat.core.progress import STAGE_LINE
from posfeat.io.lock import LOCK_TAG
from posfeat.io.writes import TEMP_TAG

from helpers import write_planted_folders

pytestmark = pytest.mark.usefixtures("stub_figures")

DEEP = "[" * 100_000 + "]" * 100_000


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture
def pair(tmp_path):
    return write_planted_folders(tmp_path)


def _one_sentence(argv: list[str], root: Path, capsys, needle: str) -> str:
    before = snapshot(root)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and needle in err, err
    lines = [
        line
        for line in err.replace("\r", "\n").splitlines()
        if line and not STAGE_LINE.match(line) and "%|" not in line
    ]
    assert len(lines) == 1 and lines[0].startswith("posfeat: error:"), err
    assert snapshot(root) == before and not [
        p for p in root.rglob("*") if TEMP_TAG in p.name or p.name.endswith(LOCK_TAG)
    ]
    return err


@pytest.mark.parametrize("where", ["config.json", "cfg.json", "safetensors header"])
def test_deep_json_is_one_sentence(where, pair, tmp_path, capsys):
    model, sae = pair
    if where == "config.json":
        data = json.loads((model / "config.json").read_text())
        (model / "config.json").write_text(json.dumps(data)[:-1] + ', "deep": ' + DEEP + "}")
        needle = "config.json nests JSON deeper than Python can read"
    elif where == "cfg.json":
        data = json.loads((sae / "cfg.json").read_text())
        (sae / "cfg.json").write_text(json.dumps(data)[:-1] + ', "deep": ' + DEEP + "}")
        needle = "cfg.json nests JSON deeper than Python can read"
    else:
        raw = ('{"__metadata__": {"a": "b"}, "x": ' + DEEP + "}").encode()
        (sae / "sae_weights.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw)
        needle = "its header nests JSON deeper than Python can read"
    _one_sentence(
        ["stats", "--model", str(model), "--sae", str(sae), "--out", str(tmp_path / "s.csv")],
        tmp_path,
        capsys,
        needle,
    )


def test_checkpoints_keep_their_schedule_when_the_clock_steps_back(pair, tmp_path, monkeypatch):
    """Checkpoints are timed with a monotonic clock: a wall clock stepped back (NTP, a VM resumed)
    must not stop them."""
    import posfeat.training.loop as trainer

    wall = iter(range(10**9, 0, -3600))  # each reading an hour earlier than the last
    monkeypatch.setattr(trainer.time, "time", lambda: float(next(wall)))
    saved: list[int] = []
    real_save = trainer.Trainer.save_checkpoint

    def save(self):
        saved.append(self.step_no)
        real_save(self)

    monkeypatch.setattr(trainer.Trainer, "save_checkpoint", save)
    model, _ = pair
    with pytest.raises(Exception, match="interrupted"):
        train_sae(
            load_embeddings(str(model)),
            d_sae=8,
            context=8,
            steps=20,
            batch=8,
            out=tmp_path / "trained",
            checkpoint_seconds=1e-9,
            stop_after=5,
            progress=False,
        )
    assert saved[:4] == [1, 2, 3, 4], (
        saved
    )  # one after every step (each takes longer than 1e-9 s), then the one on stopping


# ---------------------------------------------------------------------------- bad numbers, memory
# up front, failed runs
@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (
            ["train", "--d-sae", "8", "--context", "8", "--seed", "-1", "--out", "{W}/t"],
            "--seed: -1 is outside 0..4294967295",
        ),
        (
            ["train", "--d-sae", "8", "--context", "8", "--seed", str(2**70), "--out", "{W}/t"],
            "is outside 0..4294967295",
        ),
        (
            ["eval", "--model", "{M}", "--sae", "{S}", "--seed", "-1", "--out", "{W}/e.csv"],
            "--seed: -1 is outside",
        ),
        (
            ["stats", "--model", "{M}", "--sae", "{S}", "--positions", "9" * 30],
            "goes past the model's 48 positions",
        ),
        (
            ["stats", "--model", "{M}", "--sae", "{S}", "--positions", "0:" + "9" * 30],
            "goes past the model's 48 positions",
        ),
        (
            ["train", "--d-sae", "1000000000", "--context", "8", "--out", "{W}/t"],
            "Training an SAE of width 1000000000 on batches of",
        ),
        (
            ["train", "--d-sae", "8", "--context", "8", "--batch", "10000000000", "--out", "{W}/t"],
            "GiB of memory, more than",
        ),
        (
            [
                "sweep",
                "widths",
                "--context",
                "8",
                "--d-sae",
                "4,8",
                "--seeds",
                "1000000000",
                "--plan",
                "--out",
                "{W}/sw",
            ],
            "A plan of 2000000000 runs needs about",
        ),
        (
            [
                "train",
                "--d-sae",
                "8",
                "--context",
                "8",
                "--steps",
                "3",
                "--batch",
                "8",
                "--lr",
                "1e30",
                "--out",
                "{W}/t",
            ],
            "Training diverged",
        ),
    ],
)
def test_bad_numbers_and_what_cannot_fit_are_one_sentence_and_leave_nothing(
    argv, needle, pair, tmp_path, capsys
):
    model, sae = pair
    argv = [
        a.replace("{M}", str(model)).replace("{S}", str(sae)).replace("{W}", str(tmp_path))
        for a in argv
    ]
    if argv[0] in ("train", "sweep"):
        argv[argv.index("--context") if argv[0] == "train" else 2 : 0] = ["--model", str(model)]
    err = _one_sentence(argv, tmp_path, capsys, needle)
    assert "fix the weights" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "sae"]  # no t.partial, no lock


def test_memory_is_compared_with_the_process_s_limit(monkeypatch):
    import resource

    from posfeat.core.memory import memory_limit

    monkeypatch.setattr(
        resource,
        "getrlimit",
        lambda which: (
            (4 * 2**30, resource.RLIM_INFINITY)
            if which == resource.RLIMIT_AS
            else (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
        ),
    )
    monkeypatch.setattr(os, "sysconf", lambda name: 2**40 if name == "SC_PHYS_PAGES" else 1)
    assert memory_limit("cpu") == (4 * 2**30, "the limit set by ulimit -v")
