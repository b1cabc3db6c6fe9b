"""The data owns its device: .to() and .device, a pair on two devices is one clear error everywhere,
results are CPU numpy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from posfeat import (
    PosfeatError,
    analyze,
    brute_force_stats,
    compare_saes,
    feature_card,
    feature_stats,
    reconstruction_by_position,
    sample_tokens,
)
from posfeat.core.tensors import resolve_device
from posfeat.engine.grid_stats import additive_parts, grid_statistics

from helpers import planted_pair, random_pair


def test_to_and_device():
    emb, sae = random_pair()
    assert emb.device == sae.device == torch.device("cpu")
    assert (
        emb.to("cpu") is emb and sae.to("auto" if not torch.cuda.is_available() else "cpu") is sae
    )
    meta = sae.to("meta")
    assert (
        meta.device.type == "meta" and meta.W_enc.shape == sae.W_enc.shape and meta.meta == sae.meta
    )
    assert emb.to("meta").device.type == "meta"


def test_device_names_are_checked():
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(PosfeatError, match="not a device; use auto, cpu or cuda"):
        resolve_device("foo")
    if not torch.cuda.is_available():
        with pytest.raises(PosfeatError, match="no CUDA GPU"):
            resolve_device("cuda")


CALLS = {
    "feature_stats": lambda e, s: feature_stats(e, s),
    "brute_force_stats": lambda e, s: brute_force_stats(e, s),
    "grid_statistics": lambda e, s: grid_statistics(e, s, [range(4)]),
    "additive_parts": lambda e, s: additive_parts(e, s, torch.arange(3), torch.arange(3)),
    "analyze": lambda e, s: analyze(e, s, tokens_sample=8),
    "reconstruction_by_position": lambda e, s: reconstruction_by_position(
        e, s, sample_tokens(e, 8)
    ),
    "feature_card": lambda e, s: feature_card(e, s, 0),
}


@pytest.mark.parametrize("call", list(CALLS))
def test_a_pair_on_two_devices_is_one_clear_error(call):
    emb, sae = random_pair()
    with pytest.raises(PosfeatError, match=r"on cpu but the SAE is on meta|different devices"):
        CALLS[call](emb, sae.to("meta"))


def test_every_public_result_is_cpu_numpy_or_pandas():
    emb, sae, _ = planted_pair()
    st = feature_stats(emb, sae)
    for name in (
        "mean_by_position",
        "std_by_position",
        "fire_by_position",
        "mean",
        "position_share",
        "top_tokens",
    ):
        assert isinstance(getattr(st, name), np.ndarray), name
    an = analyze(emb, sae, tokens_sample=16)
    for name in ("features", "by_position", "spurious_examples", "spurious_by_feature"):
        assert isinstance(getattr(an, name), pd.DataFrame), name
    assert isinstance(an.token_profile, np.ndarray) and isinstance(an.helix.rows, np.ndarray)
    assert an.summary["device"] == "cpu"
    cmp = compare_saes(sae, sae, emb)
    assert isinstance(cmp.pairs, pd.DataFrame)
