"""A real Ray cluster on this machine, started the way a user starts one: a head and more nodes,
each its own ``ray start``.

Every node is a ``ray start --block`` under a small keeper process (this file run as a program) in a
process group of its
own: the keeper adopts what Ray's processes leave (a child subreaper), and on SIGTERM kills its
group and reaps every process in it, so a node stops at once and leaves neither a process nor a
zombie (never ``ray stop``, which stops every Ray on the machine); it runs with token authentication
on (``RAY_AUTH_MODE=token`` and a fresh token in ``RAY_AUTH_TOKEN``), its session folder under a
private ``--temp-dir`` (removed at the end) and ports of its own (free ones found by the kernel; the
worker ports Ray picks at random). Workers import the posfeat under test."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import posfeat
from posfeat.io.writes import pid_alive

RAY = str(Path(sys.executable).with_name("ray"))
SRC = str(Path(posfeat.__file__).resolve().parents[1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def alive(pid: int) -> bool:
    return pid_alive(pid)


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group ``pgid`` (from /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # state ppid pgrp ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            out.append(int(entry.name))
    return out


#: What a node's log says when a port it was to bind was taken.
PORT_TAKEN = ("Address already in use", "Failed to bind")
#: Ray's own deadline for a node's servers to come up, missed on a loaded 2-core machine (a
# fresh-clone CI run saw ``ray start`` stop with it, the GCS answering "Deadline Exceeded").
STARTUP_TIMED_OUT = ("timed out during startup",)


class StartAgainError(RuntimeError):
    """A node that failed to start for the machine's sake, not posfeat's: a port it was given or
    picked was taken by another process, or Ray's startup deadline passed on a loaded machine."""


