"""The first run after an install: the reconstruction's numba kernels compiled ahead of use in a
second process (analyses/warmup.py, issue 29 item 2). How long it takes is a benchmark's business
(benchmarks/bench_first_run.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from posfeat.core.progress import STAGE_LINE

CODE = """
from posfeat.analyses import warmup
print(warmup._kernels_cached(), warmup.start())
warmup.wait()
print(warmup._kernels_cached(), warmup.start())
"""


@pytest.mark.slow
def test_a_cold_cache_is_filled_by_a_second_process_once(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    env.pop("POSFEAT_WARMUP", None)
    run = subprocess.run(
        [sys.executable, "-c", CODE], env=env, capture_output=True, text=True, timeout=900
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == [
        "False",
        "True",
        "True",
        "False",
    ]  # cold: started; then cached: not started again
    line = "posfeat: compiling numba's kernels, once after an install (2 processes)"
    assert run.stderr.strip() == line and STAGE_LINE.match(
        line
    )  # a stage line: logs and tests set it apart from errors


def test_no_second_process_when_turned_off_or_cached(monkeypatch):
    from posfeat.analyses import warmup

    monkeypatch.setenv("POSFEAT_WARMUP", "0")
    assert warmup.start() is False
    monkeypatch.delenv("POSFEAT_WARMUP")
    monkeypatch.setattr(warmup, "_kernels_cached", lambda logits=True: True)
    assert warmup.start() is False
    warmup.wait()  # nothing started: returns at once


def test_a_model_without_an_unembedding_leaves_the_logit_kernels_out(monkeypatch):
    """The second process is told to leave out the logit effects' kernels where the run has none
    to compute (the bundled MiniLM), and whether those are cached counts only where it does."""
    from posfeat.analyses import warmup

    monkeypatch.delenv("POSFEAT_WARMUP", raising=False)
    asked, started = [], []
    monkeypatch.setattr(warmup, "_kernels_cached", lambda logits=True: asked.append(logits))
    monkeypatch.setattr(warmup, "_helper", None)
    monkeypatch.setattr(warmup.atexit, "register", lambda fn: None)

    class Popen:
        def __init__(self, args, **kw):
            started.append(args)

    monkeypatch.setattr(warmup.subprocess, "Popen", Popen)
    monkeypatch.setattr(warmup.os, "cpu_count", lambda: 2)
    assert warmup.start(progress=False, logits=False) is True
    monkeypatch.setattr(warmup, "_helper", None)
    assert warmup.start(progress=False) is True
    monkeypatch.setattr(warmup, "_helper", None)
    assert asked == [False, True]
    assert started[0][-1] == "--no-logits" and started[1][-1] == "posfeat.analyses.warmup"


COMPILE = """
import sys
from numba.core import event

compiled = []


class Record(event.Listener):
    def on_start(self, ev):
        compiled.append(ev.data["dispatcher"].py_func.__qualname__)

    def on_end(self, ev):
        pass


event.register("numba:compile", Record())
import torch
from posfeat.analyses import warmup, reconstruction_kernel
from posfeat.engine import extremes, feature_stats, kernel, sample, screen, histogram

warmup.warm()
from posfeat.core.embeddings import Embeddings
from posfeat.core.sae import SAE

g = torch.Generator().manual_seed(1)
emb = Embeddings(torch.randn(64, 16, generator=g), torch.randn(24, 16, generator=g), name="t")
sae = SAE.from_arrays(
    torch.randn(16, 32, generator=g),
    torch.randn(32, 16, generator=g),
    torch.randn(32, generator=g) - 0.5,
    torch.zeros(16),
    context_size=12,
    name="t",
)
feature_stats(emb, sae, range(12), screen=True)
feature_stats(emb, sae, range(12), screen=False)
for mod in (reconstruction_kernel, kernel, sample, screen, histogram, extremes):
    for name in dir(mod):
        fn = getattr(mod, name)
        if hasattr(fn, "py_func") and len(fn.signatures) > 1:
            print("SIGNATURES", name, len(fn.signatures))
for name in compiled:
    print("COMPILED", name)
"""


@pytest.mark.slow
def test_the_first_run_compiles_each_kernel_once_and_no_error_formatting(tmp_path):
    """What the first run compiles (issue 29 item 2): each of posfeat's kernels for one signature
    (a literal argument would compile a second), and none of numba's helpers that cost seconds and
    are avoidable: the formatted message of a slice copy's shape check, an argsort, a sum over an
    axis."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba"), "POSFEAT_WARMUP": "0"}
    run = subprocess.run(
        [sys.executable, "-c", COMPILE], env=env, capture_output=True, text=True, timeout=900
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    compiled = {line.split()[1] for line in lines if line.startswith("COMPILED")}
    assert {
        "_recon_kernel",
        "_decode4",
        "_token_means_kernel",
        "_gt_counts",
        "_pair_counts",
        "_bucket_kernel",
        "_padded_table",
        "_select_kernel",
    } <= compiled
    assert [line for line in lines if line.startswith("SIGNATURES")] == []
    slow = ("raise_with_shape_context", "argmergesort", "array_sum")
    assert [name for name in compiled if any(s in name for s in slow)] == []


def test_the_reconstruction_waits_for_its_own_kernels_only(monkeypatch):
    """The second process says when the reconstruction's kernels are in the cache and goes on with
    the cards': waiting for that group returns while it still runs; waiting for it to end comes at
    the report. A process that ends without saying so is waited for to its end."""
    import subprocess
    import time

    from posfeat.analyses import warmup

    code = "import time; print('reconstruction', flush=True); time.sleep(3); print('cards')"
    helper = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    monkeypatch.setattr(warmup, "_helper", helper)
    t0 = time.monotonic()
    warmup.wait("reconstruction")
    assert time.monotonic() - t0 < 2.5 and helper.poll() is None  # still compiling the cards'
    assert warmup._helper is helper
    warmup.wait()
    assert helper.poll() == 0 and warmup._helper is None
    silent = subprocess.Popen([sys.executable, "-c", "pass"], stdout=subprocess.PIPE)
    monkeypatch.setattr(warmup, "_helper", silent)
    warmup.wait("reconstruction")  # ended without the line: waited for, then forgotten
    assert silent.poll() == 0 and warmup._helper is None
