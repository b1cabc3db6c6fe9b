"""Files from the Hugging Face hub, through ``huggingface_hub`` and its standard cache.

Where the cache is and whether to stay offline are decided by ``huggingface_hub``'s own rules
(``HF_HUB_CACHE``, ``HUGGINGFACE_HUB_CACHE``, ``HF_HOME``, ``XDG_CACHE_HOME``, ``HF_HUB_OFFLINE``,
``TRANSFORMERS_OFFLINE``): :func:`hub_settings` evaluates the library's ``constants`` module afresh
at call time, because the library itself reads the environment only once, at import, and a
notebook or a test may change it later. Offline, files come from the cache only
(``local_files_only``); a file in neither place is one :class:`PosfeatError` naming the repository,
the files needed and how to pass a local folder instead. Downloads write to a temporary blob and
rename it, so an interrupted download leaves no partial entry.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import PosfeatError
from .paths import is_inside, safe_name


@dataclass(frozen=True)
class HubSettings:
    """Where the hub cache is and whether posfeat may go online, as ``huggingface_hub`` decides them now."""

    cache: Path
    offline: bool


def hub_settings() -> HubSettings:
    """``huggingface_hub.constants`` evaluated now (see module docstring)."""
    import huggingface_hub.constants as constants

    spec = importlib.util.spec_from_file_location("_posfeat_hub_constants_now", constants.__file__)
    if spec is None or spec.loader is None:  # pragma: no cover - the module always has a file
        return HubSettings(Path(constants.HF_HUB_CACHE), bool(constants.HF_HUB_OFFLINE))
    now = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(now)
    return HubSettings(Path(now.HF_HUB_CACHE), bool(now.HF_HUB_OFFLINE))


def hub_cache_dir() -> Path:
    """The hub cache folder huggingface_hub would use now."""
    return hub_settings().cache


def offline() -> bool:
    """True when huggingface_hub would stay offline now (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``)."""
    return hub_settings().offline


def missing(repo_id: str, files: list[str], why: str) -> PosfeatError:
    """The one error for hub files that are neither reachable nor cached."""
    return PosfeatError(
        f"Cannot get {', '.join(files)} of {repo_id} from the Hugging Face hub ({why}) and it is not in the cache "
        f"{hub_cache_dir()}; connect once to download it, or pass a local folder holding those files instead."
    )


def cached_file(repo_id: str, filename: str, revision: str | None = None, *, required: bool = True,
                needed: list[str] | None = None) -> Path | None:
    """Local path of ``filename`` in ``repo_id``: from the cache, else downloaded unless offline.

    Returns None for an optional file (``required=False``) that the hub says does not exist, or that
    is not cached while offline. ``needed`` lists every file the caller will need, for the message.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    settings = hub_settings()
    needed = needed or [filename]
    safe_name(filename, f"the request for {repo_id}")
    try:
        path = Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=settings.cache, local_files_only=settings.offline))
    except LocalEntryNotFoundError as err:
        if not required:
            return None
        why = "HF_HUB_OFFLINE is set" if settings.offline else f"the hub is unreachable: {str(err).splitlines()[0][:120]}"
        raise missing(repo_id, needed, why) from None
    except EntryNotFoundError:
        if not required:
            return None
        raise missing(repo_id, needed, f"the repository has no file {filename}") from None
    except (RepositoryNotFoundError, GatedRepoError) as err:
        raise missing(repo_id, needed, f"{type(err).__name__}: the repository does not exist or needs access") from None
    except Exception as err:  # network errors of whatever HTTP client the library uses
        first = str(err).splitlines()[0][:120] if str(err) else ""
        raise missing(repo_id, needed, f"{type(err).__name__}: {first}") from None
    repo_root = settings.cache / ("models--" + repo_id.replace("/", "--"))
    if not is_inside(path, [repo_root.resolve()]):  # snapshot files are links into the repository's own blobs
        raise PosfeatError(f"{path} in the hub cache links outside {repo_root}; posfeat reads only the repository's own files: "
                           "delete that entry of the cache and download it again.")
    return path
