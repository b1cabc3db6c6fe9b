"""The machine a benchmark ran on, as the tables print it: the CPU model, its vector extensions, the
BLAS torch and numpy use, and the threads in use (issue 31: a ratio to the fp32 GEMM holds for one
CPU type, so each row names it)."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

import numpy as np
import torch

#: The vector extensions that decide GEMM and kernel speed, in the order printed.
EXTENSIONS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_bf16",
    "asimd",
    "sve",
)


def cpu_model() -> str:
    """The CPU's model name and its family/model/stepping numbers (/proc/cpuinfo on Linux, else what
    platform says): a virtual machine's model name can be generic ("Intel(R) Xeon(R) Processor"),
    its numbers still tell CPU types apart."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    found = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    ids = [
        re.search(rf"^{key}\s*:\s*(\S+)$", text, re.MULTILINE)
        for key in ("cpu family", "model", "stepping")
    ]
    model = (
        f" (family {ids[0].group(1)}, model {ids[1].group(1)}, stepping {ids[2].group(1)})"
        if all(ids)
        else ""
    )
    return (found.group(1).strip() if found else platform.processor() or platform.machine()) + model


def cpu_extensions() -> list[str]:
    """The vector extensions of :data:`EXTENSIONS` the CPU reports (Linux: /proc/cpuinfo's
    flags)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    found = re.search(r"^(?:flags|Features)\s*:\s*(.+)$", text, re.MULTILINE)
    flags = set(found.group(1).split()) if found else set()
    return [ext for ext in EXTENSIONS if ext in flags]


def blas() -> str:
    """The BLAS numpy was built with and torch's, in a few words."""
    try:
        info = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        numpy_blas = f"{info.get('name', '?')} {info.get('version', '')}".strip()
    except Exception:  # older numpy: no dict mode
        numpy_blas = "unknown"
    torch_blas = (
        "MKL"
        if torch.backends.mkl.is_available()
        else ("OpenBLAS" if "openblas" in torch.__config__.show().lower() else "other")
    )
    return f"numpy: {numpy_blas}; torch: {torch_blas}"


def cpu_identity() -> list[tuple[str, str]]:
    """Rows for a benchmark's table: CPU, its extensions, BLAS, threads."""
    env = ", ".join(
        f"{k}={os.environ[k]}" for k in ("OPENBLAS_CORETYPE", "OMP_NUM_THREADS") if k in os.environ
    )
    return [
        (
            "cpu",
            f"{cpu_model()}, {os.cpu_count()} cores"
            + (f" ({hypervisor()})" if hypervisor() else ""),
        ),
        ("vector extensions", " ".join(cpu_extensions()) or "none reported"),
        ("blas", blas() + (f" ({env})" if env else "")),
        ("threads", f"torch {torch.get_num_threads()}; {numba_threads()}"),
    ]


def hypervisor() -> str:
    """``virtual machine`` when /proc/cpuinfo says the CPU is a hypervisor's guest (its model name
    may then be generic, and its cores shared with other guests), else empty."""
    try:
        flags = re.search(r"^flags\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
    except OSError:
        return ""
    return "virtual machine" if flags and "hypervisor" in flags.group(1).split() else ""


def numba_threads() -> str:
    """numba's threads, its threading layer and the CPU it compiles the kernels for (with AVX-512
    gathers or not)."""
    try:
        import numba

        from posfeat.engine import kernel
    except ImportError:
        return "numba not installed"
    try:
        layer = numba.threading_layer()  # the one in use, once a parallel kernel has run
    except ValueError:
        layer = f"{numba.config.THREADING_LAYER}, none started yet"
    target = numba.config.CPU_NAME or "this CPU"
    gathers = {True: "on", False: "off"}.get(getattr(kernel, "GATHER", None), "not in this version")
    return f"numba {numba.get_num_threads()} (threading layer {layer}; kernels for {target}, AVX-512 gathers {gathers})"


if __name__ == "__main__":
    for key, value in cpu_identity():
        print(f"{key:<18} {value}")
