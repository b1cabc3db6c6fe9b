"""The SAE shipped for the bundled model meets the quality bounds of its issue, measured as `posfeat
eval` does."""

from __future__ import annotations

import json

import pytest
import torch

from posfeat import feature_stats, load_pair, reconstruction_by_position, sample_tokens
from posfeat.analyses.evaluation import range_means
from posfeat.io.sources import BUNDLED_SAE_DIR, sae_token_weights

pytestmark = pytest.mark.realmodel


@pytest.fixture(scope="module")
def pair():
    return load_pair()  # the defaults: bundled model and bundled SAE


def test_bundled_sae_folder(pair):
    emb, sae = pair
    assert (
        sae.d_sae == 2048
        and sae.context_size == 128
        and sae.architecture == "relu"
        and emb.n_ctx == 512
    )
    assert sum(p.stat().st_size for p in BUNDLED_SAE_DIR.iterdir()) <= 16 * 2**20
    cfg = json.loads((BUNDLED_SAE_DIR / "cfg.json").read_text())
    rec = cfg["posfeat_training"]
    assert (
        rec["command"].startswith("posfeat train --model minilm --d-sae 2048 --context 128")
        and rec["seed"] == 0
    )
    tw = sae_token_weights(sae, emb.d_vocab)
    assert tw is not None and tw[1].shape == (emb.d_vocab,) and bool((tw[1] >= 0).all())


def test_bundled_sae_quality_bounds(pair):
    emb, sae = pair
    _, weights = sae_token_weights(sae, emb.d_vocab)
    sample = sample_tokens(emb, 2048, weights=weights, seed=0)
    df = reconstruction_by_position(emb, sae, sample, list(range(128)) + list(range(256, 512)))
    inside, past = range_means(df, 0, 128), range_means(df, 256, 512)
    assert inside["fvu"] <= 0.12
    assert inside["l0"] <= 40
    assert past["fvu"] >= 1.5 * inside["fvu"]
    assert past["l0"] >= 1.3 * inside["l0"]
    st = feature_stats(emb, sae, range(128))  # exact, uniform over all tokens
    assert (st.fire <= 0).mean() <= 0.10
    assert int((st.position_share >= 0.9).sum()) >= 30
    assert torch.isfinite(sae.W_enc).all()
