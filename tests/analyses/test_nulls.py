"""The random dictionary's draws: the same numbers on any number of threads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from posfeat.analyses.nulls import dictionary_draws
from posfeat.core.embeddings import Embeddings
from posfeat.core.sae import SAE


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_the_token_profile_draws_are_the_same_on_any_number_of_threads(restore_threads):
    """The token profiles of the first draws run on a pool of threads, one torch thread each; the
    generator is drawn in order first, so each draw's statistic is the one a single thread gives."""
    g = torch.Generator().manual_seed(3)
    d_vocab, d_model, d_sae, context = 400, 24, 64, 16
    emb = Embeddings(
        torch.randn(d_vocab, d_model, generator=g),
        torch.randn(2 * context, d_model, generator=g),
        name="t",
    )
    sae = SAE.from_arrays(
        torch.randn(d_model, d_sae, generator=g),
        torch.randn(d_sae, d_model, generator=g),
        torch.randn(d_sae, generator=g) - 0.5,
        torch.zeros(d_model),
        context_size=context,
        hook_name="blocks.0.hook_resid_pre",
        name="t",
    )
    fire = np.random.default_rng(0).random(d_sae) * 0.3
    runs = []
    for threads in (1, 2, 3):
        torch.set_num_threads(threads)
        d = dictionary_draws(
            emb,
            sae,
            context,
            fire,
            disjoint_cv=0.1,
            positional_share=0.5,
            flat_cv=1.0,
            flat_min_features=2,
            k=8,
            draws=12,
        )
        runs.append(np.stack([d.disjoint, d.positional_share, d.gap_ratio, d.token_flat]))
    flat = runs[0][3]
    assert np.isfinite(flat).sum() >= 10 and len(np.unique(flat[np.isfinite(flat)])) > 1
    for other in runs[1:]:
        np.testing.assert_array_equal(other, runs[0])
