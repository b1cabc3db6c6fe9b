"""Issue 30's tracebacks: inputs and machine states that used to end in a Python traceback end in one sentence and exit 2
(or run through): deep JSON in config.json, cfg.json or a safetensors header; a clock stepped back during training."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from posfeat import load_embeddings, train_sae
from posfeat.cli import main
from posfeat.io.atomic import LOCK_TAG, TEMP_TAG

from helpers import write_planted_folders

pytestmark = pytest.mark.usefixtures("stub_figures")

DEEP = "[" * 100_000 + "]" * 100_000


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def pair(tmp_path):
    return write_planted_folders(tmp_path)


def _one_sentence(argv: list[str], root: Path, capsys, needle: str) -> str:
    before = snapshot(root)
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and needle in err, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("posfeat: error:"), err
    assert snapshot(root) == before and not [p for p in root.rglob("*") if TEMP_TAG in p.name or p.name.endswith(LOCK_TAG)]
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
    _one_sentence(["stats", "--model", str(model), "--sae", str(sae), "--out", str(tmp_path / "s.csv")], tmp_path, capsys, needle)


def test_checkpoints_keep_their_schedule_when_the_clock_steps_back(pair, tmp_path, monkeypatch):
    """Checkpoints are timed with a monotonic clock: a wall clock stepped back (NTP, a VM resumed) must not stop them."""
    import posfeat.training.trainer as trainer

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
        train_sae(load_embeddings(str(model)), d_sae=8, context=8, steps=20, batch=8, out=tmp_path / "trained", checkpoint_seconds=1e-9,
                  stop_after=5, progress=False)
    assert saved[:4] == [1, 2, 3, 4], saved  # one after every step (each takes longer than 1e-9 s), then the one on stopping
