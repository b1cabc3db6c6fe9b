"""Every results object pickles and comes back equal (issue 29 item 7): an analysis, a card, a
comparison, a prompt, grid statistics (tested with their arrays in test_results_objects.py), so they
cross process boundaries (multiprocessing, Ray, joblib) and a notebook can store them."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd

from posfeat import analyze, feature_stats, prompt
from posfeat.analyses.compare import compare_saes

from helpers import planted_pair


def test_results_objects_pickle_and_come_back_equal():
    emb, sae, _ = planted_pair()
    an = analyze(emb, sae, tokens_sample=16, progress=False)
    back = pickle.loads(pickle.dumps(an))
    pd.testing.assert_frame_equal(back.features, an.features)
    pd.testing.assert_frame_equal(back.by_position, an.by_position)
    assert json.dumps(back.findings, default=str) == json.dumps(
        an.findings, default=str
    )  # NaN != NaN: compared as text
    assert back.summary["counts"] == an.summary["counts"]
    card = an.feature(3)
    assert repr(pickle.loads(pickle.dumps(card))) == repr(card)
    cmp = compare_saes(sae, sae, emb)
    pd.testing.assert_frame_equal(pickle.loads(pickle.dumps(cmp)).pairs, cmp.pairs)
    pr = prompt((emb, sae), [1, 2, 3])
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(pr)).activations, pr.activations)
    stats = feature_stats(emb, sae, 8)
    np.testing.assert_array_equal(
        pickle.loads(pickle.dumps(stats)).fire_by_position, stats.fire_by_position
    )
