"""Where model families keep their token and positional embeddings, and how ``config.json`` is
checked against them.

Shared by checkpoints on disk and model objects in memory, so both give the same tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..core.embeddings import Embeddings
from ..core.errors import PosfeatError
from .config_values import ConfigFile
from .tokens import token_strings

_ROTARY = {
    "gpt_neox",
    "gptj",
    "llama",
    "mistral",
    "mixtral",
    "qwen2",
    "qwen3",
    "gemma",
    "gemma2",
    "gemma3",
    "phi",
    "phi3",
    "stablelm",
    "olmo",
    "olmo2",
    "falcon",
    "cohere",
    "starcoder2",
    "codegen",
    "persimmon",
    "deepseek_v2",
    "deepseek_v3",
}
_ALIBI = {"bloom", "mpt"}
_NO_POSITIONS = {"t5", "mt5", "transfo-xl", "xlnet", "deberta", "deberta-v2"}


@dataclass(frozen=True)
class Layout:
    """Where a model family keeps its embeddings."""

    token: str  # suffix of the token embedding tensor name
    position: str  # suffix of the positional embedding tensor name
    token_type: str | None = None  # BERT-style: row 0 is added to every token row
    offset: int = 0  # row ``p + offset`` is position ``p``
    config_counts_offset: bool = (
        False  # RoBERTa's max_position_embeddings includes the offset rows; OPT's does not
    )


LAYOUTS = {
    "gpt2": Layout("wte.weight", "wpe.weight"),
    "gpt_neo": Layout("wte.weight", "wpe.weight"),
    "opt": Layout("embed_tokens.weight", "embed_positions.weight", offset=2),
    "bert": Layout(
        "word_embeddings.weight", "position_embeddings.weight", "token_type_embeddings.weight"
    ),
    "electra": Layout(
        "word_embeddings.weight", "position_embeddings.weight", "token_type_embeddings.weight"
    ),
    "distilbert": Layout("word_embeddings.weight", "position_embeddings.weight"),
}
_CANDIDATES = {
    "token": ("wte.weight", "embed_tokens.weight", "word_embeddings.weight"),
    "positional": ("wpe.weight", "embed_positions.weight", "position_embeddings.weight"),
}
_WIDTH_KEYS = ("n_embd", "hidden_size", "d_model")
_POSITION_KEYS = ("n_positions", "max_position_embeddings")


def layout_of(cfg: ConfigFile, where: str) -> Layout:
    """The embedding layout of a model config, or a clear refusal for models without learned
    absolute positions."""
    mtype = (cfg.get_str("model_type", default="") or "").lower()
    pet = str(cfg.raw("position_embedding_type", default="absolute")).lower()
    if (
        mtype in _ROTARY
        or cfg.raw("rotary_dim") is not None
        or cfg.raw("rope_theta") is not None
        or pet == "rotary"
    ):
        kind = "rotary"
    elif mtype in _ALIBI or cfg.raw("alibi") or pet == "alibi":
        kind = "ALiBi"
    elif mtype in _NO_POSITIONS or pet.startswith("relative"):
        kind = "relative or no"
    else:
        kind = None
    if kind:
        raise PosfeatError(
            f"{where} ({mtype or 'unknown type'}) uses {kind} positions, so there is no learned "
            "absolute positional "
            "embedding to study; posfeat needs a model like GPT-2, OPT, GPT-Neo or BERT."
        )
    if mtype == "opt":
        width = cfg.get_int("hidden_size", default=None)
        if width is not None and cfg.get_int("word_embed_proj_dim", default=width) != width:
            raise PosfeatError(
                f"{where} projects its token embeddings (word_embed_proj_dim != hidden_size), so "
                "the layer-0 input is not "
                "W_E + W_pos; use an OPT size without project_in (125m, 1.3b and larger)."
            )
    if mtype in LAYOUTS:
        return LAYOUTS[mtype]
    if mtype in {"roberta", "xlm-roberta", "camembert"}:
        return Layout(
            "word_embeddings.weight",
            "position_embeddings.weight",
            "token_type_embeddings.weight",
            offset=cfg.get_int("pad_token_id", default=1, minimum=0) + 1,
            config_counts_offset=True,
        )
    return Layout("", "")  # found by searching the tensor names


def find_tensor(names: list[str], suffix: str, what: str, where: str) -> str | None:
    """The shortest tensor name ending in ``suffix`` (or a usual name for ``what``); None for an
    absent token-type table."""
    for suf in ([suffix] if suffix else []) + list(_CANDIDATES.get(what, ())):
        hits = sorted((n for n in names if n == suf or n.endswith("." + suf)), key=len)
        if hits:
            return hits[0]
    if what == "token type":
        return None
    looked = ", ".join([s for s in (suffix, *_CANDIDATES.get(what, ())) if s])
    raise PosfeatError(
        f"{where} has no {what} embedding tensor (looked for {looked}); "
        "posfeat needs a model with learned absolute positional embeddings."
    )


def _cross_check(
    cfg: ConfigFile, W_E: torch.Tensor, W_pos_raw: torch.Tensor, lay: Layout, where: str
) -> int:
    """Check ``config.json`` against the tensors; returns the vocabulary size to keep."""
    width = cfg.get_int(*_WIDTH_KEYS, default=None, minimum=1)
    if width is not None and (W_E.shape[1] != width or W_pos_raw.shape[1] != width):
        raise PosfeatError(
            f"{cfg.path} gives a model width of {width} but the embeddings are {tuple(W_E.shape)} "
            "and "
            f"{tuple(W_pos_raw.shape)}; the config and the weights do not belong together."
        )
    n_pos = cfg.get_int(*_POSITION_KEYS, default=None, minimum=1)
    rows = None if n_pos is None else n_pos + (0 if lay.config_counts_offset else lay.offset)
    if rows is not None and rows != W_pos_raw.shape[0]:
        raise PosfeatError(
            f"{cfg.path} gives {n_pos} positions but the positional embedding has "
            f"{W_pos_raw.shape[0]} rows"
            f"{f' (offset {lay.offset})' if lay.offset else ''}; the config and the weights do not "
            "belong together."
        )
    if W_pos_raw.shape[0] <= lay.offset:
        raise PosfeatError(
            f"The positional embedding in {cfg.path.parent} has {W_pos_raw.shape[0]} rows, none "
            f"past the offset {lay.offset}."
        )
    vocab = cfg.get_int("vocab_size", default=W_E.shape[0], minimum=1)
    if vocab > W_E.shape[0]:
        raise PosfeatError(
            f"{cfg.path} gives vocab_size {vocab} but the token embedding has {W_E.shape[0]} rows; "
            "the config and the weights do not belong together."
        )
    return vocab


def embeddings_from_tensors(
    cfg: ConfigFile,
    tensors: dict[str, torch.Tensor],
    names: list[str],
    where: str,
    name: str,
    tokenizer: Any,
    extra_info: dict[str, Any] | None = None,
) -> Embeddings:
    """Embeddings from a config and a name -> tensor lookup (a checkpoint's or a model object's)."""
    lay = layout_of(cfg, where)
    tok_name = find_tensor(names, lay.token, "token", where)
    pos_name = find_tensor(names, lay.position, "positional", where)
    tt_name = (
        find_tensor(names, lay.token_type or "", "token type", where) if lay.token_type else None
    )
    W_E, W_pos_raw = tensors[tok_name], tensors[pos_name]
    for t, n in ((W_E, tok_name), (W_pos_raw, pos_name)):
        if not t.is_floating_point() or t.ndim != 2:
            raise PosfeatError(
                f"{where}: {n} is {t.dtype} of shape {tuple(t.shape)}; embeddings must be 2-D "
                "floating-point tensors."
            )
    vocab = _cross_check(cfg, W_E, W_pos_raw, lay, where)
    W_E = W_E.float()
    if tt_name:
        W_E = W_E + tensors[tt_name].float()[0]
    W_E = W_E[:vocab]
    W_pos = W_pos_raw.float()[lay.offset :]
    info = {
        "source": where,
        "model_type": cfg.get_str("model_type", default=None),
        "token_tensor": tok_name,
        "position_tensor": pos_name,
        "token_type_row_added": bool(tt_name),
        "position_offset": lay.offset,
        **(extra_info or {}),
    }
    return Embeddings(
        W_E, W_pos, tokens=token_strings(tokenizer, W_E.shape[0]), name=name, info=info
    )
