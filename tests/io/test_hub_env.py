"""HF_HUB_CACHE, HUGGINGFACE_HUB_CACHE, HF_HOME and HF_HUB_OFFLINE behave exactly as
huggingface_hub's own functions do."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from posfeat.io import hub_settings, load_pair

from helpers import build_gpt2_cache

HF_VARS = (
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "HF_HOME",
    "XDG_CACHE_HOME",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
)


def _library_says(env: dict[str, str]) -> tuple[str, bool]:
    """Where huggingface_hub itself puts its cache, and whether it is offline, in a fresh process
    with ``env``."""
    code = "import json, huggingface_hub.constants as c; print(json.dumps([c.HF_HUB_CACHE, c.HF_HUB_OFFLINE]))"
    clean = {k: v for k, v in os.environ.items() if k not in HF_VARS}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    cache, off = json.loads(out)
    return cache, off


CASES = [
    {"HF_HUB_CACHE": "{tmp}/a"},
    {"HUGGINGFACE_HUB_CACHE": "{tmp}/b"},
    {"HF_HOME": "{tmp}/home"},
    {"XDG_CACHE_HOME": "{tmp}/xdg"},
    {"HF_HOME": "{tmp}/home", "HF_HUB_CACHE": "{tmp}/wins"},
    {"HUGGINGFACE_HUB_CACHE": "{tmp}/old", "HF_HUB_CACHE": "{tmp}/new"},
    {"HF_HUB_CACHE": "{tmp}/c", "HF_HUB_OFFLINE": "1"},
    {"HF_HUB_CACHE": "{tmp}/d", "HF_HUB_OFFLINE": "0"},
    {"HF_HUB_CACHE": "{tmp}/e", "TRANSFORMERS_OFFLINE": "yes"},
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "+".join(c))
def test_settings_match_huggingface_hub(case, tmp_path, monkeypatch):
    env = {k: v.format(tmp=tmp_path) for k, v in case.items()}
    for k in HF_VARS:
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    cache, off = _library_says(env)
    got = hub_settings()
    assert str(got.cache) == cache and got.offline == off


@pytest.mark.parametrize("var", ["HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME"])
def test_loading_finds_the_cache_each_variable_names(var, tmp_path, monkeypatch):
    for k in HF_VARS:
        monkeypatch.delenv(k, raising=False)
    root = tmp_path / "root"
    monkeypatch.setenv(var, str(root))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = hub_settings().cache
    assert cache == (root / "hub" if var == "HF_HOME" else root)
    build_gpt2_cache(cache, tmp_path)
    emb, sae = load_pair("gpt2", "gpt2-small-res-jb/blocks.0.hook_resid_pre")
    assert emb.n_ctx == 160 and sae.d_sae == 16
