"""SAELens-format SAE folders: ``cfg.json`` + ``sae_weights.safetensors`` (+ ``sparsity.safetensors``), and sae_lens objects.

Reads configs written before SAELens 6 (``hook_point``, ``activation_fn_str``, top-level
``context_size``) and by 6.x (``architecture``, ``metadata.hook_name``, ``metadata.context_size``),
for the architectures standard/ReLU, JumpReLU and TopK; every config, whatever its vintage, is
normalised once into :class:`posfeat.SAEMeta`. Writes folders that both posfeat and sae_lens load.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import torch

from ..core.errors import PosfeatError, arg
from ..core.sae import LAYER0_HOOKS, POSFEAT_HOOK, SAE, SAEMeta
from .config import ConfigFile
from .paths import inside, shorten
from .safetensors_io import read_json, read_tensors, tensor_names, write_json, write_tensors

log = logging.getLogger(__name__)

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
SPARSITY_FILE = "sparsity.safetensors"


def architecture_of(cfg: ConfigFile, where: str) -> tuple[str, int | None]:
    """``("relu" | "jumprelu" | "topk", k)`` from a SAELens config, or a clear error."""
    arch = (cfg.get_str("architecture", default="standard") or "standard").lower()
    act = (cfg.get_str("activation_fn_str", "activation_fn", default="relu") or "relu").lower()
    if arch in {"standard", "relu"} and act == "relu":
        return "relu", None
    if arch == "jumprelu":
        return "jumprelu", None
    if arch == "topk" or (arch == "standard" and act == "topk"):
        kwargs = cfg.get_dict("activation_fn_kwargs")
        k = cfg.get_int("k", default=kwargs.get("k"), minimum=1)
        if k is None:
            raise PosfeatError(f"{where} is a TopK SAE but its cfg.json gives no k; add \"k\" to it.")
        return "topk", k
    raise PosfeatError(f"{where} has architecture {arch!r} (activation {act!r}), which posfeat does not support; "
                       "use a standard (ReLU), JumpReLU or TopK SAE.")


_NEURONPEDIA_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}(/[A-Za-z0-9][A-Za-z0-9._-]{0,99}){0,3}")


def neuronpedia_url(npid: object, feature: int | None = None) -> str | None:
    """Neuronpedia's page of an SAE (``https://www.neuronpedia.org/<id>/``) or of one feature, URL-encoded; None unless
    ``npid`` is a Neuronpedia id (letters, digits, ``.``, ``_``, ``-``, at most four ``/``-separated parts)."""
    if not isinstance(npid, str) or not _NEURONPEDIA_ID.fullmatch(npid):
        return None
    base = f"https://www.neuronpedia.org/{quote(npid, safe='/')}/"
    return base if feature is None else base + quote(str(int(feature)), safe="")


def _neuronpedia_id(cfg: ConfigFile) -> str | None:
    value = cfg.get_str("neuronpedia_id")
    if value is not None and neuronpedia_url(value) is None:
        log.warning("%s: neuronpedia_id %s is not a Neuronpedia id (such as gpt2-small/0-res-jb); no Neuronpedia links are made",
                    cfg.path, shorten(repr(value)))
        return None
    return value


def sae_meta(cfg: ConfigFile, folder: Path | None = None) -> SAEMeta:
    """The normalised metadata of a SAELens config of any vintage (see module docstring)."""
    hooks = {str(v) for d in (cfg.data, cfg.data.get("metadata")) if isinstance(d, dict)
             for v in (d.get("hook_name"), d.get("hook_point")) if v is not None}
    if len(hooks) > 1:
        raise PosfeatError(f"{cfg.path} names different hooks ({', '.join(shorten(h) for h in sorted(hooks))}) at the top level and in "
                           "metadata; posfeat cannot tell which layer the SAE reads: make them agree.")
    kwargs = cfg.get_dict("model_from_pretrained_kwargs")
    centered = cfg.get_bool("center_writing_weights", default=bool(kwargs.get("center_writing_weights", False)))
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
        f"SAE {sae.name or ''} reads {sae.hook_name}, not the layer-0 embedding sum (blocks.0.hook_resid_pre); posfeat's exact grid "
        f"rests on the input being W_E[token] + W_pos[position], which only holds at layer 0 "
        f"(pass {arg('allow_any_hook', True)} to analyse it anyway as if it did)."
    )


def _weights_path(folder: Path, where: str) -> Path:
    weights = inside(folder, WEIGHTS_FILE, where)
    if not weights.exists():
        others = sorted(p.name for p in folder.iterdir() if p.suffix in {".pt", ".bin", ".pth", ".pkl"})
        hint = f" (found {', '.join(others)}: posfeat never unpickles weights, convert them to safetensors)" if others else ""
        raise PosfeatError(f"{where} has no {WEIGHTS_FILE}{hint}; save the weights with safetensors.")
    return weights


def read_sae_folder(folder: str | os.PathLike[str], *, name: str | None = None, extra_cfg: dict[str, Any] | None = None,
                    allow_any_hook: bool = False) -> SAE:
    """Load an SAE from a SAELens-format folder (see module docstring)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise PosfeatError(f"SAE folder {folder} {what}; pass a folder holding cfg.json and sae_weights.safetensors.")
    folder = folder.resolve()
    if not inside(folder, CFG_FILE, f"SAE folder {folder}").is_file():
        raise PosfeatError(f"SAE folder {folder} has no cfg.json; a SAELens-format folder holds cfg.json and sae_weights.safetensors.")
    data = {**read_json(folder / CFG_FILE), **(extra_cfg or {}), "posfeat_folder": str(folder)}
    cfg, where = ConfigFile(data, folder / CFG_FILE), f"SAE folder {folder}"
    d_sae = cfg.get_int("d_sae", minimum=1)
    d_in = cfg.get_int("d_in", default=None, minimum=1)
    arch, k = architecture_of(cfg, where)
    norm = cfg.raw("normalize_activations")
    if norm not in (None, False, "none", "None"):
        raise PosfeatError(f"{where} normalizes its inputs ({norm!r}); posfeat supports SAEs with normalize_activations 'none'.")
    weights = _weights_path(folder, where)
    need = ["W_enc", "W_dec", "b_enc", "b_dec"]
    thr_key = None
    if arch == "jumprelu":
        keys = tensor_names(weights)
        thr_key = "threshold" if "threshold" in keys else ("log_threshold" if "log_threshold" in keys else None)
        if thr_key is None:
            raise PosfeatError(f"{weights} is a JumpReLU SAE without a threshold tensor; it must hold 'threshold'.")
        need.append(thr_key)
    t = {n: v.float() for n, v in read_tensors(weights, need, floating=True).items()}
    W_enc = t["W_enc"]
    if W_enc.ndim != 2 or W_enc.shape[1] != d_sae or (d_in is not None and W_enc.shape[0] != d_in):
        raise PosfeatError(f"{weights} holds W_enc of shape {tuple(W_enc.shape)} but cfg.json says d_in {d_in}, d_sae {d_sae}; "
                           "the weights and cfg.json do not belong together.")
    threshold = None if thr_key is None else (t[thr_key].exp() if thr_key == "log_threshold" else t[thr_key])
    sae = SAE.from_arrays(W_enc, t["W_dec"], t["b_enc"], t["b_dec"], threshold=threshold, k=k,
                          apply_b_dec_to_input=cfg.get_bool("apply_b_dec_to_input", default=True), name=name or str(folder),
                          cfg=data, meta=sae_meta(cfg, folder))
    check_layer0(sae, allow_any_hook)
    return sae


