"""Model objects already in memory: a TransformerLens ``HookedTransformer`` or a transformers
``PreTrainedModel``.

Both are duck-typed; neither library is imported. A transformers model goes through exactly the
code that reads its saved folder (same layouts, token-type row, OPT offset, config checks), so
both give the same tensors.
"""

from __future__ import annotations

from typing import Any

import torch

from ..core.embeddings import Embeddings
from ..core.errors import PosfeatError
from .config_values import ConfigFile
from .layouts import embeddings_from_tensors
from .tokens import token_strings


def _tokens(tokenizer: Any, d_vocab: int) -> list[str] | None:
    """Readable token strings from a transformers tokenizer (its fast backend) or a
    ``tokenizers.Tokenizer``."""
    if tokenizer is None:
        return None
    backend = getattr(tokenizer, "backend_tokenizer", None) or (
        tokenizer if hasattr(tokenizer, "to_str") else None
    )
    if backend is not None:
        return token_strings(backend, d_vocab)
    if hasattr(tokenizer, "convert_ids_to_tokens"):
        return [str(t) for t in tokenizer.convert_ids_to_tokens(list(range(d_vocab)))]
    return None


#: TransformerLens ``positional_embedding_type`` values, as a message names them.
_SCHEMES = {
    "rotary": "rotary",
    "alibi": "ALiBi",
    "shortformer": "shortformer (positions added to queries and keys only)",
}


def _is_centered(W: torch.Tensor) -> bool:
    return bool(W.double().mean(1).abs().max() <= 1e-6 * max(float(W.double().abs().max()), 1e-30))


def _from_hooked(obj: Any) -> Embeddings:
    cfg = obj.cfg
    pet = str(getattr(cfg, "positional_embedding_type", "standard"))
    own = str(getattr(cfg, "model_name", "") or "")
    name = own or f"{type(obj).__name__} (unnamed)"
    if pet != "standard":
        raise PosfeatError(
            f"{type(obj).__name__} {name} uses {_SCHEMES.get(pet, pet)} positions, so there is no "
            "learned absolute positional "
            "embedding to study; posfeat needs a model like GPT-2, OPT, GPT-Neo or BERT."
        )
    W_E = obj.W_E.detach().float()
    W_pos = obj.W_pos.detach().float()
    token_type = getattr(
        getattr(getattr(obj, "embed", None), "token_type_embed", None), "W_token_type", None
    )
    if (
        token_type is not None
    ):  # HookedEncoder (BERT): the token-type-0 row joins every token, as for checkpoints
        W_E = W_E + token_type.detach().float()[0]
    centered = _is_centered(W_E) and _is_centered(W_pos)
    info = {
        "source": f"TransformerLens {type(obj).__name__} object"
        + (f" {own!r}" if own else " (unnamed)"),
        "load_as": own or None,
        "model_type": getattr(cfg, "original_architecture", None),
        "token_type_row_added": token_type is not None,
        "position_offset": 0,
        "centering": (
            "detected: every W_E and W_pos row has zero mean over d_model, as "
            "HookedTransformer.from_pretrained leaves "
            "them (center_writing_weights)"
        )
        if centered
        else "not centred",
    }
    return Embeddings(
        W_E,
        W_pos,
        tokens=_tokens(getattr(obj, "tokenizer", None), W_E.shape[0]),
        name=name,
        centered=centered,
        info=info,
    )


def _from_transformers(obj: Any, tokenizer: Any) -> Embeddings:
    config = obj.config
    data = config.to_dict() if hasattr(config, "to_dict") else dict(vars(config))
    own = str(getattr(config, "_name_or_path", "") or "")
    name = (
        own or f"{type(obj).__name__} (unnamed)"
    )  # never the model type: 'gpt2' would read as the hub's GPT-2
    where = f"model object {type(obj).__name__}"
    state = {k: v.detach() for k, v in obj.state_dict().items()}
    emb = embeddings_from_tensors(
        ConfigFile(data, f"{where}.config"),
        state,
        list(state),
        where,
        name,
        None,
        {
            "source": f"transformers {type(obj).__name__} object"
            + (f" {own!r}" if own else " (unnamed)"),
            "load_as": own or None,
        },
    )
    emb.tokens = _tokens(tokenizer, emb.d_vocab)
    return emb


def embeddings_from_object(obj: Any, tokenizer: Any = None) -> Embeddings:
    """Embeddings of a ``HookedTransformer`` (``W_E``, ``W_pos``, ``cfg``, ``tokenizer``) or a
    ``PreTrainedModel`` (``config``, ``state_dict``).

    A model without learned absolute positions (rotary, ALiBi, shortformer, none) is refused with a
    message naming its scheme, whichever library it comes from."""
    cfg = getattr(obj, "cfg", None)
    if cfg is not None and hasattr(cfg, "positional_embedding_type") and hasattr(obj, "W_E"):
        emb = _from_hooked(
            obj
        )  # checks the scheme before touching W_pos, which a rotary model does not have
        if tokenizer is not None:
            emb.tokens = _tokens(tokenizer, emb.d_vocab)
        return emb
    if all(hasattr(obj, a) for a in ("W_E", "W_pos", "cfg")):
        emb = _from_hooked(obj)
        if tokenizer is not None:
            emb.tokens = _tokens(tokenizer, emb.d_vocab)
        return emb
    if hasattr(obj, "config") and hasattr(obj, "state_dict") and hasattr(obj.config, "model_type"):
        return _from_transformers(obj, tokenizer)
    raise PosfeatError(
        f"A {type(obj).__name__} object is not a model posfeat can read; pass a model name, a "
        "folder, a TransformerLens "
        "HookedTransformer or a transformers PreTrainedModel."
    )
