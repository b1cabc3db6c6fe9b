"""Fixtures shared by the tests (builders live in helpers.py)."""

from __future__ import annotations

import pytest

from helpers import random_pair, write_planted_folders


@pytest.fixture
def tiny():
    return random_pair()


@pytest.fixture
def planted_dirs(tmp_path):
    """The planted pair saved as a GPT-2-layout checkpoint folder and a SAELens-format SAE folder."""
    return write_planted_folders(tmp_path)


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty hub cache, offline (HF_HUB_OFFLINE=1, HF_HUB_CACHE pointing at it)."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache
