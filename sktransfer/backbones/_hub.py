"""Every network access of sktransfer goes through this module.

Downloads use ``huggingface_hub`` (and ``torch.hub`` for the few timm weights hosted
elsewhere). Before any download we look in the local caches; when the hub is unreachable we
fail within seconds with a message that says how to use a local file instead, rather than
after huggingface_hub's retries (about 25 s).
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from sktransfer.exceptions import ModelUnavailableError

logger = logging.getLogger("sktransfer")

_PROBE_TIMEOUT_S = 3.0


def _offline_mode() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def _endpoint() -> str:
    from huggingface_hub import constants

    return str(constants.ENDPOINT)


def host_reachable(url: str, timeout: float = _PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the host of ``url`` opens within ``timeout`` seconds."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _unavailable(what: str, reason: str, local_hint: str) -> ModelUnavailableError:
    return ModelUnavailableError(f"cannot get {what}: {reason}. {local_hint}")


def hf_file(repo_id: str, filenames: tuple[str, ...], *, local_hint: str) -> Path:
    """A local path to the first of ``filenames`` that exists in hub repo ``repo_id``.

    The local cache is tried first; the network only when nothing is cached.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    _check_repo_id(repo_id, local_hint)
    for filename in filenames:
        try:
            return Path(hf_hub_download(repo_id, filename, local_files_only=True))
        except (EntryNotFoundError, FileNotFoundError, OSError):
            continue
    _require_network(f"'{repo_id}' from the Hugging Face Hub", local_hint)
    last_error: Exception | None = None
    for filename in filenames:
        try:
            logger.info("downloading %s/%s", repo_id, filename)
            return Path(hf_hub_download(repo_id, filename))
        except EntryNotFoundError as error:
            last_error = error
        except OSError as error:
            raise _unavailable(f"'{repo_id}'", f"download failed ({error})", local_hint) from error
    raise _unavailable(
        f"'{repo_id}'", f"the repository has none of {', '.join(filenames)} ({last_error})",
        local_hint,
    )


def hf_snapshot(repo_id: str, *, local_hint: str) -> Path:
    """A local folder with the whole hub repo ``repo_id`` (cache first, then network)."""
    from huggingface_hub import snapshot_download

    _check_repo_id(repo_id, local_hint)
    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except (FileNotFoundError, OSError):
        pass
    _require_network(f"'{repo_id}' from the Hugging Face Hub", local_hint)
    try:
        logger.info("downloading %s", repo_id)
        return Path(snapshot_download(repo_id))
    except OSError as error:
        raise _unavailable(f"'{repo_id}'", f"download failed ({error})", local_hint) from error


def url_file(url: str, *, local_hint: str) -> Path:
    """A local path for a weights file hosted at ``url`` (torch.hub's checkpoint cache)."""
    import torch.hub

    target = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
    if target.is_file():
        return target
    _require_network(url, local_hint, probe_url=url)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        logger.info("downloading %s", url)
        torch.hub.download_url_to_file(url, str(target), progress=False)
    except OSError as error:
        raise _unavailable(url, f"download failed ({error})", local_hint) from error
    return target


def looks_like_a_path(name: str) -> bool:
    """Whether ``name`` was meant as a local folder rather than a hub id ("org/name")."""
    return name.startswith(("/", "./", "../", "~", ".\\")) or "\\" in name \
        or name.count("/") > 1


def _check_repo_id(repo_id: str, local_hint: str) -> None:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if looks_like_a_path(repo_id):
        raise ModelUnavailableError(f"no model folder at {repo_id}: it does not exist. "
                                    f"{local_hint}")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise _unavailable(f"'{repo_id}'", f"it is neither a local folder nor a valid Hugging "
                           f"Face Hub id ({error})", local_hint) from None


def _require_network(what: str, local_hint: str, probe_url: str | None = None) -> None:
    if _offline_mode():
        raise _unavailable(what, "HF_HUB_OFFLINE is set and it is not in the local cache",
                           local_hint)
    url = probe_url or _endpoint()
    if not host_reachable(url):
        raise _unavailable(
            what, f"{urlparse(url).hostname} is unreachable (no network?) and it is not in the "
            "local cache", local_hint,
        )
