"""Tokens: readable token strings from a tokenizer, and token-weight files (a distribution over the
vocabulary)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float

from ..core.errors import PosfeatError
from .paths import expand
from .safetensors_io import read_tensors

log = logging.getLogger(__name__)

TOKEN_WEIGHTS_FILE = "token_weights.safetensors"


def token_strings(tokenizer: Any, d_vocab: int) -> list[str] | None:
    """Readable strings of token ids ``0..d_vocab-1`` from a ``tokenizers.Tokenizer`` (or None).

    Byte-level BPE tokens (GPT-2, OPT, GPT-Neo) are decoded to text with the library's own
    ``ByteLevel`` decoder (``'Ġthe'`` -> ``' the'``); other vocabularies (WordPiece) are kept as
    they are."""
    if tokenizer is None:
        return None
    from tokenizers import decoders

    spec = json.loads(tokenizer.to_str())
    byte_level = "ByteLevel" in json.dumps(spec.get("decoder") or {}) or "ByteLevel" in json.dumps(
        spec.get("pre_tokenizer") or {}
    )
    dec = decoders.ByteLevel() if byte_level else None
    out = []
    for i in range(d_vocab):
        s = tokenizer.id_to_token(i)
        if s is None:
            out.append(f"<{i}>")
        else:
            out.append(dec.decode([s]) if dec is not None else s)
    return out


def read_tokenizer(path: Path | None) -> Any:
    """A ``tokenizers.Tokenizer`` from ``tokenizer.json``, or None (with a warning) when absent or
    unreadable."""
    if path is None or not path.is_file():
        return None
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(path))
    except Exception as err:  # a damaged tokenizer only costs readable token strings
        log.warning("Could not read %s (%s); token strings will be ids.", path, err)
        return None


def check_token_weights(
    w: torch.Tensor, d_vocab: int, where: str
) -> Float[torch.Tensor, " d_vocab"]:
    """``w`` as float64 ``[d_vocab]``: finite, non-negative, with positive weight on at least two
    tokens."""
    w = torch.as_tensor(w).detach().double().reshape(-1).cpu()
    if w.numel() != d_vocab:
        raise PosfeatError(
            f"{where} has {w.numel()} entries but the model has {d_vocab} tokens; give one weight "
            "per token id."
        )
    if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
        raise PosfeatError(f"{where} must hold finite, non-negative weights; fix the weights.")
    if int((w > 0).sum()) < 2:
        raise PosfeatError(
            f"{where} puts weight on {int((w > 0).sum())} token(s); give positive weight to at "
            "least two tokens."
        )
    return w


def load_token_weights(
    path: str | os.PathLike[str], d_vocab: int
) -> Float[torch.Tensor, " d_vocab"]:
    """Token weights from a safetensors file (key ``weights``), checked by
    :func:`check_token_weights`."""
    path = expand(path)
    w = read_tensors(path, ["weights"])["weights"]
    if w.dtype == torch.bool or w.dtype.is_complex:
        raise PosfeatError(
            f"Token weights {path} are stored as {w.dtype}; store float weights under the key "
            "'weights'."
        )
    return check_token_weights(w, d_vocab, f"Token weights {path}")


def token_weights_arg(weights: Any, d_vocab: int) -> torch.Tensor | None:
    """A token-weights argument (None, a tensor/array, or a safetensors path) as checked float64
    weights."""
    if weights is None:
        return None
    if isinstance(weights, (str, os.PathLike)):
        return load_token_weights(weights, d_vocab)
    return check_token_weights(torch.as_tensor(weights), d_vocab, "token_weights")
