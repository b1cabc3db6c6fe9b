"""Ray as a user runs it: a real cluster on the loopback address (a head and a second node, each its
own ``ray start``, token authentication on; tests/ray_cluster.py), a width sweep through the CLI
with ``--executor ray --address``; a client without the token, an address where nothing answers or
one that never replies; SIGTERM during a Ray sweep; the driver's raylet killed; and ``--plan``
against a simulated cluster of 8 GPUs (two nodes started with ``--num-gpus 4``, a logical resource).

Each cluster is stopped by killing exactly the processes it started, and its session folder is
removed; the tests check that nothing of it is left."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from posfeat.cli.main import main
from posfeat.core.errors import PosfeatError

from helpers import write_planted_folders
from ray_cluster import LoopbackCluster

pytest.importorskip("ray")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.xdist_group("ray_cluster"),
]  # one worker: one cluster at a time on a small machine

SWEEP = [
    "sweep",
    "widths",
    "--context",
    "10",
    "--d-sae",
    "8,16",
    "--seeds",
    "2",
    "--steps",
    "80",
    "--batch",
    "64",
    "--tokens",
    "30",
    "--curve-points",
    "2",
    "--device",
    "cpu",
]


def posfeat(
    argv: list[str], env: dict[str, str], timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "posfeat.cli.main", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def errors(stderr: str) -> list[str]:
    """posfeat's error and interruption lines (not its progress lines, "posfeat: train d_sae=8 (400
    steps)", which a run that started before the fault also prints)."""
    # a progress bar cut short by the fault leaves its clearing spaces before the sentence that follows it
    return [
        ln.strip()
        for ln in stderr.splitlines()
        if ln.strip().startswith(("posfeat: error", "posfeat: interrupted"))
    ]


def left_behind(out: Path) -> list[str]:
    return sorted(
        p.name for p in out.parent.iterdir() if p.name.startswith((out.name, f".{out.name}"))
    )


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return write_planted_folders(tmp_path_factory.mktemp("model"))[0]


@pytest.fixture(scope="module")
def cluster():
    c = LoopbackCluster([{"num_cpus": 1}, {"num_cpus": 1}]).start()
    yield c
    c.stop()
    assert (
        c.pids() == [] and not c.root.exists()
    )  # exactly what it started is gone, and its session folder


