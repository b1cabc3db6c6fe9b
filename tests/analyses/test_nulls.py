"""The random dictionary's token-profile statistic: its standard deviations by the numba kernel are
torch's."""

from __future__ import annotations

import pytest
import torch

from posfeat.analyses import nulls


@pytest.mark.skipif(not nulls.HAVE_NUMBA, reason="the kernel is numba's")
def test_the_profile_std_kernel_gives_torchs_std_bit_for_bit():
    """Two passes in float64 round to the float32 torch's Welford (float64) gives: on Gaussian
    parts, features that never fire (zero), fire everywhere, or at one position; a bias that
    makes the float32 sums large."""
    g = torch.Generator().manual_seed(2)
    a = torch.randn(192, 128, generator=g)
    b = torch.randn(128, 128, generator=g)
    a[:, 0] = -50.0  # never fires: std 0
    a[:, 1] = 50.0  # fires everywhere: the positional spread alone
    b[:, 2] = -50.0
    b[7, 2] = 60.0  # fires at one position
    a[:, 3] += 1e4  # large values, small spread
    act = (a[:, None, :] + b[None, :, :]).relu_()
    want = act.std(1, unbiased=False)
    got = nulls._profile_std(a, b, act)
    assert got.dtype == torch.float32 and got.shape == want.shape
    assert torch.equal(got, want)
    assert float(got[:, 0].abs().max()) == 0.0 and float(got[:, 2].min()) > 0.0
