"""The exact top and bottom entries of each row of ``W @ X^T`` through a bfloat16 screen
(engine/extremes.py; the logit effects of the report's feature cards), held to the whole float32
product, including rows whose band of uncertainty holds more entries than the screen recomputes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from posfeat.engine import extremes
from posfeat.engine.screen import ScreenInputs


def _full(W: torch.Tensor, X: torch.Tensor, k: int) -> list[torch.Tensor]:
    prod = (W.double() @ X.double().T).float()
    return [
        torch.topk(prod, k, dim=1).indices,
        torch.topk(prod, k, dim=1).values,
        torch.topk(prod, k, dim=1, largest=False).indices,
        torch.topk(prod, k, dim=1, largest=False).values,
    ]


def _agree(got: list[torch.Tensor], want: list[torch.Tensor], atol: float = 1e-6) -> None:
    for g, w in zip(got, want):
        if g.dtype.is_floating_point:  # to float32 rounding
            np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-6, atol=atol)
        else:
            np.testing.assert_array_equal(g.numpy(), w.numpy())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_screen_gives_the_float32_products_extremes(seed):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(3000, 48, generator=g) * torch.rand(3000, 1, generator=g) * 3
    W = torch.randn(40, 48, generator=g)
    got, full_rows = extremes.screened(W, X, 10)
    assert full_rows < len(W)  # the screen decided most rows on its own
    _agree(got, _full(W, X, 10))


def test_a_row_the_screen_cannot_rank_gets_its_whole_product():
    """300 entries of a row closer together than bfloat16 can tell apart (but not float32): the
    screen's 64 candidates cannot be trusted to hold the row's 10 largest, so the row takes the
    whole product and is still exact. Taking the screen's candidates there would miss some."""
    g = torch.Generator().manual_seed(3)
    X = torch.randn(3000, 16, generator=g) * 0.1
    w = torch.zeros(16)
    w[0] = 1.0
    X[:300, 0] = 5.0 + torch.arange(300) * 1e-5  # one bfloat16 value, 300 float32 values
    X[:300, 1:] = 0.0
    W = torch.stack([w, torch.randn(16, generator=g)])
    got, full_rows = extremes.screened(W, X, 10)
    assert full_rows >= 1
    _agree(got, _full(W, X, 10))
    assert set(got[0][0].tolist()) == set(range(290, 300))


def test_the_screen_is_used_only_where_it_pays(monkeypatch):
    small = torch.randn(extremes.SCREEN_MIN_VOCAB - 1, 8)
    monkeypatch.setattr(extremes, "bf16_fast", lambda: True)
    assert extremes.screen_tokens(small) is None  # below the smallest vocabulary screened
    big = torch.randn(extremes.SCREEN_MIN_VOCAB, 8)
    monkeypatch.setattr(extremes, "bf16_fast", lambda: False)
    assert extremes.screen_tokens(big) is None  # no native bfloat16: the float32 product
    monkeypatch.setattr(extremes, "bf16_fast", lambda: True)
    tok = extremes.screen_tokens(big)
    assert tok is not None and torch.equal(tok["x"], big)
    W = torch.randn(5, 8)
    _agree(extremes.extremes(W, big, 3, tok), _full(W, big, 3))
    _agree(extremes.extremes(W, big, 3, None), _full(W, big, 3))
    assert ScreenInputs.tokens(big)["x_bf"].dtype == torch.bfloat16


def test_subnormal_inputs_the_bfloat16_gemm_flushes_are_in_the_bound():
    """The CPU's bfloat16 GEMM treats subnormal inputs as zero: the bound counts what that loses,
    so a row whose largest entry comes from a subnormal input is not settled by the screen (found by
    a review that built it)."""
    X = torch.zeros(3000, 2)
    X[:, 1] = torch.linspace(1.2e-38, 1.5e-38, 3000).bfloat16().float()
    X[:10, 1] = 2e-38
    X[10:20, 1] = -2e-38
    X[20] = torch.tensor([1.1e-38, 0.0]).bfloat16().float()  # a float32 subnormal
    W = torch.tensor([[2.0**101, 2.0**100]])
    got, _ = extremes.screened(W, X, 10)
    full = extremes._full(W, X, 10)
    assert got[0][0, 0] == full[0][0, 0] == 20
    np.testing.assert_array_equal(got[1].numpy(), full[1].numpy())  # tokens 0-9 tie: any 9 of them
    np.testing.assert_array_equal(got[3].numpy(), full[3].numpy())


