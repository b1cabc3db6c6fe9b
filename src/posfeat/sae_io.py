"""SAELens-format SAE folders: ``cfg.json`` + ``sae_weights.safetensors`` (+ ``sparsity.safetensors``).

Reads configs written before SAELens 6 (``hook_point``, ``activation_fn_str``, top-level
``context_size``) and by 6.x (``architecture``, ``metadata.hook_name``, ``metadata.context_size``),
for the architectures standard/ReLU, JumpReLU and TopK. Writes folders that both posfeat and
sae_lens load.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from .errors import PosfeatError
from .sae import SAE
from .safetensors_io import read_json, read_tensors, tensor_names, write_json_atomic, write_tensors_atomic

log = logging.getLogger(__name__)

CFG_FILE = "cfg.json"
WEIGHTS_FILE = "sae_weights.safetensors"
SPARSITY_FILE = "sparsity.safetensors"

#: posfeat's own hook name: the plain sum of token and positional embeddings (BERT-style models
#: include the token-type-0 row), before any LayerNorm.
POSFEAT_HOOK = "hook_embed+hook_pos_embed"
LAYER0_HOOKS = {"blocks.0.hook_resid_pre", POSFEAT_HOOK, "hook_embed + hook_pos_embed", "embed+pos"}


def cfg_value(cfg: dict[str, Any], *keys: str, default: Any = None) -> Any:
    """First of ``keys`` found at the top level of ``cfg`` or in its ``metadata``."""
    meta = cfg.get("metadata") or {}
    for key in keys:
        if cfg.get(key) is not None:
            return cfg[key]
        if meta.get(key) is not None:
            return meta[key]
    return default


def architecture_of(cfg: dict[str, Any], where: str) -> tuple[str, int | None]:
    """``("relu" | "jumprelu" | "topk", k)`` from a SAELens config, or a clear error."""
    arch = str(cfg.get("architecture") or "standard").lower()
    act = str(cfg.get("activation_fn_str") or cfg.get("activation_fn") or "relu").lower()
    kwargs = cfg.get("activation_fn_kwargs") or {}
    k = cfg.get("k", kwargs.get("k"))
    if arch in {"standard", "relu"} and act == "relu":
        return "relu", None
    if arch == "jumprelu":
        return "jumprelu", None
    if arch == "topk" or (arch == "standard" and act == "topk"):
        if k is None:
            raise PosfeatError(f"{where} is a TopK SAE but its cfg.json gives no k; add \"k\" to it.")
        return "topk", int(k)
    raise PosfeatError(
        f"{where} has architecture {arch!r} (activation {act!r}), which posfeat does not support; "
        "use a standard (ReLU), JumpReLU or TopK SAE."
    )


def check_layer0(sae: SAE, allow_any_hook: bool) -> None:
    """Refuse an SAE that does not read the layer-0 embedding sum, unless ``allow_any_hook``."""
    if allow_any_hook or sae.hook_name is None or sae.hook_name in LAYER0_HOOKS:
        return
    raise PosfeatError(
        f"SAE {sae.name or ''} reads {sae.hook_name}, not the layer-0 embedding sum (blocks.0.hook_resid_pre); "
        "posfeat's exact grid rests on the input being W_E[token] + W_pos[position], which only holds at layer 0 "
        "(pass allow_any_hook=True to analyse it anyway as if it did)."
    )


def read_sae_folder(folder: str | Path, *, name: str | None = None, extra_cfg: dict[str, Any] | None = None,
                    allow_any_hook: bool = False) -> SAE:
    """Load an SAE from a SAELens-format folder (see module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PosfeatError(f"SAE folder {folder} does not exist; pass a folder holding cfg.json and sae_weights.safetensors.")
    cfg = read_json(folder / CFG_FILE) if (folder / CFG_FILE).is_file() else None
    if cfg is None:
        raise PosfeatError(f"SAE folder {folder} has no cfg.json; a SAELens-format folder holds cfg.json and sae_weights.safetensors.")
    cfg = {**cfg, **(extra_cfg or {}), "posfeat_folder": str(folder)}
    where = f"SAE folder {folder}"
    if cfg.get("d_sae") is None:
        raise PosfeatError(f"{folder / CFG_FILE} has no d_sae; add the SAE width (\"d_sae\") to it.")
    d_sae = int(cfg["d_sae"])
    d_in = cfg.get("d_in")
    arch, k = architecture_of(cfg, where)
    norm = cfg_value(cfg, "normalize_activations")
    if norm not in (None, False, "none", "None"):
        raise PosfeatError(f"{where} normalizes its inputs ({norm!r}); posfeat supports SAEs with normalize_activations 'none'.")
    weights = folder / WEIGHTS_FILE
    if not weights.exists():
        others = sorted(p.name for p in folder.iterdir() if p.suffix in {".pt", ".bin", ".pth", ".pkl"})
        hint = f" (found {', '.join(others)}: posfeat never unpickles weights, convert them to safetensors)" if others else ""
        raise PosfeatError(f"{where} has no {WEIGHTS_FILE}{hint}; save the weights with safetensors.")
    keys = tensor_names(weights)
    need = ["W_enc", "W_dec", "b_enc", "b_dec"]
    thr_key = None
    if arch == "jumprelu":
        thr_key = "threshold" if "threshold" in keys else ("log_threshold" if "log_threshold" in keys else None)
        if thr_key is None:
            raise PosfeatError(f"{weights} is a JumpReLU SAE without a threshold tensor; it must hold 'threshold'.")
        need.append(thr_key)
    t = read_tensors(weights, need)
    W_enc, W_dec = t["W_enc"].float(), t["W_dec"].float()
    if W_enc.ndim != 2 or W_enc.shape[1] != d_sae or (d_in is not None and W_enc.shape[0] != int(d_in)):
        raise PosfeatError(
            f"{weights} holds W_enc of shape {tuple(W_enc.shape)} but cfg.json says d_in {d_in}, d_sae {d_sae}; "
            "the weights and cfg.json do not belong together."
        )
    threshold = None
    if thr_key:
        threshold = t[thr_key].float()
        if thr_key == "log_threshold":
            threshold = threshold.exp()
    hook = cfg_value(cfg, "hook_name", "hook_point")
    sae = SAE.from_arrays(
        W_enc, W_dec, t["b_enc"].float(), t["b_dec"].float(), threshold=threshold, k=k,
        apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
        context_size=cfg_value(cfg, "context_size"), hook_name=hook, name=name or str(folder), cfg=cfg,
    )
    check_layer0(sae, allow_any_hook)
    return sae


def saelens_cfg(sae: SAE, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A cfg.json that posfeat and sae_lens (before and after 6.0) both read."""
    arch = {"relu": "standard", "jumprelu": "jumprelu", "topk": "topk"}[sae.architecture]
    extra = dict(extra or {})
    model_name = extra.get("model_name", sae.cfg.get("model_name", ""))
    meta = {
        "model_name": model_name,
        "hook_name": sae.hook_name or POSFEAT_HOOK,
        "hook_head_index": None,
        "context_size": sae.context_size,
        "prepend_bos": False,
        "dataset_path": "posfeat layer-0 grid",
        "sae_lens_training_version": None,
        "model_from_pretrained_kwargs": {"center_writing_weights": bool(extra.get("center_writing_weights", False))},
    }
    cfg: dict[str, Any] = {
        "architecture": arch,
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
    if sae.k is not None:
        cfg["k"] = sae.k
    cfg.update({k: v for k, v in extra.items() if k not in cfg})
    return cfg


def write_sae_folder(sae: SAE, folder: str | Path, extra_cfg: dict[str, Any] | None = None,
                     sparsity: torch.Tensor | None = None) -> Path:
    """Write ``sae`` as a SAELens-format folder (files written atomically)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {"W_enc": sae.W_enc, "W_dec": sae.W_dec, "b_enc": sae.b_enc, "b_dec": sae.b_dec}
    if sae.threshold is not None:
        tensors["threshold"] = sae.threshold
    write_tensors_atomic(folder / WEIGHTS_FILE, tensors)
    if sparsity is not None:
        write_tensors_atomic(folder / SPARSITY_FILE, {"sparsity": sparsity})
    write_json_atomic(folder / CFG_FILE, saelens_cfg(sae, extra_cfg))
    return folder


def from_saelens_object(obj: Any, *, allow_any_hook: bool = False) -> SAE:
    """Convert a ``sae_lens`` SAE (duck-typed: ``W_enc``, ``W_dec``, ``b_enc``, ``b_dec``, ``cfg``) without importing sae_lens."""
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
    arch, k = architecture_of({**cfg, "architecture": cfg.get("architecture") or "standard"}, f"SAE object {type(obj).__name__}")
    threshold = getattr(obj, "threshold", None) if arch == "jumprelu" else None
    t = lambda x: None if x is None else x.detach().float().cpu()  # noqa: E731
    sae = SAE.from_arrays(
        t(obj.W_enc), t(obj.W_dec), t(obj.b_enc), t(obj.b_dec), threshold=t(threshold), k=k,
        apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
        context_size=cfg_value(cfg, "context_size"), hook_name=cfg_value(cfg, "hook_name", "hook_point"),
        name=str(cfg_value(cfg, "neuronpedia_id", "model_name", default=type(obj).__name__)), cfg=cfg,
    )
    check_layer0(sae, allow_any_hook)
    return sae
