"""SampleGrid's per-token means and DeviationSums (the semantic spread) against enumerating every
input."""

from __future__ import annotations

import pytest
import torch

import posfeat.engine.sample as sample_mod
from posfeat.engine.sample import DeviationSums, SampleGrid

from helpers import random_pair


def _enumerated(emb, sae, tokens, positions):
    """``[n_tok, n_pos, d_sae]`` float64: the SAE applied to every input."""
    x = emb.W_E[tokens][:, None, :] + emb.W_pos[positions][None]
    return sae.encode(x).double()


@pytest.mark.parametrize("numba_path", [True, False])
@pytest.mark.parametrize("threshold", [False, True])
def test_token_means_and_deviation_sums_equal_enumeration(monkeypatch, numba_path, threshold):
    if not numba_path:
        monkeypatch.setattr(sample_mod, "HAVE_NUMBA", False)
    elif not sample_mod.HAVE_NUMBA:
        pytest.skip("numba is not installed")
    emb, sae = random_pair(d_vocab=30, n_ctx=40, d_model=10, d_sae=50, threshold=threshold, seed=7)
    tokens = torch.tensor([2, 2, 9, 0, 29, 17, 5, 5, 5, 11])  # repeated tokens too
    context, feats = 16, torch.tensor([0, 3, 4, 10, 22, 31, 49])
    grid = SampleGrid(emb, sae, tokens)
    f_all = _enumerated(emb, sae, tokens, torch.arange(40))[..., feats]  # [T, P, F]
    m = f_all[:, :context].mean(1)  # [T, F]: each token's mean over the context
    torch.testing.assert_close(
        grid.token_means(torch.arange(context), feats), m, rtol=1e-5, atol=1e-6
    )  # float32 encoding
    dev = DeviationSums(grid, context, feats)
    assert dev.fused == (numba_path and not threshold)
    positions = torch.arange(40)
    want = (f_all - m[:, None, :]).abs().sum((0, 2))
    got = torch.cat(
        [dev(chunk) for chunk in grid.chunks(positions, step=15)]
    )  # 3 chunks, the last one short
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_numba_and_torch_paths_agree(monkeypatch):
    if not sample_mod.HAVE_NUMBA:
        pytest.skip("numba is not installed")
    emb, sae = random_pair(d_vocab=200, n_ctx=90, d_model=16, d_sae=120, seed=11)
    tokens = torch.randint(0, 200, (150,), generator=torch.Generator().manual_seed(0))
    feats, positions = torch.arange(3, 120, 2), torch.arange(90)

    def spread() -> tuple[torch.Tensor, torch.Tensor]:
        grid = SampleGrid(emb, sae, tokens)
        dev = DeviationSums(grid, 30, feats)
        return dev.m, torch.cat([dev(chunk) for chunk in grid.chunks(positions, step=40)])

    m_fused, got = spread()
    monkeypatch.setattr(sample_mod, "HAVE_NUMBA", False)
    m_torch, want = spread()
    torch.testing.assert_close(m_fused, m_torch, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("numba_path", [True, False])
@pytest.mark.parametrize("threshold", [False, True])
def test_firing_pairs_equal_enumeration(monkeypatch, numba_path, threshold):
    """The deviation over the (token, feature) pairs that fire inside the context, numba's kernel
    and the torch path, against every input enumerated; then a sample of the pairs (``max_pairs``)
    agrees between the two paths."""
    if not numba_path:
        monkeypatch.setattr(sample_mod, "HAVE_NUMBA", False)
    elif not sample_mod.HAVE_NUMBA:
        pytest.skip("numba is not installed")
    emb, sae = random_pair(d_vocab=30, n_ctx=40, d_model=10, d_sae=50, threshold=threshold, seed=8)
    tokens = torch.tensor([2, 2, 9, 0, 29, 17, 5, 5, 5, 11])
    context, feats = 16, torch.tensor([0, 3, 4, 10, 22, 31, 49])
    grid = SampleGrid(emb, sae, tokens)
    f_all = _enumerated(emb, sae, tokens, torch.arange(40))[..., feats]  # [T, P, F]
    m = f_all[:, :context].mean(1)
    fires = m > 0
    assert fires.any() and not fires.all()
    want = ((f_all - m[:, None, :]).abs() * fires[:, None, :]).sum((0, 2))
    dev = DeviationSums(grid, context, feats)
    parts = [dev.firing_pairs(chunk) for chunk in grid.chunks(torch.arange(40), step=15)]
    torch.testing.assert_close(torch.cat([p[0] for p in parts]), want, rtol=1e-5, atol=1e-5)
    assert parts[0][1] == pytest.approx(float(m[fires].sum()), rel=1e-5)


def test_firing_pairs_numba_and_torch_agree_on_a_drawn_subset(monkeypatch):
    if not sample_mod.HAVE_NUMBA:
        pytest.skip("numba is not installed")
    emb, sae = random_pair(d_vocab=200, n_ctx=90, d_model=16, d_sae=120, seed=12)
    tokens = torch.randint(0, 200, (150,), generator=torch.Generator().manual_seed(1))
    feats = torch.arange(3, 120, 2)

    def pairs() -> tuple[torch.Tensor, float]:
        grid = SampleGrid(emb, sae, tokens)
        dev = DeviationSums(grid, 30, feats)
        got = [dev.firing_pairs(c, max_pairs=500, seed=3) for c in grid.chunks(torch.arange(90))]
        return torch.cat([g[0] for g in got]), got[0][1]

    fused, total = pairs()
    monkeypatch.setattr(sample_mod, "HAVE_NUMBA", False)
    plain, total_plain = pairs()
    torch.testing.assert_close(fused, plain, rtol=1e-10, atol=1e-10)
    assert total == total_plain


def test_sorted_columns_sort_stably_by_row_on_either_path():
    """The CPU's float32 path (a sort of 64-bit keys) and torch's (here on float64) give the same
    order: ascending values, ties by row, -0.0 equal to 0.0, infinities at the ends, NaNs of either
    sign after them by row; the values keep their bits."""
    from posfeat.engine.sample import _sorted_columns

    g = torch.Generator().manual_seed(4)
    a = torch.randn(300, 70, generator=g)
    a[150:250] = a[0:100]  # tied rows (a sample drawn with replacement)
    a[5, :10], a[7, :10] = -0.0, 0.0
    a[9, :3], a[11, :3] = torch.inf, -torch.inf
    a[13, :3], a[15, :3] = torch.nan, -torch.nan  # both signs of NaN: last, by row, as torch
    a[17, :3] = torch.tensor(-1.0).log()  # the NaN an invalid operation makes (negative on x86)
    v, o = _sorted_columns(a, step=32)  # blocks of 32 columns: a partial last one
    want_v, want_o = a.T.contiguous().sort(dim=1, stable=True)
    assert o.dtype == torch.int16
    assert torch.equal(o.long(), want_o)
    assert torch.equal(v.view(torch.int32), want_v.view(torch.int32))
    v64, o64 = _sorted_columns(a.double(), step=32)
    assert torch.equal(o64, o)
    assert torch.equal(v64.float().nan_to_num(7.0), v.nan_to_num(7.0))


def test_all_positions_at_once_equal_chunk_by_chunk():
    """numba's deviation and pair kernels over every position at once (how the reconstruction calls
    them) give the chunk-by-chunk sums bit for bit, and both equal enumerating every input."""
    if not sample_mod.HAVE_NUMBA:
        pytest.skip("numba is not installed")
    emb, sae = random_pair(d_vocab=60, n_ctx=50, d_model=10, d_sae=70, seed=13)
    tokens = torch.randint(0, 60, (40,), generator=torch.Generator().manual_seed(2))
    context, feats, positions = 20, torch.arange(1, 70, 3), torch.arange(50)
    grid = SampleGrid(emb, sae, tokens)
    dev = DeviationSums(grid, context, feats)
    assert dev.fused
    chunks = list(grid.chunks(positions, step=16))
    rows = dev.rows(grid.position_parts(positions))
    assert rows.shape == (len(feats), 50)
    assert torch.equal(dev.spread_at(rows), torch.cat([dev(c) for c in chunks]))
    whole, total = dev.pairs_at(rows)
    per = [dev.firing_pairs(c) for c in chunks]
    assert torch.equal(whole, torch.cat([p[0] for p in per])) and total == per[0][1]
    f_all = _enumerated(emb, sae, tokens, positions)[..., feats]
    m = f_all[:, :context].mean(1)
    want = (f_all - m[:, None, :]).abs().sum((0, 2))
    torch.testing.assert_close(dev.spread_at(rows), want, rtol=1e-5, atol=1e-5)
    fires = m > 0
    assert fires.any() and not fires.all()
    want_pairs = ((f_all - m[:, None, :]).abs() * fires[:, None, :]).sum((0, 2))
    torch.testing.assert_close(whole, want_pairs, rtol=1e-5, atol=1e-5)


def test_the_closed_form_counts_itself_when_a_chunk_leaves_them_undone(monkeypatch):
    """A chunk of the fused reconstruction carries no non-firing counts (``first`` None): the torch
    closed form (here forced, numba or not) makes them for its features and gives the same sums."""
    emb, sae = random_pair(d_vocab=40, n_ctx=30, d_model=8, d_sae=24, seed=21)
    tokens = torch.randint(0, 40, (25,), generator=torch.Generator().manual_seed(3))
    monkeypatch.setattr(sample_mod, "HAVE_NUMBA", False)
    grid = SampleGrid(emb, sae, tokens)
    dev = DeviationSums(grid, 12, torch.arange(0, 24, 2))
    assert dev.closed and not dev.fused
    for chunk in grid.chunks(torch.arange(30), step=10):
        bare = sample_mod.Chunk(
            chunk.positions, chunk.x, chunk.x_hat, chunk.b, None, chunk.l0, None
        )
        assert torch.equal(dev(bare), dev(chunk))
