"""Executors: run a plan's runs and report each as it finishes.

* :class:`LocalExecutor` (the default): in this process, one run after another, on the sweep's
  device.
* :class:`RayExecutor`: each run a Ray task (``pip install 'posfeat[ray]'``; Ray is imported only
  here, only when chosen). A task asks for a GPU share when the sweep runs on CUDA (from the run's
  memory estimate) and one CPU otherwise; it trains into its own folder under the sweep folder
  (shared storage every node must see), checkpoints as ``posfeat train`` does, and when its worker
  dies Ray retries it (``max_retries``) and it resumes from the checkpoint. A run that raises fails
  for good (not retried): it is reported with its error and the others go on.

Both are an :class:`Executor`: ``run`` yields ``(run, record, error)`` as runs finish (``record`` is
the run's ``run.json``, None when it failed; ``error`` one line). The sweep loop
(:func:`posfeat.experiments.sweeps.execute_plan`) knows only this interface; a new executor is one
class here, one line in :data:`EXECUTOR_CLASSES` and its name in
:data:`posfeat.experiments.config.EXECUTORS` (which the CLI's parser reads without importing this
module). Results do not depend
on the executor: every run is seeded and trained by the same code.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import secrets
import signal
import sys
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..core.errors import PosfeatError, Stopped, arg
from .config import ExecutorConfig
from .plan import Run, Shared
from .runner import execute

log = logging.getLogger(__name__)

Outcome = tuple[Run, dict[str, Any] | None, str | None]


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return f"{type(err).__name__}: {text}" if not isinstance(err, PosfeatError) else text


class Executor(ABC):
    """Runs a plan's runs; made by :func:`make_executor` from an :class:`ExecutorConfig` (the one
    source of its settings).

    Attributes:
        dashboard: a URL where the runs can be watched while they go (None: nothing to show).
    """

    name: str
    dashboard: str | None = None

    @abstractmethod
    def run(self, runs: list[Run], sweep: Path, shared: Shared) -> Iterator[Outcome]:
        """Run ``runs`` (each into its folder under ``sweep``) and yield each one's outcome as it
        finishes."""


class LocalExecutor(Executor):
    """In-process, one run after another (exactly the results of posfeat 0.2's sweeps); each run's
    progress bar shows."""

    name = "local"

    def __init__(
        self,
        config: ExecutorConfig,
        device: Any = None,
        progress: bool = True,
        num_cpus: int | None = None,
    ) -> None:
        self.device, self.progress = device, progress

    def run(self, runs: list[Run], sweep: Path, shared: Shared) -> Iterator[Outcome]:
        for run in runs:
            try:
                yield run, execute(run, sweep, shared, self.device, self.progress), None
            except Stopped:
                raise
            except (
                MemoryError,
                RuntimeError,
                OSError,
                ValueError,
            ) as err:  # this run fails (PosfeatError too); the others go on
                log.warning("run %s failed: %s", run.key, err)
                yield run, None, _one_line(err)


def memory_estimate(d_model: int, d_sae: int, batch: int, d_vocab: int, context: int) -> int:
    """Bytes a training run needs on its device (fp32): weights, gradients and Adam moments of W_enc
    and W_dec, a batch's activations (pre-activation, activation, their gradients), the embeddings,
    and a 2048-token block of the exact statistics."""
    params = 2 * d_model * d_sae + d_sae + d_model
    acts = 4 * batch * d_sae + 4 * batch * d_model
    stats = min(d_vocab, 2048) * d_sae * 2
    return 4 * (4 * params + acts + (d_vocab + context) * d_model + stats)


def _ray_task(run: Run, sweep: str, shared: Shared, device: str | None) -> dict[str, Any]:
    """The body of a Ray task (module level, so workers import it): the run, recorded with the node
    and GPU it ran on."""
    import ray
    import torch

    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise PosfeatError(
            "this Ray worker has no CUDA device; start the cluster's GPU nodes, or sweep with "
            "--device cpu."
        )
    ctx = ray.get_runtime_context()
    node_id = ctx.get_node_id()
    ip = next(
        (n["NodeManagerAddress"] for n in ray.nodes() if n["NodeID"] == node_id),
        os.uname().nodename,
    )
    where = {"node": f"{ip}/{node_id[:8]}", "ray_node_id": node_id}
    if str(device).startswith("cuda"):
        ids = ray.get_gpu_ids()
        where["device"] = f"cuda:{','.join(str(i) for i in ids)}" if ids else str(device)
    return execute(run, Path(sweep), shared, device, progress=False, where=where)


class RayExecutor(Executor):
    """Each run a Ray task on a cluster (``config.address``: None starts a local one; ``"auto"`` or
    ``HOST:PORT`` joins one); the runs' own progress bars are not shown (they run elsewhere)."""

    name = "ray"

    def __init__(
        self,
        config: ExecutorConfig,
        device: Any = None,
        progress: bool = True,
        num_cpus: int | None = None,
    ) -> None:
        address, max_retries, gpu_memory = config.address, config.max_retries, config.gpu_memory
        try:
            import ray
        except ImportError:
            raise PosfeatError(
                "--executor ray needs Ray; install it with pip install 'posfeat[ray]' (or pip "
                "install 'ray[default]')."
            ) from None
        self.ray, self.device, self.address, self.max_retries = ray, device, address, max_retries
        # GiB per cluster GPU (None: the accelerator type's, else this machine's GPU's)
        self.gpu_memory = gpu_memory
        self.dashboard = None
        if not ray.is_initialized():
            self.dashboard = _connect(ray, address, num_cpus)

    def resources(self, run: Run, shared: Shared) -> dict[str, Any]:
        """One CPU; on CUDA, the share of a GPU the run's memory estimate needs (in steps of 1/8, at
        least 1/8)."""
        dev = str(self.device or "cpu")
        if not dev.startswith("cuda"):
            return {"num_cpus": 1, "num_gpus": 0}
        cfg = run.config if run.trains else None
        d_sae = cfg.d_sae if cfg else (shared.sae.d_sae if shared.sae is not None else 1)
        need = memory_estimate(
            shared.emb.d_model, d_sae, cfg.batch if cfg else 1, shared.emb.d_vocab, shared.emb.n_ctx
        )
        total = float(self.ray.cluster_resources().get("GPU", 0)) and self._gpu_bytes()
        share = 1.0 if not total else min(1.0, math.ceil(8 * need / total) / 8)
        return {"num_cpus": 1, "num_gpus": share}

    def _gpu_bytes(self) -> float:
        if self.gpu_memory:
            return float(self.gpu_memory) * 2**30
        from .cluster import accelerator_memory

        types = {
            k.split(":", 1)[1]
            for k in self.ray.cluster_resources()
            if k.startswith("accelerator_type:")
        }
        known = [accelerator_memory(t) for t in types]
        return min(known) * 2**30 if known and all(known) else _gpu_memory()

    def run(self, runs: list[Run], sweep: Path, shared: Shared) -> Iterator[Outcome]:
        ray = self.ray
        task = ray.remote(_ray_task)
        shared_ref = ray.put(shared)
        dev = None if self.device is None else str(self.device)
        pending = {}
        for run in runs:
            ref = task.options(
                max_retries=self.max_retries,
                retry_exceptions=False,
                name=run.key,
                **self.resources(run, shared),
            ).remote(run, str(sweep), shared_ref, dev)
            pending[ref] = run
        try:
            # a second at a time, so that SIGINT/SIGTERM reach posfeat's handlers
            # while runs go on
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
                for ref in done:
                    run = pending.pop(ref)
                    try:
                        yield run, ray.get(ref), None
                    except ray.exceptions.RayTaskError as err:
                        cause = err.cause if getattr(err, "cause", None) is not None else err
                        yield run, None, _one_line(cause)
                    except (ray.exceptions.WorkerCrashedError, ray.exceptions.RayError) as err:
                        yield (
                            run,
                            None,
                            f"its worker died {self.max_retries + 1} time(s) ({type(err).__name__})",
                        )
        finally:
            for ref in (
                pending
            ):  # interrupted: stop what is still running (finished runs stay; checkpoints are kept)
                ray.cancel(ref, force=True)


def _gpu_memory() -> float:
    try:
        import torch

        return (
            float(torch.cuda.get_device_properties(0).total_memory)
            if torch.cuda.is_available()
            else 0.0
        )
    except (RuntimeError, AssertionError):
        return 0.0


def _connect(ray: Any, address: str | None, num_cpus: int | None) -> str | None:
    """``ray.init`` for posfeat: the cluster checked first (:mod:`posfeat.experiments.cluster`: one
    sentence within a stated timeout when it cannot be used), Ray's own output held back while it
    connects (shown only when it fails for a reason posfeat cannot name), and posfeat's
    SIGINT/SIGTERM handlers kept (``ray.init`` replaces SIGTERM's with one that exits at once).
    Returns the dashboard's URL, if any."""
    from .cluster import check_cluster, resolve_address

    given = address
    if (
        address is None
    ):  # a new local cluster, private to this process: its token lives in this process's environment
        if (
            "RAY_AUTH_MODE" not in os.environ and "RAY_AUTH_TOKEN" not in os.environ
        ):  # (not in ~/.ray/auth_token, which Ray
            os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(
                32
            )  # would write, turning token authentication on for any later
            # ray start on this machine)
    elif not address.startswith("ray://"):
        address = resolve_address(address)
        check_cluster(address, label=given)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with _held_stderr() as held:
            ctx = ray.init(
                address=address,
                num_cpus=num_cpus if address is None else None,
                log_to_driver=False,
                include_dashboard=None,
                logging_level=logging.WARNING,
            )
    except (
        ConnectionError,
        RuntimeError,
        ValueError,
        TimeoutError,
        ray.exceptions.RayError,
    ) as err:
        text = held.text()
        if (
            "InvalidAuthToken" in text
            or "Unauthenticated" in text
            or isinstance(err, getattr(ray.exceptions, "AuthenticationError", ()))
        ):
            from .cluster import TOKEN_HELP

            raise PosfeatError(
                f"The Ray cluster at {given} refused this client's token; {TOKEN_HELP}."
            ) from None
        where = given or "a new local cluster"
        raise PosfeatError(
            f"Cannot use the Ray cluster at {where} ({_one_line(err)}); start it with ray start "
            "--head, or check "
            f"{arg('address')}."
        ) from None
    finally:
        for s, h in handlers.items():
            if h is not None:
                with contextlib.suppress(ValueError):  # not the main thread
                    signal.signal(s, h)
    url = getattr(ctx, "dashboard_url", None)
    return f"http://{url}" if url and not str(url).startswith("http") else url


class _Held:
    def __init__(self, path: Path) -> None:
        self.path = path

    def text(self) -> str:
        try:
            return self.path.read_text(errors="replace")[-20000:]
        except OSError:
            return ""


@contextlib.contextmanager
def _held_stderr() -> Iterator[_Held]:
    """File descriptor 2 into a temporary file while Ray connects (its C++ client writes there
    directly)."""
    sys.stderr.flush()
    fd, name = tempfile.mkstemp(prefix="posfeat-ray-", suffix=".log")
    saved = os.dup(2)
    held = _Held(Path(name))
    try:
        os.dup2(fd, 2)
        yield held
    finally:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(fd)
        held.text = (lambda t: lambda: t)(held.text())  # type: ignore[method-assign]
        with contextlib.suppress(OSError):
            os.unlink(name)


#: The executors by the name ``--executor`` takes.
EXECUTOR_CLASSES: dict[str, Callable[..., Executor]] = {"local": LocalExecutor, "ray": RayExecutor}


def make_executor(
    config: ExecutorConfig, device: Any = None, progress: bool = True, num_cpus: int | None = None
) -> Executor:
    """The executor ``config`` names, connected (Ray: the cluster checked and joined)."""
    config.validate()
    return EXECUTOR_CLASSES[config.executor](config, device, progress, num_cpus)
