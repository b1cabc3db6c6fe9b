"""Reconstruction over a token sample at every position: enumeration, reusing the additive parts.

What does not decompose feature by feature (the reconstruction mixes all features) is computed by
enumerating a stated, seeded sample of tokens at every position. The encoder is never applied
to an input: ``pre[t, p] = a[t] + b[p]`` from :func:`posfeat.grid_stats.additive_parts`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from .embeddings import Embeddings
from .errors import PosfeatError
from .grid_stats import additive_parts
from .sae import SAE


@dataclass
class TokenSample:
    """A seeded sample of token ids, and how it was drawn (recorded in every result)."""

    ids: torch.Tensor  # Int[Tensor, "n"]
    how: str

    def __len__(self) -> int:
        return int(self.ids.numel())


def sample_tokens(emb: Embeddings, n: int, *, weights: torch.Tensor | None = None, seed: int = 0) -> TokenSample:
    """``n`` token ids: drawn with replacement from ``weights`` when given, else uniformly without replacement."""
    if n <= 0:
        raise PosfeatError(f"The token sample size is {n}; give a positive number of tokens.")
    gen = torch.Generator().manual_seed(seed)
    if weights is not None:
        w = torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
        if w.numel() != emb.d_vocab:
            raise PosfeatError(f"Token weights have {w.numel()} entries but the model has {emb.d_vocab} tokens; give one per token id.")
        ids = torch.multinomial(w.float() / float(w.sum()), n, replacement=True, generator=gen)
        return TokenSample(ids, f"{n} tokens drawn with replacement from token weights (seed {seed})")
    if n >= emb.d_vocab:
        return TokenSample(torch.arange(emb.d_vocab), f"all {emb.d_vocab} tokens")
    ids = torch.randperm(emb.d_vocab, generator=gen)[:n].sort().values
    return TokenSample(ids, f"{n} tokens drawn uniformly without replacement (seed {seed})")


def decode(sae: SAE, f: torch.Tensor, max_density: float = 0.02) -> torch.Tensor:
    """``sae.decode(f)`` (``f: [..., d_sae]`` -> ``[..., d_model]``), through a sparse product on CPU
    when at most ``max_density`` of the activations are non-zero (layer-0 SAEs have L0 << d_sae)."""
    if f.device.type != "cpu" or f.numel() == 0:
        return sae.decode(f)
    flat = f.reshape(-1, f.shape[-1])
    if int(torch.count_nonzero(flat)) > max_density * flat.numel():
        return sae.decode(f)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        out = flat.to_sparse_csr() @ sae.W_dec.to(flat.dtype)
    return (out + sae.b_dec.to(out.dtype)).reshape(*f.shape[:-1], sae.d_in)


def enumerate_activations(
    emb: Embeddings, sae: SAE, tokens: torch.Tensor, positions: torch.Tensor, *, device: str = "cpu", max_elems: int = 40_000_000,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield ``(pos_chunk, x, f)`` over chunks of positions, with no decoding.

    ``x: Float[Tensor, "n_tok n_chunk d_model"]``, ``f: Float[Tensor, "n_tok n_chunk d_sae"]``.
    """
    a, b = additive_parts(emb, sae, tokens, positions, device)
    W_E = emb.W_E[tokens].to(device)
    W_pos = emb.W_pos[positions].to(device)
    step = max(1, max_elems // max(1, len(tokens) * sae.d_sae))
    for i in range(0, len(positions), step):
        sl = slice(i, i + step)
        yield positions[sl], W_E[:, None, :] + W_pos[None, sl, :], sae.activate(a[:, None, :] + b[None, sl, :])


def enumerate_reconstructions(
    emb: Embeddings, sae: SAE, tokens: torch.Tensor, positions: torch.Tensor, *, device: str = "cpu", max_elems: int = 40_000_000,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield ``(pos_chunk, x, f, x_hat)`` over chunks of positions.

    ``x, x_hat: Float[Tensor, "n_tok n_chunk d_model"]``, ``f: Float[Tensor, "n_tok n_chunk d_sae"]``.
    """
    for pc, x, f in enumerate_activations(emb, sae, tokens, positions, device=device, max_elems=max_elems):
        yield pc, x, f, decode(sae, f)
