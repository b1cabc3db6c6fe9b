"""Token and positional embeddings from real checkpoints: the hub, a local folder, the bundled
model, or a model object.

Only the two or three embedding tensors are read, one at a time, found by name whatever the
prefix (``wte.weight``, ``transformer.wte.weight``, ``embeddings.word_embeddings.weight``, ...).
``config.json`` values are type-checked and cross-checked against the tensors' shapes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..core.embeddings import Embeddings
from ..core.errors import PosfeatError
from .config_values import ConfigFile
from .hub import cached_file, missing, offline
from .layouts import embeddings_from_tensors, find_tensor, layout_of
from .model_objects import embeddings_from_object
from .names import BUNDLED_MODEL
from .paths import expand, inside, safe_name, shorten
from .safetensors_io import read_json, read_tensors, tensor_names
from .tokens import read_tokenizer

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
#: Model types whose layer-0 embedding sum is TransformerLens's ``blocks.0.hook_resid_pre`` (no
# LayerNorm before it).
RESID_PRE_TYPES = frozenset({"gpt2", "gpt_neo", "opt"})


def _weight_files(
    get: Callable[[str], Path | None], no_weights: Callable[[], PosfeatError]
) -> dict[str, str | Path]:
    """Map tensor name -> file (a path, or a shard's name to fetch), for a single or sharded
    safetensors checkpoint."""
    single = get("model.safetensors")
    if single is not None:
        return dict.fromkeys(tensor_names(single), single)
    index = get("model.safetensors.index.json")
    if index is None:
        raise no_weights()
    weight_map = ConfigFile(read_json(index), index).get_dict("weight_map")
    bad = [k for k, v in weight_map.items() if not isinstance(v, str)]
    if bad:
        raise PosfeatError(
            f"{index}: weight_map entry {shorten(repr(bad[0]))} is not a file name; fix or "
            "re-download the index."
        )
    for v in set(weight_map.values()):
        safe_name(v, f"{index}: weight_map", "weight shard")
    return dict(weight_map)


def _no_safetensors(where: str) -> PosfeatError:
    return PosfeatError(
        f"{where} has no model.safetensors (or model.safetensors.index.json); posfeat reads "
        "safetensors only and never "
        "unpickles pytorch_model.bin: convert the checkpoint to safetensors first."
    )


def _load_checkpoint(
    get: Callable[[str], Path | None],
    where: str,
    name: str,
    center: bool | None,
    no_weights: Callable[[], PosfeatError] | None = None,
) -> Embeddings:
    config_path = get("config.json")
    if config_path is None:
        raise PosfeatError(
            f"{where} has no config.json; pass a folder holding config.json and model.safetensors."
        )
    cfg = ConfigFile(read_json(config_path), config_path)
    lay = layout_of(cfg, where)
    files = _weight_files(get, no_weights or (lambda: _no_safetensors(where)))
    names = list(files)
    wanted = [
        find_tensor(names, lay.token, "token", where),
        find_tensor(names, lay.position, "positional", where),
    ]
    if lay.token_type and (tt := find_tensor(names, lay.token_type, "token type", where)):
        wanted.append(tt)
    tensors: dict[str, torch.Tensor] = {}
    for shard in {str(files[n]) for n in wanted}:
        single = next(
            (files[n] for n in wanted if str(files[n]) == shard and isinstance(files[n], Path)),
            None,
        )
        path = single or get(
            safe_name(shard, f"{where}: model.safetensors.index.json", "weight shard")
        )
        if path is None:
            raise PosfeatError(
                f"{where} is missing the weight shard {shard}; download the whole checkpoint."
            )
        tensors.update(
            read_tensors(path, [n for n in wanted if str(files[n]) == shard], floating=True)
        )
    emb = embeddings_from_tensors(
        cfg, tensors, list(tensors), where, name, read_tokenizer(get("tokenizer.json"))
    )
    return emb.center() if center else emb


#: The bundled model's layer-0 inputs, shipped with posfeat: all-MiniLM-L6-v2's three embedding
# tables (values unchanged), its config.json and tokenizer.json, and its Apache-2.0 licence and
# notice (scripts/extract_bundled_model.py).
BUNDLED_MODEL_DIR = Path(__file__).resolve().parent.parent / "bundled" / "all-MiniLM-L6-v2-layer0"


def bundled_model_dir() -> Path:
    """Folder of all-MiniLM-L6-v2's layer-0 inputs shipped inside posfeat (no other package, no
    network)."""
    if not (BUNDLED_MODEL_DIR / "model.safetensors").is_file():
        raise PosfeatError(
            f"The bundled model's files are missing from {BUNDLED_MODEL_DIR}; reinstall posfeat "
            "(pip install -e . "
            "from a full clone)."
        )
    return BUNDLED_MODEL_DIR


def _folder_getter(folder: Path) -> Callable[[str], Path | None]:
    """A file of a model folder (or hub snapshot), refused if it resolves outside it; None when
    absent."""

    def get(name: str) -> Path | None:
        path = inside(folder, name, f"model folder {folder}")
        return path if path.is_file() else None

    return get


def _looks_like_path(src: str) -> bool:
    return src.startswith((".", "/", "~")) or src.count("/") > 1


def load_embeddings(
    source: Any = BUNDLED_MODEL,
    *,
    center: bool | None = None,
    revision: str | None = None,
    tokenizer: Any = None,
) -> Embeddings:
    """Token and positional embeddings of a model with learned absolute positions.

    Args:
        source: ``"minilm"`` (the bundled all-MiniLM-L6-v2, no network ever), a Hugging Face model
            id (``gpt2``, ``openai-community/gpt2-medium``, ``facebook/opt-125m``,
            ``EleutherAI/gpt-neo-125m``, ``bert-base-uncased``, ...), a local folder holding
            ``config.json`` + ``model.safetensors`` (sharded or not) and optionally
            ``tokenizer.json``,
            or a model object: a TransformerLens ``HookedTransformer`` or a transformers
            ``PreTrainedModel`` (duck-typed; neither library is imported).
        center: subtract each row's mean over d_model (TransformerLens ``center_writing_weights``).
            None means False here (for a HookedTransformer: as it already is);
            :func:`posfeat.load_pair` decides it from the SAE.
        revision: hub revision (branch, tag or commit).
        tokenizer: for a model object without one attached (transformers models): a transformers
            tokenizer or ``tokenizers.Tokenizer`` for readable token strings (else token ids).

    Returns an :class:`Embeddings` with ``W_E [d_vocab, d_model]`` (BERT-style: token-type-0 row
    added) and ``W_pos [n_ctx, d_model]`` (OPT: offset of 2 removed).
    """
    if isinstance(source, Embeddings):
        return source.center() if center else source
    if not isinstance(source, (str, os.PathLike)):
        emb = embeddings_from_object(source, tokenizer)
        return emb.center() if center else emb
    src = os.fspath(source)
    if src == BUNDLED_MODEL:
        folder = bundled_model_dir()
        name = "sentence-transformers/all-MiniLM-L6-v2 (bundled: minilm)"
        return _loadable(
            _load_checkpoint(_folder_getter(folder), f"bundled model {folder}", name, center),
            BUNDLED_MODEL,
        )
    path = expand(src)
    if path.exists() or _looks_like_path(src):
        if not path.is_dir():
            what = "is a file, not a folder" if path.exists() else "does not exist"
            raise PosfeatError(
                f"Model folder {path} {what}; pass a folder holding config.json and "
                "model.safetensors, a hub id like gpt2, "
                "or 'minilm'."
            )
        path = path.resolve()
        return _loadable(
            _load_checkpoint(_folder_getter(path), f"model folder {path}", path.name, center),
            str(path),
        )
    repo = MODEL_ALIASES.get(src, src)
    needed = ["config.json", "model.safetensors", "tokenizer.json"]

    def get(fname: str) -> Path | None:
        return cached_file(repo, fname, revision, required=fname == "config.json", needed=needed)

    def no_weights() -> PosfeatError:
        cfg = get("config.json")
        there = sorted(p.name for p in cfg.parent.iterdir()) if cfg is not None else []
        pickles = [n for n in there if n.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))]
        if pickles:
            return PosfeatError(
                f"The cache {cfg.parent} of hub model {repo} holds {', '.join(there)}: its weights "
                "are pickled "
                f"({', '.join(pickles)}) and posfeat reads safetensors only, it never unpickles; "
                "use a revision or a copy "
                "of the model with model.safetensors."
            )
        return (
            missing(repo, ["model.safetensors"], "HF_HUB_OFFLINE is set")
            if offline()
            else _no_safetensors(f"hub model {repo}")
        )

    return _loadable(_load_checkpoint(get, f"hub model {repo}", repo, center, no_weights), src)


def _loadable(emb: Embeddings, load_as: str) -> Embeddings:
    """Record the name that loads these embeddings again (``info["load_as"]``; an SAE trained on
    them names it)."""
    emb.info["load_as"] = load_as
    return emb


_RESID_PRE_ARCHS = ("GPT2", "GPTNeo", "OPT")


def layer0_hook(emb: Embeddings) -> str:
    """The hook name an SAE on this model's embedding sum should record.

    GPT-2, GPT-Neo and OPT add no LayerNorm before block 0, so the sum is TransformerLens's (and
    SAELens's) ``blocks.0.hook_resid_pre``; BERT-style encoders normalise it first, so their SAEs
    keep posfeat's own name for the plain sum (``hook_embed+hook_pos_embed``).
    """
    from ..core.sae import POSFEAT_HOOK

    mtype = str(emb.info.get("model_type") or "")
    if mtype in RESID_PRE_TYPES or mtype.startswith(_RESID_PRE_ARCHS):
        return "blocks.0.hook_resid_pre"
    return POSFEAT_HOOK
