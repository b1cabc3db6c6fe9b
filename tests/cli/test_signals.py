"""SIGTERM and SIGINT at several moments of analyze, train and both sweeps: the earlier output stays
intact (or the new one is complete), no temporary file is left, and an interrupted training resumes
to exactly the SAE an uninterrupted run gives.

Each test sends its signal when the run reports the state it means to interrupt (a stage line, a
step count on the progress bar) and asserts that the interruption happened; SIGKILL at random
moments is tested by kill_driver.py."""

from __future__ import annotations

import codecs
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import posfeat
from posfeat import read_sae_folder
from posfeat.io.writes import TEMP_TAG

from helpers import write_planted_folders

pytestmark = [
    pytest.mark.slow,
    pytest.mark.xdist_group("signals"),
]  # one worker: the reference runs are made once
SIGNALS = [signal.SIGTERM, signal.SIGINT]
# a few ms a step here: about a second of training still to go when the later signal is sent
TRAIN_STEPS = 600


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if TEMP_TAG in p.name]


def run(
    argv: list[str], cwd: Path, sig: int | None = None, when: Callable[[str], bool] | None = None
) -> tuple[int, str]:
    """Run ``posfeat argv``; with ``sig``, send it as soon as the run's stderr shows the state
    ``when`` waits for (a stage line, a step count), never after a fixed sleep. Returns the exit
    status (negative: killed by a signal's default action)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "posfeat.cli.main", *argv],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "POSFEAT_PROGRESS": "bars"},
    )  # step counts in the piped stderr, to wait for
    err: list[str] = []
    seen = threading.Event()

    # os.read returns what has arrived (a stage line is shorter than any fixed chunk)
    def read() -> None:
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        for chunk in iter(lambda: os.read(proc.stderr.fileno(), 4096), b""):
            err.append(utf8.decode(chunk))
            if when is not None and when("".join(err)):
                seen.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if sig is not None:
        assert seen.wait(300), "".join(err)
        proc.send_signal(sig)
    code = proc.wait(900)
    reader.join(10)
    return code, "".join(err)


def saw(text: str) -> Callable[[str], bool]:
    return lambda err: text in err


def at_step(n: int, total: int) -> Callable[[str], bool]:
    """The progress bar has shown step ``n`` (or later) of ``total``."""
    pattern = re.compile(rf"(\d+)/{total} ")
    return lambda err: any(int(m) >= n for m in pattern.findall(err[-400:]))


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("sig")
    return write_planted_folders(root)


# The uninterrupted runs the cases compare against are the same for every signal and moment, so each
# is made once per module (per worker under xdist) and copied into each case's own folder: the case
# still interrupts its own run.


def analyze_args(pair, out: Path) -> list[str]:
    model, sae = pair
    return [
        "analyze",
        "--model",
        str(model),
        "--sae",
        str(sae),
        "--tokens-sample",
        "16",
        "--out",
        str(out),
        "--force",
    ]


@pytest.fixture(scope="module")
def analyzed(pair, tmp_path_factory) -> Path:
    """An earlier, complete analyze output."""
    root = tmp_path_factory.mktemp("analyzed")
    assert run(analyze_args(pair, root / "out"), root)[0] == 0
    return root / "out"


@pytest.mark.parametrize("sig", SIGNALS, ids=["TERM", "INT"])
@pytest.mark.parametrize("stage", ["grid statistics", "figures"])
def test_analyze_interrupted_leaves_the_old_output(sig, stage, pair, analyzed, tmp_path):
    args = analyze_args(pair, tmp_path / "out")
    shutil.copytree(analyzed, tmp_path / "out")
    before = snapshot(tmp_path / "out")
    code, err = run(
        args, tmp_path, sig, when=saw(stage)
    )  # the run says it reached the stage; the output is written after it
    assert code == 128 + sig and "Traceback" not in err, (
        err
    )  # the interruption this test means did happen
    assert snapshot(tmp_path / "out") == before and temporaries(tmp_path) == [], err


def train_args(pair) -> list[str]:
    model, _ = pair
    return [
        "train",
        "--model",
        str(model),
        "--d-sae",
        "32",
        "--context",
        "32",
        "--steps",
        str(TRAIN_STEPS),
        "--batch",
        "64",
        "--device",
        "cpu",
        "--checkpoint-seconds",
        "0.2",
    ]


@pytest.fixture(scope="module")
def trained(pair, tmp_path_factory) -> Path:
    """The SAE an uninterrupted training run gives."""
    root = tmp_path_factory.mktemp("trained")
    assert run([*train_args(pair), "--out", str(root / "ref")], root)[0] == 0
    return root / "ref"


@pytest.mark.parametrize(
    ("sig", "step"), [(signal.SIGHUP, 10), (signal.SIGQUIT, 10)], ids=["HUP", "QUIT"]
)
def test_sighup_and_sigquit_stop_training_as_sigterm_does(sig, step, pair, trained, tmp_path):
    """Issue 30: the terminal closing (SIGHUP) or Ctrl-\\ (SIGQUIT) stops training cleanly with a
    checkpoint, as SIGTERM does."""
    test_train_interrupted_then_resumed_is_exact(sig, step, pair, trained, tmp_path)


@pytest.mark.parametrize("sig", SIGNALS, ids=["TERM", "INT"])
@pytest.mark.parametrize("step", [10, 300])
def test_train_interrupted_then_resumed_is_exact(sig, step, pair, trained, tmp_path):
    """Interrupted once the progress bar shows ``step`` of 600 (the run reports it; no sleeping):
    early (step 10) or halfway (step 300, after several 0.2 s checkpoint intervals); then
    resumed."""
    base = train_args(pair)
    code, err = run(
        [*base, "--out", str(tmp_path / "cut")], tmp_path, sig, when=at_step(step, TRAIN_STEPS)
    )
    assert code == 128 + sig and "resume" in err and "Traceback" not in err, (
        err
    )  # interrupted during training, as meant
    assert temporaries(tmp_path) == [], err
    assert (
        not (tmp_path / "cut").exists()
        and (tmp_path / "cut.partial" / "checkpoint.safetensors").is_file()
    )
    code, err = run([*base, "--out", str(tmp_path / "cut"), "--resume"], tmp_path)
    assert code == 0, err
    a, b = read_sae_folder(trained), read_sae_folder(tmp_path / "cut")
    for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert not (tmp_path / "cut.partial").exists()


@pytest.mark.parametrize(
    "iterations",
    [
        pytest.param(6, id="short"),
        pytest.param(
            300,
            id="long",
            marks=pytest.mark.skipif(
                not os.environ.get("POSFEAT_LONG"), reason="set POSFEAT_LONG=1"
            ),
        ),
    ],
)
def test_sigkill_at_random_moments_then_resume_is_exact(iterations, tmp_path):
    """SIGKILL at random moments of training (one to three kills a run, seeded), then resume: equal
    to the uninterrupted run every time, and no temporary left (tests/cli/kill_driver.py forks the
    runs so that each costs a fraction of a second)."""
    driver = Path(__file__).with_name("kill_driver.py")
    proc = subprocess.run(
        [sys.executable, str(driver), str(iterations), "18", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=3600,
        env={**os.environ, "PYTHONPATH": str(Path(posfeat.__file__).resolve().parents[1])},
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["differ"] == [] and result["temporaries"] == [], result
    assert result["killed"] >= 1, result  # the kills did land before the end


def widths_args(pair, out: Path) -> list[str]:
    model, _ = pair
    return [
        "sweep",
        "widths",
        "--model",
        str(model),
        "--context",
        "16",
        "--seeds",
        "1",
        "--steps",
        "300",
        "--batch",
        "256",
        "--curve-points",
        "0",
        "--tokens",
        "16",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]


@pytest.fixture(scope="module")
def swept(pair, tmp_path_factory) -> Path:
    """A finished width sweep over 4 and 8."""
    root = tmp_path_factory.mktemp("swept")
    assert run([*widths_args(pair, root / "sw"), "--d-sae", "4,8"], root)[0] == 0
    return root / "sw"


@pytest.mark.parametrize("sig", SIGNALS, ids=["TERM", "INT"])
def test_sweep_widths_interrupted_keeps_the_finished_sweep(sig, pair, swept, tmp_path):
    common = widths_args(pair, tmp_path / "sw")
    shutil.copytree(swept, tmp_path / "sw")
    before = snapshot(tmp_path / "sw")
    code, err = run([*common, "--d-sae", "4,8,64"], tmp_path, sig, when=at_step(50, 300))
    assert code == 128 + sig and "Traceback" not in err, err
    assert temporaries(tmp_path) == [] and snapshot(tmp_path / "sw") == {
        **before,
        **{k: v for k, v in snapshot(tmp_path / "sw").items() if k.startswith("d_sae_64")},
    }
    assert run([*common, "--d-sae", "4,8,64"], tmp_path)[0] == 0  # resumes width 64, reuses 4 and 8
    assert json.loads((tmp_path / "sw" / "summary.json").read_text())["widths"] == [4, 8, 64]


@pytest.mark.parametrize("sig", SIGNALS, ids=["TERM", "INT"])
def test_sweep_context_interrupted_leaves_nothing_half_written(sig, pair, tmp_path):
    model, sae = pair
    args = [
        "sweep",
        "context",
        "--model",
        str(model),
        "--sae",
        str(sae),
        "--contexts",
        "40,48",
        "--seeds",
        "1",
        "--steps",
        "400",
        "--control-steps",
        "400",
        "--batch",
        "256",
        "--tokens",
        "16",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "ctx"),
    ]
    code, err = run(args, tmp_path, sig, when=at_step(50, 400))
    assert code == 128 + sig and "Traceback" not in err, err
    assert (
        temporaries(tmp_path) == [] and not (tmp_path / "ctx").exists()
    )  # the sweep works in ctx.partial until it is done
    assert run(args, tmp_path)[0] == 0
    assert (
        json.loads((tmp_path / "ctx" / "summary.json").read_text())["contexts"] == [40, 48]
        and not (tmp_path / "ctx.partial").exists()
    )


def _delivered_after(setup: str, trigger: str, where: str) -> None:
    """In a fresh process with the CLI's handlers: ``trigger`` sends a SIGTERM from a place where
    an exception cannot leave (after ``setup``); the command must stop with it once that place has
    returned, nothing printed as "Exception ignored"."""
    code = (
        "import ctypes, os, signal, sys, time\n"
        "from posfeat.cli.main import _Signals\n"
        "from posfeat.core.errors import Interrupted\n"
        "sig = _Signals().install()\n"
        f"{setup}\n"
        "try:\n"
        f"    {trigger}\n"
        "    deadline = time.monotonic() + 10\n"
        "    while time.monotonic() < deadline:\n"
        "        time.sleep(0.01)\n"
        "    print('not interrupted')\n"
        "except Interrupted:\n"
        f"    print('interrupted after the {where}', sig.signum)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.stdout.strip() == f"interrupted after the {where} {int(signal.SIGTERM)}", (
        run.stdout + run.stderr
    )
    assert "Exception ignored" not in run.stderr and "Traceback" not in run.stderr, run.stderr


def test_a_signal_inside_a_finalizer_is_delivered_after_it():
    """llvmlite frees its strings in ``__del__`` while numba compiles; a SIGTERM landing there must
    not be printed as "Exception ignored" and lost, but stop the command once the finalizer has
    returned."""
    setup = r"""
class Freed:
    def __del__(self):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(200_000):  # bytecodes run here after the signal arrived
            pass
"""
    _delivered_after(setup, "Freed()", "finalizer")


def test_a_signal_inside_llvmlites_callback_is_delivered_after_it():
    """numba writes and reads cached kernels through llvmlite's object cache, a ctypes callback
    from C: an exception raised there is printed as "Exception ignored on calling ctypes callback
    function" and lost, and the command ran to its end (seen in a fresh clone's suite). A SIGTERM
    landing there stops the command once the callback has returned. The callback here is compiled
    under a path inside llvmlite's bindings, as llvmlite's own is."""
    setup = r"""
path = os.path.join(os.sep, "site-packages", "llvmlite", "binding", "executionengine.py")
scope = {"os": os, "signal": signal}
exec(compile(
    "def notify():\n"
    "    os.kill(os.getpid(), signal.SIGTERM)\n"
    "    for _ in range(200_000):\n"
    "        pass\n",
    path, "exec"), scope)
callback = ctypes.CFUNCTYPE(None)(scope["notify"])
"""
    _delivered_after(setup, "callback()  # called through ctypes, as from C", "callback")
