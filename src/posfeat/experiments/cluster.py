"""Reaching a Ray cluster: its address checked, its token found, its nodes and resources read,
before Ray itself connects.

Ray's own connection to an address that does not answer retries for minutes, and one to a cluster
with token authentication that refuses the client retries for about 20 s while its C++ client prints
a warning a second; both end in a message that names an address the user did not give (Ray replaces
``127.0.0.1`` by the machine's own address). So posfeat asks the cluster's GCS first, itself, in one
gRPC call with a deadline (:data:`CONNECT_TIMEOUT`), and says in one sentence what is wrong:
nothing listens there, it does not answer in time, or it wants a token (``RAY_AUTH_MODE=token`` with
``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``, Ray's own places for it) that
was missing or refused.

The token is found where Ray looks for one; when there is one and ``RAY_AUTH_MODE`` is unset,
posfeat sets ``RAY_AUTH_MODE=token`` for its connection (Ray itself does so only for ``--address
auto``).

The same call reads the cluster's nodes and their resources (CPUs, GPUs, accelerator type), which
``--plan`` uses to place a sweep's runs on the cluster's GPUs without starting anything there.
Imported only on the Ray path (it imports Ray's gRPC stubs).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import PosfeatError, arg
from ..io.paths import expand

#: seconds posfeat waits for a cluster's first answer (``POSFEAT_RAY_TIMEOUT`` overrides it)
CONNECT_TIMEOUT = 20.0
TOKEN_HELP = (
    "set RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN, or the path of a file "
    "holding it in RAY_AUTH_TOKEN_PATH "
    "(ray get-auth-token on the head prints it)"
)


def connect_timeout() -> float:
    try:
        return max(1.0, float(os.environ.get("POSFEAT_RAY_TIMEOUT", CONNECT_TIMEOUT)))
    except ValueError:
        return CONNECT_TIMEOUT


def find_token() -> tuple[str | None, str]:
    """The Ray token this process would send, and where it came from: ``RAY_AUTH_TOKEN``,
    ``RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``."""
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        return None, "RAY_AUTH_MODE=disabled"
    value = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if value:
        return value, "RAY_AUTH_TOKEN"
    path_env = os.environ.get("RAY_AUTH_TOKEN_PATH")
    path = expand(path_env) if path_env else Path.home() / ".ray" / "auth_token"
    where = f"RAY_AUTH_TOKEN_PATH ({path})" if path_env else str(path)
    try:
        text = path.read_text().strip()
    except OSError:
        if path_env:
            raise PosfeatError(
                f"RAY_AUTH_TOKEN_PATH names {path}, which cannot be read; point it at the file "
                "holding the cluster's token."
            ) from None
        return None, "no token"
    return (text or None), where


def split_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``[v6]:PORT``) -> ``(host, port)``; a PosfeatError naming ``--address``
    otherwise."""
    m = re.fullmatch(r"\[?([^\[\]]+?)\]?:(\d{1,5})", address.strip())
    if m is None or not 0 < int(m.group(2)) < 65536:
        raise PosfeatError(
            f"{arg('address', address)} is not HOST:PORT (the head's address and GCS port, e.g. "
            "10.0.0.1:6379), auto "
            "or ray://HOST:PORT; give the address ray start --head printed."
        )
    return m.group(1), int(m.group(2))


@dataclass
class Node:
    node_id: str
    address: str
    alive: bool
    resources: dict[str, float] = field(default_factory=dict)

    @property
    def gpus(self) -> float:
        return float(self.resources.get("GPU", 0.0))

    @property
    def cpus(self) -> float:
        return float(self.resources.get("CPU", 0.0))

    @property
    def accelerator(self) -> str | None:
        return next(
            (k.split(":", 1)[1] for k in self.resources if k.startswith("accelerator_type:")), None
        )


def _call(address: str, token: str | None, timeout: float, method: str) -> Any:
    import grpc
    from ray.core.generated import gcs_service_pb2 as pb
    from ray.core.generated import gcs_service_pb2_grpc as stubs

    host, port = split_address(address)
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    with grpc.insecure_channel(target, options=[("grpc.enable_http_proxy", 0)]) as channel:
        stub = stubs.NodeInfoGcsServiceStub(channel)
        if method == "cluster_id":
            return stub.GetClusterId(
                pb.GetClusterIdRequest(), timeout=timeout, metadata=metadata, wait_for_ready=False
            )
        return stub.GetAllNodeInfo(
            pb.GetAllNodeInfoRequest(), timeout=timeout, metadata=metadata, wait_for_ready=False
        )


