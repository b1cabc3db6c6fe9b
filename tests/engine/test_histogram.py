"""Exact activation histograms and top inputs over the grid (issue 29, item 4), held to the
brute-force enumeration
through ``sae.encode``: counts per bin, firing, largest activation and the strongest (token,
position) inputs, on both the numba and the torch paths, ReLU and JumpReLU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from posfeat.core.errors import PosfeatError
from posfeat.engine import histogram as histogram_module
from posfeat.engine.grid_stats import grid_statistics
from posfeat.engine.histogram import activation_histograms

from helpers import random_pair


def _brute(emb, sae, positions: int) -> np.ndarray:
    """``[n_tok * positions, d_sae]`` activations of every input, token-major."""
    x = emb.W_E[:, None, :] + emb.W_pos[None, :positions, :]
    return sae.encode(x.reshape(-1, emb.d_model)).double().numpy()


@pytest.mark.parametrize("numba_path", [True, False])
@pytest.mark.parametrize("threshold", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_histogram_and_top_inputs_match_enumeration(monkeypatch, numba_path, threshold, seed):
    if not numba_path:
        monkeypatch.setattr(histogram_module, "HAVE_NUMBA", False)
    emb, sae = random_pair(
        d_vocab=70, n_ctx=20, d_model=8, d_sae=24, seed=seed, threshold=threshold
    )
    positions = 13
    _check_against_enumeration(activation_histograms(emb, sae, positions), emb, sae, positions)


def _check_against_enumeration(hist, emb, sae, positions: int) -> None:
    act = _brute(emb, sae, positions)
    assert hist.grid_size == emb.d_vocab * positions and hist.counts.shape == (sae.d_sae, hist.bins)
    some_fire = 0
    for f in range(sae.d_sae):
        fired = act[:, f][act[:, f] > 0]
        assert hist.firing[f] == len(fired) == hist.counts[f].sum()
        if not len(fired):
            assert hist.max_activation[f] == 0 and (hist.top_tokens[f] == -1).all()
            continue
        some_fire += 1
        assert hist.max_activation[f] == pytest.approx(fired.max(), abs=1e-5)
        edges = hist.edges(f)
        edges[-1] = np.inf  # the maximum itself, whatever its last rounding
        np.testing.assert_array_equal(hist.counts[f], np.histogram(fired, bins=edges)[0])
        order = np.argsort(-act[:, f], kind="stable")[:10]
        want = act[order, f][act[order, f] > 0]
        np.testing.assert_allclose(hist.top_values[f][: len(want)], want, atol=1e-5)
        for t, p, v in zip(hist.top_tokens[f], hist.top_positions[f], hist.top_values[f]):
            if t >= 0:
                assert act[t * positions + p, f] == pytest.approx(v, abs=1e-5)
    assert some_fire >= sae.d_sae // 2  # the comparison is not vacuous


@pytest.mark.parametrize("screen", [False, True])
@pytest.mark.parametrize("threshold", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_the_engine_pass_gives_the_same_histograms(screen, threshold, seed):
    """``grid_statistics(..., histograms=True)``: the cards' histograms from the engine's own token
    parts, dense (then bit for bit those of :func:`activation_histograms`: the same GEMM) or
    screened (exact token parts of the candidates only), held to the enumeration."""
    emb, sae = random_pair(
        d_vocab=70, n_ctx=20, d_model=8, d_sae=24, seed=seed, threshold=threshold
    )
    positions = 13
    (ctx, _all), _ = grid_statistics(
        emb, sae, [range(positions), range(emb.n_ctx)], histograms=True, screen=screen
    )
    hist = ctx.histograms
    assert hist is not None and hist.counts.shape == (sae.d_sae, hist.bins)
    _check_against_enumeration(hist, emb, sae, positions)
    if not screen:
        alone = activation_histograms(emb, sae, positions)
        for name in ("counts", "max_activation", "top_tokens", "top_positions", "top_values"):
            np.testing.assert_array_equal(getattr(hist, name), getattr(alone, name))


def test_the_engine_pass_gives_no_histograms_where_it_cannot():
    """Another backend than numba, or a first position set that is not ``0..n-1``: None (the
    report then computes them on their own)."""
    emb, sae = random_pair(d_vocab=70, n_ctx=20, d_model=8, d_sae=24, seed=0)
    (st,), _ = grid_statistics(emb, sae, [range(3, 13)], histograms=True)
    assert st.histograms is None
    (st,), _ = grid_statistics(emb, sae, [range(13)], histograms=True, backend="torch")
    assert st.histograms is None
    (st,), _ = grid_statistics(emb, sae, [range(13)])
    assert st.histograms is None


def test_a_subset_of_features_gives_their_rows():
    emb, sae = random_pair(d_vocab=50, n_ctx=12, d_model=8, d_sae=20, seed=3)
    whole, part = (
        activation_histograms(emb, sae, 6),
        activation_histograms(emb, sae, 6, features=np.array([7, 2])),
    )
    np.testing.assert_array_equal(part.counts, whole.counts[[7, 2]])
    np.testing.assert_array_equal(part.top_tokens, whole.top_tokens[[7, 2]])


def test_topk_is_refused_in_one_sentence():
    emb, sae = random_pair(k=3)
    with pytest.raises(PosfeatError, match="do not split into token and position parts"):
        activation_histograms(emb, sae, 4)


def test_a_feature_that_never_fires_has_an_empty_histogram():
    emb, sae = random_pair(d_vocab=30, n_ctx=8, d_sae=4, seed=5)
    sae.b_enc.copy_(torch.full((4,), -1e4))
    hist = activation_histograms(emb, sae, 8)
    assert (
        (hist.counts == 0).all() and (hist.firing == 0).all() and (hist.max_activation == 0).all()
    )


def test_a_subnormal_token_part_is_screened_as_the_dense_path_sees_it():
    """Token 0's value on the one feature comes from a float32 subnormal that the bfloat16 GEMM
    flushes: the screen must still count it a candidate (it fires at every position)."""
    from posfeat import SAE, Embeddings

    V = 3000
    W_E = torch.zeros(V, 2)
    W_E[:, 1] = torch.linspace(1.2e-38, 2e-38, V).bfloat16().float()
    W_E[0] = torch.tensor([1.1e-38, 0.0]).bfloat16().float()
    emb = Embeddings(W_E, torch.zeros(4, 2), tokens=[f"t{i}" for i in range(V)], name="m")
    sae = SAE.from_arrays(
        torch.tensor([[2.0**101], [2.0**100]]),
        torch.ones(1, 2),
        torch.zeros(1),
        torch.zeros(2),
        threshold=torch.tensor([2.7e-8]),
        context_size=2,
        hook_name="blocks.0.hook_resid_pre",
        name="s",
    )
    assert sae.encode(W_E[:1]).item() > 0
    for screen in (False, True):
        (st,), _ = grid_statistics(emb, sae, [range(4)], histograms=True, screen=screen)
        assert st.histograms.firing[0] == 4 and st.histograms.top_tokens[0][0] == 0
        assert st.fire[0] == pytest.approx(4 / (V * 4))  # the engine's statistics too


@pytest.mark.parametrize("n_tok, n_pos", [(30, 50), (800, 5), (5, 1), (64, 3)])
def test_counting_inputs_above_each_edge_either_way_round(n_tok, n_pos):
    """Fewer token values than queries (positions x edges): both sides are sorted and walked; more:
    the queries are sorted and each value searched. Ties (values rounded to one decimal), -0.0,
    -inf values (a screened block's padding), infinite and NaN positions and values, an edge below
    every query and one above every value give the brute-force counts of ``a > lower - b`` in
    float32 (a NaN query counts nothing)."""
    g = torch.Generator().manual_seed(n_tok)
    F, E = 9, 6
    a = torch.randn(F, n_tok, generator=g).round(decimals=1)
    b = torch.randn(F, n_pos, generator=g).round(decimals=1)
    lower = torch.randn(F, E, generator=g).round(decimals=1).sort(1).values
    a[0, :3] = -torch.inf
    a[1, 0], a[2, -1] = torch.nan, torch.inf
    a[3] = -torch.inf  # a feature with no candidate
    b[4, 0], b[5, -1], b[6, 0] = torch.inf, -torch.inf, torch.nan
    a[7, ::2], b[7, ::2] = -0.0, 0.0
    lower[8, 0], lower[8, -1] = -1e30, 1e30
    q = lower[:, None, :] - b[:, :, None]  # [F, n_pos, E], float32
    want = (a[:, None, None, :] > q[..., None]).sum((1, 3))
    assert torch.equal(histogram_module._edge_counts(a, b, lower), want)


def test_counting_only_each_rows_live_values_sorting_them_in_place():
    """With ``live`` (the screen's candidates) only ``a[f, :live[f]]`` count, whatever the rest of
    the row holds (here values that would count), a row may have none, and the scratch's live values
    end sorted."""
    g = torch.Generator().manual_seed(11)
    F, n_tok, n_pos, E = 6, 40, 7, 5
    a = torch.randn(F, n_tok, generator=g).round(decimals=1)
    b = torch.randn(F, n_pos, generator=g)
    lower = torch.randn(F, E, generator=g).sort(1).values
    live = np.array([40, 0, 13, 1, 39, 25])
    want = torch.stack(
        [
            (a[f, None, None, : live[f]] > (lower[f, None, :] - b[f, :, None])[..., None]).sum(
                (0, 2)
            )
            for f in range(F)
        ]
    )
    scratch = a.clone()
    for f in range(F):
        scratch[f, live[f] :] = 1e30  # above every query: would count if read
    got = histogram_module._edge_counts(scratch, b, lower, live)
    assert torch.equal(got, want)
    for f in range(F):
        assert torch.equal(scratch[f, : live[f]], a[f, : live[f]].sort().values)


@pytest.mark.skipif(not histogram_module.HAVE_NUMBA, reason="numba's kernel")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_live_values_top_inputs_are_torchs_ranking_with_ties_by_slot(dtype):
    """:func:`_live_tops` (a screened block's top inputs): each row's ``k`` largest live values
    as ``torch.topk`` ranks them (NaN above every number), equal values by slot, a short row padded
    with -inf at slot -1, nothing read past a row's count, and the live values copied for the sort."""
    g = np.random.default_rng(5)
    F, m, k = 7, 50, 10
    vals = g.normal(size=(F, m)).round(1).astype(dtype)  # rounded: ties
    vals[2, [3, 8]] = np.nan
    vals[4, 5] = np.inf
    vals[5, :] = 0.5  # every value tied
    live = np.array([50, 0, 30, 4, 10, 50, 49])
    vals_read = vals.copy()
    for f in range(F):
        vals[f, live[f] :] = 1e30  # above every live value: would rank first if read
    rows = np.full((F, m), -7.0, dtype)
    top_v, top_s = np.empty((F, k), dtype), np.empty((F, k), np.int64)
    histogram_module._live_tops(vals, live, k, rows, top_v, top_s)
    for f in range(F):
        n = live[f]
        row = vals_read[f, :n]
        np.testing.assert_array_equal(rows[f, :n], row)
        assert (rows[f, n:] == -7.0).all()  # past the count: not written
        # torch's ranking, made deterministic: larger first (NaN largest), then the lower slot
        key = np.where(np.isnan(row), np.inf, row)
        order = sorted(range(n), key=lambda j: (-key[j], not np.isnan(row[j]), j))[:k]
        np.testing.assert_array_equal(top_s[f, : len(order)], order)
        np.testing.assert_array_equal(top_v[f, : len(order)], row[order])
        assert (top_v[f, len(order) :] == -np.inf).all() and (top_s[f, len(order) :] == -1).all()
        if n >= k and not np.isnan(row).any():  # the same values as torch.topk's
            want = torch.topk(torch.from_numpy(row.copy()), k).values.numpy()
            np.testing.assert_array_equal(top_v[f], want)
