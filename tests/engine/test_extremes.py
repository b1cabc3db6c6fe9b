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


def _agree(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    for g, w in zip(got, want):
        if g.dtype.is_floating_point:
            np.testing.assert_allclose(
                g.numpy(), w.numpy(), rtol=1e-6, atol=1e-6
            )  # float32 rounding
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
    small = torch.randn(100, 8)
    assert extremes.screen_tokens(small) is None  # a vocabulary of a few SCREEN_K
    big = torch.randn(16 * extremes.SCREEN_K, 8)
    monkeypatch.setattr(extremes, "bf16_fast", lambda: False)
    assert extremes.screen_tokens(big) is None  # no native bfloat16: the float32 product
    monkeypatch.setattr(extremes, "bf16_fast", lambda: True)
    tok = extremes.screen_tokens(big)
    assert tok is not None and torch.equal(tok["x"], big)
    W = torch.randn(5, 8)
    _agree(extremes.extremes(W, big, 3, tok), _full(W, big, 3))
    _agree(extremes.extremes(W, big, 3, None), _full(W, big, 3))
    assert ScreenInputs.tokens(big)["x_bf"].dtype == torch.bfloat16
