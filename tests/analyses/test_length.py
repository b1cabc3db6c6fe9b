"""own_and_spurious: each semantic feature on its own tokens, apart from its spurious firing,
against the grid enumerated."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from posfeat.analyses.length import own_and_spurious
from posfeat.engine.grid_stats import grid_statistics

from helpers import random_pair


@pytest.mark.parametrize("threshold", [False, True])
def test_own_and_spurious_match_the_enumerated_grid(threshold):
    emb, sae = random_pair(d_vocab=40, n_ctx=16, d_sae=24, seed=3, threshold=threshold)
    context, n_pos = 6, 16
    (stats,), _ = grid_statistics(
        emb, sae, [range(n_pos)]
    )  # only its tokens and positions are read
    feats = np.arange(sae.d_sae)
    got = own_and_spurious(emb, sae, stats, feats, context)
    with torch.no_grad():
        t, p = torch.meshgrid(torch.arange(40), torch.arange(n_pos), indexing="ij")
        act = sae.encode(emb.inputs(t, p)).double().numpy()  # [tok, pos, f]
    assert (got.spurious_share[:, context:] > 0).any()  # the pair has spurious firing to find
    for f in feats:
        a = act[:, :, f]
        own = (a[:, :context] > 0).any(1)
        assert got.own_tokens[f] == own.sum()
        want = a[own].mean(0) if own.any() else 0.0
        np.testing.assert_allclose(
            got.own_mean[f], want, rtol=1e-6, atol=1e-7
        )  # float32 encode against float64 parts
        spur = (a[~own] > 0).sum(0) / 40
        np.testing.assert_allclose(got.spurious_share[f], spur, atol=1e-12)
        assert (got.spurious_share[f, :context] == 0).all()
