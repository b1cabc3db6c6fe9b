"""SAELens-format SAE folders: ``cfg.json`` + ``sae_weights.safetensors`` (+
``sparsity.safetensors``), and sae_lens objects.

Reads configs written before SAELens 6 (``hook_point``, ``activation_fn_str``, top-level
``context_size``) and by 6.x (``architecture``, ``metadata.hook_name``, ``metadata.context_size``),
for sae_lens's standard (ReLU), TopK (with or without ``rescale_acts_by_decoder_norm``), JumpReLU
and gated SAEs, and BatchTopK SAEs as sae_lens saves them (JumpReLU); every config, whatever its
vintage, is normalised once into :class:`posfeat.SAEMeta`. Each option sae_lens writes either gives
exactly sae_lens's activations and reconstructions (``tests/io/test_saelens_conformance.py`` holds
every one to sae_lens itself) or is refused in one sentence naming it. Writes folders that both
posfeat and sae_lens load. What is particular to one architecture (its cfg.json fields, its tensors,
how sae_lens's tensors become posfeat's) is in its module of :mod:`posfeat.core.archs`.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import torch

from ..core.archs import architecture_from_cfg, saelens_read, saelens_tensor_names
from ..core.errors import PosfeatError, arg
from ..core.sae import LAYER0_HOOKS, POSFEAT_HOOK, SAE, SAEMeta
from .config_values import ConfigFile
from .paths import expand, inside, shorten
from .safetensors_io import read_json, read_tensors, tensor_names, write_json, write_tensors

log = logging.getLogger(__name__)

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
SPARSITY_FILE = "sparsity.safetensors"

log = logging.getLogger(__name__)


#: ``normalize_activations`` values posfeat reads exactly as sae_lens's ``SAE.load_from_disk`` does
# (see :func:`check_options`).
NORMALIZATIONS_READ = ("none", "expected_average_only_in")
#: Why each other ``normalize_activations`` value is refused: one clause each.
_NORM_REFUSED = {
    "constant_norm_rescale": "rescales every input to norm sqrt(d_in), so an input's features "
    "depend on its own norm and the layer-0 grid "
    "is no longer W_E[t] + W_pos[p] through one linear map",
    "layer_norm": "layer-normalises every input first, so the layer-0 grid is no longer W_E[t] + "
    "W_pos[p] through one linear map",
    "covariance_whitening": "expects inputs whitened by statistics that the folder does not hold "
    "(sae_lens's trainer folds them into the "
    "weights and writes 'none')",
}
_DTYPES = {
    "float32": torch.float32,
    "float": torch.float32,
    "float64": torch.float64,
    "double": torch.float64,
    "float16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
}


def compute_dtype(cfg: ConfigFile, where: str) -> torch.dtype:
    """The dtype sae_lens holds the weights in (``cfg.json`` ``dtype``: ``float32``,
    ``torch.bfloat16``, ...)."""
    name = str(cfg.get_str("dtype", default="float32") or "float32").removeprefix("torch.").lower()
    if name not in _DTYPES:
        raise PosfeatError(
            f"{where} has dtype {name!r}, which is not a floating-point dtype posfeat knows; "
            f"use one of {', '.join(sorted(set(_DTYPES)))}."
        )
    return _DTYPES[name]


def check_options(cfg: ConfigFile, where: str) -> list[str]:
    """Refuse every cfg.json option that would make posfeat's numbers differ from sae_lens's;
    returns notes for the record.

    ``normalize_activations``: ``none`` is read as is; ``expected_average_only_in`` is read as
    sae_lens's ``SAE.load_from_disk`` reads it, with no scaling (only ``SAE.from_pretrained`` folds
    a release's known factor; posfeat warns); every other value is refused. ``reshape_activations:
    hook_z`` (attention outputs) and a non-unit ``finetuning_scaling_factor`` are refused."""
    notes: list[str] = []
    norm = cfg.raw("normalize_activations")
    norm = (
        "none"
        if norm in (None, False)
        else ("expected_average_only_in" if norm is True else str(norm))
    )
    if norm in _NORM_REFUSED:
        raise PosfeatError(
            f"{where} sets normalize_activations {norm!r}, which {_NORM_REFUSED[norm]}; posfeat "
            "reads SAEs with "
            "normalize_activations 'none' (or 'expected_average_only_in', as sae_lens loads it from "
            "disk)."
        )
    if norm not in NORMALIZATIONS_READ:
        raise PosfeatError(
            f"{where} sets normalize_activations {norm!r}, which sae_lens does not define; use "
            "'none'."
        )
    if norm == "expected_average_only_in":
        log.warning(
            "%s sets normalize_activations 'expected_average_only_in' without its scaling factor; "
            "posfeat reads it as "
            "sae_lens's SAE.load_from_disk does, with inputs unscaled.",
            where,
        )
        notes.append(
            "normalize_activations 'expected_average_only_in' read as sae_lens load_from_disk does: "
            "no input scaling"
        )
    reshape = cfg.raw("reshape_activations", default="none")
    if reshape not in ("none", None):
        raise PosfeatError(
            f"{where} sets reshape_activations {reshape!r} (an SAE on attention outputs), not the "
            "layer-0 residual "
            "stream that posfeat studies; use an SAE at blocks.0.hook_resid_pre."
        )
    if cfg.raw("finetuning_scaling_factor") not in (None, False):
        raise PosfeatError(
            f"{where} sets finetuning_scaling_factor, which sae_lens 6 no longer applies; fold the "
            "scaling factor "
            "into the weights first."
        )
    return notes


def saelens_tensors(
    cfg: ConfigFile, t: dict[str, torch.Tensor], where: str
) -> tuple[dict[str, Any], list[str]]:
    """From sae_lens's tensors and config to posfeat's SAE arguments (``W_enc``, ..., ``threshold``,
    ``k``), every option applied.

    Tensors are first brought to the config's dtype (as sae_lens does when it loads them), then
    held in float32 like every posfeat SAE (bfloat16 and float16 exactly, float64 rounded).
    """
    arch, params = architecture_from_cfg(cfg, where)
    notes = check_options(cfg, where)
    dtype = compute_dtype(cfg, where)
    t = {n: v.detach().to(dtype).float() for n, v in t.items()}
    if "scaling_factor" in t:
        if not bool(torch.all(t["scaling_factor"] == 1)):
            raise PosfeatError(
                f"{where} holds a scaling_factor tensor that is not all ones, which sae_lens 6 "
                "refuses too; "
                "fold it into the weights first."
            )
        notes.append("scaling_factor of ones dropped, as sae_lens does")
    if dtype != torch.float32:
        notes.append(
            f"{str(dtype).removeprefix('torch.')} weights computed in float32"
            + (" (rounded)" if dtype == torch.float64 else " (exactly)")
        )
    read_as, t = arch.from_saelens(
        cfg, t, params, notes
    )  # gated: the JumpReLU SAE it equals; TopK: decoder norms folded
    return {
        "W_enc": t["W_enc"],
        "W_dec": t["W_dec"],
        "b_enc": t["b_enc"],
        "b_dec": t["b_dec"],
        **read_as.params(),
    }, notes


def _needed(cfg: ConfigFile, where: str, keys: list[str]) -> list[str]:
    """The tensor names a folder of this architecture must hold (JumpReLU: ``threshold`` or
    ``log_threshold``)."""
    return architecture_from_cfg(cfg, where)[0].needed_tensors(keys, where)


_NEURONPEDIA_ID = re.compile(
    r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}(/[A-Za-z0-9][A-Za-z0-9._-]{0,99}){0,3}"
)


def neuronpedia_url(npid: object, feature: int | None = None) -> str | None:
    """Neuronpedia's page of an SAE (``https://www.neuronpedia.org/<id>/``) or of one feature,
    URL-encoded; None unless ``npid`` is a Neuronpedia id (letters, digits, ``.``, ``_``, ``-``, at
    most four ``/``-separated parts)."""
    if not isinstance(npid, str) or not _NEURONPEDIA_ID.fullmatch(npid):
        return None
    base = f"https://www.neuronpedia.org/{quote(npid, safe='/')}/"
    return base if feature is None else base + quote(str(int(feature)), safe="")


def _neuronpedia_id(cfg: ConfigFile) -> str | None:
    value = cfg.get_str("neuronpedia_id")
    if value is not None and neuronpedia_url(value) is None:
        log.warning(
            "%s: neuronpedia_id %s is not a Neuronpedia id (such as gpt2-small/0-res-jb); no "
            "Neuronpedia links are made",
            cfg.path,
            shorten(repr(value)),
        )
        return None
    return value


def sae_meta(cfg: ConfigFile, folder: Path | None = None) -> SAEMeta:
    """The normalised metadata of a SAELens config of any vintage (see module docstring)."""
    hooks = {
        str(v)
        for d in (cfg.data, cfg.data.get("metadata"))
        if isinstance(d, dict)
        for v in (d.get("hook_name"), d.get("hook_point"))
        if v is not None
    }
    if len(hooks) > 1:
        raise PosfeatError(
            f"{cfg.path} names different hooks ({', '.join(shorten(h) for h in sorted(hooks))}) at "
            "the top level and in "
            "metadata; posfeat cannot tell which layer the SAE reads: make them agree."
        )
    kwargs = cfg.get_dict("model_from_pretrained_kwargs")
    centered = cfg.get_bool(
        "center_writing_weights", default=bool(kwargs.get("center_writing_weights", False))
    )
    return SAEMeta(
        hook_name=cfg.get_str("hook_name", "hook_point"),
        context_size=cfg.get_int("context_size", default=None, minimum=1),
        model_name=cfg.get_str("model", "model_name"),
        dataset=cfg.get_str("dataset_path", "dataset"),
        neuronpedia_id=_neuronpedia_id(cfg),
        centered=centered,
        release=cfg.get_str("release"),
        sae_id=cfg.get_str("sae_id"),
        folder=None if folder is None else str(folder),
    )


def check_layer0(sae: SAE, allow_any_hook: bool) -> None:
    """Refuse an SAE that does not read the layer-0 embedding sum, unless ``allow_any_hook``."""
    if allow_any_hook or sae.hook_name is None or sae.hook_name in LAYER0_HOOKS:
        return
    raise PosfeatError(
        f"SAE {sae.name or ''} reads {sae.hook_name}, not the layer-0 embedding sum "
        "(blocks.0.hook_resid_pre); posfeat's exact grid "
        f"rests on the input being W_E[token] + W_pos[position], which only holds at layer 0 "
        f"(pass {arg('allow_any_hook', True)} to analyse it anyway as if it did)."
    )


def _weights_path(folder: Path, where: str) -> Path:
    weights = inside(folder, WEIGHTS_FILE, where)
    if not weights.exists():
        others = sorted(
            p.name for p in folder.iterdir() if p.suffix in {".pt", ".bin", ".pth", ".pkl"}
        )
        hint = (
            f" (found {', '.join(others)}: posfeat never unpickles weights, convert them to "
            "safetensors)"
            if others
            else ""
        )
        raise PosfeatError(
            f"{where} has no {WEIGHTS_FILE}{hint}; save the weights with safetensors."
        )
    return weights


def read_sae_folder(
    folder: str | os.PathLike[str],
    *,
    name: str | None = None,
    extra_cfg: dict[str, Any] | None = None,
    allow_any_hook: bool = False,
) -> SAE:
    """Load an SAE from a SAELens-format folder (see module docstring)."""
    folder = expand(folder)
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise PosfeatError(
            f"SAE folder {folder} {what}; pass a folder holding cfg.json and "
            "sae_weights.safetensors."
        )
    folder = folder.resolve()
    if not inside(folder, CFG_FILE, f"SAE folder {folder}").is_file():
        raise PosfeatError(
            f"SAE folder {folder} has no cfg.json; a SAELens-format folder holds cfg.json and "
            "sae_weights.safetensors."
        )
    data = {**read_json(folder / CFG_FILE), **(extra_cfg or {}), "posfeat_folder": str(folder)}
    cfg, where = ConfigFile(data, folder / CFG_FILE), f"SAE folder {folder}"
    d_sae = cfg.get_int("d_sae", minimum=1)
    d_in = cfg.get_int("d_in", default=None, minimum=1)
    architecture_from_cfg(cfg, where)
    weights = _weights_path(folder, where)
    names = tensor_names(weights)
    absent = [n for n in _needed(cfg, where, names) if n not in names]
    if absent:
        raise PosfeatError(
            f"{weights} has no {', '.join(absent)}, which a "
            f"{architecture_from_cfg(cfg, where)[0].name} SAE (as cfg.json says) needs; "
            "pass the weights that belong with this cfg.json."
        )
    raw = read_tensors(weights, _needed(cfg, where, names), floating=True)
    W_enc = raw["W_enc"]
    if W_enc.ndim != 2 or W_enc.shape[1] != d_sae or (d_in is not None and W_enc.shape[0] != d_in):
        raise PosfeatError(
            f"{weights} holds W_enc of shape {tuple(W_enc.shape)} but cfg.json says d_in {d_in}, "
            f"d_sae {d_sae}; "
            "the weights and cfg.json do not belong together."
        )
    args, notes = saelens_tensors(cfg, raw, where)
    if notes:
        data["posfeat_read"] = notes
    sae = SAE.from_arrays(
        **args,
        apply_b_dec_to_input=cfg.get_bool("apply_b_dec_to_input", default=True),
        name=name or str(folder),
        cfg=data,
        meta=sae_meta(cfg, folder),
    )
    check_layer0(sae, allow_any_hook)
    return sae


def saelens_cfg(sae: SAE, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A cfg.json that posfeat and sae_lens (before and after 6.0) both read."""
    extra = dict(extra or {})
    model_name = extra.get("model_name", sae.meta.model_name or "")
    meta = {
        "model_name": model_name,
        "hook_name": sae.hook_name or POSFEAT_HOOK,
        "hook_head_index": None,
        "context_size": sae.context_size,
        "prepend_bos": False,
        "dataset_path": "posfeat layer-0 grid",
        "sae_lens_training_version": None,
        "model_from_pretrained_kwargs": {
            "center_writing_weights": bool(extra.get("center_writing_weights", sae.meta.centered))
        },
    }
    cfg: dict[str, Any] = {
        "architecture": sae.arch.saelens_name,
        "d_in": sae.d_in,
        "d_sae": sae.d_sae,
        "dtype": "float32",
        "device": "cpu",
        "apply_b_dec_to_input": sae.apply_b_dec_to_input,
        "normalize_activations": "none",
        "reshape_activations": "none",
        "hook_name": meta["hook_name"],
        "context_size": sae.context_size,
        "model_name": model_name,
        "metadata": meta,
    }
    cfg.update(sae.arch.cfg_fields())
    cfg.update({k: v for k, v in extra.items() if k not in cfg})
    return cfg


