"""Files from the Hugging Face hub, through ``huggingface_hub`` and its standard cache.

Where the cache is and whether to stay offline are decided by ``huggingface_hub``'s own rules
(``HF_HUB_CACHE``, ``HUGGINGFACE_HUB_CACHE``, ``HF_HOME``, ``XDG_CACHE_HOME``, ``HF_HUB_OFFLINE``,
``TRANSFORMERS_OFFLINE``): :func:`hub_settings` evaluates the library's ``constants`` module afresh
at call time, because the library itself reads the environment only once, at import, and a
notebook or a test may change it later. Offline, files come from the cache only
(``local_files_only``); a file in neither place is one :class:`PosfeatError` naming the repository,
the files needed and how to pass a local folder instead. Downloads write to a temporary blob and
rename it, so an interrupted download leaves no partial entry.

Without a network, huggingface_hub alone retries a file it has not cached five times with backoff
(about 25 s, a warning per attempt); posfeat makes at most one attempt per run instead (none with
``HF_HUB_OFFLINE``), then reads the cache only, and says so once.
"""

from __future__ import annotations

import importlib.util
import inspect
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import PosfeatError
from .paths import is_inside, safe_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HubSettings:
    """Where the hub cache is and whether posfeat may go online, as ``huggingface_hub`` decides them
    now."""

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
    """True when huggingface_hub would stay offline now (``HF_HUB_OFFLINE`` /
    ``TRANSFORMERS_OFFLINE``)."""
    return hub_settings().offline


#: Seconds the one probe of the hub may take before posfeat counts it unreachable.
PROBE_TIMEOUT = 4.0
#: Endpoints found unreachable in this process, with why: later files come from the cache without
# another attempt.
_UNREACHABLE: dict[str, str] = {}
_WARNED: set[str] = set()


def missing(repo_id: str, files: list[str], why: str) -> PosfeatError:
    """The one error for hub files that are neither reachable nor cached: names the cache,
    HF_HUB_OFFLINE and the local-folder way."""
    cache = hub_cache_dir()
    if "HF_HUB_OFFLINE" in why:
        fix = "unset HF_HUB_OFFLINE and connect once to download them"
    else:
        fix = "connect once to download them, set HF_HUB_OFFLINE=1 to use the cache without trying the hub"
    return PosfeatError(
        f"Cannot get {', '.join(files)} of {repo_id}: {why}, and they are not in the Hugging Face "
        f"cache {cache}; "
        f"{fix}, or pass a local folder holding those files instead."
    )


def _endpoint() -> str:
    import huggingface_hub.constants as constants

    return str(constants.ENDPOINT)


def _probe(repo_id: str, filename: str, revision: str | None) -> str | None:
    """One request to the hub, no retries and a short timeout (huggingface_hub alone retries for
    about 25 s when a file is not cached); None when the hub answered (even "not found": that is for
    the download to report), else why it is unreachable."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError

    kwargs: dict[str, Any] = {"timeout": PROBE_TIMEOUT}
    if "retry_on_errors" in inspect.signature(get_hf_file_metadata).parameters:
        kwargs["retry_on_errors"] = False
    quiet = logging.getLogger("huggingface_hub")
    level = quiet.level
    quiet.setLevel(
        logging.ERROR
    )  # its own one-line-per-attempt warnings: posfeat says it once, below
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, filename, revision=revision), **kwargs)
        return None
    except HfHubHTTPError as err:
        response = getattr(err, "response", None)
        status = getattr(response, "status_code", None)
        return (
            None
            if status is not None and status < 500
            else f"the hub is unreachable (it answered HTTP {status})"
        )
    except (
        Exception
    ) as err:  # no network, DNS failure, refused, timed out: whatever the HTTP client raises
        first = str(err).splitlines()[0][:100] if str(err) else ""
        return f"the hub is unreachable ({type(err).__name__}{': ' + first if first else ''})"
    finally:
        quiet.setLevel(level)


def cached_file(
    repo_id: str,
    filename: str,
    revision: str | None = None,
    *,
    required: bool = True,
    needed: list[str] | None = None,
) -> Path | None:
    """Local path of ``filename`` in ``repo_id``: from the cache, else downloaded unless offline.

    At most one attempt at the hub per process: offline (``HF_HUB_OFFLINE``) there is none;
    otherwise the first file costs one probe, and when it fails every file of the run comes from the
    cache, with one warning line. Returns None for an optional file (``required=False``) that the
    hub says does not exist, or that is not cached while offline. ``needed`` lists every file the
    caller will need, for the message."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    settings = hub_settings()
    needed = needed or [filename]
    safe_name(filename, f"the request for {repo_id}")
    endpoint = _endpoint()
    why = "HF_HUB_OFFLINE is set" if settings.offline else _UNREACHABLE.get(endpoint)
    if why is None:
        why = _probe(repo_id, filename, revision)
        if why is not None:
            _UNREACHABLE[endpoint] = why
    try:
        path = Path(
            hf_hub_download(
                repo_id,
                filename,
                revision=revision,
                cache_dir=settings.cache,
                local_files_only=why is not None,
            )
        )
        if (
            why is not None and not settings.offline and endpoint not in _WARNED
        ):  # going on from the cache: say so, once
            _WARNED.add(endpoint)
            log.warning(
                "%s; posfeat reads only the cache %s for the rest of this run (HF_HUB_OFFLINE=1 "
                "skips the hub).",
                why[:1].upper() + why[1:],
                settings.cache,
            )
    except LocalEntryNotFoundError as err:
        if not required:
            return None
        raise missing(
            repo_id, needed, why or f"the hub is unreachable: {str(err).splitlines()[0][:120]}"
        ) from None
    except EntryNotFoundError:
        if not required:
            return None
        raise missing(repo_id, needed, f"the repository has no file {filename}") from None
    except (RepositoryNotFoundError, GatedRepoError) as err:
        raise missing(
            repo_id, needed, f"{type(err).__name__}: the repository does not exist or needs access"
        ) from None
    except Exception as err:  # network errors of whatever HTTP client the library uses
        first = str(err).splitlines()[0][:120] if str(err) else ""
        raise missing(repo_id, needed, f"{type(err).__name__}: {first}") from None
    repo_root = settings.cache / ("models--" + repo_id.replace("/", "--"))
    if not is_inside(
        path, [repo_root.resolve()]
    ):  # snapshot files are links into the repository's own blobs
        raise PosfeatError(
            f"{path} in the hub cache links outside {repo_root}; posfeat reads only the "
            "repository's own files: "
            "delete that entry of the cache and download it again."
        )
    return path
