"""The Ray executor on a local Ray cluster (ray.init(num_cpus=2)): bit-identical to the local
executor; a worker killed in the middle of a run is retried and resumes from its checkpoint; a run
that fails for good shows in runs.csv and the aggregation."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

import posfeat
from posfeat import read_sae_folder
from posfeat.core.errors import PosfeatError
from posfeat.experiments import SweepIncompleteError, sweep_widths
from posfeat.experiments.folder import SWEEP_WIDTHS
from posfeat.io.ownership import write_marker
from posfeat.training.loop import read_checkpoint

from helpers import random_pair

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow

KW = {
    "widths": [8, 16],
    "context": 10,
    "steps": 120,
    "batch": 64,
    "l1": 0.05,
    "lr": 3e-3,
    "tokens": 30,
    "seeds": 2,
    "curve_points": 3,
    "progress": False,
}


@pytest.fixture(scope="module")
def cluster():
    src = str(
        Path(posfeat.__file__).resolve().parents[1]
    )  # workers import this posfeat, not another installed one
    ours = "RAY_AUTH_TOKEN" not in os.environ
    os.environ.setdefault(
        "RAY_AUTH_TOKEN", os.urandom(32).hex()
    )  # the local cluster's token, not one in ~/.ray/auth_token
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": src}},
    )
    yield
    ray.shutdown()
    if ours:
        os.environ.pop("RAY_AUTH_TOKEN", None)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "sweep"
    emb, _ = random_pair(d_vocab=48, n_ctx=16, d_model=6)
    table = sweep_widths(emb, out=out, **KW)
    return emb, out, table


def _same_saes(a: Path, b: Path) -> None:
    for w in KW["widths"]:
        for s in range(KW["seeds"]):
            x, y = (
                read_sae_folder(a / f"d_sae_{w}" / f"seed_{s}"),
                read_sae_folder(b / f"d_sae_{w}" / f"seed_{s}"),
            )
            for name in ("W_enc", "W_dec", "b_enc", "b_dec"):
                assert torch.equal(getattr(x, name), getattr(y, name)), (w, s, name)


def _same_tables(a: Path, b: Path) -> None:
    ra, rb = pd.read_csv(a / "runs.csv"), pd.read_csv(b / "runs.csv")
    where = ["train_seconds", "node", "device", "wall_seconds"]  # how long and where each run ran
    pd.testing.assert_frame_equal(ra.drop(columns=where), rb.drop(columns=where))
    pd.testing.assert_frame_equal(pd.read_csv(a / "widths.csv"), pd.read_csv(b / "widths.csv"))
    sa, sb = (
        json.loads((a / "summary.json").read_text()),
        json.loads((b / "summary.json").read_text()),
    )
    for key in (
        "trend",
        "power_law",
        "lack_of_fit",
        "local_exponents",
        "positional_counts",
        "splitting_matches",
        "positional_by_step",
    ):
        assert sa[key] == sb[key], key


def test_ray_sweep_is_bit_identical_to_local(cluster, reference, tmp_path):
    emb, ref, table = reference
    got = sweep_widths(emb, out=tmp_path / "ray", executor="ray", **KW)
    pd.testing.assert_frame_equal(table, got)
    _same_saes(ref, tmp_path / "ray")
    _same_tables(ref, tmp_path / "ray")


def test_killed_worker_is_retried_and_resumes(cluster, reference, tmp_path):
    emb, ref, _ = reference
    out = tmp_path / "kill"
    victim = out.with_name("kill.partial") / "d_sae_16" / "seed_0"
    killed: dict[str, int] = {}

    # once the run has a checkpoint past step 30, SIGKILL the worker process running it
    def killer() -> None:
        deadline = time.time() + 600
        while time.time() < deadline and not killed:
            try:
                step = read_checkpoint(victim.with_name("seed_0.partial"))[1]["step"]
                pid = json.loads(victim.with_name("seed_0.worker.json").read_text())["pid"]
            except (
                OSError,
                ValueError,
                KeyError,
                PosfeatError,
                RuntimeError,
            ):  # RuntimeError: safetensors met the
                time.sleep(
                    0.05
                )  # checkpoint being replaced between its reads (this poller races the trainer's every step)
                continue
            if step >= 30:
                os.kill(pid, signal.SIGKILL)
                killed.update(pid=pid, step=step)
            time.sleep(0.02)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    sweep_widths(emb, out=out, executor="ray", max_retries=2, checkpoint_seconds=0.0, **KW)
    thread.join(timeout=5)
    assert killed, "the run finished before it could be killed"
    record = json.loads((out / "d_sae_16" / "seed_0" / "run.json").read_text())
    assert (
        record["pid"] != killed["pid"] and record["resumed_from_step"] >= 30
    )  # a new worker continued the checkpoint
    _same_saes(ref, out)
    _same_tables(ref, out)


def test_a_run_that_fails_for_good_is_reported(cluster, reference, tmp_path):
    emb, _, _ = reference
    out = tmp_path / "fail"
    blocker = out.with_name("fail.partial") / "d_sae_16" / "seed_1.partial"
    blocker.parent.mkdir(parents=True)
    write_marker(
        out.with_name("fail.partial"), SWEEP_WIDTHS
    )  # the sweep's own work folder (a user's folder is refused whole)
    blocker.write_text(
        "not a folder"
    )  # where that run keeps its checkpoints: it fails with a one-sentence error
    with pytest.raises(SweepIncompleteError, match=r"1 of 4 runs failed \(d_sae_16/seed_1"):
        sweep_widths(emb, out=out, executor="ray", **KW)
    partial = out.with_name("fail.partial")
    assert not out.exists()  # incomplete: the sweep stays in .partial
    runs = pd.read_csv(partial / "runs.csv")
    failed = runs[runs.status == "failed"]
    assert (
        len(runs) == 4
        and list(zip(failed.d_sae, failed.seed)) == [(16, 1)]
        and "not a folder" in failed.error.iloc[0]
    )
    summary = json.loads((partial / "summary.json").read_text())
    assert [(m["d_sae"], m["seed"]) for m in summary["missing"]] == [(16, 1)]
    assert summary["positional_counts"]["16"][1] is None  # one seed left at width 16: no sd
    assert "Missing: d_sae 16 seed 1" in (partial / "section.html").read_text()
    # the cause fixed, the same call finishes the sweep, redoing only the failed run
    blocker.unlink()
    sweep_widths(emb, out=out, executor="ray", **KW)
    assert set(pd.read_csv(out / "runs.csv").status) == {"done"}