def write_sae_folder(
    sae: SAE,
    folder: str | os.PathLike[str],
    extra_cfg: dict[str, Any] | None = None,
    sparsity: torch.Tensor | None = None,
) -> Path:
    """Write ``sae`` as a SAELens-format folder (each file atomically; the folder is created if
    needed).

    Commands write it into a temporary folder that the output policy moves into place.
    """
    folder = expand(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {"W_enc": sae.W_enc, "W_dec": sae.W_dec, "b_enc": sae.b_enc, "b_dec": sae.b_dec}
    tensors.update(sae.arch.tensors())
    write_tensors(folder / WEIGHTS_FILE, tensors)
    if sparsity is not None:
        write_tensors(folder / SPARSITY_FILE, {"sparsity": sparsity})
    write_json(folder / CFG_FILE, saelens_cfg(sae, extra_cfg))
    return folder


def _cfg_dict(obj: Any) -> dict[str, Any]:
    cfg_obj = getattr(obj, "cfg", None)
    if hasattr(cfg_obj, "to_dict"):
        cfg = dict(cfg_obj.to_dict())
    elif isinstance(cfg_obj, dict):
        cfg = dict(cfg_obj)
    else:
        cfg = (
            {k: v for k, v in vars(cfg_obj).items() if not k.startswith("_")}
            if cfg_obj is not None
            else {}
        )
    if "metadata" in cfg and not isinstance(cfg["metadata"], dict):
        cfg["metadata"] = {k: v for k, v in vars(cfg["metadata"]).items() if not k.startswith("_")}
    if not cfg.get("architecture") and callable(getattr(obj, "architecture", None)):
        cfg["architecture"] = obj.architecture()
    return cfg


_OBJECT_TENSORS = saelens_tensor_names()


def from_saelens_object(obj: Any, *, allow_any_hook: bool = False) -> SAE:
    """Convert a ``sae_lens`` SAE (duck-typed: ``W_enc``, ``W_dec``, ``b_enc``, ``b_dec``, ``cfg``)
    without importing sae_lens.

    Read with the same rules as a folder (:func:`saelens_tensors`); the tensors stay on the object's
    device."""
    data = _cfg_dict(obj)
    where = f"SAE object {type(obj).__name__}"
    cfg = ConfigFile(data, f"{where}.cfg")
    tensors = {
        n: v for n in _OBJECT_TENSORS if isinstance(v := getattr(obj, n, None), torch.Tensor)
    }
    missing = [n for n in _needed(cfg, where, list(tensors)) if n not in tensors]
    if missing:
        raise PosfeatError(
            f"{where} has no {', '.join(missing)}; pass a sae_lens SAE of a "
            f"{saelens_read()} architecture."
        )
    args, notes = saelens_tensors(cfg, tensors, where)
    if notes:
        data["posfeat_read"] = notes
    name = str(cfg.raw("neuronpedia_id", "model_name", default=type(obj).__name__))
    sae = SAE.from_arrays(
        **args,
        apply_b_dec_to_input=cfg.get_bool("apply_b_dec_to_input", default=True),
        name=name,
        cfg=data,
        meta=sae_meta(cfg),
    )
    check_layer0(sae, allow_any_hook)
    return sae