@pytest.fixture(scope="module")
def reference(model, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "sweep"
    assert main([*SWEEP, "--model", str(model), "--out", str(out)]) == 0
    return out


def same_sae_files(a: Path, b: Path) -> None:
    for w in (8, 16):
        for s in (0, 1):
            run_a, run_b = a / f"d_sae_{w}" / f"seed_{s}", b / f"d_sae_{w}" / f"seed_{s}"
            assert (run_a / "sae_weights.safetensors").read_bytes() == (
                run_b / "sae_weights.safetensors"
            ).read_bytes(), (w, s)
            cfg_a, cfg_b = (
                json.loads((run_a / "cfg.json").read_text()),
                json.loads((run_b / "cfg.json").read_text()),
            )
            for cfg in (
                cfg_a,
                cfg_b,
            ):  # the command line and the time training took are what the executor changes
                cfg.get("posfeat_training", {}).pop("command", None)
                cfg.get("posfeat_training", {}).get("final", {}).pop("elapsed_s", None)
            assert cfg_a == cfg_b, (w, s)


def test_a_sweep_over_two_nodes_with_token_auth_gives_the_local_sae_files(
    cluster, model, reference, tmp_path
):
    out = tmp_path / "ray"
    t0 = time.time()
    res = posfeat(
        [
            *SWEEP,
            "--model",
            str(model),
            "--executor",
            "ray",
            "--address",
            cluster.address,
            "--out",
            str(out),
        ],
        cluster.client_env(),
    )
    assert res.returncode == 0, res.stderr[-3000:]
    print(f"sweep over the two-node cluster: {time.time() - t0:.1f} s")
    same_sae_files(reference, out)
    runs = pd.read_csv(out / "runs.csv")
    assert (
        {"node", "device", "wall_seconds"} <= set(runs.columns)
        and (runs.wall_seconds > 0).all()
        and set(runs.device) == {"cpu"}
    )
    assert runs.node.nunique() == 2  # spread over both nodes (one CPU each)
    summary = json.loads((out / "summary.json").read_text())
    assert (
        summary["nodes"] == 2
        and summary["devices"] == 2
        and sum(summary["runs_per_node"].values()) == 4
    )
    record = json.loads((out / "d_sae_8" / "seed_0" / "run.json").read_text())
    assert (
        record["node"] in set(runs.node)
        and record["device"] == "cpu"
        and record["wall_seconds"] > 0
    )
    local = pd.read_csv(reference / "runs.csv")
    assert local.node.nunique() == 1 and "runs took part on 2 node(s) and 2 device(s)" in res.stdout
    pd.testing.assert_frame_equal(
        local.drop(columns=["train_seconds", "node", "wall_seconds"]),
        runs.drop(columns=["train_seconds", "node", "wall_seconds"]),
    )


def test_a_client_without_the_token_gets_one_sentence_and_nothing_is_left(cluster, model, tmp_path):
    out = tmp_path / "noauth"
    argv = [
        *SWEEP,
        "--model",
        str(model),
        "--executor",
        "ray",
        "--address",
        cluster.address,
        "--out",
        str(out),
    ]
    t0 = time.time()
    res = posfeat(argv, cluster.client_env(with_token=False), timeout=120)
    took = time.time() - t0
    assert res.returncode == 2 and took < 60, (took, res.stderr)
    [line] = errors(res.stderr)
    assert "RAY_AUTH_MODE=token" in line and "RAY_AUTH_TOKEN" in line and cluster.address in line, (
        line
    )
    assert "gcs_client" not in res.stderr and "Traceback" not in res.stderr
    assert left_behind(out) == []  # no <out>.partial, no lock
    res = posfeat(
        argv, {**cluster.client_env(with_token=False), "RAY_AUTH_TOKEN": "0" * 64}, timeout=120
    )
    assert (
        res.returncode == 2
        and "refused the token from RAY_AUTH_TOKEN" in errors(res.stderr)[0]
        and left_behind(out) == []
    )


def test_addresses_that_do_not_answer_fail_within_the_stated_timeout(model, tmp_path, monkeypatch):
    from posfeat.experiments import sweep_widths
    from posfeat.io.checkpoints import load_embeddings

    emb = load_embeddings(str(model))
    kw = {
        "context": 10,
        "widths": [8, 16],
        "seeds": 1,
        "steps": 10,
        "progress": False,
        "executor": "ray",
    }
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    t0 = time.time()
    with pytest.raises(
        PosfeatError, match=rf"No Ray cluster answers at 127\.0\.0\.1:{port} \(connection refused\)"
    ):
        sweep_widths(emb, out=tmp_path / "a", address=f"127.0.0.1:{port}", **kw)
    assert time.time() - t0 < 10 and left_behind(tmp_path / "a") == []
    with socket.socket() as silent:  # accepts connections and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        monkeypatch.setenv("POSFEAT_RAY_TIMEOUT", "3")
        t0 = time.time()
        with pytest.raises(
            PosfeatError,
            match=rf"at 127\.0\.0\.1:{silent.getsockname()[1]} did not answer within 3 s",
        ):
            sweep_widths(
                emb, out=tmp_path / "b", address=f"127.0.0.1:{silent.getsockname()[1]}", **kw
            )
        assert time.time() - t0 < 10 and left_behind(tmp_path / "b") == []
    with pytest.raises(PosfeatError, match="is not HOST:PORT"):
        sweep_widths(emb, out=tmp_path / "c", address="nowhere", **kw)


def _start_and_wait_for_a_run(
    argv: list[str], env: dict[str, str], out: Path
) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "posfeat.cli.main", *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.time() + 300
    while not list(
        out.with_name(out.name + ".partial").rglob("*.worker.json")
    ):  # a run has started on a worker
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.1)
    return proc


def test_sigterm_ends_a_ray_sweep_cleanly_and_it_resumes(cluster, model, reference, tmp_path):
    out = tmp_path / "term"
    argv = [
        *SWEEP,
        "--model",
        str(model),
        "--executor",
        "ray",
        "--address",
        cluster.address,
        "--out",
        str(out),
    ]
    proc = _start_and_wait_for_a_run(argv, cluster.client_env(), out)
    time.sleep(1)
    proc.send_signal(signal.SIGTERM)
    t0 = time.time()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and time.time() - t0 < 30, err[-3000:]
    assert errors(err) == ["posfeat: interrupted by SIGTERM; outputs were left as they were."], err[
        -3000:
    ]
    assert "Aborted" not in err and "Stack trace" not in err and "Traceback" not in err
    assert left_behind(out) == ["term.partial"]  # the lock is released; the work folder kept
    res = posfeat(argv, cluster.client_env())  # the same command continues
    assert res.returncode == 0, res.stderr[-3000:]
    same_sae_files(reference, out)


@pytest.fixture
def session():
    path = Path(
        tempfile.mkdtemp(prefix="pf-rl-", dir="/tmp")
    )  # short: Ray's socket paths must fit in 107 bytes
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_dead_raylet_gives_one_sentence_and_releases_the_lock(model, tmp_path, session):
    out = tmp_path / "raylet"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(
        HOME=str(tmp_path), RAY_TMPDIR=str(session)
    )  # a local cluster of posfeat's own; nothing of the user's is touched
    argv = [*SWEEP, "--steps", "400", "--model", str(model), "--executor", "ray", "--out", str(out)]
    proc = _start_and_wait_for_a_run(argv, env, out)
    killed = []

    # the raylet of posfeat's local cluster (its command line names the session folder)
    def kill() -> None:
        deadline = time.time() + 60
        while not killed and time.time() < deadline and proc.poll() is None:
            kill_once()
            time.sleep(0.1)

    def kill_once() -> None:
        for pid in ray_processes(session):
            try:
                exe = os.readlink(f"/proc/{pid}/exe")
            except OSError:
                continue
            if exe.endswith("/raylet"):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    threading.Timer(1.0, kill).start()
    _, err = proc.communicate(timeout=300)
    assert killed and proc.returncode == 2, err[-3000:]
    lines = errors(err)
    assert len(lines) == 1, err[-3000:]
    line = lines[0]
    # one sentence, whichever comes first: the watcher's (Ray ended the driver) or the driver's own
    # (every run's worker died with the raylet), never both
    assert (
        "the Ray driver ended without finishing (exit status 1)" in line
        or "LocalRayletDiedError" in line
    ), line
    assert "raylet" in line.lower() and "run the same command again" in line
    assert left_behind(out) == ["raylet.partial"]  # no lock file left
    time.sleep(1)
    assert ray_processes(session) == []  # the local cluster's processes are gone with it