def _explain(address: str, err: Any, token: str | None, where: str, timeout: float) -> PosfeatError:
    import grpc

    code, details = err.code(), " ".join(str(err.details() or "").split())
    if code == grpc.StatusCode.UNAUTHENTICATED:
        if token is None:
            return PosfeatError(
                f"The Ray cluster at {address} requires token authentication and posfeat found no "
                f"token; {TOKEN_HELP}."
            )
        return PosfeatError(
            f"The Ray cluster at {address} refused the token from {where}; {TOKEN_HELP}."
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return PosfeatError(
            f"The Ray cluster at {address} did not answer within {timeout:.0f} s; check that its "
            "head is running and "
            f"reachable from here (ray status on the head), or check {arg('address')}."
        )
    why = "connection refused" if "refused" in details.lower() else (details[:160] or code.name)
    return PosfeatError(
        f"No Ray cluster answers at {address} ({why}); start one there with ray start --head --port "
        f"{address.rsplit(':', 1)[-1]}, or check {arg('address')}."
    )


def resolve_address(address: str) -> str:
    """``auto``: the cluster ``ray start`` last started on this machine (a PosfeatError when there
    is none); else ``address`` (checked to be ``HOST:PORT``)."""
    if address.strip() == "auto":
        try:
            from ray._private.services import canonicalize_bootstrap_address

            found = canonicalize_bootstrap_address("auto")
        except (ConnectionError, ValueError, OSError, ImportError, AttributeError):
            found = None
        if not found:
            raise PosfeatError(
                f"{arg('address', 'auto')} found no Ray cluster started on this machine; start one "
                "with ray start --head, "
                "or give the head's HOST:PORT."
            )
        return str(found)
    split_address(address)
    return address.strip()


def check_cluster(
    address: str, timeout: float | None = None, label: str | None = None
) -> str | None:
    """Ask the cluster at ``address`` (``HOST:PORT``) for its id with the token this process has; a
    one-sentence PosfeatError naming ``label`` (the address as the user gave it; default
    ``address``) within ``timeout`` when it cannot be used. Returns the token (None without one) and
    turns token mode on when one was found."""
    import grpc

    timeout = connect_timeout() if timeout is None else timeout
    token, where = find_token()
    try:
        _call(address, token, timeout, "cluster_id")
    except grpc.RpcError as err:
        raise _explain(label or address, err, token, where, timeout) from None
    if token is not None and "RAY_AUTH_MODE" not in os.environ:
        os.environ["RAY_AUTH_MODE"] = (
            "token"  # Ray sends its token only in token mode, and sets it only for --address auto
        )
        _refresh_ray_config()
    return token


def _refresh_ray_config() -> None:
    """Make an already imported Ray see the new RAY_AUTH_MODE (it caches its config at import)."""
    try:
        from ray._raylet import Config

        Config.initialize("")
    except (
        ImportError,
        AttributeError,
        RuntimeError,
    ):  # pragma: no cover (a Ray without token authentication)
        pass


def cluster_nodes(
    address: str, token: str | None = None, timeout: float | None = None, label: str | None = None
) -> list[Node]:
    """The cluster's live nodes with their resources (one gRPC call; nothing is started on the
    cluster)."""
    import grpc

    timeout = connect_timeout() if timeout is None else timeout
    if token is None:
        token, where = find_token()
    else:
        where = "the given token"
    try:
        reply = _call(address, token, timeout, "nodes")
    except grpc.RpcError as err:
        raise _explain(label or address, err, token, where, timeout) from None
    nodes = [
        Node(
            n.node_id.hex(),
            n.node_manager_address,
            n.state == 0,
            {k: float(v) for k, v in n.resources_total.items()},
        )
        for n in reply.node_info_list
    ]
    return [n for n in nodes if n.alive]


#: GiB of memory of the GPUs Ray names by accelerator type (``accelerator_type:...`` resources);
# others are not guessed
ACCELERATOR_GIB = {
    "H100": 80,
    "H200": 141,
    "A100-80G": 80,
    "A100-40G": 40,
    "L4": 24,
    "L40S": 48,
    "A10G": 24,
    "T4": 16,
    "V100": 16,
    "B200": 180,
    "GH200": 96,
}


def accelerator_memory(kind: str | None) -> float | None:
    """GiB of one GPU of Ray's accelerator type ``kind`` (None when posfeat does not know it: give
    ``--gpu-memory``)."""
    return None if kind is None else ACCELERATOR_GIB.get(kind)


# ---------------------------------------------------------------------------- --plan on a cluster
def gpu_share(need_bytes: float, gpu_bytes: float) -> float:
    """The share of a GPU a run asks Ray for: its memory estimate in eighths of the GPU, at least
    1/8 (1 when it needs more)."""
    return 1.0 if gpu_bytes <= 0 else min(1.0, max(1, math.ceil(8 * need_bytes / gpu_bytes)) / 8)


def plan_placement(df: Any, nodes: list[Node], gpu_memory: float | None = None) -> dict[str, Any]:
    """How a plan's runs (``df``: ``run``, ``d_sae``, ``memory_gib``, ``seconds``, as
    :func:`plan_table` gives) map onto ``nodes``' GPUs: each run's GPU share (:func:`gpu_share`, as
    the Ray executor asks), how many run at once on a GPU and on the cluster (a run also takes one
    CPU of its node), and the wall time.

    The wall time assumes runs sharing a GPU take turns (a training step keeps a GPU busy, so two
    runs on one GPU take as long
    as one after the other): runs are given to GPUs longest first, each to the GPU that frees up
        first, and the estimate is
    the busiest GPU's total. ``gpu_memory``: GiB per GPU (default: from the nodes' accelerator
        type)."""
    gpus = [(i, g) for i, n in enumerate(nodes) for g in range(int(n.gpus))]
    kinds = {n.accelerator for n in nodes if n.gpus}
    gib = (
        gpu_memory
        or (min(accelerator_memory(k) or 0 for k in kinds) if kinds and None not in kinds else None)
        or None
    )
    source = (
        "--gpu-memory"
        if gpu_memory
        else (f"accelerator type {', '.join(sorted(kinds))}" if gib else None)
    )
    out: dict[str, Any] = {
        "nodes": len(nodes),
        "gpus": len(gpus),
        "cpus": sum(n.cpus for n in nodes),
        "gpu_memory_gib": gib,
        "gpu_memory_from": source,
        "widths": [],
        "too_big": [],
        "parallel": 0,
        "wall_seconds": float("nan"),
        "total_seconds": float(df.seconds.sum()) if len(df) else 0.0,
    }
    if not gpus or gib is None:
        return out
    rows = []
    for w, g in df.groupby("d_sae", sort=True):
        need = float(g.memory_gib.max())
        share = gpu_share(need * 2**30, gib * 2**30)
        rows.append(
            {
                "d_sae": int(w),
                "runs": len(g),
                "memory_gib": need,
                "share": share,
                "per_gpu": round(1 / share) if need <= gib else 0,
                "seconds": float(g.seconds.max()),
            }
        )
        if need > gib:
            out["too_big"].append(int(w))
    out["widths"] = rows
    # at most: each GPU full of the narrowest runs, each node's CPUs
    per_node = [
        min(int(n.cpus), int(n.gpus) * max((r["per_gpu"] for r in rows), default=0))
        for n in nodes
        if n.gpus
    ]
    out["parallel"] = int(min(len(df), sum(per_node)))
    loads = [0.0] * len(gpus)
    for sec in sorted(df.seconds.astype(float), reverse=True):
        i = loads.index(min(loads))
        loads[i] += sec
    out["wall_seconds"] = max(loads) if loads else 0.0
    out["gpu_seconds"] = loads
    gpu_room = sum(
        int(n.gpus) * max((r["per_gpu"] for r in rows), default=0) for n in nodes if n.gpus
    )
    out["cpu_bound"] = sum(per_node) < min(len(df), gpu_room)
    return out


def placement_text(p: dict[str, Any], address: str) -> str:
    """The placement as ``--plan`` prints it."""
    head = f"cluster at {address}: {p['nodes']} node(s), {p['gpus']} GPU(s), {p['cpus']:.0f} CPU(s)"
    if not p["gpus"]:
        return head + "; no GPUs: the runs would train on its CPUs (one run per CPU at a time)."
    if p["gpu_memory_gib"] is None:
        return (
            head
            + "; the GPUs' memory is unknown (Ray names no accelerator type posfeat knows): give "
            "--gpu-memory GIB to place the runs."
        )
    lines = [head + f", {p['gpu_memory_gib']:g} GiB per GPU ({p['gpu_memory_from']})"]
    for r in p["widths"]:
        if r["memory_gib"] > p["gpu_memory_gib"]:
            lines.append(
                f"  d_sae {r['d_sae']}: {r['runs']} run(s) of {r['memory_gib']:.2f} GiB: more than "
                "a GPU holds; they cannot run here"
            )
        else:
            lines.append(
                f"  d_sae {r['d_sae']}: {r['runs']} run(s) of {r['memory_gib']:.2f} GiB each of "
                f"{p['gpu_memory_gib']:g} GiB per GPU -> "
                f"{r['share']:g} of a GPU, up to {r['per_gpu']} at once on a GPU"
            )
    lines.append(
        f"up to {p['parallel']} runs at once on the cluster"
        + (" (limited by the nodes' CPUs: one per run)" if p.get("cpu_bound") else "")
        + f"; estimated wall time {p['wall_seconds']:.0f} s = {p['wall_seconds'] / 3600:.2f} h "
        "(runs sharing a GPU take turns; "
        f"{p['total_seconds'] / 3600:.2f} device-hours over {p['gpus']} GPUs, longest first)"
    )
    return "\n".join(lines)
