"""Fixtures shared by the tests (builders live in helpers.py)."""

from __future__ import annotations

import os
import shutil

# Triton's interpreter must be chosen before anything imports Triton (sae_lens and transformers can,
# through torch): on a machine without an NVIDIA GPU the Triton kernel's exactness test runs through
# it (posfeat also sets it, but only when it is the first to import Triton).
if shutil.which("nvidia-smi") is None:
    os.environ.setdefault("TRITON_INTERPRET", "1")

# OpenMP threads (torch's and numba's) that wait for work sleep instead of spinning: on a machine
# shared with other processes (two pytest-xdist workers, the subprocesses of the CLI tests) spinning
# threads take the cores the others need (a 1500-step training run of the signal tests took 1.8x to
# 2.6x as long, measured on a busy 2-core machine). Only how threads wait changes, not how many
# there are or what they compute. Set before anything loads OpenMP (torch is first imported below),
# and inherited by every worker and subprocess.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
from hypothesis import HealthCheck, settings

from helpers import random_pair, write_planted_folders

# Hypothesis profiles, chosen by POSFEAT_HYPOTHESIS (default "ci"): "ci" keeps the suite fast,
# "slow" searches much harder (run it before a release or after touching an exact path), "dev" is
# hypothesis's own default. Tests leave max_examples to the profile (a test's own @settings would
# override it).
settings.register_profile(
    "ci", max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "slow", max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("POSFEAT_HYPOTHESIS", "ci"))


#: A 1x1 PNG: what :func:`stub_figures` writes for every figure.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d4944415478da63f8cfc0f01f0005000201"
    "a5d1e8e50000000049454e44ae426082"
)


@pytest.fixture
def stub_figures(monkeypatch):
    """Figures replaced by a 1x1 PNG each (the rest of the report, its parts and every other file
    are made as usual), for the tests of where files go, of locks, paths and errors: what they test
    is not how figures look, and drawing fifteen figures per run cost them most of their time. The
    figures themselves are tested in tests/outputs and by the analyze tests that write
    everything."""
    import posfeat.outputs.figures as figures
    import posfeat.outputs.write as write

    def tiny_figures(an, folder, progress=False, meanwhile=None, page=None):
        folder.mkdir(exist_ok=True)
        if meanwhile is not None:
            meanwhile()
        for name in figures.FIGURES:
            (folder / f"{name}.png").write_bytes(PNG)
        return {name: folder / f"{name}.png" for name in figures.FIGURES}

    monkeypatch.setattr(write, "write_figures", tiny_figures)


@pytest.fixture
def tiny():
    return random_pair()


@pytest.fixture
def planted_dirs(tmp_path):
    """The planted pair saved as a GPT-2-layout checkpoint folder and a SAELens-format SAE
    folder."""
    return write_planted_folders(tmp_path)


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty hub cache, offline (HF_HUB_OFFLINE=1, HF_HUB_CACHE pointing at it)."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist, the longest tests first (``slow``, then ``browser`` and ``realmodel``),
    each group in its usual
    order: the workers start on them together and end on short tests, so neither waits long for the
    other at the end. A run in one process keeps the usual order."""
    if os.environ.get("PYTEST_XDIST_WORKER") is None:
        return

    def rank(item: pytest.Item) -> int:
        if item.get_closest_marker("slow"):
            return 0
        return (
            1 if item.get_closest_marker("browser") or item.get_closest_marker("realmodel") else 2
        )

    items.sort(key=rank)  # stable: every worker collects the same order, as xdist requires