def ray_processes(temp_dir: Path) -> list[int]:
    """Live processes whose command line names ``temp_dir`` (every process of a Ray cluster names
    its session folder)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and str(temp_dir).encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


# ---------------------------------------------------------------------------- --plan on a
# simulated 8-GPU cluster
NOTE_WIDTHS = [768, 1536, 3072, 6144, 12288, 24576, 49152, 98304]


@pytest.fixture(scope="module")
def gpu_cluster():
    c = LoopbackCluster([{"num_cpus": 16, "num_gpus": 4}, {"num_cpus": 16, "num_gpus": 4}]).start()
    yield c
    c.stop()
    assert c.pids() == [] and not c.root.exists()


def test_the_note_scale_plan_on_a_simulated_8_gpu_cluster(gpu_cluster):
    from posfeat.experiments.cluster import cluster_nodes, plan_placement
    from posfeat.experiments.config import WidthSweepConfig
    from posfeat.experiments.executors import memory_estimate
    from posfeat.experiments.plan import width_plan

    nodes = cluster_nodes(gpu_cluster.address, gpu_cluster.token)
    assert len(nodes) == 2 and sum(n.gpus for n in nodes) == 8
    runs = width_plan(
        WidthSweepConfig(context=128, d_sae=tuple(NOTE_WIDTHS), seeds=3), WidthSweepConfig.recipe()
    )
    df = pd.DataFrame(
        [
            {
                "run": r.key,
                "d_sae": r.d_sae,
                "memory_gib": memory_estimate(768, r.d_sae, r.config.batch, 50257, 1024) / 2**30,
                "seconds": 2000 * (0.002 + r.d_sae * 1e-7),
            }
            for r in runs
        ]
    )  # GPT-2 small's shapes; a step's time linear in width
    assert len(df) == 24 and round(df.memory_gib.max(), 2) == 6.92
    p = plan_placement(df, nodes, gpu_memory=80)
    assert (
        p["gpus"] == 8
        and [r["share"] for r in p["widths"]] == [0.125] * 8
        and p["parallel"] == 24
        and not p["too_big"]
    )
    assert (
        max(df.seconds.sum() / 8, df.seconds.max())
        <= p["wall_seconds"]
        <= df.seconds.sum() / 8 + df.seconds.max()
    )
    small = plan_placement(
        df, nodes, gpu_memory=8
    )  # 8 GiB GPUs: the widest runs need 7/8 of one each
    widest = small["widths"][-1]
    assert (
        widest["share"] == 0.875 and widest["per_gpu"] == 1 and small["widths"][0]["per_gpu"] == 8
    )
    assert plan_placement(df, nodes, gpu_memory=4)["too_big"] == [98304]


def test_plan_against_the_cluster_prints_the_placement(gpu_cluster, model):
    res = posfeat(
        [
            *SWEEP,
            "--model",
            str(model),
            "--plan",
            "--executor",
            "ray",
            "--address",
            gpu_cluster.address,
            "--gpu-memory",
            "80",
            "--out",
            "unused",
        ],
        gpu_cluster.client_env(),
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert (
        f"cluster at {gpu_cluster.address}: 2 node(s), 8 GPU(s), 32 CPU(s), 80 GiB per GPU "
        "(--gpu-memory)" in res.stdout
    )
    assert (
        "d_sae 16: 2 run(s) of 0.00 GiB each of 80 GiB per GPU -> 0.125 of a GPU, up to 8 at once "
        "on a GPU" in res.stdout
    )
    assert "up to 4 runs at once on the cluster; estimated wall time" in res.stdout


def test_a_node_whose_port_was_taken_is_started_again_on_fresh_ports():
    """The loopback cluster's own start (tests/ray_cluster.py): a port found free can be taken
    before Ray binds it (a fresh-clone run once failed so); here the head's port is held by another
    socket, and the cluster still starts, on another."""
    held = socket.socket()
    held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
    c = LoopbackCluster([{"num_cpus": 1}])
    held.bind(("127.0.0.1", c.port))
    held.listen()
    first = c.port
    try:
        c.start()
        assert c.port != first and len(c.pids()) > 0
    finally:
        c.stop()
        held.close()
    assert c.pids() == [] and not c.root.exists()
