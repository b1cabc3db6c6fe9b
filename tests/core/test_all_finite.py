"""The weights' finiteness check: a sum first, then value by value where the sum is not finite."""

from __future__ import annotations

import pytest
import torch

from posfeat.core.errors import PosfeatError
from posfeat.core.tensors import all_finite, as_tensor


@pytest.mark.parametrize(
    "values, finite",
    [
        ([1.0, -2.0, 3.5], True),
        ([3e38, 3e38, 3e38], True),  # finite values whose float32 sum overflows
        ([-3e38, -3e38], True),
        ([1.0, float("inf")], False),
        ([float("-inf"), 2.0], False),
        ([float("inf"), float("-inf")], False),  # a NaN sum
        ([float("nan"), 0.0], False),
        ([0.0, -0.0], True),
    ],
)
def test_all_finite(values, finite):
    t = torch.tensor(values, dtype=torch.float32)
    assert all_finite(t) is finite
    assert all_finite(t.double()) is finite


def test_as_tensor_names_the_non_finite_weights():
    with pytest.raises(PosfeatError, match=r"W_E \(shape \(2, 2\)\) has 2 NaN or infinite"):
        as_tensor(torch.tensor([[1.0, float("inf")], [float("-inf"), 0.0]]), "W_E", 2)
    big = as_tensor(torch.full((3, 2), 3e38), "W_E", 2)  # their sum overflows; they are finite
    assert big.shape == (3, 2)
