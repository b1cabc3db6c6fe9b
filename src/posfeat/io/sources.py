"""Loading SAEs and model/SAE pairs: built-in releases, local folders, sae_lens objects, the bundled
SAE.

A pair is loaded onto one device (``device=``); from then on the data owns its device and every
computation on it runs there.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..core.embeddings import Embeddings
from ..core.errors import PosfeatError, arg
from ..core.sae import SAE
from .checkpoints import BUNDLED_MODEL, bundled_model_dir, load_embeddings
from .hub import cached_file
from .names import BUNDLED_SAE
from .paths import expand, inside
from .sae_folders import CFG_FILE, SPARSITY_FILE, WEIGHTS_FILE, from_saelens_object, read_sae_folder
from .tokens import TOKEN_WEIGHTS_FILE, load_token_weights

log = logging.getLogger(__name__)

BUNDLED_SAE_DIR = Path(__file__).resolve().parent.parent / "bundled" / "minilm-l0-res-2048"


@dataclass(frozen=True)
class Release:
    """A pretrained SAE release known without sae_lens (mirrors sae_lens
    ``pretrained_saes.yaml``)."""

    repo_id: str
    model: str  # model id for load_embeddings
    sae_ids: tuple[str, ...]
    default_id: str
    cfg_overrides: dict[str, Any] = field(default_factory=dict)
    neuronpedia: str | None = None  # format string with {layer}


RELEASES: dict[str, Release] = {
    "gpt2-small-res-jb": Release(
        repo_id="jbloom/GPT2-Small-SAEs-Reformatted",
        model="gpt2",
        sae_ids=(
            *(f"blocks.{layer}.hook_resid_pre" for layer in range(12)),
            "blocks.11.hook_resid_post",
        ),
        default_id="blocks.0.hook_resid_pre",
        cfg_overrides={"model_from_pretrained_kwargs": {"center_writing_weights": True}},
        neuronpedia="gpt2-small/{layer}-res-jb",
    ),
}


def _split(source: str, sae_id: str | None) -> tuple[str, str | None]:
    if sae_id is None and "/" in source:
        head, _, tail = source.partition("/")
        if head in RELEASES:
            return head, tail
    return source, sae_id


def _load_release(release: str, sae_id: str | None, allow_any_hook: bool) -> SAE:
    rel = RELEASES[release]
    sae_id = sae_id or rel.default_id
    if sae_id not in rel.sae_ids:
        raise PosfeatError(
            f"{release} has no SAE {sae_id!r}; its ids are {', '.join(rel.sae_ids[:3])}, ... (use "
            f"{rel.default_id})."
        )
    files = [f"{sae_id}/{CFG_FILE}", f"{sae_id}/{WEIGHTS_FILE}"]
    cfg_path = cached_file(rel.repo_id, files[0], needed=files)
    cached_file(rel.repo_id, files[1], needed=files)
    cached_file(rel.repo_id, f"{sae_id}/{SPARSITY_FILE}", required=False)
    layer = sae_id.split(".")[1] if sae_id.startswith("blocks.") else "0"
    extra = {**rel.cfg_overrides, "release": release, "sae_id": sae_id, "model": rel.model}
    if rel.neuronpedia:
        extra["neuronpedia_id"] = rel.neuronpedia.format(layer=layer)
    return read_sae_folder(
        cfg_path.parent, name=f"{release}/{sae_id}", extra_cfg=extra, allow_any_hook=allow_any_hook
    )


def load_sae(
    source: Any = BUNDLED_SAE,
    sae_id: str | None = None,
    *,
    device: str | torch.device = "cpu",
    allow_any_hook: bool = False,
) -> SAE:
    """Load a layer-0 SAE.

    Args:
        source: ``"minilm"`` (the SAE shipped with posfeat for the bundled model); a built-in
            release and id (``"gpt2-small-res-jb"`` with ``sae_id="blocks.0.hook_resid_pre"``, or
            ``"gpt2-small-res-jb/blocks.0.hook_resid_pre"``); a local SAELens-format folder; another
            SAELens release (needs ``pip install posfeat[saelens]``); or a ``sae_lens`` SAE object.
        sae_id: the SAE within a release.
        device: where its tensors live (``"auto"``, ``"cpu"``, ``"cuda"``).
        allow_any_hook: analyse an SAE that does not read the layer-0 embedding sum anyway.
    """
    return _load_sae(source, sae_id, allow_any_hook).to(device)


def _load_sae(source: Any, sae_id: str | None, allow_any_hook: bool) -> SAE:
    if isinstance(source, SAE):
        return source
    if all(hasattr(source, a) for a in ("W_enc", "W_dec", "b_enc", "b_dec")):
        return from_saelens_object(source, allow_any_hook=allow_any_hook)
    src, sae_id = _split(
        os.fspath(source) if isinstance(source, os.PathLike) else str(source), sae_id
    )
    if src == BUNDLED_SAE:
        if not (BUNDLED_SAE_DIR / WEIGHTS_FILE).is_file():
            raise PosfeatError(
                f"The bundled SAE is missing from {BUNDLED_SAE_DIR}; reinstall posfeat."
            )
        return read_sae_folder(BUNDLED_SAE_DIR, name="posfeat/minilm-l0-res-2048 (bundled)")
    if src in RELEASES:
        return _load_release(src, sae_id, allow_any_hook)
    path = expand(src)
    if path.exists() or src.startswith((".", "/", "~")) or sae_id is None:
        if not path.is_dir():
            what = "is a file, not a folder" if path.exists() else "does not exist"
            raise PosfeatError(
                f"SAE folder {path} {what}; pass a SAELens-format folder, 'minilm', or a release "
                "such as "
                "gpt2-small-res-jb/blocks.0.hook_resid_pre."
            )
        return read_sae_folder(path, name=str(path), allow_any_hook=allow_any_hook)
    try:
        import sae_lens  # optional extra
    except ImportError:
        raise PosfeatError(
            f"SAE release {src!r} is not built into posfeat (built in: {', '.join(RELEASES)}, "
            "minilm); "
            "install the optional extra with pip install 'posfeat[saelens]' to load other SAELens "
            "releases."
        ) from None
    loaded = sae_lens.SAE.from_pretrained(src, sae_id, device="cpu")
    return from_saelens_object(
        loaded[0] if isinstance(loaded, tuple) else loaded, allow_any_hook=allow_any_hook
    )


def input_locations(
    model: Any = None, sae: Any = None, **files: Any
) -> list[tuple[str, Path | None]]:
    """Where a run's inputs live on disk, labelled for messages: the model folder (the bundled
    model's, or the hub cache for a hub id), the SAE folder (the hub cache for a release), and each
    file or folder in ``files`` (flag name -> path or list).

    Used by the output policy to refuse an output that is, holds or lies inside an input
    (:func:`posfeat.io.policy.check_inputs`). Objects and names that are not on disk give nothing;
    nothing is downloaded."""
    from .checkpoints import _looks_like_path
    from .hub import hub_cache_dir

    out: list[tuple[str, Path | None]] = []

    def local(value: Any) -> bool:
        return isinstance(value, os.PathLike) or (
            isinstance(value, str) and (_looks_like_path(value) or expand(value).exists())
        )

    for flag, value, bundled in (("model", model, BUNDLED_MODEL), ("sae", sae, BUNDLED_SAE)):
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if v is None or v == bundled:
                if flag == "model":
                    with contextlib.suppress(PosfeatError):
                        out.append((arg(flag), bundled_model_dir()))
                else:
                    out.append((arg(flag), BUNDLED_SAE_DIR))
            elif local(v):
                out.append((arg(flag), Path(v)))
            elif isinstance(v, str):
                out.append((f"{arg(flag)} (the hub cache)", hub_cache_dir()))
    for flag, value in files.items():
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, (str, os.PathLike)) and os.fspath(v):
                out.append((arg(flag), Path(v)))
    return out


def sae_token_weights(sae: SAE, d_vocab: int) -> tuple[Path, torch.Tensor] | None:
    """The token distribution an SAE folder ships (``token_weights.safetensors``), or None."""
    folder = sae.meta.folder
    if folder and inside(Path(folder), TOKEN_WEIGHTS_FILE, f"SAE folder {folder}").is_file():
        path = Path(folder) / TOKEN_WEIGHTS_FILE
        return path, load_token_weights(path, d_vocab)
    return None


def sae_centers_inputs(sae: SAE) -> bool:
    """True when the SAE was trained on centred weights (SAELens ``center_writing_weights``)."""
    return sae.meta.centered


def default_model_for(sae: SAE) -> str:
    """The model an SAE belongs with, from its metadata (``minilm`` when it names none).

    An SAE trained from an in-memory model object that has no name records where its embeddings
    came from instead of a model name; asking for its model is then an error that says to pass it.
    """
    model = sae.meta.model_name
    if not model:
        source = (
            (sae.cfg.get("posfeat_training") or {}).get("embeddings")
            if isinstance(sae.cfg.get("posfeat_training"), dict)
            else None
        )
        if isinstance(source, dict) and not source.get("loadable"):
            raise PosfeatError(
                f"SAE {sae.name} was trained on the embeddings of "
                f"{source.get('source', 'a model object')}, which has no "
                f"name to load it by; pass that model ({arg('model')}: the object, or a folder it "
                "was saved to)."
            )
        return BUNDLED_MODEL
    return "gpt2" if model == "gpt2-small" else model


def check_centring(emb: Embeddings, sae: SAE, *, strict: bool = False) -> None:
    """A model centred differently from the SAE's training model: one warning line, or an error with
    ``strict``.

    The SAE's side comes from its config (SAELens
    ``model_from_pretrained_kwargs.center_writing_weights``; sae_lens loads models with
    ``from_pretrained_no_processing``, so no key means uncentred)."""
    if bool(emb.centered) == bool(sae.meta.centered):
        return
    have = "centred (center_writing_weights)" if emb.centered else "not centred"
    want = "a centred model" if sae.meta.centered else "an uncentred model"
    msg = (
        f"Model {emb.name or 'embeddings'} is {have} but SAE {sae.name} was trained on {want} (its "
        "config's model_from_pretrained_kwargs), "
        f"so its activations here are not the ones it was trained on"
    )
    if strict:
        raise PosfeatError(
            f"{msg}; pass the model {'centred' if sae.meta.centered else 'uncentred'} ("
            f"{arg('center', sae.meta.centered)}) "
            f"or drop {arg('strict', True)}."
        )
    log.warning("%s (strict=True, or --strict, makes this an error).", msg)


def as_pair(
    model: Any, sae: Any, *, strict: bool = False, allow_any_hook: bool = False
) -> tuple[Embeddings, SAE]:
    """``(Embeddings, SAE)`` from whatever a public function was given: what :func:`load_pair`
    accepts.

    Embeddings already built are kept as they are, on their device (a centring that differs from the
    SAE's is warned about, see :func:`check_centring`); a model object or name is loaded, centred as
    the SAE was trained, onto the SAE's device. Every function that takes a model (analyze,
    feature_stats, reconstruction_by_position, compare_saes, prompt, train_sae, the sweeps) goes
    through here."""
    s = _load_sae(sae, None, allow_any_hook) if sae is not None else None
    if isinstance(model, Embeddings) or s is None:
        emb = load_embeddings(
            BUNDLED_MODEL if model is None else model
        )  # as given: the data owns its device
    else:
        emb = load_embeddings(
            model if model is not None else default_model_for(s), center=s.meta.centered
        ).to(s.device)
    if s is not None:
        check_centring(emb, s, strict=strict)
    return emb, s  # type: ignore[return-value]


def load_pair(
    model: Any = None,
    sae: Any = None,
    sae_id: str | None = None,
    *,
    center: bool | None = None,
    device: str | torch.device = "cpu",
    allow_any_hook: bool = False,
    tokenizer: Any = None,
    strict: bool = False,
) -> tuple[Embeddings, SAE]:
    """Load a model's embeddings and a layer-0 SAE, made consistent and put on one ``device``.

    The SAE is loaded first; the model (a name, a folder, an :class:`Embeddings`, or a
    TransformerLens / transformers model object) defaults to the one it was trained on. Centring
    defaults to what the SAE was trained on (``gpt2-small-res-jb``: centred, as SAELens loads GPT-2
    with ``center_writing_weights``); the choice is recorded in ``Embeddings.centered``. A pair
    centred differently from the SAE's training (``center=`` against the SAE's config, or a model
    object that is already centred) is one warning line, or an error with ``strict=True``.
    """
    s = _load_sae(BUNDLED_SAE if sae is None else sae, sae_id, allow_any_hook)
    want_center = sae_centers_inputs(s) if center is None else bool(center)
    emb = load_embeddings(
        default_model_for(s) if model is None else model, center=want_center, tokenizer=tokenizer
    )
    check_centring(emb, s, strict=strict)
    if emb.d_model != s.d_in:
        raise PosfeatError(
            f"Model {emb.name} has d_model {emb.d_model} but SAE {s.name} reads d_in {s.d_in}; "
            "pair the SAE with the model it was trained on."
        )
    if s.context_size is not None and s.context_size > emb.n_ctx:
        raise PosfeatError(
            f"SAE {s.name} was trained on context {s.context_size} but model {emb.name} has only "
            f"{emb.n_ctx} positions; "
            "check the pair."
        )
    return emb.to(device), s.to(device)
