"""The machine a benchmark ran on, as the tables print it: the CPU model, its vector extensions, the BLAS torch and
numpy use, and the threads in use (issue 31: a ratio to the fp32 GEMM holds for one CPU type, so each row names it)."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

import numpy as np
import torch

#: The vector extensions that decide GEMM and kernel speed, in the order printed.
EXTENSIONS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "amx_tile",
              "asimd", "sve")


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else what platform says)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    found = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return found.group(1).strip() if found else platform.processor() or platform.machine()


def cpu_extensions() -> list[str]:
    """The vector extensions of :data:`EXTENSIONS` the CPU reports (Linux: /proc/cpuinfo's flags)."""
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
    torch_blas = "MKL" if torch.backends.mkl.is_available() else ("OpenBLAS" if "openblas" in torch.__config__.show().lower()
                                                                   else "other")
    return f"numpy: {numpy_blas}; torch: {torch_blas}"


def cpu_identity() -> list[tuple[str, str]]:
    """Rows for a benchmark's table: CPU, its extensions, BLAS, threads."""
    env = ", ".join(f"{k}={os.environ[k]}" for k in ("OPENBLAS_CORETYPE", "OMP_NUM_THREADS") if k in os.environ)
    return [("cpu", f"{cpu_model()}, {os.cpu_count()} cores"),
            ("vector extensions", " ".join(cpu_extensions()) or "none reported"),
            ("blas", blas() + (f" ({env})" if env else "")),
            ("threads", f"torch {torch.get_num_threads()}")]


if __name__ == "__main__":
    for key, value in cpu_identity():
        print(f"{key:<18} {value}")