def test_one_token_of_unusual_norm_does_not_send_every_row_to_the_whole_product():
    """Its rounding terms would widen every row's band; it is recomputed in every row instead."""
    g = torch.Generator().manual_seed(4)
    X = torch.randn(8000, 64, generator=g)
    X[7] *= 100
    W = torch.randn(50, 64, generator=g)
    got, full_rows = extremes.screened(W, X, 10)
    assert full_rows <= 5
    _agree(got, _full(W, X, 10), atol=1e-3)  # one float32 rounding of sums of terms up to 1e3


def _topk_reference(approx: torch.Tensor, K: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [
        (lambda t: (t.indices, t.values[:, -1].float()))(
            torch.topk(approx, K, dim=1, largest=largest)
        )
        for largest in (True, False)
    ]


def _same_selection(got, want, approx: torch.Tensor) -> None:
    """The same K-th values, and columns whose values are the row's K most extreme (ties may pick
    other columns of the same value)."""
    for (gi, gk), (wi, wk) in zip(got, want):
        assert torch.equal(gk, wk)
        gv = approx.float().gather(1, gi).sort(dim=1).values
        wv = approx.float().gather(1, wi).sort(dim=1).values
        assert torch.equal(gv, wv)
        assert all(len(set(r.tolist())) == gi.shape[1] for r in gi)  # no column twice


@pytest.mark.skipif(not extremes.HAVE_NUMBA, reason="the selection kernel is numba's")
def test_the_selection_kernel_finds_each_rows_most_extreme_entries():
    """The kernel reads the product token-major (a feature per column), 32 columns per work item
    here: 70 features leave a partial one."""
    g = torch.Generator().manual_seed(5)
    F = 70
    approx = (torch.randn(F, 5000, generator=g) * torch.rand(F, 1, generator=g)).bfloat16()
    approx[3] = 0.0  # a constant row: every entry ties (more than CAP candidates)
    # the sample sees only large entries, the bar is among them: too few candidates beyond it
    approx[68, :: extremes.STRIDE] = (50 + torch.arange(5000 // extremes.STRIDE)).bfloat16()
    K = 64
    by_token = approx.T.contiguous()  # [V, F]
    bits = by_token.view(torch.int16).numpy().view(np.uint16)
    ih, il = np.empty((F, K), np.int32), np.empty((F, K), np.int32)
    kh, kl = np.empty(F, np.float32), np.empty(F, np.float32)
    ok = np.empty(F, np.bool_)
    extremes._select_kernel(bits, K, 32, ih, kh, il, kl, ok)
    assert not ok[3] and not ok[68] and ok.sum() == F - 2  # left to torch.topk
    rows = torch.from_numpy(np.nonzero(ok)[0])
    _same_selection(
        [
            (torch.from_numpy(ih).long()[rows], torch.from_numpy(kh)[rows]),
            (torch.from_numpy(il).long()[rows], torch.from_numpy(kl)[rows]),
        ],
        _topk_reference(approx[rows], K),
        approx[rows],
    )
    _same_selection(
        [(i.long(), v) for i, v in extremes._most_extreme(by_token, K)],
        _topk_reference(approx, K),
        approx,
    )


@pytest.mark.skipif(not extremes.HAVE_NUMBA, reason="the exact kernel is numba's")
def test_the_exact_kernel_gives_each_candidates_dot_product():
    g = torch.Generator().manual_seed(6)
    X, W = torch.randn(500, 40, generator=g), torch.randn(30, 40, generator=g)
    idx = torch.randint(0, 500, (30, 7), generator=g)  # K not a multiple of 4
    want = torch.einsum("rkd,rd->rk", X.double()[idx], W.double()).float()
    np.testing.assert_allclose(
        extremes._exact(X, W, idx).numpy(), want.numpy(), rtol=1e-5, atol=1e-5
    )


@pytest.mark.skipif(not extremes.HAVE_NUMBA, reason="the exact kernel is numba's")
def test_an_infinite_token_row_spoils_only_its_own_dot_product():
    """Four tokens share one read of the feature's row: an infinite entry in one of them gives inf
    for it and leaves the other three exact (found by a review: their sums started from it)."""
    X = torch.ones(8, 4)
    X[0, 0] = torch.inf
    got = extremes._exact(X, torch.ones(1, 4), torch.tensor([[0, 1, 2, 3, 4]]))
    assert got.tolist() == [[float("inf"), 4.0, 4.0, 4.0, 4.0]]
