"""Shared fixtures: tiny random instances and paths to shared data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from posfeat import SAE, Embeddings

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
GPT2_WPE = SHARED_DATA / "gpt2_wpe_rows0-63.npy"


def random_pair(d_vocab: int = 40, n_ctx: int = 12, d_model: int = 8, d_sae: int = 16, seed: int = 0,
                threshold: bool = False, k: int | None = None) -> tuple[Embeddings, SAE]:
    g = torch.Generator().manual_seed(seed)
    emb = Embeddings(torch.randn(d_vocab, d_model, generator=g), torch.randn(n_ctx, d_model, generator=g) * 0.7,
                     tokens=[f"tok{i}" for i in range(d_vocab)], name="random")
    sae = SAE.from_arrays(
        torch.randn(d_model, d_sae, generator=g), torch.randn(d_sae, d_model, generator=g), torch.randn(d_sae, generator=g) - 0.5,
        torch.randn(d_model, generator=g) * 0.1, threshold=torch.rand(d_sae, generator=g) if threshold else None, k=k,
        context_size=max(1, n_ctx // 2), hook_name="blocks.0.hook_resid_pre", name="random-sae",
    )
    return emb, sae


@pytest.fixture
def tiny() -> tuple[Embeddings, SAE]:
    return random_pair()


def planted_pair(n_ctx: int = 48, context: int = 32, n_tok: int = 60, d_model: int = 24, seed: int = 0):
    """A synthetic model with a helix-shaped W_pos and random W_E orthogonal to it, and an SAE with
    known positional features (each tuned to a window of positions) and known token features.

    Returns ``emb, sae, truth`` where ``truth`` maps feature -> ("positional", (start, end)) or ("semantic", token).
    """
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(d_model, d_model)))
    e_pos, e_tok = q[:, :3], q[:, 3:]  # W_pos lives in 3 dims, W_E in the rest
    p = np.arange(n_ctx)
    theta = 2 * np.pi * p / (1.6 * context)
    helix = np.stack([np.cos(theta), np.sin(theta), p / context], 1)  # [n_ctx, 3]
    W_pos = helix @ e_pos.T
    W_E = rng.normal(size=(n_tok, d_model - 3)) @ e_tok.T
    enc, dec, bias, truth = [], [], [], {}
    # positional features: direction = W_pos row at the window centre; bias puts the window at
    # the positions whose cosine with the centre row exceeds a cut.
    Wp_n = W_pos / np.linalg.norm(W_pos, axis=1, keepdims=True)
    for centre in (2, 8, 14, 20, 26):
        d = Wp_n[centre]
        proj = W_pos[:context] @ d
        cut = np.sort(proj)[-5]  # fires on the 5 highest-projection positions within the context
        mid = (np.sort(proj)[-5] + np.sort(proj)[-6]) / 2
        enc.append(d)
        dec.append(d)
        bias.append(-mid)
        window = np.nonzero(proj >= cut)[0]
        truth[len(enc) - 1] = ("positional", (int(window.min()), int(window.max())))
    # token features: direction = one token's embedding (orthogonal to positions)
    for t in (3, 17, 41):
        d = W_E[t] / np.linalg.norm(W_E[t])
        proj = W_E @ d
        second = np.sort(proj)[-2]
        enc.append(d)
        dec.append(d)
        bias.append(-(proj[t] + second) / 2)
        truth[len(enc) - 1] = ("semantic", t)
    emb = Embeddings(W_E.astype(np.float32), W_pos.astype(np.float32), tokens=[f"t{i}" for i in range(n_tok)], name="planted")
    sae = SAE.from_arrays(np.array(enc).T.astype(np.float32), np.array(dec).astype(np.float32), np.array(bias, dtype=np.float32),
                          np.zeros(d_model, dtype=np.float32), apply_b_dec_to_input=False, context_size=context,
                          hook_name="blocks.0.hook_resid_pre", name="planted-sae")
    return emb, sae, truth
