"""Files from the Hugging Face hub, through the standard cache, honouring offline mode.

``HF_HUB_OFFLINE``, ``HF_HOME`` and ``HF_HUB_CACHE`` are read at call time (not at import), so a
notebook or test can change them. Offline, or when the hub cannot be reached, files come from
the cache; when a file is in neither, one :class:`PosfeatError` names the repository, the files
needed and how to pass a local folder instead. Downloads go through ``huggingface_hub``, which
writes to a temporary blob and renames it, so an interrupted download leaves no partial entry.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import PosfeatError


def hub_cache_dir() -> Path:
    """The hub cache folder: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set to a true value."""
    return any(os.environ.get(v, "").strip().lower() in {"1", "true", "yes", "on"} for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def missing(repo_id: str, files: list[str], why: str) -> PosfeatError:
    return PosfeatError(
        f"Cannot get {', '.join(files)} of {repo_id} from the Hugging Face hub ({why}) and it is not in the cache "
        f"{hub_cache_dir()}; connect once to download it, or pass a local folder holding those files instead."
    )


def cached_file(
    repo_id: str, filename: str, revision: str | None = None, *, required: bool = True, needed: list[str] | None = None
) -> Path | None:
    """Local path of ``filename`` in ``repo_id``, downloading it unless offline.

    Returns None for an optional file (``required=False``) that the hub says does not exist, or
    that is not cached while offline; an unreachable hub otherwise raises. ``needed`` lists every
    file the caller will need, for the error message.
    """
    needed = needed or [filename]
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cache = hub_cache_dir()
    hit = try_to_load_from_cache(repo_id, filename, cache_dir=cache, revision=revision)
    if isinstance(hit, str) and Path(hit).is_file():
        return Path(hit)
    if offline():
        if required:
            raise missing(repo_id, needed, "HF_HUB_OFFLINE is set")
        return None
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache))
    except Exception as err:  # network down, repo or file missing, gated, ...
        name = type(err).__name__
        if not required and "LocalEntryNotFound" not in name and ("EntryNotFound" in name or "404" in str(err)):
            return None  # the hub says this optional file does not exist
        raise missing(repo_id, needed, f"{name}: {str(err).splitlines()[0][:160]}") from None