def saelens_cfg(sae: SAE, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A cfg.json that posfeat and sae_lens (before and after 6.0) both read."""
    arch = {"relu": "standard", "jumprelu": "jumprelu", "topk": "topk"}[sae.architecture]
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
        "model_from_pretrained_kwargs": {"center_writing_weights": bool(extra.get("center_writing_weights", sae.meta.centered))},
    }
    cfg: dict[str, Any] = {
        "architecture": arch, "d_in": sae.d_in, "d_sae": sae.d_sae, "dtype": "float32", "device": "cpu",
        "apply_b_dec_to_input": sae.apply_b_dec_to_input, "normalize_activations": "none", "reshape_activations": "none",
        "hook_name": meta["hook_name"], "context_size": sae.context_size, "model_name": model_name, "metadata": meta,
    }
    if sae.k is not None:
        cfg["k"] = sae.k
    cfg.update({k: v for k, v in extra.items() if k not in cfg})
    return cfg


def write_sae_folder(sae: SAE, folder: str | os.PathLike[str], extra_cfg: dict[str, Any] | None = None,
                     sparsity: torch.Tensor | None = None) -> Path:
    """Write ``sae`` as a SAELens-format folder (each file atomically; the folder is created if needed).

    Commands write it into a temporary folder that the output policy moves into place.
    """
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {"W_enc": sae.W_enc, "W_dec": sae.W_dec, "b_enc": sae.b_enc, "b_dec": sae.b_dec}
    if sae.threshold is not None:
        tensors["threshold"] = sae.threshold
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
        cfg = {k: v for k, v in vars(cfg_obj).items() if not k.startswith("_")} if cfg_obj is not None else {}
    if "metadata" in cfg and not isinstance(cfg["metadata"], dict):
        cfg["metadata"] = {k: v for k, v in vars(cfg["metadata"]).items() if not k.startswith("_")}
    if not cfg.get("architecture") and callable(getattr(obj, "architecture", None)):
        cfg["architecture"] = obj.architecture()
    return cfg


def from_saelens_object(obj: Any, *, allow_any_hook: bool = False) -> SAE:
    """Convert a ``sae_lens`` SAE (duck-typed: ``W_enc``, ``W_dec``, ``b_enc``, ``b_dec``, ``cfg``) without importing sae_lens.

    The tensors stay on the object's device.
    """
    data = _cfg_dict(obj)
    cfg = ConfigFile(data, f"SAE object {type(obj).__name__}.cfg")
    arch, k = architecture_of(cfg, f"SAE object {type(obj).__name__}")
    threshold = getattr(obj, "threshold", None) if arch == "jumprelu" else None
    t = lambda x: None if x is None else x.detach().float()  # noqa: E731
    name = str(cfg.raw("neuronpedia_id", "model_name", default=type(obj).__name__))
    sae = SAE.from_arrays(t(obj.W_enc), t(obj.W_dec), t(obj.b_enc), t(obj.b_dec), threshold=t(threshold), k=k,
                          apply_b_dec_to_input=cfg.get_bool("apply_b_dec_to_input", default=True), name=name, cfg=data, meta=sae_meta(cfg))
    check_layer0(sae, allow_any_hook)
    return sae
