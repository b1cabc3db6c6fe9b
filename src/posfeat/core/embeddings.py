"""The layer-0 input of a transformer with learned absolute positional embeddings.

At layer 0 the residual stream is exactly ``W_E[token] + W_pos[position]``, so the pair of
matrices *is* the whole input distribution: the grid of ``d_vocab x n_ctx`` sums.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float, Int

from .errors import PosfeatError
from .tensors import as_tensor, resolve_device, same_device


class Embeddings:
    """Token and positional embeddings of one model, on one device.

    Attributes:
        W_E: ``Float[Tensor, "d_vocab d_model"]`` token embedding (float32). For BERT-style
            encoders the token-type-0 row is already added to every row.
        W_pos: ``Float[Tensor, "n_ctx d_model"]`` learned positional embedding; row ``p`` is
            position ``p`` (OPT's offset of 2 is already removed).
        tokens: readable token strings, ``len(tokens) == d_vocab``, or None.
        name: the model's name, used to label every result.
        centered: True when each row had its mean over d_model subtracted
            (TransformerLens ``center_writing_weights``).
        info: where the tensors came from (source, tensor names, offsets), for the record.
    """

    def __init__(
        self,
        W_E: Any,
        W_pos: Any,
        tokens: Sequence[str] | None = None,
        name: str = "",
        centered: bool = False,
        info: dict[str, Any] | None = None,
    ) -> None:
        self.W_E: Float[torch.Tensor, "d_vocab d_model"] = as_tensor(W_E, "W_E", 2)
        self.W_pos: Float[torch.Tensor, "n_ctx d_model"] = as_tensor(W_pos, "W_pos", 2)
        if self.W_E.shape[0] == 0 or self.W_pos.shape[0] == 0 or self.W_E.shape[1] == 0:
            raise PosfeatError(
                f"W_E {tuple(self.W_E.shape)} and W_pos {tuple(self.W_pos.shape)} must be "
                "non-empty."
            )
        if self.W_E.shape[1] != self.W_pos.shape[1]:
            raise PosfeatError(
                f"W_E has d_model {self.W_E.shape[1]} (shape {tuple(self.W_E.shape)}) but W_pos has "
                f"d_model {self.W_pos.shape[1]} (shape {tuple(self.W_pos.shape)}); they must match."
            )
        same_device(self.W_E, self.W_pos)
        if tokens is not None:
            tokens = [str(t) for t in tokens]
            if len(tokens) != self.W_E.shape[0]:
                raise PosfeatError(
                    f"tokens has {len(tokens)} entries but W_E has {self.W_E.shape[0]} rows; pass "
                    "one string per token."
                )
        self.tokens: list[str] | None = tokens
        self.name = name
        self.centered = bool(centered)
        self.info: dict[str, Any] = dict(info or {})
        self._index_cache: dict[str, int] | None = None

    @property
    def d_vocab(self) -> int:
        return int(self.W_E.shape[0])

    @property
    def n_ctx(self) -> int:
        return int(self.W_pos.shape[0])

    @property
    def d_model(self) -> int:
        return int(self.W_E.shape[1])

    @property
    def device(self) -> torch.device:
        """Where the tensors live; engine and analyses compute there."""
        return self.W_E.device

    def to(self, device: str | torch.device) -> Embeddings:
        """A copy on ``device`` (``"auto"``, ``"cpu"``, ``"cuda"``); ``self`` when already there."""
        dev = resolve_device(device)
        if dev == self.device:
            return self
        return Embeddings(
            self.W_E.to(dev), self.W_pos.to(dev), self.tokens, self.name, self.centered, self.info
        )

    def token_str(self, t: int) -> str:
        """Readable string of token id ``t`` (``"<t>"`` when no tokenizer is known)."""
        return self.tokens[t] if self.tokens is not None else f"<{t}>"

    def token_id(self, s: str) -> int:
        """Id of the token whose readable string is ``s`` (exact match, then stripped match, then an
        id)."""
        if self.tokens is not None:
            for candidate in (s, " " + s.strip(), s.strip()):
                if candidate in self._index:
                    return self._index[candidate]
        if s.isascii() and s.isdigit() and int(s) < self.d_vocab:
            return int(s)
        raise PosfeatError(
            f"Token {s!r} is not in the vocabulary of {self.name or 'this model'}; pass an existing "
            "token string or id."
        )

    @property
    def _index(self) -> dict[str, int]:
        if self._index_cache is None:
            self._index_cache = {t: i for i, t in reversed(list(enumerate(self.tokens or [])))}
        return self._index_cache

    def center(self) -> Embeddings:
        """A copy with each row's mean over d_model subtracted (``center_writing_weights``)."""
        if self.centered:
            return self
        return Embeddings(
            self.W_E - self.W_E.mean(dim=1, keepdim=True),
            self.W_pos - self.W_pos.mean(dim=1, keepdim=True),
            tokens=self.tokens,
            name=self.name,
            centered=True,
            info=self.info,
        )

    def inputs(
        self, tokens: Int[torch.Tensor, "*batch"], positions: Int[torch.Tensor, "*batch"]
    ) -> Float[torch.Tensor, "*batch d_model"]:
        """Residual-stream inputs ``W_E[tokens] + W_pos[positions]`` (broadcast)."""
        return self.W_E[tokens] + self.W_pos[positions]

    def __repr__(self) -> str:
        return (
            f"Embeddings(name={self.name!r}, d_vocab={self.d_vocab}, n_ctx={self.n_ctx}, d_model="
            f"{self.d_model}, "
            f"centered={self.centered}, device={str(self.device)!r})"
        )