class LoopbackCluster:
    """``nodes``: one dict of ``ray start`` options per node (the first is the head), e.g.
    ``{"num_cpus": 1, "num_gpus": 4}``."""

    def __init__(self, nodes: list[dict[str, object]], auth: bool = True) -> None:
        self.root = Path(
            tempfile.mkdtemp(prefix="pf-ray-", dir="/tmp")
        )  # short: Ray's socket paths must fit in 107 bytes
        self.token = secrets.token_hex(32) if auth else None
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.nodes = nodes
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(
            PYTHONPATH=SRC + os.pathsep + env.get("PYTHONPATH", "")
            if env.get("PYTHONPATH")
            else SRC,
            RAY_USAGE_STATS_ENABLED="0",
        )
        if self.token:
            env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token)
        else:
            env.update(RAY_AUTH_MODE="disabled")
        self.env = env

    def client_env(self, with_token: bool = True) -> dict[str, str]:
        """The environment of a client: the cluster's token when ``with_token``; none of this
        machine's Ray settings otherwise."""
        env = {k: v for k, v in self.env.items() if not k.startswith("RAY_AUTH")}
        if with_token and self.token:
            env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=self.token)
        env["HOME"] = str(self.root / "home")  # no ~/.ray/auth_token of the user's is read
        return env

    def _start(self, i: int, opts: dict[str, object]) -> None:
        cmd = [
            RAY,
            "start",
            "--block",
            "--node-ip-address",
            "127.0.0.1",
            "--temp-dir",
            str(self.root / f"n{i}"),
            "--disable-usage-stats",
            "--object-store-memory",
            str(80 * 2**20),
            "--min-worker-port",
            "0",
            "--max-worker-port",
            "0",
            "--dashboard-agent-listen-port",
            str(free_port()),
            "--metrics-export-port",
            str(free_port()),
        ]
        if i == 0:
            cmd += [
                "--head",
                "--port",
                str(self.port),
                "--include-dashboard",
                "false",
                "--ray-client-server-port",
                str(free_port()),
            ]
        else:
            cmd += ["--address", self.address]
        for k, v in opts.items():
            cmd += [f"--{k.replace('_', '-')}", str(v)]
        log = open(self.root / f"n{i}.log", "wb")  # noqa: SIM115 (kept open by the child)
        self.procs.append(
            subprocess.Popen(
                [sys.executable, __file__, *cmd],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                cwd=self.root,
            )
        )
        log.close()

    def start(self, timeout: float = 120, attempts: int = 3) -> LoopbackCluster:
        """Start the nodes one after the other, each joined before the next. A port found free
        (:func:`free_port`) can be taken by another process before Ray binds it, or Ray can pick
        it for another of its own servers, and on a loaded machine Ray's own startup deadline can
        pass: a start that fails for that alone is made again on fresh ports, up to ``attempts``
        times."""
        for attempt in range(attempts):
            try:
                return self._start_nodes(timeout)
            except StartAgainError:
                if attempt == attempts - 1:
                    raise
                self.procs = []
                self.root.mkdir()  # stop() removed it
                self.port = free_port()
                self.address = f"127.0.0.1:{self.port}"
        raise AssertionError("unreachable")

    def _start_nodes(self, timeout: float) -> LoopbackCluster:
        from posfeat.experiments.cluster import cluster_nodes

        try:
            for i, opts in enumerate(self.nodes):
                self._start(i, opts)
                deadline = time.time() + timeout
                while True:
                    dead = [p for p in self.procs if p.poll() is not None]
                    if dead:
                        log = self.log(self.procs.index(dead[0]))
                        again = any(m in log for m in PORT_TAKEN + STARTUP_TIMED_OUT)
                        raise (StartAgainError if again else RuntimeError)(
                            f"ray start exited ({dead[0].returncode}): {log[-2000:]}"
                        )
                    try:
                        if len(cluster_nodes(self.address, self.token, timeout=2)) == i + 1:
                            break
                    except Exception:
                        pass
                    if time.time() > deadline:
                        raise RuntimeError(
                            f"node {i} did not join within {timeout} s: {self.log(i)[-2000:]}"
                        )
                    time.sleep(0.3)
        except BaseException:
            self.stop()
            raise
        return self

    def log(self, i: int) -> str:
        return (self.root / f"n{i}.log").read_text(errors="replace")

    def pids(self) -> list[int]:
        return [pid for p in self.procs for pid in group_members(p.pid)]

    def kill_raylet(self, node: int = 0) -> int:
        """SIGKILL node ``node``'s raylet; returns its pid."""
        for pid in group_members(self.procs[node].pid):
            try:
                exe = os.readlink(f"/proc/{pid}/exe")
            except OSError:
                continue
            if exe.endswith("/raylet"):
                os.kill(pid, signal.SIGKILL)
                return pid
        raise RuntimeError("no raylet found")

    def stop(self) -> None:
        """SIGTERM each node's keeper (it kills and reaps its process group), SIGKILL what is left;
        remove the session folder."""
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(30)
        for p in self.procs:
            for pid in group_members(p.pid):
                os.kill(pid, signal.SIGKILL)
            if p.poll() is None:
                p.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> LoopbackCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _keep(cmd: list[str]) -> int:
    """The keeper: run ``cmd``; at SIGTERM (or when ``cmd`` ends) SIGKILL every other process of
    this group and reap them all."""
    import ctypes
    import threading

    ctypes.CDLL(None, use_errno=True).prctl(
        36, 1, 0, 0, 0
    )  # PR_SET_CHILD_SUBREAPER: Ray's orphans become ours to reap
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    child = subprocess.Popen(cmd)
    while not stop.is_set() and child.poll() is None:
        stop.wait(0.2)
    me = os.getpid()
    deadline = time.time() + 20
    while time.time() < deadline:
        others = [pid for pid in group_members(me) if pid != me]
        for pid in others:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            if not others:
                break
        if not others and not [pid for pid in group_members(me) if pid != me]:
            break
        time.sleep(0.05)
    try:
        while True:
            os.waitpid(-1, 0)
    except ChildProcessError:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(_keep(sys.argv[1:]))
