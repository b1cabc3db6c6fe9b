"""Results objects behave in a notebook: a card's repr is short, grid statistics pickle (issue 29,
item 7 in part)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from posfeat import analyze, feature_stats
from posfeat.core.errors import PosfeatError

from helpers import random_pair


def test_a_feature_card_repr_is_under_one_kilobyte_whatever_the_positions():
    emb, sae = random_pair(d_vocab=30, n_ctx=400, d_sae=8)
    card = analyze(emb, sae, tokens_sample=8, progress=False).feature(3)
    assert len(card.profile) == 400 and len(repr(card)) < 1024 and "FeatureCard 3" in repr(card)
    assert "mean by position" in str(card)  # the full card is still what str() prints


def test_grid_statistics_pickle_with_their_arrays():
    emb, sae = random_pair()
    stats = feature_stats(emb, sae, 6)
    back = pickle.loads(pickle.dumps(stats))
    np.testing.assert_array_equal(back.mean_by_position, stats.mean_by_position)
    assert stats.mean_by_token([0]).shape == (1, emb.d_vocab)  # the original keeps its model
    with pytest.raises(PosfeatError, match="without their model"):
        back.mean_by_token([0])
