"""The fused CPU reconstruction kernel against the SAE applied to every input, and against the torch
path it replaces."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import posfeat.analyses.evaluation as evaluation
from posfeat.analyses.evaluation import chunk_sums
from posfeat.engine.sample import SampleGrid

from helpers import random_pair


def _sums(grid, positions, pos_feats, P):
    parts = list(chunk_sums(grid, positions, pos_feats, P))
    cat = {
        k: torch.cat([getattr(s, k) for s in parts], dim=1 if k in ("ee", "xx", "hh") else 0)
        for k in ("ee", "xx", "hh", "l0", "pc", "r_sq", "r_sum")
    }
    return cat, parts


def _direct(emb, sae, tokens, positions, pos_feats, P):
    """The sums from the SAE applied to every input, in float64."""
    x = (emb.W_E[tokens][:, None, :] + emb.W_pos[positions][None]).double()  # [T, P, d]
    f = sae.encode(x.float()).double()
    x_hat = f @ sae.W_dec.double() + sae.b_dec.double()
    err = x - x_hat
    is_pos = torch.zeros(sae.d_sae, dtype=torch.bool)
    is_pos[pos_feats] = True
    r = (
        x
        - x_hat
        + f[..., is_pos] @ sae.W_dec[is_pos].double()
        - emb.W_pos[positions].double()[None]
    )
    return {
        "ee": err.pow(2).sum(-1),
        "xx": x.pow(2).sum(-1),
        "hh": x_hat.pow(2).sum(-1),
        "l0": (f > 0).double().sum(-1).mean(0),
        "pc": (err @ P.double().T).pow(2).sum(-1).sum(0),
        "r_sq": r.pow(2).sum(-1).sum(0),
        "r_sum": r.sum(0),
    }


@pytest.mark.parametrize("threshold", [False, True])
def test_fused_sums_equal_the_encoder_applied_to_every_input(threshold):
    emb, sae = random_pair(
        d_vocab=37, n_ctx=70, d_model=12, d_sae=90, threshold=threshold, seed=5
    )  # 70 positions: 2 blocks on 2 threads
    tokens = torch.tensor([3, 3, 0, 36, 17, 8, 21])  # a repeated token too
    pos_feats = torch.tensor([1, 5, 6, 40, 89])
    P = torch.linalg.qr(torch.randn(12, 3, generator=torch.Generator().manual_seed(0)))[
        0
    ].T.contiguous()
    grid = SampleGrid(emb, sae, tokens)
    assert evaluation.fused(grid)
    got, parts = _sums(grid, torch.arange(70), pos_feats, P)
    assert all(s.chunk.x.numel() == 0 for s in parts)  # nothing of size d_model per input was kept
    for k, v in _direct(emb, sae, tokens, torch.arange(70), pos_feats, P).items():
        torch.testing.assert_close(got[k], v, rtol=2e-5, atol=2e-5, msg=k)
    assert all(s.chunk.first is None for s in parts)  # the fused path leaves the counts undone
    counts = torch.cat([(len(tokens) - grid.first_firing(s.chunk.b)).sum(0) for s in parts])
    np.testing.assert_array_equal(
        got["l0"].numpy(), counts.double().numpy() / len(tokens)
    )  # L0 = the searchsorted counts, exactly


@pytest.mark.parametrize("n_pcs", [0, 1, 5])
def test_fused_sums_with_repeated_tokens_over_several_chunks(monkeypatch, n_pcs):
    """A sample drawn with replacement (each distinct token computed once, its sums weighted by its
    draws), positions over several calls of the kernel and blocks that do not divide them, and any
    number of directions (the kernel unrolls three)."""
    monkeypatch.setattr(evaluation, "CHUNK_POSITIONS", 100)
    emb, sae = random_pair(d_vocab=9, n_ctx=300, d_model=19, d_sae=70, seed=3)
    tokens = torch.tensor([4, 4, 4, 0, 8, 4, 0, 2, 8, 8, 4])
    positions = torch.cat(
        [torch.arange(250, 300), torch.arange(0, 141, 2)]
    )  # not sorted, not contiguous: 121 positions
    pos_feats = torch.tensor([2, 3, 50])
    P = (
        torch.linalg.qr(torch.randn(19, 5, generator=torch.Generator().manual_seed(1)))[0]
        .T[:n_pcs]
        .contiguous()
    )
    grid = SampleGrid(emb, sae, tokens)
    got, parts = _sums(grid, positions, pos_feats, P)
    assert len(parts) == 2
    for k, v in _direct(
        emb, sae, tokens, positions, pos_feats, P
    ).items():  # past its context this SAE decodes to ~1000x |x|:
        torch.testing.assert_close(
            got[k], v, rtol=2e-5, atol=1e-6 * float(v.abs().max()), msg=k
        )  # float32 decoding's error scales with it
    assert torch.equal(got["ee"][0], got["ee"][1]) and torch.equal(
        got["ee"][0], got["ee"][5]
    )  # the same token, the same numbers


def test_fused_and_torch_paths_agree(monkeypatch):
    emb, sae = random_pair(d_vocab=50, n_ctx=40, d_model=16, d_sae=64, seed=1)
    tokens = torch.arange(50)
    pos_feats = torch.tensor([0, 7, 9])
    P = torch.eye(16)[:3].contiguous()
    fused, _ = _sums(SampleGrid(emb, sae, tokens), torch.arange(40), pos_feats, P)
    monkeypatch.setattr(evaluation, "fused", lambda grid: False)
    plain, _ = _sums(SampleGrid(emb, sae, tokens), torch.arange(40), pos_feats, P)
    for k in fused:
        torch.testing.assert_close(
            fused[k], plain[k], rtol=1e-4, atol=1e-4, msg=k
        )  # the torch path: float32 norms
    torch.testing.assert_close(fused["l0"], plain["l0"], rtol=0, atol=0)
