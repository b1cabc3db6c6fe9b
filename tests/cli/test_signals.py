"""SIGTERM and SIGINT at several moments of analyze, train and both sweeps: the earlier output stays intact (or the new one is
complete), no temporary file is left, and an interrupted training resumes to exactly the SAE an uninterrupted run gives."""

from __future__ import annotations

import codecs
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from posfeat import read_sae_folder
from posfeat.io.atomic import TEMP_TAG

from helpers import write_planted_folders

pytestmark = pytest.mark.slow
SIGNALS = [signal.SIGTERM, signal.SIGINT]


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if TEMP_TAG in p.name]


def run(argv: list[str], cwd: Path, sig: int | None = None, after: str = "", delay: float = 0.0) -> tuple[int, str]:
    """Run ``posfeat argv``; with ``sig``, send it ``delay`` seconds after ``after`` first appears on stderr."""
    proc = subprocess.Popen([sys.executable, "-m", "posfeat.cli.main", *argv], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err: list[str] = []
    seen = threading.Event()

    def read() -> None:  # os.read returns what has arrived (a stage line is shorter than any fixed chunk)
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        for chunk in iter(lambda: os.read(proc.stderr.fileno(), 4096), b""):
            err.append(utf8.decode(chunk))
            if after in "".join(err):
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if sig is not None:
        if seen.wait(120):
            time.sleep(delay)
        proc.send_signal(sig)
    code = proc.wait(300)
    reader.join(10)
    return code, "".join(err)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("sig")
    return write_planted_folders(root)


@pytest.mark.parametrize("sig", SIGNALS, ids=["TERM", "INT"])
@pytest.mark.parametrize("delay", [0.0, 1.0, 2.5])
def test_analyze_interrupted_leaves_old_or_new_output(sig, delay, pair, tmp_path):
    model, sae = pair
    args = ["analyze", "--model", str(model), "--sae", str(sae), "--tokens-sample", "16", "--out", str(tmp_path / "out"), "--force"]
    assert run(args, tmp_path)[0] == 0
    before = snapshot(tmp_path / "out")
    code, err = run(args, tmp_path, sig, after="grid statistics", delay=delay)
    after = snapshot(tmp_path / "out")
    assert temporaries(tmp_path) == [], err
    if code == 0:  # the signal came after the new output was in place
        assert set(after) == set(before)
    else:
        assert code == 128 + sig and "Traceback" not in err and after == before, err


@pytest.mark.parametrize("sig", SIGNALS, ids=["TERM", "INT"])
@pytest.mark.parametrize("delay", [0.3, 1.5])
def test_train_interrupted_then_resumed_is_exact(sig, delay, pair, tmp_path):
    model, _ = pair
    base = ["train", "--model", str(model), "--d-sae", "32", "--context", "32", "--steps", "1500", "--batch", "256", "--device", "cpu",
            "--checkpoint-seconds", "0.2"]
    assert run([*base, "--out", str(tmp_path / "ref")], tmp_path)[0] == 0
    code, err = run([*base, "--out", str(tmp_path / "cut")], tmp_path, sig, after="train d_sae", delay=delay)
    assert temporaries(tmp_path) == [], err
    if code != 0:
        assert code == 128 + sig and "resume" in err and "Traceback" not in err, err
        assert not (tmp_path / "cut").exists() and (tmp_path / "cut.partial" / "checkpoint.safetensors").is_file()
        code, err = run([*base, "--out", str(tmp_path / "cut"), "--resume"], tmp_path)
        assert code == 0, err
    a, b = read_sae_folder(tmp_path / "ref"), read_sae_folder(tmp_path / "cut")
    for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert not (tmp_path / "cut.partial").exists()


@pytest.mark.parametrize("sig", SIGNALS, ids=["TERM", "INT"])
def test_sweep_widths_interrupted_keeps_the_finished_sweep(sig, pair, tmp_path):
    model, _ = pair
    common = ["sweep", "widths", "--model", str(model), "--context", "16", "--seeds", "1", "--steps", "600", "--batch", "256",
              "--curve-points", "0", "--tokens", "16", "--device", "cpu", "--out", str(tmp_path / "sw")]
    assert run([*common, "--d-sae", "4,8"], tmp_path)[0] == 0
    before = snapshot(tmp_path / "sw")
    code, err = run([*common, "--d-sae", "4,8,64"], tmp_path, sig, after="train d_sae=64", delay=0.5)
    assert code == 128 + sig and "Traceback" not in err, err
    assert temporaries(tmp_path) == [] and snapshot(tmp_path / "sw") == {**before, **{k: v for k, v in snapshot(tmp_path / "sw").items()
                                                                                      if k.startswith("d_sae_64")}}
    assert run([*common, "--d-sae", "4,8,64"], tmp_path)[0] == 0  # resumes width 64, reuses 4 and 8
    assert json.loads((tmp_path / "sw" / "summary.json").read_text())["widths"] == [4, 8, 64]


@pytest.mark.parametrize("sig", SIGNALS, ids=["TERM", "INT"])
def test_sweep_context_interrupted_leaves_nothing_half_written(sig, pair, tmp_path):
    model, sae = pair
    args = ["sweep", "context", "--model", str(model), "--sae", str(sae), "--contexts", "40,48", "--seeds", "1", "--steps", "800",
            "--control-steps", "800", "--batch", "256", "--tokens", "16", "--device", "cpu", "--out", str(tmp_path / "ctx")]
    code, err = run(args, tmp_path, sig, after="train d_sae", delay=0.5)
    assert code == 128 + sig and "Traceback" not in err, err
    assert temporaries(tmp_path) == [] and not (tmp_path / "ctx").exists()  # the sweep works in ctx.partial until it is done
    assert run(args, tmp_path)[0] == 0
    assert json.loads((tmp_path / "ctx" / "summary.json").read_text())["contexts"] == [40, 48] and not (tmp_path / "ctx.partial").exists()
